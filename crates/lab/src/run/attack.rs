//! The attack preset's framing of a run: the baseline run without attackers, then the same
//! workload with them ([`Siege`]: started once the nodes are Online, held at least the
//! scenario's `hold`), and the report's `attack` section from both. Every other scenario runs
//! once, as before.

use std::collections::BTreeMap;

use super::{Flow, LabError, Options, run_once};
use crate::attack::siege::{Siege, SiegeOutcome};
use crate::attack::{self, RunFigures};
use crate::report::Report;
use crate::scenario::Scenario;

/// What the attacked run measured of its attackers, for the report section.
pub struct Besieged {
    siege: SiegeOutcome,
    node_metrics: BTreeMap<String, Option<BTreeMap<String, f64>>>,
    configured_per_minute: Option<f64>,
}

/// Runs the scenario: once, or for an attack scenario the baseline (if asked) and then the run
/// with attackers, whose report carries both.
pub async fn run(scenario: &Scenario, options: &Options) -> Result<Report, LabError> {
    let Some(spec) = &scenario.attack else {
        return run_once(scenario, options, false).await.map(|(r, _)| r);
    };
    let baseline = if spec.baseline {
        eprintln!("peer-lab: baseline run (no attackers)");
        Some(run_once(scenario, options, false).await?.0)
    } else {
        None
    };
    eprintln!("peer-lab: run with {} attackers", spec.attackers.len());
    let (mut report, besieged) = run_once(scenario, options, true).await?;
    if let Some(b) = besieged {
        report.attack = Some(attack::build(
            baseline.as_ref().map(figures),
            figures(&report),
            b.siege,
            b.node_metrics,
            b.configured_per_minute,
        ));
    }
    if let Some(b) = &baseline {
        report.ok &= b.lost == 0;
    }
    Ok(report)
}

/// Honest-traffic figures of a run's report.
pub fn figures(report: &Report) -> RunFigures {
    let t = &report.transactions;
    let delivered = t
        .settle_ms
        .map(|s| t.submit_seconds + s / 1000.0)
        .filter(|s| *s > 0.0)
        .map(|s| t.accepted as f64 / s);
    RunFigures {
        accepted: t.accepted,
        lost: report.lost,
        submitted_tps: t.submitted_tps,
        delivered_tps: delivered,
        nodes_100_p95_ms: report.propagation_ms.nodes_100.p95,
    }
}

impl Flow<'_> {
    /// Starts the attackers (if this run has any) and gives them the scenario's lead.
    pub(super) async fn start_siege(&self) -> Result<Option<Siege>, LabError> {
        let Some(spec) = self.attack else {
            return Ok(None);
        };
        let siege = Siege::start(self.cluster.clone(), &spec.attackers)
            .await
            .map_err(|e| LabError::Attack(e.to_string()))?;
        progress!(self.started, "{} attackers started", spec.attackers.len());
        tokio::time::sleep(spec.lead).await;
        Ok(Some(siege))
    }

    /// Holds the attack until `hold` after its start, then stops the attackers and reads
    /// what they and the nodes counted.
    pub(super) async fn end_siege(&self, siege: Siege) -> Besieged {
        let hold = self.attack.map(|a| a.hold).unwrap_or_default();
        let until = siege.started + hold;
        if until > std::time::Instant::now() {
            progress!(
                self.started,
                "holding the attack until {hold:?} after its start"
            );
            tokio::time::sleep_until(until.into()).await;
        }
        let node_metrics = attack::node_metrics(self.cluster).await;
        let siege = siege.stop().await;
        progress!(
            self.started,
            "attackers stopped after {:.1} s",
            siege.seconds
        );
        let cluster = self.cluster;
        let configured_per_minute =
            attack::configured_dials_per_minute(cluster.binary(), cluster.env());
        Besieged {
            siege,
            node_metrics,
            configured_per_minute,
        }
    }
}
