//! When each node first had each transaction: one SSE subscriber per node on
//! `/api/v1/transactions/stream`, timed by the node's own stamp (`at_us`, its wall clock
//! when it took the transaction, on this machine's clock), or on receipt by a node that
//! sends none; the lag between the two is kept ([`Observations::stream_lags`]). A subscriber
//! reconnects after its node restarts; anything it may have missed (a restart, a `lagged`
//! event) is counted as a gap, and the settle check then lists that node's hashes instead.
//! What the node says of the way each transaction came (`from`, `how`, `hops`) is kept with
//! it, for the per-hop figures of [`crate::paths`].

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;
use sorcha_peer::clock::unix_micros;
use sorcha_peer_core::gossip::Way;
use tokio::task::JoinSet;

use crate::api::{TxKey, tx_key};
use crate::cluster::Cluster;

/// Longest SSE line kept; a longer one is skipped (the node's lines are ~150 bytes).
const MAX_LINE: usize = 16 * 1024;
/// Transactions remembered per node; beyond this, arrivals are counted but not timed.
const MAX_SEEN_PER_NODE: usize = 4_000_000;
/// Stream lags kept for the report; beyond this they are not sampled.
const MAX_LAGS: usize = 1_000_000;
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

type Arrivals = HashMap<TxKey, Arrived, BuildHasherDefault<KeyHasher>>;

/// When a node first had a transaction, and how it came, if the node said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Arrived {
    at: Instant,
    came: Option<Came>,
}

/// How a node says a transaction reached it: from which node of the cluster (`None`:
/// submitted there, or a peer the lab does not run), how, and after how many hops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Came {
    pub from: Option<usize>,
    pub how: Way,
    pub hops: u32,
}

/// What the subscribers saw, per node.
pub struct Observations {
    nodes: Vec<NodeSeen>,
    /// Receipt minus the node's stamp, ms, per stamped event (up to [`MAX_LAGS`]).
    lags: Mutex<Vec<f64>>,
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
            lags: Mutex::new(Vec::new()),
        }
    }

    /// How long after a node's own stamp the lab read each event, in ms: what timing on
    /// receipt would have added.
    pub fn stream_lags(&self) -> Vec<f64> {
        self.lags.lock().unwrap_or_else(|e| e.into_inner()).clone()
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
        self.lock(i).get(key).map(|a| a.at)
    }

    /// How `key` reached node `i`, if its stream said so.
    pub fn came(&self, i: usize, key: &TxKey) -> Option<Came> {
        self.lock(i).get(key).and_then(|a| a.came)
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
        self.record_timed(i, keys.into_iter().map(|key| (key, at, None)));
    }

    /// Records each key with its own time and way, under one lock.
    fn record_timed(
        &self,
        i: usize,
        keys: impl IntoIterator<Item = (TxKey, Instant, Option<Came>)>,
    ) {
        let node = &self.nodes[i];
        let mut seen = self.lock(i);
        for (key, at, came) in keys {
            if seen.len() >= MAX_SEEN_PER_NODE && !seen.contains_key(&key) {
                node.overflow.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            seen.entry(key).or_insert(Arrived { at, came });
        }
    }

    fn note_lags(&self, lags: Vec<f64>) {
        if lags.is_empty() {
            return;
        }
        let mut kept = self.lags.lock().unwrap_or_else(|e| e.into_inner());
        let room = MAX_LAGS.saturating_sub(kept.len());
        kept.extend(lags.into_iter().take(room));
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
        let mut index = PeerIndex::default();
        while let Ok(Some(chunk)) = response.chunk().await {
            let (at, unix_us) = (Instant::now(), unix_micros());
            let events = parser.feed(&chunk);
            let lagged = events.iter().filter(|e| **e == SseEvent::Lagged).count();
            node.gaps.fetch_add(lagged as u64, Ordering::Relaxed);
            let mut lags = Vec::new();
            let keys: Vec<_> = events
                .into_iter()
                .filter_map(|e| {
                    let SseEvent::Transaction(tx) = e else {
                        return None;
                    };
                    let came = tx.came.map(|(from, how, hops)| Came {
                        from: from.and_then(|id| index.of(&cluster, &id)),
                        how,
                        hops,
                    });
                    let Some(stamp) = tx.at_us else {
                        return Some((tx.key, at, came));
                    };
                    let (taken, lag) = stamped(at, unix_us, stamp);
                    lags.push(lag.as_secs_f64() * 1000.0);
                    Some((tx.key, taken, came))
                })
                .collect();
            seen.record_timed(i, keys);
            seen.note_lags(lags);
        }
        node.connected.store(false, Ordering::Release);
        tokio::time::sleep(RECONNECT_DELAY).await;
    }
}

/// Node indices by peer id, filled as ids are met (the cluster learns them at startup).
#[derive(Default)]
struct PeerIndex(HashMap<String, usize>);

impl PeerIndex {
    fn of(&mut self, cluster: &Cluster, id: &str) -> Option<usize> {
        if let Some(&i) = self.0.get(id) {
            return Some(i);
        }
        let i = (0..cluster.len()).find(|&i| cluster.peer_id(i) == Some(id))?;
        self.0.insert(id.to_owned(), i);
        Some(i)
    }
}

/// The events the lab cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseEvent {
    Transaction(TxEvent),
    Lagged,
}

/// A `transaction` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxEvent {
    pub key: TxKey,
    /// The node's stamp of when it took it, if it sent one.
    pub at_us: Option<u64>,
    /// The peer it came from (`None`: submitted there), how, and hops, if the node said.
    pub came: Option<(Option<String>, Way, u32)>,
}

#[derive(Deserialize)]
struct Delivered<'a> {
    hash: &'a str,
    #[serde(default)]
    at_us: Option<u64>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    how: Option<&'a str>,
    #[serde(default)]
    hops: Option<u32>,
}

impl Delivered<'_> {
    fn event(self) -> Option<TxEvent> {
        let came = match (self.how.and_then(Way::from_name), self.hops) {
            (Some(how), Some(hops)) => Some((self.from, how, hops)),
            _ => None,
        };
        Some(TxEvent {
            key: tx_key(self.hash)?,
            at_us: self.at_us,
            came,
        })
    }
}

/// The lab instant of a node's stamp `stamp_us`, read at `at` when the wall clock said
/// `unix_us` (the nodes run on this machine: one wall clock), and how long before the read it
/// was. A stamp from the future (a clock step) counts as the read.
pub fn stamped(at: Instant, unix_us: u64, stamp_us: u64) -> (Instant, Duration) {
    let lag = Duration::from_micros(unix_us.saturating_sub(stamp_us));
    match at.checked_sub(lag) {
        Some(taken) => (taken, lag),
        None => (at, Duration::ZERO),
    }
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
                    let event = serde_json::from_str::<Delivered>(&data)
                        .ok()
                        .and_then(Delivered::event);
                    out.extend(event.map(SseEvent::Transaction));
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
    fn a_stamped_event_is_timed_by_its_stamp_and_an_unstamped_one_on_receipt() {
        let hash = "0f".repeat(32);
        let text = format!(
            "event: transaction\ndata: {{\"hash\":\"{hash}\",\"size\":1,\"at_us\":1000,\"from\":\"ab\",\"how\":\"pulled\",\"hops\":3}}\n\nevent: transaction\ndata: {{\"hash\":\"{hash}\",\"size\":1}}\n\n"
        );
        let events = SseParser::default().feed(text.as_bytes());
        assert_eq!(
            events,
            vec![
                SseEvent::Transaction(TxEvent {
                    key: [0x0f; 32],
                    at_us: Some(1000),
                    came: Some((Some("ab".to_owned()), Way::Pulled, 3)),
                }),
                SseEvent::Transaction(TxEvent {
                    key: [0x0f; 32],
                    at_us: None,
                    came: None,
                })
            ]
        );
        let read = Instant::now() + Duration::from_secs(1);
        let (taken, lag) = stamped(read, 4_000, 1_000);
        assert_eq!(
            (read - taken, lag),
            (Duration::from_millis(3), Duration::from_millis(3))
        );
        // A stamp from the future (the wall clock stepped back) counts as the read.
        assert_eq!(stamped(read, 1_000, 4_000), (read, Duration::ZERO));
    }

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
        let tx = TxEvent {
            key: [0x0f; 32],
            at_us: None,
            came: None,
        };
        assert_eq!(events, vec![SseEvent::Transaction(tx), SseEvent::Lagged]);
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
