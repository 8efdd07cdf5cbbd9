//! The wall clock: read here and nowhere else, and handed to the core as an input (the core
//! never reads a clock itself). The actor, the request handlers that stamp wire fields and the
//! offline queue all take their time from [`now`].

use std::time::{SystemTime, UNIX_EPOCH};

use sorcha_peer_core::model::Timestamp;

/// The wall clock, read only here and handed to the core as an input.
pub fn now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Timestamp::from_millis(ms)
}
