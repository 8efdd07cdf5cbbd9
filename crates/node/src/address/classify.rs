//! Which part of the internet an IP address belongs to. Discovery uses it to decide whether an
//! interface address can be advertised as it is (public) or the node is behind NAT (private,
//! shared CGNAT space), and the report shows it so an operator sees why.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

/// Where an address is routable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AddressScope {
    /// Globally routable unicast: other peers can reach it directly.
    Public,
    /// RFC 1918 IPv4 (10/8, 172.16/12, 192.168/16), RFC 4193 unique local IPv6 (fc00::/7) and
    /// the deprecated IPv6 site-local fec0::/10: a NAT or a private network sits between us
    /// and the internet.
    Private,
    /// RFC 6598 100.64.0.0/10: the carrier's NAT, so even port forwarding at home cannot help.
    SharedCgnat,
    /// 169.254/16 and fe80::/10: valid on one link only.
    LinkLocal,
    /// 127/8 and ::1.
    Loopback,
    /// RFC 5737 192.0.2/24, 198.51.100/24, 203.0.113/24, RFC 3849 2001:db8::/32 and
    /// RFC 9637 3fff::/20: examples that must never be advertised.
    Documentation,
    /// 0.0.0.0 and ::.
    Unspecified,
    /// 224/4 and ff00::/8.
    Multicast,
    /// 255.255.255.255.
    Broadcast,
    /// Special-purpose space that is none of the above (0/8, 192.0.0/24, 198.18/15
    /// benchmarking, 240/4, IPv6 outside 2000::/3, ...): not usable as a peer address.
    Reserved,
}

impl AddressScope {
    /// Whether a peer anywhere on the internet could dial this address.
    pub fn is_public(self) -> bool {
        self == Self::Public
    }
}

/// The scope of `ip`. IPv4-mapped (`::ffff:a.b.c.d`) and NAT64 (`64:ff9b::a.b.c.d`) IPv6
/// addresses take the scope of the IPv4 address inside, because that is where packets go.
pub fn classify(ip: IpAddr) -> AddressScope {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressScope {
    let o = ip.octets();
    // Checked from the most specific case to the least; the ranges do not overlap otherwise.
    if ip.is_unspecified() {
        AddressScope::Unspecified
    } else if ip.is_broadcast() {
        AddressScope::Broadcast
    } else if o[0] == 127 {
        AddressScope::Loopback
    } else if o[0] == 10
        || (o[0] == 172 && (16..=31).contains(&o[1]))
        || (o[0] == 192 && o[1] == 168)
    {
        AddressScope::Private
    } else if o[0] == 100 && (64..=127).contains(&o[1]) {
        AddressScope::SharedCgnat
    } else if o[0] == 169 && o[1] == 254 {
        AddressScope::LinkLocal
    } else if matches!(o[..3], [192, 0, 2] | [198, 51, 100] | [203, 0, 113]) {
        AddressScope::Documentation
    } else if (224..=239).contains(&o[0]) {
        AddressScope::Multicast
    } else if o[0] == 0
        || o[0] >= 240
        || o[..3] == [192, 0, 0]
        || (o[0] == 198 && (o[1] & 0xfe) == 18)
    {
        AddressScope::Reserved
    } else {
        AddressScope::Public
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressScope {
    let s = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [a, b] = s[6].to_be_bytes();
        let [c, d] = s[7].to_be_bytes();
        return classify_v4(Ipv4Addr::new(a, b, c, d));
    }
    if ip.is_unspecified() {
        AddressScope::Unspecified
    } else if ip.is_loopback() {
        AddressScope::Loopback
    } else if (s[0] & 0xff00) == 0xff00 {
        AddressScope::Multicast
    } else if (s[0] & 0xffc0) == 0xfe80 {
        AddressScope::LinkLocal
    } else if (s[0] & 0xfe00) == 0xfc00 || (s[0] & 0xffc0) == 0xfec0 {
        AddressScope::Private
    } else if (s[0] == 0x2001 && s[1] == 0x0db8) || (s[0] == 0x3fff && s[1] < 0x1000) {
        AddressScope::Documentation
    } else if (s[0] & 0xe000) == 0x2000 {
        AddressScope::Public
    } else {
        // Outside global unicast 2000::/3 nothing is assigned for use on the internet
        // (::/96 IPv4-compatible, 100::/64 discard-only, ...).
        AddressScope::Reserved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One row per range boundary: the first and last address of each special range and the
    /// public neighbours just outside it, so an off-by-one in any mask fails here.
    const CASES: &[(&str, AddressScope)] = &[
        // RFC 1918
        ("10.0.0.0", AddressScope::Private),
        ("10.255.255.255", AddressScope::Private),
        ("9.255.255.255", AddressScope::Public),
        ("11.0.0.0", AddressScope::Public),
        ("172.16.0.1", AddressScope::Private),
        ("172.31.255.255", AddressScope::Private),
        ("172.15.255.255", AddressScope::Public),
        ("172.32.0.0", AddressScope::Public),
        ("192.168.0.0", AddressScope::Private),
        ("192.168.255.255", AddressScope::Private),
        ("192.167.255.255", AddressScope::Public),
        ("192.169.0.0", AddressScope::Public),
        // RFC 6598
        ("100.64.0.0", AddressScope::SharedCgnat),
        ("100.127.255.255", AddressScope::SharedCgnat),
        ("100.63.255.255", AddressScope::Public),
        ("100.128.0.0", AddressScope::Public),
        // Link-local, loopback
        ("169.254.0.1", AddressScope::LinkLocal),
        ("169.254.255.255", AddressScope::LinkLocal),
        ("169.253.255.255", AddressScope::Public),
        ("127.0.0.1", AddressScope::Loopback),
        ("127.255.255.254", AddressScope::Loopback),
        // RFC 5737
        ("192.0.2.0", AddressScope::Documentation),
        ("192.0.2.255", AddressScope::Documentation),
        ("192.0.3.0", AddressScope::Public),
        ("198.51.100.7", AddressScope::Documentation),
        ("198.51.101.0", AddressScope::Public),
        ("203.0.113.255", AddressScope::Documentation),
        ("203.0.114.0", AddressScope::Public),
        // Special purpose
        ("0.0.0.0", AddressScope::Unspecified),
        ("0.1.2.3", AddressScope::Reserved),
        ("192.0.0.8", AddressScope::Reserved),
        ("198.18.0.0", AddressScope::Reserved),
        ("198.19.255.255", AddressScope::Reserved),
        ("198.20.0.0", AddressScope::Public),
        ("198.17.255.255", AddressScope::Public),
        ("224.0.0.1", AddressScope::Multicast),
        ("239.255.255.255", AddressScope::Multicast),
        ("240.0.0.1", AddressScope::Reserved),
        ("255.255.255.255", AddressScope::Broadcast),
        ("1.1.1.1", AddressScope::Public),
        ("8.8.8.8", AddressScope::Public),
        ("223.255.255.255", AddressScope::Public),
        // IPv6
        ("::", AddressScope::Unspecified),
        ("::1", AddressScope::Loopback),
        ("fe80::1", AddressScope::LinkLocal),
        ("febf:ffff::1", AddressScope::LinkLocal),
        ("fc00::1", AddressScope::Private),
        ("fd12:3456:789a::1", AddressScope::Private),
        ("fec0::1", AddressScope::Private),
        ("fbff:ffff::1", AddressScope::Reserved),
        ("2001:db8::1", AddressScope::Documentation),
        ("2001:db8:ffff::1", AddressScope::Documentation),
        ("2001:db9::1", AddressScope::Public),
        ("2001:db7:ffff::1", AddressScope::Public),
        ("3fff::1", AddressScope::Documentation),
        ("3fff:fff::1", AddressScope::Documentation),
        ("3fff:1000::1", AddressScope::Public),
        ("3ffe:ffff::1", AddressScope::Public),
        ("2606:4700::1111", AddressScope::Public),
        ("2000::", AddressScope::Public),
        ("4000::1", AddressScope::Reserved),
        ("100::1", AddressScope::Reserved),
        ("ff02::1", AddressScope::Multicast),
        ("::ffff:10.1.2.3", AddressScope::Private),
        ("::ffff:8.8.8.8", AddressScope::Public),
        ("64:ff9b::8.8.8.8", AddressScope::Public),
        ("64:ff9b::192.168.1.1", AddressScope::Private),
    ];

    #[test]
    fn every_range_is_classified() {
        for (text, expected) in CASES {
            let ip: IpAddr = text.parse().expect("test table holds valid addresses");
            assert_eq!(classify(ip), *expected, "classify({text})");
        }
    }

    #[test]
    fn only_public_is_public() {
        for (text, expected) in CASES {
            let ip: IpAddr = text.parse().expect("test table holds valid addresses");
            assert_eq!(
                classify(ip).is_public(),
                *expected == AddressScope::Public,
                "{text}"
            );
        }
    }
}
