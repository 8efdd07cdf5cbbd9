//! Per-peer limits on what the peer port (and the REST fallback) serves, and the connection
//! limits of both ports.
//!
//! - Here: [`Limiter`], the per-peer rates (GCRA, the `governor` crate) by [`LimitKind`], the
//!   pulls in flight, and [`Limiter::refused`], the one place every refusal goes through (and
//!   is counted, and told to the peer score once per [`REFUSALS_PER_REPORT`] refusals: a
//!   [`Reporter`]). A peer is its [`PeerKey`]: the id its connection proved, else its
//!   address. The map of peers is bounded; the least recently used go first, counted.
//! - `upload.rs`: the node-wide upload budget for bodies ([`upload::UploadBudget`]).
//! - `conns.rs`: connection caps, the per-address connection rate, and the header-read and
//!   idle timeouts of a connection ([`conns::ConnLimits`], [`conns::Watched`]); `h2.rs`: where
//!   an HTTP/2 client is in sending a request's headers (for the header timeout).

pub mod conns;
mod h2;
pub mod upload;

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use opentelemetry::KeyValue;
use sorcha_peer_core::model::PeerId;
use tonic::Status;

use crate::config::LimitsConfig;
use crate::telemetry::Metrics;
use crate::transport::tls::ConnInfo;

/// Peers whose limiter state is kept. A flood of new addresses or ids evicts the least recently
/// seen (they start afresh if they come back): ~2 KB each, 10,000 is ~20 MB at most.
pub const MAX_TRACKED_PEERS: usize = 10_000;

/// How many of a peer's refusals make one report to the peer score. Limits are sized above
/// honest peak rates and each has a burst, so one refusal is a peer overshooting once; ten
/// mean it ignores the answers. With 10 points a report and the default threshold (-50), 60
/// refusals (decaying, half-life 10 minutes) ban. Counted, not timed: the lab's address pusher
/// sends its ~80 refused exchanges within ~0.3 s, which reports throttled in time (at most
/// ten a second) caught only on its second burst, 10.9 s into the attack.
pub const REFUSALS_PER_REPORT: u32 = 10;

/// Where refusals go besides the metric (the runtime points it at the core's peer score).
pub type Reporter = Box<dyn Fn(&PeerKey) + Send + Sync>;

/// Longest a peer's message waits for its byte rate; past it the message is refused.
pub const MAX_BYTES_DELAY: Duration = Duration::from_secs(1);

/// Who a limit applies to: the id a connection proved, else its remote address (an
/// unverified peer can make new ids for free, not new addresses).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PeerKey {
    Id(PeerId),
    Addr(IpAddr),
}

impl PeerKey {
    /// The key of a connection; `None` when it is not known (a call made inside the node).
    pub fn of(info: Option<&ConnInfo>) -> Option<Self> {
        let info = info?;
        match (&info.proven, info.remote) {
            (Some(id), _) => Some(PeerKey::Id(id.clone())),
            (None, Some(remote)) => Some(PeerKey::Addr(remote.ip().to_canonical())),
            (None, None) => None,
        }
    }

    /// The key of a request on the peer port (or of the REST fallback's, which carry one too).
    pub fn of_request<T>(request: &tonic::Request<T>) -> Option<Self> {
        Self::of(request.extensions().get::<ConnInfo>())
    }
}

impl fmt::Display for PeerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerKey::Id(id) => write!(f, "peer {id}"),
            PeerKey::Addr(ip) => write!(f, "address {ip}"),
        }
    }
}

/// What a limit counts; its label in `rate_limited_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    Membership,
    Announcements,
    AnnouncedTransactions,
    Pulls,
    PullsInFlight,
    ReceivedBytes,
}

impl LimitKind {
    pub fn label(self) -> &'static str {
        match self {
            LimitKind::Membership => "membership",
            LimitKind::Announcements => "announcements",
            LimitKind::AnnouncedTransactions => "announced_transactions",
            LimitKind::Pulls => "pulls",
            LimitKind::PullsInFlight => "pulls_in_flight",
            LimitKind::ReceivedBytes => "received_bytes",
        }
    }

    /// The configuration key that sets this limit (named in refusals).
    fn key(self) -> &'static str {
        match self {
            LimitKind::Membership => "limits.membership_per_second",
            LimitKind::Announcements => "limits.announcements_per_second",
            LimitKind::AnnouncedTransactions => "limits.announced_transactions_per_second",
            LimitKind::Pulls => "limits.pulls_per_second",
            LimitKind::PullsInFlight => "limits.pulls_in_flight",
            LimitKind::ReceivedBytes => "limits.received_bytes_per_second",
        }
    }
}

type Gcra<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// One peer's buckets.
struct PeerLimits<C: Clock> {
    membership: Gcra<C>,
    announcements: Gcra<C>,
    announced: Gcra<C>,
    pulls: Gcra<C>,
    bytes: Gcra<C>,
    /// Refusals so far: every [`REFUSALS_PER_REPORT`]th is told to the peer score.
    refusals: AtomicU32,
    /// Pulls being served; shared with their [`PullGuard`]s, so eviction cannot lose one.
    in_flight: Arc<AtomicU32>,
    /// When it was last used, in [`Limiter::uses`] order (for least-recently-used eviction).
    used: u64,
}

/// The quotas every peer gets.
#[derive(Debug, Clone, Copy)]
struct Quotas {
    membership: Quota,
    announcements: Quota,
    announced: Quota,
    pulls: Quota,
    bytes: Quota,
    pulls_in_flight: u32,
}

fn per_second(rate: u64, burst: u64) -> Quota {
    let clamp = |n: u64| NonZeroU32::new(u32::try_from(n.max(1)).unwrap_or(u32::MAX));
    let rate = clamp(rate).unwrap_or(NonZeroU32::MIN);
    let burst = clamp(burst.max(u64::from(rate.get()))).unwrap_or(rate);
    Quota::per_second(rate).allow_burst(burst)
}

/// The per-peer limits of the peer port and the REST fallback.
pub struct Limiter<C: Clock = DefaultClock> {
    quotas: Quotas,
    clock: C,
    peers: Mutex<Peers<C>>,
    metrics: Arc<Metrics>,
    reporter: OnceLock<Reporter>,
}

struct Peers<C: Clock> {
    map: HashMap<PeerKey, PeerLimits<C>>,
    /// Uses so far: a logical clock for least-recently-used eviction.
    uses: u64,
}

impl Limiter {
    /// The limits of `config`; `max_message` is the largest message a peer may send (a byte
    /// bucket holds at least one, or a maximum-size body could never pass).
    pub fn new(config: &LimitsConfig, max_message: u64, metrics: Arc<Metrics>) -> Self {
        Self::with_clock(config, max_message, metrics, DefaultClock::default())
    }
}

impl<C: Clock + Clone> Limiter<C> {
    pub fn with_clock(
        config: &LimitsConfig,
        max_message: u64,
        metrics: Arc<Metrics>,
        clock: C,
    ) -> Self {
        let rate = |n: u32| per_second(u64::from(n), u64::from(n));
        let bytes = config.received_bytes_per_second;
        let quotas = Quotas {
            membership: rate(config.membership_per_second),
            announcements: rate(config.announcements_per_second),
            announced: rate(config.announced_transactions_per_second),
            pulls: rate(config.pulls_per_second),
            bytes: per_second(bytes, bytes.max(max_message)),
            pulls_in_flight: config.pulls_in_flight,
        };
        Self {
            quotas,
            clock,
            peers: Mutex::new(Peers {
                map: HashMap::new(),
                uses: 0,
            }),
            metrics,
            reporter: OnceLock::new(),
        }
    }

    /// Counts `n` requests (or announced ids) of `kind` for `key`; a refusal is counted and
    /// comes back as the status to answer. No key (a call made inside the node): no limit.
    pub fn check(&self, key: Option<&PeerKey>, kind: LimitKind, n: u32) -> Result<(), Status> {
        let Some(key) = key else { return Ok(()) };
        let Some(n) = NonZeroU32::new(n) else {
            return Ok(());
        };
        let passed = self.with_peer(key, |peer| {
            let bucket = match kind {
                LimitKind::Membership => &peer.membership,
                LimitKind::Announcements => &peer.announcements,
                LimitKind::AnnouncedTransactions => &peer.announced,
                LimitKind::Pulls => &peer.pulls,
                LimitKind::ReceivedBytes => &peer.bytes,
                LimitKind::PullsInFlight => return true, // see `pull`
            };
            // More than a whole burst at once never conforms: refused like any excess.
            matches!(bucket.check_n(n), Ok(Ok(())))
        });
        if passed {
            Ok(())
        } else {
            Err(self.refused(key, kind))
        }
    }

    /// Takes `bytes` received from `key` out of its byte rate: at once, or after short waits
    /// (at most [`MAX_BYTES_DELAY`] in all, recorded), else refused.
    pub async fn receive(&self, key: Option<&PeerKey>, bytes: u64) -> Result<(), Status> {
        let Some(key) = key else { return Ok(()) };
        let n = NonZeroU32::new(u32::try_from(bytes.max(1)).unwrap_or(u32::MAX))
            .unwrap_or(NonZeroU32::MIN);
        let mut waited = Duration::ZERO;
        loop {
            match self.with_peer(key, |peer| bytes_wait(&peer.bytes, n, &self.clock)) {
                Some(Duration::ZERO) => break,
                Some(wait) if waited + wait <= MAX_BYTES_DELAY => {
                    tokio::time::sleep(wait).await;
                    waited += wait;
                }
                _ => return Err(self.refused(key, LimitKind::ReceivedBytes)),
            }
        }
        if !waited.is_zero() {
            self.metrics
                .rate_limit_delay_seconds
                .record(waited.as_secs_f64(), &[]);
        }
        Ok(())
    }

    /// One message of `kind` (`n` of it: announced ids, say) from `key`, `bytes` long: within
    /// the peer's byte rate (waiting briefly if need be) and its rate for `kind`, else refused.
    pub async fn admit(
        &self,
        key: Option<&PeerKey>,
        kind: LimitKind,
        n: u32,
        bytes: u64,
    ) -> Result<(), Status> {
        self.receive(key, bytes).await?;
        self.check(key, kind, n)
    }

    /// Starts serving one pull to `key`: within its pull rate and its pulls in flight, else
    /// refused. The pull counts as in flight until the guard is dropped.
    pub fn pull(&self, key: Option<&PeerKey>) -> Result<PullGuard, Status> {
        let Some(key) = key else {
            return Ok(PullGuard(None));
        };
        self.check(Some(key), LimitKind::Pulls, 1)?;
        let max = self.quotas.pulls_in_flight;
        let in_flight = self.with_peer(key, |peer| peer.in_flight.clone());
        let taken = in_flight.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        });
        match taken {
            Ok(_) => Ok(PullGuard(Some(in_flight))),
            Err(_) => Err(self.refused(key, LimitKind::PullsInFlight)),
        }
    }

    /// Sends refusals to `reporter` from now on (once; later calls are ignored).
    pub fn report_to(&self, reporter: Reporter) {
        let _ = self.reporter.set(reporter);
    }

    /// Every refusal passes here: counted by kind, logged, told to the peer score (once per
    /// [`REFUSALS_PER_REPORT`] of the peer's), and made the status the peer sees.
    pub fn refused(&self, key: &PeerKey, kind: LimitKind) -> Status {
        self.metrics
            .rate_limited_total
            .add(1, &[KeyValue::new("kind", kind.label())]);
        if let Some(reporter) = self.reporter.get()
            && self.with_peer(key, |peer| {
                let n = peer.refusals.fetch_add(1, Ordering::Relaxed) + 1;
                n % REFUSALS_PER_REPORT == 0
            })
        {
            reporter(key);
        }
        tracing::debug!(%key, kind = kind.label(), "refused: over a per-peer limit");
        Status::resource_exhausted(format!(
            "{key} is over its {} limit ({})",
            kind.label(),
            kind.key()
        ))
    }

    /// Peers whose state is kept.
    pub fn tracked(&self) -> usize {
        self.peers.lock().map_or(0, |p| p.map.len())
    }

    /// Runs `f` on `key`'s state, made (evicting the least recently used if full) if new.
    fn with_peer<T>(&self, key: &PeerKey, f: impl FnOnce(&PeerLimits<C>) -> T) -> T {
        let mut peers = match self.peers.lock() {
            Ok(peers) => peers,
            Err(poisoned) => poisoned.into_inner(),
        };
        peers.uses += 1;
        let used = peers.uses;
        if !peers.map.contains_key(key) && peers.map.len() >= MAX_TRACKED_PEERS {
            evict_least_recent(&mut peers.map);
            self.metrics.rate_limiter_evictions_total.add(1, &[]);
        }
        let quotas = self.quotas;
        let clock = &self.clock;
        let peer = peers
            .map
            .entry(key.clone())
            .or_insert_with(|| PeerLimits::new(&quotas, clock));
        peer.used = used;
        f(peer)
    }
}

impl<C: Clock + Clone> PeerLimits<C> {
    fn new(q: &Quotas, clock: &C) -> Self {
        let gcra = |quota: Quota| RateLimiter::direct_with_clock(quota, clock.clone());
        Self {
            membership: gcra(q.membership),
            announcements: gcra(q.announcements),
            announced: gcra(q.announced),
            pulls: gcra(q.pulls),
            bytes: gcra(q.bytes),
            refusals: AtomicU32::new(0),
            in_flight: Arc::new(AtomicU32::new(0)),
            used: 0,
        }
    }
}

/// How long `n` bytes must wait before they conform to `bucket` (zero: they passed, and were
/// taken); `None` if they never can (more than a whole burst).
fn bytes_wait<C: Clock>(bucket: &Gcra<C>, n: NonZeroU32, clock: &C) -> Option<Duration> {
    match bucket.check_n(n) {
        Ok(Ok(())) => Some(Duration::ZERO),
        // Never zero: zero means it passed.
        Ok(Err(not_until)) => Some(
            not_until
                .wait_time_from(clock.now())
                .max(Duration::from_micros(1)),
        ),
        Err(_) => None,
    }
}

fn evict_least_recent<C: Clock>(map: &mut HashMap<PeerKey, PeerLimits<C>>) {
    let oldest = map
        .iter()
        // A peer with pulls in flight keeps its count if anyone else can go.
        .min_by_key(|(_, peer)| (peer.in_flight.load(Ordering::Acquire) > 0, peer.used))
        .map(|(key, _)| key.clone());
    if let Some(key) = oldest {
        map.remove(&key);
    }
}

/// A pull being served; it leaves the peer's pulls in flight when dropped.
#[must_use = "the pull counts as in flight until this is dropped"]
pub struct PullGuard(Option<Arc<AtomicU32>>);

impl Drop for PullGuard {
    fn drop(&mut self) {
        if let Some(in_flight) = &self.0 {
            in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests;
