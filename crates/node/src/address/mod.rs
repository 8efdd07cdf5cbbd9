//! Network address discovery: which address and port this node advertises to its peers.
//!
//! [`discover`] tries, in order, and stops at the first that gives an address:
//! 1. the operator's `external_address` override ([`external`]);
//! 2. a public address on one of our own interfaces ([`interfaces`], [`classify`]);
//! 3. STUN Binding requests to the configured servers ([`stun`] codec, [`stun_client`]);
//! 4. HTTP lookup services ([`http_lookup`]);
//! 5. the internal address, so at least peers on the same network reach us.
//!
//! It then connects to its own peer port on the result ([`reachability`]) and returns an
//! [`AddressReport`] ([`report`]) with every step tried. Discovery never fails: a node with no
//! way out still runs and advertises what it has.

pub mod classify;
pub mod external;
pub mod http_lookup;
pub mod interfaces;
pub mod reachability;
pub mod report;
pub mod stun;
pub mod stun_client;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

pub use classify::{AddressScope, classify};
pub use external::{ExternalAddress, ExternalAddressError, ExternalHost, parse_external_address};
pub use interfaces::{InterfaceAddr, PreferredFamily, local_interfaces, select_internal};
pub use report::{AddressReport, AddressSource, Attempt, NatState, Step};
pub use stun::{StunError, parse_binding_response};
pub use stun_client::{StunCounts, StunStats};

/// The snake_case name a unit enum of the report has in its JSON (`internal_fallback`), for
/// tables and metric labels that must match what scripts read.
pub fn label(value: &impl serde::Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        _ => "unknown".to_owned(),
    }
}

/// Servers and services tried at most, each list. A config listing more is cut here (and the
/// report says so) so a long list cannot stall start-up for minutes.
pub const MAX_SERVERS_TRIED: usize = 8;

/// What discovery needs; the daemon's config is mapped into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryOptions {
    /// Advertise this instead of discovering (see [`parse_external_address`]).
    pub external_address: Option<ExternalAddress>,
    /// STUN servers as `host:port`, tried in order.
    pub stun_servers: Vec<String>,
    /// HTTP(S) URLs answering with the caller's IP as plain text, tried in order.
    pub http_lookup_services: Vec<String>,
    /// The family of the advertised address.
    pub preferred: PreferredFamily,
    /// Per STUN server, resolution and retransmissions included.
    pub stun_timeout: Duration,
    /// Per HTTP lookup, connection and body included.
    pub http_timeout: Duration,
    /// Connect to our own peer port on the result. The peer listener must be bound first.
    pub check_reachability: bool,
    /// For the self-connection.
    pub reachability_timeout: Duration,
}

impl Default for DiscoveryOptions {
    /// No servers: the config supplies them, so a node never contacts a third party its
    /// operator did not name.
    fn default() -> Self {
        Self {
            external_address: None,
            stun_servers: Vec::new(),
            http_lookup_services: Vec::new(),
            preferred: PreferredFamily::V4,
            // 100 ms doubling gives five sends in 3 s; a server slower than that is not one
            // to depend on at every start.
            stun_timeout: Duration::from_secs(3),
            // Covers a TLS handshake across continents with margin.
            http_timeout: Duration::from_secs(5),
            check_reachability: true,
            // A TCP handshake that takes longer than this is as good as blocked for peers.
            reachability_timeout: Duration::from_secs(2),
        }
    }
}

/// Finds the address to advertise for a node whose peer listener is on `peer_port`.
pub async fn discover(opts: &DiscoveryOptions, peer_port: u16) -> AddressReport {
    let mut attempts = Vec::new();
    let interfaces = match local_interfaces() {
        Ok(list) => list,
        Err(err) => {
            attempts.push(Attempt::failed(Step::Interfaces, "local", err));
            Vec::new()
        }
    };
    discover_with(opts, peer_port, &interfaces, attempts).await
}

/// [`discover`] over a given list of interface addresses, so tests choose what the host has.
async fn discover_with(
    opts: &DiscoveryOptions,
    peer_port: u16,
    interfaces: &[InterfaceAddr],
    mut attempts: Vec<Attempt>,
) -> AddressReport {
    let internal = select_internal(interfaces, opts.preferred);
    let stats = StunStats::default();
    let (external, port, source) =
        find_external(opts, peer_port, internal, &stats, &mut attempts).await;

    let reachable = if opts.check_reachability {
        let result = reachability::check_reachable(
            &external,
            port,
            opts.preferred,
            opts.reachability_timeout,
        )
        .await;
        attempts.push(match &result {
            Ok(addr) => Attempt::found(Step::Reachability, addr, "connected"),
            Err(err) => Attempt::failed(Step::Reachability, format!("{external}:{port}"), err),
        });
        Some(result.is_ok())
    } else {
        None
    };

    let scope = match &external {
        ExternalHost::Ip(ip) => Some(classify(*ip)),
        ExternalHost::Name(_) => None,
    };
    AddressReport {
        nat: report::nat_state(source, &external, internal, reachable),
        external_address: external,
        port,
        source,
        scope,
        internal_address: internal,
        reachable,
        stun: stats.snapshot(),
        attempts,
    }
}

/// Steps 1 to 5 of the module docs: the first address found, its port and where it came from.
async fn find_external(
    opts: &DiscoveryOptions,
    peer_port: u16,
    internal: Option<IpAddr>,
    stats: &StunStats,
    attempts: &mut Vec<Attempt>,
) -> (ExternalHost, u16, AddressSource) {
    if let Some(over) = &opts.external_address {
        let port = over.port.unwrap_or(peer_port);
        attempts.push(Attempt::found(
            Step::Override,
            "external_address",
            &over.host,
        ));
        return (over.host.clone(), port, AddressSource::Override);
    }
    match internal {
        Some(ip) if classify(ip).is_public() => {
            attempts.push(Attempt::found(Step::Interfaces, "local", ip));
            return (ExternalHost::Ip(ip), peer_port, AddressSource::Interface);
        }
        Some(ip) => attempts.push(Attempt::failed(
            Step::Interfaces,
            "local",
            format!("internal address {ip} is {:?}, not public", classify(ip)),
        )),
        None => attempts.push(Attempt::failed(
            Step::Interfaces,
            "local",
            format!("no usable {:?} interface address", opts.preferred),
        )),
    }
    if let Some(ip) = try_stun(opts, stats, attempts).await {
        return (ExternalHost::Ip(ip), peer_port, AddressSource::Stun);
    }
    if let Some(ip) = try_http(opts, attempts).await {
        return (ExternalHost::Ip(ip), peer_port, AddressSource::Http);
    }
    let fallback = internal.unwrap_or(match opts.preferred {
        // Nothing at all: loopback still lets peers on this machine (the lab) reach us.
        PreferredFamily::V4 => IpAddr::V4(Ipv4Addr::LOCALHOST),
        PreferredFamily::V6 => IpAddr::V6(Ipv6Addr::LOCALHOST),
    });
    (
        ExternalHost::Ip(fallback),
        peer_port,
        AddressSource::InternalFallback,
    )
}

async fn try_stun(
    opts: &DiscoveryOptions,
    stats: &StunStats,
    attempts: &mut Vec<Attempt>,
) -> Option<IpAddr> {
    note_skipped(Step::Stun, opts.stun_servers.len(), attempts);
    for server in opts.stun_servers.iter().take(MAX_SERVERS_TRIED) {
        let result =
            stun_client::query_server(server, opts.preferred, opts.stun_timeout, stats).await;
        match result {
            Ok(mapped) => {
                // The mapped port is the NAT's UDP mapping for this one socket, not our TCP
                // peer port, so only the IP is used; the port is kept for the operator.
                attempts.push(Attempt::found(Step::Stun, server, mapped));
                return Some(mapped.ip());
            }
            Err(err) => attempts.push(Attempt::failed(Step::Stun, server, err)),
        }
    }
    None
}

async fn try_http(opts: &DiscoveryOptions, attempts: &mut Vec<Attempt>) -> Option<IpAddr> {
    if opts.http_lookup_services.is_empty() {
        return None;
    }
    let client = match http_lookup::client(opts.http_timeout) {
        Ok(client) => client,
        Err(err) => {
            attempts.push(Attempt::failed(Step::Http, "client", err));
            return None;
        }
    };
    note_skipped(Step::Http, opts.http_lookup_services.len(), attempts);
    for url in opts.http_lookup_services.iter().take(MAX_SERVERS_TRIED) {
        match http_lookup::lookup(&client, url).await {
            Ok(ip) => {
                attempts.push(Attempt::found(Step::Http, url, ip));
                return Some(ip);
            }
            Err(err) => attempts.push(Attempt::failed(Step::Http, url, err)),
        }
    }
    None
}

fn note_skipped(step: Step, configured: usize, attempts: &mut Vec<Attempt>) {
    if configured > MAX_SERVERS_TRIED {
        attempts.push(Attempt::failed(
            step,
            "config",
            format!("{configured} configured, only the first {MAX_SERVERS_TRIED} are tried"),
        ));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::net::{TcpListener, UdpSocket};

    use super::http_lookup::tests::{Canned, install_crypto, ok, spawn_http};
    use super::stun_client::tests::{FakeServer, Junk};
    use super::*;

    fn private_lan() -> Vec<InterfaceAddr> {
        vec![
            InterfaceAddr {
                name: "lo".into(),
                ip: "127.0.0.1".parse().expect("ip"),
                is_default_route: false,
            },
            InterfaceAddr {
                name: "eth0".into(),
                ip: "192.168.1.10".parse().expect("ip"),
                is_default_route: true,
            },
        ]
    }

    fn opts() -> DiscoveryOptions {
        DiscoveryOptions {
            stun_timeout: Duration::from_millis(400),
            http_timeout: Duration::from_secs(2),
            check_reachability: false,
            ..DiscoveryOptions::default()
        }
    }

    /// A loopback UDP port with nothing behind it (ICMP port unreachable).
    async fn dead_udp() -> String {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        socket.local_addr().expect("bound").to_string()
    }

    /// A loopback TCP port with nothing behind it.
    async fn dead_tcp() -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("bound")
    }

    fn steps(report: &AddressReport) -> Vec<(Step, bool)> {
        report.attempts.iter().map(|a| (a.step, a.ok)).collect()
    }

    #[tokio::test]
    async fn override_wins_and_keeps_its_port() {
        let silent = FakeServer {
            silent: true,
            ..FakeServer::correct()
        }
        .spawn()
        .await;
        let opts = DiscoveryOptions {
            external_address: Some(parse_external_address("peer.example.org:7000").expect("valid")),
            stun_servers: vec![silent.to_string()],
            ..opts()
        };
        let report = discover_with(&opts, 5001, &private_lan(), Vec::new()).await;
        assert_eq!(report.source, AddressSource::Override);
        assert_eq!(
            report.external_address,
            ExternalHost::Name("peer.example.org".into())
        );
        assert_eq!(report.port, 7000);
        assert_eq!(report.scope, None);
        assert_eq!(report.nat, NatState::Unknown);
        assert_eq!(
            report.stun.requests_sent, 0,
            "STUN is not asked when overridden"
        );
    }

    #[tokio::test]
    async fn a_public_interface_address_is_the_external_address() {
        let silent = FakeServer {
            silent: true,
            ..FakeServer::correct()
        }
        .spawn()
        .await;
        let opts = DiscoveryOptions {
            stun_servers: vec![silent.to_string()],
            ..opts()
        };
        let mut lan = private_lan();
        lan.push(InterfaceAddr {
            name: "eth1".into(),
            ip: "81.2.69.160".parse().expect("ip"),
            is_default_route: true,
        });
        lan.swap(1, 2);
        let report = discover_with(&opts, 5001, &lan, Vec::new()).await;
        assert_eq!(report.source, AddressSource::Interface);
        assert_eq!(report.external_address.to_string(), "81.2.69.160");
        assert_eq!(report.scope, Some(AddressScope::Public));
        assert_eq!(report.nat, NatState::NoNat);
        assert_eq!(report.stun.requests_sent, 0);
    }

    #[tokio::test]
    async fn stun_gives_the_mapped_address_behind_a_private_interface() {
        let junk = vec![Junk::WrongTxid, Junk::WrongClass, Junk::Malformed];
        let server = FakeServer {
            junk,
            ..FakeServer::correct()
        }
        .spawn()
        .await;
        let opts = DiscoveryOptions {
            stun_servers: vec![server.to_string()],
            ..opts()
        };
        let report = discover_with(&opts, 5001, &private_lan(), Vec::new()).await;
        assert_eq!(report.source, AddressSource::Stun);
        assert_eq!(report.external_address.to_string(), "127.0.0.1");
        assert_eq!(report.port, 5001, "the peer port, not the UDP mapping");
        assert_eq!(
            report.internal_address,
            Some("192.168.1.10".parse().expect("ip"))
        );
        assert_eq!(report.nat, NatState::BehindNat);
        assert_eq!(report.stun.ignored_responses, 3);
        assert_eq!(
            steps(&report),
            vec![(Step::Interfaces, false), (Step::Stun, true)]
        );
    }

    #[tokio::test]
    async fn falls_through_dead_stun_to_http() {
        install_crypto();
        let silent = FakeServer {
            silent: true,
            ..FakeServer::correct()
        }
        .spawn()
        .await;
        let http = spawn_http(vec![ok("/bad", "not an ip"), ok("/ip", "198.51.100.77\n")]).await;
        let opts = DiscoveryOptions {
            stun_servers: vec![dead_udp().await, silent.to_string()],
            http_lookup_services: vec![format!("http://{http}/bad"), format!("http://{http}/ip")],
            ..opts()
        };
        let report = discover_with(&opts, 5001, &private_lan(), Vec::new()).await;
        assert_eq!(report.source, AddressSource::Http);
        assert_eq!(report.external_address.to_string(), "198.51.100.77");
        assert_eq!(report.scope, Some(AddressScope::Documentation));
        assert_eq!(
            steps(&report),
            vec![
                (Step::Interfaces, false),
                (Step::Stun, false),
                (Step::Stun, false),
                (Step::Http, false),
                (Step::Http, true),
            ]
        );
        assert!(
            report.attempts[2].detail.contains("no answer"),
            "{:?}",
            report.attempts[2]
        );
        assert!(
            report.attempts[3].detail.contains("not exactly one IP"),
            "{:?}",
            report.attempts[3]
        );
    }

    #[tokio::test]
    async fn everything_dead_falls_back_to_the_internal_address() {
        install_crypto();
        let opts = DiscoveryOptions {
            stun_servers: vec![dead_udp().await],
            http_lookup_services: vec![
                format!("http://{}/", dead_tcp().await),
                format!(
                    "http://{}/",
                    spawn_http(vec![Canned {
                        status: 503,
                        ..ok("/", "1.2.3.4")
                    }])
                    .await
                ),
            ],
            ..opts()
        };
        let report = discover_with(&opts, 5001, &private_lan(), Vec::new()).await;
        assert_eq!(report.source, AddressSource::InternalFallback);
        assert_eq!(report.external_address.to_string(), "192.168.1.10");
        assert_eq!(report.nat, NatState::Unknown);
        assert_eq!(report.attempts.iter().filter(|a| a.ok).count(), 0);
        assert_eq!(report.attempts.len(), 4);
    }

    #[tokio::test]
    async fn no_interfaces_and_no_servers_advertise_loopback() {
        for (family, want) in [
            (PreferredFamily::V4, "127.0.0.1"),
            (PreferredFamily::V6, "::1"),
        ] {
            let opts = DiscoveryOptions {
                preferred: family,
                ..opts()
            };
            let report = discover_with(&opts, 5001, &[], Vec::new()).await;
            assert_eq!(report.source, AddressSource::InternalFallback);
            assert_eq!(report.external_address.to_string(), want);
            assert_eq!(report.internal_address, None);
        }
    }

    #[tokio::test]
    async fn self_reachability_both_ways() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let open_port = listener.local_addr().expect("bound").port();
        let closed_port = dead_tcp().await.port();
        let server = FakeServer::correct().spawn().await;
        let opts = DiscoveryOptions {
            stun_servers: vec![server.to_string()],
            check_reachability: true,
            ..opts()
        };

        let open = discover_with(&opts, open_port, &private_lan(), Vec::new()).await;
        assert_eq!(open.reachable, Some(true));
        assert_eq!(open.nat, NatState::BehindNat);
        assert_eq!(
            open.attempts.last().map(|a| (a.step, a.ok)),
            Some((Step::Reachability, true))
        );

        let closed = discover_with(&opts, closed_port, &private_lan(), Vec::new()).await;
        assert_eq!(closed.reachable, Some(false));
        assert_eq!(closed.nat, NatState::BehindRestrictiveNat);
        assert_eq!(
            closed.source,
            AddressSource::Stun,
            "still advertises the best address"
        );
        assert_eq!(closed.external_address.to_string(), "127.0.0.1");
    }

    #[tokio::test]
    async fn long_server_lists_are_cut() {
        let dead = dead_udp().await;
        let opts = DiscoveryOptions {
            stun_servers: vec![dead; MAX_SERVERS_TRIED + 3],
            ..opts()
        };
        let report = discover_with(&opts, 5001, &private_lan(), Vec::new()).await;
        let stun_steps = report
            .attempts
            .iter()
            .filter(|a| a.step == Step::Stun)
            .count();
        assert_eq!(
            stun_steps,
            MAX_SERVERS_TRIED + 1,
            "the tried ones plus one note"
        );
    }

    #[tokio::test]
    async fn discovers_on_this_host_without_servers() {
        let report = discover(&opts(), 5001).await;
        assert!(matches!(
            report.source,
            AddressSource::Interface | AddressSource::InternalFallback
        ));
        serde_json::to_string(&report).expect("the CLI can print it");
    }
}
