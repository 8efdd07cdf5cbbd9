//! The operator's `external_address` override: the address to advertise when discovery cannot
//! know it (port forwarding, a load balancer, a DNS name). The config loader calls
//! [`parse_external_address`] at start so a bad value is refused before the node runs.

use std::fmt;
use std::net::IpAddr;

use serde::Serialize;
use sorcha_peer_core::model::{MAX_HOST_LEN, validate_address};

/// What an operator may write, repeated in every refusal so the fix is obvious.
const ALLOWED: &str = "an IP address or host name, optionally followed by :PORT (1-65535); \
    an IPv6 address with a port goes in brackets, e.g. 203.0.113.7:5001, peer.example.org, \
    [2001:db8::7]:5001";

/// Longest override looked at: a host name, brackets and a port. Anything longer is refused
/// without further parsing so the error message stays small.
const MAX_OVERRIDE_LEN: usize = MAX_HOST_LEN + ":65535".len() + 2;

/// The host part of an advertised address. Serialises as a plain string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub enum ExternalHost {
    Ip(IpAddr),
    /// A validated, lowercase DNS name; peers resolve it themselves.
    Name(String),
}

impl fmt::Display for ExternalHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(ip) => ip.fmt(f),
            Self::Name(name) => f.write_str(name),
        }
    }
}

/// A parsed `external_address` override.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ExternalAddress {
    pub host: ExternalHost,
    /// The port to advertise instead of the peer port (a forwarded port on the router).
    pub port: Option<u16>,
}

/// Why an `external_address` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid external_address {value:?}: {reason}; expected {ALLOWED}")]
pub struct ExternalAddressError {
    /// The value as the operator wrote it (cut at a bounded length).
    pub value: String,
    /// What exactly is wrong with it.
    pub reason: String,
}

/// Parses an `external_address` override such as `203.0.113.7`, `peer.example.org:5001` or
/// `[2001:db8::7]:5001`. Unspecified, multicast and broadcast addresses are refused since no
/// peer could dial them; private and loopback ones are accepted because an operator may run a
/// private network or a lab on one machine.
pub fn parse_external_address(raw: &str) -> Result<ExternalAddress, ExternalAddressError> {
    let fail = |reason: &str| ExternalAddressError {
        value: raw.chars().take(MAX_OVERRIDE_LEN).collect(),
        reason: reason.to_owned(),
    };
    if raw.is_empty() {
        return Err(fail("it is empty"));
    }
    if raw.len() > MAX_OVERRIDE_LEN {
        return Err(fail("it is too long"));
    }
    if raw.trim() != raw {
        return Err(fail("it has leading or trailing spaces"));
    }
    let (host, port) = split_host_port(raw).map_err(fail)?;
    let port = port.map(parse_port).transpose().map_err(fail)?;
    let host = parse_host(host).map_err(|reason| fail(&reason))?;
    Ok(ExternalAddress { host, port })
}

/// Splits `host[:port]`. A bare IPv6 address has colons of its own, so it is taken whole;
/// with a port it must be bracketed.
fn split_host_port(raw: &str) -> Result<(&str, Option<&str>), &'static str> {
    if let Some(rest) = raw.strip_prefix('[') {
        let (inside, after) = rest.split_once(']').ok_or("the '[' has no matching ']'")?;
        if inside.parse::<std::net::Ipv6Addr>().is_err() {
            return Err("only an IPv6 address may stand inside brackets");
        }
        return match after {
            "" => Ok((inside, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((inside, Some(port))),
                None => Err("only :PORT may follow the ']'"),
            },
        };
    }
    if raw.contains(']') {
        return Err("a ']' without '['");
    }
    if raw.parse::<IpAddr>().is_ok() {
        return Ok((raw, None));
    }
    match raw.split_once(':') {
        Some((_, port)) if port.contains(':') => {
            Err("it has several ':' but is not an IPv6 address (put IPv6 in brackets with a port)")
        }
        Some((host, port)) => Ok((host, Some(port))),
        None => Ok((raw, None)),
    }
}

fn parse_port(port: &str) -> Result<u16, &'static str> {
    match port.parse::<u16>() {
        Ok(0) => Err("port 0 cannot be dialled"),
        Ok(p) => Ok(p),
        Err(_) => Err("the port is not a number from 1 to 65535"),
    }
}

fn parse_host(host: &str) -> Result<ExternalHost, String> {
    if host.is_empty() {
        return Err("the host is empty".to_owned());
    }
    // The core's check is the one applied to addresses peers send us, so what we advertise
    // passes it on every other node.
    let valid = validate_address(host).map_err(|e| e.to_string())?;
    Ok(match valid.parse::<IpAddr>() {
        Ok(ip) => ExternalHost::Ip(ip),
        Err(_) => ExternalHost::Name(valid),
    })
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn ip(host: &str) -> ExternalHost {
        ExternalHost::Ip(host.parse().expect("test address"))
    }

    #[test]
    fn accepts_every_documented_form() {
        let cases: &[(&str, ExternalHost, Option<u16>)] = &[
            ("203.0.113.7", ip("203.0.113.7"), None),
            ("203.0.113.7:5001", ip("203.0.113.7"), Some(5001)),
            ("10.0.0.1:1", ip("10.0.0.1"), Some(1)),
            ("127.0.0.1:65535", ip("127.0.0.1"), Some(65535)),
            ("2001:db8::7", ip("2001:db8::7"), None),
            ("[2001:db8::7]", ip("2001:db8::7"), None),
            ("[2001:db8::7]:5001", ip("2001:db8::7"), Some(5001)),
            (
                "[::1]:80",
                ExternalHost::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)),
                Some(80),
            ),
            (
                "peer.example.org",
                ExternalHost::Name("peer.example.org".into()),
                None,
            ),
            (
                "Peer.Example.ORG:5001",
                ExternalHost::Name("peer.example.org".into()),
                Some(5001),
            ),
            ("localhost", ExternalHost::Name("localhost".into()), None),
        ];
        for (raw, host, port) in cases {
            let parsed = parse_external_address(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(&parsed.host, host, "{raw}");
            assert_eq!(parsed.port, *port, "{raw}");
        }
    }

    #[test]
    fn refuses_bad_values_with_a_reason() {
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            (" 1.2.3.4", "spaces"),
            ("1.2.3.4 ", "spaces"),
            ("0.0.0.0", "cannot be dialled"),
            ("[::]:5001", "cannot be dialled"),
            ("224.0.0.1", "cannot be dialled"),
            ("255.255.255.255:80", "cannot be dialled"),
            ("1.2.3.4:0", "port 0"),
            ("1.2.3.4:65536", "1 to 65535"),
            ("1.2.3.4:http", "1 to 65535"),
            ("1.2.3.4:", "1 to 65535"),
            ("host:-1", "1 to 65535"),
            (":5001", "host is empty"),
            ("[1.2.3.4]:80", "only an IPv6"),
            ("[2001:db8::1", "no matching"),
            ("[2001:db8::1]5001", "only :PORT"),
            ("2001:db8::1]:5", "without '['"),
            ("2001:db8:::1:5001", "several ':'"),
            ("10.0.0.256", "expected an IP address or a host name"),
            ("bad_host.example", "expected an IP address or a host name"),
            ("-bad.example:5001", "expected an IP address or a host name"),
            ("http://peer.example.org", "1 to 65535"),
        ];
        for (raw, reason) in cases {
            let err = parse_external_address(raw).expect_err(raw);
            assert!(err.reason.contains(reason), "{raw}: {}", err.reason);
            let message = err.to_string();
            assert!(
                message.contains(&format!("{raw:?}")),
                "names the value: {message}"
            );
            assert!(
                message.contains("optionally followed by :PORT"),
                "{message}"
            );
        }
    }

    #[test]
    fn refuses_overlong_values_without_echoing_them_whole() {
        let raw = "a".repeat(10_000);
        let err = parse_external_address(&raw).expect_err("too long");
        assert!(err.value.len() <= MAX_OVERRIDE_LEN);
        assert!(err.reason.contains("too long"));
    }

    #[test]
    fn serialises_host_as_a_plain_string() {
        let parsed = parse_external_address("198.51.100.2:7000").expect("valid");
        assert_eq!(
            parsed.host,
            ExternalHost::Ip(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2)))
        );
        let json = serde_json::to_string(&parsed).expect("serialisable");
        assert_eq!(json, r#"{"host":"198.51.100.2","port":7000}"#);
    }
}
