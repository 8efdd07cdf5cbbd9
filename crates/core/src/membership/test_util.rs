//! Helpers shared by the membership tests.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::model::{PeerCapabilities, Protocol};

pub(super) fn id(n: usize) -> PeerId {
    format!("node-{n}").parse().expect("test ids are valid")
}

pub(super) fn addr(n: usize) -> String {
    format!("10.0.{}.{}", n / 250, n % 250 + 1)
}

/// Peer `n`'s advert, last seen at `now` (wall clock).
pub(super) fn advert(n: usize, now: Now) -> PeerAdvert {
    advert_of(id(n), addr(n), now)
}

/// A gRPC peer's advert at `address`:5001 with streaming, last seen at `now` (the node's
/// tests use it too).
pub(crate) fn advert_of(peer_id: PeerId, address: String, now: Now) -> PeerAdvert {
    PeerAdvert {
        peer_id,
        address,
        port: 5001,
        supported_protocols: vec![Protocol::Grpc],
        capabilities: PeerCapabilities {
            supports_streaming: true,
            supports_transaction_distribution: true,
            max_transaction_size: 1 << 20,
        },
        last_seen: now.wall,
        is_seed_node: false,
    }
}

pub(super) fn contact(n: usize) -> Contact {
    Contact::bootstrap(addr(n), 5001)
}

/// Both clocks at `secs`.
pub(super) fn t(secs: u64) -> Now {
    Now::from_millis(secs * 1000)
}

pub(super) fn machine(
    me: usize,
    bootstrap: Vec<Contact>,
    stored: Vec<PeerNode>,
    config: MembershipConfig,
    now: Now,
) -> Membership {
    let rng = ChaCha8Rng::seed_from_u64(me as u64);
    Membership::new(config, advert(me, now), bootstrap, stored, rng, now)
}

pub(super) fn drain(m: &mut Membership) -> Vec<Output> {
    std::iter::from_fn(|| m.poll_output()).collect()
}

/// The sends among `outputs`, as (target, request, id).
pub(super) fn sends(outputs: &[Output]) -> Vec<(Contact, Request, RequestId)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Send { to, request, id } => Some((to.clone(), request.clone(), *id)),
            _ => None,
        })
        .collect()
}

pub(super) fn events(outputs: &[Output]) -> Vec<MembershipEvent> {
    outputs
        .iter()
        .filter_map(|o| o.as_event().cloned())
        .collect()
}

pub(super) fn pong(n: usize) -> Result<Response, Failure> {
    Ok(Response::Pong {
        peer_id: id(n),
        status: crate::model::PeerStatus::Online,
    })
}

/// A machine without bootstrap contacts, to which peers `peers` registered at `t(0)`.
pub(super) fn with_registered(peers: impl IntoIterator<Item = usize>) -> Membership {
    let mut m = machine(0, vec![], vec![], MembershipConfig::default(), t(0));
    for n in peers {
        m.handle_register(advert(n, t(0)), t(0))
            .expect("test adverts are valid");
    }
    drain(&mut m);
    m
}

/// The id of the request of kind `is_kind` sent to peer `n`.
pub(super) fn request_to(
    sent: &[(Contact, Request, RequestId)],
    n: usize,
    is_kind: fn(&Request) -> bool,
) -> RequestId {
    sent.iter()
        .find(|(to, request, _)| to.peer_id == Some(id(n)) && is_kind(request))
        .map(|(_, _, rid)| *rid)
        .unwrap_or_else(|| panic!("no such request to node-{n} in {sent:?}"))
}

pub(super) fn is_heartbeat(r: &Request) -> bool {
    matches!(r, Request::Heartbeat { .. })
}

pub(super) fn is_ping(r: &Request) -> bool {
    matches!(r, Request::Ping)
}

pub(super) fn is_list(r: &Request) -> bool {
    matches!(r, Request::GetPeerList { .. })
}

pub(super) fn heartbeat_ok() -> Result<Response, Failure> {
    Ok(Response::Heartbeat {
        outcome: HeartbeatOutcome::Accepted,
    })
}
