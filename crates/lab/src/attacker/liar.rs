//! The attacker's own peer server. Honest nodes dial it to pull what the flooder announced
//! (the pull goes to whoever announced), to probe it and to exchange peers. As a liar it answers
//! every pull with a body whose hash is not the one asked for, and every fifth with
//! `found = false`; without `lie` it still answers, with `found = false` only (a flooder that
//! cannot serve what it announces). Discovery and heartbeats answer like a healthy peer, so the
//! nodes keep it in their lists: it is the score, not a dead link, that must get rid of it.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::Stream;
use sorcha_peer::wire::proto::communication::peer_communication_server::{
    PeerCommunication, PeerCommunicationServer,
};
use sorcha_peer::wire::proto::communication::{MessageAck, PeerMessage};
use sorcha_peer::wire::proto::discovery::peer_discovery_server::{
    PeerDiscovery, PeerDiscoveryServer,
};
use sorcha_peer::wire::proto::discovery::*;
use sorcha_peer::wire::proto::heartbeat::peer_heartbeat_server::{
    PeerHeartbeat, PeerHeartbeatServer,
};
use sorcha_peer::wire::proto::heartbeat::{PeerHeartbeatRequest, PeerHeartbeatResponse};
use sorcha_peer::wire::proto::transaction::transaction_distribution_server::{
    TransactionDistribution, TransactionDistributionServer,
};
use sorcha_peer::wire::proto::transaction::*;
use tonic::{Request, Response, Status, Streaming};

use super::{Counts, Shared, noise, now_ms};

/// Size of the wrong bodies served (the announced size).
pub const BODY_SIZE: usize = 256;
/// One pull in this many is answered `found = false` instead of a wrong body.
const NOT_FOUND_EVERY: u64 = 5;

#[derive(Clone)]
struct Liar {
    shared: Arc<Shared>,
    lie: bool,
    pulls: Arc<AtomicU64>,
}

/// Starts the server on our address (a free port) in `tasks`; returns its `host:port`.
pub async fn serve(
    shared: Arc<Shared>,
    lie: bool,
    tasks: &mut tokio::task::JoinSet<()>,
) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind((shared.ip, 0)).await?;
    let addr = listener.local_addr()?;
    let liar = Liar {
        shared,
        lie,
        pulls: Arc::new(AtomicU64::new(0)),
    };
    let router = tonic::transport::Server::builder()
        .add_service(TransactionDistributionServer::new(liar.clone()))
        .add_service(PeerDiscoveryServer::new(liar.clone()))
        .add_service(PeerHeartbeatServer::new(liar.clone()))
        .add_service(PeerCommunicationServer::new(liar));
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tasks.spawn(async move {
        if let Err(e) = router.serve_with_incoming(incoming).await {
            eprintln!("peer-lab attacker: server stopped: {e}");
        }
    });
    Ok(addr.to_string())
}

impl Liar {
    /// The answer to a pull of `hash`: a wrong body, or `found = false`.
    fn pull(&self, hash: &str) -> TransactionResponse {
        let n = self.pulls.fetch_add(1, Ordering::Relaxed);
        let counts = &self.shared.counts;
        if !self.lie || n % NOT_FOUND_EVERY == NOT_FOUND_EVERY - 1 {
            Counts::add(&counts.pulls_not_found, 1);
            return TransactionResponse {
                transaction_hash: hash.to_owned(),
                transaction_data: Vec::new(),
                found: false,
            };
        }
        Counts::add(&counts.pulls_wrong_body, 1);
        let body: Vec<u8> = (0..BODY_SIZE.div_ceil(32) as u64)
            .flat_map(|k| noise(n * 64 + k))
            .take(BODY_SIZE)
            .collect();
        TransactionResponse {
            transaction_hash: hash.to_owned(),
            transaction_data: body,
            found: true,
        }
    }
}

type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl TransactionDistribution for Liar {
    async fn notify_transaction(
        &self,
        _: Request<TransactionNotification>,
    ) -> Result<Response<NotificationAck>, Status> {
        // What honest nodes announce to us: never pulled (we only want to waste their time).
        Ok(Response::new(NotificationAck {
            already_known: false,
            will_request: false,
        }))
    }

    async fn get_transaction(
        &self,
        request: Request<TransactionRequest>,
    ) -> Result<Response<TransactionResponse>, Status> {
        Ok(Response::new(
            self.pull(&request.get_ref().transaction_hash),
        ))
    }

    type StreamTransactionStream = Boxed<TransactionChunk>;

    async fn stream_transaction(
        &self,
        request: Request<TransactionRequest>,
    ) -> Result<Response<Self::StreamTransactionStream>, Status> {
        let answer = self.pull(&request.get_ref().transaction_hash);
        if !answer.found {
            return Err(Status::not_found("not known"));
        }
        let chunk = TransactionChunk {
            transaction_hash: answer.transaction_hash,
            chunk_index: 0,
            total_chunks: 1,
            chunk_data: answer.transaction_data,
        };
        Ok(Response::new(Box::pin(futures::stream::iter([Ok(chunk)]))))
    }
}

#[tonic::async_trait]
impl PeerDiscovery for Liar {
    async fn get_peer_list(
        &self,
        _: Request<PeerListRequest>,
    ) -> Result<Response<PeerListResponse>, Status> {
        Ok(Response::new(PeerListResponse::default()))
    }

    async fn register_peer(
        &self,
        _: Request<RegisterPeerRequest>,
    ) -> Result<Response<RegisterPeerResponse>, Status> {
        Ok(Response::new(RegisterPeerResponse {
            success: true,
            message: String::new(),
        }))
    }

    async fn ping(&self, _: Request<PingRequest>) -> Result<Response<PingResponse>, Status> {
        Ok(Response::new(PingResponse {
            peer_id: self.shared.peer_id.clone(),
            timestamp: now_ms(),
            status: PeerStatus::Online as i32,
        }))
    }

    async fn exchange_peers(
        &self,
        _: Request<PeerExchangeRequest>,
    ) -> Result<Response<PeerExchangeResponse>, Status> {
        Ok(Response::new(PeerExchangeResponse {
            known_peers: Vec::new(),
            success: true,
            message: String::new(),
        }))
    }

    async fn find_peers_for_register(
        &self,
        _: Request<FindPeersForRegisterRequest>,
    ) -> Result<Response<FindPeersForRegisterResponse>, Status> {
        Ok(Response::new(FindPeersForRegisterResponse::default()))
    }
}

#[tonic::async_trait]
impl PeerHeartbeat for Liar {
    async fn send_heartbeat(
        &self,
        _: Request<PeerHeartbeatRequest>,
    ) -> Result<Response<PeerHeartbeatResponse>, Status> {
        Ok(Response::new(PeerHeartbeatResponse {
            success: true,
            peer_id: self.shared.peer_id.clone(),
            timestamp: now_ms(),
            ..PeerHeartbeatResponse::default()
        }))
    }

    type StreamHeartbeatStream = Boxed<PeerHeartbeatResponse>;

    async fn stream_heartbeat(
        &self,
        _: Request<Streaming<PeerHeartbeatRequest>>,
    ) -> Result<Response<Self::StreamHeartbeatStream>, Status> {
        Err(Status::unimplemented("unary heartbeats only"))
    }
}

#[tonic::async_trait]
impl PeerCommunication for Liar {
    async fn send_message(&self, _: Request<PeerMessage>) -> Result<Response<MessageAck>, Status> {
        Ok(Response::new(MessageAck {
            received: true,
            timestamp: now_ms(),
        }))
    }

    type StreamStream = Boxed<PeerMessage>;

    async fn stream(
        &self,
        _: Request<Streaming<PeerMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        // We advertise unary gRPC only; a peer that opens a stream anyway is told so.
        Err(Status::unimplemented("unary gRPC only"))
    }
}
