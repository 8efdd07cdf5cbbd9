//! Growing a short list: while the node knows fewer than `discovery_target` peers, it asks one
//! random live peer for its list now and then, so nodes that started early in a network that
//! is still filling up come to know the later ones without waiting for the refresh exchange
//! (15 minutes by default).
//!
//! Why: a discovery session stops when a round brings nobody new, which, for a node among the
//! first to start, is at once: the bootstrap node knew only a handful of peers when it asked.
//! Join announcements reach only a small network's active sets. With the shipped timers, 100
//! lab nodes started together still knew 26 peers at the fewest after 120 s.
//!
//! Cadence: [`GROW_FIRST_WAIT`] after the node starts; then again after the same wait as long
//! as each ask brings someone new (the network is still filling), twice as long each time it
//! does not, up to `refresh_interval`, so a network smaller than the target (where the list
//! can never reach it) goes quiet after a few asks. At the target the timer stops; the
//! refresh re-arms it if the list shrinks below the target again. One ask per wait at most,
//! none while a discovery session runs (its answers count as growth), so the cost is one
//! peer list a second at worst, and only while the list is short.

use std::time::Duration;

use rand::seq::IndexedRandom;

use super::{Contact, Membership, PeerHealth, Purpose, Request, Timer};
use crate::model::{PeerAdvert, PeerId};
use crate::time::{Instant, Now};

/// The wait before the first ask and between asks while the list keeps growing.
pub const GROW_FIRST_WAIT: Duration = Duration::from_secs(1);

/// When the last ask went out, how many peers we knew then, and how long until the next.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Growth {
    at: Option<Instant>,
    known_then: usize,
    wait: Duration,
}

impl Membership {
    /// Arms the growth timer if the list is short and the timer is not armed yet.
    pub(super) fn arm_growth(&mut self, now: Now) {
        if self.knows_enough() || self.timers.get(Timer::Grow).is_some() {
            return;
        }
        let wait = self.growth.wait.max(GROW_FIRST_WAIT);
        self.schedule(now.mono.saturating_add(wait), Timer::Grow);
    }

    /// Asks one random live peer for its list if the list is still short; re-arms.
    pub(super) fn on_grow_timer(&mut self, now: Now) {
        if self.knows_enough() {
            self.growth = Growth::default();
            return;
        }
        let last = self.growth;
        let grew = last.at.is_none() || self.peers.len() > last.known_then;
        let wait = if grew {
            GROW_FIRST_WAIT
        } else {
            (last.wait * 2).clamp(GROW_FIRST_WAIT, self.config.refresh_interval)
        };
        // A running session asks peers already; its answers count as growth next time. With
        // nobody alive to ask (a lone bootstrap node) the wait doubles all the same, so an idle
        // node is not woken every second; whoever registers with it is learnt directly.
        if self.discovery_round() == 0 && self.ask_random_live_peer(now) {
            self.stats.growth_asks += 1;
        }
        self.growth = Growth {
            at: Some(now.mono),
            known_then: self.peers.len(),
            wait,
        };
        self.schedule(now.mono.saturating_add(wait), Timer::Grow);
    }

    /// Sends a peer-list request to one random alive, unbanned peer; false if there is none.
    /// Its answer goes through discovery: new peers found start (or feed) a session.
    fn ask_random_live_peer(&mut self, now: Now) -> bool {
        let sources: Vec<&PeerId> = self
            .peers
            .values()
            .filter(|p| p.health == PeerHealth::Alive && !self.is_banned(&p.node.peer_id, now))
            .map(|p| &p.node.peer_id)
            .collect();
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
    fn a_short_list_asks_ever_more_rarely_while_nobody_new_comes() {
        let mut m = with_registered(1..=3);
        let asked = run(&mut m, 40, |s| vec![advert(1, t(s))]);
        assert_eq!(
            asked,
            [1, 2, 4, 8, 16, 32],
            "the wait doubles while fruitless"
        );
        assert_eq!(m.stats().growth_asks, 6);
        assert_eq!(m.deadline(Timer::Grow), Some(t(64).mono), "still armed");
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
