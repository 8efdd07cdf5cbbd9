//! Scenarios: what a lab run does, read from TOML. The presets under `presets/` are embedded in
//! the binary; any other file with the same keys can be given instead of a preset name.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// The presets shipped with the lab, by name.
pub const PRESETS: [(&str, &str); 15] = [
    ("smoke", include_str!("../presets/smoke.toml")),
    ("propagation", include_str!("../presets/propagation.toml")),
    (
        "propagation-fast",
        include_str!("../presets/propagation-fast.toml"),
    ),
    ("scale", include_str!("../presets/scale.toml")),
    (
        "scale-shipped",
        include_str!("../presets/scale-shipped.toml"),
    ),
    ("partition", include_str!("../presets/partition.toml")),
    ("churn", include_str!("../presets/churn.toml")),
    ("throughput", include_str!("../presets/throughput.toml")),
    ("memory", include_str!("../presets/memory.toml")),
    ("queue", include_str!("../presets/queue.toml")),
    ("crash", include_str!("../presets/crash.toml")),
    ("discovery", include_str!("../presets/discovery.toml")),
    (
        "discovery-staggered",
        include_str!("../presets/discovery-staggered.toml"),
    ),
    ("attack", include_str!("../presets/attack.toml")),
    (
        "compare-gossipsub",
        include_str!("../presets/compare-gossipsub.toml"),
    ),
];

/// Most nodes one run starts: every node is a process with two listeners and an SSE stream.
pub const MAX_NODES: usize = 500;
/// Most transactions in one phase; each is tracked per node in memory.
pub const MAX_TRANSACTIONS: usize = 1_000_000;
/// Most submissions in flight at once.
pub const MAX_CONCURRENCY: usize = 1024;

/// A scenario that cannot run, with the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// Neither a preset name nor a readable file.
    #[error("unknown preset or file {0:?}: presets are {presets}", presets = preset_names())]
    Unknown(String),
    /// The TOML does not parse or has unknown keys.
    #[error("{source_name}: {error}")]
    Parse { source_name: String, error: String },
    /// A value out of range.
    #[error("{key} = {value}: {allowed}")]
    Invalid {
        key: &'static str,
        value: String,
        allowed: String,
    },
}

fn preset_names() -> String {
    PRESETS.map(|(name, _)| name).join(", ")
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Node processes started.
    pub nodes: usize,
    /// The first `bootstrap_nodes` nodes are everyone's bootstrap nodes.
    #[serde(default = "one")]
    pub bootstrap_nodes: usize,
    /// How long every node may take to be Online before the run fails.
    #[serde(default = "secs_60", deserialize_with = "duration")]
    pub online_timeout: Duration,
    /// How long after the last submission every live node may take to hold every transaction.
    #[serde(default = "secs_30", deserialize_with = "duration")]
    pub settle_timeout: Duration,
    /// Peers every node must know for discovery to count as done; default min(50, nodes - 1).
    pub discovery_target: Option<u64>,
    /// `SORCHA_PEER__SECTION__KEY` settings for every node (timers scaled down for a lab).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub traffic: Traffic,
    #[serde(default)]
    pub faults: Vec<Fault>,
    /// Peers registered into node 0 over gRPC before the traffic (the memory preset).
    #[serde(default)]
    pub inject_peers: usize,
    /// The offline-queue flow instead of plain traffic (the queue preset).
    pub queue: Option<QueueSpec>,
    /// Attacker processes beside the nodes, after a baseline run without them (the attack
    /// preset).
    pub attack: Option<AttackSpec>,
    /// Pause between the spawns of the non-bootstrap nodes (0: all at once), each waited for
    /// before the pause: nodes joining a running network one by one (`discovery-staggered`).
    #[serde(default = "zero", deserialize_with = "duration")]
    pub start_every: Duration,
    /// Pause after every node is Online (and subscribed) before the traffic starts.
    #[serde(default = "zero", deserialize_with = "duration")]
    pub warmup: Duration,
    /// The same workload on rust-libp2p gossipsub and on sorcha-peer (the compare-gossipsub
    /// preset; see `compare`).
    pub compare: Option<CompareSpec>,
}

/// The `[compare]` section: the phases each system runs, one cluster each.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct CompareSpec {
    pub phases: Vec<ComparePhase>,
}

/// One phase: `transactions` bodies at `rate` per second.
#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ComparePhase {
    pub transactions: usize,
    pub rate: f64,
}

impl CompareSpec {
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let bad = |value: String, allowed: &str| ScenarioError::Invalid {
            key: "compare.phases",
            value,
            allowed: allowed.to_owned(),
        };
        if self.phases.is_empty() || self.phases.len() > 8 {
            return Err(bad(self.phases.len().to_string(), "1 to 8 phases"));
        }
        for p in &self.phases {
            if !(1..=MAX_TRANSACTIONS).contains(&p.transactions) {
                return Err(bad(p.transactions.to_string(), "1 to 1000000 transactions"));
            }
            if !(p.rate > 0.0 && p.rate <= 100_000.0) {
                return Err(bad(p.rate.to_string(), "a rate above 0, at most 100000/s"));
            }
        }
        Ok(())
    }
}

/// The attack preset's attackers and how the run is framed around them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttackSpec {
    /// Run the same workload first without attackers, for the throughput ratio.
    #[serde(default = "yes")]
    pub baseline: bool,
    /// How long the attackers run before the traffic starts.
    #[serde(default = "zero", deserialize_with = "duration")]
    pub lead: Duration,
    /// The attackers run (and bans are watched) at least this long, traffic or not.
    #[serde(default = "secs_15", deserialize_with = "duration")]
    pub hold: Duration,
    pub attackers: Vec<AttackerSpec>,
}

/// One attacker process (`peer-lab attacker` flags).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttackerSpec {
    #[serde(default)]
    pub flood: bool,
    /// Announcements per second over all nodes.
    #[serde(default = "thousand")]
    pub flood_rate: u64,
    #[serde(default)]
    pub lie: bool,
    /// Fake adverts pushed to every node.
    #[serde(default)]
    pub push_addresses: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Traffic {
    /// Transactions per phase.
    #[serde(default = "hundred")]
    pub transactions: usize,
    /// Body size in bytes (each body is unique).
    #[serde(default = "size_256")]
    pub size: usize,
    /// Submissions per second; 0 submits as fast as `concurrency` allows.
    #[serde(default)]
    pub rate: f64,
    /// One phase per rate instead of `rate` (the throughput preset steps up).
    #[serde(default)]
    pub rates: Vec<f64>,
    /// Submissions in flight at most.
    #[serde(default = "sixteen")]
    pub concurrency: usize,
    /// `"random"` (a live node per transaction) or `"node:I"`.
    #[serde(default = "random")]
    pub origins: Origins,
    /// Seeds the origin choice and the body filler.
    #[serde(default = "one_u64")]
    pub seed: u64,
}

impl Default for Traffic {
    fn default() -> Self {
        Self {
            transactions: 100,
            size: 256,
            rate: 0.0,
            rates: Vec::new(),
            concurrency: 16,
            origins: Origins::Random,
            seed: 1,
        }
    }
}

impl Traffic {
    /// The target rate of each phase.
    pub fn phase_rates(&self) -> Vec<f64> {
        if self.rates.is_empty() {
            vec![self.rate]
        } else {
            self.rates.clone()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origins {
    Random,
    Node(usize),
}

impl<'de> Deserialize<'de> for Origins {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        parse_origins(&raw).map_err(serde::de::Error::custom)
    }
}

pub fn parse_origins(raw: &str) -> Result<Origins, String> {
    if raw == "random" {
        return Ok(Origins::Random);
    }
    raw.strip_prefix("node:")
        .and_then(|i| i.parse().ok())
        .map(Origins::Node)
        .ok_or_else(|| format!("origins {raw:?}: expected \"random\" or \"node:I\""))
}

/// What happens to whom, `at` after the traffic starts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    #[serde(deserialize_with = "duration")]
    pub at: Duration,
    pub action: Action,
    /// The nodes it applies to (kill, restart, stop, cont, slow).
    #[serde(default)]
    pub nodes: Vec<usize>,
    /// The sides of a partition (partition, heal): no links between different groups.
    #[serde(default)]
    pub groups: Vec<Vec<usize>>,
    /// How long a slow period lasts; how long partition bans last (healed earlier by `heal`).
    #[serde(default, deserialize_with = "opt_duration")]
    pub duration: Option<Duration>,
    /// Slow peer without netem: stopped this long every `period`.
    #[serde(default, deserialize_with = "opt_duration")]
    pub pause: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub period: Option<Duration>,
    /// Slow peer with `--hosts netns`: one-way netem delay on the node's link.
    #[serde(default, deserialize_with = "opt_duration")]
    pub delay: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// SIGKILL.
    Kill,
    /// Starts a killed node again in the same data dir, on the same ports.
    Restart,
    /// SIGSTOP.
    Stop,
    /// SIGCONT.
    Cont,
    /// Cuts every link between different `groups`.
    Partition,
    /// Restores them.
    Heal,
    /// Makes `nodes` slow for `duration` (netem delay, or SIGSTOP bursts).
    Slow,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Kill => "kill",
            Action::Restart => "restart",
            Action::Stop => "stop",
            Action::Cont => "cont",
            Action::Partition => "partition",
            Action::Heal => "heal",
            Action::Slow => "slow",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSpec {
    /// Transactions node 0 queues while it has no peer.
    pub transactions: usize,
}

impl Scenario {
    /// A preset by name, or a TOML file by path.
    pub fn load(name_or_path: &str) -> Result<Self, ScenarioError> {
        if let Some((_, text)) = PRESETS.iter().find(|(name, _)| *name == name_or_path) {
            return Self::parse(text, name_or_path);
        }
        let path = Path::new(name_or_path);
        let text = std::fs::read_to_string(path)
            .map_err(|_| ScenarioError::Unknown(name_or_path.to_owned()))?;
        Self::parse(&text, name_or_path)
    }

    pub fn parse(text: &str, source_name: &str) -> Result<Self, ScenarioError> {
        let scenario: Self = toml::from_str(text).map_err(|e| ScenarioError::Parse {
            source_name: source_name.to_owned(),
            error: e.to_string(),
        })?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// The node count changed from the command line, then checked again.
    pub fn with_nodes(mut self, nodes: usize) -> Result<Self, ScenarioError> {
        self.nodes = nodes;
        self.bootstrap_nodes = self.bootstrap_nodes.min(nodes.max(1));
        self.validate()?;
        Ok(self)
    }

    /// Peers each node must know for discovery to be complete.
    pub fn discovery_goal(&self) -> u64 {
        let others = self.nodes.saturating_sub(1) as u64;
        self.discovery_target.unwrap_or(50).min(others)
    }

    /// Every value in range; the first one out of range is named, checked in the order the
    /// keys are documented: the cluster, the traffic, the faults, the extras.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        self.validate_cluster()?;
        self.traffic.validate(self.nodes)?;
        for fault in &self.faults {
            fault.validate(self.nodes)?;
        }
        self.validate_extras()
    }

    fn validate_cluster(&self) -> Result<(), ScenarioError> {
        if !(1..=MAX_NODES).contains(&self.nodes) {
            return invalid("nodes", self.nodes.to_string(), format!("1 to {MAX_NODES}"));
        }
        if !(1..=self.nodes).contains(&self.bootstrap_nodes) {
            return invalid(
                "bootstrap_nodes",
                self.bootstrap_nodes.to_string(),
                format!("1 to nodes ({})", self.nodes),
            );
        }
        Ok(())
    }

    /// The memory preset's injection and the queue preset's flow.
    fn validate_extras(&self) -> Result<(), ScenarioError> {
        if self.inject_peers > 100_000 {
            return invalid(
                "inject_peers",
                self.inject_peers.to_string(),
                "0 to 100000".into(),
            );
        }
        if let Some(a) = &self.attack {
            a.validate()?;
        }
        if let Some(c) = &self.compare {
            c.validate()?;
        }
        if let Some(q) = &self.queue
            && (q.transactions == 0 || self.nodes < 2)
        {
            return invalid(
                "queue.transactions",
                q.transactions.to_string(),
                "at least 1, with nodes >= 2 (node 0 queues, the others connect)".into(),
            );
        }
        Ok(())
    }
}

impl AttackSpec {
    fn validate(&self) -> Result<(), ScenarioError> {
        if self.attackers.is_empty() || self.attackers.len() > 16 {
            return invalid(
                "attack.attackers",
                self.attackers.len().to_string(),
                "1 to 16 attackers".into(),
            );
        }
        for a in &self.attackers {
            if a.push_addresses > 62_500 {
                return invalid(
                    "attack.attackers.push_addresses",
                    a.push_addresses.to_string(),
                    "0 to 62500 (127.66.1-250.1-250)".into(),
                );
            }
            if a.flood && !(1..=100_000).contains(&a.flood_rate) {
                return invalid(
                    "attack.attackers.flood_rate",
                    a.flood_rate.to_string(),
                    "1 to 100000 announcements per second".into(),
                );
            }
        }
        Ok(())
    }
}

impl Traffic {
    /// In range for a cluster of `nodes`.
    fn validate(&self, nodes: usize) -> Result<(), ScenarioError> {
        if self.transactions > MAX_TRANSACTIONS {
            return invalid(
                "traffic.transactions",
                self.transactions.to_string(),
                format!("0 to {MAX_TRANSACTIONS}"),
            );
        }
        if self.size < 64 {
            return invalid(
                "traffic.size",
                self.size.to_string(),
                "at least 64 bytes (room for the unique prefix)".into(),
            );
        }
        if !(1..=MAX_CONCURRENCY).contains(&self.concurrency) {
            return invalid(
                "traffic.concurrency",
                self.concurrency.to_string(),
                format!("1 to {MAX_CONCURRENCY}"),
            );
        }
        if self
            .phase_rates()
            .iter()
            .any(|r| !r.is_finite() || *r < 0.0)
        {
            return invalid(
                "traffic.rate",
                format!("{:?}", self.phase_rates()),
                "a finite number of tx/s >= 0 (0: as fast as possible)".into(),
            );
        }
        if let Origins::Node(i) = self.origins
            && i >= nodes
        {
            return invalid(
                "traffic.origins",
                format!("node:{i}"),
                format!("node:0 to node:{}", nodes - 1),
            );
        }
        Ok(())
    }
}

impl Fault {
    /// Names only nodes `0..nodes`, with the node list or groups its action needs.
    fn validate(&self, nodes: usize) -> Result<(), ScenarioError> {
        let all = self.nodes.iter().chain(self.groups.iter().flatten());
        if let Some(bad) = all.into_iter().find(|i| **i >= nodes) {
            return invalid(
                "faults.nodes",
                bad.to_string(),
                format!("node indices 0 to {}", nodes - 1),
            );
        }
        let needs_groups = matches!(self.action, Action::Partition | Action::Heal);
        if needs_groups && self.groups.len() < 2 {
            return invalid(
                "faults.groups",
                format!("{:?}", self.groups),
                "at least two groups of node indices".into(),
            );
        }
        if !needs_groups && self.nodes.is_empty() {
            return invalid(
                "faults.nodes",
                "[]".into(),
                format!("the nodes to {}", self.action.as_str()),
            );
        }
        Ok(())
    }
}

fn invalid(key: &'static str, value: String, allowed: String) -> Result<(), ScenarioError> {
    Err(ScenarioError::Invalid {
        key,
        value,
        allowed,
    })
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let raw = String::deserialize(d)?;
    humantime::parse_duration(&raw).map_err(|e| {
        serde::de::Error::custom(format!("{raw:?}: {e} (expected e.g. \"500ms\", \"30s\")"))
    })
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

fn one() -> usize {
    1
}
fn one_u64() -> u64 {
    1
}
fn hundred() -> usize {
    100
}
fn sixteen() -> usize {
    16
}
fn size_256() -> usize {
    256
}
fn random() -> Origins {
    Origins::Random
}
fn secs_60() -> Duration {
    Duration::from_secs(60)
}
fn secs_30() -> Duration {
    Duration::from_secs(30)
}
fn secs_15() -> Duration {
    Duration::from_secs(15)
}
fn zero() -> Duration {
    Duration::ZERO
}
fn yes() -> bool {
    true
}
fn thousand() -> u64 {
    1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_parses_and_validates() {
        for (name, _) in PRESETS {
            let s = Scenario::load(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(s.name, name);
        }
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = Scenario::parse("name = \"x\"\nnodes = 0\n", "t").unwrap_err();
        assert!(e.to_string().starts_with("nodes = 0"), "{e}");
        let e = Scenario::parse("name = \"x\"\nnodes = 2\nfoo = 1\n", "t").unwrap_err();
        assert!(e.to_string().contains("foo"), "{e}");
        let text =
            "name = \"x\"\nnodes = 3\n[[faults]]\nat = \"1s\"\naction = \"kill\"\nnodes = [3]\n";
        let e = Scenario::parse(text, "t").unwrap_err();
        assert!(e.to_string().contains("faults.nodes = 3"), "{e}");
        let text = "name = \"x\"\nnodes = 3\n[traffic]\norigins = \"node:7\"\n";
        assert!(Scenario::parse(text, "t").is_err());
    }

    #[test]
    fn durations_take_units_and_origins_parse() {
        let text = "name = \"x\"\nnodes = 3\nsettle_timeout = \"1500ms\"\n[traffic]\norigins = \"node:2\"\n";
        let s = Scenario::parse(text, "t").unwrap();
        assert_eq!(s.settle_timeout, Duration::from_millis(1500));
        assert_eq!(s.traffic.origins, Origins::Node(2));
        assert!(Scenario::parse("name = \"x\"\nnodes = 3\nsettle_timeout = \"5\"\n", "t").is_err());
    }

    #[test]
    fn discovery_goal_is_fifty_or_everyone() {
        let s = Scenario::parse("name = \"x\"\nnodes = 5\n", "t").unwrap();
        assert_eq!(s.discovery_goal(), 4);
        assert_eq!(s.with_nodes(100).unwrap().discovery_goal(), 50);
    }
}
