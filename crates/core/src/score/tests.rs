use std::time::Duration;

use super::*;

fn id(n: usize) -> PeerId {
    format!("peer-{n}").parse().expect("valid id")
}

fn p(n: usize) -> BanSubject {
    BanSubject::Peer(id(n))
}

fn at(secs: u64) -> Now {
    Now::from_millis(secs * 1000)
}

#[test]
fn two_wrong_bodies_cross_the_threshold_one_does_not() {
    let mut r = Reputation::new(ScoreConfig::default());
    assert!(!r.penalize(&p(1), Offence::WrongBody, at(0).mono));
    assert!(r.penalize(&p(1), Offence::WrongBody, at(1).mono));
}

#[test]
fn scores_decay_towards_zero_with_the_half_life() {
    let mut r = Reputation::new(ScoreConfig::default());
    r.penalize(&p(1), Offence::WrongBody, at(0).mono);
    let half = ScoreConfig::default().half_life.as_secs();
    let later = r.score(&p(1), at(half).mono);
    assert!((later + 20.0).abs() < 1e-9, "halved: {later}");
    // A second offence three half-lives later no longer bans: the first is mostly forgiven.
    assert!(!r.penalize(&p(1), Offence::WrongBody, at(3 * half).mono));
    assert!(r.score(&p(1), at(half * 20).mono).abs() < NEGLIGIBLE);
}

#[test]
fn deliveries_add_up_to_the_cap_and_absorb_a_penalty() {
    let mut r = Reputation::new(ScoreConfig::default());
    for _ in 0..100 {
        r.reward(&p(1), at(0).mono);
    }
    assert_eq!(r.score(&p(1), at(0).mono), 20.0);
    // Three violations ban a new peer; a peer with credit needs a fourth.
    for _ in 0..3 {
        assert!(!r.penalize(&p(1), Offence::ProtocolViolation, at(0).mono));
    }
    assert!(r.penalize(&p(1), Offence::ProtocolViolation, at(0).mono));
    for _ in 0..2 {
        r.penalize(&p(2), Offence::ProtocolViolation, at(0).mono);
    }
    assert!(r.penalize(&p(2), Offence::ProtocolViolation, at(0).mono));
}

#[test]
fn disabled_scores_count_but_never_ban() {
    let config = ScoreConfig {
        enabled: false,
        ..Default::default()
    };
    let mut r = Reputation::new(config);
    for _ in 0..10 {
        assert!(!r.penalize(&p(1), Offence::WrongBody, at(0).mono));
    }
}

#[test]
fn ban_length_doubles_per_strike_up_to_the_cap() {
    let mut r = Reputation::new(ScoreConfig::default());
    let subject = BanSubject::Peer(id(1));
    let lengths: Vec<u64> = (0..4)
        .map(|_| {
            let record = r.strike(subject.clone(), "wrong_body", at(0));
            record.until.since(at(0).wall).as_secs()
        })
        .collect();
    assert_eq!(lengths, [60, 120, 240, 480]);
    assert_eq!(r.strikes(&subject), 4);
    assert_eq!(r.ban_length(40), Duration::from_secs(24 * 60 * 60));
}

#[test]
fn strike_counts_survive_a_restart_through_restore() {
    let mut first = Reputation::new(ScoreConfig::default());
    let subject = BanSubject::Address("198.51.100.7".into());
    first.strike(subject.clone(), "unserved", at(0));
    let record = first.strike(subject.clone(), "unserved", at(0));
    let mut second = Reputation::new(ScoreConfig::default());
    second.restore(&record, at(1).wall);
    assert!(second.is_banned_address("198.51.100.7", at(1).wall));
    let next = second.strike(subject, "unserved", at(1000));
    assert_eq!(next.strikes, 3);
    assert_eq!(next.until.since(at(1000).wall), Duration::from_secs(240));
}

#[test]
fn the_score_map_stays_bounded_dropping_decayed_entries_first() {
    let config = ScoreConfig {
        max_tracked: 8,
        ..Default::default()
    };
    let mut r = Reputation::new(config);
    for n in 0..8 {
        r.penalize(&p(n), Offence::LimitExceeded, at(0).mono);
    }
    // Long after, all of those decayed: they make room at once.
    r.penalize(&p(100), Offence::WrongBody, at(100_000).mono);
    assert_eq!(r.tracked(), 1);
    assert_eq!(r.stats().evicted, 8);
    // Without decayed entries, the one nearest 0 goes.
    for n in 0..7 {
        r.penalize(&p(n), Offence::WrongBody, at(100_000).mono);
    }
    r.reward(&p(50), at(100_000).mono);
    assert_eq!(r.tracked(), 8);
    assert_eq!(r.stats().evicted, 9);
    assert!(
        r.score(&p(100), at(100_000).mono) < 0.0,
        "a bad score is kept"
    );
}

#[test]
fn subjects_round_trip_through_their_keys() {
    for subject in [
        BanSubject::Peer(id(3)),
        BanSubject::Address("2001:db8::1".into()),
    ] {
        assert_eq!(BanSubject::parse(&subject.key()), Some(subject));
    }
    assert_eq!(BanSubject::parse("nonsense"), None);
}

#[test]
fn address_bans_are_bounded_and_expire() {
    let mut r = Reputation::new(ScoreConfig::default());
    for n in 0..MAX_ADDRESS_BANS {
        assert!(r.ban_address(&format!("ip{n}"), at(10).wall, at(0).wall));
    }
    assert!(!r.ban_address("one-more", at(10).wall, at(0).wall));
    assert_eq!(r.stats().address_bans_refused, 1);
    assert!(
        r.ban_address("one-more", at(20).wall, at(11).wall),
        "expired ones made room"
    );
    assert!(!r.is_banned_address("ip0", at(11).wall));
}
