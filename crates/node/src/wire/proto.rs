//! The generated wire types, clients and servers of the four services (proto/sorcha/peer).

#![allow(clippy::all, missing_docs, unreachable_pub)]

pub mod discovery {
    tonic::include_proto!("sorcha.peer.discovery");
}

pub mod heartbeat {
    tonic::include_proto!("sorcha.peer.heartbeat");
}

pub mod transaction {
    tonic::include_proto!("sorcha.peer.transaction");
}

pub mod communication {
    tonic::include_proto!("sorcha.peer.communication");
}

/// The encoded descriptor set of all four files, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/sorcha_peer_descriptor.bin"));
