//! `sorcha.peer.communication.PeerCommunication`: typed peer messages, one at a time
//! (`SendMessage`) or over a long-lived bidirectional `Stream`. Gossip travels here (the
//! `GOSSIP_*` message types); Sorcha's own notification type is understood too.
//!
//! A stream is one peer's: its first message names the sender, which is bound to the stream
//! ([`StreamSender`]); later messages of our extension types may leave sender, recipient and
//! timestamp out (the opener sends them so, [`crate::wire::compact`]), and none may name
//! another sender. Sorcha's C# peers send only their own message types, always with the whole
//! envelope, naming themselves: the rule changes nothing for them. A unary `SendMessage` names
//! its sender in every call.
//!
//! A `GOSSIP_PUSH` that asks to be acknowledged (the sender holds it in its offline queue) is
//! answered with a `GOSSIP_ACK` on the stream once taken (handed to the node, which stores it
//! before announcing it); a unary call's `MessageAck.received` says the same.
//!
//! Limits apply per message, on a stream as in unary calls: its peer's byte rate, then the rate
//! of its kind (membership for heartbeats and status, announcements for gossip, announced
//! transactions per id announced, pulls per hash fetched). A message over a limit is dropped
//! and counted (unary: refused); it does not cost the peer its stream. What one stream can
//! queue at us is bounded by HTTP/2 flow control (the server's stream and connection
//! windows), and we read its next message only after handling the last.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use opentelemetry::KeyValue;
use prost::Message;
use sorcha_peer_core::gossip::GossipMessage;
use sorcha_peer_core::model::PeerId;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::handle_error;
use super::transaction::TransactionService;
use crate::clock::now;
use crate::handle::NodeHandle;
use crate::transport::limits::{LimitKind, Limiter, PeerKey};
use crate::transport::tls::caller_of;
use crate::wire::proto::communication::peer_communication_server::PeerCommunication;
use crate::wire::proto::communication::{GossipFetch, MessageAck, MessageType, PeerMessage};
use crate::wire::proto::transaction::TransactionNotification;
use crate::wire::{
    MAX_FETCH_BATCH, from_notification, from_peer_message, raw_name, to_fetch_answer,
};
use crate::wire::{ack_wanted, to_ack_message};
use crate::wire::{message_kind, wire_len};

/// Our heartbeats on a peer's stream. The opener takes a stream silent for three of these (or
/// three of its peer timeouts, if longer) for dead.
pub const STREAM_HEARTBEAT: Duration = Duration::from_secs(5);

/// Our messages buffered per inbound stream (heartbeats and answered pulls); a peer that does
/// not read them holds up only its own stream.
const STREAM_BUFFER: usize = 64;

pub struct CommunicationService {
    node: NodeHandle,
    /// Serves the bodies a `GOSSIP_FETCH` asks for, as `GetTransaction` does.
    transactions: Arc<TransactionService>,
    /// Whether this node serves the bidirectional stream.
    stream: bool,
    limiter: Arc<Limiter>,
}

/// Where our stream messages go: the peer's side of its stream.
type Out = mpsc::Sender<Result<PeerMessage, Status>>;

/// The peer an inbound stream belongs to: named by the stream's first message, then bound.
#[derive(Debug, Default)]
struct StreamSender {
    bound: Option<PeerId>,
}

impl StreamSender {
    /// Who sent `message`, or why it is refused (its `gossip_dropped_total` kind). Until a
    /// message names a valid sender none is bound, and messages that do not are refused: the
    /// peer may still name itself in a later one.
    fn of(&mut self, message: &PeerMessage) -> Result<PeerId, &'static str> {
        let named = message.sender_peer_id.as_str();
        match &self.bound {
            None => {
                let id: PeerId = named.parse().map_err(|_| "stream_sender_missing")?;
                self.bound = Some(id.clone());
                Ok(id)
            }
            Some(bound) if named.is_empty() || named == bound.as_str() => Ok(bound.clone()),
            // One peer must not speak as another on its stream.
            Some(_) => Err("stream_sender_changed"),
        }
    }
}

impl CommunicationService {
    pub fn new(node: NodeHandle, transactions: Arc<TransactionService>, stream: bool) -> Self {
        let limiter = transactions.limiter().clone();
        Self {
            node,
            transactions,
            stream,
            limiter,
        }
    }

    /// Counts `message` against its peer's byte rate and its kind's rate (pulls are counted
    /// per hash when a fetch is answered, pushes per transaction when taken).
    async fn limit(&self, key: Option<&PeerKey>, message: &PeerMessage) -> Result<(), Status> {
        let bytes = wire_len(message);
        let kind = match MessageType::try_from(message.message_type) {
            // A push is one transaction: `take` counts it against the announced-transactions
            // rate, as an announcement of one id. Not a call against the announcement rate,
            // which is sized for batches: an offline queue drained by push (20,000 tx/s) would
            // meet it.
            Ok(MessageType::GossipFetch | MessageType::GossipPush) => {
                return self.limiter.receive(key, bytes).await;
            }
            Ok(
                MessageType::TransactionNotification
                | MessageType::GossipAnnounce
                | MessageType::GossipDigest
                | MessageType::GossipDigestReply
                | MessageType::GossipPrune
                | MessageType::GossipGraft,
            ) => LimitKind::Announcements,
            _ => LimitKind::Membership,
        };
        self.limiter.admit(key, kind, 1, bytes).await
    }

    /// Handles one message read from a peer's stream; a refused one is dropped and counted.
    async fn take_from_stream(
        &self,
        (sender, key): (&mut StreamSender, Option<&PeerKey>),
        message: PeerMessage,
        out: &Out,
    ) {
        let metrics = self.node.metrics();
        metrics.record_received(message_kind(message.message_type), wire_len(&message));
        let refused = match sender.of(&message) {
            Ok(from) => {
                let taken = match self.limit(key, &message).await {
                    Err(status) => Err(status),
                    Ok(()) if message.message_type == MessageType::GossipFetch as i32 => {
                        self.answer_fetch(key, &message, out).await
                    }
                    Ok(()) => self.take_and_ack(key, from, message, out).await,
                };
                match taken {
                    Ok(()) => return,
                    Err(status) => {
                        tracing::debug!(%status, "stream message refused");
                        "stream_refused"
                    }
                }
            }
            Err(kind) => {
                tracing::debug!(
                    named = %message.sender_peer_id,
                    bound = ?sender.bound,
                    "stream message refused: {kind}"
                );
                kind
            }
        };
        metrics
            .gossip_dropped_total
            .add(1, &[KeyValue::new("kind", refused)]);
    }

    /// Answers a `GOSSIP_FETCH` from a stream: one `TRANSACTION_RESPONSE` per id (at most
    /// [`MAX_FETCH_BATCH`]; more are dropped and counted), sent back on the stream as
    /// [`to_fetch_answer`] makes it: compact, a found body without its hash.
    async fn answer_fetch(
        &self,
        key: Option<&PeerKey>,
        message: &PeerMessage,
        out: &Out,
    ) -> Result<(), Status> {
        let metrics = self.node.metrics();
        let fetch = GossipFetch::decode(message.payload.as_slice())
            .map_err(|e| Status::invalid_argument(format!("GOSSIP_FETCH payload: {e}")))?;
        let mut hashes = fetch.hashes;
        if hashes.len() > MAX_FETCH_BATCH {
            let over = (hashes.len() - MAX_FETCH_BATCH) as u64;
            metrics
                .gossip_dropped_total
                .add(over, &[KeyValue::new("kind", "fetch_over_limit")]);
            hashes.truncate(MAX_FETCH_BATCH);
        }
        let count = u32::try_from(hashes.len()).unwrap_or(u32::MAX);
        self.limiter.check(key, LimitKind::Pulls, count)?;
        // One fetch in flight on a stream at a time (we answer it before reading on).
        let _pull = self.limiter.pull(key)?;
        for raw in hashes {
            let named = raw_name(&raw).map_err(|reason| {
                Status::invalid_argument(format!("GOSSIP_FETCH hash: {reason}"))
            })?;
            let reply = to_fetch_answer(self.transactions.answer_named(&named)?);
            let bytes = wire_len(&reply);
            self.transactions.upload().spend(bytes).await;
            if out.send(Ok(reply)).await.is_err() {
                break; // The peer closed the stream.
            }
            metrics.record_sent("body", bytes);
        }
        Ok(())
    }

    /// Takes a message from a stream; a push that asks to be acknowledged (its transaction
    /// waits in the sender's offline queue) is, once taken, with a `GOSSIP_ACK` on the stream.
    async fn take_and_ack(
        &self,
        key: Option<&PeerKey>,
        from: PeerId,
        message: PeerMessage,
        out: &Out,
    ) -> Result<(), Status> {
        let ack = ack_wanted(&message);
        let taken = self.take(key, from, message).await?;
        if let (Some(id), true) = (ack, taken) {
            let reply = to_ack_message(&[id]);
            let bytes = wire_len(&reply);
            if out.send(Ok(reply)).await.is_ok() {
                self.node.metrics().record_sent("ack", bytes);
            }
        }
        Ok(())
    }

    /// Handles one message `from` a peer, however it arrived; true if it was taken.
    async fn take(
        &self,
        key: Option<&PeerKey>,
        from: PeerId,
        message: PeerMessage,
    ) -> Result<bool, Status> {
        let kind = MessageType::try_from(message.message_type).unwrap_or(MessageType::Unknown);
        match kind {
            MessageType::TransactionNotification => {
                let n = TransactionNotification::decode(message.payload.as_slice())
                    .map_err(|e| Status::invalid_argument(format!("payload: {e}")))?;
                let (_, entry) =
                    from_notification(&n).map_err(|e| Status::invalid_argument(e.to_string()))?;
                self.limiter
                    .check(key, LimitKind::AnnouncedTransactions, 1)?;
                self.node.notify(from, entry).await.map_err(handle_error)?;
                Ok(true)
            }
            MessageType::GossipAnnounce
            | MessageType::GossipPush
            | MessageType::GossipDigest
            | MessageType::GossipDigestReply
            | MessageType::GossipPrune
            | MessageType::GossipGraft => {
                let gossip = from_peer_message(&message)
                    .map_err(|e| Status::invalid_argument(e.to_string()))?;
                // A push carries one transaction, as an announcement of one does.
                let ids = match &gossip {
                    GossipMessage::Announce { entries } => entries.len(),
                    GossipMessage::Push { .. } => 1,
                    _ => 0,
                };
                if ids > 0 {
                    let ids = u32::try_from(ids).unwrap_or(u32::MAX);
                    self.limiter
                        .check(key, LimitKind::AnnouncedTransactions, ids)?;
                }
                self.node.gossip(from, gossip).map_err(handle_error)?;
                Ok(true)
            }
            MessageType::GossipFetch => Err(Status::failed_precondition(
                "GOSSIP_FETCH is answered on PeerCommunication.Stream only",
            )),
            // Liveness on a stream; heartbeats proper have their own service; BLS shares belong
            // to the consensus layer, which this node does not run.
            _ => Ok(false),
        }
    }
}

#[tonic::async_trait]
impl PeerCommunication for CommunicationService {
    /// One message, with its whole envelope: the sender must be named.
    async fn send_message(
        &self,
        request: Request<PeerMessage>,
    ) -> Result<Response<MessageAck>, Status> {
        let key = PeerKey::of_request(&request);
        let caller = caller_of(&request);
        let message = request.into_inner();
        self.node
            .metrics()
            .record_received(message_kind(message.message_type), wire_len(&message));
        let from: PeerId = message
            .sender_peer_id
            .parse()
            .map_err(|e| Status::invalid_argument(format!("sender_peer_id: {e}")))?;
        self.limit(key.as_ref(), &message).await?;
        // A going-away needs the caller's proof, which only a call carries (not our streams).
        if message.message_type == MessageType::PeerLeaving as i32 {
            self.node
                .leaving(from, caller)
                .await
                .map_err(handle_error)?
                .map_err(|refused| Status::permission_denied(refused.to_string()))?;
            let ack = MessageAck {
                received: true,
                timestamp: now().to_wire(),
            };
            return Ok(Response::new(ack));
        }
        let received = self.take(key.as_ref(), from, message).await?;
        Ok(Response::new(MessageAck {
            received,
            timestamp: now().to_wire(),
        }))
    }

    type StreamStream = Pin<Box<dyn Stream<Item = Result<PeerMessage, Status>> + Send>>;

    /// A peer's long-lived stream: its messages in, our stream-level heartbeats out (so both
    /// ends notice a dead stream within a peer timeout). A bad message, or one whose sender is
    /// not the stream's, is dropped and counted; it does not cost the peer its stream.
    async fn stream(
        &self,
        request: Request<Streaming<PeerMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        if !self.stream {
            return Err(Status::unimplemented(
                "this node does not serve PeerCommunication.Stream; use SendMessage",
            ));
        }
        let key = PeerKey::of_request(&request);
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let service = CommunicationService {
            node: self.node.clone(),
            transactions: self.transactions.clone(),
            stream: true,
            limiter: self.limiter.clone(),
        };
        let stopping = self.node.stopping();
        tokio::spawn(async move {
            let mut sender = StreamSender::default();
            let mut beat = tokio::time::interval(STREAM_HEARTBEAT);
            tokio::pin!(stopping);
            loop {
                tokio::select! {
                    // Shutdown: our side ends (the peer sees a clean end of stream, and the
                    // server's graceful shutdown is not kept waiting by a stream that never ends).
                    () = &mut stopping => return,
                    item = inbound.next() => match item {
                        Some(Ok(message)) => {
                            let sender = (&mut sender, key.as_ref());
                            service.take_from_stream(sender, message, &tx).await;
                        }
                        // The peer closed its side, or the connection broke.
                        _ => return,
                    },
                    _ = beat.tick() => {
                        // Sorcha's message type, so the whole envelope, as everywhere.
                        let heartbeat = PeerMessage {
                            sender_peer_id: service.node.peer_id().to_string(),
                            message_type: MessageType::Heartbeat.into(),
                            timestamp: now().to_wire(),
                            ..Default::default()
                        };
                        let bytes = wire_len(&heartbeat);
                        if tx.send(Ok(heartbeat)).await.is_err() {
                            return;
                        }
                        service.node.metrics().record_message("heartbeat", "sent", bytes);
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(sender: &str) -> PeerMessage {
        PeerMessage {
            sender_peer_id: sender.into(),
            message_type: MessageType::GossipAnnounce.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_stream_is_bound_to_the_sender_its_first_message_names() {
        let mut sender = StreamSender::default();
        let a: PeerId = "peer-a".parse().unwrap();
        assert_eq!(sender.of(&message("")), Err("stream_sender_missing"));
        assert_eq!(
            sender.of(&message("not a peer id!")),
            Err("stream_sender_missing")
        );
        assert_eq!(sender.of(&message("peer-a")), Ok(a.clone()));
        assert_eq!(
            sender.of(&message("")),
            Ok(a.clone()),
            "empty: the bound peer"
        );
        assert_eq!(
            sender.of(&message("peer-a")),
            Ok(a.clone()),
            "may repeat itself"
        );
        assert_eq!(sender.of(&message("peer-b")), Err("stream_sender_changed"));
        assert_eq!(sender.of(&message("bad id!")), Err("stream_sender_changed"));
        assert_eq!(sender.of(&message("")), Ok(a), "still bound to the first");
    }
}
