//! Honest accounting on real processes: the socket counters (`wire_bytes_total`) and the
//! message counters of every kind (`message_bytes_total`) move with real traffic, and what
//! the nodes write to their peer sockets, they read from them.

mod common;

use std::time::Duration;

use common::{eventually, holds, init_crypto, summed};

/// Membership timers scaled down so the cluster forms and heartbeats within seconds.
const FAST: [(&str, &str); 4] = [
    ("SORCHA_PEER__DISCOVERY__HEARTBEAT_INTERVAL", "300ms"),
    ("SORCHA_PEER__DISCOVERY__PEER_TIMEOUT", "1s"),
    ("SORCHA_PEER__DISCOVERY__REFRESH_INTERVAL", "2s"),
    ("SORCHA_PEER__DISCOVERY__MIN_HEALTHY_PEERS", "2"),
];

const SETTLE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_and_message_counters_move_with_real_traffic() {
    init_crypto();
    let nodes = common::trio(&FAST, "peers_known", SETTLE).await;
    let client = reqwest::Client::new();
    let mut hashes = Vec::new();
    for i in 0..20 {
        let body = format!("accounting {i:03} {}", "y".repeat(256)).into_bytes();
        let answer = client
            .post(nodes[i % 3].http_url("/api/v1/transactions"))
            .body(body)
            .send()
            .await
            .expect("submit");
        assert_eq!(answer.status().as_u16(), 201);
        let doc: serde_json::Value = answer.json().await.expect("JSON answer");
        hashes.push(doc["hash"].as_str().expect("hash").to_owned());
    }
    let everywhere = eventually(SETTLE, || async {
        for node in &nodes {
            for hash in &hashes {
                if !holds(&client, node, hash).await {
                    return false;
                }
            }
        }
        true
    })
    .await;
    assert!(everywhere, "not every node holds every transaction");
    let (mut wire_sent, mut wire_received) = (0.0, 0.0);
    for node in &nodes {
        let (_, page) = node.get_text("/metrics").await;
        let sent = summed(&page, "wire_bytes_total", &["direction=\"sent\""]);
        let got = summed(&page, "wire_bytes_total", &["direction=\"received\""]);
        let messages = summed(&page, "message_bytes_total", &["direction=\"sent\""]);
        assert!(sent > 0.0 && got > 0.0, "no socket bytes:\n{page}");
        assert!(messages > 0.0, "no message bytes:\n{page}");
        // Every node made or answered membership calls in forming the cluster, and took
        // gossip (of some kind) for the transactions submitted elsewhere.
        let membership = summed(&page, "message_bytes_total", &["kind=\"membership\""]);
        assert!(membership > 0.0, "no membership bytes:\n{page}");
        let received = summed(&page, "message_bytes_total", &["direction=\"received\""]);
        let gossip = received
            - summed(
                &page,
                "message_bytes_total",
                &["direction=\"received\"", "kind=\"membership\""],
            )
            - summed(
                &page,
                "message_bytes_total",
                &["direction=\"received\"", "kind=\"heartbeat\""],
            );
        assert!(gossip > 0.0, "no gossip bytes received:\n{page}");
        wire_sent += sent;
        wire_received += got;
    }
    // On loopback every byte one node writes another reads (scrapes a moment apart).
    let ratio = wire_sent / wire_received;
    assert!(
        (0.8..1.25).contains(&ratio),
        "sent {wire_sent} vs received {wire_received}"
    );
}
