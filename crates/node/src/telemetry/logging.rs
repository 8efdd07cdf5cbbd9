//! The process's `tracing` subscriber: log lines on stderr as `log.*` says, and, when OTLP is
//! on, the node's own spans (target `sorcha_peer`, any level) to the OTLP span exporter. The
//! two layers filter separately, so the spans are recorded whatever the log level, and log
//! events never become span events.

use opentelemetry_sdk::trace::SdkTracer;
use tracing_subscriber::filter::{EnvFilter, FilterFn};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{Layer as _, fmt};

use super::otlp::SPAN_TARGET;
use crate::config::{LogConfig, LogFormat};

/// Installs the subscriber once per process (a second call changes nothing).
pub fn init(log: &LogConfig, spans: Option<SdkTracer>) {
    // Colour only for a person at a terminal: a log redirected to a file or a collector gets
    // no escape codes.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = fmt::layer().with_writer(std::io::stderr).with_ansi(colour);
    let fmt = match log.format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    };
    let otlp = spans.map(|tracer| {
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(FilterFn::new(|meta| {
                meta.is_span() && meta.target().starts_with(SPAN_TARGET)
            }))
    });
    let _ = tracing_subscriber::registry()
        .with(fmt.with_filter(log_filter(log)))
        .with(otlp)
        .try_init();
}

fn log_filter(log: &LogConfig) -> EnvFilter {
    // Validated at load time; RUST_LOG, when set, wins for debugging sessions.
    let mut filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // The metrics SDK logs its own shutdown at info; operators have no use for it.
    if !log.level.contains("opentelemetry")
        && let Ok(directive) = "opentelemetry_sdk=warn".parse()
    {
        filter = filter.add_directive(directive);
    }
    filter
}
