//! `peer-lab`: runs a preset or scenario file against real sorcha-peer processes and prints the
//! report. Exit status: 0 nothing lost, 1 transactions lost, 2 bad command line or scenario,
//! 3 the lab could not run it, 130 interrupted.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use peer_lab::binary;
use peer_lab::cluster::Hosts;
use peer_lab::report::{EXIT_HARNESS, EXIT_USAGE};
use peer_lab::run::{self, Options};
use peer_lab::scenario::{PRESETS, Scenario, parse_origins};

/// Exit status after SIGINT or SIGTERM (128 + SIGINT, as shells report it).
const EXIT_INTERRUPTED: i32 = 130;

#[derive(Parser)]
#[command(
    name = "peer-lab",
    version,
    about = "Real-process cluster harness and benchmarks for sorcha-peer"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs a preset (smoke, propagation, propagation-fast, scale, scale-shipped, partition, churn,
    /// throughput, memory, queue, crash, discovery, discovery-staggered, attack,
    /// compare-gossipsub) or a scenario TOML file, and prints the report.
    Run(RunArgs),
    /// Lists the presets.
    List,
    /// Prints a preset's TOML (a starting point for a scenario file).
    Show { preset: String },
    /// Runs an attacker against running nodes until SIGTERM (the `attack` preset starts these).
    Attacker(AttackerArgs),
}

#[derive(clap::Args)]
struct AttackerArgs {
    /// An honest node's peer port, HOST:PORT (repeatable).
    #[arg(long = "target", required = true)]
    targets: Vec<String>,
    /// Register and announce made-up hashes.
    #[arg(long)]
    flood: bool,
    /// Announcements per second over all targets.
    #[arg(long, default_value_t = 1000)]
    flood_rate: u64,
    /// Serve bodies whose hash is wrong (and some found=false) when nodes pull.
    #[arg(long)]
    lie: bool,
    /// Fake peer adverts (127.66.X.Y:P, P the sinkhole's port) pushed to every target.
    #[arg(long, default_value_t = 0)]
    push_addresses: usize,
    /// Where the JSON status (counts, sinkhole) is written, twice a second and at exit.
    #[arg(long)]
    status_file: PathBuf,
    /// Distinguishes attackers of one run.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The loopback address to call from and serve on (default 127.77.0.(seed + 1)).
    #[arg(long)]
    ip: Option<std::net::IpAddr>,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Preset name or scenario file.
    scenario: String,
    /// Nodes to start instead of the scenario's.
    #[arg(long)]
    nodes: Option<usize>,
    /// The sorcha-peer binary (default: target/release/sorcha-peer of the workspace, then PATH).
    #[arg(long)]
    binary: Option<PathBuf>,
    /// loopback ports, or one network namespace per node (root only).
    #[arg(long, value_enum, default_value = "loopback")]
    hosts: HostsArg,
    /// Print the report as one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// Keep the nodes' data dirs and logs.
    #[arg(long)]
    keep: bool,
    /// Transactions per phase instead of the scenario's.
    #[arg(long)]
    transactions: Option<usize>,
    /// Body size in bytes instead of the scenario's.
    #[arg(long)]
    size: Option<usize>,
    /// Submission rate in tx/s (0: as fast as possible) instead of the scenario's phases.
    #[arg(long)]
    rate: Option<f64>,
    /// Submissions in flight at most.
    #[arg(long)]
    concurrency: Option<usize>,
    /// "random" or "node:I".
    #[arg(long)]
    origins: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum HostsArg {
    Loopback,
    Netns,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // reqwest is built without a default provider: exactly one must be installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("peer-lab: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_HARNESS as u8);
        }
    };
    let code = runtime.block_on(lab(cli));
    // Dropping the runtime drops every task, and with them the cluster: children are killed
    // and namespaces removed before the process exits, on every path.
    drop(runtime);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

async fn lab(cli: Cli) -> i32 {
    match cli.command {
        Cmd::List => {
            for (name, text) in PRESETS {
                let description = Scenario::parse(text, name)
                    .map(|s| s.description)
                    .unwrap_or_default();
                println!("{name:<12} {description}");
            }
            0
        }
        Cmd::Show { preset } => match PRESETS.iter().find(|(n, _)| *n == preset) {
            Some((_, text)) => {
                print!("{text}");
                0
            }
            None => {
                eprintln!("peer-lab: no preset {preset:?}");
                EXIT_USAGE
            }
        },
        Cmd::Run(args) => run_command(args).await,
        Cmd::Attacker(a) => {
            let options = peer_lab::attacker::AttackerOptions {
                targets: a.targets,
                flood: a.flood,
                flood_rate: a.flood_rate,
                lie: a.lie,
                push_addresses: a.push_addresses,
                status_file: a.status_file,
                seed: a.seed,
                ip: a
                    .ip
                    .unwrap_or_else(|| peer_lab::attacker::attacker_ip(a.seed)),
            };
            match peer_lab::attacker::run(options).await {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("peer-lab attacker: {e}");
                    EXIT_HARNESS
                }
            }
        }
    }
}

async fn run_command(args: RunArgs) -> i32 {
    let scenario = match scenario(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("peer-lab: {e}");
            return EXIT_USAGE;
        }
    };
    let binary = match binary::find(args.binary.as_deref()) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("peer-lab: {e}");
            return EXIT_HARNESS;
        }
    };
    let options = Options {
        binary,
        hosts: match args.hosts {
            HostsArg::Loopback => Hosts::Loopback,
            HostsArg::Netns => Hosts::Netns,
        },
        keep: args.keep,
    };
    if scenario.compare.is_some() {
        return compare_command(&scenario, &options, args.json).await;
    }
    let outcome = tokio::select! {
        outcome = run::run(&scenario, &options) => outcome,
        signal = interrupted() => {
            eprintln!("peer-lab: {signal}: stopping every node and removing what the lab created");
            return EXIT_INTERRUPTED;
        }
    };
    match outcome {
        Ok(report) => {
            if args.json {
                match serde_json::to_string(&report) {
                    Ok(json) => println!("{json}"),
                    Err(e) => eprintln!("peer-lab: cannot encode the report: {e}"),
                }
            } else {
                print!("{}", report.table());
            }
            report.exit_code()
        }
        Err(e) => {
            eprintln!("peer-lab: {e}");
            EXIT_HARNESS
        }
    }
}

/// The compare-gossipsub preset: both systems, one table (or JSON object).
async fn compare_command(scenario: &Scenario, options: &Options, json: bool) -> i32 {
    let outcome = tokio::select! {
        outcome = peer_lab::compare::run(scenario, options) => outcome,
        signal = interrupted() => {
            eprintln!("peer-lab: {signal}: stopping every node and removing what the lab created");
            return EXIT_INTERRUPTED;
        }
    };
    match outcome {
        Ok(report) => {
            if json {
                match serde_json::to_string(&report) {
                    Ok(text) => println!("{text}"),
                    Err(e) => eprintln!("peer-lab: cannot encode the report: {e}"),
                }
            } else {
                print!("{}", report.table());
            }
            peer_lab::compare::exit_code(&report)
        }
        Err(e) => {
            eprintln!("peer-lab: {e}");
            EXIT_HARNESS
        }
    }
}

/// The scenario with the command line's overrides applied and checked.
fn scenario(args: &RunArgs) -> Result<Scenario, String> {
    let mut s = Scenario::load(&args.scenario).map_err(|e| e.to_string())?;
    if let Some(n) = args.nodes {
        s = s.with_nodes(n).map_err(|e| e.to_string())?;
    }
    let t = &mut s.traffic;
    if let Some(v) = args.transactions {
        t.transactions = v;
    }
    if let Some(v) = args.size {
        t.size = v;
    }
    if let Some(v) = args.rate {
        t.rate = v;
        t.rates.clear();
    }
    if let Some(v) = args.concurrency {
        t.concurrency = v;
    }
    if let Some(v) = &args.origins {
        t.origins = parse_origins(v)?;
    }
    // The compare preset's phases give way to a count or rate from the command line.
    if let Some(c) = &mut s.compare
        && (args.transactions.is_some() || args.rate.is_some())
    {
        c.phases = vec![peer_lab::compare::ComparePhase {
            transactions: s.traffic.transactions,
            rate: s.traffic.rate,
        }];
    }
    s.validate().map_err(|e| e.to_string())?;
    Ok(s)
}

/// Resolves on SIGINT or SIGTERM, naming it.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        // Without handlers the default action (exit) applies; the parent-death signal still
        // takes the nodes down with the lab.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}
