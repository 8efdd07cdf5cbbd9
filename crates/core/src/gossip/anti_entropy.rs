//! Anti-entropy: every `anti_entropy_interval` a node sends one random active peer a digest of
//! one slice of the hash space: the sorted 8-byte prefixes of every hash in that slice which it
//! first saw within `anti_entropy_window` (or is fetching), at most [`MAX_DIGEST_ENTRIES`]. The
//! next digest starts where this one ended, so successive digests walk the whole window
//! however many transactions it holds; a digest of "the newest N" (as before) let a hash
//! missed at 2,000 tx/s fall out of every digest within a second, and it was never repaired.
//!
//! The peer answers with a `DigestReply`: full entries for its hashes in the slice that the
//! digest lacks (the sender fetches them from it) and the prefixes it lacks itself (the sender
//! answers those with a reply carrying the full entries, which asks for nothing, so exchanges
//! end there). Hashes first seen less than `anti_entropy_settle` ago stay out of both sides:
//! gossip is most likely still carrying them, and offering them would only race it.
//!
//! Each message is bounded ([`MAX_DIGEST_ENTRIES`], [`MAX_REPAIR_ENTRIES`]), and so is the work
//! one digest costs ([`MAX_DIGEST_SCAN`]); a node far behind catches up over several rounds.

use std::collections::BTreeSet;

use rand::Rng;

use super::types::prefix_of;
use super::{
    AnnounceEntry, Gossip, GossipMessage, HashPrefix, MAX_DIGEST_ENTRIES, MAX_REPAIR_ENTRIES,
    Output, PrefixRange, Timer,
};
use crate::model::{PeerId, Timestamp, TxHash};

/// Known hashes examined to build or answer one digest: the window may hold up to
/// `max_known` hashes and older ones sit between them in hash order.
pub const MAX_DIGEST_SCAN: usize = 16 * MAX_DIGEST_ENTRIES;

impl Gossip {
    /// Known hashes first seen in `[window start, now - settle]` go into digests and replies.
    fn digest_span(&self, now: Timestamp) -> (Timestamp, Timestamp) {
        let millis = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let at = now.as_millis();
        let since = at.saturating_sub(millis(self.config.anti_entropy_window));
        let until = at.saturating_sub(millis(self.config.anti_entropy_settle));
        (Timestamp::from_millis(since), Timestamp::from_millis(until))
    }

    pub(super) fn on_anti_entropy_timer(&mut self, now: Timestamp) {
        let Some(every) = self.config.anti_entropy_interval else {
            return;
        };
        self.schedule(now.saturating_add(every), Timer::AntiEntropy);
        if self.peers.is_empty() {
            return;
        }
        let to = self.peers[self.rng.random_range(0..self.peers.len())].clone();
        let (range, prefixes) = self.next_digest(now);
        self.digest_cursor = range.last.checked_add(1).unwrap_or(0);
        self.stats.digests_sent += 1;
        let message = GossipMessage::Digest { range, prefixes };
        self.push(Output::Send { to, message });
    }

    /// The slice starting at the cursor: every prefix of a window hash or a pending hash, in
    /// order, until [`MAX_DIGEST_ENTRIES`] are taken or [`MAX_DIGEST_SCAN`] hashes examined;
    /// the slice ends just before the first prefix left out (or at the end of the space).
    fn next_digest(&self, now: Timestamp) -> (PrefixRange, Vec<HashPrefix>) {
        let (since, until) = self.digest_span(now);
        let first = self.digest_cursor;
        let rest = PrefixRange {
            first,
            last: HashPrefix::MAX,
        };
        let mut known = self
            .dedup
            .in_range(rest)
            .map(|(h, tx)| (*h, (since..=until).contains(&tx.seen_at)))
            .peekable();
        let mut pending = self
            .pending
            .range(rest.hashes())
            .map(|(h, _)| (*h, true))
            .peekable();
        let mut prefixes: Vec<HashPrefix> = Vec::new();
        let mut scanned = 0;
        loop {
            let next: Option<(TxHash, bool)> = match (known.peek(), pending.peek()) {
                (Some(k), Some(p)) if k.0 <= p.0 => known.next(),
                (Some(_), Some(_)) | (None, Some(_)) => pending.next(),
                (Some(_), None) => known.next(),
                (None, None) => None,
            };
            let Some((hash, wanted)) = next else {
                return (rest, prefixes);
            };
            let prefix = prefix_of(&hash);
            let new_prefix = prefixes.last() != Some(&prefix);
            let full = prefixes.len() >= MAX_DIGEST_ENTRIES || scanned >= MAX_DIGEST_SCAN;
            if full && new_prefix && prefix > first {
                // `prefix - 1` cannot underflow: prefix > first >= 0.
                let range = PrefixRange {
                    first,
                    last: prefix - 1,
                };
                return (range, prefixes);
            }
            scanned += 1;
            if wanted && new_prefix {
                prefixes.push(prefix);
            }
        }
    }

    pub(super) fn on_digest(
        &mut self,
        from: &PeerId,
        range: PrefixRange,
        mut prefixes: Vec<HashPrefix>,
        now: Timestamp,
    ) {
        self.stats.digests_received += 1;
        if range.first > range.last {
            self.stats.refused_bad_digests += 1;
            return;
        }
        if prefixes.len() > MAX_DIGEST_ENTRIES {
            self.stats.dropped_over_message_limit += (prefixes.len() - MAX_DIGEST_ENTRIES) as u64;
            prefixes.truncate(MAX_DIGEST_ENTRIES);
        }
        let theirs: BTreeSet<HashPrefix> = prefixes
            .into_iter()
            .filter(|p| range.contains(*p))
            .collect();
        let (since, until) = self.digest_span(now);
        let missing: Vec<AnnounceEntry> = self
            .dedup
            .in_range(range)
            .take(MAX_DIGEST_SCAN)
            .filter(|(h, tx)| {
                (since..=until).contains(&tx.seen_at) && !theirs.contains(&prefix_of(h))
            })
            .take(MAX_REPAIR_ENTRIES)
            .map(|(hash, tx)| AnnounceEntry {
                hash: *hash,
                size: tx.size,
                register_id: tx.register_id.clone(),
                hops: 1,
            })
            .collect();
        let wanted: Vec<HashPrefix> = theirs
            .into_iter()
            .filter(|p| {
                let one = PrefixRange {
                    first: *p,
                    last: *p,
                };
                self.dedup.by_prefix(*p).is_none()
                    && self.pending.range(one.hashes()).next().is_none()
            })
            .take(MAX_REPAIR_ENTRIES)
            .collect();
        if missing.is_empty() && wanted.is_empty() {
            return;
        }
        let message = GossipMessage::DigestReply { missing, wanted };
        self.push(Output::Send {
            to: from.clone(),
            message,
        });
    }

    pub(super) fn on_digest_reply(
        &mut self,
        from: &PeerId,
        missing: Vec<AnnounceEntry>,
        mut wanted: Vec<HashPrefix>,
        now: Timestamp,
    ) {
        self.on_announce(from, missing, true, now);
        if wanted.len() > MAX_REPAIR_ENTRIES {
            self.stats.dropped_over_message_limit += (wanted.len() - MAX_REPAIR_ENTRIES) as u64;
            wanted.truncate(MAX_REPAIR_ENTRIES);
        }
        let entries: Vec<AnnounceEntry> = wanted
            .into_iter()
            .filter_map(|p| self.dedup.by_prefix(p))
            .map(|(hash, tx)| AnnounceEntry {
                hash: *hash,
                size: tx.size,
                register_id: tx.register_id.clone(),
                hops: 1,
            })
            .collect();
        if entries.is_empty() {
            return;
        }
        let message = GossipMessage::DigestReply {
            missing: entries,
            wanted: Vec::new(),
        };
        self.push(Output::Send {
            to: from.clone(),
            message,
        });
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, VecDeque};

    use super::super::test_util::*;
    use super::super::*;
    use crate::model::TxHash;

    /// Node 0 holding 20 submitted transactions, node 1 holding none; each the other's peer.
    fn pair() -> ([Gossip; 2], BTreeMap<TxHash, Vec<u8>>) {
        let config = GossipConfig::default();
        let mut full = node(0, [1], config.clone());
        let mut bodies = BTreeMap::new();
        for n in 0..20 {
            let out = full.submit(body(n), None, ms(100)).expect("valid");
            bodies.insert(out.hash, body(n));
        }
        drain(&mut full);
        ([full, node(1, [0], config)], bodies)
    }

    /// Fires node `n`'s anti-entropy timer, then carries messages between the two and answers
    /// fetches from `bodies` until nothing moves. Returns the outputs node 1 produced.
    fn round(
        nodes: &mut [Gossip; 2],
        n: usize,
        mut now: u64,
        bodies: &BTreeMap<TxHash, Vec<u8>>,
    ) -> Vec<Output> {
        nodes[n].handle_timer(Timer::AntiEntropy, ms(now));
        let mut queue: VecDeque<(usize, Output)> =
            drain(&mut nodes[n]).into_iter().map(|o| (n, o)).collect();
        let mut seen_by_1 = Vec::new();
        while let Some((at, output)) = queue.pop_front() {
            now += 1;
            let target = match output {
                Output::Send { message, .. } => {
                    nodes[1 - at].handle_message(&id(at), message, ms(now));
                    1 - at
                }
                Output::Fetch { from, hash, .. } => {
                    let body = bodies.get(&hash).cloned().ok_or(FetchFailure::NotFound);
                    nodes[at].handle_fetched(&from, hash, body, ms(now));
                    at
                }
                _ => continue,
            };
            let out = drain(&mut nodes[target]);
            if target == 1 {
                seen_by_1.extend(out.iter().cloned());
            }
            queue.extend(out.into_iter().map(|o| (target, o)));
        }
        seen_by_1
    }

    #[test]
    fn an_empty_digest_brings_a_node_everything() {
        let (mut nodes, bodies) = pair();
        let out = round(&mut nodes, 1, 5000, &bodies);
        assert_eq!(delivered(&out).len(), 20);
        assert_eq!(nodes[1].known_count(), 20);
        assert_eq!(nodes[1].stats().anti_entropy_repairs, 20);
        assert!(events(&out).contains(&GossipEvent::Repaired {
            hash: TxHash::of(&body(0)),
            from: id(0)
        }));
    }

    #[test]
    fn a_digest_of_what_the_peer_lacks_is_answered_with_wants() {
        let (mut nodes, bodies) = pair();
        let out = round(&mut nodes, 0, 5000, &bodies);
        assert_eq!(delivered(&out).len(), 20);
        assert_eq!(nodes[1].stats().anti_entropy_repairs, 20);
        assert_eq!(nodes[0].stats().digests_sent, 1);
        assert_eq!(nodes[1].stats().digests_received, 1);
    }

    #[test]
    fn nodes_in_sync_exchange_only_the_digest() {
        let (mut nodes, bodies) = pair();
        round(&mut nodes, 1, 5000, &bodies);
        let out = round(&mut nodes, 0, 5000, &bodies);
        assert!(sends(&out).is_empty(), "no reply: {out:?}");
        assert_eq!(nodes[0].stats().digests_sent, 1);
        assert_eq!(nodes[1].stats().digests_received, 1);
    }

    #[test]
    fn the_digest_covers_the_window_only() {
        let (mut nodes, _) = pair();
        let late = ms(100 + 10 * 60 * 1000 + 1);
        nodes[0].handle_timer(Timer::AntiEntropy, ms(5000));
        let digest = sends(&drain(&mut nodes[0]));
        assert!(
            matches!(&digest[0].1, GossipMessage::Digest { prefixes, .. } if prefixes.len() == 20)
        );
        nodes[0].handle_timer(Timer::AntiEntropy, late);
        let digest = sends(&drain(&mut nodes[0]));
        assert!(
            matches!(&digest[0].1, GossipMessage::Digest { prefixes, .. } if prefixes.is_empty())
        );
    }

    /// Two nodes holding `count` transactions first seen at 100 ms, except that node 0 lacks
    /// those in `gaps`.
    fn large_pair(count: usize, gaps: &[usize]) -> ([Gossip; 2], BTreeMap<TxHash, Vec<u8>>) {
        let config = GossipConfig::default();
        let mut nodes = [node(0, [1], config.clone()), node(1, [0], config)];
        let mut bodies = BTreeMap::new();
        for n in 0..count {
            bodies.insert(TxHash::of(&body(n)), body(n));
            for (i, g) in nodes.iter_mut().enumerate() {
                if i == 1 || !gaps.contains(&n) {
                    g.submit(body(n), None, ms(100)).expect("valid");
                }
            }
        }
        for g in &mut nodes {
            drain(g);
        }
        (nodes, bodies)
    }

    fn digest_of(out: &[Output]) -> (PrefixRange, Vec<HashPrefix>) {
        match sends(out).into_iter().next() {
            Some((_, GossipMessage::Digest { range, prefixes })) => (range, prefixes),
            other => panic!("expected a digest, got {other:?}"),
        }
    }

    #[test]
    fn successive_digests_walk_a_window_larger_than_one_digest() {
        let (mut nodes, _) = large_pair(5000, &[]);
        let mut next_first = 0;
        let mut covered = 0;
        for k in 0..3 {
            nodes[0].handle_timer(Timer::AntiEntropy, ms(5000 * (k + 1)));
            let (range, prefixes) = digest_of(&drain(&mut nodes[0]));
            assert_eq!(range.first, next_first, "slices are contiguous");
            assert!(prefixes.len() <= MAX_DIGEST_ENTRIES);
            assert!(prefixes.windows(2).all(|w| w[0] < w[1]), "ascending");
            assert!(prefixes.iter().all(|p| range.contains(*p)));
            covered += prefixes.len();
            if range.last == HashPrefix::MAX {
                assert_eq!(k, 2, "5,000 hashes take three digests of at most 2,048");
                break;
            }
            next_first = range.last + 1;
        }
        assert_eq!(covered, 5000, "every hash in exactly one slice");
        nodes[0].handle_timer(Timer::AntiEntropy, ms(20_000));
        let (range, _) = digest_of(&drain(&mut nodes[0]));
        assert_eq!(range.first, 0, "the walk starts over");
    }

    #[test]
    fn an_old_gap_is_repaired_however_many_newer_transactions_there_are() {
        // Newest-first digests of 2,048 never mentioned these: 5,000 newer hashes buried them.
        let gaps = [3, 2500, 4999];
        for sender in [0, 1] {
            let (mut nodes, bodies) = large_pair(5000, &gaps);
            for k in 0..3 {
                round(&mut nodes, sender, 5000 * (k + 1), &bodies);
            }
            assert_eq!(
                nodes[0].known_count(),
                5000,
                "digests sent by node {sender}"
            );
            for n in gaps {
                assert!(nodes[0].is_known(&TxHash::of(&body(n))));
            }
            assert_eq!(nodes[0].stats().anti_entropy_repairs, 3);
        }
    }

    #[test]
    fn fresh_hashes_stay_out_of_digests_and_replies() {
        let config = GossipConfig::default();
        let mut nodes = [node(0, [1], config.clone()), node(1, [0], config)];
        let mut bodies = BTreeMap::new();
        for n in 0..20 {
            // 200 ms before the first digest: within the 300 ms settle time.
            let out = nodes[0].submit(body(n), None, ms(4800)).expect("valid");
            bodies.insert(out.hash, body(n));
        }
        drain(&mut nodes[0]);
        nodes[0].handle_timer(Timer::AntiEntropy, ms(5000));
        let (_, prefixes) = digest_of(&drain(&mut nodes[0]));
        assert!(prefixes.is_empty(), "{prefixes:?}");
        let out = round(&mut nodes, 1, 5000, &bodies);
        assert!(delivered(&out).is_empty(), "node 0 does not offer them yet");
        let out = round(&mut nodes, 1, 10_000, &bodies);
        assert_eq!(delivered(&out).len(), 20, "settled: offered");
    }

    #[test]
    fn a_digest_with_an_empty_range_is_refused() {
        let (mut nodes, _) = pair();
        let range = PrefixRange { first: 9, last: 8 };
        let digest = GossipMessage::Digest {
            range,
            prefixes: vec![],
        };
        nodes[0].handle_message(&id(1), digest, ms(5000));
        assert!(sends(&drain(&mut nodes[0])).is_empty());
        assert_eq!(nodes[0].stats().refused_bad_digests, 1);
    }
}
