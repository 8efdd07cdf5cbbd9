use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use governor::clock::FakeRelativeClock;
use tonic::Code;

use super::*;

fn config() -> LimitsConfig {
    LimitsConfig {
        membership_per_second: 2,
        announced_transactions_per_second: 10,
        pulls_per_second: 100,
        pulls_in_flight: 2,
        received_bytes_per_second: 1_000,
        ..LimitsConfig::default()
    }
}

fn limiter() -> (Limiter<FakeRelativeClock>, FakeRelativeClock, Arc<Metrics>) {
    let clock = FakeRelativeClock::default();
    let metrics = Arc::new(Metrics::new().unwrap());
    let limiter = Limiter::with_clock(&config(), 1_000, metrics.clone(), clock.clone());
    (limiter, clock, metrics)
}

fn addr(last: u8) -> PeerKey {
    PeerKey::Addr(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)))
}

#[test]
fn a_rate_refuses_past_its_burst_and_refills_with_time() {
    let (limiter, clock, metrics) = limiter();
    let key = Some(addr(1));
    let membership =
        |l: &Limiter<FakeRelativeClock>| l.check(key.as_ref(), LimitKind::Membership, 1);
    assert!(membership(&limiter).is_ok());
    assert!(membership(&limiter).is_ok());
    let refused = membership(&limiter).unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(refused.message().contains("limits.membership_per_second"));
    // Another peer has its own bucket.
    assert!(
        limiter
            .check(Some(&addr(2)), LimitKind::Membership, 1)
            .is_ok()
    );
    clock.advance(Duration::from_millis(500));
    assert!(membership(&limiter).is_ok(), "one refilled after 1/rate");
    assert!(membership(&limiter).is_err());
    let text = metrics.render();
    assert!(
        text.contains("rate_limited_total{kind=\"membership\""),
        "the refusals are counted: {text}"
    );
}

#[test]
fn announced_ids_count_one_each_and_no_key_is_not_limited() {
    let (limiter, _clock, _) = limiter();
    let key = Some(PeerKey::Id("peer-a".parse().unwrap()));
    let announced = LimitKind::AnnouncedTransactions;
    assert!(limiter.check(key.as_ref(), announced, 8).is_ok());
    assert!(
        limiter.check(key.as_ref(), announced, 3).is_err(),
        "8 + 3 > 10"
    );
    assert!(limiter.check(key.as_ref(), announced, 2).is_ok());
    assert!(
        limiter.check(key.as_ref(), announced, 11).is_err(),
        "over a whole burst"
    );
    for _ in 0..100 {
        assert!(limiter.check(None, LimitKind::Membership, 1).is_ok());
    }
}

#[test]
fn pulls_in_flight_are_capped_until_a_guard_drops() {
    let (limiter, _clock, _) = limiter();
    let key = Some(addr(1));
    let first = limiter.pull(key.as_ref()).unwrap();
    let _second = limiter.pull(key.as_ref()).unwrap();
    let refused = limiter.pull(key.as_ref()).err().unwrap();
    assert!(refused.message().contains("pulls_in_flight"));
    drop(first);
    assert!(limiter.pull(key.as_ref()).is_ok());
}

#[test]
fn bytes_wait_for_their_rate_or_are_refused_when_too_far_over() {
    let (limiter, clock, _) = limiter();
    let key = addr(1);
    let wait = |n: u32| {
        limiter.with_peer(&key, |p| {
            bytes_wait(&p.bytes, NonZeroU32::new(n).unwrap(), &clock)
        })
    };
    assert_eq!(wait(1_000), Some(Duration::ZERO), "a whole burst at once");
    let over = wait(500).unwrap();
    assert!(
        over > Duration::from_millis(400) && over <= Duration::from_millis(500),
        "{over:?}"
    );
    clock.advance(over);
    assert_eq!(wait(500), Some(Duration::ZERO), "passes once waited");
    assert_eq!(wait(1_001), None, "more than a burst never passes");
}

#[test]
fn the_map_of_peers_is_bounded_and_evicts_the_least_recent() {
    let (limiter, _clock, metrics) = limiter();
    for i in 0..MAX_TRACKED_PEERS + 5 {
        let ip = IpAddr::V4(Ipv4Addr::from(i as u32));
        let _ = limiter.check(Some(&PeerKey::Addr(ip)), LimitKind::Membership, 1);
    }
    assert_eq!(limiter.tracked(), MAX_TRACKED_PEERS);
    assert!(
        metrics.render().contains("rate_limiter_evictions_total 5"),
        "{}",
        metrics.render()
    );
}

#[test]
fn a_proven_id_is_the_key_else_the_address() {
    let remote = "10.1.2.3:5001".parse().unwrap();
    let id: PeerId = "peer-a".parse().unwrap();
    let proven = ConnInfo {
        remote: Some(remote),
        proven: Some(id.clone()),
        tls: true,
    };
    assert_eq!(PeerKey::of(Some(&proven)), Some(PeerKey::Id(id)));
    let unproven = ConnInfo {
        proven: None,
        ..proven
    };
    assert_eq!(
        PeerKey::of(Some(&unproven)),
        Some(PeerKey::Addr(remote.ip()))
    );
    assert_eq!(PeerKey::of(None), None);
}

#[test]
fn every_tenth_refusal_of_a_peer_is_told_to_the_score() {
    let (limiter, _clock, _metrics) = limiter();
    let told = Arc::new(Mutex::new(Vec::new()));
    let sink = told.clone();
    limiter.report_to(Box::new(move |key| sink.lock().unwrap().push(key.clone())));
    // Two within the burst pass; 25 refusals make two reports, and another peer's own.
    for _ in 0..27 {
        let _ = limiter.check(Some(&addr(1)), LimitKind::Membership, 1);
    }
    for _ in 0..12 {
        let _ = limiter.check(Some(&addr(2)), LimitKind::Membership, 1);
    }
    assert_eq!(*told.lock().unwrap(), vec![addr(1), addr(1), addr(2)]);
}
