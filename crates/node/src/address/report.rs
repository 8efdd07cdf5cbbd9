//! What discovery found and how: the [`AddressReport`] the node advertises from and the CLI's
//! `address` command prints as JSON.

use std::fmt::Display;
use std::net::IpAddr;

use serde::Serialize;

use super::classify::AddressScope;
use super::external::ExternalHost;
use super::stun_client::StunCounts;

/// Where the advertised address came from, in the order discovery tries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AddressSource {
    /// The operator's `external_address`.
    Override,
    /// A public address on one of our own interfaces.
    Interface,
    /// A STUN server's XOR-MAPPED-ADDRESS.
    Stun,
    /// An HTTP lookup service.
    Http,
    /// Nothing external was found; the internal address (or loopback) is advertised so peers
    /// on the same network still reach us.
    InternalFallback,
}

/// What stands between the node and the internet, as far as discovery can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NatState {
    /// The advertised address is on our own interface.
    NoNat,
    /// The external address differs from ours, and nothing showed the peer port is blocked.
    BehindNat,
    /// Connecting to our own peer port on the advertised address failed: peers outside may
    /// not get in (no port forwarding, a firewall, or a NAT without hairpinning).
    BehindRestrictiveNat,
    /// An override or a fallback: discovery did not look.
    Unknown,
}

/// One step discovery tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Override,
    Interfaces,
    Stun,
    Http,
    Reachability,
}

/// What one step did, for the operator reading the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attempt {
    pub step: Step,
    /// The server, URL or address the step talked to.
    pub target: String,
    pub ok: bool,
    /// What was found, or why nothing was.
    pub detail: String,
}

impl Attempt {
    pub fn found(step: Step, target: impl Display, detail: impl Display) -> Self {
        Self {
            step,
            target: target.to_string(),
            ok: true,
            detail: detail.to_string(),
        }
    }

    pub fn failed(step: Step, target: impl Display, error: impl Display) -> Self {
        Self {
            step,
            target: target.to_string(),
            ok: false,
            detail: error.to_string(),
        }
    }
}

/// The result of discovery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddressReport {
    /// The address peers should dial.
    pub external_address: ExternalHost,
    /// The port peers should dial: the override's, else our peer port.
    pub port: u16,
    pub source: AddressSource,
    /// Scope of the external address; `None` for a host name.
    pub scope: Option<AddressScope>,
    pub nat: NatState,
    /// Our own address on the network of the default route, if any.
    pub internal_address: Option<IpAddr>,
    /// Result of the self-connection; `None` when it was not asked for.
    pub reachable: Option<bool>,
    pub stun: StunCounts,
    /// Every step tried, in order, with its result.
    pub attempts: Vec<Attempt>,
}

/// The NAT state implied by where the address came from and whether we reached ourselves.
pub fn nat_state(
    source: AddressSource,
    external: &ExternalHost,
    internal: Option<IpAddr>,
    reachable: Option<bool>,
) -> NatState {
    if reachable == Some(false) {
        return NatState::BehindRestrictiveNat;
    }
    match source {
        AddressSource::Interface => NatState::NoNat,
        AddressSource::Stun | AddressSource::Http => match (external, internal) {
            (ExternalHost::Ip(ext), Some(int)) if *ext == int => NatState::NoNat,
            _ => NatState::BehindNat,
        },
        AddressSource::Override | AddressSource::InternalFallback => NatState::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn nat_state_follows_source_and_reachability() {
        let ext = ExternalHost::Ip(ip("81.2.69.1"));
        let int = Some(ip("192.168.1.2"));
        let cases = [
            (AddressSource::Interface, None, NatState::NoNat),
            (
                AddressSource::Interface,
                Some(false),
                NatState::BehindRestrictiveNat,
            ),
            (AddressSource::Stun, Some(true), NatState::BehindNat),
            (AddressSource::Http, None, NatState::BehindNat),
            (
                AddressSource::Stun,
                Some(false),
                NatState::BehindRestrictiveNat,
            ),
            (AddressSource::Override, Some(true), NatState::Unknown),
            (AddressSource::InternalFallback, None, NatState::Unknown),
        ];
        for (source, reachable, want) in cases {
            assert_eq!(
                nat_state(source, &ext, int, reachable),
                want,
                "{source:?} {reachable:?}"
            );
        }
        let same = ExternalHost::Ip(ip("81.2.69.1"));
        assert_eq!(
            nat_state(AddressSource::Stun, &same, Some(ip("81.2.69.1")), None),
            NatState::NoNat
        );
    }

    #[test]
    fn serialises_with_snake_case_values() {
        let report = AddressReport {
            external_address: ExternalHost::Ip(ip("198.51.100.4")),
            port: 5001,
            source: AddressSource::InternalFallback,
            scope: Some(AddressScope::SharedCgnat),
            nat: NatState::BehindRestrictiveNat,
            internal_address: Some(ip("10.0.0.4")),
            reachable: Some(false),
            stun: StunCounts {
                requests_sent: 3,
                ignored_responses: 1,
            },
            attempts: vec![Attempt::failed(Step::Stun, "127.0.0.1:3478", "refused")],
        };
        let json = serde_json::to_value(&report).expect("serialisable");
        assert_eq!(json["external_address"], "198.51.100.4");
        assert_eq!(json["source"], "internal_fallback");
        assert_eq!(json["scope"], "shared_cgnat");
        assert_eq!(json["nat"], "behind_restrictive_nat");
        assert_eq!(json["internal_address"], "10.0.0.4");
        assert_eq!(json["stun"]["ignored_responses"], 1);
        assert_eq!(json["attempts"][0]["step"], "stun");
        assert_eq!(json["attempts"][0]["ok"], false);
    }
}
