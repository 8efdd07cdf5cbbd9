//! `/api/v1/peers`: the peer table, and the operator's ping, ban and remove.

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use sorcha_peer_core::model::{ModelError, PeerId};
use tonic::transport::Endpoint;

use super::{HttpState, error, handle_error};
use crate::clock::now;
use crate::wire::proto::discovery::PingRequest;
use crate::wire::proto::discovery::peer_discovery_client::PeerDiscoveryClient;

/// A ban without a duration lasts this long: long enough to stop an abusive peer, short
/// enough that a mistaken ban heals without an operator.
const DEFAULT_BAN: Duration = Duration::from_secs(24 * 3600);
/// Operator pings give up after this.
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// A peer id from the path, refused with 400 and the reason when it is not a valid id.
pub struct PeerIdPath(PeerId);

impl<S: Send + Sync> FromRequestParts<S> for PeerIdPath {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        raw.parse()
            .map(PeerIdPath)
            .map_err(|e: ModelError| error(StatusCode::BAD_REQUEST, &e.to_string()))
    }
}

pub async fn list(State(state): State<HttpState>) -> Response {
    match state.node.peers().await {
        Ok(mut peers) => {
            peers.sort_by(|a, b| b.active.cmp(&a.active).then(a.peer_id.cmp(&b.peer_id)));
            Json(json!({ "peers": peers, "total": peers.len() })).into_response()
        }
        Err(e) => handle_error(e),
    }
}

pub async fn one(State(state): State<HttpState>, PeerIdPath(id): PeerIdPath) -> Response {
    match state.node.peers().await {
        Ok(peers) => match peers.into_iter().find(|p| p.peer_id == id.as_str()) {
            Some(peer) => Json(peer).into_response(),
            None => error(StatusCode::NOT_FOUND, &format!("peer {id} is not known")),
        },
        Err(e) => handle_error(e),
    }
}

#[derive(Debug, Deserialize)]
pub struct BanQuery {
    /// "30m", "24h", ...; default 24 h.
    duration: Option<String>,
}

pub async fn ban(
    State(state): State<HttpState>,
    PeerIdPath(id): PeerIdPath,
    Query(q): Query<BanQuery>,
) -> Response {
    let duration = match q.duration.as_deref().map(humantime::parse_duration) {
        None => DEFAULT_BAN,
        Some(Ok(d)) if !d.is_zero() => d,
        Some(_) => {
            let message = "duration: expected a positive duration such as 30m or 24h";
            return error(StatusCode::BAD_REQUEST, message);
        }
    };
    let until = now().saturating_add(duration);
    match state.node.ban(id.clone(), Some(until)).await {
        Ok(true) => {
            tracing::info!(peer = %id, ?duration, "peer banned by the operator");
            Json(json!({ "peer_id": id, "banned_until": until.as_millis() })).into_response()
        }
        Ok(false) => error(StatusCode::INSUFFICIENT_STORAGE, "the ban list is full"),
        Err(e) => handle_error(e),
    }
}

pub async fn unban(State(state): State<HttpState>, PeerIdPath(id): PeerIdPath) -> Response {
    match state.node.ban(id.clone(), None).await {
        Ok(_) => {
            tracing::info!(peer = %id, "peer unbanned by the operator");
            Json(json!({ "peer_id": id, "banned_until": null })).into_response()
        }
        Err(e) => handle_error(e),
    }
}

pub async fn remove(State(state): State<HttpState>, PeerIdPath(id): PeerIdPath) -> Response {
    match state.node.remove(id.clone()).await {
        Ok(true) => Json(json!({ "peer_id": id, "removed": true })).into_response(),
        Ok(false) => error(StatusCode::NOT_FOUND, &format!("peer {id} is not known")),
        Err(e) => handle_error(e),
    }
}

/// Pings the peer now, over gRPC (TLS, accepting only that peer's certificate, unless the node
/// runs plaintext), and reports the round trip.
pub async fn ping(State(state): State<HttpState>, PeerIdPath(id): PeerIdPath) -> Response {
    let peer = match state.node.peers().await {
        Ok(peers) => peers.into_iter().find(|p| p.peer_id == id.as_str()),
        Err(e) => return handle_error(e),
    };
    let Some(peer) = peer else {
        return error(StatusCode::NOT_FOUND, &format!("peer {id} is not known"));
    };
    let host = if peer.address.contains(':') {
        format!("[{}]", peer.address)
    } else {
        peer.address.clone()
    };
    let started = Instant::now();
    let result = tokio::time::timeout(PING_TIMEOUT, async {
        let channel = Endpoint::from_shared(format!("http://{host}:{}", peer.port))
            .map_err(|e| e.to_string())?
            .connect_with_connector(state.dialer.connector(Some(id.clone())))
            .await
            .map_err(|e| format!("{e}: {}", source_chain(&e)))?;
        let mut client = PeerDiscoveryClient::new(channel);
        let request = PingRequest {
            peer_id: state.node.peer_id().to_string(),
        };
        client
            .ping(request)
            .await
            .map_err(|s| s.message().to_owned())
    })
    .await;
    match result {
        Ok(Ok(pong)) => Json(json!({
            "peer_id": id,
            "reachable": true,
            "rtt_ms": started.elapsed().as_secs_f64() * 1000.0,
            "answered_as": pong.into_inner().peer_id,
        }))
        .into_response(),
        Ok(Err(e)) => {
            Json(json!({ "peer_id": id, "reachable": false, "error": e })).into_response()
        }
        Err(_) => {
            Json(json!({ "peer_id": id, "reachable": false, "error": "timed out" })).into_response()
        }
    }
}

/// The causes under a transport error (tonic's own message is only "transport error").
fn source_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut causes = Vec::new();
    let mut next = e.source();
    while let Some(cause) = next {
        causes.push(cause.to_string());
        next = cause.source();
    }
    causes.join(": ")
}
