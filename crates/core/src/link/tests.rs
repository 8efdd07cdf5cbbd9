//! The link machine driven directly: inputs with explicit `now`, outputs drained into a
//! `VecDeque` sink.

use std::collections::VecDeque;
use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::backoff::{BackoffConfig, RetryPolicy};
use crate::breaker::BreakerConfig;
use crate::gossip::{AnnounceEntry, GossipMessage};
use crate::link::peer::queue_config;
use crate::model::{TxHash, TxId};
use crate::time::Instant;

fn peer(n: u32) -> PeerId {
    format!("peer{n}").parse().expect("a valid id")
}

fn contact(n: u32) -> Contact {
    Contact {
        address: format!("10.0.0.{}", n % 250 + 1),
        port: 5001,
        peer_id: Some(peer(n)),
    }
}

fn at(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

fn config() -> LinkConfig {
    LinkConfig {
        retry: RetryPolicy::new(BackoffConfig {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(4),
            max_retries: 2,
        })
        .expect("valid"),
        breaker: BreakerConfig {
            threshold: 2,
            reset: Duration::from_secs(10),
            max_reset: Duration::from_secs(10),
            trial_timeout: Duration::from_secs(5),
        },
        ..LinkConfig::default()
    }
}

fn links() -> Links {
    Links::new(config(), ChaCha8Rng::seed_from_u64(7))
}

fn announce(k: u8) -> GossipMessage {
    let hash = TxHash::of(&[k]);
    GossipMessage::Announce {
        entries: vec![AnnounceEntry {
            id: hash.id(),
            hash: Some(hash),
            size: 250,
            hops: 1,
            register_id: None,
        }],
    }
}

fn drain(l: &mut Links) -> VecDeque<Output> {
    std::iter::from_fn(|| l.poll_output()).collect()
}

/// The transmissions among `outputs`: (ticket, via, what).
fn transmits(outputs: &VecDeque<Output>) -> Vec<(u64, Via, What)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Transmit {
                ticket, via, what, ..
            } => Some((*ticket, *via, what.clone())),
            _ => None,
        })
        .collect()
}

fn events(outputs: &VecDeque<Output>) -> Vec<LinkEvent> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_stream_link_keeps_a_window_in_flight_and_releases_on_outcomes() {
    let mut l = links();
    l.heard_gossip(&peer(1)); // A known speaker: no probe.
    for k in 0..(STREAM_WINDOW as u8 + 6) {
        l.send(contact(1), &[], announce(k), at(0));
    }
    let out = drain(&mut l);
    let sent = transmits(&out);
    assert_eq!(sent.len(), STREAM_WINDOW, "the rest waits in the lane");
    assert!(sent.iter().all(|(_, via, _)| *via == Via::Stream));
    l.handle_transmitted(&peer(1), sent[0].0, Outcome::Sent, at(1));
    let out = drain(&mut l);
    assert_eq!(transmits(&out).len(), 1, "one done, one more released");
    let worked = LinkEvent::Worked {
        peer: peer(1),
        protocol: Protocol::GrpcStream,
    };
    assert!(events(&out).contains(&worked));
    assert_eq!(l.protocol(&peer(1)), Some(Protocol::GrpcStream));
}

#[test]
fn a_refused_stream_makes_an_unknown_peer_sorcha_only_from_its_first_message() {
    let mut l = links();
    l.send(contact(1), &[], announce(1), at(0));
    l.send(contact(1), &[], announce(2), at(0));
    let first = transmits(&drain(&mut l));
    assert_eq!(
        first.len(),
        1,
        "an unknown peer is probed one message at a time"
    );
    assert_eq!(first[0].1, Via::Stream);
    l.handle_transmitted(&peer(1), first[0].0, Outcome::Refused, at(10));
    let out = drain(&mut l);
    let refused = LinkEvent::Refused {
        peer: peer(1),
        service: Service::Stream,
    };
    assert!(events(&out).contains(&refused));
    let again = transmits(&out);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].1, Via::Unary);
    assert!(
        matches!(&again[0].2, What::Notify(e) if e.len() == 1),
        "{again:?}"
    );
    l.handle_transmitted(&peer(1), again[0].0, Outcome::Sent, at(20));
    let next = transmits(&drain(&mut l));
    assert!(
        matches!(&next[0].2, What::Notify(_)),
        "the rest as notifications"
    );
    // Digests are not even queued for it.
    let digest = GossipMessage::Digest {
        range: crate::gossip::PrefixRange {
            first: 0,
            last: u64::MAX,
        },
        prefixes: vec![],
        recent: None,
    };
    l.send(contact(1), &[], digest, at(30));
    let out = drain(&mut l);
    let dropped = LinkEvent::Dropped {
        kind: DropKind::NotSpoken,
        count: 1,
    };
    assert!(events(&out).contains(&dropped));
    // Past the refusal's time the peer is probed again.
    l.handle_transmitted(&peer(1), next[0].0, Outcome::Sent, at(40));
    drain(&mut l);
    let later = at(REPROBE_REFUSED.as_millis() as u64 + 1_000);
    l.send(contact(1), &[], announce(3), later);
    let probe = transmits(&drain(&mut l));
    assert_eq!(
        (probe[0].1, matches!(probe[0].2, What::Gossip(_))),
        (Via::Stream, true)
    );
}

#[test]
fn a_speaker_that_refuses_the_stream_gets_unary_gossip() {
    let mut l = links();
    l.heard_gossip(&peer(1));
    l.send(contact(1), &[], announce(1), at(0));
    let first = transmits(&drain(&mut l));
    l.handle_transmitted(&peer(1), first[0].0, Outcome::Refused, at(10));
    let again = transmits(&drain(&mut l));
    assert_eq!((again[0].1, &again[0].2), (Via::Unary, &first[0].2));
    l.handle_transmitted(&peer(1), again[0].0, Outcome::Sent, at(20));
    drain(&mut l);
    l.send(contact(1), &[], announce(2), at(30));
    assert_eq!(
        transmits(&drain(&mut l))[0].1,
        Via::Unary,
        "never the stream again"
    );
}

#[test]
fn a_unary_refusal_falls_back_to_rest_for_a_link_and_a_request() {
    let mut l = links();
    l.heard_gossip(&peer(1));
    l.send(contact(1), &[Protocol::Grpc], announce(1), at(0));
    let t = transmits(&drain(&mut l));
    assert_eq!(t[0].1, Via::Unary);
    l.handle_transmitted(&peer(1), t[0].0, Outcome::Refused, at(5));
    let t = transmits(&drain(&mut l));
    assert_eq!(t[0].1, Via::Rest);
    let id = RequestId(9);
    let ok = l.request(contact(2), &[], Request::Ping, id, at(0));
    assert!(ok.is_ok());
    let out = drain(&mut l);
    let fallback = out.iter().any(|o| {
        matches!(
            o,
            Output::Request {
                via: Via::Unary,
                rest_fallback: true,
                ..
            }
        )
    });
    assert!(fallback, "an unknown peer may speak REST: {out:?}");
    l.handle_answered(id, true, Some(Via::Rest), at(5));
    assert_eq!(l.protocol(&peer(2)), Some(Protocol::Rest));
    l.request(contact(2), &[], Request::Ping, RequestId(10), at(6))
        .unwrap();
    let out = drain(&mut l);
    assert!(matches!(
        out.back(),
        Some(Output::Request { via: Via::Rest, .. })
    ));
}

#[test]
fn failed_gossip_is_retried_with_backoff_then_counts_against_the_breaker() {
    let mut l = links();
    l.send(contact(1), &[Protocol::Grpc], announce(1), at(0));
    let mut now = 0;
    let mut ticket = transmits(&drain(&mut l))[0].0;
    for _ in 0..2 {
        l.handle_transmitted(&peer(1), ticket, Outcome::Failed, at(now));
        assert!(
            transmits(&drain(&mut l)).is_empty(),
            "paused until the retry"
        );
        let due = l.poll_timeout().expect("a retry is due");
        assert!(due.since(at(now)) >= Duration::from_millis(500));
        now = due.as_millis();
        l.handle_timeout(due);
        ticket = transmits(&drain(&mut l))[0].0;
    }
    l.handle_transmitted(&peer(1), ticket, Outcome::Timeout, at(now));
    let out = drain(&mut l);
    assert!(events(&out).contains(&LinkEvent::SendFailed { peer: peer(1) }));
    assert_eq!(
        l.circuit(&peer(1), at(now)),
        BreakerState::Closed,
        "one failure of 2"
    );
}

/// A peer that tripped its circuit (it was down) and then calls us (it restarted) is up:
/// its circuit closes at once, not after the reset, and what we send it goes again.
#[test]
fn a_call_from_a_peer_closes_its_open_circuit_at_once() {
    let mut l = links();
    l.handle_fetched(&peer(1), false, at(1));
    l.handle_fetched(&peer(1), false, at(2));
    drain(&mut l);
    assert!(matches!(
        l.circuit(&peer(1), at(3)),
        BreakerState::Open { .. }
    ));
    l.heard_from(&peer(2), at(3));
    assert!(events(&drain(&mut l)).is_empty(), "another peer: nothing");
    l.heard_from(&peer(1), at(3));
    let e = events(&drain(&mut l));
    assert!(
        e.contains(&LinkEvent::CircuitClosed { peer: peer(1) }),
        "{e:?}"
    );
    assert_eq!(l.circuit(&peer(1), at(3)), BreakerState::Closed);
    l.send(contact(1), &[Protocol::Grpc], announce(1), at(4));
    assert_eq!(
        transmits(&drain(&mut l)).len(),
        1,
        "sent, well before the reset"
    );
    l.heard_from(&peer(1), at(5));
    assert!(
        events(&drain(&mut l)).is_empty(),
        "a closed circuit: nothing"
    );
}

#[test]
fn an_open_circuit_closes_the_link_drops_sends_and_closes_after_a_good_trial() {
    let mut l = links();
    l.send(contact(1), &[Protocol::Grpc], announce(1), at(0));
    l.send(contact(1), &[Protocol::Grpc], announce(2), at(0));
    drain(&mut l);
    l.handle_fetched(&peer(1), false, at(1));
    l.handle_fetched(&peer(1), false, at(2));
    let out = drain(&mut l);
    let e = events(&out);
    assert!(e.contains(&LinkEvent::CircuitOpened { peer: peer(1) }));
    let closed = LinkEvent::Dropped {
        kind: DropKind::LinkClosed,
        count: 2,
    };
    assert!(
        e.contains(&closed),
        "the queued and the in-flight one: {e:?}"
    );
    assert!(out.contains(&Output::CloseLink(peer(1))));
    l.send(contact(1), &[], announce(3), at(3));
    let refused = LinkEvent::Dropped {
        kind: DropKind::CircuitOpen,
        count: 1,
    };
    assert_eq!(events(&drain(&mut l)), vec![refused]);
    assert!(
        l.request(contact(1), &[], Request::Ping, RequestId(1), at(4))
            .is_err()
    );
    // Half open after the reset: the trial goes, and its success closes the circuit.
    let later = at(2 + 10_000);
    l.send(contact(1), &[], announce(4), later);
    let t = transmits(&drain(&mut l));
    l.handle_transmitted(&peer(1), t[0].0, Outcome::Sent, later);
    let e = events(&drain(&mut l));
    assert!(e.contains(&LinkEvent::CircuitClosed { peer: peer(1) }));
    assert_eq!(l.open_circuits(), 0);
}

#[test]
fn lanes_are_bounded_and_count_what_they_refuse() {
    let mut l = links();
    // A unary link has one call in flight; the announce lane holds 1024 behind it.
    for k in 0..1026u32 {
        let hash = TxHash::of(&k.to_le_bytes());
        let entry = AnnounceEntry {
            id: hash.id(),
            hash: Some(hash),
            size: 1,
            hops: 0,
            register_id: None,
        };
        let message = GossipMessage::Announce {
            entries: vec![entry],
        };
        l.send(contact(1), &[Protocol::Grpc], message, at(0));
    }
    let out = drain(&mut l);
    assert_eq!(transmits(&out).len(), 1);
    let full = LinkEvent::Dropped {
        kind: DropKind::QueueFullAnnounce,
        count: 1,
    };
    assert_eq!(events(&out), vec![full]);
}

#[test]
fn a_push_the_body_lane_cannot_take_is_announced_instead() {
    let mut l = links();
    // A unary link has one call in flight; the body lane holds 32 pushes behind it.
    let pushes = 1 + queue_config().body_capacity + 1;
    let mut last = None;
    for k in 0..pushes as u32 {
        let hash = TxHash::of(&k.to_le_bytes());
        let entry = AnnounceEntry {
            id: hash.id(),
            hash: Some(hash),
            size: 1,
            hops: 1,
            register_id: None,
        };
        last = Some(entry.clone());
        let message = GossipMessage::Push {
            entry,
            body: k.to_le_bytes().to_vec(),
        };
        l.send(contact(1), &[Protocol::Grpc], message, at(0));
    }
    let out = drain(&mut l);
    let full = LinkEvent::Dropped {
        kind: DropKind::QueueFullBody,
        count: 1,
    };
    assert_eq!(events(&out), vec![full], "the push is counted as dropped");
    let first = transmits(&out)[0].0;
    let mut announced = Vec::new();
    let mut ticket = first;
    for n in 1..=pushes {
        l.handle_transmitted(&peer(1), ticket, Outcome::Sent, at(n as u64));
        let sent = transmits(&drain(&mut l));
        let Some((next, _, what)) = sent.into_iter().next() else {
            break;
        };
        ticket = next;
        if let What::Gossip(GossipMessage::Announce { entries }) = what {
            announced.extend(entries);
        }
    }
    assert_eq!(
        announced,
        vec![last.expect("sent")],
        "its entry goes as an announcement"
    );
}

#[test]
fn pulls_batch_on_open_streams_of_speakers_and_go_unary_otherwise() {
    let mut l = links();
    l.send(contact(1), &[], announce(1), at(0));
    l.send(contact(2), &[], announce(2), at(0));
    drain(&mut l);
    l.heard_gossip(&peer(1));
    l.handle_stream_opened(&peer(1), 1);
    let pull = |k: u32| Pull {
        id: TxHash::of(&k.to_le_bytes()).id(),
        hash: None,
        size: 250,
    };
    for k in 0..300 {
        l.pull(contact(1), &[], pull(k), at(1));
    }
    l.pull(contact(2), &[], pull(1000), at(1));
    l.flush_pulls(at(1));
    let t = transmits(&drain(&mut l));
    let sizes: Vec<(Via, usize)> = t
        .iter()
        .map(|(_, via, what)| match what {
            What::Fetch(p) => (*via, p.len()),
            other => panic!("only pulls: {other:?}"),
        })
        .collect();
    let expected = [
        (Via::Unary, 1),
        (Via::Stream, MAX_FETCH_BATCH),
        (Via::Stream, 44),
    ];
    assert_eq!(sizes, expected, "peer 2 never spoke our extensions");
    l.handle_stream_closed(&peer(1), 0);
    assert!(
        l.stream_open(&peer(1)),
        "an older stream's close is ignored"
    );
    l.handle_stream_closed(&peer(1), 1);
    assert!(!l.stream_open(&peer(1)));
}

#[test]
fn pulls_from_a_speaker_open_its_stream_instead_of_going_unary() {
    let mut l = links();
    let pull = |k: u32| Pull {
        id: TxHash::of(&k.to_le_bytes()).id(),
        hash: None,
        size: 250,
    };
    // Peer 1 has a stream link that never opened; peer 2 no link at all (it only announced
    // to us); peer 3 offers unary gRPC only.
    l.send(contact(1), &[], announce(1), at(0));
    let sent = transmits(&drain(&mut l));
    l.handle_transmitted(&peer(1), sent[0].0, Outcome::Sent, at(0));
    drain(&mut l);
    for p in 1..=3 {
        l.heard_gossip(&peer(p));
    }
    l.pull(contact(1), &[], pull(1), at(1));
    l.pull(contact(2), &[], pull(2), at(1));
    l.pull(contact(3), &[Protocol::Grpc], pull(3), at(1));
    l.flush_pulls(at(1));
    let mut t: Vec<(Option<PeerId>, Via, usize)> = drain(&mut l)
        .into_iter()
        .filter_map(|o| match o {
            Output::Transmit {
                to,
                via,
                what: What::Fetch(p),
                ..
            } => Some((to.peer_id, via, p.len())),
            _ => None,
        })
        .collect();
    t.sort();
    let mut expected = vec![
        (Some(peer(1)), Via::Stream, 1),
        (Some(peer(2)), Via::Stream, 1),
        (Some(peer(3)), Via::Unary, 1),
    ];
    expected.sort();
    assert_eq!(
        t, expected,
        "the batch opens the stream; unary only where none is offered"
    );
}

#[test]
fn a_failed_batch_fails_its_pulls_at_once() {
    let mut l = links();
    l.send(contact(1), &[], announce(1), at(0));
    drain(&mut l);
    l.heard_gossip(&peer(1));
    l.handle_stream_opened(&peer(1), 1);
    let id: TxId = TxHash::of(b"x").id();
    let pull = Pull {
        id,
        hash: None,
        size: 10,
    };
    l.pull(contact(1), &[], pull, at(1));
    l.flush_pulls(at(1));
    let t = transmits(&drain(&mut l));
    l.handle_transmitted(&peer(1), t[0].0, Outcome::Failed, at(2));
    let out = drain(&mut l);
    let failed = Output::PullFailed { from: peer(1), id };
    assert!(out.contains(&failed), "{out:?}");
    assert!(
        !l.stream_open(&peer(1)),
        "a failed stream send drops the stream"
    );
}

#[test]
fn a_peer_that_took_our_message_speaks_our_extensions() {
    let mut l = links();
    l.send(contact(1), &[], announce(1), at(0));
    let t = transmits(&drain(&mut l));
    assert_eq!(l.dialect(&peer(1), at(0)), Dialect::Unknown);
    l.handle_transmitted(&peer(1), t[0].0, Outcome::Sent, at(1));
    assert_eq!(l.dialect(&peer(1), at(1)), Dialect::Extensions);
    l.remember_refusal(
        &peer(2),
        Service::Communication,
        Duration::from_secs(60),
        at(1),
    );
    assert_eq!(l.dialect(&peer(2), at(2)), Dialect::SorchaOnly);
}

#[test]
fn a_late_report_for_a_closed_link_does_not_release_its_successor() {
    let mut l = links();
    l.send(contact(1), &[Protocol::Grpc], announce(1), at(0));
    let old = transmits(&drain(&mut l))[0].0;
    l.forget(&peer(1));
    l.send(contact(1), &[Protocol::Grpc], announce(2), at(1));
    l.send(contact(1), &[Protocol::Grpc], announce(3), at(1));
    let new = transmits(&drain(&mut l));
    assert_eq!(new.len(), 1, "a call at a time");
    assert_ne!(new[0].0, old, "tickets are unique across links");
    l.handle_transmitted(&peer(1), old, Outcome::Sent, at(2));
    assert!(
        transmits(&drain(&mut l)).is_empty(),
        "the new call is still out"
    );
}

#[test]
fn links_are_bounded_and_the_least_recent_is_evicted() {
    let mut l = links();
    for n in 0..MAX_LINKS as u32 + 1 {
        l.send(contact(n), &[Protocol::Grpc], announce(1), at(u64::from(n)));
        l.send(contact(n), &[Protocol::Grpc], announce(2), at(u64::from(n)));
    }
    let out = drain(&mut l);
    assert_eq!(l.len(), MAX_LINKS);
    assert!(out.contains(&Output::CloseLink(peer(0))));
    assert!(events(&out).contains(&LinkEvent::Evicted { peer: peer(0) }));
}
