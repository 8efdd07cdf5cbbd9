//! Growing a short list in a node's first seconds: while the node knows fewer than
//! `discovery_target` peers and has learnt someone new within the last [`GROW_WINDOW`] (or
//! started that recently), it asks a live peer for its list every [`GROW_EVERY`], so nodes
//! that start together (a cluster brought up at once) come to know each other without
//! waiting for the refresh exchange (15 minutes by default).
//!
//! Why: a discovery session stops when a round brings nobody new, which, for a node among the
//! first to start, is at once: the bootstrap node knew only a handful of peers when it asked.
//! Join announcements reach only a small network's active sets. With the shipped timers, 100
//! lab nodes started together still knew 26 peers at the fewest after 120 s.
//!
//! Why only at first: asking for ever while short (session 9's try) reshaped the overlay for
//! as long as a network stayed below the target, and in `tests/sim.rs`'s attack test (60
//! nodes joining over 5 s, attackers from 15 s) a liar went unbanned. A node that joins a
//! running network learns it from the bootstrap node's list and its discovery session; the
//! window is for the nodes already there when the others come. Its cost, still open: the
//! simulator's `attack.toml` reaches 99 % 1-3 s later at p95 (lab README, "Session 10:
//! newcomers ...").
//!
//! Cadence: every [`GROW_EVERY`] from the node's start. The window closes [`GROW_WINDOW`] after
//! the list last grew (or the node started), and at the target; then the timer stops for good.
//! None while a discovery session runs (its answers count as growth), so the cost is one peer
//! list a second while newcomers keep coming and ten more after the last one. Every other ask
//! goes to the bootstrap node the node registered with (see `ask_live_peer`).

use std::time::Duration;

use rand::seq::IndexedRandom;

use super::{Contact, KnownPeer, Membership, PeerHealth, Purpose, Request, Timer};
use crate::model::{PeerAdvert, PeerId};
use crate::time::{Instant, Now};

/// The wait before the first ask and between asks.
pub const GROW_EVERY: Duration = Duration::from_secs(1);

/// How long after its start, or after its list last grew, a node grows its list this way (see
/// the module doc for why not for ever).
pub const GROW_WINDOW: Duration = Duration::from_secs(10);

/// When the last ask went out, how many peers we knew then, how many asks went out, and when
/// growth ends unless the list grows again.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Growth {
    at: Option<Instant>,
    known_then: usize,
    asks: u32,
    /// `None` until the node starts.
    until: Option<Instant>,
}

impl Membership {
    /// Arms the growth timer if the list is short, the window open and the timer not armed.
    pub(super) fn arm_growth(&mut self, now: Now) {
        let until = *self
            .growth
            .until
            .get_or_insert(now.mono.saturating_add(GROW_WINDOW));
        if self.knows_enough() || self.timers.get(Timer::Grow).is_some() || now.mono >= until {
            return;
        }
        self.schedule(now.mono.saturating_add(GROW_EVERY), Timer::Grow);
    }

    /// Asks a live peer for its list if the list is still short and the window open; re-arms.
    pub(super) fn on_grow_timer(&mut self, now: Now) {
        let last = self.growth;
        let grew = last.at.is_none() || self.peers.len() > last.known_then;
        // Someone new came since the last ask (its answer, a registration, an announcement):
        // the network is still filling, so the window stays open.
        let until = if grew {
            Some(now.mono.saturating_add(GROW_WINDOW))
        } else {
            last.until
        };
        if self.knows_enough() || until.is_some_and(|u| now.mono >= u) {
            self.growth = Growth {
                until,
                ..Growth::default()
            };
            return;
        }
        // A running session asks peers already; its answers count as growth next time. No
        // backoff while nothing new comes: the window bounds the fruitless asks (ten), and
        // backing off made an early node of a slowly starting network (100 lab processes on 2
        // cores) miss the bootstrap node's full list by seconds.
        let mut asks = last.asks;
        if self.discovery_round() == 0 && self.ask_live_peer(asks.is_multiple_of(2), now) {
            self.stats.growth_asks += 1;
            asks += 1;
        }
        self.growth = Growth {
            at: Some(now.mono),
            known_then: self.peers.len(),
            asks,
            until,
        };
        self.schedule(now.mono.saturating_add(GROW_EVERY), Timer::Grow);
    }

    /// Sends a peer-list request to one random alive, unbanned peer (an active one if any), or
    /// if `bootstrap` to the bootstrap node we registered with while it is alive; false if
    /// there is none. Every
    /// other ask goes to that node because, in a network starting together, it is the one
    /// peer that heard every registrant: an early node's other peers started as early and
    /// know as few.
    fn ask_live_peer(&mut self, bootstrap: bool, now: Now) -> bool {
        let live =
            |p: &&KnownPeer| p.health == PeerHealth::Alive && !self.is_banned(&p.node.peer_id, now);
        let registered_with = self
            .bootstrap
            .registered_with
            .as_ref()
            .and_then(|id| self.peers.get(id))
            .filter(|p| bootstrap && live(p))
            .map(|p| &p.node.peer_id);
        let sources: Vec<&PeerId> = match registered_with {
            Some(id) => vec![id],
            None => {
                let mut live: Vec<&KnownPeer> = self.peers.values().filter(live).collect();
                // An active peer when there is one: the node holds a connection to it (its
                // heartbeats), so the ask costs no new TLS handshake; any live peer was
                // mostly one we had no connection to (one that registered with us). A few
                // asks per early node: in a 100-node start the discovery sessions' asks
                // dwarfed these (`max_discovery_asks`, `crates/lab/README.md` session 15).
                if live.iter().any(|p| p.active) {
                    live.retain(|p| p.active);
                }
                live.into_iter().map(|p| &p.node.peer_id).collect()
            }
        };
        let Some(id) = sources.choose(&mut self.rng).map(|id| (*id).clone()) else {
            return false;
        };
        let Some(known) = self.peers.get(&id) else {
            return false;
        };
        let to = Contact::of(&known.node);
        let max = self.config.peer_list_request_size;
        self.send(
            to,
            Request::GetPeerList { max },
            Purpose::Grow { peer: id },
            now,
        )
    }

    /// The answer to a growth ask: merged (up to the list's bounds) without starting a
    /// discovery session. One list of up to `peer_list_request_size` adverts mostly brings a
    /// short list to the target by itself; exploring each new peer's list as well dialled
    /// dozens of strangers per ask, which in the simulator (`scale.toml --scenario n100`,
    /// seeds 1-9) lengthened the tail of propagation (t99 p95 median 2.69 -> 2.85 s).
    pub(super) fn on_grow_answer(&mut self, peers: Vec<PeerAdvert>, now: Now) {
        self.merge_adverts(peers, now);
        self.fill_active(now);
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::super::*;
    use super::*;

    /// Fires the growth timer every second from 1 to `until` s and answers its ask with
    /// `answer(second)`; then fires the dial timer (which resumes a discovery session the dial
    /// gate held) and answers, within the same second, every other list request with nothing
    /// new and every ping and heartbeat (so no peer is dropped). Returns the seconds at which
    /// the growth timer asked.
    fn run(m: &mut Membership, until: u64, answer: impl Fn(u64) -> Vec<PeerAdvert>) -> Vec<u64> {
        let mut asked = Vec::new();
        for s in 1..=until {
            let before = m.stats().growth_asks;
            m.handle_timer(Timer::Grow, t(s));
            for (_, request, rid) in sends(&drain(m)) {
                assert!(is_list(&request), "the growth timer only asks for lists");
                asked.push(s);
                m.handle_response(rid, Ok(Response::PeerList { peers: answer(s) }), t(s));
            }
            assert_eq!(
                m.stats().growth_asks - before,
                asked.iter().filter(|&&a| a == s).count() as u64
            );
            m.handle_timer(Timer::Dial, t(s));
            loop {
                let sent = sends(&drain(m));
                if sent.is_empty() {
                    break;
                }
                for (to, request, rid) in sent {
                    let answer = match request {
                        Request::GetPeerList { .. } => Ok(Response::PeerList { peers: vec![] }),
                        Request::Ping => Ok(Response::Pong {
                            peer_id: to.peer_id.clone().expect("pings go to known peers"),
                            status: crate::model::PeerStatus::Online,
                        }),
                        Request::Heartbeat { .. } => heartbeat_ok(),
                        _ => continue,
                    };
                    m.handle_response(rid, answer, t(s));
                }
            }
        }
        asked
    }

    #[test]
    fn a_short_list_nobody_new_joins_asks_for_one_window() {
        let mut m = with_registered(1..=3);
        let asked = run(&mut m, 40, |s| vec![advert(1, t(s))]);
        // The first ask opens the window (until 1 + 10 s); nothing new ever comes.
        assert_eq!(asked, (1..=10).collect::<Vec<_>>());
        assert_eq!(m.stats().growth_asks, 10);
        assert_eq!(m.deadline(Timer::Grow), None, "the window is over");
    }

    #[test]
    fn growth_stops_a_window_after_the_list_last_grew() {
        let mut m = with_registered(1..=3);
        // The first five answers each bring one peer nobody knew, then nothing new: never at
        // the target (50).
        let asked = run(&mut m, 40, |s| vec![advert(100 + s.min(5) as usize, t(s))]);
        // Grew up to the answer of second 5 (seen at 6), so the window closes at 6 + 10.
        assert_eq!(GROW_WINDOW, Duration::from_secs(10));
        assert_eq!(asked, (1..=15).collect::<Vec<_>>());
        assert_eq!(m.deadline(Timer::Grow), None);
        // The refresh (15 minutes on) does not start it again.
        m.arm_growth(t(15 * 60));
        assert_eq!(m.deadline(Timer::Grow), None);
    }

    /// Answers everything queued at `now` (lists with `list(to)`, the rest as a live peer
    /// would) until nothing more is sent; the ids asked for their lists, in order.
    fn answer_all(
        m: &mut Membership,
        now: Now,
        list: impl Fn(&PeerId) -> Vec<PeerAdvert>,
    ) -> Vec<PeerId> {
        let mut asked = Vec::new();
        loop {
            let sent = sends(&drain(m));
            if sent.is_empty() {
                return asked;
            }
            for (to, request, rid) in sent {
                let peer = to.peer_id.clone().expect("known peers");
                let answer = match request {
                    Request::GetPeerList { .. } => {
                        asked.push(peer.clone());
                        Ok(Response::PeerList { peers: list(&peer) })
                    }
                    Request::Register { .. } => Ok(Response::Registered { success: true }),
                    Request::Heartbeat { .. } => heartbeat_ok(),
                    _ => continue,
                };
                m.handle_response(rid, answer, now);
            }
        }
    }

    /// Fires the growth timer at seconds 1 to `secs`, every answer bringing one peer nobody
    /// knew (so the window stays open); the ids asked, in order.
    fn grow_with_news(m: &mut Membership, secs: u64) -> Vec<PeerId> {
        let mut asked = Vec::new();
        for s in 1..=secs {
            m.handle_timer(Timer::Grow, t(s));
            let n = 100 + s as usize;
            asked.extend(answer_all(m, t(s), |_| vec![advert(n, t(s))]));
        }
        asked
    }

    #[test]
    fn every_other_ask_goes_to_the_bootstrap_node_registered_with() {
        let mut m = machine(0, vec![contact(1)], vec![], Default::default(), t(0));
        let sent = sends(&drain(&mut m));
        m.handle_response(sent[0].2, pong(1), t(0));
        // node-1 lists 2-5, who know nobody new: the discovery session ends at once.
        answer_all(&mut m, t(0), |from| {
            if *from == id(1) {
                (2..=5).map(|n| advert(n, t(0))).collect()
            } else {
                vec![]
            }
        });
        assert_eq!(m.discovery_round(), 0);
        // Every growth answer brings someone new, so it asks every second.
        let asked = grow_with_news(&mut m, 6);
        assert_eq!(asked.len(), 6, "{asked:?}");
        for k in [0, 2, 4] {
            assert_eq!(asked[k], id(1), "ask {k} to the bootstrap node: {asked:?}");
        }
        assert_eq!(m.stats().growth_asks, 6);
    }

    #[test]
    fn asks_go_to_active_peers_when_there_are_some() {
        let config = MembershipConfig {
            active_size: 2,
            ..Default::default()
        };
        let mut m = machine(0, vec![], vec![], config, t(0));
        for n in 1..=6 {
            m.handle_register(advert(n, t(0)), t(0)).expect("room");
        }
        drain(&mut m);
        let active: Vec<PeerId> = m.active_peers().map(|p| p.node.peer_id.clone()).collect();
        assert_eq!(active.len(), 2, "two of six registrants are active");
        let asked = grow_with_news(&mut m, 6);
        assert_eq!(asked.len(), 6, "{asked:?}");
        assert!(
            asked.iter().all(|a| active.contains(a)),
            "asked {asked:?}, active {active:?}"
        );
    }

    #[test]
    fn a_growing_list_asks_every_second_until_it_holds_the_target() {
        let config = MembershipConfig {
            discovery_target: 12,
            ..Default::default()
        };
        let mut m = machine(0, vec![], vec![], config, t(0));
        for n in 1..=3 {
            m.handle_register(advert(n, t(0)), t(0)).expect("room");
        }
        drain(&mut m);
        // Each answer brings two peers nobody knew.
        let asked = run(&mut m, 20, |s| {
            let n = 100 + 2 * s as usize;
            vec![advert(n, t(s)), advert(n + 1, t(s))]
        });
        assert!(
            m.known_count() >= 12,
            "{} known, asked at {asked:?}",
            m.known_count()
        );
        assert_eq!(asked[..3], [1, 2, 3], "every second while it grows");
        let last = *asked.last().expect("asked");
        assert!(last < 20, "stops at the target: asked at {asked:?}");
        assert_eq!(m.deadline(Timer::Grow), None, "disarmed at the target");
    }
}
