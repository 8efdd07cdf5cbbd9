//! Answers to other peers' requests (synchronous: the daemon calls them from its rpc handlers
//! and encodes the result) and the operator's bans.

use std::time::Duration;

use super::{
    HeartbeatOutcome, MAX_BANS, Membership, MembershipEvent, Output, PeerHealth, Pong, Refusal,
    RegisterOutcome,
};
use crate::model::{Caller, PeerAdvert, PeerId, PeerNode, PeerStatus, Timestamp};
use crate::time::{Instant, Now};

/// How much longer than one probe interval a place promised by a Ping is held: a round trip
/// of the answer and the heartbeat on a slow link.
const RESERVATION_SLACK: std::time::Duration = std::time::Duration::from_secs(1);

impl Membership {
    /// Whether `caller` may speak for `claimed`: a proven caller for its own id only, an
    /// unproven one only for ids nobody has proven. A name (an id no key derives to) cannot be
    /// proven, so a proven caller claiming one is taken as unproven. `Ok(true)` when the
    /// claim is proven (then call [`note_proven`](Membership::note_proven) once the request is
    /// handled). A refusal is counted and reported as an event: it is someone speaking in
    /// another peer's name.
    pub fn check_claim(&mut self, claimed: &PeerId, caller: &Caller) -> Result<bool, Refusal> {
        let unproven = Caller::UNKNOWN;
        let caller = match caller {
            Caller::Proven(id) if id != claimed && !claimed.is_key_derived() => &unproven,
            caller => caller,
        };
        let why = match caller {
            Caller::Proven(id) if id == claimed => return Ok(true),
            Caller::Proven(_) => Refusal::IdMismatch,
            Caller::Unproven { .. } if self.peers.get(claimed).is_some_and(|p| p.node.verified) => {
                Refusal::NotProven
            }
            Caller::Unproven { .. } => return Ok(false),
        };
        self.stats.count_refusal(why);
        self.emit(MembershipEvent::ClaimRefused {
            claimed: claimed.clone(),
            why,
        });
        Err(why)
    }

    /// `id` proved itself on an authenticated connection (it called us, or we reached it, with
    /// a certificate for its key): from now on only such a connection speaks for it. Unknown
    /// ids are ignored (a peer enters the list by registering or through discovery).
    pub fn note_proven(&mut self, id: &PeerId) {
        let Some(known) = self.peers.get_mut(id) else {
            return;
        };
        if known.node.verified {
            return;
        }
        known.node.verified = true;
        self.unverified = self.unverified.saturating_sub(1);
        self.stats.peers_verified += 1;
        self.persist(id);
        self.emit(MembershipEvent::PeerVerified {
            peer_id: id.clone(),
        });
    }

    /// `RegisterPeer`: the sender describes itself. It joins the list (Alive: it just talked to
    /// us) and the active set if there is room. Call after [`check_claim`]; when it answered
    /// that the claim is proven, call [`handle_register_proven`] instead.
    ///
    /// [`check_claim`]: Membership::check_claim
    /// [`handle_register_proven`]: Membership::handle_register_proven
    pub fn handle_register(
        &mut self,
        advert: PeerAdvert,
        now: Now,
    ) -> Result<RegisterOutcome, Refusal> {
        self.register(advert, false, now)
    }

    /// `RegisterPeer` over the registrant's own authenticated connection: it joins (or stays)
    /// verified, so it takes a verified place in the list.
    pub fn handle_register_proven(
        &mut self,
        advert: PeerAdvert,
        now: Now,
    ) -> Result<RegisterOutcome, Refusal> {
        self.register(advert, true, now)
    }

    fn register(
        &mut self,
        advert: PeerAdvert,
        proven: bool,
        now: Now,
    ) -> Result<RegisterOutcome, Refusal> {
        let advert = self
            .validate_advert(advert, false, now)
            .inspect_err(|why| {
                self.stats.count_refusal(*why);
            })?;
        let id = advert.peer_id.clone();
        // Unknown, or known only by hearsay: it may be new to the network.
        let joined = self
            .peers
            .get(&id)
            .is_none_or(|p| p.health == PeerHealth::Candidate);
        let outcome = match self.peers.get_mut(&id) {
            Some(known) => {
                let node = &mut known.node;
                node.address = advert.address;
                node.port = advert.port;
                node.supported_protocols = advert.supported_protocols;
                node.capabilities = advert.capabilities;
                node.is_bootstrap |= advert.is_seed_node;
                RegisterOutcome::Updated
            }
            None => {
                let mut node = PeerNode::from_advert(advert, now.wall);
                node.verified = proven;
                if proven {
                    self.stats.peers_verified += 1;
                    self.emit(MembershipEvent::PeerVerified {
                        peer_id: id.clone(),
                    });
                }
                self.insert_peer(node, PeerHealth::Alive)
                    .inspect_err(|why| self.stats.count_refusal(*why))?;
                RegisterOutcome::Added
            }
        };
        if proven {
            self.note_proven(&id);
        }
        self.mark_alive(&id, None, now);
        self.persist(&id);
        self.activate(&id, now);
        self.update_state(now);
        if joined {
            self.note_joiner(&id, now);
        }
        Ok(outcome)
    }

    /// `GetPeerList`: up to `max` peers we can vouch for (see `handout`); nothing for a banned
    /// requester.
    pub fn peer_list(
        &mut self,
        requester: Option<&PeerId>,
        max: usize,
        now: Now,
    ) -> Vec<PeerAdvert> {
        if let Some(id) = requester {
            if self.is_banned(id, now) {
                self.stats.refused_banned += 1;
                return Vec::new();
            }
            self.touch(id, now);
        }
        self.handout(requester, max, now)
    }

    /// `ExchangePeers`: merge what `from` knows, answer with up to `max` of ours.
    pub fn handle_exchange(
        &mut self,
        from: &PeerId,
        their_adverts: Vec<PeerAdvert>,
        max: usize,
        now: Now,
    ) -> Vec<PeerAdvert> {
        if self.is_banned(from, now) {
            self.stats.refused_banned += 1;
            return Vec::new();
        }
        self.touch(from, now);
        let new_peers = self.merge_adverts(their_adverts, now);
        self.discover(new_peers, now);
        self.fill_active(now);
        self.handout(Some(from), max, now)
    }

    /// `Ping`: who we are and how we are. `from` is the `peer_id` field, when the sender gave
    /// one. Busy when `max_inbound` peers already hold (or may be about to hold) us active:
    /// a Ping is how a peer tries us before promoting us into its active set.
    pub fn handle_ping(&mut self, from: Option<&PeerId>, now: Now) -> Result<Pong, Refusal> {
        if let Some(id) = from {
            if self.is_banned(id, now) {
                self.stats.refused_banned += 1;
                return Err(Refusal::Banned);
            }
            self.touch(id, now);
        }
        // Busy before Offline: a prober promotes any peer that does not say Busy.
        let admitted = from.is_none_or(|id| self.admit_inbound(id, now));
        let status = match self.state {
            _ if !admitted => {
                self.stats.pings_busy += 1;
                PeerStatus::Busy
            }
            super::NodeState::Offline => PeerStatus::Offline,
            _ => PeerStatus::Online,
        };
        Ok(Pong {
            peer_id: self.self_advert.peer_id.clone(),
            status,
        })
    }

    /// `SendHeartbeat`: unknown senders must register first.
    pub fn handle_heartbeat(&mut self, peer_id: &PeerId, now: Now) -> HeartbeatOutcome {
        if self.is_banned(peer_id, now) {
            self.stats.refused_banned += 1;
            return HeartbeatOutcome::Banned;
        }
        if !self.peers.contains_key(peer_id) {
            // A prober we told Online but do not know yet: it registers now and heartbeats
            // again one probe interval later, so its place is held until then (else it
            // lapses in between and the place is promised twice).
            if let Some(at) = self.reserved.get_mut(peer_id) {
                *at = now.mono;
            }
            return HeartbeatOutcome::NotRegistered;
        }
        self.touch(peer_id, now);
        self.reserved.remove(peer_id);
        self.note_heartbeater(peer_id, now);
        HeartbeatOutcome::Accepted
    }

    /// Whether `id` may hold us active: it already does (or was told it may), or fewer than
    /// `max_inbound` peers do. Admitting reserves a place until its first heartbeat is due.
    fn admit_inbound(&mut self, id: &PeerId, now: Now) -> bool {
        self.prune_inbound(now);
        if self.heartbeaters.contains_key(id) {
            return true;
        }
        if !self.reserved.contains_key(id) && self.inbound_count() >= self.inbound_limit() {
            return false;
        }
        self.reserved.insert(id.clone(), now.mono);
        true
    }

    /// How long a heartbeater counts as holding us after its last heartbeat: three probe
    /// intervals, so one or two lost heartbeats do not drop it.
    fn heartbeat_fresh_for(&self) -> Duration {
        self.config.probe_interval * 3
    }

    /// Peers holding us active, or told they may: what `max_inbound` bounds.
    pub fn inbound_count(&self) -> usize {
        self.heartbeaters.len() + self.reserved.len()
    }

    /// Forgets heartbeaters that stopped (they dropped us from their active sets) and
    /// reservations whose first heartbeat never came (the prober chose someone else). Runs on
    /// every Ping so admission counts who holds us now: `reserved` is at most `max_inbound`,
    /// `heartbeaters` at most [`MAX_HEARTBEATERS`](super::MAX_HEARTBEATERS) (heartbeats are taken without admission),
    /// so a hub walks up to that many entries per Ping.
    pub(super) fn prune_inbound(&mut self, now: Now) {
        let fresh = self.heartbeat_fresh_for();
        self.heartbeaters
            .retain(|_, at| now.mono.since(*at) <= fresh);
        // The prober heartbeats a peer it promoted at its next probe tick, at most one
        // probe_interval (plus a round trip) after our answer. Longer would let passive-list
        // pings (which promote only when a slot is free) hold places they rarely use.
        let reserved_for = self.config.probe_interval + RESERVATION_SLACK;
        self.reserved
            .retain(|_, at| now.mono.since(*at) <= reserved_for);
    }

    /// Remembers that `peer_id` holds us in its active set (it heartbeats us), so gossip can
    /// use the link both ways. Bounded: past `MAX_HEARTBEATERS` the stalest entry goes.
    fn note_heartbeater(&mut self, peer_id: &PeerId, now: Now) {
        if !self.heartbeaters.contains_key(peer_id)
            && self.heartbeaters.len() >= super::MAX_HEARTBEATERS
        {
            let stalest = self
                .heartbeaters
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(id, _)| id.clone());
            if let Some(id) = stalest {
                self.heartbeaters.remove(&id);
            }
        }
        if self
            .heartbeaters
            .insert(peer_id.clone(), now.mono)
            .is_none()
        {
            self.heartbeaters_added += 1;
        }
    }

    /// Grows whenever a new peer starts heartbeating us: the gossip peers may have changed.
    /// (A known heartbeater's refresh cannot change them; staleness is re-checked on timers.)
    pub fn heartbeaters_added(&self) -> u64 {
        self.heartbeaters_added
    }

    /// The peers gossip should use: our healthy active peers, plus up to `max_inbound` of the
    /// peers that recently heartbeated us (they hold us in their active sets). Without the
    /// second half, links are one-way: a node in nobody's active set hears of transactions only
    /// through its own anti-entropy (the simulator and the lab both showed it), while with it
    /// every active link carries announcements both ways. Capped so a popular node does not
    /// flood hundreds of peers. The cap was `active_size` (8): a popular node (19 heartbeaters
    /// in the simulator and in a 20-node lab) then left out a different half of them at each
    /// moment, and a node whose active peers are all popular heard of transactions late
    /// (sorcha-peer-sim scale.toml n1000, seeds 1-3: time to 100 % p95 7.6 / 6.9 / 7.4 s, at
    /// 16: 6.3 / 6.5 / 6.6 s; to 99 % -2 %, bytes the same).
    pub fn gossip_peers(&self, now: Now) -> Vec<PeerId> {
        self.gossip_peer_ids(now).into_iter().cloned().collect()
    }

    /// [`Membership::gossip_peers`] borrowed: the node compares them with the last set after
    /// every input and clones only when they changed (the clones were ~10% of a simulator run).
    pub fn gossip_peer_ids(&self, now: Now) -> Vec<&PeerId> {
        let mut peers: Vec<&PeerId> = self
            .active
            .iter()
            .filter(|id| self.peers.get(*id).is_some_and(|p| p.is_healthy()))
            .collect();
        let fresh = self.heartbeat_fresh_for();
        let mut inbound: Vec<(&PeerId, Instant)> = self
            .heartbeaters
            .iter()
            .filter(|(id, at)| {
                now.mono.since(**at) <= fresh
                    && !self.active.contains(*id)
                    && !self.is_banned(id, now)
            })
            .filter(|(id, _)| self.peers.get(*id).is_some_and(|p| p.is_healthy()))
            .map(|(id, at)| (id, *at))
            .collect();
        // Most recent first; ties by id so the choice is deterministic.
        inbound.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        peers.extend(
            inbound
                .into_iter()
                .take(self.inbound_limit())
                .map(|(id, _)| id),
        );
        peers.sort();
        peers
    }

    /// A known peer contacted us: it is alive (no address is learned from the contact).
    fn touch(&mut self, id: &PeerId, now: Now) {
        if self.peers.contains_key(id) {
            self.mark_alive(id, None, now);
            self.update_state(now);
        }
    }

    /// Refuses `id` until `until` (wall clock: the ban is persisted and outlives a restart):
    /// it leaves the active set and nothing it or others say about it is taken. Refused
    /// (counted) when `MAX_BANS` other bans are in force.
    pub fn ban(&mut self, id: &PeerId, until: Timestamp, now: Now) -> bool {
        if until <= now.wall {
            return false;
        }
        self.bans.retain(|_, t| *t > now.wall);
        if self.bans.len() >= MAX_BANS && !self.bans.contains_key(id) {
            self.stats.refused_banned += 1;
            return false;
        }
        self.bans.insert(id.clone(), until);
        if let Some(known) = self.peers.get_mut(id) {
            known.node.banned_until = Some(until);
            self.deactivate(id);
            self.persist(id);
            self.emit(MembershipEvent::PeerUnreachable {
                peer_id: id.clone(),
            });
            self.fill_active(now);
        }
        self.update_state(now);
        true
    }

    /// Lifts a ban; the peer is taken again from its next contact.
    pub fn unban(&mut self, id: &PeerId, now: Now) {
        self.bans.remove(id);
        if let Some(known) = self.peers.get_mut(id) {
            known.node.banned_until = None;
            self.persist(id);
        }
        self.fill_active(now);
    }

    /// Removes a peer from the list and the store (admin "remove").
    pub fn remove(&mut self, id: &PeerId, now: Now) {
        self.remove_peer(id);
        self.fill_active(now);
        self.update_state(now);
    }
}

impl Output {
    /// The event inside, if this is one (handy for the daemon's event log and tests).
    pub fn as_event(&self) -> Option<&MembershipEvent> {
        match self {
            Output::Event(event) => Some(event),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn peers_that_heartbeat_us_are_gossip_peers_both_ways() {
        use crate::membership::test_util as tu;
        let config = MembershipConfig {
            active_size: 1,
            ..Default::default()
        };
        let mut m = tu::machine(0, vec![], vec![], config, tu::t(0));
        for n in 1..=3 {
            m.handle_register(tu::advert(n, tu::t(0)), tu::t(0))
                .expect("room");
        }
        let active: Vec<_> = m.active_peers().map(|p| p.node.peer_id.clone()).collect();
        assert_eq!(active.len(), 1);
        let outsider = (1..=3)
            .map(tu::id)
            .find(|id| !active.contains(id))
            .expect("one is passive");
        assert!(!m.gossip_peers(tu::t(1)).contains(&outsider));
        assert_eq!(
            m.handle_heartbeat(&outsider, tu::t(1)),
            HeartbeatOutcome::Accepted
        );
        let both = m.gossip_peers(tu::t(1));
        assert!(
            both.contains(&outsider),
            "a peer that heartbeats us hears our gossip"
        );
        assert_eq!(
            both.len(),
            2,
            "capped: active peers plus active_size heartbeaters"
        );
        let stale = tu::t(1).saturating_add(m.config().probe_interval * 4);
        assert!(
            !m.gossip_peers(stale).contains(&outsider),
            "a peer that stopped heartbeating is dropped"
        );
    }

    use super::super::test_util::*;
    use super::super::*;
    use crate::model::PeerStatus;

    #[test]
    fn heartbeats_need_registration() {
        let mut m = with_registered(1..=1);
        assert_eq!(m.handle_heartbeat(&id(1), t(5)), HeartbeatOutcome::Accepted);
        assert_eq!(
            m.handle_heartbeat(&id(9), t(5)),
            HeartbeatOutcome::NotRegistered
        );
        assert!(m.peer(&id(9)).is_none(), "a heartbeat never adds a peer");
        assert_eq!(m.peer(&id(1)).expect("known").node.last_seen, t(5).wall);
    }

    #[test]
    fn ping_answers_with_our_id_and_state() {
        let mut m = with_registered([]);
        let pong = m.handle_ping(None, t(1)).expect("answered");
        assert_eq!((pong.peer_id, pong.status), (id(0), PeerStatus::Offline));
        let mut m = with_registered(1..=5);
        let pong = m.handle_ping(Some(&id(1)), t(1)).expect("answered");
        assert_eq!(pong.status, PeerStatus::Online);
    }

    #[test]
    fn banned_peers_are_refused_everywhere_and_gossip_cannot_bring_them_back() {
        let mut m = with_registered(1..=3);
        let until = t(3600).wall;
        assert!(m.ban(&id(2), until, t(1)));
        assert!(m.peer(&id(2)).is_some_and(|p| !p.active));
        assert!(
            m.ban(&id(9), until, t(1)),
            "unknown peers can be banned too"
        );
        let out = drain(&mut m);
        assert!(out.iter().any(|o| matches!(o, Output::Persist(n) if n.peer_id == id(2) && n.banned_until == Some(until))));

        let now = t(10);
        assert_eq!(m.handle_register(advert(2, now), now), Err(Refusal::Banned));
        assert_eq!(m.handle_register(advert(9, now), now), Err(Refusal::Banned));
        assert_eq!(m.handle_ping(Some(&id(2)), now), Err(Refusal::Banned));
        assert_eq!(m.handle_heartbeat(&id(2), now), HeartbeatOutcome::Banned);
        assert!(m.peer_list(Some(&id(2)), 10, now).is_empty());
        assert!(
            m.handle_exchange(&id(2), vec![advert(20, now)], 10, now)
                .is_empty()
        );
        assert!(
            m.peer(&id(20)).is_none(),
            "nothing taken from a banned peer"
        );

        // Gossip about banned peers neither adds nor unbans them.
        m.handle_exchange(&id(1), vec![advert(2, now), advert(9, now)], 10, now);
        assert!(m.peer(&id(9)).is_none());
        assert!(m.is_banned(&id(2), now));
        assert_eq!(m.peer(&id(2)).expect("kept").node.banned_until, Some(until));
        assert_eq!(m.stats().refused_banned, 8, "every refusal counted");

        // Until the ban is lifted.
        m.unban(&id(9), now);
        assert_eq!(
            m.handle_register(advert(9, now), now),
            Ok(RegisterOutcome::Added)
        );
        // Or it expires.
        let later = t(3601);
        assert_eq!(
            m.handle_register(advert(2, later), later),
            Ok(RegisterOutcome::Updated)
        );
    }

    #[test]
    fn a_ban_from_the_store_survives_restart() {
        let mut banned = crate::model::PeerNode::from_advert(advert(4, t(0)), t(0).wall);
        banned.banned_until = Some(t(1000).wall);
        let mut m = machine(0, vec![], vec![banned], Default::default(), t(10));
        assert!(m.is_banned(&id(4), t(10)));
        assert!(
            sends(&drain(&mut m)).is_empty(),
            "a banned stored peer is not contacted"
        );
        assert_eq!(
            m.handle_register(advert(4, t(11)), t(11)),
            Err(Refusal::Banned)
        );
    }

    #[test]
    fn pings_past_max_inbound_are_answered_busy_until_places_free_up() {
        let config = MembershipConfig {
            max_inbound: 2,
            ..Default::default()
        };
        let mut m = machine(0, vec![], vec![], config, t(0));
        let status = |m: &mut Membership, n: usize, at: u64| {
            m.handle_ping(Some(&id(n)), t(at)).expect("answered").status
        };
        // Offline nodes say so whatever their in-degree; register enough peers to be Online.
        for n in 10..15 {
            m.handle_register(advert(n, t(0)), t(0)).expect("room");
        }
        assert_eq!(status(&mut m, 1, 1), PeerStatus::Online);
        assert_eq!(status(&mut m, 2, 1), PeerStatus::Online);
        assert_eq!(
            status(&mut m, 3, 2),
            PeerStatus::Busy,
            "two places reserved"
        );
        assert_eq!(
            status(&mut m, 1, 3),
            PeerStatus::Online,
            "already holds one"
        );
        assert_eq!(m.stats().pings_busy, 1);
        m.handle_register(advert(1, t(10)), t(10)).expect("known");
        assert_eq!(
            m.handle_heartbeat(&id(1), t(10)),
            HeartbeatOutcome::Accepted
        );
        assert_eq!(
            m.inbound_count(),
            2,
            "the heartbeat took over its reservation"
        );
        // Node 2 never heartbeated: its reservation lapses after one probe interval and a
        // second (11 s); node 1 keeps heartbeating.
        assert_eq!(status(&mut m, 3, 13), PeerStatus::Online);
        assert_eq!(status(&mut m, 4, 13), PeerStatus::Busy);
        // A heartbeater that stops is forgotten after three missed intervals.
        assert_eq!(status(&mut m, 4, 41), PeerStatus::Online);
        assert_eq!(m.inbound_count(), 1, "only the new reservation is left");
    }

    #[test]
    fn a_prober_that_must_register_first_keeps_its_place() {
        let config = MembershipConfig {
            max_inbound: 1,
            ..Default::default()
        };
        let mut m = machine(0, vec![], vec![], config, t(0));
        let status = |m: &mut Membership, n: usize, at: u64| {
            m.handle_ping(Some(&id(n)), t(at)).expect("answered").status
        };
        assert_eq!(
            status(&mut m, 1, 0),
            PeerStatus::Offline,
            "admitted, not Busy"
        );
        // Its first heartbeat, 10 s on, finds it unknown; it registers and heartbeats again
        // 10 s after that, past the reservation's first 11 s.
        assert_eq!(
            m.handle_heartbeat(&id(1), t(10)),
            HeartbeatOutcome::NotRegistered
        );
        m.handle_register(advert(1, t(10)), t(10)).expect("room");
        assert_eq!(
            status(&mut m, 2, 15),
            PeerStatus::Busy,
            "still held for node-1"
        );
        assert_eq!(
            m.handle_heartbeat(&id(1), t(20)),
            HeartbeatOutcome::Accepted
        );
        assert_eq!(m.inbound_count(), 1);
    }
}
