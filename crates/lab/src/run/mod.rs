//! One lab run, start to finish: start the nodes, wait until they are Online (timing
//! discovery), subscribe to every node's stream, submit the traffic while faults happen, wait
//! for it to settle, measure, stop everything. The queue preset has its own flow, in `queue`.
//! Everything started is stopped when the [`Cluster`] drops, however the run ends.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::api::{Api, Status, TxKey};
use crate::cluster::{self, Cluster, ClusterError, Hosts};
use crate::observe::{self, Observations};
use crate::report::{Phase, Report, Startup, per_second};
use crate::scenario::Scenario;
use crate::settle::{self, Listed};
use crate::summary::{self, Measured};
use crate::traffic::{self, Load, PhaseOutcome};
use crate::{faults, inject};

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
    #[error("starting the attackers: {0}")]
    Attack(String),
}

/// Logs progress on stderr (stdout is the report's).
macro_rules! progress {
    ($start:expr, $($arg:tt)*) => {
        eprintln!("peer-lab: {:>7.1} s: {}", $start.elapsed().as_secs_f64(), format!($($arg)*))
    };
}

mod attack;
mod queue;

pub use attack::run;

/// One run of `scenario` without attackers: the report (the compare preset's sorcha-peer side).
pub async fn run_plain(scenario: &Scenario, options: &Options) -> Result<Report, LabError> {
    run_once(scenario, options, false).await.map(|(r, _)| r)
}

/// One run of the scenario, with its attackers if `attack` (and the scenario has any).
async fn run_once(
    scenario: &Scenario,
    options: &Options,
    attack: bool,
) -> Result<(Report, Option<attack::Besieged>), LabError> {
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
    let flow = Flow {
        cluster: &cluster,
        seen: &seen,
        scenario,
        started,
        attack: scenario.attack.as_ref().filter(|_| attack),
    };
    let (measured, besieged) = if let Some(queue) = &scenario.queue {
        (flow.queue(queue.transactions).await?, None)
    } else {
        flow.traffic().await?
    };
    let accepted = measured.accepted.len();
    let mut report = summary::build(&cluster, &seen, scenario, measured).await;
    report.wire = cluster
        .wire_since_mark()
        .map(|w| crate::report::Wire::from_nodes(&w, accepted));
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
    Ok((report, besieged))
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
        .buffer_unordered(cluster::CONCURRENCY)
        .collect()
        .await;
    results.into_iter().try_for_each(|r| r.map(drop))
}

/// What both flows work on; `started` is when the run began (progress lines count from it).
struct Flow<'a> {
    cluster: &'a Arc<Cluster>,
    seen: &'a Arc<Observations>,
    scenario: &'a Scenario,
    started: Instant,
    /// The attackers to run beside the traffic (`None`: none, or the baseline run).
    attack: Option<&'a crate::scenario::AttackSpec>,
}

/// Who each node bootstraps from, shared with the fault task (a restart needs it).
type Boot = Arc<Vec<Vec<String>>>;

/// One batch of submissions: what came back, when the last answer did, what it cost.
struct Batch {
    outcome: PhaseOutcome,
    at: Instant,
    /// CPU seconds the nodes (together) and the lab used while submitting.
    nodes_cpu: f64,
    lab_cpu: f64,
}

impl Flow<'_> {
    /// Starts every node, then submits each phase of the traffic (the faults during the
    /// first) and waits for it to settle.
    async fn traffic(&self) -> Result<(Measured, Option<attack::Besieged>), LabError> {
        let (startup, boot) = self.start_all().await?;
        if self.scenario.inject_peers > 0 {
            self.inject_peers().await?;
        }
        wait_subscribed(self.cluster, self.seen, 0..self.scenario.nodes).await?;
        tokio::time::sleep(self.scenario.warmup).await;
        self.cluster.mark().await;
        let siege = self.start_siege().await?;
        let mut measured = Measured {
            startup,
            ..Measured::default()
        };
        let mut listed = Listed::default();
        let nonce = rand_nonce();
        let rates = self.scenario.traffic.phase_rates();
        for (p, rate) in rates.into_iter().enumerate() {
            self.phase(p, rate, nonce, &boot, &mut listed, &mut measured)
                .await;
        }
        measured.listed = listed;
        let besieged = match siege {
            Some(siege) => Some(self.end_siege(siege).await),
            None => None,
        };
        Ok((measured, besieged))
    }

    /// Starts the bootstrap nodes one by one, then all the others at once; waits until every
    /// node is Online, timing discovery on the way.
    async fn start_all(&self) -> Result<(Startup, Boot), LabError> {
        let (cluster, scenario) = (self.cluster, self.scenario);
        let launched = Instant::now();
        for i in 0..scenario.bootstrap_nodes {
            cluster.start(i, &bootstraps(cluster, scenario)[i]).await?;
        }
        let boot = Arc::new(bootstraps(cluster, scenario));
        let rest_launched = Instant::now();
        let rest = scenario.bootstrap_nodes..scenario.nodes;
        if scenario.start_every.is_zero() {
            start_nodes(cluster, rest, &boot).await?;
        } else {
            for i in rest {
                tokio::time::sleep(scenario.start_every).await;
                cluster.start(i, &boot[i]).await?;
            }
        }
        let times = Launch {
            first: launched,
            rest: rest_launched,
            ready: Instant::now(),
        };
        progress!(
            self.started,
            "all {} nodes started; waiting for Online",
            scenario.nodes
        );
        let startup = wait_online(cluster, scenario, times).await?;
        progress!(
            self.started,
            "Online after {:.0} ms; discovery {}",
            startup.online_ms.unwrap_or_default(),
            startup
                .discovery_ms
                .map_or("not complete".to_owned(), |d| format!("{d:.0} ms"))
        );
        Ok((startup, boot))
    }

    /// The memory preset: registers the scenario's made-up peers into node 0 over gRPC.
    async fn inject_peers(&self) -> Result<(), LabError> {
        let count = self.scenario.inject_peers;
        let grpc = self
            .cluster
            .endpoint(0)
            .map(|e| e.grpc())
            .unwrap_or_default();
        let accepted = inject::register(grpc, count)
            .await
            .map_err(LabError::Inject)?;
        progress!(
            self.started,
            "node 0 accepted {accepted} of {count} injected peers"
        );
        Ok(())
    }

    /// Phase `p` (0-based): submits at `rate` while the faults run (first phase only),
    /// thaws any node a fault left stopped, then waits for the phase to settle.
    async fn phase(
        &self,
        p: usize,
        rate: f64,
        nonce: u64,
        boot: &Boot,
        listed: &mut Listed,
        measured: &mut Measured,
    ) {
        let t = &self.scenario.traffic;
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
        let fault_task = (p == 0 && !self.scenario.faults.is_empty()).then(|| {
            let (c, f, b) = (
                self.cluster.clone(),
                self.scenario.faults.clone(),
                boot.clone(),
            );
            tokio::spawn(faults::run(c, f, phase_start, b))
        });
        progress!(
            self.started,
            "phase {}: {} tx at {}",
            p + 1,
            t.transactions,
            rate_text(rate)
        );
        let batch = submit(self.cluster, load, nonce).await;
        if let Some(task) = fault_task {
            measured.faults = task.await.unwrap_or_default();
        }
        self.thaw();
        let keys = keys(&batch.outcome);
        progress!(
            self.started,
            "phase {}: {} accepted ({} refused) in {:.2} s; settling",
            p + 1,
            keys.len(),
            batch.outcome.refused,
            batch.outcome.seconds
        );
        let remaining = self
            .scenario
            .settle_timeout
            .saturating_sub(batch.at.elapsed());
        let (settle_ms, lost) = self.settle(listed, &keys, remaining, batch.at).await;
        progress!(
            self.started,
            "phase {}: settled {}, {} lost",
            p + 1,
            ms_text(settle_ms),
            lost.len()
        );
        measured
            .phases
            .push(phase(rate, &batch, keys.len(), lost.len(), settle_ms));
        measured.absorb(batch.outcome, lost);
    }

    /// SIGCONT to every live node a fault left stopped, so that it can catch up.
    fn thaw(&self) {
        for i in 0..self.cluster.len() {
            if self.cluster.is_live(i) && !self.cluster.is_responsive(i) {
                self.cluster.signal(i, libc::SIGCONT);
            }
        }
    }

    /// Waits up to `timeout` until every live node holds `keys`: the ms from `since` until
    /// then (`None`: never), and the keys some live node still lacks.
    async fn settle(
        &self,
        listed: &mut Listed,
        keys: &[TxKey],
        timeout: Duration,
        since: Instant,
    ) -> (Option<f64>, Vec<TxKey>) {
        let settled = settle::settle(self.cluster, self.seen, listed, keys, timeout).await;
        let settle_ms = settled.map(|_| since.elapsed().as_secs_f64() * 1000.0);
        let lost = settle::lost(self.cluster, self.seen, listed, keys).await;
        (settle_ms, lost)
    }
}

/// Submits `load`, measuring what it cost the nodes' and the lab's CPU.
async fn submit(cluster: &Cluster, load: Load, nonce: u64) -> Batch {
    let cpu_before = (cluster.cpu_seconds(), lab_cpu());
    let outcome = traffic::submit(cluster, load, nonce).await;
    let at = Instant::now();
    Batch {
        outcome,
        at,
        nodes_cpu: cluster.cpu_seconds() - cpu_before.0,
        lab_cpu: lab_cpu() - cpu_before.1,
    }
}

fn keys(outcome: &PhaseOutcome) -> Vec<TxKey> {
    outcome.accepted.iter().map(|s| s.key).collect()
}

/// One phase's line in the report; `accepted` and `lost` count transactions.
fn phase(rate: f64, batch: &Batch, accepted: usize, lost: usize, settle_ms: Option<f64>) -> Phase {
    Phase {
        rate_target_tps: rate,
        submitted: batch.outcome.submitted,
        accepted,
        submit_seconds: batch.outcome.seconds,
        submitted_tps: per_second(accepted, batch.outcome.seconds),
        lost,
        settle_ms,
        delivered_tps: crate::accounting::delivered_tps(accepted, batch.outcome.seconds, settle_ms),
        nodes_cpu_seconds: batch.nodes_cpu,
        lab_cpu_seconds: batch.lab_cpu,
    }
}

/// When the nodes were spawned: the first, the non-bootstrap ones, all bound.
#[derive(Debug, Clone, Copy)]
struct Launch {
    first: Instant,
    rest: Instant,
    ready: Instant,
}

/// Polls every node until all are Online; times discovery (every node knows the goal's peers)
/// on the way, until the Online timeout at most.
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
        let statuses = cluster.statuses().await;
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
            startup.discovery_from_first_ms = since(times.first);
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
