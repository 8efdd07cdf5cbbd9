//! Compiles the wire contract in `proto/` with protox (pure Rust, so no system `protoc` is
//! needed) into prost messages, and keeps the encoded descriptor set for gRPC reflection. The
//! daemon generates its tonic services against these same messages (its `extern_path`s), so
//! each message has one Rust type.

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
    let mut config = prost_build::Config::new();
    config.message_attribute(
        ".sorcha",
        "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default, rename_all = \"camelCase\")]",
    );
    for field in BYTES_FIELDS {
        config.field_attribute(field, "#[serde(with = \"crate::json::base64_bytes\")]");
    }
    config.compile_fds(fds)?;
    Ok(())
}
