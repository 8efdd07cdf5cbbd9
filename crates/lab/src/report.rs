//! The benchmark report: its fields (scripts read them by name, see the README), the math
//! behind them (coverage times, percentiles, loss) and the short table printed without `--json`.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use crate::accounting::{Rmr, WireBandwidth};
use crate::api::TxKey;

/// Lost hashes listed in the report at most (the count is always complete).
pub const MAX_LISTED: usize = 20;

/// Exit status: every transaction reached every live node.
pub const EXIT_OK: i32 = 0;
/// Exit status: at least one transaction was lost.
pub const EXIT_LOST: i32 = 1;
/// Exit status: bad command line or scenario.
pub const EXIT_USAGE: i32 = 2;
/// Exit status: the lab could not run the scenario (binary, start-up, Online timeout, netns).
pub const EXIT_HARNESS: i32 = 3;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub preset: String,
    pub description: String,
    pub date: String,
    pub nodes: usize,
    pub hosts: String,
    pub binary: String,
    /// No transaction lost.
    pub ok: bool,
    pub lost: usize,
    pub lost_hashes: Vec<String>,
    pub duration_seconds: f64,
    pub startup: Startup,
    pub transactions: Transactions,
    pub propagation_ms: Propagation,
    pub bandwidth: Bandwidth,
    pub duplicate_bodies: Duplicates,
    /// Duplicates per delivery, of bodies and of announcements.
    pub rmr: Rmr,
    pub resources: Resources,
    pub per_node: Vec<NodeReport>,
    pub phases: Vec<Phase>,
    pub queue: Option<QueueReport>,
    pub memory: Option<MemoryReport>,
    pub faults: Vec<FaultRecord>,
    pub clean_exits: usize,
    pub machine: Machine,
    /// The attack preset's section (else null).
    pub attack: Option<crate::attack::AttackReport>,
    /// The node settings the preset overrides (`SORCHA_PEER__...`); empty: the shipped
    /// defaults, timers included.
    pub node_env: BTreeMap<String, String>,
    /// `--hosts netns`: every byte between the nodes, from the namespaces' interfaces (else
    /// null).
    pub wire: Option<Wire>,
}

/// Bytes on the nodes' veths from the mark to the end of the run, the lab's own traffic with
/// the nodes left out: every byte between nodes, Ethernet, IP and TCP headers included.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Wire {
    pub sent_bytes_per_node_per_tx: f64,
    pub received_bytes_per_node_per_tx: f64,
    pub sent_bytes_total: u64,
    /// False when nftables could not count the lab's traffic: it is then included.
    pub lab_traffic_excluded: bool,
}

impl Wire {
    /// From each node's counters over the window, per node per accepted transaction.
    pub fn from_nodes(nodes: &[crate::netns::WireBytes], accepted: usize) -> Self {
        let (sent, received) = nodes
            .iter()
            .map(crate::netns::WireBytes::between_nodes)
            .fold((0, 0), |(s, r), (ns, nr)| (s + ns, r + nr));
        let scale = (nodes.len().max(1) * accepted.max(1)) as f64;
        Self {
            sent_bytes_per_node_per_tx: sent as f64 / scale,
            received_bytes_per_node_per_tx: received as f64 / scale,
            sent_bytes_total: sent,
            lab_traffic_excluded: nodes.iter().all(|n| n.lab.is_some()),
        }
    }
}

/// What else the machine was doing: figures from a busy machine are not comparable.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Machine {
    pub cpus: usize,
    /// 1-minute load average (/proc/loadavg) when the run started and when it ended.
    pub load_average_start: f64,
    pub load_average_end: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Startup {
    /// From the first spawn until every node was Online.
    pub online_ms: Option<f64>,
    /// From the spawn of the non-bootstrap nodes until every node knew `discovery_target_peers`.
    pub discovery_ms: Option<f64>,
    /// The same from when the last node had bound its ports (process start-up left out).
    pub discovery_from_ready_ms: Option<f64>,
    /// The same from the first spawn (the bootstrap nodes' start-up included).
    pub discovery_from_first_ms: Option<f64>,
    pub discovery_target_peers: u64,
    /// Fewest peers any node knew when the traffic started.
    pub peers_known_min: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Transactions {
    pub submitted: usize,
    pub accepted: usize,
    pub refused: usize,
    /// The first few refusals, as "HTTP code: error".
    pub refusals: Vec<String>,
    pub size_bytes: usize,
    pub submit_seconds: f64,
    pub submitted_tps: f64,
    /// From the last submission until every live node held every transaction (null: never).
    pub settle_ms: Option<f64>,
    /// The highest phase rate achieved with no loss (null: every phase lost something).
    pub throughput_tps: Option<f64>,
    /// Accepted transactions over the phases' submission and settling time: the rate they
    /// reached every live node at (null: a phase never settled).
    pub delivered_tps: Option<f64>,
    /// The highest phase delivered rate with no loss.
    pub throughput_delivered_tps: Option<f64>,
    /// From each accepted `POST` to its answer (201/200/202), ms.
    pub submit_latency_ms: SubmitLatency,
}

/// Percentiles of the submitters' wait for an acknowledgement.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SubmitLatency {
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

impl SubmitLatency {
    pub fn of(mut values: Vec<f64>) -> Self {
        values.sort_by(f64::total_cmp);
        Self {
            p50: percentile(&values, 0.50),
            p99: percentile(&values, 0.99),
            max: values.last().copied(),
        }
    }
}

/// Per transaction, the time from submission until the given share of nodes had it; then
/// p50/p95/max of that over transactions.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Propagation {
    pub nodes_50: Distribution,
    pub nodes_90: Distribution,
    pub nodes_99: Distribution,
    pub nodes_100: Distribution,
    /// Transactions timed on every node; the rest were missed by a restarting subscriber.
    pub timed_transactions: usize,
    /// Submission to the origin node's own delivery: the submission's own cost (its HTTP
    /// call and durable write) before gossip starts.
    pub origin: Distribution,
    /// How long after a node stamped a delivery (`at_us`) the lab read it off the stream,
    /// per event: what timing on receipt (the lab before session 13) added to the figures
    /// above, which are timed by the stamps.
    pub stream_lag: Distribution,
    /// Hop by hop, as the nodes tell the way each transaction came (`crate::paths`).
    pub paths: Paths,
}

/// The per-hop figures of a run (`crate::paths`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Paths {
    /// Per hop (a delivery from a node the lab runs), the receiver's stamp minus the sender's,
    /// ms, by how it came (`pushed`, `pulled`, `repaired`).
    pub hop_ms: BTreeMap<&'static str, Distribution>,
    /// The hops each delivery says it travelled (1: from the origin).
    pub hops: Distribution,
    /// For each transaction, the path back from the node whose arrival made 90 % coverage.
    pub to_90: PathFigures,
}

/// Figures over the paths to each transaction's 90 % node.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PathFigures {
    /// Hops on the path.
    pub hops: Distribution,
    /// The path's slowest hop, ms.
    pub slowest_hop_ms: Distribution,
    /// Paths with a pulled or repaired hop on them (the rest were pushed all the way).
    pub with_pull: usize,
    /// Paths followed to their origin (the others reached a node without a way or a loop).
    pub traced: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Distribution {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub max: Option<f64>,
    /// Transactions the share was reached for (and so in these figures).
    pub count: usize,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Bandwidth {
    pub sent_bytes_per_node_per_tx: f64,
    pub received_bytes_per_node_per_tx: f64,
    pub sent_by_kind: BTreeMap<String, f64>,
    pub received_by_kind: BTreeMap<String, f64>,
    /// Every byte on the sockets and every message kind (see [`WireBandwidth`]).
    #[serde(flatten)]
    pub wire: WireBandwidth,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Duplicates {
    pub total: f64,
    pub per_tx: f64,
    pub transaction_pulls: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Resources {
    pub cpu_seconds_total: f64,
    pub cpu_seconds_max: f64,
    pub peak_rss_mib_max: f64,
    /// The lab's own CPU time over the whole run (it shares the machine with the nodes).
    pub lab_cpu_seconds: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeReport {
    pub index: usize,
    pub peer_id: String,
    pub live: bool,
    pub restarts: u32,
    pub cpu_seconds: f64,
    pub rss_mib: f64,
    pub peak_rss_mib: f64,
    pub sent_bytes: f64,
    pub received_bytes: f64,
    /// Bytes this node wrote to (read from) its peer sockets during the run.
    pub wire_sent_bytes: f64,
    pub wire_received_bytes: f64,
    /// Bytes of every message it sent (`message_bytes_total{direction="sent"}`).
    pub messages_sent_bytes: f64,
    pub duplicate_bodies: f64,
    pub peers_known: u64,
    /// Peers in this node's active set at the end.
    pub peers_active: u64,
    /// Other nodes that have this node in their active set at the end: a node in nobody's
    /// active set is announced nothing and learns only through its own anti-entropy digests.
    pub active_in: usize,
    pub transactions_held: usize,
    pub missing: usize,
    pub stream_gaps: u64,
    /// Time from submission to this node's first sighting, over the transactions it had.
    pub arrival_ms: Distribution,
    /// What the node's own counters gained during the run (drops, repairs, errors), non-zero
    /// ones only, as `name` or `name{kind=...}`.
    pub counters: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Phase {
    /// Target rate; 0: as fast as the concurrency allows.
    pub rate_target_tps: f64,
    pub submitted: usize,
    pub accepted: usize,
    pub submit_seconds: f64,
    pub submitted_tps: f64,
    pub lost: usize,
    pub settle_ms: Option<f64>,
    /// `accepted` over submission plus settling time (null: it never settled).
    pub delivered_tps: Option<f64>,
    /// CPU the nodes (together) and the lab used while this phase submitted.
    pub nodes_cpu_seconds: f64,
    pub lab_cpu_seconds: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct QueueReport {
    pub queued: usize,
    /// How long queueing them took (the node's durable writes).
    pub enqueue_seconds: f64,
    /// From the peers' spawn until node 0 left Offline.
    pub online_after_ms: Option<f64>,
    /// From node 0 leaving Offline until its queue was empty.
    pub flush_seconds: Option<f64>,
    pub flush_tps: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct MemoryReport {
    pub node: usize,
    pub peers_injected: usize,
    pub peers_known: u64,
    pub cached_transactions: f64,
    pub cached_bytes: f64,
    pub rss_mib: f64,
    pub peak_rss_mib: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct FaultRecord {
    pub at_ms: f64,
    pub action: String,
    pub nodes: Vec<usize>,
    pub note: String,
}

impl Report {
    /// Non-zero when any transaction was lost: what makes `smoke` a CI test.
    pub fn exit_code(&self) -> i32 {
        if self.lost == 0 && self.ok {
            EXIT_OK
        } else {
            EXIT_LOST
        }
    }
}

/// The value at quantile `q` (0..=1) by nearest rank; `None` for no values.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}

/// p50, p95 and max of `values`.
pub fn distribution(mut values: Vec<f64>) -> Distribution {
    values.sort_by(f64::total_cmp);
    Distribution {
        p50: percentile(&values, 0.50),
        p95: percentile(&values, 0.95),
        max: values.last().copied(),
        count: values.len(),
    }
}

/// A rate: `count` over `seconds`, 0 for no time.
pub fn per_second(count: usize, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

/// When `share` of `nodes` had a transaction, given the times the nodes had it (ms after
/// submission, any order); `None` if fewer nodes than that had it.
pub fn coverage_time(arrivals: &[f64], nodes: usize, share: f64) -> Option<f64> {
    let needed = ((share * nodes as f64).ceil() as usize).clamp(1, nodes.max(1));
    if arrivals.len() < needed {
        return None;
    }
    let mut sorted = arrivals.to_vec();
    sorted.sort_by(f64::total_cmp);
    Some(sorted[needed - 1])
}

/// The propagation figures of many transactions, each given by its arrival times.
pub fn propagation(per_tx: &[Vec<f64>], nodes: usize) -> Propagation {
    let at = |share| {
        distribution(
            per_tx
                .iter()
                .filter_map(|a| coverage_time(a, nodes, share))
                .collect(),
        )
    };
    let nodes_100 = at(1.0);
    Propagation {
        nodes_50: at(0.5),
        nodes_90: at(0.9),
        nodes_99: at(0.99),
        timed_transactions: nodes_100.count,
        nodes_100,
        origin: Distribution::default(),
        stream_lag: Distribution::default(),
        paths: Paths::default(),
    }
}

/// The transactions some live node does not hold.
pub fn lost(
    expected: &[TxKey],
    live: &[usize],
    holds: impl Fn(usize, &TxKey) -> bool,
) -> Vec<TxKey> {
    expected
        .iter()
        .filter(|key| live.iter().any(|node| !holds(*node, key)))
        .copied()
        .collect()
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
}

impl Report {
    /// The short human-readable summary.
    pub fn table(&self) -> String {
        let mut out = String::new();
        self.write_outcome(&mut out);
        self.write_propagation(&mut out);
        self.write_costs(&mut out);
        self.write_phases(&mut out);
        self.write_presets_and_faults(&mut out);
        if let Some(a) = &self.attack {
            a.write_table(&mut out);
        }
        out
    }

    /// The verdict, start-up and the transactions' totals.
    fn write_outcome(&self, out: &mut String) {
        let verdict = if self.exit_code() == EXIT_OK {
            "OK"
        } else {
            "LOST TRANSACTIONS"
        };
        let _ = writeln!(
            out,
            "peer-lab {} ({} nodes, {}): {verdict}, {} lost of {} accepted, {:.1} s",
            self.preset,
            self.nodes,
            self.hosts,
            self.lost,
            self.transactions.accepted,
            self.duration_seconds
        );
        let s = &self.startup;
        let _ = writeln!(
            out,
            "  online {} ms; discovery (>= {} peers) {} ms ({} ms from the first spawn)",
            ms(s.online_ms),
            s.discovery_target_peers,
            ms(s.discovery_ms),
            ms(s.discovery_from_first_ms)
        );
        let t = &self.transactions;
        let _ = writeln!(
            out,
            "  submitted {} ({} refused) at {:.0} tx/s; settled in {} ms; throughput with no loss {} tx/s",
            t.submitted,
            t.refused,
            t.submitted_tps,
            ms(t.settle_ms),
            ms(t.throughput_tps)
        );
        let _ = writeln!(
            out,
            "  delivered to every node at {} tx/s; best lossless phase delivered {} tx/s",
            ms(t.delivered_tps),
            ms(t.throughput_delivered_tps)
        );
        let l = &t.submit_latency_ms;
        let _ = writeln!(
            out,
            "  submit answered in: p50 {} ms, p99 {} ms, max {} ms",
            ms(l.p50),
            ms(l.p99),
            ms(l.max)
        );
    }

    /// Time to reach each share of the nodes, as a small table.
    fn write_propagation(&self, out: &mut String) {
        let _ = writeln!(out, "  propagation, ms       p50      p95      max");
        let p = &self.propagation_ms;
        for (name, d) in [
            ("50% of nodes", &p.nodes_50),
            ("90% of nodes", &p.nodes_90),
            ("99% of nodes", &p.nodes_99),
            ("all nodes", &p.nodes_100),
        ] {
            let _ = writeln!(
                out,
                "    {name:<16} {:>8} {:>8} {:>8}",
                ms(d.p50),
                ms(d.p95),
                ms(d.max)
            );
        }
    }

    /// What the run cost: bytes, duplicates, CPU and memory.
    fn write_costs(&self, out: &mut String) {
        let b = &self.bandwidth;
        let _ = writeln!(
            out,
            "  bytes per node per tx: sent {:.0}, received {:.0}; duplicate bodies {:.0} ({:.2}/tx)",
            b.sent_bytes_per_node_per_tx,
            b.received_bytes_per_node_per_tx,
            self.duplicate_bodies.total,
            self.duplicate_bodies.per_tx
        );
        crate::accounting::write_costs(&b.wire, &self.rmr, out);
        if let Some(w) = &self.wire {
            let _ = writeln!(
                out,
                "  wire bytes per node per tx (veth counters, all headers): sent {:.0}, received {:.0}",
                w.sent_bytes_per_node_per_tx, w.received_bytes_per_node_per_tx
            );
        }
        let r = &self.resources;
        let _ = writeln!(
            out,
            "  CPU {:.1} s in all (max {:.1} s per node); peak RSS max {:.1} MiB",
            r.cpu_seconds_total, r.cpu_seconds_max, r.peak_rss_mib_max
        );
    }

    fn write_phases(&self, out: &mut String) {
        for ph in &self.phases {
            let _ = writeln!(
                out,
                "  phase at {:>6.0} tx/s: {} accepted at {:.0} tx/s, {} lost, settled {} ms, delivered at {} tx/s",
                ph.rate_target_tps,
                ph.accepted,
                ph.submitted_tps,
                ph.lost,
                ms(ph.settle_ms),
                ms(ph.delivered_tps)
            );
        }
    }

    /// The queue and memory presets' own figures, then the faults that happened.
    fn write_presets_and_faults(&self, out: &mut String) {
        if let Some(q) = &self.queue {
            let _ = writeln!(
                out,
                "  queue: {} queued; Offline left after {} ms; flushed in {} s = {} tx/s",
                q.queued,
                ms(q.online_after_ms),
                ms(q.flush_seconds),
                ms(q.flush_tps)
            );
        }
        if let Some(m) = &self.memory {
            let _ = writeln!(
                out,
                "  memory: node {} knows {} peers, caches {:.0} tx: RSS {:.1} MiB (peak {:.1})",
                m.node, m.peers_known, m.cached_transactions, m.rss_mib, m.peak_rss_mib
            );
        }
        for f in &self.faults {
            let _ = writeln!(
                out,
                "  fault at {:.0} ms: {} {:?} {}",
                f.at_ms, f.action, f.nodes, f.note
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.95), Some(95.0));
        assert_eq!(percentile(&v, 1.0), Some(100.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&[7.0], 0.95), Some(7.0));
        assert_eq!(percentile(&[], 0.5), None);
        let d = distribution(vec![3.0, 1.0, 2.0]);
        assert_eq!(
            (d.p50, d.p95, d.max, d.count),
            (Some(2.0), Some(3.0), Some(3.0), 3)
        );
    }

    #[test]
    fn coverage_counts_nodes_not_arrivals() {
        // 10 nodes: 50% is the 5th arrival, 90% the 9th, 99% and 100% the 10th.
        let arrivals: Vec<f64> = (1..=10).rev().map(|x| f64::from(x) * 10.0).collect();
        assert_eq!(coverage_time(&arrivals, 10, 0.5), Some(50.0));
        assert_eq!(coverage_time(&arrivals, 10, 0.9), Some(90.0));
        assert_eq!(coverage_time(&arrivals, 10, 0.99), Some(100.0));
        assert_eq!(coverage_time(&arrivals, 10, 1.0), Some(100.0));
        // The slowest node never had it: 100% is never reached, 90% still is.
        let nine = &arrivals[1..];
        assert_eq!(coverage_time(nine, 10, 1.0), None);
        assert_eq!(coverage_time(nine, 10, 0.9), Some(90.0));
    }

    #[test]
    fn propagation_leaves_incomplete_transactions_out_of_the_full_coverage() {
        let per_tx = vec![vec![1.0, 2.0, 3.0, 4.0], vec![5.0, 6.0, 7.0]];
        let p = propagation(&per_tx, 4);
        assert_eq!(p.nodes_100.count, 1);
        assert_eq!(p.nodes_100.max, Some(4.0));
        assert_eq!(p.nodes_50.count, 2);
        assert_eq!(p.nodes_50.max, Some(6.0));
        assert_eq!(p.timed_transactions, 1);
    }

    #[test]
    fn a_missing_delivery_is_a_loss_and_a_failing_exit() {
        let expected = [[1; 32], [2; 32], [3; 32]];
        // Node 2 never got transaction 3; node 3 is dead (not live) and holds nothing.
        let holds = |node: usize, key: &TxKey| !(node == 2 && key[0] == 3) && node != 3;
        let missing = lost(&expected, &[0, 1, 2], holds);
        assert_eq!(missing, vec![[3; 32]]);
        assert!(lost(&expected, &[0, 1], holds).is_empty());

        let mut report = Report {
            ok: true,
            ..Report::default()
        };
        assert_eq!(report.exit_code(), EXIT_OK);
        report.lost = missing.len();
        report.ok = false;
        assert_eq!(report.exit_code(), EXIT_LOST);
        assert!(report.table().contains("LOST TRANSACTIONS"));
    }

    #[test]
    fn the_json_names_scripts_read() {
        let json = serde_json::to_value(Report::default()).unwrap();
        for key in [
            "ok",
            "lost",
            "startup",
            "transactions",
            "propagation_ms",
            "bandwidth",
            "duplicate_bodies",
            "rmr",
            "node_env",
            "resources",
            "per_node",
            "phases",
            "queue",
            "memory",
        ] {
            assert!(json.get(key).is_some(), "{key} missing");
        }
        assert!(json["propagation_ms"]["nodes_90"].get("p95").is_some());
        for key in [
            "sent_bytes_per_node_per_tx",
            "wire_sent_bytes_per_node_per_tx",
            "wire_received_bytes_per_node_per_tx",
            "messages_sent_bytes_per_node_per_tx",
        ] {
            assert!(json["bandwidth"].get(key).is_some(), "bandwidth.{key}");
        }
        assert!(json["rmr"].get("announcements").is_some());
        assert!(json["transactions"].get("delivered_tps").is_some());
    }
}
