//! One lab run, start to finish: start the nodes, wait until they are Online (timing
//! discovery), subscribe to every node's stream, submit the traffic while faults happen, wait
//! for it to settle, measure, stop everything. The queue preset has its own flow
//! ([`queue_flow`]). Everything started is stopped when the [`Cluster`] drops, however the run
//! ends.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::api::{Api, Status, TxKey};
use crate::cluster::{Cluster, ClusterError, Hosts};
use crate::observe::{self, Observations};
use crate::report::{Phase, QueueReport, Report, Startup};
use crate::scenario::{Origins, Scenario};
use crate::settle::{self, Listed};
use crate::summary::{self, Measured};
use crate::traffic::{self, Load};
use crate::{faults, inject};

/// Status polls in flight at once (100 nodes polled every [`POLL`]).
const STATUS_CONCURRENCY: usize = 32;
/// How often start-up and the queue flow poll the nodes.
const POLL: Duration = Duration::from_millis(50);
/// How long the subscribers may take to connect before the traffic starts.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(30);

/// How to run, from the command line.
#[derive(Debug, Clone)]
pub struct Options {
    pub binary: PathBuf,
    pub hosts: Hosts,
    pub keep: bool,
}

/// Why a run could not produce a report.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// Some nodes were not Online in time: who, in what state.
    #[error("not every node was Online within {timeout:?}:\n{who}")]
    NotOnline { timeout: Duration, who: String },
    #[error("stream subscriptions did not connect within {SUBSCRIBE_TIMEOUT:?}: nodes {0:?}")]
    NotSubscribed(Vec<usize>),
    #[error("injecting peers into node 0: {0}")]
    Inject(String),
    #[error("the queue flow: {0}")]
    Queue(String),
}

/// Logs progress on stderr (stdout is the report's).
macro_rules! progress {
    ($start:expr, $($arg:tt)*) => {
        eprintln!("peer-lab: {:>7.1} s: {}", $start.elapsed().as_secs_f64(), format!($($arg)*))
    };
}

pub async fn run(scenario: &Scenario, options: &Options) -> Result<Report, LabError> {
    let started = Instant::now();
    let load_average_start = crate::procfs::load_average();
    let nodes = scenario.nodes;
    let api = Api::new(nodes, scenario.traffic.concurrency);
    let cluster = Arc::new(Cluster::prepare(
        nodes,
        options.binary.clone(),
        scenario.env.clone(),
        options.hosts,
        options.keep,
        api,
    )?);
    progress!(started, "{} nodes in {}", nodes, cluster.root().display());
    let seen = Arc::new(Observations::new(nodes));
    // Aborted when dropped: the subscribers live exactly as long as the run.
    let mut subscribers = observe::subscribe_all(cluster.clone(), seen.clone());
    let measured = if let Some(queue) = &scenario.queue {
        queue_flow(&cluster, &seen, scenario, queue.transactions, started).await?
    } else {
        traffic_flow(&cluster, &seen, scenario, started).await?
    };
    let mut report = summary::build(&cluster, &seen, scenario, measured).await;
    report.binary = options.binary.display().to_string();
    report.hosts = options.hosts.as_str().to_owned();
    // An open stream is an in-flight request a node would wait for on SIGTERM.
    subscribers.shutdown().await;
    progress!(started, "stopping the nodes");
    report.clean_exits = cluster.shutdown().await;
    report.duration_seconds = started.elapsed().as_secs_f64();
    report.machine = crate::report::Machine {
        cpus: std::thread::available_parallelism().map_or(0, usize::from),
        load_average_start,
        load_average_end: crate::procfs::load_average(),
    };
    if options.keep {
        progress!(
            started,
            "data dirs and logs kept in {}",
            cluster.root().display()
        );
    }
    Ok(report)
}

/// Who each node bootstraps from: node 0 from nobody, the other bootstrap nodes from node 0,
/// everyone else from every bootstrap node.
fn bootstraps(cluster: &Cluster, scenario: &Scenario) -> Vec<Vec<String>> {
    let addr = |i: usize| cluster.endpoint(i).map(|e| e.peer_addr());
    let all: Vec<String> = (0..scenario.bootstrap_nodes).filter_map(addr).collect();
    (0..scenario.nodes)
        .map(|i| match i {
            0 => Vec::new(),
            i if i < scenario.bootstrap_nodes => addr(0).into_iter().collect(),
            _ => all.clone(),
        })
        .collect()
}

/// Starts nodes `range` at once (each bootstrapping per [`bootstraps`]).
async fn start_nodes(
    cluster: &Cluster,
    range: std::ops::Range<usize>,
    boot: &[Vec<String>],
) -> Result<(), ClusterError> {
    let results: Vec<_> = futures::stream::iter(range)
        .map(|i| cluster.start(i, &boot[i]))
        .buffer_unordered(STATUS_CONCURRENCY)
        .collect()
        .await;
    results.into_iter().try_for_each(|r| r.map(drop))
}

async fn traffic_flow(
    cluster: &Arc<Cluster>,
    seen: &Arc<Observations>,
    scenario: &Scenario,
    started: Instant,
) -> Result<Measured, LabError> {
    let launched = Instant::now();
    for i in 0..scenario.bootstrap_nodes {
        cluster.start(i, &bootstraps(cluster, scenario)[i]).await?;
    }
    let boot = Arc::new(bootstraps(cluster, scenario));
    let rest_launched = Instant::now();
    start_nodes(cluster, scenario.bootstrap_nodes..scenario.nodes, &boot).await?;
    let times = Launch {
        first: launched,
        rest: rest_launched,
        ready: Instant::now(),
    };
    progress!(
        started,
        "all {} nodes started; waiting for Online",
        scenario.nodes
    );
    let startup = wait_online(cluster, scenario, times).await?;
    progress!(
        started,
        "Online after {:.0} ms; discovery {}",
        startup.online_ms.unwrap_or_default(),
        startup
            .discovery_ms
            .map_or("not complete".to_owned(), |d| format!("{d:.0} ms"))
    );
    if scenario.inject_peers > 0 {
        let grpc = cluster.endpoint(0).map(|e| e.grpc()).unwrap_or_default();
        let accepted = inject::register(grpc, scenario.inject_peers)
            .await
            .map_err(LabError::Inject)?;
        progress!(
            started,
            "node 0 accepted {accepted} of {} injected peers",
            scenario.inject_peers
        );
    }
    wait_subscribed(cluster, seen, 0..scenario.nodes).await?;
    cluster.mark().await;

    let mut measured = Measured {
        startup,
        ..Measured::default()
    };
    let mut listed = Listed::default();
    let nonce = rand_nonce();
    let t = &scenario.traffic;
    for (p, rate) in t.phase_rates().into_iter().enumerate() {
        let load = Load {
            first_index: p * t.transactions,
            count: t.transactions,
            size: t.size,
            rate,
            concurrency: t.concurrency,
            origins: t.origins,
            seed: t.seed,
        };
        let phase_start = Instant::now();
        let fault_task = (p == 0 && !scenario.faults.is_empty()).then(|| {
            let (c, f, b) = (cluster.clone(), scenario.faults.clone(), boot.clone());
            tokio::spawn(faults::run(c, f, phase_start, b))
        });
        progress!(
            started,
            "phase {}: {} tx at {}",
            p + 1,
            t.transactions,
            rate_text(rate)
        );
        let cpu_before = (cluster.cpu_seconds(), lab_cpu());
        let outcome = traffic::submit(cluster, load, nonce).await;
        let submitted_at = Instant::now();
        let (nodes_cpu_seconds, lab_cpu_seconds) = (
            cluster.cpu_seconds() - cpu_before.0,
            lab_cpu() - cpu_before.1,
        );
        if let Some(task) = fault_task {
            measured.faults = task.await.unwrap_or_default();
        }
        for i in 0..cluster.len() {
            if cluster.is_live(i) && !cluster.is_responsive(i) {
                cluster.signal(i, libc::SIGCONT);
            }
        }
        let keys: Vec<TxKey> = outcome.accepted.iter().map(|s| s.key).collect();
        progress!(
            started,
            "phase {}: {} accepted ({} refused) in {:.2} s; settling",
            p + 1,
            keys.len(),
            outcome.refused,
            outcome.seconds
        );
        let remaining = scenario
            .settle_timeout
            .saturating_sub(submitted_at.elapsed());
        let settled = settle::settle(cluster, seen, &mut listed, &keys, remaining).await;
        let settle_ms = settled.map(|_| submitted_at.elapsed().as_secs_f64() * 1000.0);
        let lost = settle::lost(cluster, seen, &mut listed, &keys).await;
        progress!(
            started,
            "phase {}: settled {}, {} lost",
            p + 1,
            ms_text(settle_ms),
            lost.len()
        );
        measured.phases.push(Phase {
            rate_target_tps: rate,
            submitted: outcome.submitted,
            accepted: keys.len(),
            submit_seconds: outcome.seconds,
            submitted_tps: per_second(keys.len(), outcome.seconds),
            lost: lost.len(),
            settle_ms,
            nodes_cpu_seconds,
            lab_cpu_seconds,
        });
        measured.absorb(outcome, lost);
    }
    measured.listed = listed;
    Ok(measured)
}

/// Node 0 alone queues; then the others join it and it flushes.
async fn queue_flow(
    cluster: &Arc<Cluster>,
    seen: &Arc<Observations>,
    scenario: &Scenario,
    count: usize,
    started: Instant,
) -> Result<Measured, LabError> {
    cluster.start(0, &[]).await?;
    let base = cluster.http(0).unwrap_or_default();
    let deadline = Instant::now() + scenario.online_timeout;
    while !cluster.api().ready(&base).await {
        if Instant::now() > deadline {
            return Err(LabError::Queue("node 0 never became ready".into()));
        }
        tokio::time::sleep(POLL).await;
    }
    wait_subscribed(cluster, seen, 0..1).await?;
    cluster.mark().await;
    let t = &scenario.traffic;
    let load = Load {
        first_index: 0,
        count,
        size: t.size,
        rate: 0.0,
        concurrency: t.concurrency,
        origins: Origins::Node(0),
        seed: t.seed,
    };
    progress!(started, "node 0 is alone; queueing {count} tx");
    let cpu_before = (cluster.cpu_seconds(), lab_cpu());
    let outcome = traffic::submit(cluster, load, rand_nonce()).await;
    let (nodes_cpu_seconds, lab_cpu_seconds) = (
        cluster.cpu_seconds() - cpu_before.0,
        lab_cpu() - cpu_before.1,
    );
    let queued = outcome.accepted.iter().filter(|s| s.queued).count();
    let status = cluster.api().status(&base).await.ok();
    progress!(
        started,
        "{queued} queued in {:.2} s (queue_size {}); starting the other nodes",
        outcome.seconds,
        status.as_ref().map_or(0, |s| s.queue_size)
    );
    let boot = bootstraps(cluster, scenario);
    let joined = Instant::now();
    let starting = start_nodes(cluster, 1..scenario.nodes, &boot);
    let (started_rest, flush) = tokio::join!(starting, watch_flush(cluster, &base, scenario));
    started_rest?;
    let (online_at, drained_at) = flush;
    let flush_seconds = match (online_at, drained_at) {
        (Some(a), Some(b)) => Some(b.saturating_duration_since(a).as_secs_f64()),
        _ => None,
    };
    progress!(
        started,
        "flushed in {} s",
        flush_seconds.map_or("-".into(), |s| format!("{s:.3}"))
    );
    let queue = QueueReport {
        queued,
        enqueue_seconds: outcome.seconds,
        online_after_ms: online_at.map(|a| (a - joined).as_secs_f64() * 1000.0),
        flush_seconds,
        flush_tps: flush_seconds.map(|s| queued as f64 / s.max(1e-3)),
    };
    // Propagation of queued transactions counts from when node 0 could first send them.
    let t0 = online_at.unwrap_or(joined);
    let mut outcome = outcome;
    for s in &mut outcome.accepted {
        s.at = t0;
    }
    let keys: Vec<TxKey> = outcome.accepted.iter().map(|s| s.key).collect();
    let mut listed = Listed::default();
    let settled = settle::settle(cluster, seen, &mut listed, &keys, scenario.settle_timeout).await;
    let settle_ms = settled.map(|_| joined.elapsed().as_secs_f64() * 1000.0);
    let lost = settle::lost(cluster, seen, &mut listed, &keys).await;
    let mut measured = Measured {
        startup: Startup {
            // From the peers' spawn: node 0 was meant to stay Offline until then.
            online_ms: online_at.map(|a| (a - joined).as_secs_f64() * 1000.0),
            discovery_target_peers: scenario.discovery_goal(),
            ..Startup::default()
        },
        queue: Some(queue),
        ..Measured::default()
    };
    measured.phases.push(Phase {
        submitted: outcome.submitted,
        accepted: keys.len(),
        submit_seconds: outcome.seconds,
        submitted_tps: per_second(keys.len(), outcome.seconds),
        lost: lost.len(),
        settle_ms,
        nodes_cpu_seconds,
        lab_cpu_seconds,
        ..Phase::default()
    });
    measured.absorb(outcome, lost);
    measured.listed = listed;
    Ok(measured)
}

/// When node 0 left Offline and when its queue was empty, polled every few ms.
async fn watch_flush(
    cluster: &Cluster,
    base: &str,
    scenario: &Scenario,
) -> (Option<Instant>, Option<Instant>) {
    let deadline = Instant::now() + scenario.online_timeout + scenario.settle_timeout;
    let (mut online, mut drained) = (None, None);
    while Instant::now() < deadline && drained.is_none() {
        if let Ok(s) = cluster.api().status(base).await {
            if online.is_none() && s.state != "offline" {
                online = Some(Instant::now());
            }
            if online.is_some() && s.queue_size == 0 {
                drained = Some(Instant::now());
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (online, drained)
}

/// Polls every node until all are Online; times discovery (every node knows the goal's peers)
/// on the way, until the Online timeout at most.
/// When the nodes were spawned: the first, the non-bootstrap ones, all bound.
#[derive(Debug, Clone, Copy)]
struct Launch {
    first: Instant,
    rest: Instant,
    ready: Instant,
}

async fn wait_online(
    cluster: &Cluster,
    scenario: &Scenario,
    times: Launch,
) -> Result<Startup, LabError> {
    let goal = scenario.discovery_goal();
    let deadline = times.first + scenario.online_timeout;
    let mut startup = Startup {
        discovery_target_peers: goal,
        ..Startup::default()
    };
    loop {
        let statuses = statuses(cluster).await;
        let online = statuses
            .iter()
            .all(|s| s.as_ref().is_some_and(|s| s.state == "online"));
        let discovered = statuses
            .iter()
            .all(|s| s.as_ref().is_some_and(|s| s.peers_known >= goal));
        for (i, s) in statuses.iter().enumerate() {
            if let Some(s) = s {
                cluster.set_peer_id(i, s.peer_id.clone());
            }
        }
        let since = |t: Instant| Some(t.elapsed().as_secs_f64() * 1000.0);
        if online && startup.online_ms.is_none() {
            startup.online_ms = since(times.first);
        }
        if discovered && startup.discovery_ms.is_none() {
            startup.discovery_ms = since(times.rest);
            startup.discovery_from_ready_ms = since(times.ready);
        }
        startup.peers_known_min = statuses
            .iter()
            .map(|s| s.as_ref().map_or(0, |s| s.peers_known))
            .min()
            .unwrap_or(0);
        let past = Instant::now() > deadline;
        if online && (discovered || past) {
            return Ok(startup);
        }
        if past {
            return Err(LabError::NotOnline {
                timeout: scenario.online_timeout,
                who: not_online(cluster, &statuses),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Every node's status (`None`: no answer), polled concurrently.
pub async fn statuses(cluster: &Cluster) -> Vec<Option<Status>> {
    let mut all: Vec<(usize, Option<Status>)> = futures::stream::iter(0..cluster.len())
        .map(|i| async move {
            let status = match cluster.http(i) {
                Some(base) if cluster.is_responsive(i) => cluster.api().status(&base).await.ok(),
                _ => None,
            };
            (i, status)
        })
        .buffer_unordered(STATUS_CONCURRENCY)
        .collect()
        .await;
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, s)| s).collect()
}

fn not_online(cluster: &Cluster, statuses: &[Option<Status>]) -> String {
    statuses
        .iter()
        .enumerate()
        .filter(|(_, s)| s.as_ref().is_none_or(|s| s.state != "online"))
        .map(|(i, s)| match s {
            Some(s) => format!(
                "  node {i}: {} ({} peers known, {} active); log {}",
                s.state,
                s.peers_known,
                s.peers_active,
                cluster.log_path(i).display()
            ),
            None => format!(
                "  node {i}: no answer; log {}",
                cluster.log_path(i).display()
            ),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

async fn wait_subscribed(
    cluster: &Cluster,
    seen: &Observations,
    nodes: std::ops::Range<usize>,
) -> Result<(), LabError> {
    let deadline = Instant::now() + SUBSCRIBE_TIMEOUT;
    loop {
        let waiting: Vec<usize> = nodes
            .clone()
            .filter(|i| cluster.is_live(*i) && !seen.is_connected(*i))
            .collect();
        if waiting.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(LabError::NotSubscribed(waiting));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn lab_cpu() -> f64 {
    crate::procfs::sample(std::process::id()).map_or(0.0, |s| s.cpu_seconds)
}

/// Distinguishes this run's bodies from any earlier run's.
fn rand_nonce() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    now.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(32)
}

pub fn per_second(count: usize, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

fn rate_text(rate: f64) -> String {
    if rate > 0.0 {
        format!("{rate} tx/s")
    } else {
        "full speed".to_owned()
    }
}

fn ms_text(ms: Option<f64>) -> String {
    ms.map_or("never".to_owned(), |m| format!("after {m:.0} ms"))
}
