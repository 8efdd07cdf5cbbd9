//! Time as the core sees it. Deadlines and the durations the core measures itself (timers,
//! request and fetch timeouts, round trips, freshness windows) run on a monotonic [`Instant`],
//! so a wall-clock step moves none of them. The wall-clock [`Timestamp`] is used only where
//! the wire or the peer store needs one: adverts' `last_seen`, a peer's persisted
//! `first_seen` / `last_seen`, and ban expiry (a ban must survive a restart, and a monotonic
//! origin does not). Both come in together with every input as one [`Now`]; the core never
//! reads a clock. [`TimerTable`] is the one place a machine keeps its deadlines.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::model::Timestamp;

/// Milliseconds since an origin the runtime picks (the daemon: when it started; the
/// simulator: the start of the run). Only differences and order mean anything; arithmetic
/// saturates instead of panicking.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(u64);

impl Instant {
    pub const fn from_millis(ms: u64) -> Self {
        Self(ms)
    }

    pub const fn as_millis(self) -> u64 {
        self.0
    }

    pub fn saturating_add(self, d: Duration) -> Self {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self(self.0.saturating_add(ms))
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Instant) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

/// The current time as every input takes it: `mono` for deadlines and measured durations,
/// `wall` for what goes on the wire or into the peer store.
///
/// The API is the same on [`Node`](crate::node::Node),
/// [`Membership`](crate::membership::Membership) and [`Gossip`](crate::gossip::Gossip):
/// every input (and `new`) takes `now: Now`, each machine reads the half it needs (gossip only
/// ever reads `mono`), and [`TimerTable`] deadlines are `Instant`s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Now {
    pub mono: Instant,
    pub wall: Timestamp,
}

impl Now {
    pub const fn new(mono: Instant, wall: Timestamp) -> Self {
        Self { mono, wall }
    }

    /// Both clocks at `ms`: the simulator's virtual time, and tests.
    pub const fn from_millis(ms: u64) -> Self {
        Self {
            mono: Instant::from_millis(ms),
            wall: Timestamp::from_millis(ms),
        }
    }

    /// `d` later on both clocks.
    pub fn saturating_add(self, d: Duration) -> Self {
        Self {
            mono: self.mono.saturating_add(d),
            wall: self.wall.saturating_add(d),
        }
    }
}

/// A machine's armed timers: at most one deadline per timer kind `T` (arming a kind again
/// replaces its deadline), so the table is bounded by the number of kinds, by construction.
/// Work with many deadlines (outstanding requests, fetches) keeps them in its own bounded
/// table and arms one kind for the earliest, so nothing here grows with load and no timer
/// can be refused.
#[derive(Debug, Clone)]
pub struct TimerTable<T> {
    armed: BTreeMap<T, Instant>,
    /// The earliest of `armed`, kept on every change: the runtime asks after every input,
    /// far more often than timers change (the simulator measured the map walk at 2% of a run).
    next: Option<Instant>,
}

impl<T> Default for TimerTable<T> {
    fn default() -> Self {
        Self {
            armed: BTreeMap::new(),
            next: None,
        }
    }
}

impl<T: Ord + Copy> TimerTable<T> {
    /// Arms `timer` for `at`, replacing any earlier deadline of the same kind.
    pub fn arm(&mut self, timer: T, at: Instant) {
        self.armed.insert(timer, at);
        self.next = self.armed.values().min().copied();
    }

    /// Arms `timer` for `at` unless it is already armed for earlier.
    pub fn arm_by(&mut self, timer: T, at: Instant) {
        if self.armed.get(&timer).is_none_or(|armed| *armed > at) {
            self.arm(timer, at);
        }
    }

    /// When `timer` is due, if armed.
    pub fn get(&self, timer: T) -> Option<Instant> {
        self.armed.get(&timer).copied()
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Instant> {
        self.next
    }

    /// Disarms and returns `timer` if it is due at `now`; `false` leaves it armed.
    pub fn take_if_due(&mut self, timer: T, now: Instant) -> bool {
        if self.armed.get(&timer).is_none_or(|at| *at > now) {
            return false;
        }
        self.armed.remove(&timer);
        self.next = self.armed.values().min().copied();
        true
    }

    /// The timers due at `now`, earliest first (ties in kind order). A caller fires exactly
    /// these: one a firing re-arms for `now` or earlier waits for the next call, so a zero
    /// interval cannot spin.
    pub fn due(&self, now: Instant) -> Vec<T> {
        let mut due: Vec<(Instant, T)> = self
            .armed
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(t, at)| (*at, *t))
            .collect();
        due.sort();
        due.into_iter().map(|(_, t)| t).collect()
    }

    pub fn len(&self) -> usize {
        self.armed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.armed.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    #[test]
    fn instants_saturate_and_measure_forward_only() {
        assert_eq!(
            at(u64::MAX).saturating_add(Duration::from_secs(1)),
            at(u64::MAX)
        );
        assert_eq!(at(10).since(at(4)), Duration::from_millis(6));
        assert_eq!(at(4).since(at(10)), Duration::ZERO);
    }

    #[test]
    fn one_deadline_per_kind_and_due_ones_come_earliest_first() {
        let mut t = TimerTable::default();
        t.arm('a', at(30));
        t.arm('b', at(10));
        t.arm('a', at(20)); // replaces
        t.arm_by('b', at(15)); // later: kept at 10
        t.arm_by('c', at(20));
        assert_eq!(t.len(), 3);
        assert_eq!(t.next(), Some(at(10)));
        assert_eq!(t.due(at(9)), Vec::<char>::new());
        assert_eq!(t.due(at(20)), vec!['b', 'a', 'c']);
        assert!(!t.take_if_due('a', at(19)));
        assert!(t.take_if_due('a', at(20)));
        assert_eq!(t.get('a'), None);
        assert_eq!(t.next(), Some(at(10)));
        assert!(t.take_if_due('b', at(20)) && t.take_if_due('c', at(20)));
        assert_eq!(t.next(), None);
    }
}
