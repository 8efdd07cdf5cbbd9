//! `sorcha-peer events`: the node's event log, read once (`GET /api/v1/events`) or followed
//! (`--follow`: the server-sent events of `/api/v1/events/stream`, printed as they come).

use std::process::ExitCode;

use clap::Args;
use serde_json::Value;

use super::client::{Client, ClientArgs, fail, field, print_json, query_string};
use super::output::out;

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Keep printing new events as they happen (Ctrl-C stops).
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Only this kind (repeatable): peer_connected, banned, tx_accepted, ...
    #[arg(long = "kind", value_name = "K")]
    pub kinds: Vec<String>,
    /// Only events about this peer id.
    #[arg(long, value_name = "ID")]
    pub peer: Option<String>,
    /// Events after this sequence number, or of the last DURATION (5m, 1h).
    #[arg(long, value_name = "SEQ|DURATION")]
    pub since: Option<String>,
    /// At most this many (1 to 1000) from the log; with --follow, the backlog shown first.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    #[command(flatten)]
    pub client: ClientArgs,
}

impl EventsArgs {
    /// The query string both endpoints take (values checked by the node, which names a bad one).
    fn query(&self, with_limit: bool) -> Vec<(&'static str, String)> {
        let mut query = Vec::new();
        if !self.kinds.is_empty() {
            query.push(("kind", self.kinds.join(",")));
        }
        if let Some(peer) = &self.peer {
            query.push(("peer", peer.clone()));
        }
        if let Some(since) = &self.since {
            query.push(("since", since.clone()));
        }
        if with_limit {
            query.push(("limit", self.limit.to_string()));
        }
        query
    }
}

pub fn events(args: &EventsArgs) -> ExitCode {
    let result = Client::new(&args.client).and_then(|client| {
        let sent = print_log(&client, args)?;
        if args.follow {
            follow(&client, args, sent)?;
        }
        Ok(())
    });
    result.err().unwrap_or(ExitCode::SUCCESS)
}

/// Prints what the log holds; answers the sequence number to follow from.
fn print_log(client: &Client, args: &EventsArgs) -> Result<u64, ExitCode> {
    let path = format!("/api/v1/events{}", encoded(&args.query(true)));
    let response = client.send(&path, client.http().get(client.url(&path)))?;
    let doc: Value = client
        .block_on(response.json())
        .map_err(|e| fail(&format!("unreadable answer: {e}")))?;
    if args.client.json && !args.follow {
        print_json(&doc);
    } else {
        for event in doc["events"].as_array().into_iter().flatten() {
            print_event(event, args.client.json);
        }
    }
    Ok(doc["next_seq"].as_u64().unwrap_or(1).saturating_sub(1))
}

/// Streams events after `after` until the node closes the stream.
fn follow(client: &Client, args: &EventsArgs, after: u64) -> Result<(), ExitCode> {
    let mut query = args.query(false);
    query.retain(|(k, _)| *k != "since");
    query.push(("since", after.to_string()));
    let path = format!("/api/v1/events/stream{}", encoded(&query));
    let mut response = client.send(&path, client.http().get(client.url(&path)))?;
    let mut parser = SseParser::default();
    loop {
        let chunk = client
            .block_on(response.chunk())
            .map_err(|e| fail(&format!("event stream broke: {e}")))?;
        let Some(chunk) = chunk else {
            return Err(fail("the node closed the event stream"));
        };
        for (kind, data) in parser.feed(&chunk) {
            match kind.as_str() {
                "event" => match serde_json::from_str::<Value>(&data) {
                    Ok(event) => print_event(&event, args.client.json),
                    Err(e) => eprintln!("sorcha-peer: unreadable event {data:?}: {e}"),
                },
                "lagged" => eprintln!("sorcha-peer: fell behind; {data} events missed"),
                _ => {}
            }
        }
    }
}

fn encoded(pairs: &[(&'static str, String)]) -> String {
    let borrowed: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    query_string(&borrowed)
}

/// One event: a JSON line, or `time  kind  peer  detail`.
fn print_event(event: &Value, json: bool) {
    if json {
        out!("{event}");
        return;
    }
    let time = event["time"].as_u64().map_or("-".to_owned(), clock);
    let peer = event["peer"]
        .as_str()
        .map_or("-", |p| &p[..p.len().min(12)]);
    out!(
        "{time}  {:17}  {peer:12}  {}",
        field(&event["kind"]),
        field(&event["detail"])
    );
}

/// `HH:MM:SS.mmm` UTC of a time in ms since the epoch.
fn clock(ms: u64) -> String {
    let s = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}Z",
        s / 3600 % 24,
        s / 60 % 60,
        s % 60,
        ms % 1000
    )
}

/// Splits a server-sent-event byte stream into `(event, data)` messages.
#[derive(Debug, Default)]
struct SseParser {
    buffer: String,
    event: String,
    data: String,
}

impl SseParser {
    fn feed(&mut self, chunk: &[u8]) -> Vec<(String, String)> {
        self.buffer.push_str(&String::from_utf8_lossy(chunk));
        let mut messages = Vec::new();
        while let Some(end) = self.buffer.find('\n') {
            let line: String = self.buffer.drain(..=end).collect();
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !self.data.is_empty() || !self.event.is_empty() {
                    let event = std::mem::take(&mut self.event);
                    let event = if event.is_empty() {
                        "message".into()
                    } else {
                        event
                    };
                    messages.push((event, std::mem::take(&mut self.data)));
                }
            } else if let Some(v) = line.strip_prefix("event:") {
                self.event = v.trim_start().to_owned();
            } else if let Some(v) = line.strip_prefix("data:") {
                if !self.data.is_empty() {
                    self.data.push('\n');
                }
                self.data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
        }
        messages
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_messages_survive_any_chunking() {
        let text =
            b": keep-alive\n\nevent: event\nid: 3\ndata: {\"seq\":3}\n\nevent: lagged\ndata: 7\n\n";
        for split in 1..text.len() {
            let mut parser = SseParser::default();
            let mut all = parser.feed(&text[..split]);
            all.extend(parser.feed(&text[split..]));
            assert_eq!(
                all,
                [
                    ("event".to_owned(), "{\"seq\":3}".to_owned()),
                    ("lagged".to_owned(), "7".to_owned())
                ],
                "split at {split}"
            );
        }
    }

    #[test]
    fn times_print_as_utc_clock() {
        assert_eq!(clock(3_723_004), "01:02:03.004Z");
    }
}
