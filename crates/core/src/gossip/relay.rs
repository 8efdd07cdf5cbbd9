//! Relays and leaves: a skewed eager graph (off unless `relay_percent` > 0).
//!
//! Flooding an eager graph of mean degree d costs about d - 1 duplicate bodies per node, and a
//! uniform floor of eager links keeps d >= 3. Here a share of the nodes, picked by a hash of
//! their id (so every node tells who is a relay without a message), are *relays*: among
//! themselves they keep the usual floors (`eager_min_peers`, `slow_push_floor`), a mesh
//! shallow and redundant enough to carry every transaction quickly. Every other node is a
//! *leaf*: it keeps `leaf_eager_peers` eager relays (those whose copies come first) and
//! prunes every other duplicate push, so most nodes get each body about once. A relay never
//! prunes a leaf (the leaf chooses its relays); a leaf with no eager relay keeps its other
//! links to that many. A pushed transaction's announcements go where they repair: a relay
//! announces it to every lazy leaf (a leaf's second relay tells it of what its eager relay's
//! lost push did not bring), a leaf only its own (`relay_announce_targets`). Membership
//! makes relays meet each other and gives each leaf two (`membership/roles.rs`). No state
//! beyond the tree's: who is a relay is computed ([`PeerId::in_relay_share`]).

use std::time::Duration;

use super::Gossip;
use crate::model::PeerId;

/// Pushes a leaf misses in a row, with an eager relay, before it replaces its eager relays
/// by the relay that announced the missed ones. One miss is the network's (a lost message:
/// 1 % in the simulator's scenarios, so three in a row about one in a million), three are
/// the relay's.
pub const LEAF_MISSES_TO_SWAP: u32 = 3;

impl Gossip {
    /// Gossip peers we push to (the eager tree's links at this node), and of them relays
    /// (0 when relays are off).
    pub fn eager_peers(&self) -> (usize, usize) {
        (self.eager_count(), self.eager_relays())
    }

    /// Gossip peers that are relays, eager or lazy (0 when relays are off).
    pub fn relay_peers(&self) -> usize {
        self.peers.iter().filter(|p| self.is_relay(p)).count()
    }

    /// Whether this node is a relay.
    pub fn relays(&self) -> bool {
        self.is_relay(&self.self_id)
    }

    /// Whether `peer` is a relay ([`PeerId::in_relay_share`]).
    pub(super) fn is_relay(&self, peer: &PeerId) -> bool {
        peer.in_relay_share(self.config.relay_percent)
    }

    /// Whether relays are on and we are a leaf.
    pub fn is_leaf(&self) -> bool {
        self.config.relay_percent > 0 && !self.is_relay(&self.self_id)
    }

    /// Whom to graft when a push announced by `announcer` did not come: the announcer, but
    /// a leaf grafts only relays, and only while it has fewer eager relays than it keeps (a
    /// miss with enough of them was a lost or slow push, and a graft would only bring
    /// duplicates): the announcer if it is one, else the first lazy relay among its peers.
    /// A leaf that missed [`LEAF_MISSES_TO_SWAP`] pushes in a row with its eager relays
    /// prunes them and grafts the announcing relay: they withhold, or their link is broken.
    pub(super) fn graft_target(&mut self, announcer: PeerId) -> Option<PeerId> {
        if !self.is_leaf() {
            return Some(announcer);
        }
        let enough = self.eager_relays() >= self.config.leaf_eager_peers;
        if self.is_relay(&announcer) {
            if !enough {
                return Some(announcer);
            }
            self.leaf_misses += 1;
            if self.leaf_misses < LEAF_MISSES_TO_SWAP {
                return None;
            }
            self.leaf_misses = 0;
            let failing: Vec<PeerId> = self
                .peers
                .iter()
                .filter(|p| self.is_eager(p) && self.is_relay(p))
                .cloned()
                .collect();
            self.stats.relays_replaced += failing.len() as u64;
            for relay in failing {
                self.prune(&relay);
            }
            return Some(announcer);
        }
        if enough {
            return None;
        }
        let relay = self
            .peers
            .iter()
            .find(|p| !self.is_eager(p) && self.is_relay(p));
        Some(relay.cloned().unwrap_or(announcer))
    }

    /// A valid push came from `from`: for a leaf, an eager relay's push ends a run of misses.
    pub(super) fn note_relay_push(&mut self, from: &PeerId) {
        if self.leaf_misses > 0 && self.is_eager(from) && self.is_relay(from) {
            self.leaf_misses = 0;
        }
    }

    /// A peer joined the gossip peers: it starts eager (every peer does without relays),
    /// but a leaf's new leaf peer starts lazy: the link would be pruned at its first
    /// duplicate, each such link costing a body to learn it.
    pub(super) fn start_tree_peer(&mut self, peer: &PeerId) {
        if self.is_leaf() && !self.is_relay(peer) {
            self.lazy.insert(peer.clone());
        }
    }

    /// Whom a pushed transaction is announced to (`targets`: the gossip peers not pushed to,
    /// shuffled), so that a lost push is repaired at once and nobody else hears of it twice:
    /// - a relay announces it to every lazy leaf (a leaf holds a second relay for just
    ///   this: its eager relay's push lost, the announcement brings a pull within
    ///   `graft_timeout`), and to `pushed_announce_peers` lazy relays;
    /// - a leaf announces its own to its lazy relays and nobody's else: its relays have
    ///   told every leaf that may miss it.
    ///
    /// Before, every node announced to `pushed_announce_peers` random lazy peers: about one
    /// announcement per node per transaction, as now, but a third of the nodes heard none,
    /// and a lost push there waited for anti-entropy (`crates/sim/README.md`, session 13).
    pub(super) fn relay_announce_targets(&self, targets: &mut Vec<PeerId>, local: bool) {
        if self.is_leaf() {
            targets.retain(|p| local && self.is_relay(p));
            return;
        }
        let mut relays = 0;
        targets.retain(|p| {
            if !self.is_relay(p) {
                return true;
            }
            relays += 1;
            relays <= self.config.pushed_announce_peers
        });
    }

    /// Eager gossip peers that are relays.
    fn eager_relays(&self) -> usize {
        self.peers
            .iter()
            .filter(|p| self.is_eager(p) && self.is_relay(p))
            .count()
    }

    /// Whether the eager peer `from`, whose duplicate push came `lag` behind the first copy,
    /// stays eager.
    pub(super) fn relay_keeps(&self, from: &PeerId, lag: Duration) -> bool {
        let me = self.is_relay(&self.self_id);
        match (me, self.is_relay(from)) {
            (true, true) => self.eager_relays() <= self.floor_after(lag),
            (true, false) => true,
            (false, true) => self.eager_relays() <= self.config.leaf_eager_peers,
            (false, false) => {
                self.eager_relays() == 0 && self.eager_count() <= self.config.leaf_eager_peers
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::test_util::*;
    use super::super::*;

    /// Push on, half the nodes relays, no floor for quick duplicates, a slow floor of 2.
    fn relays() -> GossipConfig {
        GossipConfig {
            eager_push_max_size: 1024,
            eager_push_peers: 16,
            eager_min_peers: 16,
            slow_push_lag: Duration::from_millis(100),
            slow_push_floor: 2,
            relay_percent: 50,
            ..quiet()
        }
    }

    /// The first `n` node numbers from 1 on that are relays (`true`) or leaves.
    fn numbers(relay: bool, n: usize) -> Vec<usize> {
        (1..)
            .filter(|&k| id(k).in_relay_share(relays().relay_percent) == relay)
            .take(n)
            .collect()
    }

    /// A node that is a relay (`true`) or a leaf, with gossip peers `peers`.
    fn member(relay: bool, peers: &[usize]) -> Gossip {
        let me = *numbers(relay, 99)
            .iter()
            .find(|k| !peers.contains(k))
            .expect("one is free");
        node(me, peers.iter().copied(), relays())
    }

    #[test]
    fn the_node_follows_the_share_asked_and_off_picks_none() {
        let probe = node(0, [], relays());
        let picked = (0..1000).filter(|&k| probe.is_relay(&id(k))).count();
        assert!((400..600).contains(&picked), "{picked} of 1000");
        let off = node(0, [], tree_off());
        assert!((0..1000).all(|k| !off.is_relay(&id(k))));
        assert!(!off.is_leaf());
    }

    fn tree_off() -> GossipConfig {
        GossipConfig {
            relay_percent: 0,
            ..relays()
        }
    }

    #[test]
    fn a_leaf_keeps_one_relay_and_prunes_every_other_duplicate() {
        let r = numbers(true, 2);
        let l = numbers(false, 2);
        let mut g = member(false, &[r[0], r[1], l[0], l[1]]);
        assert!(g.is_leaf());
        g.submit(body(1), None, ms(0)).expect("valid");
        let mut both = vec![id(r[0]), id(r[1])];
        both.sort();
        assert_eq!(pushed_to(&drain(&mut g)), both, "leaf peers start lazy");
        // A quick duplicate from the second relay: pruned, one relay is enough.
        g.handle_message(&id(r[0]), push_of(2), ms(1));
        g.handle_message(&id(r[1]), push_of(2), ms(2));
        assert_eq!(sent(&drain(&mut g), GossipMessage::Prune), vec![id(r[1])]);
        // The last eager relay is kept, whatever came first; a leaf is pruned.
        g.handle_message(&id(l[0]), push_of(3), ms(3));
        g.handle_message(&id(r[0]), push_of(3), ms(400));
        g.handle_message(&id(l[1]), push_of(3), ms(401));
        assert_eq!(sent(&drain(&mut g), GossipMessage::Prune), vec![id(l[1])]);
        assert_eq!(g.eager_peers(), (1, 1));
    }

    #[test]
    fn relays_keep_their_floor_among_relays_and_never_prune_a_leaf() {
        let r = numbers(true, 3);
        let l = numbers(false, 1);
        let mut g = member(true, &[r[0], r[1], r[2], l[0]]);
        assert!(g.relays());
        g.handle_message(&id(r[0]), push_of(1), ms(0));
        drain(&mut g);
        // Slow duplicates: the leaf stays, relays go down to the slow floor of 2.
        for from in [l[0], r[1], r[2]] {
            g.handle_message(&id(from), push_of(1), ms(300));
        }
        assert_eq!(sent(&drain(&mut g), GossipMessage::Prune), vec![id(r[1])]);
        assert_eq!(g.eager_peers(), (3, 2));
    }

    #[test]
    fn a_leaf_grafts_a_relay_only_when_it_has_none() {
        let r = numbers(true, 1);
        let l = numbers(false, 1);
        let mut g = member(false, &[r[0], l[0]]);
        g.handle_message(&id(r[0]), GossipMessage::Prune, ms(0));
        // Announced by the leaf, not pushed: pulled from it, the relay grafted.
        g.handle_message(&id(l[0]), announce(vec![entry(1, 3)]), ms(1));
        g.handle_timeout(ms(81));
        let out = drain(&mut g);
        assert_eq!(fetches(&out), vec![(id(l[0]), entry(1, 3).id)]);
        assert_eq!(sent(&out, GossipMessage::Graft), vec![id(r[0])]);
        // With an eager relay, a missed push is pulled without a graft.
        g.handle_message(&id(l[0]), announce(vec![entry(2, 3)]), ms(100));
        g.handle_timeout(ms(180));
        let out = drain(&mut g);
        assert_eq!(fetches(&out).len(), 1);
        assert!(sent(&out, GossipMessage::Graft).is_empty());
    }

    #[test]
    fn a_leaf_replaces_an_eager_relay_that_missed_three_pushes_in_a_row() {
        let r = numbers(true, 2);
        let mut g = member(false, &[r[0], r[1]]);
        g.handle_message(&id(r[1]), GossipMessage::Prune, ms(0));
        let mut at = 1;
        let mut miss = |g: &mut Gossip, n: usize| {
            g.handle_message(&id(r[1]), announce(vec![entry(n, 3)]), ms(at));
            g.handle_timeout(ms(at + 80));
            at += 100;
            drain(g)
        };
        // Two misses, then a push from the eager relay: the run starts over.
        for n in [1, 2] {
            let out = miss(&mut g, n);
            assert_eq!(fetches(&out).len(), 1);
            assert!(sent(&out, GossipMessage::Graft).is_empty());
        }
        g.handle_message(&id(r[0]), push_of(9), ms(250));
        drain(&mut g);
        for n in [3, 4] {
            assert!(sent(&miss(&mut g, n), GossipMessage::Graft).is_empty());
        }
        // The third in a row: the announcing relay replaces the eager one.
        let out = miss(&mut g, 5);
        assert_eq!(sent(&out, GossipMessage::Graft), vec![id(r[1])]);
        assert_eq!(sent(&out, GossipMessage::Prune), vec![id(r[0])]);
        assert_eq!(g.stats().relays_replaced, 1);
        assert_eq!(g.eager_peers(), (1, 1));
    }

    /// The peers announced to, sorted.
    fn announced_to(out: &[Output]) -> Vec<PeerId> {
        let mut to: Vec<PeerId> = announces(out).into_iter().map(|(p, _)| p).collect();
        to.sort();
        to
    }

    #[test]
    fn a_relay_announces_a_push_to_every_lazy_leaf_and_pushed_announce_peers_relays() {
        let r = numbers(true, 3);
        let l = numbers(false, 3);
        let config = GossipConfig {
            fanout: FanoutMode::Fixed(2),
            pushed_announce_peers: 1,
            ..relays()
        };
        let me = *numbers(true, 4)
            .iter()
            .find(|k| !r.contains(k))
            .expect("free");
        let mut g = node(me, [r[0], r[1], r[2], l[0], l[1], l[2]], config);
        for lazy in [r[1], r[2], l[1], l[2]] {
            g.handle_message(&id(lazy), GossipMessage::Prune, ms(0));
        }
        g.handle_message(&id(r[0]), push_of(1), ms(1));
        assert_eq!(pushed_to(&drain(&mut g)), vec![id(l[0])]);
        let to = announced_to(&flush(&mut g, ms(2)));
        // Both lazy leaves (more than the fanout of 2), and one of the two lazy relays.
        assert_eq!(to.len(), 3, "{to:?}");
        assert!(to.contains(&id(l[1])) && to.contains(&id(l[2])), "{to:?}");
    }

    #[test]
    fn a_leaf_announces_its_own_to_its_lazy_relays_and_what_it_relays_to_nobody() {
        let r = numbers(true, 2);
        let l = numbers(false, 2);
        let config = GossipConfig {
            fanout: FanoutMode::Fixed(6),
            pushed_announce_peers: 1,
            ..relays()
        };
        let me = numbers(false, 3)[2];
        let mut g = node(me, [r[0], r[1], l[0], l[1]], config);
        g.handle_message(&id(r[1]), GossipMessage::Prune, ms(0));
        g.submit(body(1), None, ms(1)).expect("valid");
        assert_eq!(pushed_to(&drain(&mut g)), vec![id(r[0])]);
        assert_eq!(announced_to(&flush(&mut g, ms(2))), vec![id(r[1])]);
        // Relayed: its relays tell the leaves that may miss it.
        g.handle_message(&id(r[0]), push_of(2), ms(3));
        assert!(pushed_to(&drain(&mut g)).is_empty());
        assert!(announced_to(&flush(&mut g, ms(4))).is_empty());
    }
}
