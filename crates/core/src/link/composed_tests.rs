//! The link machine composed in a `Node`, driven directly: membership's requests and gossip's
//! sends come out as planned transmissions.

use std::collections::VecDeque;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::link::{self, LinkEvent, Outcome, Via, What};
use crate::membership::Contact;
use crate::model::{Caller, PeerAdvert, PeerCapabilities, Protocol, Timestamp};
use crate::node::{Event, Node, NodeConfig, Output};
use crate::time::Now;

fn t(ms: u64) -> Now {
    Now::from_millis(ms)
}

fn advert(name: &str, address: &str, protocols: Vec<Protocol>) -> PeerAdvert {
    PeerAdvert {
        peer_id: name.parse().expect("a valid id"),
        address: address.into(),
        port: 5001,
        supported_protocols: protocols,
        capabilities: PeerCapabilities {
            supports_streaming: true,
            supports_transaction_distribution: true,
            max_transaction_size: 1 << 20,
        },
        last_seen: Timestamp::from_millis(0),
        is_seed_node: false,
    }
}

fn node(speaks: link::Speaks) -> Node {
    let mut config = NodeConfig::default();
    config.link.speaks = speaks;
    let me = advert("me", "10.0.0.1", speaks.protocols());
    let bootstrap = vec![Contact::bootstrap("10.0.0.9", 5001)];
    let rng = ChaCha8Rng::seed_from_u64(1);
    Node::new(config, me, bootstrap, Vec::new(), rng, t(0))
}

fn drain(node: &mut Node) -> VecDeque<Output> {
    std::iter::from_fn(|| node.poll_output()).collect()
}

#[test]
fn requests_carry_the_planned_transport() {
    let mut n = node(link::Speaks::default());
    let sends: Vec<(Via, bool)> = drain(&mut n)
        .into_iter()
        .filter_map(|o| match o {
            Output::Send {
                via, rest_fallback, ..
            } => Some((via, rest_fallback)),
            _ => None,
        })
        .collect();
    assert_eq!(
        sends,
        vec![(Via::Unary, true)],
        "a bootstrap node may speak REST"
    );
    let rest_only = link::Speaks {
        stream: false,
        grpc: false,
        rest: true,
    };
    let mut n = node(rest_only);
    let via = drain(&mut n).into_iter().find_map(|o| match o {
        Output::Send { via, .. } => Some(via),
        _ => None,
    });
    assert_eq!(via, Some(Via::Rest));
}

#[test]
fn gossip_goes_out_as_transmissions_released_by_outcomes() {
    let mut n = node(link::Speaks::default());
    drain(&mut n);
    let peer = advert("peer", "10.0.0.2", vec![Protocol::Grpc]);
    let id = peer.peer_id.clone();
    n.handle_register(peer, &Caller::UNKNOWN, t(1))
        .expect("registered");
    n.handle_heartbeat(&id, &Caller::UNKNOWN, t(1));
    drain(&mut n);
    n.submit(b"one".to_vec(), None, t(2)).expect("accepted");
    n.submit(b"two".to_vec(), None, t(2)).expect("accepted");
    let mut ticket = None;
    for _ in 0..20 {
        for o in drain(&mut n) {
            if let Output::Transmit {
                via,
                what,
                ticket: k,
                ..
            } = o
            {
                assert_eq!(via, Via::Unary, "the peer advertises unary gRPC only");
                assert!(matches!(what, What::Gossip(_)), "{what:?}");
                ticket = ticket.or(Some(k));
            }
        }
        match (ticket, n.poll_timeout()) {
            (None, Some(at)) => n.handle_timeout(Now::from_millis(at.as_millis())),
            _ => break,
        }
    }
    let ticket = ticket.expect("an announcement went out");
    n.handle_transmitted(&id, ticket, Outcome::Sent, t(4));
    let worked = drain(&mut n).into_iter().any(|o| {
        matches!(
            o,
            Output::Event(Event::Link(LinkEvent::Worked {
                protocol: Protocol::Grpc,
                ..
            }))
        )
    });
    assert!(worked);
    assert_eq!(n.links().protocol(&id), Some(Protocol::Grpc));
}
