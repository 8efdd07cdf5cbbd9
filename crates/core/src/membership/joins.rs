//! Join announcements: a peer that registers with us for the first time is told to our
//! active peers, so a node that joins a running network is known to all of a small one
//! within seconds instead of waiting for a refresh exchange (15 minutes by default) to
//! carry it there by chance.
//!
//! Registrants are collected for [`JOIN_ANNOUNCE_DELAY`] (a burst of starts goes out as one
//! message per active peer), at most [`MAX_JOINERS`] at a time (more are dropped and
//! counted), and go out as an `ExchangePeers` push that asks for one advert back. One hop
//! only: a peer that learns a joiner this way does not announce it again. What the receivers
//! get stays a claim: they merge it as a candidate through the same bounds as any exchange
//! (hearsay per message, list and unverified shares, the dial gate). Only joiners that proved
//! their id are announced, unless the network admits unproven peers anyway, and only by a
//! node that knows fewer than [`SMALL_NETWORK_FACTOR`] times `active_size` peers (a small
//! network, where everyone may know everyone).

use std::time::Duration;

use super::{Contact, Membership, PeerHealth, Purpose, Request, Timer};
use crate::model::PeerId;
use crate::time::Now;

/// A node announces joiners while it knows fewer than this many times `active_size` peers.
pub const SMALL_NETWORK_FACTOR: usize = 2;

/// How long registrations are collected before they are announced.
pub const JOIN_ANNOUNCE_DELAY: Duration = Duration::from_secs(1);

/// Joiners waiting to be announced at most: an exchange's worth (`exchange_size`, 20), so a
/// flood of registrations costs each active peer one exchange per delay, however large.
pub const MAX_JOINERS: usize = 20;

impl Membership {
    /// `id` registered with us for the first time: announce it with the next batch.
    pub(super) fn note_joiner(&mut self, id: &PeerId, now: Now) {
        let Some(known) = self.peers.get(id) else {
            return;
        };
        if !known.node.verified && self.config.unverified_share < 100 {
            return;
        }
        // Only in a small network, where everyone may know everyone: in a large one
        // discovery finds newcomers for whoever lacks peers, and announcing them reshuffled
        // the overlay for the worse (sorcha-peer-sim scale n100, t99 p95 2.4-2.7 s before;
        // 4.4-4.5 s announcing in every node, 4.1-5.6 s below `discovery_target` known).
        if self.peers.len() >= SMALL_NETWORK_FACTOR * self.config.active_size {
            return;
        }
        if self.joiners.len() >= MAX_JOINERS {
            self.stats.joins_dropped += 1;
            return;
        }
        if self.joiners.is_empty() {
            self.schedule(now.mono.saturating_add(JOIN_ANNOUNCE_DELAY), Timer::Join);
        }
        if !self.joiners.contains(id) {
            self.joiners.push(id.clone());
        }
    }

    /// Sends the collected joiners still alive and unbanned to every live active peer and to
    /// each other (each without its own advert). The joiners themselves are told because
    /// nodes that start together register with the same bootstrap node at once: those outside
    /// its active set learnt only the peers it knew when they asked, and would wait for a
    /// heartbeat's exchange (10 s) to hear of the others (`peer-lab run discovery`: 2 of 3
    /// runs took 10.1-10.3 s before).
    pub(super) fn on_join_timer(&mut self, now: Now) {
        let joiners = std::mem::take(&mut self.joiners);
        let live: Vec<_> = joiners
            .iter()
            .filter(|id| !self.is_banned(id, now))
            .filter_map(|id| self.peers.get(id))
            .filter(|p| p.health == PeerHealth::Alive)
            .collect();
        if live.is_empty() {
            return;
        }
        let adverts: Vec<_> = live.iter().map(|p| p.node.advert()).collect();
        let mut targets: Vec<(PeerId, Contact)> = self
            .active_peers()
            .filter(|p| p.health == PeerHealth::Alive)
            .map(|p| (p.node.peer_id.clone(), Contact::of(&p.node)))
            .collect();
        for joiner in &live {
            if !targets.iter().any(|(id, _)| *id == joiner.node.peer_id) {
                targets.push((joiner.node.peer_id.clone(), Contact::of(&joiner.node)));
            }
        }
        for (peer, to) in targets {
            let told: Vec<_> = adverts
                .iter()
                .filter(|a| a.peer_id != peer)
                .cloned()
                .collect();
            if told.is_empty() {
                continue;
            }
            self.stats.joins_announced += told.len() as u64;
            let request = Request::ExchangePeers {
                adverts: told,
                max: 1,
            };
            if !self.send(to, request, Purpose::Exchange { peer }, now) {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::super::*;
    use super::*;

    fn exchanges(out: &[Output]) -> Vec<(Contact, Vec<PeerId>)> {
        sends(out)
            .into_iter()
            .filter_map(|(to, r, _)| match r {
                Request::ExchangePeers { adverts, .. } => {
                    Some((to, adverts.into_iter().map(|a| a.peer_id).collect()))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn joiners_outside_the_active_set_are_told_of_each_other() {
        let config = MembershipConfig::default();
        let joiners = config.active_size + 2;
        let mut m = with_registered(1..=joiners);
        m.handle_timeout(t(1));
        let sent = exchanges(&drain(&mut m));
        for n in 1..=joiners {
            let to_n: Vec<_> = sent
                .iter()
                .filter(|(to, _)| to.peer_id == Some(id(n)))
                .collect();
            assert_eq!(to_n.len(), 1, "node-{n} told once: {sent:?}");
            assert_eq!(to_n[0].1.len(), joiners - 1, "all the others: {sent:?}");
        }
    }

    #[test]
    fn a_new_registrant_is_announced_to_the_active_peers_once() {
        let mut m = with_registered(1..=3);
        // The first three were announced to each other a second on.
        m.handle_timeout(t(1));
        let first = exchanges(&drain(&mut m));
        assert_eq!(first.len(), 3, "{first:?}");
        assert!(
            first.iter().all(|(to, ids)| ids.len() == 2
                && !ids.contains(to.peer_id.as_ref().expect("known peer")))
        );
        m.handle_register(advert(4, t(2)), t(2)).expect("valid");
        m.handle_register(advert(4, t(2)), t(2)).expect("valid");
        m.handle_timeout(t(2));
        assert!(
            exchanges(&drain(&mut m)).is_empty(),
            "collected for a second"
        );
        m.handle_timeout(t(3));
        let sent = exchanges(&drain(&mut m));
        assert_eq!(sent.len(), 3, "peers 1-3, not the joiner itself: {sent:?}");
        assert!(sent.iter().all(|(_, ids)| ids == &vec![id(4)]));
        assert_eq!(m.stats().joins_announced, 6 + 3);
        m.handle_timeout(t(5));
        assert!(exchanges(&drain(&mut m)).is_empty(), "once");
    }

    #[test]
    fn a_flood_of_registrants_is_bounded_and_counted() {
        let config = MembershipConfig {
            max_inbound: 1000,
            active_size: 100,
            ..MembershipConfig::default()
        };
        let mut m = machine(0, vec![], vec![], config, t(0));
        for n in 1..=100 {
            m.handle_register(advert(n, t(0)), t(0)).expect("valid");
        }
        assert_eq!(m.stats().joins_dropped, 80);
        m.handle_timeout(t(1));
        let sent = exchanges(&drain(&mut m));
        let active = m.active_count();
        assert_eq!(sent.len(), active, "one exchange per active peer");
        assert!(sent.iter().all(|(_, ids)| ids.len() <= MAX_JOINERS));
    }

    #[test]
    fn unproven_registrants_are_not_announced_where_proofs_matter() {
        let config = MembershipConfig {
            unverified_share: 50,
            ..MembershipConfig::default()
        };
        let mut m = machine(0, vec![], vec![], config, t(0));
        m.handle_register(advert(1, t(0)), t(0)).expect("valid");
        m.handle_register(advert(2, t(0)), t(0)).expect("valid");
        m.handle_register_proven(advert(3, t(0)), t(0))
            .expect("valid");
        m.handle_timeout(t(1));
        let sent = exchanges(&drain(&mut m));
        assert!(
            sent.iter().all(|(_, ids)| ids == &vec![id(3)]),
            "only the proven one: {sent:?}"
        );
        assert_eq!(sent.len(), 2);
    }

    #[test]
    fn a_node_that_knows_enough_peers_announces_nobody() {
        let config = MembershipConfig::default();
        let target = SMALL_NETWORK_FACTOR * config.active_size;
        let mut m = with_registered(1..=target);
        m.handle_timeout(t(1));
        drain(&mut m);
        let announced = m.stats().joins_announced;
        m.handle_register(advert(target + 1, t(2)), t(2))
            .expect("valid");
        m.handle_timeout(t(3));
        assert!(exchanges(&drain(&mut m)).is_empty());
        assert_eq!(m.stats().joins_announced, announced);
    }
}
