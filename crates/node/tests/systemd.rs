//! The systemd integration: `Type=notify` (a real node process tells a fake service manager's
//! `NOTIFY_SOCKET` READY=1 once it serves, STOPPING=1 on SIGTERM) and the shipped unit,
//! `deploy/sorcha-peer.service`, checked by `systemd-analyze verify` and its offline security
//! score.
//!
//! Without systemd-analyze (Debian package systemd; scripts/test.sh installs it) the unit
//! checks print a SKIPPED line, except under CI (`CI` set), where they fail.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{TestNode, binary, init_crypto};

/// Highest `systemd-analyze security` exposure accepted for the unit (0 safest, 10 worst;
/// systemd calls up to 2.0 "OK").
const MAX_EXPOSURE: f64 = 2.0;

fn unit_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/sorcha-peer.service")
}

/// The shipped unit with ExecStart pointing at the binary under test (verify checks that the
/// command exists), in a temp dir under the unit's own name.
fn unit_under_test(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(unit_file()).expect("deploy/sorcha-peer.service");
    assert!(text.contains("ExecStart=/usr/local/bin/sorcha-peer run"));
    let text = text.replace("/usr/local/bin/sorcha-peer", binary());
    let path = dir.join("sorcha-peer.service");
    std::fs::write(&path, text).unwrap();
    path
}

/// Whether systemd-analyze can run here; panics under CI if not.
fn have_systemd_analyze() -> bool {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok()
    {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "systemd-analyze is missing under CI: scripts/test.sh installs the Debian package systemd"
    );
    eprintln!(
        "\n*** SKIPPED: systemd unit checks: systemd-analyze not found (apt-get install systemd).\n"
    );
    false
}

#[test]
fn the_unit_verifies() {
    if !have_systemd_analyze() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_under_test(dir.path());
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    assert!(
        !stderr.contains("sorcha-peer.service"),
        "warnings about the unit: {stderr}"
    );
}

#[test]
fn the_unit_is_hardened() {
    if !have_systemd_analyze() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_under_test(dir.path());
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let exposure = stdout
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for sorcha-peer.service: "))
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {stdout}"));
    assert!(exposure <= MAX_EXPOSURE, "exposure {exposure}:\n{stdout}");
    let text = std::fs::read_to_string(unit_file()).unwrap();
    for key in [
        "Type=notify",
        "DynamicUser=yes",
        "StateDirectory=sorcha-peer",
        "Restart=on-failure",
    ] {
        assert!(text.contains(key), "{key} missing from the unit");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_and_stopping_reach_the_service_manager() {
    init_crypto();
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let socket_str = socket_path.to_str().unwrap();
    let mut node = TestNode::start_with(&[], &[("NOTIFY_SOCKET", socket_str)]);

    let message = receive(&socket);
    assert!(message.lines().any(|l| l == "READY=1"), "{message:?}");
    let (code, _) = node.get_text("/health/ready").await;
    assert_eq!(code, 200, "READY=1 came before the node was ready");

    let (status, _) = node.signal_and_wait("TERM", Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    let message = receive(&socket);
    assert!(message.lines().any(|l| l == "STOPPING=1"), "{message:?}");
}

fn receive(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("a notification within 20 s");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}
