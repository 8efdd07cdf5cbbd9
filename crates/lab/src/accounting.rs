//! Honest accounting: what a run cost on the wire beyond the gossip messages, how many
//! duplicates each delivery took (announcements as well as bodies), and the rate the
//! transactions were delivered at, next to the rate they were accepted at. Everything here
//! is computed from the nodes' counter deltas over the run and the phases' timings; the
//! definitions are the README's, field by field.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use crate::prom::Scrape;

/// Every byte per node per accepted transaction, beside the gossip-only `bandwidth` figures
/// (serialized flat into the report's `bandwidth` section).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WireBandwidth {
    /// Bytes the node processes wrote to (read from) their peer sockets, over nodes x
    /// accepted transactions: TLS, HTTP/2 and gRPC framing and every message kind included;
    /// TCP/IP headers not.
    pub wire_sent_bytes_per_node_per_tx: f64,
    pub wire_received_bytes_per_node_per_tx: f64,
    /// Where the wire figures come from: `sockets` (the nodes' `wire_bytes_total`).
    pub wire_source: String,
    /// Every message sent (`message_bytes_total{direction="sent"}`: gossip, pulls, bodies,
    /// membership calls, heartbeats, as protobuf plus the gRPC prefix), in all and by kind.
    pub messages_sent_bytes_per_node_per_tx: f64,
    pub messages_sent_by_kind: BTreeMap<String, f64>,
}

/// Redundant message counts per delivery: 0 means every node got each transaction's
/// announcement (or body) exactly once.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Rmr {
    /// Accepted transactions x (nodes - 1): the deliveries a run must make.
    pub deliveries: f64,
    /// Duplicate bodies (fetched or pushed for a known transaction) per delivery.
    pub bodies: f64,
    /// Announced entries of transactions the receiver already knew, per delivery.
    pub announcements: f64,
    /// Announced entries received in all, per delivery.
    pub announcement_entries_per_delivery: f64,
}

/// The sum of the series of `name` whose `label` is `value`.
pub fn sum_where(scrape: &Scrape, name: &str, label: &str, value: &str) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.name == name && s.labels.get(label).is_some_and(|v| v == value))
        .map(|s| s.value)
        .sum()
}

/// The wire and message figures of `metrics` (each node's deltas over the run).
pub fn wire_bandwidth(metrics: &[&Scrape], nodes: usize, accepted: usize) -> WireBandwidth {
    let scale = (nodes.max(1) * accepted.max(1)) as f64;
    let total = |label: &str, value: &str, name: &str| -> f64 {
        metrics
            .iter()
            .map(|m| sum_where(m, name, label, value))
            .sum::<f64>()
    };
    let mut by_kind: BTreeMap<String, f64> = BTreeMap::new();
    for m in metrics {
        let sent = m.samples.iter().filter(|s| {
            s.name == "message_bytes_total"
                && s.labels.get("direction").is_some_and(|d| d == "sent")
        });
        for s in sent {
            let kind = s.labels.get("kind").cloned().unwrap_or_default();
            *by_kind.entry(kind).or_default() += s.value / scale;
        }
    }
    WireBandwidth {
        wire_sent_bytes_per_node_per_tx: total("direction", "sent", "wire_bytes_total") / scale,
        wire_received_bytes_per_node_per_tx: total("direction", "received", "wire_bytes_total")
            / scale,
        wire_source: "sockets".into(),
        messages_sent_bytes_per_node_per_tx: by_kind.values().sum(),
        messages_sent_by_kind: by_kind,
    }
}

/// Per-delivery redundancy from the nodes' counters.
pub fn rmr(metrics: &[&Scrape], nodes: usize, accepted: usize) -> Rmr {
    let deliveries = (accepted * nodes.saturating_sub(1)) as f64;
    let per = |name: &str| {
        let total: f64 = metrics.iter().map(|m| m.sum(name)).sum();
        if deliveries > 0.0 {
            total / deliveries
        } else {
            0.0
        }
    };
    Rmr {
        deliveries,
        bodies: per("duplicate_bodies_total"),
        announcements: per("duplicate_announcements_total"),
        announcement_entries_per_delivery: per("announcements_received_total"),
    }
}

/// A phase's delivered rate: its transactions over the time from its first submission until
/// every live node held every one of them (submission plus settling); `None` if it never
/// settled.
pub fn delivered_tps(accepted: usize, submit_seconds: f64, settle_ms: Option<f64>) -> Option<f64> {
    let seconds = submit_seconds + settle_ms? / 1000.0;
    (seconds > 0.0).then(|| accepted as f64 / seconds)
}

/// The table's lines for every byte and the redundancy.
pub fn write_costs(w: &WireBandwidth, rmr: &Rmr, out: &mut String) {
    let _ = writeln!(
        out,
        "  every byte per node per tx ({}): sent {:.0}, received {:.0}; all messages sent {:.0}",
        w.wire_source,
        w.wire_sent_bytes_per_node_per_tx,
        w.wire_received_bytes_per_node_per_tx,
        w.messages_sent_bytes_per_node_per_tx
    );
    let _ = writeln!(
        out,
        "  RMR per delivery: bodies {:.2}, announcements {:.2} ({:.2} entries received)",
        rmr.bodies, rmr.announcements, rmr.announcement_entries_per_delivery
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: &str = r#"
wire_bytes_total{direction="sent"} 30000
wire_bytes_total{direction="received"} 28000
message_bytes_total{direction="sent",kind="announce"} 4000
message_bytes_total{direction="sent",kind="membership"} 2000
message_bytes_total{direction="received",kind="announce"} 9999
message_bytes_total 0
duplicate_bodies_total 2
duplicate_announcements_total 70
announcements_received_total 90
"#;

    #[test]
    fn wire_and_message_bytes_are_per_node_per_tx() {
        let (a, b) = (Scrape::parse(NODE), Scrape::parse(NODE));
        // Two nodes, ten transactions: divide the sums by 20.
        let w = wire_bandwidth(&[&a, &b], 2, 10);
        assert_eq!(w.wire_sent_bytes_per_node_per_tx, 3000.0);
        assert_eq!(w.wire_received_bytes_per_node_per_tx, 2800.0);
        assert_eq!(w.messages_sent_bytes_per_node_per_tx, 600.0);
        assert_eq!(w.messages_sent_by_kind["announce"], 400.0);
        assert_eq!(w.messages_sent_by_kind["membership"], 200.0);
        assert_eq!(
            w.messages_sent_by_kind.len(),
            2,
            "received and unlabelled left out"
        );
        assert_eq!(w.wire_source, "sockets");
    }

    #[test]
    fn rmr_is_per_delivery_to_every_other_node() {
        let (a, b) = (Scrape::parse(NODE), Scrape::parse(NODE));
        // Two nodes, ten transactions: ten deliveries (each to the one other node).
        let r = rmr(&[&a, &b], 2, 10);
        assert_eq!(r.deliveries, 10.0);
        assert_eq!(r.bodies, 0.4);
        assert_eq!(r.announcements, 14.0);
        assert_eq!(r.announcement_entries_per_delivery, 18.0);
        assert_eq!(
            rmr(&[&a], 1, 10).bodies,
            0.0,
            "one node: no delivery to make"
        );
    }

    #[test]
    fn delivered_rate_counts_the_settling_time() {
        // 1,000 accepted in 5 s, settled 3 s later: 125 tx/s delivered, not 200.
        assert_eq!(delivered_tps(1000, 5.0, Some(3000.0)), Some(125.0));
        assert_eq!(delivered_tps(1000, 5.0, None), None);
    }
}
