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
