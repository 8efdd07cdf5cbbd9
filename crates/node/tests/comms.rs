//! The communication layer against misbehaving peers: one that never finishes reading must not
//! slow the others; one that is dead must trip its circuit breaker, which closes again once the
//! peer answers.

mod common;

use std::collections::BTreeSet;
use std::pin::Pin;
use std::time::Duration;

use common::peer::{register, serve};
use common::{TestNode, eventually, init_crypto};
use futures::Stream;
use sorcha_peer::wire::proto::communication::peer_communication_server::{
    PeerCommunication, PeerCommunicationServer,
};
use sorcha_peer::wire::proto::communication::{MessageAck, PeerMessage};
use tonic::{Request, Response, Status, Streaming};

const FAST: [(&str, &str); 6] = [
    ("SORCHA_PEER__DISCOVERY__HEARTBEAT_INTERVAL", "300ms"),
    ("SORCHA_PEER__DISCOVERY__PEER_TIMEOUT", "1s"),
    ("SORCHA_PEER__DISCOVERY__REFRESH_INTERVAL", "2s"),
    ("SORCHA_PEER__DISCOVERY__MIN_HEALTHY_PEERS", "2"),
    ("SORCHA_PEER__DISTRIBUTION__ANTI_ENTROPY_INTERVAL", "1s"),
    ("SORCHA_PEER__DISTRIBUTION__FANOUT", "20"),
];

/// A peer that accepts gossip messages but never finishes reading them (its membership side
/// is `common::peer::Agreeable`, served by `common::peer::serve`).
struct Stuck;

#[tonic::async_trait]
impl PeerCommunication for Stuck {
    async fn send_message(&self, _: Request<PeerMessage>) -> Result<Response<MessageAck>, Status> {
        std::future::pending().await
    }
    type StreamStream = Pin<Box<dyn Stream<Item = Result<PeerMessage, Status>> + Send>>;
    async fn stream(
        &self,
        _: Request<Streaming<PeerMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        std::future::pending().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_reads_does_not_stall_the_others() {
    init_crypto();
    let stuck_port = serve("stuck-peer", |r| {
        r.add_service(PeerCommunicationServer::new(Stuck))
    })
    .await;
    let a = TestNode::start_with(&[], &FAST);
    let b = TestNode::start_with(&["--bootstrap", &a.peer_addr()], &FAST);
    let c = TestNode::start_with(&["--bootstrap", &a.peer_addr()], &FAST);
    register(&a, "stuck-peer", stuck_port).await;
    let active = eventually(Duration::from_secs(30), || async {
        let (_, doc) = a.get_json("/api/v1/peers").await;
        let peers = doc["peers"].as_array().cloned().unwrap_or_default();
        peers
            .iter()
            .filter(|p| p["active"] == true && p["status"] == "alive")
            .count()
            == 3
    })
    .await;
    assert!(
        active,
        "the stuck peer and two real ones should all be active at A"
    );

    let mut hashes = BTreeSet::new();
    for i in 0..300 {
        hashes.insert(a.submit(format!("tx {i} {}", "y".repeat(300))).await);
    }
    let spread = eventually(Duration::from_secs(30), || async {
        for node in [&b, &c] {
            let (_, doc) = node.get_json("/api/v1/transactions?limit=1000").await;
            let have: BTreeSet<String> = doc["transactions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["hash"].as_str().unwrap().to_owned())
                .collect();
            if !hashes.is_subset(&have) {
                return false;
            }
        }
        true
    })
    .await;
    assert!(
        spread,
        "transactions did not reach the healthy peers past a stuck one"
    );
    let counted = eventually(Duration::from_secs(10), || async {
        let (_, metrics) = a.get_text("/metrics").await;
        metrics
            .lines()
            .any(|l| l.starts_with("connection_errors_total") && !l.ends_with(" 0"))
    })
    .await;
    assert!(counted, "the stuck peer's timeouts were not counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_on_a_dead_peer_and_closes_when_it_answers() {
    init_crypto();
    let breaker = [
        ("SORCHA_PEER__COMMUNICATION__CIRCUIT_BREAKER_THRESHOLD", "2"),
        ("SORCHA_PEER__COMMUNICATION__CIRCUIT_BREAKER_RESET", "1s"),
        ("SORCHA_PEER__DISCOVERY__FAILURE_THRESHOLD", "20"),
    ];
    let env: Vec<_> = FAST.iter().chain(breaker.iter()).copied().collect();
    let node = TestNode::start_with(&[], &env);
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    register(&node, "dead-peer", port).await;

    let circuit = |expected: &'static str| {
        let node = &node;
        move || async move {
            let (_, doc) = node.get_json("/api/v1/peers/dead-peer").await;
            doc["circuit"] == expected
        }
    };
    assert!(
        eventually(Duration::from_secs(20), circuit("open")).await,
        "the circuit never opened"
    );
    let (_, metrics) = node.get_text("/metrics").await;
    assert!(metrics.contains("circuit_breakers_open 1"), "{metrics}");

    // The peer comes to life at that address, under that id.
    let port_arg = format!("127.0.0.1:{port}");
    let _revived = TestNode::start_with(&["--listen", &port_arg, "--node-id", "dead-peer"], &FAST);
    assert!(
        eventually(Duration::from_secs(20), circuit("closed")).await,
        "the circuit did not close once the peer answered"
    );
}
