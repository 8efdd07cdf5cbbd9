//! Protocol negotiation across real processes: a full node reaches a peer over the stream, a
//! peer that serves only unary gRPC, and one that serves only REST; it exchanges peer lists and
//! transactions with each, and reports the transport it chose.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{TestNode, eventually, init_crypto, sample};

const FAST: [(&str, &str); 5] = [
    ("SORCHA_PEER__DISCOVERY__HEARTBEAT_INTERVAL", "300ms"),
    ("SORCHA_PEER__DISCOVERY__PEER_TIMEOUT", "1s"),
    ("SORCHA_PEER__DISCOVERY__REFRESH_INTERVAL", "2s"),
    ("SORCHA_PEER__DISCOVERY__MIN_HEALTHY_PEERS", "1"),
    ("SORCHA_PEER__DISTRIBUTION__ANTI_ENTROPY_INTERVAL", "500ms"),
];

const SETTLE: Duration = Duration::from_secs(60);

fn start(serve: &str, bootstrap: Option<&TestNode>) -> TestNode {
    start_with(serve, bootstrap, &[])
}

fn start_with(serve: &str, bootstrap: Option<&TestNode>, more: &[(&str, &str)]) -> TestNode {
    let mut env = FAST.to_vec();
    env.push(("SORCHA_PEER__COMMUNICATION__SERVE", serve));
    env.extend_from_slice(more);
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
    let mut all = BTreeSet::new();
    for (i, node) in nodes.iter().enumerate() {
        all.insert(node.submit(format!("submitted at node {i}")).await);
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
    let client = reqwest::Client::new();
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

/// A bootstrap node's transports are unknown until it answers, so the stream is tried first;
/// one that does not serve it (UNIMPLEMENTED) is then reached over unary calls, and the link
/// reports `Grpc` only once a message went that way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrap_node_without_the_stream_is_reached_over_unary_calls() {
    init_crypto();
    let unary = start("grpc", None);
    let full = start("grpc_stream,grpc,rest", Some(&unary));
    let unary_id = unary.status().await["peer_id"].as_str().unwrap().to_owned();
    let mut sent = BTreeSet::new();
    for i in 0..20 {
        sent.insert(
            full.submit(format!("for a unary-only bootstrap node, {i}"))
                .await,
        );
    }
    let arrived = eventually(SETTLE, || async { sent.is_subset(&hashes(&unary).await) }).await;
    assert!(arrived, "transactions did not reach the unary-only node");
    let downgraded = eventually(SETTLE, || async {
        peer_field(&full, &unary_id, "protocol").await == "Grpc"
    })
    .await;
    assert!(
        downgraded,
        "the link to the bootstrap node did not settle on unary calls: {}",
        full.get_json("/api/v1/peers").await.1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_preferred_protocol_is_used_with_a_peer_that_offers_the_stream() {
    init_crypto();
    let full = start("grpc_stream,grpc,rest", None);
    let mut env = FAST.to_vec();
    env.push(("SORCHA_PEER__COMMUNICATION__PREFERRED_PROTOCOL", "grpc"));
    let prefers_unary = TestNode::start_with(&["--bootstrap", &full.peer_addr()], &env);
    let full_id = full.status().await["peer_id"].as_str().unwrap().to_owned();
    let mut sent = BTreeSet::new();
    for i in 0..10 {
        sent.insert(prefers_unary.submit(format!("unary by choice, {i}")).await);
    }
    let arrived = eventually(SETTLE, || async { sent.is_subset(&hashes(&full).await) }).await;
    assert!(arrived, "transactions did not reach the full node");
    let unary = eventually(SETTLE, || async {
        peer_field(&prefers_unary, &full_id, "protocol").await == "Grpc"
    })
    .await;
    assert!(
        unary,
        "the preference was not used: {}",
        prefers_unary.get_json("/api/v1/peers").await.1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_between_stream_peers_ride_the_stream() {
    init_crypto();
    // The push off: this is about the pull path, which small bodies skip when pushed.
    let pull_only = [("SORCHA_PEER__DISTRIBUTION__EAGER_PUSH_MAX_BYTES", "0")];
    let a = start_with("grpc_stream,grpc", None, &pull_only);
    let b = start_with("grpc_stream,grpc", Some(&a), &pull_only);
    let body = |n: usize| format!("stream pull {n} {}", "x".repeat(200));
    // A first exchange both ways opens each side's link and shows each that the other speaks
    // the gossip extensions.
    let mut all = BTreeSet::new();
    for (n, node) in [&a, &b].into_iter().enumerate() {
        all.insert(node.submit(body(n)).await);
    }
    let both = eventually(SETTLE, || async {
        all.is_subset(&hashes(&a).await) && all.is_subset(&hashes(&b).await)
    })
    .await;
    assert!(both, "the first two transactions did not cross");
    tokio::time::sleep(Duration::from_secs(1)).await;

    for n in 2..300 {
        all.insert(a.submit(body(n)).await);
    }
    let arrived = eventually(SETTLE, || async { all.is_subset(&hashes(&b).await) }).await;
    assert!(arrived, "node b lacks some of the 300 transactions");

    // b asked a for bodies with GOSSIP_FETCH on its stream, and a answered there.
    let (_, pages_a) = a.get_text("/metrics").await;
    let (_, pages_b) = b.get_text("/metrics").await;
    let asked = sample(&pages_b, "bandwidth_sent_bytes{kind=\"fetch\"}");
    let served = sample(&pages_a, "bandwidth_received_bytes{kind=\"fetch\"}");
    assert!(
        asked > 0.0 && served > 0.0,
        "no pull rode the stream:\n{pages_b}"
    );
    // One label whichever way a message goes: a's announcements are b's `announce` too.
    let announced = sample(&pages_a, "bandwidth_sent_bytes{kind=\"announce\"}");
    let heard = sample(&pages_b, "bandwidth_received_bytes{kind=\"announce\"}");
    assert!(announced > 0.0 && heard > 0.0, "{pages_b}");
    // An id asked for on the stream costs 18 bytes, and batches share one message's
    // envelope; a unary GetTransaction costs ~116 bytes (both are `fetch`): even a third of
    // the pulls going unary would pass 25 bytes a body.
    assert!(
        asked < 300.0 * 25.0,
        "{asked} bytes of fetches for 300 bodies: not on the stream"
    );
    assert_eq!(sample(&pages_b, "verification_failures_total"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_fetch_is_bounded_and_only_answered_on_a_stream() {
    use prost::Message;
    use sorcha_peer::wire::proto::communication::peer_communication_client::PeerCommunicationClient;
    use sorcha_peer::wire::proto::communication::{GossipFetch, MessageType, PeerMessage};
    use sorcha_peer::wire::proto::transaction::TransactionResponse;

    init_crypto();
    let node = start("grpc_stream,grpc", None);
    // A peer, so that the node is online and stores what it is given (rather than queueing).
    let _peer = start("grpc_stream,grpc", Some(&node));
    let online = eventually(SETTLE, || async {
        node.status().await["state"] != "offline"
    })
    .await;
    assert!(online, "the node never found its peer");
    let body = b"a body to pull".to_vec();
    let known = node.submit(body.clone()).await;
    // The known transaction by its id (16 raw bytes, as nodes ask) and 299 well-formed unknown
    // ones by whole hash (32, still accepted): 44 past the limit of 256 per batch.
    let raw = |hex: &str| -> Vec<u8> {
        (0..32)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
            .collect()
    };
    let mut hashes = vec![raw(&known)[..16].to_vec()];
    hashes.extend((1..300).map(|n| raw(&format!("{n:064x}"))));
    let fetch = |hashes: Vec<Vec<u8>>| PeerMessage {
        sender_peer_id: "tester".into(),
        message_type: MessageType::GossipFetch.into(),
        payload: GossipFetch { hashes }.encode_to_vec(),
        ..Default::default()
    };
    let mut client = PeerCommunicationClient::connect(node.grpc_url())
        .await
        .unwrap();

    let unary = client.send_message(fetch(hashes.clone())).await;
    assert_eq!(
        unary.unwrap_err().code(),
        tonic::Code::FailedPrecondition,
        "answers need a stream"
    );

    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(fetch(hashes)).await.unwrap();
    let mut answers = client
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while got.len() < 256 {
        let next = tokio::time::timeout(Duration::from_secs(10), answers.message()).await;
        let message = next
            .expect("answers in time")
            .unwrap()
            .expect("stream open");
        if message.message_type == MessageType::TransactionResponse as i32 {
            got.push(TransactionResponse::decode(message.payload.as_slice()).unwrap());
        }
    }
    assert!(got[0].found);
    assert!(
        got[0].transaction_hash.is_empty(),
        "a found body names itself"
    );
    assert_eq!(got[0].transaction_data, body);
    assert!(
        got[1..]
            .iter()
            .all(|a| !a.found && a.transaction_data.is_empty())
    );
    assert_eq!(
        got[1].transaction_hash,
        format!("{:064x}", 1),
        "names what was asked"
    );
    // Nothing beyond the limit: the next message, if any soon, is not an answer.
    let more = tokio::time::timeout(Duration::from_millis(500), answers.message()).await;
    if let Ok(Ok(Some(m))) = more {
        assert_ne!(m.message_type, MessageType::TransactionResponse as i32);
    }
    drop(tx);
    let (_, page) = node.get_text("/metrics").await;
    assert_eq!(
        sample(&page, "gossip_dropped_total{kind=\"fetch_over_limit\"}"),
        44.0,
        "{page}"
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
