//! `/admin`: the operator's dashboard, served by the node itself. The page, its style and its
//! script are files beside this one, embedded in the binary (`include_str!`): no build step,
//! no CDN, works offline. The script is ours, plain JavaScript; it draws its charts itself.
//!
//! The page opens one server-sent-event stream, `/admin/stream`: a `snapshot` every
//! [`TICK`] (status, counters, the queue; the peer table every [`PEERS_EVERY`] ticks) and every
//! new `event` of the log (after the newest [`BACKLOG`] ones). Its buttons call the admin API
//! (`/api/v1/peers/{id}/...`), which asks a caller off loopback for the admin token.
//! `snapshot.rs`: what a snapshot carries, and the counters read from the metrics.

mod snapshot;

use std::convert::Infallible;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::{Stream, StreamExt};

use super::HttpState;
use super::events::{follow, shutting_down};
use crate::telemetry::events::Filter;

/// How often a snapshot goes out: the charts' resolution.
pub const TICK: Duration = Duration::from_secs(1);
/// The peer table (the bulk of a snapshot, ~300 bytes a peer) goes out every this many ticks.
const PEERS_EVERY: u64 = 2;
/// Events a new page gets from before it opened.
const BACKLOG: usize = 200;

const PAGE: &str = include_str!("admin.html");
const SCRIPT: &str = include_str!("admin.js");
const STYLE: &str = include_str!("admin.css");

/// When the HTTP port started serving, for the uptime shown.
static STARTED: OnceLock<Instant> = OnceLock::new();

/// The dashboard's routes.
pub fn routes() -> Router<HttpState> {
    STARTED.get_or_init(Instant::now);
    Router::new()
        .route("/admin", get(page))
        .route("/admin/", get(page))
        .route("/admin/app.js", get(script))
        .route("/admin/app.css", get(style))
        .route("/admin/stream", get(stream))
}

async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// Snapshots on a timer, merged with the event log's backlog and live events.
async fn stream(
    State(state): State<HttpState>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let ready = state.ready.clone();
    let log = state.node.events().clone();
    let from = log.next_seq().saturating_sub(BACKLOG as u64 + 1);
    let events = follow(
        log,
        Filter {
            after_seq: Some(from),
            ..Default::default()
        },
    );
    let started = *STARTED.get_or_init(Instant::now);
    let ticks = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(TICK));
    let snapshots = ticks.enumerate().then(move |(n, _)| {
        let state = state.clone();
        async move {
            let with_peers = (n as u64).is_multiple_of(PEERS_EVERY);
            let snapshot = snapshot::take(&state, started, with_peers).await;
            let data = serde_json::to_string(&snapshot).unwrap_or_default();
            Ok(SseEvent::default().event("snapshot").data(data))
        }
    });
    let merged = futures::stream::select(snapshots, events).take_until(shutting_down(ready));
    Sse::new(merged).keep_alive(KeepAlive::default())
}
