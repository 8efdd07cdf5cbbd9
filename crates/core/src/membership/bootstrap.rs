//! Bootstrap: the configured nodes are tried in order with a `Ping` (they have no known id
//! yet; the `Pong` tells it). The first that answers gets our `RegisterPeer` and a
//! `GetPeerList`, whose answer starts recursive discovery. A contact silent for
//! `bootstrap_retry_base` is hedged with a ping to the next contact (the same one if it is the
//! only one), so one lost packet does not cost a whole `peer_timeout`. When all fail the node
//! retries with exponential backoff and jitter; stored peers (see `fill_active`) meanwhile
//! keep it joined.

use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::{
    Contact, Failure, Membership, MembershipConfig, MembershipEvent, PeerHealth, Purpose, Request,
    Response, Timer,
};
use crate::model::{PeerCapabilities, PeerId, PeerNode, PeerStatus};
use crate::time::{Instant, Now};

/// Where bootstrap stands.
#[derive(Debug, Default)]
pub(super) struct Bootstrap {
    phase: Phase,
    /// Failed attempts in a row (every contact failed), drives the backoff.
    failed_attempts: u32,
    /// How many pings this attempt has sent: the next goes to contact `sent % contacts`.
    sent: usize,
    /// Pings of this attempt still awaiting an answer.
    outstanding: usize,
    /// When this attempt started; hedging stops one `peer_timeout` later.
    started: Option<Instant>,
    /// The bootstrap node we last registered with: it hears every registrant, so a short list
    /// asks it first (`growth.rs`). Our own record of whom we dialled, never an advert's claim.
    pub(super) registered_with: Option<PeerId>,
}

#[derive(Debug, Default, PartialEq, Eq)]
enum Phase {
    #[default]
    Idle,
    /// Waiting for the answer of at least one contact.
    Trying,
    /// Every contact failed; the retry timer is armed.
    Waiting,
}

/// Delay before retry number `attempt` (1-based): `base * 2^(attempt-1)` capped at `cap`, then
/// "equal jitter": uniform in [half, full] so retries of many nodes spread out but never come
/// sooner than half the backoff.
pub(super) fn backoff_delay(
    config: &MembershipConfig,
    attempt: u32,
    rng: &mut ChaCha8Rng,
) -> Duration {
    let exponent = attempt.saturating_sub(1).min(30);
    let full = config
        .bootstrap_retry_base
        .saturating_mul(1 << exponent)
        .min(config.bootstrap_retry_cap);
    let full_ms = u64::try_from(full.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rng.random_range(full_ms / 2..=full_ms))
}

impl Membership {
    /// Starts an attempt at the first contact, unless one is under way.
    pub(super) fn start_bootstrap(&mut self, now: Now) {
        if self.bootstrap.phase == Phase::Trying || self.bootstrap_contacts.is_empty() {
            return;
        }
        self.stats.bootstrap_attempts += 1;
        self.bootstrap.phase = Phase::Trying;
        self.bootstrap.sent = 0;
        self.bootstrap.outstanding = 0;
        self.bootstrap.started = Some(now.mono);
        self.ping_next_contact(now);
    }

    /// Pings the next contact (cycling, for hedges) and arms the hedge timer while the attempt
    /// is younger than one `peer_timeout`; an attempt with nothing left in flight has failed.
    fn ping_next_contact(&mut self, now: Now) {
        let index = self.bootstrap.sent % self.bootstrap_contacts.len().max(1);
        let Some(contact) = self.bootstrap_contacts.get(index).cloned() else {
            return self.bootstrap_failed(now);
        };
        let purpose = Purpose::BootstrapProbe { index };
        if self.send(contact, Request::Ping, purpose, now) {
            self.bootstrap.sent += 1;
            self.bootstrap.outstanding += 1;
        } else if self.bootstrap.outstanding == 0 {
            return self.bootstrap_failed(now);
        }
        let hedge_at = now.mono.saturating_add(self.config.bootstrap_retry_base);
        let started = self.bootstrap.started.unwrap_or(now.mono);
        if hedge_at < started.saturating_add(self.config.peer_timeout) {
            self.schedule(hedge_at, Timer::Bootstrap);
        }
    }

    fn bootstrap_failed(&mut self, now: Now) {
        self.bootstrap.failed_attempts = self.bootstrap.failed_attempts.saturating_add(1);
        self.bootstrap.phase = Phase::Waiting;
        self.stats.bootstrap_failures += 1;
        let delay = backoff_delay(&self.config, self.bootstrap.failed_attempts, &mut self.rng);
        let retry_at = now.mono.saturating_add(delay);
        self.schedule(retry_at, Timer::Bootstrap);
        self.emit(MembershipEvent::BootstrapFailed {
            attempt: self.bootstrap.failed_attempts,
            retry_at,
        });
    }

    pub(super) fn on_bootstrap_timer(&mut self, now: Now) {
        if self.bootstrap.phase == Phase::Trying {
            // No contact has answered yet: hedge.
            return self.ping_next_contact(now);
        }
        if self.bootstrap.phase != Phase::Waiting {
            return;
        }
        self.bootstrap.phase = Phase::Idle;
        if self.healthy_count() >= self.config.min_healthy_peers {
            // Rejoined through stored peers or incoming registrations meanwhile.
            self.bootstrap.failed_attempts = 0;
            return;
        }
        self.start_bootstrap(now);
    }

    pub(super) fn on_bootstrap_answer(
        &mut self,
        index: usize,
        result: Result<Response, Failure>,
        now: Now,
    ) {
        if self.bootstrap.phase != Phase::Trying {
            // A hedge's late answer: the attempt already succeeded or failed.
            return;
        }
        self.bootstrap.outstanding = self.bootstrap.outstanding.saturating_sub(1);
        let (peer_id, status) = match result {
            Ok(Response::Pong { peer_id, status })
                if peer_id != self.self_advert.peer_id && !self.is_banned(&peer_id, now) =>
            {
                (peer_id, status)
            }
            // Another ping may still answer; else the next untried contact, else give up.
            Ok(_) | Err(_) if self.bootstrap.outstanding > 0 => return,
            Ok(_) | Err(_) if self.bootstrap.sent < self.bootstrap_contacts.len() => {
                return self.ping_next_contact(now);
            }
            Ok(_) | Err(_) => return self.bootstrap_failed(now),
        };
        let Some(contact) = self.bootstrap_contacts.get(index).cloned() else {
            return;
        };
        self.bootstrap.phase = Phase::Idle;
        self.bootstrap.failed_attempts = 0;
        self.bootstrap.registered_with = Some(peer_id.clone());
        if !self.peers.contains_key(&peer_id) {
            let node = bootstrap_node(&contact, peer_id.clone(), now);
            if let Err(why) = self.insert_peer(node, PeerHealth::Alive) {
                self.stats.count_refusal(why);
                return;
            }
        }
        if let Some(known) = self.peers.get_mut(&peer_id) {
            known.node.is_bootstrap = true;
        }
        self.mark_alive(&peer_id, None, now);
        // A busy bootstrap node (every joiner pings it first) still registers us and hands
        // out its list; it just does not become one more hub in our active set.
        if status != PeerStatus::Busy {
            self.activate(&peer_id, now);
        }
        self.emit(MembershipEvent::Bootstrapped {
            peer_id: peer_id.clone(),
        });
        let to = Contact {
            peer_id: Some(peer_id.clone()),
            ..contact
        };
        let advert = self.advert_now(now);
        let register = Purpose::Register {
            peer: peer_id.clone(),
        };
        self.send(to.clone(), Request::Register { advert }, register, now);
        let max = self.config.peer_list_request_size;
        let list = Purpose::PeerList {
            peer: peer_id,
            discovery: false,
        };
        self.send(to, Request::GetPeerList { max }, list, now);
    }

    /// Whether a bootstrap attempt is under way or scheduled.
    pub fn is_bootstrapping(&self) -> bool {
        self.bootstrap.phase != Phase::Idle
    }
}

/// The entry for a bootstrap node we only know by address and its `Pong`.
fn bootstrap_node(contact: &Contact, peer_id: crate::model::PeerId, now: Now) -> PeerNode {
    PeerNode {
        peer_id,
        address: contact.address.clone(),
        port: contact.port,
        // Unknown until it tells us: the runtime tries its best transport and falls back. ("Grpc"
        // here kept every link to a bootstrap node on unary calls for good.)
        supported_protocols: Vec::new(),
        capabilities: PeerCapabilities {
            supports_streaming: false,
            supports_transaction_distribution: true,
            max_transaction_size: 0,
        },
        status: PeerStatus::Online,
        first_seen: now.wall,
        last_seen: now.wall,
        failure_count: 0,
        latency: None,
        is_bootstrap: true,
        banned_until: None,
        verified: false,
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::super::test_util::*;
    use super::super::*;
    use super::backoff_delay;
    use crate::model::NodeState;

    #[test]
    fn contacts_are_tried_in_order_then_register_and_list() {
        let boot = vec![contact(1), contact(2)];
        let mut m = machine(0, boot, vec![], MembershipConfig::default(), t(0));
        let sent = sends(&drain(&mut m));
        assert_eq!(sent.len(), 1, "only the first contact is tried first");
        assert_eq!(
            (sent[0].0.clone(), &sent[0].1),
            (contact(1), &Request::Ping)
        );

        m.handle_response(sent[0].2, Err(Failure::Unreachable), t(1));
        let sent = sends(&drain(&mut m));
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].0, contact(2), "falls back to the next contact");

        m.handle_response(sent[0].2, pong(2), t(2));
        let out = drain(&mut m);
        let sent = sends(&out);
        let requests: Vec<_> = sent.iter().map(|(_, r, _)| r.clone()).collect();
        assert!(matches!(&requests[0], Request::Register { advert } if advert.peer_id == id(0)));
        assert_eq!(requests[1], Request::GetPeerList { max: 100 });
        assert!(sent.iter().all(|(to, ..)| to.peer_id == Some(id(2))));
        assert!(events(&out).contains(&MembershipEvent::Bootstrapped { peer_id: id(2) }));
        assert!(
            m.peer(&id(2))
                .is_some_and(|p| p.active && p.node.is_bootstrap)
        );
        assert!(!m.is_bootstrapping());
    }

    #[test]
    fn a_contact_that_is_ourselves_is_skipped() {
        let mut m = machine(
            0,
            vec![contact(0), contact(1)],
            vec![],
            Default::default(),
            t(0),
        );
        let sent = sends(&drain(&mut m));
        m.handle_response(sent[0].2, pong(0), t(1));
        let sent = sends(&drain(&mut m));
        assert_eq!(sent[0].0, contact(1));
        assert!(m.peer(&id(0)).is_none());
    }

    #[test]
    fn failed_attempts_back_off_exponentially_with_jitter_up_to_the_cap() {
        let config = MembershipConfig::default();
        let mut m = machine(0, vec![contact(1)], vec![], config.clone(), t(0));
        let mut now = t(0);
        for attempt in 1..=10u32 {
            let sent = sends(&drain(&mut m));
            assert_eq!(sent.len(), 1, "attempt {attempt} pings the contact");
            m.handle_response(sent[0].2, Err(Failure::Timeout), now);
            let out = drain(&mut m);
            let retry_at = events(&out)
                .into_iter()
                .find_map(|e| match e {
                    MembershipEvent::BootstrapFailed {
                        attempt: a,
                        retry_at,
                    } => {
                        assert_eq!(a, attempt);
                        Some(retry_at)
                    }
                    _ => None,
                })
                .expect("BootstrapFailed event");
            assert_eq!(m.deadline(Timer::Bootstrap), Some(retry_at));
            let full = (5_000u64 << (attempt - 1)).min(300_000);
            let delay = retry_at.as_millis() - now.mono.as_millis();
            assert!(
                (full / 2..=full).contains(&delay),
                "attempt {attempt}: {delay}"
            );
            assert_eq!(m.state(), NodeState::Offline);
            now = Now::from_millis(retry_at.as_millis());
            m.handle_timer(Timer::Bootstrap, now);
        }
        assert_eq!(m.stats().bootstrap_failures, 10);
    }

    #[test]
    fn backoff_delay_stays_within_jitter_bounds_and_cap() {
        let config = MembershipConfig::default();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut seen_below_full = false;
        for attempt in 1..=40 {
            for _ in 0..20 {
                let d = backoff_delay(&config, attempt, &mut rng);
                let full = config
                    .bootstrap_retry_base
                    .saturating_mul(1 << (attempt - 1).min(30))
                    .min(config.bootstrap_retry_cap);
                assert!(d <= full && d >= full / 2, "attempt {attempt}: {d:?}");
                seen_below_full |= d < full;
            }
        }
        assert!(seen_below_full, "jitter never applied");
    }

    #[test]
    fn rejoins_from_stored_peers_when_every_bootstrap_node_is_down() {
        let stored: Vec<_> = (3..9)
            .map(|n| crate::model::PeerNode::from_advert(advert(n, t(0)), t(0).wall))
            .collect();
        let mut m = machine(0, vec![contact(1)], stored, Default::default(), t(100));
        let sent = sends(&drain(&mut m));
        let boot = sent
            .iter()
            .find(|(to, ..)| *to == contact(1))
            .expect("bootstrap");
        m.handle_response(boot.2, Err(Failure::Unreachable), t(101));
        let out = drain(&mut m);
        assert!(
            events(&out)
                .iter()
                .any(|e| matches!(e, MembershipEvent::BootstrapFailed { .. }))
        );
        let mut states = Vec::new();
        for n in 3..9 {
            m.handle_response(request_to(&sent, n, is_ping), pong(n), t(102));
            states.extend(events(&drain(&mut m)).into_iter().filter_map(|e| match e {
                MembershipEvent::StateChanged { to, .. } => Some(to),
                _ => None,
            }));
        }
        assert_eq!(states, [NodeState::Degraded, NodeState::Online]);
        assert_eq!(m.active_count(), 6);
        // The retry timer finds the node healthy and does not bootstrap again.
        m.handle_timer(Timer::Bootstrap, t(200));
        assert!(sends(&drain(&mut m)).is_empty());
        assert!(!m.is_bootstrapping());
    }

    #[test]
    fn a_busy_bootstrap_node_registers_us_and_lists_peers_but_stays_passive() {
        let mut m = machine(0, vec![contact(1)], vec![], Default::default(), t(0));
        let sent = sends(&drain(&mut m));
        let busy = Ok(Response::Pong {
            peer_id: id(1),
            status: crate::model::PeerStatus::Busy,
        });
        m.handle_response(sent[0].2, busy, t(1));
        let sent = sends(&drain(&mut m));
        assert!(
            sent.iter()
                .any(|(_, r, _)| matches!(r, Request::Register { .. }))
        );
        assert!(sent.iter().any(|(_, r, _)| is_list(r)));
        let boot = m.peer(&id(1)).expect("known");
        assert!(
            boot.node.is_bootstrap && !boot.active,
            "not one more hub link"
        );
        assert!(!m.is_bootstrapping());
    }

    #[test]
    fn a_silent_contact_is_hedged_and_a_late_answer_is_ignored() {
        let mut m = machine(0, vec![contact(1)], vec![], Default::default(), t(0));
        let first = sends(&drain(&mut m));
        assert_eq!(first.len(), 1);
        // Five seconds of silence (bootstrap_retry_base): the only contact is pinged again.
        m.handle_timer(Timer::Bootstrap, t(5));
        let second = sends(&drain(&mut m));
        assert_eq!(second.len(), 1);
        assert_eq!((&second[0].0, &second[0].1), (&contact(1), &Request::Ping));
        m.handle_response(second[0].2, pong(1), t(6));
        let out = drain(&mut m);
        assert!(events(&out).contains(&MembershipEvent::Bootstrapped { peer_id: id(1) }));
        assert!(!m.is_bootstrapping());
        // The first ping's timeout comes in later: no failure, no retry.
        m.handle_response(first[0].2, Err(Failure::Timeout), t(30));
        let out = drain(&mut m);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(m.stats().bootstrap_failures, 0);
    }

    #[test]
    fn hedging_stops_after_one_peer_timeout_and_the_attempt_fails_when_all_pings_did() {
        let mut m = machine(
            0,
            vec![contact(1), contact(2)],
            vec![],
            Default::default(),
            t(0),
        );
        let mut pings = sends(&drain(&mut m));
        for k in 1..=10u64 {
            m.handle_timer(Timer::Bootstrap, t(5 * k));
            pings.extend(sends(&drain(&mut m)));
        }
        assert_eq!(pings.len(), 6, "the first ping and five hedges, 5 s apart");
        let targets: Vec<_> = pings.iter().map(|(to, ..)| to.clone()).collect();
        assert_eq!(
            targets[..3],
            [contact(1), contact(2), contact(1)],
            "cycling"
        );
        for (i, (_, _, rid)) in pings.iter().enumerate() {
            m.handle_response(*rid, Err(Failure::Timeout), t(31));
            let failed = m.stats().bootstrap_failures;
            assert_eq!(
                failed,
                u64::from(i == pings.len() - 1),
                "only once all failed"
            );
        }
    }
}
