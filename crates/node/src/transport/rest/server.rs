//! The REST fallback's endpoints. Each one decodes the JSON form of the rpc's request, calls the
//! same service implementation gRPC calls, and answers the JSON form of its response, so the two
//! transports cannot drift apart. A gRPC status becomes the HTTP status that means the same.
//!
//! | endpoint | rpc |
//! |---|---|
//! | `POST /api/v1/peers/register` | PeerDiscovery.RegisterPeer |
//! | `GET /api/v1/peers/list?requestingPeerId=&maxPeers=` | PeerDiscovery.GetPeerList |
//! | `GET /api/v1/peers/ping?peerId=` | PeerDiscovery.Ping |
//! | `POST /api/v1/peers/exchange` | PeerDiscovery.ExchangePeers (sorcha-peer extension) |
//! | `POST /api/v1/peers/heartbeat` | PeerHeartbeat.SendHeartbeat (sorcha-peer extension) |
//! | `POST /api/v1/transactions/notify` | TransactionDistribution.NotifyTransaction |
//! | `GET /api/v1/transactions/{hash}` (JSON) | TransactionDistribution.GetTransaction |
//! | `POST /api/v1/messages` | PeerCommunication.SendMessage (sorcha-peer extension) |

use std::sync::Arc;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, State};
use axum::http::{Extensions, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tonic::{Code, Status};

use crate::transport::grpc::Services;
use crate::transport::tls::ConnInfo;
use crate::wire::proto::communication::PeerMessage;
use crate::wire::proto::communication::peer_communication_server::PeerCommunication;
use crate::wire::proto::discovery::peer_discovery_server::PeerDiscovery;
use crate::wire::proto::discovery::{
    PeerExchangeRequest, PeerListRequest, PingRequest, RegisterPeerRequest,
};
use crate::wire::proto::heartbeat::PeerHeartbeatRequest;
use crate::wire::proto::heartbeat::peer_heartbeat_server::PeerHeartbeat;
use crate::wire::proto::transaction::transaction_distribution_server::TransactionDistribution;
use crate::wire::proto::transaction::{TransactionNotification, TransactionRequest};

/// The REST routes, for the peer port (where a transaction is always answered in JSON).
pub fn router(services: Arc<Services>, max_transaction_size: usize) -> Router {
    routes(max_transaction_size)
        .route("/api/v1/transactions/{hash}", get(transaction))
        .with_state(services)
}

/// The REST routes the HTTP port shares (it answers `GET /api/v1/transactions/{hash}` itself,
/// in JSON only when asked for it).
pub fn shared_routes(services: Arc<Services>, max_transaction_size: usize) -> Router {
    routes(max_transaction_size).with_state(services)
}

fn routes(max_transaction_size: usize) -> Router<Arc<Services>> {
    // Base64 makes a body a third larger; the rest of a message is small.
    let limit = max_transaction_size / 3 * 4 + 64 * 1024;
    Router::new()
        .route("/api/v1/peers/register", post(register))
        .route("/api/v1/peers/list", get(list))
        .route("/api/v1/peers/ping", get(ping))
        .route("/api/v1/peers/exchange", post(exchange))
        .route("/api/v1/peers/heartbeat", post(heartbeat))
        .route("/api/v1/transactions/notify", post(notify))
        .route("/api/v1/messages", post(message))
        .layer(DefaultBodyLimit::max(limit))
}

/// The service call for `message`, carrying what the connection proved (the peer port's
/// acceptor put a [`ConnInfo`] in the request; the HTTP port's server knows only the address).
fn rpc<T>(ext: &Extensions, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let info = ext.get::<ConnInfo>().cloned().or_else(|| {
        ext.get::<ConnectInfo<SocketAddr>>().map(|remote| ConnInfo {
            remote: Some(remote.0),
            proven: None,
            tls: false,
        })
    });
    if let Some(info) = info {
        request.extensions_mut().insert(info);
    }
    request
}

/// A gRPC answer as JSON, or its status as the matching HTTP status.
fn answer<T: serde::Serialize>(result: Result<tonic::Response<T>, Status>) -> Response {
    match result {
        Ok(response) => Json(response.into_inner()).into_response(),
        Err(status) => status_response(&status),
    }
}

pub fn status_response(status: &Status) -> Response {
    let code = match status.code() {
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::OutOfRange => StatusCode::PAYLOAD_TOO_LARGE,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    super::error(code, status.message())
}

async fn register(
    State(s): State<Arc<Services>>,
    ext: Extensions,
    Json(request): Json<RegisterPeerRequest>,
) -> Response {
    answer(s.discovery.register_peer(rpc(&ext, request)).await)
}

/// Query parameters in camelCase (the JSON mapping) or snake_case (the proto names).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ListQuery {
    #[serde(alias = "requesting_peer_id")]
    #[serde(rename = "requestingPeerId")]
    requesting_peer_id: String,
    #[serde(alias = "max_peers")]
    #[serde(rename = "maxPeers")]
    max_peers: i32,
}

async fn list(
    State(s): State<Arc<Services>>,
    ext: Extensions,
    Query(q): Query<ListQuery>,
) -> Response {
    let request = PeerListRequest {
        requesting_peer_id: q.requesting_peer_id,
        max_peers: q.max_peers,
    };
    answer(s.discovery.get_peer_list(rpc(&ext, request)).await)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PingQuery {
    #[serde(alias = "peer_id")]
    #[serde(rename = "peerId")]
    peer_id: String,
}

async fn ping(
    State(s): State<Arc<Services>>,
    ext: Extensions,
    Query(q): Query<PingQuery>,
) -> Response {
    let request = PingRequest { peer_id: q.peer_id };
    answer(s.discovery.ping(rpc(&ext, request)).await)
}

async fn exchange(
    State(s): State<Arc<Services>>,
    ext: Extensions,
    Json(request): Json<PeerExchangeRequest>,
) -> Response {
    answer(s.discovery.exchange_peers(rpc(&ext, request)).await)
}

async fn heartbeat(
    State(s): State<Arc<Services>>,
    ext: Extensions,
    Json(request): Json<PeerHeartbeatRequest>,
) -> Response {
    answer(s.heartbeat.send_heartbeat(rpc(&ext, request)).await)
}

async fn notify(
    State(s): State<Arc<Services>>,
    ext: Extensions,
    Json(request): Json<TransactionNotification>,
) -> Response {
    answer(s.transaction.notify_transaction(rpc(&ext, request)).await)
}

async fn message(
    State(s): State<Arc<Services>>,
    ext: Extensions,
    Json(request): Json<PeerMessage>,
) -> Response {
    answer(s.communication.send_message(rpc(&ext, request)).await)
}

/// `GetTransaction` as JSON (`transactionData` in base64; `found: false` for an unknown hash).
pub async fn transaction(
    State(s): State<Arc<Services>>,
    ext: Extensions,
    Path(hash): Path<String>,
) -> Response {
    let request = TransactionRequest {
        transaction_hash: hash,
        ..Default::default()
    };
    answer(s.transaction.get_transaction(rpc(&ext, request)).await)
}
