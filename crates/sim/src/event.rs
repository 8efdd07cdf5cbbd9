//! The simulator's events: what happens to which node, and when (the queue orders them).

use sorcha_peer_core::gossip::{AnnounceEntry, FetchFailure, GossipMessage};
use sorcha_peer_core::link::{Outcome, Via};
use sorcha_peer_core::membership::{Failure, Request, RequestId, Response};
use sorcha_peer_core::model::{Timestamp, TxId};
use sorcha_peer_core::time::Instant;

use crate::scenario::ChurnMode;

pub(crate) enum Ev {
    /// Attackers attack (see `attack.rs`).
    Attack,
    Start(u32),
    Down(u32, ChurnMode),
    Up(u32),
    /// Node `node`'s wake-up for its deadline `at`.
    Wake {
        node: u32,
        epoch: u32,
        at: Instant,
    },
    /// A membership request arrives at `to`.
    Request {
        from: u32,
        epoch: u32,
        to: u32,
        id: RequestId,
        /// Boxed: a `Register` carries a whole advert, and every queued event pays for the
        /// largest variant.
        request: Box<Request>,
        deadline: Timestamp,
        /// The transport it came by (the answer goes back the same way).
        via: Via,
    },
    Response {
        node: u32,
        epoch: u32,
        id: RequestId,
        result: Result<Response, Failure>,
        /// The transport that got an answer.
        via: Option<Via>,
    },
    /// How a unary or REST transmission went, as the call's answer (or its absence) tells.
    Transmitted {
        node: u32,
        epoch: u32,
        peer: u32,
        ticket: u64,
        outcome: Outcome,
    },
    /// A notification (Sorcha's `NotifyTransaction`) arrives.
    Notify {
        from: u32,
        to: u32,
        entry: AnnounceEntry,
    },
    /// A `fail` fault starts (true) or ends for node `n`.
    Failing(u32, bool),
    Gossip {
        from: u32,
        to: u32,
        message: GossipMessage,
    },
    /// A fetch call arrives at `to`.
    FetchRequest {
        from: u32,
        epoch: u32,
        to: u32,
        id: TxId,
        deadline: Timestamp,
        /// A unary call (else a `GOSSIP_FETCH` on a stream), for the answer's size.
        unary: bool,
    },
    Fetched {
        node: u32,
        epoch: u32,
        from: u32,
        id: TxId,
        result: Result<Vec<u8>, FetchFailure>,
    },
    Submit,
    Fault(usize),
    Heal,
    Sample,
}
