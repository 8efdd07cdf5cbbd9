//! The node processes of one run: where they live (data dirs, addresses), starting, signalling,
//! killing and restarting them, and what they cost (CPU, memory, bytes on the wire) across
//! restarts. Dropping a [`Cluster`] SIGKILLs every process it started, then removes its
//! namespaces and (unless kept) its data dirs.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Deserialize;

use crate::api::{Api, Status};
use crate::netns::{self, Netns, NetnsError};
use crate::procfs::{self, ProcSample};
use crate::prom::Scrape;

/// How long a node may take to bind its ports (100 starting at once on 2 cores).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// SIGTERM to exit: the node promises 5 s; anything still running after this is SIGKILLed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Fixed ports inside a namespace (each node has its own address there).
const NETNS_PEER_PORT: u16 = 5001;
const NETNS_HTTP_PORT: u16 = 5080;
/// How long after binding a node may take to write its admin token.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(5);
/// Last lines of a node's log shown when it fails to start.
const LOG_TAIL_LINES: usize = 20;
/// Nodes asked or started at once (100 nodes' statuses polled every 50 ms).
pub const CONCURRENCY: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hosts {
    Loopback,
    Netns,
}

impl Hosts {
    pub fn as_str(self) -> &'static str {
        match self {
            Hosts::Loopback => "loopback",
            Hosts::Netns => "netns",
        }
    }
}

/// Why a node could not be started or driven.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("node {node}: {what}: {error}")]
    Io {
        node: usize,
        what: &'static str,
        error: std::io::Error,
    },
    #[error("node {node} {what}; last lines of {log}:\n{tail}")]
    Start {
        node: usize,
        what: String,
        log: String,
        tail: String,
    },
}

/// Where a node answers; fixed at its first start (restarts reuse the ports).
#[derive(Debug, Clone, Copy)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub peer_port: u16,
    pub http_port: u16,
}

impl Endpoint {
    pub fn http(&self) -> String {
        format!("http://{}:{}", self.ip, self.http_port)
    }
    pub fn grpc(&self) -> String {
        format!("http://{}:{}", self.ip, self.peer_port)
    }
    pub fn peer_addr(&self) -> String {
        format!("{}:{}", self.ip, self.peer_port)
    }
}

#[derive(Debug, Deserialize)]
struct Ports {
    peer: u16,
    http: u16,
}

/// What a run measures of a node, summed over its incarnations since [`Cluster::mark`].
#[derive(Debug, Clone, Default)]
pub struct Usage {
    pub metrics: Scrape,
    pub cpu_seconds: f64,
    pub peak_rss_kib: u64,
    pub rss_kib: u64,
    pub restarts: u32,
}

#[derive(Default)]
struct Proc {
    child: Option<Child>,
    restarts: u32,
    /// The current incarnation's counters and CPU at the mark (zero after a restart).
    mark_metrics: Scrape,
    mark_cpu: f64,
    /// What ended incarnations added since the mark.
    done: Usage,
}

pub struct Cluster {
    pub hosts: Hosts,
    binary: PathBuf,
    env: BTreeMap<String, String>,
    root: PathBuf,
    procs: Vec<Mutex<Proc>>,
    endpoints: Vec<OnceLock<Endpoint>>,
    peer_ids: Vec<OnceLock<String>>,
    live: Vec<AtomicBool>,
    stopped: Vec<AtomicBool>,
    api: Api,
    /// Each node's wire counters at the mark (netns only).
    wire_mark: Mutex<Vec<Option<netns::WireBytes>>>,
    /// Removed after the processes are killed (fields drop after `Drop::drop`).
    _netns: Option<Netns>,
    _dir: Option<tempfile::TempDir>,
}

impl Cluster {
    /// Prepares `nodes` data dirs (and namespaces); starts nothing.
    pub fn prepare(
        nodes: usize,
        binary: PathBuf,
        env: BTreeMap<String, String>,
        hosts: Hosts,
        keep: bool,
        api: Api,
    ) -> Result<Self, ClusterError> {
        let dir = tempfile::Builder::new()
            .prefix("peer-lab-")
            .tempdir()
            .map_err(|error| ClusterError::Io {
                node: 0,
                what: "creating the data dirs",
                error,
            })?;
        let root = dir.path().to_owned();
        let netns = match hosts {
            Hosts::Netns => Some(Netns::create(nodes)?),
            Hosts::Loopback => None,
        };
        let (dir, root) = if keep {
            (None, dir.keep())
        } else {
            (Some(dir), root)
        };
        Ok(Self {
            hosts,
            binary,
            env,
            root,
            procs: (0..nodes).map(|_| Mutex::default()).collect(),
            endpoints: (0..nodes).map(|_| OnceLock::new()).collect(),
            peer_ids: (0..nodes).map(|_| OnceLock::new()).collect(),
            live: (0..nodes).map(|_| AtomicBool::new(false)).collect(),
            stopped: (0..nodes).map(|_| AtomicBool::new(false)).collect(),
            api,
            wire_mark: Mutex::new(Vec::new()),
            _netns: netns,
            _dir: dir,
        })
    }

    pub fn len(&self) -> usize {
        self.procs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    pub fn api(&self) -> &Api {
        &self.api
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The node binary and the environment every node runs with.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    pub fn env(&self) -> &BTreeMap<String, String> {
        &self.env
    }

    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.root.join(format!("node-{i}"))
    }

    pub fn log_path(&self, i: usize) -> PathBuf {
        self.data_dir(i).join("node.log")
    }

    pub fn endpoint(&self, i: usize) -> Option<Endpoint> {
        self.endpoints[i].get().copied()
    }

    /// Node `i`'s HTTP base URL, once it has started.
    pub fn http(&self, i: usize) -> Option<String> {
        self.endpoint(i).map(|e| e.http())
    }

    pub fn peer_id(&self, i: usize) -> Option<&str> {
        self.peer_ids[i].get().map(String::as_str)
    }

    pub fn set_peer_id(&self, i: usize, id: String) {
        let _ = self.peer_ids[i].set(id);
    }

    /// Running (started and not killed), stopped or not.
    pub fn is_live(&self, i: usize) -> bool {
        self.live[i].load(Ordering::Acquire)
    }

    /// Running and not SIGSTOPped: able to answer.
    pub fn is_responsive(&self, i: usize) -> bool {
        self.is_live(i) && !self.stopped[i].load(Ordering::Acquire)
    }

    pub fn netns(&self) -> Option<&Netns> {
        self._netns.as_ref()
    }

    pub fn pid(&self, i: usize) -> Option<u32> {
        self.proc(i).child.as_ref().map(Child::id)
    }

    fn proc(&self, i: usize) -> std::sync::MutexGuard<'_, Proc> {
        // A panic while holding this lock is a lab bug; the data is still usable for cleanup.
        self.procs[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts node `i` with `bootstrap` peer addresses and waits until its ports are bound.
    pub async fn start(&self, i: usize, bootstrap: &[String]) -> Result<Endpoint, ClusterError> {
        self.spawn(i, bootstrap)?;
        let endpoint = self.wait_ports(i).await?;
        let endpoint = *self.endpoints[i].get_or_init(|| endpoint);
        // The node writes ports.json before it creates its token: wait for the token a little
        // (calls from outside the node's loopback, as with netns, need it).
        let deadline = Instant::now() + TOKEN_TIMEOUT;
        loop {
            if let Some(token) = self.admin_token(i) {
                self.api.set_token(i, token);
                break;
            }
            if Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.live[i].store(true, Ordering::Release);
        Ok(endpoint)
    }

    fn spawn(&self, i: usize, bootstrap: &[String]) -> Result<(), ClusterError> {
        let io = |what| {
            move |error| ClusterError::Io {
                node: i,
                what,
                error,
            }
        };
        let dir = self.data_dir(i);
        std::fs::create_dir_all(&dir).map_err(io("creating its data dir"))?;
        // A SIGKILLed node leaves its ports.json behind: never read a stale one.
        let _ = std::fs::remove_file(dir.join("ports.json"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))
            .map_err(io("opening its log"))?;
        let (ip, peer, http) = self.listen_addresses(i);
        let mut command = match self.netns() {
            Some(net) => {
                let prefix = net.exec_prefix(i);
                let mut c = Command::new(&prefix[0]);
                c.args(&prefix[1..]).arg(&self.binary);
                c.env("SORCHA_PEER__ADDRESS__EXTERNAL_ADDRESS", ip.to_string());
                c
            }
            None => Command::new(&self.binary),
        };
        command
            .args(["run", "--data-dir"])
            .arg(&dir)
            .args(["--listen", &format!("{ip}:{peer}")])
            .args(["--http-listen", &format!("{ip}:{http}")]);
        for b in bootstrap {
            command.args(["--bootstrap", b]);
        }
        command
            .env("SORCHA_PEER__ADDRESS__STUN_SERVERS", "")
            .env("SORCHA_PEER__ADDRESS__HTTP_LOOKUP_SERVICES", "")
            .env_remove("RUST_LOG")
            .env_remove("SORCHA_PEER_CONFIG")
            .envs(&self.env);
        // Nodes are spawned from the runtime's long-lived threads, never from a blocking-pool
        // thread that may exit (the death signal follows the spawning thread).
        let child = spawn_tied(&mut command, log).map_err(io("spawning sorcha-peer"))?;
        self.proc(i).child = Some(child);
        Ok(())
    }

    /// Loopback: port 0 the first time, the same ports on restarts. Netns: fixed ports.
    fn listen_addresses(&self, i: usize) -> (IpAddr, u16, u16) {
        match (self.hosts, self.endpoint(i)) {
            (Hosts::Netns, _) => (
                IpAddr::V4(netns::node_ip(i)),
                NETNS_PEER_PORT,
                NETNS_HTTP_PORT,
            ),
            (Hosts::Loopback, Some(e)) => (e.ip, e.peer_port, e.http_port),
            (Hosts::Loopback, None) => (IpAddr::V4(Ipv4Addr::LOCALHOST), 0, 0),
        }
    }

    async fn wait_ports(&self, i: usize) -> Result<Endpoint, ClusterError> {
        let deadline = Instant::now() + START_TIMEOUT;
        let path = self.data_dir(i).join("ports.json");
        let (ip, _, _) = self.listen_addresses(i);
        loop {
            if let Ok(text) = std::fs::read_to_string(&path)
                && let Ok(ports) = serde_json::from_str::<Ports>(&text)
            {
                return Ok(Endpoint {
                    ip,
                    peer_port: ports.peer,
                    http_port: ports.http,
                });
            }
            let exited = self
                .proc(i)
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                return Err(self.start_error(i, format!("exited during start-up ({status})")));
            }
            if Instant::now() > deadline {
                return Err(self.start_error(i, format!("did not bind within {START_TIMEOUT:?}")));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn start_error(&self, i: usize, what: String) -> ClusterError {
        let log = self.log_path(i);
        ClusterError::Start {
            node: i,
            what,
            tail: log_tail(&log, LOG_TAIL_LINES),
            log: log.display().to_string(),
        }
    }

    fn admin_token(&self, i: usize) -> Option<String> {
        let token = std::fs::read_to_string(self.data_dir(i).join("admin.token")).ok()?;
        Some(token.trim().to_owned())
    }

    /// Sends `signal` to node `i`; false if it is not running.
    pub fn signal(&self, i: usize, signal: libc::c_int) -> bool {
        let Some(pid) = self.pid(i) else {
            return false;
        };
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return false;
        };
        // SAFETY: kill(2) on the pid of a child this lab spawned and has not reaped.
        let sent = unsafe { libc::kill(pid, signal) } == 0;
        if sent && signal == libc::SIGSTOP {
            self.stopped[i].store(true, Ordering::Release);
        }
        if sent && signal == libc::SIGCONT {
            self.stopped[i].store(false, Ordering::Release);
        }
        sent
    }

    /// SIGKILLs node `i`, first recording what this incarnation used.
    pub async fn kill(&self, i: usize) {
        if !self.is_live(i) {
            return;
        }
        let final_metrics = self.final_metrics(i).await;
        let sample = self.pid(i).and_then(procfs::sample);
        self.live[i].store(false, Ordering::Release);
        self.stopped[i].store(false, Ordering::Release);
        let mut proc = self.proc(i);
        if let Some(mut child) = proc.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let gained = final_metrics.delta(&proc.mark_metrics);
        proc.done.metrics.add(&gained);
        if let Some(s) = sample {
            proc.done.cpu_seconds += s.cpu_seconds - proc.mark_cpu;
            proc.done.peak_rss_kib = proc.done.peak_rss_kib.max(s.peak_rss_kib);
        }
        proc.mark_metrics = Scrape::default();
        proc.mark_cpu = 0.0;
    }

    /// The counters of a node about to die; a frozen node is thawed for the scrape.
    async fn final_metrics(&self, i: usize) -> Scrape {
        let Some(base) = self.http(i) else {
            return Scrape::default();
        };
        if self.stopped[i].load(Ordering::Acquire) {
            self.signal(i, libc::SIGCONT);
        }
        self.api.metrics(&base).await.unwrap_or_default()
    }

    /// Starts a killed node again in its data dir, on its ports, with the same bootstraps.
    pub async fn restart(&self, i: usize, bootstrap: &[String]) -> Result<(), ClusterError> {
        if self.is_live(i) {
            return Ok(());
        }
        self.start(i, bootstrap).await?;
        self.proc(i).restarts += 1;
        Ok(())
    }

    /// CPU seconds of every running node now, summed.
    pub fn cpu_seconds(&self) -> f64 {
        (0..self.len())
            .filter_map(|i| self.pid(i).and_then(procfs::sample))
            .map(|s| s.cpu_seconds)
            .sum()
    }

    /// Starts the measured window: counters and CPU of every node now.
    pub async fn mark(&self) {
        for i in 0..self.len() {
            let metrics = match self.http(i) {
                Some(base) if self.is_responsive(i) => {
                    self.api.metrics(&base).await.unwrap_or_default()
                }
                _ => Scrape::default(),
            };
            let cpu = self
                .pid(i)
                .and_then(procfs::sample)
                .map_or(0.0, |s| s.cpu_seconds);
            let mut proc = self.proc(i);
            proc.mark_metrics = metrics;
            proc.mark_cpu = cpu;
            proc.done = Usage::default();
        }
        let wire = (0..self.len()).map(|i| self.wire_bytes(i)).collect();
        *self.wire_mark.lock().unwrap_or_else(|e| e.into_inner()) = wire;
    }

    /// Node `i`'s wire counters now (`None` on loopback or if unreadable).
    fn wire_bytes(&self, i: usize) -> Option<netns::WireBytes> {
        self.netns().and_then(|net| net.wire_bytes(i).ok())
    }

    /// What each node's veth carried since the mark (netns only; else `None`). A namespace
    /// outlives restarts, so restarts are included.
    pub fn wire_since_mark(&self) -> Option<Vec<netns::WireBytes>> {
        let mark = self
            .wire_mark
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        (0..self.len())
            .map(|i| {
                Some(
                    self.wire_bytes(i)?
                        .since(mark.get(i).copied().flatten().as_ref()?),
                )
            })
            .collect()
    }

    /// What node `i` used since the mark, over all its incarnations.
    pub async fn usage(&self, i: usize) -> Usage {
        let now = match self.http(i) {
            Some(base) if self.is_live(i) => {
                if self.stopped[i].load(Ordering::Acquire) {
                    self.signal(i, libc::SIGCONT);
                }
                self.api.metrics(&base).await.ok()
            }
            _ => None,
        };
        let sample: Option<ProcSample> = self.pid(i).and_then(procfs::sample);
        let proc = self.proc(i);
        let mut usage = proc.done.clone();
        if let Some(now) = now {
            usage.metrics.add(&now.delta(&proc.mark_metrics));
        }
        if let Some(s) = sample {
            usage.cpu_seconds += s.cpu_seconds - proc.mark_cpu;
            usage.peak_rss_kib = usage.peak_rss_kib.max(s.peak_rss_kib);
            usage.rss_kib = s.rss_kib;
        }
        usage.restarts = proc.restarts;
        usage
    }

    /// Every node's status (`None`: no answer), polled [`CONCURRENCY`] at a time.
    pub async fn statuses(&self) -> Vec<Option<Status>> {
        let mut all: Vec<(usize, Option<Status>)> = futures::stream::iter(0..self.len())
            .map(|i| async move {
                let status = match self.http(i) {
                    Some(base) if self.is_responsive(i) => self.api.status(&base).await.ok(),
                    _ => None,
                };
                (i, status)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        all.sort_by_key(|(i, _)| *i);
        all.into_iter().map(|(_, s)| s).collect()
    }

    /// SIGTERM to every running node (thawed first), SIGKILL to any still running after
    /// [`STOP_TIMEOUT`]. Returns how many exited cleanly (status 0).
    pub async fn shutdown(&self) -> usize {
        for i in 0..self.len() {
            if self.is_live(i) {
                self.signal(i, libc::SIGCONT);
                self.signal(i, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        let mut clean = 0;
        for i in 0..self.len() {
            loop {
                if let Some(exited_cleanly) = self.reap(i, deadline) {
                    clean += usize::from(exited_cleanly);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            self.live[i].store(false, Ordering::Release);
        }
        clean
    }
}

impl Cluster {
    /// Node `i` once it has exited (SIGKILLed past `deadline`): whether it exited with 0;
    /// `None` while it still runs.
    fn reap(&self, i: usize, deadline: Instant) -> Option<bool> {
        let mut proc = self.proc(i);
        let Some(child) = proc.child.as_mut() else {
            return Some(false);
        };
        let clean = match child.try_wait() {
            Ok(Some(status)) => status.success(),
            Ok(None) if Instant::now() < deadline => return None,
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                false
            }
        };
        proc.child = None;
        Some(clean)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for proc in &self.procs {
            let mut proc = proc.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(mut child) = proc.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// The last `lines` lines of a log file ("" if unreadable).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Spawns `command` as the lab's child: no stdin or stdout, stderr to `log`, its own process
/// group (Ctrl-C in a terminal reaches the lab only; the lab stops its children itself), and
/// killed when the lab dies, even by SIGKILL.
pub(crate) fn spawn_tied(command: &mut Command, log: std::fs::File) -> std::io::Result<Child> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    tie_to_lab(command).spawn()
}

/// Puts the child `command` starts in its own process group, killed when the lab dies (the
/// caller chooses its stdio).
pub(crate) fn tie_to_lab(command: &mut Command) -> &mut Command {
    command.process_group(0);
    // SAFETY: prctl is async-signal-safe and touches only the child's own attributes.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    command
}
