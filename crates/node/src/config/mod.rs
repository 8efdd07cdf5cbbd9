//! The node's configuration: one struct per layer of the node, each field documented, each
//! default saying where its number came from.
//!
//! Values come from, lowest precedence first: the embedded defaults, a TOML file (or a Sorcha
//! `appsettings.json`, see [`sorcha`]), `SORCHA_PEER__SECTION__KEY` environment variables, and
//! CLI flags. [`load`] merges them and remembers where each value came from; [`validate`]
//! refuses every bad value before anything starts.

mod limits;
mod load;
mod scoring;
mod sorcha;
mod telemetry;
mod validate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use sorcha_peer_core::backoff::{BackoffConfig, RetryPolicy};
use sorcha_peer_core::breaker::BreakerConfig;
use sorcha_peer_core::gossip::{FanoutMode, GossipConfig};
use sorcha_peer_core::link::LinkConfig;
use sorcha_peer_core::membership::MembershipConfig;
use sorcha_peer_core::node::NodeConfig;

use crate::address::{DiscoveryOptions, PreferredFamily, parse_external_address};
pub use crate::store::durable::Durability;

pub use limits::LimitsConfig;
pub use load::{ConfigError, ENV_PREFIX, Invalid, LoadedConfig, Origin, Sources, load};
pub use scoring::ScoringConfig;
pub use telemetry::TelemetryConfig;
pub use validate::BootstrapAddr;

/// The commented configuration `sorcha-peer init` writes: every key with its default.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// Default peer (gRPC) port: Sorcha's `ListenPort` default.
pub const DEFAULT_PEER_PORT: u16 = 5001;
/// Default HTTP port (REST fallback, admin, metrics, health): shared/DESIGN.md section 4.
pub const DEFAULT_HTTP_PORT: u16 = 5080;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Name this node instead of deriving its id from its key (Sorcha networks may name nodes).
    /// Empty: the id is derived from the node's public key.
    pub node_id: String,
    /// Where the identity, the databases and the bound ports live.
    pub data_dir: PathBuf,
    /// The registers this node holds, advertised in its PeerInfo and heartbeats so Sorcha's
    /// register-aware routing (`FindPeersForRegister`) finds it. Empty: none.
    #[serde(deserialize_with = "string_or_list")]
    pub registers: Vec<String>,
    pub network: NetworkConfig,
    pub address: AddressConfig,
    pub discovery: DiscoveryConfig,
    pub communication: CommunicationConfig,
    pub distribution: DistributionConfig,
    pub offline: OfflineConfig,
    pub security: SecurityConfig,
    pub api: ApiConfig,
    pub storage: StorageConfig,
    pub log: LogConfig,
    pub telemetry: TelemetryConfig,
    pub limits: LimitsConfig,
    pub scoring: ScoringConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            node_id: String::new(),
            // The working directory, as Sorcha's `./data/tx_queue.db`.
            data_dir: PathBuf::from("./data"),
            registers: Vec::new(),
            network: NetworkConfig::default(),
            address: AddressConfig::default(),
            discovery: DiscoveryConfig::default(),
            communication: CommunicationConfig::default(),
            distribution: DistributionConfig::default(),
            offline: OfflineConfig::default(),
            security: SecurityConfig::default(),
            api: ApiConfig::default(),
            storage: StorageConfig::default(),
            log: LogConfig::default(),
            telemetry: TelemetryConfig::default(),
            limits: LimitsConfig::default(),
            scoring: ScoringConfig::default(),
        }
    }
}

/// The HTTP port's API.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Let anyone who reaches the HTTP port submit transactions. Off: callers other than
    /// loopback present the admin token (`Authorization: Bearer`, from
    /// `<data_dir>/admin.token`), like every other call that changes the node.
    pub open_submission: bool,
}

/// Who may connect to the peer port, and what a connection proves (see `transport::tls`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// `mtls`: every peer connection is TLS with a certificate for the peer's key; `mixed`:
    /// TLS and plaintext on the same port (plaintext peers are served as unverified);
    /// `plaintext`: no TLS at all (closed labs and tests).
    pub mode: SecurityMode,
    /// PEM file of an operator CA: peer certificates must chain to it (permissioned network).
    /// Empty: self-signed certificates, each bound to its node's key.
    pub ca_file: String,
    /// PEM certificate chain this node presents (issued by `ca_file`'s CA for `key_file`).
    /// Empty: a self-signed certificate for the node's key, made at start.
    pub cert_file: String,
    /// PEM PKCS#8 private key of `cert_file`; the node id derives from it. Empty:
    /// `<data_dir>/node.key`.
    pub key_file: String,
    /// PEM CRLs of the CA; reloaded when they change and on SIGHUP.
    #[serde(deserialize_with = "string_or_list")]
    pub crl_files: Vec<String>,
    /// Percent (1 to 100) of the peer list and of the active set that unverified peers may
    /// hold in `mixed` mode; they never displace verified ones.
    pub unverified_share: u8,
    /// A TLS handshake (or the first byte of a plaintext one) must finish within this.
    #[serde(with = "duration")]
    pub handshake_timeout: Duration,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            // Authenticated where both ends can, open to Sorcha's plaintext C# peers.
            mode: SecurityMode::Mixed,
            ca_file: String::new(),
            cert_file: String::new(),
            key_file: String::new(),
            crl_files: Vec::new(),
            // Half: a flood of unauthenticated identities can take at most half of the
            // places, and plaintext Sorcha peers still fit beside verified ones.
            unverified_share: 50,
            // A TLS 1.3 handshake is one round trip; 10 s covers a slow link many times and
            // frees the slot of a client that never finishes.
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecurityMode {
    Mtls,
    Mixed,
    Plaintext,
}

impl SecurityMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityMode::Mtls => "mtls",
            SecurityMode::Mixed => "mixed",
            SecurityMode::Plaintext => "plaintext",
        }
    }
}

/// The two listeners.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// Peer port: gRPC for other nodes. Port 0 picks a free port.
    #[serde(with = "socket_addr")]
    pub listen: SocketAddr,
    /// HTTP port: REST fallback, admin API, dashboard, metrics, health. Bind it to 127.0.0.1 to
    /// keep the admin surface local.
    #[serde(with = "socket_addr")]
    pub http_listen: SocketAddr,
    /// How long in-flight requests may take to finish after SIGTERM before the node exits.
    /// 4 s keeps the whole shutdown inside the 5 s that orchestrators usually grant.
    #[serde(with = "duration")]
    pub shutdown_grace: Duration,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], DEFAULT_PEER_PORT)),
            http_listen: SocketAddr::from(([0, 0, 0, 0], DEFAULT_HTTP_PORT)),
            shutdown_grace: Duration::from_secs(4),
        }
    }
}

/// How the node finds the address it advertises (Sorcha's `NetworkAddress` section).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AddressConfig {
    /// IP or host name, optional `:port`, that wins over discovery. Empty: discover.
    pub external_address: String,
    /// STUN servers (`host:port`), tried in order.
    #[serde(deserialize_with = "string_or_list")]
    pub stun_servers: Vec<String>,
    /// HTTP services answering with the caller's IP as plain text, tried after STUN.
    #[serde(deserialize_with = "string_or_list")]
    pub http_lookup_services: Vec<String>,
    /// `ipv4` or `ipv6`.
    pub preferred_protocol: IpFamily,
    /// Discovery runs again this often; a changed address is logged and advertised.
    #[serde(with = "duration")]
    pub recheck_interval: Duration,
}

impl Default for AddressConfig {
    fn default() -> Self {
        Self {
            external_address: String::new(),
            // Sorcha ships Google's STUN server and ipify here. This node contacts no third
            // party unless its operator names one: the embedded defaults must run on a closed
            // network without leaking the node's existence, and a public address on an
            // interface or the override covers servers that need no lookup.
            stun_servers: Vec::new(),
            http_lookup_services: Vec::new(),
            preferred_protocol: IpFamily::Ipv4,
            // NAT mappings and DHCP leases change on the scale of hours; 10 minutes notices a
            // change well before peers give up on us, at one UDP exchange per recheck.
            recheck_interval: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpFamily {
    Ipv4,
    Ipv6,
}

impl Config {
    /// The knobs of the membership state machine.
    pub fn membership(&self) -> MembershipConfig {
        let d = &self.discovery;
        MembershipConfig {
            refresh_interval: d.refresh_interval,
            max_peers_in_list: d.max_peers_in_list as usize,
            min_healthy_peers: d.min_healthy_peers as usize,
            peer_timeout: d.peer_timeout,
            max_concurrent_discoveries: d.max_concurrent_discoveries as usize,
            failure_threshold: d.failure_threshold,
            active_size: d.active_peers as usize,
            max_inbound: d.max_inbound as usize,
            discovery_target: d.discovery_target as usize,
            probe_interval: d.heartbeat_interval,
            // Only `mixed` has peers of both kinds: in `mtls` none is unverified, in
            // `plaintext` none is verified.
            unverified_share: match self.security.mode {
                SecurityMode::Mixed => self.security.unverified_share,
                SecurityMode::Mtls | SecurityMode::Plaintext => 100,
            },
            removal_after: d.forget_after,
            dial_rate_per_second: d.dial_rate_per_second,
            max_dials_per_minute: d.max_dials_per_minute as usize,
            // Bootstrap retries back off up to the refresh interval (Sorcha: 5 min cap).
            bootstrap_retry_cap: d.refresh_interval.min(Duration::from_secs(300)),
            bootstrap_retry_base: d.heartbeat_interval.min(Duration::from_secs(5)),
            ..MembershipConfig::default()
        }
    }
}

impl Config {
    /// The knobs of every state machine of the core node.
    pub fn node(&self) -> NodeConfig {
        NodeConfig {
            membership: self.membership(),
            gossip: self.gossip(),
            link: LinkConfig {
                speaks: self.speaks(),
                prefer: self.communication.preferred_protocol.via(),
                breaker: self.breaker(),
                retry: self.retry(),
                streaming_threshold: u64::from(self.distribution.streaming_threshold),
                size: sorcha_peer_wire::size::gossip_len,
            },
            score: self.scoring.core(),
        }
    }

    /// The transports this node speaks.
    pub fn speaks(&self) -> Speaks {
        let has = |p| self.communication.serve.contains(&p);
        Speaks {
            stream: has(WireProtocol::GrpcStream),
            grpc: has(WireProtocol::Grpc),
            rest: has(WireProtocol::Rest),
        }
    }

    /// Retries of idempotent sends: `max_retries`, the first after `retry_delay` (capped at the
    /// peer timeout so a retry never waits longer than a call may take), doubling with jitter.
    pub fn retry(&self) -> RetryPolicy {
        let c = &self.communication;
        let initial = c
            .retry_delay
            .min(self.discovery.peer_timeout)
            .max(Duration::from_millis(1));
        RetryPolicy::new(BackoffConfig {
            initial,
            max: initial * 8,
            max_retries: c.max_retries,
        })
        .expect("invariant: initial is positive and max is eight times it")
    }

    /// The per-peer circuit breakers.
    pub fn breaker(&self) -> BreakerConfig {
        let c = &self.communication;
        BreakerConfig {
            threshold: c.circuit_breaker_threshold,
            reset: c.circuit_breaker_reset,
            // A peer that keeps failing is tried less and less often, up to six resets apart.
            max_reset: c.circuit_breaker_reset * 6,
            trial_timeout: self.discovery.peer_timeout * 2,
        }
    }

    /// The knobs of the gossip state machine.
    pub fn gossip(&self) -> GossipConfig {
        let d = &self.distribution;
        GossipConfig {
            fanout: FanoutMode::Fixed(d.fanout as usize),
            max_hops: d.gossip_rounds,
            flood_fanout: FanoutMode::Fixed(d.flood_fanout as usize),
            max_transaction_size: u64::from(d.max_transaction_size),
            transaction_cache_ttl: d.transaction_cache_ttl,
            max_known: d.cache_max_transactions as usize,
            anti_entropy_interval: Some(d.anti_entropy_interval),
            fetch_timeout: d.fetch_timeout,
            eager_push_max_size: d.eager_push_max_bytes as usize,
            eager_min_peers: EAGER_MIN_PEERS,
            eager_push_max_rate: EAGER_PUSH_MAX_RATE,
            origin_push_peers: ORIGIN_PUSH_PEERS,
            pushed_announce_peers: PUSHED_ANNOUNCE_PEERS,
            ..GossipConfig::default()
        }
    }
}

impl AddressConfig {
    /// What address discovery needs from this section. `external_address` was validated at
    /// load time, so a parse failure here cannot happen; it would only mean "no override".
    pub fn discovery_options(&self) -> DiscoveryOptions {
        DiscoveryOptions {
            external_address: Some(self.external_address.trim())
                .filter(|a| !a.is_empty())
                .and_then(|a| parse_external_address(a).ok()),
            stun_servers: self.stun_servers.clone(),
            http_lookup_services: self.http_lookup_services.clone(),
            preferred: match self.preferred_protocol {
                IpFamily::Ipv4 => PreferredFamily::V4,
                IpFamily::Ipv6 => PreferredFamily::V6,
            },
            ..DiscoveryOptions::default()
        }
    }
}

/// Finding and keeping peers (Sorcha's `PeerDiscovery` section).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscoveryConfig {
    /// `host:port` of the peer ports of bootstrap nodes, tried in order. Empty: standalone.
    #[serde(deserialize_with = "string_or_list")]
    pub bootstrap_nodes: Vec<String>,
    /// Peer exchange with a few live peers this often. Sorcha: 15 minutes.
    #[serde(with = "duration")]
    pub refresh_interval: Duration,
    /// Most peers kept in the list. Sorcha: 1000.
    pub max_peers_in_list: u32,
    /// Fewer healthy peers than this is Degraded and triggers bootstrap again. Sorcha: 5.
    pub min_healthy_peers: u32,
    /// A peer that does not answer within this is counted as a failure. Sorcha: 30 s.
    #[serde(with = "duration")]
    pub peer_timeout: Duration,
    /// Peer-list requests in flight at once during discovery. Sorcha: 10.
    pub max_concurrent_discoveries: u32,
    /// Active peers are heartbeaten this often (and a few passive ones checked).
    #[serde(with = "duration")]
    pub heartbeat_interval: Duration,
    /// Peers kept in the active set: heartbeaten, counted as healthy, used for gossip.
    pub active_peers: u32,
    /// Peers that may hold this node in their active sets at once; past it a Ping is answered
    /// BUSY and the prober picks another peer, so no node becomes everyone's hub.
    pub max_inbound: u32,
    /// Known peers at which discovery stops asking peers for their lists.
    pub discovery_target: u32,
    /// Consecutive failed contacts after which a peer is unreachable and leaves the active set.
    pub failure_threshold: u32,
    /// A peer silent this long (and not active) is forgotten.
    #[serde(with = "duration")]
    pub forget_after: Duration,
    /// Peers learnt from others (never answered us) dialled per second at most.
    pub dial_rate_per_second: u32,
    /// Distinct such addresses dialled per minute at most.
    pub max_dials_per_minute: u32,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            bootstrap_nodes: Vec::new(),
            refresh_interval: Duration::from_secs(15 * 60),
            max_peers_in_list: 1000,
            min_healthy_peers: 5,
            peer_timeout: Duration::from_secs(30),
            // Sorcha's 10 asks every newly learned peer for its list at once; the simulator's
            // tuning runs (crates/sim/scenarios/tuning.toml, 1,000 nodes) reach the same
            // coverage and latency with 2, for 16x less CPU and 45x less membership traffic.
            max_concurrent_discoveries: 2,
            // One heartbeat per active peer every 10 s: with the failure threshold of 3 a dead
            // peer leaves the active set in about 30 s, Sorcha's peer timeout, and one lost
            // packet never removes a peer (SWIM's suspicion before removal).
            heartbeat_interval: Duration::from_secs(10),
            // Enough for a gossip fanout of 3 with spares; HyParView's active view is
            // log(n)+1, 8 for ~1,000 nodes and still connected at 10,000.
            active_peers: 8,
            // The simulator's choices (crates/core/src/membership/config.rs has the runs).
            max_inbound: MembershipConfig::default().max_inbound as u32,
            discovery_target: MembershipConfig::default().discovery_target as u32,
            // Sorcha design: three failures mark a peer unreachable.
            failure_threshold: 3,
            // A peer silent for an hour is gone; keeping it longer only slows bootstrap.
            forget_after: Duration::from_secs(3600),
            // The core's bounds, with their reasons (crates/core/src/membership/config.rs).
            dial_rate_per_second: MembershipConfig::default().dial_rate_per_second,
            max_dials_per_minute: MembershipConfig::default().max_dials_per_minute as u32,
        }
    }
}

/// Talking to one peer (Sorcha's `Communication` section).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CommunicationConfig {
    /// First protocol tried with a peer that offers it: `grpc_stream`, `grpc` or `rest`
    /// (must be served, see `serve`); the others follow when the peer refuses it. Sorcha:
    /// GrpcStream.
    pub preferred_protocol: WireProtocol,
    /// Connecting to a peer gives up after this. Sorcha: 30 s.
    #[serde(with = "duration")]
    pub connection_timeout: Duration,
    /// Attempts after the first for idempotent calls. Sorcha: 3.
    pub max_retries: u32,
    /// First retry delay; later ones double, with jitter. Sorcha: 5 s.
    #[serde(with = "duration")]
    pub retry_delay: Duration,
    /// Consecutive failures that open a peer's circuit. Sorcha: 5.
    pub circuit_breaker_threshold: u32,
    /// An open circuit half-opens after this. Sorcha: 5 minutes.
    #[serde(with = "duration")]
    pub circuit_breaker_reset: Duration,
    /// The transports this node serves on its peer port and uses with peers: `grpc_stream`,
    /// `grpc`, `rest`. All three by default; a node behind an HTTP/1.1-only proxy may list
    /// only `rest`.
    pub serve: Vec<WireProtocol>,
}

impl Default for CommunicationConfig {
    fn default() -> Self {
        Self {
            preferred_protocol: WireProtocol::GrpcStream,
            connection_timeout: Duration::from_secs(30),
            max_retries: 3,
            retry_delay: Duration::from_secs(5),
            circuit_breaker_threshold: 5,
            circuit_breaker_reset: Duration::from_secs(5 * 60),
            serve: vec![
                WireProtocol::GrpcStream,
                WireProtocol::Grpc,
                WireProtocol::Rest,
            ],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireProtocol {
    GrpcStream,
    Grpc,
    Rest,
}

impl WireProtocol {
    /// The core's transport of this name.
    pub fn via(self) -> sorcha_peer_core::link::Via {
        use sorcha_peer_core::link::Via;
        match self {
            WireProtocol::GrpcStream => Via::Stream,
            WireProtocol::Grpc => Via::Unary,
            WireProtocol::Rest => Via::Rest,
        }
    }
}

/// Spreading transactions (Sorcha's `TransactionDistribution` section).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistributionConfig {
    /// Peers each announcement goes to. Sorcha: 3.
    pub fanout: u32,
    /// Hop limit of an announcement. Sorcha: 3 gossip rounds.
    pub gossip_rounds: u32,
    /// Past the hop limit, a node announces to this many peers (not in Sorcha, which stops).
    pub flood_fanout: u32,
    /// How long a known transaction is kept. Sorcha: 3600 s.
    #[serde(with = "duration")]
    pub transaction_cache_ttl: Duration,
    /// Largest transaction body accepted, in bytes. Sorcha: 10 MiB.
    pub max_transaction_size: u32,
    /// Bodies larger than this are streamed in 64 KiB chunks. Sorcha: 1 MiB.
    pub streaming_threshold: u32,
    /// Compress bodies on the wire. Sorcha: on.
    pub enable_compression: bool,
    /// Transactions whose bodies are kept for peers and readers, at most.
    pub cache_max_transactions: u32,
    /// Bytes of bodies kept, at most.
    pub cache_max_bytes: u64,
    /// A random active peer gets a digest of our recent hashes this often, so lost
    /// announcements are repaired; partitions and restarts heal by sweeps of the whole window.
    #[serde(with = "duration")]
    pub anti_entropy_interval: Duration,
    /// A body fetch gives up on one announcer after this (plus 1 s per MiB) and tries the next.
    #[serde(with = "duration")]
    pub fetch_timeout: Duration,
    /// Bodies up to this size are pushed at once on the eager tree, not announced and
    /// pulled (not in Sorcha, whose peers get the announcement); 0: never pushed.
    pub eager_push_max_bytes: u32,
}

/// Largest `distribution.eager_push_max_bytes`: a push is one message on the peer's stream,
/// and bodies above the streaming threshold (1 MiB) are streamed in chunks instead.
pub const MAX_EAGER_PUSH_BYTES: u32 = 1024 * 1024;
/// Accepted transactions per second above which the daemon's push pauses (core
/// `gossip/pace.rs`): every body it relays is then announced and pulled, in batches (its own
/// submissions are still pushed). At 1,000 tx/s
/// (`peer-lab run compare-gossipsub`, 20 nodes) the push cost 1.5-2.9 duplicate bodies per
/// delivery and no time; at 100 and 200 tx/s it saves half the time to 90 %. A limit of
/// 500 let a loaded lab, submitting ~500/s, push a third of the bodies; 300 keeps 200 tx/s
/// (`propagation`) pushed. `crates/lab/README.md`, session 11.
const EAGER_PUSH_MAX_RATE: u32 = 300;

/// Eager links a daemon keeps (the tree's floor, core `gossip/tree.rs`; the core's default
/// is 4, chosen in the simulator for 10,000 nodes). With 4, a 20-node lab network kept ~1.5
/// duplicate pushes per delivery (the floor withholds the prunes) and 940-960 socket
/// B/node/tx in `propagation`; with 3, 0.3-0.4 and 660-680 B, the time to 90 % alike; with
/// 2 the tree broke more often (pushes missed, pulled after `graft_timeout`).
const EAGER_MIN_PEERS: usize = 3;

/// Lazy peers a daemon pushes its own submissions to besides its eager ones (core
/// `gossip/tree.rs`, the origin's shortcut), and lazy peers a pushed transaction is announced
/// to (core `announce.rs`; were `fanout` minus the peers pushed to). The eager tree of a
/// 20-node LAN is deep: in the simulator (`crates/sim/README.md`, session 12, 1-3 ms links,
/// 100 tx/s, the daemon's membership and push settings, seeds 1-3) the last node is 8-11
/// hops from the origin (p95), and time to 100 % p95 is 15 / 20 / 21 ms. With 3 shortcuts
/// and 1 announcement: 6 hops, 11 / 12 / 11 ms, for gossip bytes of 694 / 743 / 665 against
/// 779 / 716 / 719 (the shortcuts' duplicate bodies paid by fewer announcements).
const ORIGIN_PUSH_PEERS: usize = 3;
const PUSHED_ANNOUNCE_PEERS: usize = 1;

/// The daemon's `distribution.eager_push_max_bytes`: bodies up to 16 KiB are pushed
/// (default.toml has the figures).
pub const DEFAULT_EAGER_PUSH_BYTES: u32 = 16 * 1024;

/// Most peers `distribution.flood_fanout` may name: a node has at most ~2 x `active_peers`
/// gossip peers, so 64 is "all of them" in practice.
pub const MAX_FLOOD_FANOUT: u32 = 64;

impl Default for DistributionConfig {
    fn default() -> Self {
        // Where the gossip core has a default, it is the daemon's: the simulator measured it
        // (GossipConfig::default has the figures).
        let core = GossipConfig::default();
        Self {
            fanout: core.fanout.count(20) as u32,
            gossip_rounds: 3,
            flood_fanout: core.flood_fanout.count(MAX_FLOOD_FANOUT as usize) as u32,
            transaction_cache_ttl: Duration::from_secs(3600),
            max_transaction_size: 10 * 1024 * 1024,
            streaming_threshold: 1024 * 1024,
            enable_compression: true,
            // The lab's memory preset: 100,000 cached transactions within 100 MB of RSS.
            cache_max_transactions: 100_000,
            cache_max_bytes: 256 * 1024 * 1024,
            // The daemon has no "off"; the core's default runs anti-entropy (tested).
            anti_entropy_interval: core.anti_entropy_interval.unwrap_or(Duration::from_secs(5)),
            fetch_timeout: core.fetch_timeout,
            // On, unlike the core's (whose default keeps the simulator's reports comparable).
            eager_push_max_bytes: DEFAULT_EAGER_PUSH_BYTES,
        }
    }
}

/// The durable queue of transactions submitted while Offline (Sorcha's `OfflineMode`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OfflineConfig {
    /// Queued transactions at most; a full queue refuses new ones. Sorcha: 10000.
    pub max_queue_size: u32,
    /// Delivery attempts before a transaction moves to the dead-letter table. Sorcha: 5.
    pub max_retries: u32,
}

impl Default for OfflineConfig {
    fn default() -> Self {
        Self {
            max_queue_size: 10_000,
            max_retries: 5,
        }
    }
}

/// The durable transaction store (`<data_dir>/transactions.db`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `full` (default): every acknowledged transaction is fsynced, and survives a power cut.
    /// `normal`: it survives a crash of the process, not of the machine; commits are cheaper
    /// on slow disks.
    pub durability: Durability,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter: `info`, `debug`, `sorcha_peer=debug,tonic=warn`, ...
    pub level: String,
    /// `text` for people, `json` for log collectors.
    pub format: LogFormat,
    /// Events the event log (`/api/v1/events`, the dashboard) keeps; older ones are dropped
    /// and counted. 10,000 is hours of a quiet node and about 3 MB.
    pub events: u32,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
            events: 10_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Durations as people write them: "15m", "500ms", "1h 30m". A bare number is refused, since
/// nobody can tell whether it meant seconds or milliseconds.
mod duration {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        use serde::de::Error;
        match toml::Value::deserialize(d)? {
            toml::Value::String(text) => humantime::parse_duration(text.trim()).map_err(|e| {
                D::Error::custom(format!(
                    "{e}: expected a duration such as \"500ms\", \"30s\", \"15m\" or \"1h\""
                ))
            }),
            toml::Value::Integer(n) => Err(D::Error::custom(format!(
                "a bare number ({n}) is ambiguous: write the unit, e.g. \"{n}s\" or \"{n}ms\""
            ))),
            other => Err(D::Error::custom(format!(
                "expected a duration such as \"30s\", found {}",
                other.type_str()
            ))),
        }
    }
}

/// Socket addresses as `IP:PORT`, or a bare port meaning every IPv4 interface.
mod socket_addr {
    use super::*;

    pub fn serialize<S: Serializer>(a: &SocketAddr, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&a.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
        use serde::de::Error;
        let raw = match toml::Value::deserialize(d)? {
            toml::Value::String(text) => text,
            toml::Value::Integer(port) => port.to_string(),
            other => {
                return Err(D::Error::custom(format!(
                    "expected an address such as \"0.0.0.0:5001\", found {}",
                    other.type_str()
                )));
            }
        };
        super::parse_listen(&raw).map_err(D::Error::custom)
    }
}

/// Parses a listen address: `IP:PORT`, `[IPv6]:PORT`, or a bare port (all IPv4 interfaces).
pub fn parse_listen(raw: &str) -> Result<SocketAddr, String> {
    let raw = raw.trim();
    if let Ok(addr) = raw.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(port) = raw.parse::<u16>() {
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    Err(format!(
        "cannot parse {raw:?} as a listen address: expected IP:PORT (e.g. 0.0.0.0:5001 or [::]:5001) or a port number"
    ))
}

/// Lists from files are arrays; from an environment variable they may be one comma-separated
/// string (`SORCHA_PEER__DISCOVERY__BOOTSTRAP_NODES=a:5001,b:5001`).
fn string_or_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    use serde::de::Error;
    let expected = "expected a list of strings or one comma-separated string";
    match toml::Value::deserialize(d)? {
        toml::Value::String(text) => Ok(text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()),
        toml::Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                toml::Value::String(s) => Ok(s),
                other => Err(D::Error::custom(format!(
                    "{expected}, found a list item of type {}",
                    other.type_str()
                ))),
            })
            .collect(),
        other => Err(D::Error::custom(format!(
            "{expected}, found {}",
            other.type_str()
        ))),
    }
}

/// The transports this node speaks (and serves): the core's, whose link machine plans with
/// it too.
pub use sorcha_peer_core::link::Speaks;

#[cfg(test)]
mod tests;
