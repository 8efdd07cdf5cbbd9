//! The offline queue: not a store of its own but the durable store's rows in state `queued`
//! ([`super::durable`]), so a transaction submitted while Offline is written once and is
//! readable like any other. This module keeps the name the listeners know it by.

use super::durable::TxDb;

/// The offline queue as the HTTP handlers, the body servers and the flusher share it.
pub type SharedQueue = TxDb;
