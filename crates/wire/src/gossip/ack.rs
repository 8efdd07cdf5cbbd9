//! Acknowledged pushes: a `GOSSIP_PUSH` may ask its receiver to confirm that it took the
//! transaction (`GossipPush.ack`), which the sender needs for a transaction waiting in its
//! offline queue; the receiver answers on the stream with a `GOSSIP_ACK` of ids. Only pushes of
//! queued transactions ask, so an ordinary push costs no extra byte.

use prost::Message;
use sorcha_peer_core::model::TxId;

use super::{TxName, WireError, entry_from_proto, field, raw_name};
use crate::communication::{self as pb, GossipAck, GossipPush, MessageType, PeerMessage};

/// What a receiver reads of a `GOSSIP_PUSH` to know whether to acknowledge it: its entry and
/// the flag. The body (field 2) is skipped, not copied.
#[derive(Clone, PartialEq, prost::Message)]
struct PushProbe {
    #[prost(message, optional, tag = "1")]
    entry: Option<pb::AnnounceEntry>,
    #[prost(bool, tag = "3")]
    ack: bool,
}

/// Asks the receiver of `message`, a `GOSSIP_PUSH`, to acknowledge it; any other message is
/// left as it is. Re-encodes the payload: only pushes of queued transactions pay for it.
pub fn ask_ack(message: &mut PeerMessage) {
    if message.message_type != MessageType::GossipPush as i32 {
        return;
    }
    if let Ok(mut push) = GossipPush::decode(message.payload.as_slice()) {
        push.ack = true;
        message.payload = push.encode_to_vec();
    }
}

/// The id of the transaction `message` pushes, if it is a `GOSSIP_PUSH` asking to be
/// acknowledged (a malformed one is refused later, where it is taken).
pub fn ack_wanted(message: &PeerMessage) -> Option<TxId> {
    if message.message_type != MessageType::GossipPush as i32 {
        return None;
    }
    let probe = PushProbe::decode(message.payload.as_slice()).ok()?;
    if !probe.ack {
        return None;
    }
    entry_from_proto(probe.entry.as_ref()?).ok().map(|e| e.id)
}

/// The `GOSSIP_ACK` of `ids`, as a stream's answerer sends it: no envelope (the opener knows
/// whom it opened the stream to).
pub fn to_ack_message(ids: &[TxId]) -> PeerMessage {
    let ack = GossipAck {
        hashes: ids.iter().map(|id| id.as_bytes().to_vec()).collect(),
    };
    PeerMessage {
        message_type: MessageType::GossipAck.into(),
        payload: ack.encode_to_vec(),
        ..Default::default()
    }
}

/// The ids a `GOSSIP_ACK` acknowledges.
pub fn from_ack_message(message: &PeerMessage) -> Result<Vec<TxId>, WireError> {
    let ack = GossipAck::decode(message.payload.as_slice()).map_err(|e| WireError::Decode {
        kind: "GOSSIP_ACK",
        reason: e.to_string(),
    })?;
    ack.hashes
        .iter()
        .map(|raw| match raw_name(raw) {
            Ok(name) => Ok(TxName::id(&name)),
            Err(reason) => Err(field("hashes", reason)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use sorcha_peer_core::gossip::{AnnounceEntry, GossipMessage};
    use sorcha_peer_core::model::TxHash;

    use super::*;
    use crate::gossip::to_stream_message;

    fn push(body: &[u8]) -> (TxId, PeerMessage) {
        let hash = TxHash::of(body);
        let entry = AnnounceEntry {
            id: hash.id(),
            hash: Some(hash),
            size: body.len() as u64,
            register_id: None,
            hops: 1,
        };
        let message = GossipMessage::Push {
            entry,
            body: body.to_vec(),
        };
        (hash.id(), to_stream_message(&message))
    }

    #[test]
    fn only_a_push_that_asks_is_acknowledged_and_the_ack_names_its_id() {
        let (id, mut wire) = push(b"queued transaction");
        assert_eq!(ack_wanted(&wire), None, "an ordinary push does not ask");
        let plain = wire.payload.len();
        ask_ack(&mut wire);
        assert_eq!(wire.payload.len(), plain + 2, "one bool field more");
        assert_eq!(ack_wanted(&wire), Some(id));
        assert!(matches!(
            super::super::from_peer_message(&wire),
            Ok(GossipMessage::Push { .. })
        ));
        let ack = to_ack_message(&[id]);
        assert_eq!(from_ack_message(&ack), Ok(vec![id]));
        let mut other = to_ack_message(&[id]);
        ask_ack(&mut other);
        assert_eq!(other, ack, "only pushes are changed");
    }
}
