//! Who may speak for a peer id: proofs, claims, and the unverified share.

use super::test_util::*;
use super::*;
use crate::model::Caller;

fn proven(n: usize) -> Caller {
    Caller::Proven(id(n))
}

fn plaintext() -> Caller {
    Caller::Unproven {
        ip: Some("192.0.2.66".into()),
    }
}

/// Registers peer `n` as the daemon does: claim checked, then handled, then proven.
fn register(
    m: &mut Membership,
    advert: PeerAdvert,
    caller: &Caller,
    now: Now,
) -> Result<(), Refusal> {
    if m.check_claim(&advert.peer_id, caller)? {
        m.handle_register_proven(advert, now)?;
    } else {
        m.handle_register(advert, now)?;
    }
    Ok(())
}

#[test]
fn a_verified_peer_cannot_be_redirected_or_kept_alive_over_plaintext() {
    let mut m = machine(0, vec![], vec![], MembershipConfig::default(), t(0));
    register(&mut m, advert(1, t(1)), &proven(1), t(1)).expect("proven registration");
    assert!(m.peer(&id(1)).expect("known").node.verified);
    drain(&mut m);

    let mut spoofed = advert(1, t(2));
    spoofed.address = "192.0.2.66".into();
    assert_eq!(
        register(&mut m, spoofed.clone(), &plaintext(), t(2)),
        Err(Refusal::NotProven)
    );
    // (`node-1` is a name, so another certificate is no proof at all rather than a
    // mismatch: see the named-peer test.)
    assert_eq!(
        register(&mut m, spoofed, &proven(7), t(2)),
        Err(Refusal::NotProven),
        "another peer's certificate does not speak for node-1"
    );
    assert_eq!(m.peer(&id(1)).expect("known").node.address, addr(1));
    assert_eq!(m.check_claim(&id(1), &plaintext()), Err(Refusal::NotProven));
    assert_eq!(m.stats().refused_not_proven, 3);
    assert!(drain(&mut m).iter().any(|o| matches!(
        o,
        Output::Event(MembershipEvent::ClaimRefused {
            why: Refusal::NotProven,
            ..
        })
    )));

    // Its own connection may move it.
    let mut moved = advert(1, t(3));
    moved.address = "10.9.9.9".into();
    register(&mut m, moved, &proven(1), t(3)).expect("its own proof");
    assert_eq!(m.peer(&id(1)).expect("known").node.address, "10.9.9.9");
}

#[test]
fn unproven_peers_are_taken_until_someone_proves_the_id() {
    let mut m = machine(0, vec![], vec![], MembershipConfig::default(), t(0));
    register(&mut m, advert(2, t(1)), &plaintext(), t(1)).expect("unverified is allowed");
    assert!(!m.peer(&id(2)).expect("known").node.verified);
    assert_eq!(m.unverified_count(), 1);
    register(&mut m, advert(2, t(2)), &proven(2), t(2)).expect("proof upgrades");
    assert!(m.peer(&id(2)).expect("known").node.verified);
    assert_eq!(m.unverified_count(), 0);
    assert_eq!(m.stats().peers_verified, 1);
    assert_eq!(
        register(&mut m, advert(2, t(3)), &plaintext(), t(3)),
        Err(Refusal::NotProven)
    );
}

#[test]
fn an_outbound_proof_marks_a_known_peer_and_persists_it() {
    let mut m = machine(0, vec![], vec![], MembershipConfig::default(), t(0));
    register(&mut m, advert(3, t(1)), &plaintext(), t(1)).expect("room");
    drain(&mut m);
    m.note_proven(&id(3));
    m.note_proven(&id(99)); // unknown: ignored
    let out = drain(&mut m);
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Persist(n) if n.peer_id == id(3) && n.verified))
    );
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Event(MembershipEvent::PeerVerified { peer_id }) if *peer_id == id(3)
    )));
    assert!(m.peer(&id(99)).is_none());
}

#[test]
fn unverified_peers_fill_only_their_share_and_never_displace_verified_ones() {
    let config = MembershipConfig {
        max_peers_in_list: 10,
        active_size: 4,
        unverified_share: 50,
        ..MembershipConfig::default()
    };
    let mut m = machine(0, vec![], vec![], config, t(0));
    for n in 1..=5 {
        register(&mut m, advert(n, t(1)), &plaintext(), t(1)).expect("within the share");
    }
    assert_eq!(m.active_count(), 2, "half the active set at most");
    // A sixth unverified peer replaces a passive unverified one, never grows the share.
    register(&mut m, advert(6, t(2)), &plaintext(), t(2)).expect("turns the share over");
    assert_eq!(m.unverified_count(), 5);
    for n in 10..=14 {
        register(&mut m, advert(n, t(3)), &proven(n), t(3)).expect("verified peers have room");
    }
    assert_eq!(m.known_count(), 10);
    assert_eq!(m.active_count(), 4);
    // The list is full: a verified newcomer displaces an unverified passive peer; unverified
    // newcomers turn over only unverified places, so no verified peer ever goes.
    register(&mut m, advert(15, t(4)), &proven(15), t(4)).expect("displaces unverified");
    assert_eq!(m.unverified_count(), 4);
    let verified_before: Vec<PeerId> = m
        .peers()
        .filter(|p| p.node.verified)
        .map(|p| p.node.peer_id.clone())
        .collect();
    for n in 20..40 {
        let _ = register(&mut m, advert(n, t(5)), &plaintext(), t(5));
    }
    let verified_after: Vec<PeerId> = m
        .peers()
        .filter(|p| p.node.verified)
        .map(|p| p.node.peer_id.clone())
        .collect();
    assert_eq!(verified_before, verified_after);
    assert!(m.unverified_count() <= 5);
}

#[test]
fn a_named_peer_cannot_be_proven_and_is_taken_as_unverified() {
    let mut m = machine(0, vec![], vec![], MembershipConfig::default(), t(0));
    // `node-1` is a name (not 40 hex digits): a certificate proving a key-derived id does
    // not speak for it, and is not a mismatch either.
    let derived: PeerId = "ab".repeat(20).parse().expect("valid id");
    assert!(derived.is_key_derived() && !id(1).is_key_derived());
    assert_eq!(
        m.check_claim(&id(1), &Caller::Proven(derived.clone())),
        Ok(false)
    );
    register(
        &mut m,
        advert(1, t(1)),
        &Caller::Proven(derived.clone()),
        t(1),
    )
    .expect("unverified");
    assert!(!m.peer(&id(1)).expect("known").node.verified);
    // A key-derived claim under another key is a mismatch.
    let other: PeerId = "cd".repeat(20).parse().expect("valid id");
    assert_eq!(
        m.check_claim(&other, &Caller::Proven(derived)),
        Err(Refusal::IdMismatch)
    );
}
