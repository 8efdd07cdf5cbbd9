//! The peer port: the four services of the wire contract, `grpc.health.v1` and reflection.

mod communication;
mod discovery;
mod heartbeat;
mod transaction;

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::Status;
use tonic::codec::CompressionEncoding;
use tonic::transport::Server;

use crate::actor::{HandleError, NodeHandle};
use crate::offline::SharedQueue;
use crate::proto::communication::peer_communication_server::PeerCommunicationServer;
use crate::proto::discovery::peer_discovery_server::PeerDiscoveryServer;
use crate::proto::heartbeat::peer_heartbeat_server::PeerHeartbeatServer;
use crate::proto::transaction::transaction_distribution_server::TransactionDistributionServer;
use sorcha_peer_core::model::PeerId;

pub use heartbeat::NOT_REGISTERED;

/// Largest discovery or heartbeat message accepted: 100 PeerInfo entries with registers fit in
/// well under this, and tonic refuses a larger one before allocating it.
const MAX_CONTROL_MESSAGE: usize = 256 * 1024;
/// Concurrent streams per HTTP/2 connection: one peer cannot hold more open.
const MAX_STREAMS_PER_CONNECTION: u32 = 256;
/// HTTP/2 pings on idle connections find dead peers behind silent NATs.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Health-check service names, as `grpc.health.v1` clients ask for them.
pub const SERVICE_NAMES: [&str; 4] = [
    "sorcha.peer.discovery.PeerDiscovery",
    "sorcha.peer.heartbeat.PeerHeartbeat",
    "sorcha.peer.transaction.TransactionDistribution",
    "sorcha.peer.communication.PeerCommunication",
];

/// What the peer port's services need from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct GrpcSettings {
    pub max_transaction_size: u32,
    /// Send transaction bodies compressed (zstd, else gzip) to peers that accept it.
    pub compress_bodies: bool,
}

/// Serves the peer port on `listener` until `shutdown` completes, then finishes in-flight calls.
pub async fn serve(
    listener: TcpListener,
    node: NodeHandle,
    health: tonic_health::server::HealthReporter,
    health_service: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    settings: GrpcSettings,
    queue: SharedQueue,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let max_transaction_size = settings.max_transaction_size;
    for name in SERVICE_NAMES.into_iter().chain([""]) {
        health
            .set_service_status(name, tonic_health::ServingStatus::Serving)
            .await;
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("invariant: the descriptor set was produced by build.rs from our own protos");
    let max_tx = max_transaction_size as usize + 64 * 1024;
    let mut transactions = TransactionDistributionServer::new(
        transaction::TransactionService::new(node.clone(), queue),
    )
    .max_decoding_message_size(max_tx)
    .accept_compressed(CompressionEncoding::Zstd)
    .accept_compressed(CompressionEncoding::Gzip);
    if settings.compress_bodies {
        // Bodies only: announcements are hashes, which do not compress.
        transactions = transactions
            .send_compressed(CompressionEncoding::Zstd)
            .send_compressed(CompressionEncoding::Gzip);
    }

    Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(
            PeerDiscoveryServer::new(discovery::DiscoveryService::new(
                node.clone(),
                max_transaction_size,
            ))
            .max_decoding_message_size(MAX_CONTROL_MESSAGE)
            .accept_compressed(CompressionEncoding::Zstd)
            .accept_compressed(CompressionEncoding::Gzip),
        )
        .add_service(
            PeerHeartbeatServer::new(heartbeat::HeartbeatService::new(node.clone()))
                .max_decoding_message_size(MAX_CONTROL_MESSAGE)
                .accept_compressed(CompressionEncoding::Zstd)
                .accept_compressed(CompressionEncoding::Gzip),
        )
        .add_service(transactions)
        .add_service(
            PeerCommunicationServer::new(communication::CommunicationService::new(node.clone()))
                .max_decoding_message_size(max_tx)
                .accept_compressed(CompressionEncoding::Zstd)
                .accept_compressed(CompressionEncoding::Gzip),
        )
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
}

/// Maps an actor failure to the status a peer should see.
fn handle_error(e: HandleError) -> Status {
    match e {
        HandleError::Busy => Status::resource_exhausted(e.to_string()),
        HandleError::Stopped => Status::unavailable(e.to_string()),
    }
}

/// A requester id from the wire, if it is a valid one (it only filters the caller out).
fn requester(raw: &str) -> Option<PeerId> {
    raw.parse().ok()
}
