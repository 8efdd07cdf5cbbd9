//! The HTTP port: health, metrics, the node's status and the peer table; the operator's
//! actions (ping, ban, remove) need a loopback caller or the admin token (see [`admin`]).
//! The REST fallback (`transport::rest`) is served here too. The event log is read at
//! `/api/v1/events` ([`events`]); the operator's dashboard is `/admin` ([`dashboard`]).
//! Connections are accepted by `listen.rs` (caps, header-read and idle timeouts).

pub mod admin;
mod dashboard;
pub mod events;
mod listen;
mod peers;
mod transactions;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;

use crate::handle::{HandleError, NodeHandle};
use crate::store::queue::SharedQueue;
use crate::transport::grpc::Services;
use crate::transport::limits::conns::ConnLimits;
pub use crate::transport::rest::error;
use crate::transport::tls::connect::Dialer;

/// Largest request body on the HTTP port until endpoints that take bodies arrive.
const MAX_BODY: usize = 64 * 1024;

/// What every HTTP handler reads: one shared value, so the per-request clones axum makes are
/// one reference count. Cloned field by field, they were ~15 atomic reference counts per clone,
/// contended between the runtime's threads: dropping them was 1 % of a node's CPU in
/// `peer-lab run throughput` (session 11).
#[derive(Clone)]
pub struct HttpState(Arc<HttpShared>);

impl HttpState {
    pub fn new(shared: HttpShared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for HttpState {
    type Target = HttpShared;

    fn deref(&self) -> &HttpShared {
        &self.0
    }
}

pub struct HttpShared {
    pub node: NodeHandle,
    /// True once both listeners and the storage are up; false again as shutdown begins.
    pub ready: Arc<AtomicBool>,
    /// What non-loopback callers of admin endpoints must present.
    pub admin_token: Arc<str>,
    /// Largest transaction body accepted.
    pub max_transaction_size: usize,
    /// Where submissions wait while the node is Offline.
    pub queue: SharedQueue,
    /// The rpc implementations, for the REST fallback.
    pub services: Arc<Services>,
    /// Anyone may submit (`api.open_submission`); else only loopback and token holders.
    pub open_submission: bool,
    /// How the admin API's own calls to peers (ping) dial them: over TLS when the node
    /// uses it, accepting only the certificate of the peer pinged.
    pub dialer: Arc<Dialer>,
}

/// `POST /api/v1/transactions`, behind the admin check unless submission is open.
fn submission(state: &HttpState) -> axum::routing::MethodRouter<HttpState> {
    let submit = post(transactions::submit);
    if state.open_submission {
        submit
    } else {
        submit.route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            admin::require_admin,
        ))
    }
}

pub fn router(state: HttpState) -> Router {
    let admin = || axum::middleware::from_fn_with_state(state.clone(), admin::require_admin);
    Router::new()
        .route("/api/v1/peers", get(peers::list))
        .route(
            "/api/v1/peers/{id}",
            get(peers::one).merge(delete(peers::remove).route_layer(admin())),
        )
        .route(
            "/api/v1/peers/{id}/ban",
            post(peers::ban).delete(peers::unban).route_layer(admin()),
        )
        .route(
            "/api/v1/peers/{id}/ping",
            post(peers::ping).route_layer(admin()),
        )
        .route(
            "/api/v1/transactions",
            get(transactions::list)
                .merge(submission(&state))
                .layer(DefaultBodyLimit::max(
                    // One byte over the limit still reaches the handler, which answers 413 in JSON.
                    state.max_transaction_size + 1,
                )),
        )
        .route("/api/v1/transactions/stream", get(transactions::stream))
        .route("/api/v1/queue", get(transactions::queue_status))
        .route("/api/v1/transactions/{hash}", get(transactions::get))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/api/v1/status", get(status))
        .route("/api/v1/events", get(events::list))
        .route("/api/v1/events/stream", get(events::stream))
        .merge(dashboard::routes())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Serves the HTTP port on `listener` within its connection `limits` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    state: HttpState,
    limits: Arc<ConnLimits>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let rest = crate::transport::rest::server::shared_routes(
        state.services.clone(),
        state.max_transaction_size,
    );
    let app = router(state).merge(rest);
    listen::serve(listener, app, limits, shutdown).await
}

async fn live() -> Json<serde_json::Value> {
    Json(json!({ "status": "live" }))
}

async fn ready(State(state): State<HttpState>) -> Response {
    if state.ready.load(Ordering::Acquire) {
        Json(json!({ "status": "ready" })).into_response()
    } else {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: starting or shutting down",
        )
    }
}

async fn metrics(State(state): State<HttpState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.node.metrics().render(),
    )
        .into_response()
}

async fn status(State(state): State<HttpState>) -> Response {
    match state.node.status().await {
        Ok(mut status) => {
            status.queue_size = state.queue.pending();
            Json(status).into_response()
        }
        Err(e) => handle_error(e),
    }
}

async fn not_found(method: Method, uri: Uri) -> Response {
    error(
        StatusCode::NOT_FOUND,
        &format!("no route for {method} {}", uri.path()),
    )
}

pub(crate) fn handle_error(e: HandleError) -> Response {
    match e {
        HandleError::Busy => error(StatusCode::TOO_MANY_REQUESTS, &e.to_string()),
        HandleError::Stopped => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}
