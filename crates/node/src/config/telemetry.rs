//! The `[telemetry]` section: export to an OpenTelemetry collector beside `/metrics`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// OTLP export (gRPC) of the node's metrics and spans, off unless an endpoint is named. The
/// Prometheus endpoint `/metrics` is served either way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// `http://HOST:PORT` of an OTLP/gRPC receiver (a collector's port 4317). Empty: no export.
    pub otlp_endpoint: String,
    /// How often metrics are pushed to the receiver (spans go in batches as they end).
    #[serde(with = "super::duration")]
    pub otlp_interval: Duration,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            // Off: a node contacts nobody its operator did not name.
            otlp_endpoint: String::new(),
            // Half the OpenTelemetry SDK's 60 s, the usual Prometheus scrape interval's
            // neighbourhood, so both views of a node move together.
            otlp_interval: Duration::from_secs(30),
        }
    }
}

impl TelemetryConfig {
    /// Whether anything is exported over OTLP.
    pub fn otlp_enabled(&self) -> bool {
        !self.otlp_endpoint.trim().is_empty()
    }
}

/// What is wrong with `endpoint`, if anything: it must be `http://HOST:PORT`.
pub(super) fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let expected = "expected http://HOST:PORT of an OTLP/gRPC receiver (e.g. http://127.0.0.1:4317), or empty for no export";
    if endpoint.starts_with("https://") {
        return Err(format!(
            "TLS to the collector is not built in: {expected}; run a collector beside the node and let it forward over TLS"
        ));
    }
    let rest = endpoint
        .strip_prefix("http://")
        .ok_or_else(|| format!("no http:// scheme: {expected}"))?;
    let authority = rest.trim_end_matches('/');
    let (host, port) = authority
        .rsplit_once(':')
        .ok_or_else(|| format!("no port: {expected}"))?;
    if host.is_empty() || authority.contains('/') || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(expected.to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_http_host_port() {
        for good in [
            "http://127.0.0.1:4317",
            "http://collector:4317/",
            "http://[::1]:4317",
        ] {
            assert_eq!(check_endpoint(good), Ok(()), "{good}");
        }
        for bad in [
            "127.0.0.1:4317",
            "https://collector:4317",
            "http://collector",
            "http://:4317",
            "http://collector:0",
            "http://collector:4317/v1/metrics",
        ] {
            assert!(check_endpoint(bad).is_err(), "{bad}");
        }
    }
}
