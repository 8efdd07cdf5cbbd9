//! Scenario files (TOML): what to simulate, with which seeds.
//!
//! A file holds a list of seeds, an optional `[defaults]` table and one or more `[[scenario]]`
//! tables; each scenario is its defaults with its own keys merged over them (tables merge key by
//! key, everything else replaces). Durations are strings (`"250ms"`, `"2m"`). Every value is
//! checked before a run starts; an invalid one is refused with the scenario, the key and what
//! is allowed. See `scenarios/*.toml` for commented examples.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use sorcha_peer_core::backoff::{BackoffConfig, RetryPolicy};
use sorcha_peer_core::gossip::{FanoutMode, GossipConfig};
use sorcha_peer_core::link::LinkConfig;
use sorcha_peer_core::membership::MembershipConfig;
use sorcha_peer_core::node::NodeConfig;

mod attack;

pub use attack::AttackSpec;

/// Nodes are addressed `10.a.b.c`, so at most 2^24 - 2 of them.
pub const MAX_NODES: usize = (1 << 24) - 2;

/// Why a scenario file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema.
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    /// A value is out of range.
    #[error("scenario {scenario:?}: {key} = {value}: {allowed}")]
    Invalid {
        scenario: String,
        key: &'static str,
        value: String,
        allowed: &'static str,
    },
}

/// A duration written as a humantime string ("20ms", "1m 30s").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct Dur(pub Duration);

impl TryFrom<String> for Dur {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        humantime::parse_duration(&s)
            .map(Dur)
            .map_err(|e| format!("invalid duration {s:?} ({e}): expected e.g. \"250ms\", \"30s\""))
    }
}

impl Dur {
    pub fn ms(self) -> u64 {
        u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX)
    }
}

/// A duration, or `"off"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct OptDur(pub Option<Duration>);

impl TryFrom<String> for OptDur {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        if s == "off" {
            return Ok(OptDur(None));
        }
        Dur::try_from(s).map(|d| OptDur(Some(d.0)))
    }
}

/// One scenario, fully resolved.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    /// Seeds to run; the file's top-level `seeds` when absent.
    #[serde(default)]
    pub seeds: Vec<u64>,
    pub nodes: usize,
    /// Virtual time at which the run ends (from the first node's start).
    pub duration: Dur,
    /// End early once every transaction reached every live honest node and no fault is due.
    #[serde(default = "yes")]
    pub stop_when_complete: bool,
    /// Interval of the coverage samples (the plot, partition convergence).
    #[serde(default = "default_sample_every")]
    pub sample_every: Dur,
    #[serde(default)]
    pub topology: Topology,
    #[serde(default)]
    pub network: NetworkSpec,
    pub transactions: Transactions,
    #[serde(default)]
    pub roles: Roles,
    #[serde(default)]
    pub attack: AttackSpec,
    #[serde(default)]
    pub transports: Transports,
    #[serde(default)]
    pub faults: Vec<Fault>,
    #[serde(default)]
    pub membership: MembershipOverrides,
    #[serde(default)]
    pub gossip: GossipOverrides,
    #[serde(default)]
    pub link: LinkOverrides,
}

fn yes() -> bool {
    true
}

fn default_sample_every() -> Dur {
    Dur(Duration::from_millis(500))
}

/// Who bootstraps through whom, and when nodes start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Topology {
    /// Nodes `0..bootstrap_nodes` are the bootstrap nodes; they start first.
    pub bootstrap_nodes: usize,
    /// Each other node is configured with between these many bootstrap nodes (random ones).
    pub bootstrap_per_node: [usize; 2],
    /// The other nodes start at random times spread over this window, after the bootstrap
    /// nodes.
    pub join_over: Dur,
}

impl Default for Topology {
    fn default() -> Self {
        Self {
            bootstrap_nodes: 3,
            bootstrap_per_node: [1, 3],
            join_over: Dur(Duration::from_secs(10)),
        }
    }
}

/// Latency of a link (both directions).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum LatencySpec {
    Fixed(Dur),
    /// Each link gets a latency drawn once, uniformly in `min..=max`.
    Uniform {
        min: Dur,
        max: Dur,
    },
    /// Nodes are placed in regions (by `weights`); a link's latency is `matrix[a][b]`, varied
    /// per link by up to +/- `spread` (a fraction).
    Regions {
        names: Vec<String>,
        weights: Vec<f64>,
        matrix: Vec<Vec<Dur>>,
        #[serde(default)]
        spread: f64,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkSpec {
    pub latency: LatencySpec,
    /// Per message, the link latency is stretched by up to this fraction (uniform).
    pub jitter: f64,
    /// Probability that one message (request, answer, announcement, body) is lost.
    pub loss: f64,
    /// Bytes per second of every link: a message takes `size / bandwidth` on top of latency.
    pub bandwidth: u64,
}

impl Default for NetworkSpec {
    fn default() -> Self {
        Self {
            latency: LatencySpec::Fixed(Dur(Duration::from_millis(50))),
            jitter: 0.0,
            loss: 0.0,
            // 100 Mbit/s.
            bandwidth: 12_500_000,
        }
    }
}

/// Where transactions are submitted.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Origins {
    /// `"random"`: a random live honest node per transaction.
    Random(String),
    /// These node indices, in turn (skipping ones that are down).
    Nodes(Vec<usize>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transactions {
    pub count: usize,
    /// First submission (the warm-up before it lets membership settle).
    pub start: Dur,
    /// Submissions per second.
    pub rate: f64,
    /// Body size in bytes; with `size_max`, uniform in `size..=size_max`.
    pub size: u64,
    #[serde(default)]
    pub size_max: Option<u64>,
    #[serde(default = "random_origins")]
    pub origins: Origins,
    #[serde(default)]
    pub register_id: Option<String>,
}

fn random_origins() -> Origins {
    Origins::Random("random".into())
}

/// Misbehaving nodes, as fractions of all nodes (bootstrap nodes are always honest).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Roles {
    /// Never announce, forward or answer fetches; answer membership requests normally.
    pub droppers: f64,
    /// Answer every fetch with a body of the right size and the wrong bytes.
    pub liars: f64,
    /// Announce hashes nobody holds (see `attack.rs`).
    pub flooders: f64,
    /// Make fake identities that push fake peers and announce junk (see `attack.rs`).
    pub eclipsers: f64,
}

/// Which transports nodes serve, as fractions of the non-bootstrap nodes (the others speak
/// all three, as the daemon ships). A node that does not serve a transport refuses it, as
/// the daemon would (gRPC UNIMPLEMENTED, HTTP 404), and does not advertise it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Transports {
    /// Unary gRPC only: no stream, no REST.
    pub unary_only: f64,
    /// The REST fallback only: no gRPC at all.
    pub rest_only: f64,
}

/// `[link]`: the per-peer link policy's knobs; unset ones keep the daemon's defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkOverrides {
    /// Consecutive failures that open a peer's circuit.
    #[serde(default)]
    pub breaker_threshold: Option<u32>,
    /// How long an opened circuit stays open (first trip; each failed trial doubles it, up to
    /// four times this).
    #[serde(default)]
    pub breaker_reset: Option<Dur>,
    /// Retries of a failed gossip send.
    #[serde(default)]
    pub max_retries: Option<u32>,
    /// The first retry's delay (doubling, with jitter, up to eight times this).
    #[serde(default)]
    pub retry_delay: Option<Dur>,
}

impl LinkOverrides {
    pub fn apply(&self, config: &mut LinkConfig) {
        if let Some(threshold) = self.breaker_threshold {
            config.breaker.threshold = threshold;
        }
        if let Some(reset) = self.breaker_reset {
            config.breaker.reset = reset.0;
            config.breaker.max_reset = reset.0 * 4;
        }
        if self.max_retries.is_some() || self.retry_delay.is_some() {
            let mut backoff = BackoffConfig::default();
            if let Some(n) = self.max_retries {
                backoff.max_retries = n;
            }
            if let Some(d) = self.retry_delay {
                backoff.initial = d.0.max(Duration::from_millis(1));
                backoff.max = backoff.initial * 8;
            }
            // Checked by validate: a positive delay, and max is eight times it.
            if let Ok(policy) = RetryPolicy::new(backoff) {
                config.retry = policy;
            }
        }
    }
}

/// How churned nodes go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChurnMode {
    /// Gone without a word: requests to it time out.
    #[default]
    Crash,
    /// Stopped: connections are refused (`Unreachable` after one round trip).
    Leave,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// From `at`, over `over`, a `fraction` of the live non-bootstrap nodes go down; each
    /// comes back `downtime` later with the peers it persisted (never, without `downtime`).
    Churn {
        at: Dur,
        fraction: f64,
        #[serde(default = "zero")]
        over: Dur,
        #[serde(default)]
        downtime: Option<Dur>,
        #[serde(default)]
        mode: ChurnMode,
    },
    /// From `at`, for `lasts`, a `fraction` of the live non-bootstrap nodes fail every call
    /// made to them (a transport failure after a round trip) while still calling out.
    Fail { at: Dur, fraction: f64, lasts: Dur },
    /// At `at` the nodes are split at random into groups of the given fractions; messages
    /// between groups are lost until `heal_after` later (forever without it).
    Partition {
        at: Dur,
        groups: Vec<f64>,
        #[serde(default)]
        heal_after: Option<Dur>,
    },
}

fn zero() -> Dur {
    Dur(Duration::ZERO)
}

/// Declares a struct of optional overrides and the function applying them to a config.
macro_rules! overrides {
    ($(#[$doc:meta])* $name:ident => $config:ty { $($field:ident: $ty:ty => $conv:expr),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $(#[serde(default)] pub $field: Option<$ty>,)*
        }

        impl $name {
            pub fn apply(&self, config: &mut $config) {
                $(if let Some(v) = self.$field.clone() { config.$field = ($conv)(v); })*
            }
        }
    };
}

overrides!(
    /// `[membership]`: any field of `MembershipConfig`; unset ones keep the daemon's default.
    MembershipOverrides => MembershipConfig {
        refresh_interval: Dur => |d: Dur| d.0,
        max_peers_in_list: usize => |v| v,
        min_healthy_peers: usize => |v| v,
        peer_timeout: Dur => |d: Dur| d.0,
        max_concurrent_discoveries: usize => |v| v,
        max_discovery_asks: usize => |v| v,
        failure_threshold: u32 => |v| v,
        bootstrap_retry_base: Dur => |d: Dur| d.0,
        bootstrap_retry_cap: Dur => |d: Dur| d.0,
        active_size: usize => |v| v,
        probe_interval: Dur => |d: Dur| d.0,
        passive_checks_per_probe: usize => |v| v,
        exchange_fanout: usize => |v| v,
        exchange_size: u32 => |v| v,
        peer_list_request_size: u32 => |v| v,
        discovery_target: usize => |v| v,
        max_inbound: usize => |v| v,
        removal_after: Dur => |d: Dur| d.0,
        relay_active_relays: usize => |v| v,
        leaf_active_relays: usize => |v| v,
        relay_max_inbound: usize => |v| v,
    }
);

/// `fanout = 3`, `"sqrt"` or `"all"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum FanoutSpec {
    Fixed(usize),
    Named(String),
}

impl FanoutSpec {
    fn mode(&self) -> Option<FanoutMode> {
        match self {
            FanoutSpec::Fixed(n) => Some(FanoutMode::Fixed(*n)),
            FanoutSpec::Named(s) if s == "sqrt" => Some(FanoutMode::Sqrt),
            FanoutSpec::Named(s) if s == "all" => Some(FanoutMode::All),
            FanoutSpec::Named(_) => None,
        }
    }
}

overrides!(
    /// `[gossip]`: any field of `GossipConfig`; unset ones keep the daemon's default.
    GossipOverrides => GossipConfig {
        fanout: FanoutSpec => |f: FanoutSpec| f.mode().expect("checked by validate"),
        max_hops: u32 => |v| v,
        flood_past_max_hops: bool => |v| v,
        flood_fanout: FanoutSpec => |f: FanoutSpec| f.mode().expect("checked by validate"),
        flush_interval: Dur => |d: Dur| d.0,
        max_batch: usize => |v| v,
        max_transaction_size: u64 => |v| v,
        fetch_timeout: Dur => |d: Dur| d.0,
        fetch_timeout_per_mib: Dur => |d: Dur| d.0,
        max_in_flight: usize => |v| v,
        max_in_flight_per_peer: usize => |v| v,
        max_pending: usize => |v| v,
        max_announcers: usize => |v| v,
        eager_push_max_size: usize => |v| v,
        eager_push_peers: usize => |v| v,
        graft_timeout: Dur => |d: Dur| d.0,
        eager_min_peers: usize => |v| v,
        pushed_announce_peers: usize => |v| v,
        slow_push_lag: Dur => |d: Dur| d.0,
        slow_push_floor: usize => |v| v,
        lazy_flush_interval: Dur => |d: Dur| d.0,
        flood_push_hops: u32 => |v| v,
        relay_percent: u32 => |v| v,
        lazy_same_peer: bool => |v| v,
        leaf_eager_peers: usize => |v| v,
        eager_push_max_rate: u32 => |v| v,
        origin_push_peers: usize => |v| v,
        transaction_cache_ttl: Dur => |d: Dur| d.0,
        max_known: usize => |v| v,
        bloom_bits: usize => |v| v,
        bloom_hashes: u32 => |v| v,
        bloom_reset_interval: Dur => |d: Dur| d.0,
        anti_entropy_interval: OptDur => |d: OptDur| d.0,
        anti_entropy_window: Dur => |d: Dur| d.0,
        anti_entropy_recent: Dur => |d: Dur| d.0,
        anti_entropy_sweep_interval: Dur => |d: Dur| d.0,
    }
);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    seeds: Vec<u64>,
    #[serde(default)]
    defaults: toml::Table,
    scenario: Vec<toml::Table>,
}

/// Reads and checks every scenario of a file.
pub fn load(path: &Path) -> Result<Vec<Scenario>, ScenarioError> {
    let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse(&text, &path.display().to_string())
}

/// Parses and checks the scenarios of a file's text; `origin` names it in errors.
pub fn parse(text: &str, origin: &str) -> Result<Vec<Scenario>, ScenarioError> {
    let parse_err = |message: String| ScenarioError::Parse {
        path: origin.to_string(),
        message,
    };
    let file: File = toml::from_str(text).map_err(|e| parse_err(e.to_string()))?;
    let mut out = Vec::new();
    for (i, table) in file.scenario.into_iter().enumerate() {
        let mut merged = file.defaults.clone();
        merge(&mut merged, table);
        let mut scenario: Scenario = toml::Value::Table(merged)
            .try_into()
            .map_err(|e: toml::de::Error| parse_err(format!("scenario #{}: {e}", i + 1)))?;
        if scenario.seeds.is_empty() {
            scenario.seeds = file.seeds.clone();
        }
        scenario.validate()?;
        out.push(scenario);
    }
    Ok(out)
}

/// Merges `over` into `base`: tables key by key, other values replaced.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

impl Scenario {
    /// The node configuration: the daemon's defaults with this scenario's overrides.
    pub fn node_config(&self) -> NodeConfig {
        let mut config = NodeConfig::default();
        self.membership.apply(&mut config.membership);
        self.gossip.apply(&mut config.gossip);
        self.link.apply(&mut config.link);
        config.link.size = crate::wire::gossip_len;
        config
    }

    fn invalid(
        &self,
        key: &'static str,
        value: impl ToString,
        allowed: &'static str,
    ) -> ScenarioError {
        ScenarioError::Invalid {
            scenario: self.name.clone(),
            key,
            value: value.to_string(),
            allowed,
        }
    }

    /// Refuses values the simulator cannot run.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let fraction = |f: f64| (0.0..=1.0).contains(&f);
        if self.seeds.is_empty() {
            return Err(self.invalid("seeds", "[]", "at least one seed"));
        }
        for (key, f) in [
            ("gossip.fanout", &self.gossip.fanout),
            ("gossip.flood_fanout", &self.gossip.flood_fanout),
        ] {
            if let Some(f) = f
                && f.mode().is_none()
            {
                return Err(self.invalid(key, format!("{f:?}"), "a number, \"sqrt\" or \"all\""));
            }
        }
        if !(2..=MAX_NODES).contains(&self.nodes) {
            return Err(self.invalid("nodes", self.nodes, "2 to 16777214"));
        }
        let t = &self.topology;
        if !(1..=self.nodes).contains(&t.bootstrap_nodes) {
            return Err(self.invalid("topology.bootstrap_nodes", t.bootstrap_nodes, "1 to nodes"));
        }
        let [lo, hi] = t.bootstrap_per_node;
        if lo == 0 || lo > hi {
            return Err(self.invalid(
                "topology.bootstrap_per_node",
                format!("[{lo}, {hi}]"),
                "[min, max] with 1 <= min <= max",
            ));
        }
        if self.sample_every.0.is_zero() {
            return Err(self.invalid("sample_every", "0", "a positive duration"));
        }
        self.validate_network()?;
        self.validate_transactions()?;
        let r = &self.roles;
        self.validate_link()?;
        let all = [r.droppers, r.liars, r.flooders, r.eclipsers];
        if !all.iter().all(|f| fraction(*f)) || all.iter().sum::<f64>() > 1.0 {
            return Err(self.invalid(
                "roles",
                format!(
                    "droppers {} liars {} flooders {} eclipsers {}",
                    r.droppers, r.liars, r.flooders, r.eclipsers
                ),
                "fractions in 0..=1 that sum to at most 1",
            ));
        }
        for fault in &self.faults {
            match fault {
                Fault::Churn { fraction: f, .. } | Fault::Fail { fraction: f, .. }
                    if !fraction(*f) =>
                {
                    return Err(self.invalid("faults.fraction", f, "0 to 1"));
                }
                Fault::Partition { groups, .. } => {
                    let sum: f64 = groups.iter().sum();
                    if groups.len() < 2
                        || groups.iter().any(|g| *g <= 0.0)
                        || (sum - 1.0).abs() > 1e-6
                    {
                        return Err(self.invalid(
                            "faults.groups",
                            format!("{groups:?}"),
                            "two or more positive fractions summing to 1",
                        ));
                    }
                }
                Fault::Churn { .. } | Fault::Fail { .. } => {}
            }
        }
        Ok(())
    }

    fn validate_link(&self) -> Result<(), ScenarioError> {
        let fraction = |f: f64| (0.0..=1.0).contains(&f);
        let t = &self.transports;
        if !fraction(t.unary_only) || !fraction(t.rest_only) || t.unary_only + t.rest_only > 1.0 {
            return Err(self.invalid(
                "transports",
                format!("unary_only {} rest_only {}", t.unary_only, t.rest_only),
                "fractions in 0..=1 that sum to at most 1",
            ));
        }
        let link = self.node_config().link;
        if let Err(e) = link.breaker.validate() {
            return Err(self.invalid("link.breaker", e, "threshold >= 1 and a positive reset"));
        }
        if self.link.retry_delay.is_some_and(|d| d.0.is_zero()) {
            return Err(self.invalid("link.retry_delay", "0", "a positive duration"));
        }
        Ok(())
    }

    fn validate_network(&self) -> Result<(), ScenarioError> {
        let n = &self.network;
        if !(0.0..1.0).contains(&n.loss) {
            return Err(self.invalid("network.loss", n.loss, "0 <= loss < 1"));
        }
        if !(0.0..=10.0).contains(&n.jitter) {
            return Err(self.invalid("network.jitter", n.jitter, "0 to 10 (a fraction)"));
        }
        if n.bandwidth == 0 {
            return Err(self.invalid("network.bandwidth", 0, "bytes per second, above 0"));
        }
        match &n.latency {
            LatencySpec::Fixed(_) => {}
            LatencySpec::Uniform { min, max } if min > max => {
                return Err(self.invalid(
                    "network.latency.uniform",
                    format!("{min:?}..{max:?}"),
                    "min <= max",
                ));
            }
            LatencySpec::Uniform { .. } => {}
            LatencySpec::Regions {
                names,
                weights,
                matrix,
                spread,
            } => {
                let square =
                    matrix.len() == names.len() && matrix.iter().all(|r| r.len() == names.len());
                let weighted = weights.len() == names.len()
                    && weights.iter().all(|w| *w >= 0.0)
                    && weights.iter().sum::<f64>() > 0.0;
                if names.is_empty() || !square || !weighted || !(0.0..=1.0).contains(spread) {
                    return Err(self.invalid(
                        "network.latency.regions",
                        format!("{} names, {} weights, {} rows", names.len(), weights.len(), matrix.len()),
                        "one weight (>= 0) and one matrix row of one latency per region each, spread 0 to 1",
                    ));
                }
            }
        }
        Ok(())
    }

    fn validate_transactions(&self) -> Result<(), ScenarioError> {
        let tx = &self.transactions;
        let config = self.node_config();
        if !(tx.rate > 0.0 && tx.rate.is_finite()) {
            return Err(self.invalid(
                "transactions.rate",
                tx.rate,
                "submissions per second, above 0",
            ));
        }
        let max = tx.size_max.unwrap_or(tx.size);
        if tx.size == 0 || max < tx.size || max > config.gossip.max_transaction_size {
            return Err(self.invalid(
                "transactions.size",
                format!("{}..={max}", tx.size),
                "1 <= size <= size_max <= gossip.max_transaction_size",
            ));
        }
        if tx.start >= self.duration {
            return Err(self.invalid(
                "transactions.start",
                format!("{:?}", tx.start.0),
                "before duration",
            ));
        }
        match &tx.origins {
            Origins::Random(s) if s != "random" => {
                return Err(self.invalid(
                    "transactions.origins",
                    s,
                    "\"random\" or a list of node indices",
                ));
            }
            Origins::Nodes(list) if list.is_empty() || list.iter().any(|n| *n >= self.nodes) => {
                return Err(self.invalid(
                    "transactions.origins",
                    format!("{list:?}"),
                    "node indices below nodes",
                ));
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
seeds = [1, 2]
[defaults]
nodes = 10
duration = "60s"
transactions = { count = 3, start = "20s", rate = 1.0, size = 100 }
network.latency.uniform = { min = "20ms", max = "200ms" }
membership.probe_interval = "2s"

[[scenario]]
name = "a"

[[scenario]]
name = "b"
seeds = [7]
nodes = 20
network.loss = 0.01
gossip = { fanout = "all", anti_entropy_interval = "off" }
"#;

    #[test]
    fn scenarios_inherit_defaults_and_override_them() {
        let s = parse(FILE, "test").expect("valid");
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].nodes, s[0].seeds.clone()), (10, vec![1, 2]));
        assert_eq!((s[1].nodes, s[1].seeds.clone()), (20, vec![7]));
        assert!(
            matches!(s[1].network.latency, LatencySpec::Uniform { .. }),
            "table merged"
        );
        assert_eq!(s[1].network.loss, 0.01);
        let c = s[1].node_config();
        assert_eq!(c.membership.probe_interval, Duration::from_secs(2));
        assert_eq!(c.gossip.fanout, FanoutMode::All);
        assert_eq!(c.gossip.anti_entropy_interval, None);
        assert_eq!(s[0].node_config().gossip, GossipConfig::default());
    }

    #[test]
    fn bad_values_are_refused_with_the_key() {
        let bad = FILE.replace("network.loss = 0.01", "network.loss = 1.5");
        let err = parse(&bad, "test").unwrap_err().to_string();
        assert!(err.contains("network.loss = 1.5"), "{err}");
        let bad = FILE.replace("nodes = 20", "nodes = 20\nbogus = 1");
        assert!(
            parse(&bad, "test")
                .unwrap_err()
                .to_string()
                .contains("bogus")
        );
        let bad = FILE.replace("\"all\"", "\"most\"");
        assert!(
            parse(&bad, "test")
                .unwrap_err()
                .to_string()
                .contains("gossip.fanout")
        );
    }
}
