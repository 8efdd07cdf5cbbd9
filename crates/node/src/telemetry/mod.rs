//! What the node tells operators about itself: the metrics every layer records, exported in
//! the Prometheus text format ([`metrics`]), and, when configured, the same metrics and the
//! node's spans pushed to an OpenTelemetry collector ([`otlp`]); the socket byte counts the
//! transport adds to ([`wire`]) and the message byte counters every send and read adds to
//! ([`messages`]), both plain atomics read when collected; the process's log and span subscriber ([`logging`]); the
//! event log of what happened ([`events`]).

pub mod events;
pub mod logging;
pub mod messages;
pub mod metrics;
pub mod otlp;
pub mod wire;

pub use events::EventLog;
pub use metrics::Metrics;
