//! OTLP export over gRPC, on when `telemetry.otlp_endpoint` names a receiver: the same
//! instruments `/metrics` shows, pushed every `telemetry.otlp_interval` by a periodic reader
//! ([`metric_reader`], added to the meter provider beside the Prometheus one), and the node's
//! spans ([`Spans`]: submit, announce, pull, flush, discovery_round), which `tracing` records and
//! a `tracing-opentelemetry` layer hands to a batch exporter.
//!
//! Both exporters use tonic: build them inside the tokio runtime, which must outlive them. The
//! readers and processors run on their own threads, so a slow or absent collector never delays
//! the node; what cannot be delivered is dropped by the SDK after its timeout.

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{MetricExporter, SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::PeriodicReader;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider,
};

use crate::config::TelemetryConfig;

/// The longest spans wait in the batch before they are sent: the SDK's default. A shorter
/// `otlp_interval` sends them sooner (tests).
const MAX_SPAN_DELAY: Duration = Duration::from_secs(5);

/// The `tracing` target every span of the node is recorded under; only these reach OTLP.
pub const SPAN_TARGET: &str = "sorcha_peer";

/// An exporter could not be built.
#[derive(Debug, thiserror::Error)]
#[error("OTLP export to {endpoint}: {message}")]
pub struct OtlpError {
    endpoint: String,
    message: String,
}

fn error(
    config: &TelemetryConfig,
) -> impl Fn(opentelemetry_otlp::ExporterBuildError) -> OtlpError + '_ {
    move |e| OtlpError {
        endpoint: config.otlp_endpoint.clone(),
        message: e.to_string(),
    }
}

/// Who is reporting: `service.name` sorcha-peer, its version, and the node's id when known
/// (`OTEL_RESOURCE_ATTRIBUTES` adds more).
pub fn resource(instance: Option<&str>) -> Resource {
    let mut builder = Resource::builder()
        .with_service_name("sorcha-peer")
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    if let Some(id) = instance {
        builder = builder.with_attribute(KeyValue::new("service.instance.id", id.to_owned()));
    }
    builder.build()
}

/// The reader that pushes every instrument to the receiver each `otlp_interval`.
pub fn metric_reader(
    config: &TelemetryConfig,
) -> Result<PeriodicReader<MetricExporter>, OtlpError> {
    let exporter = MetricExporter::builder()
        .with_tonic()
        .with_endpoint(config.otlp_endpoint.trim())
        .build()
        .map_err(error(config))?;
    Ok(PeriodicReader::builder(exporter)
        .with_interval(config.otlp_interval)
        .build())
}

/// The span pipeline: a batch exporter to the receiver, and the tracer the `tracing` layer
/// records into. Shut it down at exit so the last batch goes out.
pub struct Spans {
    provider: SdkTracerProvider,
}

impl Spans {
    pub fn start(config: &TelemetryConfig, instance: Option<&str>) -> Result<Self, OtlpError> {
        let exporter = SpanExporter::builder()
            .with_tonic()
            .with_endpoint(config.otlp_endpoint.trim())
            .build()
            .map_err(error(config))?;
        let batch = BatchConfigBuilder::default()
            .with_scheduled_delay(config.otlp_interval.min(MAX_SPAN_DELAY))
            .build();
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(batch)
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(resource(instance))
            .build();
        Ok(Self { provider })
    }

    pub fn tracer(&self) -> SdkTracer {
        self.provider.tracer("sorcha-peer")
    }

    /// Sends what is batched and stops the exporter (blocks up to the SDK's timeout).
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "OTLP span export did not shut down cleanly");
        }
    }
}
