//! Pulling bodies: pending hashes, their announcers, bounded fetch slots, timeouts, and the
//! SHA-256 check of what arrives.
//!
//! Each pending hash is fetched from one announcer at a time, in order of announcement
//! (skipping announcers whose per-peer slots are full). A timeout, a failure or a body whose
//! hash is wrong moves to the next announcer; when none is left the hash is abandoned
//! (anti-entropy can bring it back). A late body from an earlier announcer is still taken if it
//! checks out. Invariant: a pending hash is either fetching or in `waiting`, never both.

use std::time::Duration;

use super::{
    AnnounceEntry, FetchFailure, Gossip, GossipEvent, MAX_FETCH_SCAN, Origin, Output, Timer,
};
use crate::model::{PeerId, Timestamp, TxHash};

/// Peers remembered per pending hash as holding it, fetched from or not: they are not
/// announced to once the body is in. At least the gossip peers of a node (active set plus
/// as many that heartbeat it).
pub(super) const MAX_HEARD: usize = 16;

/// An announced hash we lack.
#[derive(Debug, Clone)]
pub(super) struct Pending {
    size: u64,
    register_id: Option<String>,
    hops: u32,
    /// In order of announcement; `announcers[..next]` were tried.
    announcers: Vec<PeerId>,
    next: usize,
    /// Announcers beyond `max_announcers`: not fetched from, not announced to.
    heard: Vec<PeerId>,
    /// The announcer being fetched from and the deadline.
    fetching: Option<(PeerId, Timestamp)>,
    /// Learned through anti-entropy.
    repair: bool,
}

enum Attempt {
    Started,
    /// Every untried announcer's slots are full.
    Busy,
    Exhausted,
    /// No longer pending.
    Gone,
}

impl Gossip {
    /// Records that `from` announced an unknown hash.
    pub(super) fn note_announcer(
        &mut self,
        from: &PeerId,
        entry: AnnounceEntry,
        repair: bool,
        _now: Timestamp,
    ) {
        if let Some(p) = self.pending.get_mut(&entry.hash) {
            if p.announcers.contains(from) || p.heard.contains(from) {
                return;
            }
            if p.announcers.len() >= self.config.max_announcers.max(1) {
                self.stats.dropped_announcers_full += 1;
                if p.heard.len() < MAX_HEARD {
                    p.heard.push(from.clone());
                }
                return;
            }
            p.announcers.push(from.clone());
            p.hops = p.hops.min(entry.hops);
            return;
        }
        if self.pending.len() >= self.config.max_pending {
            self.stats.dropped_pending_full += 1;
            return;
        }
        let pending = Pending {
            size: entry.size,
            register_id: entry.register_id,
            hops: entry.hops,
            announcers: vec![from.clone()],
            next: 0,
            heard: Vec::new(),
            fetching: None,
            repair,
        };
        self.pending.insert(entry.hash, pending);
        self.waiting.push_back(entry.hash);
    }

    /// Starts fetches for waiting hashes while slots are free.
    pub(super) fn start_fetches(&mut self, now: Timestamp) {
        let mut busy = Vec::new();
        let mut scanned = 0;
        while scanned < MAX_FETCH_SCAN && self.in_flight < self.config.max_in_flight {
            let Some(hash) = self.waiting.pop_front() else {
                break;
            };
            scanned += 1;
            match self.try_fetch(hash, now) {
                Attempt::Started | Attempt::Gone => {}
                Attempt::Busy => {
                    self.stats.fetches_deferred += 1;
                    busy.push(hash);
                }
                Attempt::Exhausted => self.abandon(&hash),
            }
        }
        for hash in busy.into_iter().rev() {
            self.waiting.push_front(hash);
        }
    }

    fn try_fetch(&mut self, hash: TxHash, now: Timestamp) -> Attempt {
        let per_peer = self.config.max_in_flight_per_peer.max(1);
        let Some(size) = self.pending.get(&hash).map(|p| p.size) else {
            return Attempt::Gone;
        };
        let deadline = now.saturating_add(self.fetch_timeout(size));
        let Some(p) = self.pending.get_mut(&hash) else {
            return Attempt::Gone;
        };
        if p.next >= p.announcers.len() {
            return Attempt::Exhausted;
        }
        if self.in_flight > 0
            && self.in_flight_bytes.saturating_add(size) > self.config.max_in_flight_bytes
        {
            return Attempt::Busy;
        }
        let free = (p.next..p.announcers.len()).find(|&i| {
            self.in_flight_per_peer
                .get(&p.announcers[i])
                .is_none_or(|n| *n < per_peer)
        });
        let Some(i) = free else {
            return Attempt::Busy;
        };
        p.announcers.swap(p.next, i);
        let from = p.announcers[p.next].clone();
        p.next += 1;
        p.fetching = Some((from.clone(), deadline));
        self.in_flight += 1;
        self.in_flight_bytes = self.in_flight_bytes.saturating_add(size);
        *self.in_flight_per_peer.entry(from.clone()).or_default() += 1;
        self.deadlines.insert((deadline, hash));
        self.stats.fetches += 1;
        self.push(Output::Fetch { from, hash, size });
        self.schedule_by(deadline, Timer::FetchTimeout);
        Attempt::Started
    }

    fn fetch_timeout(&self, size: u64) -> Duration {
        const MIB: u128 = 1 << 20;
        let per_mib = self.config.fetch_timeout_per_mib.as_millis();
        let extra = u64::try_from(per_mib * u128::from(size) / MIB).unwrap_or(u64::MAX);
        self.config
            .fetch_timeout
            .saturating_add(Duration::from_millis(extra))
    }

    /// Frees the fetch slot of `hash`, if it is fetching.
    fn release(&mut self, hash: &TxHash) {
        let Some((size, (from, deadline))) = self
            .pending
            .get_mut(hash)
            .and_then(|p| Some((p.size, p.fetching.take()?)))
        else {
            return;
        };
        self.in_flight -= 1;
        self.in_flight_bytes = self.in_flight_bytes.saturating_sub(size);
        if let Some(n) = self.in_flight_per_peer.get_mut(&from) {
            *n -= 1;
            if *n == 0 {
                self.in_flight_per_peer.remove(&from);
            }
        }
        self.deadlines.remove(&(deadline, *hash));
    }

    /// Stops tracking `hash` (it was accepted); returns every peer that announced it (up to
    /// the bounds) and the repair flag.
    pub(super) fn forget_pending(&mut self, hash: &TxHash) -> (Vec<PeerId>, bool) {
        let fetching = self.pending.get(hash).map(|p| p.fetching.is_some());
        match fetching {
            None => return (Vec::new(), false),
            Some(true) => self.release(hash),
            Some(false) => self.waiting.retain(|h| h != hash),
        }
        let mut p = self.pending.remove(hash).expect("checked present above");
        p.announcers.append(&mut p.heard);
        (p.announcers, p.repair)
    }

    /// The current fetch of `hash` failed: try the next announcer soon.
    fn fail_over(&mut self, hash: TxHash) {
        self.release(&hash);
        self.waiting.push_front(hash);
    }

    fn abandon(&mut self, hash: &TxHash) {
        self.pending.remove(hash);
        self.stats.fetches_abandoned += 1;
        self.emit(GossipEvent::FetchAbandoned { hash: *hash });
    }

    pub(super) fn on_fetched(
        &mut self,
        from: &PeerId,
        hash: TxHash,
        result: Result<Vec<u8>, FetchFailure>,
        now: Timestamp,
    ) {
        let current = self
            .pending
            .get(&hash)
            .and_then(|p| p.fetching.as_ref())
            .is_some_and(|(f, _)| f == from);
        let body = match result {
            Ok(body) => body,
            Err(_) => {
                if current {
                    self.stats.fetch_failures += 1;
                    self.fail_over(hash);
                }
                return;
            }
        };
        if body.len() as u64 > self.config.max_transaction_size {
            self.stats.refused_oversized_bodies += 1;
            if current {
                self.fail_over(hash);
            }
            return;
        }
        if self.dedup.contains(&hash, &mut self.stats) {
            self.stats.duplicate_bodies += 1;
            return;
        }
        if TxHash::of(&body) != hash {
            self.bad_body(from, hash);
            if current {
                self.fail_over(hash);
            }
            return;
        }
        let Some(p) = self.pending.get(&hash) else {
            self.stats.fetches_unexpected += 1;
            return;
        };
        let (register_id, hops) = (p.register_id.clone(), p.hops);
        self.accept(
            hash,
            body,
            register_id,
            Origin::Peer(from.clone()),
            hops,
            now,
        );
    }

    /// Fails over every fetch past its deadline and re-arms for the next one.
    pub(super) fn on_fetch_deadlines(&mut self, now: Timestamp) {
        while let Some(&(deadline, hash)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.stats.fetch_timeouts += 1;
            self.fail_over(hash);
            // `fail_over` removed the deadline; guard against a stale one looping forever.
            self.deadlines.remove(&(deadline, hash));
        }
        if let Some(&(next, _)) = self.deadlines.first() {
            self.schedule_by(next, Timer::FetchTimeout);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::super::*;

    fn h(n: usize) -> TxHash {
        entry(n, 1).hash
    }

    /// Node 0 with peers 1..=3, told about entry 1 by `announcers` in order.
    fn announced_by(announcers: &[usize], config: GossipConfig) -> (Gossip, Vec<Output>) {
        let mut g = node(0, 1..=3, config);
        let mut out = Vec::new();
        for &a in announcers {
            g.handle_message(&id(a), announce(vec![entry(1, 1)]), ms(0));
            out.extend(drain(&mut g));
        }
        (g, out)
    }

    #[test]
    fn one_fetch_per_hash_then_the_next_announcer_on_timeout() {
        let (mut g, out) = announced_by(&[1, 2], quiet());
        assert_eq!(
            fetches(&out),
            vec![(id(1), h(1))],
            "only the first announcer"
        );
        let deadline = out
            .iter()
            .find_map(|o| match o {
                Output::ScheduleTimer {
                    at,
                    timer: Timer::FetchTimeout,
                } => Some(*at),
                _ => None,
            })
            .expect("timeout armed");
        let timeout = quiet().fetch_timeout.as_millis() as u64;
        assert_eq!(deadline, ms(timeout));
        g.handle_timer(Timer::FetchTimeout, ms(timeout - 1));
        assert!(drain(&mut g).is_empty(), "not due yet");
        g.handle_timer(Timer::FetchTimeout, deadline);
        assert_eq!(fetches(&drain(&mut g)), vec![(id(2), h(1))]);
        assert_eq!(g.stats().fetch_timeouts, 1);
        g.handle_fetched(&id(2), h(1), Ok(body(1)), ms(timeout + 100));
        assert_eq!(delivered(&drain(&mut g)), vec![h(1)]);
        // The first announcer answers late: a duplicate, not a second delivery.
        g.handle_fetched(&id(1), h(1), Ok(body(1)), ms(timeout + 200));
        assert!(delivered(&drain(&mut g)).is_empty());
        assert_eq!(g.stats().duplicate_bodies, 1);
    }

    #[test]
    fn failures_move_on_and_exhaustion_abandons() {
        let (mut g, _) = announced_by(&[1, 2], quiet());
        g.handle_fetched(&id(1), h(1), Err(FetchFailure::NotFound), ms(10));
        assert_eq!(fetches(&drain(&mut g)), vec![(id(2), h(1))]);
        g.handle_fetched(&id(2), h(1), Err(FetchFailure::Unreachable), ms(20));
        let out = drain(&mut g);
        assert!(fetches(&out).is_empty());
        assert_eq!(
            events(&out),
            vec![GossipEvent::FetchAbandoned { hash: h(1) }]
        );
        assert_eq!((g.pending_count(), g.in_flight()), (0, 0));
        assert_eq!(g.stats().fetch_failures, 2);
        assert_eq!(g.stats().fetches_abandoned, 1);
    }

    #[test]
    fn a_body_with_the_wrong_hash_is_counted_and_the_next_announcer_tried() {
        let (mut g, _) = announced_by(&[1, 2], quiet());
        g.handle_fetched(&id(1), h(1), Ok(body(2)), ms(10));
        let out = drain(&mut g);
        assert!(delivered(&out).is_empty() && stored(&out).is_empty());
        assert_eq!(
            events(&out),
            vec![GossipEvent::BadBody {
                from: id(1),
                hash: h(1)
            }]
        );
        assert_eq!(fetches(&out), vec![(id(2), h(1))]);
        assert_eq!(g.stats().bad_bodies, 1);
        g.handle_fetched(&id(2), h(1), Ok(body(1)), ms(20));
        assert_eq!(delivered(&drain(&mut g)), vec![h(1)]);
    }

    #[test]
    fn announcers_per_hash_are_bounded() {
        let config = GossipConfig {
            max_announcers: 2,
            ..quiet()
        };
        let (g, _) = announced_by(&[1, 2, 3], config);
        assert_eq!(g.stats().dropped_announcers_full, 1);
    }

    #[test]
    fn the_pending_map_is_bounded() {
        let config = GossipConfig {
            max_pending: 2,
            ..quiet()
        };
        let mut g = node(0, [1], config);
        let entries = (0..3).map(|n| entry(n, 1)).collect();
        g.handle_message(&id(1), announce(entries), ms(0));
        assert_eq!(g.pending_count(), 2);
        assert_eq!(g.stats().dropped_pending_full, 1);
    }

    #[test]
    fn fetch_slots_are_bounded_globally_and_per_peer() {
        let config = GossipConfig {
            max_in_flight: 2,
            max_in_flight_per_peer: 1,
            ..quiet()
        };
        let mut g = node(0, [1, 2], config);
        let three = || (0..3).map(|n| entry(n, 1)).collect::<Vec<_>>();
        g.handle_message(&id(1), announce(three()), ms(0));
        assert_eq!(fetches(&drain(&mut g)), vec![(id(1), h(0))], "one per peer");
        g.handle_message(&id(2), announce(three()), ms(1));
        assert_eq!(
            fetches(&drain(&mut g)),
            vec![(id(2), h(1))],
            "the other peer's slot"
        );
        assert_eq!(g.in_flight(), 2);
        assert!(g.stats().fetches_deferred > 0);
        g.handle_fetched(&id(1), h(0), Ok(body(0)), ms(10));
        assert_eq!(
            fetches(&drain(&mut g)),
            vec![(id(1), h(2))],
            "freed slot reused"
        );
        assert_eq!(g.in_flight(), 2);
    }

    #[test]
    fn bytes_in_flight_are_bounded_but_one_large_body_still_comes() {
        let config = GossipConfig {
            max_in_flight_bytes: 100,
            ..quiet()
        };
        let mut g = node(0, [1], config);
        let sized = |n: usize, size: u64| AnnounceEntry {
            size,
            ..entry(n, 1)
        };
        // 150 bytes alone pass the bound (nothing else in flight); the next waits.
        g.handle_message(&id(1), announce(vec![sized(0, 150), sized(1, 10)]), ms(0));
        assert_eq!(fetches(&drain(&mut g)), vec![(id(1), h(0))]);
        assert!(g.stats().fetches_deferred > 0);
        g.handle_fetched(&id(1), h(0), Ok(body(0)), ms(5));
        assert_eq!(fetches(&drain(&mut g)), vec![(id(1), h(1))], "room again");
    }
}
