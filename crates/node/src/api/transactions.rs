//! `/api/v1/transactions`: submit, read, list, and the live stream of new transactions.

use std::convert::Infallible;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::json;
use sorcha_peer_core::gossip::SubmitError;
use sorcha_peer_core::model::{NodeState, TxHash};
use tokio::sync::broadcast::error::RecvError;

use super::{HttpState, error, handle_error};
use crate::clock::now;
use crate::handle::LookupError;
use crate::store::durable::{DurableError, NewTx};
use crate::telemetry::events::EventKind;

/// Most transactions one listing returns.
const MAX_PAGE: usize = 1000;

#[derive(Debug, Deserialize)]
pub struct SubmitQuery {
    register_id: Option<String>,
}

/// `POST /api/v1/transactions`: the raw body is the transaction; the register id comes from
/// `?register_id=` or the `X-Register-Id` header.
pub async fn submit(
    State(state): State<HttpState>,
    Query(q): Query<SubmitQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if body.len() > state.max_transaction_size {
        let message = format!(
            "transaction of {} bytes is too large: at most {} bytes (distribution.max_transaction_size)",
            body.len(),
            state.max_transaction_size
        );
        return error(StatusCode::PAYLOAD_TOO_LARGE, &message);
    }
    let register_id = register_of(q, &headers);
    if body.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "empty transaction: send the transaction bytes as the request body",
        );
    }
    let offline = *state.node.state().borrow() == NodeState::Offline;
    let hash = TxHash::of(&body);
    let tx = NewTx {
        hash,
        body: body.to_vec().into(),
        register_id: register_id.clone(),
        origin: "local".to_owned(),
        first_seen: now(),
    };
    // Committed before anything is acknowledged; handed to gossip while the commit runs (a
    // node with peers), so the first hops do not wait for the disk: the answer still waits
    // for both. A saturated store refuses before gossip; should the commit itself fail, the
    // client hears so, and peers that already took the transaction keep it: it was never
    // acknowledged, and a retry is answered `new: false`.
    let commit = match state.node.db().begin_put(tx, offline) {
        Ok(commit) => commit,
        Err(e) => return store_error(&state, e),
    };
    let gossip = async {
        if offline {
            return None;
        }
        Some(state.node.submit(body.to_vec(), register_id.clone()).await)
    };
    let (stored, submitted) = tokio::join!(commit, gossip);
    let stored = match stored {
        Ok(stored) => stored,
        Err(e) => return store_error(&state, e),
    };
    let Some(submitted) = submitted else {
        if stored {
            cache(&state, hash, &body, register_id);
        }
        return queued(&state, hash, stored);
    };
    match submitted {
        Ok(Ok(submitted)) => {
            let code = if submitted.new {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (code, Json(submitted)).into_response()
        }
        Ok(Err(e @ SubmitError::TooLarge { .. })) => {
            error(StatusCode::PAYLOAD_TOO_LARGE, &e.to_string())
        }
        Ok(Err(e)) => error(StatusCode::BAD_REQUEST, &e.to_string()),
        Err(e) => handle_error(e),
    }
}

/// The register id from `?register_id=`, else the `X-Register-Id` header; empty is none.
fn register_of(q: SubmitQuery, headers: &HeaderMap) -> Option<String> {
    let header = headers
        .get("x-register-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    q.register_id.or(header).filter(|r| !r.is_empty())
}

/// A queued transaction is listed with the rest at once (reads by hash find it in the store
/// anyway); gossip caches it when the queue is flushed.
fn cache(state: &HttpState, hash: TxHash, body: &[u8], register_id: Option<String>) {
    if let Ok(mut cache) = state.node.transactions().lock() {
        cache.insert(hash, body.to_vec(), register_id, "local".into(), now());
    }
}

/// No healthy peer: the transaction waits, durably, in the offline queue (202); one known
/// already is answered `new: false` and nothing else.
fn queued(state: &HttpState, hash: TxHash, new: bool) -> Response {
    state
        .node
        .metrics()
        .transaction_queue_size
        .record(state.queue.pending() as i64, &[]);
    let answer = if new {
        json!({ "hash": hash.to_string(), "new": true, "queued": true, "announced_to": 0 })
    } else {
        json!({ "hash": hash.to_string(), "new": false })
    };
    let code = if new {
        let detail = format!("{hash}: no healthy peer, kept until one appears");
        state
            .node
            .events()
            .record(EventKind::TxQueued, None, detail);
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    (code, Json(answer)).into_response()
}

fn store_error(state: &HttpState, e: DurableError) -> Response {
    match e {
        DurableError::QueueFull(_) => {
            state.node.metrics().queue_refused_total.add(1, &[]);
            let detail = e.to_string();
            state
                .node
                .events()
                .limit_hit("offline_queue", None, &detail);
            error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())
        }
        DurableError::Busy | DurableError::Stopped => {
            error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())
        }
        DurableError::Open { .. } | DurableError::Sql { .. } => {
            tracing::error!(error = %e, "transaction store write failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())
        }
    }
}

/// `GET /api/v1/queue`: the offline queue's size and its dead letters.
pub async fn queue_status(State(state): State<HttpState>) -> Response {
    let db = state.queue.clone();
    let dead = tokio::task::spawn_blocking(move || db.dead_letters(MAX_PAGE))
        .await
        .unwrap_or(Err(DurableError::Stopped));
    match dead {
        Ok(dead) => {
            Json(json!({ "size": state.queue.pending(), "dead_letters": dead })).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// `GET /api/v1/transactions/{hash}` (the whole hash, or its first half, the id our peers pull
/// by): the raw body, with its register id in a header; a peer
/// asking for JSON (`Accept: application/json`, the REST fallback) gets `GetTransaction`'s
/// answer instead.
pub async fn get(
    State(state): State<HttpState>,
    Path(hash): Path<String>,
    headers: HeaderMap,
) -> Response {
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    if wants_json {
        return crate::transport::rest::server::transaction(
            State(state.services.clone()),
            axum::http::Extensions::new(),
            Path(hash),
        )
        .await;
    }
    let stored = match state.node.find_transaction(&hash) {
        Ok(stored) => stored,
        Err(e @ LookupError::Name(_)) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
        Err(e @ LookupError::Store(_)) => {
            return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
        }
    };
    let Some(tx) = stored else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("transaction {hash} is not known"),
        );
    };
    let mut response = (
        [(header::CONTENT_TYPE, "application/octet-stream")],
        tx.body.to_vec(),
    )
        .into_response();
    let headers = response.headers_mut();
    if let Some(register) = tx.register_id.as_deref().and_then(|r| r.parse().ok()) {
        headers.insert("x-register-id", register);
    }
    if let Ok(origin) = tx.origin.parse() {
        headers.insert("x-origin", origin);
    }
    response
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    offset: Option<usize>,
    limit: Option<usize>,
}

/// `GET /api/v1/transactions?offset=&limit=`: known transactions, oldest first.
pub async fn list(State(state): State<HttpState>, Query(q): Query<ListQuery>) -> Response {
    let offset = q.offset.unwrap_or(0);
    let limit = q.limit.unwrap_or(100).min(MAX_PAGE);
    match state.node.transactions().lock() {
        Ok(store) => Json(json!({
            "total": store.len(),
            "offset": offset,
            "transactions": store.page(offset, limit),
        }))
        .into_response(),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "transaction store unavailable",
        ),
    }
}

/// `GET /api/v1/transactions/stream`: server-sent events, one `transaction` event per new
/// transaction (`{"hash", "register_id", "size", "at_us", "from", "how", "hops"}`: `at_us`
/// when this node took it, microseconds since the Unix epoch; the peer it came from, null when
/// submitted here; how, `submitted`, `pushed`, `pulled` or `repaired`; hops travelled); a
/// subscriber too slow to keep up gets a `lagged` event saying how many it missed.
pub async fn stream(
    State(state): State<HttpState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let receiver = state.node.subscribe();
    let metrics = state.node.metrics().clone();
    let events = futures::stream::unfold(receiver, move |mut receiver| {
        let metrics = metrics.clone();
        async move {
            let event = match receiver.recv().await {
                Ok(delivered) => Event::default()
                    .event("transaction")
                    .json_data(&delivered)
                    .ok()?,
                Err(RecvError::Lagged(missed)) => {
                    metrics.subscriber_lagged_total.add(missed, &[]);
                    Event::default().event("lagged").data(missed.to_string())
                }
                Err(RecvError::Closed) => return None,
            };
            Some((Ok(event), receiver))
        }
    });
    // Ends at shutdown, so the HTTP server's graceful shutdown does not wait on subscribers.
    let events = events.take_until(state.node.stopping());
    Sse::new(events).keep_alive(KeepAlive::default())
}
