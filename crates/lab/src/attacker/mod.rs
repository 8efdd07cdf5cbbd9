//! The attacker process (`peer-lab attacker`): a misbehaving peer speaking the node's real gRPC
//! wire, to prove the node's limits and bans from outside. Its roles, any of them at once:
//!
//! - [`flood`]: registers with the honest nodes and announces made-up hashes at a high rate,
//!   one by one (`NotifyTransaction`) and in batches (`SendMessage` `GOSSIP_ANNOUNCE`);
//! - [`liar`]: its own peer server, where the nodes pull what it announced: bodies whose hash is
//!   wrong, and now and then `found = false`;
//! - [`pusher`]: fake peer adverts (`ExchangePeers`) with random ids at 127.66.X.Y:P, all on
//!   loopback, where a [`sinkhole`] per node listens (0.0.0.0:P, P differs per node) and
//!   counts that node's dials to them.
//!
//! It never panics on what a node answers: every answer is a count in [`Counts`], written as
//! JSON ([`AttackerReport`]) to its status file twice a second and on SIGTERM.

pub mod flood;
pub mod liar;
pub mod pusher;
pub mod sinkhole;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tonic::transport::Channel;

/// How often the status file is rewritten.
const STATUS_EVERY: Duration = Duration::from_millis(500);

/// What one attacker does (the `peer-lab attacker` flags).
#[derive(Debug, Clone)]
pub struct AttackerOptions {
    /// Honest nodes' peer ports, `host:port`.
    pub targets: Vec<String>,
    /// Announce made-up hashes (implies registering with every target).
    pub flood: bool,
    /// Announcements per second over all targets.
    pub flood_rate: u64,
    /// Serve wrong bodies (and some `found = false`) from our own peer server.
    pub lie: bool,
    /// Fake adverts pushed to every target; 0: none.
    pub push_addresses: usize,
    /// Where the JSON status goes.
    pub status_file: PathBuf,
    /// Names this attacker's id (two attackers of one run differ).
    pub seed: u64,
    /// The loopback address it calls from and serves on: its own "host", so that what a node
    /// does to its address (an address ban) does not fall on the honest nodes at 127.0.0.1.
    pub ip: IpAddr,
}

/// Every count the attacker keeps; one per thing a node can answer.
#[derive(Debug, Default)]
pub struct Counts {
    pub registered: AtomicU64,
    pub register_refused: AtomicU64,
    pub notified: AtomicU64,
    pub will_request: AtomicU64,
    pub will_not_request: AtomicU64,
    pub batches_sent: AtomicU64,
    pub batch_entries: AtomicU64,
    pub pulls_wrong_body: AtomicU64,
    pub pulls_not_found: AtomicU64,
    pub adverts_pushed: AtomicU64,
    pub exchanges_refused: AtomicU64,
    /// Failed calls by gRPC code name (`ResourceExhausted`, `PermissionDenied`, `Unavailable`...).
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Counts {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a failed call by its code.
    pub fn error(&self, status: &tonic::Status) {
        let code = format!("{:?}", status.code());
        if let Ok(mut errors) = self.errors.lock() {
            *errors.entry(code).or_insert(0) += 1;
        }
    }

    fn snapshot(&self) -> CountsReport {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CountsReport {
            registered: get(&self.registered),
            register_refused: get(&self.register_refused),
            notified: get(&self.notified),
            will_request: get(&self.will_request),
            will_not_request: get(&self.will_not_request),
            batches_sent: get(&self.batches_sent),
            batch_entries: get(&self.batch_entries),
            pulls_wrong_body: get(&self.pulls_wrong_body),
            pulls_not_found: get(&self.pulls_not_found),
            adverts_pushed: get(&self.adverts_pushed),
            exchanges_refused: get(&self.exchanges_refused),
            errors: self.errors.lock().map(|e| e.clone()).unwrap_or_default(),
        }
    }
}

/// [`Counts`] as numbers, in the status file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CountsReport {
    pub registered: u64,
    pub register_refused: u64,
    /// `NotifyTransaction` calls answered.
    pub notified: u64,
    pub will_request: u64,
    pub will_not_request: u64,
    /// `GOSSIP_ANNOUNCE` messages acknowledged, and the entries in them.
    pub batches_sent: u64,
    pub batch_entries: u64,
    /// Pulls of our server answered with a body whose hash is wrong, or `found = false`.
    pub pulls_wrong_body: u64,
    pub pulls_not_found: u64,
    /// Fake adverts in `ExchangePeers` calls a node answered with success.
    pub adverts_pushed: u64,
    pub exchanges_refused: u64,
    pub errors: BTreeMap<String, u64>,
}

/// The status file: who the attacker is and what it did so far.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AttackerReport {
    pub peer_id: String,
    /// Our peer server (`liar`), `127.0.0.1:port`.
    pub server: Option<String>,
    pub roles: Vec<String>,
    pub elapsed_seconds: f64,
    pub counts: CountsReport,
    /// One per target, in the order of `--target`: the fake addresses pushed to that node.
    pub sinkholes: Vec<sinkhole::SinkholeReport>,
}

/// What every role shares.
pub struct Shared {
    pub peer_id: String,
    pub ip: IpAddr,
    pub counts: Counts,
    pub started: Instant,
}

/// This attacker's peer id: 40 hex digits, like a key-derived id, distinct per seed and run.
pub fn attacker_id(seed: u64) -> String {
    let salt = std::process::id();
    hex::encode(Sha256::digest(format!("peer-lab attacker {seed} {salt}")))[..40].to_owned()
}

/// Runs the roles until SIGTERM/SIGINT, rewriting the status file as it goes.
pub async fn run(options: AttackerOptions) -> anyhow::Result<()> {
    let shared = Arc::new(Shared {
        peer_id: attacker_id(options.seed),
        ip: options.ip,
        counts: Counts::default(),
        started: Instant::now(),
    });
    let mut roles = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    // Every attacker registers with a server of its own, so the nodes can dial it back.
    let server = liar::serve(shared.clone(), options.lie, &mut tasks).await?;
    if options.lie {
        roles.push("liar".to_owned());
    }
    if options.flood {
        roles.push("flooder".to_owned());
        let (shared, targets, rate) = (shared.clone(), options.targets.clone(), options.flood_rate);
        let server = server.clone();
        tasks.spawn(async move { flood::run(shared, targets, server, rate).await });
    }
    // One sinkhole per target, so that each node's dials are counted apart.
    let mut holes = Vec::new();
    if options.push_addresses > 0 {
        roles.push("address-pusher".to_owned());
        for _ in &options.targets {
            let hole = Arc::new(sinkhole::Sinkhole::bind().await?);
            let listening = hole.clone();
            tasks.spawn(async move { listening.run().await });
            holes.push(hole);
        }
        let ports = holes.iter().map(|h| h.port()).collect();
        let (shared, targets, n) = (
            shared.clone(),
            options.targets.clone(),
            options.push_addresses,
        );
        let server = server.clone();
        tasks.spawn(async move { pusher::run(shared, targets, n, ports, server).await });
    }
    let report = |shared: &Shared| AttackerReport {
        peer_id: shared.peer_id.clone(),
        server: Some(server.clone()),
        roles: roles.clone(),
        elapsed_seconds: shared.started.elapsed().as_secs_f64(),
        counts: shared.counts.snapshot(),
        sinkholes: holes.iter().map(|h| h.report()).collect(),
    };
    let stop = stopped();
    tokio::pin!(stop);
    loop {
        write_status(&options.status_file, &report(&shared));
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep(STATUS_EVERY) => {}
        }
    }
    tasks.abort_all();
    write_status(&options.status_file, &report(&shared));
    Ok(())
}

/// Writes atomically (a temporary file renamed), so the lab never reads half a file.
fn write_status(path: &std::path::Path, report: &AttackerReport) {
    let Ok(json) = serde_json::to_vec(report) else {
        return;
    };
    let tmp = path.with_extension("tmp");
    if std::fs::write(&tmp, json).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}

/// Reads an attacker's status file (`None`: not written yet, or unreadable).
pub fn read_status(path: &std::path::Path) -> Option<AttackerReport> {
    let text = std::fs::read(path).ok()?;
    serde_json::from_slice(&text).ok()
}

async fn stopped() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}

/// Milliseconds since the Unix epoch (what `last_seen` and timestamps carry).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// 32 bytes nobody can predict from a hash of this process's id, a per-process salt and `k`:
/// made-up transaction hashes and bodies (no random generator needed for that).
pub fn noise(k: u64) -> [u8; 32] {
    static SALT: std::sync::OnceLock<u128> = std::sync::OnceLock::new();
    let salt = SALT.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    });
    let mut h = Sha256::new();
    h.update(std::process::id().to_le_bytes());
    h.update(salt.to_le_bytes());
    h.update(k.to_le_bytes());
    h.finalize().into()
}

/// A lazily connecting channel to `target` (`host:port`) from our address; `None` for a target
/// that is no URL authority.
pub fn channel(shared: &Shared, target: &str, timeout: Duration) -> Option<Channel> {
    let endpoint = Channel::from_shared(format!("http://{target}")).ok()?;
    Some(
        endpoint
            .local_address(Some(shared.ip))
            .timeout(timeout)
            .connect_lazy(),
    )
}

/// Attacker `seed`'s own loopback address: 127.77.0.(seed + 1).
pub fn attacker_ip(seed: u64) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 77, 0, (seed % 250) as u8 + 1))
}
