//! The known list and its two views: the bounded active set we heartbeat, and the passive
//! list (every other known peer, bounded with the list by `max_peers_in_list`) that refills
//! it. Also the gate every advert passes on its way in.

use rand::seq::SliceRandom;

use super::{Contact, Output};
use super::{KnownPeer, Membership, MembershipEvent, PeerHealth, Purpose, Refusal, Request};
use crate::model::{
    MAX_HOST_LEN, MAX_PEER_ID_LEN, PeerAdvert, PeerId, PeerNode, PeerStatus, Protocol,
    validate_address, validate_port,
};
use crate::time::Now;

/// Adverts taken from one message; the rest are counted as oversized. Matches the list bound.
pub const MAX_ADVERTS_PER_MESSAGE: usize = 1000;

/// Peers handed out in one answer, whatever the requester asks for.
pub const MAX_ADVERTS_PER_ANSWER: usize = 1000;

impl Membership {
    /// Checks an advert from a peer and normalises it. `gossip` adverts (about third parties)
    /// must also be fresh; a peer registering itself is seen now.
    pub(super) fn validate_advert(
        &self,
        advert: PeerAdvert,
        gossip: bool,
        now: Now,
    ) -> Result<PeerAdvert, Refusal> {
        if advert.peer_id == self.self_advert.peer_id {
            return Err(Refusal::SelfId);
        }
        let too_long = advert.peer_id.as_str().len() > MAX_PEER_ID_LEN
            || advert.address.len() > MAX_HOST_LEN + 2
            || advert.supported_protocols.len() > Protocol::ALL.len();
        if too_long {
            return Err(Refusal::Oversized);
        }
        let address = validate_address(&advert.address).map_err(|_| Refusal::BadAddress)?;
        let port = validate_port(i64::from(advert.port)).map_err(|_| Refusal::BadPort)?;
        if self.is_banned(&advert.peer_id, now) {
            return Err(Refusal::Banned);
        }
        let last_seen = if gossip {
            advert.last_seen.min(now.wall)
        } else {
            now.wall
        };
        if gossip && now.wall.since(last_seen) > self.config.removal_after {
            return Err(Refusal::Stale);
        }
        let mut protocols = advert.supported_protocols;
        protocols.sort();
        protocols.dedup();
        Ok(PeerAdvert {
            address,
            port,
            supported_protocols: protocols,
            last_seen,
            ..advert
        })
    }

    /// Merges adverts learned from another peer; returns the ids that are new to us. Known
    /// peers keep their address (gossip must not redirect them) and only gain freshness.
    pub(super) fn merge_adverts(&mut self, adverts: Vec<PeerAdvert>, now: Now) -> Vec<PeerId> {
        if adverts.len() > MAX_ADVERTS_PER_MESSAGE {
            self.stats.refused_oversized += (adverts.len() - MAX_ADVERTS_PER_MESSAGE) as u64;
        }
        let mut added = Vec::new();
        // Once the full list has no peer to evict, nothing below changes that: the rest are
        // refused without scanning the list again for each (measured by the simulator).
        let mut full = false;
        for advert in adverts.into_iter().take(MAX_ADVERTS_PER_MESSAGE) {
            let advert = match self.validate_advert(advert, true, now) {
                Ok(advert) => advert,
                Err(why) => {
                    self.stats.count_refusal(why);
                    continue;
                }
            };
            if let Some(known) = self.peers.get_mut(&advert.peer_id) {
                known.node.last_seen = known.node.last_seen.max(advert.last_seen);
                continue;
            }
            if full {
                self.stats.count_refusal(Refusal::ListFull);
                continue;
            }
            if added.len() >= self.config.max_hearsay_per_message {
                self.stats.dials_deferred_not_needed += 1;
                continue;
            }
            let id = advert.peer_id.clone();
            match self.insert_peer(
                PeerNode::from_advert(advert, now.wall),
                PeerHealth::Candidate,
            ) {
                Ok(()) => added.push(id),
                Err(why) => {
                    full = why == Refusal::ListFull;
                    self.stats.count_refusal(why);
                }
            }
        }
        added
    }

    /// Adds a peer to the known list, evicting the stalest unreachable peer if it is full.
    /// A peer that never proved its id takes a place only within the unverified share, and
    /// only ever from another unverified peer.
    pub(super) fn insert_peer(
        &mut self,
        node: PeerNode,
        health: PeerHealth,
    ) -> Result<(), Refusal> {
        let first_hand = health != PeerHealth::Candidate;
        let share_full = self.config.unverified_share < 100
            && self.unverified >= self.unverified_cap(self.config.max_peers_in_list);
        if !node.verified && share_full {
            let victim = self
                .eviction_victim(first_hand, true)
                .map_err(|_| Refusal::UnverifiedFull)?;
            self.remove_peer(&victim);
        } else if self.peers.len() >= self.config.max_peers_in_list {
            let victim = self.eviction_victim(first_hand, !node.verified)?;
            self.remove_peer(&victim);
        }
        let id = node.peer_id.clone();
        if !node.verified {
            self.unverified += 1;
        }
        let known = KnownPeer {
            node,
            health,
            active: false,
            probing: false,
            busy_until: None,
        };
        self.peers.insert(id.clone(), known);
        self.stats.adverts_accepted += 1;
        self.emit(MembershipEvent::PeerAdded { peer_id: id });
        Ok(())
    }

    /// How many of `total` places unverified peers may hold.
    pub(super) fn unverified_cap(&self, total: usize) -> usize {
        match self.config.unverified_share {
            share if share >= 100 => total,
            share => (total * usize::from(share)).div_ceil(100),
        }
    }

    /// Whom a new peer replaces in a full list. Unreachable peers go first. A peer that reached
    /// us itself (`first_hand`, not a candidate heard of through gossip) may also displace a
    /// never-answering candidate, else the stalest passive peer: otherwise a list filled with
    /// hearsay refuses every real peer, which then re-registers at every heartbeat, forever,
    /// and a bootstrap node's full list would hand its first few hundred registrants to every
    /// later joiner, making them hubs (both seen in the simulator at 10,000 nodes). Like
    /// HyParView's passive view, the list turns over towards fresh peers. Never evicted:
    /// active peers, peers that hold us active (they heartbeat us), bootstrap nodes, and, for
    /// an unverified newcomer (`only_unverified`), verified peers. Unverified peers go before
    /// verified ones of the same rank.
    fn eviction_victim(&self, first_hand: bool, only_unverified: bool) -> Result<PeerId, Refusal> {
        let rank = |p: &KnownPeer| match p.health {
            _ if only_unverified && p.node.verified => None,
            PeerHealth::Unreachable => Some(0),
            PeerHealth::Candidate if first_hand => Some(1),
            PeerHealth::Alive | PeerHealth::Suspect
                if first_hand
                    && !p.node.is_bootstrap
                    && !self.heartbeaters.contains_key(&p.node.peer_id) =>
            {
                Some(2)
            }
            _ => None,
        };
        self.peers
            .values()
            .filter(|p| !p.active)
            .filter_map(|p| {
                rank(p).map(|r| (r, p.node.verified, p.node.last_seen, &p.node.peer_id))
            })
            .min()
            .map(|(_, _, _, id)| id.clone())
            .ok_or(Refusal::ListFull)
    }

    /// Drops a peer from the list and the store.
    pub(super) fn remove_peer(&mut self, id: &PeerId) {
        let Some(gone) = self.peers.remove(id) else {
            return;
        };
        if !gone.node.verified {
            self.unverified = self.unverified.saturating_sub(1);
        }
        self.active.remove(id);
        self.stats.peers_removed += 1;
        self.push(Output::Forget(id.clone()));
        self.emit(MembershipEvent::PeerRemoved {
            peer_id: id.clone(),
        });
    }

    /// Takes a peer from the database at start: checked like a registration, ban kept.
    pub(super) fn load_stored(&mut self, mut node: PeerNode, now: Now) {
        if let Some(until) = node.banned_until.filter(|until| *until > now.wall)
            && self.bans.len() < super::MAX_BANS
        {
            self.bans.insert(node.peer_id.clone(), until);
        }
        let advert = PeerAdvert {
            last_seen: now.wall,
            ..node.advert()
        };
        if self.peers.contains_key(&node.peer_id) {
            return;
        }
        match self.validate_advert(advert, false, now) {
            Ok(advert) => {
                node.address = advert.address;
                node.port = advert.port;
                node.status = PeerStatus::Unknown;
                node.failure_count = 0;
                if let Err(why) = self.insert_peer(node, PeerHealth::Candidate) {
                    self.stats.count_refusal(why);
                }
            }
            // The ban is kept above; the store keeps its row.
            Err(Refusal::Banned) => {}
            Err(why) => self.stats.count_refusal(why),
        }
    }

    /// Moves a peer into the active set if there is room (for an unverified peer: within
    /// the unverified share of it; for one that is not a relay, beside the relays wanted).
    pub(super) fn activate(&mut self, id: &PeerId, now: Now) -> bool {
        if self.active.len() >= self.config.active_size
            || self.active.contains(id)
            || !self.has_room_for(id, now)
        {
            return false;
        }
        let unverified_full = self.unverified_active_full();
        let Some(known) = self.peers.get_mut(id) else {
            return false;
        };
        if !known.node.verified && unverified_full {
            self.stats.refused_unverified_full += 1;
            return false;
        }
        known.active = true;
        self.active.insert(id.clone());
        self.emit(MembershipEvent::PeerActivated {
            peer_id: id.clone(),
        });
        true
    }

    /// Whether the active set holds as many unverified peers as their share allows.
    pub(super) fn unverified_active_full(&self) -> bool {
        let cap = self.unverified_cap(self.config.active_size);
        cap < self.config.active_size
            && self.active_peers().filter(|p| !p.node.verified).count() >= cap
    }

    pub(super) fn deactivate(&mut self, id: &PeerId) {
        self.active.remove(id);
        if let Some(known) = self.peers.get_mut(id) {
            known.active = false;
        }
    }

    /// Pings random passive peers to fill the free active slots; a peer that answers is
    /// promoted (see `on_probe_answer`). Live peers are tried before candidates, unverified
    /// ones only while their share of the active set has room, and relays first while we are
    /// short of them (`roles.rs`).
    pub(super) fn fill_active(&mut self, now: Now) {
        let promoting = self
            .pending
            .values()
            .filter(|p| matches!(p.purpose, Purpose::Probe { .. }))
            .count();
        let free = self
            .config
            .active_size
            .saturating_sub(self.active.len() + promoting);
        if free == 0 {
            return;
        }
        // References, not clones: the list holds up to `max_peers_in_list` peers and only
        // `free` of them are used (the simulator measured the clones at scale).
        let mut alive = Vec::new();
        let mut candidates = Vec::new();
        let unverified_full = self.unverified_active_full();
        for p in self.peers.values() {
            if !self.promotable(p, unverified_full, now) {
                continue;
            }
            match p.health {
                PeerHealth::Alive | PeerHealth::Suspect => alive.push(&p.node.peer_id),
                PeerHealth::Candidate => candidates.push(&p.node.peer_id),
                PeerHealth::Unreachable => {}
            }
        }
        alive.shuffle(&mut self.rng);
        candidates.shuffle(&mut self.rng);
        let order = alive.into_iter().chain(candidates).collect();
        let chosen = self.relays_first(order, free);
        let starved = chosen.len() < free;
        for id in chosen {
            match self.may_dial(&id, now) {
                Ok(()) => self.send_probe(&id, now),
                Err(super::DialRefusal::Backoff) => {}
                // The dial timer fills the slot a little later.
                Err(_) => break,
            }
        }
        if starved {
            self.ask_for_more_peers(now);
        }
    }

    pub(super) fn send_probe(&mut self, id: &PeerId, now: Now) {
        if let Some(known) = self.peers.get(id) {
            let to = Contact::of(&known.node);
            let purpose = Purpose::Probe { peer: id.clone() };
            self.send(to, Request::Ping, purpose, now);
        }
    }

    /// Adverts we may hand out: not banned, not unreachable, fresh, never the requester or
    /// ourselves. Live peers come first, each group in random order; with relays on, relays
    /// fill up to half of the list first (`roles.rs`).
    pub(super) fn handout(
        &mut self,
        requester: Option<&PeerId>,
        max: usize,
        now: Now,
    ) -> Vec<PeerAdvert> {
        let max = max.min(MAX_ADVERTS_PER_ANSWER);
        let mut live = Vec::new();
        let mut candidates = Vec::new();
        // The requester's and our own entries, looked up once: comparing every known id with
        // them costs two string comparisons per peer per answer (measured by the simulator).
        let entry = |id: Option<&PeerId>| {
            id.and_then(|id| self.peers.get(id))
                .map(|p| p as *const KnownPeer)
        };
        let skip = [entry(requester), entry(Some(&self.self_advert.peer_id))];
        for p in self.peers.values() {
            let id = &p.node.peer_id;
            let excluded = skip.iter().flatten().any(|s| std::ptr::eq(*s, p))
                || self.is_banned(id, now)
                || p.health == PeerHealth::Unreachable
                || now.wall.since(p.node.last_seen) > self.config.removal_after;
            if excluded {
                continue;
            }
            // References: only the `max` handed out are turned into adverts.
            match p.health {
                PeerHealth::Candidate => candidates.push(p),
                _ => live.push(p),
            }
        }
        live.shuffle(&mut self.rng);
        candidates.shuffle(&mut self.rng);
        live.extend(candidates);
        let mut live = self.relays_in_handout(live, max);
        live.truncate(max);
        live.into_iter().map(|p| p.node.advert()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::super::*;
    use crate::model::Protocol;

    #[test]
    fn bad_adverts_are_dropped_and_counted() {
        let mut m = with_registered(1..=1);
        // Past removal_after (1 h), so an advert last seen at 0 is stale.
        let now = t(4000);
        let adverts = vec![
            PeerAdvert {
                address: "0.0.0.0".into(),
                ..advert(2, now)
            },
            PeerAdvert {
                address: "not an address".into(),
                ..advert(3, now)
            },
            PeerAdvert {
                port: 0,
                ..advert(4, now)
            },
            advert(0, now), // ourselves
            PeerAdvert {
                address: format!("{}.org", "a".repeat(300)),
                ..advert(5, now)
            },
            PeerAdvert {
                supported_protocols: vec![Protocol::Grpc; 4],
                ..advert(6, now)
            },
            advert(8, t(0)), // stale
            advert(7, now),  // the only good one
        ];
        m.handle_exchange(&id(1), adverts, 10, now);
        let s = *m.stats();
        assert_eq!(s.refused_bad_address, 2);
        assert_eq!(s.refused_bad_port, 1);
        assert_eq!(s.refused_self, 1);
        assert_eq!(s.refused_oversized, 2);
        assert_eq!(s.refused_stale, 1);
        assert_eq!(m.known_count(), 2);
        assert!(m.peer(&id(7)).is_some());
        // Oversized messages: only MAX_ADVERTS_PER_MESSAGE are read.
        let flood: Vec<_> = (0..MAX_ADVERTS_PER_MESSAGE + 5)
            .map(|n| advert(1000 + n, now))
            .collect();
        m.handle_exchange(&id(1), flood, 10, now);
        assert_eq!(m.stats().refused_oversized, 2 + 5);
        let hearsay = m.config().max_hearsay_per_message;
        assert_eq!(m.known_count(), 2 + hearsay, "bounded per message");
        let rest = MAX_ADVERTS_PER_MESSAGE - hearsay;
        assert_eq!(m.stats().dials_deferred_not_needed, rest as u64);
    }

    #[test]
    fn registration_validates_the_advert() {
        let mut m = with_registered([]);
        let now = t(1);
        let refused = |a: PeerAdvert, m: &mut Membership| m.handle_register(a, now).unwrap_err();
        assert_eq!(
            refused(
                PeerAdvert {
                    port: 0,
                    ..advert(2, now)
                },
                &mut m
            ),
            Refusal::BadPort
        );
        assert_eq!(refused(advert(0, now), &mut m), Refusal::SelfId);
        let multicast = PeerAdvert {
            address: "224.0.0.1".into(),
            ..advert(3, now)
        };
        assert_eq!(refused(multicast, &mut m), Refusal::BadAddress);
        assert_eq!(m.known_count(), 0);
        let bracketed = PeerAdvert {
            address: "[::1]".into(),
            ..advert(4, now)
        };
        assert_eq!(
            m.handle_register(bracketed, now),
            Ok(RegisterOutcome::Added)
        );
        assert_eq!(m.peer(&id(4)).expect("added").node.address, "::1");
        assert_eq!(
            m.handle_register(advert(4, now), now),
            Ok(RegisterOutcome::Updated)
        );
    }

    #[test]
    fn the_active_set_is_bounded_and_the_rest_is_passive() {
        let m = with_registered(1..=12);
        assert_eq!(m.active_count(), 8);
        assert_eq!(m.known_count(), 12);
        assert_eq!(m.peers().filter(|p| !p.active).count(), 4);
    }

    #[test]
    fn handout_skips_banned_unreachable_self_and_requester() {
        let mut m = with_registered(1..=4);
        m.ban(&id(2), t(1000).wall, t(1));
        let list = m.peer_list(Some(&id(1)), 100, t(2));
        let ids: Vec<_> = list.iter().map(|a| a.peer_id.clone()).collect();
        assert!(!ids.contains(&id(0)) && !ids.contains(&id(1)) && !ids.contains(&id(2)));
        assert_eq!(ids.len(), 2);
        assert_eq!(m.peer_list(None, 1, t(2)).len(), 1, "max is honoured");
    }

    #[test]
    fn a_real_peer_displaces_hearsay_in_a_full_list_but_hearsay_does_not() {
        let config = MembershipConfig {
            max_peers_in_list: 4,
            active_size: 1,
            ..Default::default()
        };
        let mut m = machine(0, vec![], vec![], config, t(0));
        m.handle_register(advert(1, t(0)), t(0)).expect("room");
        // Peer 1 tells us of three peers nobody has verified: the list is full of hearsay.
        let hearsay: Vec<_> = (2..=4).map(|n| advert(n, t(n as u64))).collect();
        m.handle_exchange(&id(1), hearsay, 10, t(5));
        assert_eq!(m.known_count(), 4);
        assert!(
            m.peers()
                .filter(|p| p.health == PeerHealth::Candidate)
                .count()
                >= 2
        );

        // More hearsay is refused...
        m.handle_exchange(&id(1), vec![advert(5, t(6))], 10, t(6));
        assert!(
            m.peer(&id(5)).is_none(),
            "a candidate must not displace a candidate"
        );
        // ...but a peer that registers itself takes the oldest candidate's place.
        m.handle_register(advert(6, t(7)), t(7))
            .expect("a real peer is admitted");
        assert!(m.peer(&id(6)).is_some());
        assert_eq!(m.known_count(), 4);
    }

    #[test]
    fn a_full_list_evicts_an_unreachable_peer_first() {
        let config = MembershipConfig {
            max_peers_in_list: 3,
            active_size: 1,
            ..Default::default()
        };
        let mut m = machine(0, vec![], vec![], config, t(0));
        for n in 1..=3 {
            m.handle_register(advert(n, t(0)), t(0)).expect("room");
        }
        let passive: Vec<PeerId> = m
            .peers()
            .filter(|p| !p.active)
            .map(|p| p.node.peer_id.clone())
            .collect();
        // The passive peers hold us active (they heartbeat us): they are never evicted.
        let hold_us = |m: &mut Membership, now| {
            for p in &passive {
                m.handle_heartbeat(p, now);
            }
        };
        hold_us(&mut m, t(0));
        assert_eq!(
            m.handle_register(advert(4, t(0)), t(0)),
            Err(Refusal::ListFull)
        );
        // Make the active peer unreachable.
        for k in 1..=3u64 {
            hold_us(&mut m, t(10 * k));
            m.handle_timer(Timer::Probe, t(10 * k));
            for (to, r, rid) in sends(&drain(&mut m)) {
                let res = if is_heartbeat(&r) {
                    Err(Failure::Unreachable)
                } else {
                    pong(
                        to.peer_id
                            .map_or(0, |p| p.as_str()[5..].parse().expect("n")),
                    )
                };
                m.handle_response(rid, res, t(10 * k));
            }
        }
        assert_eq!(
            m.peers()
                .filter(|p| p.health == PeerHealth::Unreachable)
                .count(),
            1
        );
        assert_eq!(
            m.handle_register(advert(4, t(40)), t(40)),
            Ok(RegisterOutcome::Added)
        );
        assert_eq!(m.known_count(), 3);
        assert!(passive.iter().all(|p| m.peer(p).is_some()));
    }

    #[test]
    fn a_registrant_turns_a_full_list_over_but_spares_active_heartbeating_and_bootstrap_peers() {
        let config = MembershipConfig {
            max_peers_in_list: 5,
            active_size: 1,
            ..Default::default()
        };
        let mut m = machine(0, vec![], vec![], config, t(0));
        for n in 1..=5 {
            m.handle_register(advert(n, t(n as u64)), t(n as u64))
                .expect("room");
        }
        let active = m.active_peers().next().expect("one").node.peer_id.clone();
        assert_eq!(active, id(1), "the first registrant took the only slot");
        // node-2 holds us active; node-3 was a bootstrap node.
        m.handle_heartbeat(&id(2), t(6));
        let seed = PeerAdvert {
            is_seed_node: true,
            ..advert(3, t(6))
        };
        m.handle_register(seed, t(6)).expect("known");
        // node-4 (seen at 4 s) is the stalest evictable peer, then node-5.
        for (newcomer, evicted) in [(6, 4), (7, 5)] {
            let now = t(10);
            m.handle_register(advert(newcomer, now), now)
                .expect("a verified peer gets a place");
            assert!(m.peer(&id(evicted)).is_none(), "node-{evicted} made room");
        }
        for spared in [1, 2, 3] {
            assert!(m.peer(&id(spared)).is_some(), "node-{spared} spared");
        }
        // Hearsay never displaces a verified peer.
        m.handle_exchange(&id(2), vec![advert(8, t(10))], 10, t(10));
        assert!(m.peer(&id(8)).is_none());
        assert_eq!(m.stats().refused_list_full, 1);
    }
}
