//! `sorcha.peer.communication.PeerCommunication`: typed peer messages. Gossip travels here
//! (the `GOSSIP_*` message types); Sorcha's own notification and heartbeat types are
//! understood too. The bidirectional `Stream` arrives with the communication layer (issue 4).

use std::pin::Pin;

use futures::Stream;
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use super::handle_error;
use crate::actor::{NodeHandle, now};
use crate::proto::communication::peer_communication_server::PeerCommunication;
use crate::proto::communication::{MessageAck, MessageType, PeerMessage};
use crate::proto::transaction::TransactionNotification;
use crate::wire::{from_notification, from_peer_message};

pub struct CommunicationService {
    node: NodeHandle,
}

impl CommunicationService {
    pub fn new(node: NodeHandle) -> Self {
        Self { node }
    }
}

#[tonic::async_trait]
impl PeerCommunication for CommunicationService {
    async fn send_message(
        &self,
        request: Request<PeerMessage>,
    ) -> Result<Response<MessageAck>, Status> {
        let message = request.into_inner();
        let from = message
            .sender_peer_id
            .parse()
            .map_err(|e| Status::invalid_argument(format!("sender_peer_id: {e}")))?;
        let kind = MessageType::try_from(message.message_type).unwrap_or(MessageType::Unknown);
        self.node
            .metrics()
            .record_received(kind.as_str_name(), message.payload.len() as u64);
        let received = match kind {
            MessageType::TransactionNotification => {
                let n = TransactionNotification::decode(message.payload.as_slice())
                    .map_err(|e| Status::invalid_argument(format!("payload: {e}")))?;
                let (_, entry) =
                    from_notification(&n).map_err(|e| Status::invalid_argument(e.to_string()))?;
                self.node.notify(from, entry).await.map_err(handle_error)?;
                true
            }
            MessageType::GossipAnnounce
            | MessageType::GossipPush
            | MessageType::GossipDigest
            | MessageType::GossipDigestReply => {
                let gossip = from_peer_message(&message)
                    .map_err(|e| Status::invalid_argument(e.to_string()))?;
                self.node.gossip(from, gossip).map_err(handle_error)?;
                true
            }
            // Heartbeats have their own service; BLS shares belong to the consensus layer,
            // which this node does not run: acknowledged as not taken.
            _ => false,
        };
        Ok(Response::new(MessageAck {
            received,
            timestamp: now().to_wire(),
        }))
    }

    type StreamStream = Pin<Box<dyn Stream<Item = Result<PeerMessage, Status>> + Send>>;

    async fn stream(
        &self,
        _: Request<Streaming<PeerMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        Err(Status::unimplemented(
            "PeerCommunication.Stream is not implemented by this version of sorcha-peer; use SendMessage",
        ))
    }
}
