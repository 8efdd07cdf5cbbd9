//! `sorcha-peer-sim run FILE [--seed N] [--scenario NAME] [--out DIR] [--json]`
//!
//! Runs every scenario of FILE for each of its seeds (or just `--seed`), prints a table (or the
//! reports as JSON with `--json`), and with `--out` writes `<scenario>.json` and a
//! coverage-over-time `<scenario>.svg` per scenario. Wall times go to stderr only, so the
//! JSON depends on nothing but the scenario and the seed.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use sorcha_peer_sim::{Report, plot, scenario};

#[derive(Parser)]
#[command(
    name = "sorcha-peer-sim",
    version,
    about = "Deterministic simulator of sorcha-peer"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the scenarios of a TOML file.
    Run {
        file: PathBuf,
        /// Run only this seed (instead of the file's list).
        #[arg(long)]
        seed: Option<u64>,
        /// Run only the scenario of this name.
        #[arg(long)]
        scenario: Option<String>,
        /// Write <scenario>.json and <scenario>.svg here.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the reports as JSON on stdout instead of the table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> Result<()> {
    let Command::Run {
        file,
        seed,
        scenario: only,
        out,
        json,
    } = Cli::parse().command;
    let mut scenarios = scenario::load(&file)?;
    if let Some(name) = &only {
        scenarios.retain(|s| &s.name == name);
        if scenarios.is_empty() {
            bail!("no scenario named {name:?} in {}", file.display());
        }
    }
    if let Some(dir) = &out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut all = Vec::new();
    let mut rows = Vec::new();
    for s in &scenarios {
        let seeds = seed.map_or_else(|| s.seeds.clone(), |seed| vec![seed]);
        let mut reports = Vec::new();
        for seed in seeds {
            eprintln!("running {} (seed {seed}, {} nodes)...", s.name, s.nodes);
            let started = Instant::now();
            let report = sorcha_peer_sim::run_and_leak(s, seed);
            let wall = started.elapsed().as_secs_f64();
            eprintln!(
                "  {} events, {:.1} s virtual, {wall:.1} s wall",
                report.events_processed,
                report.end_ms as f64 / 1000.0
            );
            rows.push(row(&report, wall));
            reports.push(report);
        }
        if let Some(dir) = &out {
            write_outputs(dir, &s.name, &reports)?;
        }
        all.extend(reports);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
    } else {
        print_table(&rows);
    }
    Ok(())
}

fn write_outputs(dir: &std::path::Path, name: &str, reports: &[Report]) -> Result<()> {
    let json_path = dir.join(format!("{name}.json"));
    let text = serde_json::to_string_pretty(reports)? + "\n";
    std::fs::write(&json_path, text).with_context(|| format!("writing {}", json_path.display()))?;
    let series: Vec<(String, Vec<(u64, f64)>)> = reports
        .iter()
        .map(|r| (format!("seed {}", r.seed), r.timeline.clone()))
        .collect();
    let svg_path = dir.join(format!("{name}.svg"));
    let title = format!(
        "{name}: coverage over time ({} nodes)",
        reports.first().map_or(0, |r| r.nodes)
    );
    std::fs::write(&svg_path, plot::coverage_svg(&title, &series))
        .with_context(|| format!("writing {}", svg_path.display()))?;
    eprintln!("  wrote {} and {}", json_path.display(), svg_path.display());
    Ok(())
}

const HEADERS: [&str; 14] = [
    "scenario",
    "seed",
    "nodes",
    "coverage",
    "lost",
    "t99 p95",
    "t100 max",
    "hops99 p95",
    "RMR body/ann",
    "B/node/tx msg/all",
    "ann/body/memb",
    "graph",
    "converge",
    "wall s",
];

fn ms(v: Option<u64>) -> String {
    v.map_or("-".into(), |v| format!("{v} ms"))
}

fn row(r: &Report, wall: f64) -> Vec<String> {
    let b = &r.bytes_per_node_per_tx;
    let graph = format!(
        "{} in {}/{:.1}/{}",
        if r.graph.strongly_connected {
            "sc"
        } else {
            "NOT-sc"
        },
        r.graph.in_degree_min,
        r.graph.in_degree_mean,
        r.graph.in_degree_max
    );
    let converge = r
        .partitions
        .iter()
        .map(|p| {
            format!(
                "tx {} / graph {}",
                ms(p.tx_converge_ms),
                ms(p.graph_reconnect_ms)
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    vec![
        r.scenario.clone(),
        r.seed.to_string(),
        r.nodes.to_string(),
        format!("{:.4}%", r.coverage * 100.0),
        r.transactions.lost.to_string(),
        ms(r.time_ms.to_99.p95),
        ms(r.time_ms.to_100.max),
        r.hops.to_99.p95.map_or("-".into(), |h| h.to_string()),
        format!("{:.3}/{:.3}", r.rmr, r.rmr_announcements),
        format!("{:.0}/{:.0}", b.total, b.all),
        format!("{:.0}/{:.0}/{:.0}", b.announcements, b.bodies, b.membership),
        graph,
        if converge.is_empty() {
            "-".into()
        } else {
            converge
        },
        format!("{wall:.1}"),
    ]
}

fn print_table(rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = HEADERS.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
    };
    println!("{}", line(HEADERS.to_vec()));
    for r in rows {
        println!("{}", line(r.iter().map(String::as_str).collect()));
    }
}
