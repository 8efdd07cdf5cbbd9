//! The four services of proto/sorcha/peer: their messages (from `sorcha-peer-wire`, one Rust
//! type per message) beside the tonic clients and servers generated against them (build.rs).

#![allow(clippy::all, missing_docs, unreachable_pub)]

pub mod discovery {
    pub use sorcha_peer_wire::discovery::*;
    tonic::include_proto!("sorcha.peer.discovery");
}

pub mod heartbeat {
    pub use sorcha_peer_wire::heartbeat::*;
    tonic::include_proto!("sorcha.peer.heartbeat");
}

pub mod transaction {
    pub use sorcha_peer_wire::transaction::*;
    tonic::include_proto!("sorcha.peer.transaction");
}

pub mod communication {
    pub use sorcha_peer_wire::communication::*;
    tonic::include_proto!("sorcha.peer.communication");
}

/// The encoded descriptor set of all four files, served by gRPC reflection.
pub use sorcha_peer_wire::FILE_DESCRIPTOR_SET;
