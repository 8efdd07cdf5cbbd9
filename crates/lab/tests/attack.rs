//! The attacker process against real nodes: `peer-lab run` of a small attack scenario (4
//! honest nodes, 1 attacker that floods, lies and pushes fake addresses, no baseline) must
//! lose no honest transaction, and its report must carry the attack section with what the
//! attacker did and what the sinkholes saw.
//!
//! The attacker serves wrong bodies, so every node must ban it within the 10 s goal, and no
//! node may dial more fake addresses than its configured limit.

use std::path::{Path, PathBuf};
use std::process::Command;

fn lab() -> &'static str {
    env!("CARGO_BIN_EXE_peer-lab")
}

/// `sorcha-peer` next to `peer-lab` in this target dir, else in the workspace's target/debug.
fn node_binary() -> PathBuf {
    let mut candidates = vec![Path::new(lab()).with_file_name("sorcha-peer")];
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(dir).join("debug/sorcha-peer"));
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/sorcha-peer"));
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!("no sorcha-peer debug binary (looked at {candidates:?}); `cargo build -p sorcha-peer` first")
        })
}

const SCENARIO: &str = r#"
name = "attack-test"
nodes = 4
settle_timeout = "30s"
[env]
SORCHA_PEER__DISCOVERY__HEARTBEAT_INTERVAL = "300ms"
SORCHA_PEER__DISCOVERY__PEER_TIMEOUT = "1s"
SORCHA_PEER__DISCOVERY__REFRESH_INTERVAL = "2s"
SORCHA_PEER__DISTRIBUTION__ANTI_ENTROPY_INTERVAL = "500ms"
SORCHA_PEER__DISCOVERY__MIN_HEALTHY_PEERS = "2"
SORCHA_PEER__LOG__LEVEL = "error"
[traffic]
transactions = 200
rate = 0
concurrency = 16
[attack]
baseline = false
lead = "1s"
hold = "5s"
[[attack.attackers]]
flood = true
flood_rate = 400
lie = true
push_addresses = 1000
"#;

#[test]
fn an_attacker_against_real_nodes_loses_no_honest_transaction_and_is_reported() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("attack-test.toml");
    std::fs::write(&file, SCENARIO).expect("write the scenario");
    let out = Command::new(lab())
        .arg("run")
        .arg(&file)
        .arg("--binary")
        .arg(node_binary())
        .arg("--json")
        .output()
        .expect("run peer-lab");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    assert_eq!(out.status.code(), Some(0), "{report}\n{stderr}");
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["transactions"]["accepted"], 200, "{report}");
    let attack = &report["attack"];
    assert!(attack["baseline"].is_null(), "{attack}");
    assert_eq!(attack["attacked"]["lost"], 0, "{attack}");
    assert!(
        attack["attack_seconds"].as_f64().unwrap() >= 5.0,
        "{attack}"
    );

    let counts = &attack["attackers"][0]["counts"];
    let count = |k: &str| counts[k].as_u64().unwrap_or(0);
    assert!(count("registered") > 0, "{counts}");
    assert!(count("notified") > 0, "announced one by one: {counts}");
    assert!(count("batch_entries") > 0, "announced in batches: {counts}");
    // Nodes pull what it announced from its own server, and it lies.
    assert!(
        count("pulls_wrong_body") + count("pulls_not_found") > 0,
        "{counts}"
    );
    assert!(count("adverts_pushed") > 0, "{counts}");

    assert_eq!(attack["bans"].as_array().map(Vec::len), Some(4), "{attack}");
    assert_eq!(attack["pairs"], 4, "{attack}");
    let dials = &attack["fake_dials"];
    assert_eq!(
        dials["per_minute_max"].as_array().map(Vec::len),
        Some(4),
        "{dials}"
    );
    // Dialling is bounded (5 a second after a burst of 20, 60 distinct addresses a minute),
    // and still measurable: the sinkhole counts every dial.
    assert!(dials["distinct_total"].as_u64().unwrap() > 0, "{dials}");
    assert_eq!(dials["configured_per_minute"], 60.0, "{dials}");
    // Wrong bodies are counted by the nodes today already.
    assert!(
        attack["node_metrics"]["verification_failures_total"][""]
            .as_f64()
            .unwrap()
            > 0.0,
        "{attack}"
    );
    for name in [
        "peer_score_penalties_total",
        "peer_bans_total",
        "dials_deferred_total",
    ] {
        assert!(attack["node_metrics"][name].is_object(), "{name}: {attack}");
    }
    assert!(
        attack["node_metrics"]["peer_bans_total"]["wrong_body"]
            .as_f64()
            .unwrap_or(0.0)
            >= 1.0,
        "{attack}"
    );
    let goals = attack["goals"].as_array().expect("goals");
    assert_eq!(goals.len(), 4, "{attack}");
    assert_eq!(goals[1]["pass"], true, "nothing lost: {attack}");
    assert_eq!(attack["banned_pairs"], attack["pairs"], "{attack}");
    assert_eq!(goals[2]["pass"], true, "banned within 10 s: {attack}");
    assert_eq!(
        goals[3]["pass"], true,
        "fake dials within the limit: {attack}"
    );
    assert!(goals.iter().all(|g| g["value"].is_string()), "{attack}");
}
