//! sorcha-peer: the daemon around the sans-IO core.
//!
//! - [`address`]: finding the address this node advertises (interfaces, STUN, HTTP lookup).
//! - [`config`]: the layered configuration (defaults, TOML or Sorcha JSON, env, flags).
//! - [`identity`]: the node's key pair and peer id.
//! - [`actor`]: the task that owns the core node; everything else holds a [`actor::NodeHandle`].
//! - [`grpc`]: the peer port (the wire contract, health, reflection).
//! - [`http`]: the HTTP port (health, metrics, status; REST fallback and admin later).
//! - [`daemon`]: start-up, the two listeners, graceful shutdown.
//! - [`cli`]: the `sorcha-peer` command line.

pub mod actor;
pub mod address;
pub mod cli;
pub mod config;
pub mod convert;
pub mod daemon;
pub mod grpc;
pub mod http;
pub mod identity;
pub mod links;
pub mod metrics;
pub mod negotiate;
pub mod offline;
pub mod outbound;
pub mod peers;
pub mod proto;
pub mod rest;
pub mod store;
pub mod txstore;
pub mod wire;
