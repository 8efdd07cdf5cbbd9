//! A link's worker: one attempt per job over the transport the core chose, each with a
//! deadline, and a report of how it went. No retries, no downgrades here: the core's link
//! machine decides those from the reports.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use sorcha_peer_core::gossip::{AnnounceEntry, GossipMessage};
use sorcha_peer_core::link::{Outcome, Pull, REPROBE_REFUSED, STREAM_WINDOW, Service, Via, What};
use sorcha_peer_core::model::{PeerId, TxId};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tracing::Instrument as _;

use super::reader::{Reader, watch_stream};
use super::{Job, Pushes};
use crate::clock::now;
use crate::handle::origins::SharedOrigins;
use crate::telemetry::Metrics;
use crate::transport::grpc::communication::STREAM_HEARTBEAT;
use crate::transport::grpc::transaction::CALLER_HEADER;
use crate::transport::outbound::Answer;
use crate::transport::rest::client::{RestClient, RestFailure};
use crate::wire::MAX_FETCH_BATCH;
use crate::wire::proto::communication::PeerMessage;
use crate::wire::proto::communication::peer_communication_client::PeerCommunicationClient;
use crate::wire::proto::transaction::transaction_distribution_client::TransactionDistributionClient;
use crate::wire::{ask_ack, compact, to_fetch_message, to_notification, to_peer_message};
use crate::wire::{message_kind, wire_len};

/// Messages buffered in an open stream before HTTP/2 flow control pushes back: the core's
/// stream window.
const STREAM_BUFFER: usize = STREAM_WINDOW;

/// Outstanding pulls remembered per stream; past it a pull still works, but if the stream
/// breaks it waits for the gossip core's fetch timeout instead of failing at once (counted as
/// `gossip_dropped_total{kind="asked_full"}`).
const MAX_ASKED: usize = 4 * MAX_FETCH_BATCH;

/// Pulls outstanding on one stream, shared by the worker and the stream's reader.
pub(super) type Asked = Arc<Mutex<HashSet<TxId>>>;

pub(super) struct Worker {
    pub(super) peer: PeerId,
    pub(super) self_id: PeerId,
    pub(super) client: PeerCommunicationClient<Channel>,
    /// For Sorcha's `NotifyTransaction`.
    pub(super) transactions: TransactionDistributionClient<Channel>,
    pub(super) rest: RestClient,
    /// `http://host:port` of the peer, for REST.
    pub(super) base: String,
    pub(super) stream: Option<OpenStream>,
    pub(super) generations: Arc<AtomicU64>,
    pub(super) timeout: Duration,
    pub(super) metrics: Arc<Metrics>,
    pub(super) answers: mpsc::Sender<Answer>,
    pub(super) origins: SharedOrigins,
    /// What the peer refused, and when: jobs handed over before the core heard of a refusal
    /// answer `Refused` without calling (the core holds a refusal for `REPROBE_REFUSED`).
    pub(super) refused: HashMap<Service, Instant>,
    pub(super) pushes: Pushes,
}

/// Our side of an open stream, and whether the peer's side still shows signs of life.
pub(super) struct OpenStream {
    tx: mpsc::Sender<PeerMessage>,
    alive: Arc<AtomicBool>,
    /// Pulls asked on this stream and not answered yet; failed at once if the stream ends.
    asked: Asked,
    /// Pushes we asked this peer to acknowledge on this stream: an acknowledgement of any
    /// other id is a claim we never asked for, and confirms nothing.
    acks: Asked,
}

/// Carries out the link's jobs in order, reporting each; ends when the link is closed (its
/// sender dropped) or the actor is gone.
pub(super) async fn run(mut w: Worker, mut jobs: mpsc::Receiver<Job>) {
    while let Some(Job { ticket, via, what }) = jobs.recv().await {
        let service = Service::of(via, &what);
        let span = job_span(&w.peer, via, &what);
        let outcome = if w.refuses(service) {
            Outcome::Refused
        } else {
            async {
                match what {
                    What::Gossip(message) => gossip(&mut w, via, &message).await,
                    What::Notify(entries) => notify(&mut w, via, &entries).await,
                    What::Fetch(pulls) => fetch(&mut w, via, &pulls).await,
                }
            }
            .instrument(span.clone())
            .await
        };
        span.record("outcome", tracing::field::debug(outcome));
        if outcome == Outcome::Refused {
            w.refused.entry(service).or_insert_with(Instant::now);
        }
        if matches!(outcome, Outcome::Failed | Outcome::Timeout) {
            w.metrics.connection_errors_total.add(1, &[]);
        }
        let peer = w.peer.clone();
        let report = Answer::Transmitted {
            peer,
            ticket,
            outcome,
        };
        if w.answers.send(report).await.is_err() {
            return; // The actor is gone: shutting down.
        }
    }
}

impl Worker {
    fn refuses(&mut self, service: Service) -> bool {
        match self.refused.get(&service) {
            Some(at) if at.elapsed() < REPROBE_REFUSED => true,
            Some(_) => {
                self.refused.remove(&service);
                false
            }
            None => false,
        }
    }
}

/// The span of a job that carries transactions (OTLP's `announce`, `push` and `pull`); none
/// for digests, prunes and grafts, which carry bookkeeping.
fn job_span(peer: &PeerId, via: Via, what: &What) -> tracing::Span {
    let outcome = tracing::field::Empty;
    match what {
        What::Gossip(GossipMessage::Announce { entries }) | What::Notify(entries) => {
            let transactions = entries.len();
            tracing::debug_span!("announce", %peer, ?via, transactions, outcome)
        }
        What::Gossip(GossipMessage::Push { .. }) => {
            tracing::debug_span!("push", %peer, ?via, transactions = 1, outcome)
        }
        What::Fetch(pulls) => {
            let transactions = pulls.len();
            tracing::debug_span!("pull", %peer, ?via, transactions, outcome)
        }
        What::Gossip(_) => tracing::Span::none(),
    }
}

/// One `GOSSIP_*` message over `via`, counted by kind once it went. A push is charged to the
/// upload budget first, and asks for an acknowledgement if its transaction waits in the
/// offline queue (a unary call's ack is one; on a stream the reader gets the `GOSSIP_ACK`).
async fn gossip(w: &mut Worker, via: Via, message: &GossipMessage) -> Outcome {
    let mut wire = to_peer_message(message, &w.self_id, Some(&w.peer), now());
    let kind = message_kind(wire.message_type);
    let mut asked = None;
    if let GossipMessage::Push { entry, .. } = message {
        if w.pushes.wants_ack(&entry.id) {
            ask_ack(&mut wire);
            asked = Some(entry.id);
        }
        w.pushes.upload.spend(wire_len(&wire)).await;
    }
    let sent = match via {
        Via::Stream => stream_send(w, wire, asked).await,
        Via::Unary => match unary(w, wire).await {
            Ok((bytes, received)) => {
                if let (Some(id), true) = (asked, received) {
                    w.pushes.acknowledged(&id);
                }
                Ok(bytes)
            }
            Err(outcome) => Err(outcome),
        },
        Via::Rest => {
            let bytes = wire_len(&wire);
            w.rest
                .message(&w.base, &wire)
                .await
                .map(|()| bytes)
                .map_err(rest_outcome)
        }
    };
    match sent {
        Ok(bytes) => {
            w.metrics.record_sent(kind, bytes);
            Outcome::Sent
        }
        Err(outcome) => outcome,
    }
}

/// Announces `entries` the way a Sorcha peer understands: one `NotifyTransaction` each (the
/// REST equivalent over REST; the stream has no such message, so a unary call). The first
/// failure, or `Sent` if every one was delivered.
async fn notify(w: &mut Worker, via: Via, entries: &[AnnounceEntry]) -> Outcome {
    let mut outcome = Outcome::Sent;
    for entry in entries {
        // Sorcha fills sender_peer_id with the origin: the peer that first announced it to
        // us if a Sorcha peer told us so, else us (we hold the body either way).
        let origin = entry.hash.and_then(|hash| {
            let origins = w.origins.lock().ok()?;
            origins.of(&hash).cloned()
        });
        let origin = origin.unwrap_or_else(|| w.self_id.clone());
        let Some(notification) = to_notification(entry, &origin, now()) else {
            // The core names the whole hash in every entry it sends; one without it cannot be
            // told to a Sorcha peer.
            w.metrics
                .gossip_dropped_total
                .add(1, &[KeyValue::new("kind", "notify_without_hash")]);
            continue;
        };
        let bytes = wire_len(&notification);
        let sent = if via == Via::Rest {
            w.rest
                .notify(&w.base, &notification)
                .await
                .map_err(rest_outcome)
        } else {
            let mut request = tonic::Request::new(notification);
            if let Ok(me) = w.self_id.as_str().parse() {
                // The pull goes to the caller: say who calls (sender_peer_id is the origin).
                request.metadata_mut().insert(CALLER_HEADER, me);
            }
            let call = w.transactions.notify_transaction(request);
            match tokio::time::timeout(w.timeout, call).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(status)) => Err(grpc_outcome(&status)),
                Err(_) => Err(Outcome::Timeout),
            }
        };
        match sent {
            Ok(()) => w.metrics.record_sent("notify", bytes),
            Err(failed) if outcome == Outcome::Sent => outcome = failed,
            Err(_) => {}
        }
    }
    outcome
}

/// Asks the peer for `pulls` in one `GOSSIP_FETCH` on the stream; the answers come back
/// through the stream's reader. The core hands out unary pulls (ticket 0) elsewhere and
/// batches only for the stream; a batch for another transport cannot be asked.
async fn fetch(w: &mut Worker, via: Via, pulls: &[Pull]) -> Outcome {
    if via != Via::Stream {
        return Outcome::Failed;
    }
    let ids: Vec<TxId> = pulls.iter().map(|p| p.id).collect();
    let first = match ensure_stream(w).await {
        Ok(first) => first,
        Err(outcome) => return outcome,
    };
    // Noted before the send, so an answer that beats this task back is found and removed by
    // the reader; unnoted if the send fails (the failure is reported once, below).
    let asked = w.stream.as_ref().map(|s| s.asked.clone());
    let noted = asked.as_ref().map_or(0, |asked| note_asked(w, asked, &ids));
    let wire = to_fetch_message(&ids, &w.self_id, &w.peer, now());
    match send_on_stream(w, wire, first).await {
        Ok(bytes) => {
            w.metrics.record_sent("fetch", bytes);
            Outcome::Sent
        }
        Err(outcome) => {
            if let Some(Ok(mut asked)) = asked.as_ref().map(|a| a.lock()) {
                for id in &ids[..noted] {
                    asked.remove(id);
                }
            }
            outcome
        }
    }
}

/// Notes `ids` as asked on the stream, as many as there is room for (the rest counted); how
/// many were noted (the first ones).
fn note_asked(w: &Worker, asked: &Asked, ids: &[TxId]) -> usize {
    let Ok(mut asked) = asked.lock() else {
        return 0;
    };
    let room = MAX_ASKED.saturating_sub(asked.len()).min(ids.len());
    asked.extend(ids[..room].iter().copied());
    let over = ids.len() - room;
    if over > 0 {
        w.metrics
            .gossip_dropped_total
            .add(over as u64, &[KeyValue::new("kind", "asked_full")]);
    }
    room
}

/// A unary call has no earlier message: it carries the whole envelope. Its bytes, and whether
/// the peer took the message (`MessageAck.received`).
async fn unary(w: &mut Worker, wire: PeerMessage) -> Result<(u64, bool), Outcome> {
    let bytes = wire_len(&wire);
    match tokio::time::timeout(w.timeout, w.client.send_message(wire)).await {
        Ok(Ok(ack)) => Ok((bytes, ack.into_inner().received)),
        Ok(Err(status)) => Err(grpc_outcome(&status)),
        Err(_) => Err(Outcome::Timeout),
    }
}

/// Sends `wire` on the link's stream, opening one if there is none usable. The first
/// message of a stream goes whole: the peer binds its sender to the stream. The later ones go
/// compact ([`compact`]). The bytes it took if it went.
async fn stream_send(w: &mut Worker, wire: PeerMessage, ack: Option<TxId>) -> Result<u64, Outcome> {
    let first = ensure_stream(w).await?;
    if let (Some(id), Some(stream)) = (ack, &w.stream) {
        note_asked(w, &stream.acks, &[id]);
    }
    send_on_stream(w, wire, first).await
}

/// Opens a stream unless the link has a usable one; whether it is new (its first message
/// must go whole).
async fn ensure_stream(w: &mut Worker) -> Result<bool, Outcome> {
    let usable = w
        .stream
        .as_ref()
        .is_some_and(|s| s.alive.load(Ordering::Relaxed) && !s.tx.is_closed());
    if !usable {
        w.stream = None;
        open_stream(w).await?;
    }
    Ok(!usable)
}

/// Sends `wire` on the open stream, whole if `first`, else compact.
async fn send_on_stream(w: &mut Worker, wire: PeerMessage, first: bool) -> Result<u64, Outcome> {
    let Some(stream) = &w.stream else {
        return Err(Outcome::Failed);
    };
    let wire = if first { wire } else { compact(wire) };
    let bytes = wire_len(&wire);
    match tokio::time::timeout(w.timeout, stream.tx.send(wire)).await {
        Ok(Ok(())) => Ok(bytes),
        sent => {
            // Flow control held us past the deadline, or the stream is gone: the core drops
            // its stream state on this report, and the next send opens afresh.
            w.stream = None;
            Err(if sent.is_err() {
                Outcome::Timeout
            } else {
                Outcome::Failed
            })
        }
    }
}

/// Opens a stream, reports it with a new generation and starts its reader.
async fn open_stream(w: &mut Worker) -> Result<(), Outcome> {
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    let opened = tokio::time::timeout(w.timeout, w.client.stream(ReceiverStream::new(rx))).await;
    let inbound = match opened {
        Ok(Ok(response)) => response.into_inner(),
        Ok(Err(status)) => return Err(grpc_outcome(&status)),
        Err(_) => return Err(Outcome::Timeout),
    };
    let generation = w.generations.fetch_add(1, Ordering::Relaxed) + 1;
    let opened = Answer::StreamOpened {
        peer: w.peer.clone(),
        generation,
    };
    // Reported before the reader starts, so its end always comes after.
    if w.answers.send(opened).await.is_err() {
        return Err(Outcome::Failed);
    }
    let alive = Arc::new(AtomicBool::new(true));
    let (asked, acks) = (Asked::default(), Asked::default());
    tokio::spawn(watch_stream(
        inbound,
        Reader {
            peer: w.peer.clone(),
            alive: alive.clone(),
            asked: asked.clone(),
            acks: acks.clone(),
            generation,
            // The peer's heartbeats come every STREAM_HEARTBEAT whatever our timeout: with a
            // 1 s peer timeout a 3 s bound closed live streams, and the pulls answered on
            // them, every few seconds.
            silence: (w.timeout * 3).max(STREAM_HEARTBEAT * 3),
            answers: w.answers.clone(),
            metrics: w.metrics.clone(),
            pushes: w.pushes.clone(),
        },
    ));
    w.stream = Some(OpenStream {
        tx,
        alive,
        asked,
        acks,
    });
    Ok(())
}

/// A gRPC status as the core's outcome: UNIMPLEMENTED means the peer does not serve the
/// call (never retried the same way); a deadline is a timeout; the rest a failure.
fn grpc_outcome(status: &Status) -> Outcome {
    match status.code() {
        Code::Unimplemented => Outcome::Refused,
        Code::DeadlineExceeded => Outcome::Timeout,
        _ => Outcome::Failed,
    }
}

/// A REST failure as the core's outcome: 404 and 405 mean the peer does not serve the route.
fn rest_outcome(failure: RestFailure) -> Outcome {
    match failure {
        RestFailure::Refused(404 | 405) => Outcome::Refused,
        RestFailure::Timeout => Outcome::Timeout,
        _ => Outcome::Failed,
    }
}
