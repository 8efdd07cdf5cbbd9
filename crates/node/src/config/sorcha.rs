//! Reads the `PeerService` section of a Sorcha `appsettings.json` into our key space, so an
//! operator can point this node at the file a C# peer already uses.
//!
//! Key names are matched case-insensitively, as .NET's configuration binder does. Values with
//! the unit in Sorcha's key name (`RefreshIntervalMinutes`) become durations. An unknown key in
//! the section is refused, like an unknown key in our own TOML; other sections (`Logging`,
//! `AllowedHosts`, ...) belong to the rest of the application and are ignored.

use std::collections::BTreeMap;

use serde_json::{Map, Value as Json};
use toml::{Table, Value};

/// How one Sorcha key becomes one of ours.
#[derive(Clone, Copy)]
enum Conv {
    /// Same value (string, number, bool or list).
    Same,
    /// A number with the unit in the key's name, becoming a duration string.
    Unit(&'static str),
    /// Sorcha's `ListenPort`: a port on every interface.
    Port,
    /// Sorcha's enum names ("IPv4", "GrpcStream") becoming ours ("ipv4", "grpc_stream").
    Enum,
    /// Read and accepted, with no effect here; the note says why.
    Ignored(&'static str),
}

/// (section, Sorcha key, our key, conversion). The empty section is `PeerService` itself.
const KEYS: &[(&str, &str, &str, Conv)] = &[
    (
        "",
        "Enabled",
        "",
        Conv::Ignored("a running sorcha-peer is the enabled peer service"),
    ),
    ("", "NodeId", "node_id", Conv::Same),
    ("", "ListenPort", "network.listen", Conv::Port),
    (
        "NetworkAddress",
        "ExternalAddress",
        "address.external_address",
        Conv::Same,
    ),
    (
        "NetworkAddress",
        "StunServers",
        "address.stun_servers",
        Conv::Same,
    ),
    (
        "NetworkAddress",
        "HttpLookupServices",
        "address.http_lookup_services",
        Conv::Same,
    ),
    (
        "NetworkAddress",
        "PreferredProtocol",
        "address.preferred_protocol",
        Conv::Enum,
    ),
    (
        "PeerDiscovery",
        "BootstrapNodes",
        "discovery.bootstrap_nodes",
        Conv::Same,
    ),
    (
        "PeerDiscovery",
        "RefreshIntervalMinutes",
        "discovery.refresh_interval",
        Conv::Unit("m"),
    ),
    (
        "PeerDiscovery",
        "MaxPeersInList",
        "discovery.max_peers_in_list",
        Conv::Same,
    ),
    (
        "PeerDiscovery",
        "MinHealthyPeers",
        "discovery.min_healthy_peers",
        Conv::Same,
    ),
    (
        "PeerDiscovery",
        "PeerTimeoutSeconds",
        "discovery.peer_timeout",
        Conv::Unit("s"),
    ),
    (
        "PeerDiscovery",
        "MaxConcurrentDiscoveries",
        "discovery.max_concurrent_discoveries",
        Conv::Same,
    ),
    (
        "Communication",
        "PreferredProtocol",
        "communication.preferred_protocol",
        Conv::Enum,
    ),
    (
        "Communication",
        "ConnectionTimeout",
        "communication.connection_timeout",
        Conv::Unit("s"),
    ),
    (
        "Communication",
        "MaxRetries",
        "communication.max_retries",
        Conv::Same,
    ),
    (
        "Communication",
        "RetryDelaySeconds",
        "communication.retry_delay",
        Conv::Unit("s"),
    ),
    (
        "Communication",
        "CircuitBreakerThreshold",
        "communication.circuit_breaker_threshold",
        Conv::Same,
    ),
    (
        "Communication",
        "CircuitBreakerResetMinutes",
        "communication.circuit_breaker_reset",
        Conv::Unit("m"),
    ),
    (
        "TransactionDistribution",
        "FanoutFactor",
        "distribution.fanout",
        Conv::Same,
    ),
    (
        "TransactionDistribution",
        "GossipRounds",
        "distribution.gossip_rounds",
        Conv::Same,
    ),
    (
        "TransactionDistribution",
        "TransactionCacheTTL",
        "distribution.transaction_cache_ttl",
        Conv::Unit("s"),
    ),
    (
        "TransactionDistribution",
        "MaxTransactionSize",
        "distribution.max_transaction_size",
        Conv::Same,
    ),
    (
        "TransactionDistribution",
        "StreamingThreshold",
        "distribution.streaming_threshold",
        Conv::Same,
    ),
    (
        "TransactionDistribution",
        "EnableCompression",
        "distribution.enable_compression",
        Conv::Same,
    ),
    (
        "OfflineMode",
        "MaxQueueSize",
        "offline.max_queue_size",
        Conv::Same,
    ),
    (
        "OfflineMode",
        "MaxRetries",
        "offline.max_retries",
        Conv::Same,
    ),
    (
        "OfflineMode",
        "QueuePersistence",
        "",
        Conv::Ignored("the offline queue is always persisted"),
    ),
    (
        "OfflineMode",
        "PersistencePath",
        "",
        Conv::Ignored("the offline queue lives in data_dir"),
    ),
];

/// The section's values in our key space.
pub(super) struct Mapped {
    /// Nested like our TOML.
    pub table: Table,
    /// Our dotted key -> `PeerService.Section.Key`, for error messages.
    pub key_names: BTreeMap<String, String>,
    pub notes: Vec<String>,
}

pub(super) fn to_table(json: &Json) -> Result<Mapped, String> {
    let root = json.as_object().ok_or("the file is not a JSON object")?;
    let section = find(root, "PeerService")
        .ok_or("no \"PeerService\" section: a Sorcha appsettings.json keeps the peer service's settings there")?;
    let section = section
        .as_object()
        .ok_or("\"PeerService\" must be a JSON object")?;
    let mut mapped = Mapped {
        table: Table::new(),
        key_names: BTreeMap::new(),
        notes: Vec::new(),
    };
    for (name, value) in section {
        match value {
            Json::Object(inner) if is_section(name) => {
                for (key, value) in inner {
                    map_key(&mut mapped, name, key, value)?;
                }
            }
            _ => map_key(&mut mapped, "", name, value)?,
        }
    }
    Ok(mapped)
}

fn is_section(name: &str) -> bool {
    KEYS.iter()
        .any(|(section, ..)| !section.is_empty() && section.eq_ignore_ascii_case(name))
}

fn map_key(mapped: &mut Mapped, section: &str, key: &str, value: &Json) -> Result<(), String> {
    let full = if section.is_empty() {
        format!("PeerService.{key}")
    } else {
        format!("PeerService.{section}.{key}")
    };
    let (_, _, ours, conv) = KEYS
        .iter()
        .find(|(s, k, ..)| s.eq_ignore_ascii_case(section) && k.eq_ignore_ascii_case(key))
        .ok_or_else(|| format!("unknown key {full}: not a setting of Sorcha's peer service"))?;
    if value.is_null() {
        return Ok(()); // .NET's binder leaves the default in place for null.
    }
    let value = match conv {
        Conv::Ignored(why) => {
            mapped
                .notes
                .push(format!("{full} is accepted and ignored: {why}"));
            return Ok(());
        }
        Conv::Same => {
            json_to_toml(value).ok_or_else(|| format!("{full}: unsupported value {value}"))?
        }
        Conv::Unit(unit) => match value.as_u64() {
            Some(n) => Value::String(format!("{n}{unit}")),
            None => {
                return Err(format!(
                    "{full} = {value}: expected a whole non-negative number"
                ));
            }
        },
        Conv::Port => match value.as_u64().filter(|p| (1..=65535).contains(p)) {
            Some(port) => Value::String(format!("0.0.0.0:{port}")),
            None => return Err(format!("{full} = {value}: expected a port from 1 to 65535")),
        },
        Conv::Enum => match value.as_str() {
            Some(name) => Value::String(snake_case(name)),
            None => return Err(format!("{full} = {value}: expected a string")),
        },
    };
    insert(&mut mapped.table, ours, value);
    mapped.key_names.insert(ours.to_string(), full);
    Ok(())
}

fn find<'a>(map: &'a Map<String, Json>, name: &str) -> Option<&'a Json> {
    map.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

fn insert(table: &mut Table, key: &str, value: Value) {
    match key.split_once('.') {
        Some((head, rest)) => {
            let inner = table
                .entry(head)
                .or_insert_with(|| Value::Table(Table::new()));
            if let Value::Table(inner) = inner {
                insert(inner, rest, value);
            }
        }
        None => {
            table.insert(key.to_owned(), value);
        }
    }
}

fn json_to_toml(value: &Json) -> Option<Value> {
    Some(match value {
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Float(n.as_f64()?),
        },
        Json::String(s) => Value::String(s.clone()),
        Json::Array(items) => Value::Array(items.iter().map(json_to_toml).collect::<Option<_>>()?),
        Json::Null | Json::Object(_) => return None,
    })
}

/// "GrpcStream" -> "grpc_stream", "IPv4" -> "ipv4".
fn snake_case(name: &str) -> String {
    let mut out = String::new();
    let mut prev_lower = false;
    for c in name.chars() {
        if c.is_ascii_uppercase() && prev_lower {
            out.push('_');
        }
        prev_lower = c.is_ascii_lowercase();
        out.push(c.to_ascii_lowercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_names_become_ours() {
        assert_eq!(snake_case("GrpcStream"), "grpc_stream");
        assert_eq!(snake_case("IPv4"), "ipv4");
        assert_eq!(snake_case("Rest"), "rest");
    }
}
