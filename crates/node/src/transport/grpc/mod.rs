//! The peer port: the four services of the wire contract, `grpc.health.v1` and reflection.

pub mod communication;
pub mod discovery;
pub mod heartbeat;
pub mod transaction;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tonic::Status;
use tonic::codec::CompressionEncoding;
use tonic::service::Routes;
use tonic::transport::Server;

use crate::handle::{HandleError, NodeHandle};
use crate::store::queue::SharedQueue;
use crate::transport::limits::Limiter;
use crate::transport::limits::upload::UploadBudget;
use crate::transport::tls::accept::PeerConn;
use crate::wire::proto::communication::peer_communication_server::PeerCommunicationServer;
use crate::wire::proto::discovery::peer_discovery_server::PeerDiscoveryServer;
use crate::wire::proto::heartbeat::peer_heartbeat_server::PeerHeartbeatServer;
use crate::wire::proto::transaction::transaction_distribution_server::TransactionDistributionServer;
use sorcha_peer_core::model::PeerId;

/// Largest discovery or heartbeat message accepted: 100 PeerInfo entries with registers fit in
/// well under this, and tonic refuses a larger one before allocating it.
const MAX_CONTROL_MESSAGE: usize = 256 * 1024;
/// Concurrent streams per HTTP/2 connection: one peer cannot hold more open.
const MAX_STREAMS_PER_CONNECTION: u32 = 256;
/// HTTP/2 pings on idle connections find dead peers behind silent NATs.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 flow-control windows: what one stream, and one connection, can have in flight to us
/// unread (hyper's defaults, stated: they bound what a peer's stream can queue at us).
const STREAM_WINDOW: u32 = 1024 * 1024;
const CONNECTION_WINDOW: u32 = 1024 * 1024;

/// Health-check service names, as `grpc.health.v1` clients ask for them.
pub const SERVICE_NAMES: [&str; 4] = [
    "sorcha.peer.discovery.PeerDiscovery",
    "sorcha.peer.heartbeat.PeerHeartbeat",
    "sorcha.peer.transaction.TransactionDistribution",
    "sorcha.peer.communication.PeerCommunication",
];

/// What the peer port's services need from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct PeerPortSettings {
    pub max_transaction_size: u32,
    /// Send transaction bodies compressed (zstd, else gzip) to peers that accept it.
    pub compress_bodies: bool,
    /// Serve the gRPC services (the unary rpcs).
    pub grpc: bool,
    /// Serve `PeerCommunication.Stream` (needs `grpc`).
    pub stream: bool,
    /// Serve the REST fallback on this port too (HTTP/1.1 beside gRPC's HTTP/2).
    pub rest: bool,
}

/// The implementations of the four services, shared by gRPC and the REST fallback.
pub struct Services {
    pub discovery: Arc<discovery::DiscoveryService>,
    pub heartbeat: Arc<heartbeat::HeartbeatService>,
    pub transaction: Arc<transaction::TransactionService>,
    pub communication: Arc<communication::CommunicationService>,
}

impl Services {
    /// The services, each calling `node`, limited by `limiter` and sending bodies within
    /// `upload`.
    pub fn new(
        node: NodeHandle,
        queue: SharedQueue,
        settings: &PeerPortSettings,
        (limiter, upload): (Arc<Limiter>, Arc<UploadBudget>),
    ) -> Self {
        let transaction = Arc::new(transaction::TransactionService::new(
            node.clone(),
            queue,
            (limiter.clone(), upload),
            settings.max_transaction_size,
        ));
        Self {
            discovery: Arc::new(discovery::DiscoveryService::new(
                node.clone(),
                settings.max_transaction_size,
                limiter.clone(),
            )),
            heartbeat: Arc::new(heartbeat::HeartbeatService::new(node.clone(), limiter)),
            transaction: transaction.clone(),
            communication: Arc::new(communication::CommunicationService::new(
                node,
                transaction,
                settings.stream,
            )),
        }
    }
}

/// A generated server that reads messages up to `$max` bytes, compressed or not. (A macro: each
/// generated server is its own type with these methods, and no trait names them.)
macro_rules! accepting {
    ($server:expr, $max:expr) => {
        $server
            .max_decoding_message_size($max)
            .accept_compressed(CompressionEncoding::Zstd)
            .accept_compressed(CompressionEncoding::Gzip)
    };
}

/// `TransactionDistribution`, sending bodies compressed when `compress` is set (bodies only:
/// announcements are hashes, which do not compress).
fn transaction_server(
    services: &Services,
    max_message: usize,
    compress: bool,
) -> TransactionDistributionServer<transaction::TransactionService> {
    let server = accepting!(
        TransactionDistributionServer::from_arc(services.transaction.clone()),
        max_message
    );
    if compress {
        server
            .send_compressed(CompressionEncoding::Zstd)
            .send_compressed(CompressionEncoding::Gzip)
    } else {
        server
    }
}

/// Serves the peer port on `listener` until `shutdown` completes, then finishes in-flight calls:
/// gRPC (and, when configured, the REST fallback beside it), or only REST.
pub async fn serve(
    incoming: impl futures::Stream<Item = std::io::Result<PeerConn>> + Send + 'static,
    services: Arc<Services>,
    health: tonic_health::server::HealthReporter,
    health_service: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    settings: PeerPortSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let max_tx = settings.max_transaction_size as usize;
    let rest = crate::transport::rest::server::router(services.clone(), max_tx);
    if !settings.grpc {
        // REST only: HTTP/1.1 (and HTTP/2) to the REST routes; a gRPC call finds no route
        // and its caller sees UNIMPLEMENTED.
        return Server::builder()
            .accept_http1(true)
            .add_routes(Routes::from(rest))
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
            .map_err(|e| e.to_string());
    }
    for name in SERVICE_NAMES.into_iter().chain([""]) {
        health
            .set_service_status(name, tonic_health::ServingStatus::Serving)
            .await;
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::wire::proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("invariant: the descriptor set was produced by build.rs from our own protos");
    // The REST routes answer HTTP/1.1 requests; gRPC's services are added on top of them.
    let routes = if settings.rest {
        Routes::from(rest)
    } else {
        Routes::default()
    };
    let max_message = max_tx + 64 * 1024;
    Server::builder()
        .accept_http1(settings.rest)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .add_routes(routes)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(accepting!(
            PeerDiscoveryServer::from_arc(services.discovery.clone()),
            MAX_CONTROL_MESSAGE
        ))
        .add_service(accepting!(
            PeerHeartbeatServer::from_arc(services.heartbeat.clone()),
            MAX_CONTROL_MESSAGE
        ))
        .add_service(transaction_server(
            &services,
            max_message,
            settings.compress_bodies,
        ))
        .add_service(accepting!(
            PeerCommunicationServer::from_arc(services.communication.clone()),
            max_message
        ))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| e.to_string())
}

/// Turns Nagle's algorithm off on an accepted connection. Without it a gRPC answer's trailers
/// (a small frame right after the headers and data) wait for the client's delayed ACK: one
/// GetTransaction took ~40 ms on loopback and a single peer could pull only ~250 bodies per
/// second (`peer-lab run queue`). `Server::tcp_nodelay` does not apply to connections we
/// accept ourselves (the peer port's acceptor, the HTTP port).
pub(crate) fn no_delay(stream: &mut tokio::net::TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY on an accepted connection");
    }
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
