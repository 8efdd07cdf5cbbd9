//! The REST fallback carries the wire messages as JSON, shaped like the proto JSON mapping; the
//! generated messages derive serde with these helpers (see `build.rs`).

/// `bytes` fields as base64 strings, as the proto JSON mapping writes them.
pub mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD
            .decode(text.as_bytes())
            .map_err(|e| serde::de::Error::custom(format!("not base64: {e}")))
    }
}

/// A 64-bit integer as the proto JSON mapping writes it (a string, which JavaScript and
/// .NET read without loss) and as any client may send it (a string or a number).
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Int64<T> {
    Number(T),
    Text(String),
}

impl<T: std::str::FromStr> Int64<T> {
    fn value<E: serde::de::Error>(self) -> Result<T, E> {
        match self {
            Int64::Number(n) => Ok(n),
            Int64::Text(text) => text
                .trim()
                .parse()
                .map_err(|_| E::custom(format!("not a 64-bit integer: {text:?}"))),
        }
    }
}

/// `int64`, `uint64`, `fixed64` fields.
pub mod int64 {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<T: Display, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(value)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr + Deserialize<'de>,
        D: Deserializer<'de>,
    {
        super::Int64::<T>::deserialize(d)?.value()
    }
}

/// `optional int64` fields (`null` is absent).
pub mod int64_option {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<T: Display, S: Serializer>(
        value: &Option<T>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => s.collect_str(v),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<Option<T>, D::Error>
    where
        T: FromStr + Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Option::<super::Int64<T>>::deserialize(d)?
            .map(super::Int64::value)
            .transpose()
    }
}

/// `repeated int64` fields.
pub mod int64_list {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<T: Display, S: Serializer>(values: &[T], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(values.len()))?;
        for v in values {
            seq.serialize_element(&v.to_string())?;
        }
        seq.end()
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<Vec<T>, D::Error>
    where
        T: FromStr + Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Vec::<super::Int64<T>>::deserialize(d)?
            .into_iter()
            .map(super::Int64::value)
            .collect()
    }
}

/// `map<string, int64>` fields.
pub mod int64_map {
    use std::collections::HashMap;

    use serde::ser::SerializeMap;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        values: &HashMap<String, i64>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(values.len()))?;
        for (k, v) in values {
            map.serialize_entry(k, &v.to_string())?;
        }
        map.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<HashMap<String, i64>, D::Error> {
        HashMap::<String, super::Int64<i64>>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| Ok((k, v.value()?)))
            .collect()
    }
}

/// What the JSON mapping needs of a generated enum (prost gives these as inherent methods).
pub trait ProtoEnum: Sized + Into<i32> + TryFrom<i32> + Copy {
    fn name(self) -> &'static str;
    fn from_name(name: &str) -> Option<Self>;
}

macro_rules! proto_enum {
    ($($t:path),*) => {$(
        impl ProtoEnum for $t {
            fn name(self) -> &'static str {
                self.as_str_name()
            }
            fn from_name(name: &str) -> Option<Self> {
                Self::from_str_name(name)
            }
        }
    )*};
}

proto_enum!(
    crate::discovery::PeerStatus,
    crate::heartbeat::SyncStateProto,
    crate::communication::MessageType
);

/// Enum fields: written by name, read by name or number (an unknown number is kept, as
/// proto3 keeps unknown enum values).
pub mod enum_name {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::ProtoEnum;

    pub fn serialize<E: ProtoEnum, S: Serializer>(value: &i32, s: S) -> Result<S::Ok, S::Error> {
        match E::try_from(*value) {
            Ok(e) => s.serialize_str(e.name()),
            Err(_) => s.serialize_i32(*value),
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NameOrNumber {
        Number(i32),
        Name(String),
    }

    pub fn deserialize<'de, E: ProtoEnum, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
        match NameOrNumber::deserialize(d)? {
            NameOrNumber::Number(n) => Ok(n),
            NameOrNumber::Name(name) => E::from_name(&name)
                .map(Into::into)
                .ok_or_else(|| serde::de::Error::custom(format!("unknown enum value {name:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::discovery::{PeerInfo, PingResponse};
    use crate::heartbeat::PeerHeartbeatRequest;

    #[test]
    fn canonical_proto3_json_is_written_and_every_form_is_read() {
        let pong = PingResponse {
            peer_id: "node_1".into(),
            timestamp: 1_764_000_000,
            status: 1,
        };
        let text = serde_json::to_value(&pong).unwrap();
        assert_eq!(
            text,
            json!({"peerId": "node_1", "timestamp": "1764000000", "status": "ONLINE"})
        );
        // As .NET's JsonFormatter writes it, as a hand-written client might, and by number.
        for form in [
            json!({"peerId": "node_1", "timestamp": "1764000000", "status": "ONLINE"}),
            json!({"peer_id": "node_1", "timestamp": 1_764_000_000i64, "status": 1}),
        ] {
            let read: PingResponse = serde_json::from_value(form).unwrap();
            assert_eq!(read, pong);
        }
        let info: PeerInfo = serde_json::from_value(json!({
            "peerId": "node_2", "address": "10.0.0.1", "port": 5001,
            "supportedProtocols": ["Grpc"], "lastSeen": "1764000000",
            "advertised_registers": [{"registerId": "r", "latestVersion": "7"}],
        }))
        .unwrap();
        assert_eq!(info.last_seen, 1_764_000_000);
        assert_eq!(info.advertised_registers[0].latest_version, 7);
        let beat: PeerHeartbeatRequest = serde_json::from_value(json!({
            "peerId": "node_2", "sequenceNumber": "3", "registerVersions": {"r": "9"},
            "advertisedRegisters": [{"registerId": "r", "syncState": "SYNC_STATE_PROTO_ACTIVE"}],
        }))
        .unwrap();
        assert_eq!(beat.register_versions["r"], 9);
        assert_eq!(beat.advertised_registers[0].sync_state, 4);
        let bad = serde_json::from_value::<PingResponse>(json!({"status": "SIDEWAYS"}));
        assert!(bad.is_err());
    }
}
