//! A link's worker: pops the link's queue and sends each message over the transport the peer
//! speaks (stream, unary, REST), with a deadline and retries; opens, re-opens and downgrades
//! the stream; and reads the peer's side of it ([`watch_stream`]): heartbeats, and the answers
//! to our `GOSSIP_FETCH`es, handed to the actor as fetch results.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use prost::Message;
use rand_chacha::ChaCha8Rng;
use sorcha_peer_core::backoff::{CallKind, ErrorClass, RetryDecision, RetryPolicy};
use sorcha_peer_core::gossip::{AnnounceEntry, FetchFailure};
use sorcha_peer_core::model::{PeerId, TxHash, TxId};
use sorcha_peer_core::sendqueue::SendQueue;
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use super::{Mode, Outgoing, REPROBE_AFTER, STREAM_BUFFER, StreamState};
use crate::clock::now;
use crate::telemetry::Metrics;
use crate::transport::grpc::communication::STREAM_HEARTBEAT;
use crate::transport::outbound::Answer;
use crate::transport::rest::client::RestClient;
use crate::wire::proto::communication::peer_communication_client::PeerCommunicationClient;
use crate::wire::proto::communication::{MessageType, PeerMessage};
use crate::wire::proto::transaction::TransactionResponse;
use crate::wire::proto::transaction::transaction_distribution_client::TransactionDistributionClient;
use crate::wire::{MAX_FETCH_BATCH, compact, to_fetch_message, to_notification, to_peer_message};
use crate::wire::{message_kind, wire_len};

pub(super) struct Worker {
    pub(super) peer: PeerId,
    pub(super) self_id: PeerId,
    pub(super) queue: Arc<Mutex<SendQueue<Outgoing>>>,
    pub(super) wake: Arc<Notify>,
    pub(super) client: PeerCommunicationClient<Channel>,
    /// For Sorcha's `NotifyTransaction`.
    pub(super) transactions: TransactionDistributionClient<Channel>,
    pub(super) stream_state: Arc<StreamState>,
    pub(super) rest: RestClient,
    /// `http://host:port` of the peer, for REST.
    pub(super) base: String,
    /// The best transport the peer offers.
    pub(super) preferred: Mode,
    /// The transport in use.
    pub(super) mode: Mode,
    pub(super) downgraded_at: Option<Instant>,
    pub(super) stream: Option<OpenStream>,
    pub(super) timeout: Duration,
    pub(super) retry: RetryPolicy,
    pub(super) rng: ChaCha8Rng,
    pub(super) metrics: Arc<Metrics>,
    pub(super) answers: mpsc::Sender<Answer>,
}

/// Our side of an open stream, and whether the peer's side still shows signs of life.
pub(super) struct OpenStream {
    tx: mpsc::Sender<PeerMessage>,
    alive: Arc<AtomicBool>,
    /// Pulls asked on this stream and not answered yet; failed at once if the stream ends.
    asked: Asked,
}

/// Pulls outstanding on one stream, shared by the worker and the stream's reader.
type Asked = Arc<Mutex<HashSet<TxId>>>;

/// Outstanding pulls remembered per stream; past it a pull still works, but if the stream
/// breaks it waits for the gossip core's fetch timeout instead of failing at once (counted as
/// `gossip_dropped_total{kind="asked_full"}`).
const MAX_ASKED: usize = 4 * MAX_FETCH_BATCH;

/// Sends what the link's queue holds, one message at a time, each with a deadline.
pub(super) async fn drain(mut w: Worker) {
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
            let over = ids.len().saturating_sub(room);
            asked.extend(ids.into_iter().take(room));
            if over > 0 {
                w.metrics
                    .gossip_dropped_total
                    .add(over as u64, &[KeyValue::new("kind", "asked_full")]);
            }
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
