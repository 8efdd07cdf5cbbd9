//! Retries: when a failed call to a peer is worth repeating, and how long to wait first.
//!
//! [`Backoff`] is the delay schedule of one call (or one peer's reconnects): exponential from
//! `initial`, doubling up to `max`, jittered, and exhausted after `max_retries` delays.
//! [`RetryPolicy`] is the table that says which failures are worth retrying at all: a call the
//! peer may already have applied ([`CallKind::NonIdempotent`]) is only repeated when the error
//! proves it was not. Both are pure: randomness is passed in, time is the caller's business
//! (it adds the returned delay to its `now` and arms a timer).

use std::time::Duration;

use rand::Rng;

/// Why a retry configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackoffConfigError {
    /// The first delay was zero: retries would hammer a peer that just failed.
    #[error("retry initial delay is 0: expected at least 1 ms")]
    ZeroInitial,
    /// The cap was below the first delay.
    #[error(
        "retry max delay {max:?} is below the initial delay {initial:?}: expected max >= initial"
    )]
    MaxBelowInitial { initial: Duration, max: Duration },
}

/// Knobs of a [`Backoff`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// Ceiling of the first delay; each further retry doubles it.
    pub initial: Duration,
    /// Largest ceiling a delay can reach, however many retries came before.
    pub max: Duration,
    /// Delays handed out before the schedule is exhausted (so at most this many retries follow
    /// the first attempt).
    pub max_retries: u32,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            // Sorcha design default (PeerService.RetryDelaySeconds = 5).
            initial: Duration::from_secs(5),
            // Wild guess: with 3 retries the cap is never reached (5, 10, 20 s); it only
            // matters for callers that raise max_retries, and keeps a retry within one
            // Sorcha refresh tick.
            max: Duration::from_secs(60),
            // Sorcha design default (PeerService.MaxRetries = 3).
            max_retries: 3,
        }
    }
}

impl BackoffConfig {
    /// Checks the bounds a schedule needs; the daemon reports the error at start.
    pub fn validate(&self) -> Result<(), BackoffConfigError> {
        if self.initial.is_zero() {
            return Err(BackoffConfigError::ZeroInitial);
        }
        if self.max < self.initial {
            return Err(BackoffConfigError::MaxBelowInitial {
                initial: self.initial,
                max: self.max,
            });
        }
        Ok(())
    }

    /// The un-jittered delay before retry number `attempt` (0-based):
    /// `min(initial * 2^attempt, max)`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        // 2^31 times even 1 ms is 24 days, beyond any sane cap; saturate rather than overflow.
        let factor = 1u32 << attempt.min(31);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// The retry schedule of one call, with **equal jitter**: retry `n` waits a uniform random
/// time in `[c/2, c]` where `c` is [`BackoffConfig::ceiling`]`(n)`.
///
/// Why equal rather than full jitter (`[0, c]`): full jitter spreads synchronised retries
/// best, but with only three retries it can put one right after the failure (a 5 s ceiling
/// may give 10 ms), before a restarting peer is back, wasting one of the few attempts. Equal
/// jitter keeps at least half of every exponential step while still spreading the retries of
/// many nodes (which failed together when a peer died) over a window of `c/2`.
///
/// Call order: [`Backoff::new`]; after each failure that the [`RetryPolicy`] says to retry,
/// [`Backoff::next_delay`] (with the node's seeded RNG) and arm a timer for that long, or give
/// up on `None`; [`Backoff::reset`] after a success so the next failure starts from `initial`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    config: BackoffConfig,
    /// Delays handed out since construction or the last reset.
    attempt: u32,
}

impl Backoff {
    /// A fresh schedule; refuses configurations with a zero first delay or a cap below it.
    pub fn new(config: BackoffConfig) -> Result<Self, BackoffConfigError> {
        config.validate()?;
        Ok(Self { config, attempt: 0 })
    }

    /// The wait before the next retry, or `None` when `max_retries` delays were already given.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Option<Duration> {
        if self.is_exhausted() {
            return None;
        }
        let ceiling = self.config.ceiling(self.attempt);
        self.attempt += 1;
        Some(equal_jitter(ceiling, rng))
    }

    /// Starts over from `initial`, with all retries available again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Delays handed out since construction or the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// True once `max_retries` delays were handed out.
    pub fn is_exhausted(&self) -> bool {
        self.attempt >= self.config.max_retries
    }

    pub fn config(&self) -> &BackoffConfig {
        &self.config
    }
}

/// A uniform time in `[ceiling/2, ceiling]`, at millisecond resolution (the unit of
/// [`Timestamp`](crate::model::Timestamp), so the delay adds to `now` without rounding).
fn equal_jitter(ceiling: Duration, rng: &mut impl Rng) -> Duration {
    let ceiling_ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    let half = ceiling_ms / 2;
    let jitter = rng.random_range(0..=ceiling_ms - half);
    Duration::from_millis(half + jitter)
}

/// Whether repeating a call could apply its effect twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallKind {
    /// Doing it twice is the same as doing it once (reads, pings, announcements deduplicated
    /// by hash, registrations that upsert).
    Idempotent,
    /// A second delivery may act twice; only retried when the error proves the first never
    /// reached the peer's handler.
    NonIdempotent,
}

/// The rpcs of the wire contract (DESIGN section 3), so the idempotency of each is written
/// down once instead of at every call site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rpc {
    GetPeerList,
    RegisterPeer,
    Ping,
    ExchangePeers,
    FindPeersForRegister,
    SendHeartbeat,
    StreamHeartbeat,
    NotifyTransaction,
    GetTransaction,
    StreamTransaction,
    SendMessage,
    Stream,
}

impl Rpc {
    /// How safe the rpc is to repeat.
    pub fn call_kind(self) -> CallKind {
        match self {
            // Reads.
            Rpc::GetPeerList
            | Rpc::Ping
            | Rpc::FindPeersForRegister
            | Rpc::GetTransaction
            | Rpc::StreamTransaction => CallKind::Idempotent,
            // Upserts of the sender's own entry, or merges of peer lists.
            Rpc::RegisterPeer | Rpc::ExchangePeers => CallKind::Idempotent,
            // A repeated heartbeat carries the same sequence number; the receiver just
            // refreshes last-seen again.
            Rpc::SendHeartbeat | Rpc::StreamHeartbeat => CallKind::Idempotent,
            // Receivers deduplicate announcements by transaction hash.
            Rpc::NotifyTransaction => CallKind::Idempotent,
            // Generic envelopes: the payload (e.g. a BLS signature share) is not deduplicated
            // by this layer, so a repeat may be acted on twice.
            Rpc::SendMessage | Rpc::Stream => CallKind::NonIdempotent,
        }
    }
}

/// What went wrong with a call, in transport-neutral terms (the gRPC status codes, plus a
/// failure to connect that no status code tells apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// No connection was made (refused, unreachable, TLS handshake failed): nothing was sent.
    ConnectFailed,
    /// No answer in time (gRPC DEADLINE_EXCEEDED, HTTP 408/504, our own timer).
    Timeout,
    /// The peer is down or restarting (gRPC UNAVAILABLE, HTTP 502/503).
    Unavailable,
    /// The peer is rate-limiting or out of resources (gRPC RESOURCE_EXHAUSTED, HTTP 429).
    ResourceExhausted,
    /// The peer dropped the call on a conflict without applying it (gRPC ABORTED).
    Aborted,
    /// We cancelled the call (shutdown, or the answer is no longer wanted).
    Cancelled,
    /// The request was malformed (gRPC INVALID_ARGUMENT / OUT_OF_RANGE, HTTP 400/413).
    InvalidArgument,
    /// The peer does not have it (gRPC NOT_FOUND, HTTP 404).
    NotFound,
    /// It exists already (gRPC ALREADY_EXISTS, HTTP 409).
    AlreadyExists,
    /// Not allowed: banned, not registered, bad credentials (gRPC PERMISSION_DENIED /
    /// UNAUTHENTICATED / FAILED_PRECONDITION, HTTP 401/403).
    Refused,
    /// The peer does not speak this rpc (gRPC UNIMPLEMENTED, HTTP 405/501): the caller falls
    /// back to the next protocol instead of retrying.
    Unimplemented,
    /// The peer failed internally (gRPC INTERNAL / DATA_LOSS, HTTP 500).
    Internal,
    /// Anything else (gRPC UNKNOWN, unexpected HTTP statuses).
    Unknown,
}

impl ErrorClass {
    /// The class of a gRPC status code (`tonic::Code as i32`); `None` for OK (0).
    pub fn from_grpc_code(code: i32) -> Option<Self> {
        Some(match code {
            0 => return None,
            1 => ErrorClass::Cancelled,
            3 | 11 => ErrorClass::InvalidArgument,
            4 => ErrorClass::Timeout,
            5 => ErrorClass::NotFound,
            6 => ErrorClass::AlreadyExists,
            7 | 9 | 16 => ErrorClass::Refused,
            8 => ErrorClass::ResourceExhausted,
            10 => ErrorClass::Aborted,
            12 => ErrorClass::Unimplemented,
            13 | 15 => ErrorClass::Internal,
            14 => ErrorClass::Unavailable,
            _ => ErrorClass::Unknown,
        })
    }

    /// The class of an HTTP status of the REST fallback; `None` for 1xx-3xx.
    pub fn from_http_status(status: u16) -> Option<Self> {
        Some(match status {
            0..=399 => return None,
            400 | 413 | 414 | 422 => ErrorClass::InvalidArgument,
            401 | 403 | 412 => ErrorClass::Refused,
            404 | 410 => ErrorClass::NotFound,
            405 | 501 => ErrorClass::Unimplemented,
            408 | 504 => ErrorClass::Timeout,
            409 => ErrorClass::AlreadyExists,
            429 => ErrorClass::ResourceExhausted,
            500 => ErrorClass::Internal,
            502 | 503 => ErrorClass::Unavailable,
            _ => ErrorClass::Unknown,
        })
    }
}

/// Whether an error class is worth a retry, before looking at the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retryable {
    /// The peer certainly did not apply the call: retry any call.
    Always,
    /// The peer may have applied the call: retry only idempotent calls.
    IfIdempotent,
    /// The same request would fail the same way: never retry.
    Never,
}

/// The retry table: one row per [`ErrorClass`], with whether the failure says anything about
/// the peer's health (so the circuit breaker counts it).
///
/// | class | retry | breaker failure | why |
/// |---|---|---|---|
/// | ConnectFailed | always | yes | nothing was sent |
/// | Aborted | always | no | the peer says it did not apply it; it answered, so it is alive |
/// | Timeout | if idempotent | yes | the peer may have applied it before the answer was lost |
/// | Unavailable | if idempotent | yes | transient by definition, but may follow partial work |
/// | ResourceExhausted | if idempotent | yes | backing off is the cure; a breaker sheds load |
/// | Internal | if idempotent | yes | like HTTP 5xx in Sorcha's transient-error policy |
/// | Unknown | if idempotent | yes | cannot tell, so treat as transient |
/// | Cancelled | never | no | we gave up on it ourselves |
/// | InvalidArgument | never | no | the same bytes fail again |
/// | NotFound | never | no | an answer, not a fault: ask another peer |
/// | AlreadyExists | never | no | the effect is already there |
/// | Refused | never | no | repeating will not change the peer's mind |
/// | Unimplemented | never | no | fall back to the next protocol instead |
const RETRY_TABLE: [(ErrorClass, Retryable, bool); 13] = [
    (ErrorClass::ConnectFailed, Retryable::Always, true),
    (ErrorClass::Aborted, Retryable::Always, false),
    (ErrorClass::Timeout, Retryable::IfIdempotent, true),
    (ErrorClass::Unavailable, Retryable::IfIdempotent, true),
    (ErrorClass::ResourceExhausted, Retryable::IfIdempotent, true),
    (ErrorClass::Internal, Retryable::IfIdempotent, true),
    (ErrorClass::Unknown, Retryable::IfIdempotent, true),
    (ErrorClass::Cancelled, Retryable::Never, false),
    (ErrorClass::InvalidArgument, Retryable::Never, false),
    (ErrorClass::NotFound, Retryable::Never, false),
    (ErrorClass::AlreadyExists, Retryable::Never, false),
    (ErrorClass::Refused, Retryable::Never, false),
    (ErrorClass::Unimplemented, Retryable::Never, false),
];

/// What to do after a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Arm a timer for this long, then call again.
    RetryAfter(Duration),
    /// Stop; the failure is final.
    GiveUp(GiveUpReason),
}

/// Why a failed call is not retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUpReason {
    /// The error class is never retried.
    NotRetryable,
    /// The call may have been applied and is not safe to repeat.
    NotIdempotent,
    /// `max_retries` retries were already made.
    Exhausted,
}

/// Pure retry rules: the table above plus the backoff schedule of each call.
///
/// Call order: one policy per node ([`RetryPolicy::new`]); per call, a schedule from
/// [`RetryPolicy::backoff`]; after each failure, [`RetryPolicy::decide`] with that schedule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryPolicy {
    backoff: BackoffConfig,
}

impl RetryPolicy {
    pub fn new(backoff: BackoffConfig) -> Result<Self, BackoffConfigError> {
        backoff.validate()?;
        Ok(Self { backoff })
    }

    /// The table row of `class`.
    pub fn retryable(class: ErrorClass) -> Retryable {
        row(class).1
    }

    /// Whether a failure of this class counts against the peer's circuit breaker (the peer
    /// is unhealthy), as opposed to an answer the peer gave on purpose.
    pub fn is_peer_failure(class: ErrorClass) -> bool {
        row(class).2
    }

    /// Whether a call of `kind` that failed with `class` may be made again, ignoring how many
    /// retries were made.
    pub fn should_retry(class: ErrorClass, kind: CallKind) -> Result<(), GiveUpReason> {
        match (Self::retryable(class), kind) {
            (Retryable::Always, _) | (Retryable::IfIdempotent, CallKind::Idempotent) => Ok(()),
            (Retryable::IfIdempotent, CallKind::NonIdempotent) => Err(GiveUpReason::NotIdempotent),
            (Retryable::Never, _) => Err(GiveUpReason::NotRetryable),
        }
    }

    /// A fresh schedule for one call.
    pub fn backoff(&self) -> Backoff {
        Backoff {
            config: self.backoff,
            attempt: 0,
        }
    }

    /// After a failure: retry after a jittered delay, or give up. Only consumes a retry (and
    /// RNG output) when the failure is retryable.
    pub fn decide(
        &self,
        class: ErrorClass,
        kind: CallKind,
        backoff: &mut Backoff,
        rng: &mut impl Rng,
    ) -> RetryDecision {
        if let Err(reason) = Self::should_retry(class, kind) {
            return RetryDecision::GiveUp(reason);
        }
        match backoff.next_delay(rng) {
            Some(delay) => RetryDecision::RetryAfter(delay),
            None => RetryDecision::GiveUp(GiveUpReason::Exhausted),
        }
    }
}

fn row(class: ErrorClass) -> (ErrorClass, Retryable, bool) {
    *RETRY_TABLE
        .iter()
        .find(|(c, _, _)| *c == class)
        .expect("RETRY_TABLE has a row for every ErrorClass (checked by a test)")
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn config(initial: u64, max: u64, max_retries: u32) -> BackoffConfig {
        BackoffConfig {
            initial: secs(initial),
            max: secs(max),
            max_retries,
        }
    }

    #[test]
    fn delays_stay_within_equal_jitter_bounds_per_attempt() {
        let cfg = config(5, 60, 6);
        let ceilings = [5, 10, 20, 40, 60, 60];
        for seed in 0..200 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut backoff = Backoff::new(cfg).unwrap();
            for (n, &ceiling) in ceilings.iter().enumerate() {
                let delay = backoff.next_delay(&mut rng).unwrap();
                assert!(
                    delay >= secs(ceiling) / 2 && delay <= secs(ceiling),
                    "seed {seed} attempt {n}: {delay:?} outside [{}/2, {ceiling}] s",
                    ceiling
                );
            }
        }
    }

    #[test]
    fn jitter_actually_varies_and_covers_the_window() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let delays: Vec<Duration> = (0..500)
            .map(|_| {
                Backoff::new(config(10, 10, 1))
                    .unwrap()
                    .next_delay(&mut rng)
                    .unwrap()
            })
            .collect();
        let min = *delays.iter().min().unwrap();
        let max = *delays.iter().max().unwrap();
        assert!(min < Duration::from_millis(5_500), "min {min:?}");
        assert!(max > Duration::from_millis(9_500), "max {max:?}");
    }

    #[test]
    fn ceiling_doubles_then_caps() {
        let cfg = config(5, 30, 10);
        let got: Vec<u64> = (0..6).map(|n| cfg.ceiling(n).as_secs()).collect();
        assert_eq!(got, [5, 10, 20, 30, 30, 30]);
        assert_eq!(
            cfg.ceiling(u32::MAX),
            secs(30),
            "no overflow on huge attempts"
        );
    }

    #[test]
    fn exhausted_after_max_retries_until_reset() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut backoff = Backoff::new(BackoffConfig::default()).unwrap();
        for n in 0..3 {
            assert!(!backoff.is_exhausted(), "attempt {n}");
            assert!(backoff.next_delay(&mut rng).is_some(), "attempt {n}");
        }
        assert!(backoff.is_exhausted());
        assert_eq!(backoff.next_delay(&mut rng), None);
        assert_eq!(backoff.attempts(), 3);

        backoff.reset();
        assert_eq!(backoff.attempts(), 0);
        let first = backoff.next_delay(&mut rng).unwrap();
        assert!(
            first <= secs(5),
            "reset starts from initial again: {first:?}"
        );
    }

    #[test]
    fn zero_retries_is_exhausted_at_once() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut backoff = Backoff::new(config(1, 1, 0)).unwrap();
        assert_eq!(backoff.next_delay(&mut rng), None);
    }

    #[test]
    fn same_seed_same_delays() {
        let run = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut backoff = Backoff::new(config(5, 60, 5)).unwrap();
            std::iter::from_fn(|| backoff.next_delay(&mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_eq!(run(42).len(), 5);
        assert_ne!(run(42), run(43));
    }

    #[test]
    fn invalid_configs_are_refused() {
        assert_eq!(
            Backoff::new(config(0, 5, 3)),
            Err(BackoffConfigError::ZeroInitial)
        );
        assert_eq!(
            Backoff::new(config(10, 5, 3)),
            Err(BackoffConfigError::MaxBelowInitial {
                initial: secs(10),
                max: secs(5)
            })
        );
        assert!(RetryPolicy::new(config(0, 5, 3)).is_err());
        assert!(Backoff::new(config(5, 5, 3)).is_ok());
    }

    /// Per class, independent of `RETRY_TABLE`: the verdicts for an idempotent and a
    /// non-idempotent call ('R' retry, 'i' not idempotent, '-' never) and whether the breaker
    /// counts it.
    const EXPECTED: [(ErrorClass, &str, bool); 13] = [
        (ErrorClass::ConnectFailed, "RR", true),
        (ErrorClass::Aborted, "RR", false),
        (ErrorClass::Timeout, "Ri", true),
        (ErrorClass::Unavailable, "Ri", true),
        (ErrorClass::ResourceExhausted, "Ri", true),
        (ErrorClass::Internal, "Ri", true),
        (ErrorClass::Unknown, "Ri", true),
        (ErrorClass::Cancelled, "--", false),
        (ErrorClass::InvalidArgument, "--", false),
        (ErrorClass::NotFound, "--", false),
        (ErrorClass::AlreadyExists, "--", false),
        (ErrorClass::Refused, "--", false),
        (ErrorClass::Unimplemented, "--", false),
    ];

    fn verdict(class: ErrorClass, kind: CallKind) -> char {
        match RetryPolicy::should_retry(class, kind) {
            Ok(()) => 'R',
            Err(GiveUpReason::NotIdempotent) => 'i',
            Err(GiveUpReason::NotRetryable) => '-',
            Err(GiveUpReason::Exhausted) => 'x',
        }
    }

    #[test]
    fn retry_table() {
        for (class, verdicts, counts_for_breaker) in EXPECTED {
            let rows = RETRY_TABLE.iter().filter(|(c, _, _)| *c == class).count();
            assert_eq!(rows, 1, "{class:?} has exactly one row");
            let got: String = [CallKind::Idempotent, CallKind::NonIdempotent]
                .map(|kind| verdict(class, kind))
                .iter()
                .collect();
            assert_eq!(got, verdicts, "{class:?}");
            let breaker = RetryPolicy::is_peer_failure(class);
            assert_eq!(breaker, counts_for_breaker, "{class:?}");
        }
    }

    #[test]
    fn rpc_idempotency() {
        use Rpc::*;
        let all = [
            GetPeerList,
            RegisterPeer,
            Ping,
            ExchangePeers,
            FindPeersForRegister,
            SendHeartbeat,
            StreamHeartbeat,
            NotifyTransaction,
            GetTransaction,
            StreamTransaction,
            SendMessage,
            Stream,
        ];
        for rpc in all {
            let repeatable = rpc.call_kind() == CallKind::Idempotent;
            assert_eq!(repeatable, !matches!(rpc, SendMessage | Stream), "{rpc:?}");
        }
    }

    #[test]
    fn wire_codes_map_to_classes() {
        let grpc = |code| ErrorClass::from_grpc_code(code);
        assert_eq!(grpc(0), None);
        assert_eq!(grpc(4), Some(ErrorClass::Timeout));
        assert_eq!(grpc(5), Some(ErrorClass::NotFound));
        assert_eq!(grpc(8), Some(ErrorClass::ResourceExhausted));
        assert_eq!(grpc(12), Some(ErrorClass::Unimplemented));
        assert_eq!(grpc(14), Some(ErrorClass::Unavailable));
        assert_eq!(grpc(16), Some(ErrorClass::Refused));
        assert_eq!(grpc(99), Some(ErrorClass::Unknown));
        let http = |status| ErrorClass::from_http_status(status);
        assert_eq!(http(200), None);
        assert_eq!(http(404), Some(ErrorClass::NotFound));
        assert_eq!(http(429), Some(ErrorClass::ResourceExhausted));
        assert_eq!(http(503), Some(ErrorClass::Unavailable));
        assert_eq!(http(504), Some(ErrorClass::Timeout));
        assert_eq!(http(418), Some(ErrorClass::Unknown));
    }

    #[test]
    fn decide_combines_table_and_schedule() {
        let policy = RetryPolicy::default();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut backoff = policy.backoff();
        let mut decide = |class, kind| policy.decide(class, kind, &mut backoff, &mut rng);
        use CallKind::{Idempotent as I, NonIdempotent as N};
        use RetryDecision::GiveUp;

        let not_found = decide(ErrorClass::NotFound, I);
        assert_eq!(not_found, GiveUp(GiveUpReason::NotRetryable));
        let timeout = decide(ErrorClass::Timeout, N);
        assert_eq!(timeout, GiveUp(GiveUpReason::NotIdempotent));
        // Neither refusal used up a retry: all three are still there.
        for n in 0..3 {
            let d = decide(ErrorClass::Timeout, I);
            assert!(
                matches!(d, RetryDecision::RetryAfter(_)),
                "retry {n}: {d:?}"
            );
        }
        let last = decide(ErrorClass::ConnectFailed, N);
        assert_eq!(last, GiveUp(GiveUpReason::Exhausted));
    }
}
