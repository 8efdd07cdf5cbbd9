//! Compiles the wire contract in `proto/` with protox (pure Rust, so no system `protoc` is
//! needed) and generates the tonic clients and servers. The encoded descriptor set is kept for
//! gRPC reflection.

use std::path::PathBuf;

use prost::Message;

const PROTOS: [&str; 4] = [
    "sorcha/peer/discovery.proto",
    "sorcha/peer/heartbeat.proto",
    "sorcha/peer/transaction.proto",
    "sorcha/peer/communication.proto",
];

/// The `bytes` fields, which JSON carries as base64.
const BYTES_FIELDS: [&str; 4] = [
    ".sorcha.peer.transaction.TransactionResponse.transaction_data",
    ".sorcha.peer.transaction.TransactionChunk.chunk_data",
    ".sorcha.peer.communication.PeerMessage.payload",
    ".sorcha.peer.communication.GossipPush.transaction_data",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={}", root.join(proto).display());
    }
    let fds = protox::compile(PROTOS, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("sorcha_peer_descriptor.bin"), fds.encode_to_vec())?;
    // The REST fallback carries the same messages as JSON, shaped like the proto JSON mapping:
    // camelCase names, absent fields at their defaults, bytes as base64.
    let mut builder = tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .message_attribute(
            ".sorcha",
            "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default, rename_all = \"camelCase\")]",
        );
    for field in BYTES_FIELDS {
        builder = builder.field_attribute(
            field,
            "#[serde(with = \"crate::transport::rest::base64_bytes\")]",
        );
    }
    builder.compile_fds(fds)?;
    Ok(())
}
