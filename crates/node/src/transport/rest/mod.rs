//! The REST fallback: the wire contract's messages as JSON over HTTP/1.1, for peers that cannot
//! speak gRPC. [`server`] serves it (on the HTTP port, and on the peer port beside gRPC);
//! [`client`] reaches peers that only speak it.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

pub mod client;
pub mod server;

/// `bytes` fields as base64 strings, as the proto JSON mapping writes them.
pub mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD
            .decode(text.as_bytes())
            .map_err(|e| serde::de::Error::custom(format!("not base64: {e}")))
    }
}

/// Every error on the HTTP port and the REST fallback is JSON `{"error": "..."}` with a fitting status.
pub fn error(code: StatusCode, message: &str) -> Response {
    (code, Json(json!({ "error": message }))).into_response()
}
