//! Anti-entropy: every `anti_entropy_interval` a node sends one random active peer the sorted
//! 8-byte prefixes of the hashes it first saw within `anti_entropy_window`. The peer answers
//! with a `DigestReply`: full entries for its recent hashes the digest lacks (the sender fetches
//! them from it) and the prefixes it lacks itself (the sender answers those with a reply
//! carrying the full entries, which asks for nothing, so exchanges end there).
//!
//! Each message is bounded ([`MAX_DIGEST_ENTRIES`], [`MAX_REPAIR_ENTRIES`]); a node far
//! behind catches up over several rounds.

use std::collections::BTreeSet;

use rand::Rng;

use super::dedup::prefix_range;
use super::types::prefix_of;
use super::{
    AnnounceEntry, Gossip, GossipMessage, HashPrefix, MAX_DIGEST_ENTRIES, MAX_REPAIR_ENTRIES,
    Output, Timer,
};
use crate::model::{PeerId, Timestamp};

impl Gossip {
    fn window_start(&self, now: Timestamp) -> Timestamp {
        let window = u64::try_from(self.config.anti_entropy_window.as_millis()).unwrap_or(u64::MAX);
        Timestamp::from_millis(now.as_millis().saturating_sub(window))
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
        let mut prefixes: Vec<HashPrefix> = self
            .dedup
            .recent(self.window_start(now), MAX_DIGEST_ENTRIES)
            .map(|(h, _)| prefix_of(h))
            .collect();
        prefixes.sort_unstable();
        self.stats.digests_sent += 1;
        let message = GossipMessage::Digest { prefixes };
        self.push(Output::Send { to, message });
    }

    pub(super) fn on_digest(
        &mut self,
        from: &PeerId,
        mut prefixes: Vec<HashPrefix>,
        now: Timestamp,
    ) {
        self.stats.digests_received += 1;
        if prefixes.len() > MAX_DIGEST_ENTRIES {
            self.stats.dropped_over_message_limit += (prefixes.len() - MAX_DIGEST_ENTRIES) as u64;
            prefixes.truncate(MAX_DIGEST_ENTRIES);
        }
        let theirs: BTreeSet<HashPrefix> = prefixes.into_iter().collect();
        let missing: Vec<AnnounceEntry> = self
            .dedup
            .recent(self.window_start(now), MAX_DIGEST_ENTRIES)
            .filter(|(h, _)| !theirs.contains(&prefix_of(h)))
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
                self.dedup.by_prefix(*p).is_none()
                    && self.pending.range(prefix_range(*p)).next().is_none()
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
        assert!(matches!(&digest[0].1, GossipMessage::Digest { prefixes } if prefixes.len() == 20));
        nodes[0].handle_timer(Timer::AntiEntropy, late);
        let digest = sends(&drain(&mut nodes[0]));
        assert!(matches!(&digest[0].1, GossipMessage::Digest { prefixes } if prefixes.is_empty()));
    }
}
