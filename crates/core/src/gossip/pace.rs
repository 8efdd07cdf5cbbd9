//! The node's rate of accepted transactions, for the eager push: above
//! `eager_push_max_rate` a node neither relays bodies by push nor waits for pushes, so every
//! transaction past its first hop goes by batched announcement and pull, as with the push
//! off. The origin still pushes its own (`Gossip::pushes_on`), up to `eager_push_max_rate`
//! of them per second: past it (a burst, such as the offline queue handed over 1,024 at a
//! time) they go by announcement too, batched, where one push message each would overflow
//! the peers' links (and the core's output queue) before the prunes could thin them.
//!
//! Why: a push is one message per transaction per eager peer, and the tree prunes a duplicate
//! path only once the prune comes back, so at high rates the pushes already in flight on
//! every redundant link arrive as duplicates, and a push delayed past `graft_timeout` by a
//! busy receiver grafts its announcer (another eager link, more duplicates). Batched
//! announcements and pulls cost one message per peer per flush whatever the rate, and at
//! such rates their waits are short against the queueing. `peer-lab run compare-gossipsub`
//! (20 nodes, 1,000 tx/s): body redundancy 1.5-2.9 with the push, 0 without
//! (`crates/lab/README.md`, session 11).
//!
//! Counted in buckets of [`BUCKET`]: busy as soon as the current bucket passes the limit,
//! and for the bucket after one that did; a bucket's worth of silence ends it.

use std::time::Duration;

use crate::time::Instant;

/// The rate's measuring window: short enough to follow a burst, long enough that a few
/// transactions arriving together at a low rate do not count as one.
pub const BUCKET: Duration = Duration::from_millis(250);

/// Accepted transactions per [`BUCKET`], and whether the last full bucket was over; and our
/// own submissions pushed in the current bucket.
#[derive(Debug, Clone, Default)]
pub struct Pace {
    start: Option<Instant>,
    count: u64,
    last_over: bool,
    own_pushed: u64,
}

impl Pace {
    /// Counts one accepted transaction at `now`; `max_rate` per second (0: no limit).
    pub fn note(&mut self, now: Instant, max_rate: u32) {
        if max_rate == 0 {
            return;
        }
        let limit = per_bucket(max_rate);
        match self.start {
            Some(start) if now < start.saturating_add(BUCKET) => {}
            Some(start) => {
                // Over only if the bucket that ended was, and it ended just now.
                let adjacent = now < start.saturating_add(BUCKET * 2);
                self.last_over = adjacent && self.count > limit;
                self.start = Some(now);
                self.count = 0;
                self.own_pushed = 0;
            }
            None => self.start = Some(now),
        }
        self.count += 1;
    }

    /// Whether the node accepts more than `max_rate` transactions per second now.
    pub fn busy(&self, max_rate: u32) -> bool {
        max_rate > 0 && (self.last_over || self.count > per_bucket(max_rate))
    }

    /// Whether one more of our own submissions may be pushed: not busy, or fewer than
    /// `max_rate` per second of them pushed in this bucket.
    pub fn own_push_room(&self, max_rate: u32) -> bool {
        !self.busy(max_rate) || self.own_pushed < per_bucket(max_rate)
    }

    /// Counts one of our own submissions pushed.
    pub fn note_own_push(&mut self) {
        self.own_pushed += 1;
    }
}

fn per_bucket(max_rate: u32) -> u64 {
    u64::from(max_rate) * BUCKET.as_millis() as u64 / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    #[test]
    fn busy_above_the_rate_and_quiet_again_after_a_calm_bucket() {
        let mut pace = Pace::default();
        // 400/s: 100 per 250 ms bucket.
        for i in 0..100 {
            pace.note(at(i), 400);
        }
        assert!(!pace.busy(400), "at the limit");
        pace.note(at(100), 400);
        assert!(pace.busy(400), "over within the bucket");
        pace.note(at(260), 400);
        assert!(pace.busy(400), "the bucket after an over one");
        pace.note(at(520), 400);
        assert!(!pace.busy(400), "one transaction in the last bucket");
        for i in 0..200 {
            pace.note(at(600 + i), 400);
        }
        pace.note(at(2_000), 400);
        assert!(!pace.busy(400), "a silent bucket between ends it");
    }

    /// A busy node still pushes its own submissions (up to the rate, then announces them),
    /// relays by announcement only, and pulls an announced transaction at once rather than
    /// waiting for its push.
    #[test]
    fn a_busy_node_pushes_only_its_own_and_waits_for_no_push() {
        use super::super::test_util::*;
        use super::super::{GossipConfig, GossipMessage};
        let pushes = |out: &[super::super::Output]| pushed_to(out).len();
        let config = GossipConfig {
            eager_push_max_size: 1024,
            eager_min_peers: 0,
            // Two per bucket.
            eager_push_max_rate: 8,
            ..quiet()
        };
        let mut g = node(0, 1..=3, config);
        let relay = |n: usize| GossipMessage::Push {
            entry: entry(n, 1),
            body: body(n),
        };
        for n in 10..=11 {
            g.handle_message(&id(1), relay(n), ms(n as u64));
            assert_eq!(pushes(&drain(&mut g)), 2, "relayed to the two others");
        }
        g.handle_message(&id(1), relay(12), ms(12));
        assert_eq!(pushes(&drain(&mut g)), 0, "busy: relayed by announcement");
        for n in 1..=2 {
            g.submit(body(n), None, ms(13)).expect("valid");
            assert_eq!(pushes(&drain(&mut g)), 3, "our own, pushed to all three");
        }
        // Two of our own pushed in this bucket: the rate.
        g.submit(body(3), None, ms(14)).expect("valid");
        g.submit(body(4), None, ms(14)).expect("valid");
        let mut out = drain(&mut g);
        assert_eq!(pushes(&out), 0, "past the rate our own are not pushed");
        out.extend(flush(&mut g, ms(60)));
        let ours: Vec<_> = [3, 4]
            .map(|n| super::super::TxHash::of(&body(n)).id())
            .into();
        let announced = announces(&out)
            .iter()
            .flat_map(|(_, entries)| entries)
            .filter(|e| ours.contains(&e.id))
            .count();
        assert_eq!(announced, 2 * 3, "but announced to all three");
        g.handle_message(&id(2), announce(vec![entry(20, 1)]), ms(70));
        assert_eq!(fetches(&drain(&mut g)).len(), 1, "pulled at once");
        assert_eq!(g.stats().pushes_awaited, 0);
    }

    #[test]
    fn no_limit_is_never_busy() {
        let mut pace = Pace::default();
        for i in 0..10_000 {
            pace.note(at(i / 10), 0);
        }
        assert!(!pace.busy(0));
    }
}
