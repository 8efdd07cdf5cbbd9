//! The attackers of one run: started as `peer-lab attacker` processes (this executable) once
//! the honest nodes are Online, watched while they run (every node's view of each, for when it
//! banned each of them), stopped and read at the end.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::attacker::{self, AttackerReport};
use crate::cluster::Cluster;
use crate::procfs;
use crate::scenario::AttackerSpec;

/// How often every node is asked about every attacker, for bans.
const BAN_POLL: Duration = Duration::from_millis(250);
/// How long an attacker may take to write its first status (its id).
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// SIGTERM to exit; then SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// A ban of attacker `attacker` seen on node `node`.
#[derive(Debug, Clone)]
pub struct BanSeen {
    /// From the attack's start until the first poll that showed it.
    pub after_ms: f64,
    /// The peer view's `ban_reason`, where the node gives one.
    pub reason: Option<String>,
}

/// `bans[k][i]`: attacker k on node i.
type Bans = Arc<Mutex<Vec<Vec<Option<BanSeen>>>>>;

/// What the attackers did and what the nodes did to them.
#[derive(Debug, Default)]
pub struct SiegeOutcome {
    pub attackers: Vec<AttackerReport>,
    /// CPU seconds each attacker used (it shares the machine with the nodes).
    pub cpu_seconds: Vec<f64>,
    pub bans: Vec<Vec<Option<BanSeen>>>,
    pub seconds: f64,
}

pub struct Siege {
    children: Vec<Child>,
    status_files: Vec<PathBuf>,
    pub started: Instant,
    bans: Bans,
    poller: tokio::task::JoinHandle<()>,
}

impl Siege {
    /// Starts one process per spec against every live node; waits for their ids, then starts
    /// watching the nodes' views of them.
    pub async fn start(cluster: Arc<Cluster>, specs: &[AttackerSpec]) -> std::io::Result<Self> {
        let exe = std::env::current_exe()?;
        let targets: Vec<String> = (0..cluster.len())
            .filter_map(|i| cluster.endpoint(i).map(|e| e.peer_addr()))
            .collect();
        let mut children = Vec::new();
        let mut status_files = Vec::new();
        for (k, spec) in specs.iter().enumerate() {
            let status = cluster.root().join(format!("attacker-{k}.json"));
            let log = std::fs::File::create(cluster.root().join(format!("attacker-{k}.log")))?;
            children.push(spawn(&exe, spec, k, &targets, &status, log)?);
            status_files.push(status);
        }
        let started = Instant::now();
        let ids = wait_ids(&status_files).await;
        let bans: Bans = Arc::new(Mutex::new(vec![vec![None; cluster.len()]; specs.len()]));
        let poller = tokio::spawn(watch_bans(cluster, ids, started, bans.clone()));
        Ok(Self {
            children,
            status_files,
            started,
            bans,
            poller,
        })
    }

    /// SIGTERM to every attacker (their last status is written on it), then their reports.
    pub async fn stop(mut self) -> SiegeOutcome {
        self.poller.abort();
        let seconds = self.started.elapsed().as_secs_f64();
        let cpu_seconds = self
            .children
            .iter()
            .map(|c| procfs::sample(c.id()).map_or(0.0, |s| s.cpu_seconds))
            .collect();
        for child in &self.children {
            if let Ok(pid) = libc::pid_t::try_from(child.id()) {
                // SAFETY: kill(2) on a child this lab spawned and has not reaped.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        for child in &mut self.children {
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let attackers = self
            .status_files
            .iter()
            .map(|f| attacker::read_status(f).unwrap_or_default())
            .collect();
        let bans = self.bans.lock().map(|b| b.clone()).unwrap_or_default();
        SiegeOutcome {
            attackers,
            cpu_seconds,
            bans,
            seconds,
        }
    }
}

impl Drop for Siege {
    fn drop(&mut self) {
        self.poller.abort();
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn(
    exe: &std::path::Path,
    spec: &AttackerSpec,
    k: usize,
    targets: &[String],
    status: &std::path::Path,
    log: std::fs::File,
) -> std::io::Result<Child> {
    let mut command = Command::new(exe);
    command.arg("attacker").arg("--status-file").arg(status);
    command.args(["--seed", &k.to_string()]);
    for t in targets {
        command.args(["--target", t]);
    }
    if spec.flood {
        command.args(["--flood", "--flood-rate", &spec.flood_rate.to_string()]);
    }
    if spec.lie {
        command.arg("--lie");
    }
    if spec.push_addresses > 0 {
        command.args(["--push-addresses", &spec.push_addresses.to_string()]);
    }
    crate::cluster::spawn_tied(&mut command, log)
}

/// Each attacker's peer id, from its first status file ("" if it never wrote one).
async fn wait_ids(files: &[PathBuf]) -> Vec<String> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let ids: Vec<Option<String>> = files
            .iter()
            .map(|f| attacker::read_status(f).map(|r| r.peer_id))
            .collect();
        if ids.iter().all(Option::is_some) || Instant::now() > deadline {
            return ids.into_iter().map(Option::unwrap_or_default).collect();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls every node for every attacker (`/api/v1/peers/{id}`: one small answer, where the
/// whole list would cost the nodes more the more fake peers they know) until aborted, noting
/// the first time each attacker shows as banned there.
async fn watch_bans(cluster: Arc<Cluster>, ids: Vec<String>, started: Instant, bans: Bans) {
    loop {
        for i in 0..cluster.len() {
            let Some(base) = cluster.http(i).filter(|_| cluster.is_responsive(i)) else {
                continue;
            };
            for (k, id) in ids.iter().enumerate() {
                let seen = bans.lock().map(|b| b[k][i].is_some()).unwrap_or(true);
                if seen || id.is_empty() {
                    continue;
                }
                let Some(peer) = cluster.api().peer(&base, id).await else {
                    continue;
                };
                if !is_banned(&peer) {
                    continue;
                }
                let after_ms = started.elapsed().as_secs_f64() * 1000.0;
                let reason = peer["ban_reason"].as_str().map(str::to_owned);
                if let Ok(mut b) = bans.lock() {
                    b[k][i] = Some(BanSeen { after_ms, reason });
                }
            }
        }
        tokio::time::sleep(BAN_POLL).await;
    }
}

/// Banned as the node's peer view shows it: `banned_until` set, or the status `banned`.
pub fn is_banned(peer: &serde_json::Value) -> bool {
    !peer["banned_until"].is_null() || peer["status"] == "banned"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ban_shows_by_its_field_or_its_status() {
        let j = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap();
        assert!(is_banned(&j(r#"{"banned_until": 5, "status": "alive"}"#)));
        assert!(is_banned(&j(
            r#"{"banned_until": null, "status": "banned"}"#
        )));
        assert!(!is_banned(&j(
            r#"{"banned_until": null, "status": "alive"}"#
        )));
        assert!(!is_banned(&j(r#"{"status": "alive"}"#)));
    }
}
