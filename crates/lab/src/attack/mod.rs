//! The attack preset's part of a run: the attackers ([`siege`]) and its report section, which
//! sets the run with attackers against the baseline run without them and says pass or fail for
//! each goal of issue 16. A figure the nodes cannot give yet (a metric or a config key not
//! built) is `null` in JSON and "n/a" in the table, and its goal is neither passed nor failed.

pub mod siege;

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use serde::Serialize;

use crate::attacker::AttackerReport;
use crate::attacker::sinkhole::max_window;
use crate::cluster::Cluster;
use siege::SiegeOutcome;

/// The node metrics the section reports, with the label each is broken down by ("" none).
pub const NODE_METRICS: [(&str, &str); 6] = [
    ("rate_limited_total", "kind"),
    ("peer_score_penalties_total", "offence"),
    ("peer_bans_total", "reason"),
    ("dials_deferred_total", ""),
    ("verification_failures_total", ""),
    ("gossip_fetch_failures_total", "kind"),
];
/// The config keys that bound dialling.
pub const DIAL_KEYS: [&str; 2] = [
    "discovery.max_dials_per_minute",
    "discovery.dial_rate_per_second",
];
/// Goals of issue 16.
pub const THROUGHPUT_GOAL_PERCENT: f64 = 95.0;
pub const BAN_GOAL_MS: f64 = 10_000.0;

#[derive(Debug, Clone, Default, Serialize)]
pub struct AttackReport {
    /// The run without attackers (null when the scenario asks for none).
    pub baseline: Option<RunFigures>,
    /// The run with them.
    pub attacked: RunFigures,
    /// `attacked.delivered_tps` as a percentage of the baseline's.
    pub throughput_percent: Option<f64>,
    /// From the attackers' start until they were stopped.
    pub attack_seconds: f64,
    pub attackers: Vec<AttackerFigures>,
    /// One entry per attacker and node.
    pub bans: Vec<BanRecord>,
    /// The slowest ban (null: some attacker was never banned by some node).
    pub ban_after_ms_max: Option<f64>,
    pub banned_pairs: usize,
    pub pairs: usize,
    pub fake_dials: Option<FakeDials>,
    /// Counter deltas summed over the nodes, by label; null: no node exports the metric.
    pub node_metrics: BTreeMap<String, Option<BTreeMap<String, f64>>>,
    pub goals: Vec<Goal>,
}

/// Honest traffic of one run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunFigures {
    pub accepted: usize,
    pub lost: usize,
    pub submitted_tps: f64,
    /// Accepted / (submitting + settling): the rate at which every node got everything.
    pub delivered_tps: Option<f64>,
    pub nodes_100_p95_ms: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct AttackerFigures {
    pub index: usize,
    pub peer_id: String,
    pub roles: Vec<String>,
    pub cpu_seconds: f64,
    pub counts: crate::attacker::CountsReport,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct BanRecord {
    pub attacker: usize,
    pub node: usize,
    pub after_ms: Option<f64>,
    pub reason: Option<String>,
}

/// What the sinkholes saw, per node (the adverts pushed to node i lead to sinkhole i).
#[derive(Debug, Clone, Default, Serialize)]
pub struct FakeDials {
    /// Distinct fake addresses dialled, all nodes together, and connection attempts.
    pub distinct_total: u64,
    pub attempts_total: u64,
    /// Per node: the most distinct fake addresses it dialled for the first time in any 60 s
    /// (the whole run if shorter) and in any second.
    pub per_minute_max: Vec<u64>,
    pub per_second_max: Vec<u64>,
    /// The node's configured limit per minute (`discovery.max_dials_per_minute`, else 60 x
    /// `discovery.dial_rate_per_second`); null: neither key exists.
    pub configured_per_minute: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Goal {
    pub goal: String,
    pub value: String,
    /// null: cannot be judged (a figure is n/a).
    pub pass: Option<bool>,
}

/// Counter deltas since the mark of [`NODE_METRICS`], summed over the nodes.
pub async fn node_metrics(cluster: &Cluster) -> BTreeMap<String, Option<BTreeMap<String, f64>>> {
    let mut usage = Vec::new();
    for i in 0..cluster.len() {
        usage.push(cluster.usage(i).await.metrics);
    }
    NODE_METRICS
        .iter()
        .map(|(name, label)| {
            let present = usage
                .iter()
                .any(|s| s.samples.iter().any(|x| x.name == *name));
            let value = present.then(|| {
                let mut by = BTreeMap::new();
                for scrape in &usage {
                    for (k, v) in scrape.by_label(name, label) {
                        *by.entry(k).or_insert(0.0) += v;
                    }
                }
                by
            });
            ((*name).to_owned(), value)
        })
        .collect()
}

/// The dial limit per minute the nodes run with, from `sorcha-peer config check --json` with
/// the run's environment; `None` when the binary has neither key.
pub fn configured_dials_per_minute(binary: &Path, env: &BTreeMap<String, String>) -> Option<f64> {
    let out = std::process::Command::new(binary)
        .args(["config", "check", "--json"])
        .env_remove("SORCHA_PEER_CONFIG")
        .envs(env)
        .output()
        .ok()?;
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let value = |key: &str| -> Option<f64> {
        let entry = doc["values"].as_array()?.iter().find(|v| v["key"] == key)?;
        let raw = entry["value"].as_str()?;
        raw.trim_matches('"').parse().ok()
    };
    value(DIAL_KEYS[0]).or_else(|| value(DIAL_KEYS[1]).map(|per_s| per_s * 60.0))
}

/// Everything measured, set against the goals.
pub fn build(
    baseline: Option<RunFigures>,
    attacked: RunFigures,
    siege: SiegeOutcome,
    node_metrics: BTreeMap<String, Option<BTreeMap<String, f64>>>,
    configured_per_minute: Option<f64>,
) -> AttackReport {
    let throughput_percent = match (
        baseline.as_ref().and_then(|b| b.delivered_tps),
        attacked.delivered_tps,
    ) {
        (Some(b), Some(a)) if b > 0.0 => Some(100.0 * a / b),
        _ => None,
    };
    let bans = ban_records(&siege.bans);
    let pairs = bans.len();
    let banned: Vec<f64> = bans.iter().filter_map(|b| b.after_ms).collect();
    let ban_after_ms_max =
        (banned.len() == pairs && pairs > 0).then(|| banned.iter().copied().fold(0.0, f64::max));
    let fake_dials = fake_dials(&siege.attackers, configured_per_minute);
    let mut report = AttackReport {
        baseline,
        attacked,
        throughput_percent,
        attack_seconds: siege.seconds,
        attackers: attacker_figures(&siege),
        banned_pairs: banned.len(),
        pairs,
        bans,
        ban_after_ms_max,
        fake_dials,
        node_metrics,
        goals: Vec::new(),
    };
    report.goals = goals(&report);
    report
}

fn ban_records(bans: &[Vec<Option<siege::BanSeen>>]) -> Vec<BanRecord> {
    let mut out = Vec::new();
    for (attacker, per_node) in bans.iter().enumerate() {
        for (node, seen) in per_node.iter().enumerate() {
            out.push(BanRecord {
                attacker,
                node,
                after_ms: seen.as_ref().map(|s| s.after_ms),
                reason: seen.as_ref().and_then(|s| s.reason.clone()),
            });
        }
    }
    out
}

fn attacker_figures(siege: &SiegeOutcome) -> Vec<AttackerFigures> {
    siege
        .attackers
        .iter()
        .enumerate()
        .map(|(index, a)| AttackerFigures {
            index,
            peer_id: a.peer_id.clone(),
            roles: a.roles.clone(),
            cpu_seconds: siege.cpu_seconds.get(index).copied().unwrap_or(0.0),
            counts: a.counts.clone(),
        })
        .collect()
}

/// The sinkholes of every address pusher, node by node (`None`: no pusher ran).
fn fake_dials(attackers: &[AttackerReport], configured: Option<f64>) -> Option<FakeDials> {
    let holes: Vec<_> = attackers
        .iter()
        .filter(|a| !a.sinkholes.is_empty())
        .collect();
    if holes.is_empty() {
        return None;
    }
    let nodes = holes.iter().map(|a| a.sinkholes.len()).max().unwrap_or(0);
    let mut d = FakeDials {
        configured_per_minute: configured,
        per_minute_max: vec![0; nodes],
        per_second_max: vec![0; nodes],
        ..FakeDials::default()
    };
    for a in holes {
        for (i, h) in a.sinkholes.iter().enumerate() {
            d.distinct_total += h.distinct;
            d.attempts_total += h.attempts;
            d.per_minute_max[i] += max_window(&h.new_per_second, 60);
            d.per_second_max[i] += max_window(&h.new_per_second, 1);
        }
    }
    Some(d)
}

fn goals(r: &AttackReport) -> Vec<Goal> {
    let pct = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.1} %"));
    let mut goals = vec![
        Goal {
            goal: format!("honest throughput >= {THROUGHPUT_GOAL_PERCENT} % of the baseline"),
            value: pct(r.throughput_percent),
            pass: r.throughput_percent.map(|p| p >= THROUGHPUT_GOAL_PERCENT),
        },
        Goal {
            goal: "0 honest transactions lost".into(),
            value: format!(
                "{} lost with attackers ({} in the baseline)",
                r.attacked.lost,
                r.baseline
                    .as_ref()
                    .map_or("n/a".to_owned(), |b| b.lost.to_string())
            ),
            pass: Some(r.attacked.lost == 0),
        },
        Goal {
            goal: format!(
                "every attacker banned by every node within {} s",
                BAN_GOAL_MS / 1000.0
            ),
            value: match r.ban_after_ms_max {
                Some(ms) => format!(
                    "all {} pairs, the slowest after {:.1} s",
                    r.pairs,
                    ms / 1000.0
                ),
                None => format!(
                    "{} of {} attacker-node pairs banned",
                    r.banned_pairs, r.pairs
                ),
            },
            pass: Some(r.ban_after_ms_max.is_some_and(|ms| ms <= BAN_GOAL_MS)),
        },
    ];
    if let Some(d) = &r.fake_dials {
        let worst = d.per_minute_max.iter().copied().max().unwrap_or(0);
        // Shorter than a minute, the window is the whole attack: say so beside the figure.
        let short = if r.attack_seconds < 60.0 {
            format!(" (the attack lasted only {:.0} s)", r.attack_seconds)
        } else {
            String::new()
        };
        goals.push(Goal {
            goal: "fake addresses dialled per node per minute <= the configured limit".into(),
            value: format!(
                "at most {worst} per node in a minute{short}; limit {}",
                d.configured_per_minute.map_or(
                    "n/a (no discovery.max_dials_per_minute)".to_owned(),
                    |l| format!("{l:.0}")
                )
            ),
            pass: d.configured_per_minute.map(|l| worst as f64 <= l),
        });
    }
    goals
}

impl AttackReport {
    /// The section's lines in the table.
    pub fn write_table(&self, out: &mut String) {
        let tps = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.0} tx/s"));
        let base = self.baseline.as_ref().and_then(|b| b.delivered_tps);
        let _ = writeln!(
            out,
            "  attack: delivered {} with attackers vs {} baseline; {} attackers for {:.1} s",
            tps(self.attacked.delivered_tps),
            tps(base),
            self.attackers.len(),
            self.attack_seconds
        );
        for a in &self.attackers {
            let c = &a.counts;
            let _ = writeln!(
                out,
                "  attacker {} ({}): registered {}, notified {} (will_request {}), {} batched, \
                 served {} wrong / {} not found, {} adverts pushed; errors {:?}; cpu {:.1} s",
                a.index,
                a.roles.join("+"),
                c.registered,
                c.notified,
                c.will_request,
                c.batch_entries,
                c.pulls_wrong_body,
                c.pulls_not_found,
                c.adverts_pushed,
                c.errors,
                a.cpu_seconds
            );
        }
        if let Some(d) = &self.fake_dials {
            let _ = writeln!(
                out,
                "  fake dials: {} distinct, {} attempts; per node per minute max {:?}",
                d.distinct_total, d.attempts_total, d.per_minute_max
            );
        }
        for (name, value) in &self.node_metrics {
            let shown = match value {
                None => "n/a".to_owned(),
                // An unlabelled counter: its one number.
                Some(v) if v.len() == 1 && v.contains_key("") => format!("{}", v[""]),
                Some(v) => format!("{v:?}"),
            };
            let _ = writeln!(out, "  {name}: {shown}");
        }
        for g in &self.goals {
            let verdict = match g.pass {
                Some(true) => "PASS",
                Some(false) => "FAIL",
                None => "n/a ",
            };
            let _ = writeln!(out, "  [{verdict}] {}: {}", g.goal, g.value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attacker::sinkhole::SinkholeReport;
    use siege::BanSeen;

    fn run(tps: f64, lost: usize) -> RunFigures {
        RunFigures {
            accepted: 100,
            lost,
            delivered_tps: Some(tps),
            ..RunFigures::default()
        }
    }

    fn outcome(bans: Vec<Vec<Option<f64>>>) -> SiegeOutcome {
        let hole = SinkholeReport {
            distinct: 70,
            attempts: 90,
            new_per_second: vec![10, 50, 10],
            ..SinkholeReport::default()
        };
        SiegeOutcome {
            attackers: vec![AttackerReport {
                sinkholes: vec![hole.clone(), hole],
                ..AttackerReport::default()
            }],
            cpu_seconds: vec![1.0],
            bans: bans
                .into_iter()
                .map(|per_node| {
                    per_node
                        .into_iter()
                        .map(|ms| {
                            ms.map(|after_ms| BanSeen {
                                after_ms,
                                reason: None,
                            })
                        })
                        .collect()
                })
                .collect(),
            seconds: 15.0,
        }
    }

    #[test]
    fn goals_pass_fail_or_cannot_be_judged() {
        let r = build(
            Some(run(1000.0, 0)),
            run(960.0, 0),
            outcome(vec![vec![Some(2000.0), Some(9000.0)]]),
            BTreeMap::new(),
            Some(60.0),
        );
        assert_eq!(r.throughput_percent, Some(96.0));
        assert_eq!(r.ban_after_ms_max, Some(9000.0));
        let dials = r.fake_dials.as_ref().unwrap();
        assert_eq!(
            (dials.distinct_total, dials.per_minute_max.clone()),
            (140, vec![70, 70])
        );
        assert_eq!(dials.per_second_max, vec![50, 50]);
        let pass: Vec<_> = r.goals.iter().map(|g| g.pass).collect();
        assert_eq!(pass, [Some(true), Some(true), Some(true), Some(false)]);

        let r = build(
            None,
            run(500.0, 3),
            outcome(vec![vec![Some(1.0), None]]),
            BTreeMap::new(),
            None,
        );
        assert_eq!(r.throughput_percent, None);
        assert_eq!((r.ban_after_ms_max, r.banned_pairs, r.pairs), (None, 1, 2));
        let pass: Vec<_> = r.goals.iter().map(|g| g.pass).collect();
        assert_eq!(pass, [None, Some(false), Some(false), None]);
        assert!(r.goals[3].value.contains("n/a"), "{:?}", r.goals[3]);
    }
}
