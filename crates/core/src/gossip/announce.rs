//! Announcing: fanout, hop limit, per-peer batching and the optional eager push; and reading
//! the announcements and pushes peers send us.
//!
//! A node announces a transaction once, when it accepts it, to `fanout` active peers that are
//! not known to hold it already (its announcers and the peer it came from). Entries wait in a
//! per-peer batch for at most `flush_interval`; a full batch (`max_batch`) goes at once.

use rand::seq::SliceRandom;

use super::{
    AnnounceEntry, Gossip, GossipEvent, GossipMessage, MAX_ENTRIES_PER_MESSAGE,
    MAX_REGISTER_ID_LEN, Origin, Output, Timer,
};
use crate::model::{PeerId, Timestamp, TxHash};

impl Gossip {
    /// Announces `entry` to the fanout among active peers not in `exclude`; with `push_body`
    /// the first `eager_push_peers` targets get the body right away instead.
    pub(super) fn forward(
        &mut self,
        entry: AnnounceEntry,
        push_body: Option<Vec<u8>>,
        exclude: &[PeerId],
        now: Timestamp,
    ) {
        let count = self.config.fanout.count(self.peers.len());
        let mut targets: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|p| !exclude.contains(p))
            .cloned()
            .collect();
        targets.shuffle(&mut self.rng);
        targets.truncate(count);
        let pushes = if push_body.is_some() {
            self.config.eager_push_peers
        } else {
            0
        };
        for (i, to) in targets.into_iter().enumerate() {
            match &push_body {
                Some(body) if i < pushes => {
                    self.stats.pushes_sent += 1;
                    let message = GossipMessage::Push {
                        entry: entry.clone(),
                        body: body.clone(),
                    };
                    self.push(Output::Send { to, message });
                }
                _ => self.enqueue(to, entry.clone(), now),
            }
        }
    }

    /// Adds an entry to `to`'s batch; sends the batch when full, else arms the flush.
    fn enqueue(&mut self, to: PeerId, entry: AnnounceEntry, now: Timestamp) {
        let batch = self.outbox.entry(to.clone()).or_default();
        batch.push(entry);
        if batch.len() >= self.config.max_batch.max(1) {
            self.flush_peer(&to);
        } else {
            self.schedule_by(now.saturating_add(self.config.flush_interval), Timer::Flush);
        }
    }

    pub(super) fn flush_all(&mut self) {
        let peers: Vec<PeerId> = self.outbox.keys().cloned().collect();
        for peer in peers {
            self.flush_peer(&peer);
        }
    }

    fn flush_peer(&mut self, peer: &PeerId) {
        let Some(entries) = self.outbox.remove(peer) else {
            return;
        };
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

    /// Hashes `from` says it holds: unknown ones become pending with `from` as an announcer.
    /// `repair` marks entries learned through anti-entropy.
    pub(super) fn on_announce(
        &mut self,
        from: &PeerId,
        mut entries: Vec<AnnounceEntry>,
        repair: bool,
        now: Timestamp,
    ) {
        if entries.len() > MAX_ENTRIES_PER_MESSAGE {
            self.stats.dropped_over_message_limit +=
                (entries.len() - MAX_ENTRIES_PER_MESSAGE) as u64;
            entries.truncate(MAX_ENTRIES_PER_MESSAGE);
        }
        for entry in entries {
            self.stats.announcements_received += 1;
            if !self.entry_is_valid(&entry) {
                self.stats.refused_bad_entries += 1;
                continue;
            }
            if self.dedup.contains(&entry.hash, &mut self.stats) {
                self.stats.duplicate_announcements += 1;
                continue;
            }
            self.note_announcer(from, entry, repair, now);
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

    /// An eagerly pushed body: taken if new and its hash checks out.
    pub(super) fn on_push(
        &mut self,
        from: &PeerId,
        entry: AnnounceEntry,
        body: Vec<u8>,
        now: Timestamp,
    ) {
        self.stats.pushes_received += 1;
        if body.len() as u64 > self.config.max_transaction_size {
            self.stats.refused_oversized_bodies += 1;
            return;
        }
        if body.is_empty() || !self.entry_is_valid(&entry) {
            self.stats.refused_bad_entries += 1;
            return;
        }
        if self.dedup.contains(&entry.hash, &mut self.stats) {
            self.stats.duplicate_bodies += 1;
            return;
        }
        if TxHash::of(&body) != entry.hash {
            self.bad_body(from, entry.hash);
            return;
        }
        let origin = Origin::Peer(from.clone());
        self.accept(entry.hash, body, entry.register_id, origin, entry.hops, now);
    }

    pub(super) fn bad_body(&mut self, from: &PeerId, hash: TxHash) {
        self.stats.bad_bodies += 1;
        let from = from.clone();
        self.emit(GossipEvent::BadBody { from, hash });
    }
}
