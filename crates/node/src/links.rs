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
//! (for the peer's circuit breaker) and the transport that worked. Links are bounded in number:
//! the least recently used one is closed (its worker stopped, its queue counted as dropped).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sorcha_peer_core::backoff::{CallKind, ErrorClass, RetryDecision, RetryPolicy};
use sorcha_peer_core::gossip::GossipMessage;
use sorcha_peer_core::model::{PeerId, Protocol};
use sorcha_peer_core::sendqueue::{Lane, SendQueue, SendQueueConfig};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::actor::now;
use crate::metrics::Metrics;
use crate::outbound::Answer;
use crate::proto::communication::PeerMessage;
use crate::proto::communication::peer_communication_client::PeerCommunicationClient;
use crate::rest::client::RestClient;
use crate::wire::to_peer_message;

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

struct Link {
    queue: Arc<Mutex<SendQueue<GossipMessage>>>,
    wake: Arc<Notify>,
    worker: JoinHandle<()>,
    used: Instant,
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
    metrics: Arc<Metrics>,
    answers: mpsc::Sender<Answer>,
}

impl Links {
    pub fn new(
        self_id: PeerId,
        timeout: Duration,
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
            metrics,
            answers,
        }
    }

    pub fn contains(&self, peer: &PeerId) -> bool {
        self.links.contains_key(peer)
    }

    /// Queues `message` for `to`, opening its link (over `channel`, in `mode`) if it has none.
    pub fn push(
        &mut self,
        to: &PeerId,
        message: GossipMessage,
        open: Option<(Channel, String, Mode)>,
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
        let pushed = link
            .queue
            .lock()
            .map_err(|_| ())
            .and_then(|mut q| q.push(lane, message, size).map_err(|_| ()));
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
        let worker = tokio::spawn(drain(Worker {
            peer,
            self_id: self.self_id.clone(),
            queue: queue.clone(),
            wake: wake.clone(),
            client: PeerCommunicationClient::new(channel),
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

/// Digests steer repairs (control); announcements are the bulk; pushed bodies may wait.
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
    queue: Arc<Mutex<SendQueue<GossipMessage>>>,
    wake: Arc<Notify>,
    client: PeerCommunicationClient<Channel>,
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
}

/// Sends what the link's queue holds, one message at a time, each with a deadline.
async fn drain(mut w: Worker) {
    let mut reported: Option<Mode> = None;
    loop {
        let next = w.queue.lock().ok().and_then(|mut q| q.pop());
        let Some((_, message)) = next else {
            w.wake.notified().await;
            continue;
        };
        let wire = to_peer_message(&message, &w.self_id, Some(&w.peer), now());
        let bytes = wire.payload.len() as u64;
        let mut backoff = w.retry.backoff();
        let ok = loop {
            if send(&mut w, wire.clone()).await {
                break true;
            }
            w.metrics.connection_errors_total.add(1, &[]);
            let class = ErrorClass::Unavailable;
            match w
                .retry
                .decide(class, CallKind::Idempotent, &mut backoff, &mut w.rng)
            {
                RetryDecision::RetryAfter(delay) => tokio::time::sleep(delay).await,
                RetryDecision::GiveUp(_) => break false,
            }
        };
        if ok {
            w.metrics
                .record_sent(crate::outbound::message_kind(&message), bytes);
        }
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

/// Sends one message over the link's transport, downgrading a refused stream to unary.
async fn send(w: &mut Worker, wire: PeerMessage) -> bool {
    if w.mode == Mode::Unary
        && w.preferred == Mode::Stream
        && w.downgraded_at
            .is_some_and(|at| at.elapsed() > REPROBE_AFTER)
    {
        w.mode = Mode::Stream;
    }
    match w.mode {
        Mode::Rest => w.rest.message(&w.base, &wire).await.is_ok(),
        Mode::Unary => unary(w, wire).await,
        Mode::Stream => match stream_send(w, wire).await {
            StreamSend::Sent => true,
            StreamSend::Failed => false,
            StreamSend::Refused(wire) => {
                tracing::debug!(peer = %w.peer, "peer refuses the stream; using unary calls");
                w.mode = Mode::Unary;
                w.downgraded_at = Some(Instant::now());
                unary(w, wire).await
            }
        },
    }
}

async fn unary(w: &mut Worker, wire: PeerMessage) -> bool {
    matches!(
        tokio::time::timeout(w.timeout, w.client.send_message(wire)).await,
        Ok(Ok(_))
    )
}

enum StreamSend {
    Sent,
    Failed,
    /// The peer does not serve the stream; the message comes back to go another way.
    Refused(PeerMessage),
}

async fn stream_send(w: &mut Worker, wire: PeerMessage) -> StreamSend {
    let usable = w
        .stream
        .as_ref()
        .is_some_and(|s| s.alive.load(Ordering::Relaxed) && !s.tx.is_closed());
    if !usable {
        w.stream = None;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let opened =
            tokio::time::timeout(w.timeout, w.client.stream(ReceiverStream::new(rx))).await;
        match opened {
            Ok(Ok(response)) => {
                let alive = Arc::new(AtomicBool::new(true));
                tokio::spawn(watch_stream(
                    response.into_inner(),
                    alive.clone(),
                    w.timeout * 3,
                ));
                w.stream = Some(OpenStream { tx, alive });
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
    match tokio::time::timeout(w.timeout, stream.tx.send(wire)).await {
        Ok(Ok(())) => StreamSend::Sent,
        _ => {
            // Flow control held us past the deadline, or the stream is gone: start afresh.
            w.stream = None;
            StreamSend::Failed
        }
    }
}

/// Reads the peer's side of a stream (its heartbeats); a stream silent for `silence` or
/// broken is marked dead, and the link opens a new one on its next message.
async fn watch_stream(
    mut inbound: tonic::Streaming<PeerMessage>,
    alive: Arc<AtomicBool>,
    silence: Duration,
) {
    loop {
        match tokio::time::timeout(silence, inbound.message()).await {
            Ok(Ok(Some(_))) => continue,
            _ => {
                alive.store(false, Ordering::Relaxed);
                return;
            }
        }
    }
}
