//! Faults at given times during the traffic: kill -9, restart in the same data dir, SIGSTOP and
//! SIGCONT, partitions and their healing, slow peers.
//!
//! Partitions on loopback use the nodes' admin API: every node bans every peer of the other
//! groups for the fault's duration, and heal lifts those bans (DELETE). With `--hosts netns`,
//! blackhole routes inside the namespaces cut the links instead. A slow peer is a `tc netem`
//! delay with netns (when the kernel has netem), SIGSTOP bursts otherwise.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::task::JoinSet;

use crate::cluster::Cluster;
use crate::netns::NetnsError;
use crate::report::FaultRecord;
use crate::scenario::{Action, Fault};

/// Ban calls in flight at once during a partition.
const BAN_CONCURRENCY: usize = 16;
/// A partition without a duration bans for this long (heal lifts it earlier).
const DEFAULT_PARTITION: Duration = Duration::from_secs(120);
/// SIGSTOP bursts of a slow peer without `pause`/`period`.
const DEFAULT_PAUSE: Duration = Duration::from_millis(200);
const DEFAULT_PERIOD: Duration = Duration::from_millis(500);
const DEFAULT_SLOW: Duration = Duration::from_secs(3);

/// Runs `faults` at their times after `start`; returns what was done, in order.
pub async fn run(
    cluster: Arc<Cluster>,
    mut faults: Vec<Fault>,
    start: Instant,
    bootstraps: Arc<Vec<Vec<String>>>,
) -> Vec<FaultRecord> {
    faults.sort_by_key(|f| f.at);
    let mut records = Vec::new();
    let mut slow = JoinSet::new();
    for fault in faults {
        tokio::time::sleep_until((start + fault.at).into()).await;
        let at_ms = start.elapsed().as_secs_f64() * 1000.0;
        let note = apply(&cluster, &fault, &bootstraps, &mut slow).await;
        let nodes = if fault.nodes.is_empty() {
            fault.groups.iter().flatten().copied().collect()
        } else {
            fault.nodes.clone()
        };
        eprintln!(
            "peer-lab: {:>7.0} ms: {} {nodes:?} {note}",
            at_ms,
            fault.action.as_str()
        );
        records.push(FaultRecord {
            at_ms,
            action: fault.action.as_str().to_owned(),
            nodes,
            note,
        });
    }
    while slow.join_next().await.is_some() {}
    records
}

async fn apply(
    cluster: &Arc<Cluster>,
    fault: &Fault,
    bootstraps: &[Vec<String>],
    slow: &mut JoinSet<()>,
) -> String {
    match fault.action {
        Action::Kill => {
            for &i in &fault.nodes {
                cluster.kill(i).await;
            }
            String::new()
        }
        Action::Restart => {
            let mut notes = Vec::new();
            for &i in &fault.nodes {
                if let Err(e) = cluster.restart(i, &bootstraps[i]).await {
                    notes.push(format!("node {i} did not restart: {e}"));
                }
            }
            notes.join("; ")
        }
        Action::Stop => signal_all(cluster, &fault.nodes, libc::SIGSTOP),
        Action::Cont => signal_all(cluster, &fault.nodes, libc::SIGCONT),
        Action::Partition => {
            let duration = fault.duration.unwrap_or(DEFAULT_PARTITION);
            partition(cluster, &fault.groups, Some(duration)).await
        }
        Action::Heal => partition(cluster, &fault.groups, None).await,
        Action::Slow => {
            let (cluster, fault) = (cluster.clone(), fault.clone());
            match start_delay(&cluster, &fault) {
                Ok(Some(note)) => {
                    let duration = fault.duration.unwrap_or(DEFAULT_SLOW);
                    slow.spawn(async move {
                        tokio::time::sleep(duration).await;
                        if let Some(net) = cluster.netns() {
                            for &i in &fault.nodes {
                                let _ = net.delay(i, None);
                            }
                        }
                    });
                    note
                }
                Ok(None) => {
                    let note = bursts_note(&fault);
                    slow.spawn(async move { stop_bursts(&cluster, &fault).await });
                    note
                }
                Err(e) => {
                    let note = format!("netem unavailable ({e}); {}", bursts_note(&fault));
                    slow.spawn(async move { stop_bursts(&cluster, &fault).await });
                    note
                }
            }
        }
    }
}

fn signal_all(cluster: &Cluster, nodes: &[usize], signal: libc::c_int) -> String {
    let missed: Vec<usize> = nodes
        .iter()
        .copied()
        .filter(|i| !cluster.signal(*i, signal))
        .collect();
    if missed.is_empty() {
        String::new()
    } else {
        format!("not running: {missed:?}")
    }
}

/// Cuts (`ban` = Some) or restores (None) every link between different groups.
async fn partition(cluster: &Cluster, groups: &[Vec<usize>], ban: Option<Duration>) -> String {
    if let Some(net) = cluster.netns() {
        let result = match ban {
            Some(_) => net.partition(groups),
            None => net.heal(groups),
        };
        return result.err().map(|e| e.to_string()).unwrap_or_default();
    }
    let pairs: Vec<(usize, usize)> = groups
        .iter()
        .enumerate()
        .flat_map(|(g, group)| {
            let others: Vec<usize> = groups
                .iter()
                .enumerate()
                .filter(|(h, _)| *h != g)
                .flat_map(|(_, nodes)| nodes.iter().copied())
                .collect();
            group
                .iter()
                .flat_map(move |a| others.clone().into_iter().map(move |b| (*a, b)))
        })
        .collect();
    let failures = futures::stream::iter(pairs)
        .map(|(a, b)| async move {
            let (Some(base), Some(id)) = (cluster.http(a), cluster.peer_id(b)) else {
                return Some(format!("{a}->{b}: unknown"));
            };
            let api = cluster.api();
            let result = match ban {
                Some(duration) => api.ban(a, &base, id, duration).await,
                None => api.unban(a, &base, id).await,
            };
            result.err().map(|e| format!("{a}->{b}: {e}"))
        })
        .buffer_unordered(BAN_CONCURRENCY)
        .filter_map(std::future::ready)
        .collect::<Vec<_>>()
        .await;
    match failures.first() {
        None => "via the ban API".to_owned(),
        Some(first) => format!("{} ban calls failed, first: {first}", failures.len()),
    }
}

/// Applies a netem delay to every slow node when running in namespaces with a `delay`;
/// `Ok(None)` when SIGSTOP bursts are the way (loopback, or no delay given).
fn start_delay(cluster: &Cluster, fault: &Fault) -> Result<Option<String>, NetnsError> {
    let (Some(net), Some(delay)) = (cluster.netns(), fault.delay) else {
        return Ok(None);
    };
    for (k, &i) in fault.nodes.iter().enumerate() {
        if let Err(e) = net.delay(i, Some(delay)) {
            for &done in &fault.nodes[..k] {
                let _ = net.delay(done, None);
            }
            return Err(e);
        }
    }
    let duration = fault.duration.unwrap_or(DEFAULT_SLOW);
    Ok(Some(format!("netem delay {delay:?} for {duration:?}")))
}

fn bursts_note(fault: &Fault) -> String {
    format!(
        "SIGSTOP {:?} every {:?} for {:?}",
        fault.pause.unwrap_or(DEFAULT_PAUSE),
        fault.period.unwrap_or(DEFAULT_PERIOD),
        fault.duration.unwrap_or(DEFAULT_SLOW)
    )
}

/// A slow peer without netem: stopped for `pause` every `period`, for `duration`.
async fn stop_bursts(cluster: &Cluster, fault: &Fault) {
    let duration = fault.duration.unwrap_or(DEFAULT_SLOW);
    let pause = fault.pause.unwrap_or(DEFAULT_PAUSE);
    let period = fault.period.unwrap_or(DEFAULT_PERIOD).max(pause);
    let end = Instant::now() + duration;
    while Instant::now() < end {
        for &i in &fault.nodes {
            cluster.signal(i, libc::SIGSTOP);
        }
        tokio::time::sleep(pause).await;
        for &i in &fault.nodes {
            cluster.signal(i, libc::SIGCONT);
        }
        tokio::time::sleep(period - pause).await;
    }
}
