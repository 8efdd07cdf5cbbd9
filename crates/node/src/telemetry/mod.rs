//! What the node tells operators about itself: the metrics every layer records, exported in
//! the Prometheus text format ([`metrics`]). The event log joins it with its issue.

pub mod metrics;

pub use metrics::Metrics;
