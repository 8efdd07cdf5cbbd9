//! The `compare-gossipsub` preset: the same workload on rust-libp2p gossipsub (the anchor of
//! issue 21) and on sorcha-peer, one fresh cluster per system and phase, and one row per
//! system and phase in the report.
//!
//! - [`gossipsub`]: the gossipsub node processes (`bench/gossipsub-node`, built on first use):
//!   start, bootstrap, readiness, publishing, arrivals, costs.
//! - [`rows`]: both systems' measurements as comparable rows, and the table.
//!
//! The sorcha-peer side is an ordinary lab run ([`crate::run::run_plain`]) of the scenario with
//! the phase's count and rate. Both sides share the scenario's node count, bootstrap nodes,
//! Online timeout, warm-up, body size, seed (so the same origins) and settle timeout; both are
//! timed by the lab on receipt (sorcha-peer: its transaction stream; gossipsub: its stdout).

use crate::report::EXIT_LOST;
use crate::run::{LabError, Options};
use crate::scenario::Scenario;

pub mod gossipsub;
pub mod rows;

pub use crate::scenario::{ComparePhase, CompareSpec};
pub use rows::{CompareReport, Row};

/// Why the comparison could not run.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    /// [`run`] was given a scenario without phases to compare.
    #[error("the scenario has no [compare] section")]
    NotCompare,
    /// The gossipsub side failed (build, namespaces, a node).
    #[error("gossipsub: {0}")]
    Gossipsub(#[from] gossipsub::GossipsubError),
    /// The sorcha-peer side failed as any lab run can.
    #[error("sorcha-peer: {0}")]
    Sorcha(#[from] LabError),
}

/// Runs every phase on gossipsub, then on sorcha-peer.
pub async fn run(scenario: &Scenario, options: &Options) -> Result<CompareReport, CompareError> {
    let spec = scenario.compare.as_ref().ok_or(CompareError::NotCompare)?;
    let binary = gossipsub::ensure_built()?;
    let load_average_start = crate::procfs::load_average();
    let mut rows = Vec::new();
    for phase in &spec.phases {
        let phased = with_phase(scenario, *phase);
        eprintln!(
            "peer-lab: gossipsub: {} x {} B at {}/s",
            phase.transactions, scenario.traffic.size, phase.rate
        );
        let measured = gossipsub::run(&binary, &phased, options.hosts).await?;
        rows.push(Row::from_gossipsub(*phase, &measured));
        eprintln!(
            "peer-lab: sorcha-peer: {} x {} B at {}/s",
            phase.transactions, scenario.traffic.size, phase.rate
        );
        let report = crate::run::run_plain(&phased, options).await?;
        rows.push(Row::from_sorcha(*phase, &report));
    }
    Ok(CompareReport {
        preset: scenario.name.clone(),
        nodes: scenario.nodes,
        hosts: options.hosts.as_str().to_owned(),
        size_bytes: scenario.traffic.size,
        load_average_start,
        load_average_end: crate::procfs::load_average(),
        rows,
    })
}

/// The scenario as one phase of `phase`'s count and rate.
pub fn with_phase(scenario: &Scenario, phase: ComparePhase) -> Scenario {
    let mut s = scenario.clone();
    s.traffic.transactions = phase.transactions;
    s.traffic.rate = phase.rate;
    s.traffic.rates.clear();
    s
}

/// The exit status: lost messages on sorcha-peer's side are the lab's usual failure; the
/// anchor's losses are a finding, reported in the table.
pub fn exit_code(report: &CompareReport) -> i32 {
    let sorcha_lost = report
        .rows
        .iter()
        .any(|r| r.system == rows::SORCHA && r.lost > 0);
    if sorcha_lost { EXIT_LOST } else { 0 }
}
