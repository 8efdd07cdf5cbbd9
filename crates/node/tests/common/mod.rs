//! Real `sorcha-peer` processes for integration tests: each in its own temp data dir, on
//! loopback ports picked by the OS, killed when dropped.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

pub mod csharp;
pub mod peer;

/// How long a node may take to bind its ports (a debug build on a loaded 2-core machine).
const START_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Ports {
    pub peer: u16,
    pub http: u16,
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_sorcha-peer")
}

/// reqwest and rustls need one crypto provider, installed once per process.
pub fn init_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub struct TestNode {
    child: Option<Child>,
    pub data_dir: PathBuf,
    log_path: PathBuf,
    pub ports: Ports,
    _dir: Option<tempfile::TempDir>,
}

impl TestNode {
    /// Starts `sorcha-peer run` on loopback port 0s in a fresh data dir, plus `args`.
    pub fn start(args: &[&str]) -> Self {
        Self::start_with(args, &[])
    }

    /// As [`TestNode::start`], with extra environment variables.
    pub fn start_with(args: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let data_dir = dir.path().to_owned();
        let mut node = Self::start_in(&data_dir, args, env);
        node._dir = Some(dir);
        node
    }

    /// `127.0.0.1:<peer port>`, as other nodes' `--bootstrap` takes it.
    pub fn peer_addr(&self) -> String {
        format!("127.0.0.1:{}", self.ports.peer)
    }

    /// Kills the process without warning (SIGKILL), leaving its data dir.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the process with SIGTERM and waits for it, leaving its data dir; keeps the temp
    /// dir alive so the node can be started again in it.
    pub fn stop(&mut self) {
        self.signal_and_wait("TERM", Duration::from_secs(10));
    }

    /// Starts the node again in its data dir (new ports), with `args` and `env`.
    pub fn restart(&mut self, args: &[&str], env: &[(&str, &str)]) {
        let dir = self._dir.take();
        let mut fresh = Self::start_in(&self.data_dir.clone(), args, env);
        fresh._dir = dir;
        std::mem::swap(self, &mut fresh);
    }

    pub async fn status(&self) -> serde_json::Value {
        self.get_json("/api/v1/status").await.1
    }

    /// Starts a node in an existing data dir (restarts), with extra environment variables.
    pub fn start_in(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let log_path = data_dir.join(format!("node-{}.log", std::process::id()));
        let _ = std::fs::remove_file(data_dir.join("ports.json"));
        let log = std::fs::File::create(&log_path).expect("log file");
        let mut command = Command::new(binary());
        command
            .args(["run", "--data-dir"])
            .arg(data_dir)
            .args(args)
            .env("SORCHA_PEER__ADDRESS__STUN_SERVERS", "")
            .env("SORCHA_PEER__ADDRESS__HTTP_LOOKUP_SERVICES", "")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // Loopback and OS-picked ports unless the test chose its own.
        if !args.contains(&"--listen") {
            command.args(["--listen", "127.0.0.1:0"]);
        }
        if !args.contains(&"--http-listen") {
            command.args(["--http-listen", "127.0.0.1:0"]);
        }
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().expect("spawn sorcha-peer");
        let mut node = Self {
            child: Some(child),
            data_dir: data_dir.to_owned(),
            log_path,
            ports: Ports { peer: 0, http: 0 },
            _dir: None,
        };
        node.ports = node.wait_for_ports();
        node
    }

    fn wait_for_ports(&mut self) -> Ports {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(text) = std::fs::read_to_string(self.data_dir.join("ports.json"))
                && let Ok(ports) = serde_json::from_str(&text)
            {
                return ports;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("node exited during start-up ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "node did not bind within {START_TIMEOUT:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports.http)
    }

    pub fn grpc_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.peer)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Sends `signal` (e.g. "TERM") and waits up to `limit` for the exit.
    pub fn signal_and_wait(&mut self, signal: &str, limit: Duration) -> (ExitStatus, Duration) {
        let sent = Instant::now();
        send_signal(self.pid(), signal);
        let mut child = self.child.take().expect("running");
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return (status, sent.elapsed());
            }
            if sent.elapsed() > limit {
                let _ = child.kill();
                panic!(
                    "node did not exit within {limit:?} of SIG{signal}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// GETs `path` on the HTTP port and parses the JSON answer.
    pub async fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        init_crypto();
        let response = reqwest::get(self.http_url(path))
            .await
            .expect("HTTP request");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON body"))
    }

    /// Submits `body` (`POST /api/v1/transactions`) and returns its hash.
    pub async fn submit(&self, body: impl Into<reqwest::Body>) -> String {
        init_crypto();
        let answer: serde_json::Value = reqwest::Client::new()
            .post(self.http_url("/api/v1/transactions"))
            .body(body)
            .send()
            .await
            .expect("HTTP request")
            .json()
            .await
            .expect("JSON body");
        let hash = answer["hash"].as_str();
        hash.unwrap_or_else(|| panic!("no hash in {answer}"))
            .to_owned()
    }

    pub async fn get_text(&self, path: &str) -> (u16, String) {
        init_crypto();
        let response = reqwest::get(self.http_url(path))
            .await
            .expect("HTTP request");
        (
            response.status().as_u16(),
            response.text().await.expect("text body"),
        )
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Polls `check` every 100 ms until it returns true or `limit` passes; returns whether it did.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The sum of the samples of `name` whose labels include every one of `labels`.
pub fn summed(page: &str, name: &str, labels: &[&str]) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Whether `node` answers `GET /api/v1/transactions/{hash}` with a success.
pub async fn holds(client: &reqwest::Client, node: &TestNode, hash: &str) -> bool {
    let url = node.http_url(&format!("/api/v1/transactions/{hash}"));
    client
        .get(url)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// Three nodes started with `env`, the second and third bootstrapping from the first; waits up
/// to `limit` until each reports at least 2 in its status field `field` (`peers_known`,
/// `peers_active`) and panics if they do not get there.
pub async fn trio(env: &[(&str, &str)], field: &str, limit: Duration) -> [TestNode; 3] {
    let first = TestNode::start_with(&[], env);
    let addr = first.peer_addr();
    let nodes = [
        first,
        TestNode::start_with(&["--bootstrap", &addr], env),
        TestNode::start_with(&["--bootstrap", &addr], env),
    ];
    let formed = eventually(limit, || async {
        for node in &nodes {
            if node.status().await[field].as_u64().unwrap_or(0) < 2 {
                return false;
            }
        }
        true
    })
    .await;
    assert!(formed, "the three nodes did not find each other");
    nodes
}

pub fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// Runs the binary to completion with `args` and `env`; returns (exit code, stdout, stderr).
pub fn run_cli(args: &[&str], env: &[(&str, &str)], cwd: Option<&Path>) -> (i32, String, String) {
    let mut command = Command::new(binary());
    command.args(args).env_remove("SORCHA_PEER_CONFIG");
    for (k, v) in env {
        command.env(k, v);
    }
    if let Some(dir) = cwd {
        command.current_dir(dir);
    }
    let out = command.output().expect("run sorcha-peer");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The value of sample line `name` (labels included) in a Prometheus text page, 0 if absent.
pub fn sample(page: &str, name: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// A gRPC channel to `node`'s peer port over TLS, presenting a certificate for the key in
/// `key_dir` (a data dir: the caller speaks as that node), with `security` (the default:
/// self-signed certificates, `mixed`).
pub async fn tls_channel_as(
    key_dir: &Path,
    node: &TestNode,
    security: &sorcha_peer::config::SecurityConfig,
) -> Result<tonic::transport::Channel, String> {
    use sorcha_peer::transport::tls::{TlsContext, connect::Dialer};
    let identity = sorcha_peer::identity::Identity::load_or_create(key_dir, None)
        .map_err(|e| e.to_string())?;
    let tls = TlsContext::new(security, &identity).map_err(|e| e.to_string())?;
    let metrics =
        std::sync::Arc::new(sorcha_peer::telemetry::Metrics::new().map_err(|e| e.to_string())?);
    let dialer = std::sync::Arc::new(Dialer::new(tls, metrics, std::sync::Arc::new(|_: &_| {})));
    tonic::transport::Endpoint::from_shared(node.grpc_url())
        .map_err(|e| e.to_string())?
        .connect_with_connector(dialer.connector(None))
        .await
        .map_err(|e| {
            let mut text = e.to_string();
            let mut next = std::error::Error::source(&e);
            while let Some(cause) = next {
                text.push_str(&format!(": {cause}"));
                next = cause.source();
            }
            text
        })
}
