//! Relays in the active set (off unless `relay_percent` > 0).
//!
//! The gossip layer's relays (`gossip/relay.rs`) carry every transaction among themselves and
//! hand it to the leaves, each leaf taking it from one relay. That only pays if relays meet
//! each other: among ~16 random gossip peers a relay at 10-20 % relays has 2-3 relay peers,
//! and the mesh among relays is a long chain (the simulator's `tree3` runs of session 12). So
//! here a relay fills its active set with relays first (`relay_active_relays`), a leaf takes
//! `leaf_active_relays` of them, and at each probe tick a node short of relays drops an
//! active peer of the other kind for a relay it knows of (counted: `relay_swaps`), the
//! freed slot kept for the relay (`has_room_for`). Peer lists name relays first, up to half
//! of each, so every node soon knows some. A relay admits `relay_max_inbound` peers holding
//! it active: the leaves come on top of its relay peers. A leaf's second relay is not spare:
//! it announces to the leaf what the first pushes (`gossip/relay.rs`). Who is a relay is
//! computed from the id ([`PeerId::in_relay_share`]), so nothing here is a peer's claim.

use rand::seq::SliceRandom;

use super::{KnownPeer, Membership, PeerHealth, Purpose};
use crate::model::PeerId;
use crate::time::Now;

impl Membership {
    /// Whether `id` is a relay (never while roles are off).
    pub fn is_relay(&self, id: &PeerId) -> bool {
        id.in_relay_share(self.config.relay_percent)
    }

    /// How many peers may hold us active: more for a relay.
    pub(super) fn inbound_limit(&self) -> usize {
        if self.is_relay(&self.self_advert.peer_id) {
            self.config.relay_max_inbound.max(self.config.max_inbound)
        } else {
            self.config.max_inbound
        }
    }

    /// Relays we want in the active set.
    fn relays_wanted(&self) -> usize {
        if self.config.relay_percent == 0 {
            return 0;
        }
        let wanted = if self.is_relay(&self.self_advert.peer_id) {
            self.config.relay_active_relays
        } else {
            self.config.leaf_active_relays
        };
        wanted.min(self.config.active_size)
    }

    /// Relays we want in the active set and do not have there.
    fn relays_missing(&self) -> usize {
        let wanted = self.relays_wanted();
        if wanted == 0 {
            return 0;
        }
        let active = self.active.iter().filter(|id| self.is_relay(id)).count();
        wanted.saturating_sub(active)
    }

    /// Relays missing, less those being probed (whose answers may fill the gap).
    fn relays_short(&self) -> usize {
        let probing = self
            .pending
            .values()
            .filter(|p| matches!(&p.purpose, Purpose::Probe { peer } if self.is_relay(peer)))
            .count();
        self.relays_missing().saturating_sub(probing)
    }

    /// Whether a free slot of the active set may go to `id`: a peer that is not a relay
    /// leaves the last free slots to the relays missing while one is known to try (or being
    /// probed). Without it the answer to a passive check (a ping that promotes when a slot
    /// is free) took the slot a swap had freed for a relay about as often as not.
    pub(super) fn has_room_for(&self, id: &PeerId, now: Now) -> bool {
        let missing = self.relays_missing();
        if missing == 0 || self.is_relay(id) {
            return true;
        }
        let free = self.config.active_size.saturating_sub(self.active.len());
        if free > missing {
            return true;
        }
        let unverified_full = self.unverified_active_full();
        !self.peers.values().any(|p| {
            self.is_relay(&p.node.peer_id)
                && (p.probing || self.promotable(p, unverified_full, now))
        })
    }

    /// The first `take` of `order` to probe for the active set: relays first while we are
    /// short of them (at most as many as we are short), then the others, then other relays
    /// (a leaf holding more relays than it wants takes their room from other leaves).
    pub(super) fn relays_first(&self, order: Vec<&PeerId>, take: usize) -> Vec<PeerId> {
        let short = self.relays_short();
        let order = if short == 0 {
            order
        } else {
            relays_ahead(order, short, |id| self.is_relay(id))
        };
        order.into_iter().take(take).cloned().collect()
    }

    /// A peer list's adverts with relays ahead, up to half of it, so every node soon knows
    /// relays to take (at 5 % relays, a list of 50 random peers names none 8 % of the time).
    pub(super) fn relays_in_handout<'a>(
        &self,
        adverts: Vec<&'a KnownPeer>,
        max: usize,
    ) -> Vec<&'a KnownPeer> {
        if self.config.relay_percent == 0 {
            return adverts;
        }
        relays_ahead(adverts, max.div_ceil(2), |p| self.is_relay(&p.node.peer_id))
    }

    /// Whether `p` may be probed for the active set now (`unverified_full`: the unverified
    /// share of the active set is taken).
    pub(super) fn promotable(&self, p: &KnownPeer, unverified_full: bool, now: Now) -> bool {
        let busy = p.busy_until.is_some_and(|until| until > now.mono);
        let no_room = unverified_full && !p.node.verified;
        !(p.active
            || p.probing
            || busy
            || no_room
            || p.health == PeerHealth::Unreachable
            || self.is_banned(&p.node.peer_id, now))
    }

    /// At a probe tick: while short of relays with a full active set, drops as many active
    /// peers that are not relays as there are relays to take in their places (known, not
    /// busy, not banned) and probes those relays (the freed slots wait for them: see
    /// `has_room_for`). A relay that answers Busy leaves its place to another peer and is not
    /// asked again for a while, so the swaps stop when no relay has room. Short of relays
    /// and knowing none to try, it asks a live peer for its list (as a starved active set
    /// does: at most once per probe interval, less often while answers bring nobody new).
    pub(super) fn swap_for_relays(&mut self, now: Now) {
        let short = self.relays_short();
        if short == 0 {
            return;
        }
        let unverified_full = self.unverified_active_full();
        let mut waiting: Vec<PeerId> = self
            .peers
            .values()
            .filter(|p| self.is_relay(&p.node.peer_id) && self.promotable(p, unverified_full, now))
            .map(|p| p.node.peer_id.clone())
            .collect();
        if waiting.is_empty() {
            self.ask_for_more_peers(now);
            return;
        }
        if self.active.len() < self.config.active_size {
            return;
        }
        let mut others: Vec<PeerId> = self
            .active
            .iter()
            .filter(|id| !self.is_relay(id))
            .cloned()
            .collect();
        others.shuffle(&mut self.rng);
        waiting.shuffle(&mut self.rng);
        for (leaving, relay) in others.into_iter().zip(waiting).take(short) {
            if self.may_dial(&relay, now).is_err() {
                break;
            }
            self.deactivate(&leaving);
            self.stats.relay_swaps += 1;
            self.send_probe(&relay, now);
        }
    }
}

/// `items` with their first `first` relays moved ahead and the other relays behind the rest,
/// each group in the order given.
fn relays_ahead<T>(items: Vec<T>, first: usize, is_relay: impl Fn(&T) -> bool) -> Vec<T> {
    let (relays, others): (Vec<T>, Vec<T>) = items.into_iter().partition(|t| is_relay(t));
    let mut relays = relays.into_iter();
    let ahead: Vec<T> = relays.by_ref().take(first).collect();
    ahead.into_iter().chain(others).chain(relays).collect()
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::super::*;
    use crate::model::PeerStatus;

    /// Roles on at 30 %: a relay wants 3 relays among its 4 active peers, a leaf 1. No
    /// passive checks: every ping is a probe for the active set.
    fn roles() -> MembershipConfig {
        MembershipConfig {
            active_size: 4,
            passive_checks_per_probe: 0,
            relay_percent: 30,
            relay_active_relays: 3,
            leaf_active_relays: 1,
            max_inbound: 2,
            relay_max_inbound: 6,
            ..Default::default()
        }
    }

    /// The first `n` node numbers from 1 on that are relays (`true`) or leaves.
    fn numbers(relay: bool, n: usize) -> Vec<usize> {
        (1..)
            .filter(|&k| id(k).in_relay_share(30) == relay)
            .take(n)
            .collect()
    }

    /// A relay (`true`) or a leaf that knows `known` from its store.
    fn knowing(relay: bool, known: &[usize]) -> Membership {
        let me = *numbers(relay, 40)
            .iter()
            .find(|k| !known.contains(k))
            .expect("a free number");
        let stored = known
            .iter()
            .map(|&n| crate::model::PeerNode::from_advert(advert(n, t(0)), t(0).wall))
            .collect();
        machine(me, vec![], stored, roles(), t(0))
    }

    /// The peers pinged since the last call, with the requests' ids.
    fn pinged(m: &mut Membership) -> Vec<(PeerId, RequestId)> {
        sends(&drain(m))
            .into_iter()
            .filter(|(_, request, _)| is_ping(request))
            .map(|(to, _, rid)| (to.peer_id.expect("known peers"), rid))
            .collect()
    }

    /// Answers every ping in `pings` with `status`.
    fn answer(m: &mut Membership, pings: Vec<(PeerId, RequestId)>, status: PeerStatus, at: Now) {
        for (peer_id, rid) in pings {
            m.handle_response(rid, Ok(Response::Pong { peer_id, status }), at);
        }
    }

    /// A relay (`true`) or a leaf whose active set the first of `leaves` known leaves filled.
    fn filled(relay: bool, leaves: usize) -> Membership {
        let mut m = knowing(relay, &numbers(false, leaves));
        let pings = pinged(&mut m);
        answer(&mut m, pings, PeerStatus::Online, t(1));
        m
    }

    /// `m` learns of `k` relays (not itself) as they register with it.
    fn learn_relays(m: &mut Membership, k: usize) {
        let me = m.self_advert.peer_id.clone();
        for n in numbers(true, k + 1)
            .into_iter()
            .filter(|&n| id(n) != me)
            .take(k)
        {
            m.handle_register(advert(n, t(2)), t(2)).expect("room");
        }
    }

    fn relays_active(m: &Membership) -> usize {
        m.active.iter().filter(|id| m.is_relay(id)).count()
    }

    #[test]
    fn a_relay_probes_relays_first_and_a_leaf_only_as_many_as_it_wants() {
        let known: Vec<usize> = numbers(false, 8)
            .into_iter()
            .chain(numbers(true, 4))
            .collect();
        let mut relay = knowing(true, &known);
        let probed = pinged(&mut relay);
        assert_eq!(probed.len(), 4, "{probed:?}");
        assert_eq!(probed.iter().filter(|(p, _)| relay.is_relay(p)).count(), 3);

        let mut leaf = knowing(false, &known);
        let probed = pinged(&mut leaf);
        assert_eq!(probed.len(), 4, "{probed:?}");
        assert_eq!(probed.iter().filter(|(p, _)| leaf.is_relay(p)).count(), 1);
    }

    #[test]
    fn a_full_active_set_short_of_relays_swaps_leaves_for_relays_and_counts_it() {
        // Only leaves are known at first: they fill the relay's active set.
        let mut m = filled(true, 4);
        assert_eq!((m.active.len(), relays_active(&m)), (4, 0));
        learn_relays(&mut m, 3);
        // The probe tick drops three leaves and pings the three relays in their places.
        m.handle_timeout(t(10));
        assert_eq!(m.stats().relay_swaps, 3);
        let pings = pinged(&mut m);
        assert_eq!(pings.len(), 3, "{pings:?}");
        answer(&mut m, pings, PeerStatus::Online, t(11));
        assert_eq!((m.active.len(), relays_active(&m)), (4, 3));
        // Nothing is short now: the next tick keeps the set.
        m.handle_timeout(t(20));
        assert_eq!(m.stats().relay_swaps, 3);
        assert_eq!((m.active.len(), relays_active(&m)), (4, 3));
    }

    #[test]
    fn a_busy_relay_ends_the_swaps() {
        let mut m = filled(false, 8);
        learn_relays(&mut m, 1);
        m.handle_timeout(t(10));
        assert_eq!(m.stats().relay_swaps, 1);
        // The relay is full: a leaf takes the place back, and the relay is left alone.
        let pings = pinged(&mut m);
        assert_eq!(pings.len(), 1, "{pings:?}");
        answer(&mut m, pings, PeerStatus::Busy, t(11));
        let pings = pinged(&mut m);
        assert!(pings.iter().all(|(p, _)| !m.is_relay(p)), "{pings:?}");
        answer(&mut m, pings, PeerStatus::Online, t(12));
        assert_eq!((m.active.len(), relays_active(&m)), (4, 0));
        m.handle_timeout(t(20));
        assert_eq!(m.stats().relay_swaps, 1);
    }

    #[test]
    fn a_peer_list_names_relays_first_up_to_half_of_it() {
        let known: Vec<usize> = numbers(false, 10)
            .into_iter()
            .chain(numbers(true, 4))
            .collect();
        let mut m = knowing(false, &known);
        let list = m.peer_list(None, 6, t(1));
        let relays = list.iter().filter(|a| m.is_relay(&a.peer_id)).count();
        assert_eq!((list.len(), relays), (6, 3));
        let short = m.peer_list(None, 20, t(1));
        assert_eq!(short.len(), 14, "everyone, relays or not");
    }

    #[test]
    fn a_slot_freed_for_a_relay_is_not_taken_by_a_passive_check_of_a_leaf() {
        let mut m = filled(false, 8);
        learn_relays(&mut m, 1);
        m.handle_timeout(t(10));
        let swap = pinged(&mut m);
        assert_eq!(swap.len(), 1);
        assert_eq!(m.active.len(), 3, "one leaf left for the relay");
        // A leaf that answers a ping meanwhile stays passive: the slot waits for the relay.
        let leaf = numbers(false, 12)
            .into_iter()
            .find(|&n| m.peers.get(&id(n)).is_some_and(|p| !p.active))
            .expect("a passive leaf");
        m.send_probe(&id(leaf), t(10));
        let check = pinged(&mut m);
        answer(&mut m, check, PeerStatus::Online, t(11));
        assert_eq!((m.active.len(), relays_active(&m)), (3, 0));
        answer(&mut m, swap, PeerStatus::Online, t(11));
        assert_eq!((m.active.len(), relays_active(&m)), (4, 1));
    }

    #[test]
    fn a_relay_admits_more_inbound_peers_than_a_leaf() {
        let relay = knowing(true, &[]);
        let leaf = knowing(false, &[]);
        assert_eq!((relay.inbound_limit(), leaf.inbound_limit()), (6, 2));
        let off = machine(1, vec![], vec![], MembershipConfig::default(), t(0));
        assert_eq!(off.inbound_limit(), MembershipConfig::default().max_inbound);
        assert!(!off.is_relay(&id(1)));
    }
}
