//! Metrics through the OpenTelemetry API, exported in the Prometheus text format at `/metrics`.
//!
//! The names of the Sorcha design are kept exactly (dashboards written for C# peers work
//! unchanged), so counter suffixes are not added by the exporter: names that should end in
//! `_total` are written that way. Everything the node refuses or drops has a counter here.

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter, MeterProvider};
use opentelemetry_sdk::metrics::SdkMeterProvider;
use prometheus::{Encoder, Registry, TextEncoder};
use sorcha_peer_core::model::NodeState;

use sorcha_peer_core::gossip::GossipStats;
use sorcha_peer_core::membership::MembershipStats;

use super::messages::{kind_counter, kind_direction_counter};
use super::otlp::{self, OtlpError};
use super::wire::wire_counter;
use crate::address::AddressReport;
use crate::config::TelemetryConfig;

/// Declares [`Metrics`] from one table: each line names a field, how it is made (the maker
/// function of the same name below) and what `/metrics` calls and describes it, so a field
/// and its exported name cannot drift apart.
macro_rules! instruments {
    ($( $(#[doc = $doc:expr])* $field:ident: $make:ident($name:literal, $help:literal), )*) => {
        /// Every instrument the node records.
        pub struct Metrics {
            registry: Registry,
            /// Kept so the instruments stay registered for the life of the process; shut
            /// down at exit so an OTLP reader sends its last values.
            provider: SdkMeterProvider,
            /// What has been reported of the core's cumulative counters, to add only the
            /// difference.
            reported: std::sync::Mutex<MembershipStats>,
            reported_gossip: std::sync::Mutex<GossipStats>,
            $( $(#[doc = $doc])* pub $field: instrument_type!($make), )*
        }

        impl Metrics {
            fn with_instruments(registry: Registry, provider: SdkMeterProvider) -> Self {
                let meter = provider.meter("sorcha-peer");
                Self {
                    $( $field: $make(&meter, $name, $help), )*
                    registry,
                    provider,
                    reported: Default::default(),
                    reported_gossip: Default::default(),
                }
            }
        }
    };
}

macro_rules! instrument_type {
    (gauge) => { Gauge<i64> };
    (labelled_gauge) => { Gauge<i64> };
    (counter) => { Counter<u64> };
    (seconds_histogram) => { Histogram<f64> };
    (wire_counter) => { std::sync::Arc<super::wire::WireBytes> };
    (kind_counter) => { std::sync::Arc<super::messages::KindBytes> };
    (kind_direction_counter) => { std::sync::Arc<super::messages::KindDirectionBytes> };
}

instruments! {
    /// Peers known (Sorcha: peer_count).
    peer_count: gauge("peer_count", "Peers known to this node"),
    /// Peers healthy and in use (Sorcha: peer_count_active).
    peer_count_active: gauge("peer_count_active", "Healthy peers in use"),
    /// Transactions in the offline queue (Sorcha: transaction_queue_size).
    transaction_queue_size: gauge(
        "transaction_queue_size",
        "Transactions waiting in the offline queue"
    ),
    bandwidth_sent_bytes: kind_counter("bandwidth_sent_bytes", "Bytes sent to peers"),
    bandwidth_received_bytes: kind_counter("bandwidth_received_bytes", "Bytes received from peers"),
    connection_errors_total: counter(
        "connection_errors_total",
        "Failed connections and calls to peers"
    ),
    gossip_rounds_total: counter("gossip_rounds_total", "Gossip rounds run"),
    /// Seconds from first hearing of a transaction (an announcement) to holding its verified
    /// body, on this node.
    transaction_distribution_latency: seconds_histogram(
        "transaction_distribution_latency",
        "Seconds from first hearing of a transaction to holding its verified body"
    ),
    /// 0 offline, 1 degraded, 2 online (Sorcha: peer_service_status).
    peer_service_status: gauge("peer_service_status", "0 offline, 1 degraded, 2 online"),
    /// Requests refused because the node's command queue was full.
    commands_refused_total: counter(
        "commands_refused_total",
        "Requests refused because the node was saturated"
    ),
    /// PeerInfo entries from peers that failed validation, by reason.
    peer_info_rejected_total: counter(
        "peer_info_rejected_total",
        "Invalid PeerInfo entries dropped, by reason"
    ),
    /// 1 for the advertised address, labelled with how it was found.
    external_address_info: labelled_gauge(
        "external_address_info",
        "1 for the advertised address, labelled by source and NAT state"
    ),
    /// STUN answers ignored (wrong transaction id, class, malformed).
    stun_responses_ignored_total: counter(
        "stun_responses_ignored_total",
        "STUN answers ignored: wrong transaction id or class, malformed"
    ),
    /// Outbound channels closed to stay within the pool's bound.
    channels_evicted_total: counter(
        "channels_evicted_total",
        "Outbound channels closed to stay within the pool bound"
    ),
    /// Always 0: the core keeps its own deadlines (one per timer kind) and the actor sleeps
    /// until the earliest, so no timer can be refused. Kept so dashboards and the lab's
    /// summary keep the series.
    timers_refused_total: counter(
        "timers_refused_total",
        "Timers refused because too many were armed"
    ),
    /// Peer store writes refused (queue full or writer gone).
    store_writes_refused_total: counter(
        "store_writes_refused_total",
        "Peer store writes refused: queue full or writer gone"
    ),
    discovery_rounds_total: counter("discovery_rounds_total", "Peer discovery rounds run"),
    /// When a discovery round last brought a new peer, ms since the epoch.
    last_successful_discovery: gauge(
        "last_successful_discovery_timestamp_ms",
        "When a discovery round last brought a new peer (ms since the epoch)"
    ),
    /// Adverts membership refused, by reason.
    adverts_refused_total: counter(
        "adverts_refused_total",
        "Peer adverts refused by membership, by reason"
    ),
    /// Core outputs and requests dropped or expired, by kind.
    membership_dropped_total: counter(
        "membership_dropped_total",
        "Membership outputs and requests dropped or expired, by kind"
    ),
    /// Gossip sends, fetches and events dropped, by kind.
    gossip_dropped_total: counter(
        "gossip_dropped_total",
        "Gossip sends, fetches and outputs dropped, by kind"
    ),
    /// The eager-push tree's traffic and repairs (core `tree.rs`), by kind: pushes sent and
    /// received, duplicate pushes, prunes and grafts each way, announcements held for their
    /// push and those whose push never came (pulled and grafted), prunes withheld by the floor.
    gossip_tree_total: counter(
        "gossip_tree_total",
        "Eager-push tree pushes, prunes, grafts and push waits, by kind"
    ),
    /// Bodies received for transactions already known.
    duplicate_bodies_total: counter(
        "duplicate_bodies_total",
        "Bodies received for transactions already known"
    ),
    /// Announced entries received (one per transaction hash an announcement names), and
    /// those of transactions this node already knew: the announcements' redundancy.
    announcements_received_total: counter(
        "announcements_received_total",
        "Announced transaction entries received from peers"
    ),
    duplicate_announcements_total: counter(
        "duplicate_announcements_total",
        "Announced entries of transactions already known"
    ),
    /// Bodies pulled from peers.
    transaction_pulls_total: counter("transaction_pulls_total", "Bodies pulled from peers"),
    /// Pulled bodies whose SHA-256 did not match the announced hash.
    verification_failures_total: counter(
        "verification_failures_total",
        "Pulled bodies whose SHA-256 did not match the announced hash"
    ),
    anti_entropy_repairs_total: counter(
        "anti_entropy_repairs_total",
        "Transactions recovered by anti-entropy"
    ),
    /// Digests sent, by kind: `recent` (the last 30 s, every round) or `sweep` (a slice of
    /// the whole window: to new gossip peers, after a full reply, every 5 min).
    anti_entropy_digests_total: counter(
        "anti_entropy_digests_total",
        "Anti-entropy digests sent, by kind (recent, sweep)"
    ),
    /// Pulls that brought no body, by kind: `timeout`, `failed` (refused, unreachable, not
    /// found), `abandoned` (every announcer tried; anti-entropy may still bring it).
    gossip_fetch_failures_total: counter(
        "gossip_fetch_failures_total",
        "Pulls that brought no body, by kind (timeout, failed, abandoned)"
    ),
    /// Announced hashes waiting for their body, and pulls outstanding.
    gossip_pending: gauge("gossip_pending", "Announced transactions waiting for their body"),
    gossip_fetches_in_flight: gauge("gossip_fetches_in_flight", "Pulls outstanding"),
    /// Transactions in the body store, and their bytes.
    transaction_store_size: gauge("transaction_store_size", "Transactions whose bodies are kept"),
    transaction_store_bytes: gauge("transaction_store_bytes", "Bytes of kept transaction bodies"),
    /// Local subscribers that fell behind and missed notifications.
    subscriber_lagged_total: counter(
        "subscriber_lagged_total",
        "Notifications local subscribers missed by falling behind"
    ),
    /// Peers whose circuit breaker is open.
    circuit_breakers_open: gauge("circuit_breakers_open", "Peers whose circuit breaker is open"),
    /// Submissions refused because the offline queue was full.
    queue_refused_total: counter(
        "queue_refused_total",
        "Submissions refused because the offline queue was full"
    ),
    /// TLS handshakes on the peer port and of our dials, by side (`inbound`, `outbound`) and
    /// result (`ok`, `refused`: certificate or protocol error, `timeout`, `plaintext`: a
    /// plaintext connection taken in `mixed` mode, `plaintext_refused`: one refused in `mtls`,
    /// `busy`: too many handshakes at once, `fallback`: a dial that fell back to plaintext).
    tls_handshakes_total: counter(
        "tls_handshakes_total",
        "TLS handshakes by side and result"
    ),
    /// Calls that claimed a verified peer's id without its proof, by reason.
    identity_claims_refused_total: counter(
        "identity_claims_refused_total",
        "Calls claiming a verified peer's id without proving it, by reason"
    ),
    /// Peers that proved their id on an authenticated connection for the first time.
    peers_verified_total: counter(
        "peers_verified_total",
        "Peers that proved their id over TLS for the first time"
    ),
    /// Open TLS connections closed because a reloaded CA or CRL no longer trusts the peer's
    /// certificate, by side (`inbound`, `outbound`).
    tls_connections_untrusted_total: counter(
        "tls_connections_untrusted_total",
        "Open TLS connections closed because a reloaded CA or CRL no longer trusts the peer"
    ),
    /// Reloads of the CA and CRL files, by result (`ok`, `failed`).
    tls_trust_reloads_total: counter(
        "tls_trust_reloads_total",
        "Reloads of the CA and CRL files, by result"
    ),
    /// Events pushed out of the full event log (`log.events`).
    events_evicted_total: counter(
        "events_evicted_total",
        "Events pushed out of the full event log ring"
    ),
    /// Events live readers (dashboards, `events --follow`) missed by falling behind.
    event_subscribers_lagged_total: counter(
        "event_subscribers_lagged_total",
        "Events live event-stream readers missed by falling behind"
    ),
    /// The durable transaction store (`transactions.db`): rows and body bytes held, group
    /// commits and the writes in them, failed commits, rows evicted by the bounds and by the
    /// TTL, and writes refused (its job queue full, or it stopped).
    transaction_db_rows: gauge("transaction_db_rows", "Transactions in the durable store"),
    transaction_db_bytes: gauge("transaction_db_bytes", "Body bytes in the durable store"),
    transaction_db_commits_total: counter(
        "transaction_db_commits_total",
        "Group commits of the durable transaction store"
    ),
    transaction_db_writes_total: counter(
        "transaction_db_writes_total",
        "Writes committed by the durable transaction store"
    ),
    transaction_db_commit_failures_total: counter(
        "transaction_db_commit_failures_total",
        "Group commits of the durable transaction store that failed"
    ),
    transaction_db_evicted_total: counter(
        "transaction_db_evicted_total",
        "Durable store rows evicted, oldest first, by cache_max_transactions or cache_max_bytes"
    ),
    transaction_db_expired_total: counter(
        "transaction_db_expired_total",
        "Durable store rows deleted by transaction_cache_ttl"
    ),
    transaction_store_refused_total: counter(
        "transaction_store_refused_total",
        "Durable store writes refused: its queue full or its writer stopped"
    ),
    /// Announcements sent before their transactions were committed, because too many were
    /// already waiting for the store.
    transaction_store_unheld_total: counter(
        "transaction_store_unheld_total",
        "Transmissions sent without waiting for the durable store (too many held)"
    ),
    /// Requests, messages and bytes refused (or, for bytes, delayed too long) by a per-peer
    /// limit, by `kind` (membership, announcements, announced_transactions, pulls,
    /// pulls_in_flight, received_bytes).
    rate_limited_total: counter(
        "rate_limited_total",
        "Requests refused by a per-peer limit, by kind"
    ),
    /// Reads from a peer held back (briefly) to keep it within its byte rate.
    rate_limit_delay_seconds: seconds_histogram(
        "rate_limit_delay_seconds",
        "Time a peer's message waited to keep it within limits.received_bytes_per_second"
    ),
    rate_limiter_evictions_total: counter(
        "rate_limiter_evictions_total",
        "Per-peer limiter states dropped to keep the map bounded (least recently used first)"
    ),
    /// Connections refused at accept, by `port` (peer, http) and `reason` (max_connections,
    /// max_per_address, connection_rate).
    connections_refused_total: counter(
        "connections_refused_total",
        "Connections refused at accept, by port and reason"
    ),
    /// Connections we closed, by `port` and `reason` (header_timeout, keepalive_timeout, idle).
    connections_closed_total: counter(
        "connections_closed_total",
        "Connections closed by the node, by port and reason"
    ),
    connections_open: labelled_gauge("connections_open", "Connections open, by port"),
    /// Bodies sent to peers that waited for the node-wide upload budget.
    upload_delay_seconds: seconds_histogram(
        "upload_delay_seconds",
        "Time a body chunk waited for limits.upload_bytes_per_second"
    ),
    upload_delayed_bytes_total: counter(
        "upload_delayed_bytes_total",
        "Bytes of bodies that waited for limits.upload_bytes_per_second"
    ),
    peer_score_penalties_total: counter(
        "peer_score_penalties_total",
        "Penalties of the peer score, by offence"
    ),
    peer_bans_total: counter(
        "peer_bans_total",
        "Peers (or unverified peers' addresses) banned, by reason (operator, or the offence)"
    ),
    peers_banned: gauge("peers_banned", "Bans in force, ids and addresses"),
    dials_deferred_total: counter(
        "dials_deferred_total",
        "Dials of peers learnt from others held back or skipped, by reason"
    ),
    /// Every byte written to (`direction="sent"`) and read from (`received`) the TCP sockets
    /// of the peer port and of our dials: TLS, HTTP/2 and gRPC framing included, TCP/IP
    /// headers not (see [`super::wire`]).
    wire_bytes_total: wire_counter(
        "wire_bytes_total",
        "Bytes written to and read from peer sockets, by direction"
    ),
    /// Every message to and from peers as gRPC carries it (protobuf and the 5-byte prefix),
    /// by `kind` and `direction`: the bandwidth counters' kinds plus `membership` (discovery
    /// calls and answers) and `heartbeat` (unary and streamed heartbeats and answers).
    message_bytes_total: kind_direction_counter(
        "message_bytes_total",
        "Bytes of messages to and from peers, by kind and direction"
    ),
}

/// A gauge shown (at 0) from the start.
fn gauge(meter: &Meter, name: &'static str, help: &'static str) -> Gauge<i64> {
    let g = meter.i64_gauge(name).with_description(help).build();
    g.record(0, &[]);
    g
}

/// A gauge recorded only with labels (an unlabelled 0 would be a false series).
fn labelled_gauge(meter: &Meter, name: &'static str, help: &'static str) -> Gauge<i64> {
    meter.i64_gauge(name).with_description(help).build()
}

/// A counter shown (at 0) from the start.
fn counter(meter: &Meter, name: &'static str, help: &'static str) -> Counter<u64> {
    let c = meter.u64_counter(name).with_description(help).build();
    c.add(0, &[]);
    c
}

/// A histogram of seconds, from a millisecond to ten seconds; shown from its first sample.
fn seconds_histogram(meter: &Meter, name: &'static str, help: &'static str) -> Histogram<f64> {
    meter
        .f64_histogram(name)
        .with_description(help)
        .with_boundaries(vec![
            0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ])
        .build()
}

/// The metrics pipeline could not be built.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The Prometheus exporter refused its configuration.
    #[error("prometheus exporter: {0}")]
    Prometheus(#[from] opentelemetry_sdk::error::OTelSdkError),
    /// The OTLP exporter could not be built.
    #[error(transparent)]
    Otlp(#[from] OtlpError),
}

impl Metrics {
    /// The instruments, exported at `/metrics` only.
    pub fn new() -> Result<Self, opentelemetry_sdk::error::OTelSdkError> {
        let registry = Registry::new();
        let provider = SdkMeterProvider::builder().with_reader(prometheus_reader(&registry)?);
        Ok(Self::with_instruments(registry, provider.build()))
    }

    /// The instruments, exported at `/metrics` and, when `telemetry` names a receiver, pushed
    /// over OTLP as `instance` (the node's id). Call inside the tokio runtime.
    pub fn for_node(telemetry: &TelemetryConfig, instance: &str) -> Result<Self, MetricsError> {
        if !telemetry.otlp_enabled() {
            return Ok(Self::new()?);
        }
        let registry = Registry::new();
        let provider = SdkMeterProvider::builder()
            .with_reader(prometheus_reader(&registry)?)
            .with_reader(otlp::metric_reader(telemetry)?)
            .with_resource(otlp::resource(Some(instance)))
            .build();
        Ok(Self::with_instruments(registry, provider))
    }

    /// Stops the readers; an OTLP reader first pushes what it has. Blocks up to the SDK's
    /// export timeout: call it off the async workers.
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::debug!(error = %e, "metrics readers did not shut down cleanly");
        }
    }

    pub fn record_state(&self, state: NodeState) {
        let value = match state {
            NodeState::Offline => 0,
            NodeState::Degraded => 1,
            NodeState::Online => 2,
        };
        self.peer_service_status.record(value, &[]);
    }

    /// Marks `report`'s address as current (1) or past (0).
    pub fn record_address(&self, report: &AddressReport, value: i64) {
        let labels = [
            KeyValue::new(
                "address",
                format!("{}:{}", report.external_address, report.port),
            ),
            KeyValue::new("source", crate::address::label(&report.source)),
            KeyValue::new("nat", crate::address::label(&report.nat)),
        ];
        self.external_address_info.record(value, &labels);
    }

    pub fn record_discovery_success(&self, now: sorcha_peer_core::model::Timestamp) {
        self.last_successful_discovery.record(now.to_wire(), &[]);
    }

    /// Adds what the core's cumulative counters gained since the last call.
    pub fn record_membership(&self, stats: &MembershipStats) {
        let Ok(mut reported) = self.reported.lock() else {
            return; // A panic elsewhere poisoned it; metrics are not worth a second panic.
        };
        add_kind_deltas(
            &self.adverts_refused_total,
            "reason",
            advert_refusals,
            stats,
            &reported,
        );
        add_kind_deltas(
            &self.membership_dropped_total,
            "kind",
            membership_drops,
            stats,
            &reported,
        );
        add_kind_deltas(
            &self.identity_claims_refused_total,
            "reason",
            claim_refusals,
            stats,
            &reported,
        );
        if stats.peers_verified > reported.peers_verified {
            let gained = stats.peers_verified - reported.peers_verified;
            self.peers_verified_total.add(gained, &[]);
        }
        *reported = *stats;
    }

    /// Bytes sent to peers, by message kind. What is counted, on both ends of a call:
    ///
    /// - each message as gRPC carries it, [`wire_len`]: its protobuf encoding (envelope
    ///   included, before any compression) plus the 5-byte gRPC length prefix; HTTP/2 frames
    ///   and headers and TLS are not counted, and a call made over REST counts as its
    ///   protobuf equivalent (its JSON is larger);
    /// - gossip and pulls, with the same kinds both ways ([`message_kind`]): `PeerMessage`s
    ///   (`announce`, `push`, `digest`, `digest_reply`, `fetch`), `GetTransaction` and
    ///   `StreamTransaction` requests (`fetch`), their answers and the `TRANSACTION_RESPONSE`s
    ///   that answer a `GOSSIP_FETCH` (`body`), `NotifyTransaction` (`notify`). Not counted:
    ///   membership and heartbeat calls, the heartbeats on a stream, the acks of unary calls;
    /// - a message read as it arrives (refused or not); a message sent once it is queued on a
    ///   stream or its unary call is answered (retries count once).
    ///
    /// Each also counts in `message_bytes_total`, which [`Metrics::record_message`] completes
    /// with what these leave out.
    pub fn record_sent(&self, kind: &'static str, bytes: u64) {
        self.bandwidth_sent_bytes.add(kind, bytes);
        self.record_message(kind, "sent", bytes);
    }

    /// Bytes received from peers, by message kind, counted as [`Metrics::record_sent`] says.
    pub fn record_received(&self, kind: &'static str, bytes: u64) {
        self.bandwidth_received_bytes.add(kind, bytes);
        self.record_message(kind, "received", bytes);
    }

    /// `message_bytes_total` alone, for the messages the gossip bandwidth counters leave out
    /// (membership calls, heartbeats, their answers). `direction` is `sent` or `received`.
    pub fn record_message(&self, kind: &'static str, direction: &'static str, bytes: u64) {
        self.message_bytes_total.add(kind, direction, bytes);
    }

    /// Adds what the gossip core's cumulative counters gained since the last call.
    pub fn record_gossip(&self, stats: &GossipStats) {
        let Ok(mut reported) = self.reported_gossip.lock() else {
            return;
        };
        let (now, before) = (stats, &*reported);
        let unlabelled: [(_, StatField); 7] = [
            (&self.gossip_rounds_total, |s| s.announce_messages_sent),
            (&self.duplicate_bodies_total, |s| s.duplicate_bodies),
            (&self.announcements_received_total, |s| {
                s.announcements_received
            }),
            (&self.duplicate_announcements_total, |s| {
                s.duplicate_announcements
            }),
            (&self.transaction_pulls_total, |s| s.fetches),
            (&self.verification_failures_total, |s| s.bad_bodies),
            (&self.anti_entropy_repairs_total, |s| s.anti_entropy_repairs),
        ];
        for (counter, field) in unlabelled {
            counter.add(field(now).saturating_sub(field(before)), &[]);
        }
        let by_kind = [
            (
                &self.anti_entropy_digests_total,
                digest_kinds as KindRows<GossipStats>,
            ),
            (&self.gossip_dropped_total, gossip_drop_kinds),
            (&self.gossip_fetch_failures_total, fetch_failure_kinds),
            (&self.gossip_tree_total, tree_kinds),
        ];
        for (counter, rows) in by_kind {
            add_kind_deltas(counter, "kind", rows, now, before);
        }
        *reported = *stats;
    }

    pub fn reject_peer_info(&self, reason: &'static str) {
        self.peer_info_rejected_total
            .add(1, &[KeyValue::new("reason", reason)]);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec fails only on invalid metric families, which the OpenTelemetry
        // exporter does not produce; an empty answer is better than a panic if it ever did.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The reader behind `/metrics`: Sorcha's names exactly, no suffixes, units or target info.
fn prometheus_reader(
    registry: &Registry,
) -> Result<opentelemetry_prometheus::PrometheusExporter, opentelemetry_sdk::error::OTelSdkError> {
    opentelemetry_prometheus::exporter()
        .with_registry(registry.clone())
        .without_counter_suffixes()
        .without_units()
        .without_target_info()
        .scope_info_enabled(false)
        .build()
}

/// One counter of the gossip core's stats.
type StatField = fn(&GossipStats) -> u64;

/// The counters of one labelled metric in a core's cumulative stats: `(label, value)` rows.
type KindRows<S> = fn(&S) -> Vec<(&'static str, u64)>;

/// Adds to `counter`, labelled `key` = each row's label, what `rows` gained from `before` to
/// `now`.
fn add_kind_deltas<S>(
    counter: &Counter<u64>,
    key: &'static str,
    rows: KindRows<S>,
    now: &S,
    before: &S,
) {
    for ((label, now), (_, before)) in rows(now).into_iter().zip(rows(before)) {
        if now > before {
            counter.add(now - before, &[KeyValue::new(key, label)]);
        }
    }
}

/// `adverts_refused_total{reason}` as membership counts it.
fn advert_refusals(s: &MembershipStats) -> Vec<(&'static str, u64)> {
    vec![
        ("banned", s.refused_banned),
        ("self", s.refused_self),
        ("bad_address", s.refused_bad_address),
        ("bad_port", s.refused_bad_port),
        ("oversized", s.refused_oversized),
        ("stale", s.refused_stale),
        ("list_full", s.refused_list_full),
        ("unverified_full", s.refused_unverified_full),
    ]
}

/// `identity_claims_refused_total{reason}`: calls in a verified peer's name that did not come
/// over its connection (`not_proven`), or whose certificate proved another id (`id_mismatch`).
fn claim_refusals(s: &MembershipStats) -> Vec<(&'static str, u64)> {
    vec![
        ("not_proven", s.refused_not_proven),
        ("id_mismatch", s.refused_id_mismatch),
    ]
}

/// `membership_dropped_total{kind}`.
fn membership_drops(s: &MembershipStats) -> Vec<(&'static str, u64)> {
    vec![
        ("outputs", s.outputs_dropped),
        ("sends", s.sends_refused),
        ("expired_requests", s.requests_expired),
        ("unknown_responses", s.responses_unknown),
    ]
}

/// `anti_entropy_digests_total{kind}`: recent digests (every round) and sweeps.
fn digest_kinds(s: &GossipStats) -> Vec<(&'static str, u64)> {
    vec![
        ("recent", s.digests_sent.saturating_sub(s.sweeps_sent)),
        ("sweep", s.sweeps_sent),
    ]
}

/// `gossip_dropped_total{kind}` as the gossip core counts it.
fn gossip_drop_kinds(s: &GossipStats) -> Vec<(&'static str, u64)> {
    vec![
        ("pending_full", s.dropped_pending_full),
        ("announcers_full", s.dropped_announcers_full),
        ("over_message_limit", s.dropped_over_message_limit),
        ("bad_entries", s.refused_bad_entries),
        ("oversized_bodies", s.refused_oversized_bodies),
        ("outputs", s.outputs_dropped),
        ("known_evicted", s.known_evicted),
        ("bad_digest", s.refused_bad_digests),
    ]
}

/// `gossip_tree_total{kind}`: the eager push's own counters.
fn tree_kinds(s: &GossipStats) -> Vec<(&'static str, u64)> {
    vec![
        ("push_sent", s.pushes_sent),
        ("push_received", s.pushes_received),
        ("push_duplicate", s.duplicate_pushes),
        ("prune_sent", s.prunes_sent),
        ("prune_received", s.prunes_received),
        ("prune_withheld", s.prunes_withheld),
        ("graft_sent", s.grafts_sent),
        ("graft_received", s.grafts_received),
        ("push_awaited", s.pushes_awaited),
        ("push_missed", s.pushes_missed),
        ("shortcut_sent", s.shortcuts_sent),
        ("shortcut_received", s.shortcuts_received),
    ]
}

/// `gossip_fetch_failures_total{kind}`.
fn fetch_failure_kinds(s: &GossipStats) -> Vec<(&'static str, u64)> {
    vec![
        ("timeout", s.fetch_timeouts),
        ("failed", s.fetch_failures),
        ("abandoned", s.fetches_abandoned),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorcha_metric_names_are_exported_as_is() {
        let m = Metrics::new().unwrap();
        m.record_state(NodeState::Online);
        m.transaction_distribution_latency.record(0.02, &[]);
        let text = m.render();
        for name in [
            "peer_count",
            "peer_count_active",
            "transaction_queue_size",
            "bandwidth_sent_bytes",
            "bandwidth_received_bytes",
            "connection_errors_total",
            "gossip_rounds_total",
            "transaction_distribution_latency_bucket",
            "peer_service_status",
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(name)),
                "{name} missing from:\n{text}"
            );
        }
        assert!(text.contains("peer_service_status 2"), "{text}");
        assert!(!text.contains("connection_errors_total_total"), "{text}");
    }

    #[test]
    fn digests_are_counted_by_kind_once() {
        let m = Metrics::new().unwrap();
        let stats = GossipStats {
            digests_sent: 5,
            sweeps_sent: 2,
            ..Default::default()
        };
        m.record_gossip(&stats);
        m.record_gossip(&stats);
        let text = m.render();
        for (kind, n) in [("recent", 3), ("sweep", 2)] {
            let line = format!("anti_entropy_digests_total{{kind=\"{kind}\"");
            let found = text.lines().find(|l| l.starts_with(&line));
            assert!(
                found.is_some_and(|l| l.ends_with(&format!(" {n}"))),
                "{kind}: {found:?} in\n{text}"
            );
        }
    }
}
