//! Socket-level byte counts: every byte the peer port's connections and our dials read from and
//! write to TCP (TLS records, HTTP/2 frames, gRPC prefixes and protobuf alike; the TCP/IP
//! headers below them are the kernel's and are not seen here). The transport's counting
//! wrapper adds to a [`WireBytes`] with one relaxed atomic add per read or write, and
//! `/metrics` reads it only when scraped, as `wire_bytes_total{direction}`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use opentelemetry::KeyValue;
use opentelemetry::metrics::Meter;

/// Bytes written to and read from peer sockets since start.
#[derive(Debug, Default)]
pub struct WireBytes {
    sent: AtomicU64,
    received: AtomicU64,
}

impl WireBytes {
    pub fn add_sent(&self, bytes: usize) {
        self.sent.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn add_received(&self, bytes: usize) {
        self.received.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

/// A counter observed from a [`WireBytes`] at each collection (both directions shown from
/// the start, at 0), so the hot path never touches the metrics SDK.
pub fn wire_counter(meter: &Meter, name: &'static str, help: &'static str) -> Arc<WireBytes> {
    let tally = Arc::new(WireBytes::default());
    let observed = tally.clone();
    // The SDK keeps the callback for the life of the provider; the handle is only a marker.
    let _ = meter
        .u64_observable_counter(name)
        .with_description(help)
        .with_callback(move |observer| {
            observer.observe(observed.sent(), &[KeyValue::new("direction", "sent")]);
            observer.observe(
                observed.received(),
                &[KeyValue::new("direction", "received")],
            );
        })
        .build();
    tally
}
