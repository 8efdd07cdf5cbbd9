//! Queued transactions handed to gossip that wait for a peer's proof of receipt. A peer that
//! pulls a queued transaction proves it asked for it; one that gets it by eager push proves
//! nothing by silence, so the link worker asks it to acknowledge the push (`GossipPush.ack`,
//! only for the transactions listed here) and the acknowledgement confirms the row.
//!
//! Bounded: at most [`MAX_AWAITING`] ids, each forgotten after [`AWAIT_FOR`] (the row stays
//! queued; its next hand-over lists it again). Ids refused past the bound are counted in the
//! store's `refused`; their pushes then ask for nothing and the rows leave the queue when a peer
//! pulls them, or become dead letters.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use sorcha_peer_core::model::{TxHash, TxId};

/// Ids waiting for an acknowledgement at most: the flusher hands 1,024 at a time over and a
/// peer acknowledges within a round trip, so this is many seconds of a full-speed flush.
pub const MAX_AWAITING: usize = 65_536;
/// How long an id waits for its acknowledgement: past it the push (or its ack) is taken as
/// lost. Longer than a peer timeout and a few graft rounds; shorter than the queue's retry
/// backoff grows to.
pub const AWAIT_FOR: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub(super) struct Awaiting {
    by_id: HashMap<TxId, (TxHash, Instant)>,
    order: VecDeque<(Instant, TxId)>,
}

impl Awaiting {
    /// Lists `hashes` as waiting since `now`; how many were refused (over the bound).
    pub(super) fn note(&mut self, hashes: impl IntoIterator<Item = TxHash>, now: Instant) -> u64 {
        self.expire(now);
        let mut refused = 0;
        for hash in hashes {
            if self.by_id.len() >= MAX_AWAITING {
                refused += 1;
                continue;
            }
            self.by_id.insert(hash.id(), (hash, now));
            self.order.push_back((now, hash.id()));
        }
        refused
    }

    pub(super) fn contains(&self, id: &TxId) -> bool {
        self.by_id.contains_key(id)
    }

    /// The whole hash of `id`, no longer waiting; `None` if it was not.
    pub(super) fn take(&mut self, id: &TxId) -> Option<TxHash> {
        self.by_id.remove(id).map(|(hash, _)| hash)
    }

    /// Forgets ids listed before `now - AWAIT_FOR`. `order` may hold stale pairs (an id taken,
    /// or listed again later): only a pair whose time is the id's current one removes it.
    fn expire(&mut self, now: Instant) {
        while let Some(&(at, id)) = self.order.front() {
            if now.saturating_duration_since(at) < AWAIT_FOR && self.order.len() <= 2 * MAX_AWAITING
            {
                break;
            }
            self.order.pop_front();
            if self.by_id.get(&id).is_some_and(|(_, since)| *since == at) {
                self.by_id.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_waits_until_taken_or_expired_and_the_bound_refuses() {
        let mut a = Awaiting::default();
        let t0 = Instant::now();
        let h = |n: u32| TxHash::of(&n.to_be_bytes());
        assert_eq!(a.note([h(1), h(2)], t0), 0);
        assert!(a.contains(&h(1).id()));
        assert_eq!(a.take(&h(1).id()), Some(h(1)));
        assert_eq!(a.take(&h(1).id()), None, "once");
        a.note([h(3)], t0 + AWAIT_FOR / 2);
        a.note([], t0 + AWAIT_FOR);
        assert!(!a.contains(&h(2).id()), "expired");
        assert!(a.contains(&h(3).id()), "not yet");
        let many = (10..10 + MAX_AWAITING as u32).map(h);
        assert_eq!(a.note(many, t0 + AWAIT_FOR), 1, "one over the bound");
    }
}
