//! Cross-implementation interop: a Python grpcio client, with stubs generated from `proto/` at run
//! time, talks to a real node over loopback (`tests/interop/client.py` does the calls and checks
//! each answer; this test starts the node, runs it and cross-checks its JSON against the node's
//! own HTTP status).
//!
//! The Python packages are a hard requirement: without them the test fails, loudly. The only
//! way out is `SORCHA_SKIP_PYTHON_INTEROP=1`, which CI never sets.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::TestNode;

/// The one explicit opt-out, for machines without Python; prints a SKIPPED line.
const SKIP_VAR: &str = "SORCHA_SKIP_PYTHON_INTEROP";
/// The interpreter to run (scripts/test.sh exports its venv's); else the venv scripts/test.sh
/// makes, `.venv-test/`, if it is there; else `python3` on PATH.
const PYTHON_VAR: &str = "SORCHA_INTEROP_PYTHON";
/// The venv scripts/test.sh creates, relative to the repository root.
const TEST_VENV_PYTHON: &str = ".venv-test/bin/python";
const INSTALL_HINT: &str = "bash scripts/test.sh --setup-only (a venv in .venv-test/ with \
     tests/interop/requirements.txt)";
/// client.py's exit code when its Python modules are missing.
const EXIT_MISSING_MODULES: i32 = 3;
/// Stub generation plus eight calls; each call has its own 10 s deadline inside the client.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("invariant: the crate lives at <repo>/crates/node")
        .to_owned()
}

fn python() -> String {
    if let Ok(python) = std::env::var(PYTHON_VAR) {
        return python;
    }
    let venv = repo_root().join(TEST_VENV_PYTHON);
    if venv.exists() {
        return venv.display().to_string();
    }
    "python3".to_owned()
}

fn missing_python(what: &str) -> ! {
    panic!(
        "\n\n*** PYTHON INTEROP TEST CANNOT RUN: {what}\n*** Install the client's packages: \
         {INSTALL_HINT}\n*** (or set {SKIP_VAR}=1 to skip it explicitly on this machine)\n"
    );
}

/// Fails before a node is started if the interpreter or its gRPC modules are missing.
fn check_python_modules() {
    let probe = Command::new(python())
        .args([
            "-c",
            "import grpc, grpc_tools.protoc, grpc_health.v1.health_pb2",
        ])
        .output();
    match probe {
        Err(e) => missing_python(&format!("cannot run `{}`: {e}", python())),
        Ok(out) if !out.status.success() => missing_python(&format!(
            "Python modules missing:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )),
        Ok(_) => {}
    }
}

/// Runs client.py against `target`; returns (exit code, stdout, stderr).
fn run_client(target: &str) -> (i32, String, String) {
    let root = repo_root();
    let out_dir = tempfile::tempdir().expect("temp dir");
    let stdout_path = out_dir.path().join("stdout");
    let stderr_path = out_dir.path().join("stderr");
    // Files, not pipes: a chatty client cannot block on a full pipe while we wait for it.
    let mut child = Command::new(python())
        .arg(root.join("tests/interop/client.py"))
        .args(["--target", target, "--proto-dir"])
        .arg(root.join("proto"))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| missing_python(&format!("cannot run `{}`: {e}", python())));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for client.py") {
            break status;
        }
        if started.elapsed() > CLIENT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "client.py did not finish within {CLIENT_TIMEOUT:?}; stderr:\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (
        status.code().unwrap_or(-1),
        std::fs::read_to_string(&stdout_path).unwrap_or_default(),
        std::fs::read_to_string(&stderr_path).unwrap_or_default(),
    )
}

#[tokio::test]
async fn python_grpcio_client_interoperates() {
    if std::env::var(SKIP_VAR).as_deref() == Ok("1") {
        eprintln!(
            "\n*** SKIPPED: Python gRPC interop test ({SKIP_VAR}=1). It is NOT covered by this run.\n"
        );
        return;
    }
    check_python_modules();

    let node = TestNode::start(&[]);
    let target = format!("127.0.0.1:{}", node.ports.peer);
    let (code, stdout, stderr) = run_client(&target);
    if code == EXIT_MISSING_MODULES {
        missing_python(&stderr);
    }
    assert_eq!(
        code,
        0,
        "client.py failed (exit {code})\nstderr:\n{stderr}\nstdout:\n{stdout}\nnode log:\n{}",
        node.log()
    );
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("client.py printed no JSON object ({e}):\n{stdout}"));
    let field = |pointer: &str| {
        report
            .pointer(pointer)
            .unwrap_or_else(|| panic!("client.py JSON has no {pointer}:\n{stdout}"))
            .clone()
    };

    let (http_code, status) = node.get_json("/api/v1/status").await;
    assert_eq!(http_code, 200, "GET /api/v1/status: {status}");
    assert_eq!(field("/ok"), Value::Bool(true));
    assert_eq!(field("/ping/peer_id"), status["peer_id"], "Ping vs status");
    assert_eq!(field("/ping/status"), "ONLINE");
    assert_eq!(field("/register/success"), Value::Bool(true));
    assert_eq!(field("/peer_list/python_peer/address"), "127.0.0.1");
    assert_eq!(field("/peer_list/python_peer/port"), 5999);
    // A fresh node with no bootstrap knows exactly the peer the client registered.
    assert_eq!(field("/peer_list/total_peers"), 1);
    assert_eq!(
        status["peers_known"], 1,
        "status after RegisterPeer: {status}"
    );
    assert_eq!(field("/heartbeat_unknown/success"), Value::Bool(false));
    assert_eq!(field("/heartbeat_unknown/message"), "Peer not registered");
    assert_eq!(field("/heartbeat_registered/success"), Value::Bool(true));
    assert_eq!(field("/heartbeat_stream/answers"), 3);
    assert_eq!(field("/register_port_zero/code"), "INVALID_ARGUMENT");
    assert_eq!(field("/health/"), "SERVING");
}
