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
    /// Pushes asked to be acknowledged on this stream (the worker notes them).
    pub(super) acks: Asked,
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

/// The peer took pushes we asked it to acknowledge on this stream: their queued transactions
/// are confirmed. An id we did not ask this peer about is refused (counted): the peer cannot
/// take another's push, or one never made, out of our offline queue.
fn acknowledged(r: &Reader, message: &PeerMessage) {
    r.metrics.record_received("ack", wire_len(message));
    match from_ack_message(message) {
        Ok(ids) => {
            let mut unasked = 0;
            for id in ids {
                let asked = r.acks.lock().is_ok_and(|mut acks| acks.remove(&id));
                if asked {
                    r.pushes.acknowledged(&id);
                } else {
                    unasked += 1;
                }
            }
            if unasked > 0 {
                let kind = KeyValue::new("kind", "unasked_ack");
                r.metrics.gossip_dropped_total.add(unasked, &[kind]);
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sorcha_peer_core::model::Timestamp;

    use super::*;
    use crate::store::durable::{Durability, Limits, NewTx, TxDb};
    use crate::transport::limits::upload::UploadBudget;
    use crate::wire::to_ack_message;

    fn queued(db: &TxDb, body: &[u8]) -> NewTx {
        let new = NewTx {
            hash: TxHash::of(body),
            body: Arc::from(body),
            register_id: None,
            origin: "local".into(),
            first_seen: Timestamp::from_millis(crate::clock::now().as_millis()),
        };
        db.await_ack([new.hash]);
        new
    }

    /// A peer's acknowledgement confirms only the pushes asked of it on this stream.
    #[tokio::test]
    async fn only_acknowledgements_asked_on_the_stream_confirm_queued_rows() {
        let dir = tempfile::tempdir().unwrap();
        let db = TxDb::open_in(dir.path(), Durability::Full, Limits::small()).unwrap();
        let (ours, other) = (
            queued(&db, b"asked of it"),
            queued(&db, b"pushed elsewhere"),
        );
        for new in [ours.clone(), other.clone()] {
            assert!(db.put(new, true).await.unwrap());
        }
        let metrics = Arc::new(Metrics::new().unwrap());
        let reader = Reader {
            peer: PeerId::from_public_key(b"peer"),
            alive: Arc::default(),
            asked: Asked::default(),
            acks: Asked::default(),
            generation: 1,
            silence: Duration::from_secs(1),
            answers: mpsc::channel(1).0,
            metrics: metrics.clone(),
            pushes: Pushes {
                upload: Arc::new(UploadBudget::new(0, metrics)),
                queue: Some(db.clone()),
            },
        };
        reader.acks.lock().unwrap().insert(ours.hash.id());
        let ids = [ours.hash.id(), other.hash.id()];
        acknowledged(&reader, &to_ack_message(&ids));
        assert!(!db.wants_ack(&ours.hash.id()), "acknowledged");
        assert!(db.wants_ack(&other.hash.id()), "not asked of this peer");
        assert!(reader.acks.lock().unwrap().is_empty());
        db.confirm_pulled().unwrap();
        db.flush().await.unwrap();
        assert_eq!(db.pending(), 1, "the other row stays queued");
    }
}
