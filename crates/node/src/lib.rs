//! sorcha-peer: the daemon around the sans-IO core, laid out by concern, each layer using only
//! the ones listed after it (no import circle):
//!
//! - [`cli`]: the `sorcha-peer` command line (runs a node, or asks one over HTTP).
//! - [`certs`]: `sorcha-peer certs`, a small CA for permissioned networks (make, issue,
//!   revoke).
//! - [`runtime`]: start-up and shutdown, the two listeners, the one actor that owns the core
//!   `Node` and carries out its outputs, and the offline queue's flusher.
//! - [`api`]: the HTTP port (health, metrics, status, peers, transactions, the operator's
//!   actions).
//! - [`transport`]: reaching peers and being reached: TLS and what a connection proves, the
//!   gRPC services, the REST fallback, each peer's link worker and the outbound calls, over
//!   the transports the core chose.
//! - [`handle`]: the actor's mailbox: [`handle::NodeHandle`], the commands the listeners send
//!   and what they get back; below transport and api, which call it, and runtime, which answers.
//! - [`registers`]: which registers each peer advertises, and ours (register-aware
//!   discovery); below handle, above store.
//! - [`store`]: SQLite and memory: the peer store, the durable transaction store (the offline
//!   queue is its queued rows), the body cache in front of it.
//! - [`telemetry`]: the metrics every layer records, and the event log of what happened.
//! - [`wire`]: the tonic services and clients, generated against the messages of
//!   `sorcha-peer-wire` (which also converts them to and from the core's types), and the
//!   bandwidth metrics' byte counts.
//! - [`config`]: the layered configuration (defaults, TOML or Sorcha JSON, env, flags).
//! - [`address`]: the address this node advertises (interfaces, STUN, HTTP lookup).
//! - [`identity`]: the node's key pair and peer id.
//! - [`clock`]: the clocks, read in one place and handed to the core (monotonic for
//!   deadlines, wall for the wire).

pub mod address;
pub mod api;
pub mod certs;
pub mod cli;
pub mod clock;
pub mod config;
pub mod handle;
pub mod identity;
pub mod registers;
pub mod runtime;
pub mod store;
pub mod telemetry;
pub mod transport;
pub mod wire;
