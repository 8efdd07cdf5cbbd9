//! Peers on the wire: `PeerInfo` to `PeerAdvert` and back, peer status, peer-list bounds.
//! Everything a peer sends is validated here, at the edge, with an error that names the
//! offending field; the core only ever sees valid values.

use sorcha_peer_core::model::{
    ModelError, PeerAdvert, PeerCapabilities, PeerStatus, Protocol, Timestamp, validate_address,
    validate_port,
};

use crate::discovery as pb;

/// Protocol names read from one PeerInfo at most; the rest are ignored. Three are known, so
/// 16 leaves room for future ones without letting a peer make us parse thousands.
const MAX_PROTOCOLS: usize = 16;

/// A PeerInfo that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {error}")]
pub struct InvalidPeerInfo {
    /// The proto field at fault, e.g. `peer_info.port`.
    pub field: &'static str,
    pub error: ModelError,
}

impl InvalidPeerInfo {
    /// A short label for the metric of rejected entries.
    pub fn reason(&self) -> &'static str {
        match self.error {
            ModelError::PeerId(_) => "peer_id",
            ModelError::Address(_) | ModelError::UndialableAddress(_) => "address",
            ModelError::Port(_) => "port",
            ModelError::Timestamp(_) => "last_seen",
            ModelError::TxHash(_) | ModelError::TxId(_) => "hash",
        }
    }
}

/// Validates a PeerInfo from the wire. Missing capabilities mean "nothing announced": no
/// streaming, and transactions up to `default_max_tx` (ours), which a Sorcha peer accepts too.
pub fn advert_from_proto(
    info: &pb::PeerInfo,
    default_max_tx: u32,
) -> Result<PeerAdvert, InvalidPeerInfo> {
    let invalid = |field, error| InvalidPeerInfo { field, error };
    let peer_id = info
        .peer_id
        .parse()
        .map_err(|e| invalid("peer_info.peer_id", e))?;
    let address = validate_address(&info.address).map_err(|e| invalid("peer_info.address", e))?;
    let port = validate_port(info.port.into()).map_err(|e| invalid("peer_info.port", e))?;
    let last_seen =
        Timestamp::from_wire(info.last_seen).map_err(|e| invalid("peer_info.last_seen", e))?;
    let mut supported_protocols: Vec<Protocol> = info
        .supported_protocols
        .iter()
        .take(MAX_PROTOCOLS)
        .filter_map(|name| Protocol::from_wire(name))
        .collect();
    supported_protocols.sort();
    supported_protocols.dedup();
    let capabilities = match &info.capabilities {
        Some(c) => PeerCapabilities {
            supports_streaming: c.supports_streaming,
            supports_transaction_distribution: c.supports_transaction_distribution,
            max_transaction_size: u32::try_from(c.max_transaction_size).unwrap_or(0),
        },
        None => PeerCapabilities {
            supports_streaming: false,
            supports_transaction_distribution: true,
            max_transaction_size: default_max_tx,
        },
    };
    Ok(PeerAdvert {
        peer_id,
        address,
        port,
        supported_protocols,
        capabilities,
        last_seen,
        is_seed_node: info.is_seed_node,
    })
}

pub fn advert_to_proto(advert: &PeerAdvert) -> pb::PeerInfo {
    pb::PeerInfo {
        peer_id: advert.peer_id.to_string(),
        address: advert.address.clone(),
        port: advert.port.into(),
        supported_protocols: advert
            .supported_protocols
            .iter()
            .map(|p| p.as_str().to_owned())
            .collect(),
        // Seconds, as C# reads last_seen.
        last_seen: advert.last_seen.to_wire_secs(),
        capabilities: Some(pb::PeerCapabilities {
            supports_streaming: advert.capabilities.supports_streaming,
            supports_transaction_distribution: advert
                .capabilities
                .supports_transaction_distribution,
            max_transaction_size: i32::try_from(advert.capabilities.max_transaction_size)
                .unwrap_or(i32::MAX),
        }),
        advertised_registers: Vec::new(),
        is_seed_node: advert.is_seed_node,
    }
}

pub fn status_to_proto(status: PeerStatus) -> pb::PeerStatus {
    match status {
        PeerStatus::Unknown => pb::PeerStatus::Unknown,
        PeerStatus::Online => pb::PeerStatus::Online,
        PeerStatus::Offline => pb::PeerStatus::Offline,
        PeerStatus::Busy => pb::PeerStatus::Busy,
    }
}

pub fn status_from_proto(status: pb::PeerStatus) -> PeerStatus {
    match status {
        pb::PeerStatus::Online => PeerStatus::Online,
        pb::PeerStatus::Offline => PeerStatus::Offline,
        pb::PeerStatus::Busy => PeerStatus::Busy,
        pb::PeerStatus::Unknown => PeerStatus::Unknown,
    }
}

/// The valid entries of a peer list from a peer; invalid ones are dropped (membership counts
/// what it refuses of the rest).
pub fn valid_adverts(infos: &[pb::PeerInfo], max_tx: u32) -> Vec<PeerAdvert> {
    infos
        .iter()
        .filter_map(|info| advert_from_proto(info, max_tx).ok())
        .collect()
}

/// A `max_peers` from the wire: zero or negative means "your choice", capped at `limit`.
pub fn max_peers(requested: i32, limit: usize) -> usize {
    match usize::try_from(requested) {
        Ok(0) | Err(_) => limit,
        Ok(n) => n.min(limit),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> pb::PeerInfo {
        pb::PeerInfo {
            peer_id: "node-7".into(),
            address: "10.1.2.3".into(),
            port: 5001,
            supported_protocols: vec!["GrpcStream".into(), "Rest".into(), "Smoke".into()],
            last_seen: 1_764_000_000,
            capabilities: None,
            advertised_registers: vec![],
            is_seed_node: true,
        }
    }

    #[test]
    fn good_peer_info_round_trips() {
        let advert = advert_from_proto(&info(), 1024).unwrap();
        assert_eq!(
            advert.supported_protocols,
            vec![Protocol::GrpcStream, Protocol::Rest]
        );
        assert_eq!(advert.last_seen.as_millis(), 1_764_000_000_000);
        assert_eq!(advert.capabilities.max_transaction_size, 1024);
        let back = advert_to_proto(&advert);
        assert_eq!(back.peer_id, "node-7");
        assert_eq!(
            back.last_seen, 1_764_000_000,
            "sent as seconds, as C# reads it"
        );
        assert_eq!(
            advert_from_proto(&back, 1024).unwrap(),
            PeerAdvert {
                capabilities: PeerCapabilities {
                    supports_streaming: false,
                    ..advert.capabilities
                },
                ..advert
            }
        );
    }

    #[test]
    fn bad_fields_are_named() {
        type Mutation = fn(&mut pb::PeerInfo);
        let cases: [(Mutation, &str); 5] = [
            (|i| i.peer_id = String::new(), "peer_info.peer_id"),
            (|i| i.address = "0.0.0.0".into(), "peer_info.address"),
            (|i| i.address = "not an address".into(), "peer_info.address"),
            (|i| i.port = 70000, "peer_info.port"),
            (|i| i.last_seen = -5, "peer_info.last_seen"),
        ];
        for (mutate, field) in cases {
            let mut bad = info();
            mutate(&mut bad);
            let err = advert_from_proto(&bad, 1024).unwrap_err();
            assert_eq!(err.field, field, "{err}");
            assert!(err.to_string().starts_with(field));
        }
    }

    #[test]
    fn max_peers_is_capped() {
        assert_eq!(max_peers(0, 100), 100);
        assert_eq!(max_peers(-3, 100), 100);
        assert_eq!(max_peers(5, 100), 5);
        assert_eq!(max_peers(5000, 100), 100);
    }
}
