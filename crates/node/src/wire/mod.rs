//! The wire as the daemon speaks it. The contract itself (the messages, their conversions to
//! and from the core's types, what each costs in bytes) is `sorcha-peer-wire`, shared with the
//! simulator so that both count the same bytes; its gossip conversions are re-exported here.
//! This module adds what only the daemon needs:
//!
//! - [`proto`]: the tonic clients and servers of the four services, generated against the wire
//!   crate's messages (one Rust type per message);
//! - [`message_kind`] and [`wire_len`]: the `kind` label and the byte count of the bandwidth
//!   metrics.

pub mod proto;

pub use sorcha_peer_wire::gossip::{
    MAX_FETCH_BATCH, TxName, WireError, ack_wanted, ask_ack, compact, from_ack_message,
    from_notification, from_peer_message, is_extension, raw_name, to_ack_message, to_fetch_answer,
    to_fetch_message, to_notification, to_peer_message,
};

use proto::communication::MessageType;

/// The `kind` label of a `PeerMessage` of `message_type` in the bandwidth metrics: the same
/// word whichever way it goes (a received `GOSSIP_ANNOUNCE` and a sent announcement are both
/// `announce`), so what one node sends and its peer receives add up under one label.
pub fn message_kind(message_type: i32) -> &'static str {
    match MessageType::try_from(message_type) {
        Ok(MessageType::GossipAnnounce) => "announce",
        Ok(MessageType::GossipPush) => "push",
        Ok(MessageType::GossipDigest) => "digest",
        Ok(MessageType::GossipDigestReply) => "digest_reply",
        Ok(MessageType::GossipPrune) => "prune",
        Ok(MessageType::GossipGraft) => "graft",
        Ok(MessageType::GossipAck) => "ack",
        Ok(MessageType::GossipFetch | MessageType::TransactionRequest) => "fetch",
        Ok(MessageType::TransactionResponse) => "body",
        Ok(MessageType::TransactionNotification) => "notify",
        Ok(MessageType::Heartbeat) => "heartbeat",
        Ok(MessageType::PeerStatusUpdate | MessageType::PeerLeaving) => "status",
        Ok(MessageType::BlsKeyShareDistribution) => "bls_key_share",
        Ok(MessageType::BlsPartialSignature) => "bls_partial_signature",
        Ok(MessageType::Unknown) | Err(_) => "unknown",
    }
}

/// Bytes one protobuf message takes in a gRPC call or stream: its encoding and gRPC's 5-byte
/// prefix ([`sorcha_peer_wire::wire_len`], as the simulator counts them), for the metrics'
/// counters.
pub fn wire_len(message: &impl prost::Message) -> u64 {
    sorcha_peer_wire::wire_len(message) as u64
}
