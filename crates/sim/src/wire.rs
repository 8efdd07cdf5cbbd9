//! Estimated sizes on the wire of what the core does not size itself.
//!
//! Gossip messages and the pulls on a stream use the core's sizes
//! ([`GossipMessage::approx_wire_len`], [`stream_message_len`]): the protobuf encoding as the
//! daemon writes it on a peer's stream, checked against the daemon's real encoding by its wire
//! tests. Membership requests and answers (unary calls) are estimated here: protobuf encoding
//! of the fields of the `.proto` messages (DESIGN.md section 3), one tag and length byte per
//! field (two for long ones), varints at their typical size, strings as written (peer ids 40
//! characters, hashes 64 hex digits), plus [`FRAME`] bytes of message framing. HTTP/2 and TLS
//! overhead is not counted, on either side of the comparison.
//!
//! [`GossipMessage::approx_wire_len`]: sorcha_peer_core::gossip::GossipMessage::approx_wire_len

use sorcha_peer_core::gossip::{field_len, stream_message_len};
use sorcha_peer_core::membership::{Request, Response};
use sorcha_peer_core::model::{PeerAdvert, PeerId, TxId};

/// Framing per message: the same 8 bytes `approx_wire_len` uses.
pub const FRAME: usize = 8;

/// A string field: tag, length, bytes.
fn string(len: usize) -> usize {
    2 + len
}

/// Typical varint field: tag + 6 bytes (millisecond timestamps, sizes).
const VARINT_FIELD: usize = 7;

/// `PeerHealthMetrics` with its eight fields filled (doubles are 9 bytes each).
const HEALTH_METRICS: usize = 2 + 3 * 9 + 5 * 4;

/// A `PeerInfo`: id, address, port, protocols, last seen, capabilities, seed flag.
pub fn advert_len(a: &PeerAdvert) -> usize {
    let protocols: usize = a
        .supported_protocols
        .iter()
        .map(|p| string(p.as_str().len()))
        .sum();
    string(a.peer_id.as_str().len())
        + string(a.address.len())
        + 4
        + protocols
        + VARINT_FIELD
        + (2 + 2 + 2 + 5)
        + 2
}

fn adverts_len(adverts: &[PeerAdvert]) -> usize {
    adverts.iter().map(|a| 3 + advert_len(a)).sum()
}

/// A membership request sent by `sender`.
pub fn request_len(request: &Request, sender: &PeerId) -> usize {
    let id = string(sender.as_str().len());
    FRAME
        + match request {
            Request::Register { advert } => 3 + advert_len(advert),
            Request::GetPeerList { .. } => id + 3,
            Request::ExchangePeers { adverts, .. } => id + adverts_len(adverts) + 3,
            Request::Ping => id,
            Request::Heartbeat { .. } => id + VARINT_FIELD + 4 + HEALTH_METRICS,
        }
}

/// The answer to a membership request, from `responder`.
pub fn response_len(response: &Response, responder: &PeerId) -> usize {
    let id = string(responder.as_str().len());
    FRAME
        + match response {
            Response::Registered { .. } => 2,
            Response::PeerList { peers } => adverts_len(peers) + 3,
            Response::Exchanged { peers } => adverts_len(peers) + 2,
            Response::Pong { .. } => id + VARINT_FIELD + 2,
            Response::Heartbeat { .. } => 2 + id + VARINT_FIELD + HEALTH_METRICS,
        }
}

/// A failed call still costs its error frame.
pub const ERROR_LEN: usize = FRAME + 16;

/// A pull as the daemon makes it from a peer of ours: a `GOSSIP_FETCH` on the stream with the
/// transaction's id as 16 raw bytes. The daemon batches the pulls of one round to a peer in
/// one message; each is counted here as its own message (an upper bound). Unary
/// `GetTransaction` (a hash as hex and the requester's id, ~116 bytes) is only for peers that
/// do not speak our gossip.
pub fn fetch_request_len() -> usize {
    stream_message_len(field_len(TxId::LEN))
}

/// `TransactionResponse` on the stream carrying `body_len` bytes: a found body without its
/// hash (the requester computes it) and `found` (2 bytes), a missing one (0) with the id asked
/// for as hex.
pub fn fetch_answer_len(body_len: usize) -> usize {
    if body_len > 0 {
        stream_message_len(field_len(body_len) + 2)
    } else {
        stream_message_len(field_len(2 * TxId::LEN))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sorcha_peer_core::model::{PeerCapabilities, Protocol, Timestamp};

    #[test]
    fn sizes_grow_with_content() {
        let id: PeerId = "a".repeat(40).parse().expect("valid id");
        let advert = PeerAdvert {
            peer_id: id.clone(),
            address: "10.0.1.2".into(),
            port: 5001,
            supported_protocols: vec![Protocol::Grpc],
            capabilities: PeerCapabilities {
                supports_streaming: true,
                supports_transaction_distribution: true,
                max_transaction_size: 1 << 20,
            },
            last_seen: Timestamp::from_millis(1),
            is_seed_node: false,
        };
        let one = advert_len(&advert);
        assert!((60..120).contains(&one), "a PeerInfo is ~80 bytes: {one}");
        let list = |n| Response::PeerList {
            peers: vec![advert.clone(); n],
        };
        assert_eq!(
            response_len(&list(10), &id) - response_len(&list(0), &id),
            10 * (one + 3)
        );
        assert!(
            request_len(&Request::Ping, &id)
                < request_len(&Request::Heartbeat { sequence: 1 }, &id)
        );
        // As the daemon's wire tests measure them (compact stream messages, gRPC prefix).
        assert_eq!(fetch_request_len(), 27, "a 16-byte id");
        assert_eq!(fetch_answer_len(250), 265);
        assert_eq!(
            fetch_answer_len(0),
            43,
            "not found: the id asked for, as 32 hex digits"
        );
    }
}
