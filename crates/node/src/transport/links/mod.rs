//! One outgoing link per peer: a bounded send queue with priority lanes (control first, then
//! announcements, then bodies) drained by that peer's own worker task, so a slow or stuck peer
//! fills and drops only its own queue and never delays the others.
//!
//! A link carries messages over the best transport the peer speaks: one long-lived
//! `PeerCommunication.Stream`, else unary `SendMessage`, else the REST fallback. A stream that
//! the peer refuses downgrades the link to unary, and the stream is tried again every
//! [`REPROBE_AFTER`]; a stream that breaks or falls silent (no heartbeat within three peer
//! timeouts) is re-opened on the next message.
//!
//! The actor pushes; the worker pops and sends with a deadline and reports each outcome back
//! (for the peer's circuit breaker) and the transport that worked.
//!
//! A peer that announces to us with Sorcha's `NotifyTransaction` and has never sent us a
//! `GOSSIP_*` message (a Sorcha peer) gets each announcement the same way, unary (REST: `POST
//! /api/v1/transactions/notify`), as the wire contract requires; digests still go as they are,
//! so that a sorcha-peer node can show it speaks them. A Sorcha peer that never announces is
//! not recognised and gets `GOSSIP_*` messages it ignores: adverts do not say yet which
//! extensions a peer speaks.
//!
//! Pulls ride the stream too, with peers known to speak our gossip extensions: a
//! `GOSSIP_FETCH` names up to [`MAX_FETCH_BATCH`] transaction ids and the peer answers each
//! with a `TRANSACTION_RESPONSE` on the same stream, which the stream's reader hands to the
//! actor as fetch results. A batch that cannot be sent fails its ids at once, so the gossip core
//! moves to the next announcer instead of waiting for its timeout. Links are bounded in number:
//! the least recently used one is closed (its worker stopped, its queue counted as dropped).
//!
//! Here: the registry of links ([`Links`]) and their queues; `worker.rs`: each link's worker
//! and its stream's reader.

mod worker;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sorcha_peer_core::backoff::RetryPolicy;
use sorcha_peer_core::gossip::{AnnounceEntry, GossipMessage};
use sorcha_peer_core::model::{PeerId, Protocol, TxId};
use sorcha_peer_core::sendqueue::{Lane, SendQueue, SendQueueConfig};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::telemetry::Metrics;
use crate::transport::outbound::Answer;
use crate::transport::rest::client::RestClient;
use crate::wire::MAX_FETCH_BATCH;
use crate::wire::proto::communication::peer_communication_client::PeerCommunicationClient;
use crate::wire::proto::transaction::transaction_distribution_client::TransactionDistributionClient;
use worker::{Worker, drain};

/// Links open at most: every active and recently contacted peer, with room to spare.
pub const MAX_LINKS: usize = 512;

/// A link downgraded from the stream tries it again after this.
pub const REPROBE_AFTER: Duration = Duration::from_secs(600);

/// Messages buffered in an open stream before HTTP/2 flow control pushes back.
const STREAM_BUFFER: usize = 64;

/// How a link reaches its peer, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Stream,
    Unary,
    Rest,
}

impl Mode {
    pub fn protocol(self) -> Protocol {
        match self {
            Mode::Stream => Protocol::GrpcStream,
            Mode::Unary => Protocol::Grpc,
            Mode::Rest => Protocol::Rest,
        }
    }
}

/// A link's queue: a few seconds of announcements at high rates, a handful of pushed bodies.
fn queue_config() -> SendQueueConfig {
    SendQueueConfig {
        control_capacity: 64,
        announce_capacity: 1024,
        body_capacity: 32,
        max_bytes: 4 * 1024 * 1024,
        fairness_interval: 8,
    }
}

/// What a link carries.
#[derive(Debug)]
enum Outgoing {
    Gossip(GossipMessage),
    /// Announcements for a peer that speaks only Sorcha's contract.
    Notify(Vec<AnnounceEntry>),
    /// Bodies to pull over the stream.
    Fetch(Vec<TxId>),
}

/// Whether a link's stream is open, shared by its worker and the stream's reader.
#[derive(Default)]
struct StreamState {
    open: AtomicBool,
    /// Which stream `open` is about: a reader of an older stream must not close a newer one.
    generation: AtomicU64,
}

struct Link {
    queue: Arc<Mutex<SendQueue<Outgoing>>>,
    wake: Arc<Notify>,
    worker: JoinHandle<()>,
    used: Instant,
    stream: Arc<StreamState>,
}

impl Link {
    /// Queues `item` and wakes the worker; false when its lane is full.
    fn enqueue(&mut self, lane: Lane, item: Outgoing, size: usize) -> bool {
        self.used = Instant::now();
        let pushed = self
            .queue
            .lock()
            .is_ok_and(|mut q| q.push(lane, item, size).is_ok());
        if pushed {
            self.wake.notify_one();
        }
        pushed
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.worker.abort();
    }
}

pub struct Links {
    links: HashMap<PeerId, Link>,
    rest: RestClient,
    /// Gossip messages are idempotent (receivers deduplicate by hash), so a failed send is
    /// retried with exponential backoff and jitter, up to `max_retries`.
    retry: RetryPolicy,
    self_id: PeerId,
    timeout: Duration,
    /// Largest message read from a peer's side of a stream (a body and some framing).
    max_message: usize,
    metrics: Arc<Metrics>,
    answers: mpsc::Sender<Answer>,
}

impl Links {
    pub fn new(
        self_id: PeerId,
        timeout: Duration,
        max_message: usize,
        metrics: Arc<Metrics>,
        answers: mpsc::Sender<Answer>,
        rest: RestClient,
        retry: RetryPolicy,
    ) -> Self {
        Self {
            links: HashMap::new(),
            rest,
            retry,
            self_id,
            timeout,
            max_message,
            metrics,
            answers,
        }
    }

    /// Whether `peer`'s link has an open stream (pulls can ride it).
    pub fn stream_open(&self, peer: &PeerId) -> bool {
        self.links
            .get(peer)
            .is_some_and(|l| l.stream.open.load(Ordering::Relaxed))
    }

    /// Queues a pull of `ids` (at most [`MAX_FETCH_BATCH`]) from `peer` on its stream;
    /// false when the link is gone or its control lane is full.
    pub fn fetch(&mut self, peer: &PeerId, ids: Vec<TxId>) -> bool {
        debug_assert!(ids.len() <= MAX_FETCH_BATCH, "the caller splits batches");
        let Some(link) = self.links.get_mut(peer) else {
            return false;
        };
        // An id is 16 bytes and its field's tag and length two more.
        let size = (TxId::LEN + 2) * ids.len();
        link.enqueue(Lane::Control, Outgoing::Fetch(ids), size)
    }

    pub fn contains(&self, peer: &PeerId) -> bool {
        self.links.contains_key(peer)
    }

    /// Queues `message` for `to`, opening its link (over `channel`, in `mode`) if it has none.
    /// `speaks_gossip`: the peer understands the `GOSSIP_*` messages; if not, announcements
    /// (and pushes) become Sorcha notifications.
    pub fn push(
        &mut self,
        to: &PeerId,
        message: GossipMessage,
        open: Option<(Channel, String, Mode)>,
        speaks_gossip: bool,
    ) {
        if !self.links.contains_key(to) {
            let Some((channel, base, mode)) = open else {
                self.drop_message("unaddressable");
                return;
            };
            if self.links.len() >= MAX_LINKS {
                self.close_least_recent();
            }
            let link = self.open(to.clone(), channel, base, mode);
            self.links.insert(to.clone(), link);
        }
        let link = self
            .links
            .get_mut(to)
            .expect("invariant: inserted above when missing");
        let (lane, size) = lane_of(&message);
        let item = match message {
            GossipMessage::Announce { entries } if !speaks_gossip => Outgoing::Notify(entries),
            GossipMessage::Push { entry, .. } if !speaks_gossip => Outgoing::Notify(vec![entry]),
            message => Outgoing::Gossip(message),
        };
        if !link.enqueue(lane, item, size) {
            self.drop_message(lane_name(lane));
        }
    }

    /// Closes the link to `peer` (it was forgotten, or its circuit opened).
    pub fn close(&mut self, peer: &PeerId) {
        if let Some(link) = self.links.remove(peer) {
            self.count_queued_as_dropped(&link);
        }
    }

    pub fn len(&self) -> usize {
        self.links.len()
    }

    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    fn open(&self, peer: PeerId, channel: Channel, base: String, mode: Mode) -> Link {
        let queue = Arc::new(Mutex::new(
            SendQueue::new(queue_config()).expect("invariant: the link queue config is valid"),
        ));
        let wake = Arc::new(Notify::new());
        let stream = Arc::new(StreamState::default());
        let worker = tokio::spawn(drain(Worker {
            peer,
            self_id: self.self_id.clone(),
            queue: queue.clone(),
            wake: wake.clone(),
            client: PeerCommunicationClient::new(channel.clone())
                .max_decoding_message_size(self.max_message),
            transactions: TransactionDistributionClient::new(channel),
            stream_state: stream.clone(),
            rest: self.rest.clone(),
            base,
            preferred: mode,
            mode,
            downgraded_at: None,
            stream: None,
            timeout: self.timeout,
            retry: self.retry,
            rng: ChaCha8Rng::seed_from_u64(rand::random()),
            metrics: self.metrics.clone(),
            answers: self.answers.clone(),
        }));
        Link {
            queue,
            wake,
            worker,
            used: Instant::now(),
            stream,
        }
    }

    fn close_least_recent(&mut self) {
        let oldest = self
            .links
            .iter()
            .min_by_key(|(_, l)| l.used)
            .map(|(id, _)| id.clone());
        if let Some(id) = oldest {
            self.close(&id);
            self.metrics.channels_evicted_total.add(1, &[]);
        }
    }

    fn count_queued_as_dropped(&self, link: &Link) {
        let queued = link.queue.lock().map(|q| q.len()).unwrap_or(0);
        if queued > 0 {
            self.metrics
                .gossip_dropped_total
                .add(queued as u64, &[KeyValue::new("kind", "link_closed")]);
        }
    }

    fn drop_message(&self, kind: &'static str) {
        self.metrics
            .gossip_dropped_total
            .add(1, &[KeyValue::new("kind", kind)]);
    }
}

/// Digests steer repairs (control, as do pulls); announcements are the bulk; pushed bodies
/// may wait. A message takes the bytes of its lane's budget that it will take on the stream.
fn lane_of(message: &GossipMessage) -> (Lane, usize) {
    let lane = match message {
        GossipMessage::Digest { .. } | GossipMessage::DigestReply { .. } => Lane::Control,
        GossipMessage::Announce { .. } => Lane::Announce,
        GossipMessage::Push { .. } => Lane::Body,
    };
    (lane, sorcha_peer_wire::size::gossip_len(message))
}

fn lane_name(lane: Lane) -> &'static str {
    match lane {
        Lane::Control => "queue_full_control",
        Lane::Announce => "queue_full_announce",
        Lane::Body => "queue_full_body",
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;

    use futures::Stream;
    use sorcha_peer_core::gossip::FetchFailure;
    use sorcha_peer_core::model::TxHash;
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
        async fn send_message(
            &self,
            _: Request<PeerMessage>,
        ) -> Result<Response<MessageAck>, Status> {
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
        async fn send_message(
            &self,
            _: Request<PeerMessage>,
        ) -> Result<Response<MessageAck>, Status> {
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
            RetryPolicy::default(),
        )
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
        let (answers, _outcomes) = mpsc::channel(64);
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
        let open = Some((channel, url, Mode::Stream));
        links.push(&peer, announce(1), open, true);
        let (stream, first) = next().await;
        assert_eq!(stream, 0);
        links.push(&peer, digest, None, true);
        assert!(
            links.fetch(&peer, vec![TxHash::of(b"wanted").id()]),
            "queued"
        );
        let mut later = vec![next().await, next().await];
        // The first stream has ended; the next message opens a second one.
        let closed = async {
            while links.stream_open(&peer) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), closed)
            .await
            .expect("the first stream is seen to end");
        links.push(&peer, announce(2), None, true);
        let (stream, first_again) = next().await;
        assert_eq!(stream, 1, "a new stream");
        links.push(&peer, announce(3), None, true);
        later.push(next().await);

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
        let open = Some((channel, url, Mode::Stream));
        links.push(&peer, digest, open, true);
        let opened = async {
            while !links.stream_open(&peer) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), opened)
            .await
            .expect("the stream opens");
        let wanted = TxHash::of(b"wanted").id();
        assert!(links.fetch(&peer, vec![wanted]), "queued");
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
        let open = Some((channel, url, Mode::Unary));
        links.push(&peer, message, open, false);

        let got = tokio::time::timeout(Duration::from_secs(10), notifications.recv())
            .await
            .expect("notified in time")
            .expect("a notification");
        assert_eq!(got.transaction_hash, TxHash::of(b"tx").to_string());
        assert_eq!(got.sender_peer_id, "rust-node");
        assert_eq!((got.transaction_size, got.register_id.as_str()), (2, "reg"));
        let outcome = outcomes.recv().await.expect("an outcome");
        assert!(
            matches!(outcome, Answer::Outcome { ok: true, .. }),
            "{outcome:?}"
        );
    }
}
