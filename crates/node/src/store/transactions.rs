//! Bodies of known transactions, for peers that fetch them and local readers.
//!
//! Bounded three ways: by count, by bytes, and by age (`transaction_cache_ttl`); the oldest go
//! first and every eviction is counted. Shared behind a mutex between the actor (which
//! inserts, in the order the core says) and the request handlers (which read); each critical
//! section is a map operation, never I/O.
//!
//! Kept by transaction id (the first half of the hash: what our peers pull by), with the whole
//! hash alongside (what Sorcha's peers pull by and local readers see).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use sorcha_peer_core::model::{ModelError, Timestamp, TxHash, TxId};

/// One stored transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTx {
    pub hash: TxHash,
    pub body: Arc<[u8]>,
    pub register_id: Option<String>,
    pub first_seen: Timestamp,
    /// `local`, or the id of the peer it came from.
    pub origin: String,
}

/// What a listing shows of one transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TxSummary {
    pub hash: String,
    pub size: usize,
    pub register_id: Option<String>,
    pub first_seen: u64,
    pub origin: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TxStoreStats {
    pub stored: u64,
    pub evicted_count: u64,
    pub evicted_bytes: u64,
    pub expired: u64,
    /// Bodies larger than the whole byte budget, never stored.
    pub refused: u64,
}

pub struct TxStore {
    map: HashMap<TxId, StoredTx>,
    /// Insertion order, oldest first: eviction and expiry walk it from the front.
    order: VecDeque<TxId>,
    bytes: usize,
    max_count: usize,
    max_bytes: usize,
    ttl: Duration,
    stats: TxStoreStats,
}

impl TxStore {
    pub fn new(max_count: usize, max_bytes: usize, ttl: Duration) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            max_count: max_count.max(1),
            max_bytes,
            ttl,
            stats: TxStoreStats::default(),
        }
    }

    /// Stores a body; false if it was known already or cannot fit at all.
    pub fn insert(
        &mut self,
        hash: TxHash,
        body: impl Into<Arc<[u8]>>,
        register_id: Option<String>,
        origin: String,
        now: Timestamp,
    ) -> bool {
        self.expire(now);
        let body: Arc<[u8]> = body.into();
        let id = hash.id();
        if self.map.contains_key(&id) {
            return false;
        }
        if body.len() > self.max_bytes {
            self.stats.refused += 1;
            return false;
        }
        while self.map.len() >= self.max_count || self.bytes + body.len() > self.max_bytes {
            if !self.evict_oldest() {
                break;
            }
            self.stats.evicted_count += 1;
        }
        self.bytes += body.len();
        self.order.push_back(id);
        let stored = StoredTx {
            hash,
            body,
            register_id,
            first_seen: now,
            origin,
        };
        self.map.insert(id, stored);
        self.stats.stored += 1;
        true
    }

    pub fn get(&self, id: &TxId) -> Option<StoredTx> {
        self.map.get(id).cloned()
    }

    /// The transaction `name`d as a request names it: its id (32 hex digits, as our peers
    /// ask) or its whole hash (64, as Sorcha's peers and operators ask), which must then match
    /// in full.
    pub fn find(&self, name: &str) -> Result<Option<StoredTx>, ModelError> {
        let (id, hash) = parse_name(name)?;
        let tx = self.map.get(&id);
        Ok(tx.filter(|tx| hash.is_none_or(|h| tx.hash == h)).cloned())
    }

    pub fn contains(&self, id: &TxId) -> bool {
        self.map.contains_key(id)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn stats(&self) -> TxStoreStats {
        self.stats
    }

    /// Up to `limit` transactions after the first `offset`, oldest first.
    pub fn page(&self, offset: usize, limit: usize) -> Vec<TxSummary> {
        self.order
            .iter()
            .skip(offset)
            .take(limit)
            .filter_map(|id| {
                self.map.get(id).map(|tx| TxSummary {
                    hash: tx.hash.to_string(),
                    size: tx.body.len(),
                    register_id: tx.register_id.clone(),
                    first_seen: tx.first_seen.as_millis(),
                    origin: tx.origin.clone(),
                })
            })
            .collect()
    }

    /// Drops transactions older than the TTL.
    pub fn expire(&mut self, now: Timestamp) {
        while let Some(id) = self.order.front() {
            let expired = self
                .map
                .get(id)
                .is_none_or(|tx| now.since(tx.first_seen) > self.ttl);
            if !expired {
                break;
            }
            if self.evict_oldest() {
                self.stats.expired += 1;
            }
        }
    }

    fn evict_oldest(&mut self) -> bool {
        let Some(id) = self.order.pop_front() else {
            return false;
        };
        if let Some(tx) = self.map.remove(&id) {
            self.bytes -= tx.body.len();
            self.stats.evicted_bytes += tx.body.len() as u64;
        }
        true
    }
}

/// A transaction's name as requests give it: its id (32 hex digits, as our peers ask), or its
/// whole hash (64, as Sorcha's peers and operators ask), which must then match in full.
pub fn parse_name(name: &str) -> Result<(TxId, Option<TxHash>), ModelError> {
    let id: TxId = name.parse()?;
    let hash = if name.len() == 64 {
        Some(name.parse()?)
    } else {
        None
    };
    Ok((id, hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    fn put(store: &mut TxStore, body: &[u8], at: u64) -> bool {
        store.insert(TxHash::of(body), body.to_vec(), None, "local".into(), t(at))
    }

    #[test]
    fn bounded_by_count_bytes_and_age() {
        let mut s = TxStore::new(2, 10, Duration::from_secs(60));
        assert!(put(&mut s, b"aaaa", 0));
        assert!(!put(&mut s, b"aaaa", 1), "known already");
        assert!(put(&mut s, b"bbbb", 2));
        assert!(put(&mut s, b"cccc", 3), "evicts the oldest by count");
        assert!(!s.contains(&TxHash::of(b"aaaa").id()));
        assert!(put(&mut s, b"dddddddd", 4), "evicts by bytes");
        assert_eq!(s.len(), 1);
        assert!(s.bytes() <= 10);
        assert!(!put(&mut s, b"this is far too large", 5));
        assert_eq!(s.stats().refused, 1);

        s.expire(t(4 + 61_000));
        assert!(s.is_empty());
        assert_eq!(s.stats().expired, 1);
    }

    #[test]
    fn pages_in_insertion_order() {
        let mut s = TxStore::new(10, 1000, Duration::from_secs(60));
        for (i, body) in [b"a", b"b", b"c"].iter().enumerate() {
            put(&mut s, *body, i as u64);
        }
        let page = s.page(1, 5);
        assert_eq!(page.len(), 2);
        assert_eq!(page[0].hash, TxHash::of(b"b").to_string());
        assert_eq!(s.get(&TxHash::of(b"c").id()).unwrap().body.as_ref(), b"c");
    }

    #[test]
    fn found_by_id_or_by_the_whole_hash_which_must_match() {
        let mut s = TxStore::new(10, 1000, Duration::from_secs(60));
        put(&mut s, b"body", 0);
        let hash = TxHash::of(b"body");
        let by_id = s.find(&hash.id().to_string()).unwrap().expect("by id");
        assert_eq!((by_id.hash, by_id.body.as_ref()), (hash, &b"body"[..]));
        assert!(s.find(&hash.to_string()).unwrap().is_some(), "by hash");
        let mut other = hash.to_string();
        other.replace_range(63.., "0");
        if other == hash.to_string() {
            other.replace_range(63.., "1");
        }
        assert_eq!(s.find(&other).unwrap(), None, "same id, another hash");
        assert_eq!(s.find(&TxHash::of(b"x").id().to_string()).unwrap(), None);
        let err = s.find("nope").unwrap_err();
        assert!(err.to_string().contains("transaction id"), "{err}");
    }
}
