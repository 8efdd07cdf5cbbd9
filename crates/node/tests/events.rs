//! The event log of real node processes: each kind is produced by what causes it (start-up,
//! peers joining, being banned and refused, removed, transactions submitted, pulled, queued,
//! flushed, a bad body, a full queue) and read back through `GET /api/v1/events`, its
//! filters and its 400s, `sorcha-peer events`, and the log file (no colour codes).
//! `tx_dead_lettered` is produced in a unit test (`runtime::flusher`): it needs a queue entry
//! no peer ever pulls.

mod common;

use std::time::Duration;

use common::{TestNode, eventually, init_crypto, peer, run_cli};
use serde_json::Value;
use sorcha_peer::wire::proto::communication::peer_communication_client::PeerCommunicationClient;
use sorcha_peer_core::gossip::{AnnounceEntry, GossipMessage};
use sorcha_peer_core::model::{PeerId, Timestamp, TxHash};

const FAST: [(&str, &str); 4] = [
    ("SORCHA_PEER__DISCOVERY__HEARTBEAT_INTERVAL", "300ms"),
    ("SORCHA_PEER__DISCOVERY__PEER_TIMEOUT", "1s"),
    ("SORCHA_PEER__DISCOVERY__REFRESH_INTERVAL", "2s"),
    ("SORCHA_PEER__DISTRIBUTION__ANTI_ENTROPY_INTERVAL", "500ms"),
];

const WAIT: Duration = Duration::from_secs(20);

/// Events of `kind` on `node` (optionally about `peer`).
async fn events(node: &TestNode, kind: &str, peer: Option<&str>) -> Vec<Value> {
    let mut path = format!("/api/v1/events?kind={kind}&limit=1000");
    if let Some(peer) = peer {
        path.push_str(&format!("&peer={peer}"));
    }
    let (code, doc) = node.get_json(&path).await;
    assert_eq!(code, 200, "{doc}");
    doc["events"].as_array().cloned().unwrap_or_default()
}

/// Waits until `node` has logged an event of `kind` whose detail contains `needle`.
async fn logged(node: &TestNode, kind: &str, peer: Option<&str>, needle: &str) {
    let ok = eventually(WAIT, || async {
        events(node, kind, peer)
            .await
            .iter()
            .any(|e| e["detail"].as_str().unwrap_or("").contains(needle))
    })
    .await;
    let (_, all) = node.get_json("/api/v1/events?limit=1000").await;
    assert!(ok, "no {kind} event with {needle:?} on the node:\n{all:#}");
}

async fn peer_id(node: &TestNode) -> String {
    node.status().await["peer_id"]
        .as_str()
        .expect("peer id")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_bans_and_transactions_are_logged() {
    init_crypto();
    let a = TestNode::start_with(&[], &FAST);
    let b = TestNode::start_with(&["--bootstrap", &a.peer_addr()], &FAST);
    let c = TestNode::start_with(&["--bootstrap", &a.peer_addr()], &FAST);
    let (b_id, c_id) = (peer_id(&b).await, peer_id(&c).await);

    logged(&a, "config_loaded", None, "HTTP port").await;
    logged(&a, "address_changed", None, "127.0.0.1").await;
    logged(&a, "peer_connected", Some(&b_id), "active set").await;
    // TLS is on by default (mixed): B proves its id to A.
    logged(&a, "peer_verified", Some(&b_id), "proved its id over TLS").await;
    logged(&a, "state_changed", None, "offline -> ").await;
    // C bootstrapped when A knew B already: its round asks B.
    logged(&c, "discovery_round", None, "round").await;

    let local = a.submit(b"submitted on a".to_vec()).await;
    logged(
        &a,
        "tx_accepted",
        None,
        &format!("{local} (14 bytes, submitted here)"),
    )
    .await;
    // Pushed or pulled, as the tree stands; the transaction stream's test pins the way.
    logged(&b, "tx_accepted", None, &format!("{local} (14 bytes, p")).await;

    let client = reqwest::Client::new();
    let ban = client
        .post(a.http_url(&format!("/api/v1/peers/{b_id}/ban?duration=1h")))
        .send()
        .await
        .expect("ban");
    assert_eq!(ban.status(), 200);
    logged(&a, "banned", Some(&b_id), "by the operator until").await;
    // B keeps calling A; A refuses its registration and says why.
    logged(&a, "peer_refused", Some(&b_id), "refused: peer is banned").await;
    let unban = client
        .delete(a.http_url(&format!("/api/v1/peers/{b_id}/ban")))
        .send()
        .await
        .expect("unban");
    assert_eq!(unban.status(), 200);
    logged(&a, "unbanned", Some(&b_id), "by the operator").await;

    let removed = client
        .delete(a.http_url(&format!("/api/v1/peers/{c_id}")))
        .send()
        .await
        .expect("remove");
    assert_eq!(removed.status(), 200);
    logged(&a, "peer_disconnected", Some(&c_id), "removed").await;

    // The CLI reads the same log, filtered.
    let (code, out, err) = run_cli(
        &[
            "events",
            "--http",
            &format!("127.0.0.1:{}", a.ports.http),
            "--kind",
            "banned",
        ],
        &[],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("banned") && out.contains(&b_id[..12]), "{out}");
    assert!(!out.contains("tx_accepted"), "{out}");
    // Logs written to a file carry no colour codes.
    assert!(!a.log().contains('\u{1b}'), "ANSI codes in the log file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_offline_queue_and_its_limit_are_logged() {
    init_crypto();
    let env = [
        FAST[0],
        FAST[1],
        FAST[2],
        ("SORCHA_PEER__OFFLINE__MAX_QUEUE_SIZE", "1"),
    ];
    let a = TestNode::start_with(&[], &env);
    let queued = a.submit(b"kept while offline".to_vec()).await;
    logged(&a, "tx_queued", None, &queued).await;
    let refused = reqwest::Client::new()
        .post(a.http_url("/api/v1/transactions"))
        .body(b"one too many".to_vec())
        .send()
        .await
        .expect("submit");
    assert_eq!(refused.status(), 503);
    logged(
        &a,
        "limit_hit",
        None,
        "offline_queue: the offline queue is full",
    )
    .await;

    let _b = TestNode::start_with(&["--bootstrap", &a.peer_addr()], &FAST);
    logged(
        &a,
        "tx_flushed",
        None,
        "1 queued transactions handed to gossip",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_does_not_match_its_hash_is_logged() {
    init_crypto();
    let a = TestNode::start_with(&[], &FAST);
    let liar = "0badb0d10badb0d10badb0d10badb0d10badb0d1";
    let port = peer::serve(liar, |router| router).await;
    peer::register(&a, liar, port).await;

    let claimed = TxHash::of(b"the real body");
    let push = GossipMessage::Push {
        entry: AnnounceEntry {
            id: claimed.id(),
            hash: None,
            size: 13,
            register_id: None,
            hops: 1,
        },
        body: b"another body!".to_vec(),
    };
    let from: PeerId = liar.parse().expect("id");
    let message =
        sorcha_peer_wire::gossip::to_peer_message(&push, &from, None, Timestamp::from_millis(1));
    let mut client = PeerCommunicationClient::connect(a.grpc_url())
        .await
        .expect("connect");
    client.send_message(message).await.expect("send");
    logged(&a, "bad_body", Some(liar), "does not match its hash").await;
}

#[tokio::test]
async fn bad_parameters_are_refused_with_the_reason() {
    init_crypto();
    let a = TestNode::start(&[]);
    for (query, expect) in [
        ("kind=nope", "kind: unknown event kind"),
        ("limit=0", "limit: expected 1 to 1000"),
        ("since=soon", "since: expected a sequence number"),
        ("peer=x%2Fy", "peer:"),
        ("colour=red", "unknown parameter"),
    ] {
        let (code, doc) = a.get_json(&format!("/api/v1/events?{query}")).await;
        assert_eq!(code, 400, "{query}: {doc}");
        assert!(
            doc["error"].as_str().unwrap_or("").contains(expect),
            "{query}: {doc}"
        );
        let (code, _) = a.get_text(&format!("/api/v1/events/stream?{query}")).await;
        assert_eq!(code, 400, "stream {query}");
    }
    let (code, doc) = a.get_json("/api/v1/events?since=0&limit=1").await;
    assert_eq!(code, 200);
    assert_eq!(doc["events"][0]["seq"], 1, "{doc}");
    assert_eq!(doc["events"][0]["kind"], "config_loaded", "{doc}");
    assert_eq!(doc["capacity"], 10_000);
}
