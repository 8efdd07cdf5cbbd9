//! Recursive discovery and periodic refresh.
//!
//! A discovery *session* starts from newly learned peers (from a bootstrap node's list or an
//! exchange). Round 1 asks each of them for its list, at most `max_concurrent_discoveries` at
//! once; peers new to us found in round k are asked in round k+1. The session stops when a
//! round brings nothing new or the list holds `discovery_target` peers (a node with a full
//! view has nothing to gain from asking more, and every answer is ~20 adverts of traffic).
//! Peers learned this way are candidates until they answer us.

use std::collections::VecDeque;
use std::time::Duration;

use rand::seq::{IndexedRandom, SliceRandom};

use super::{
    Contact, DialRefusal, Membership, MembershipEvent, PeerHealth, Purpose, Request, Timer,
};
use crate::model::{PeerAdvert, PeerId};
use crate::time::{Instant, Now};

/// Progress of the current discovery session. Both queues hold ids of the known list, each
/// at most once, so they are bounded by `max_peers_in_list`.
#[derive(Debug, Default)]
pub(super) struct Discovery {
    /// 0 when no session runs.
    round: u32,
    /// Peers still to ask this round.
    queue: VecDeque<PeerId>,
    /// Peers learned this round, to ask next round.
    next: Vec<PeerId>,
    in_flight: usize,
    new_this_round: usize,
    /// Peers asked in this session, at most `max_discovery_asks`.
    asked: usize,
    /// The last time a starved active set asked for more peers (see `ask_for_more_peers`).
    refill: Refill,
}

/// When a starved active set last asked for more peers, how many peers we knew then, and how
/// long to wait before asking again.
#[derive(Debug, Default, Clone, Copy)]
struct Refill {
    at: Option<Instant>,
    known_then: usize,
    wait: Duration,
}

impl Membership {
    /// Adds newly learned peers to discovery: the next round of a running session, or round 1.
    pub(super) fn discover(&mut self, new_peers: Vec<PeerId>, now: Now) {
        if new_peers.is_empty() || self.knows_enough() {
            return;
        }
        if self.discovery.round == 0 {
            self.discovery.round = 1;
            self.discovery.queue = new_peers.into();
            self.discovery.new_this_round = 0;
            self.dispatch_discovery(now);
        } else {
            self.discovery.new_this_round += new_peers.len();
            self.discovery.next.extend(new_peers);
        }
    }

    /// Outstanding discovery requests (never above `max_concurrent_discoveries`).
    pub fn discoveries_in_flight(&self) -> usize {
        self.discovery.in_flight
    }

    /// The current discovery round, 0 when discovery is idle.
    pub fn discovery_round(&self) -> u32 {
        self.discovery.round
    }

    /// Whether the known list is big enough for discovery to stop asking.
    pub(super) fn knows_enough(&self) -> bool {
        let target = self
            .config
            .discovery_target
            .min(self.config.max_peers_in_list);
        self.peers.len() >= target
    }

    pub(super) fn dispatch_discovery(&mut self, now: Now) {
        self.drop_unneeded_discoveries();
        while self.discovery.in_flight < self.config.max_concurrent_discoveries
            && self.discovery.asked < self.config.max_discovery_asks
        {
            let Some(id) = self.discovery.queue.pop_front() else {
                break;
            };
            let Some(known) = self.peers.get(&id) else {
                continue;
            };
            if known.health == PeerHealth::Unreachable || self.is_banned(&id, now) {
                continue;
            }
            match self.may_dial(&id, now) {
                Ok(()) => {}
                Err(DialRefusal::Backoff) => continue,
                // The dial timer resumes the round.
                Err(_) => {
                    self.discovery.queue.push_front(id);
                    break;
                }
            }
            let Some(known) = self.peers.get(&id) else {
                continue;
            };
            let to = Contact::of(&known.node);
            let max = self.config.peer_list_request_size;
            let purpose = Purpose::PeerList {
                peer: id,
                discovery: true,
            };
            if !self.send(to, Request::GetPeerList { max }, purpose, now) {
                break;
            }
            self.discovery.in_flight += 1;
            self.discovery.asked += 1;
        }
        self.drop_unneeded_discoveries();
        self.finish_round_if_done(now);
    }

    /// Once the list holds enough peers, or the session has asked its `max_discovery_asks`,
    /// the peers still queued are never asked (counted as not needed).
    fn drop_unneeded_discoveries(&mut self) {
        if self.knows_enough() || self.discovery.asked >= self.config.max_discovery_asks {
            let dropped = self.discovery.queue.len() + self.discovery.next.len();
            self.stats.dials_deferred_not_needed += dropped as u64;
            self.discovery.queue.clear();
            self.discovery.next.clear();
        }
    }

    fn finish_round_if_done(&mut self, now: Now) {
        let d = &self.discovery;
        if d.round == 0 || d.in_flight > 0 || !d.queue.is_empty() {
            return;
        }
        let (round, new_peers) = (d.round, d.new_this_round);
        self.stats.discovery_rounds += 1;
        self.emit(MembershipEvent::DiscoveryRound { round, new_peers });
        if new_peers == 0 || self.knows_enough() || self.discovery.next.is_empty() {
            self.discovery = Discovery {
                refill: self.discovery.refill,
                ..Default::default()
            };
            return;
        }
        self.discovery.round += 1;
        self.discovery.queue = std::mem::take(&mut self.discovery.next).into();
        self.discovery.new_this_round = 0;
        self.dispatch_discovery(now);
    }

    /// The active set has free slots and no known peer left to try (all active, busy or
    /// unreachable): ask one random live peer for its list. Discovery may have stopped at
    /// `discovery_target` with a list of peers that all turned out busy. At most once per
    /// probe interval, and half as often each time the last ask brought nobody new (up to
    /// `refresh_interval`), so a small network where everyone is known already goes quiet.
    pub(super) fn ask_for_more_peers(&mut self, now: Now) {
        let last = self.discovery.refill;
        // Someone new came since the last ask (its answer, an exchange, a registration).
        let grew = self.peers.len() > last.known_then;
        let wait = if grew {
            self.config.probe_interval
        } else {
            last.wait
        };
        let recent = last.at.is_some_and(|at| now.mono.since(at) < wait);
        if recent || self.discovery.round > 0 {
            return;
        }
        let sources: Vec<&PeerId> = self
            .peers
            .values()
            .filter(|p| p.is_healthy() && !self.is_banned(&p.node.peer_id, now))
            .map(|p| &p.node.peer_id)
            .collect();
        let Some(id) = sources.choose(&mut self.rng).map(|id| (*id).clone()) else {
            return;
        };
        let Some(known) = self.peers.get(&id) else {
            return;
        };
        let to = Contact::of(&known.node);
        let max = self.config.peer_list_request_size;
        let purpose = Purpose::PeerList {
            peer: id,
            discovery: false,
        };
        if self.send(to, Request::GetPeerList { max }, purpose, now) {
            let wait = if last.at.is_some() && !grew {
                (last.wait * 2).clamp(self.config.probe_interval, self.config.refresh_interval)
            } else {
                self.config.probe_interval
            };
            self.discovery.refill = Refill {
                at: Some(now.mono),
                known_then: self.peers.len(),
                wait,
            };
        }
    }

    /// A peer list arrived (`Some`) or its request failed (`None`).
    pub(super) fn on_peer_list(
        &mut self,
        _from: &PeerId,
        discovery: bool,
        peers: Option<Vec<PeerAdvert>>,
        now: Now,
    ) {
        let new_peers = peers
            .map(|peers| self.merge_adverts(peers, now))
            .unwrap_or_default();
        if discovery && self.discovery.round > 0 {
            self.discovery.in_flight = self.discovery.in_flight.saturating_sub(1);
            self.discovery.new_this_round += new_peers.len();
            self.discovery.next.extend(new_peers);
            self.dispatch_discovery(now);
        } else {
            self.discover(new_peers, now);
        }
        self.fill_active(now);
    }

    pub(super) fn on_exchange_answer(&mut self, peers: Vec<PeerAdvert>, now: Now) {
        let new_peers = self.merge_adverts(peers, now);
        self.discover(new_peers, now);
        self.fill_active(now);
    }

    /// Exchange lists with a few random healthy active peers; bootstrap again if below
    /// `min_healthy_peers`.
    pub(super) fn on_refresh_timer(&mut self, now: Now) {
        self.schedule(
            now.mono.saturating_add(self.config.refresh_interval),
            Timer::Refresh,
        );
        let mut targets: Vec<PeerId> = self
            .active_peers()
            .filter(|p| p.health == PeerHealth::Alive)
            .map(|p| p.node.peer_id.clone())
            .collect();
        targets.shuffle(&mut self.rng);
        targets.truncate(self.config.exchange_fanout);
        for id in targets {
            self.send_exchange(&id, now);
        }
        if self.healthy_count() < self.config.min_healthy_peers && !self.is_bootstrapping() {
            self.start_bootstrap(now);
        }
        self.fill_active(now);
        self.arm_growth(now);
    }

    fn send_exchange(&mut self, id: &PeerId, now: Now) {
        let Some(known) = self.peers.get(id) else {
            return;
        };
        let to = Contact::of(&known.node);
        let max = self.config.exchange_size;
        let mut adverts = self.handout(Some(id), max.saturating_sub(1) as usize, now);
        adverts.insert(0, self.advert_now(now));
        let purpose = Purpose::Exchange { peer: id.clone() };
        self.send(to, Request::ExchangePeers { adverts, max }, purpose, now);
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::super::*;

    fn adverts(range: std::ops::Range<usize>) -> Vec<PeerAdvert> {
        range.map(|n| advert(n, t(0))).collect()
    }

    fn list(peers: Vec<PeerAdvert>) -> Result<Response, Failure> {
        Ok(Response::PeerList { peers })
    }

    /// Bootstraps through node-1, whose list is `first`; returns the machine and the
    /// discovery requests sent.
    fn bootstrapped(config: MembershipConfig, first: Vec<PeerAdvert>) -> (Membership, Vec<Output>) {
        let mut m = machine(0, vec![contact(1)], vec![], config, t(0));
        let sent = sends(&drain(&mut m));
        m.handle_response(sent[0].2, pong(1), t(1));
        let sent = sends(&drain(&mut m));
        m.handle_response(request_to(&sent, 1, is_list), list(first), t(2));
        let out = drain(&mut m);
        (m, out)
    }

    fn list_requests(out: &[Output]) -> Vec<(Contact, Request, RequestId)> {
        sends(out)
            .into_iter()
            .filter(|(_, r, _)| is_list(r))
            .collect()
    }

    #[test]
    fn rounds_respect_the_concurrency_bound_and_stop_when_nothing_is_new() {
        // All in one instant: the dial gate's rate is tested in `dials.rs`, the cap of a
        // session's asks below.
        let config = MembershipConfig {
            dial_burst: 100,
            max_discovery_asks: 100,
            ..Default::default()
        };
        let (mut m, out) = bootstrapped(config, adverts(100..125));
        let mut queued = list_requests(&out);
        assert_eq!(
            queued.len(),
            10,
            "at most max_concurrent_discoveries at once"
        );
        assert_eq!(m.discoveries_in_flight(), 10);
        let mut asked = Vec::new();
        let mut rounds = Vec::new();
        while let Some((to, _, rid)) = queued.pop() {
            let peer = to.peer_id.expect("discovered peers have ids");
            // node-100 knows three more peers; everyone else only knows known ones.
            let answer = if peer == id(100) {
                adverts(200..203)
            } else {
                adverts(100..105)
            };
            asked.push(peer);
            m.handle_response(rid, list(answer), t(3));
            assert!(m.discoveries_in_flight() <= 10);
            let out = drain(&mut m);
            queued.extend(list_requests(&out));
            rounds.extend(events(&out).into_iter().filter_map(|e| match e {
                MembershipEvent::DiscoveryRound { round, new_peers } => Some((round, new_peers)),
                _ => None,
            }));
        }
        assert_eq!(rounds, [(1, 3), (2, 0)]);
        assert_eq!(asked.len(), 25 + 3, "every new peer asked exactly once");
        assert_eq!(m.discovery_round(), 0, "discovery stopped");
        assert_eq!(m.known_count(), 1 + 25 + 3);
        let candidate = m.peer(&id(110)).expect("learned");
        assert_eq!(candidate.health, PeerHealth::Alive, "answered, so verified");
    }

    #[test]
    fn a_session_asks_at_most_max_discovery_asks_peers() {
        let config = MembershipConfig {
            dial_burst: 100,
            ..Default::default()
        };
        assert_eq!(config.max_discovery_asks, 8);
        let (mut m, out) = bootstrapped(config, adverts(100..125));
        let mut queued = list_requests(&out);
        let mut asked = 0;
        // Every answer brings someone new, so without the cap the rounds would go on.
        let mut n = 300;
        while let Some((_, _, rid)) = queued.pop() {
            asked += 1;
            n += 2;
            m.handle_response(rid, list(adverts(n..n + 2)), t(3));
            queued.extend(list_requests(&drain(&mut m)));
        }
        assert_eq!(asked, 8);
        assert_eq!(m.discovery_round(), 0, "the session ended");
        assert!(m.known_count() > 1 + 25, "what the answers brought is kept");
        assert!(m.stats().dials_deferred_not_needed >= 25 - 8);
    }

    #[test]
    fn discovery_stops_when_the_list_is_full() {
        let config = MembershipConfig {
            max_peers_in_list: 12,
            ..Default::default()
        };
        let (mut m, out) = bootstrapped(config, adverts(100..105));
        let first = list_requests(&out);
        assert_eq!(first.len(), 5);
        m.handle_response(first[0].2, list(adverts(200..206)), t(3));
        for (_, _, rid) in &first[1..] {
            m.handle_response(*rid, list(vec![]), t(3));
        }
        let out = drain(&mut m);
        assert_eq!(m.known_count(), 12);
        assert!(events(&out).contains(&MembershipEvent::DiscoveryRound {
            round: 1,
            new_peers: 6
        }));
        assert!(list_requests(&out).is_empty(), "no second round once full");
        assert_eq!(m.discovery_round(), 0);
        m.handle_exchange(&id(1), adverts(300..302), 10, t(4));
        assert_eq!(m.stats().refused_list_full, 2);
    }

    #[test]
    fn refresh_exchanges_with_a_few_live_peers_and_learns_candidates() {
        let mut m = with_registered(1..=5);
        let now = t(15 * 60);
        m.handle_timer(Timer::Refresh, now);
        let out = drain(&mut m);
        assert_eq!(m.deadline(Timer::Refresh), Some(t(30 * 60).mono));
        let exchanges: Vec<_> = sends(&out)
            .into_iter()
            .filter(|(_, r, _)| matches!(r, Request::ExchangePeers { .. }))
            .collect();
        assert_eq!(exchanges.len(), 3, "exchange_fanout peers");
        let Request::ExchangePeers { adverts: ours, max } = &exchanges[0].1 else {
            unreachable!()
        };
        assert_eq!(*max, 20);
        assert_eq!(ours[0].peer_id, id(0), "our own advert goes first");
        assert!(ours.iter().skip(1).all(|a| a.peer_id != id(0)));
        let answer = Ok(Response::Exchanged {
            peers: adverts(50..52)
                .into_iter()
                .map(|a| PeerAdvert {
                    last_seen: now.wall,
                    ..a
                })
                .collect(),
        });
        m.handle_response(exchanges[0].2, answer, now);
        let learned = m.peer(&id(50)).expect("learned through exchange");
        assert_eq!(learned.health, PeerHealth::Candidate);
        assert!(!learned.active);
        let out = drain(&mut m);
        assert!(
            list_requests(&out).len() == 2,
            "new candidates are asked for their lists"
        );
    }

    #[test]
    fn discovery_stops_asking_once_the_list_holds_the_target() {
        let config = MembershipConfig {
            discovery_target: 10,
            max_concurrent_discoveries: 1,
            ..Default::default()
        };
        let (mut m, out) = bootstrapped(config, adverts(100..105));
        let first = list_requests(&out);
        assert_eq!(first.len(), 1, "one at a time");
        m.handle_response(first[0].2, list(adverts(200..206)), t(3));
        let out = drain(&mut m);
        assert_eq!(m.known_count(), 12, "everything learned is kept");
        assert!(
            list_requests(&out).is_empty(),
            "no further asking: the rest of round 1 and round 2 are dropped"
        );
        assert_eq!(m.discovery_round(), 0);
        m.handle_exchange(&id(1), adverts(300..302), 10, t(4));
        let out = drain(&mut m);
        assert_eq!(m.known_count(), 14);
        assert!(
            list_requests(&out).is_empty(),
            "peers learned later do not start a session"
        );
    }

    #[test]
    fn a_starved_active_set_asks_for_more_peers_ever_more_rarely_when_nobody_new_comes() {
        let mut m = with_registered(1..=2);
        let mut asked_at = Vec::new();
        for k in 1..=30u64 {
            let now = t(10 * k);
            m.handle_timer(Timer::Probe, now);
            for (_, request, rid) in sends(&drain(&mut m)) {
                let answer = if is_list(&request) {
                    asked_at.push(10 * k);
                    list(adverts(1..3))
                } else {
                    heartbeat_ok()
                };
                m.handle_response(rid, answer, now);
            }
        }
        assert_eq!(
            asked_at,
            [10, 20, 40, 80, 160],
            "backoff doubles while fruitless"
        );
        // Someone new (here a registration) resets the wait to one probe interval.
        m.handle_timer(Timer::Probe, t(320));
        assert!(sends(&drain(&mut m)).iter().any(|(_, r, _)| is_list(r)));
        m.handle_register(advert(40, t(325)), t(325)).expect("room");
        drain(&mut m);
        m.handle_timer(Timer::Probe, t(330));
        let sent = sends(&drain(&mut m));
        assert!(
            sent.iter().any(|(_, r, _)| is_list(r)),
            "asked again 10 s later"
        );
    }
}
