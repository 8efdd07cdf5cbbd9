//! Durable acknowledgement, with real node processes: a transaction answered 201/202 is on
//! disk and readable at once on every read path, survives SIGKILL, and a node with peers stops
//! on SIGTERM cleanly and in time.

mod common;

use std::time::Duration;

use common::{TestNode, eventually, init_crypto};
use sorcha_peer::wire::proto::transaction::TransactionRequest;
use sorcha_peer::wire::proto::transaction::transaction_distribution_client::TransactionDistributionClient;

const FAST: [(&str, &str); 5] = [
    ("SORCHA_PEER__DISCOVERY__HEARTBEAT_INTERVAL", "300ms"),
    ("SORCHA_PEER__DISCOVERY__PEER_TIMEOUT", "1s"),
    ("SORCHA_PEER__DISCOVERY__REFRESH_INTERVAL", "2s"),
    ("SORCHA_PEER__DISCOVERY__MIN_HEALTHY_PEERS", "1"),
    ("SORCHA_PEER__DISTRIBUTION__ANTI_ENTROPY_INTERVAL", "500ms"),
];

async fn submit(node: &TestNode, body: &[u8]) -> (u16, serde_json::Value) {
    let response = reqwest::Client::new()
        .post(node.http_url("/api/v1/transactions"))
        .body(body.to_vec())
        .send()
        .await
        .expect("submit");
    let code = response.status().as_u16();
    (code, response.json().await.expect("JSON answer"))
}

async fn read(node: &TestNode, hash: &str) -> (u16, Vec<u8>) {
    let response = reqwest::get(node.http_url(&format!("/api/v1/transactions/{hash}")))
        .await
        .expect("GET");
    let code = response.status().as_u16();
    (code, response.bytes().await.expect("body").to_vec())
}

async fn wait_state(node: &TestNode, state: &str) {
    let reached = eventually(Duration::from_secs(30), || async {
        node.status().await["state"] == state
    })
    .await;
    assert!(
        reached,
        "never {state}: {}\n{}",
        node.status().await,
        node.log()
    );
}

fn request(hash: &str) -> TransactionRequest {
    TransactionRequest {
        transaction_hash: hash.to_owned(),
        ..Default::default()
    }
}

#[tokio::test]
async fn an_offline_node_reads_its_own_writes_over_http_and_grpc() {
    init_crypto();
    let node = TestNode::start_with(&[], &FAST);
    let body = b"read me at once".repeat(10);
    let (code, answer) = submit(&node, &body).await;
    assert_eq!(code, 202, "queued while Offline: {answer}");
    let hash = answer["hash"].as_str().unwrap().to_owned();

    assert_eq!(read(&node, &hash).await, (200, body.clone()), "HTTP GET");
    let mut grpc = TransactionDistributionClient::connect(node.grpc_url())
        .await
        .unwrap();
    let got = grpc
        .get_transaction(request(&hash))
        .await
        .unwrap()
        .into_inner();
    assert!(got.found, "gRPC GetTransaction");
    assert_eq!(got.transaction_data, body);
    let mut stream = grpc
        .stream_transaction(request(&hash))
        .await
        .expect("gRPC StreamTransaction finds it")
        .into_inner();
    let mut streamed = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        streamed.extend(chunk.chunk_data);
    }
    assert_eq!(streamed, body);

    let (code, again) = submit(&node, &body).await;
    assert_eq!(code, 200, "{again}");
    assert_eq!(again["new"], false);
    assert!(
        again.get("announced_to").is_none() && again.get("queued").is_none(),
        "{again}"
    );
}

#[tokio::test]
async fn sigkill_right_after_201_keeps_the_transaction() {
    init_crypto();
    let mut peer = TestNode::start_with(&[], &FAST);
    let mut node = TestNode::start_with(&["--bootstrap", &peer.peer_addr()], &FAST);
    wait_state(&node, "online").await;
    let mut hashes = Vec::new();
    for i in 0..50 {
        let (code, answer) = submit(&node, format!("acknowledged {i}").as_bytes()).await;
        assert_eq!(code, 201, "{answer}");
        hashes.push(answer["hash"].as_str().unwrap().to_owned());
    }
    // Both die at once: what survives is what this node wrote before answering.
    node.kill();
    peer.kill();
    node.restart(&[], &FAST);
    for hash in &hashes {
        assert_eq!(
            read(&node, hash).await.0,
            200,
            "{hash} lost:\n{}",
            node.log()
        );
    }
    drop(peer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_peers_exits_0_within_the_grace_without_warnings() {
    init_crypto();
    let grace = Duration::from_secs(4);
    let first = TestNode::start_with(&[], &FAST);
    let mut nodes = vec![first];
    for _ in 0..2 {
        let addr = nodes[0].peer_addr();
        nodes.push(TestNode::start_with(&["--bootstrap", &addr], &FAST));
    }
    for node in &nodes {
        wait_state(node, "online").await;
    }
    // Every link up before the traffic (announcements over a link not yet chosen fail their
    // pull and wait for anti-entropy, with a warning this test would count).
    tokio::time::sleep(Duration::from_secs(2)).await;
    for i in 0..20 {
        submit(&nodes[i % 3], format!("before the stop {i}").as_bytes()).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let leaving = nodes[1].status().await["peer_id"]
        .as_str()
        .expect("peer_id")
        .to_owned();
    let node = &mut nodes[1];
    let (status, took) = node.signal_and_wait("TERM", grace + Duration::from_secs(5));
    let log = node.log();
    assert!(status.success(), "exit {status}:\n{log}");
    assert!(took < grace, "took {took:?}, grace {grace:?}:\n{log}");
    assert!(!log.contains("WARN"), "warnings at shutdown:\n{log}");
    // Its peers heard its going-away: out of their active sets with that reason (a missed
    // heartbeat would say "stopped answering").
    for peer in [&nodes[0], &nodes[2]] {
        assert!(
            told_us_it_left(peer, &leaving).await,
            "no going-away from {leaving}: {}\n{}",
            peer.get_json("/api/v1/events?limit=1000").await.1,
            peer.log()
        );
    }
}

/// Whether `node` logged that `peer` said it is shutting down (waiting up to a few seconds).
async fn told_us_it_left(node: &TestNode, peer: &str) -> bool {
    let path = format!("/api/v1/events?kind=peer_disconnected&peer={peer}&limit=100");
    eventually(Duration::from_secs(3), || async {
        let (_, doc) = node.get_json(&path).await;
        let events = doc["events"].as_array().cloned().unwrap_or_default();
        events
            .iter()
            .any(|e| e["detail"].as_str() == Some("said it is shutting down"))
    })
    .await
}

#[test]
fn a_corrupt_transaction_store_stops_the_start_with_its_path_and_the_way_out() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("transactions.db");
    std::fs::write(&file, vec![0x5a; 16_384]).unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let (code, _, stderr) = common::run_cli(
        &[
            "run",
            "--data-dir",
            data_dir,
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ],
        &[("SORCHA_PEER__ADDRESS__STUN_SERVERS", "")],
        None,
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains(file.to_str().unwrap()), "{stderr}");
    assert!(stderr.contains("move the file away"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
