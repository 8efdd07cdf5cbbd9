//! Message byte counters kept as plain atomics: `bandwidth_sent_bytes{kind}`,
//! `bandwidth_received_bytes{kind}` and `message_bytes_total{kind,direction}` are added to for
//! every message a node sends or reads (several per transaction), so each add is one relaxed
//! atomic add in a fixed table, and `/metrics` (or the OTLP reader) turns the table into
//! counters only when it collects, as [`super::wire`] does for socket bytes. A series appears
//! once its kind has counted a byte, as it did when these were OpenTelemetry counters.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use opentelemetry::KeyValue;
use opentelemetry::metrics::Meter;

/// Every kind the node counts messages under ([`crate::wire::message_kind`]'s names, and
/// `membership` for discovery calls). Another name is counted as `unknown`.
pub const KINDS: [&str; 16] = [
    "announce",
    "push",
    "digest",
    "digest_reply",
    "prune",
    "graft",
    "ack",
    "fetch",
    "body",
    "notify",
    "heartbeat",
    "status",
    "bls_key_share",
    "bls_partial_signature",
    "membership",
    "unknown",
];

/// Where `kind` is counted in [`KINDS`].
fn slot(kind: &str) -> usize {
    let unknown = KINDS.len() - 1;
    KINDS.iter().position(|k| *k == kind).unwrap_or(unknown)
}

/// Bytes by message kind since start.
#[derive(Debug, Default)]
pub struct KindBytes([AtomicU64; KINDS.len()]);

impl KindBytes {
    pub fn add(&self, kind: &str, bytes: u64) {
        self.0[slot(kind)].fetch_add(bytes, Ordering::Relaxed);
    }

    /// Each kind that counted a byte, with its bytes.
    fn counted(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        let values = self.0.iter().map(|v| v.load(Ordering::Relaxed));
        KINDS.into_iter().zip(values).filter(|(_, v)| *v > 0)
    }
}

/// Bytes by message kind, sent and received apart.
#[derive(Debug, Default)]
pub struct KindDirectionBytes {
    sent: KindBytes,
    received: KindBytes,
}

impl KindDirectionBytes {
    /// `direction` is `sent`, or else taken for `received`.
    pub fn add(&self, kind: &str, direction: &str, bytes: u64) {
        let side = if direction == "sent" {
            &self.sent
        } else {
            &self.received
        };
        side.add(kind, bytes);
    }
}

/// `name{kind}`, observed from a [`KindBytes`] at each collection; shown (unlabelled, at 0)
/// from the start, as the counter it replaces was.
pub fn kind_counter(meter: &Meter, name: &'static str, help: &'static str) -> Arc<KindBytes> {
    let tally = Arc::new(KindBytes::default());
    let observed = tally.clone();
    observe_counter(meter, name, help, move |observe| {
        for (kind, bytes) in observed.counted() {
            observe(bytes, &[KeyValue::new("kind", kind)]);
        }
    });
    tally
}

/// `name{kind,direction}`, observed from a [`KindDirectionBytes`] at each collection; shown
/// (unlabelled, at 0) from the start, as the counter it replaces was.
pub fn kind_direction_counter(
    meter: &Meter,
    name: &'static str,
    help: &'static str,
) -> Arc<KindDirectionBytes> {
    let tally = Arc::new(KindDirectionBytes::default());
    let observed = tally.clone();
    observe_counter(meter, name, help, move |observe| {
        let sides = [("sent", &observed.sent), ("received", &observed.received)];
        for (direction, side) in sides {
            for (kind, bytes) in side.counted() {
                let labels = [
                    KeyValue::new("kind", kind),
                    KeyValue::new("direction", direction),
                ];
                observe(bytes, &labels);
            }
        }
    });
    tally
}

/// Registers the observable counter `name`: at each collection an unlabelled 0, then what
/// `report` observes through the function it is given.
fn observe_counter(
    meter: &Meter,
    name: &'static str,
    help: &'static str,
    report: impl Fn(&dyn Fn(u64, &[KeyValue])) + Send + Sync + 'static,
) {
    // The SDK keeps the callback for the life of the provider; the handle is only a marker.
    let _ = meter
        .u64_observable_counter(name)
        .with_description(help)
        .with_callback(move |observer| {
            observer.observe(0, &[]);
            report(&|value, labels| observer.observe(value, labels));
        })
        .build();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Metrics;

    #[test]
    fn every_kind_the_wire_names_has_its_own_slot() {
        for t in -1..=40 {
            let kind = crate::wire::message_kind(t);
            assert_eq!(KINDS[slot(kind)], kind);
        }
        assert_eq!(KINDS[slot("membership")], "membership");
        assert_eq!(KINDS[slot("no such kind")], "unknown");
    }

    #[test]
    fn counted_bytes_are_shown_by_kind_and_direction_as_counters_were() {
        let m = Metrics::new().unwrap();
        let text = m.render();
        assert!(text.contains("\nbandwidth_sent_bytes 0\n"), "{text}");
        assert!(text.contains("\nmessage_bytes_total 0\n"), "{text}");
        assert!(
            !text.contains("kind=\"body\""),
            "no series before a byte: {text}"
        );
        m.record_sent("body", 300);
        m.record_sent("body", 20);
        m.record_received("announce", 7);
        m.record_message("heartbeat", "sent", 5);
        let text = m.render();
        for line in [
            "# TYPE bandwidth_sent_bytes counter",
            "bandwidth_sent_bytes{kind=\"body\"} 320",
            "bandwidth_received_bytes{kind=\"announce\"} 7",
            "message_bytes_total{direction=\"sent\",kind=\"body\"} 320",
            "message_bytes_total{direction=\"received\",kind=\"announce\"} 7",
            "message_bytes_total{direction=\"sent\",kind=\"heartbeat\"} 5",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from:\n{text}"
            );
        }
        assert!(
            !text.contains("bandwidth_sent_bytes{kind=\"heartbeat\""),
            "{text}"
        );
    }
}
