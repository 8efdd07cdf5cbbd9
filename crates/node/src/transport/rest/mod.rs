//! The REST fallback: the wire contract's messages as JSON over HTTP/1.1, for peers that cannot
//! speak gRPC. [`server`] serves it (on the HTTP port, and on the peer port beside gRPC);
//! [`client`] reaches peers that only speak it.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

pub mod client;
pub mod server;

/// Every error on the HTTP port and the REST fallback is JSON `{"error": "..."}` with a fitting status.
pub fn error(code: StatusCode, message: &str) -> Response {
    (code, Json(json!({ "error": message }))).into_response()
}
