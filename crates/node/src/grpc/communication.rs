//! `sorcha.peer.communication.PeerCommunication`: typed peer messages, one at a time
//! (`SendMessage`) or over a long-lived bidirectional `Stream`. Gossip travels here (the
//! `GOSSIP_*` message types); Sorcha's own notification type is understood too.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use opentelemetry::KeyValue;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::handle_error;
use super::transaction::TransactionService;
use crate::actor::{NodeHandle, now};
use crate::proto::communication::peer_communication_server::PeerCommunication;
use crate::proto::communication::{GossipFetch, MessageAck, MessageType, PeerMessage};
use crate::proto::transaction::{TransactionNotification, TransactionRequest};
use crate::wire::{MAX_FETCH_BATCH, from_notification, from_peer_message, raw_hash};

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
}

impl CommunicationService {
    pub fn new(node: NodeHandle, transactions: Arc<TransactionService>, stream: bool) -> Self {
        Self {
            node,
            transactions,
            stream,
        }
    }

    /// Answers a `GOSSIP_FETCH` from a stream: one `TRANSACTION_RESPONSE` per hash (at most
    /// [`MAX_FETCH_BATCH`]; more are dropped and counted), sent back on the stream. A found
    /// body goes without its hash, which the requester computes; a missing one names it.
    async fn answer_fetch(
        &self,
        message: &PeerMessage,
        out: &mpsc::Sender<Result<PeerMessage, Status>>,
    ) -> Result<(), Status> {
        let metrics = self.node.metrics();
        metrics.record_received("GOSSIP_FETCH", message.payload.len() as u64);
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
        let me = self.node.peer_id().to_string();
        for raw in hashes {
            let hash = raw_hash(&raw).map_err(|reason| {
                Status::invalid_argument(format!("GOSSIP_FETCH hash: {reason}"))
            })?;
            let request = TransactionRequest {
                transaction_hash: hash.to_string(),
                ..Default::default()
            };
            let mut answer = self.transactions.answer(&request)?;
            if answer.found {
                // A body names itself (its SHA-256): the hash would be 66 of ~320 bytes.
                answer.transaction_hash.clear();
            }
            let reply = PeerMessage {
                sender_peer_id: me.clone(),
                recipient_peer_id: message.sender_peer_id.clone(),
                message_type: MessageType::TransactionResponse.into(),
                payload: answer.encode_to_vec(),
                timestamp: now().to_wire(),
            };
            if out.send(Ok(reply)).await.is_err() {
                break; // The peer closed the stream.
            }
        }
        Ok(())
    }
}

impl CommunicationService {
    /// Handles one message from a peer, however it arrived; true if it was taken.
    async fn take(&self, message: PeerMessage) -> Result<bool, Status> {
        let from = message
            .sender_peer_id
            .parse()
            .map_err(|e| Status::invalid_argument(format!("sender_peer_id: {e}")))?;
        let kind = MessageType::try_from(message.message_type).unwrap_or(MessageType::Unknown);
        self.node
            .metrics()
            .record_received(kind.as_str_name(), message.payload.len() as u64);
        match kind {
            MessageType::TransactionNotification => {
                let n = TransactionNotification::decode(message.payload.as_slice())
                    .map_err(|e| Status::invalid_argument(format!("payload: {e}")))?;
                let (_, entry) =
                    from_notification(&n).map_err(|e| Status::invalid_argument(e.to_string()))?;
                self.node.notify(from, entry).await.map_err(handle_error)?;
                Ok(true)
            }
            MessageType::GossipAnnounce
            | MessageType::GossipPush
            | MessageType::GossipDigest
            | MessageType::GossipDigestReply => {
                let gossip = from_peer_message(&message)
                    .map_err(|e| Status::invalid_argument(e.to_string()))?;
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
    async fn send_message(
        &self,
        request: Request<PeerMessage>,
    ) -> Result<Response<MessageAck>, Status> {
        let received = self.take(request.into_inner()).await?;
        Ok(Response::new(MessageAck {
            received,
            timestamp: now().to_wire(),
        }))
    }

    type StreamStream = Pin<Box<dyn Stream<Item = Result<PeerMessage, Status>> + Send>>;

    /// A peer's long-lived stream: its messages in, our stream-level heartbeats out (so both
    /// ends notice a dead stream within a peer timeout). A bad message is dropped and counted;
    /// it does not cost the peer its stream.
    async fn stream(
        &self,
        request: Request<Streaming<PeerMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        if !self.stream {
            return Err(Status::unimplemented(
                "this node does not serve PeerCommunication.Stream; use SendMessage",
            ));
        }
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let service = CommunicationService {
            node: self.node.clone(),
            transactions: self.transactions.clone(),
            stream: true,
        };
        tokio::spawn(async move {
            let mut beat = tokio::time::interval(STREAM_HEARTBEAT);
            loop {
                tokio::select! {
                    item = inbound.next() => match item {
                        Some(Ok(message)) => {
                            let taken = if message.message_type == MessageType::GossipFetch as i32 {
                                service.answer_fetch(&message, &tx).await
                            } else {
                                service.take(message).await.map(|_| ())
                            };
                            if let Err(status) = taken {
                                tracing::debug!(%status, "stream message refused");
                                service.node.metrics().gossip_dropped_total.add(1, &[KeyValue::new("kind", "stream_refused")]);
                            }
                        }
                        // The peer closed its side, or the connection broke.
                        _ => return,
                    },
                    _ = beat.tick() => {
                        let heartbeat = PeerMessage {
                            sender_peer_id: service.node.peer_id().to_string(),
                            message_type: MessageType::Heartbeat.into(),
                            timestamp: now().to_wire(),
                            ..Default::default()
                        };
                        if tx.send(Ok(heartbeat)).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
