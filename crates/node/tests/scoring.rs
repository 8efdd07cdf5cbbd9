//! The peer score with a real process: a peer that keeps sending malformed announcements is
//! banned automatically; the ban shows in `/api/v1/peers` with its reason, survives a restart
//! with its strike count, an operator's DELETE lifts it, and the next ban doubles.

mod common;

use std::time::Duration;

use common::{TestNode, eventually};
use sorcha_peer::wire::proto::discovery::peer_discovery_client::PeerDiscoveryClient;
use sorcha_peer::wire::proto::discovery::{PeerInfo, RegisterPeerRequest};
use sorcha_peer::wire::proto::transaction::TransactionNotification;
use sorcha_peer::wire::proto::transaction::transaction_distribution_client::TransactionDistributionClient;

/// Long enough to outlast a restart, short enough for the test to see the doubling.
const ENV: [(&str, &str); 2] = [
    ("SORCHA_PEER__SECURITY__MODE", "plaintext"),
    ("SORCHA_PEER__SCORING__BAN_BASE", "30s"),
];

const LIAR: &str = "liar-1";

async fn register(node: &TestNode) -> bool {
    let mut client = PeerDiscoveryClient::connect(node.grpc_url()).await.unwrap();
    let info = PeerInfo {
        peer_id: LIAR.into(),
        address: "127.0.0.1".into(),
        port: 1,
        supported_protocols: vec!["Grpc".into()],
        ..Default::default()
    };
    let answer = client
        .register_peer(RegisterPeerRequest {
            peer_info: Some(info),
        })
        .await
        .unwrap()
        .into_inner();
    answer.success
}

/// Three announcements of size 0 (a protocol violation each: -20, the threshold is -50).
async fn misbehave(node: &TestNode) {
    let mut client = TransactionDistributionClient::connect(node.grpc_url())
        .await
        .unwrap();
    for n in 0..3u8 {
        let notification = TransactionNotification {
            transaction_hash: hex_of(n),
            sender_peer_id: LIAR.into(),
            transaction_size: 0,
            ..Default::default()
        };
        let _ = client.notify_transaction(notification).await;
    }
}

fn hex_of(n: u8) -> String {
    format!("{:02x}", n).repeat(32)
}

async fn row(node: &TestNode) -> serde_json::Value {
    node.get_json(&format!("/api/v1/peers/{LIAR}")).await.1
}

async fn banned_with(node: &TestNode, strikes: u64) -> serde_json::Value {
    let seen = eventually(Duration::from_secs(10), || async {
        let row = row(node).await;
        row["ban_reason"] == "protocol_violation" && row["ban_strikes"] == strikes
    })
    .await;
    let last = row(node).await;
    let (_, peers) = node.get_json("/api/v1/peers").await;
    let (_, events) = node.get_json("/api/v1/events").await;
    assert!(
        seen,
        "no ban with strike {strikes}: {last}\npeers: {peers}\nevents: {events}\nlog: {}",
        node.log()
    );
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_automatic_ban_shows_survives_a_restart_and_lifts() {
    common::init_crypto();
    let mut node = TestNode::start_with(&[], &ENV);
    assert!(register(&node).await, "the liar registers first");
    misbehave(&node).await;
    let first = banned_with(&node, 1).await;
    assert_eq!(first["status"], "banned");
    let until = first["banned_until"].as_u64().expect("banned_until");
    assert!(!register(&node).await, "a banned peer is refused");
    let (_, metrics) = node.get_text("/metrics").await;
    assert!(common::sample(&metrics, "peers_banned") >= 1.0);
    assert!(metrics.contains("peer_bans_total"), "{metrics}");

    node.stop();
    node.restart(&[], &ENV);
    let again = banned_with(&node, 1).await;
    assert_eq!(again["banned_until"].as_u64(), Some(until));
    assert!(!register(&node).await, "still refused after the restart");

    let lifted = reqwest::Client::new()
        .delete(node.http_url(&format!("/api/v1/peers/{LIAR}/ban")))
        .send()
        .await
        .expect("unban");
    assert_eq!(lifted.status(), 200);
    assert!(register(&node).await, "taken again once lifted");
    assert!(row(&node).await["ban_reason"].is_null());

    // The strike count outlived the lift: the next ban is the second, twice as long.
    misbehave(&node).await;
    let second = banned_with(&node, 2).await;
    let now = sorcha_now();
    let left = second["banned_until"].as_u64().unwrap().saturating_sub(now);
    assert!(
        left > 35_000 && left <= 60_000,
        "{left} ms left of a 60 s ban"
    );
}

fn sorcha_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
