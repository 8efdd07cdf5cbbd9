//! The node-wide upload budget (`limits.upload_bytes_per_second`): transaction bodies sent to
//! peers wait for it, 64 KiB at a time, each piece taking its turn in a first-come queue, so
//! peers pulling at once share the budget in turn and one large body cannot hold it. Only
//! bodies are charged: announcements, membership and heartbeats never wait for it.
//!
//! The budget charges bodies a peer pulls (`GetTransaction`, `StreamTransaction`, a
//! `GOSSIP_FETCH` answer, the REST fallback's body route) and the bodies we push
//! (`GOSSIP_PUSH`, up to `distribution.eager_push_max_bytes`, charged by the link worker before
//! it sends: a push waits its turn like a pulled body, holding back only its own link).

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{Quota, RateLimiter};
use tokio::sync::Mutex;

use crate::telemetry::Metrics;
use crate::transport::outbound::CHUNK_SIZE;

/// The piece a body is charged in: one stream chunk, so a streamed body and a unary one share
/// the budget alike.
const PIECE: u64 = CHUNK_SIZE as u64;

type Bucket = RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    DefaultClock,
    governor::middleware::NoOpMiddleware<<DefaultClock as Clock>::Instant>,
>;

pub struct UploadBudget {
    /// `None`: unlimited.
    bucket: Option<Bucket>,
    clock: DefaultClock,
    /// Whose piece goes next: tokio's mutex is fair (first come, first served), so peers
    /// waiting at once alternate piece by piece.
    turn: Mutex<()>,
    metrics: Arc<Metrics>,
}

impl UploadBudget {
    /// A budget of `bytes_per_second` (0: unlimited); a burst of one second's worth, at least
    /// one piece.
    pub fn new(bytes_per_second: u64, metrics: Arc<Metrics>) -> Self {
        let clock = DefaultClock::default();
        let bucket = u32::try_from(bytes_per_second)
            .ok()
            .and_then(NonZeroU32::new)
            .map(|rate| {
                let burst = NonZeroU32::new(rate.get().max(PIECE as u32)).unwrap_or(rate);
                let quota = Quota::per_second(rate).allow_burst(burst);
                RateLimiter::direct_with_clock(quota, clock.clone())
            });
        Self {
            bucket,
            clock,
            turn: Mutex::new(()),
            metrics,
        }
    }

    /// Waits until `bytes` of body may be sent (at once when unlimited); the wait is recorded.
    pub async fn spend(&self, bytes: u64) {
        let Some(bucket) = &self.bucket else { return };
        let mut left = bytes;
        let mut waited = Duration::ZERO;
        while left > 0 {
            let piece = left.min(PIECE);
            left -= piece;
            let n = NonZeroU32::new(piece as u32).unwrap_or(NonZeroU32::MIN);
            let _turn = self.turn.lock().await;
            loop {
                match bucket.check_n(n) {
                    Ok(Ok(())) => break,
                    Ok(Err(not_until)) => {
                        let wait = not_until
                            .wait_time_from(self.clock.now())
                            .max(Duration::from_micros(100));
                        tokio::time::sleep(wait).await;
                        waited += wait;
                    }
                    // A piece is never more than the burst (at least one piece).
                    Err(_) => break,
                }
            }
        }
        if !waited.is_zero() {
            self.metrics
                .upload_delay_seconds
                .record(waited.as_secs_f64(), &[]);
            self.metrics.upload_delayed_bytes_total.add(bytes, &[]);
        }
    }
}
