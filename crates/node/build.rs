//! Compiles the wire contract in `proto/` with protox (pure Rust, so no system `protoc` is
//! needed) and generates the tonic clients and servers. The messages are not generated here:
//! every package maps onto the modules of `sorcha-peer-wire` (`extern_path`), so each message
//! has one Rust type, shared with the simulator.

use std::path::PathBuf;

const PROTOS: [&str; 4] = [
    "sorcha/peer/discovery.proto",
    "sorcha/peer/heartbeat.proto",
    "sorcha/peer/transaction.proto",
    "sorcha/peer/communication.proto",
];

/// Each proto package and the module of `sorcha-peer-wire` that holds its messages.
const PACKAGES: [(&str, &str); 4] = [
    (".sorcha.peer.discovery", "::sorcha_peer_wire::discovery"),
    (".sorcha.peer.heartbeat", "::sorcha_peer_wire::heartbeat"),
    (
        ".sorcha.peer.transaction",
        "::sorcha_peer_wire::transaction",
    ),
    (
        ".sorcha.peer.communication",
        "::sorcha_peer_wire::communication",
    ),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={}", root.join(proto).display());
    }
    let fds = protox::compile(PROTOS, [&root])?;
    let mut builder = tonic_prost_build::configure()
        .build_server(true)
        .build_client(true);
    for (package, module) in PACKAGES {
        builder = builder.extern_path(package, module);
    }
    builder.compile_fds(fds)?;
    Ok(())
}
