//! Health: heartbeats to active peers, pings to passive ones, suspicion before removal, and
//! the node state that follows from the healthy count.
//!
//! Like SWIM with Lifeguard's caution: one missed contact makes an active peer Suspect (still
//! counted healthy, probed again next tick); only `failure_threshold` misses in a row make it
//! Unreachable, which takes it out of the active set (refilled from the passive list). It is
//! forgotten once nobody has heard of it for `removal_after`.

use std::time::Duration;

use rand::seq::SliceRandom;

use super::{
    Contact, HeartbeatOutcome, Membership, MembershipEvent, Output, PeerHealth, Purpose, Request,
    Timer,
};
use crate::model::{NodeState, PeerId, PeerStatus, Timestamp};

impl Membership {
    pub(super) fn on_probe_timer(&mut self, now: Timestamp) {
        self.schedule(now.saturating_add(self.config.probe_interval), Timer::Probe);
        self.expire_pending(now);
        self.sweep(now);
        let due: Vec<PeerId> = self
            .active_peers()
            .filter(|p| !p.probing)
            .map(|p| p.node.peer_id.clone())
            .collect();
        for id in due {
            self.send_heartbeat(&id, now);
        }
        self.check_passive(now);
        self.fill_active(now);
        self.update_state(now);
    }

    fn send_heartbeat(&mut self, id: &PeerId, now: Timestamp) {
        let Some(known) = self.peers.get(id) else {
            return;
        };
        let to = Contact::of(&known.node);
        self.heartbeat_sequence += 1;
        let request = Request::Heartbeat {
            sequence: self.heartbeat_sequence,
        };
        self.send(to, request, Purpose::Heartbeat { peer: id.clone() }, now);
    }

    /// Pings a few passive peers that are not unreachable, so dead entries are found and live
    /// ones stay fresh enough to hand out.
    fn check_passive(&mut self, now: Timestamp) {
        let mut passive: Vec<PeerId> = self
            .peers
            .values()
            .filter(|p| !p.active && !p.probing && p.health != PeerHealth::Unreachable)
            .filter(|p| !self.is_banned(&p.node.peer_id, now))
            .map(|p| p.node.peer_id.clone())
            .collect();
        passive.shuffle(&mut self.rng);
        for id in passive
            .into_iter()
            .take(self.config.passive_checks_per_probe)
        {
            self.send_probe(&id, now);
        }
    }

    /// Fails requests the daemon never answered (it should have reported a timeout).
    fn expire_pending(&mut self, now: Timestamp) {
        let limit = self.config.peer_timeout.saturating_mul(2);
        let expired: Vec<_> = self
            .pending
            .iter()
            .filter(|(_, p)| now.since(p.sent_at) > limit)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(pending) = self.pending.remove(&id) {
                self.stats.requests_expired += 1;
                self.complete(pending, Err(super::Failure::Timeout), now);
            }
        }
    }

    /// Forgets peers nobody has heard of for `removal_after` unless they might still be live
    /// (active, or verified and due a passive check); lifts expired bans.
    fn sweep(&mut self, now: Timestamp) {
        let removal_after = self.config.removal_after;
        let gone: Vec<PeerId> = self
            .peers
            .values()
            .filter(|p| !p.active && now.since(p.node.last_seen) > removal_after)
            .filter(|p| matches!(p.health, PeerHealth::Unreachable | PeerHealth::Candidate))
            .filter(|p| !self.is_banned(&p.node.peer_id, now))
            .map(|p| p.node.peer_id.clone())
            .collect();
        for id in gone {
            self.remove_peer(&id);
        }
        self.bans.retain(|_, until| *until > now);
    }

    /// Any answer or contact from a peer: failures reset, Alive, seen now.
    pub(super) fn mark_alive(&mut self, id: &PeerId, rtt: Option<Duration>, now: Timestamp) {
        let Some(known) = self.peers.get_mut(id) else {
            return;
        };
        let was_verified = matches!(known.health, PeerHealth::Alive | PeerHealth::Suspect);
        known.health = PeerHealth::Alive;
        known.node.failure_count = 0;
        known.node.status = PeerStatus::Online;
        known.node.last_seen = now;
        if rtt.is_some() {
            known.node.latency = rtt;
        }
        if !was_verified {
            self.persist(id);
        }
    }

    /// A contact with `id` failed: Suspect on the first miss, Unreachable at the threshold.
    pub(super) fn record_failure(&mut self, id: &PeerId, now: Timestamp) {
        let threshold = self.config.failure_threshold.max(1);
        let Some(known) = self.peers.get_mut(id) else {
            return;
        };
        known.probing = false;
        known.node.failure_count = known.node.failure_count.saturating_add(1);
        let failures = known.node.failure_count;
        let was = known.health;
        if failures >= threshold {
            if was == PeerHealth::Unreachable {
                return;
            }
            known.health = PeerHealth::Unreachable;
            known.node.status = PeerStatus::Offline;
            self.deactivate(id);
            self.persist(id);
            self.emit(MembershipEvent::PeerUnreachable {
                peer_id: id.clone(),
            });
            self.fill_active(now);
        } else if was == PeerHealth::Alive {
            known.health = PeerHealth::Suspect;
            if known.active {
                self.emit(MembershipEvent::PeerSuspect {
                    peer_id: id.clone(),
                });
            }
        }
    }

    pub(super) fn on_heartbeat_answer(
        &mut self,
        id: &PeerId,
        outcome: HeartbeatOutcome,
        rtt: Duration,
        now: Timestamp,
    ) {
        if let Some(known) = self.peers.get_mut(id) {
            known.probing = false;
        }
        match outcome {
            HeartbeatOutcome::Accepted => self.mark_alive(id, Some(rtt), now),
            HeartbeatOutcome::NotRegistered => {
                self.stats.heartbeats_unregistered += 1;
                self.mark_alive(id, Some(rtt), now);
                self.send_register(id, now);
            }
            // It banned us: useless as a neighbour.
            HeartbeatOutcome::Banned => {
                self.deactivate(id);
                self.fill_active(now);
            }
        }
    }

    pub(super) fn on_probe_answer(&mut self, id: &PeerId, rtt: Duration, now: Timestamp) {
        if let Some(known) = self.peers.get_mut(id) {
            known.probing = false;
        }
        self.mark_alive(id, Some(rtt), now);
        if !self.is_banned(id, now) {
            self.activate(id);
        }
    }

    pub(super) fn send_register(&mut self, id: &PeerId, now: Timestamp) {
        let Some(known) = self.peers.get(id) else {
            return;
        };
        let to = Contact::of(&known.node);
        let advert = self.advert_now(now);
        let purpose = Purpose::Register { peer: id.clone() };
        self.send(to, Request::Register { advert }, purpose, now);
    }

    /// Recomputes Online / Degraded / Offline; every change is an event, and falling below
    /// `min_healthy_peers` starts bootstrap again.
    pub(super) fn update_state(&mut self, now: Timestamp) {
        let healthy = self.healthy_count();
        let to = NodeState::from_healthy(healthy, self.config.min_healthy_peers);
        let from = self.state;
        if to == from {
            return;
        }
        self.state = to;
        self.push(Output::Event(MembershipEvent::StateChanged { from, to }));
        if from == NodeState::Online && !self.is_bootstrapping() {
            self.start_bootstrap(now);
        }
    }
}
