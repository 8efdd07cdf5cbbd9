//! Gossip messages on the wire: `GossipMessage` of the core to and from `PeerMessage`s of
//! `sorcha.peer.communication`, pulls on a stream and their answers, and Sorcha's
//! `TransactionNotification` to an announcement. Everything from a peer is validated here; an
//! invalid message is refused whole, with the field at fault named. `ack.rs`: a push that
//! asks its receiver to acknowledge it (a queued transaction's), and the `GOSSIP_ACK` answer.

mod ack;

use std::fmt;
use std::time::Duration;

use prost::Message;
use sorcha_peer_core::gossip::{
    AnnounceEntry, GossipMessage, HashPrefix, MAX_REGISTER_ID_LEN, PrefixRange,
};
use sorcha_peer_core::model::{PeerId, Timestamp, TxHash, TxId};

use crate::communication::{
    self as pb, GossipAnnounce, GossipDigest, GossipDigestReply, GossipFetch, GossipGraft,
    GossipPrune, GossipPush, MessageType, PeerMessage,
};
use crate::transaction::{TransactionNotification, TransactionResponse};

pub use ack::{ack_wanted, ask_ack, from_ack_message, to_ack_message};

/// Why a gossip message from a peer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The payload did not decode as the message its type names.
    #[error("payload of {kind} does not decode: {reason}")]
    Decode { kind: &'static str, reason: String },
    /// The message type is not one gossip carries.
    #[error("message type {0} is not a gossip message")]
    NotGossip(i32),
    /// A field is invalid.
    #[error("{field}: {reason}")]
    Field { field: &'static str, reason: String },
}

fn field(field: &'static str, reason: impl ToString) -> WireError {
    WireError::Field {
        field,
        reason: reason.to_string(),
    }
}

/// Transactions asked for in one `GOSSIP_FETCH`, sent and read: a burst's worth of 256-byte
/// bodies (~70 KB of answers), small enough that one batch never holds a stream up for long.
pub const MAX_FETCH_BATCH: usize = 256;

/// Encodes `message` as the `PeerMessage` from `from` to `to`, with its whole envelope (a
/// unary `SendMessage`, or a stream's first message).
pub fn to_peer_message(
    message: &GossipMessage,
    from: &PeerId,
    to: Option<&PeerId>,
    now: Timestamp,
) -> PeerMessage {
    PeerMessage {
        sender_peer_id: from.to_string(),
        recipient_peer_id: to.map(ToString::to_string).unwrap_or_default(),
        timestamp: now.to_wire(),
        ..to_stream_message(message)
    }
}

/// Encodes `message` as a stream carries it after its first message: type and payload, the
/// envelope left empty ([`compact`]).
pub fn to_stream_message(message: &GossipMessage) -> PeerMessage {
    let (kind, payload) = match message {
        GossipMessage::Announce { entries } => (
            MessageType::GossipAnnounce,
            GossipAnnounce {
                entries: entries.iter().map(entry_to_proto).collect(),
            }
            .encode_to_vec(),
        ),
        GossipMessage::Push { entry, body } => (
            MessageType::GossipPush,
            GossipPush {
                entry: Some(entry_to_proto(entry)),
                transaction_data: body.clone(),
                ack: false,
            }
            .encode_to_vec(),
        ),
        GossipMessage::Digest {
            range,
            prefixes,
            recent,
        } => (MessageType::GossipDigest, digest(range, prefixes, *recent)),
        GossipMessage::DigestReply { missing, wanted } => (
            MessageType::GossipDigestReply,
            GossipDigestReply {
                missing: missing.iter().map(entry_to_proto).collect(),
                wanted: wanted.clone(),
            }
            .encode_to_vec(),
        ),
        GossipMessage::Prune => (MessageType::GossipPrune, GossipPrune {}.encode_to_vec()),
        GossipMessage::Graft => (MessageType::GossipGraft, GossipGraft {}.encode_to_vec()),
    };
    PeerMessage {
        message_type: kind.into(),
        payload,
        ..Default::default()
    }
}

fn digest(range: &PrefixRange, prefixes: &[HashPrefix], recent: Option<Duration>) -> Vec<u8> {
    GossipDigest {
        prefixes: prefixes.to_vec(),
        range_first: range.first,
        range_last: Some(range.last),
        recent_ms: recent.map(|d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX)),
    }
    .encode_to_vec()
}

/// A `GOSSIP_FETCH` of transactions by id (16 raw bytes each), from `from` to `to`, with its
/// whole envelope (the stream's sender [`compact`]s it unless it is the stream's first
/// message).
pub fn to_fetch_message(ids: &[TxId], from: &PeerId, to: &PeerId, now: Timestamp) -> PeerMessage {
    PeerMessage {
        sender_peer_id: from.to_string(),
        recipient_peer_id: to.to_string(),
        timestamp: now.to_wire(),
        ..to_stream_fetch(ids)
    }
}

/// A `GOSSIP_FETCH` as a stream carries it after its first message.
pub fn to_stream_fetch(ids: &[TxId]) -> PeerMessage {
    let fetch = GossipFetch {
        hashes: ids.iter().map(|id| id.as_bytes().to_vec()).collect(),
    };
    PeerMessage {
        message_type: MessageType::GossipFetch.into(),
        payload: fetch.encode_to_vec(),
        ..Default::default()
    }
}

/// The `TRANSACTION_RESPONSE` that answers one id of a `GOSSIP_FETCH` on the stream. A found
/// body goes without its hash, which the requester computes (it would be 66 of ~320 bytes); a
/// missing one names the id asked for.
/// No sender, recipient or timestamp: the requester opened the stream, so knows who answers,
/// and a Sorcha peer never sends `GOSSIP_FETCH`, so never gets such an answer.
pub fn to_fetch_answer(mut answer: TransactionResponse) -> PeerMessage {
    if answer.found {
        answer.transaction_hash.clear();
    }
    PeerMessage {
        message_type: MessageType::TransactionResponse.into(),
        payload: answer.encode_to_vec(),
        ..Default::default()
    }
}

/// Whether `message_type` is one of our extensions (`GOSSIP_*`), which Sorcha's peers never
/// send and ignore.
pub fn is_extension(message_type: i32) -> bool {
    matches!(
        MessageType::try_from(message_type),
        Ok(MessageType::GossipAnnounce
            | MessageType::GossipPush
            | MessageType::GossipDigest
            | MessageType::GossipDigestReply
            | MessageType::GossipFetch
            | MessageType::GossipPrune
            | MessageType::GossipGraft
            | MessageType::GossipAck)
    )
}

/// `message` as it travels after the first message of a stream: an extension message leaves
/// sender, recipient and timestamp empty, so protobuf omits them (~90 of the ~140 bytes of a
/// one-entry announcement). The stream's first message named its sender, which the answerer
/// binds to the stream, and the opener knows whom it opened the stream to. Messages of
/// Sorcha's own types keep their whole envelope: Sorcha's peers read it.
pub fn compact(mut message: PeerMessage) -> PeerMessage {
    if is_extension(message.message_type) {
        message.sender_peer_id.clear();
        message.recipient_peer_id.clear();
        message.timestamp = 0;
    }
    message
}

/// Decodes the gossip message a `PeerMessage` carries.
pub fn from_peer_message(message: &PeerMessage) -> Result<GossipMessage, WireError> {
    let decode_error = |kind| {
        move |e: prost::DecodeError| WireError::Decode {
            kind,
            reason: e.to_string(),
        }
    };
    let payload = message.payload.as_slice();
    match MessageType::try_from(message.message_type) {
        Ok(MessageType::GossipAnnounce) => {
            let m = GossipAnnounce::decode(payload).map_err(decode_error("GOSSIP_ANNOUNCE"))?;
            Ok(GossipMessage::Announce {
                entries: entries_from_proto(&m.entries)?,
            })
        }
        Ok(MessageType::GossipPush) => {
            let m = GossipPush::decode(payload).map_err(decode_error("GOSSIP_PUSH"))?;
            let entry = m.entry.as_ref().ok_or_else(|| field("entry", "missing"))?;
            Ok(GossipMessage::Push {
                entry: entry_from_proto(entry)?,
                body: m.transaction_data,
            })
        }
        Ok(MessageType::GossipDigest) => {
            let m = GossipDigest::decode(payload).map_err(decode_error("GOSSIP_DIGEST"))?;
            let range = PrefixRange {
                first: m.range_first,
                last: m.range_last.unwrap_or(HashPrefix::MAX),
            };
            Ok(GossipMessage::Digest {
                range,
                prefixes: m.prefixes,
                recent: m.recent_ms.map(|ms| Duration::from_millis(ms.into())),
            })
        }
        Ok(MessageType::GossipDigestReply) => {
            let m =
                GossipDigestReply::decode(payload).map_err(decode_error("GOSSIP_DIGEST_REPLY"))?;
            Ok(GossipMessage::DigestReply {
                missing: entries_from_proto(&m.missing)?,
                wanted: m.wanted,
            })
        }
        Ok(MessageType::GossipPrune) => {
            GossipPrune::decode(payload).map_err(decode_error("GOSSIP_PRUNE"))?;
            Ok(GossipMessage::Prune)
        }
        Ok(MessageType::GossipGraft) => {
            GossipGraft::decode(payload).map_err(decode_error("GOSSIP_GRAFT"))?;
            Ok(GossipMessage::Graft)
        }
        _ => Err(WireError::NotGossip(message.message_type)),
    }
}

/// A Sorcha peer's notification, as the announcement it is, with its `sender_peer_id`: the
/// transaction's origin as C# fills it (the caller may be another peer).
pub fn from_notification(
    n: &TransactionNotification,
) -> Result<(PeerId, AnnounceEntry), WireError> {
    let sender = n
        .sender_peer_id
        .parse()
        .map_err(|e| field("sender_peer_id", e))?;
    let hash = n
        .transaction_hash
        .parse()
        .map_err(|e| field("transaction_hash", e))?;
    let named = TxName::Hash(hash);
    let entry = entry_from_parts(named, n.transaction_size, &n.register_id, n.hop_count)?;
    Ok((sender, entry))
}

/// The notification that tells a Sorcha peer of `entry`, naming `from` (the origin) as its
/// sender and `now` in seconds, as C# reads it; `None` for an entry without its whole hash,
/// which Sorcha's contract requires (the core names it in every entry it sends).
pub fn to_notification(
    entry: &AnnounceEntry,
    from: &PeerId,
    now: Timestamp,
) -> Option<TransactionNotification> {
    Some(TransactionNotification {
        transaction_hash: entry.hash?.to_string(),
        sender_peer_id: from.to_string(),
        // Seconds: C# reads this field with FromUnixTimeSeconds.
        timestamp: now.to_wire_secs(),
        transaction_size: i64::try_from(entry.size).unwrap_or(i64::MAX),
        register_id: entry.register_id.clone().unwrap_or_default(),
        hop_count: entry.hops,
    })
}

/// An entry as our peers send it: by id alone.
fn entry_to_proto(entry: &AnnounceEntry) -> pb::AnnounceEntry {
    pb::AnnounceEntry {
        transaction_hash: String::new(),
        transaction_size: i64::try_from(entry.size).unwrap_or(i64::MAX),
        register_id: entry.register_id.clone().unwrap_or_default(),
        hop_count: entry.hops,
        hash: entry.id.as_bytes().to_vec(),
    }
}

fn entries_from_proto(entries: &[pb::AnnounceEntry]) -> Result<Vec<AnnounceEntry>, WireError> {
    // The core caps entries per message; nothing more is decoded than arrived (the transport
    // already bounded the message's size).
    entries.iter().map(entry_from_proto).collect()
}

fn entry_from_proto(e: &pb::AnnounceEntry) -> Result<AnnounceEntry, WireError> {
    let named = if e.hash.is_empty() {
        let hash: TxHash = e
            .transaction_hash
            .parse()
            .map_err(|e| field("transaction_hash", e))?;
        TxName::Hash(hash)
    } else {
        raw_name(&e.hash).map_err(|reason| field("hash", reason))?
    };
    entry_from_parts(named, e.transaction_size, &e.register_id, e.hop_count)
}

/// A transaction as a message names it: by id (what our peers send), or by whole hash (what
/// Sorcha's peers, and our earlier versions, send).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxName {
    Id(TxId),
    Hash(TxHash),
}

impl TxName {
    /// The whole hash if known, else the id.
    pub fn new(id: TxId, hash: Option<TxHash>) -> Self {
        hash.map_or(TxName::Id(id), TxName::Hash)
    }

    pub fn id(&self) -> TxId {
        match self {
            TxName::Id(id) => *id,
            TxName::Hash(hash) => hash.id(),
        }
    }

    pub fn hash(&self) -> Option<TxHash> {
        match self {
            TxName::Id(_) => None,
            TxName::Hash(hash) => Some(*hash),
        }
    }
}

/// As hex: 64 digits for a hash, 32 for an id (what `GetTransaction` and the REST path take).
impl fmt::Display for TxName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TxName::Id(id) => id.fmt(f),
            TxName::Hash(hash) => hash.fmt(f),
        }
    }
}

/// A transaction named by its 16-byte id or its 32-byte hash.
pub fn raw_name(bytes: &[u8]) -> Result<TxName, String> {
    if let Ok(raw) = <[u8; TxId::LEN]>::try_from(bytes) {
        return Ok(TxName::Id(TxId::from_bytes(raw)));
    }
    let raw: [u8; 32] = bytes.try_into().map_err(|_| {
        format!(
            "{} bytes, expected {} (an id) or 32 (a hash)",
            bytes.len(),
            TxId::LEN
        )
    })?;
    Ok(TxName::Hash(TxHash::from_bytes(raw)))
}

fn entry_from_parts(
    named: TxName,
    size: i64,
    register_id: &str,
    hops: u32,
) -> Result<AnnounceEntry, WireError> {
    let size = u64::try_from(size)
        .map_err(|_| field("transaction_size", format!("{size} is negative")))?;
    if register_id.len() > MAX_REGISTER_ID_LEN {
        let reason = format!(
            "{} characters, at most {MAX_REGISTER_ID_LEN}",
            register_id.len()
        );
        return Err(field("register_id", reason));
    }
    Ok(AnnounceEntry {
        id: named.id(),
        hash: named.hash(),
        size,
        register_id: Some(register_id.to_owned()).filter(|r| !r.is_empty()),
        hops,
    })
}

#[cfg(test)]
mod tests;
