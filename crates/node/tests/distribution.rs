//! Transaction distribution across real node processes on loopback: every transaction reaches
//! every node intact, stopped nodes catch up, large bodies stream, the offline queue survives
//! SIGKILL.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{TestNode, eventually, init_crypto, send_signal};
use futures::StreamExt;
use sha2::{Digest, Sha256};

/// Membership and anti-entropy timers scaled down so clusters settle in seconds.
const FAST: [(&str, &str); 6] = [
    ("SORCHA_PEER__DISCOVERY__HEARTBEAT_INTERVAL", "300ms"),
    ("SORCHA_PEER__DISCOVERY__PEER_TIMEOUT", "1s"),
    ("SORCHA_PEER__DISCOVERY__REFRESH_INTERVAL", "2s"),
    ("SORCHA_PEER__DISCOVERY__MIN_HEALTHY_PEERS", "3"),
    ("SORCHA_PEER__DISTRIBUTION__ANTI_ENTROPY_INTERVAL", "500ms"),
    ("SORCHA_PEER__DISTRIBUTION__FETCH_TIMEOUT", "2s"),
];

const SETTLE: Duration = Duration::from_secs(90);

fn cluster(n: usize) -> Vec<TestNode> {
    let bootstrap = TestNode::start_with(&[], &FAST);
    let addr = bootstrap.peer_addr();
    let mut nodes = vec![bootstrap];
    for _ in 1..n {
        nodes.push(TestNode::start_with(&["--bootstrap", &addr], &FAST));
    }
    nodes
}

async fn wait_online(nodes: &[TestNode], min_known: u64) {
    let ok = eventually(SETTLE, || async {
        for node in nodes {
            let s = node.status().await;
            if s["state"] == "offline" || s["peers_known"].as_u64().unwrap_or(0) < min_known {
                return false;
            }
        }
        true
    })
    .await;
    assert!(ok, "cluster did not settle");
}

async fn submit(
    client: &reqwest::Client,
    node: &TestNode,
    body: Vec<u8>,
) -> (u16, serde_json::Value) {
    let response = client
        .post(node.http_url("/api/v1/transactions"))
        .body(body)
        .send()
        .await
        .expect("submit");
    let code = response.status().as_u16();
    (code, response.json().await.expect("JSON answer"))
}

async fn known_hashes(client: &reqwest::Client, node: &TestNode) -> BTreeSet<String> {
    let mut hashes = BTreeSet::new();
    let mut offset = 0;
    loop {
        let url = node.http_url(&format!("/api/v1/transactions?offset={offset}&limit=1000"));
        let doc: serde_json::Value = client.get(url).send().await.unwrap().json().await.unwrap();
        let page = doc["transactions"].as_array().cloned().unwrap_or_default();
        offset += page.len();
        hashes.extend(
            page.iter()
                .filter_map(|t| t["hash"].as_str().map(str::to_owned)),
        );
        if page.is_empty() {
            return hashes;
        }
    }
}

/// Every node holds every hash, and (spot-checked per node) each body still hashes to it.
async fn all_hold(
    client: &reqwest::Client,
    nodes: &[TestNode],
    expected: &BTreeSet<String>,
) -> bool {
    for node in nodes {
        if !expected.is_subset(&known_hashes(client, node).await) {
            return false;
        }
    }
    true
}

/// Every body is whole at `node`, read by its hash and by its id (the first half).
async fn verify_bodies(client: &reqwest::Client, node: &TestNode, hashes: &BTreeSet<String>) {
    for hash in hashes {
        let get = async |name: &str| {
            let url = node.http_url(&format!("/api/v1/transactions/{name}"));
            client.get(url).send().await.unwrap().bytes().await.unwrap()
        };
        let body = get(hash).await;
        assert_eq!(
            &hex::encode(Sha256::digest(&body)),
            hash,
            "corrupted body at {}",
            node.http_url("")
        );
        assert_eq!(get(&hash[..32]).await, body, "by id");
    }
}

fn body(i: usize) -> Vec<u8> {
    format!("transaction {i:05} {}", "x".repeat(200 + i % 57)).into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_transactions_reach_all_ten_nodes_intact() {
    init_crypto();
    let nodes = cluster(10);
    wait_online(&nodes, 9).await;
    let client = reqwest::Client::new();
    let mut expected = BTreeSet::new();
    let submissions = futures::stream::iter(0..1000).map(|i| {
        let (client, node) = (&client, &nodes[(i * 7) % nodes.len()]);
        async move { submit(client, node, body(i)).await }
    });
    let answers: Vec<_> = submissions.buffer_unordered(16).collect().await;
    for (code, answer) in answers {
        assert_eq!(code, 201, "{answer}");
        expected.insert(answer["hash"].as_str().unwrap().to_owned());
    }
    assert_eq!(expected.len(), 1000);
    let everywhere = eventually(SETTLE, || all_hold(&client, &nodes, &expected)).await;
    assert!(everywhere, "not every node holds all 1000 transactions");
    for node in &nodes {
        verify_bodies(&client, node, &expected).await;
    }
    let (_, metrics) = nodes[3].get_text("/metrics").await;
    let timed = metrics
        .lines()
        .find(|l| l.starts_with("transaction_distribution_latency_count"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok());
    assert!(
        timed.is_some_and(|n| n > 0),
        "no distribution latency recorded:\n{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_catches_up_and_large_bodies_stream_intact() {
    init_crypto();
    let nodes = cluster(5);
    wait_online(&nodes, 4).await;
    let client = reqwest::Client::new();

    send_signal(nodes[4].pid(), "STOP");
    let mut expected = BTreeSet::new();
    for i in 0..200 {
        let (code, answer) = submit(&client, &nodes[i % 4], body(10_000 + i)).await;
        assert_eq!(code, 201, "{answer}");
        expected.insert(answer["hash"].as_str().unwrap().to_owned());
    }
    assert!(eventually(SETTLE, || all_hold(&client, &nodes[..4], &expected)).await);
    send_signal(nodes[4].pid(), "CONT");
    let caught_up = eventually(SETTLE, || all_hold(&client, &nodes[4..], &expected)).await;
    assert!(
        caught_up,
        "the stopped node did not catch up: {}",
        nodes[4].status().await
    );
    verify_bodies(&client, &nodes[4], &expected).await;

    let big: Vec<u8> = (0..5 * 1024 * 1024)
        .map(|i: usize| (i * 31 % 251) as u8)
        .collect();
    let (code, answer) = submit(&client, &nodes[1], big).await;
    assert_eq!(code, 201, "{answer}");
    let hash: BTreeSet<String> = [answer["hash"].as_str().unwrap().to_owned()].into();
    assert!(
        eventually(SETTLE, || all_hold(&client, &nodes, &hash)).await,
        "5 MiB body did not spread"
    );
    for node in &nodes {
        verify_bodies(&client, node, &hash).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_offline_queue_survives_sigkill_and_flushes_to_a_peer() {
    init_crypto();
    let client = reqwest::Client::new();
    let mut lonely = TestNode::start_with(&[], &FAST);
    let mut expected = BTreeSet::new();
    for i in 0..100 {
        let (code, answer) = submit(&client, &lonely, body(20_000 + i)).await;
        assert_eq!(code, 202, "an Offline node queues: {answer}");
        assert_eq!(answer["queued"], true);
        expected.insert(answer["hash"].as_str().unwrap().to_owned());
    }
    assert_eq!(lonely.status().await["queue_size"], 100);
    lonely.kill();
    // Restarted alone first: with a peer at hand the queue drains within milliseconds of
    // the restart, before it could be read.
    lonely.restart(&[], &FAST);
    assert_eq!(
        lonely.status().await["queue_size"],
        100,
        "the queue survived SIGKILL"
    );
    lonely.kill();

    let peer = TestNode::start_with(&[], &FAST);
    lonely.restart(&["--bootstrap", &peer.peer_addr()], &FAST);
    let delivered = eventually(SETTLE, || {
        all_hold(&client, std::slice::from_ref(&peer), &expected)
    })
    .await;
    assert!(
        delivered,
        "queued transactions did not reach the peer: {}",
        lonely.status().await
    );
    verify_bodies(&client, &peer, &expected).await;
    let drained = eventually(SETTLE, || async {
        lonely.status().await["queue_size"] == 0
    })
    .await;
    assert!(
        drained,
        "pulled transactions stay queued: {}",
        lonely.status().await
    );
}

#[tokio::test]
async fn bad_submissions_are_refused_and_subscribers_hear_of_new_ones() {
    init_crypto();
    let node = TestNode::start_with(
        &[],
        &[("SORCHA_PEER__DISTRIBUTION__MAX_TRANSACTION_SIZE", "2048")],
    );
    let client = reqwest::Client::new();
    let (code, answer) = submit(&client, &node, Vec::new()).await;
    assert_eq!(code, 400, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("empty"));
    let (code, answer) = submit(&client, &node, vec![7; 2049]).await;
    assert_eq!(code, 413, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("2048"),
        "{answer}"
    );
    let missing = client
        .get(node.http_url(&format!("/api/v1/transactions/{}", "ab".repeat(32))))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    let malformed = client
        .get(node.http_url("/api/v1/transactions/xyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status().as_u16(), 400);
    let error = malformed.text().await.unwrap();
    assert!(error.contains("32 hex digits (an id) or 64"), "{error}");

    // A lone node queues; a node with a peer distributes, and its subscribers hear of it.
    let peer = TestNode::start_with(&[], &FAST);
    let joined = TestNode::start_with(&["--bootstrap", &peer.peer_addr()], &FAST);
    assert!(
        eventually(SETTLE, || async {
            joined.status().await["state"] != "offline"
        })
        .await
    );
    let mut events = client
        .get(joined.http_url("/api/v1/transactions/stream"))
        .send()
        .await
        .unwrap();
    let mut relayed = client
        .get(peer.http_url("/api/v1/transactions/stream"))
        .send()
        .await
        .unwrap();
    let (code, answer) = submit(&client, &joined, b"to the subscribers".to_vec()).await;
    assert_eq!(code, 201, "{answer}");
    let hash = answer["hash"].as_str().unwrap().to_owned();
    let here = delivery_event(&mut events, &hash).await;
    assert_eq!(here["how"], "submitted", "{here}");
    assert_eq!(here["from"], serde_json::Value::Null, "{here}");
    assert_eq!(here["hops"], 0, "{here}");
    assert!(here["at_us"].as_u64().is_some_and(|t| t > 0), "{here}");
    // The peer says where it came from: pushed (bodies this small go by push) from its
    // origin, one hop.
    let there = delivery_event(&mut relayed, &hash).await;
    let origin = joined.status().await["peer_id"].clone();
    assert_eq!(there["from"], origin, "{there}");
    assert_eq!(there["how"], "pushed", "{there}");
    assert_eq!(there["hops"], 1, "{there}");
}

/// The data of the `transaction` event for `hash` on an SSE response, within 10 s.
async fn delivery_event(events: &mut reqwest::Response, hash: &str) -> serde_json::Value {
    let mut seen = String::new();
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = events.chunk().await.unwrap() {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            // Events end with a blank line; the text after the last one may be cut short.
            let complete = &seen[..seen.rfind("\n\n").unwrap_or(0)];
            let event = complete.split("\n\n").find_map(|event| {
                let data = event.strip_prefix("event: transaction\ndata: ")?;
                data.contains(hash).then(|| data.to_owned())
            });
            if let Some(data) = event {
                return serde_json::from_str(&data).unwrap();
            }
        }
        serde_json::Value::Null
    })
    .await;
    match found {
        Ok(event) if !event.is_null() => event,
        _ => panic!("no SSE event for {hash}: {seen}"),
    }
}
