//! From what a run measured to the [`Report`]: propagation from the stream timestamps,
//! bandwidth and duplicates from the metric deltas, CPU and memory from `/proc`.

use std::collections::BTreeMap;

use crate::accounting::{self, sum_where};
use crate::api::{Status, TxKey};
use crate::cluster::{Cluster, Usage};
use crate::observe::Observations;
use crate::paths;
use crate::procfs;
use crate::prom::Scrape;
use crate::report::{
    self, Bandwidth, Duplicates, FaultRecord, MemoryReport, NodeReport, Phase, Propagation,
    QueueReport, Report, Resources, Startup, SubmitLatency, Transactions, per_second,
};
use crate::scenario::Scenario;
use crate::settle::{self, Listed};
use crate::traffic::{PhaseOutcome, Submission};

const KIB_PER_MIB: f64 = 1024.0;

/// Everything a flow measured, before it becomes a report.
#[derive(Default)]
pub struct Measured {
    pub startup: Startup,
    pub phases: Vec<Phase>,
    pub accepted: Vec<Submission>,
    pub submitted: usize,
    pub refused: usize,
    pub refusals: Vec<String>,
    pub submit_seconds: f64,
    pub lost: Vec<TxKey>,
    pub faults: Vec<FaultRecord>,
    pub queue: Option<QueueReport>,
    pub listed: Listed,
}

impl Measured {
    /// Adds one phase's submissions and losses.
    pub fn absorb(&mut self, outcome: PhaseOutcome, lost: Vec<TxKey>) {
        self.submitted += outcome.submitted;
        self.refused += outcome.refused;
        self.submit_seconds += outcome.seconds;
        for r in outcome.refusals {
            if self.refusals.len() < 5 {
                self.refusals.push(r);
            }
        }
        self.accepted.extend(outcome.accepted);
        self.lost.extend(lost);
    }
}

/// What the nodes said at the end of the run, each vector indexed by node.
struct Polled {
    usage: Vec<Usage>,
    status: Vec<Option<Status>>,
    /// Gauges now (not deltas since the mark): what a node holds.
    held: Vec<Scrape>,
    active_in: Vec<usize>,
}

pub async fn build(
    cluster: &Cluster,
    seen: &Observations,
    scenario: &Scenario,
    m: Measured,
) -> Report {
    let n = cluster.len();
    let polled = poll(cluster).await;
    let keys: Vec<TxKey> = m.accepted.iter().map(|s| s.key).collect();
    let accepted = keys.len();
    let per_tx = |total: f64| {
        if accepted > 0 {
            total / accepted as f64
        } else {
            0.0
        }
    };
    let arrivals = arrivals(seen, &m.accepted, n);
    let per_node = node_reports(cluster, seen, &m.listed, &polled, &keys, &arrivals);
    let memory =
        (scenario.inject_peers > 0).then(|| memory(scenario, &per_node[0], &polled.held[0]));
    let usage = &polled.usage;
    let scrapes: Vec<&Scrape> = usage.iter().map(|u| &u.metrics).collect();
    let lost_total = m.lost.len();
    Report {
        preset: scenario.name.clone(),
        description: scenario.description.clone(),
        date: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        nodes: n,
        ok: lost_total == 0,
        lost: lost_total,
        lost_hashes: m
            .lost
            .iter()
            .take(report::MAX_LISTED)
            .map(hex::encode)
            .collect(),
        transactions: transactions(&m, scenario.traffic.size),
        startup: m.startup,
        propagation_ms: Propagation {
            stream_lag: report::distribution(seen.stream_lags()),
            paths: paths::paths(&ways(seen, &m.accepted, &arrivals), n),
            ..propagation(&m.accepted, &arrivals, n)
        },
        bandwidth: bandwidth(usage, n, accepted),
        rmr: accounting::rmr(&scrapes, n, accepted),
        duplicate_bodies: Duplicates {
            total: total(usage, "duplicate_bodies_total"),
            per_tx: per_tx(total(usage, "duplicate_bodies_total")),
            transaction_pulls: total(usage, "transaction_pulls_total"),
        },
        resources: resources(&per_node),
        per_node,
        phases: m.phases,
        queue: m.queue,
        memory,
        faults: m.faults,
        node_env: node_env(scenario),
        ..Report::default()
    }
}

/// Asks every node, in this order: usage since the mark (which thaws stopped nodes), status,
/// gauges, active sets.
async fn poll(cluster: &Cluster) -> Polled {
    let n = cluster.len();
    let mut usage = Vec::with_capacity(n);
    for i in 0..n {
        usage.push(cluster.usage(i).await);
    }
    let status = cluster.statuses().await;
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        let gauges = match cluster.http(i) {
            Some(base) if cluster.is_responsive(i) => cluster.api().metrics(&base).await.ok(),
            _ => None,
        };
        held.push(gauges.unwrap_or_default());
    }
    let active_in = active_in(cluster).await;
    Polled {
        usage,
        status,
        held,
        active_in,
    }
}

fn node_reports(
    cluster: &Cluster,
    seen: &Observations,
    listed: &Listed,
    polled: &Polled,
    keys: &[TxKey],
    arrivals: &[Vec<Option<f64>>],
) -> Vec<NodeReport> {
    let Polled {
        usage,
        status,
        held,
        active_in,
    } = polled;
    (0..cluster.len())
        .map(|i| NodeReport {
            index: i,
            peer_id: cluster.peer_id(i).unwrap_or_default().to_owned(),
            live: cluster.is_live(i),
            restarts: usage[i].restarts,
            cpu_seconds: usage[i].cpu_seconds,
            rss_mib: usage[i].rss_kib as f64 / KIB_PER_MIB,
            peak_rss_mib: usage[i].peak_rss_kib as f64 / KIB_PER_MIB,
            sent_bytes: usage[i].metrics.sum("bandwidth_sent_bytes"),
            received_bytes: usage[i].metrics.sum("bandwidth_received_bytes"),
            wire_sent_bytes: sum_where(&usage[i].metrics, "wire_bytes_total", "direction", "sent"),
            wire_received_bytes: sum_where(
                &usage[i].metrics,
                "wire_bytes_total",
                "direction",
                "received",
            ),
            messages_sent_bytes: sum_where(
                &usage[i].metrics,
                "message_bytes_total",
                "direction",
                "sent",
            ),
            duplicate_bodies: usage[i].metrics.sum("duplicate_bodies_total"),
            peers_known: status[i].as_ref().map_or(0, |s| s.peers_known),
            peers_active: status[i].as_ref().map_or(0, |s| s.peers_active),
            active_in: active_in[i],
            transactions_held: held[i].sum("transaction_store_size") as usize,
            missing: if cluster.is_live(i) {
                settle::missing_on(seen, listed, i, keys)
            } else {
                0
            },
            stream_gaps: seen.gaps(i),
            arrival_ms: report::distribution(arrivals.iter().filter_map(|a| a[i]).collect()),
            counters: counters(&usage[i]),
        })
        .collect()
}

/// The memory preset's figures: node 0's, after the injection.
fn memory(scenario: &Scenario, node0: &NodeReport, held: &Scrape) -> MemoryReport {
    MemoryReport {
        node: 0,
        peers_injected: scenario.inject_peers,
        peers_known: node0.peers_known,
        cached_transactions: held.sum("transaction_store_size"),
        cached_bytes: held.sum("transaction_store_bytes"),
        rss_mib: node0.rss_mib,
        peak_rss_mib: node0.peak_rss_mib,
    }
}

/// The submissions' totals over every phase; `size` is the body size.
fn transactions(m: &Measured, size: usize) -> Transactions {
    let accepted = m.accepted.len();
    let throughput = m
        .phases
        .iter()
        .filter(|p| p.lost == 0 && p.accepted == p.submitted && p.accepted > 0)
        .map(|p| p.submitted_tps)
        .reduce(f64::max);
    let (delivered_tps, throughput_delivered_tps) = delivered(&m.phases);
    Transactions {
        submitted: m.submitted,
        accepted,
        refused: m.refused,
        refusals: m.refusals.clone(),
        size_bytes: size,
        submit_seconds: m.submit_seconds,
        submitted_tps: per_second(accepted, m.submit_seconds),
        settle_ms: m
            .phases
            .iter()
            .map(|p| p.settle_ms)
            .try_fold(0.0f64, |a, s| s.map(|s| a.max(s))),
        throughput_tps: throughput,
        delivered_tps,
        throughput_delivered_tps,
        submit_latency_ms: SubmitLatency::of(
            m.accepted
                .iter()
                .map(|s| s.answered_in.as_secs_f64() * 1000.0)
                .collect(),
        ),
    }
}

/// Coverage times over every transaction, and the time to reach its own origin node.
fn propagation(
    accepted: &[Submission],
    arrivals: &[Vec<Option<f64>>],
    nodes: usize,
) -> Propagation {
    Propagation {
        origin: report::distribution(
            accepted
                .iter()
                .zip(arrivals)
                .filter_map(|(s, a)| a[s.node])
                .collect(),
        ),
        ..report::propagation(&timed(arrivals), nodes)
    }
}

fn resources(per_node: &[NodeReport]) -> Resources {
    Resources {
        cpu_seconds_total: per_node.iter().map(|p| p.cpu_seconds).sum(),
        cpu_seconds_max: per_node.iter().map(|p| p.cpu_seconds).fold(0.0, f64::max),
        peak_rss_mib_max: per_node.iter().map(|p| p.peak_rss_mib).fold(0.0, f64::max),
        lab_cpu_seconds: procfs::sample(std::process::id()).map_or(0.0, |s| s.cpu_seconds),
    }
}

/// For each node, how many other nodes have it in their active set.
async fn active_in(cluster: &Cluster) -> Vec<usize> {
    let mut counts = vec![0; cluster.len()];
    let index: BTreeMap<&str, usize> = (0..cluster.len())
        .filter_map(|i| cluster.peer_id(i).map(|id| (id, i)))
        .collect();
    for i in 0..cluster.len() {
        let Some(base) = cluster.http(i).filter(|_| cluster.is_responsive(i)) else {
            continue;
        };
        for id in cluster.api().active_peers(&base).await.unwrap_or_default() {
            if let Some(&j) = index.get(id.as_str()) {
                counts[j] += 1;
            }
        }
    }
    counts
}

/// Per transaction and node, ms from its submission to the node's first sighting of it.
fn arrivals(seen: &Observations, accepted: &[Submission], nodes: usize) -> Vec<Vec<Option<f64>>> {
    accepted
        .iter()
        .map(|s| {
            (0..nodes)
                .map(|i| seen.first_seen(i, &s.key))
                .map(|t| t.map(|t| t.saturating_duration_since(s.at).as_secs_f64() * 1000.0))
                .collect()
        })
        .collect()
}

/// Per transaction and node, the arrival and how it came, if the node said.
fn ways(
    seen: &Observations,
    accepted: &[Submission],
    arrivals: &[Vec<Option<f64>>],
) -> Vec<Vec<paths::Delivery>> {
    accepted
        .iter()
        .zip(arrivals)
        .map(|(s, a)| {
            a.iter()
                .enumerate()
                .map(|(i, at)| (*at, seen.came(i, &s.key)))
                .collect()
        })
        .collect()
}

/// Per transaction, the arrival times of the nodes that were seen to have it.
fn timed(arrivals: &[Vec<Option<f64>>]) -> Vec<Vec<f64>> {
    arrivals
        .iter()
        .map(|a| a.iter().flatten().copied().collect())
        .collect()
}

fn total(usage: &[Usage], metric: &str) -> f64 {
    usage.iter().map(|u| u.metrics.sum(metric)).sum()
}

/// Bytes per node per accepted transaction, in all and by message kind.
fn bandwidth(usage: &[Usage], nodes: usize, accepted: usize) -> Bandwidth {
    let scale = (nodes.max(1) * accepted.max(1)) as f64;
    let by_kind = |metric: &str| {
        let mut kinds: BTreeMap<String, f64> = BTreeMap::new();
        for u in usage {
            // The unlabelled zero every counter starts with is no kind.
            let labelled = u.metrics.by_label(metric, "kind").into_iter();
            for (kind, bytes) in labelled.filter(|(k, _)| !k.is_empty()) {
                *kinds.entry(kind).or_default() += bytes / scale;
            }
        }
        kinds
    };
    Bandwidth {
        sent_bytes_per_node_per_tx: total(usage, "bandwidth_sent_bytes") / scale,
        received_bytes_per_node_per_tx: total(usage, "bandwidth_received_bytes") / scale,
        sent_by_kind: by_kind("bandwidth_sent_bytes"),
        received_by_kind: by_kind("bandwidth_received_bytes"),
        wire: accounting::wire_bandwidth(
            &usage.iter().map(|u| &u.metrics).collect::<Vec<_>>(),
            nodes,
            accepted,
        ),
    }
}

/// The node settings `scenario` overrides: the `SORCHA_PEER__` variables it sets.
fn node_env(scenario: &Scenario) -> BTreeMap<String, String> {
    scenario
        .env
        .iter()
        .filter(|(k, _)| k.starts_with("SORCHA_PEER__"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Counters that explain a node's figures: what it dropped, repaired, refused, failed.
const EXPLAINING: [&str; 11] = [
    "gossip_dropped_total",
    "gossip_tree_total",
    "gossip_fetch_failures_total",
    "membership_dropped_total",
    "anti_entropy_repairs_total",
    "verification_failures_total",
    "subscriber_lagged_total",
    "commands_refused_total",
    "connection_errors_total",
    "queue_refused_total",
    "timers_refused_total",
];

fn counters(usage: &Usage) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for name in EXPLAINING {
        for (kind, value) in usage.metrics.by_label(name, "kind") {
            if value > 0.0 {
                let key = if kind.is_empty() {
                    name.to_owned()
                } else {
                    format!("{name}{{kind={kind}}}")
                };
                *out.entry(key).or_default() += value;
            }
        }
    }
    out
}

/// The run's delivered rate over all its phases (their submission and settling times
/// added), and the highest of a phase that lost nothing; `None`s when a phase never settled.
pub fn delivered(phases: &[Phase]) -> (Option<f64>, Option<f64>) {
    let seconds: Option<f64> = phases
        .iter()
        .map(|p| Some(p.submit_seconds + p.settle_ms? / 1000.0))
        .sum();
    let accepted: usize = phases.iter().map(|p| p.accepted).sum();
    let overall = seconds.filter(|s| *s > 0.0).map(|s| accepted as f64 / s);
    let best = phases
        .iter()
        .filter(|p| p.lost == 0 && p.accepted == p.submitted && p.accepted > 0)
        .filter_map(|p| p.delivered_tps)
        .reduce(f64::max);
    (overall, best)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounting::delivered_tps;

    #[test]
    fn delivered_rates_count_every_phase_and_lossless_ones_for_the_best() {
        let phase = |accepted, lost, settle_ms: Option<f64>| Phase {
            accepted,
            submitted: accepted,
            lost,
            submit_seconds: 1.0,
            settle_ms,
            delivered_tps: delivered_tps(accepted, 1.0, settle_ms),
            ..Phase::default()
        };
        let phases = [phase(100, 0, Some(1000.0)), phase(300, 1, Some(500.0))];
        let (overall, best) = delivered(&phases);
        assert_eq!(overall, Some(400.0 / 3.5));
        assert_eq!(best, Some(50.0), "the lossy phase is no throughput");
        assert_eq!(delivered(&[phase(1, 0, None)]), (None, None));
        let unsettled = [phase(100, 0, Some(1000.0)), phase(1, 0, None)];
        assert_eq!(delivered(&unsettled), (None, Some(50.0)));
    }
}
