//! Both systems' measurements as rows of one shape, computed the same way: time to 90% and
//! to 100% of the nodes (the lab's [`report::propagation`]), delivery, wire bytes (the
//! namespaces' veth counters, [`Wire`]) and the nodes' CPU over the measured window.

use std::fmt::Write;

use serde::Serialize;

use super::ComparePhase;
use crate::report::{self, Distribution, Paths, Report, Wire};

pub const GOSSIPSUB: &str = "gossipsub";
pub const SORCHA: &str = "sorcha-peer";

/// The report of a compare run: one row per system and phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CompareReport {
    pub preset: String,
    pub nodes: usize,
    pub hosts: String,
    pub size_bytes: usize,
    /// 1-minute load average when the first run started and when the last ended.
    pub load_average_start: f64,
    pub load_average_end: f64,
    pub rows: Vec<Row>,
}

/// One system's run of one phase.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Row {
    pub system: String,
    pub rate_target: f64,
    pub requested: usize,
    /// Messages the origin took (gossipsub published without error, sorcha-peer accepted).
    pub accepted: usize,
    /// From publish/submit to each node's own stamp of the arrival, ms.
    pub nodes_90_ms: Distribution,
    pub nodes_100_ms: Distribution,
    /// Node-message pairs that arrived, of accepted x nodes.
    pub received: usize,
    pub expected: usize,
    /// Messages some node never had by the end of the settle timeout.
    pub lost: usize,
    /// Every byte between the nodes over the window (netns only), per node per message.
    pub wire: Option<Wire>,
    /// The nodes' CPU seconds over the window (from the traffic's start to the end).
    pub cpu_seconds: f64,
    /// sorcha-peer's hops as its nodes tell them (`propagation_ms.paths` of its report);
    /// gossipsub's nodes do not say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paths: Option<Paths>,
}

/// What the gossipsub side measured, in the lab's terms.
#[derive(Debug, Clone, Default)]
pub struct Arrivals {
    pub nodes: usize,
    /// Per published message, per node: ms from publishing until the node's stamp of it (the
    /// origin's own `published` line included); `None`: never.
    pub ms: Vec<Vec<Option<f64>>>,
    pub wire: Option<Vec<crate::netns::WireBytes>>,
    pub cpu_seconds: f64,
}

impl Row {
    pub fn from_gossipsub(phase: ComparePhase, m: &Arrivals) -> Self {
        let accepted = m.ms.len();
        let timed: Vec<Vec<f64>> =
            m.ms.iter()
                .map(|a| a.iter().flatten().copied().collect())
                .collect();
        let propagation = report::propagation(&timed, m.nodes);
        let received = timed.iter().map(Vec::len).sum();
        Self {
            system: GOSSIPSUB.to_owned(),
            rate_target: phase.rate,
            requested: phase.transactions,
            accepted,
            nodes_90_ms: propagation.nodes_90,
            nodes_100_ms: propagation.nodes_100,
            received,
            expected: accepted * m.nodes,
            lost: m
                .ms
                .iter()
                .filter(|a| a.iter().any(Option::is_none))
                .count(),
            wire: m.wire.as_ref().map(|w| Wire::from_nodes(w, accepted)),
            cpu_seconds: m.cpu_seconds,
            paths: None,
        }
    }

    pub fn from_sorcha(phase: ComparePhase, r: &Report) -> Self {
        let accepted = r.transactions.accepted;
        let expected = accepted * r.nodes;
        let missing: usize = r.per_node.iter().map(|n| n.missing).sum();
        Self {
            system: SORCHA.to_owned(),
            rate_target: phase.rate,
            requested: phase.transactions,
            accepted,
            nodes_90_ms: r.propagation_ms.nodes_90.clone(),
            nodes_100_ms: r.propagation_ms.nodes_100.clone(),
            received: expected.saturating_sub(missing),
            expected,
            lost: r.lost,
            wire: r.wire.clone(),
            cpu_seconds: r.resources.cpu_seconds_total,
            paths: Some(r.propagation_ms.paths.clone()),
        }
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
}

impl CompareReport {
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "peer-lab {} ({} nodes, {}, {}-B messages; load {:.2} -> {:.2})",
            self.preset,
            self.nodes,
            self.hosts,
            self.size_bytes,
            self.load_average_start,
            self.load_average_end
        );
        let _ = writeln!(
            out,
            "  {:<12} {:>7} {:>6} {:>9} {:>9} {:>9} {:>9} {:>13} {:>5} {:>10} {:>7}",
            "system",
            "rate/s",
            "msgs",
            "90% p50",
            "90% p95",
            "100% p50",
            "100% p95",
            "delivered",
            "lost",
            "wire B/n/m",
            "CPU s"
        );
        for r in &self.rows {
            let wire = r.wire.as_ref().map_or("-".to_owned(), |w| {
                format!("{:.0}", w.sent_bytes_per_node_per_tx)
            });
            let _ = writeln!(
                out,
                "  {:<12} {:>7} {:>6} {:>9} {:>9} {:>9} {:>9} {:>13} {:>5} {:>10} {:>7.1}",
                r.system,
                r.rate_target,
                r.accepted,
                ms(r.nodes_90_ms.p50),
                ms(r.nodes_90_ms.p95),
                ms(r.nodes_100_ms.p50),
                ms(r.nodes_100_ms.p95),
                format!("{}/{}", r.received, r.expected),
                r.lost,
                wire,
                r.cpu_seconds
            );
        }
        let _ = writeln!(
            out,
            "  times: ms from publish/submit to each node's own stamp of the arrival; wire: bytes \
             sent per node per message on the veths (all headers, lab traffic excluded; netns only)"
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netns::{InterfaceBytes, WireBytes};

    fn phase() -> ComparePhase {
        ComparePhase {
            transactions: 3,
            rate: 100.0,
        }
    }

    #[test]
    fn gossipsub_rows_time_delivery_and_bytes() {
        // 3 messages on 4 nodes; the third never reached node 3.
        let ms = vec![
            vec![Some(0.0), Some(1.0), Some(2.0), Some(10.0)],
            vec![Some(0.0), Some(3.0), Some(4.0), Some(5.0)],
            vec![Some(0.0), Some(1.0), Some(2.0), None],
        ];
        let node = WireBytes {
            interface: InterfaceBytes {
                tx_bytes: 1200,
                rx_bytes: 1200,
                tx_packets: 0,
                rx_packets: 0,
            },
            lab: Some(InterfaceBytes::default()),
        };
        let m = Arrivals {
            nodes: 4,
            ms,
            wire: Some(vec![node; 4]),
            cpu_seconds: 1.5,
        };
        let row = Row::from_gossipsub(phase(), &m);
        assert_eq!(
            (row.accepted, row.received, row.expected, row.lost),
            (3, 11, 12, 1)
        );
        // 90% of 4 nodes is all 4: only the two complete messages count.
        assert_eq!(row.nodes_90_ms.count, 2);
        assert_eq!(row.nodes_100_ms.p50, Some(5.0));
        assert_eq!(row.nodes_100_ms.p95, Some(10.0));
        // 4 x 1200 bytes over 4 nodes x 3 messages.
        let wire = row.wire.clone().unwrap();
        assert_eq!(wire.sent_bytes_per_node_per_tx, 400.0);
        assert!(wire.lab_traffic_excluded);
        let table = CompareReport {
            rows: vec![row],
            ..CompareReport::default()
        }
        .table();
        assert!(table.contains("11/12"), "{table}");
    }

    #[test]
    fn sorcha_rows_come_from_the_lab_report() {
        let mut r = Report {
            nodes: 2,
            lost: 1,
            ..Report::default()
        };
        r.transactions.accepted = 3;
        r.propagation_ms.nodes_100.p95 = Some(42.0);
        r.resources.cpu_seconds_total = 2.0;
        r.per_node = vec![Default::default(), Default::default()];
        r.per_node[1].missing = 1;
        let row = Row::from_sorcha(phase(), &r);
        assert_eq!(row.system, SORCHA);
        assert_eq!((row.received, row.expected, row.lost), (5, 6, 1));
        assert_eq!(row.nodes_100_ms.p95, Some(42.0));
        assert_eq!(row.cpu_seconds, 2.0);
        assert_eq!(row.wire, None);
    }

    #[test]
    fn the_preset_parses_into_two_phases() {
        let s = crate::scenario::Scenario::load("compare-gossipsub").unwrap();
        let spec = s.compare.as_ref().unwrap();
        assert_eq!(spec.phases.len(), 2);
        assert_eq!(spec.phases[1].transactions, 2000);
        assert_eq!((s.nodes, s.bootstrap_nodes, s.traffic.size), (20, 3, 256));
        let second = super::super::with_phase(&s, spec.phases[1]);
        assert_eq!(
            (second.traffic.transactions, second.traffic.rate),
            (2000, 1000.0)
        );
        assert!(s.warmup > std::time::Duration::ZERO);
    }
}
