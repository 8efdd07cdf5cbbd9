//! Membership across real node processes on loopback: bootstrap, discovery, failure detection,
//! rejoining from the peer store.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{TestNode, eventually};

/// Membership timers scaled down so a cluster settles in seconds, not minutes.
const FAST: [(&str, &str); 5] = [
    ("SORCHA_PEER__DISCOVERY__HEARTBEAT_INTERVAL", "300ms"),
    ("SORCHA_PEER__DISCOVERY__PEER_TIMEOUT", "1s"),
    ("SORCHA_PEER__DISCOVERY__REFRESH_INTERVAL", "2s"),
    ("SORCHA_PEER__DISCOVERY__FORGET_AFTER", "5s"),
    ("SORCHA_PEER__DISCOVERY__MIN_HEALTHY_PEERS", "3"),
];

/// Generous: 20 debug-build processes share 2 cores with the test runner.
const SETTLE: Duration = Duration::from_secs(60);

fn start_joining(bootstrap: &[&TestNode]) -> TestNode {
    let mut args = Vec::new();
    for b in bootstrap {
        args.push("--bootstrap".to_owned());
        args.push(b.peer_addr());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    TestNode::start_with(&args, &FAST)
}

async fn known_ids(node: &TestNode) -> BTreeSet<String> {
    let (_, doc) = node.get_json("/api/v1/peers").await;
    doc["peers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["status"] != "unreachable")
        .filter_map(|p| p["peer_id"].as_str().map(str::to_owned))
        .collect()
}

async fn is_online(node: &TestNode) -> bool {
    node.status().await["state"] == "online"
}

async fn summary(nodes: &[TestNode]) -> String {
    let mut lines = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let s = node.status().await;
        lines.push(format!(
            "node {i}: {} known {} active {}",
            s["state"], s["peers_known"], s["peers_active"]
        ));
    }
    lines.join("\n")
}

/// Waits until every node is Online and knows at least `min_known` peers it has not given up on.
async fn all_online_knowing(nodes: &[TestNode], min_known: usize) -> bool {
    eventually(SETTLE, || async {
        for node in nodes {
            if !is_online(node).await || known_ids(node).await.len() < min_known {
                return false;
            }
        }
        true
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_nodes_join_through_one_bootstrap_node_and_survive_its_death() {
    let mut bootstrap = TestNode::start_with(&[], &FAST);
    let nodes: Vec<TestNode> = (0..20).map(|_| start_joining(&[&bootstrap])).collect();
    let mut ids = BTreeSet::new();
    for node in &nodes {
        ids.insert(node.status().await["peer_id"].as_str().unwrap().to_owned());
    }

    let settled = eventually(SETTLE, || async {
        for node in &nodes {
            let own = node.status().await["peer_id"].as_str().unwrap().to_owned();
            let known = known_ids(node).await;
            let others: BTreeSet<_> = ids.iter().filter(|id| **id != own).cloned().collect();
            if !is_online(node).await || !others.is_subset(&known) {
                return false;
            }
        }
        true
    })
    .await;
    assert!(
        settled,
        "not every node is Online knowing all others:\n{}",
        summary(&nodes).await
    );

    bootstrap.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (i, node) in nodes.iter().enumerate() {
        assert!(
            is_online(node).await,
            "node {i} left Online when the bootstrap node died"
        );
    }

    let newcomer = start_joining(&[&nodes[7]]);
    let joined = eventually(SETTLE, || async {
        is_online(&newcomer).await && known_ids(&newcomer).await.len() >= 10
    })
    .await;
    assert!(
        joined,
        "a new node could not join through a non-bootstrap node: {}",
        newcomer.status().await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_is_detected_and_dropped() {
    let bootstrap = TestNode::start_with(&[], &FAST);
    let mut nodes: Vec<TestNode> = (0..5).map(|_| start_joining(&[&bootstrap])).collect();
    let all_online = all_online_knowing(&nodes, 5).await;
    assert!(
        all_online,
        "cluster did not settle:\n{}",
        summary(&nodes).await
    );

    let victim = nodes[2].status().await["peer_id"]
        .as_str()
        .unwrap()
        .to_owned();
    nodes[2].kill();
    let dropped = eventually(SETTLE, || async {
        for (i, node) in nodes.iter().enumerate() {
            if i == 2 {
                continue;
            }
            let (_, doc) = node.get_json("/api/v1/peers").await;
            let still_trusted = doc["peers"].as_array().unwrap().iter().any(|p| {
                p["peer_id"] == victim.as_str() && (p["active"] == true || p["status"] == "alive")
            });
            if still_trusted {
                return false;
            }
        }
        true
    })
    .await;
    assert!(dropped, "the killed node is still trusted by someone");
    for (i, node) in nodes.iter().enumerate() {
        if i != 2 {
            assert!(
                is_online(node).await,
                "node {i} is not Online after one peer died"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_rejoins_from_its_stored_peers_when_bootstrap_is_down() {
    let mut bootstrap = TestNode::start_with(&[], &FAST);
    let bootstrap_addr = bootstrap.peer_addr();
    let mut nodes: Vec<TestNode> = (0..5).map(|_| start_joining(&[&bootstrap])).collect();
    let settled = all_online_knowing(&nodes, 5).await;
    assert!(
        settled,
        "cluster did not settle:\n{}",
        summary(&nodes).await
    );

    nodes[0].stop();
    bootstrap.kill();
    nodes[0].restart(&["--bootstrap", &bootstrap_addr], &FAST);
    let rejoined = eventually(SETTLE, || async { is_online(&nodes[0]).await }).await;
    assert!(
        rejoined,
        "restarted node did not rejoin from its store: {}\n{}",
        nodes[0].status().await,
        nodes[0].log()
    );
    assert!(
        nodes[0].log().contains("peer store loaded"),
        "{}",
        nodes[0].log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_ping_ban_and_remove_peers_and_bans_stick() {
    use sorcha_peer::wire::proto::discovery::peer_discovery_client::PeerDiscoveryClient;
    use sorcha_peer::wire::proto::discovery::{PeerInfo, RegisterPeerRequest};

    common::init_crypto();
    let mut node = TestNode::start_with(&[], &FAST);
    let mut other = TestNode::start_with(&["--bootstrap", &node.peer_addr()], &FAST);
    let other_id = other.status().await["peer_id"].as_str().unwrap().to_owned();
    assert!(
        eventually(SETTLE, || async {
            known_ids(&node).await.contains(&other_id)
        })
        .await
    );

    let client = reqwest::Client::new();
    let url = |path: &str| node.http_url(&format!("/api/v1/peers/{other_id}{path}"));
    let (code, one) = node.get_json(&format!("/api/v1/peers/{other_id}")).await;
    assert_eq!(code, 200, "{one}");
    assert_eq!(one["port"], other.ports.peer);
    let ping: serde_json::Value = client
        .post(url("/ping"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ping["reachable"], true, "{ping}");

    let banned = client.post(url("/ban?duration=1h")).send().await.unwrap();
    assert_eq!(banned.status().as_u16(), 200);
    let register = |id: String, port: i32| RegisterPeerRequest {
        peer_info: Some(PeerInfo {
            peer_id: id,
            address: "127.0.0.1".into(),
            port,
            ..Default::default()
        }),
    };
    // Registrations in `other`'s name must come over TLS with its key (its id is verified).
    let security = sorcha_peer::config::SecurityConfig::default();
    let as_other = common::tls_channel_as(&other.data_dir, &node, &security)
        .await
        .unwrap();
    let mut grpc = PeerDiscoveryClient::new(as_other);
    let refused = grpc
        .register_peer(register(other_id.clone(), other.ports.peer.into()))
        .await
        .unwrap()
        .into_inner();
    assert!(
        !refused.success,
        "a banned peer registered: {}",
        refused.message
    );

    node.stop();
    node.restart(&[], &FAST);
    let as_other = common::tls_channel_as(&other.data_dir, &node, &security)
        .await
        .unwrap();
    let mut grpc = PeerDiscoveryClient::new(as_other);
    let still = grpc
        .register_peer(register(other_id.clone(), other.ports.peer.into()))
        .await
        .unwrap()
        .into_inner();
    assert!(!still.success, "the ban did not survive a restart");

    let url = |path: &str| node.http_url(&format!("/api/v1/peers/{other_id}{path}"));
    assert_eq!(
        client
            .delete(url("/ban"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    let again = grpc
        .register_peer(register(other_id.clone(), other.ports.peer.into()))
        .await
        .unwrap()
        .into_inner();
    assert!(again.success, "unbanned peer refused: {}", again.message);
    // A live peer that is removed registers again at its next heartbeat (as it should), so
    // it is stopped first.
    other.kill();
    assert_eq!(
        client
            .delete(url(""))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    let (code, _) = node.get_json(&format!("/api/v1/peers/{other_id}")).await;
    assert_eq!(code, 404, "a removed peer is gone");
    let (code, _) = node.get_json("/api/v1/peers/not%20an%20id").await;
    assert_eq!(code, 400);
}
