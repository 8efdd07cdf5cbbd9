//! Circuit breakers: stop calling a peer that keeps failing, and try it again later.
//!
//! A [`CircuitBreaker`] is **Closed** (calls go through) until `threshold` calls in a row fail;
//! then it is **Open** and refuses every call for `reset`. After that it is **HalfOpen**: it
//! admits one trial call at a time; the trial's success closes it, its failure opens it again
//! for a fresh, longer reset. [`Breakers`] keeps one per peer, bounded.
//!
//! Which failures count (timeouts, refused connections, not an honest NOT_FOUND) is decided by
//! the caller, with [`RetryPolicy::is_peer_failure`](crate::backoff::RetryPolicy::is_peer_failure).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::model::{PeerId, Timestamp};

/// Breakers kept by [`Breakers::new`]: one per peer we talk to. Membership keeps at most
/// 1000 known peers (Sorcha `MaxPeersInList`); the rest is slack for peers that call us.
pub const MAX_BREAKERS: usize = 1024;

/// Why a breaker configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BreakerConfigError {
    /// A threshold of 0 would open the breaker before any call failed.
    #[error("circuit breaker threshold is 0: expected at least 1 consecutive failure")]
    ZeroThreshold,
    /// A zero reset would make an open breaker meaningless.
    #[error("circuit breaker reset is 0: expected at least 1 ms")]
    ZeroReset,
    /// The reset cap was below the first reset.
    #[error(
        "circuit breaker max reset {max_reset:?} is below reset {reset:?}: expected max_reset >= reset"
    )]
    MaxResetBelowReset {
        reset: Duration,
        max_reset: Duration,
    },
    /// A zero trial timeout would admit unlimited trials at once.
    #[error("circuit breaker trial timeout is 0: expected at least 1 ms")]
    ZeroTrialTimeout,
    /// A map that can hold no breaker.
    #[error("circuit breaker capacity is 0: expected at least 1")]
    ZeroCapacity,
}

/// Knobs of a [`CircuitBreaker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open a closed breaker.
    pub threshold: u32,
    /// How long the first trip keeps the breaker open.
    pub reset: Duration,
    /// Each failed trial doubles the reset, up to this; a successful trial brings it back to
    /// `reset`. Equal to `reset` turns the growth off (Sorcha's fixed break duration).
    pub max_reset: Duration,
    /// A trial not reported within this time is taken as lost (the caller dropped it), and
    /// the next call becomes a new trial, so a forgotten outcome cannot wedge the breaker.
    pub trial_timeout: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            // Sorcha design default (circuit breaker: 5 consecutive failures).
            threshold: 5,
            // Sorcha design default (circuit breaker: 5 minute break).
            reset: Duration::from_secs(5 * 60),
            // Wild guess: a peer down for long is tried about twice an hour (5, 10, 20, 30
            // min); membership forgets truly dead peers long before this matters much.
            max_reset: Duration::from_secs(30 * 60),
            // Twice Sorcha's PeerTimeoutSeconds (30): the daemon reports a timeout by then.
            trial_timeout: Duration::from_secs(60),
        }
    }
}

impl BreakerConfig {
    pub fn validate(&self) -> Result<(), BreakerConfigError> {
        if self.threshold == 0 {
            return Err(BreakerConfigError::ZeroThreshold);
        }
        if self.reset.is_zero() {
            return Err(BreakerConfigError::ZeroReset);
        }
        if self.max_reset < self.reset {
            return Err(BreakerConfigError::MaxResetBelowReset {
                reset: self.reset,
                max_reset: self.max_reset,
            });
        }
        if self.trial_timeout.is_zero() {
            return Err(BreakerConfigError::ZeroTrialTimeout);
        }
        Ok(())
    }
}

/// A breaker's state as seen at some `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls are refused until `until`.
    Open { until: Timestamp },
    /// One trial call at a time decides whether to close or open again.
    HalfOpen,
}

/// Leave to make a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// The breaker is closed.
    Normal,
    /// The one trial call of a half-open breaker: report its outcome promptly.
    Trial,
}

/// A call refused by an open breaker (or by a half-open one whose trial is under way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit to the peer is open: no calls before {} ms since the epoch", until.as_millis())]
pub struct Rejected {
    /// When the next call may be admitted.
    pub until: Timestamp,
}

/// Counters of one breaker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BreakerStats {
    /// Times the breaker opened (from Closed or from a failed trial).
    pub trips: u64,
    /// Calls refused.
    pub rejections: u64,
    /// Trial calls admitted while half-open.
    pub trials: u64,
    /// Trials never reported within `trial_timeout`, replaced by a new trial.
    pub trials_lost: u64,
    /// Outcomes reported while open (of calls admitted before the trip); they change nothing.
    pub outcomes_ignored: u64,
}

/// Where the breaker is; "half-open waiting for a trial" is `Open` with `until` passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Closed { failures: u32 },
    Open { until: Timestamp },
    Trial { started: Timestamp },
}

/// The circuit breaker of one peer.
///
/// Call order: [`check`] before every call to the peer, with the current time; a `Rejected`
/// means do not call (fail fast, or try another peer). For every admitted call, report its
/// outcome with [`record_success`] or [`record_failure`] (only failures that say the peer is
/// unhealthy). [`state`], [`stats`] and the other getters any time.
///
/// Outcomes carry no permit, so while half-open any reported outcome is taken as the trial's;
/// calls admitted before the trip finish within the daemon's timeout, long before the reset.
///
/// [`check`]: CircuitBreaker::check
/// [`record_success`]: CircuitBreaker::record_success
/// [`record_failure`]: CircuitBreaker::record_failure
/// [`state`]: CircuitBreaker::state
/// [`stats`]: CircuitBreaker::stats
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    phase: Phase,
    /// Length of the next open period: `reset`, doubled by every failed trial, capped.
    current_reset: Duration,
    stats: BreakerStats,
}

impl CircuitBreaker {
    /// A closed breaker; refuses invalid configurations.
    pub fn new(config: BreakerConfig) -> Result<Self, BreakerConfigError> {
        config.validate()?;
        Ok(Self::closed(config))
    }

    fn closed(config: BreakerConfig) -> Self {
        Self {
            config,
            phase: Phase::Closed { failures: 0 },
            current_reset: config.reset,
            stats: BreakerStats::default(),
        }
    }

    /// Admits or refuses a call at `now`. Moves an open breaker whose reset has passed to
    /// half-open and hands out its trial.
    pub fn check(&mut self, now: Timestamp) -> Result<Permit, Rejected> {
        let refused_until = match self.phase {
            Phase::Closed { .. } => return Ok(Permit::Normal),
            Phase::Open { until } if now < until => until,
            Phase::Open { .. } => return Ok(self.start_trial(now)),
            Phase::Trial { started } => {
                let expires = started.saturating_add(self.config.trial_timeout);
                if now < expires {
                    expires
                } else {
                    self.stats.trials_lost += 1;
                    return Ok(self.start_trial(now));
                }
            }
        };
        self.stats.rejections += 1;
        Err(Rejected {
            until: refused_until,
        })
    }

    fn start_trial(&mut self, now: Timestamp) -> Permit {
        self.stats.trials += 1;
        self.phase = Phase::Trial { started: now };
        Permit::Trial
    }

    /// An admitted call succeeded: clears the failure count, or closes a half-open breaker.
    pub fn record_success(&mut self, _now: Timestamp) {
        match self.phase {
            Phase::Closed { .. } | Phase::Trial { .. } => {
                self.phase = Phase::Closed { failures: 0 };
                self.current_reset = self.config.reset;
            }
            Phase::Open { .. } => self.stats.outcomes_ignored += 1,
        }
    }

    /// The peer showed it is up by calling us (not an outcome of our calls): an open or
    /// half-open breaker closes at once, with its reset back to the first one. A peer that
    /// restarted within its reset is otherwise refused for the whole of it (5 minutes by
    /// default), and everything only it holds waits that long.
    pub fn revive(&mut self) {
        if !matches!(self.phase, Phase::Closed { .. }) {
            self.phase = Phase::Closed { failures: 0 };
            self.current_reset = self.config.reset;
        }
    }

    /// An admitted call failed: counts towards the threshold, or re-opens a half-open breaker
    /// for a doubled (capped) reset starting at `now`.
    pub fn record_failure(&mut self, now: Timestamp) {
        match self.phase {
            Phase::Closed { failures } => {
                let failures = failures.saturating_add(1);
                if failures >= self.config.threshold {
                    self.trip(now);
                } else {
                    self.phase = Phase::Closed { failures };
                }
            }
            Phase::Trial { .. } => {
                self.current_reset = self
                    .current_reset
                    .saturating_mul(2)
                    .min(self.config.max_reset);
                self.trip(now);
            }
            Phase::Open { .. } => self.stats.outcomes_ignored += 1,
        }
    }

    fn trip(&mut self, now: Timestamp) {
        self.stats.trips += 1;
        self.phase = Phase::Open {
            until: now.saturating_add(self.current_reset),
        };
    }

    /// The state at `now` (an open breaker whose reset has passed reads as half-open).
    pub fn state(&self, now: Timestamp) -> BreakerState {
        match self.phase {
            Phase::Closed { .. } => BreakerState::Closed,
            Phase::Open { until } if now < until => BreakerState::Open { until },
            Phase::Open { .. } | Phase::Trial { .. } => BreakerState::HalfOpen,
        }
    }

    /// Failures in a row while closed (0 otherwise).
    pub fn consecutive_failures(&self) -> u32 {
        match self.phase {
            Phase::Closed { failures } => failures,
            _ => 0,
        }
    }

    /// How long the next trip (or the current open period) lasts.
    pub fn current_reset(&self) -> Duration {
        self.current_reset
    }

    pub fn stats(&self) -> &BreakerStats {
        &self.stats
    }

    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }
}

/// Counters of the map itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BreakersStats {
    /// Closed breakers dropped to make room (their failure count is forgotten).
    pub evicted_closed: u64,
    /// Open or half-open breakers dropped because every breaker was open: that peer may be
    /// called again before its reset. Non-zero means the capacity is too small.
    pub evicted_open: u64,
}

#[derive(Debug, Clone)]
struct Entry {
    breaker: CircuitBreaker,
    /// When it was last used: `Breakers::next_use` then.
    last_used: u64,
}

/// One [`CircuitBreaker`] per peer, at most `capacity` of them.
///
/// A peer's breaker is created the first time it is used and marked used by every call.
/// When the map is full the least recently used *closed* breaker makes room; only when none
/// is closed does the least recently used open one go, counted in
/// [`BreakersStats::evicted_open`].
///
/// Call order: as for [`CircuitBreaker`], with the peer id: [`Breakers::check`] before each
/// call, [`Breakers::record_success`] / [`Breakers::record_failure`] after it;
/// [`Breakers::remove`] when membership forgets the peer; getters any time.
#[derive(Debug, Clone)]
pub struct Breakers {
    config: BreakerConfig,
    capacity: usize,
    entries: BTreeMap<PeerId, Entry>,
    /// Counts uses: a counter, not a clock, so ties cannot happen. No use order is kept
    /// beside the entries (every call touches its peer, and keeping one was 5% of a
    /// simulation); an eviction looks for the least recently used instead.
    next_use: u64,
    stats: BreakersStats,
}

impl Breakers {
    /// A map of up to [`MAX_BREAKERS`] breakers.
    pub fn new(config: BreakerConfig) -> Result<Self, BreakerConfigError> {
        Self::with_capacity(config, MAX_BREAKERS)
    }

    pub fn with_capacity(
        config: BreakerConfig,
        capacity: usize,
    ) -> Result<Self, BreakerConfigError> {
        config.validate()?;
        if capacity == 0 {
            return Err(BreakerConfigError::ZeroCapacity);
        }
        Ok(Self {
            config,
            capacity,
            entries: BTreeMap::new(),
            next_use: 0,
            stats: BreakersStats::default(),
        })
    }

    /// [`CircuitBreaker::check`] of `peer`'s breaker.
    pub fn check(&mut self, peer: &PeerId, now: Timestamp) -> Result<Permit, Rejected> {
        self.touch(peer, now).check(now)
    }

    /// [`CircuitBreaker::record_success`] of `peer`'s breaker.
    pub fn record_success(&mut self, peer: &PeerId, now: Timestamp) {
        self.touch(peer, now).record_success(now);
    }

    /// [`CircuitBreaker::record_failure`] of `peer`'s breaker.
    pub fn record_failure(&mut self, peer: &PeerId, now: Timestamp) {
        self.touch(peer, now).record_failure(now);
    }

    /// [`CircuitBreaker::revive`] of `peer`'s breaker, if it has one.
    pub fn revive(&mut self, peer: &PeerId) {
        if let Some(entry) = self.entries.get_mut(peer) {
            entry.breaker.revive();
        }
    }

    /// `peer`'s state; a peer without a breaker is closed.
    pub fn state(&self, peer: &PeerId, now: Timestamp) -> BreakerState {
        self.entries
            .get(peer)
            .map_or(BreakerState::Closed, |e| e.breaker.state(now))
    }

    pub fn breaker(&self, peer: &PeerId) -> Option<&CircuitBreaker> {
        self.entries.get(peer).map(|e| &e.breaker)
    }

    /// Forgets `peer`'s breaker (the peer left membership).
    pub fn remove(&mut self, peer: &PeerId) -> Option<CircuitBreaker> {
        self.entries.remove(peer).map(|entry| entry.breaker)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn stats(&self) -> &BreakersStats {
        &self.stats
    }

    /// `peer`'s breaker, created if needed (evicting one if full), marked most recently used.
    fn touch(&mut self, peer: &PeerId, now: Timestamp) -> &mut CircuitBreaker {
        let use_id = self.next_use;
        self.next_use += 1;
        if !self.entries.contains_key(peer) {
            self.insert(peer, now);
        }
        let entry = self
            .entries
            .get_mut(peer)
            .expect("the entry was found or inserted just above");
        entry.last_used = use_id;
        &mut entry.breaker
    }

    /// A new closed breaker for `peer`, evicting one first if full.
    fn insert(&mut self, peer: &PeerId, now: Timestamp) {
        if self.entries.len() >= self.capacity {
            self.evict_one(now);
        }
        let entry = Entry {
            breaker: CircuitBreaker::closed(self.config),
            last_used: self.next_use,
        };
        self.entries.insert(peer.clone(), entry);
    }

    /// Drops the least recently used closed breaker, or else the least recently used one: a
    /// walk over all of them, only when the map is full.
    fn evict_one(&mut self, now: Timestamp) {
        let least_used = |closed_only: bool| {
            self.entries
                .iter()
                .filter(|(_, e)| !closed_only || e.breaker.state(now) == BreakerState::Closed)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(id, _)| id.clone())
        };
        let victim = if let Some(id) = least_used(true) {
            self.stats.evicted_closed += 1;
            id
        } else if let Some(id) = least_used(false) {
            self.stats.evicted_open += 1;
            id
        } else {
            return;
        };
        self.remove(&victim);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> Timestamp {
        Timestamp::from_millis(secs * 1000)
    }

    fn id(n: usize) -> PeerId {
        format!("node-{n}").parse().expect("test ids are valid")
    }

    /// Sorcha defaults (threshold 5, reset 5 min) with a 20 min cap and 60 s trial timeout.
    fn config() -> BreakerConfig {
        BreakerConfig {
            max_reset: Duration::from_secs(20 * 60),
            ..BreakerConfig::default()
        }
    }

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(config()).unwrap()
    }

    fn fail(b: &mut CircuitBreaker, times: u32, now: Timestamp) {
        for _ in 0..times {
            assert_eq!(b.check(now), Ok(Permit::Normal));
            b.record_failure(now);
        }
    }

    #[test]
    fn opens_exactly_at_the_threshold() {
        let mut b = breaker();
        fail(&mut b, 4, t(10));
        assert_eq!(b.state(t(10)), BreakerState::Closed);
        assert_eq!(b.consecutive_failures(), 4);
        assert_eq!(b.stats().trips, 0);

        fail(&mut b, 1, t(11));
        assert_eq!(b.state(t(11)), BreakerState::Open { until: t(311) });
        assert_eq!(b.stats().trips, 1);
    }

    #[test]
    fn rejects_while_open_and_counts() {
        let mut b = breaker();
        fail(&mut b, 5, t(0));
        assert_eq!(b.check(t(1)), Err(Rejected { until: t(300) }));
        assert_eq!(b.check(t(299)), Err(Rejected { until: t(300) }));
        let just_before = Timestamp::from_millis(t(300).as_millis() - 1);
        assert!(b.check(just_before).is_err());
        assert_eq!(b.stats().rejections, 3);
    }

    #[test]
    fn half_opens_after_reset_and_admits_one_trial() {
        let mut b = breaker();
        fail(&mut b, 5, t(0));
        assert_eq!(b.state(t(300)), BreakerState::HalfOpen);
        assert_eq!(b.check(t(300)), Ok(Permit::Trial));
        // The trial is under way: nobody else gets through until it reports or times out.
        assert_eq!(b.check(t(301)), Err(Rejected { until: t(360) }));
        assert_eq!(b.check(t(359)), Err(Rejected { until: t(360) }));
        assert_eq!(b.state(t(301)), BreakerState::HalfOpen);
        assert_eq!(b.stats().trials, 1);
    }

    #[test]
    fn successful_trial_closes() {
        let mut b = breaker();
        fail(&mut b, 5, t(0));
        assert_eq!(b.check(t(400)), Ok(Permit::Trial));
        b.record_success(t(401));
        assert_eq!(b.state(t(401)), BreakerState::Closed);
        assert_eq!(b.consecutive_failures(), 0);
        assert_eq!(b.check(t(402)), Ok(Permit::Normal));
        assert_eq!(b.check(t(402)), Ok(Permit::Normal));
    }

    #[test]
    fn failed_trial_reopens_with_restarted_and_doubled_reset() {
        let mut b = breaker();
        fail(&mut b, 5, t(0));
        assert_eq!(b.check(t(310)), Ok(Permit::Trial));
        b.record_failure(t(320));
        // Timer restarted at the trial's failure, for twice the reset.
        assert_eq!(b.state(t(320)), BreakerState::Open { until: t(920) });
        assert_eq!(b.check(t(919)), Err(Rejected { until: t(920) }));
        assert_eq!(b.stats().trips, 2);

        // Again: 20 min, then capped at 20 min.
        assert_eq!(b.check(t(920)), Ok(Permit::Trial));
        b.record_failure(t(920));
        assert_eq!(b.state(t(920)), BreakerState::Open { until: t(2120) });
        assert_eq!(b.check(t(2120)), Ok(Permit::Trial));
        b.record_failure(t(2120));
        assert_eq!(b.state(t(2120)), BreakerState::Open { until: t(3320) });

        // A successful trial brings the reset back to 5 min for the next trip.
        assert_eq!(b.check(t(3320)), Ok(Permit::Trial));
        b.record_success(t(3321));
        assert_eq!(b.current_reset(), Duration::from_secs(300));
        fail(&mut b, 5, t(4000));
        assert_eq!(b.state(t(4000)), BreakerState::Open { until: t(4300) });
    }

    #[test]
    fn growth_off_when_max_reset_equals_reset() {
        let mut b = CircuitBreaker::new(BreakerConfig {
            max_reset: Duration::from_secs(300),
            ..config()
        })
        .unwrap();
        fail(&mut b, 5, t(0));
        assert_eq!(b.check(t(300)), Ok(Permit::Trial));
        b.record_failure(t(300));
        assert_eq!(b.state(t(300)), BreakerState::Open { until: t(600) });
    }

    #[test]
    fn success_resets_failure_count_while_closed() {
        let mut b = breaker();
        fail(&mut b, 4, t(0));
        b.record_success(t(1));
        assert_eq!(b.consecutive_failures(), 0);
        fail(&mut b, 4, t(2));
        assert_eq!(
            b.state(t(2)),
            BreakerState::Closed,
            "4 + 4 is not 5 in a row"
        );
        fail(&mut b, 1, t(3));
        assert!(matches!(b.state(t(3)), BreakerState::Open { .. }));
    }

    #[test]
    fn lost_trial_is_replaced_after_trial_timeout() {
        let mut b = breaker();
        fail(&mut b, 5, t(0));
        assert_eq!(b.check(t(300)), Ok(Permit::Trial));
        assert_eq!(b.check(t(360)), Ok(Permit::Trial));
        assert_eq!(b.stats().trials, 2);
        assert_eq!(b.stats().trials_lost, 1);
    }

    #[test]
    fn late_outcomes_while_open_change_nothing() {
        let mut b = breaker();
        fail(&mut b, 5, t(0));
        b.record_success(t(1));
        b.record_failure(t(2));
        assert_eq!(b.state(t(2)), BreakerState::Open { until: t(300) });
        assert_eq!(b.stats().outcomes_ignored, 2);
        assert_eq!(b.stats().trips, 1);
    }

    #[test]
    fn invalid_configs_are_refused() {
        let mut c = [config(); 4];
        c[0].threshold = 0;
        c[1].reset = Duration::ZERO;
        c[2].max_reset = Duration::from_secs(1);
        c[3].trial_timeout = Duration::ZERO;
        let errors = c.map(|c| CircuitBreaker::new(c).unwrap_err());
        let max_reset = BreakerConfigError::MaxResetBelowReset {
            reset: Duration::from_secs(300),
            max_reset: Duration::from_secs(1),
        };
        use BreakerConfigError::{ZeroReset, ZeroThreshold, ZeroTrialTimeout};
        assert_eq!(
            errors,
            [ZeroThreshold, ZeroReset, max_reset, ZeroTrialTimeout]
        );
        let zero = Breakers::with_capacity(config(), 0).unwrap_err();
        assert_eq!(zero, BreakerConfigError::ZeroCapacity);
    }

    fn trip(map: &mut Breakers, peer: &PeerId, now: Timestamp) {
        for _ in 0..5 {
            map.record_failure(peer, now);
        }
        assert!(matches!(map.state(peer, now), BreakerState::Open { .. }));
    }

    #[test]
    fn map_keeps_one_breaker_per_peer() {
        let mut map = Breakers::new(config()).unwrap();
        assert_eq!(map.capacity(), MAX_BREAKERS);
        trip(&mut map, &id(1), t(0));
        assert_eq!(map.check(&id(1), t(1)), Err(Rejected { until: t(300) }));
        assert_eq!(map.check(&id(2), t(1)), Ok(Permit::Normal));
        assert_eq!(map.state(&id(3), t(1)), BreakerState::Closed);
        assert_eq!(map.len(), 2);
        assert!(map.remove(&id(1)).is_some());
        assert_eq!(map.check(&id(1), t(2)), Ok(Permit::Normal));
    }

    #[test]
    fn map_evicts_least_recently_used_closed_breaker() {
        let mut map = Breakers::with_capacity(config(), 3).unwrap();
        map.record_failure(&id(1), t(0));
        map.record_failure(&id(2), t(1));
        map.record_failure(&id(3), t(2));
        // Using 1 again makes 2 the least recently used.
        assert!(map.check(&id(1), t(3)).is_ok());
        assert!(map.check(&id(4), t(4)).is_ok());
        assert_eq!(map.len(), 3);
        assert!(map.breaker(&id(2)).is_none(), "2 was least recently used");
        assert!(map.breaker(&id(1)).is_some());
        assert_eq!(map.stats().evicted_closed, 1);
        assert_eq!(map.stats().evicted_open, 0);
    }

    #[test]
    fn map_prefers_closed_victims_over_older_open_ones() {
        let mut map = Breakers::with_capacity(config(), 3).unwrap();
        trip(&mut map, &id(1), t(0));
        trip(&mut map, &id(2), t(1));
        map.record_failure(&id(3), t(2));
        assert!(map.check(&id(4), t(3)).is_ok());
        assert!(map.breaker(&id(3)).is_none(), "the only closed one goes");
        assert!(matches!(map.state(&id(1), t(3)), BreakerState::Open { .. }));
        assert!(matches!(map.state(&id(2), t(3)), BreakerState::Open { .. }));
        assert_eq!(map.stats().evicted_open, 0);
    }

    #[test]
    fn map_full_of_open_breakers_evicts_the_oldest_and_counts_it() {
        let mut map = Breakers::with_capacity(config(), 2).unwrap();
        trip(&mut map, &id(1), t(0));
        trip(&mut map, &id(2), t(1));
        assert!(map.check(&id(3), t(2)).is_ok());
        assert_eq!(map.len(), 2);
        assert!(map.breaker(&id(1)).is_none());
        assert!(matches!(map.state(&id(2), t(2)), BreakerState::Open { .. }));
        assert_eq!(map.stats().evicted_open, 1);
        assert_eq!(map.stats().evicted_closed, 0);
    }
}
