//! Metrics through the OpenTelemetry API, exported in the Prometheus text format at `/metrics`.
//!
//! The names of the Sorcha design are kept exactly (dashboards written for C# peers work
//! unchanged), so counter suffixes are not added by the exporter: names that should end in
//! `_total` are written that way. Everything the node refuses or drops has a counter here.

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, MeterProvider};
use opentelemetry_sdk::metrics::SdkMeterProvider;
use prometheus::{Encoder, Registry, TextEncoder};
use sorcha_peer_core::model::NodeState;

use crate::address::AddressReport;

/// Every instrument the node records.
pub struct Metrics {
    registry: Registry,
    /// Kept so the instruments stay registered for the life of the process.
    _provider: SdkMeterProvider,
    /// Peers known (Sorcha: peer_count).
    pub peer_count: Gauge<i64>,
    /// Peers healthy and in use (Sorcha: peer_count_active).
    pub peer_count_active: Gauge<i64>,
    /// Transactions in the offline queue (Sorcha: transaction_queue_size).
    pub transaction_queue_size: Gauge<i64>,
    pub bandwidth_sent_bytes: Counter<u64>,
    pub bandwidth_received_bytes: Counter<u64>,
    pub connection_errors_total: Counter<u64>,
    pub gossip_rounds_total: Counter<u64>,
    /// Seconds from first sight of a transaction to its distribution.
    pub transaction_distribution_latency: Histogram<f64>,
    /// 0 offline, 1 degraded, 2 online (Sorcha: peer_service_status).
    pub peer_service_status: Gauge<i64>,
    /// Requests refused because the node's command queue was full.
    pub commands_refused_total: Counter<u64>,
    /// PeerInfo entries from peers that failed validation, by reason.
    pub peer_info_rejected_total: Counter<u64>,
    /// Registrations refused (self id, banned, list full).
    pub registrations_refused_total: Counter<u64>,
    /// Core events dropped because the runtime fell behind.
    pub events_dropped_total: Counter<u64>,
    /// 1 for the advertised address, labelled with how it was found.
    pub external_address_info: Gauge<i64>,
    /// STUN answers ignored (wrong transaction id, class, malformed).
    pub stun_responses_ignored_total: Counter<u64>,
}

impl Metrics {
    pub fn new() -> Result<Self, opentelemetry_sdk::error::OTelSdkError> {
        let registry = Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_counter_suffixes()
            .without_units()
            .without_target_info()
            .scope_info_enabled(false)
            .build()?;
        let provider = SdkMeterProvider::builder().with_reader(exporter).build();
        let meter = provider.meter("sorcha-peer");
        let gauge = |name: &'static str, help: &'static str| {
            let g = meter.i64_gauge(name).with_description(help).build();
            g.record(0, &[]);
            g
        };
        let counter = |name: &'static str, help: &'static str| {
            let c = meter.u64_counter(name).with_description(help).build();
            c.add(0, &[]);
            c
        };
        Ok(Self {
            peer_count: gauge("peer_count", "Peers known to this node"),
            peer_count_active: gauge("peer_count_active", "Healthy peers in use"),
            transaction_queue_size: gauge(
                "transaction_queue_size",
                "Transactions waiting in the offline queue",
            ),
            bandwidth_sent_bytes: counter("bandwidth_sent_bytes", "Bytes sent to peers"),
            bandwidth_received_bytes: counter(
                "bandwidth_received_bytes",
                "Bytes received from peers",
            ),
            connection_errors_total: counter(
                "connection_errors_total",
                "Failed connections and calls to peers",
            ),
            gossip_rounds_total: counter("gossip_rounds_total", "Gossip rounds run"),
            transaction_distribution_latency: meter
                .f64_histogram("transaction_distribution_latency")
                .with_description("Seconds from first sight of a transaction to its distribution")
                .with_boundaries(vec![
                    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ])
                .build(),
            peer_service_status: gauge("peer_service_status", "0 offline, 1 degraded, 2 online"),
            commands_refused_total: counter(
                "commands_refused_total",
                "Requests refused because the node was saturated",
            ),
            peer_info_rejected_total: counter(
                "peer_info_rejected_total",
                "Invalid PeerInfo entries dropped, by reason",
            ),
            registrations_refused_total: counter(
                "registrations_refused_total",
                "RegisterPeer calls refused",
            ),
            events_dropped_total: counter(
                "events_dropped_total",
                "Core events dropped because the runtime fell behind",
            ),
            external_address_info: meter
                .i64_gauge("external_address_info")
                .with_description("1 for the advertised address, labelled by source and NAT state")
                .build(),
            stun_responses_ignored_total: counter(
                "stun_responses_ignored_total",
                "STUN answers ignored: wrong transaction id or class, malformed",
            ),
            registry,
            _provider: provider,
        })
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
}
