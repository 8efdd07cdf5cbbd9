//! The daemon as operators and peers meet it: a real `sorcha-peer run` process, real sockets.

mod common;

use std::time::Duration;

use common::{TestNode, run_cli};
use sorcha_peer::wire::proto::discovery::peer_discovery_client::PeerDiscoveryClient;
use sorcha_peer::wire::proto::discovery::{
    PeerCapabilities, PeerInfo, PeerListRequest, PeerStatus, PingRequest, RegisterPeerRequest,
};
use sorcha_peer::wire::proto::heartbeat::PeerHeartbeatRequest;
use sorcha_peer::wire::proto::heartbeat::peer_heartbeat_client::PeerHeartbeatClient;
use sorcha_peer::wire::proto::transaction::TransactionRequest;
use sorcha_peer::wire::proto::transaction::transaction_distribution_client::TransactionDistributionClient;
use tonic::Code;

/// Every name the Sorcha design's dashboards read, except the latency histogram, which (as
/// any OpenTelemetry histogram) appears with its first recorded distribution.
const SORCHA_METRICS: [&str; 8] = [
    "peer_count",
    "peer_count_active",
    "transaction_queue_size",
    "bandwidth_sent_bytes",
    "bandwidth_received_bytes",
    "connection_errors_total",
    "gossip_rounds_total",
    "peer_service_status",
];

fn peer_info(id: &str, port: i32) -> PeerInfo {
    PeerInfo {
        peer_id: id.into(),
        address: "127.0.0.1".into(),
        port,
        supported_protocols: vec!["GrpcStream".into(), "Grpc".into()],
        last_seen: 0,
        capabilities: Some(PeerCapabilities {
            supports_streaming: true,
            supports_transaction_distribution: true,
            max_transaction_size: 1 << 20,
        }),
        advertised_registers: vec![],
        is_seed_node: false,
    }
}

#[tokio::test]
async fn standalone_node_serves_health_status_and_metrics() {
    let node = TestNode::start(&[]);
    let (code, body) = node.get_json("/health/ready").await;
    assert_eq!((code, body["status"].as_str()), (200, Some("ready")));
    let (code, _) = node.get_json("/health/live").await;
    assert_eq!(code, 200);

    let (code, status) = node.get_json("/api/v1/status").await;
    assert_eq!(code, 200);
    let peer_id = status["peer_id"].as_str().expect("peer_id");
    assert_eq!(peer_id.len(), 40);
    assert!(
        peer_id
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
    assert_eq!(status["state"], "offline");
    assert_eq!(status["peers_known"], 0);
    assert_eq!(status["peers_active"], 0);
    assert_eq!(status["queue_size"], 0);
    assert!(status.get("external_address").is_some());

    let (code, metrics) = node.get_text("/metrics").await;
    assert_eq!(code, 200);
    for name in SORCHA_METRICS {
        assert!(
            metrics.lines().any(|l| l.starts_with(name)),
            "{name} missing:\n{metrics}"
        );
    }
    assert!(metrics.contains("peer_service_status 0"), "{metrics}");

    let (code, body) = node.get_json("/no/such/page").await;
    assert_eq!(code, 404);
    assert!(body["error"].as_str().unwrap().contains("/no/such/page"));
    assert!(node.log().contains("running standalone"), "{}", node.log());
}

/// The daemon turns transparent huge pages off for itself (`main.rs`): its allocator advises
/// them, and nodes zeroing 2 MiB pages in step stalled every hop of the lab's propagation.
#[tokio::test]
async fn the_daemon_runs_without_transparent_huge_pages() {
    let node = TestNode::start(&[]);
    let (code, _) = node.get_json("/health/live").await;
    assert_eq!(code, 200);
    let status = std::fs::read_to_string(format!("/proc/{}/status", node.pid())).unwrap();
    let thp = status
        .lines()
        .find_map(|l| l.strip_prefix("THP_enabled:"))
        .unwrap_or_else(|| {
            panic!("this kernel does not report THP_enabled (Linux 5.0+):\n{status}")
        });
    assert_eq!(thp.trim(), "0", "transparent huge pages still on");
    // Off before the first allocation, not only from `main` on: mimalloc's first arena would
    // otherwise hold a huge page faulted by the runtime's set-up (4 MiB when it was
    // switched off in `main`). On a kernel whose THP setting is `never` this cannot fail.
    let mode = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled");
    if mode.as_deref().map_or(true, |m| m.contains("[never]")) {
        eprintln!(
            "WARNING: transparent huge pages are off (or unknown) on this kernel ({mode:?}): \
             the AnonHugePages check below cannot fail here"
        );
    }
    let rollup = std::fs::read_to_string(format!("/proc/{}/smaps_rollup", node.pid())).unwrap();
    let huge = rollup
        .lines()
        .find_map(|l| l.strip_prefix("AnonHugePages:"))
        .unwrap_or_else(|| panic!("no AnonHugePages in smaps_rollup:\n{rollup}"));
    assert_eq!(
        huge.trim(),
        "0 kB",
        "huge pages faulted before THP was switched off"
    );
}

#[tokio::test]
async fn advertised_address_comes_from_discovery() {
    let env = [("SORCHA_PEER__ADDRESS__EXTERNAL_ADDRESS", "198.51.100.7")];
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start_in(dir.path(), &[], &env);
    let mut status = serde_json::Value::Null;
    for _ in 0..100 {
        status = node.get_json("/api/v1/status").await.1;
        if !status["external_address"].is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status["external_address"], "198.51.100.7", "{status}");
    assert_eq!(status["address_source"], "override");
    let (_, metrics) = node.get_text("/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("external_address_info")
                && l.contains("198.51.100.7")
                && l.contains("source=\"override\"")
                && l.ends_with(" 1")),
        "{metrics}"
    );
}

#[tokio::test]
async fn grpc_health_and_reflection_answer() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let node = TestNode::start(&[]);
    let channel = tonic::transport::Channel::from_shared(node.grpc_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel.clone());
    for service in [
        "",
        "sorcha.peer.discovery.PeerDiscovery",
        "sorcha.peer.heartbeat.PeerHeartbeat",
    ] {
        let answer = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            answer.status(),
            ServingStatus::Serving,
            "service {service:?}"
        );
    }

    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().expect("one answer");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("unexpected reflection answer {answer:?}");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    for name in sorcha_peer::transport::grpc::SERVICE_NAMES {
        assert!(names.contains(&name), "{name} not listed in {names:?}");
    }
}

#[tokio::test]
async fn discovery_and_heartbeat_follow_the_contract() {
    let node = TestNode::start(&[]);
    let mut discovery = PeerDiscoveryClient::connect(node.grpc_url()).await.unwrap();
    let mut heartbeat = PeerHeartbeatClient::connect(node.grpc_url()).await.unwrap();
    let (_, status) = node.get_json("/api/v1/status").await;

    let pong = discovery
        .ping(PingRequest {
            peer_id: "caller".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pong.peer_id, status["peer_id"].as_str().unwrap());
    assert_eq!(pong.status(), PeerStatus::Online);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(
        (now_ms - pong.timestamp * 1000).abs() < 60_000,
        "timestamp in seconds, as C# reads a ping: {}",
        pong.timestamp
    );

    let beat = |id: &str| PeerHeartbeatRequest {
        peer_id: id.into(),
        timestamp: now_ms,
        sequence_number: 1,
        ..Default::default()
    };
    let unknown = heartbeat
        .send_heartbeat(beat("stranger"))
        .await
        .unwrap()
        .into_inner();
    assert!(!unknown.success);
    assert_eq!(unknown.message, "Peer not registered");

    let registered = discovery
        .register_peer(RegisterPeerRequest {
            peer_info: Some(peer_info("peer-a", 6001)),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(registered.success, "{}", registered.message);
    let known = heartbeat
        .send_heartbeat(beat("peer-a"))
        .await
        .unwrap()
        .into_inner();
    assert!(known.success, "{}", known.message);

    let list = |requester: &str| PeerListRequest {
        requesting_peer_id: requester.into(),
        max_peers: 10,
    };
    let others = discovery
        .get_peer_list(list("peer-b"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(others.total_peers, 1);
    assert_eq!(others.peers[0].peer_id, "peer-a");
    assert_eq!(others.peers[0].port, 6001);
    assert_eq!(
        others.peers[0].supported_protocols,
        vec!["GrpcStream", "Grpc"]
    );
    let own = discovery
        .get_peer_list(list("peer-a"))
        .await
        .unwrap()
        .into_inner();
    assert!(own.peers.is_empty(), "a peer is never handed itself");

    let stream = tokio_stream::iter([beat("peer-a"), beat("stranger"), beat("peer-a")]);
    let mut answers = heartbeat
        .stream_heartbeat(stream)
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(answer) = answers.message().await.unwrap() {
        got.push(answer.success);
    }
    assert_eq!(got, vec![true, false, true]);

    let (_, status) = node.get_json("/api/v1/status").await;
    assert_eq!(status["peers_known"], 1);
    assert_eq!(
        status["state"], "degraded",
        "1 healthy peer of the 5 wanted"
    );
}

#[tokio::test]
async fn bad_and_oversized_requests_are_refused_without_harm() {
    let node = TestNode::start(&[]);
    let mut discovery = PeerDiscoveryClient::connect(node.grpc_url()).await.unwrap();

    let bad_port = discovery
        .register_peer(RegisterPeerRequest {
            peer_info: Some(peer_info("peer-a", 0)),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_port.code(), Code::InvalidArgument);
    assert!(
        bad_port.message().contains("peer_info.port"),
        "{}",
        bad_port.message()
    );
    let missing = discovery
        .register_peer(RegisterPeerRequest { peer_info: None })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::InvalidArgument);

    let mut huge = peer_info("peer-b", 6002);
    huge.supported_protocols = vec!["x".repeat(1024); 400];
    let too_big = discovery
        .register_peer(RegisterPeerRequest {
            peer_info: Some(huge),
        })
        .await
        .unwrap_err();
    assert_eq!(too_big.code(), Code::OutOfRange, "{too_big:?}");

    let (_, metrics) = node.get_text("/metrics").await;
    assert!(
        metrics.contains("peer_info_rejected_total{reason=\"port\"} 1"),
        "{metrics}"
    );
    let mut transactions = TransactionDistributionClient::connect(node.grpc_url())
        .await
        .unwrap();
    let bad_hash = transactions
        .get_transaction(TransactionRequest::default())
        .await
        .unwrap_err();
    assert_eq!(bad_hash.code(), Code::InvalidArgument);
    assert!(
        bad_hash.message().contains("transaction_hash"),
        "{}",
        bad_hash.message()
    );

    // Still alive and answering.
    let (code, _) = node.get_json("/health/ready").await;
    assert_eq!(code, 200);
}

#[test]
fn sigterm_and_sigint_stop_the_node_cleanly_within_5_seconds() {
    for signal in ["TERM", "INT"] {
        let mut node = TestNode::start(&[]);
        let (status, took) = node.signal_and_wait(signal, Duration::from_secs(5));
        assert_eq!(
            status.code(),
            Some(0),
            "SIG{signal}: {status}\n{}",
            node.log()
        );
        assert!(took < Duration::from_secs(5), "SIG{signal} took {took:?}");
        assert!(node.log().contains("stopped"), "{}", node.log());
        assert!(
            !node.data_dir.join("ports.json").exists(),
            "ports.json left behind"
        );
    }
}

#[tokio::test]
async fn identity_survives_restarts_and_node_id_names_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let first = {
        let node = TestNode::start_in(dir.path(), &[], &[]);
        node.get_json("/api/v1/status").await.1["peer_id"].clone()
    };
    let second = {
        let node = TestNode::start_in(dir.path(), &[], &[]);
        node.get_json("/api/v1/status").await.1["peer_id"].clone()
    };
    assert_eq!(first, second);
    let named = TestNode::start_in(dir.path(), &["--node-id", "ledger-node-7"], &[]);
    let status = named.get_json("/api/v1/status").await.1;
    assert_eq!(status["peer_id"], "ledger-node-7");
}

#[test]
fn a_port_in_use_fails_with_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let (code, _, stderr) = run_cli(
        &[
            "run",
            "--data-dir",
            data,
            "--listen",
            &addr,
            "--http-listen",
            "127.0.0.1:0",
        ],
        &[],
        None,
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&addr) && stderr.contains("peer port"),
        "{stderr}"
    );
}

#[test]
fn bad_configuration_exits_2_before_starting() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 4] = [
        (
            &[],
            &[("SORCHA_PEER__DISCOVERY__MIN_HEALTHY_PEERS", "0")],
            "discovery.min_healthy_peers",
        ),
        (
            &["--bootstrap", "nowhere"],
            &[],
            "discovery.bootstrap_nodes[0]",
        ),
        (
            &["--config", "/nonexistent/peer.toml"],
            &[],
            "/nonexistent/peer.toml",
        ),
        (&["--listen", "127.0.0.1:99999"], &[], "network.listen"),
    ];
    for (args, env, expected) in cases {
        let mut all = vec!["run", "--data-dir", data];
        all.extend_from_slice(args);
        let (code, _, stderr) = run_cli(&all, env, None);
        assert_eq!(code, 2, "{args:?} {env:?}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{expected} not named in: {stderr}"
        );
    }
    assert!(
        !dir.path().join("ports.json").exists(),
        "nothing may start on a bad config"
    );
}

#[tokio::test]
async fn status_command_reads_a_running_node() {
    let node = TestNode::start(&[]);
    let data = node.data_dir.to_str().unwrap().to_owned();
    let (code, stdout, stderr) = run_cli(&["status", "--data-dir", &data], &[], None);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("state") && stdout.contains("offline"),
        "{stdout}"
    );
    let http = format!("127.0.0.1:{}", node.ports.http);
    let (code, stdout, _) = run_cli(&["status", "--http", &http, "--json"], &[], None);
    assert_eq!(code, 0);
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["state"], "offline");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap().to_string();
    drop(closed);
    let (code, _, stderr) = run_cli(&["status", "--http", &dead], &[], None);
    assert_eq!(code, 1);
    assert!(stderr.contains(&dead), "{stderr}");
}
