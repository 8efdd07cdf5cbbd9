//! The clocks: read here and nowhere else, and handed to the core as an input (the core never
//! reads a clock itself). The request handlers that stamp wire fields and the offline queue
//! take the wall clock from [`now`]; the actor hands the core both clocks from [`Clock`]: a
//! monotonic one for deadlines (a wall-clock step moves no timer) and the wall clock for what
//! goes on the wire or into the peer store.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sorcha_peer_core::model::Timestamp;
use sorcha_peer_core::time::{Instant, Now};

/// The daemon's clocks as the core takes them ([`Now`]): milliseconds since the daemon started,
/// on tokio's clock (so `tokio::time::pause` drives it in tests), and the wall clock. The actor
/// must use the one its `Node` was created with: the core's deadlines count from its origin.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: tokio::time::Instant,
}

impl Clock {
    /// A clock whose monotonic origin is now.
    pub fn start() -> Self {
        Self {
            origin: tokio::time::Instant::now(),
        }
    }

    pub fn now(&self) -> Now {
        let ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        Now::new(Instant::from_millis(ms), now())
    }

    /// The tokio instant of the core's deadline `at`.
    pub fn instant(&self, at: Instant) -> tokio::time::Instant {
        let after = Duration::from_millis(at.as_millis());
        // Past tokio's range only for deadlines centuries away: as good as never.
        self.origin.checked_add(after).unwrap_or(self.origin + FAR)
    }
}

/// Far enough away never to matter, near enough to add to any instant.
const FAR: Duration = Duration::from_secs(86_400 * 365 * 30);

/// The wall clock, read only here and handed to the core as an input.
pub fn now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Timestamp::from_millis(ms)
}

/// The wall clock in microseconds since the Unix epoch (delivery stamps for subscribers).
pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_monotonic_clock_follows_tokio_time_and_maps_deadlines_back() {
        let clock = Clock::start();
        assert_eq!(clock.now().mono, Instant::from_millis(0));
        tokio::time::advance(Duration::from_millis(1_500)).await;
        assert_eq!(clock.now().mono, Instant::from_millis(1_500));
        let deadline = Instant::from_millis(4_000);
        tokio::time::sleep_until(clock.instant(deadline)).await;
        assert_eq!(
            clock.now().mono,
            deadline,
            "woken exactly at the core's deadline"
        );
        // A deadline past tokio's range maps to "far away", not a panic.
        let never = clock.instant(Instant::from_millis(u64::MAX));
        assert!(never > clock.instant(deadline));
    }
}
