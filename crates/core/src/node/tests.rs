//! `Node`'s clocks and timers driven directly.

use std::time::Duration;

use super::*;

const PROBE_MS: u64 = 10_000;
const AE_MS: u64 = 3_000;
/// A wall clock far from the monotonic one, as in the daemon.
pub(super) const WALL_MS: u64 = 1_800_000_000_000;

pub(super) fn at(mono: u64, wall: u64) -> Now {
    Now::new(Instant::from_millis(mono), Timestamp::from_millis(wall))
}

/// A node with no peers: only the periodic timers are armed (membership's probe and
/// refresh, gossip's anti-entropy; a discovery target of 0 leaves the growth timer off).
pub(super) fn node(now: Now) -> Node {
    let mut config = NodeConfig::default();
    config.membership.probe_interval = Duration::from_millis(PROBE_MS);
    config.membership.discovery_target = 0;
    config.gossip.anti_entropy_interval = Some(Duration::from_millis(AE_MS));
    let mut node = Node::new(
        config,
        advert("node-0", "10.0.0.1", now),
        vec![],
        vec![],
        ChaCha8Rng::seed_from_u64(1),
        now,
    );
    while node.poll_output().is_some() {}
    node
}

/// The advert of peer `name` at `address`, last seen at `now`.
pub(super) fn advert(name: &str, address: &str, now: Now) -> PeerAdvert {
    crate::membership::test_util::advert_of(name.parse().expect("valid id"), address.into(), now)
}

fn probe(node: &Node) -> Option<u64> {
    let at = node.membership().deadline(membership::Timer::Probe);
    at.map(Instant::as_millis)
}

fn anti_entropy(node: &Node) -> Option<u64> {
    let at = node.gossip().deadline(gossip::Timer::AntiEntropy);
    at.map(Instant::as_millis)
}

#[test]
fn a_wall_clock_step_moves_no_pending_deadline() {
    let mut node = node(at(0, WALL_MS));
    assert_eq!(node.poll_timeout(), Some(Instant::from_millis(AE_MS)));
    // The wall clock steps back an hour, then forward a day; the monotonic one ticks on.
    node.handle_ping(None, &Caller::UNKNOWN, at(1, WALL_MS - 3_600_000))
        .expect("answered");
    assert_eq!(node.poll_timeout(), Some(Instant::from_millis(AE_MS)));
    node.handle_timeout(at(AE_MS - 1, WALL_MS + 86_400_000));
    assert_eq!(anti_entropy(&node), Some(AE_MS), "not due: nothing fired");
    assert_eq!(probe(&node), Some(PROBE_MS));
    node.handle_timeout(at(AE_MS, WALL_MS - 3_600_000));
    assert_eq!(
        anti_entropy(&node),
        Some(2 * AE_MS),
        "fired on time, re-armed"
    );
    assert_eq!(probe(&node), Some(PROBE_MS));
}

#[test]
fn poll_timeout_is_the_earliest_deadline_and_handle_timeout_fires_only_the_due() {
    let mut node = node(at(0, WALL_MS));
    let wall = |mono| WALL_MS + mono;
    assert_eq!(anti_entropy(&node), Some(AE_MS));
    assert_eq!(probe(&node), Some(PROBE_MS));
    assert_eq!(
        node.poll_timeout(),
        Some(Instant::from_millis(AE_MS)),
        "gossip's"
    );
    // Every anti-entropy round up to 9 s fires alone; the probe waits.
    for round in 1..=3 {
        let due = round * AE_MS;
        node.handle_timeout(at(due, wall(due)));
        assert_eq!(anti_entropy(&node), Some(due + AE_MS));
        assert_eq!(probe(&node), Some(PROBE_MS), "not due at {due}");
    }
    assert_eq!(
        node.poll_timeout(),
        Some(Instant::from_millis(PROBE_MS)),
        "membership's"
    );
    // At 12 s both are due: both fire, once each, however often we are woken.
    for _ in 0..2 {
        node.handle_timeout(at(12_000, wall(12_000)));
        assert_eq!(probe(&node), Some(12_000 + PROBE_MS));
        assert_eq!(anti_entropy(&node), Some(12_000 + AE_MS));
    }
    assert_eq!(node.poll_timeout(), Some(Instant::from_millis(15_000)));
}

#[test]
fn heartbeats_in_a_verified_peers_name_keep_nobody_alive() {
    let mut node = node(at(0, WALL_MS));
    let peer: PeerId = "node-1".parse().expect("valid id");
    let mut advert = node.membership().self_advert().clone();
    advert.peer_id = peer.clone();
    advert.address = "10.0.0.2".into();
    let proof = Caller::Proven(peer.clone());
    node.handle_register(advert, &proof, at(1, WALL_MS + 1))
        .expect("registered over its own connection");
    assert_eq!(
        node.handle_heartbeat(&peer, &proof, at(2, WALL_MS + 2)),
        HeartbeatOutcome::Accepted
    );
    let spoofer = Caller::Unproven {
        ip: Some("192.0.2.66".into()),
    };
    assert_eq!(
        node.handle_heartbeat(&peer, &spoofer, at(3, WALL_MS + 3)),
        HeartbeatOutcome::Unproven
    );
    let seen = node.membership().peer(&peer).expect("known").node.last_seen;
    assert_eq!(
        seen,
        Timestamp::from_millis(WALL_MS + 2),
        "the spoof did not refresh it"
    );
    assert_eq!(
        node.handle_ping(Some(&peer), &spoofer, at(4, WALL_MS + 4)),
        Err(Refusal::NotProven)
    );
    assert!(
        node.handle_exchange(&peer, &spoofer, vec![], 10, at(5, WALL_MS + 5))
            .is_err()
    );
}

/// The crash preset's lost transactions (issue 17): pulls from a peer that was SIGKILLed
/// failed five times and opened its circuit for the 5-minute reset; restarted a second later,
/// it heartbeated us, but we refused every call to it (pulls, answers to its digests) for the
/// whole reset, so what only it held never spread. Its heartbeat now closes the circuit.
#[test]
fn a_heartbeat_from_a_peer_whose_circuit_opened_closes_it() {
    let mut node = node(at(0, WALL_MS));
    let peer: PeerId = "node-1".parse().expect("valid id");
    let id = crate::model::TxHash::of(b"tx").id();
    for t in 1..=5 {
        node.handle_fetched(&peer, id, Err(FetchFailure::Timeout), at(t, WALL_MS + t));
    }
    while node.poll_output().is_some() {}
    let open = node.links().circuit(&peer, Instant::from_millis(6));
    assert!(
        matches!(open, crate::breaker::BreakerState::Open { .. }),
        "{open:?}"
    );
    node.handle_heartbeat(&peer, &Caller::UNKNOWN, at(7, WALL_MS + 7));
    let state = node.links().circuit(&peer, Instant::from_millis(8));
    assert_eq!(state, crate::breaker::BreakerState::Closed);
}

/// A going-away takes a peer out at once (not after `failure_threshold` missed contacts),
/// with its own event; its next heartbeat brings it back.
#[test]
fn a_going_away_makes_a_peer_unreachable_at_once_and_a_heartbeat_brings_it_back() {
    use crate::membership::{MembershipEvent, PeerHealth};
    let mut node = node(at(0, WALL_MS));
    let peer: PeerId = "node-1".parse().expect("valid id");
    let mut advert = node.membership().self_advert().clone();
    advert.peer_id = peer.clone();
    advert.address = "10.0.0.2".into();
    node.handle_register(advert, &Caller::UNKNOWN, at(1, WALL_MS + 1))
        .expect("registered");
    while node.poll_output().is_some() {}
    let health = |n: &Node| n.membership().peer(&peer).map(|p| p.health);
    assert_eq!(health(&node), Some(PeerHealth::Alive));
    node.handle_leaving(&peer, &Caller::UNKNOWN, at(2, WALL_MS + 2))
        .expect("taken");
    let mut left = false;
    while let Some(output) = node.poll_output() {
        left |= matches!(output, Output::Event(Event::Membership(MembershipEvent::PeerLeft { ref peer_id })) if *peer_id == peer);
    }
    assert!(left, "PeerLeft emitted");
    assert_eq!(health(&node), Some(PeerHealth::Unreachable));
    node.handle_heartbeat(&peer, &Caller::UNKNOWN, at(3, WALL_MS + 3));
    assert_eq!(health(&node), Some(PeerHealth::Alive));
}
