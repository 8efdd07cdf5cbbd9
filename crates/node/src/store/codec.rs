//! How a [`PeerNode`] maps to a row of `peers` and back.
//!
//! Reading checks every value again (peer id, port, timestamps, JSON): the file may have been
//! edited by hand or written by another version, and a bad row must give a typed error naming
//! the peer and the column, never a panic or a silently wrong peer.

use std::time::Duration;

use rusqlite::Row;
use sorcha_peer_core::model::{
    PeerCapabilities, PeerId, PeerNode, PeerStatus, Protocol, Timestamp,
};

use super::StoreError;

/// The columns every peer query selects, in the order [`RawPeer::from_row`] reads them.
pub(super) const PEER_COLUMNS: &str = "peer_id, address, port, protocols, capabilities, status, \
     first_seen, last_seen, failure_count, latency_ms, is_bootstrap, banned_until, verified";

/// A row as SQLite typed it, before the checks of [`RawPeer::decode`]. Splitting the two
/// keeps rusqlite's row callback infallible apart from SQL type errors.
pub(super) struct RawPeer {
    peer_id: String,
    address: String,
    port: i64,
    protocols: String,
    capabilities: String,
    status: String,
    first_seen: i64,
    last_seen: i64,
    failure_count: i64,
    latency_ms: Option<i64>,
    is_bootstrap: bool,
    banned_until: Option<i64>,
    verified: bool,
}

impl RawPeer {
    pub(super) fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            peer_id: row.get(0)?,
            address: row.get(1)?,
            port: row.get(2)?,
            protocols: row.get(3)?,
            capabilities: row.get(4)?,
            status: row.get(5)?,
            first_seen: row.get(6)?,
            last_seen: row.get(7)?,
            failure_count: row.get(8)?,
            latency_ms: row.get(9)?,
            is_bootstrap: row.get(10)?,
            banned_until: row.get(11)?,
            verified: row.get(12)?,
        })
    }

    pub(super) fn decode(self) -> Result<PeerNode, StoreError> {
        let corrupt = |column: &'static str, value: String| StoreError::Corrupt {
            peer_id: self.peer_id.clone(),
            column,
            value,
        };
        let peer_id: PeerId = self
            .peer_id
            .parse()
            .map_err(|_| corrupt("peer_id", self.peer_id.clone()))?;
        let port = u16::try_from(self.port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| corrupt("port", self.port.to_string()))?;
        let capabilities: PeerCapabilities = serde_json::from_str(&self.capabilities)
            .map_err(|_| corrupt("capabilities", self.capabilities.clone()))?;
        let status =
            status_from_text(&self.status).ok_or_else(|| corrupt("status", self.status.clone()))?;
        let millis = |column: &'static str, v: i64| {
            u64::try_from(v)
                .map(Timestamp::from_millis)
                .map_err(|_| corrupt(column, v.to_string()))
        };
        let first_seen = millis("first_seen", self.first_seen)?;
        let last_seen = millis("last_seen", self.last_seen)?;
        let banned_until = self
            .banned_until
            .map(|v| millis("banned_until", v))
            .transpose()?;
        let failure_count = u32::try_from(self.failure_count)
            .map_err(|_| corrupt("failure_count", self.failure_count.to_string()))?;
        let latency = self
            .latency_ms
            .map(|v| {
                u64::try_from(v)
                    .map(Duration::from_millis)
                    .map_err(|_| corrupt("latency_ms", v.to_string()))
            })
            .transpose()?;
        Ok(PeerNode {
            peer_id,
            address: self.address,
            port,
            supported_protocols: protocols_from_text(&self.protocols),
            capabilities,
            status,
            first_seen,
            last_seen,
            failure_count,
            latency,
            is_bootstrap: self.is_bootstrap,
            banned_until,
            verified: self.verified,
        })
    }
}

/// Unix milliseconds as SQLite stores them. Saturates: a timestamp past year 292 million
/// is a bug upstream, and clamping keeps the row writable.
pub(super) fn millis_to_sql(t: Timestamp) -> i64 {
    t.to_wire()
}

/// Whole milliseconds: sub-millisecond latency is noise for peer selection.
pub(super) fn latency_to_sql(latency: Option<Duration>) -> Option<i64> {
    latency.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub(super) fn protocols_to_text(protocols: &[Protocol]) -> String {
    protocols
        .iter()
        .map(|p| p.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// Names this version does not speak are skipped, not refused: a file written by a newer
/// version (with a protocol added) must still load after a downgrade.
fn protocols_from_text(text: &str) -> Vec<Protocol> {
    text.split(',').filter_map(Protocol::from_wire).collect()
}

pub(super) fn capabilities_to_text(capabilities: &PeerCapabilities) -> String {
    // Serialising three plain fields cannot fail; `to_string` only errs on maps with
    // non-string keys and on failing `Serialize` impls.
    serde_json::to_string(capabilities).expect("PeerCapabilities serialises to JSON")
}

pub(super) fn status_to_text(status: PeerStatus) -> &'static str {
    match status {
        PeerStatus::Unknown => "unknown",
        PeerStatus::Online => "online",
        PeerStatus::Offline => "offline",
        PeerStatus::Busy => "busy",
    }
}

fn status_from_text(text: &str) -> Option<PeerStatus> {
    [
        PeerStatus::Unknown,
        PeerStatus::Online,
        PeerStatus::Offline,
        PeerStatus::Busy,
    ]
    .into_iter()
    .find(|s| status_to_text(*s) == text)
}

pub(super) fn protocol_from_text(text: &str) -> Option<Protocol> {
    Protocol::from_wire(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_lists_round_trip_and_skip_unknown_names() {
        let all = Protocol::ALL.to_vec();
        assert_eq!(protocols_from_text(&protocols_to_text(&all)), all);
        assert_eq!(protocols_from_text(""), Vec::<Protocol>::new());
        assert_eq!(
            protocols_from_text("Quic,Rest"),
            vec![Protocol::Rest],
            "unknown names are skipped"
        );
    }

    #[test]
    fn statuses_round_trip() {
        for s in [
            PeerStatus::Unknown,
            PeerStatus::Online,
            PeerStatus::Offline,
            PeerStatus::Busy,
        ] {
            assert_eq!(status_from_text(status_to_text(s)), Some(s));
        }
        assert_eq!(status_from_text("asleep"), None);
    }
}
