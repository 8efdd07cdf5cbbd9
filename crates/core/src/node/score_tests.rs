//! The peer score through the node: offences seen by gossip ban, unverified peers by their
//! address too, and an operator's unban lifts both.

use super::tests::{WALL_MS, advert, at, node};
use super::*;
use crate::gossip::AnnounceEntry;
use crate::model::TxHash;
use crate::score::{BanSubject, Offence};
use std::time::Duration;

const LIAR_IP: &str = "198.51.100.7";

fn unproven() -> Caller {
    Caller::Unproven {
        ip: Some(LIAR_IP.into()),
    }
}

fn bans(node: &mut Node) -> Vec<BanRecord> {
    let mut out = Vec::new();
    while let Some(output) = node.poll_output() {
        if let Output::Banned(record) = output {
            out.push(record);
        }
    }
    out
}

/// `from` announces `body` by gossip; returns its id.
fn announce(node: &mut Node, from: &PeerId, body: &[u8], now: Now) -> TxId {
    let entry = AnnounceEntry {
        id: TxHash::of(body).id(),
        hash: None,
        size: body.len() as u64,
        register_id: None,
        hops: 1,
    };
    let id = entry.id;
    let message = GossipMessage::Announce {
        entries: vec![entry],
    };
    node.handle_gossip(from, message, now);
    id
}

/// Announces `n` as `from` and serves a body that does not match it.
fn serve_wrong(node: &mut Node, from: &PeerId, n: u64, now: Now) {
    let body = format!("body {n}").into_bytes();
    let id = announce(node, from, &body, now);
    let mut wrong = body;
    wrong[0] ^= 1;
    node.handle_fetched(from, id, Ok(wrong), now);
}

#[test]
fn an_unverified_liar_is_banned_by_id_and_address_then_lifted() {
    let now = at(0, WALL_MS);
    let mut node = node(now);
    let liar: PeerId = "liar-1".parse().expect("valid id");
    node.handle_register(advert("liar-1", "203.0.113.9", now), &unproven(), now)
        .expect("registered");
    serve_wrong(&mut node, &liar, 1, now);
    assert!(bans(&mut node).is_empty(), "one wrong body is not enough");
    serve_wrong(&mut node, &liar, 2, now);
    let records = bans(&mut node);
    let subjects: Vec<_> = records.iter().map(|r| r.subject.clone()).collect();
    assert_eq!(
        subjects,
        [
            BanSubject::Peer(liar.clone()),
            BanSubject::Address(LIAR_IP.into())
        ]
    );
    assert!(
        records
            .iter()
            .all(|r| r.reason == "wrong_body" && r.strikes == 1)
    );
    assert!(node.is_banned(&liar, now));
    assert!(
        node.membership()
            .active_peers()
            .all(|p| p.node.peer_id != liar)
    );
    // A fresh id from the same address is refused at once.
    let fresh = advert("liar-2", "203.0.113.10", now);
    assert_eq!(
        node.handle_register(fresh, &unproven(), now),
        Err(Refusal::Banned)
    );
    assert!(node.handle_ping(None, &unproven(), now).is_err());
    assert_eq!(node.reputation().stats().refused_banned_address, 2);
    node.unban(&liar, at(1, WALL_MS));
    assert!(!node.is_banned(&liar, at(1, WALL_MS)));
    assert!(!node.is_banned_address(LIAR_IP, at(1, WALL_MS)));
    assert_eq!(node.score(&liar, at(1, WALL_MS)), 0.0);
}

#[test]
fn a_verified_peer_is_banned_by_id_only_and_the_next_ban_doubles() {
    let now = at(0, WALL_MS);
    let mut node = node(now);
    let peer = PeerId::from_public_key(b"some key");
    let caller = Caller::Proven(peer.clone());
    node.handle_register(advert(peer.as_str(), "203.0.113.9", now), &caller, now)
        .expect("registered");
    for _ in 0..4 {
        node.note_offence(&peer, Offence::ProtocolViolation, now);
    }
    let first = bans(&mut node);
    assert_eq!(first.len(), 1, "the id only: {first:?}");
    assert_eq!(
        first[0].until,
        now.wall.saturating_add(Duration::from_secs(60))
    );
    // Offences while banned are not counted again.
    assert_eq!(node.reputation().stats().penalties[3], 3);
    let later = at(61_000, WALL_MS + 61_000);
    assert!(!node.is_banned(&peer, later));
    node.note_offence(&peer, Offence::LimitExceeded, later);
    let second = bans(&mut node);
    assert_eq!(second[0].strikes, 2);
    assert_eq!(
        second[0].until,
        later.wall.saturating_add(Duration::from_secs(120))
    );
}

#[test]
fn identities_made_from_one_address_add_up_to_a_ban_of_it() {
    let now = at(0, WALL_MS);
    let mut node = node(now);
    // Each fake identity misbehaves once: never enough for its id alone.
    for n in 0..3 {
        let name = format!("fake-{n}");
        let registered = node.handle_register(advert(&name, "203.0.113.9", now), &unproven(), now);
        assert!(registered.is_ok(), "fake {n} refused: {registered:?}");
        let fake: PeerId = name.parse().expect("valid id");
        node.note_offence(&fake, Offence::ProtocolViolation, now);
    }
    let records = bans(&mut node);
    assert!(
        records
            .iter()
            .any(|r| r.subject == BanSubject::Address(LIAR_IP.into())),
        "{records:?}"
    );
    let next = advert("fake-9", "203.0.113.9", now);
    assert_eq!(
        node.handle_register(next, &unproven(), now),
        Err(Refusal::Banned)
    );
}

#[test]
fn an_address_over_its_limits_is_banned_and_this_host_never_is() {
    let now = at(0, WALL_MS);
    let mut node = node(now);
    let pusher = advert("pusher", "203.0.113.9", now);
    assert!(node.handle_register(pusher, &unproven(), now).is_ok());
    // A limit exceeded costs 10 and a score below -50 bans: the sixth report does.
    for n in 1..=6 {
        node.note_address_offence(LIAR_IP, Offence::LimitExceeded, now);
        node.note_address_offence("127.0.0.1", Offence::LimitExceeded, now);
        let banned = !bans(&mut node).is_empty();
        assert_eq!(banned, n == 6, "report {n}");
    }
    assert!(node.is_banned_address(LIAR_IP, now));
    assert!(!node.is_banned_address("127.0.0.1", now));
    // The id that called from the banned address is banned with it.
    let pusher: PeerId = "pusher".parse().expect("valid id");
    assert!(node.membership.is_banned(&pusher, now));
    let next = advert("newcomer", "203.0.113.9", now);
    assert_eq!(
        node.handle_register(next, &unproven(), now),
        Err(Refusal::Banned)
    );
}

#[test]
fn a_restored_ban_holds_and_keeps_its_strikes() {
    let now = at(0, WALL_MS);
    let mut node = node(now);
    let peer: PeerId = "peer-9".parse().expect("valid id");
    let record = BanRecord {
        subject: BanSubject::Peer(peer.clone()),
        reason: "wrong_body".into(),
        until: now.wall.saturating_add(Duration::from_secs(600)),
        strikes: 3,
    };
    node.restore_ban(&record, now);
    assert!(node.is_banned(&peer, now));
    let subject = BanSubject::Peer(peer);
    assert_eq!(node.reputation().strikes(&subject), 3);
}

#[test]
fn malformed_notifications_ban_their_sender() {
    let now = at(0, WALL_MS);
    let mut node = node(now);
    let liar: PeerId = "liar-1".parse().expect("valid id");
    let loopback = Caller::Unproven {
        ip: Some("127.0.0.1".into()),
    };
    node.handle_register(advert("liar-1", "127.0.0.1", now), &loopback, now)
        .expect("registered");
    for n in 0..3u8 {
        let entry = AnnounceEntry {
            id: TxHash::of(&[n]).id(),
            hash: Some(TxHash::of(&[n])),
            size: 0,
            register_id: None,
            hops: 0,
        };
        node.handle_notify(&liar, entry, now);
    }
    let records = bans(&mut node);
    assert_eq!(
        records.len(),
        1,
        "by id only, loopback is exempt: {records:?}"
    );
    assert_eq!(records[0].reason, "protocol_violation");
}

#[test]
fn a_useful_first_delivery_raises_the_score_and_not_found_after_announcing_lowers_it() {
    let now = at(0, WALL_MS);
    let mut node = node(now);
    let peer: PeerId = "peer-1".parse().expect("valid id");
    let caller = Caller::Proven(peer.clone());
    node.handle_register(advert("peer-1", "203.0.113.9", now), &caller, now)
        .expect("registered");
    let body = b"a good transaction".to_vec();
    let id = announce(&mut node, &peer, &body, now);
    node.handle_fetched(&peer, id, Ok(body), now);
    assert_eq!(node.score(&peer, now), 1.0, "a first delivery");
    // It announces another, then says it does not hold it.
    let id = announce(&mut node, &peer, b"another transaction", now);
    // Small enough to be pushed: pulled once its push is overdue.
    let later = at(100, WALL_MS + 100);
    node.handle_timeout(later);
    while node.poll_output().is_some() {}
    node.handle_fetched(&peer, id, Err(gossip::FetchFailure::NotFound), later);
    let score = node.score(&peer, later);
    // 100 ms of decay towards 0 on top.
    assert!(
        (score - (1.0 - 10.0)).abs() < 0.01,
        "announced, then not served: {score}"
    );
}
