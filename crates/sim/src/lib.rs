//! sorcha-peer-sim: a deterministic discrete-event simulator driving the very same sans-IO
//! core [`Node`](sorcha_peer_core::node::Node) as the daemon, for 10,000+ nodes on one machine.
//!
//! Virtual time in milliseconds, one event at a time from an ordered queue (ties broken by push
//! order), every random choice from ChaCha streams derived from the scenario's seed: the same
//! scenario and seed give byte-identical results.
//!
//! - [`scenario`]: the TOML scenario files (nodes, topology, network, transactions, faults,
//!   core config overrides) and their validation.
//! - [`queue`]: the event queue.
//! - [`network`]: latency, bandwidth, loss and partitions.
//! - `world.rs`, `event.rs`, `deliver.rs`, `transmit.rs`, `observe.rs`: the simulated world and
//!   its events, how calls and the link machine's transmissions are carried, faults, samples
//!   and the final report.
//! - [`metrics`], [`graph`], [`wire`]: what is measured and how (coverage, latency and hop
//!   spreads, RMR, bytes by kind, active-graph quality).
//! - [`plot`]: the coverage-over-time SVG.
//! - [`attack`]: the attacker roles (flooders, eclipsers) and what the peer score made of
//!   them.

pub mod attack;
pub mod graph;
pub mod metrics;
pub mod network;
pub mod plot;
pub mod queue;
pub mod scenario;
pub mod wire;

mod deliver;
mod event;
mod observe;
mod transmit;
mod world;

pub use metrics::Report;
pub use scenario::Scenario;
pub use world::{Role, World, address, peer_id};

/// Runs `scenario` with `seed` to the end and reports.
pub fn run(scenario: &Scenario, seed: u64) -> Report {
    World::new(scenario, seed).run()
}

/// Like [`run`], but leaves the world's memory to the operating system: dropping 10,000
/// nodes' maps one by one takes seconds a process about to exit need not spend.
pub fn run_and_leak(scenario: &Scenario, seed: u64) -> Report {
    let mut world = World::new(scenario, seed);
    let report = world.run();
    std::mem::forget(world);
    report
}
