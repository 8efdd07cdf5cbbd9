//! The peer score with a real process: a peer that pushes bodies whose hash is wrong is banned
//! automatically; the ban shows in `/api/v1/peers` with its reason, survives a restart
//! with its strike count, an operator's DELETE lifts it, and the next ban doubles.

mod common;

use std::time::Duration;

use common::{TestNode, eventually};
use sorcha_peer::wire::proto::communication::peer_communication_client::PeerCommunicationClient;
use sorcha_peer_core::gossip::{AnnounceEntry, GossipMessage};
use sorcha_peer_core::model::{PeerId, Timestamp, TxHash};
use sorcha_peer_wire::gossip::to_peer_message;

/// Long enough to outlast a restart, short enough for the test to see the doubling.
const ENV: [(&str, &str); 2] = [
    ("SORCHA_PEER__SECURITY__MODE", "plaintext"),
    ("SORCHA_PEER__SCORING__BAN_BASE", "30s"),
];

const LIAR: &str = "liar-1";

async fn register(node: &TestNode) -> bool {
    common::peer::try_register(node, LIAR, 1).await.success
}

/// Two pushed bodies that do not match their announced ids (a wrong body each: -40, the
/// threshold is -50).
async fn misbehave(node: &TestNode, round: u8) {
    let mut client = PeerCommunicationClient::connect(node.grpc_url())
        .await
        .expect("connect");
    let from: PeerId = LIAR.parse().expect("id");
    for n in 0..2u8 {
        let claimed = TxHash::of(&[round, n, 1]);
        let push = GossipMessage::Push {
            entry: AnnounceEntry {
                id: claimed.id(),
                hash: None,
                size: 3,
                register_id: None,
                hops: 1,
            },
            body: vec![round, n, 2],
        };
        let message = to_peer_message(&push, &from, None, Timestamp::from_millis(1));
        client.send_message(message).await.expect("send");
    }
}

async fn row(node: &TestNode) -> serde_json::Value {
    node.get_json(&format!("/api/v1/peers/{LIAR}")).await.1
}

async fn banned_with(node: &TestNode, strikes: u64) -> serde_json::Value {
    let seen = eventually(Duration::from_secs(10), || async {
        let row = row(node).await;
        row["ban_reason"] == "wrong_body" && row["ban_strikes"] == strikes
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
    misbehave(&node, 1).await;
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
    misbehave(&node, 2).await;
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
