//! Announcing: fanout, hop limit, per-peer batching and the eager push; and reading the
//! announcements and pushes peers send us.
//!
//! A node announces a transaction once, when it accepts it, to `fanout` active peers that are
//! not known to hold it already (every peer that announced it to us, up to
//! [`MAX_HEARD`](super::fetch::MAX_HEARD), and the peer it came from). A small body is pushed
//! at once to the eager ones among them (`tree.rs`), which count against the fanout. Entries
//! wait in a per-peer batch for at most `flush_interval`; a full batch (`max_batch`) goes at
//! once, and an entry still batched for a peer that announces the same transaction to us is
//! taken out. The announcements of a pushed transaction to lazy peers may wait longer, up to
//! `lazy_flush_interval`, in a second per-peer batch that rides along with the first.

use rand::seq::SliceRandom;

use super::{
    AnnounceEntry, Arrival, Conduct, FanoutMode, Gossip, GossipEvent, GossipMessage,
    MAX_ENTRIES_PER_MESSAGE, MAX_REGISTER_ID_LEN, Origin, Output, Timer, Way,
};
use crate::model::{PeerId, TxHash, TxId};
use crate::time::Instant;

impl Gossip {
    /// Sends `entry` on to the active peers not in `exclude`: with `push_body`, the body at
    /// once to up to `eager_push_peers` eager ones (and, when `local`, to up to
    /// `origin_push_peers` lazy ones); the announcement to as many others as make up `fanout`
    /// with them.
    pub(super) fn forward(
        &mut self,
        entry: AnnounceEntry,
        fanout: FanoutMode,
        (push_body, local): (Option<Vec<u8>>, bool),
        exclude: &[PeerId],
        now: Instant,
    ) {
        let count = fanout.count(self.peers.len());
        let mut targets: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|p| !exclude.contains(p))
            .cloned()
            .collect();
        targets.shuffle(&mut self.rng);
        let mut pushed = 0;
        let pushable = push_body.is_some();
        if let Some(body) = push_body {
            let flood = self.floods(entry.hops);
            let mut eager: Vec<PeerId> = targets
                .iter()
                .filter(|p| flood || self.is_eager(p))
                .take(self.config.eager_push_peers)
                .cloned()
                .collect();
            // No shortcut while busy: it is for latency at light load (`tree.rs`); none with
            // the early flood, which has taken the lazy peers already.
            if local && !flood && !self.pace.busy(self.config.eager_push_max_rate) {
                let lazy = targets.iter().filter(|p| !self.is_eager(p));
                let shortcuts: Vec<PeerId> =
                    lazy.take(self.config.origin_push_peers).cloned().collect();
                self.stats.shortcuts_sent += shortcuts.len() as u64;
                eager.extend(shortcuts);
            }
            targets.retain(|p| !eager.contains(p));
            pushed = eager.len();
            for to in eager {
                self.stats.pushes_sent += 1;
                let message = GossipMessage::Push {
                    entry: entry.clone(),
                    body: body.clone(),
                };
                self.push(Output::Send { to, message });
            }
        }
        let later = pushed > 0 && !self.config.lazy_flush_interval.is_zero();
        if pushable && self.config.relay_percent > 0 {
            // With relays, a pushed transaction's announcements go where they repair.
            self.relay_announce_targets(&mut targets, local);
        } else {
            let mut lazy = count.saturating_sub(pushed);
            if pushed > 0 {
                lazy = lazy.min(self.config.pushed_announce_peers);
            }
            if later && self.config.lazy_same_peer {
                // Stable: the shuffled order stands among those with a batch and those without.
                targets.sort_by_key(|p| !self.lazy_outbox.contains_key(p));
            }
            targets.truncate(lazy);
        }
        for to in targets {
            if later {
                self.enqueue_lazy(to, entry.clone(), now);
            } else {
                self.enqueue(to, entry.clone(), now);
            }
        }
    }

    /// Adds the announcement of a pushed transaction to `to`'s lazy batch: it goes with
    /// `to`'s next ordinary batch, or at `lazy_due` at the latest, or at once when full.
    fn enqueue_lazy(&mut self, to: PeerId, entry: AnnounceEntry, now: Instant) {
        let batch = self.lazy_outbox.entry(to.clone()).or_default();
        batch.push(entry);
        if batch.len() >= self.config.max_batch.max(1) {
            self.flush_peer(&to);
            return;
        }
        let due = *self
            .lazy_due
            .get_or_insert(now.saturating_add(self.config.lazy_flush_interval));
        self.schedule_by(due, Timer::Flush);
    }

    /// Adds an entry to `to`'s batch; sends the batch when full, else arms the flush.
    fn enqueue(&mut self, to: PeerId, entry: AnnounceEntry, now: Instant) {
        let batch = self.outbox.entry(to.clone()).or_default();
        batch.push(entry);
        if batch.len() >= self.config.max_batch.max(1) {
            self.flush_peer(&to);
        } else {
            self.schedule_by(self.flush_due(now), Timer::Flush);
        }
    }

    /// When the outbox may go out: at once after a quiet `flush_interval` (a lone transaction
    /// waits for nothing at each hop), else `flush_interval` after the last flush, so a burst
    /// is still sent in batches, at most one flush per interval.
    fn flush_due(&self, now: Instant) -> Instant {
        self.last_flush
            .map_or(now, |last| last.saturating_add(self.config.flush_interval))
            .max(now)
    }

    pub(super) fn flush_all(&mut self, now: Instant) {
        self.last_flush = Some(now);
        let peers: Vec<PeerId> = self.outbox.keys().cloned().collect();
        for peer in peers {
            self.flush_peer(&peer);
        }
        match self.lazy_due {
            Some(due) if due <= now => {
                self.lazy_due = None;
                let peers: Vec<PeerId> = self.lazy_outbox.keys().cloned().collect();
                for peer in peers {
                    self.flush_peer(&peer);
                }
            }
            Some(due) => self.schedule_by(due, Timer::Flush),
            None => {}
        }
    }

    /// Sends `peer`'s batch, with its lazy batch riding along (in one message if both
    /// fit in `max_batch`).
    pub(super) fn flush_peer(&mut self, peer: &PeerId) {
        let mut entries = self.outbox.remove(peer).unwrap_or_default();
        let lazy = self.lazy_outbox.remove(peer).unwrap_or_default();
        if entries.len() + lazy.len() <= self.config.max_batch.max(1) {
            entries.extend(lazy);
        } else {
            self.send_announce(peer.clone(), lazy);
        }
        if !entries.is_empty() {
            self.send_announce(peer.clone(), entries);
        }
    }

    pub(super) fn send_announce(&mut self, to: PeerId, entries: Vec<AnnounceEntry>) {
        self.stats.announce_messages_sent += 1;
        self.stats.announcements_sent += entries.len() as u64;
        let message = GossipMessage::Announce { entries };
        self.push(Output::Send { to, message });
    }

    /// Transactions `from` says it holds: unknown ones become pending with `from` as an announcer.
    /// `repair` marks entries learned through anti-entropy.
    pub(super) fn on_announce(
        &mut self,
        from: &PeerId,
        mut entries: Vec<AnnounceEntry>,
        repair: bool,
        now: Instant,
    ) {
        let mut malformed = entries.len() > MAX_ENTRIES_PER_MESSAGE;
        if malformed {
            self.stats.dropped_over_message_limit +=
                (entries.len() - MAX_ENTRIES_PER_MESSAGE) as u64;
            entries.truncate(MAX_ENTRIES_PER_MESSAGE);
        }
        for entry in entries {
            self.stats.announcements_received += 1;
            if !self.entry_is_valid(&entry) {
                self.stats.refused_bad_entries += 1;
                // Larger than we take is a difference of configuration, not an offence.
                malformed |= entry.size <= self.config.max_transaction_size;
                continue;
            }
            if self.dedup.contains(&entry.id, &mut self.stats) {
                self.stats.duplicate_announcements += 1;
                // It holds the transaction: our announcement to it, if still batched, is moot.
                if let Some(batch) = self.outbox.get_mut(from) {
                    batch.retain(|e| e.id != entry.id);
                }
                if let Some(batch) = self.lazy_outbox.get_mut(from) {
                    batch.retain(|e| e.id != entry.id);
                }
                continue;
            }
            self.note_announcer(from, entry, repair, now);
        }
        if malformed {
            self.note_conduct(from, Conduct::Malformed);
        }
    }

    fn entry_is_valid(&self, entry: &AnnounceEntry) -> bool {
        entry.size > 0
            && entry.size <= self.config.max_transaction_size
            && entry
                .register_id
                .as_ref()
                .is_none_or(|r| r.len() <= MAX_REGISTER_ID_LEN)
    }

    /// An eagerly pushed body: taken if new and its hash checks out (its id, and the whole
    /// hash if the entry names one).
    pub(super) fn on_push(
        &mut self,
        from: &PeerId,
        entry: AnnounceEntry,
        body: Vec<u8>,
        now: Instant,
    ) {
        self.stats.pushes_received += 1;
        if body.len() as u64 > self.config.max_transaction_size {
            self.stats.refused_oversized_bodies += 1;
            return;
        }
        if body.is_empty() || !self.entry_is_valid(&entry) {
            self.stats.refused_bad_entries += 1;
            self.note_conduct(from, Conduct::Malformed);
            return;
        }
        // Checked before the duplicate test: a wrong body is a lie even when the true one came
        // first (with push on, liars are rarely pulled from, so a push is where they are caught).
        let hash = TxHash::of(&body);
        if hash.id() != entry.id || entry.hash.is_some_and(|named| named != hash) {
            self.bad_body(from, entry.id);
            return;
        }
        self.note_relay_push(from);
        let shortcut = self.is_shortcut(from, &entry);
        if shortcut {
            self.stats.shortcuts_received += 1;
        }
        if self.dedup.contains(&entry.id, &mut self.stats) {
            self.stats.duplicate_bodies += 1;
            self.on_duplicate_push(from, &entry, shortcut, now);
            return;
        }
        let (id, origin) = (entry.id, Origin::Peer(from.clone()));
        let arrival = Arrival {
            way: Way::Pushed,
            hops: entry.hops,
        };
        self.accept(hash, body, entry.register_id, origin, arrival, now);
        if shortcut {
            self.dedup.mark_shortcut(&id);
        }
    }

    pub(super) fn bad_body(&mut self, from: &PeerId, id: TxId) {
        self.stats.bad_bodies += 1;
        self.note_conduct(from, Conduct::BadBody);
        let from = from.clone();
        self.emit(GossipEvent::BadBody { from, id });
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::super::test_util::*;
    use super::super::*;

    /// Node 0 fetched entry `n` (announced by node 9 with `hops`) and accepted it.
    fn receive(g: &mut Gossip, n: usize, hops: u32) -> Vec<Output> {
        g.handle_message(&id(9), announce(vec![entry(n, hops)]), ms(1));
        let out = drain(g);
        assert_eq!(fetches(&out), vec![(id(9), entry(n, hops).id)]);
        g.handle_fetched(&id(9), entry(n, hops).id, Ok(body(n)), ms(2));
        drain(g)
    }

    #[test]
    fn submissions_go_to_fanout_peers_with_one_hop() {
        let mut g = node(0, 1..=8, quiet());
        g.submit(body(1), None, ms(0)).expect("valid");
        let out = drain(&mut g);
        assert_eq!(stored(&out).len(), 1);
        assert!(announces(&out).is_empty(), "held for the flush");
        let sent = announces(&flush(&mut g, ms(10)));
        assert_eq!(sent.len(), 3, "fanout 3");
        let targets: BTreeSet<_> = sent.iter().map(|(to, _)| to.clone()).collect();
        assert_eq!(targets.len(), 3);
        assert!(sent.iter().all(|(_, e)| e.len() == 1 && e[0].hops == 1));
        assert_eq!(g.stats().announcements_sent, 3);
    }

    #[test]
    fn forwarding_adds_a_hop_and_stops_or_floods_at_max_hops() {
        let stop = GossipConfig {
            flood_past_max_hops: false,
            ..quiet()
        };
        let mut g = node(0, 1..=9, stop);
        receive(&mut g, 1, 2);
        let sent = announces(&flush(&mut g, ms(20)));
        assert_eq!(sent.len(), 3);
        assert!(sent.iter().all(|(to, e)| *to != id(9) && e[0].hops == 3));
        receive(&mut g, 2, 3);
        assert!(flush(&mut g, ms(40)).is_empty(), "max_hops reached");

        let flood = GossipConfig {
            flood_fanout: FanoutMode::All,
            ..quiet()
        };
        let mut g = node(0, 1..=9, flood);
        receive(&mut g, 2, 3);
        let sent = announces(&flush(&mut g, ms(40)));
        assert_eq!(
            sent.len(),
            8,
            "past max_hops: every active peer but the announcer"
        );
        assert!(sent.iter().all(|(to, e)| *to != id(9) && e[0].hops == 4));

        let mut g = node(0, 1..=9, quiet());
        receive(&mut g, 2, 3);
        let sent = announces(&flush(&mut g, ms(40)));
        assert_eq!(
            sent.len(),
            6,
            "the default: on past max_hops, to flood_fanout peers"
        );
        assert!(sent.iter().all(|(to, e)| *to != id(9) && e[0].hops == 4));
    }

    #[test]
    fn fanout_modes_pick_sqrt_or_all_and_skip_the_announcer() {
        let config = GossipConfig {
            fanout: FanoutMode::All,
            ..quiet()
        };
        let mut g = node(0, 1..=9, config);
        receive(&mut g, 1, 1);
        assert_eq!(announces(&flush(&mut g, ms(20))).len(), 8, "all but node 9");
        let config = GossipConfig {
            fanout: FanoutMode::Sqrt,
            ..quiet()
        };
        let mut g = node(0, 1..=16, config);
        g.submit(body(1), None, ms(0)).expect("valid");
        assert_eq!(announces(&flush(&mut g, ms(10))).len(), 4);
    }

    #[test]
    fn submissions_within_the_flush_interval_make_one_announce_per_peer() {
        let mut g = node(0, 1..=8, quiet());
        let mut deadlines = BTreeSet::new();
        for n in 0..50 {
            g.submit(body(n), None, ms(n as u64 / 10)).expect("valid");
            let out = drain(&mut g);
            assert!(announces(&out).is_empty());
            deadlines.extend(g.poll_timeout());
        }
        assert_eq!(deadlines.len(), 1, "one flush armed for the burst");
        let sent = announces(&flush(&mut g, ms(10)));
        let targets: BTreeSet<_> = sent.iter().map(|(to, _)| to.clone()).collect();
        assert_eq!(targets.len(), sent.len(), "one message per peer");
        let entries: usize = sent.iter().map(|(_, e)| e.len()).sum();
        assert_eq!(entries, 150, "50 txs x fanout 3");
        assert_eq!(g.stats().announce_messages_sent, sent.len() as u64);
    }

    #[test]
    fn a_lone_announcement_goes_at_once_and_a_burst_waits_out_the_interval() {
        let mut g = node(0, [1], quiet());
        g.submit(body(1), None, ms(100)).expect("valid");
        drain(&mut g);
        assert_eq!(g.poll_timeout(), Some(ms(100).mono), "after a quiet spell");
        assert_eq!(announces(&flush(&mut g, ms(100))).len(), 1);
        g.submit(body(2), None, ms(103)).expect("valid");
        g.submit(body(3), None, ms(105)).expect("valid");
        drain(&mut g);
        assert_eq!(
            g.poll_timeout(),
            Some(ms(110).mono),
            "an interval after the last flush"
        );
        assert!(flush(&mut g, ms(105)).is_empty(), "not due before");
        let sent = announces(&flush(&mut g, ms(110)));
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].1.len(), 2, "the burst in one batch");
        g.submit(body(4), None, ms(130)).expect("valid");
        drain(&mut g);
        assert_eq!(g.poll_timeout(), Some(ms(130).mono), "quiet again");
    }

    #[test]
    fn a_full_batch_goes_at_once() {
        let config = GossipConfig {
            fanout: FanoutMode::All,
            max_batch: 4,
            ..quiet()
        };
        let mut g = node(0, [1], config);
        let mut sent = Vec::new();
        for n in 0..10 {
            g.submit(body(n), None, ms(0)).expect("valid");
            sent.extend(announces(&drain(&mut g)));
        }
        assert_eq!(
            sent.iter().map(|(_, e)| e.len()).collect::<Vec<_>>(),
            [4, 4]
        );
        let rest = announces(&flush(&mut g, ms(10)));
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].1.len(), 2);
    }

    #[test]
    fn known_hashes_are_neither_fetched_nor_delivered_again() {
        let mut g = node(0, 1..=8, quiet());
        let first = receive(&mut g, 1, 1);
        assert_eq!(delivered(&first).len(), 1);
        g.handle_message(&id(3), announce(vec![entry(1, 1)]), ms(5));
        let again = g.submit(body(1), None, ms(6)).expect("valid");
        assert!(!again.new);
        let out = drain(&mut g);
        assert!(fetches(&out).is_empty() && delivered(&out).is_empty());
        assert_eq!(g.stats().duplicate_announcements, 1);
    }

    #[test]
    fn eager_push_sends_small_bodies_and_checks_what_it_receives() {
        let config = GossipConfig {
            eager_push_max_size: 1024,
            eager_push_peers: 1,
            ..quiet()
        };
        let mut g = node(0, 1..=8, config.clone());
        g.submit(body(1), None, ms(0)).expect("valid");
        let pushes: Vec<_> = sends(&drain(&mut g))
            .into_iter()
            .filter(|(_, m)| matches!(m, GossipMessage::Push { .. }))
            .collect();
        assert_eq!(pushes.len(), 1, "pushed at once");
        assert_eq!(announces(&flush(&mut g, ms(10))).len(), 2, "rest announced");

        let mut r = node(5, [0, 6], config);
        let (_, push) = pushes[0].clone();
        r.handle_message(&id(0), push.clone(), ms(20));
        assert_eq!(delivered(&drain(&mut r)).len(), 1);
        r.handle_message(&id(0), push, ms(21));
        assert_eq!(r.stats().duplicate_bodies, 1);
        let forged = GossipMessage::Push {
            entry: entry(2, 1),
            body: b"not the body".to_vec(),
        };
        r.handle_message(&id(6), forged, ms(22));
        let out = drain(&mut r);
        assert!(delivered(&out).is_empty());
        assert_eq!(r.stats().bad_bodies, 1);
        assert!(matches!(&events(&out)[..], [GossipEvent::BadBody { from, .. }] if *from == id(6)));
        // The right body for the id, pushed under a whole hash that is not its own.
        let mut wrong = *TxHash::of(&body(3)).as_bytes();
        wrong[31] ^= 1;
        let misnamed = GossipMessage::Push {
            entry: AnnounceEntry {
                hash: Some(TxHash::from_bytes(wrong)),
                ..entry(3, 1)
            },
            body: body(3),
        };
        r.handle_message(&id(6), misnamed, ms(23));
        assert!(delivered(&drain(&mut r)).is_empty());
        assert_eq!(r.stats().bad_bodies, 2);
        // A wrong body under the id of a transaction already held is a lie all the same.
        let (_, GossipMessage::Push { entry: known, .. }) = pushes[0].clone() else {
            unreachable!("filtered to pushes")
        };
        let lie = GossipMessage::Push {
            entry: known,
            body: b"not the body either".to_vec(),
        };
        r.handle_message(&id(6), lie, ms(24));
        assert_eq!(r.stats().bad_bodies, 3);
        assert_eq!(r.stats().duplicate_bodies, 1, "not taken for a duplicate");
    }

    #[test]
    fn bad_entries_are_refused_and_oversized_messages_cut() {
        let mut g = node(0, 1..=3, quiet());
        let mut zero = entry(1, 1);
        zero.size = 0;
        let mut huge = entry(2, 1);
        huge.size = g.config().max_transaction_size + 1;
        let mut long_reg = entry(3, 1);
        long_reg.register_id = Some("r".repeat(MAX_REGISTER_ID_LEN + 1));
        g.handle_message(&id(1), announce(vec![zero, huge, long_reg]), ms(0));
        assert!(fetches(&drain(&mut g)).is_empty());
        assert_eq!(g.stats().refused_bad_entries, 3);
        let many = (0..MAX_ENTRIES_PER_MESSAGE + 10)
            .map(|n| entry(n, 1))
            .collect();
        g.handle_message(&id(1), announce(many), ms(1));
        assert_eq!(g.stats().dropped_over_message_limit, 10);
        assert_eq!(g.pending_count(), MAX_ENTRIES_PER_MESSAGE);
    }

    #[test]
    fn every_peer_that_announced_a_hash_is_spared_its_announcement() {
        let config = GossipConfig {
            fanout: FanoutMode::All,
            max_announcers: 2,
            ..quiet()
        };
        let mut g = node(0, 1..=6, config);
        let e = entry(1, 5);
        for peer in 1..=5 {
            g.handle_message(&id(peer), announce(vec![e.clone()]), ms(peer as u64));
        }
        drain(&mut g);
        assert_eq!(
            g.stats().dropped_announcers_full,
            3,
            "only two are fetched from"
        );
        g.handle_fetched(&id(1), e.id, Ok(body(1)), ms(10));
        g.handle_timer(Timer::Flush, ms(100));
        let targets: Vec<PeerId> = announces(&drain(&mut g))
            .into_iter()
            .map(|(to, _)| to)
            .collect();
        assert_eq!(targets, vec![id(6)], "peers 1 to 5 hold it already");
    }

    #[test]
    fn a_batched_announcement_is_dropped_when_its_target_announces_the_hash() {
        let config = GossipConfig {
            fanout: FanoutMode::All,
            ..quiet()
        };
        let mut g = node(0, [1, 2], config);
        g.submit(body(1), None, ms(0)).expect("valid");
        drain(&mut g);
        g.handle_message(&id(1), announce(vec![entry(1, 1)]), ms(5));
        g.handle_timer(Timer::Flush, ms(100));
        let targets: Vec<PeerId> = announces(&drain(&mut g))
            .into_iter()
            .map(|(to, _)| to)
            .collect();
        assert_eq!(targets, vec![id(2)]);
    }
}
