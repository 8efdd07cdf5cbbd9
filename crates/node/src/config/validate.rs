//! Range and syntax checks of every configuration value, run before anything starts. Each
//! problem names the key and says what is allowed; all problems are reported at once.
//!
//! The ranges are Sorcha's `[Range]` attributes where they exist, widened at the low end where
//! tests and small labs need faster timers (noted per check).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use sorcha_peer_core::model::{PeerId, validate_address};

use super::{Config, MAX_EAGER_PUSH_BYTES, MAX_FLOOD_FANOUT, WireProtocol};
use crate::address::parse_external_address;

/// A `host:port` of another node (bootstrap nodes, STUN servers). An `http://` or `https://`
/// prefix, as Sorcha configurations sometimes carry, is accepted and dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapAddr {
    pub host: String,
    pub port: u16,
}

impl FromStr for BootstrapAddr {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let expected =
            "expected HOST:PORT, e.g. 10.0.0.5:5001, peer1.example.org:5001 or [fd00::5]:5001";
        let rest = raw
            .trim()
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .trim_end_matches('/');
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| format!("{raw:?} has no port: {expected}"))?;
        if host.contains(':') && !host.starts_with('[') {
            return Err(format!(
                "{raw:?}: an IPv6 address needs brackets: {expected}"
            ));
        }
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{raw:?}: port must be 1 to 65535: {expected}"))?;
        let host = validate_address(host).map_err(|e| format!("{e}: {expected}"))?;
        Ok(Self { host, port })
    }
}

impl fmt::Display for BootstrapAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Every problem as `(dotted key, what is wrong and what is allowed)`.
pub(super) fn validate(c: &Config) -> Vec<(String, String)> {
    let mut v = Problems::default();
    if !c.node_id.is_empty()
        && let Err(e) = c.node_id.parse::<PeerId>()
    {
        v.push("node_id", e.to_string());
    }
    if c.data_dir.as_os_str().is_empty() {
        v.push("data_dir", "must not be empty".into());
    }
    registers(c, &mut v);
    network(c, &mut v);
    address(c, &mut v);
    discovery(c, &mut v);
    communication(c, &mut v);
    distribution(c, &mut v);
    security(c, &mut v);
    for (key, why) in c.scoring.problems() {
        v.push(&key, why);
    }
    v.range(
        "offline.max_queue_size",
        c.offline.max_queue_size,
        1,
        1_000_000,
    );
    v.range("offline.max_retries", c.offline.max_retries, 1, 10);
    v.range("log.events", c.log.events, 100, 1_000_000);
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&c.log.level) {
        v.push(
            "log.level",
            format!("{e}: expected a level (error, warn, info, debug, trace) or a filter such as sorcha_peer=debug,info"),
        );
    }
    telemetry(c, &mut v);
    limits(c, &mut v);
    v.0
}

fn telemetry(c: &Config, v: &mut Problems) {
    let t = &c.telemetry;
    if t.otlp_enabled()
        && let Err(e) = super::telemetry::check_endpoint(t.otlp_endpoint.trim())
    {
        v.push("telemetry.otlp_endpoint", e);
    }
    // 100 ms for tests; an hour is past any collector's staleness window.
    v.duration(
        "telemetry.otlp_interval",
        t.otlp_interval,
        millis(100),
        secs(3600),
    );
}

fn limits(c: &Config, v: &mut Problems) {
    let l = &c.limits;
    v.range(
        "limits.membership_per_second",
        l.membership_per_second,
        1,
        1_000_000,
    );
    v.range(
        "limits.announcements_per_second",
        l.announcements_per_second,
        1,
        1_000_000,
    );
    v.range(
        "limits.announced_transactions_per_second",
        l.announced_transactions_per_second,
        1,
        10_000_000,
    );
    v.range("limits.pulls_per_second", l.pulls_per_second, 1, 1_000_000);
    v.range("limits.pulls_in_flight", l.pulls_in_flight, 1, 100_000);
    // At least one 64 KiB chunk a second: below that a body could never arrive in time.
    if !(64 * 1024..=u64::from(u32::MAX)).contains(&l.received_bytes_per_second) {
        v.push(
            "limits.received_bytes_per_second",
            format!("must be between 65536 and {}", u32::MAX),
        );
    }
    v.range(
        "limits.connections_per_address_per_minute",
        l.connections_per_address_per_minute,
        1,
        1_000_000,
    );
    v.range("limits.max_connections", l.max_connections, 1, 1_000_000);
    v.range(
        "limits.max_connections_per_address",
        l.max_connections_per_address,
        1,
        l.max_connections.max(1),
    );
    v.duration(
        "limits.header_timeout",
        l.header_timeout,
        millis(100),
        secs(600),
    );
    v.duration(
        "limits.idle_timeout",
        l.idle_timeout,
        millis(100),
        secs(86_400),
    );
    let upload = l.upload_bytes_per_second;
    if upload != 0 && !(64 * 1024..=u64::from(u32::MAX)).contains(&upload) {
        v.push(
            "limits.upload_bytes_per_second",
            format!("must be 0 (unlimited) or between 65536 and {}", u32::MAX),
        );
    }
}

fn network(c: &Config, v: &mut Problems) {
    let n = &c.network;
    if n.listen.port() != 0 && n.listen == n.http_listen {
        v.push(
            "network.http_listen",
            format!(
                "same address as network.listen ({}): the peer and HTTP ports must differ",
                n.listen
            ),
        );
    }
    v.duration(
        "network.shutdown_grace",
        n.shutdown_grace,
        Duration::ZERO,
        secs(60),
    );
}

fn address(c: &Config, v: &mut Problems) {
    let a = &c.address;
    let external = a.external_address.trim();
    if !external.is_empty()
        && let Err(e) = parse_external_address(external)
    {
        v.push("address.external_address", e.to_string());
    }
    v.duration(
        "address.recheck_interval",
        a.recheck_interval,
        secs(10),
        secs(24 * 3600),
    );
    for (i, server) in a.stun_servers.iter().enumerate() {
        if let Err(e) = server.parse::<BootstrapAddr>() {
            v.push(&format!("address.stun_servers[{i}]"), e);
        }
    }
    for (i, url) in a.http_lookup_services.iter().enumerate() {
        if !(url.starts_with("http://") || url.starts_with("https://"))
            || url.contains(char::is_whitespace)
        {
            v.push(
                &format!("address.http_lookup_services[{i}]"),
                format!("{url:?} is not an http:// or https:// URL"),
            );
        }
    }
}

fn discovery(c: &Config, v: &mut Problems) {
    let d = &c.discovery;
    for (i, node) in d.bootstrap_nodes.iter().enumerate() {
        if let Err(e) = node.parse::<BootstrapAddr>() {
            v.push(&format!("discovery.bootstrap_nodes[{i}]"), e);
        }
    }
    // Sorcha allows 1 to 1440 minutes; seconds are allowed here for labs and tests.
    v.duration(
        "discovery.refresh_interval",
        d.refresh_interval,
        secs(1),
        secs(24 * 3600),
    );
    v.range(
        "discovery.max_peers_in_list",
        d.max_peers_in_list,
        10,
        10_000,
    );
    v.range("discovery.min_healthy_peers", d.min_healthy_peers, 1, 100);
    // Sorcha: 5 to 120 s; loopback labs detect failures far sooner.
    v.duration(
        "discovery.peer_timeout",
        d.peer_timeout,
        millis(100),
        secs(120),
    );
    v.range(
        "discovery.max_concurrent_discoveries",
        d.max_concurrent_discoveries,
        1,
        50,
    );
    v.range("discovery.discovery_target", d.discovery_target, 1, 10_000);
    v.range(
        "discovery.dial_rate_per_second",
        d.dial_rate_per_second,
        1,
        1000,
    );
    v.range(
        "discovery.max_dials_per_minute",
        d.max_dials_per_minute,
        1,
        100_000,
    );
    v.range("discovery.max_inbound", d.max_inbound, 1, 1024);
    // Every active link is some node's inbound one: below the active set size, a network of
    // equal nodes could not give everyone a full active set.
    if d.max_inbound < d.active_peers {
        v.push(
            "discovery.max_inbound",
            format!(
                "{} is below discovery.active_peers ({}): must be at least the active set size",
                d.max_inbound, d.active_peers
            ),
        );
    }
}

fn registers(c: &Config, v: &mut Problems) {
    use crate::registers::{MAX_REGISTER_ID, MAX_REGISTERS_PER_PEER};
    if c.registers.len() > MAX_REGISTERS_PER_PEER {
        let problem = format!(
            "{} registers: at most {MAX_REGISTERS_PER_PEER}",
            c.registers.len()
        );
        v.push("registers", problem);
    }
    for (i, id) in c.registers.iter().enumerate() {
        if id.trim().is_empty() || id.len() > MAX_REGISTER_ID {
            let problem = format!("{id:?}: a register id of 1 to {MAX_REGISTER_ID} bytes");
            v.push(&format!("registers[{i}]"), problem);
        }
    }
}

fn communication(c: &Config, v: &mut Problems) {
    let m = &c.communication;
    let serve = &m.serve;
    // The default (the stream) falls to the best transport served; another choice must be
    // served, or it would do nothing.
    let chosen = m.preferred_protocol != WireProtocol::GrpcStream;
    if chosen && !serve.is_empty() && !serve.contains(&m.preferred_protocol) {
        let problem = format!(
            "{:?} is not served (communication.serve): the preferred protocol must be one this node speaks",
            m.preferred_protocol
        );
        v.push("communication.preferred_protocol", problem);
    }
    if serve.is_empty() {
        v.push(
            "communication.serve",
            "must list at least one of grpc_stream, grpc, rest".into(),
        );
    } else if serve.contains(&WireProtocol::GrpcStream) && !serve.contains(&WireProtocol::Grpc) {
        let problem = "grpc_stream needs grpc too: discovery and body fetches are unary calls";
        v.push("communication.serve", problem.into());
    }
    v.duration(
        "communication.connection_timeout",
        m.connection_timeout,
        millis(100),
        secs(120),
    );
    v.range("communication.max_retries", m.max_retries, 0, 10);
    v.duration(
        "communication.retry_delay",
        m.retry_delay,
        millis(10),
        secs(60),
    );
    // Sorcha: 3 to 20; 1 and 2 allowed for tests of the breaker.
    v.range(
        "communication.circuit_breaker_threshold",
        m.circuit_breaker_threshold,
        1,
        20,
    );
    v.duration(
        "communication.circuit_breaker_reset",
        m.circuit_breaker_reset,
        millis(100),
        secs(30 * 60),
    );
}

fn distribution(c: &Config, v: &mut Problems) {
    let d = &c.distribution;
    // Sorcha: 2 to 20; 1 allowed to study line topologies.
    v.range("distribution.fanout", d.fanout, 1, 20);
    // Sorcha allows 10 rounds; 16 hops cover a 10,000-node network even at fanout 2.
    v.range("distribution.gossip_rounds", d.gossip_rounds, 1, 16);
    v.range(
        "distribution.flood_fanout",
        d.flood_fanout,
        1,
        MAX_FLOOD_FANOUT,
    );
    v.range(
        "distribution.eager_push_max_bytes",
        d.eager_push_max_bytes,
        0,
        MAX_EAGER_PUSH_BYTES,
    );
    v.duration(
        "distribution.transaction_cache_ttl",
        d.transaction_cache_ttl,
        secs(1),
        secs(7 * 24 * 3600),
    );
    v.range(
        "distribution.max_transaction_size",
        d.max_transaction_size,
        1024,
        64 * 1024 * 1024,
    );
    // Above max_transaction_size it simply means "never stream".
    v.range(
        "distribution.streaming_threshold",
        d.streaming_threshold,
        1024,
        64 * 1024 * 1024,
    );
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

#[derive(Default)]
struct Problems(Vec<(String, String)>);

fn security(c: &Config, v: &mut Problems) {
    let s = &c.security;
    v.range(
        "security.unverified_share",
        u32::from(s.unverified_share),
        1,
        100,
    );
    v.duration(
        "security.handshake_timeout",
        s.handshake_timeout,
        millis(100),
        secs(120),
    );
    if s.cert_file.is_empty() != s.key_file.is_empty() {
        let problem = "cert_file and key_file go together: set both or neither";
        v.push("security.cert_file", problem.into());
    }
    if !s.ca_file.is_empty() && s.cert_file.is_empty() {
        let problem = "a node in a CA network presents a certificate the CA issued: set cert_file and key_file (see `sorcha-peer certs`)";
        v.push("security.ca_file", problem.into());
    }
    if !s.crl_files.is_empty() && s.ca_file.is_empty() {
        let problem = "CRLs are issued by a CA: set ca_file too";
        v.push("security.crl_files", problem.into());
    }
    let tls_settings = !(s.ca_file.is_empty() && s.cert_file.is_empty());
    if s.mode == super::SecurityMode::Plaintext && tls_settings {
        let problem =
            "plaintext uses no certificates: remove ca_file/cert_file or choose mtls or mixed";
        v.push("security.mode", problem.into());
    }
}

impl Problems {
    fn push(&mut self, key: &str, problem: String) {
        self.0.push((key.to_owned(), problem));
    }

    fn range(&mut self, key: &str, value: u32, min: u32, max: u32) {
        if !(min..=max).contains(&value) {
            self.push(key, format!("must be between {min} and {max}"));
        }
    }

    fn duration(&mut self, key: &str, value: Duration, min: Duration, max: Duration) {
        if !(min..=max).contains(&value) {
            self.push(
                key,
                format!(
                    "must be between {} and {}",
                    humantime::format_duration(min),
                    humantime::format_duration(max)
                ),
            );
        }
    }
}
