//! sorcha-peer-core: the protocol of sorcha-peer as pure state machines.
//!
//! Nothing here touches a socket, a clock, the OS random generator or a database: time comes in
//! as a `now` argument (monotonic for deadlines, wall clock for the wire), randomness as a
//! seeded RNG, and everything the node wants done (send, persist, report) goes out as a value
//! for the runtime to carry out. Timers stay inside: the runtime asks `poll_timeout` when to
//! wake the node next. The daemon (`sorcha-peer`) and the simulator drive the very same code.
//!
//! - [`model`]: peer ids, hashes, timestamps, peers: validated on the way in.
//! - [`time`]: the monotonic `Instant` for deadlines, `Now` (both clocks), the timer table.
//! - [`gossip`]: transaction distribution: announce, pull, dedup, anti-entropy.
//! - [`membership`]: bootstrap, discovery, peer exchange, health, Online/Degraded/Offline.
//! - [`link`]: the per-peer transport policy: negotiation, breakers, send lanes, pull batching.
//! - [`backoff`]: retry schedules (exponential, equal jitter) and the table of what is retried.
//! - [`breaker`]: per-peer circuit breakers (Closed / Open / HalfOpen) in a bounded map.
//! - [`sendqueue`]: bounded per-peer send queues with Control / Announce / Body lanes.
//! - [`score`]: the peer score (offences, deliveries, decay) and the bans it leads to.
//! - [`node`]: the composition one runtime owns.

pub mod backoff;
pub mod breaker;
pub mod gossip;
pub mod link;
pub mod membership;
pub mod model;
pub mod node;
pub mod score;
pub mod sendqueue;
pub mod time;
