//! The command line as an operator uses it: help, init, config check, address.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::thread;
use std::time::Duration;

use common::{TestNode, binary, run_cli};

#[test]
fn every_command_has_help() {
    for args in [
        vec!["--help"],
        vec!["run", "--help"],
        vec!["init", "--help"],
        vec!["config", "--help"],
        vec!["config", "check", "--help"],
        vec!["status", "--help"],
        vec!["address", "--help"],
        vec!["tx", "--help"],
        vec!["tx", "submit", "--help"],
        vec!["tx", "get", "--help"],
        vec!["tx", "list", "--help"],
        vec!["events", "--help"],
    ] {
        let (code, stdout, stderr) = run_cli(&args, &[], None);
        assert_eq!(code, 0, "{args:?}: {stderr}");
        assert!(stdout.contains("Usage:"), "{args:?}: {stdout}");
    }
    let (_, run_help, _) = run_cli(&["run", "--help"], &[], None);
    for flag in [
        "--config",
        "--data-dir",
        "--listen",
        "--http-listen",
        "--bootstrap",
        "--node-id",
        "--log-format",
    ] {
        assert!(run_help.contains(flag), "run --help lacks {flag}");
    }
    let (code, _, stderr) = run_cli(&["run", "--no-such-flag"], &[], None);
    assert_eq!(code, 2, "{stderr}");
}

#[test]
fn init_writes_a_valid_commented_config_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) =
        run_cli(&["init", "--data-dir", "node-data"], &[], Some(dir.path()));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("peer id"), "{stdout}");
    let config = dir.path().join("sorcha-peer.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.contains("# ") && text.contains("[discovery]"),
        "{text}"
    );
    assert!(dir.path().join("node-data/node.key").exists());
    // `run --config` from anywhere uses the data dir (and so the identity) init created.
    let elsewhere = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = run_cli(
        &["config", "check", "--config", config.to_str().unwrap()],
        &[],
        Some(elsewhere.path()),
    );
    assert_eq!(code, 0, "{stderr}");
    let data_dir = dir.path().join("node-data").canonicalize().unwrap();
    let shown = stdout.lines().find(|l| l.starts_with("data_dir"));
    assert!(
        shown.is_some_and(|l| l.contains(data_dir.to_str().unwrap())),
        "{stdout}"
    );

    std::fs::write(&config, "# edited by the operator\n").unwrap();
    let (code, _, stderr) = run_cli(&["init"], &[], Some(dir.path()));
    assert_eq!(code, 1);
    assert!(stderr.contains("already exists"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        "# edited by the operator\n"
    );
}

#[test]
fn config_check_shows_values_and_their_origins() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("peer.toml");
    std::fs::write(&file, "[discovery]\nmin_healthy_peers = 2\n").unwrap();
    let (code, stdout, stderr) = run_cli(
        &[
            "config",
            "check",
            "--json",
            "--config",
            file.to_str().unwrap(),
            "--listen",
            "127.0.0.1:7001",
        ],
        &[("SORCHA_PEER__DISTRIBUTION__FANOUT", "4")],
        None,
    );
    assert_eq!(code, 0, "{stderr}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let find = |key: &str| {
        doc["values"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["key"] == key)
            .cloned()
            .unwrap_or_else(|| panic!("{key} missing"))
    };
    assert_eq!(find("discovery.min_healthy_peers")["value"], "2");
    assert!(
        find("discovery.min_healthy_peers")["origin"]
            .as_str()
            .unwrap()
            .starts_with("file")
    );
    assert_eq!(
        find("distribution.fanout")["origin"],
        "environment SORCHA_PEER__DISTRIBUTION__FANOUT"
    );
    assert_eq!(find("network.listen")["origin"], "flag --listen");
    assert_eq!(find("offline.max_queue_size")["origin"], "default");

    let (code, stdout, _) = run_cli(&["config", "check"], &[], None);
    assert_eq!(code, 0);
    assert!(stdout.contains("configuration is valid"), "{stdout}");

    let (code, _, stderr) = run_cli(
        &["config", "check"],
        &[("SORCHA_PEER__DISTRIBUTION__FANOUT", "100")],
        None,
    );
    assert_eq!(code, 2);
    assert!(stderr.contains("distribution.fanout = 100"), "{stderr}");
    assert!(stderr.contains("between 1 and 20"), "{stderr}");
}

#[test]
fn config_check_accepts_sorcha_appsettings() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("appsettings.json");
    std::fs::write(
        &file,
        r#"{"PeerService": {"ListenPort": 6101, "PeerDiscovery": {"BootstrapNodes": ["10.0.0.1:5001"]}}}"#,
    )
    .unwrap();
    let (code, stdout, stderr) = run_cli(
        &["config", "check", "--config", file.to_str().unwrap()],
        &[],
        None,
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("0.0.0.0:6101"), "{stdout}");
    assert!(stdout.contains("PeerService.ListenPort"), "{stdout}");
}

/// A minimal RFC 5389 server: answers every binding request with the request's source address
/// in an XOR-MAPPED-ADDRESS, as a real server on the far side of a NAT would.
fn stun_server() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            if n < 20 || buf[0..2] != [0x00, 0x01] {
                continue;
            }
            let SocketAddr::V4(from) = from else { continue };
            let cookie = [0x21, 0x12, 0xA4, 0x42];
            let mut reply = vec![0x01, 0x01, 0x00, 12];
            reply.extend_from_slice(&cookie);
            reply.extend_from_slice(&buf[8..20]);
            reply.extend_from_slice(&[0x00, 0x20, 0x00, 8, 0x00, 0x01]);
            let port = from.port() ^ 0x2112;
            reply.extend_from_slice(&port.to_be_bytes());
            for (octet, key) in from.ip().octets().iter().zip(cookie) {
                reply.push(octet ^ key);
            }
            let _ = socket.send_to(&reply, from);
        }
    });
    addr
}

#[test]
fn address_command_finds_the_address_through_stun() {
    let server = stun_server().to_string();
    let (code, stdout, stderr) = run_cli(&["address", "--stun", &server, "--json"], &[], None);
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["external_address"], "127.0.0.1", "{report:#}");
    assert_eq!(report["source"], "stun", "{report:#}");

    let (code, stdout, _) = run_cli(&["address", "--stun", &server], &[], None);
    assert_eq!(code, 0);
    assert!(stdout.contains("stun"), "{stdout}");

    let (code, _, stderr) = run_cli(&["address", "--stun", "not-a-server"], &[], None);
    assert_eq!(code, 2, "a bad STUN server is a bad argument: {stderr}");
    assert!(stderr.contains("address.stun_servers[0]"), "{stderr}");
}

#[test]
fn tx_commands_round_trip_a_transaction_through_a_node() {
    let node = TestNode::start(&[]);
    let http = format!("127.0.0.1:{}", node.ports.http);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tx.bin");
    std::fs::write(&file, b"\x00binary\xffbody").unwrap();
    let file = file.to_str().unwrap();

    let (code, out, err) = run_cli(
        &["tx", "submit", file, "--http", &http, "--json"],
        &[],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let answer: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let hash = answer["hash"].as_str().expect("hash").to_owned();

    // Standalone, the node is Offline: the submission waits in the queue, and says so.
    let (code, out, err) = run_cli(&["tx", "submit", file, "--http", &http], &[], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with(&hash), "{out}");

    let (code, out, _) = run_cli(
        &["events", "--http", &http, "--kind", "tx_queued", "--json"],
        &[],
        None,
    );
    assert_eq!(code, 0);
    assert!(out.contains(&hash), "{out}");

    let (code, out, _) = run_cli(&["tx", "list", "--http", &http, "--json"], &[], None);
    assert_eq!(code, 0);
    assert!(
        serde_json::from_str::<serde_json::Value>(&out).is_ok(),
        "{out}"
    );

    let (code, _, err) = run_cli(&["tx", "get", "beef", "--http", &http], &[], None);
    assert_eq!(code, 1);
    assert!(
        err.contains("400") && err.contains("invalid transaction id"),
        "{err}"
    );
    let (code, _, err) = run_cli(
        &["tx", "submit", "/no/such/file", "--http", &http],
        &[],
        None,
    );
    assert_eq!(code, 1);
    assert!(err.contains("cannot read /no/such/file"), "{err}");
}

#[test]
fn a_closed_pipe_ends_client_commands_quietly() {
    use std::process::{Command, Stdio};
    let node = TestNode::start(&[]);
    let http = format!("127.0.0.1:{}", node.ports.http);
    for args in [vec!["status"], vec!["peers"], vec!["events"]] {
        let mut child = Command::new(binary())
            .args(&args)
            .args(["--http", &http])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reader goes away before the command has written anything, as `| head -0` does.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {:?} {stderr}", out.status);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
