//! Reaching peers and being reached by them.
//!
//! - [`grpc`]: the peer port's services (the wire contract, health, reflection); [`rest`]: the
//!   REST fallback, served beside gRPC and used as a client for peers that speak only it.
//! - [`outbound`]: carrying out the core's sends and fetches: pooled channels, deadlines,
//!   breakers, answers fed back to the actor; [`links`]: each peer's bounded outgoing queue
//!   and its worker; [`negotiate`]: which transport each peer gets.

pub mod grpc;
pub mod links;
pub mod negotiate;
pub mod outbound;
pub mod rest;
