//! The HTTP port: health, metrics and the node's status (the REST fallback, admin API and
//! dashboard join it with their issues).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;

use crate::actor::{HandleError, NodeHandle};

/// Largest request body on the HTTP port until endpoints that take bodies arrive.
const MAX_BODY: usize = 64 * 1024;

#[derive(Clone)]
pub struct HttpState {
    pub node: NodeHandle,
    /// True once both listeners and the storage are up; false again as shutdown begins.
    pub ready: Arc<AtomicBool>,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/api/v1/status", get(status))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

pub async fn serve(
    listener: TcpListener,
    state: HttpState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
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
        Ok(status) => Json(status).into_response(),
        Err(e) => handle_error(e),
    }
}

async fn not_found(method: Method, uri: Uri) -> Response {
    error(
        StatusCode::NOT_FOUND,
        &format!("no route for {method} {}", uri.path()),
    )
}

fn handle_error(e: HandleError) -> Response {
    match e {
        HandleError::Busy => error(StatusCode::TOO_MANY_REQUESTS, &e.to_string()),
        HandleError::Stopped => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

/// Every error on the HTTP port is JSON `{"error": "..."}` with a fitting status.
pub fn error(code: StatusCode, message: &str) -> Response {
    (code, Json(json!({ "error": message }))).into_response()
}
