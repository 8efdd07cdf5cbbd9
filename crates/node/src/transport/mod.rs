//! Reaching peers and being reached by them.
//!
//! - [`grpc`]: the peer port's services (the wire contract, health, reflection); [`rest`]: the
//!   REST fallback, served beside gRPC and used as a client for peers that speak only it.
//! - [`outbound`]: carrying out the core's requests, transmissions and pulls over the
//!   transport it chose: pooled channels, deadlines, answers fed back to the actor;
//!   [`links`]: each peer's link worker, which makes one attempt per transmission.
//! - [`tls`]: TLS on the peer port and on our dials, and what a connection proves.
//! - [`limits`]: per-peer rate limits, the upload budget, and both ports' connection limits.
//! - [`counted`]: the socket wrapper that counts every byte of the peer port and our dials.

pub mod counted;
pub mod grpc;
pub mod limits;
pub mod links;
pub mod outbound;
pub mod rest;
pub mod tls;
