//! Round trips, the compact envelope and refusals of bad messages.

use super::*;
use crate::size::wire_len;

/// An entry as our peers send it: by id alone.
fn entry(body: &[u8]) -> AnnounceEntry {
    AnnounceEntry {
        id: TxHash::of(body).id(),
        hash: None,
        size: body.len() as u64,
        register_id: Some("reg-1".into()),
        hops: 2,
    }
}

#[test]
fn every_gossip_message_round_trips() {
    let me: PeerId = "node-a".parse().unwrap();
    let messages = [
        GossipMessage::Announce {
            entries: vec![entry(b"x"), entry(b"y")],
        },
        GossipMessage::Push {
            entry: entry(b"body"),
            body: b"body".to_vec(),
        },
        GossipMessage::Digest {
            range: PrefixRange {
                first: 1,
                last: u64::MAX - 1,
            },
            prefixes: vec![1, u64::MAX - 1],
            recent: Some(Duration::from_secs(30)),
        },
        GossipMessage::DigestReply {
            missing: vec![entry(b"z")],
            wanted: vec![7],
        },
        GossipMessage::Prune,
        GossipMessage::Graft,
    ];
    for message in messages {
        let wire = to_peer_message(&message, &me, None, Timestamp::from_millis(5));
        assert_eq!(wire.sender_peer_id, "node-a");
        assert_eq!(from_peer_message(&wire).unwrap(), message);
    }
}

#[test]
fn compacting_strips_the_envelope_of_extensions_only() {
    let me: PeerId = "node-a".parse().unwrap();
    let to: PeerId = "node-b".parse().unwrap();
    let now = Timestamp::from_millis(1_700_000_000_000);
    let announce = GossipMessage::Announce {
        entries: vec![entry(b"x")],
    };
    let full = to_peer_message(&announce, &me, Some(&to), now);
    let fetch = to_fetch_message(&[TxHash::of(b"x").id()], &me, &to, now);
    for full in [full, fetch] {
        let compact = compact(full.clone());
        assert_eq!(
            (
                compact.sender_peer_id.as_str(),
                compact.recipient_peer_id.as_str()
            ),
            ("", "")
        );
        assert_eq!(compact.timestamp, 0);
        assert_eq!(
            (compact.message_type, &compact.payload),
            (full.message_type, &full.payload)
        );
    }
    for sorcha in [MessageType::Heartbeat, MessageType::TransactionNotification] {
        let full = PeerMessage {
            sender_peer_id: me.to_string(),
            recipient_peer_id: to.to_string(),
            message_type: sorcha.into(),
            payload: vec![1, 2, 3],
            timestamp: now.to_wire(),
        };
        assert_eq!(compact(full.clone()), full, "Sorcha's {sorcha:?} keeps it");
    }
}

/// What a stream carries after its first message is the whole message compacted, so what
/// the simulator sizes ([`to_stream_message`]) is what the daemon sends.
#[test]
fn stream_messages_are_the_compacted_whole_messages() {
    let me: PeerId = "a".repeat(40).parse().unwrap();
    let to: PeerId = "b".repeat(40).parse().unwrap();
    let now = Timestamp::from_millis(1_760_000_000_000);
    let messages = [
        GossipMessage::Announce {
            entries: vec![entry(b"x")],
        },
        GossipMessage::Push {
            entry: entry(b"body"),
            body: b"body".to_vec(),
        },
        GossipMessage::Digest {
            range: PrefixRange::starting_at(1 << 60),
            prefixes: vec![1 << 61],
            recent: Some(Duration::from_secs(30)),
        },
        GossipMessage::DigestReply {
            missing: vec![entry(b"z")],
            wanted: vec![7],
        },
    ];
    for message in messages {
        let whole = to_peer_message(&message, &me, Some(&to), now);
        assert!(wire_len(&whole) > wire_len(&to_stream_message(&message)) + 80);
        assert_eq!(compact(whole), to_stream_message(&message));
    }
    let id = TxHash::of(b"x").id();
    let fetch = to_fetch_message(&[id], &me, &to, now);
    assert_eq!(compact(fetch), to_stream_fetch(&[id]));
    let answer = to_fetch_answer(TransactionResponse {
        transaction_hash: TxHash::of(b"x").to_string(),
        transaction_data: vec![7; 250],
        found: true,
    });
    let whole = PeerMessage {
        sender_peer_id: to.to_string(),
        recipient_peer_id: me.to_string(),
        timestamp: now.to_wire(),
        ..answer.clone()
    };
    assert_eq!(
        wire_len(&whole) - wire_len(&answer),
        91,
        "two 40-char ids and a ms timestamp"
    );
}

#[test]
fn announced_ids_travel_raw_and_whole_hashes_are_still_read() {
    let hash = TxHash::of(b"x");
    let sent = AnnounceEntry {
        hash: Some(hash),
        ..entry(b"x")
    };
    let wire = entry_to_proto(&sent);
    assert_eq!(wire.hash, hash.id().as_bytes().to_vec(), "16 raw bytes");
    assert!(wire.transaction_hash.is_empty(), "not 64 of hex");
    assert_eq!(entry_from_proto(&wire).unwrap(), entry(b"x"), "by id");
    let raw_hash = pb::AnnounceEntry {
        hash: hash.as_bytes().to_vec(),
        ..wire.clone()
    };
    assert_eq!(entry_from_proto(&raw_hash).unwrap(), sent, "32 raw bytes");
    let hex = pb::AnnounceEntry {
        transaction_hash: hash.to_string(),
        hash: Vec::new(),
        ..wire.clone()
    };
    assert_eq!(entry_from_proto(&hex).unwrap(), sent, "64 hex digits");
    for len in [0usize, 15, 31, 33] {
        let odd = pb::AnnounceEntry {
            hash: vec![1; len],
            transaction_hash: String::new(),
            ..wire.clone()
        };
        let error = entry_from_proto(&odd).unwrap_err().to_string();
        if len == 0 {
            assert!(error.starts_with("transaction_hash"), "{error}");
        } else {
            let want = format!("{len} bytes, expected 16 (an id) or 32 (a hash)");
            assert!(error.contains(&want), "{error}");
        }
    }
}

#[test]
fn a_digest_without_a_range_end_runs_to_the_end_of_the_space() {
    let digest = GossipDigest {
        prefixes: vec![5],
        range_first: 3,
        range_last: None,
        recent_ms: None,
    };
    let wire = PeerMessage {
        sender_peer_id: "node-a".into(),
        message_type: MessageType::GossipDigest.into(),
        payload: digest.encode_to_vec(),
        ..Default::default()
    };
    let range = PrefixRange {
        first: 3,
        last: u64::MAX,
    };
    let prefixes = vec![5];
    assert_eq!(
        from_peer_message(&wire).unwrap(),
        GossipMessage::Digest {
            range,
            prefixes,
            recent: None
        },
        "no recent_ms: a sweep"
    );
}

#[test]
fn bad_messages_name_the_problem() {
    let mut wire = to_peer_message(
        &GossipMessage::Announce {
            entries: vec![entry(b"x")],
        },
        &"a".parse().unwrap(),
        None,
        Timestamp::from_millis(0),
    );
    wire.payload = vec![0xff, 0xff, 0xff];
    assert!(matches!(
        from_peer_message(&wire),
        Err(WireError::Decode { .. })
    ));
    wire.message_type = MessageType::Heartbeat.into();
    assert_eq!(from_peer_message(&wire), Err(WireError::NotGossip(5)));

    let bad_hash = TransactionNotification {
        transaction_hash: "nope".into(),
        sender_peer_id: "a".into(),
        ..Default::default()
    };
    let err = from_notification(&bad_hash).unwrap_err();
    assert!(err.to_string().starts_with("transaction_hash"), "{err}");
    let negative = TransactionNotification {
        transaction_hash: TxHash::of(b"x").to_string(),
        sender_peer_id: "a".into(),
        transaction_size: -1,
        ..Default::default()
    };
    assert!(
        from_notification(&negative)
            .unwrap_err()
            .to_string()
            .starts_with("transaction_size")
    );
}

#[test]
fn notifications_carry_the_hop_count() {
    let me = "me".parse().unwrap();
    let at = Timestamp::from_millis(9);
    assert_eq!(to_notification(&entry(b"abc"), &me, at), None, "no hash");
    let e = AnnounceEntry {
        hash: Some(TxHash::of(b"abc")),
        ..entry(b"abc")
    };
    let n = to_notification(&e, &me, at).expect("a whole hash");
    assert_eq!(n.transaction_hash, TxHash::of(b"abc").to_string());
    let later = Timestamp::from_millis(1_764_000_000_999);
    let seconds = to_notification(&e, &me, later).unwrap().timestamp;
    assert_eq!(seconds, 1_764_000_000, "seconds, as C# reads it");
    let (from, back) = from_notification(&n).unwrap();
    assert_eq!(from.as_str(), "me");
    assert_eq!(back, e);
}
