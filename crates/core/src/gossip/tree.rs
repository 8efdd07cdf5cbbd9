//! The eager-push tree (Plumtree: Leitão, Pereira and Rodrigues, "Epidemic Broadcast Trees",
//! 2007): which gossip peers get a small body pushed at once and which only its batched
//! announcement, and how the split repairs itself.
//!
//! Every gossip peer starts eager (so does one that leaves and comes back). A body of at most
//! `eager_push_max_size` bytes is pushed at once to the eager peers (`forward`, in
//! `announce.rs`); the others get the announcement. A pushed body that was already known
//! means two eager paths reached us: the receiver *prunes* the sender (both ends then treat
//! the link as lazy), so the eager links thin out to about a spanning tree and each node gets
//! each body about once. An announcement of a small unknown transaction waits `graft_timeout`
//! for its push; if none comes the body is pulled from the announcer as before, and the
//! announcer is *grafted* (both ends treat the link as eager again), so the tree heals where a
//! push was lost or a link broke. Bodies above the threshold keep announce-and-pull.
//!
//! Beyond the paper, a node keeps a *floor* of `eager_min_peers` eager links: a duplicate
//! push from one of them is not pruned while we push to that many or fewer. The eager
//! graph then stays a shallow mesh rather than a deep spanning tree (which, shared by
//! transactions from every origin, grew ~30 hops deep at 10,000 nodes), and a lost push
//! usually has another eager path, so fewer announcements wait out `graft_timeout` and graft
//! (`crates/sim/README.md`, session 9, has the figures and what lost).
//!
//! Three rules that thin the eager graph further, all off by default (session 11 of the
//! same README): a duplicate push that comes `slow_push_lag` or more behind the first copy
//! prunes its sender under the floor, down to `slow_push_floor` (the eager links left are
//! those whose copies come close behind, so likely fast ones); a pushed transaction is
//! announced to at most `pushed_announce_peers` lazy peers; and those announcements may wait
//! `lazy_flush_interval`, batched (`announce.rs`).
//!
//! The origin's shortcut (`origin_push_peers`, off by default): a node pushes its own
//! submissions to that many lazy peers besides its eager ones (not while busy: `pace.rs`),
//! so they start down several branches of the tree at once and the last nodes are nearer.
//! The tree must not learn from it: a shortcut push (one hop from its origin, from a peer
//! that is lazy for us) prunes nothing when it is the duplicate, and when it came first the
//! tree's own copy that follows prunes nothing either (the known transaction says so,
//! `KnownTx::by_shortcut`). The receiver's own relays of it may still meet the tree's
//! copies as duplicates (the floor holds most of those prunes back;
//! `crates/sim/README.md`, session 12).
//!
//! Two more, also off by default (session 12 of the README, `tree3`): the *early flood*
//! pushes a body to every gossip peer, eager or lazy, while its hop count is at most
//! `flood_push_hops`, seeding the tree in many places at once (the duplicates it causes
//! prune nothing), and *relays* (`relay.rs`) skew the eager graph: a mesh among a share of
//! the nodes, one eager link for the rest.
//!
//! State: `Gossip::lazy` (a subset of the gossip peers, so bounded by them) and
//! `Gossip::graft_wait` (ids waiting for their push, at most `max_pending`).

use std::time::Duration;

use super::{AnnounceEntry, Gossip, GossipMessage, Output, Timer};
use crate::model::{PeerId, TxId};
use crate::time::Instant;

impl Gossip {
    /// Whether a body of `size` bytes goes by eager push, so an announcement of it waits for
    /// the push (neither while the node is busy: `pace.rs`).
    pub(super) fn pushable(&self, size: u64) -> bool {
        self.pushes_on(size, false)
    }

    /// Whether a body we accepted goes on by push. Our own submissions are pushed even when
    /// busy, up to the rate (`pace.rs`): their first hop would pull them from us anyway, so
    /// the push costs no duplicate.
    pub(super) fn pushes_on(&self, size: u64, local: bool) -> bool {
        let rate = self.config.eager_push_max_rate;
        size <= self.config.eager_push_max_size as u64
            && if local {
                self.pace.own_push_room(rate)
            } else {
                !self.pace.busy(rate)
            }
    }

    /// Whether `peer` gets pushes from us (it has not pruned us, nor we it).
    pub(super) fn is_eager(&self, peer: &PeerId) -> bool {
        !self.lazy.contains(peer)
    }

    /// Gossip peers we push to.
    pub(super) fn eager_count(&self) -> usize {
        self.peers.len().saturating_sub(self.lazy.len())
    }

    /// Whether a push of `entry` from `from` is an origin's shortcut: one hop from its origin,
    /// from a gossip peer that is lazy for us, in a network that takes shortcuts.
    pub(super) fn is_shortcut(&self, from: &PeerId, entry: &AnnounceEntry) -> bool {
        self.config.origin_push_peers > 0
            && entry.hops == 1
            && self.peers.binary_search(from).is_ok()
            && !self.is_eager(from)
    }

    /// Whether a push `hops` from its origin (1: the origin's own) goes to every gossip
    /// peer (`flood_push_hops`).
    pub(super) fn floods(&self, hops: u32) -> bool {
        (1..=self.config.flood_push_hops).contains(&hops)
    }

    /// A body `from` pushed (`entry`) was known already: tell it to stop pushing to us. Sent
    /// on every duplicate push, not only the first: a repeat means our earlier prune was
    /// lost. A gossip peer is kept while we push to `eager_min_peers` or fewer (the floor), or
    /// `slow_push_floor` for a copy `slow_push_lag` behind the first. Neither a `shortcut`
    /// nor the tree's copy of what came first by one prunes (module doc), nor a duplicate
    /// where either copy came by the early flood: that race says nothing of the tree.
    pub(super) fn on_duplicate_push(
        &mut self,
        from: &PeerId,
        entry: &AnnounceEntry,
        shortcut: bool,
        now: Instant,
    ) {
        self.stats.duplicate_pushes += 1;
        let (lag, first_hops, by_shortcut) = self
            .dedup
            .get(&entry.id)
            .map(|k| (now.since(k.seen_at), k.hops, k.by_shortcut))
            .unwrap_or_default();
        if shortcut || by_shortcut {
            self.stats.prunes_withheld += u64::from(!shortcut);
            return;
        }
        if self.floods(entry.hops) || self.floods(first_hops) {
            self.stats.flood_duplicates += 1;
            return;
        }
        let ours = self.peers.binary_search(from).is_ok();
        if ours && self.is_eager(from) && self.keeps(from, lag) {
            self.stats.prunes_withheld += 1;
            return;
        }
        self.prune(from);
    }

    /// Whether an eager gossip peer whose duplicate came `lag` behind the first copy stays
    /// eager: while we push to the floor or fewer (with relays, `relay.rs` decides).
    fn keeps(&self, from: &PeerId, lag: Duration) -> bool {
        if self.config.relay_percent > 0 {
            return self.relay_keeps(from, lag);
        }
        self.eager_count() <= self.floor_after(lag)
    }

    /// The eager links a duplicate `lag` behind the first copy does not prune below.
    pub(super) fn floor_after(&self, lag: Duration) -> usize {
        if lag >= self.config.slow_push_lag {
            self.config.slow_push_floor.min(self.config.eager_min_peers)
        } else {
            self.config.eager_min_peers
        }
    }

    pub(super) fn prune(&mut self, from: &PeerId) {
        if self.peers.binary_search(from).is_ok() {
            self.lazy.insert(from.clone());
        }
        self.stats.prunes_sent += 1;
        let to = from.clone();
        self.push(Output::Send {
            to,
            message: GossipMessage::Prune,
        });
    }

    /// `from` pruned us: announce to it from now on. A peer outside our gossip peers is not
    /// remembered (we do not push to it anyway), which keeps `lazy` bounded.
    pub(super) fn on_prune(&mut self, from: &PeerId) {
        self.stats.prunes_received += 1;
        if self.peers.binary_search(from).is_ok() {
            self.lazy.insert(from.clone());
        }
    }

    /// `from` had to pull what we only announced: push to it again.
    pub(super) fn on_graft(&mut self, from: &PeerId) {
        self.stats.grafts_received += 1;
        self.lazy.remove(from);
    }

    /// Peers that left the gossip peers: one that comes back starts eager.
    pub(super) fn forget_tree_peers(&mut self, left: &[PeerId]) {
        for peer in left {
            if self.lazy.remove(peer) {
                self.stats.lazy_forgotten += 1;
            }
        }
    }

    /// Holds the pull of the new pending `id` for `graft_timeout`, waiting for its push;
    /// false (pull at once) when `max_pending` already wait.
    pub(super) fn await_push(&mut self, id: TxId, now: Instant) -> bool {
        if self.graft_wait.len() >= self.config.max_pending {
            return false;
        }
        let due = now.saturating_add(self.config.graft_timeout);
        self.graft_wait.push_back((due, id));
        self.stats.pushes_awaited += 1;
        self.schedule_by(due, Timer::Graft);
        true
    }

    /// Pulls every transaction whose push is overdue, grafting its first announcer.
    pub(super) fn on_graft_timer(&mut self, now: Instant) {
        while let Some(&(due, id)) = self.graft_wait.front() {
            if due > now {
                self.schedule_by(due, Timer::Graft);
                break;
            }
            self.graft_wait.pop_front();
            // None: the push came (or it was fetched otherwise) meanwhile.
            if let Some(announcer) = self.stop_awaiting(&id) {
                self.stats.pushes_missed += 1;
                if let Some(to) = self.graft_target(announcer) {
                    self.graft(to);
                }
            }
        }
    }

    fn graft(&mut self, to: PeerId) {
        self.lazy.remove(&to);
        self.stats.grafts_sent += 1;
        self.push(Output::Send {
            to,
            message: GossipMessage::Graft,
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::test_util::*;
    use super::super::*;

    /// Push on, no floor: the paper's rules alone.
    fn tree() -> GossipConfig {
        GossipConfig {
            eager_push_max_size: 1024,
            eager_push_peers: 16,
            eager_min_peers: 0,
            ..quiet()
        }
    }

    #[test]
    fn every_peer_starts_eager_and_a_duplicate_push_prunes_its_sender() {
        let mut g = node(0, 1..=4, tree());
        g.submit(body(1), None, ms(0)).expect("valid");
        assert_eq!(pushed_to(&drain(&mut g)), vec![id(1), id(2), id(3), id(4)]);
        g.handle_message(&id(1), push_of(2), ms(1));
        assert_eq!(
            delivered(&drain(&mut g)).len(),
            1,
            "the first push is taken"
        );
        g.handle_message(&id(2), push_of(2), ms(2));
        let out = drain(&mut g);
        assert!(delivered(&out).is_empty());
        assert_eq!(sent(&out, GossipMessage::Prune), vec![id(2)]);
        assert_eq!(g.stats().duplicate_pushes, 1);
        g.handle_message(&id(3), GossipMessage::Prune, ms(3));
        g.submit(body(3), None, ms(4)).expect("valid");
        let out = drain(&mut g);
        assert_eq!(pushed_to(&out), vec![id(1), id(4)], "2 and 3 are lazy");
        let announced: Vec<PeerId> = announces(&flush(&mut g, ms(20)))
            .into_iter()
            .map(|(to, _)| to)
            .collect();
        assert!(announced.iter().all(|p| *p == id(2) || *p == id(3)));
        assert!(!announced.is_empty(), "lazy peers hear of it");
    }

    #[test]
    fn an_announcement_waits_for_the_push_then_pulls_and_grafts() {
        let mut g = node(0, 1..=3, tree());
        g.handle_message(&id(2), GossipMessage::Prune, ms(0));
        g.handle_message(&id(2), announce(vec![entry(1, 1)]), ms(1));
        assert!(fetches(&drain(&mut g)).is_empty(), "waiting for the push");
        let due = g.poll_timeout().expect("graft timer");
        assert_eq!(due, ms(81).mono);
        // The push of another transaction comes in time: no pull, no graft.
        g.handle_message(&id(2), announce(vec![entry(2, 1)]), ms(2));
        g.handle_message(&id(1), push_of(2), ms(50));
        drain(&mut g);
        g.handle_timeout(ms(81));
        let out = drain(&mut g);
        assert_eq!(fetches(&out), vec![(id(2), entry(1, 1).id)]);
        assert_eq!(sent(&out, GossipMessage::Graft), vec![id(2)]);
        assert_eq!(g.stats().pushes_missed, 1);
        g.handle_timeout(ms(82));
        assert!(fetches(&drain(&mut g)).is_empty(), "tx 2 came by push");
        g.handle_fetched(&id(2), entry(1, 1).id, Ok(body(1)), ms(90));
        drain(&mut g);
        g.submit(body(3), None, ms(100)).expect("valid");
        assert!(pushed_to(&drain(&mut g)).contains(&id(2)), "grafted: eager");
    }

    /// An eager peer announces instead of pushing only when it will not push (busy, or its
    /// link to us was full): waiting for its push would only delay the pull.
    #[test]
    fn an_announcement_from_an_eager_peer_is_pulled_at_once_without_a_graft() {
        let mut g = node(0, 1..=3, tree());
        g.handle_message(&id(1), announce(vec![entry(1, 1)]), ms(1));
        let out = drain(&mut g);
        assert_eq!(
            fetches(&out),
            vec![(id(1), entry(1, 1).id)],
            "pulled at once"
        );
        assert!(sent(&out, GossipMessage::Graft).is_empty(), "eager already");
        assert_eq!(g.stats().pushes_awaited, 0);
        // From a peer outside our gossip peers it still waits (it may be another's lazy peer).
        g.handle_message(&id(7), announce(vec![entry(2, 1)]), ms(2));
        assert!(fetches(&drain(&mut g)).is_empty(), "waiting for a push");
        assert_eq!(g.stats().pushes_awaited, 1);
    }

    /// Our own submissions go to `origin_push_peers` lazy peers besides; relayed ones do not.
    #[test]
    fn the_origin_pushes_its_own_to_lazy_peers_as_a_shortcut() {
        let config = GossipConfig {
            origin_push_peers: 1,
            ..tree()
        };
        let mut g = node(0, 1..=4, config);
        g.handle_message(&id(3), GossipMessage::Prune, ms(0));
        g.handle_message(&id(4), GossipMessage::Prune, ms(0));
        g.submit(body(1), None, ms(1)).expect("valid");
        let to = pushed_to(&drain(&mut g));
        assert_eq!(to.len(), 3, "two eager and one shortcut: {to:?}");
        assert!(to.contains(&id(1)) && to.contains(&id(2)));
        assert_eq!(g.stats().shortcuts_sent, 1);
        g.handle_message(&id(1), push_of(2), ms(2));
        assert_eq!(
            pushed_to(&drain(&mut g)),
            vec![id(2)],
            "relayed: the tree only"
        );
    }

    /// A busy node pushes its own to its eager peers only.
    #[test]
    fn no_shortcut_while_busy() {
        let config = GossipConfig {
            origin_push_peers: 1,
            // Two per bucket.
            eager_push_max_rate: 8,
            ..tree()
        };
        let mut g = node(0, 1..=3, config);
        g.handle_message(&id(3), GossipMessage::Prune, ms(0));
        for n in 1..=3 {
            g.handle_message(&id(1), push_of(n), ms(n as u64));
        }
        drain(&mut g);
        g.submit(body(9), None, ms(4)).expect("valid");
        assert_eq!(pushed_to(&drain(&mut g)), vec![id(1), id(2)]);
        assert_eq!(g.stats().shortcuts_sent, 0);
    }

    /// A shortcut that comes first spares the tree's copy behind it, and one that comes
    /// second prunes nothing either.
    #[test]
    fn shortcut_copies_prune_nothing_either_way() {
        let config = GossipConfig {
            origin_push_peers: 1,
            ..tree()
        };
        let mut g = node(0, 1..=3, config);
        g.handle_message(&id(3), GossipMessage::Prune, ms(0));
        // Entry 1 comes from its origin, lazy for us, then from the tree.
        g.handle_message(&id(3), push_of(1), ms(1));
        assert_eq!(delivered(&drain(&mut g)).len(), 1);
        let relayed = GossipMessage::Push {
            entry: entry(1, 2),
            body: body(1),
        };
        g.handle_message(&id(1), relayed, ms(2));
        assert!(sent(&drain(&mut g), GossipMessage::Prune).is_empty());
        // Entry 2 comes from the tree first, then by shortcut.
        let relayed = GossipMessage::Push {
            entry: entry(2, 2),
            body: body(2),
        };
        g.handle_message(&id(1), relayed, ms(3));
        drain(&mut g);
        g.handle_message(&id(3), push_of(2), ms(4));
        assert!(sent(&drain(&mut g), GossipMessage::Prune).is_empty());
        assert_eq!(g.stats().shortcuts_received, 2);
        assert_eq!(g.stats().duplicate_pushes, 2);
        // Without shortcuts in the network the same duplicate prunes, as before.
        let mut plain = node(0, 1..=3, tree());
        plain.handle_message(&id(3), GossipMessage::Prune, ms(0));
        plain.handle_message(&id(1), push_of(5), ms(1));
        plain.handle_message(&id(3), push_of(5), ms(2));
        assert_eq!(sent(&drain(&mut plain), GossipMessage::Prune), vec![id(3)]);
    }

    #[test]
    fn a_graft_makes_a_pruned_peer_eager_and_a_returning_peer_starts_eager() {
        let mut g = node(0, 1..=2, tree());
        g.handle_message(&id(1), GossipMessage::Prune, ms(0));
        g.handle_message(&id(2), GossipMessage::Prune, ms(0));
        g.submit(body(1), None, ms(1)).expect("valid");
        assert!(pushed_to(&drain(&mut g)).is_empty());
        g.handle_message(&id(1), GossipMessage::Graft, ms(2));
        g.set_peers(&[id(1)], ms(3));
        g.set_peers(&[id(1), id(2)], ms(4));
        g.submit(body(2), None, ms(5)).expect("valid");
        assert_eq!(pushed_to(&drain(&mut g)), vec![id(1), id(2)]);
        assert_eq!(g.stats().grafts_received, 1);
    }

    #[test]
    fn duplicate_pushes_do_not_prune_below_the_eager_floor() {
        let config = GossipConfig {
            eager_min_peers: 2,
            ..tree()
        };
        let mut g = node(0, 1..=3, config);
        g.handle_message(&id(1), push_of(1), ms(0));
        g.handle_message(&id(2), push_of(1), ms(1));
        assert_eq!(sent(&drain(&mut g), GossipMessage::Prune), vec![id(2)]);
        g.handle_message(&id(3), push_of(1), ms(2));
        let out = drain(&mut g);
        assert!(sent(&out, GossipMessage::Prune).is_empty(), "2 eager left");
        assert_eq!(g.stats().prunes_withheld, 1);
        // Not one of our gossip peers: pruned whatever our floor.
        g.handle_message(&id(7), push_of(1), ms(3));
        assert_eq!(sent(&drain(&mut g), GossipMessage::Prune), vec![id(7)]);
        // A pruned peer pushing again (our prune was lost) is pruned again.
        g.handle_message(&id(2), push_of(1), ms(4));
        assert_eq!(sent(&drain(&mut g), GossipMessage::Prune), vec![id(2)]);
        g.submit(body(9), None, ms(5)).expect("valid");
        assert_eq!(pushed_to(&drain(&mut g)), vec![id(1), id(3)]);
    }

    #[test]
    fn bodies_over_the_threshold_are_announced_and_pulled_at_once() {
        let config = GossipConfig {
            eager_push_max_size: 4,
            ..tree()
        };
        let mut g = node(0, 1..=3, config);
        g.submit(body(1), None, ms(0)).expect("valid");
        assert!(pushed_to(&drain(&mut g)).is_empty(), "too large to push");
        g.handle_message(&id(1), announce(vec![entry(2, 1)]), ms(1));
        assert_eq!(fetches(&drain(&mut g)).len(), 1, "no wait for a push");
        assert_eq!(g.stats().pushes_awaited, 0);
    }

    #[test]
    fn waits_for_pushes_and_lazy_peers_are_bounded() {
        let config = GossipConfig {
            max_pending: 2,
            ..tree()
        };
        let mut g = node(0, [1], config);
        g.handle_message(&id(1), GossipMessage::Prune, ms(0));
        let entries = (0..3).map(|n| entry(n, 1)).collect();
        g.handle_message(&id(1), announce(entries), ms(0));
        assert_eq!(g.graft_wait.len(), 2);
        assert_eq!(g.stats().dropped_pending_full, 1);
        // A prune from a peer outside the gossip peers is counted, not remembered.
        g.handle_message(&id(7), GossipMessage::Prune, ms(1));
        assert_eq!(g.lazy.len(), 1, "only 1, pruned above");
        assert_eq!(g.stats().prunes_received, 2);
    }

    #[test]
    fn a_slow_duplicate_push_is_pruned_under_the_floor_down_to_the_slow_floor() {
        let config = GossipConfig {
            eager_min_peers: 16,
            slow_push_lag: Duration::from_millis(100),
            slow_push_floor: 2,
            ..tree()
        };
        let mut g = node(0, 1..=4, config);
        g.handle_message(&id(1), push_of(1), ms(0));
        drain(&mut g);
        // Close behind the first copy: kept, whatever the floor.
        g.handle_message(&id(2), push_of(1), ms(99));
        assert!(sent(&drain(&mut g), GossipMessage::Prune).is_empty());
        assert_eq!(g.stats().prunes_withheld, 1);
        // 100 ms or more behind: pruned while more than 2 are eager.
        g.handle_message(&id(3), push_of(1), ms(100));
        assert_eq!(sent(&drain(&mut g), GossipMessage::Prune), vec![id(3)]);
        g.handle_message(&id(4), push_of(1), ms(300));
        assert_eq!(sent(&drain(&mut g), GossipMessage::Prune), vec![id(4)]);
        g.handle_message(&id(2), push_of(1), ms(400));
        assert!(
            sent(&drain(&mut g), GossipMessage::Prune).is_empty(),
            "2 eager left: the slow floor"
        );
        g.submit(body(9), None, ms(500)).expect("valid");
        assert_eq!(pushed_to(&drain(&mut g)), vec![id(1), id(2)]);
    }

    #[test]
    fn the_slow_floor_never_lifts_the_floor() {
        let config = GossipConfig {
            eager_min_peers: 1,
            slow_push_lag: Duration::ZERO,
            slow_push_floor: 3,
            ..tree()
        };
        let mut g = node(0, 1..=3, config);
        g.handle_message(&id(1), push_of(1), ms(0));
        g.handle_message(&id(2), push_of(1), ms(1));
        assert_eq!(sent(&drain(&mut g), GossipMessage::Prune), vec![id(2)]);
    }

    #[test]
    fn a_pushed_transaction_is_announced_to_at_most_pushed_announce_peers() {
        let config = GossipConfig {
            fanout: FanoutMode::Fixed(6),
            pushed_announce_peers: 1,
            ..tree()
        };
        let mut g = node(0, 1..=8, config);
        for n in 1..=6 {
            g.handle_message(&id(n), GossipMessage::Prune, ms(0));
        }
        g.submit(body(1), None, ms(1)).expect("valid");
        assert_eq!(pushed_to(&drain(&mut g)), vec![id(7), id(8)]);
        let announced = announces(&flush(&mut g, ms(1)));
        assert_eq!(announced.len(), 1, "not fanout 6 - 2 = 4: {announced:?}");
        // Nothing pushed (all lazy): the whole fanout hears of it as before.
        g.handle_message(&id(7), GossipMessage::Prune, ms(2));
        g.handle_message(&id(8), GossipMessage::Prune, ms(2));
        g.submit(body(2), None, ms(20)).expect("valid");
        assert!(pushed_to(&drain(&mut g)).is_empty());
        assert_eq!(announces(&flush(&mut g, ms(20))).len(), 6);
    }

    #[test]
    fn lazy_announcements_of_pushed_transactions_wait_or_ride_along() {
        let config = GossipConfig {
            fanout: FanoutMode::Fixed(2),
            lazy_flush_interval: Duration::from_millis(500),
            ..tree()
        };
        let mut g = node(0, 1..=2, config);
        g.handle_message(&id(2), GossipMessage::Prune, ms(0));
        g.submit(body(1), None, ms(1)).expect("valid");
        assert_eq!(pushed_to(&drain(&mut g)), vec![id(1)]);
        assert!(announces(&flush(&mut g, ms(1))).is_empty(), "held");
        assert_eq!(g.poll_timeout(), Some(ms(501).mono));
        g.submit(body(2), None, ms(100)).expect("valid");
        drain(&mut g);
        // Peer 2 announces tx 2 to us: it holds it, so our entry is dropped.
        g.handle_message(&id(2), announce(vec![entry(2, 1)]), ms(200));
        drain(&mut g);
        let sent = announces(&flush(&mut g, ms(501)));
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].0, id(2));
        assert_eq!(sent[0].1.len(), 1, "tx 1 only: {sent:?}");
        // A transaction too large to push goes in an ordinary batch, and the lazy entry
        // waiting for the same peer rides along in its message.
        g.submit(body(3), None, ms(600)).expect("valid");
        assert_eq!(pushed_to(&drain(&mut g)), vec![id(1)]);
        g.submit(vec![7; 2048], None, ms(601)).expect("valid");
        assert!(pushed_to(&drain(&mut g)).is_empty(), "too large to push");
        let mut sent = announces(&flush(&mut g, ms(601)));
        sent.sort_by(|a, b| a.0.cmp(&b.0));
        let sizes: Vec<(PeerId, usize)> =
            sent.iter().map(|(to, e)| (to.clone(), e.len())).collect();
        assert_eq!(sizes, vec![(id(1), 1), (id(2), 2)]);
        assert!(flush(&mut g, ms(1101)).is_empty(), "nothing left waiting");
    }

    #[test]
    fn an_early_push_goes_to_every_peer_and_its_duplicates_prune_nothing() {
        let config = GossipConfig {
            flood_push_hops: 2,
            ..tree()
        };
        let mut g = node(0, 1..=4, config);
        g.handle_message(&id(3), GossipMessage::Prune, ms(0));
        g.handle_message(&id(4), GossipMessage::Prune, ms(0));
        g.submit(body(1), None, ms(1)).expect("valid");
        let all = vec![id(1), id(2), id(3), id(4)];
        assert_eq!(pushed_to(&drain(&mut g)), all, "hop 1: eager and lazy");
        // Hop 2 in, so hop 3 out: the tree only.
        g.handle_message(&id(1), push_at(2, 2), ms(2));
        assert_eq!(pushed_to(&drain(&mut g)), vec![id(2)]);
        // A tree push behind a copy that came by the flood prunes nothing...
        g.handle_message(&id(2), push_at(2, 5), ms(3));
        assert!(sent(&drain(&mut g), GossipMessage::Prune).is_empty());
        // ...nor does a flood push behind a tree push.
        g.handle_message(&id(1), push_at(3, 3), ms(4));
        g.handle_message(&id(2), push_at(3, 1), ms(5));
        assert!(sent(&drain(&mut g), GossipMessage::Prune).is_empty());
        assert_eq!(g.stats().flood_duplicates, 2);
        // Behind a tree push, a tree push's duplicate prunes as ever.
        g.handle_message(&id(1), push_at(4, 3), ms(6));
        g.handle_message(&id(2), push_at(4, 4), ms(7));
        assert_eq!(sent(&drain(&mut g), GossipMessage::Prune), vec![id(2)]);
    }

    #[test]
    fn without_the_early_flood_a_submission_goes_to_the_eager_peers_only() {
        let mut g = node(0, 1..=3, tree());
        g.handle_message(&id(3), GossipMessage::Prune, ms(0));
        g.submit(body(1), None, ms(1)).expect("valid");
        assert_eq!(pushed_to(&drain(&mut g)), vec![id(1), id(2)]);
        // Hop-1 duplicates prune when the flood is off.
        g.handle_message(&id(1), push_of(2), ms(2));
        g.handle_message(&id(2), push_of(2), ms(3));
        assert_eq!(sent(&drain(&mut g), GossipMessage::Prune), vec![id(2)]);
        assert_eq!(g.stats().flood_duplicates, 0);
    }

    #[test]
    fn lazy_announcements_go_to_a_peer_with_some_waiting_when_asked() {
        let config = GossipConfig {
            fanout: FanoutMode::Fixed(6),
            pushed_announce_peers: 1,
            lazy_flush_interval: Duration::from_millis(500),
            lazy_same_peer: true,
            ..tree()
        };
        let mut g = node(0, 1..=6, config);
        for n in 2..=6 {
            g.handle_message(&id(n), GossipMessage::Prune, ms(0));
        }
        for n in 1..=4 {
            g.submit(body(n), None, ms(n as u64)).expect("valid");
            assert_eq!(pushed_to(&drain(&mut g)), vec![id(1)]);
        }
        let sent = announces(&flush(&mut g, ms(501)));
        assert_eq!(sent.len(), 1, "one lazy peer, one message: {sent:?}");
        assert_eq!(sent[0].1.len(), 4);
    }
}
