//! Bounded dialling of hearsay: candidates learnt from others' lists and exchanges, which
//! have never answered us, are dialled (pinged, asked for their lists) at most
//! `dial_rate_per_second` a second (a GCRA token bucket, bursts of `dial_burst`), never
//! more than `max_dials_per_minute` distinct addresses a minute, and an address whose dial
//! failed waits an exponential backoff (bounded map, the soonest-expiring entry goes first).
//! Without this, 10,000 addresses pushed in one exchange made a node dial 975 of them in 8 s:
//! anyone could point its connections at a victim. Peers that answered us, bootstrap nodes
//! and the active set are not hearsay and are never held back here.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use super::{Membership, PeerHealth, Timer};
use crate::model::{PeerId, PeerNode};
use crate::time::{Instant, Now};

/// Addresses kept in backoff at once.
pub const MAX_DIAL_BACKOFF: usize = 4096;

/// First wait after a failed dial, doubled per further failure...
const BACKOFF_BASE: Duration = Duration::from_secs(10);
/// ... up to this (the hour after which unheard-of candidates are forgotten anyway is longer).
const BACKOFF_CAP: Duration = Duration::from_secs(10 * 60);

/// The window of the distinct-address cap.
const WINDOW: Duration = Duration::from_secs(60);

/// Why a dial of hearsay was not made now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialRefusal {
    /// Over `dial_rate_per_second`.
    Rate,
    /// `max_dials_per_minute` distinct addresses were dialled in the last minute.
    DistinctCap,
    /// The address failed lately and is backing off.
    Backoff,
}

#[derive(Debug, Clone, Copy)]
struct Failed {
    failures: u32,
    until: Instant,
}

/// The gate every hearsay dial passes.
#[derive(Debug, Default)]
pub(super) struct DialGate {
    /// GCRA's theoretical arrival time: the bucket is empty until then.
    tat: Instant,
    /// The burst as a time: dials of a burst times the interval between dials.
    burst: Duration,
    /// Distinct addresses dialled in the last `WINDOW`, oldest first (bounded by the cap).
    recent: VecDeque<(Instant, String)>,
    backoff: BTreeMap<String, Failed>,
}

impl DialGate {
    /// Lets a dial of `address` go at `now`, or says why not: `limits.0` dials a second in
    /// bursts of `limits.1`, `distinct` addresses a minute.
    pub(super) fn admit(
        &mut self,
        address: &str,
        limits: (u32, u32),
        distinct: usize,
        now: Instant,
    ) -> Result<(), DialRefusal> {
        if self.backoff.get(address).is_some_and(|f| f.until > now) {
            return Err(DialRefusal::Backoff);
        }
        let interval = Duration::from_millis(1000 / u64::from(limits.0.max(1)));
        self.burst = interval.saturating_mul(limits.1.max(1));
        let burst = self.burst;
        let tat = self.tat.max(now);
        if tat.since(now) >= burst {
            return Err(DialRefusal::Rate);
        }
        while self
            .recent
            .front()
            .is_some_and(|(at, _)| now.since(*at) >= WINDOW)
        {
            self.recent.pop_front();
        }
        let seen = self.recent.iter().any(|(_, a)| a == address);
        if !seen && self.recent.len() >= distinct {
            return Err(DialRefusal::DistinctCap);
        }
        self.tat = tat.saturating_add(interval);
        if !seen {
            self.recent.push_back((now, address.to_owned()));
        }
        Ok(())
    }

    /// When a dial refused for `why` may be tried again.
    pub(super) fn retry_at(&self, why: DialRefusal, now: Instant) -> Instant {
        match why {
            DialRefusal::Rate => {
                let burst = u64::try_from(self.burst.as_millis()).unwrap_or(u64::MAX);
                let ms = self.tat.as_millis().saturating_sub(burst);
                Instant::from_millis(ms.max(now.as_millis() + 1))
            }
            DialRefusal::DistinctCap => self
                .recent
                .front()
                .map_or(now, |(at, _)| at.saturating_add(WINDOW)),
            // Another candidate may be ready sooner; the probe tick retries this one.
            DialRefusal::Backoff => now.saturating_add(Duration::from_secs(1)),
        }
    }

    /// A dial of `address` failed: it waits, twice as long as last time.
    pub(super) fn failed(&mut self, address: &str, now: Instant) {
        let failures = self.backoff.get(address).map_or(0, |f| f.failures) + 1;
        let wait = BACKOFF_BASE
            .saturating_mul(1u32 << (failures - 1).min(16))
            .min(BACKOFF_CAP);
        if !self.backoff.contains_key(address) && self.backoff.len() >= MAX_DIAL_BACKOFF {
            let soonest = self
                .backoff
                .iter()
                .min_by_key(|(_, f)| f.until)
                .map(|(a, _)| a.clone());
            if let Some(soonest) = soonest {
                self.backoff.remove(&soonest);
            }
        }
        let until = now.saturating_add(wait);
        self.backoff
            .insert(address.to_owned(), Failed { failures, until });
    }

    /// `address` answered: no more backoff.
    pub(super) fn answered(&mut self, address: &str) {
        self.backoff.remove(address);
    }

    /// Addresses in backoff (at most `MAX_DIAL_BACKOFF`).
    pub(super) fn backing_off(&self) -> usize {
        self.backoff.len()
    }
}

/// What the gate counts a peer's address as: host and port (loopback labs run many nodes on
/// one host).
pub(super) fn key(node: &PeerNode) -> String {
    format!("{}:{}", node.address, node.port)
}

impl Membership {
    /// Hearsay addresses backing off after a failed dial (at most `MAX_DIAL_BACKOFF`).
    pub fn dials_backing_off(&self) -> usize {
        self.dials.backing_off()
    }

    /// Whether `id` may be dialled now. Peers that answered us go at once; hearsay
    /// candidates pass the gate, and a refusal is counted and arms the dial timer for when
    /// it may go.
    pub(super) fn may_dial(&mut self, id: &PeerId, now: Now) -> Result<(), DialRefusal> {
        let Some(known) = self.peers.get(id) else {
            return Ok(());
        };
        if known.health != PeerHealth::Candidate || known.node.is_bootstrap {
            return Ok(());
        }
        let address = key(&known.node);
        let limits = (self.config.dial_rate_per_second, self.config.dial_burst);
        let distinct = self.config.max_dials_per_minute;
        match self.dials.admit(&address, limits, distinct, now.mono) {
            Ok(()) => {
                self.stats.hearsay_dials += 1;
                Ok(())
            }
            Err(why) => {
                let counter = match why {
                    DialRefusal::Rate => &mut self.stats.dials_deferred_rate,
                    DialRefusal::DistinctCap => &mut self.stats.dials_deferred_distinct_cap,
                    DialRefusal::Backoff => &mut self.stats.dials_deferred_backoff,
                };
                *counter += 1;
                let at = self.dials.retry_at(why, now.mono);
                self.timers.arm_by(Timer::Dial, at);
                Err(why)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Instant {
        Instant::from_millis(n)
    }

    #[test]
    fn dials_go_at_the_rate_after_a_one_second_burst() {
        let mut gate = DialGate::default();
        let mut admitted = 0;
        for t in 0..10_000u64 {
            // 10,000 different addresses asked for, one each millisecond, for 10 s.
            if gate.admit(&format!("a{t}"), (5, 5), 1000, ms(t)).is_ok() {
                admitted += 1;
            }
        }
        // 5 in the first second's burst, then 5 a second: at most rate x (time + 1 s).
        assert!(admitted <= 5 * 11, "{admitted}");
        assert!(admitted >= 5 * 10, "{admitted}");
    }

    #[test]
    fn at_most_the_cap_of_distinct_addresses_a_minute() {
        let mut gate = DialGate::default();
        let admitted = (0..120_000u64)
            .step_by(100)
            .filter(|t| gate.admit(&format!("a{t}"), (100, 100), 60, ms(*t)).is_ok())
            .count();
        // Two minutes: 60 in each.
        assert_eq!(admitted, 120);
        assert_eq!(
            gate.admit("new", (100, 100), 60, ms(119_999)),
            Err(DialRefusal::DistinctCap)
        );
        // An address already dialled in the window may be dialled again.
        assert!(gate.admit("a60000", (100, 100), 60, ms(119_999)).is_ok());
    }

    #[test]
    fn failed_addresses_back_off_exponentially_and_answers_clear_it() {
        let mut gate = DialGate::default();
        gate.failed("x", ms(0));
        assert_eq!(
            gate.admit("x", (5, 5), 60, ms(9_999)),
            Err(DialRefusal::Backoff)
        );
        assert!(gate.admit("x", (5, 5), 60, ms(10_000)).is_ok());
        gate.failed("x", ms(10_000));
        assert_eq!(
            gate.admit("x", (5, 5), 60, ms(29_999)),
            Err(DialRefusal::Backoff)
        );
        gate.answered("x");
        assert!(gate.admit("x", (5, 5), 60, ms(29_999)).is_ok());
    }

    #[test]
    fn the_backoff_map_is_bounded() {
        let mut gate = DialGate::default();
        for n in 0..(MAX_DIAL_BACKOFF + 10) {
            gate.failed(&format!("a{n}"), ms(n as u64));
        }
        assert_eq!(gate.backing_off(), MAX_DIAL_BACKOFF);
    }
}

#[cfg(test)]
mod flood_tests {
    use std::collections::BTreeSet;

    use super::super::test_util::*;
    use super::super::*;

    /// Node 0 knows node 1, which pushes 10,000 fake adverts in one exchange; every fake
    /// refuses connections at once (as a victim's closed port does). Runs `secs` seconds,
    /// answering every request at once, and returns (distinct fake addresses dialled, dials).
    fn flooded(config: MembershipConfig, secs: u64) -> (Membership, usize, usize) {
        let mut m = machine(0, vec![], vec![], config, t(0));
        m.handle_register(advert(1, t(0)), t(0)).expect("valid");
        let fakes: Vec<PeerAdvert> = (100..10_100).map(|n| advert(n, t(0))).collect();
        m.handle_exchange(&id(1), fakes, 20, t(0));
        let (mut dialled, mut dials) = (BTreeSet::new(), 0);
        let mut now = t(0);
        while now.mono.as_millis() <= secs * 1000 {
            while let Some(output) = m.poll_output() {
                let Output::Send { to, id: rid, .. } = output else {
                    continue;
                };
                if to.peer_id != Some(id(1)) {
                    dialled.insert(to.address.clone());
                    dials += 1;
                }
                m.handle_response(rid, Err(Failure::Unreachable), now);
            }
            let next = m.poll_timeout().expect("timers armed");
            let ms = next.as_millis().max(now.mono.as_millis() + 1);
            now = Now::from_millis(ms);
            m.handle_timeout(now);
        }
        (m, dialled.len(), dials)
    }

    #[test]
    fn ten_thousand_pushed_adverts_are_dialled_at_the_configured_bounds() {
        let (m, distinct, dials) = flooded(MembershipConfig::default(), 59);
        // One minute: at most 60 distinct addresses, and the rate (5/s after a burst of 20).
        assert!(distinct <= 60, "{distinct} distinct addresses in a minute");
        assert!(dials <= 5 * 60 + 20, "{dials} dials in a minute");
        let stats = m.stats();
        let refused = stats.dials_deferred_not_needed + stats.refused_oversized;
        assert!(refused >= 9_900, "{stats:?}");
        assert!(
            m.known_count() <= 1 + 100,
            "one exchange adds at most 100 candidates"
        );
    }

    #[test]
    fn without_the_distinct_cap_the_rate_still_bounds_dials() {
        // Discovery asks every candidate for its list, and each refusal frees a slot for
        // the next at once: without the gate, hundreds of dials a second.
        let config = MembershipConfig {
            max_dials_per_minute: 100_000,
            max_discovery_asks: 100_000,
            max_hearsay_per_message: 10_000,
            max_peers_in_list: 20_000,
            discovery_target: 20_000,
            ..Default::default()
        };
        let (m, _, dials) = flooded(config, 10);
        assert!(
            dials <= 5 * 10 + 20,
            "{dials} dials in 10 s at 5/s after a burst of 20"
        );
        assert!(m.stats().dials_deferred_rate > 0);
    }
}
