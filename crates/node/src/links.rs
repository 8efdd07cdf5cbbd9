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
//! `GOSSIP_FETCH` names up to [`MAX_FETCH_BATCH`] hashes and the peer answers each with a
//! `TRANSACTION_RESPONSE` on the same stream, which the stream's reader hands to the actor as
//! fetch results. A batch that cannot be sent fails its hashes at once, so the gossip core
//! moves to the next announcer instead of waiting for its timeout. Links are bounded in number:
//! the least recently used one is closed (its worker stopped, its queue counted as dropped).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use prost::Message;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sorcha_peer_core::backoff::{CallKind, ErrorClass, RetryDecision, RetryPolicy};
use sorcha_peer_core::gossip::{AnnounceEntry, FetchFailure, GossipMessage};
use sorcha_peer_core::model::{PeerId, Protocol, TxHash, TxId};
use sorcha_peer_core::sendqueue::{Lane, SendQueue, SendQueueConfig};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::actor::now;
use crate::grpc::communication::STREAM_HEARTBEAT;
use crate::metrics::{Metrics, message_kind, wire_len};
use crate::outbound::Answer;
use crate::proto::communication::peer_communication_client::PeerCommunicationClient;
use crate::proto::communication::{MessageType, PeerMessage};
use crate::proto::transaction::TransactionResponse;
use crate::proto::transaction::transaction_distribution_client::TransactionDistributionClient;
use crate::rest::client::RestClient;
use crate::wire::{MAX_FETCH_BATCH, compact, to_fetch_message, to_notification, to_peer_message};

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
        link.used = Instant::now();
        let size = 72 * ids.len();
        let pushed = link
            .queue
            .lock()
            .is_ok_and(|mut q| q.push(Lane::Control, Outgoing::Fetch(ids), size).is_ok());
        if pushed {
            link.wake.notify_one();
        }
        pushed
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
        link.used = Instant::now();
        let (lane, size) = lane_of(&message);
        let item = match message {
            GossipMessage::Announce { entries } if !speaks_gossip => Outgoing::Notify(entries),
            GossipMessage::Push { entry, .. } if !speaks_gossip => Outgoing::Notify(vec![entry]),
            message => Outgoing::Gossip(message),
        };
        let pushed = link
            .queue
            .lock()
            .map_err(|_| ())
            .and_then(|mut q| q.push(lane, item, size).map_err(|_| ()));
        match pushed {
            Ok(()) => link.wake.notify_one(),
            Err(()) => self.drop_message(lane_name(lane)),
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
/// may wait.
fn lane_of(message: &GossipMessage) -> (Lane, usize) {
    let lane = match message {
        GossipMessage::Digest { .. } | GossipMessage::DigestReply { .. } => Lane::Control,
        GossipMessage::Announce { .. } => Lane::Announce,
        GossipMessage::Push { .. } => Lane::Body,
    };
    (lane, message.approx_wire_len())
}

fn lane_name(lane: Lane) -> &'static str {
    match lane {
        Lane::Control => "queue_full_control",
        Lane::Announce => "queue_full_announce",
        Lane::Body => "queue_full_body",
    }
}

struct Worker {
    peer: PeerId,
    self_id: PeerId,
    queue: Arc<Mutex<SendQueue<Outgoing>>>,
    wake: Arc<Notify>,
    client: PeerCommunicationClient<Channel>,
    /// For Sorcha's `NotifyTransaction`.
    transactions: TransactionDistributionClient<Channel>,
    stream_state: Arc<StreamState>,
    rest: RestClient,
    /// `http://host:port` of the peer, for REST.
    base: String,
    /// The best transport the peer offers.
    preferred: Mode,
    /// The transport in use.
    mode: Mode,
    downgraded_at: Option<Instant>,
    stream: Option<OpenStream>,
    timeout: Duration,
    retry: RetryPolicy,
    rng: ChaCha8Rng,
    metrics: Arc<Metrics>,
    answers: mpsc::Sender<Answer>,
}

/// Our side of an open stream, and whether the peer's side still shows signs of life.
struct OpenStream {
    tx: mpsc::Sender<PeerMessage>,
    alive: Arc<AtomicBool>,
    /// Pulls asked on this stream and not answered yet; failed at once if the stream ends.
    asked: Asked,
}

/// Pulls outstanding on one stream, shared by the worker and the stream's reader.
type Asked = Arc<Mutex<HashSet<TxId>>>;

/// Outstanding pulls remembered per stream; past it a pull still works, but if the stream
/// breaks it waits for the gossip core's fetch timeout instead of failing at once.
const MAX_ASKED: usize = 4 * MAX_FETCH_BATCH;

/// Sends what the link's queue holds, one message at a time, each with a deadline.
async fn drain(mut w: Worker) {
    let mut reported: Option<Mode> = None;
    loop {
        let next = w.queue.lock().ok().and_then(|mut q| q.pop());
        let message = match next {
            Some((_, Outgoing::Gossip(message))) => message,
            Some((_, Outgoing::Notify(entries))) => {
                let ok = notify(&mut w, &entries).await;
                let outcome = Answer::Outcome {
                    peer: w.peer.clone(),
                    ok,
                };
                if w.answers.send(outcome).await.is_err() {
                    return;
                }
                continue;
            }
            Some((_, Outgoing::Fetch(ids))) => {
                if !fetch(&mut w, ids).await {
                    return; // The actor is gone: shutting down.
                }
                continue;
            }
            None => {
                w.wake.notified().await;
                continue;
            }
        };
        let wire = to_peer_message(&message, &w.self_id, Some(&w.peer), now());
        let mut backoff = w.retry.backoff();
        let sent = loop {
            if let Some(bytes) = send(&mut w, wire.clone()).await {
                break Some(bytes);
            }
            w.metrics.connection_errors_total.add(1, &[]);
            let class = ErrorClass::Unavailable;
            match w
                .retry
                .decide(class, CallKind::Idempotent, &mut backoff, &mut w.rng)
            {
                RetryDecision::RetryAfter(delay) => tokio::time::sleep(delay).await,
                RetryDecision::GiveUp(_) => break None,
            }
        };
        if let Some(bytes) = sent {
            w.metrics
                .record_sent(message_kind(wire.message_type), bytes);
        }
        let ok = sent.is_some();
        let mut answers = vec![Answer::Outcome {
            peer: w.peer.clone(),
            ok,
        }];
        if ok && reported != Some(w.mode) {
            reported = Some(w.mode);
            answers.push(Answer::Protocol {
                peer: w.peer.clone(),
                protocol: w.mode.protocol(),
            });
        }
        for answer in answers {
            if w.answers.send(answer).await.is_err() {
                return; // The actor is gone: shutting down.
            }
        }
    }
}

/// Announces `entries` the way a Sorcha peer understands: one `NotifyTransaction` each (the
/// REST equivalent for a REST-only peer). True if every one was delivered.
async fn notify(w: &mut Worker, entries: &[AnnounceEntry]) -> bool {
    let mut all = true;
    for entry in entries {
        let Some(notification) = to_notification(entry, &w.self_id, now()) else {
            // The core names the whole hash in every entry it sends; one without it cannot be
            // told to a Sorcha peer.
            w.metrics
                .gossip_dropped_total
                .add(1, &[KeyValue::new("kind", "notify_without_hash")]);
            continue;
        };
        let bytes = wire_len(&notification);
        let sent = if w.mode == Mode::Rest {
            w.rest.notify(&w.base, &notification).await.is_ok()
        } else {
            let call = w.transactions.notify_transaction(notification);
            matches!(tokio::time::timeout(w.timeout, call).await, Ok(Ok(_)))
        };
        if sent {
            w.metrics.record_sent("notify", bytes);
        } else {
            w.metrics.connection_errors_total.add(1, &[]);
            all = false;
        }
    }
    all
}

/// Asks the peer for `ids` on the stream; if that cannot be done, fails them at once so the
/// gossip core tries other announcers. False when the actor is gone.
async fn fetch(w: &mut Worker, ids: Vec<TxId>) -> bool {
    let wire = to_fetch_message(&ids, &w.self_id, &w.peer, now());
    let sent = match w.mode {
        Mode::Stream => stream_send(w, wire).await,
        Mode::Unary | Mode::Rest => StreamSend::Failed,
    };
    if let StreamSend::Sent(bytes) = sent {
        w.metrics.record_sent("fetch", bytes);
        // Noted after the send: an answer faster than this leaves its id behind, and if the
        // stream then breaks the core is told of a failure for a transaction it no longer
        // waits for, which it ignores.
        if let Some(Ok(mut asked)) = w.stream.as_ref().map(|s| s.asked.lock()) {
            let room = MAX_ASKED.saturating_sub(asked.len());
            asked.extend(ids.into_iter().take(room));
        }
        return true;
    }
    w.metrics.connection_errors_total.add(1, &[]);
    for id in ids {
        let failed = Answer::Fetched {
            from: w.peer.clone(),
            id,
            result: Err(FetchFailure::Unreachable),
        };
        if w.answers.send(failed).await.is_err() {
            return false;
        }
    }
    true
}

/// Sends one message over the link's transport, downgrading a refused stream to unary; the
/// bytes it took ([`wire_len`]) if it went.
async fn send(w: &mut Worker, wire: PeerMessage) -> Option<u64> {
    if w.mode == Mode::Unary
        && w.preferred == Mode::Stream
        && w.downgraded_at
            .is_some_and(|at| at.elapsed() > REPROBE_AFTER)
    {
        w.mode = Mode::Stream;
    }
    match w.mode {
        Mode::Rest => {
            let bytes = wire_len(&wire);
            w.rest.message(&w.base, &wire).await.ok().map(|()| bytes)
        }
        Mode::Unary => unary(w, wire).await,
        Mode::Stream => match stream_send(w, wire).await {
            StreamSend::Sent(bytes) => Some(bytes),
            StreamSend::Failed => None,
            StreamSend::Refused(wire) => {
                tracing::debug!(peer = %w.peer, "peer refuses the stream; using unary calls");
                w.mode = Mode::Unary;
                w.downgraded_at = Some(Instant::now());
                unary(w, wire).await
            }
        },
    }
}

/// A unary call has no earlier message: it carries the whole envelope.
async fn unary(w: &mut Worker, wire: PeerMessage) -> Option<u64> {
    let bytes = wire_len(&wire);
    let call = tokio::time::timeout(w.timeout, w.client.send_message(wire)).await;
    matches!(call, Ok(Ok(_))).then_some(bytes)
}

enum StreamSend {
    /// Queued on the stream, taking this many bytes.
    Sent(u64),
    Failed,
    /// The peer does not serve the stream; the message comes back to go another way.
    Refused(PeerMessage),
}

/// Sends `wire` on the link's stream, opening one if there is none. The first message of a
/// stream goes whole: the peer binds its sender to the stream. The later ones go compact
/// ([`compact`]).
async fn stream_send(w: &mut Worker, wire: PeerMessage) -> StreamSend {
    let usable = w
        .stream
        .as_ref()
        .is_some_and(|s| s.alive.load(Ordering::Relaxed) && !s.tx.is_closed());
    let first = !usable;
    if first {
        w.stream = None;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let opened =
            tokio::time::timeout(w.timeout, w.client.stream(ReceiverStream::new(rx))).await;
        match opened {
            Ok(Ok(response)) => {
                let alive = Arc::new(AtomicBool::new(true));
                let asked = Asked::default();
                let state = &w.stream_state;
                let generation = state.generation.fetch_add(1, Ordering::Relaxed) + 1;
                state.open.store(true, Ordering::Relaxed);
                tokio::spawn(watch_stream(
                    response.into_inner(),
                    Reader {
                        peer: w.peer.clone(),
                        alive: alive.clone(),
                        asked: asked.clone(),
                        state: state.clone(),
                        generation,
                        // The peer's heartbeats come every STREAM_HEARTBEAT whatever our
                        // timeout: with a 1 s peer timeout a 3 s bound closed live streams,
                        // and the pulls answered on them, every few seconds.
                        silence: (w.timeout * 3).max(STREAM_HEARTBEAT * 3),
                        answers: w.answers.clone(),
                        metrics: w.metrics.clone(),
                    },
                ));
                w.stream = Some(OpenStream { tx, alive, asked });
            }
            Ok(Err(status)) if status.code() == tonic::Code::Unimplemented => {
                return StreamSend::Refused(wire);
            }
            _ => return StreamSend::Failed,
        }
    }
    let Some(stream) = &w.stream else {
        return StreamSend::Failed;
    };
    let wire = if first { wire } else { compact(wire) };
    let bytes = wire_len(&wire);
    match tokio::time::timeout(w.timeout, stream.tx.send(wire)).await {
        Ok(Ok(())) => StreamSend::Sent(bytes),
        _ => {
            // Flow control held us past the deadline, or the stream is gone: start afresh.
            w.stream = None;
            StreamSend::Failed
        }
    }
}

/// The reader of one stream's inbound side.
struct Reader {
    peer: PeerId,
    /// This stream's liveness, read by the worker before each send.
    alive: Arc<AtomicBool>,
    asked: Asked,
    state: Arc<StreamState>,
    generation: u64,
    silence: Duration,
    answers: mpsc::Sender<Answer>,
    metrics: Arc<Metrics>,
}

/// Reads the peer's side of a stream: its heartbeats, and the answers to our `GOSSIP_FETCH`es,
/// which go to the actor as fetch results (the gossip core checks each body's hash and ignores
/// what it did not ask this peer for). A stream silent for `silence` or broken is marked dead,
/// and the link opens a new one on its next message. No message here needs its sender: the
/// stream is to `r.peer` (answers come without sender, recipient and timestamp).
async fn watch_stream(mut inbound: tonic::Streaming<PeerMessage>, r: Reader) {
    loop {
        let message = match tokio::time::timeout(r.silence, inbound.message()).await {
            Ok(Ok(Some(message))) => message,
            _ => break,
        };
        if message.message_type != MessageType::TransactionResponse as i32 {
            continue;
        }
        r.metrics.record_received("body", wire_len(&message));
        // A found body comes without its hash: its id is the start of the body's SHA-256. (The
        // gossip core still checks that it asked this peer for that id.) A missing one names
        // the id, or the whole hash, asked for.
        let answer = TransactionResponse::decode(message.payload.as_slice())
            .ok()
            .and_then(|a| {
                let id = if a.found && a.transaction_hash.is_empty() {
                    TxHash::of(&a.transaction_data).id()
                } else {
                    a.transaction_hash.parse::<TxId>().ok()?
                };
                Some((id, a))
            });
        let Some((id, answer)) = answer else {
            r.metrics
                .gossip_dropped_total
                .add(1, &[KeyValue::new("kind", "bad_fetch_answer")]);
            continue;
        };
        let result = if answer.found {
            Ok(answer.transaction_data)
        } else {
            Err(FetchFailure::NotFound)
        };
        if let Ok(mut asked) = r.asked.lock() {
            asked.remove(&id);
        }
        let fetched = Answer::Fetched {
            from: r.peer.clone(),
            id,
            result,
        };
        if r.answers.send(fetched).await.is_err() {
            return; // The actor is gone.
        }
    }
    r.alive.store(false, Ordering::Relaxed);
    if r.state.generation.load(Ordering::Relaxed) == r.generation {
        r.state.open.store(false, Ordering::Relaxed);
    }
    // Whatever was asked on this stream will not be answered: the core tries other
    // announcers now rather than at its fetch timeout.
    let unanswered: Vec<TxId> = r
        .asked
        .lock()
        .map(|mut asked| asked.drain().collect())
        .unwrap_or_default();
    for id in unanswered {
        let failed = Answer::Fetched {
            from: r.peer.clone(),
            id,
            result: Err(FetchFailure::Unreachable),
        };
        if r.answers.send(failed).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;

    use futures::Stream;
    use sorcha_peer_core::model::TxHash;
    use tokio_stream::wrappers::TcpListenerStream;
    use tonic::{Request, Response, Status};

    use super::*;
    use crate::proto::communication::MessageAck;
    use crate::proto::communication::peer_communication_server::{
        PeerCommunication, PeerCommunicationServer,
    };
    use crate::proto::transaction::transaction_distribution_server::{
        TransactionDistribution, TransactionDistributionServer,
    };
    use crate::proto::transaction::{
        NotificationAck, TransactionChunk, TransactionNotification, TransactionRequest,
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
