//! The gossipsub side: `bench/gossipsub-node` processes (one per node, in its own namespace
//! with `--hosts netns`), started and bootstrapped as the lab starts sorcha-peer (node 0 from
//! nobody, the other bootstrap nodes from node 0, everyone else from every bootstrap node),
//! driven over stdin and timed by the lab reading their stdout. Every child is killed when the
//! [`Nodes`] drop (and with the lab, by the parent-death signal).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sorcha_peer::clock::unix_micros;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};

use super::rows::Arrivals;
use crate::cluster::{Hosts, tie_to_lab};
use crate::netns::{self, Netns, NetnsError, WireBytes};
use crate::observe::stamped;
use crate::procfs;
use crate::scenario::Scenario;

/// The node's manifest, from the lab crate's own directory (the workspace's `bench/`).
const MANIFEST: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../bench/gossipsub-node/Cargo.toml"
);
/// The binary `cargo build --release` leaves (the node has its own target dir).
const BINARY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../bench/gossipsub-node/target/release/gossipsub-node"
);
/// The port every node listens on inside its namespace.
const NETNS_PORT: u16 = 4001;
/// Gossipsub's default mesh_n_low: below it a node's mesh is still forming.
const MESH_LOW: usize = 4;
/// How often readiness and settling are polled.
const POLL: Duration = Duration::from_millis(100);
/// How long a node may take to print its listen address.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the gossipsub side could not run.
#[derive(Debug, thiserror::Error)]
pub enum GossipsubError {
    /// `cargo build` of bench/gossipsub-node failed or could not start.
    #[error(
        "cannot build the gossipsub node (`cargo build --release --manifest-path {MANIFEST}`): {0}; build it by hand and rerun"
    )]
    Build(String),
    /// The namespaces could not be created.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// A node could not be spawned or printed no listen address in time.
    #[error("node {node}: {what}")]
    Node { node: usize, what: String },
    /// The log directory could not be created.
    #[error("log dir: {0}")]
    Io(#[from] std::io::Error),
}

/// The node binary, built first if it is not there yet.
pub fn ensure_built() -> Result<PathBuf, GossipsubError> {
    let binary = PathBuf::from(BINARY);
    if binary.exists() {
        return Ok(binary);
    }
    eprintln!(
        "peer-lab: building the gossipsub node on first use (rust-libp2p; a few minutes): cargo build --release --manifest-path {MANIFEST}"
    );
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["build", "--release", "--manifest-path", MANIFEST])
        .status()
        .map_err(|e| GossipsubError::Build(e.to_string()))?;
    if !status.success() || !binary.exists() {
        return Err(GossipsubError::Build(format!("cargo exited with {status}")));
    }
    Ok(binary)
}

/// What the lab has read from one node so far.
#[derive(Default)]
struct Heard {
    listening: Option<String>,
    /// connected peers, mesh peers, Kademlia peers: the last `status` answer.
    status: Option<(usize, usize, usize)>,
    /// Message number to the node's stamp in its `recv` line (or, at the origin, `published`),
    /// as a lab instant; the lab's read when a line has no stamp.
    arrivals: HashMap<u64, Instant>,
    publish_errors: Vec<String>,
}

/// The running nodes of one phase.
pub struct Nodes {
    children: Vec<Child>,
    stdins: Vec<tokio::sync::Mutex<ChildStdin>>,
    heard: Arc<Vec<Mutex<Heard>>>,
    /// Removed after the children are killed (fields drop in order).
    netns: Option<Netns>,
    logs: tempfile::TempDir,
}

/// One phase on gossipsub: start, wait ready, warm up, publish, settle, measure.
pub async fn run(
    binary: &Path,
    scenario: &Scenario,
    hosts: Hosts,
) -> Result<Arrivals, GossipsubError> {
    let n = scenario.nodes;
    let netns = match hosts {
        Hosts::Netns => Some(Netns::create(n)?),
        Hosts::Loopback => None,
    };
    let mut nodes = Nodes {
        children: Vec::new(),
        stdins: Vec::new(),
        heard: Arc::new((0..n).map(|_| Mutex::default()).collect()),
        netns,
        logs: tempfile::tempdir()?,
    };
    nodes.start_all(binary, scenario.bootstrap_nodes).await?;
    let ready = nodes.wait_ready(scenario).await;
    eprintln!("peer-lab: gossipsub: ready: {ready}");
    tokio::time::sleep(scenario.warmup).await;
    let (wire_mark, cpu_mark) = (nodes.wire(), nodes.cpu_seconds());
    let published = nodes.publish(scenario).await;
    nodes.settle(&published, scenario.settle_timeout).await;
    let wire = nodes
        .wire()
        .zip(wire_mark)
        .map(|(now, then)| now.iter().zip(&then).map(|(a, b)| a.since(b)).collect());
    let errors: usize = nodes
        .heard
        .iter()
        .map(|h| lock(h).publish_errors.len())
        .sum();
    if errors > 0 {
        eprintln!("peer-lab: gossipsub: {errors} publish errors");
    }
    Ok(Arrivals {
        nodes: n,
        ms: nodes.arrivals(&published),
        wire,
        cpu_seconds: nodes.cpu_seconds() - cpu_mark,
    })
}

fn lock(m: &Mutex<Heard>) -> std::sync::MutexGuard<'_, Heard> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Nodes {
    fn ip(&self, i: usize) -> (IpAddr, u16) {
        match &self.netns {
            Some(_) => (IpAddr::V4(netns::node_ip(i)), NETNS_PORT),
            None => (IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
        }
    }

    /// The bootstrap nodes one by one (each waits for its address), then the rest at once.
    async fn start_all(
        &mut self,
        binary: &Path,
        bootstrap_nodes: usize,
    ) -> Result<(), GossipsubError> {
        let n = self.heard.len();
        let mut addrs = Vec::new();
        for i in 0..bootstrap_nodes.min(n) {
            let boot: Vec<String> = addrs.first().cloned().into_iter().collect();
            self.spawn(binary, i, &boot)?;
            addrs.push(self.wait_listening(i).await?);
        }
        for i in bootstrap_nodes.min(n)..n {
            self.spawn(binary, i, &addrs)?;
        }
        for i in bootstrap_nodes.min(n)..n {
            self.wait_listening(i).await?;
        }
        Ok(())
    }

    fn spawn(
        &mut self,
        binary: &Path,
        i: usize,
        bootstrap: &[String],
    ) -> Result<(), GossipsubError> {
        let (ip, port) = self.ip(i);
        let mut command = match &self.netns {
            Some(net) => {
                let prefix = net.exec_prefix(i);
                let mut c = Command::new(&prefix[0]);
                c.args(&prefix[1..]).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        command.args(["--listen", &format!("/ip4/{ip}/tcp/{port}")]);
        for b in bootstrap {
            command.args(["--bootstrap", b]);
        }
        let log = std::fs::File::create(self.logs.path().join(format!("node-{i}.log")))?;
        command
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log);
        tie_to_lab(&mut command);
        let mut child = tokio::process::Command::from(command)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| GossipsubError::Node {
                node: i,
                what: format!("spawning {}: {e}", binary.display()),
            })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(GossipsubError::Node {
                node: i,
                what: "no stdio pipes".to_owned(),
            });
        };
        tokio::spawn(listen(i, stdout, self.heard.clone()));
        self.children.push(child);
        self.stdins.push(tokio::sync::Mutex::new(stdin));
        Ok(())
    }

    async fn wait_listening(&self, i: usize) -> Result<String, GossipsubError> {
        let deadline = Instant::now() + LISTEN_TIMEOUT;
        loop {
            if let Some(addr) = lock(&self.heard[i]).listening.clone() {
                return Ok(addr);
            }
            if Instant::now() > deadline {
                return Err(GossipsubError::Node {
                    node: i,
                    what: format!(
                        "printed no listen address within {LISTEN_TIMEOUT:?}; log in {}",
                        self.logs.path().display()
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Until every node knows the scenario's discovery goal of peers and has a mesh of at
    /// least [`MESH_LOW`], or the Online timeout (then it goes on, as the sorcha-peer side
    /// does when discovery is incomplete): whether they all were ready.
    async fn wait_ready(&self, scenario: &Scenario) -> bool {
        let goal = scenario.discovery_goal() as usize;
        let deadline = Instant::now() + scenario.online_timeout;
        loop {
            for i in 0..self.stdins.len() {
                self.send(i, "status\n").await;
            }
            tokio::time::sleep(POLL).await;
            let ready = self.heard.iter().all(|h| {
                lock(h)
                    .status
                    .is_some_and(|(_, mesh, known)| known >= goal && mesh >= MESH_LOW)
            });
            if ready || Instant::now() > deadline {
                return ready;
            }
        }
    }

    async fn send(&self, i: usize, line: &str) {
        let mut stdin = self.stdins[i].lock().await;
        // A node that died shows up as missing arrivals.
        let _ = stdin.write_all(line.as_bytes()).await;
    }

    /// Publishes the phase from seeded random origins (the same picks as the sorcha-peer
    /// side's submissions) at the scenario's rate: when each was sent, from where.
    async fn publish(&self, scenario: &Scenario) -> Vec<(Instant, usize)> {
        let t = &scenario.traffic;
        let n = self.stdins.len();
        // As traffic::submit seeds its origins (first_index 0: one phase per cluster).
        let mut rng = ChaCha8Rng::seed_from_u64(t.seed);
        let start = tokio::time::Instant::now();
        let mut sent = Vec::with_capacity(t.transactions);
        for k in 0..t.transactions {
            let origin = rng.random_range(0..n);
            tokio::time::sleep_until(start + Duration::from_secs_f64(k as f64 / t.rate)).await;
            let at = Instant::now();
            self.send(origin, &format!("publish {k} {}\n", t.size))
                .await;
            sent.push((at, origin));
        }
        sent
    }

    /// Until every node has every message that was published without error, or `timeout`.
    async fn settle(&self, published: &[(Instant, usize)], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let wanted = self.published_ok(published);
            let done = self
                .heard
                .iter()
                .all(|h| wanted.iter().all(|k| lock(h).arrivals.contains_key(k)));
            if done {
                return;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The message numbers the origins took (a `publish-error` is not a message).
    fn published_ok(&self, published: &[(Instant, usize)]) -> Vec<u64> {
        (0..published.len() as u64)
            .filter(|k| {
                let origin = published[*k as usize].1;
                !lock(&self.heard[origin])
                    .publish_errors
                    .iter()
                    .any(|e| e.split_whitespace().next() == Some(&k.to_string()))
            })
            .collect()
    }

    /// Per message published without error, per node: ms from publishing to the lab's read.
    fn arrivals(&self, published: &[(Instant, usize)]) -> Vec<Vec<Option<f64>>> {
        self.published_ok(published)
            .into_iter()
            .map(|k| {
                let sent = published[k as usize].0;
                self.heard
                    .iter()
                    .map(|h| lock(h).arrivals.get(&k).map(|at| ms_since(sent, *at)))
                    .collect()
            })
            .collect()
    }

    fn wire(&self) -> Option<Vec<WireBytes>> {
        let net = self.netns.as_ref()?;
        (0..self.heard.len())
            .map(|i| net.wire_bytes(i).ok())
            .collect()
    }

    fn cpu_seconds(&self) -> f64 {
        self.children
            .iter()
            .filter_map(|c| c.id().and_then(procfs::sample))
            .map(|s| s.cpu_seconds)
            .sum()
    }
}

fn ms_since(sent: Instant, at: Instant) -> f64 {
    at.saturating_duration_since(sent).as_secs_f64() * 1000.0
}

/// Reads node `i`'s report lines until it exits, stamping each on receipt.
async fn listen(i: usize, stdout: tokio::process::ChildStdout, heard: Arc<Vec<Mutex<Heard>>>) {
    let mut lines = BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let read = (Instant::now(), unix_micros());
        apply(&mut lock(&heard[i]), &line, read);
    }
}

/// One report line into what the lab heard of the node, read at `read` (the lab's instant
/// and the wall clock then). Arrivals are timed by the node's own stamp (`UNIX_US`), as
/// sorcha-peer's are (`observe.rs`), else on receipt.
fn apply(heard: &mut Heard, line: &str, (at, unix_us): (Instant, u64)) {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["recv" | "published", n, rest @ ..] => {
            let stamp = rest.first().and_then(|us| us.parse().ok());
            let taken = stamp.map_or(at, |us| stamped(at, unix_us, us).0);
            if let Ok(n) = n.parse() {
                heard.arrivals.entry(n).or_insert(taken);
            }
        }
        ["listening", addr] => heard.listening = Some((*addr).to_owned()),
        ["status", c, m, k] => {
            if let (Ok(c), Ok(m), Ok(k)) = (c.parse(), m.parse(), k.parse()) {
                heard.status = Some((c, m, k));
            }
        }
        ["publish-error", rest @ ..] => heard.publish_errors.push(rest.join(" ")),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lines_are_read() {
        let mut heard = Heard::default();
        let t0 = Instant::now() + Duration::from_secs(1);
        let t1 = t0 + Duration::from_millis(5);
        let (u0, u1) = (1_733_400_000_000_000, 1_733_400_000_005_000);
        let listening = "listening /ip4/10.203.0.2/tcp/4001/p2p/12D3KooW";
        apply(&mut heard, listening, (t0, u0));
        apply(&mut heard, "published 7 1733400000000000", (t0, u0));
        apply(&mut heard, "recv 7 1733400000000100", (t1, u1));
        apply(&mut heard, "recv 8 1733400000004000", (t1, u1));
        apply(&mut heard, "recv 9", (t1, u1));
        apply(&mut heard, "status 19 6 19", (t1, u1));
        apply(&mut heard, "publish-error 9 InsufficientPeers", (t1, u1));
        apply(&mut heard, "garbage", (t1, u1));
        assert_eq!(
            heard.listening.as_deref(),
            Some("/ip4/10.203.0.2/tcp/4001/p2p/12D3KooW")
        );
        // The first sighting wins: the origin's own `published`.
        assert_eq!(heard.arrivals[&7], t0);
        // Timed by the node's stamp, 1 ms before the line was read; without one, on receipt.
        assert_eq!(heard.arrivals[&8], t1 - Duration::from_millis(1));
        assert_eq!(heard.arrivals[&9], t1);
        assert_eq!(heard.status, Some((19, 6, 19)));
        assert_eq!(heard.publish_errors, vec!["9 InsufficientPeers".to_owned()]);
    }
}
