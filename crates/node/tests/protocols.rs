//! Protocol negotiation across real processes: a full node reaches a peer over the stream, a
//! peer that serves only unary gRPC, and one that serves only REST; it exchanges peer lists and
//! transactions with each, and reports the transport it chose.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{TestNode, eventually, init_crypto};

const FAST: [(&str, &str); 5] = [
    ("SORCHA_PEER__DISCOVERY__HEARTBEAT_INTERVAL", "300ms"),
    ("SORCHA_PEER__DISCOVERY__PEER_TIMEOUT", "1s"),
    ("SORCHA_PEER__DISCOVERY__REFRESH_INTERVAL", "2s"),
    ("SORCHA_PEER__DISCOVERY__MIN_HEALTHY_PEERS", "1"),
    ("SORCHA_PEER__DISTRIBUTION__ANTI_ENTROPY_INTERVAL", "500ms"),
];

const SETTLE: Duration = Duration::from_secs(60);

fn start(serve: &str, bootstrap: Option<&TestNode>) -> TestNode {
    let mut env = FAST.to_vec();
    env.push(("SORCHA_PEER__COMMUNICATION__SERVE", serve));
    match bootstrap {
        Some(b) => TestNode::start_with(&["--bootstrap", &b.peer_addr()], &env),
        None => TestNode::start_with(&[], &env),
    }
}

async fn peer_field(node: &TestNode, id: &str, field: &str) -> serde_json::Value {
    let (_, doc) = node.get_json(&format!("/api/v1/peers/{id}")).await;
    doc[field].clone()
}

async fn hashes(node: &TestNode) -> BTreeSet<String> {
    let (_, doc) = node.get_json("/api/v1/transactions?limit=1000").await;
    doc["transactions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["hash"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_node_speaks_stream_unary_and_rest_peers_and_says_which() {
    init_crypto();
    let full = start("grpc_stream,grpc,rest", None);
    let stream = start("grpc_stream,grpc", Some(&full));
    let unary = start("grpc", Some(&full));
    let rest = start("rest", Some(&full));
    let nodes = [&full, &stream, &unary, &rest];
    let mut ids = Vec::new();
    for node in nodes {
        ids.push(node.status().await["peer_id"].as_str().unwrap().to_owned());
    }

    // Peer lists: the full node knows all three as alive; each of them knows the full node.
    let listed = eventually(SETTLE, || async {
        for i in 1..4 {
            if peer_field(&full, &ids[i], "status").await != "alive"
                || peer_field(nodes[i], &ids[0], "status").await != "alive"
            {
                return false;
            }
        }
        true
    })
    .await;
    assert!(
        listed,
        "peer lists not exchanged: {}",
        full.get_json("/api/v1/peers").await.1
    );

    // Transactions: one from each node reaches every node.
    let client = reqwest::Client::new();
    let mut all = BTreeSet::new();
    for (i, node) in nodes.iter().enumerate() {
        let answer: serde_json::Value = client
            .post(node.http_url("/api/v1/transactions"))
            .body(format!("submitted at node {i}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        all.insert(answer["hash"].as_str().expect("a hash").to_owned());
    }
    let everywhere = eventually(SETTLE, || async {
        for node in nodes {
            if !all.is_subset(&hashes(node).await) {
                return false;
            }
        }
        true
    })
    .await;
    assert!(everywhere, "not every transaction crossed every transport");

    // The transport each link settled on, as the full node reports it.
    let expected = [("GrpcStream", 1), ("Grpc", 2), ("Rest", 3)];
    let negotiated = eventually(SETTLE, || async {
        for (protocol, i) in expected {
            if peer_field(&full, &ids[i], "protocol").await != protocol {
                return false;
            }
        }
        true
    })
    .await;
    assert!(
        negotiated,
        "transports not reported as expected: {}",
        full.get_json("/api/v1/peers").await.1
    );
    assert_eq!(peer_field(&rest, &ids[0], "protocol").await, "Rest");

    // The REST fallback's own answer for a body: JSON, the data in base64.
    let hash = all.iter().next().unwrap();
    let doc: serde_json::Value = client
        .get(rest.http_url(&format!("/api/v1/transactions/{hash}")))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["found"], true, "{doc}");
    assert_eq!(doc["transactionHash"], hash.as_str());
    assert!(
        doc["transactionData"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{doc}"
    );
}

#[tokio::test]
async fn rest_endpoints_refuse_bad_input_with_clear_statuses() {
    init_crypto();
    let node = start("rest", None);
    let client = reqwest::Client::new();
    let url = |path: &str| format!("http://127.0.0.1:{}{path}", node.ports.peer);
    let register = client
        .post(url("/api/v1/peers/register"))
        .header("content-type", "application/json")
        .body(r#"{"peerInfo": {"peerId": "p1", "address": "127.0.0.1", "port": 0}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(register.status().as_u16(), 400);
    let body: serde_json::Value = register.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("peer_info.port"),
        "{body}"
    );

    let garbage = client
        .post(url("/api/v1/transactions/notify"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status().as_u16(), 400);

    let ping: serde_json::Value = client
        .get(url("/api/v1/peers/ping?peerId=x"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ping["peerId"], node.status().await["peer_id"]);
    let huge = client
        .post(url("/api/v1/messages"))
        .header("content-type", "application/json")
        .body(vec![b' '; 16 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(
        huge.status().as_u16(),
        413,
        "an oversized body is refused before it is read"
    );
}
