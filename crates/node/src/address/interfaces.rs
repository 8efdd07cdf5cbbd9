//! The node's internal address: the address on its own interfaces that other hosts on the same
//! network would use. The choice is a pure function ([`select_internal`]) over what the OS
//! reports ([`local_interfaces`]), so the rules are tested without touching the machine.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::classify::{AddressScope, classify};

/// Longest routing table read from `/proc`. Real tables of a host are a few KiB; a router with
/// a full BGP table would be megabytes, and we only need the default route.
const MAX_ROUTE_TABLE_BYTES: u64 = 1 << 20;

/// Interface name prefixes of container and VM bridges. Their addresses are reachable only
/// from inside the host, so one is chosen only when nothing else is left.
const VIRTUAL_PREFIXES: &[&str] = &[
    "docker", "br-", "veth", "virbr", "cni", "flannel", "podman", "lxcbr", "vboxnet", "vmnet",
];

/// The IP family the node advertises.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PreferredFamily {
    /// The family every Sorcha peer can dial.
    #[default]
    V4,
    V6,
}

impl PreferredFamily {
    pub fn matches(self, ip: IpAddr) -> bool {
        matches!(
            (self, ip),
            (Self::V4, IpAddr::V4(_)) | (Self::V6, IpAddr::V6(_))
        )
    }
}

/// One address of one local interface, as the selection rule sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceAddr {
    pub name: String,
    pub ip: IpAddr,
    /// The interface carries a default route of the address's family: traffic to the internet
    /// leaves through it, so peers on the internet would see (a NAT of) this address.
    pub is_default_route: bool,
}

/// Picks the internal address of the `preferred` family: never loopback, link-local,
/// unspecified, multicast or documentation addresses. Among the rest, in order: an interface
/// with the default route, a physical rather than a container/VM bridge, then the most widely
/// routable scope (public, private, CGNAT). Ties keep the OS's interface order, so the result
/// is stable from one start to the next.
pub fn select_internal(candidates: &[InterfaceAddr], preferred: PreferredFamily) -> Option<IpAddr> {
    candidates
        .iter()
        .filter(|c| preferred.matches(c.ip))
        .filter_map(|c| scope_rank(classify(c.ip)).map(|rank| (c, rank)))
        .min_by_key(|(c, rank)| {
            let last_resort = *rank == LAST_RESORT_RANK;
            (last_resort, !c.is_default_route, is_virtual(&c.name), *rank)
        })
        .map(|(c, _)| c.ip)
}

/// Rank of scopes chosen only when no other address exists, whatever the default route says.
const LAST_RESORT_RANK: u8 = 4;

/// Lower is better; `None` for scopes that can never be an internal address.
fn scope_rank(scope: AddressScope) -> Option<u8> {
    match scope {
        AddressScope::Public => Some(0),
        AddressScope::Private => Some(1),
        AddressScope::SharedCgnat => Some(2),
        // Unusual but seen on misconfigured hosts; better than nothing, worse than the rest.
        AddressScope::Reserved => Some(3),
        // Documentation ranges (192.0.2/24, 2001:db8::/32) number test labs and sandboxes;
        // on such a host it is the address its neighbours reach it at.
        AddressScope::Documentation => Some(LAST_RESORT_RANK),
        AddressScope::LinkLocal
        | AddressScope::Loopback
        | AddressScope::Unspecified
        | AddressScope::Multicast
        | AddressScope::Broadcast => None,
    }
}

fn is_virtual(name: &str) -> bool {
    VIRTUAL_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Why the interfaces could not be listed.
#[derive(Debug, thiserror::Error)]
#[error("cannot list network interfaces: {0}")]
pub struct InterfacesError(#[from] std::io::Error);

/// The addresses of this host's interfaces, each marked with whether its interface holds the
/// default route. A missing or unreadable routing table only loses the marks.
pub fn local_interfaces() -> Result<Vec<InterfaceAddr>, InterfacesError> {
    let defaults_v4 = default_route_interfaces(RouteTable::V4);
    let defaults_v6 = default_route_interfaces(RouteTable::V6);
    let interfaces = if_addrs::get_if_addrs()?;
    Ok(interfaces
        .into_iter()
        .map(|iface| {
            let ip = iface.ip();
            let defaults = if ip.is_ipv4() {
                &defaults_v4
            } else {
                &defaults_v6
            };
            InterfaceAddr {
                is_default_route: defaults.contains(&iface.name),
                name: iface.name,
                ip,
            }
        })
        .collect())
}

#[derive(Debug, Clone, Copy)]
enum RouteTable {
    V4,
    V6,
}

/// Names of the interfaces holding a default route, read from `/proc/net/route` or
/// `/proc/net/ipv6_route`; empty where those do not exist.
fn default_route_interfaces(table: RouteTable) -> Vec<String> {
    #[cfg(target_os = "linux")]
    {
        use std::io::Read;

        let path = match table {
            RouteTable::V4 => "/proc/net/route",
            RouteTable::V6 => "/proc/net/ipv6_route",
        };
        let mut text = String::new();
        let read = std::fs::File::open(path)
            .and_then(|f| f.take(MAX_ROUTE_TABLE_BYTES).read_to_string(&mut text));
        if let Err(err) = read {
            tracing::debug!(path, %err, "no routing table; default route unknown");
            return Vec::new();
        }
        match table {
            RouteTable::V4 => parse_route_v4(&text),
            RouteTable::V6 => parse_route_v6(&text),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (table, MAX_ROUTE_TABLE_BYTES);
        Vec::new()
    }
}

/// Route flag "up" (linux/route.h `RTF_UP`).
const RTF_UP: u32 = 0x0001;
/// Route flag "reject" (`RTF_REJECT`): the kernel's unreachable default route on `lo`.
const RTF_REJECT: u32 = 0x0200;

/// Interfaces of the up default routes in `/proc/net/route`, lowest metric first. Columns:
/// Iface Destination Gateway Flags RefCnt Use Metric Mask ... (hex, host byte order).
fn parse_route_v4(text: &str) -> Vec<String> {
    let mut routes: Vec<(u32, &str)> = text
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (iface, dest, flags, metric, mask) = (
                cols.first()?,
                cols.get(1)?,
                cols.get(3)?,
                cols.get(6)?,
                cols.get(7)?,
            );
            let flags = u32::from_str_radix(flags, 16).ok()?;
            let is_default = u32::from_str_radix(dest, 16).ok()? == 0
                && u32::from_str_radix(mask, 16).ok()? == 0;
            let usable = flags & RTF_UP != 0 && flags & RTF_REJECT == 0;
            if !(is_default && usable) {
                return None;
            }
            // Unlike the other columns, the metric is decimal.
            Some((metric.parse().ok()?, *iface))
        })
        .collect();
    routes.sort_by_key(|(metric, _)| *metric);
    routes
        .into_iter()
        .map(|(_, iface)| iface.to_owned())
        .collect()
}

/// Interfaces of the up default routes in `/proc/net/ipv6_route`, lowest metric first.
/// Columns: dest dest_len src src_len next_hop metric refcnt use flags iface (hex).
fn parse_route_v6(text: &str) -> Vec<String> {
    let mut routes: Vec<(u32, &str)> = text
        .lines()
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 10 {
                return None;
            }
            let is_default = cols[0].bytes().all(|b| b == b'0') && cols[1] == "00";
            let flags = u32::from_str_radix(cols[8], 16).ok()?;
            let metric = u32::from_str_radix(cols[5], 16).ok()?;
            let usable = flags & RTF_UP != 0 && flags & RTF_REJECT == 0 && cols[9] != "lo";
            (is_default && usable).then_some((metric, cols[9]))
        })
        .collect();
    routes.sort_by_key(|(metric, _)| *metric);
    routes
        .into_iter()
        .map(|(_, iface)| iface.to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(name: &str, ip: &str, is_default_route: bool) -> InterfaceAddr {
        InterfaceAddr {
            name: name.to_owned(),
            ip: ip.parse().expect("test address"),
            is_default_route,
        }
    }

    fn pick(list: &[InterfaceAddr], family: PreferredFamily) -> Option<String> {
        select_internal(list, family).map(|ip| ip.to_string())
    }

    #[test]
    fn skips_loopback_link_local_and_other_family() {
        let list = [
            addr("lo", "127.0.0.1", false),
            addr("lo", "::1", false),
            addr("eth0", "169.254.3.4", false),
            addr("eth0", "fe80::1", true),
            addr("eth0", "192.168.1.20", false),
            addr("eth0", "2001:db9::20", false),
        ];
        assert_eq!(
            pick(&list, PreferredFamily::V4).as_deref(),
            Some("192.168.1.20")
        );
        assert_eq!(
            pick(&list, PreferredFamily::V6).as_deref(),
            Some("2001:db9::20")
        );
    }

    #[test]
    fn default_route_interface_wins() {
        let list = [
            addr("wlan0", "10.1.1.5", false),
            addr("eth1", "192.168.7.7", true),
            addr("eth2", "8.8.4.4", false),
        ];
        assert_eq!(
            pick(&list, PreferredFamily::V4).as_deref(),
            Some("192.168.7.7")
        );
    }

    #[test]
    fn without_default_route_physical_then_scope_then_order() {
        let bridges_first = [
            addr("docker0", "172.17.0.1", false),
            addr("br-1234", "172.18.0.1", false),
            addr("eth0", "100.64.1.1", false),
        ];
        assert_eq!(
            pick(&bridges_first, PreferredFamily::V4).as_deref(),
            Some("100.64.1.1")
        );

        let scopes = [
            addr("eth0", "100.64.1.1", false),
            addr("eth1", "10.0.0.2", false),
            addr("eth2", "198.51.100.1", false),
            addr("eth3", "81.2.69.160", false),
        ];
        assert_eq!(
            pick(&scopes, PreferredFamily::V4).as_deref(),
            Some("81.2.69.160")
        );

        let ties = [
            addr("eth0", "10.0.0.1", false),
            addr("eth1", "10.0.0.2", false),
        ];
        assert_eq!(
            pick(&ties, PreferredFamily::V4).as_deref(),
            Some("10.0.0.1")
        );
    }

    #[test]
    fn ipv6_prefers_global_over_unique_local() {
        let list = [
            addr("eth0", "fd00::5", true),
            addr("eth0", "2a01:4f8::5", true),
        ];
        assert_eq!(
            pick(&list, PreferredFamily::V6).as_deref(),
            Some("2a01:4f8::5")
        );
    }

    #[test]
    fn a_bridge_is_used_when_nothing_else_is_left() {
        let list = [
            addr("lo", "127.0.0.1", false),
            addr("docker0", "172.17.0.1", false),
        ];
        assert_eq!(
            pick(&list, PreferredFamily::V4).as_deref(),
            Some("172.17.0.1")
        );
    }

    #[test]
    fn nothing_usable_gives_none() {
        let list = [
            addr("lo", "127.0.0.1", true),
            addr("eth0", "169.254.0.9", true),
            addr("eth0", "fe80::9", true),
        ];
        assert_eq!(pick(&list, PreferredFamily::V4), None);
        assert_eq!(pick(&list, PreferredFamily::V6), None);
        assert_eq!(pick(&[], PreferredFamily::V4), None);
    }

    #[test]
    fn documentation_ranges_serve_as_a_last_resort() {
        let lab = [
            addr("lo", "127.0.0.1", true),
            addr("eth0", "192.0.2.2", true),
        ];
        assert_eq!(
            pick(&lab, PreferredFamily::V4).as_deref(),
            Some("192.0.2.2")
        );
        let mixed = [
            addr("eth0", "192.0.2.2", true),
            addr("eth1", "10.0.0.4", false),
        ];
        assert_eq!(
            pick(&mixed, PreferredFamily::V4).as_deref(),
            Some("10.0.0.4")
        );
    }

    #[test]
    fn parses_ipv4_default_routes_by_metric() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n\
            eth0\t00000000\t0100000A\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
            eth0\t0000000A\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n\
            tun0\t00000000\t00000000\t0200\t0\t0\t0\t00000000\t0\t0\t0\n\
            garbage line\n";
        assert_eq!(parse_route_v4(table), vec!["eth0", "wlan0"]);
        assert!(parse_route_v4("").is_empty());
    }

    #[test]
    fn parses_ipv6_default_routes_and_skips_reject_on_lo() {
        let zero = "00000000000000000000000000000000";
        let table = format!(
            "{zero} 00 {zero} 00 fe800000000000000000000000000001 00000400 00000001 00000000 00450003 eth0\n\
             20010db8000000000000000000000000 40 {zero} 00 {zero} 00000100 00000001 00000000 00000001 eth0\n\
             {zero} 00 {zero} 00 {zero} ffffffff 00000001 00000000 00200200 lo\n\
             {zero} 00 {zero} 00 fe800000000000000000000000000001 00000100 00000001 00000000 00000003 wlan0\n\
             short line\n"
        );
        assert_eq!(parse_route_v6(&table), vec!["wlan0", "eth0"]);
    }

    #[test]
    fn lists_this_hosts_interfaces() {
        let list = local_interfaces().expect("the test host has interfaces");
        assert!(list.iter().any(|a| a.ip.is_loopback()), "{list:?}");
    }
}
