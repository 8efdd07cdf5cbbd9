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
    for (path, attribute) in canonical_json(&fds) {
        config.field_attribute(path, attribute);
    }
    config.compile_fds(fds)?;
    Ok(())
}

// Field types and labels of descriptor.proto, by number (the build has no prost-types import).
const TYPE_64: [i32; 5] = [3, 4, 6, 16, 18]; // int64, uint64, fixed64, sfixed64, sint64
const TYPE_MESSAGE: i32 = 11;
const TYPE_ENUM: i32 = 14;
const LABEL_REPEATED: i32 = 3;

/// The attributes that make serde read and write canonical proto3 JSON, as a .NET client's
/// `JsonFormatter` does: 64-bit integers as strings (numbers accepted too), enums by name
/// (numbers accepted too), and every field under its original name as well as lowerCamelCase.
fn canonical_json(fds: &impl FdsView) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (package, message, nested_maps) in fds.messages() {
        for field in &message.field {
            let name = field.name.clone().unwrap_or_default();
            let path = format!(
                ".{package}.{}.{name}",
                message.name.clone().unwrap_or_default()
            );
            if name.contains('_') {
                out.push((path.clone(), format!("#[serde(alias = \"{name}\")]")));
            }
            let ty = field.r#type.unwrap_or_default();
            let repeated = field.label == Some(LABEL_REPEATED);
            let helper = if TYPE_64.contains(&ty) {
                Some(if repeated {
                    "int64_list".to_owned()
                } else if field.proto3_optional == Some(true) {
                    "int64_option".to_owned()
                } else {
                    "int64".to_owned()
                })
            } else if ty == TYPE_ENUM && !repeated {
                let rust = rust_path(field.type_name.as_deref().unwrap_or_default());
                out.push((
                    path.clone(),
                    format!(
                        "#[serde(serialize_with = \"crate::json::enum_name::serialize::<{rust}, _>\", \
                         deserialize_with = \"crate::json::enum_name::deserialize::<{rust}, _>\")]"
                    ),
                ));
                None
            } else if ty == TYPE_MESSAGE && repeated {
                let entry = field.type_name.as_deref().unwrap_or_default();
                nested_maps
                    .iter()
                    .any(|m| entry.ends_with(m.as_str()))
                    .then(|| "int64_map".to_owned())
            } else {
                None
            };
            if let Some(helper) = helper {
                out.push((path, format!("#[serde(with = \"crate::json::{helper}\")]")));
            }
        }
    }
    out
}

/// `.sorcha.peer.discovery.PeerStatus` as the Rust path of its generated enum.
fn rust_path(type_name: &str) -> String {
    let parts: Vec<&str> = type_name.trim_start_matches('.').split('.').collect();
    let module = parts.get(2).copied().unwrap_or_default();
    let name = parts.last().copied().unwrap_or_default();
    format!("crate::{module}::{name}")
}

/// The messages of a descriptor set, with their package and the names of their nested map
/// entries whose value is a 64-bit integer.
trait FdsView {
    fn messages(&self) -> Vec<(String, prost_types_view::Message, Vec<String>)>;
}

mod prost_types_view {
    pub type Message = protox::prost_reflect::prost_types::DescriptorProto;
}

impl FdsView for protox::prost_reflect::prost_types::FileDescriptorSet {
    fn messages(&self) -> Vec<(String, prost_types_view::Message, Vec<String>)> {
        let mut out = Vec::new();
        for file in &self.file {
            let package = file.package.clone().unwrap_or_default();
            for message in &file.message_type {
                let maps = message
                    .nested_type
                    .iter()
                    .filter(|n| n.options.as_ref().and_then(|o| o.map_entry) == Some(true))
                    .filter(|n| {
                        n.field.iter().any(|f| {
                            f.name.as_deref() == Some("value")
                                && TYPE_64.contains(&f.r#type.unwrap_or_default())
                        })
                    })
                    .map(|n| format!(".{}", n.name.clone().unwrap_or_default()))
                    .collect();
                out.push((package.clone(), message.clone(), maps));
            }
        }
        out
    }
}
