//! Who pushed each recent transaction to us first, and with how many hops: what the tree's
//! hop-count optimisation (`tree.rs`, `tree_hop_threshold`) compares a lazy peer's
//! announcement against. Bounded in count and in age; a full table refuses (counted).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use crate::model::{PeerId, TxId};
use crate::time::Instant;

/// Transactions remembered at most: a few seconds of pushes at thousands per second.
pub(super) const MAX_PUSH_PARENTS: usize = 8192;

/// How long a push's parent is remembered: the announcements that could beat it come within
/// a few hops' latency (a flush interval and a link each), well under this.
pub(super) const PUSH_PARENT_TTL: Duration = Duration::from_secs(2);

/// The first pusher and its hop count per transaction, oldest first for expiry.
#[derive(Debug, Default)]
pub(super) struct PushParents {
    by_id: BTreeMap<TxId, (PeerId, u32)>,
    order: VecDeque<(Instant, TxId)>,
}

impl PushParents {
    /// Remembers that `from` pushed `id` with `hops`; false when full (not remembered).
    pub(super) fn insert(&mut self, id: TxId, from: PeerId, hops: u32, now: Instant) -> bool {
        self.expire(now);
        if self.by_id.len() >= MAX_PUSH_PARENTS {
            return false;
        }
        if self.by_id.insert(id, (from, hops)).is_none() {
            self.order.push_back((now, id));
        }
        true
    }

    /// The parent of `id` and its hops, if remembered and not expired.
    pub(super) fn get(&self, id: &TxId) -> Option<&(PeerId, u32)> {
        self.by_id.get(id)
    }

    /// Forgets `id` (its parent was swapped: one swap per transaction).
    pub(super) fn remove(&mut self, id: &TxId) {
        self.by_id.remove(id);
    }

    pub(super) fn expire(&mut self, now: Instant) {
        while let Some(&(at, id)) = self.order.front() {
            if at.saturating_add(PUSH_PARENT_TTL) > now {
                break;
            }
            self.order.pop_front();
            self.by_id.remove(&id);
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_id.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TxHash;

    fn tx(n: u32) -> TxId {
        TxHash::of(&n.to_be_bytes()).id()
    }

    fn at(ms: u64) -> Instant {
        crate::time::Now::from_millis(ms).mono
    }

    #[test]
    fn parents_expire_and_the_table_is_bounded() {
        let mut p = PushParents::default();
        let peer: PeerId = "node-1".parse().expect("valid");
        assert!(p.insert(tx(0), peer.clone(), 4, at(0)));
        assert_eq!(p.get(&tx(0)), Some(&(peer.clone(), 4)));
        p.expire(at(PUSH_PARENT_TTL.as_millis() as u64));
        assert!(p.get(&tx(0)).is_none(), "expired");
        for n in 0..MAX_PUSH_PARENTS as u32 {
            assert!(p.insert(tx(n), peer.clone(), 1, at(5000)));
        }
        assert!(!p.insert(tx(u32::MAX), peer, 1, at(5001)), "full: refused");
        assert_eq!(p.len(), MAX_PUSH_PARENTS);
    }
}
