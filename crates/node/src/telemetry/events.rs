//! The event log: what happened to this node, as typed events an operator can read back
//! (`GET /api/v1/events`), follow live (`/api/v1/events/stream`, the dashboard) or grep for.
//!
//! [`EventLog`] keeps the newest events in a ring of a configured size (`log.events`); an
//! event pushed out of a full ring is counted (`events_evicted_total`), never kept elsewhere,
//! and the log is not persisted across restarts. Live readers subscribe to a broadcast channel
//! of [`SUBSCRIBER_CAPACITY`] events each; one that falls behind misses the oldest, is told how
//! many (a `lagged` message) and is counted (`event_subscribers_lagged_total`). Limits that can
//! be hit many times a second are throttled to one event per limit per second
//! ([`EventLog::limit_hit`]), and refusals to one per peer per second ([`EventLog::refused`]);
//! the count of the rest rides on the next one.
//!
//! Layers record events where they see them: the actor (peers, state, discovery, bans,
//! accepted transactions, bad bodies, address), the HTTP port (queued transactions), the
//! flusher (flushed, dead-lettered) and the handle (a saturated command queue).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use opentelemetry::metrics::Counter;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::Metrics;

/// Events buffered per live reader; a reader further behind misses the oldest (counted).
/// A dashboard drains an event in microseconds, so this is seconds of a burst.
pub const SUBSCRIBER_CAPACITY: usize = 1024;

/// One `limit_hit` event per limit, one `peer_refused` per peer, per this interval at most.
const THROTTLE_INTERVAL: Duration = Duration::from_secs(1);
/// Keys throttled at once at most (limits are few; refused peers could be many).
const MAX_THROTTLED: usize = 1024;

/// Events kept when the configuration does not say (`log.events`).
pub const DEFAULT_CAPACITY: usize = 10_000;

/// What happened. The names (snake_case) are the API's `kind` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A peer joined the active set (answered and is heartbeaten).
    PeerConnected,
    /// An active peer stopped answering, or was removed.
    PeerDisconnected,
    /// A peer proved the id it claims (its certificate matches).
    PeerVerified,
    /// A peer was refused: its registration, its certificate or its claim.
    PeerRefused,
    /// The node's state changed: online, degraded, offline.
    StateChanged,
    /// A discovery round ran.
    DiscoveryRound,
    /// A peer was banned.
    Banned,
    /// A peer's ban was lifted.
    Unbanned,
    /// The peer score banned a peer (or an unverified peer's address).
    PeerBanned,
    /// A transaction's body was accepted (submitted here, or pushed, pulled or repaired from a
    /// peer).
    TxAccepted,
    /// A submission waits in the offline queue (no healthy peer).
    TxQueued,
    /// Queued transactions were handed to gossip.
    TxFlushed,
    /// A queued transaction gave up and moved to the dead letters.
    TxDeadLettered,
    /// A peer served a body whose hash does not match.
    BadBody,
    /// A bound was reached and something was refused or dropped.
    LimitHit,
    /// The advertised address changed.
    AddressChanged,
    /// The configuration was loaded (at start).
    ConfigLoaded,
}

impl EventKind {
    /// Every kind, in declaration order.
    pub const ALL: [EventKind; 17] = [
        Self::PeerConnected,
        Self::PeerDisconnected,
        Self::PeerVerified,
        Self::PeerRefused,
        Self::StateChanged,
        Self::DiscoveryRound,
        Self::Banned,
        Self::Unbanned,
        Self::PeerBanned,
        Self::TxAccepted,
        Self::TxQueued,
        Self::TxFlushed,
        Self::TxDeadLettered,
        Self::BadBody,
        Self::LimitHit,
        Self::AddressChanged,
        Self::ConfigLoaded,
    ];

    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PeerConnected => "peer_connected",
            Self::PeerDisconnected => "peer_disconnected",
            Self::PeerVerified => "peer_verified",
            Self::PeerRefused => "peer_refused",
            Self::StateChanged => "state_changed",
            Self::DiscoveryRound => "discovery_round",
            Self::Banned => "banned",
            Self::Unbanned => "unbanned",
            Self::PeerBanned => "peer_banned",
            Self::TxAccepted => "tx_accepted",
            Self::TxQueued => "tx_queued",
            Self::TxFlushed => "tx_flushed",
            Self::TxDeadLettered => "tx_dead_lettered",
            Self::BadBody => "bad_body",
            Self::LimitHit => "limit_hit",
            Self::AddressChanged => "address_changed",
            Self::ConfigLoaded => "config_loaded",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|k| *k == self).unwrap_or(0)
    }
}

impl std::str::FromStr for EventKind {
    type Err = UnknownKind;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == raw)
            .ok_or_else(|| UnknownKind(raw.to_owned()))
    }
}

/// A `kind` that names no event kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event kind {0:?}: expected one of {names}", names = kind_names())]
pub struct UnknownKind(pub String);

/// Every kind's name, comma-separated, for error messages.
pub fn kind_names() -> String {
    EventKind::ALL.map(EventKind::as_str).join(", ")
}

/// One thing that happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the log, from 1; readers resume after the last one they saw.
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub time: u64,
    pub kind: EventKind,
    /// The peer it concerns, if one.
    pub peer: Option<String>,
    /// What happened, for people.
    pub detail: String,
}

/// Which events a reader wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only these kinds (empty: all).
    pub kinds: Vec<EventKind>,
    /// Only events about this peer.
    pub peer: Option<String>,
    /// Only events after this sequence number.
    pub after_seq: Option<u64>,
    /// Only events at or after this time (ms since the epoch).
    pub from_time: Option<u64>,
}

impl Filter {
    pub fn matches(&self, event: &Event) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&event.kind))
            && self
                .peer
                .as_ref()
                .is_none_or(|p| event.peer.as_ref() == Some(p))
            && self.after_seq.is_none_or(|s| event.seq > s)
            && self.from_time.is_none_or(|t| event.time >= t)
    }
}

/// The ring and what the log has counted.
struct Ring {
    events: VecDeque<Event>,
    next_seq: u64,
    /// Per throttled key (a limit, a refused peer): when its last event went out, and how many
    /// were held back since.
    throttled: HashMap<String, (Option<Instant>, u64)>,
}

/// The node's event log. Shared (`Arc`) by every layer that records or reads events.
pub struct EventLog {
    capacity: usize,
    ring: Mutex<Ring>,
    live: broadcast::Sender<Event>,
    /// Events recorded per kind since start (evicted ones included), for rates.
    totals: [AtomicU64; EventKind::ALL.len()],
    evicted: Counter<u64>,
    lagged: Counter<u64>,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl EventLog {
    /// A log keeping the newest `capacity` events (at least 1).
    pub fn new(capacity: usize, metrics: &Metrics) -> Self {
        let (live, _) = broadcast::channel(SUBSCRIBER_CAPACITY);
        Self {
            capacity: capacity.max(1),
            ring: Mutex::new(Ring {
                events: VecDeque::new(),
                next_seq: 1,
                throttled: HashMap::new(),
            }),
            live,
            totals: std::array::from_fn(|_| AtomicU64::new(0)),
            evicted: metrics.events_evicted_total.clone(),
            lagged: metrics.event_subscribers_lagged_total.clone(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Records an event now.
    pub fn record(&self, kind: EventKind, peer: Option<String>, detail: impl Into<String>) {
        self.record_at(crate::clock::now().as_millis(), kind, peer, detail.into());
    }

    fn record_at(&self, time: u64, kind: EventKind, peer: Option<String>, detail: String) {
        self.totals[kind.index()].fetch_add(1, Ordering::Relaxed);
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let event = Event {
            seq: ring.next_seq,
            time,
            kind,
            peer,
            detail,
        };
        ring.next_seq += 1;
        if ring.events.len() >= self.capacity {
            ring.events.pop_front();
            self.evicted.add(1, &[]);
        }
        // Sent under the lock so live readers see events in sequence order; cloned only for
        // them (an event per accepted transaction).
        if self.live.receiver_count() > 0 {
            let _ = self.live.send(event.clone());
        }
        ring.events.push_back(event);
    }

    /// A bound was reached (`limit` names it: command_queue, offline_queue, ...). At most one
    /// event per limit per second goes out; it says how many hits it stands for.
    pub fn limit_hit(&self, limit: &'static str, peer: Option<String>, detail: &str) {
        if let Some(more) = self.throttle(limit.to_owned()) {
            let detail = format!("{limit}: {detail}{more}");
            self.record(EventKind::LimitHit, peer, detail);
        }
    }

    /// A peer was refused (a banned peer's calls, a failed proof). At most one event per peer
    /// per second, so a peer hammering the node cannot flush the log with its refusals.
    pub fn refused(&self, peer: &str, detail: &str) {
        if let Some(more) = self.throttle(format!("refused {peer}")) {
            let detail = format!("{detail}{more}");
            self.record(EventKind::PeerRefused, Some(peer.to_owned()), detail);
        }
    }

    /// Whether an event under `key` may go out now; if so, the note of how many were held
    /// back since the last one (empty for none).
    fn throttle(&self, key: String) -> Option<String> {
        let now = Instant::now();
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        if ring.throttled.len() >= MAX_THROTTLED && !ring.throttled.contains_key(&key) {
            // Forgetting every slot at worst lets one extra event per key through.
            ring.throttled.clear();
        }
        let entry = ring.throttled.entry(key).or_insert((None, 0));
        if entry
            .0
            .is_some_and(|sent| now.duration_since(sent) < THROTTLE_INTERVAL)
        {
            entry.1 += 1;
            return None;
        }
        entry.0 = Some(now);
        let held_back = std::mem::take(&mut entry.1);
        Some(if held_back > 0 {
            format!(" (+{held_back} more since the last report)")
        } else {
            String::new()
        })
    }

    /// Events matching `filter`: with `after_seq`, the first `limit` after it (paging
    /// forward); otherwise the newest `limit`. Oldest first either way.
    pub fn query(&self, filter: &Filter, limit: usize) -> Vec<Event> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let matching = ring.events.iter().filter(|e| filter.matches(e));
        if filter.after_seq.is_some() {
            matching.take(limit).cloned().collect()
        } else {
            let mut newest: Vec<Event> = matching.rev().take(limit).cloned().collect();
            newest.reverse();
            newest
        }
    }

    /// The sequence number the next event will get.
    pub fn next_seq(&self) -> u64 {
        self.ring.lock().unwrap_or_else(|p| p.into_inner()).next_seq
    }

    /// Events of `kind` recorded since start, evicted ones included.
    pub fn total(&self, kind: EventKind) -> u64 {
        self.totals[kind.index()].load(Ordering::Relaxed)
    }

    /// Every event from now on, [`SUBSCRIBER_CAPACITY`] buffered.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.live.subscribe()
    }

    /// Counts events a live reader missed by falling behind.
    pub fn lagged(&self, missed: u64) {
        self.lagged.add(missed, &[]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(capacity: usize) -> (EventLog, Metrics) {
        let metrics = Metrics::new().unwrap();
        (EventLog::new(capacity, &metrics), metrics)
    }

    #[test]
    fn the_ring_keeps_the_newest_and_counts_the_rest() {
        let (log, metrics) = log(3);
        for i in 0..5 {
            log.record(EventKind::TxAccepted, None, format!("tx {i}"));
        }
        let all = log.query(&Filter::default(), 100);
        assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 4, 5]);
        assert_eq!(log.total(EventKind::TxAccepted), 5);
        assert!(
            metrics.render().contains("events_evicted_total 2"),
            "{}",
            metrics.render()
        );
    }

    #[test]
    fn queries_filter_by_kind_peer_and_position() {
        let (log, _m) = log(100);
        log.record(EventKind::Banned, Some("aa".into()), "x");
        log.record(EventKind::Unbanned, Some("aa".into()), "y");
        log.record(EventKind::Banned, Some("bb".into()), "z");
        let banned = Filter {
            kinds: vec![EventKind::Banned],
            ..Default::default()
        };
        assert_eq!(log.query(&banned, 10).len(), 2);
        let of_aa = Filter {
            peer: Some("aa".into()),
            ..Default::default()
        };
        assert_eq!(log.query(&of_aa, 10).len(), 2);
        let after = Filter {
            after_seq: Some(1),
            ..Default::default()
        };
        let page = log.query(&after, 1);
        assert_eq!(page[0].seq, 2, "paging forward starts after the position");
        let newest = log.query(&Filter::default(), 1);
        assert_eq!(newest[0].seq, 3, "without a position the newest come back");
    }

    #[test]
    fn limit_events_are_throttled_and_say_how_many_they_stand_for() {
        let (log, _m) = log(100);
        for _ in 0..50 {
            log.limit_hit("command_queue", None, "full");
        }
        let limits = Filter {
            kinds: vec![EventKind::LimitHit],
            ..Default::default()
        };
        assert_eq!(log.query(&limits, 100).len(), 1);
        log.limit_hit("offline_queue", None, "full");
        assert_eq!(
            log.query(&limits, 100).len(),
            2,
            "each limit has its own slot"
        );
        for _ in 0..10 {
            log.refused("aa", "peer is banned");
        }
        let refused = Filter {
            kinds: vec![EventKind::PeerRefused],
            ..Default::default()
        };
        assert_eq!(log.query(&refused, 100).len(), 1, "one per peer per second");
    }

    #[test]
    fn kinds_parse_from_their_names_and_refuse_others() {
        for kind in EventKind::ALL {
            assert_eq!(kind.as_str().parse::<EventKind>(), Ok(kind));
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
        let e = "nope".parse::<EventKind>().unwrap_err();
        assert!(e.to_string().contains("peer_verified"), "{e}");
    }

    #[test]
    fn every_kind_can_be_recorded_and_read_back() {
        // The verification kinds are recorded by the TLS layer; this proves the log carries
        // them like any other.
        let (log, _m) = log(100);
        for kind in EventKind::ALL {
            log.record(kind, Some("ab".into()), kind.as_str());
        }
        let kinds: Vec<_> = log
            .query(&Filter::default(), 100)
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(kinds, EventKind::ALL);
    }

    #[tokio::test]
    async fn live_readers_get_events_in_order_and_laggards_are_told() {
        let (log, metrics) = log(10_000);
        let mut reader = log.subscribe();
        log.record(EventKind::PeerConnected, Some("aa".into()), "up");
        assert_eq!(reader.recv().await.unwrap().seq, 1);
        for _ in 0..SUBSCRIBER_CAPACITY + 5 {
            log.record(EventKind::TxAccepted, None, "t");
        }
        match reader.recv().await {
            Err(broadcast::error::RecvError::Lagged(n)) => {
                log.lagged(n);
                assert_eq!(n, 5);
            }
            other => panic!("expected a lag, got {other:?}"),
        }
        assert!(
            metrics
                .render()
                .contains("event_subscribers_lagged_total 5")
        );
    }
}
