//! What one dashboard snapshot carries: the status (as `/api/v1/status`), the uptime, the
//! counters the charts turn into rates (transactions accepted, propagation latency, bytes by
//! kind), the offline queue and, every other tick, the peer table. Counters are cumulative;
//! the page takes differences, so a missed snapshot loses no traffic from the charts.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

use crate::api::HttpState;
use crate::handle::PeerView;
use crate::telemetry::events::EventKind;

/// Dead letters counted at most (the count shows "1000+" past it).
const MAX_DEAD_LETTERS: usize = 1000;

#[derive(Debug, Serialize)]
pub struct Snapshot {
    /// Milliseconds since the Unix epoch, when taken.
    pub time: u64,
    pub uptime_s: u64,
    /// `/api/v1/status`'s answer, or null when the node is saturated or stopping.
    pub status: serde_json::Value,
    pub counters: Counters,
    pub queue: QueueView,
    /// Every known peer, on the ticks that carry them; absent on the others.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peers: Option<Vec<PeerView>>,
}

/// Cumulative counters since the node started.
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Counters {
    pub tx_accepted: u64,
    /// `transaction_distribution_latency`'s sum (seconds) and count.
    pub latency_sum: f64,
    pub latency_count: u64,
    /// `bandwidth_sent_bytes` and `bandwidth_received_bytes` by kind.
    pub sent: BTreeMap<String, u64>,
    pub received: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize)]
pub struct QueueView {
    pub size: u64,
    /// Dead letters, counted up to [`MAX_DEAD_LETTERS`].
    pub dead_letters: usize,
}

pub async fn take(state: &HttpState, started: Instant, with_peers: bool) -> Snapshot {
    let status = match state.node.status().await {
        Ok(mut status) => {
            status.queue_size = state.queue.pending();
            serde_json::to_value(status).unwrap_or_default()
        }
        Err(_) => serde_json::Value::Null,
    };
    let peers = if with_peers {
        state.node.peers().await.ok()
    } else {
        None
    };
    let db = state.queue.clone();
    let dead_letters = tokio::task::spawn_blocking(move || db.dead_letters(MAX_DEAD_LETTERS))
        .await
        .ok()
        .and_then(Result::ok)
        .map_or(0, |d| d.len());
    let mut counters = scrape(&state.node.metrics().render());
    counters.tx_accepted = state.node.events().total(EventKind::TxAccepted);
    Snapshot {
        time: crate::clock::now().as_millis(),
        uptime_s: started.elapsed().as_secs(),
        status,
        counters,
        queue: QueueView {
            size: state.queue.pending(),
            dead_letters,
        },
        peers,
    }
}

/// Reads the chart counters out of the Prometheus text (the one place every instrument's
/// current value is available; the OpenTelemetry API has no reads).
pub fn scrape(text: &str) -> Counters {
    let mut counters = Counters::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (name, labels.trim_end_matches('}')),
            None => (series, ""),
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        match name {
            "transaction_distribution_latency_sum" => counters.latency_sum = value,
            "transaction_distribution_latency_count" => counters.latency_count = value as u64,
            "bandwidth_sent_bytes" => add_kind(&mut counters.sent, labels, value),
            "bandwidth_received_bytes" => add_kind(&mut counters.received, labels, value),
            _ => {}
        }
    }
    counters
}

fn add_kind(by_kind: &mut BTreeMap<String, u64>, labels: &str, value: f64) {
    let kind = labels
        .split(',')
        .find_map(|l| l.strip_prefix("kind="))
        .map_or("other", |k| k.trim_matches('"'));
    *by_kind.entry(kind.to_owned()).or_default() += value as u64;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_from_the_metrics_text() {
        let text = "# HELP x\n\
            bandwidth_sent_bytes{kind=\"announce\"} 120\n\
            bandwidth_sent_bytes{kind=\"body\"} 4000\n\
            bandwidth_received_bytes{kind=\"body\"} 10\n\
            transaction_distribution_latency_sum 0.25\n\
            transaction_distribution_latency_count 5\n\
            peer_count 3\n";
        let c = scrape(text);
        assert_eq!(c.sent["announce"], 120);
        assert_eq!(c.sent["body"], 4000);
        assert_eq!(c.received["body"], 10);
        assert_eq!(c.latency_count, 5);
        assert!((c.latency_sum - 0.25).abs() < 1e-9);
    }

    #[test]
    fn the_real_metrics_parse() {
        let m = crate::telemetry::Metrics::new().unwrap();
        m.record_sent("announce", 7);
        m.transaction_distribution_latency.record(0.5, &[]);
        let c = scrape(&m.render());
        assert_eq!(c.sent.get("announce"), Some(&7));
        assert_eq!(c.latency_count, 1);
    }
}
