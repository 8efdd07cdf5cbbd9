//! The link workers against loopback peers: stream framing and re-opening, pulls failed at
//! once by a stream's end, Sorcha notifications, refusals.

use std::pin::Pin;
use std::sync::atomic::Ordering;

use futures::Stream;
use sorcha_peer_core::gossip::{AnnounceEntry, FetchFailure, GossipMessage};
use sorcha_peer_core::link::Pull;
use sorcha_peer_core::model::{TxHash, TxId};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status};

use super::*;
use crate::wire::proto::communication::peer_communication_server::{
    PeerCommunication, PeerCommunicationServer,
};
use crate::wire::proto::communication::{MessageAck, MessageType, PeerMessage};
use crate::wire::proto::transaction::transaction_distribution_server::{
    TransactionDistribution, TransactionDistributionServer,
};
use crate::wire::proto::transaction::{
    NotificationAck, TransactionChunk, TransactionNotification, TransactionRequest,
    TransactionResponse,
};

/// A Sorcha peer's transaction service: it records the notifications it gets.
struct SorchaPeer(mpsc::Sender<TransactionNotification>);

#[tonic::async_trait]
impl TransactionDistribution for SorchaPeer {
    async fn notify_transaction(
        &self,
        request: Request<TransactionNotification>,
    ) -> Result<Response<NotificationAck>, Status> {
        let _ = self.0.send(request.into_inner()).await;
        Ok(Response::new(NotificationAck {
            already_known: false,
            will_request: true,
        }))
    }

    async fn get_transaction(
        &self,
        _: Request<TransactionRequest>,
    ) -> Result<Response<TransactionResponse>, Status> {
        Err(Status::not_found("none"))
    }

    type StreamTransactionStream =
        Pin<Box<dyn Stream<Item = Result<TransactionChunk, Status>> + Send>>;

    async fn stream_transaction(
        &self,
        _: Request<TransactionRequest>,
    ) -> Result<Response<Self::StreamTransactionStream>, Status> {
        Err(Status::not_found("none"))
    }
}

/// A peer whose stream takes messages and ends, without an answer, at the first pull.
struct HangsUpOnPulls;

#[tonic::async_trait]
impl PeerCommunication for HangsUpOnPulls {
    async fn send_message(&self, _: Request<PeerMessage>) -> Result<Response<MessageAck>, Status> {
        Ok(Response::new(MessageAck::default()))
    }

    type StreamStream = Pin<Box<dyn Stream<Item = Result<PeerMessage, Status>> + Send>>;

    async fn stream(
        &self,
        request: Request<tonic::Streaming<PeerMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            while let Ok(Some(m)) = inbound.message().await {
                if m.message_type == MessageType::GossipFetch as i32 {
                    drop(tx);
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// A peer that records each message its streams bring, with the stream's number, and
/// ends its first stream after `close_first_after` messages.
struct Recorder {
    seen: mpsc::Sender<(usize, PeerMessage)>,
    streams: std::sync::atomic::AtomicUsize,
    close_first_after: usize,
}

#[tonic::async_trait]
impl PeerCommunication for Recorder {
    async fn send_message(&self, _: Request<PeerMessage>) -> Result<Response<MessageAck>, Status> {
        Err(Status::unimplemented("streams only"))
    }

    type StreamStream = Pin<Box<dyn Stream<Item = Result<PeerMessage, Status>> + Send>>;

    async fn stream(
        &self,
        request: Request<tonic::Streaming<PeerMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let number = self.streams.fetch_add(1, Ordering::Relaxed);
        let (seen, close_after) = (self.seen.clone(), self.close_first_after);
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel::<Result<PeerMessage, Status>>(4);
        tokio::spawn(async move {
            let mut count = 0;
            while let Ok(Some(m)) = inbound.message().await {
                let _ = seen.send((number, m)).await;
                count += 1;
                if number == 0 && count == close_after {
                    return; // Drops `tx`: our side of the stream ends.
                }
            }
            drop(tx);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Serves `router` on a loopback port: a lazy channel to it, and its URL.
async fn serve(router: tonic::transport::server::Router) -> (Channel, String) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(listener)));
    let channel = tonic::transport::Endpoint::from_shared(url.clone())
        .unwrap()
        .connect_lazy();
    (channel, url)
}

/// The links of node "rust-node", whose calls give up after `timeout`.
fn links(timeout: Duration, answers: mpsc::Sender<Answer>) -> Links {
    Links::new(
        "rust-node".parse().unwrap(),
        timeout,
        1 << 20,
        Arc::new(Metrics::new().unwrap()),
        answers,
        RestClient::new(timeout).unwrap(),
        (crate::handle::origins::Origins::shared(), unlimited()),
    )
}

/// Pushes charged to no budget, with no queue to confirm.
fn unlimited() -> super::Pushes {
    let metrics = Arc::new(Metrics::new().unwrap());
    super::Pushes {
        upload: Arc::new(crate::transport::limits::upload::UploadBudget::new(
            0, metrics,
        )),
        queue: None,
    }
}

/// Transmission `ticket` of `what` over `via`.
fn job(ticket: u64, via: Via, what: GossipMessage) -> Job {
    Job {
        ticket,
        via,
        what: What::Gossip(what),
    }
}

/// A pull of `id` batched for the stream.
fn pull(ticket: u64, id: TxId) -> Job {
    let pull = Pull {
        id,
        hash: None,
        size: 1,
    };
    Job {
        ticket,
        via: Via::Stream,
        what: What::Fetch(vec![pull]),
    }
}

/// Waits (10 s at most) for the first answer `pick` takes.
async fn answer<T>(answers: &mut mpsc::Receiver<Answer>, pick: impl Fn(Answer) -> Option<T>) -> T {
    let found = async {
        loop {
            if let Some(found) = pick(answers.recv().await.expect("answers")) {
                return found;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), found)
        .await
        .expect("an answer in time")
}

#[tokio::test]
async fn only_the_first_message_of_each_stream_names_sender_and_recipient() {
    let (seen, mut received) = mpsc::channel(16);
    let recorder = Recorder {
        seen,
        streams: Default::default(),
        close_first_after: 3,
    };
    let server =
        tonic::transport::Server::builder().add_service(PeerCommunicationServer::new(recorder));
    let (channel, url) = serve(server).await;
    let (answers, mut reports) = mpsc::channel(64);
    let mut links = links(Duration::from_secs(30), answers);
    let peer: PeerId = "peer".parse().unwrap();
    let announce = |n: u8| GossipMessage::Announce {
        entries: vec![AnnounceEntry {
            id: TxHash::of(&[n]).id(),
            hash: Some(TxHash::of(&[n])),
            size: 1,
            register_id: None,
            hops: 1,
        }],
    };
    let digest = GossipMessage::Digest {
        range: sorcha_peer_core::gossip::PrefixRange::FULL,
        prefixes: vec![1],
        recent: None,
    };
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(10), received.recv())
            .await
            .expect("a message in time")
            .expect("the recorder runs")
    };
    let open = Some((channel, url));
    links
        .transmit(&peer, open, job(1, Via::Stream, announce(1)))
        .unwrap();
    let (stream, first) = next().await;
    assert_eq!(stream, 0);
    links
        .transmit(&peer, None, job(2, Via::Stream, digest))
        .unwrap();
    let wanted = TxHash::of(b"wanted").id();
    links.transmit(&peer, None, pull(3, wanted)).unwrap();
    let mut later = vec![next().await, next().await];
    // The first stream has ended (and is reported so, with the number it was opened
    // with); the next message opens a second one.
    let opened = answer(&mut reports, |a| match a {
        Answer::StreamOpened { generation, .. } => Some(generation),
        _ => None,
    })
    .await;
    let closed = answer(&mut reports, |a| match a {
        Answer::StreamClosed { generation, .. } => Some(generation),
        _ => None,
    })
    .await;
    assert_eq!(closed, opened, "the first stream is seen to end");
    links
        .transmit(&peer, None, job(4, Via::Stream, announce(2)))
        .unwrap();
    let (stream, first_again) = next().await;
    assert_eq!(stream, 1, "a new stream");
    links
        .transmit(&peer, None, job(5, Via::Stream, announce(3)))
        .unwrap();
    later.push(next().await);
    let reopened = answer(&mut reports, |a| match a {
        Answer::StreamOpened { generation, .. } => Some(generation),
        _ => None,
    })
    .await;
    assert!(reopened > opened, "a newer generation");

    for whole in [&first, &first_again] {
        assert_eq!(whole.sender_peer_id, "rust-node");
        assert_eq!(whole.recipient_peer_id, "peer");
        assert!(whole.timestamp > 0);
    }
    let types: Vec<i32> = later.iter().map(|(_, m)| m.message_type).collect();
    let expected = [
        MessageType::GossipDigest,
        MessageType::GossipFetch,
        MessageType::GossipAnnounce,
    ];
    assert_eq!(types, expected.map(i32::from));
    for (_, m) in &later {
        assert_eq!(
            (m.sender_peer_id.as_str(), m.recipient_peer_id.as_str()),
            ("", "")
        );
        assert_eq!(m.timestamp, 0);
        assert!(!m.payload.is_empty());
    }
    assert_eq!(later[2].0, 1, "compact on the second stream too");
}

#[tokio::test]
async fn pulls_on_a_stream_that_ends_fail_at_once() {
    let server = tonic::transport::Server::builder()
        .add_service(PeerCommunicationServer::new(HangsUpOnPulls));
    let (channel, url) = serve(server).await;
    let (answers, mut results) = mpsc::channel(8);
    // A long timeout: the failure must come from the stream's end, not from a deadline.
    let mut links = links(Duration::from_secs(30), answers);
    let peer: PeerId = "peer".parse().unwrap();
    let digest = GossipMessage::Digest {
        range: sorcha_peer_core::gossip::PrefixRange::FULL,
        prefixes: vec![],
        recent: None,
    };
    let open = Some((channel, url));
    links
        .transmit(&peer, open, job(1, Via::Stream, digest))
        .unwrap();
    let opened = async {
        loop {
            if let Answer::StreamOpened { .. } = results.recv().await.expect("answers") {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), opened)
        .await
        .expect("the stream opens");
    let wanted = TxHash::of(b"wanted").id();
    links.transmit(&peer, None, pull(2, wanted)).unwrap();
    let failed = async {
        loop {
            match results.recv().await.expect("answers") {
                Answer::Fetched { id, result, .. } => return (id, result),
                _ => continue,
            }
        }
    };
    let (h, result) = tokio::time::timeout(Duration::from_secs(10), failed)
        .await
        .expect("failed well before the 30 s timeout");
    assert_eq!(h, wanted);
    assert_eq!(result, Err(FetchFailure::Unreachable));
}

#[tokio::test]
async fn a_peer_that_speaks_only_sorcha_gets_announcements_as_notify_transaction() {
    let (seen, mut notifications) = mpsc::channel(8);
    let server = tonic::transport::Server::builder()
        .add_service(TransactionDistributionServer::new(SorchaPeer(seen)));
    let (channel, url) = serve(server).await;
    let (answers, mut outcomes) = mpsc::channel(8);
    let mut links = links(Duration::from_secs(5), answers);
    let peer: PeerId = "csharp-node".parse().unwrap();
    let entry = AnnounceEntry {
        id: TxHash::of(b"tx").id(),
        hash: Some(TxHash::of(b"tx")),
        size: 2,
        register_id: Some("reg".into()),
        hops: 1,
    };
    let message = GossipMessage::Announce {
        entries: vec![entry.clone()],
    };
    let open = Some((channel, url));
    let GossipMessage::Announce { entries } = message else {
        unreachable!("built above")
    };
    let notify = Job {
        ticket: 7,
        via: Via::Unary,
        what: What::Notify(entries),
    };
    links.transmit(&peer, open, notify).unwrap();

    let got = tokio::time::timeout(Duration::from_secs(10), notifications.recv())
        .await
        .expect("notified in time")
        .expect("a notification");
    assert_eq!(got.transaction_hash, TxHash::of(b"tx").to_string());
    assert_eq!(got.sender_peer_id, "rust-node");
    assert_eq!((got.transaction_size, got.register_id.as_str()), (2, "reg"));
    let outcome = outcomes.recv().await.expect("an outcome");
    assert!(
        matches!(
            outcome,
            Answer::Transmitted {
                ticket: 7,
                outcome: Outcome::Sent,
                ..
            }
        ),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn an_unimplemented_call_is_reported_refused() {
    let (seen, _received) = mpsc::channel(16);
    let recorder = Recorder {
        seen,
        streams: Default::default(),
        close_first_after: 3,
    };
    let server =
        tonic::transport::Server::builder().add_service(PeerCommunicationServer::new(recorder));
    let (channel, url) = serve(server).await;
    let (answers, mut reports) = mpsc::channel(8);
    let mut links = links(Duration::from_secs(5), answers);
    let peer: PeerId = "peer".parse().unwrap();
    let digest = GossipMessage::Digest {
        range: sorcha_peer_core::gossip::PrefixRange::FULL,
        prefixes: vec![],
        recent: None,
    };
    links
        .transmit(&peer, Some((channel, url)), job(9, Via::Unary, digest))
        .unwrap();
    let outcome = answer(&mut reports, |a| match a {
        Answer::Transmitted {
            ticket, outcome, ..
        } => Some((ticket, outcome)),
        _ => None,
    })
    .await;
    assert_eq!(outcome, (9, Outcome::Refused));
}

/// A peer without `PeerCommunication` (as Sorcha's C# peers): every call UNIMPLEMENTED, counted.
struct Unserved(Arc<std::sync::atomic::AtomicUsize>);

#[tonic::async_trait]
impl PeerCommunication for Unserved {
    async fn send_message(&self, _: Request<PeerMessage>) -> Result<Response<MessageAck>, Status> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Err(Status::unimplemented("Service is unimplemented."))
    }

    type StreamStream = Pin<Box<dyn Stream<Item = Result<PeerMessage, Status>> + Send>>;

    async fn stream(
        &self,
        _: Request<tonic::Streaming<PeerMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Err(Status::unimplemented("Service is unimplemented."))
    }
}

#[tokio::test]
async fn a_refused_service_is_called_once_and_notifications_name_the_origin() {
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (seen, mut notifications) = mpsc::channel(8);
    let server = tonic::transport::Server::builder()
        .add_service(PeerCommunicationServer::new(Unserved(calls.clone())))
        .add_service(TransactionDistributionServer::new(SorchaPeer(seen)));
    let (channel, url) = serve(server).await;
    let (answers, mut reports) = mpsc::channel(16);
    let mut links = links(Duration::from_secs(5), answers);
    let peer: PeerId = "node_0123456789abcdef0123456789abcdef".parse().unwrap();
    let mut open = Some((channel, url));
    for ticket in 1..=3 {
        links
            .transmit(
                &peer,
                open.take(),
                job(ticket, Via::Stream, announce(ticket as u8)),
            )
            .unwrap();
    }
    for _ in 1..=3 {
        let outcome = answer(&mut reports, |a| match a {
            Answer::Transmitted { outcome, .. } => Some(outcome),
            _ => None,
        })
        .await;
        assert_eq!(outcome, Outcome::Refused);
    }
    assert_eq!(
        calls.load(Ordering::Relaxed),
        1,
        "only the first job called"
    );

    let hash = TxHash::of(b"from afar");
    let origin: PeerId = "node_ffffffffffffffffffffffffffffffff".parse().unwrap();
    links.origins.lock().unwrap().note(hash, origin.clone());
    let entry = AnnounceEntry {
        id: hash.id(),
        hash: Some(hash),
        size: 9,
        register_id: None,
        hops: 2,
    };
    let notify = Job {
        ticket: 4,
        via: Via::Unary,
        what: What::Notify(vec![entry]),
    };
    links.transmit(&peer, None, notify).unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), notifications.recv())
        .await
        .expect("notified in time")
        .expect("a notification");
    assert_eq!(
        got.sender_peer_id,
        origin.as_str(),
        "the origin, as C# fills it"
    );
    assert!(
        got.timestamp < 100_000_000_000,
        "seconds: {}",
        got.timestamp
    );
}

fn announce(k: u8) -> GossipMessage {
    let hash = TxHash::of(&[k]);
    GossipMessage::Announce {
        entries: vec![AnnounceEntry {
            id: hash.id(),
            hash: Some(hash),
            size: 1,
            register_id: None,
            hops: 1,
        }],
    }
}
