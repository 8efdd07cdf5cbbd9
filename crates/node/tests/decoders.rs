//! Whatever bytes a peer sends, every decoder on its way in answers with a value or an error:
//! never a panic. Random bytes go to the protobuf decoders of every message a peer can send, to
//! the gossip payload decoders, to the conversions into the core's types, and to the REST
//! fallback's JSON decoders.

use proptest::prelude::*;
use prost::Message;
use sorcha_peer::wire::proto::communication::{GossipFetch, MessageType, PeerMessage};
use sorcha_peer::wire::proto::discovery::{
    PeerExchangeRequest, PeerInfo, PeerListRequest, PingRequest, RegisterPeerRequest,
};
use sorcha_peer::wire::proto::heartbeat::PeerHeartbeatRequest;
use sorcha_peer::wire::proto::transaction::{
    TransactionNotification, TransactionRequest, TransactionResponse,
};
use sorcha_peer::wire::{from_notification, from_peer_message};
use sorcha_peer_wire::peers::advert_from_proto;

/// Every message type a peer can name, and a few it cannot.
const TYPES: std::ops::RangeInclusive<i32> = -1..=13;

/// Decodes `bytes` as every protobuf message a peer can send us, and converts what decodes.
fn decode_everything(bytes: &[u8]) {
    if let Ok(info) = PeerInfo::decode(bytes) {
        let _ = advert_from_proto(&info, 1 << 20);
    }
    if let Ok(request) = RegisterPeerRequest::decode(bytes)
        && let Some(info) = &request.peer_info
    {
        let _ = advert_from_proto(info, 1 << 20);
    }
    if let Ok(request) = PeerExchangeRequest::decode(bytes) {
        for info in &request.known_peers {
            let _ = advert_from_proto(info, 1 << 20);
        }
    }
    if let Ok(n) = TransactionNotification::decode(bytes) {
        let _ = from_notification(&n);
    }
    if let Ok(fetch) = GossipFetch::decode(bytes) {
        for hash in &fetch.hashes {
            let _ = sorcha_peer::wire::raw_name(hash);
        }
    }
    if let Ok(answer) = TransactionResponse::decode(bytes) {
        let _ = answer
            .transaction_hash
            .parse::<sorcha_peer_core::model::TxId>();
    }
    let _ = PeerListRequest::decode(bytes);
    let _ = PingRequest::decode(bytes);
    let _ = PeerHeartbeatRequest::decode(bytes);
    let _ = TransactionRequest::decode(bytes);
    if let Ok(message) = PeerMessage::decode(bytes) {
        let _ = from_peer_message(&message);
    }
    for kind in TYPES {
        let message = PeerMessage {
            message_type: kind,
            payload: bytes.to_vec(),
            ..Default::default()
        };
        let _ = from_peer_message(&message);
    }
}

fn decode_json(bytes: &[u8]) {
    let _ = serde_json::from_slice::<RegisterPeerRequest>(bytes);
    let _ = serde_json::from_slice::<PeerExchangeRequest>(bytes);
    let _ = serde_json::from_slice::<PeerHeartbeatRequest>(bytes);
    let _ = serde_json::from_slice::<TransactionNotification>(bytes);
    if let Ok(message) = serde_json::from_slice::<PeerMessage>(bytes) {
        let _ = from_peer_message(&message);
    }
}

/// A valid gossip announcement, to mutate: random bytes rarely get past the first tag.
fn valid_announcement() -> Vec<u8> {
    use sorcha_peer::wire::proto::communication::{AnnounceEntry, GossipAnnounce};
    GossipAnnounce {
        entries: vec![
            AnnounceEntry {
                transaction_hash: "ab".repeat(32),
                transaction_size: 250,
                register_id: "register".into(),
                hop_count: 2,
                hash: Vec::new(),
            },
            AnnounceEntry {
                transaction_hash: String::new(),
                transaction_size: 250,
                register_id: String::new(),
                hop_count: 1,
                hash: vec![0xab; 32],
            },
        ],
    }
    .encode_to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic_a_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_everything(&bytes);
        decode_json(&bytes);
    }

    #[test]
    fn mutated_valid_messages_never_panic(
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<usize>(),
    ) {
        let mut bytes = valid_announcement();
        for (at, value) in flips {
            let i = at % bytes.len();
            bytes[i] = value;
        }
        bytes.truncate(cut % (bytes.len() + 1));
        decode_everything(&bytes);
        let message = PeerMessage {
            message_type: MessageType::GossipAnnounce.into(),
            payload: bytes,
            ..Default::default()
        };
        let _ = from_peer_message(&message);
    }

    #[test]
    fn json_that_looks_right_but_is_not_never_panics(
        port in any::<i64>(),
        last_seen in any::<i64>(),
        id in "[ -~]{0,200}",
        address in "[ -~]{0,300}",
    ) {
        let json = format!(
            r#"{{"peerInfo": {{"peerId": {id:?}, "address": {address:?}, "port": {port}, "lastSeen": {last_seen}}}}}"#
        );
        decode_json(json.as_bytes());
        if let Ok(request) = serde_json::from_str::<RegisterPeerRequest>(&json)
            && let Some(info) = &request.peer_info
        {
            let _ = advert_from_proto(info, 1 << 20);
        }
    }
}
