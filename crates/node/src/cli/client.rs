//! The client commands: ask a running node over its HTTP API (`status`, `peers`, `tx ...`,
//! `events`). Each takes `--http ADDR` (default: the port in `<data-dir>/ports.json`) and
//! `--json` (the API's answer as it is). Output goes through [`super::output`], so a closed
//! pipe ends the command quietly.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::Value;

use super::output::{self, out};
use super::{EXIT_CONFIG, EXIT_RUNTIME};
use crate::config;
use crate::runtime::Ports;

/// How long a request may take (a follow has no limit once its stream is open).
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// HTTP address of the node; default: the HTTP port in <data-dir>/ports.json, else
    /// 127.0.0.1:5080.
    #[arg(long, value_name = "ADDR")]
    pub http: Option<String>,
    /// Data dir of a local node, to find its HTTP port.
    #[arg(long, value_name = "DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Print the JSON answer.
    #[arg(long)]
    pub json: bool,
    /// The node's admin token, for a node off loopback (default: <data-dir>/admin.token when
    /// it can be read).
    #[arg(
        long,
        env = "SORCHA_PEER_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
}

/// A connection to one node's HTTP API, with a small runtime to drive it.
pub struct Client {
    runtime: tokio::runtime::Runtime,
    http: reqwest::Client,
    base: String,
    /// Sent as `Authorization: Bearer` (loopback callers need none).
    token: Option<String>,
}

impl Client {
    pub fn new(args: &ClientArgs) -> Result<Self, ExitCode> {
        let addr = args
            .http
            .clone()
            .unwrap_or_else(|| match Ports::read(&args.data_dir) {
                Ok(ports) => format!("127.0.0.1:{}", ports.http),
                Err(_) => format!("127.0.0.1:{}", config::DEFAULT_HTTP_PORT),
            });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| fail(&format!("cannot start the async runtime: {e}")))?;
        let http = reqwest::Client::builder()
            .connect_timeout(TIMEOUT)
            .build()
            .map_err(|e| fail(&format!("cannot build the HTTP client: {e}")))?;
        let token = args.token.clone().or_else(|| {
            std::fs::read_to_string(args.data_dir.join(crate::api::admin::TOKEN_FILE))
                .ok()
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
        });
        Ok(Self {
            runtime,
            http,
            base: format!("http://{addr}"),
            token,
        })
    }

    /// GETs `path` as JSON.
    pub fn get_json(&self, path: &str) -> Result<Value, ExitCode> {
        let request = self.http.get(self.url(path)).timeout(TIMEOUT);
        let response = self.send(path, request)?;
        self.runtime
            .block_on(response.json::<Value>())
            .map_err(|e| fail(&format!("{}: unreadable answer: {e}", self.url(path))))
    }

    /// Sends `request` and waits for its headers; an error status is reported with the
    /// node's own message.
    pub fn send(
        &self,
        path: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ExitCode> {
        let url = self.url(path);
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        // Sent inside the runtime: the request's timeout needs its timer.
        let response = self
            .runtime
            .block_on(async { request.send().await })
            .map_err(|e| fail(&format!("cannot reach {url}: {e}")))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = self.runtime.block_on(response.text()).unwrap_or_default();
        let message = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or(body);
        Err(fail(&format!("{url}: {status}: {message}")))
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }
}

/// Reports `message` and gives the runtime-failure exit code.
pub fn fail(message: &str) -> ExitCode {
    eprintln!("sorcha-peer: {message}");
    ExitCode::from(EXIT_RUNTIME)
}

/// Prints `doc` as indented JSON.
pub fn print_json(doc: &Value) {
    out!("{doc:#}");
}

pub fn status(args: &ClientArgs) -> ExitCode {
    let doc = match Client::new(args).and_then(|c| c.get_json("/api/v1/status")) {
        Ok(doc) => doc,
        Err(code) => return code,
    };
    if args.json {
        print_json(&doc);
        return ExitCode::SUCCESS;
    }
    for name in [
        "peer_id",
        "state",
        "peers_known",
        "peers_active",
        "external_address",
        "address_source",
        "nat",
        "queue_size",
        "version",
    ] {
        out!("{name:18} {}", field(&doc[name]));
    }
    ExitCode::SUCCESS
}

pub fn peers(args: &ClientArgs) -> ExitCode {
    let doc = match Client::new(args).and_then(|c| c.get_json("/api/v1/peers")) {
        Ok(doc) => doc,
        Err(code) => return code,
    };
    if args.json {
        print_json(&doc);
        return ExitCode::SUCCESS;
    }
    out!(
        "{:40}  {:22}  {:11}  {:6}  {:8}  {:>10}  {:>9}  {:>8}  {:>6}  BANNED",
        "PEER ID",
        "ADDRESS",
        "STATUS",
        "ACTIVE",
        "VERIFIED",
        "LAST SEEN",
        "LATENCY",
        "FAILURES",
        "SCORE"
    );
    for peer in doc["peers"].as_array().into_iter().flatten() {
        let address = format!("{}:{}", field(&peer["address"]), field(&peer["port"]));
        let ago = peer["last_seen_ago_ms"]
            .as_u64()
            .map_or("-".into(), |ms| format!("{:.1}s ago", ms as f64 / 1000.0));
        let latency = peer["latency_ms"]
            .as_u64()
            .map_or("-".into(), |ms| format!("{ms} ms"));
        let score = peer["score"].as_f64().unwrap_or(0.0);
        let banned = match (peer["banned_until"].as_u64(), peer["ban_reason"].as_str()) {
            (Some(_), Some(reason)) => reason.to_owned(),
            (Some(_), None) => "yes".to_owned(),
            _ => "-".to_owned(),
        };
        out!(
            "{:40}  {:22}  {:11}  {:6}  {:8}  {:>10}  {:>9}  {:>8}  {:>6.1}  {}",
            field(&peer["peer_id"]),
            address,
            field(&peer["status"]),
            if peer["active"] == true { "yes" } else { "no" },
            if peer["verified"] == true {
                "yes"
            } else {
                "no"
            },
            ago,
            latency,
            field(&peer["failure_count"]),
            score,
            banned,
        );
    }
    out!("{} peers", field(&doc["total"]));
    ExitCode::SUCCESS
}

/// `sorcha-peer tx ...`.
#[derive(Debug, Subcommand)]
pub enum TxCommand {
    /// Submit a transaction: the bytes of FILE, or of standard input with `-`.
    Submit {
        /// The transaction file, or - for standard input.
        #[arg(value_name = "FILE|-")]
        file: String,
        /// The register the transaction belongs to.
        #[arg(long, value_name = "ID")]
        register_id: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Fetch a transaction's body by its hash (to standard output, or to a file with -o).
    Get {
        /// The SHA-256 hash (hex), or its first half.
        hash: String,
        /// Write the body here instead of standard output.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the transactions the node holds, oldest first.
    List {
        /// Skip this many.
        #[arg(long, default_value_t = 0)]
        offset: usize,
        /// Show at most this many (at most 1000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub fn tx(command: &TxCommand) -> ExitCode {
    let result = match command {
        TxCommand::Submit {
            file,
            register_id,
            client,
        } => submit(client, file, register_id.as_deref()),
        TxCommand::Get {
            hash,
            output,
            client,
        } => get(client, hash, output.as_ref()),
        TxCommand::List {
            offset,
            limit,
            client,
        } => list(client, *offset, *limit),
    };
    result.err().unwrap_or(ExitCode::SUCCESS)
}

fn submit(args: &ClientArgs, file: &str, register_id: Option<&str>) -> Result<(), ExitCode> {
    let body = read_input(file)?;
    let client = Client::new(args)?;
    let path = "/api/v1/transactions";
    let path = match register_id {
        Some(register) => format!("{path}{}", query_string(&[("register_id", register)])),
        None => path.to_owned(),
    };
    let request = client.http().post(client.url(&path)).body(body);
    let response = client.send(&path, request.timeout(TIMEOUT))?;
    let doc: Value = client
        .block_on(response.json())
        .map_err(|e| fail(&format!("unreadable answer: {e}")))?;
    if args.json {
        print_json(&doc);
        return Ok(());
    }
    let what = if doc["queued"] == true {
        "queued until the node has a healthy peer".to_owned()
    } else if doc["new"] == false {
        "already known".to_owned()
    } else {
        format!("announced to {} peers", field(&doc["announced_to"]))
    };
    out!("{}  {what}", field(&doc["hash"]));
    Ok(())
}

/// The bytes of `file`, or of standard input for `-`.
fn read_input(file: &str) -> Result<Vec<u8>, ExitCode> {
    let mut body = Vec::new();
    let read = if file == "-" {
        std::io::stdin().read_to_end(&mut body).map(|_| ())
    } else {
        std::fs::read(file).map(|b| body = b)
    };
    match read {
        Ok(()) if body.is_empty() => {
            eprintln!("sorcha-peer: {file}: empty; a transaction needs at least one byte");
            Err(ExitCode::from(EXIT_CONFIG))
        }
        Ok(()) => Ok(body),
        Err(e) => Err(fail(&format!("cannot read {file}: {e}"))),
    }
}

fn get(args: &ClientArgs, hash: &str, output: Option<&PathBuf>) -> Result<(), ExitCode> {
    let client = Client::new(args)?;
    let path = format!("/api/v1/transactions/{hash}");
    if args.json {
        let request = client
            .http()
            .get(client.url(&path))
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(TIMEOUT);
        let response = client.send(&path, request)?;
        let doc: Value = client
            .block_on(response.json())
            .map_err(|e| fail(&format!("unreadable answer: {e}")))?;
        print_json(&doc);
        return Ok(());
    }
    let response = client.send(&path, client.http().get(client.url(&path)).timeout(TIMEOUT))?;
    let body = client
        .block_on(response.bytes())
        .map_err(|e| fail(&format!("{}: {e}", client.url(&path))))?;
    match output {
        Some(file) => std::fs::write(file, &body)
            .map_err(|e| fail(&format!("cannot write {}: {e}", file.display()))),
        None => {
            output::bytes(&body);
            Ok(())
        }
    }
}

fn list(args: &ClientArgs, offset: usize, limit: usize) -> Result<(), ExitCode> {
    let client = Client::new(args)?;
    let doc = client.get_json(&format!(
        "/api/v1/transactions?offset={offset}&limit={limit}"
    ))?;
    if args.json {
        print_json(&doc);
        return Ok(());
    }
    out!("{:64}  {:>9}  {:16}  ORIGIN", "HASH", "SIZE", "REGISTER");
    for tx in doc["transactions"].as_array().into_iter().flatten() {
        out!(
            "{:64}  {:>9}  {:16}  {}",
            field(&tx["hash"]),
            field(&tx["size"]),
            field(&tx["register_id"]),
            field(&tx["origin"]),
        );
    }
    out!("{} transactions in all", field(&doc["total"]));
    Ok(())
}

/// `?k=v&...`, percent-encoded (empty for no pairs).
pub fn query_string(pairs: &[(&str, &str)]) -> String {
    let encode = |text: &str| {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    let joined: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    if joined.is_empty() {
        String::new()
    } else {
        format!("?{}", joined.join("&"))
    }
}

/// A JSON value as a table cell: strings bare, null as `-`.
pub fn field(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
