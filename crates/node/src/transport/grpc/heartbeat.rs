//! `sorcha.peer.heartbeat.PeerHeartbeat`: liveness from registered peers.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use sorcha_peer_core::membership::HeartbeatOutcome;
use sorcha_peer_core::model::Caller;
use sorcha_peer_core::model::PeerId;
use sorcha_peer_wire::membership::heartbeat_answer;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::handle_error;
use crate::clock::now;
use crate::handle::NodeHandle;
use crate::registers;
use crate::transport::limits::{LimitKind, Limiter, PeerKey};
use crate::transport::tls::caller_of;
use crate::wire::proto::heartbeat::peer_heartbeat_server::PeerHeartbeat;
use crate::wire::proto::heartbeat::*;
use crate::wire::wire_len;

/// Answers buffered per heartbeat stream; a peer that stops reading its answers stalls only its
/// own stream, and we stop reading its requests.
const STREAM_BUFFER: usize = 16;

pub struct HeartbeatService {
    node: NodeHandle,
    limiter: Arc<Limiter>,
}

impl HeartbeatService {
    pub fn new(node: NodeHandle, limiter: Arc<Limiter>) -> Self {
        Self { node, limiter }
    }
}

async fn answer(
    node: &NodeHandle,
    request: PeerHeartbeatRequest,
    caller: Caller,
) -> Result<PeerHeartbeatResponse, Status> {
    let Ok(peer_id) = request.peer_id.parse::<PeerId>() else {
        return Err(Status::invalid_argument(format!(
            "peer_id: {:?} is not a valid peer id",
            request.peer_id.chars().take(80).collect::<String>()
        )));
    };
    let outcome = node
        .heartbeat(peer_id.clone(), caller)
        .await
        .map_err(handle_error)?;
    let book = node.registers();
    if outcome == HeartbeatOutcome::Accepted
        && let Ok(mut book) = book.lock()
    {
        book.set(
            &peer_id,
            registers::from_heartbeat(&request.advertised_registers),
        );
    }
    let mut reply = heartbeat_answer(outcome, node.peer_id(), now());
    if let Ok(book) = book.lock() {
        reply.advertised_registers = registers::to_heartbeat(book.own());
    }
    Ok(reply)
}

#[tonic::async_trait]
impl PeerHeartbeat for HeartbeatService {
    async fn send_heartbeat(
        &self,
        request: Request<PeerHeartbeatRequest>,
    ) -> Result<Response<PeerHeartbeatResponse>, Status> {
        let caller = caller_of(&request);
        let key = PeerKey::of_request(&request);
        let bytes = wire_len(request.get_ref());
        let metrics = self.node.metrics().clone();
        metrics.record_message("heartbeat", "received", bytes);
        self.limiter
            .admit(key.as_ref(), LimitKind::Membership, 1, bytes)
            .await?;
        let reply = answer(&self.node, request.into_inner(), caller).await?;
        metrics.record_message("heartbeat", "sent", wire_len(&reply));
        Ok(Response::new(reply))
    }

    type StreamHeartbeatStream =
        Pin<Box<dyn Stream<Item = Result<PeerHeartbeatResponse, Status>> + Send>>;

    async fn stream_heartbeat(
        &self,
        request: Request<Streaming<PeerHeartbeatRequest>>,
    ) -> Result<Response<Self::StreamHeartbeatStream>, Status> {
        let caller = caller_of(&request);
        let key = PeerKey::of_request(&request);
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let node = self.node.clone();
        let limiter = self.limiter.clone();
        tokio::spawn(async move {
            // A transport error ends the stream; a bad heartbeat only gets a refusal, so one
            // malformed message does not cost the peer its stream.
            let metrics = node.metrics().clone();
            while let Some(Ok(beat)) = inbound.next().await {
                // Limits apply per message on a stream, as per call.
                let bytes = wire_len(&beat);
                metrics.record_message("heartbeat", "received", bytes);
                let limited = limiter
                    .admit(key.as_ref(), LimitKind::Membership, 1, bytes)
                    .await;
                let answered = match limited {
                    Ok(()) => answer(&node, beat, caller.clone()).await,
                    Err(status) => Err(status),
                };
                let reply = match answered {
                    Ok(reply) => reply,
                    Err(status) => PeerHeartbeatResponse {
                        success: false,
                        peer_id: node.peer_id().to_string(),
                        timestamp: now().to_wire(),
                        message: status.message().to_owned(),
                        ..Default::default()
                    },
                };
                let bytes = wire_len(&reply);
                // The caller hung up: stop reading its stream.
                if tx.send(Ok(reply)).await.is_err() {
                    break;
                }
                metrics.record_message("heartbeat", "sent", bytes);
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
