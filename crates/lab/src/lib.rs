//! peer-lab: starts N real `sorcha-peer` processes (on loopback, or one network namespace per
//! node), drives traffic and faults through their public surfaces, and reports what it
//! measured as JSON or a short table.
//!
//! - [`scenario`]: what a run does (TOML; the presets are embedded).
//! - [`binary`]: finding the `sorcha-peer` executable to start (the flag, a release build, `PATH`).
//! - [`cluster`]: the node processes: start, signal, kill, restart, usage; killed on drop.
//! - [`netns`]: namespaces, veths and a bridge for `--hosts netns`; removed on drop.
//! - [`api`]: the node's HTTP endpoints the lab calls.
//! - [`observe`]: one SSE subscriber per node: when each node first had each transaction.
//! - [`paths`]: the way each transaction went, hop by hop, as the nodes tell it.
//! - [`traffic`], [`faults`], [`inject`]: what the lab does to the cluster.
//! - [`settle`]: waiting until every node holds everything; loss.
//! - [`run`]: the flows (traffic, queue) start to finish; [`summary`] and [`report`] turn
//!   measurements into the report, [`accounting`] its wire bytes, RMR and delivered rates.
//! - [`prom`], [`procfs`]: reading Prometheus text and `/proc`.
//! - [`attack`]: the attack preset's attackers, ban watch and report section, run by [`run`].
//! - [`attacker`]: the attacker process (`peer-lab attacker`: flooder, liar, address pusher
//!   with its sinkhole) that the `attack` preset runs beside the honest nodes.
//! - [`compare`]: the `compare-gossipsub` preset: the same workload on rust-libp2p gossipsub
//!   (`bench/gossipsub-node`) and on sorcha-peer, one row each.

pub mod accounting;
pub mod api;
pub mod attack;
pub mod attacker;
pub mod binary;
pub mod cluster;
pub mod compare;
pub mod faults;
pub mod inject;
pub mod netns;
pub mod observe;
pub mod paths;
pub mod procfs;
pub mod prom;
pub mod report;
pub mod run;
pub mod scenario;
pub mod settle;
pub mod summary;
pub mod traffic;
