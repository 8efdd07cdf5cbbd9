//! Bytes on the wire of what the simulator carries, by the daemon's own encoding
//! (`sorcha-peer-wire`): each message is built as the daemon builds it and its protobuf
//! encoding measured, plus gRPC's 5-byte prefix, as the daemon's bandwidth metrics count it.
//! HTTP/2 framing and TLS are not counted, on either side of the comparison.
//!
//! Timestamps on the wire are wall-clock milliseconds (6-byte varints today); simulated time
//! starts at 0, so every timestamp a message carries is moved to [`WALL_CLOCK_AT_START`]
//! first, or the simulator would count 3-5 bytes fewer per timestamp than the daemon sends.

use std::time::Duration;

use sorcha_peer_core::gossip::GossipMessage;
use sorcha_peer_core::membership::{Request, Response};
use sorcha_peer_core::model::{PeerId, Timestamp, TxId};
use sorcha_peer_wire::discovery::PeerInfo;
use sorcha_peer_wire::gossip::to_peer_message;
use sorcha_peer_wire::membership::{Answer, Call};
use sorcha_peer_wire::size;
use sorcha_peer_wire::transaction::{TransactionRequest, TransactionResponse};

/// What the wall clock reads at simulated time 0: 2025-11-24, any date of these years encodes
/// in as many bytes.
pub const WALL_CLOCK_AT_START: Duration = Duration::from_millis(1_764_000_000_000);

/// A refused call carries no message: its gRPC status and a short text travel in HTTP/2
/// trailers. Not a protobuf message, so the one size here that is an estimate.
pub const ERROR_LEN: usize = 24;

fn wall(t: Timestamp) -> Timestamp {
    t.saturating_add(WALL_CLOCK_AT_START)
}

/// Peers' `last_seen` on the wall clock (see the module doc).
fn on_wall_clock(infos: &mut [PeerInfo]) {
    for info in infos {
        info.last_seen = wall(Timestamp::from_millis(info.last_seen.unsigned_abs())).to_wire();
    }
}

/// A membership request sent by `sender` at `now`.
pub fn request_len(request: &Request, sender: &PeerId, now: Timestamp) -> usize {
    let mut call = Call::new(request, sender, wall(now));
    match &mut call {
        Call::Register(m) => on_wall_clock(m.peer_info.as_mut_slice()),
        Call::ExchangePeers(m) => on_wall_clock(&mut m.known_peers),
        Call::Ping(_) | Call::GetPeerList(_) | Call::Heartbeat(_) => {}
    }
    call.wire_len()
}

/// The answer to a membership request from `responder`, which knows `known` peers.
pub fn response_len(
    response: &Response,
    responder: &PeerId,
    known: usize,
    now: Timestamp,
) -> usize {
    let mut answer = Answer::new(response, responder, known, wall(now));
    match &mut answer {
        Answer::PeerList(m) => on_wall_clock(&mut m.peers),
        Answer::Exchanged(m) => on_wall_clock(&mut m.known_peers),
        Answer::Pong(_) | Answer::Registered(_) | Answer::Heartbeat(_) => {}
    }
    answer.wire_len()
}

/// A gossip message on a peer's stream (after the stream's first message).
pub fn gossip_len(message: &GossipMessage) -> usize {
    size::gossip_len(message)
}

/// A gossip message as a unary `SendMessage` (or its REST equivalent, counted alike) from
/// `from` to `to` at `now`: the whole envelope, which a stream's later messages leave out.
pub fn unary_gossip_len(
    message: &GossipMessage,
    from: &PeerId,
    to: &PeerId,
    now: Timestamp,
) -> usize {
    size::wire_len(&to_peer_message(message, from, Some(to), wall(now)))
}

/// A `GOSSIP_FETCH` of `ids` on the stream (16 raw bytes an id): the link machine batches
/// the pulls of one round to a peer in one message.
pub fn fetch_batch_len(ids: &[TxId]) -> usize {
    size::fetch_len(ids)
}

/// One pull of `id` as a unary `GetTransaction` by `requester`: the id as hex.
pub fn unary_fetch_request_len(id: TxId, requester: &PeerId) -> usize {
    size::wire_len(&TransactionRequest {
        transaction_hash: id.to_string(),
        requesting_peer_id: requester.to_string(),
        register_id: String::new(),
    })
}

/// The unary answer to a pull of `id`: the body with the id named, or not found.
pub fn unary_fetch_answer_len(id: TxId, body: Option<&[u8]>) -> usize {
    size::wire_len(&TransactionResponse {
        transaction_hash: id.to_string(),
        transaction_data: body.map(<[u8]>::to_vec).unwrap_or_default(),
        found: body.is_some(),
    })
}

/// The stream's answer to a pull of `id`: the body without its hash, or, when the answerer
/// lacks it (`None`), `found = false` with the id asked for.
pub fn fetch_answer_len(id: TxId, body: Option<&[u8]>) -> usize {
    size::fetch_answer_len(id, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sorcha_peer_core::model::{PeerAdvert, PeerCapabilities, Protocol};

    #[test]
    fn timestamps_count_as_the_wall_clock_writes_them() {
        let id: PeerId = "a".repeat(40).parse().expect("valid id");
        let advert = |last_seen| PeerAdvert {
            peer_id: id.clone(),
            address: "10.0.1.2".into(),
            port: 5001,
            supported_protocols: vec![Protocol::Grpc],
            capabilities: PeerCapabilities {
                supports_streaming: true,
                supports_transaction_distribution: true,
                max_transaction_size: 1 << 20,
            },
            last_seen,
            is_seed_node: false,
        };
        let register = |ms| Request::Register {
            advert: advert(Timestamp::from_millis(ms)),
        };
        let early = request_len(&register(1), &id, Timestamp::from_millis(1));
        let late = request_len(&register(100_000), &id, Timestamp::from_millis(100_000));
        assert_eq!(early, late, "6-byte varints from the first millisecond");
        let beat = Request::Heartbeat { sequence: 1 };
        let at = |ms| request_len(&beat, &id, Timestamp::from_millis(ms));
        assert_eq!(at(0), at(3_600_000));
        let list = |n| Response::PeerList {
            peers: vec![advert(Timestamp::from_millis(5)); n],
        };
        let now = Timestamp::from_millis(9);
        let one = response_len(&list(1), &id, 8, now) - response_len(&list(0), &id, 8, now);
        assert!((60..100).contains(&one), "a PeerInfo is ~80 bytes: {one}");
    }
}
