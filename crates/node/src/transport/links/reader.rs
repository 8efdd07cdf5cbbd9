//! The reader of one stream's inbound side: the peer's heartbeats, the answers to our
//! `GOSSIP_FETCH`es (handed to the actor as fetch results), its acknowledgements of our pushes
//! (`GOSSIP_ACK`: queued transactions confirmed), and the stream's end, reported
//! with its generation so the core drops that stream (and not a newer one).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::KeyValue;
use prost::Message;
use sorcha_peer_core::gossip::FetchFailure;
use sorcha_peer_core::model::{PeerId, TxHash, TxId};
use tokio::sync::mpsc;

use super::Pushes;
use super::worker::Asked;
use crate::telemetry::Metrics;
use crate::transport::outbound::Answer;
use crate::wire::proto::communication::{MessageType, PeerMessage};
use crate::wire::proto::transaction::TransactionResponse;
use crate::wire::{from_ack_message, wire_len};

pub(super) struct Reader {
    pub(super) peer: PeerId,
    /// This stream's liveness, read by the worker before each send.
    pub(super) alive: Arc<AtomicBool>,
    pub(super) asked: Asked,
    pub(super) generation: u64,
    pub(super) silence: Duration,
    pub(super) answers: mpsc::Sender<Answer>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) pushes: Pushes,
}

/// Reads the peer's side of a stream: its heartbeats, and the answers to our `GOSSIP_FETCH`es,
/// which go to the actor as fetch results (the gossip core checks each body's hash and ignores
/// what it did not ask this peer for). A stream silent for `silence` or broken is marked dead
/// and reported closed, and the link opens a new one on its next message. No message here
/// needs its sender: the stream is to `r.peer` (answers come without sender, recipient and
/// timestamp).
pub(super) async fn watch_stream(mut inbound: tonic::Streaming<PeerMessage>, r: Reader) {
    loop {
        let message = match tokio::time::timeout(r.silence, inbound.message()).await {
            Ok(Ok(Some(message))) => message,
            _ => break,
        };
        if message.message_type == MessageType::GossipAck as i32 {
            acknowledged(&r, &message);
            continue;
        }
        if message.message_type != MessageType::TransactionResponse as i32 {
            // Heartbeats and the like: counted in message_bytes_total only.
            let kind = crate::wire::message_kind(message.message_type);
            r.metrics
                .record_message(kind, "received", wire_len(&message));
            continue;
        }
        r.metrics.record_received("body", wire_len(&message));
        let Some((id, result)) = fetch_answer(&message) else {
            r.metrics
                .gossip_dropped_total
                .add(1, &[KeyValue::new("kind", "bad_fetch_answer")]);
            continue;
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
    let closed = Answer::StreamClosed {
        peer: r.peer.clone(),
        generation: r.generation,
    };
    if r.answers.send(closed).await.is_err() {
        return;
    }
    fail_unanswered(&r).await;
}

/// The peer took pushes we asked it to acknowledge: their queued transactions are confirmed.
fn acknowledged(r: &Reader, message: &PeerMessage) {
    r.metrics.record_received("ack", wire_len(message));
    match from_ack_message(message) {
        Ok(ids) => {
            for id in ids {
                r.pushes.acknowledged(&id);
            }
        }
        Err(_) => r
            .metrics
            .gossip_dropped_total
            .add(1, &[KeyValue::new("kind", "bad_ack")]),
    }
}

/// A found body comes without its hash: its id is the start of the body's SHA-256. (The
/// gossip core still checks that it asked this peer for that id.) A missing one names the
/// id, or the whole hash, asked for.
fn fetch_answer(message: &PeerMessage) -> Option<(TxId, Result<Vec<u8>, FetchFailure>)> {
    let answer = TransactionResponse::decode(message.payload.as_slice()).ok()?;
    let id = if answer.found && answer.transaction_hash.is_empty() {
        TxHash::of(&answer.transaction_data).id()
    } else {
        answer.transaction_hash.parse::<TxId>().ok()?
    };
    let result = if answer.found {
        Ok(answer.transaction_data)
    } else {
        Err(FetchFailure::NotFound)
    };
    Some((id, result))
}

/// Whatever was asked on this stream will not be answered: the core tries other announcers
/// now rather than at its fetch timeout.
async fn fail_unanswered(r: &Reader) {
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
