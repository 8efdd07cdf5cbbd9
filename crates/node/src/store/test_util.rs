//! Peers for the tests of the store.

use std::time::Duration;

use sorcha_peer_core::model::{
    PeerCapabilities, PeerId, PeerNode, PeerStatus, Protocol, Timestamp,
};

pub(super) fn id(n: u32) -> PeerId {
    format!("peer-{n}").parse().unwrap()
}

pub(super) fn t(ms: u64) -> Timestamp {
    Timestamp::from_millis(ms)
}

/// A peer with every field set to something other than its default.
pub(super) fn node(n: u32, last_seen: u64) -> PeerNode {
    PeerNode {
        peer_id: id(n),
        address: format!("10.0.0.{n}"),
        port: 5001,
        supported_protocols: vec![Protocol::Grpc, Protocol::Rest],
        capabilities: PeerCapabilities {
            supports_streaming: true,
            supports_transaction_distribution: false,
            max_transaction_size: 4 << 20,
        },
        status: PeerStatus::Online,
        first_seen: t(1_000),
        last_seen: t(last_seen),
        failure_count: 2,
        latency: Some(Duration::from_millis(37)),
        is_bootstrap: false,
        banned_until: None,
        verified: false,
    }
}
