//! The eager push across real node processes, for bodies up to 16 KiB (the default, set here
//! so the tests do not hang on it): a small transaction reaches the other nodes as a
//! `GOSSIP_PUSH`, and a short offline queue drains by pushes its peer acknowledges
//! (`GOSSIP_ACK`), not by pulls. (A long one goes mostly by announcement and pull: a node
//! pushes its own up to 300 a second, core `gossip/pace.rs`.)

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{TestNode, eventually, holds, init_crypto, summed};

/// Membership timers scaled down so the cluster forms within seconds; gossip keeps the
/// shipped timers and the push: it is what is tested.
const FAST: [(&str, &str); 5] = [
    ("SORCHA_PEER__DISTRIBUTION__EAGER_PUSH_MAX_BYTES", "16384"),
    ("SORCHA_PEER__DISCOVERY__HEARTBEAT_INTERVAL", "300ms"),
    ("SORCHA_PEER__DISCOVERY__PEER_TIMEOUT", "1s"),
    ("SORCHA_PEER__DISCOVERY__REFRESH_INTERVAL", "2s"),
    ("SORCHA_PEER__DISCOVERY__MIN_HEALTHY_PEERS", "1"),
];

const SETTLE: Duration = Duration::from_secs(60);

/// `message_bytes_total` of `kind` in `direction` on `node`.
async fn message_bytes(node: &TestNode, kind: &str, direction: &str) -> f64 {
    let (_, page) = node.get_text("/metrics").await;
    let kind = format!("kind=\"{kind}\"");
    let direction = format!("direction=\"{direction}\"");
    summed(&page, "message_bytes_total", &[&kind, &direction])
}

async fn holds_all(client: &reqwest::Client, node: &TestNode, hashes: &BTreeSet<String>) -> bool {
    for hash in hashes {
        if !holds(client, node, hash).await {
            return false;
        }
    }
    true
}

async fn submit(client: &reqwest::Client, node: &TestNode, body: Vec<u8>) -> (u16, String) {
    let answer = client
        .post(node.http_url("/api/v1/transactions"))
        .body(body)
        .send()
        .await
        .expect("submit");
    let code = answer.status().as_u16();
    let doc: serde_json::Value = answer.json().await.expect("JSON answer");
    (code, doc["hash"].as_str().expect("hash").to_owned())
}

fn body(tag: &str, i: usize) -> Vec<u8> {
    format!("{tag} {i:04} {}", "p".repeat(300)).into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_transaction_crosses_real_nodes_by_eager_push() {
    init_crypto();
    let nodes = common::trio(&FAST, "peers_active", SETTLE).await;
    let client = reqwest::Client::new();
    let mut hashes = BTreeSet::new();
    for i in 0..20 {
        let (code, hash) = submit(&client, &nodes[0], body("pushed", i)).await;
        assert_eq!(code, 201);
        hashes.insert(hash);
    }
    let everywhere = eventually(SETTLE, || async {
        holds_all(&client, &nodes[1], &hashes).await && holds_all(&client, &nodes[2], &hashes).await
    })
    .await;
    assert!(everywhere, "the transactions did not reach every node");
    // Every node but the origin had each body pushed to it (all start eager; the origin
    // pushes to both): at least the 20 bodies' bytes arrived as pushes on each.
    for node in &nodes[1..] {
        let pushed = message_bytes(node, "push", "received").await;
        assert!(pushed >= 20.0 * 300.0, "push bytes received: {pushed}");
    }
    let sent = message_bytes(&nodes[0], "push", "sent").await;
    assert!(
        sent >= 2.0 * 20.0 * 300.0,
        "push bytes sent by the origin: {sent}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_queue_drains_by_acknowledged_pushes() {
    init_crypto();
    let client = reqwest::Client::new();
    let lonely = TestNode::start_with(&[], &FAST);
    let mut hashes = BTreeSet::new();
    // Fewer than a node pushes of its own per 250 ms (75) and than a link's body lane holds.
    for i in 0..40 {
        let (code, hash) = submit(&client, &lonely, body("queued", i)).await;
        assert_eq!(code, 202, "an Offline node queues");
        hashes.insert(hash);
    }
    assert_eq!(lonely.status().await["queue_size"], 40);
    let peer = TestNode::start_with(&["--bootstrap", &lonely.peer_addr()], &FAST);
    let drained = eventually(SETTLE, || async {
        lonely.status().await["queue_size"] == 0
    })
    .await;
    assert!(
        drained,
        "the queue did not drain: {}",
        lonely.status().await
    );
    assert!(
        holds_all(&client, &peer, &hashes).await,
        "a confirmed transaction is on the peer"
    );
    // Each queued push asked for an acknowledgement and got one (~27 bytes each); a row may
    // also have been confirmed by a pull (anti-entropy), so at least most came by ack.
    let acks = message_bytes(&lonely, "ack", "received").await;
    assert!(
        acks >= 30.0 * 20.0,
        "acknowledgement bytes received: {acks}"
    );
    let sent = message_bytes(&peer, "ack", "sent").await;
    assert!(
        sent >= acks,
        "the peer sent what the node read: {sent} < {acks}"
    );
    // Rows handed over before the peer joined the node's gossip peers go by announcement
    // and pull instead: most, not all, go by push.
    let pushed = message_bytes(&lonely, "push", "sent").await;
    assert!(pushed >= 30.0 * 300.0, "push bytes sent: {pushed}");
}
