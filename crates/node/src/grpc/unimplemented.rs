//! Services of the wire contract whose behaviour lands with later issues: transaction
//! distribution (issue 5) and generic peer messaging (issue 4). They are served, so a peer
//! gets a clear UNIMPLEMENTED naming the rpc rather than a transport error.

use std::pin::Pin;

use futures::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::proto::communication::peer_communication_server::PeerCommunication;
use crate::proto::communication::{MessageAck, PeerMessage};
use crate::proto::transaction::transaction_distribution_server::TransactionDistribution;
use crate::proto::transaction::*;

fn not_yet(rpc: &str) -> Status {
    Status::unimplemented(format!(
        "{rpc} is not implemented by this version of sorcha-peer"
    ))
}

pub struct TransactionService;

#[tonic::async_trait]
impl TransactionDistribution for TransactionService {
    async fn notify_transaction(
        &self,
        _: Request<TransactionNotification>,
    ) -> Result<Response<NotificationAck>, Status> {
        Err(not_yet("TransactionDistribution.NotifyTransaction"))
    }

    async fn get_transaction(
        &self,
        _: Request<TransactionRequest>,
    ) -> Result<Response<TransactionResponse>, Status> {
        Err(not_yet("TransactionDistribution.GetTransaction"))
    }

    type StreamTransactionStream =
        Pin<Box<dyn Stream<Item = Result<TransactionChunk, Status>> + Send>>;

    async fn stream_transaction(
        &self,
        _: Request<TransactionRequest>,
    ) -> Result<Response<Self::StreamTransactionStream>, Status> {
        Err(not_yet("TransactionDistribution.StreamTransaction"))
    }
}

pub struct CommunicationService;

#[tonic::async_trait]
impl PeerCommunication for CommunicationService {
    async fn send_message(&self, _: Request<PeerMessage>) -> Result<Response<MessageAck>, Status> {
        Err(not_yet("PeerCommunication.SendMessage"))
    }

    type StreamStream = Pin<Box<dyn Stream<Item = Result<PeerMessage, Status>> + Send>>;

    async fn stream(
        &self,
        _: Request<Streaming<PeerMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        Err(not_yet("PeerCommunication.Stream"))
    }
}
