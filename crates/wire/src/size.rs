//! What a message costs on the wire: its protobuf encoding (`encoded_len`, so never a model
//! kept beside the encoder) plus gRPC's 5-byte length prefix. HTTP/2 framing and TLS are not
//! counted. The daemon's bandwidth metrics count every message so, and the simulator sizes its
//! traffic with the same functions, so the two compare.

use prost::Message;
use sorcha_peer_core::gossip::GossipMessage;
use sorcha_peer_core::model::TxId;

use crate::gossip::{to_fetch_answer, to_stream_fetch, to_stream_message};
use crate::transaction::TransactionResponse;

/// gRPC's length-prefixed message: a compression flag byte and a 4-byte length.
pub const GRPC_PREFIX: usize = 5;

/// Bytes of `message` as gRPC carries it: its protobuf encoding and the 5-byte prefix.
pub fn wire_len(message: &impl Message) -> usize {
    message.encoded_len() + GRPC_PREFIX
}

/// Bytes of a gossip message on a peer's stream after its first message: the compact
/// `PeerMessage` (type and payload; the stream named its sender once).
pub fn gossip_len(message: &GossipMessage) -> usize {
    wire_len(&to_stream_message(message))
}

/// Bytes of a `GOSSIP_FETCH` of `ids` on a stream after its first message.
pub fn fetch_len(ids: &[TxId]) -> usize {
    wire_len(&to_stream_fetch(ids))
}

/// Bytes of the stream's answer to a pull of `id`: the body without its hash, or, when the
/// answerer lacks it (`None`), `found = false` with the id asked for as hex.
pub fn fetch_answer_len(id: TxId, body: Option<&[u8]>) -> usize {
    let answer = TransactionResponse {
        transaction_hash: id.to_string(),
        transaction_data: body.map(<[u8]>::to_vec).unwrap_or_default(),
        found: body.is_some(),
    };
    wire_len(&to_fetch_answer(answer))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sorcha_peer_core::gossip::{AnnounceEntry, PrefixRange};
    use sorcha_peer_core::membership::{HeartbeatOutcome, Request, Response};
    use sorcha_peer_core::model::{
        PeerAdvert, PeerCapabilities, PeerId, Protocol, Timestamp, TxHash,
    };

    use super::*;
    use crate::membership::{Answer, Call};

    fn entry(size: u64, hops: u32) -> AnnounceEntry {
        let hash = TxHash::of(b"a typical transaction");
        AnnounceEntry {
            id: hash.id(),
            hash: Some(hash),
            size,
            register_id: None,
            hops,
        }
    }

    /// The bytes of typical messages, as the simulator's figures count them (README): a change
    /// of encoding shows here first. `cargo test -- --nocapture` prints them.
    #[test]
    fn typical_messages_cost() {
        let announce = GossipMessage::Announce {
            entries: vec![entry(250, 3)],
        };
        let push = GossipMessage::Push {
            entry: entry(250, 1),
            body: vec![7; 250],
        };
        let sweep = GossipMessage::Digest {
            range: PrefixRange::FULL,
            prefixes: (1..=100).map(|i| i * (u64::MAX / 101)).collect(),
            recent: None,
        };
        let recent = GossipMessage::Digest {
            range: PrefixRange::starting_at(1 << 60),
            prefixes: vec![1 << 61; 100],
            recent: Some(Duration::from_secs(30)),
        };
        let id = TxHash::of(b"a typical transaction").id();
        let sizes = [
            ("announce of 1", gossip_len(&announce), 34),
            ("push of 250 B", gossip_len(&push), 288),
            ("sweep digest of 100", gossip_len(&sweep), 822),
            ("recent digest of 100", gossip_len(&recent), 835),
            ("prune", gossip_len(&GossipMessage::Prune), 7),
            ("graft", gossip_len(&GossipMessage::Graft), 7),
            ("fetch of 1 id", fetch_len(&[id]), 27),
            (
                "answer of 250 B",
                fetch_answer_len(id, Some(&[7; 250])),
                265,
            ),
            ("answer not found", fetch_answer_len(id, None), 43),
        ];
        for (name, bytes, _) in sizes {
            println!("{name}: {bytes} bytes");
        }
        for (name, bytes, want) in sizes {
            assert_eq!(bytes, want, "{name}");
        }
    }

    #[test]
    fn membership_calls_grow_with_their_adverts() {
        let me: PeerId = "a".repeat(40).parse().unwrap();
        let now = Timestamp::from_millis(1_764_000_000_000);
        let advert = PeerAdvert {
            peer_id: me.clone(),
            address: "10.0.1.2".into(),
            port: 5001,
            supported_protocols: vec![Protocol::Grpc],
            capabilities: PeerCapabilities {
                supports_streaming: true,
                supports_transaction_distribution: true,
                max_transaction_size: 1 << 20,
            },
            last_seen: now,
            is_seed_node: false,
        };
        let exchange = |n| {
            let request = Request::ExchangePeers {
                adverts: vec![advert.clone(); n],
                max: 8,
            };
            Call::new(&request, &me, now).wire_len()
        };
        let one = exchange(1) - exchange(0);
        assert!((60..100).contains(&one), "a PeerInfo is ~80 bytes: {one}");
        assert_eq!(exchange(10) - exchange(0), 10 * one);
        let ping = Call::new(&Request::Ping, &me, now).wire_len();
        assert_eq!(ping, 5 + 2 + 40, "the gRPC prefix and our id");
        // Id, a millisecond timestamp (6-byte varint) and a small sequence number: no health
        // metrics, which the daemon does not send.
        let beat = Call::new(&Request::Heartbeat { sequence: 1 }, &me, now).wire_len();
        assert_eq!(beat, 56);
        let response = Response::Heartbeat {
            outcome: HeartbeatOutcome::Accepted,
        };
        assert_eq!(Answer::new(&response, &me, 8, now).wire_len(), 56);
    }
}
