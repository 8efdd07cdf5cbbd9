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
use crate::model::{NodeState, PeerId, PeerStatus};
use crate::time::Now;

impl Membership {
    pub(super) fn on_probe_timer(&mut self, now: Now) {
        self.schedule(
            now.mono.saturating_add(self.config.probe_interval),
            Timer::Probe,
        );
        self.expire_pending(now);
        self.sweep(now);
        self.prune_inbound(now);
        let due: Vec<PeerId> = self
            .active_peers()
            .filter(|p| !p.probing)
            .map(|p| p.node.peer_id.clone())
            .collect();
        for id in due {
            self.send_heartbeat(&id, now);
        }
        self.check_passive(now);
        self.swap_for_relays(now);
        self.fill_active(now);
        self.update_state(now);
    }

    fn send_heartbeat(&mut self, id: &PeerId, now: Now) {
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
    fn check_passive(&mut self, now: Now) {
        // References, not clones: only `passive_checks_per_probe` of the list are used.
        let mut passive: Vec<&PeerId> = self
            .peers
            .values()
            .filter(|p| !p.active && !p.probing && p.health != PeerHealth::Unreachable)
            .filter(|p| !self.is_banned(&p.node.peer_id, now))
            .map(|p| &p.node.peer_id)
            .collect();
        passive.shuffle(&mut self.rng);
        let chosen: Vec<PeerId> = passive
            .into_iter()
            .take(self.config.passive_checks_per_probe)
            .cloned()
            .collect();
        for id in chosen {
            if self.may_dial(&id, now).is_ok() {
                self.send_probe(&id, now);
            }
        }
    }

    /// Fails requests the daemon never answered (it should have reported a timeout).
    fn expire_pending(&mut self, now: Now) {
        let limit = self.config.peer_timeout.saturating_mul(2);
        let expired: Vec<_> = self
            .pending
            .iter()
            .filter(|(_, p)| now.mono.since(p.sent_at) > limit)
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
    /// (active, or verified and due a passive check); lifts expired bans. Both on the wall
    /// clock: `last_seen` comes from adverts and the store, bans are persisted.
    fn sweep(&mut self, now: Now) {
        let removal_after = self.config.removal_after;
        let gone: Vec<PeerId> = self
            .peers
            .values()
            .filter(|p| !p.active && now.wall.since(p.node.last_seen) > removal_after)
            .filter(|p| matches!(p.health, PeerHealth::Unreachable | PeerHealth::Candidate))
            .filter(|p| !self.is_banned(&p.node.peer_id, now))
            .map(|p| p.node.peer_id.clone())
            .collect();
        for id in gone {
            self.remove_peer(&id);
        }
        self.bans.retain(|_, until| *until > now.wall);
    }

    /// Any answer or contact from a peer: failures reset, Alive, seen now.
    pub(super) fn mark_alive(&mut self, id: &PeerId, rtt: Option<Duration>, now: Now) {
        let Some(known) = self.peers.get_mut(id) else {
            return;
        };
        let was_live = matches!(known.health, PeerHealth::Alive | PeerHealth::Suspect);
        known.health = PeerHealth::Alive;
        known.node.failure_count = 0;
        known.node.status = PeerStatus::Online;
        known.node.last_seen = now.wall;
        if rtt.is_some() {
            known.node.latency = rtt;
        }
        if !was_live {
            let address = super::dials::key(&known.node);
            self.dials.answered(&address);
            self.persist(id);
        }
    }

    /// `id` said it is shutting down: Unreachable now (out of the active set, which refills
    /// from the passive peers) rather than after `failure_threshold` missed contacts; its
    /// next heartbeat or registration brings it back as any unreachable peer's does.
    pub fn handle_leaving(&mut self, id: &PeerId, now: Now) {
        let Some(known) = self.peers.get_mut(id) else {
            return;
        };
        if known.health == PeerHealth::Unreachable {
            return;
        }
        known.probing = false;
        known.health = PeerHealth::Unreachable;
        known.node.status = PeerStatus::Offline;
        known.node.failure_count = known.node.failure_count.max(self.config.failure_threshold);
        self.deactivate(id);
        self.persist(id);
        self.emit(MembershipEvent::PeerLeft {
            peer_id: id.clone(),
        });
        self.fill_active(now);
        self.update_state(now);
    }

    /// A contact with `id` failed: Suspect on the first miss, Unreachable at the threshold.
    pub(super) fn record_failure(&mut self, id: &PeerId, now: Now) {
        let threshold = self.config.failure_threshold.max(1);
        let Some(known) = self.peers.get_mut(id) else {
            return;
        };
        if known.health == PeerHealth::Candidate {
            let address = super::dials::key(&known.node);
            self.dials.failed(&address, now.mono);
        }
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
        now: Now,
    ) {
        if let Some(known) = self.peers.get_mut(id) {
            known.probing = false;
        }
        match outcome {
            HeartbeatOutcome::Accepted => self.mark_alive(id, Some(rtt), now),
            HeartbeatOutcome::NotRegistered => {
                self.stats.heartbeats_unregistered += 1;
                self.mark_alive(id, Some(rtt), now);
                self.note_rejoining(id, now);
                self.send_register(id, now);
            }
            // It banned us, or does not believe we are who we say (we reached it without
            // proving our id): useless as a neighbour.
            HeartbeatOutcome::Banned | HeartbeatOutcome::Unproven => {
                self.deactivate(id);
                self.fill_active(now);
            }
        }
    }

    /// A `Ping` was answered. A Busy peer (at its `max_inbound`) stays passive and is left
    /// alone for a while; another peer is tried for the slot at once.
    pub(super) fn on_probe_answer(
        &mut self,
        id: &PeerId,
        status: PeerStatus,
        rtt: Duration,
        now: Now,
    ) {
        let busy = status == PeerStatus::Busy;
        let busy_for = self.config.probe_interval * 3;
        if let Some(known) = self.peers.get_mut(id) {
            known.probing = false;
            known.busy_until = busy.then(|| now.mono.saturating_add(busy_for));
        }
        self.mark_alive(id, Some(rtt), now);
        if busy {
            self.fill_active(now);
        } else if !self.is_banned(id, now) && self.activate(id, now) {
            // The first heartbeat at once, not at the next probe tick (up to `probe_interval`
            // later): the peer gossips to those that heartbeat it, so until then a node held
            // active by nobody else heard of transactions only by anti-entropy (peer-lab
            // propagation with traffic 1-2 s after the start: 100 % p95 ~5 s).
            self.send_heartbeat(id, now);
        }
    }

    /// Notes an active peer that did not know us: its registration is followed by a
    /// heartbeat at once (see `heartbeat_after_register`), unless one went within the last
    /// `probe_interval`.
    fn note_rejoining(&mut self, id: &PeerId, now: Now) {
        let interval = self.config.probe_interval;
        self.rejoining
            .retain(|p, (at, _)| self.active.contains(p) && now.mono.since(*at) < interval);
        if self.active.contains(id) && !self.rejoining.contains_key(id) {
            self.rejoining.insert(id.clone(), (now.mono, false));
        }
    }

    /// A peer that took our registration after our heartbeat found it without us: the
    /// heartbeat again now, not at the next probe tick, for the reason the first heartbeat of
    /// a newly active peer goes at once (`on_probe_answer`'s comment).
    pub(super) fn heartbeat_after_register(&mut self, id: &PeerId, now: Now) {
        let Some((_, sent)) = self.rejoining.get_mut(id) else {
            return;
        };
        if !*sent {
            *sent = true;
            self.send_heartbeat(id, now);
        }
    }

    pub(super) fn send_register(&mut self, id: &PeerId, now: Now) {
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
    pub(super) fn update_state(&mut self, now: Now) {
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

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::super::*;
    use crate::model::NodeState;

    /// Fires the probe timer at `now` and returns the heartbeat sent to each peer.
    fn tick(m: &mut Membership, now: Now) -> (Vec<Output>, Vec<(Contact, Request, RequestId)>) {
        m.handle_timer(Timer::Probe, now);
        let out = drain(m);
        let sent = sends(&out);
        (out, sent)
    }

    fn answer_all_but(
        m: &mut Membership,
        sent: &[(Contact, Request, RequestId)],
        dead: usize,
        now: Now,
    ) -> Vec<Output> {
        for (to, request, rid) in sent {
            let result = if to.peer_id == Some(id(dead)) {
                Err(Failure::Timeout)
            } else if is_heartbeat(request) {
                heartbeat_ok()
            } else {
                let n: usize = to.peer_id.as_ref().expect("id").as_str()[5..]
                    .parse()
                    .expect("n");
                pong(n)
            };
            m.handle_response(*rid, result, now);
        }
        drain(m)
    }

    #[test]
    fn one_lost_heartbeat_makes_a_peer_suspect_not_removed() {
        let mut m = with_registered(1..=5);
        assert_eq!(m.state(), NodeState::Online);
        let (_, sent) = tick(&mut m, t(10));
        assert_eq!(sent.iter().filter(|(_, r, _)| is_heartbeat(r)).count(), 5);
        let out = answer_all_but(&mut m, &sent, 2, t(11));
        assert!(events(&out).contains(&MembershipEvent::PeerSuspect { peer_id: id(2) }));
        let p2 = m.peer(&id(2)).expect("still known");
        assert_eq!((p2.health, p2.active), (PeerHealth::Suspect, true));
        assert_eq!(m.state(), NodeState::Online, "a suspect still counts");
        // Re-probed on the next tick; the answer clears the suspicion.
        let (_, sent) = tick(&mut m, t(20));
        let rid = request_to(&sent, 2, is_heartbeat);
        m.handle_response(rid, heartbeat_ok(), t(21));
        assert_eq!(m.peer(&id(2)).expect("known").health, PeerHealth::Alive);
        assert_eq!(m.peer(&id(2)).expect("known").node.failure_count, 0);
    }

    #[test]
    fn threshold_failures_drop_from_active_and_refill_from_passive() {
        let mut m = with_registered(1..=10);
        assert_eq!(m.active_count(), 8, "active set is bounded");
        assert_eq!(m.known_count(), 10);
        let victim = m
            .active_peers()
            .next()
            .expect("active")
            .node
            .peer_id
            .clone();
        let victim_n: usize = victim.as_str()[5..].parse().expect("n");
        let mut dropped = false;
        for k in 1..=3u64 {
            let (_, sent) = tick(&mut m, t(10 * k));
            let out = answer_all_but(&mut m, &sent, victim_n, t(10 * k + 1));
            let unreachable = MembershipEvent::PeerUnreachable {
                peer_id: victim.clone(),
            };
            dropped = events(&out).contains(&unreachable);
            assert_eq!(dropped, k == 3, "dropped only at the threshold (tick {k})");
            if dropped {
                // The free slot was refilled by pinging a passive peer, which answered.
                assert_eq!(m.active_count(), 8);
                assert!(
                    events(&out)
                        .iter()
                        .any(|e| matches!(e, MembershipEvent::PeerActivated { .. }))
                );
            }
        }
        assert!(dropped);
        let p = m.peer(&victim).expect("kept until removal_after");
        assert_eq!((p.health, p.active), (PeerHealth::Unreachable, false));
        assert!(
            m.peer_list(None, 100, t(40))
                .iter()
                .all(|a| a.peer_id != victim)
        );
        // Forgotten once silent for removal_after.
        let (out, _) = tick(&mut m, t(2 * 60 * 60));
        assert!(out.contains(&Output::Forget(victim.clone())));
        assert!(m.peer(&victim).is_none());
    }

    #[test]
    fn state_changes_emit_events_and_falling_below_min_bootstraps_again() {
        let mut m = machine(0, vec![contact(1)], vec![], Default::default(), t(0));
        let sent = sends(&drain(&mut m));
        m.handle_response(sent[0].2, pong(1), t(1));
        let out = drain(&mut m);
        let change = |from, to| MembershipEvent::StateChanged { from, to };
        assert!(events(&out).contains(&change(NodeState::Offline, NodeState::Degraded)));
        for n in 2..=5 {
            m.handle_register(advert(n, t(2)), t(2)).expect("valid");
        }
        assert!(events(&drain(&mut m)).contains(&change(NodeState::Degraded, NodeState::Online)));
        let mut rebootstrap = false;
        for k in 1..=3u64 {
            let (_, sent) = tick(&mut m, t(10 * k));
            let out = answer_all_but(&mut m, &sent, 5, t(10 * k + 1));
            if k == 3 {
                assert!(events(&out).contains(&change(NodeState::Online, NodeState::Degraded)));
                rebootstrap = sends(&out)
                    .iter()
                    .any(|(to, r, _)| *to == contact(1) && is_ping(r));
            }
        }
        assert!(
            rebootstrap,
            "below min_healthy_peers the node bootstraps again"
        );
        assert!(m.is_bootstrapping());
    }

    #[test]
    fn requests_never_answered_expire_as_failures() {
        let mut m = with_registered(1..=1);
        let (_, sent) = tick(&mut m, t(10));
        // Besides the heartbeat, the starved active set asks node-1 for more peers.
        let sent: Vec<_> = sent
            .into_iter()
            .filter(|(_, r, _)| is_heartbeat(r))
            .collect();
        assert_eq!(sent.len(), 1);
        tick(&mut m, t(20));
        assert_eq!(m.stats().requests_expired, 0);
        tick(&mut m, t(80));
        let heartbeats_and_list_requests = 2;
        assert_eq!(m.stats().requests_expired, heartbeats_and_list_requests);
        assert_eq!(m.peer(&id(1)).expect("known").health, PeerHealth::Suspect);
        // The late answer is ignored and counted.
        m.handle_response(sent[0].2, heartbeat_ok(), t(81));
        assert_eq!(m.stats().responses_unknown, 1);
    }

    #[test]
    fn not_registered_heartbeat_answer_makes_us_register() {
        let mut m = with_registered(1..=1);
        let (_, sent) = tick(&mut m, t(10));
        let answer = Ok(Response::Heartbeat {
            outcome: HeartbeatOutcome::NotRegistered,
        });
        m.handle_response(sent[0].2, answer, t(11));
        let sent = sends(&drain(&mut m));
        assert!(matches!(&sent[0].1, Request::Register { advert } if advert.peer_id == id(0)));
    }

    #[test]
    fn a_timer_firing_before_it_is_due_is_ignored() {
        let mut m = with_registered(1..=1);
        let (out, sent) = tick(&mut m, t(5));
        assert!(out.is_empty() && sent.is_empty(), "probe is due at 10 s");
        let (_, sent) = tick(&mut m, t(10));
        assert_eq!(sent.iter().filter(|(_, r, _)| is_heartbeat(r)).count(), 1);
        assert_eq!(m.deadline(Timer::Probe), Some(t(20).mono));
        // A duplicate of the same firing does nothing either.
        let (out, _) = tick(&mut m, t(10));
        assert!(out.is_empty());
    }

    #[test]
    fn a_new_active_peer_that_did_not_know_us_is_heartbeaten_again_once_we_registered() {
        let config = MembershipConfig {
            active_size: 1,
            ..Default::default()
        };
        let stored = vec![crate::model::PeerNode::from_advert(
            advert(1, t(0)),
            t(0).wall,
        )];
        let mut m = machine(0, vec![], stored, config, t(0));
        let sent = sends(&drain(&mut m));
        m.handle_response(request_to(&sent, 1, is_ping), pong(1), t(1));
        let sent = sends(&drain(&mut m));
        let heartbeat = request_to(&sent, 1, is_heartbeat);
        let unknown = || {
            Ok(Response::Heartbeat {
                outcome: HeartbeatOutcome::NotRegistered,
            })
        };
        let registered = || Ok(Response::Registered { success: true });
        let is_register = |r: &Request| matches!(r, Request::Register { .. });
        // The peer does not know us yet: we register, and heartbeat again once it took it.
        m.handle_response(heartbeat, unknown(), t(2));
        let register = request_to(&sends(&drain(&mut m)), 1, is_register);
        m.handle_response(register, registered(), t(3));
        let sent = sends(&drain(&mut m));
        let again = request_to(&sent, 1, is_heartbeat);
        // A peer that forgets us again within the probe interval gets no second quick one.
        m.handle_response(again, unknown(), t(4));
        let register = request_to(&sends(&drain(&mut m)), 1, is_register);
        m.handle_response(register, registered(), t(5));
        let sent = sends(&drain(&mut m));
        assert!(
            !sent.iter().any(|(_, r, _)| is_heartbeat(r)),
            "at most one quick heartbeat per probe interval: {sent:?}"
        );
    }

    #[test]
    fn a_busy_peer_is_not_promoted_and_another_is_tried_at_once() {
        let config = MembershipConfig {
            active_size: 1,
            ..Default::default()
        };
        let stored: Vec<_> = (1..=3)
            .map(|n| crate::model::PeerNode::from_advert(advert(n, t(0)), t(0).wall))
            .collect();
        let mut m = machine(0, vec![], stored, config, t(0));
        let sent = sends(&drain(&mut m));
        assert_eq!(sent.len(), 1, "one free slot, one probe");
        let first = sent[0].0.peer_id.clone().expect("stored peers have ids");
        let busy = Ok(Response::Pong {
            peer_id: first.clone(),
            status: crate::model::PeerStatus::Busy,
        });
        m.handle_response(sent[0].2, busy, t(1));
        assert!(!m.peer(&first).expect("kept").active, "busy: stays passive");
        assert_eq!(m.peer(&first).expect("kept").health, PeerHealth::Alive);
        let sent = sends(&drain(&mut m));
        assert_eq!(sent.len(), 1, "the slot is tried again at once");
        let second = sent[0].0.peer_id.clone().expect("id");
        assert_ne!(second, first, "not the busy peer again");
        let n: usize = second.as_str()[5..].parse().expect("n");
        m.handle_response(sent[0].2, pong(n), t(2));
        assert!(m.peer(&second).expect("kept").active);
        let sent = sends(&drain(&mut m));
        assert!(
            sent.iter()
                .any(|(to, r, _)| to.peer_id == Some(second.clone()) && is_heartbeat(r)),
            "a promoted peer is heartbeaten at once, so it gossips to us"
        );
    }
}
