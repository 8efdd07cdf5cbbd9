//! `/api/v1/events`: the event log, read back (`?since=&kind=&peer=&limit=`) or followed live
//! over server-sent events (`/api/v1/events/stream`, same filters, resumable with
//! `Last-Event-ID`). Bad parameters get a 400 naming the parameter, the value and what is
//! allowed.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use serde_json::json;
use sorcha_peer_core::model::PeerId;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use super::{HttpState, error};
use crate::clock::now;
use crate::telemetry::EventLog;
use crate::telemetry::events::{Event, EventKind, Filter};

/// Most events one read returns.
pub const MAX_LIMIT: usize = 1000;
/// Events one read returns unless `limit` says otherwise.
const DEFAULT_LIMIT: usize = 100;

/// The query parameters a read or a stream understands.
const PARAMS: [&str; 4] = ["since", "kind", "peer", "limit"];

/// `GET /api/v1/events`: matching events, oldest first, and where to resume.
pub async fn list(
    State(state): State<HttpState>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let (filter, limit) = match parse(&params) {
        Ok(parsed) => parsed,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    let log = state.node.events();
    let events = log.query(&filter, limit);
    Json(json!({
        "events": events,
        "next_seq": log.next_seq(),
        "capacity": log.capacity(),
    }))
    .into_response()
}

/// Parses `since`, `kind`, `peer` and `limit`; an unknown parameter is refused too, so a typo
/// never silently widens a filter.
pub fn parse(params: &HashMap<String, String>) -> Result<(Filter, usize), String> {
    if let Some(unknown) = params.keys().find(|k| !PARAMS.contains(&k.as_str())) {
        return Err(format!(
            "unknown parameter {unknown:?}: expected {}",
            PARAMS.join(", ")
        ));
    }
    let mut filter = Filter::default();
    if let Some(raw) = params.get("since").filter(|s| !s.is_empty()) {
        parse_since(raw, &mut filter)?;
    }
    if let Some(raw) = params.get("kind").filter(|s| !s.is_empty()) {
        filter.kinds = raw
            .split(',')
            .map(|k| k.trim().parse::<EventKind>())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("kind: {e}"))?;
    }
    if let Some(raw) = params.get("peer").filter(|s| !s.is_empty()) {
        let id: PeerId = raw.parse().map_err(|e| format!("peer: {e}"))?;
        filter.peer = Some(id.to_string());
    }
    let limit = match params.get("limit") {
        None => DEFAULT_LIMIT,
        Some(raw) => match raw.parse::<usize>() {
            Ok(n @ 1..=MAX_LIMIT) => n,
            _ => return Err(format!("limit: expected 1 to {MAX_LIMIT}, got {raw:?}")),
        },
    };
    Ok((filter, limit))
}

/// `since` is a sequence number (events after it) or a duration (events of the last ...).
fn parse_since(raw: &str, filter: &mut Filter) -> Result<(), String> {
    if let Ok(seq) = raw.parse::<u64>() {
        filter.after_seq = Some(seq);
        return Ok(());
    }
    match humantime::parse_duration(raw) {
        Ok(window) => {
            let from = now().as_millis().saturating_sub(window.as_millis() as u64);
            filter.from_time = Some(from);
            Ok(())
        }
        Err(_) => Err(format!(
            "since: expected a sequence number (events after it) or a duration such as 5m (events of the last 5 minutes), got {raw:?}"
        )),
    }
}

/// `GET /api/v1/events/stream`: the matching backlog (with `since` or `Last-Event-ID`), then
/// every matching event as it happens: SSE `event` messages whose id is the sequence number;
/// a reader too slow to keep up gets a `lagged` message with how many it missed.
pub async fn stream(
    State(state): State<HttpState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let (mut filter, _) = match parse(&params) {
        Ok(parsed) => parsed,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    if let Some(last) = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        filter.after_seq = Some(last);
    }
    let log = state.node.events().clone();
    let events = follow(log, filter).take_until(shutting_down(state.ready.clone()));
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// How often a stream checks whether the node is shutting down.
const SHUTDOWN_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// Resolves once the node stops being ready (shutdown began), so endless streams end and the
/// HTTP server's graceful shutdown is not held up for its whole grace.
pub async fn shutting_down(ready: Arc<std::sync::atomic::AtomicBool>) {
    while ready.load(std::sync::atomic::Ordering::Acquire) {
        tokio::time::sleep(SHUTDOWN_POLL).await;
    }
}

/// What one reader has left to send.
struct Follower {
    log: Arc<EventLog>,
    live: broadcast::Receiver<Event>,
    backlog: VecDeque<Event>,
    filter: Filter,
    /// The last sequence number sent: live events the backlog already carried are skipped.
    sent: u64,
}

/// The backlog the filter asks for (none without `since`), then live events.
pub fn follow(
    log: Arc<EventLog>,
    filter: Filter,
) -> impl Stream<Item = Result<SseEvent, Infallible>> + Send + 'static {
    // Subscribed before the backlog is read, so nothing falls between the two.
    let live = log.subscribe();
    let wants_backlog = filter.after_seq.is_some() || filter.from_time.is_some();
    let backlog: VecDeque<Event> = if wants_backlog {
        log.query(&filter, log.capacity()).into()
    } else {
        VecDeque::new()
    };
    let sent = backlog
        .back()
        .map_or(log.next_seq().saturating_sub(1), |e| e.seq);
    let follower = Follower {
        log,
        live,
        backlog,
        filter,
        sent,
    };
    futures::stream::unfold(follower, |mut f| async move {
        let message = f.next().await?;
        Some((Ok(message), f))
    })
}

impl Follower {
    async fn next(&mut self) -> Option<SseEvent> {
        if let Some(event) = self.backlog.pop_front() {
            self.sent = event.seq;
            return Some(message(&event));
        }
        loop {
            match self.live.recv().await {
                Ok(event) if event.seq > self.sent && self.filter.matches(&event) => {
                    self.sent = event.seq;
                    return Some(message(&event));
                }
                Ok(_) => {}
                Err(RecvError::Lagged(missed)) => {
                    self.log.lagged(missed);
                    return Some(SseEvent::default().event("lagged").data(missed.to_string()));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

/// One event as an SSE message.
pub fn message(event: &Event) -> SseEvent {
    let data = serde_json::to_string(event).unwrap_or_default();
    SseEvent::default()
        .event("event")
        .id(event.seq.to_string())
        .data(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn good_parameters_make_a_filter() {
        let peer = "0123456789abcdef0123456789abcdef01234567";
        let (filter, limit) = parse(&params(&[
            ("since", "12"),
            ("kind", "banned,unbanned"),
            ("peer", peer),
            ("limit", "5"),
        ]))
        .unwrap();
        assert_eq!(filter.after_seq, Some(12));
        assert_eq!(filter.kinds, [EventKind::Banned, EventKind::Unbanned]);
        assert_eq!(filter.peer.as_deref(), Some(peer));
        assert_eq!(limit, 5);
        let (filter, limit) = parse(&params(&[("since", "5m")])).unwrap();
        assert!(filter.from_time.is_some() && filter.after_seq.is_none());
        assert_eq!(limit, DEFAULT_LIMIT);
    }

    #[test]
    fn bad_parameters_name_what_is_wrong() {
        for (pairs, expect) in [
            (vec![("since", "yesterday")], "since:"),
            (vec![("kind", "banned,nope")], "unknown event kind \"nope\""),
            (vec![("peer", "x/y")], "peer:"),
            (vec![("limit", "0")], "limit: expected 1 to 1000"),
            (vec![("limit", "5000")], "limit: expected 1 to 1000"),
            (vec![("limt", "5")], "unknown parameter \"limt\""),
        ] {
            let e = parse(&params(&pairs)).unwrap_err();
            assert!(e.contains(expect), "{pairs:?}: {e}");
        }
    }
}
