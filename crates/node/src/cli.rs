//! The `sorcha-peer` command line: `run`, `init`, `config check`, `address` here; the client
//! commands that ask a running node over HTTP (`status`, `peers`, `tx submit|get|list`,
//! `events`) in `cli/client.rs` and `cli/events.rs`; `cli/output.rs` makes a closed pipe
//! (`status | head`) end a command quietly.
//!
//! Exit codes: 0 success, 1 a runtime failure (port in use, node unreachable), 2 a bad
//! configuration or command line.

mod client;
mod events;
mod output;

pub use client::{ClientArgs, TxCommand};
pub use events::EventsArgs;
use output::out;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use toml::Value;

use crate::address;
use crate::config::{self, ConfigError, LoadedConfig, LogFormat, Sources};
use crate::identity::Identity;
use crate::telemetry::{self, otlp::Spans};

const EXIT_RUNTIME: u8 = 1;
const EXIT_CONFIG: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "sorcha-peer",
    version,
    about = "Peer service of a Sorcha-style distributed ledger"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the node (with no flags and no file: a standalone node on the embedded defaults).
    Run(ConfigArgs),
    /// Write a commented default configuration file and create the node's identity.
    Init(InitArgs),
    /// Work with the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Show the status of a running node.
    Status(ClientArgs),
    /// Show the peers of a running node.
    Peers(ClientArgs),
    /// Submit, fetch and list transactions on a running node.
    #[command(subcommand)]
    Tx(TxCommand),
    /// Show a running node's event log, or follow it live.
    Events(EventsArgs),
    /// Find the address this node advertises (override, interfaces, STUN, HTTP) and print it.
    Address(AddressArgs),
    /// A certificate authority for permissioned networks: make a CA, certify node keys, revoke.
    #[command(subcommand)]
    Certs(crate::certs::CertsCommand),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and print every effective value with where it came from.
    Check {
        #[command(flatten)]
        args: ConfigArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Where the configuration comes from; flags win over environment, file and defaults.
#[derive(Debug, Clone, Default, Args)]
pub struct ConfigArgs {
    /// TOML file, or a Sorcha appsettings.json (its PeerService section).
    #[arg(long, short = 'c', env = "SORCHA_PEER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory of the identity, databases and ports.json.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Peer (gRPC) listen address, e.g. 0.0.0.0:5001; port 0 picks a free port.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// HTTP listen address, e.g. 127.0.0.1:5080; port 0 picks a free port.
    #[arg(long, value_name = "ADDR")]
    pub http_listen: Option<String>,
    /// A bootstrap node's peer port (repeatable); replaces the configured list.
    #[arg(long = "bootstrap", value_name = "HOST:PORT")]
    pub bootstrap: Vec<String>,
    /// Name this node instead of deriving its id from its key.
    #[arg(long, value_name = "ID")]
    pub node_id: Option<String>,
    /// Log format.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log level or filter (info, debug, sorcha_peer=debug,...).
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
}

impl ConfigArgs {
    /// The layers above the defaults, with the process environment.
    pub fn sources(&self) -> Sources {
        let mut flags: Vec<(&'static str, String, Value)> = Vec::new();
        let mut flag = |name, key: &str, value: Value| flags.push((name, key.to_owned(), value));
        if let Some(dir) = &self.data_dir {
            flag(
                "--data-dir",
                "data_dir",
                Value::String(dir.display().to_string()),
            );
        }
        if let Some(addr) = &self.listen {
            flag("--listen", "network.listen", Value::String(addr.clone()));
        }
        if let Some(addr) = &self.http_listen {
            flag(
                "--http-listen",
                "network.http_listen",
                Value::String(addr.clone()),
            );
        }
        if !self.bootstrap.is_empty() {
            let list = self.bootstrap.iter().cloned().map(Value::String).collect();
            flag(
                "--bootstrap",
                "discovery.bootstrap_nodes",
                Value::Array(list),
            );
        }
        if let Some(id) = &self.node_id {
            flag("--node-id", "node_id", Value::String(id.clone()));
        }
        if let Some(format) = self.log_format {
            let name = match format {
                LogFormat::Text => "text",
                LogFormat::Json => "json",
            };
            flag("--log-format", "log.format", Value::String(name.into()));
        }
        if let Some(level) = &self.log_level {
            flag("--log-level", "log.level", Value::String(level.clone()));
        }
        Sources {
            file: self.config.clone(),
            env: std::env::vars().collect(),
            flags,
        }
    }

    fn load(&self) -> Result<LoadedConfig, ExitCode> {
        config::load(&self.sources()).map_err(|e| config_error(&e))
    }
}

#[derive(Debug, Args)]
pub struct AddressArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// STUN server to ask, HOST:PORT (repeatable); replaces the configured list.
    #[arg(long = "stun", value_name = "HOST:PORT")]
    pub stun: Vec<String>,
    /// HTTP lookup service URL (repeatable); replaces the configured list.
    #[arg(long = "http-lookup", value_name = "URL")]
    pub http_lookup: Vec<String>,
    /// Also connect to the peer port on the found address (useful while the node runs).
    #[arg(long)]
    pub check_reachability: bool,
    /// Print the whole report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Where to write the configuration file; an existing file is never overwritten.
    #[arg(
        long,
        short = 'c',
        default_value = "sorcha-peer.toml",
        value_name = "FILE"
    )]
    pub config: PathBuf,
    /// Directory for the identity (default: ./data, or SORCHA_PEER__DATA_DIR).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// Runs the parsed command line.
pub fn main(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Run(args) => run(&args),
        Command::Init(args) => init(&args),
        Command::Config(ConfigCommand::Check { args, json }) => check(&args, json),
        Command::Status(args) => client::status(&args),
        Command::Peers(args) => client::peers(&args),
        Command::Tx(command) => client::tx(&command),
        Command::Events(args) => events::events(&args),
        Command::Address(args) => address(&args),
        Command::Certs(command) => crate::certs::main(command),
    }
}

fn address(args: &AddressArgs) -> ExitCode {
    let mut sources = args.config.sources();
    let list = |items: &[String]| Value::Array(items.iter().cloned().map(Value::String).collect());
    if !args.stun.is_empty() {
        sources
            .flags
            .push(("--stun", "address.stun_servers".into(), list(&args.stun)));
    }
    if !args.http_lookup.is_empty() {
        let key = "address.http_lookup_services".into();
        sources
            .flags
            .push(("--http-lookup", key, list(&args.http_lookup)));
    }
    let loaded = match config::load(&sources) {
        Ok(loaded) => loaded,
        Err(e) => return config_error(&e),
    };
    let mut options = loaded.config.address.discovery_options();
    options.check_reachability = args.check_reachability;
    let port = loaded.config.network.listen.port();
    let report = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(address::discover(&options, port)),
        Err(e) => {
            eprintln!("sorcha-peer: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(json) => out!("{json}"),
            Err(e) => eprintln!("sorcha-peer: cannot encode the report: {e}"),
        }
    } else {
        print_address(&report);
    }
    let nothing_usable = report.source == address::AddressSource::InternalFallback
        && report.scope == Some(address::AddressScope::Loopback);
    if nothing_usable {
        eprintln!("sorcha-peer: no usable address found: only loopback is available");
        return ExitCode::from(EXIT_RUNTIME);
    }
    ExitCode::SUCCESS
}

fn print_address(report: &address::AddressReport) {
    out!(
        "{:18} {}:{}",
        "address",
        report.external_address,
        report.port
    );
    out!("{:18} {}", "source", address::label(&report.source));
    out!("{:18} {}", "nat", address::label(&report.nat));
    let internal = report
        .internal_address
        .map_or("-".to_owned(), |ip| ip.to_string());
    out!("{:18} {internal}", "internal_address");
    let reachable = report
        .reachable
        .map_or("not checked".to_owned(), |r| r.to_string());
    out!("{:18} {reachable}", "reachable");
    for attempt in &report.attempts {
        let outcome = if attempt.ok { "ok" } else { "failed" };
        out!(
            "  {:12} {:30} {outcome:6} {}",
            address::label(&attempt.step),
            attempt.target,
            attempt.detail
        );
    }
}

fn run(args: &ConfigArgs) -> ExitCode {
    let loaded = match args.load() {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sorcha-peer: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let spans = match start_spans(&runtime, &loaded.config) {
        Ok(spans) => spans,
        Err(e) => {
            eprintln!("sorcha-peer: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    telemetry::logging::init(&loaded.config.log, spans.as_ref().map(Spans::tracer));
    for note in &loaded.notes {
        tracing::info!("{note}");
    }
    let stopped = runtime.block_on(async {
        let signal = crate::runtime::termination_signal();
        crate::runtime::run(loaded.config, signal).await
    });
    if let Some(spans) = spans {
        spans.shutdown(); // The runtime still runs: the last batch can go out.
    }
    match stopped {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("sorcha-peer: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// The OTLP span pipeline when `telemetry.otlp_endpoint` is set, tagged with the node's id.
fn start_spans(
    runtime: &tokio::runtime::Runtime,
    config: &config::Config,
) -> Result<Option<Spans>, telemetry::otlp::OtlpError> {
    if !config.telemetry.otlp_enabled() {
        return Ok(None);
    }
    let _inside = runtime.enter(); // tonic's channel spawns onto the runtime.
    let instance = crate::runtime::instance_id(config);
    Spans::start(&config.telemetry, instance.as_deref()).map(Some)
}

/// The commented defaults with `data_dir` set to the identity's directory, made absolute, so
/// `run --config FILE` from any working directory uses the identity `init` created.
fn init_template(data_dir: &Path) -> String {
    let absolute = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_owned());
    let line = format!(
        "data_dir = {}",
        Value::String(absolute.display().to_string())
    );
    config::DEFAULT_TOML.replacen("data_dir = \"./data\"", &line, 1)
}

fn init(args: &InitArgs) -> ExitCode {
    let mut sources = ConfigArgs {
        data_dir: args.data_dir.clone(),
        ..Default::default()
    }
    .sources();
    sources.file = None;
    let loaded = match config::load(&sources) {
        Ok(loaded) => loaded,
        Err(e) => return config_error(&e),
    };
    let data_dir = &loaded.config.data_dir;
    if args.config.exists() {
        eprintln!(
            "sorcha-peer: {} already exists; not overwriting it (remove it or choose another path with --config)",
            args.config.display()
        );
        return ExitCode::from(EXIT_RUNTIME);
    }
    if let Err(e) = write_new(&args.config, &init_template(data_dir)) {
        eprintln!("sorcha-peer: cannot write {}: {e}", args.config.display());
        return ExitCode::from(EXIT_RUNTIME);
    }
    match Identity::load_or_create(data_dir, None) {
        Ok(identity) => {
            out!("wrote {}", args.config.display());
            out!(
                "peer id {} (key in {})",
                identity.peer_id(),
                data_dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sorcha-peer: identity: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// Creates `path` with `text`, failing if it exists (no race with a concurrent writer).
fn write_new(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    file.write_all(text.as_bytes())
}

fn check(args: &ConfigArgs, json: bool) -> ExitCode {
    let loaded = match args.load() {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let rows = loaded.effective();
    if json {
        let entries: Vec<_> = rows
            .iter()
            .map(|(key, value, origin)| serde_json::json!({"key": key, "value": value, "origin": origin.to_string()}))
            .collect();
        let doc = serde_json::json!({"valid": true, "values": entries, "notes": loaded.notes});
        out!("{doc:#}");
    } else {
        let width = rows.iter().map(|(k, ..)| k.len()).max().unwrap_or(0);
        let vwidth = rows
            .iter()
            .map(|(_, v, _)| v.len())
            .max()
            .unwrap_or(0)
            .min(40);
        out!("configuration is valid");
        for (key, value, origin) in rows {
            out!("{key:width$}  {value:vwidth$}  ({origin})");
        }
        for note in loaded.notes {
            out!("note: {note}");
        }
    }
    ExitCode::SUCCESS
}

fn config_error(e: &ConfigError) -> ExitCode {
    eprintln!("sorcha-peer: {e}");
    ExitCode::from(EXIT_CONFIG)
}
