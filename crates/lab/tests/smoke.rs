//! `peer-lab run smoke` against the debug build of the node, as CI runs it; and a run that
//! loses transactions on purpose must exit non-zero.
//!
//! The node binary comes from the same target dir (`cargo test --workspace` builds it for the
//! node's own tests); if it is missing, build it with `cargo build -p sorcha-peer`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// One cluster at a time: two at once on a loaded 2-core CI machine would blur the timings
/// the smoke checks.
static CLUSTER: Mutex<()> = Mutex::new(());

fn lab() -> &'static str {
    env!("CARGO_BIN_EXE_peer-lab")
}

/// `sorcha-peer` next to `peer-lab` in this target dir, else in the workspace's target/debug.
fn node_binary() -> PathBuf {
    let next_to_lab = Path::new(lab()).with_file_name("sorcha-peer");
    let mut candidates = vec![next_to_lab];
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(dir).join("debug/sorcha-peer"));
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/sorcha-peer"));
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "no sorcha-peer debug binary (looked at {candidates:?}); build it first with \
                 `cargo build -p sorcha-peer` (same CARGO_TARGET_DIR as the tests)"
            )
        })
}

/// Runs `peer-lab run <args> --json`: (exit code, the report, stderr).
fn run_lab(args: &[&str]) -> (i32, serde_json::Value, String) {
    let _one_at_a_time = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let out = Command::new(lab())
        .arg("run")
        .args(args)
        .arg("--binary")
        .arg(node_binary())
        .arg("--json")
        .output()
        .expect("run peer-lab");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = serde_json::from_str(stdout.trim()).unwrap_or(serde_json::Value::Null);
    (out.status.code().unwrap_or(-1), report, stderr)
}

#[test]
fn smoke_delivers_every_transaction_to_every_node() {
    let (code, report, stderr) = run_lab(&["smoke"]);
    assert_eq!(code, 0, "smoke failed: {report}\n{stderr}");
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["transactions"]["accepted"], 100, "{report}");
    assert_eq!(report["per_node"].as_array().map(Vec::len), Some(5));
    assert_eq!(
        report["propagation_ms"]["nodes_100"]["count"], 100,
        "{report}"
    );
    assert!(report["startup"]["online_ms"].is_number(), "{report}");
    assert!(
        report["duration_seconds"].as_f64().unwrap() < 30.0,
        "{report}"
    );
}

#[test]
fn a_run_that_loses_transactions_exits_non_zero() {
    // A partition that is never healed: what node 0 takes can never reach nodes 3 to 5.
    let scenario = r#"
name = "never-healed"
nodes = 6
online_timeout = "30s"
settle_timeout = "3s"

[env]
SORCHA_PEER__DISCOVERY__HEARTBEAT_INTERVAL = "300ms"
SORCHA_PEER__DISCOVERY__PEER_TIMEOUT = "1s"
SORCHA_PEER__DISCOVERY__REFRESH_INTERVAL = "2s"
SORCHA_PEER__DISCOVERY__MIN_HEALTHY_PEERS = "2"
SORCHA_PEER__DISTRIBUTION__ANTI_ENTROPY_INTERVAL = "500ms"
SORCHA_PEER__LOG__LEVEL = "warn"

[traffic]
transactions = 20
rate = 20
origins = "node:0"

[[faults]]
at = "0s"
action = "partition"
groups = [[0, 1, 2], [3, 4, 5]]
duration = "10m"
"#;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("never-healed.toml");
    std::fs::write(&file, scenario).unwrap();
    let (code, report, stderr) = run_lab(&[file.to_str().unwrap()]);
    assert_eq!(code, 1, "expected exit 1 (lost): {report}\n{stderr}");
    assert_eq!(report["ok"], false, "{report}");
    assert!(report["lost"].as_u64().unwrap() > 0, "{report}");
}

#[test]
fn an_unknown_preset_is_a_usage_error() {
    let out = Command::new(lab())
        .args(["run", "no-such-preset"])
        .output()
        .expect("run peer-lab");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("smoke"), "{stderr}");
}
