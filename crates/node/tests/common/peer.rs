//! The membership side of an in-process test peer: it answers every discovery and heartbeat
//! call at once, as a healthy peer does, so a test can give its peer whatever gossip or
//! transaction behaviour it studies.

use std::pin::Pin;

use futures::Stream;
use sorcha_peer::wire::proto::discovery::peer_discovery_client::PeerDiscoveryClient;
use sorcha_peer::wire::proto::discovery::peer_discovery_server::{
    PeerDiscovery, PeerDiscoveryServer,
};
use sorcha_peer::wire::proto::discovery::*;
use sorcha_peer::wire::proto::heartbeat::peer_heartbeat_server::{
    PeerHeartbeat, PeerHeartbeatServer,
};
use sorcha_peer::wire::proto::heartbeat::{PeerHeartbeatRequest, PeerHeartbeatResponse};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::server::Router;
use tonic::{Request, Response, Status, Streaming};

use super::TestNode;

/// Serves peer `id` on a loopback port, which it returns: [`Agreeable`] for membership, and
/// whatever services `with` adds for the behaviour the test studies.
pub async fn serve(id: &str, with: impl FnOnce(Router) -> Router) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let agreeable = || Agreeable { id: id.to_owned() };
    let router = tonic::transport::Server::builder()
        .add_service(PeerDiscoveryServer::new(agreeable()))
        .add_service(PeerHeartbeatServer::new(agreeable()));
    tokio::spawn(with(router).serve_with_incoming(TcpListenerStream::new(listener)));
    port
}

/// Registers the unary gRPC peer `id` listening on loopback `port` with `node`.
pub async fn register(node: &TestNode, id: &str, port: u16) {
    let answer = try_register(node, id, port).await;
    assert!(answer.success, "{}", answer.message);
}

/// `node`'s answer to a `RegisterPeer` of `id` at loopback `port` (refused or not).
pub async fn try_register(node: &TestNode, id: &str, port: u16) -> RegisterPeerResponse {
    let mut client = PeerDiscoveryClient::connect(node.grpc_url()).await.unwrap();
    let info = PeerInfo {
        peer_id: id.into(),
        address: "127.0.0.1".into(),
        port: port.into(),
        supported_protocols: vec!["Grpc".into()],
        ..Default::default()
    };
    client
        .register_peer(RegisterPeerRequest {
            peer_info: Some(info),
        })
        .await
        .unwrap()
        .into_inner()
}

/// A peer named `id` that agrees to every membership call.
pub struct Agreeable {
    pub id: String,
}

#[tonic::async_trait]
impl PeerDiscovery for Agreeable {
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
            peer_id: self.id.clone(),
            timestamp: 0,
            status: PeerStatus::Online.into(),
        }))
    }
    async fn exchange_peers(
        &self,
        _: Request<PeerExchangeRequest>,
    ) -> Result<Response<PeerExchangeResponse>, Status> {
        Ok(Response::new(PeerExchangeResponse {
            success: true,
            ..Default::default()
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
impl PeerHeartbeat for Agreeable {
    async fn send_heartbeat(
        &self,
        _: Request<PeerHeartbeatRequest>,
    ) -> Result<Response<PeerHeartbeatResponse>, Status> {
        Ok(Response::new(PeerHeartbeatResponse {
            success: true,
            peer_id: self.id.clone(),
            ..Default::default()
        }))
    }
    type StreamHeartbeatStream =
        Pin<Box<dyn Stream<Item = Result<PeerHeartbeatResponse, Status>> + Send>>;
    async fn stream_heartbeat(
        &self,
        _: Request<Streaming<PeerHeartbeatRequest>>,
    ) -> Result<Response<Self::StreamHeartbeatStream>, Status> {
        Err(Status::unimplemented("not needed"))
    }
}
