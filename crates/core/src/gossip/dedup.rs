//! Dedup: the exact set of recent transaction ids is the authority; a rotating bloom filter in
//! front of it only answers "certainly new" quickly.
//!
//! The bloom never has false negatives for an id the exact set holds: when a generation is
//! dropped, the still-known ids that only it covered are carried into the new one. So a
//! bloom "no" is safe to trust, and a bloom "maybe" (possibly a false positive) is always
//! confirmed in the exact set: a false positive costs one lookup, never a transaction.
//!
//! The exact set is a hash map, for the lookups every announcement entry costs (a B-tree of
//! 100,000 ids cost a cache miss per level: `Dedup::contains` and `Gossip::is_known` were 8 %
//! of a node's CPU in `peer-lab run throughput`, session 11), with the same ids in a B-tree set
//! beside it for the digests' ranges. The map is never iterated, so its per-process order never
//! shows and the simulator stays deterministic (STYLE.md 9 asks for ordered collections for
//! that reason).
//!
//! Beside them, `recent.rs` keeps the ids of the span recent digests list in id order, so a
//! digest costs its slice of the hash space, not a walk of the span.

mod recent;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use super::types::{AnnounceEntry, GossipStats, HashPrefix, PrefixRange};
use crate::model::{TxHash, TxId};
use crate::time::Instant;
use recent::RecentIndex;

/// A plain bloom filter over transaction ids (the first 16 bytes of SHA-256 hashes). They are
/// uniform already, so the bit positions come from double hashing of their two halves
/// (Kirsch & Mitzenmacher 2006):
/// no keyed hasher, nothing random, identical on every run.
#[derive(Debug, Clone)]
struct Bloom {
    words: Vec<u64>,
    bits: u64,
    hashes: u32,
}

impl Bloom {
    fn new(bits: usize, hashes: u32) -> Self {
        let bits = bits.max(1) as u64;
        Self {
            words: vec![0; bits.div_ceil(64) as usize],
            bits,
            hashes: hashes.max(1),
        }
    }

    fn positions(&self, id: &TxId) -> impl Iterator<Item = u64> + use<> {
        let b = id.as_bytes();
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(w)
        };
        let (h1, h2, bits) = (word(0), word(8) | 1, self.bits);
        (0..u64::from(self.hashes)).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) % bits)
    }

    fn insert(&mut self, id: &TxId) {
        for p in self.positions(id) {
            self.words[(p / 64) as usize] |= 1 << (p % 64);
        }
    }

    fn contains(&self, id: &TxId) -> bool {
        self.positions(id)
            .all(|p| self.words[(p / 64) as usize] & (1 << (p % 64)) != 0)
    }

    fn clear(&mut self) {
        self.words.fill(0);
    }
}

/// What the core remembers of a known transaction: enough to announce it again, not the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct KnownTx {
    /// The whole hash (the key, its id, is its first half): Sorcha peers are told it.
    pub(super) hash: TxHash,
    pub(super) size: u64,
    pub(super) register_id: Option<String>,
    pub(super) seen_at: Instant,
    /// Hops of the copy we took (0: submitted or restored here), for the tree's rules.
    pub(super) hops: u32,
    /// The copy we took was an origin's shortcut push (`tree.rs`).
    pub(super) by_shortcut: bool,
}

impl KnownTx {
    /// The entry that announces it, `hops` from here.
    pub(super) fn entry(&self, hops: u32) -> AnnounceEntry {
        AnnounceEntry {
            id: self.hash.id(),
            hash: Some(self.hash),
            size: self.size,
            register_id: self.register_id.clone(),
            hops,
        }
    }
}

/// Known hashes with expiry, and the two bloom generations in front of them.
#[derive(Debug)]
pub(super) struct Dedup {
    /// Looked up only, never iterated (see the module doc).
    known: HashMap<TxId, KnownTx>,
    /// The ids of `known`, in order.
    ids: BTreeSet<TxId>,
    /// Insertion order, oldest first; `seen_at` never decreases along it.
    order: VecDeque<(Instant, TxId)>,
    current: Bloom,
    previous: Bloom,
    current_since: Instant,
    previous_since: Instant,
    ttl: Duration,
    max_known: usize,
    reset_interval: Duration,
    /// The ids of the recent digests' span, in id order.
    recent: RecentIndex,
}

impl Dedup {
    pub(super) fn new(
        bloom_bits: usize,
        bloom_hashes: u32,
        reset_interval: Duration,
        ttl: Duration,
        max_known: usize,
        now: Instant,
    ) -> Self {
        Self {
            known: HashMap::new(),
            ids: BTreeSet::new(),
            order: VecDeque::new(),
            current: Bloom::new(bloom_bits, bloom_hashes),
            previous: Bloom::new(bloom_bits, bloom_hashes),
            current_since: now,
            previous_since: now,
            ttl,
            max_known: max_known.max(1),
            reset_interval,
            recent: RecentIndex::default(),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.known.len()
    }

    /// Whether `id` is known: the bloom's "no" is final, its "maybe" is checked.
    pub(super) fn contains(&self, id: &TxId, stats: &mut GossipStats) -> bool {
        if !self.current.contains(id) && !self.previous.contains(id) {
            stats.bloom_negatives += 1;
            return false;
        }
        let known = self.known.contains_key(id);
        if !known {
            stats.bloom_false_positives += 1;
        }
        known
    }

    pub(super) fn get(&self, id: &TxId) -> Option<&KnownTx> {
        self.known.get(id)
    }

    /// Notes that the copy of `id` we took came by an origin's shortcut.
    pub(super) fn mark_shortcut(&mut self, id: &TxId) {
        if let Some(known) = self.known.get_mut(id) {
            known.by_shortcut = true;
        }
    }

    /// Remembers a new id, forgetting the oldest (counted) when full.
    pub(super) fn insert(&mut self, id: TxId, mut tx: KnownTx, stats: &mut GossipStats) {
        if let Some((last, _)) = self.order.back() {
            tx.seen_at = tx.seen_at.max(*last);
        }
        while self.known.len() >= self.max_known {
            let Some((_, old)) = self.order.pop_front() else {
                break;
            };
            self.forget(&old);
            stats.known_evicted += 1;
        }
        self.current.insert(&id);
        self.recent.inserted(id, tx.seen_at);
        self.order.push_back((tx.seen_at, id));
        self.ids.insert(id);
        self.known.insert(id, tx);
    }

    fn forget(&mut self, id: &TxId) {
        self.known.remove(id);
        self.ids.remove(id);
        self.recent.removed(id);
    }

    /// Forgets hashes older than the TTL and starts a new bloom generation when due.
    pub(super) fn expire(&mut self, now: Instant) {
        while let Some(&(seen, id)) = self.order.front() {
            if now.since(seen) < self.ttl {
                break;
            }
            self.order.pop_front();
            self.forget(&id);
        }
        if now.since(self.current_since) >= self.reset_interval {
            self.rotate(now);
        }
    }

    /// Drops the older generation. Hashes seen before the surviving generation started are
    /// covered only by the dropped one, so they are carried into the new one.
    fn rotate(&mut self, now: Instant) {
        std::mem::swap(&mut self.current, &mut self.previous);
        self.current.clear();
        self.previous_since = self.current_since;
        self.current_since = now;
        let carried = self.previous_since;
        for (seen, id) in &self.order {
            if *seen >= carried {
                break;
            }
            self.current.insert(id);
        }
    }

    /// A known id starting with `prefix`, if any.
    pub(super) fn by_prefix(&self, prefix: HashPrefix) -> Option<(&TxId, &KnownTx)> {
        self.in_range(PrefixRange::single(prefix)).next()
    }

    /// Known hashes first seen within `[since, until]`, oldest first: found by the time
    /// index, so looking at the last seconds costs nothing for the older hashes kept.
    pub(super) fn seen_between(
        &self,
        since: Instant,
        until: Instant,
    ) -> impl Iterator<Item = (&TxId, &KnownTx)> {
        let start = self.order.partition_point(|(seen, _)| *seen < since);
        self.order
            .range(start..)
            .take_while(move |(seen, _)| *seen <= until)
            .filter_map(|(_, id)| self.known.get_key_value(id))
    }

    /// Moves the recent index to the ids first seen within `[since, until]`: call it with a
    /// span that only moves forward (as `now` does) and the upkeep is O(log n) per new id.
    pub(super) fn track_recent(&mut self, since: Instant, until: Instant) {
        self.recent.track(since, until, &self.order);
    }

    /// Known hashes within `range` first seen within `[since, until]`, in id order, found
    /// in the recent index; `None` when its span does not hold `[since, until]`.
    pub(super) fn recent_in_range(
        &self,
        range: PrefixRange,
        since: Instant,
        until: Instant,
    ) -> Option<impl DoubleEndedIterator<Item = (&TxId, Instant)>> {
        let covered = self.recent.covers(since, until);
        covered.then(|| {
            self.recent
                .in_range(range)
                .filter(move |(_, seen)| (since..=until).contains(seen))
        })
    }

    /// Known hashes within `range`, in id order (none when the range is empty).
    pub(super) fn in_range(&self, range: PrefixRange) -> impl Iterator<Item = (&TxId, &KnownTx)> {
        let valid = range.first <= range.last;
        valid
            .then(|| self.ids.range(range.ids()))
            .into_iter()
            .flatten()
            .filter_map(|id| self.known.get_key_value(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::types::prefix_of;

    fn h(n: u32) -> TxId {
        TxHash::of(&n.to_be_bytes()).id()
    }

    fn tx(at: u64) -> KnownTx {
        KnownTx {
            hash: TxHash::from_bytes([0; 32]),
            size: 1,
            register_id: None,
            seen_at: Instant::from_millis(at),
            hops: 0,
            by_shortcut: false,
        }
    }

    fn dedup(bits: usize, max_known: usize) -> Dedup {
        let t0 = Instant::from_millis(0);
        let (reset, ttl) = (Duration::from_secs(10), Duration::from_secs(60));
        Dedup::new(bits, 3, reset, ttl, max_known, t0)
    }

    #[test]
    fn a_saturated_bloom_only_costs_lookups() {
        // 8 bits and thousands of hashes: every query is a bloom "maybe".
        let mut d = dedup(8, 10_000);
        let mut stats = GossipStats::default();
        for n in 0..1000 {
            d.insert(h(n), tx(0), &mut stats);
        }
        for n in 0..1000 {
            assert!(d.contains(&h(n), &mut stats));
        }
        for n in 1000..2000 {
            assert!(
                !d.contains(&h(n), &mut stats),
                "false positive taken as known"
            );
        }
        assert_eq!(stats.bloom_false_positives, 1000);
        assert_eq!(stats.bloom_negatives, 0);
    }

    #[test]
    fn rotation_never_loses_a_known_hash_from_the_bloom() {
        let mut d = dedup(1 << 16, 100_000);
        let mut stats = GossipStats::default();
        // One insert per second for 55 s (within the 60 s TTL), rotating every 10 s.
        for s in 0..55u64 {
            let now = Instant::from_millis(s * 1000);
            d.expire(now);
            d.insert(h(s as u32), tx(s * 1000), &mut stats);
        }
        d.expire(Instant::from_millis(59_000));
        for s in 0..55 {
            assert!(
                d.current.contains(&h(s)) || d.previous.contains(&h(s)),
                "{s}"
            );
            assert!(d.contains(&h(s), &mut stats));
        }
    }

    #[test]
    fn hashes_expire_after_the_ttl_and_the_set_is_bounded() {
        let mut d = dedup(1 << 12, 3);
        let mut stats = GossipStats::default();
        for n in 0..5 {
            d.insert(h(n), tx(u64::from(n)), &mut stats);
        }
        assert_eq!(d.len(), 3);
        assert_eq!(stats.known_evicted, 2);
        assert!(!d.contains(&h(0), &mut stats));
        assert!(d.contains(&h(4), &mut stats));
        d.expire(Instant::from_millis(60_003));
        assert_eq!(d.len(), 1, "entries seen at 2 and 3 ms expired");
        assert!(d.contains(&h(4), &mut stats));
    }

    #[test]
    fn seen_between_takes_the_time_span_inclusive_oldest_first() {
        let mut d = dedup(1 << 12, 100);
        let mut stats = GossipStats::default();
        for n in 0..10 {
            d.insert(h(n), tx(u64::from(n) * 100), &mut stats);
        }
        let span = |since: u64, until: u64| -> Vec<TxId> {
            let (since, until) = (Instant::from_millis(since), Instant::from_millis(until));
            d.seen_between(since, until).map(|(id, _)| *id).collect()
        };
        assert_eq!(span(300, 500), vec![h(3), h(4), h(5)], "both ends included");
        assert_eq!(span(250, 350), vec![h(3)]);
        assert_eq!(span(901, 5000), Vec::<TxId>::new(), "after the newest");
        assert_eq!(span(500, 400), Vec::<TxId>::new(), "an empty span");
    }

    #[test]
    fn range_and_prefix_lookups() {
        let mut d = dedup(1 << 12, 100);
        let mut stats = GossipStats::default();
        for n in 0..10 {
            d.insert(h(n), tx(u64::from(n) * 100), &mut stats);
        }
        let mut all: Vec<TxId> = (0..10).map(h).collect();
        all.sort();
        let listed: Vec<TxId> = d.in_range(PrefixRange::FULL).map(|(h, _)| *h).collect();
        assert_eq!(listed, all, "the full range, in hash order");
        let (lo, hi) = (prefix_of(&all[2]), prefix_of(&all[5]));
        let slice = PrefixRange {
            first: lo,
            last: hi,
        };
        let listed: Vec<TxId> = d.in_range(slice).map(|(h, _)| *h).collect();
        assert_eq!(listed, all[2..=5].to_vec());
        let empty = PrefixRange {
            first: hi,
            last: lo,
        };
        assert_eq!(
            d.in_range(empty).count(),
            0,
            "first above last is empty, no panic"
        );
        assert_eq!(d.by_prefix(prefix_of(&h(3))).map(|(x, _)| *x), Some(h(3)));
        assert_eq!(d.by_prefix(prefix_of(&h(99))), None);
    }

    /// The recent index, as the span moves forward in uneven steps, names exactly the ids
    /// the time index finds in the span, in id order, whatever the slice.
    #[test]
    fn the_recent_index_matches_the_time_index_as_the_span_moves() {
        let mut d = dedup(1 << 12, 15);
        let mut stats = GossipStats::default();
        let at = Instant::from_millis;
        let mut n = 0;
        for step in 0..60u64 {
            let now = step * 250;
            for _ in 0..(step % 4) {
                d.insert(h(n), tx(now), &mut stats);
                n += 1;
            }
            // A 3 s span ending 300 ms ago; the oldest are evicted past 15 ids, some within the span.
            let (since, until) = (at(now.saturating_sub(3000)), at(now.saturating_sub(300)));
            d.track_recent(since, until);
            let (first, last) = (prefix_of(&h(step as u32)), u64::MAX - step);
            for range in [PrefixRange::FULL, PrefixRange { first, last }] {
                let mut expected: Vec<TxId> = d
                    .seen_between(since, until)
                    .map(|(id, _)| *id)
                    .filter(|id| range.contains(prefix_of(id)))
                    .collect();
                expected.sort();
                let indexed: Vec<TxId> = d
                    .recent_in_range(range, since, until)
                    .expect("the span is held")
                    .map(|(id, _)| *id)
                    .collect();
                assert_eq!(indexed, expected, "at {now} ms");
            }
            assert!(d.recent.len() <= d.len());
        }
        assert!(
            n > 60 && stats.known_evicted > 40,
            "the test evicted some ids"
        );
    }

    #[test]
    fn the_recent_index_answers_only_for_the_span_it_holds() {
        let mut d = dedup(1 << 12, 100);
        let mut stats = GossipStats::default();
        let at = Instant::from_millis;
        for n in 0..10 {
            d.insert(h(n), tx(u64::from(n) * 100), &mut stats);
        }
        assert!(
            d.recent_in_range(PrefixRange::FULL, at(0), at(900))
                .is_none(),
            "untracked"
        );
        d.track_recent(at(200), at(600));
        let count = |d: &Dedup, since, until| {
            d.recent_in_range(PrefixRange::FULL, at(since), at(until))
                .map(Iterator::count)
        };
        assert_eq!(count(&d, 200, 600), Some(5));
        assert_eq!(count(&d, 300, 500), Some(3), "a narrower span is filtered");
        assert_eq!(count(&d, 100, 600), None, "older than the span held");
        // An id stamped back within the span (the clock is never behind the newest seen,
        // so it is stamped at 900 and stays out), then a backwards move rebuilds it.
        d.insert(h(50), tx(400), &mut stats);
        assert_eq!(count(&d, 200, 600), Some(5));
        d.track_recent(at(0), at(300));
        assert_eq!(count(&d, 0, 300), Some(4));
    }
}
