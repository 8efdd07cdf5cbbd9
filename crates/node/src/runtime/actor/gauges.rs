//! The gauges the actor sets after every turn, each recorded only when its value changed.
//!
//! A gauge shows the last value recorded, so skipping an unchanged value shows the same
//! figure at every scrape and export (both readers keep a gauge's last value: Prometheus and
//! the OTLP reader's cumulative temporality). Most of these change rarely (peers, circuits,
//! bans) while a busy node takes thousands of turns a second, and each OpenTelemetry record
//! walks the instrument's aggregators.

use std::cell::Cell;

use opentelemetry::metrics::Gauge;

/// Each gauge the actor alone records every turn (`transaction_queue_size` is not one: the
/// HTTP API records it too, so a remembered value could hide the API's).
#[derive(Clone, Copy, Debug)]
pub(super) enum Slot {
    Peers,
    ActivePeers,
    Pending,
    InFlight,
    Circuits,
    DbRows,
    DbBytes,
    Banned,
    StoreSize,
    StoreBytes,
}

const SLOTS: usize = Slot::StoreBytes as usize + 1;

/// The value last recorded in each [`Slot`]'s gauge (`None`: never yet).
#[derive(Debug, Default)]
pub(super) struct Recorded([Cell<Option<i64>>; SLOTS]);

impl Recorded {
    /// Records `value` in `gauge` unless it is the value `slot` last recorded.
    pub(super) fn set(&self, slot: Slot, gauge: &Gauge<i64>, value: i64) {
        let last = &self.0[slot as usize];
        if last.get() != Some(value) {
            gauge.record(value, &[]);
            last.set(Some(value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Metrics;

    fn shown(metrics: &Metrics) -> String {
        let text = metrics.render();
        let line = text.lines().find(|l| l.starts_with("peer_count "));
        line.unwrap_or_default().to_string()
    }

    #[test]
    fn a_gauge_is_recorded_when_its_value_changes_and_keeps_it_between() {
        let metrics = Metrics::new().unwrap();
        let recorded = Recorded::default();
        recorded.set(Slot::Peers, &metrics.peer_count, 0);
        assert_eq!(
            shown(&metrics),
            "peer_count 0",
            "the first value is recorded"
        );
        recorded.set(Slot::Peers, &metrics.peer_count, 7);
        assert_eq!(shown(&metrics), "peer_count 7");
        recorded.set(Slot::Peers, &metrics.peer_count, 7);
        assert_eq!(shown(&metrics), "peer_count 7", "unchanged: still shown");
        recorded.set(Slot::Peers, &metrics.peer_count, 3);
        assert_eq!(shown(&metrics), "peer_count 3");
    }
}
