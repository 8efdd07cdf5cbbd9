//! What the node tells operators about itself: the metrics every layer records, exported in
//! the Prometheus text format ([`metrics`]), and the event log of what happened ([`events`]).

pub mod events;
pub mod metrics;

pub use events::EventLog;
pub use metrics::Metrics;
