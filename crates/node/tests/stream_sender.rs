//! A `PeerCommunication.Stream` is one peer's: its first message names the sender, later
//! messages may leave sender, recipient and timestamp out and are taken as that peer's, and a
//! message naming another sender is refused. Against a real node: a raw stream client speaks
//! for an in-process peer that serves the bodies it announces, so the node's pulls show whose
//! announcements it took them for.

mod common;

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::peer::{register, serve};
use common::{TestNode, eventually, init_crypto, sample};
use futures::Stream;
use prost::Message;
use sorcha_peer::wire::proto::communication::peer_communication_client::PeerCommunicationClient;
use sorcha_peer::wire::proto::communication::peer_communication_server::{
    PeerCommunication, PeerCommunicationServer,
};
use sorcha_peer::wire::proto::communication::{
    AnnounceEntry, GossipAnnounce, MessageAck, MessageType, PeerMessage,
};
use sorcha_peer::wire::proto::transaction::transaction_distribution_server::{
    TransactionDistribution, TransactionDistributionServer,
};
use sorcha_peer::wire::proto::transaction::{
    NotificationAck, TransactionChunk, TransactionNotification, TransactionRequest,
    TransactionResponse,
};
use sorcha_peer_core::model::TxHash;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

const ENV: [(&str, &str); 5] = [
    ("SORCHA_PEER__DISCOVERY__HEARTBEAT_INTERVAL", "300ms"),
    ("SORCHA_PEER__DISCOVERY__PEER_TIMEOUT", "1s"),
    ("SORCHA_PEER__DISCOVERY__MIN_HEALTHY_PEERS", "1"),
    ("SORCHA_PEER__DISTRIBUTION__ANTI_ENTROPY_INTERVAL", "500ms"),
    ("SORCHA_PEER__COMMUNICATION__SERVE", "grpc_stream,grpc"),
];

const SETTLE: Duration = Duration::from_secs(30);

/// The peer the raw stream speaks for: answers membership calls, takes gossip, and serves
/// every body of the test by `GetTransaction` (asked by id or by whole hash), noting the names
/// asked.
struct Announcer {
    /// By whole hash, as hex.
    bodies: BTreeMap<String, Vec<u8>>,
    asked: Mutex<Vec<String>>,
}

impl Announcer {
    /// Whether the transaction of `hash` (hex) was asked for, by id or by whole hash.
    fn was_asked(&self, hash: &str) -> bool {
        let asked = self.asked.lock().unwrap();
        asked
            .iter()
            .any(|name| !name.is_empty() && hash.starts_with(name.as_str()))
    }
}

#[tonic::async_trait]
impl TransactionDistribution for Announcer {
    async fn notify_transaction(
        &self,
        _: Request<TransactionNotification>,
    ) -> Result<Response<NotificationAck>, Status> {
        Ok(Response::new(NotificationAck::default()))
    }

    async fn get_transaction(
        &self,
        request: Request<TransactionRequest>,
    ) -> Result<Response<TransactionResponse>, Status> {
        let hash = request.into_inner().transaction_hash;
        self.asked.lock().unwrap().push(hash.clone());
        let body = (!hash.is_empty())
            .then(|| self.bodies.iter().find(|(h, _)| h.starts_with(&hash)))
            .flatten()
            .map(|(_, body)| body.clone());
        Ok(Response::new(TransactionResponse {
            found: body.is_some(),
            transaction_data: body.unwrap_or_default(),
            transaction_hash: hash,
        }))
    }

    type StreamTransactionStream =
        Pin<Box<dyn Stream<Item = Result<TransactionChunk, Status>> + Send>>;

    async fn stream_transaction(
        &self,
        _: Request<TransactionRequest>,
    ) -> Result<Response<Self::StreamTransactionStream>, Status> {
        Err(Status::unimplemented("bodies are small"))
    }
}

#[tonic::async_trait]
impl PeerCommunication for Announcer {
    async fn send_message(&self, _: Request<PeerMessage>) -> Result<Response<MessageAck>, Status> {
        Ok(Response::new(MessageAck {
            received: true,
            timestamp: 0,
        }))
    }
    type StreamStream = Pin<Box<dyn Stream<Item = Result<PeerMessage, Status>> + Send>>;
    async fn stream(
        &self,
        _: Request<Streaming<PeerMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        Err(Status::unimplemented("unary only"))
    }
}

/// A one-entry `GOSSIP_ANNOUNCE` of `body` naming `sender` (empty: none), as our links send
/// it after a stream's first message.
fn announce(body: &[u8], sender: &str) -> PeerMessage {
    let entry = AnnounceEntry {
        transaction_size: body.len() as i64,
        hop_count: 1,
        hash: TxHash::of(body).id().as_bytes().to_vec(),
        ..Default::default()
    };
    PeerMessage {
        sender_peer_id: sender.into(),
        message_type: MessageType::GossipAnnounce.into(),
        payload: GossipAnnounce {
            entries: vec![entry],
        }
        .encode_to_vec(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_speaks_for_the_peer_its_first_message_names() {
    init_crypto();
    let node = TestNode::start_with(&[], &ENV);
    let node_id = node.status().await["peer_id"].as_str().unwrap().to_owned();
    let body = |name: &str| format!("{name}: {}", "z".repeat(200)).into_bytes();
    let names = ["unnamed", "first", "second", "third", "mallory", "last"];
    let bodies: BTreeMap<&str, Vec<u8>> = names.iter().map(|n| (*n, body(n))).collect();
    let hash = |name: &str| TxHash::of(&bodies[name]).to_string();
    // The peer serves every body, so any announcement taken for its own would be pulled.
    let announcer = Arc::new(Announcer {
        bodies: bodies
            .values()
            .map(|b| (TxHash::of(b).to_string(), b.clone()))
            .collect(),
        asked: Mutex::default(),
    });
    let served = announcer.clone();
    let port = serve("tester", |r| {
        r.add_service(PeerCommunicationServer::from_arc(served.clone()))
            .add_service(TransactionDistributionServer::from_arc(served))
    })
    .await;
    register(&node, "tester", port).await;
    let alive = eventually(SETTLE, || async {
        node.get_json("/api/v1/peers/tester").await.1["status"] == "alive"
    })
    .await;
    assert!(alive, "the node never saw its peer alive");

    let first = PeerMessage {
        recipient_peer_id: node_id.clone(),
        timestamp: 1_760_000_000_000,
        ..announce(&bodies["first"], "tester")
    };
    let messages = [
        announce(&bodies["unnamed"], ""),
        first,
        announce(&bodies["second"], ""),
        announce(&bodies["third"], ""),
        announce(&bodies["mallory"], "mallory"),
        announce(&bodies["last"], ""),
    ];
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    for m in messages {
        tx.send(m).await.unwrap();
    }
    let mut client = PeerCommunicationClient::connect(node.grpc_url())
        .await
        .unwrap();
    let _answers = client.stream(ReceiverStream::new(rx)).await.unwrap();

    // The named peer's announcements, compact ones included, are pulled from it and stored
    // as its.
    let taken = ["first", "second", "third", "last"];
    let http = reqwest::Client::new();
    let stored = eventually(SETTLE, || async {
        for name in taken {
            let url = node.http_url(&format!("/api/v1/transactions/{}", hash(name)));
            let answer = http.get(url).send().await.unwrap();
            let origin = answer.headers().get("x-origin").cloned();
            if answer.status() != 200 || origin.is_none_or(|o| o != "tester") {
                return false;
            }
        }
        true
    })
    .await;
    assert!(
        stored,
        "not every announcement of the stream's peer was pulled from it; asked: {:?}",
        announcer.asked.lock().unwrap()
    );

    // The message before the stream named its sender, and the one naming another peer, were
    // refused: never pulled from the stream's peer, and counted.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for refused in ["unnamed", "mallory"] {
        assert!(
            !announcer.was_asked(&hash(refused)),
            "{refused} pulled: {:?}",
            announcer.asked.lock().unwrap()
        );
    }
    let (_, page) = node.get_text("/metrics").await;
    let dropped = |kind: &str| sample(&page, &format!("gossip_dropped_total{{kind=\"{kind}\"}}"));
    assert_eq!(dropped("stream_sender_missing"), 1.0, "{page}");
    assert_eq!(dropped("stream_sender_changed"), 1.0, "{page}");
    assert_eq!(dropped("stream_refused"), 0.0, "{page}");
    drop(tx);
}
