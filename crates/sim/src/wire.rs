//! Bytes on the wire of what the simulator carries, by the daemon's own encoding
//! (`sorcha-peer-wire`): each message is built as the daemon builds it and its protobuf
//! encoding measured, plus gRPC's 5-byte prefix, as the daemon's bandwidth metrics count it.
//! What gRPC's transport adds below the messages (HTTP/2 frames, headers, TCP/IP) is
//! estimated apart, per message, by [`framing_len`]; TLS is not counted.
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

/// How a message travels, for [`framing_len`]: on an open stream (DATA frames only), or as
/// the request or the answer of a unary call (which add their header blocks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carriage {
    Stream,
    CallRequest,
    CallAnswer,
}

/// An HTTP/2 frame's header (RFC 9113 4.1): every DATA and HEADERS frame has one.
pub const HTTP2_FRAME_HEADER: usize = 9;
/// HTTP/2's default largest frame payload (SETTINGS_MAX_FRAME_SIZE); larger messages split.
pub const HTTP2_MAX_FRAME: usize = 16_384;
/// IPv4 and TCP headers without options, per packet (Linux adds a 12-byte timestamp option,
/// not counted: the estimate is the low end).
pub const TCP_IP_HEADERS: usize = 40;
/// Payload per TCP segment on a 1,500-byte MTU.
pub const MSS: usize = 1_460;
/// A unary call's request header block (HPACK, `:path`, `content-type`, `te`, ...) once the
/// connection's dynamic table holds the repeated fields: an estimate (the first call on a
/// connection sends ~150 bytes).
pub const CALL_REQUEST_HEADERS: usize = 20;
/// A unary answer's header block (`:status`, `content-type`) plus its trailers
/// (`grpc-status`), each in its own HEADERS frame: an estimate, as above.
pub const CALL_ANSWER_HEADERS: usize = 5 + HTTP2_FRAME_HEADER + 5;

/// Bytes the transport adds to a `message`-byte gRPC message (its protobuf and 5-byte
/// prefix, as counted everywhere else): HTTP/2 frame headers, a call's header blocks, and
/// TCP/IP headers for the packets it fills. Each message is taken to go in packets of its
/// own: under load the kernel packs several in one (fewer headers), while pure ACKs, which
/// this leaves out, add some back.
pub fn framing_len(message: usize, carriage: Carriage) -> usize {
    let data_frames = message.div_ceil(HTTP2_MAX_FRAME).max(1);
    let headers = match carriage {
        Carriage::Stream => 0,
        Carriage::CallRequest => HTTP2_FRAME_HEADER + CALL_REQUEST_HEADERS,
        Carriage::CallAnswer => HTTP2_FRAME_HEADER + CALL_ANSWER_HEADERS,
    };
    let http2 = data_frames * HTTP2_FRAME_HEADER + headers;
    let packets = (message + http2).div_ceil(MSS);
    http2 + packets * TCP_IP_HEADERS
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

    #[test]
    fn framing_is_frame_headers_call_headers_and_a_packet_header_each() {
        // A 100-byte message on a stream: one DATA frame, one packet.
        assert_eq!(framing_len(100, Carriage::Stream), 9 + 40);
        // As a call: its HEADERS frame and block too.
        assert_eq!(framing_len(100, Carriage::CallRequest), 9 + 9 + 20 + 40);
        assert_eq!(framing_len(100, Carriage::CallAnswer), 9 + 9 + 19 + 40);
        // 20,000 bytes: two DATA frames, 14 packets.
        assert_eq!(framing_len(20_000, Carriage::Stream), 2 * 9 + 14 * 40);
        // An empty answer (a refusal's trailers) still takes a packet.
        assert_eq!(framing_len(0, Carriage::CallAnswer), 9 + 9 + 19 + 40);
    }
}
