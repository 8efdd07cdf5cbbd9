//! When each node first had each transaction: one SSE subscriber per node on
//! `/api/v1/transactions/stream`, timestamps taken in the lab on receipt. A subscriber
//! reconnects after its node restarts; anything it may have missed (a restart, a `lagged`
//! event) is counted as a gap, and the settle check then lists that node's hashes instead.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::task::JoinSet;

use crate::api::{TxKey, tx_key};
use crate::cluster::Cluster;

/// Longest SSE line kept; a longer one is skipped (the node's lines are ~150 bytes).
const MAX_LINE: usize = 16 * 1024;
/// Transactions remembered per node; beyond this, arrivals are counted but not timed.
const MAX_SEEN_PER_NODE: usize = 4_000_000;
/// Pause before reconnecting a dropped stream.
const RECONNECT_DELAY: Duration = Duration::from_millis(50);

/// Hashes a [`TxKey`] by its first eight bytes: keys are SHA-256 hashes of the lab's own
/// bodies, uniform already. The lab records every node's every arrival (ten per transaction
/// in `throughput`), and SipHash over 32 bytes was a tenth of its CPU there; the lab shares
/// the machine's two cores with the nodes it measures.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut head = [0; 8];
        let n = bytes.len().min(8);
        head[..n].copy_from_slice(&bytes[..n]);
        self.0 ^= u64::from_le_bytes(head);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type Arrivals = HashMap<TxKey, Instant, BuildHasherDefault<KeyHasher>>;

/// What the subscribers saw, per node.
pub struct Observations {
    nodes: Vec<NodeSeen>,
}

#[derive(Default)]
struct NodeSeen {
    first: Mutex<Arrivals>,
    /// The stream is open now.
    connected: AtomicBool,
    /// Reconnects and `lagged` events: times the stream may have missed transactions.
    gaps: AtomicU64,
    /// Arrivals not recorded because the map was full.
    overflow: AtomicU64,
}

impl Observations {
    pub fn new(nodes: usize) -> Self {
        Self {
            nodes: (0..nodes).map(|_| NodeSeen::default()).collect(),
        }
    }

    pub fn is_connected(&self, i: usize) -> bool {
        self.nodes[i].connected.load(Ordering::Acquire)
    }

    pub fn gaps(&self, i: usize) -> u64 {
        self.nodes[i].gaps.load(Ordering::Acquire)
    }

    pub fn overflow(&self, i: usize) -> u64 {
        self.nodes[i].overflow.load(Ordering::Acquire)
    }

    /// When node `i` first had `key`, if its stream said so.
    pub fn first_seen(&self, i: usize, key: &TxKey) -> Option<Instant> {
        self.lock(i).get(key).copied()
    }

    /// How many of `keys` node `i` has not been seen to have.
    pub fn missing(&self, i: usize, keys: &[TxKey]) -> usize {
        let seen = self.lock(i);
        keys.iter().filter(|k| !seen.contains_key(*k)).count()
    }

    /// Records that node `i` has `key` (from a listing), at `at` unless already timed.
    pub fn record(&self, i: usize, key: TxKey, at: Instant) {
        self.record_all(i, [key], at);
    }

    /// [`record`](Self::record) for every key of one read, under one lock.
    pub fn record_all(&self, i: usize, keys: impl IntoIterator<Item = TxKey>, at: Instant) {
        let node = &self.nodes[i];
        let mut seen = self.lock(i);
        for key in keys {
            if seen.len() >= MAX_SEEN_PER_NODE && !seen.contains_key(&key) {
                node.overflow.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            seen.entry(key).or_insert(at);
        }
    }

    fn lock(&self, i: usize) -> std::sync::MutexGuard<'_, Arrivals> {
        self.nodes[i]
            .first
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

/// Starts one subscriber per node; they run until the set is dropped.
pub fn subscribe_all(cluster: Arc<Cluster>, seen: Arc<Observations>) -> JoinSet<()> {
    let mut set = JoinSet::new();
    for i in 0..cluster.len() {
        set.spawn(subscriber(i, cluster.clone(), seen.clone()));
    }
    set
}

async fn subscriber(i: usize, cluster: Arc<Cluster>, seen: Arc<Observations>) {
    let node = &seen.nodes[i];
    let mut ever_connected = false;
    loop {
        let base = match cluster.http(i) {
            Some(base) if cluster.is_live(i) => base,
            _ => {
                tokio::time::sleep(RECONNECT_DELAY).await;
                continue;
            }
        };
        let url = format!("{base}/api/v1/transactions/stream");
        let Ok(mut response) = cluster.api().client().get(&url).send().await else {
            tokio::time::sleep(RECONNECT_DELAY).await;
            continue;
        };
        if !response.status().is_success() {
            tokio::time::sleep(RECONNECT_DELAY).await;
            continue;
        }
        if ever_connected {
            node.gaps.fetch_add(1, Ordering::Relaxed);
        }
        ever_connected = true;
        node.connected.store(true, Ordering::Release);
        let mut parser = SseParser::default();
        while let Ok(Some(chunk)) = response.chunk().await {
            let at = Instant::now();
            let events = parser.feed(&chunk);
            let lagged = events.iter().filter(|e| **e == SseEvent::Lagged).count();
            node.gaps.fetch_add(lagged as u64, Ordering::Relaxed);
            let keys = events.into_iter().filter_map(|e| match e {
                SseEvent::Transaction(key) => Some(key),
                SseEvent::Lagged => None,
            });
            seen.record_all(i, keys, at);
        }
        node.connected.store(false, Ordering::Release);
        tokio::time::sleep(RECONNECT_DELAY).await;
    }
}

/// The events the lab cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseEvent {
    Transaction(TxKey),
    Lagged,
}

#[derive(Deserialize)]
struct Delivered<'a> {
    hash: &'a str,
}

/// An incremental `text/event-stream` reader: bytes in, complete events out.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    /// The current line grew past [`MAX_LINE`]; drop it up to its end.
    skipping: bool,
    event: String,
    data: String,
}

impl SseParser {
    pub fn feed(&mut self, mut bytes: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let end = bytes.iter().position(|&b| b == b'\n');
            let part = &bytes[..end.unwrap_or(bytes.len())];
            let room = MAX_LINE - self.line.len();
            self.line.extend_from_slice(&part[..part.len().min(room)]);
            self.skipping |= part.len() > room;
            let Some(end) = end else {
                break;
            };
            if !std::mem::take(&mut self.skipping) {
                self.line_done(&mut out);
            }
            self.line.clear();
            bytes = &bytes[end + 1..];
        }
        out
    }

    fn line_done(&mut self, out: &mut Vec<SseEvent>) {
        let line = String::from_utf8_lossy(&self.line);
        let line = line.strip_suffix('\r').unwrap_or(&line);
        if line.is_empty() {
            let (event, data) = (
                std::mem::take(&mut self.event),
                std::mem::take(&mut self.data),
            );
            match event.as_str() {
                "transaction" => {
                    let key = serde_json::from_str::<Delivered>(&data)
                        .ok()
                        .and_then(|d| tx_key(d.hash));
                    out.extend(key.map(SseEvent::Transaction));
                }
                "lagged" => out.push(SseEvent::Lagged),
                _ => {}
            }
            return;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.event = value.to_owned(),
            "data" => {
                if !self.data.is_empty() {
                    self.data.push('\n');
                }
                self.data.push_str(value);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_are_reassembled() {
        let hash = "0f".repeat(32);
        let text = format!(
            ": keep-alive\n\nevent: transaction\ndata: {{\"hash\":\"{hash}\",\"register_id\":null,\"size\":256}}\n\nevent: lagged\r\ndata: 3\r\n\r\n"
        );
        let mut parser = SseParser::default();
        let mut events = Vec::new();
        for chunk in text.as_bytes().chunks(7) {
            events.extend(parser.feed(chunk));
        }
        assert_eq!(
            events,
            vec![SseEvent::Transaction([0x0f; 32]), SseEvent::Lagged]
        );
    }

    #[test]
    fn overlong_lines_are_skipped_not_kept() {
        let mut parser = SseParser::default();
        let long = vec![b'x'; MAX_LINE * 2];
        assert!(parser.feed(b"event: transaction\ndata: ").is_empty());
        assert!(parser.feed(&long).is_empty());
        assert!(parser.line.len() <= MAX_LINE);
        assert!(parser.feed(b"\n\n").is_empty());
    }

    #[test]
    fn first_sighting_wins() {
        let seen = Observations::new(2);
        let (t0, t1) = (Instant::now(), Instant::now() + Duration::from_secs(1));
        seen.record(1, [1; 32], t0);
        seen.record(1, [1; 32], t1);
        assert_eq!(seen.first_seen(1, &[1; 32]), Some(t0));
        assert_eq!(seen.missing(1, &[[1; 32], [2; 32]]), 1);
        assert_eq!(seen.missing(0, &[[1; 32]]), 1);
    }
}
