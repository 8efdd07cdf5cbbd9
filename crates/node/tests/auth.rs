//! Peer authentication with real processes: TLS on the peer port, ids bound to keys, and
//! membership that believes only what a connection proves.

mod common;

use std::time::Duration;

use common::{TestNode, eventually};
use sorcha_peer::config::SecurityConfig;
use sorcha_peer::wire::proto::discovery::peer_discovery_client::PeerDiscoveryClient;
use sorcha_peer::wire::proto::discovery::{PeerInfo, RegisterPeerRequest};
use sorcha_peer::wire::proto::heartbeat::PeerHeartbeatRequest;
use sorcha_peer::wire::proto::heartbeat::peer_heartbeat_client::PeerHeartbeatClient;

const FAST: [(&str, &str); 4] = [
    ("SORCHA_PEER__DISCOVERY__HEARTBEAT_INTERVAL", "300ms"),
    ("SORCHA_PEER__DISCOVERY__PEER_TIMEOUT", "1s"),
    ("SORCHA_PEER__DISCOVERY__MIN_HEALTHY_PEERS", "1"),
    ("SORCHA_PEER__DISTRIBUTION__ANTI_ENTROPY_INTERVAL", "500ms"),
];

const SETTLE: Duration = Duration::from_secs(30);

fn start(mode: &str, bootstrap: Option<&TestNode>) -> TestNode {
    let mut env = FAST.to_vec();
    env.push(("SORCHA_PEER__SECURITY__MODE", mode));
    match bootstrap {
        Some(b) => TestNode::start_with(&["--bootstrap", &b.peer_addr()], &env),
        None => TestNode::start_with(&[], &env),
    }
}

async fn peer_id(node: &TestNode) -> String {
    node.status().await["peer_id"].as_str().unwrap().to_owned()
}

/// `of`'s row in `node`'s peer table.
async fn row(node: &TestNode, of: &str) -> serde_json::Value {
    let (_, doc) = node.get_json(&format!("/api/v1/peers/{of}")).await;
    doc
}

fn register(id: &str, address: &str, port: i32) -> RegisterPeerRequest {
    RegisterPeerRequest {
        peer_info: Some(PeerInfo {
            peer_id: id.to_owned(),
            address: address.to_owned(),
            port,
            ..Default::default()
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_mtls_nodes_verify_each_other_and_gossip() {
    common::init_crypto();
    let a = start("mtls", None);
    let b = start("mtls", Some(&a));
    let (a_id, b_id) = (peer_id(&a).await, peer_id(&b).await);
    assert!(
        eventually(SETTLE, || async {
            row(&a, &b_id).await["verified"] == true && row(&b, &a_id).await["verified"] == true
        })
        .await,
        "the nodes did not verify each other:\n{}\n{}",
        a.log(),
        b.log()
    );
    let status = a.status().await;
    assert_eq!(status["security_mode"], "mtls");
    assert_eq!(
        status["certificate_fingerprint"].as_str().map(str::len),
        Some(64)
    );
    let hash = a.submit(b"over mutual TLS".to_vec()).await;
    assert!(
        eventually(SETTLE, || async {
            b.get_text(&format!("/api/v1/transactions/{hash}")).await.0 == 200
        })
        .await,
        "the transaction did not reach b: {}",
        b.log()
    );
    // Plaintext is refused at the door in mtls mode.
    let plain = PeerDiscoveryClient::connect(a.grpc_url()).await;
    let refused = match plain {
        Err(_) => true,
        Ok(mut client) => client
            .register_peer(register("x", "127.0.0.1", 1))
            .await
            .is_err(),
    };
    assert!(refused, "a plaintext call was served in mtls mode");
    let metrics = a.get_text("/metrics").await.1;
    let plaintext_refused = common::sample(
        &metrics,
        "tls_handshakes_total{result=\"plaintext_refused\",side=\"inbound\"}",
    );
    assert!(plaintext_refused >= 1.0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_can_speak_for_a_verified_peer_without_its_key() {
    common::init_crypto();
    let a = start("mixed", None);
    let mut b = start("mixed", Some(&a));
    let b_id = peer_id(&b).await;
    assert!(
        eventually(SETTLE, || async {
            row(&a, &b_id).await["verified"] == true
        })
        .await,
        "b was not verified: {}",
        a.log()
    );

    // Plaintext: a registration moving b elsewhere is refused, b's address stays.
    let mut plain = PeerDiscoveryClient::connect(a.grpc_url()).await.unwrap();
    let status = plain
        .register_peer(register(&b_id, "192.0.2.66", 6666))
        .await
        .expect_err("a plaintext registration in b's name was taken");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert_eq!(row(&a, &b_id).await["port"], b.ports.peer);

    // TLS with another key: the certificate proves another id.
    let stranger = tempfile::tempdir().unwrap();
    let channel = common::tls_channel_as(stranger.path(), &a, &SecurityConfig::default())
        .await
        .unwrap();
    let status = PeerDiscoveryClient::new(channel)
        .register_peer(register(&b_id, "192.0.2.66", 6666))
        .await
        .expect_err("a registration in b's name under another key was taken");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("does not match"), "{status:?}");
    assert_eq!(row(&a, &b_id).await["address"], "127.0.0.1");

    // b dies; heartbeats in its name over plaintext do not keep it alive.
    b.kill();
    let mut beats = PeerHeartbeatClient::connect(a.grpc_url()).await.unwrap();
    let deadline = std::time::Instant::now() + SETTLE;
    let gone = loop {
        let request = PeerHeartbeatRequest {
            peer_id: b_id.clone(),
            ..Default::default()
        };
        if let Ok(answer) = beats.send_heartbeat(request).await {
            assert!(
                !answer.get_ref().success,
                "a spoofed heartbeat was accepted"
            );
        }
        let status = row(&a, &b_id).await["status"].clone();
        if status == "unreachable" || std::time::Instant::now() > deadline {
            break status == "unreachable";
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        gone,
        "spoofed heartbeats kept a dead peer alive: {}",
        a.log()
    );
    let metrics = a.get_text("/metrics").await.1;
    let not_proven = common::sample(
        &metrics,
        "identity_claims_refused_total{reason=\"not_proven\"}",
    );
    assert!(not_proven >= 2.0, "{metrics}");
}
