//! The values that cross the link machine's edge: what the runtime is told to transmit and
//! over which transport, and what it reports back about how that went.

use crate::backoff::RetryPolicy;
use crate::breaker::BreakerConfig;
use crate::gossip::{AnnounceEntry, GossipMessage};
use crate::membership::{Contact, Request, RequestId};
use crate::model::{PeerId, Protocol, TxHash, TxId};

use super::negotiate::Speaks;
use super::speech::Service;

/// Links kept at most: every active and recently contacted peer, with room to spare; past
/// it the least recently used link is closed (its queue counted as dropped).
pub const MAX_LINKS: usize = 512;

/// Ids one `GOSSIP_FETCH` names at most (the wire contract's batch bound; the daemon's
/// `wire::MAX_FETCH_BATCH` answers no more).
pub const MAX_FETCH_BATCH: usize = 256;

/// Transmissions a stream link has handed the runtime and not heard back about: the
/// daemon's stream buffer, before HTTP/2 flow control pushes back.
pub const STREAM_WINDOW: usize = 64;

/// Transmissions a unary or REST link has in flight: one call at a time, as a peer's link
/// worker makes them, so a slow peer holds back only its own queue.
pub const CALL_WINDOW: usize = 1;

/// The knobs of the link machine.
#[derive(Debug, Clone, Copy)]
pub struct LinkConfig {
    /// The transports this node speaks (and serves).
    pub speaks: Speaks,
    /// The transport tried first with a peer that speaks it (`communication.preferred_protocol`);
    /// the others follow on a refusal.
    pub prefer: Via,
    /// Each peer's circuit breaker.
    pub breaker: BreakerConfig,
    /// Gossip messages are idempotent (receivers deduplicate by id), so a failed send is
    /// retried with exponential backoff and jitter up to `max_retries`; membership calls and
    /// pulls are not (membership and gossip have their own timers for those).
    pub retry: RetryPolicy,
    /// Bodies above this many bytes are pulled in chunks (`StreamTransaction`), one call
    /// each, never in a `GOSSIP_FETCH` batch.
    pub streaming_threshold: u64,
    /// What a message counts against its lane's byte bound: the runtime's encoding
    /// (`sorcha_peer_wire::size::gossip_len`); the core has no encoder of its own, so the
    /// default is [`held_len`].
    pub size: fn(&GossipMessage) -> usize,
}

/// The bytes a queued message holds (ids, sizes, bodies), within a few bytes a message of
/// its protobuf encoding: the default of [`LinkConfig::size`].
pub fn held_len(message: &GossipMessage) -> usize {
    let entry = |e: &AnnounceEntry| TxId::LEN + 16 + e.register_id.as_ref().map_or(0, String::len);
    match message {
        GossipMessage::Announce { entries } => entries.iter().map(entry).sum(),
        GossipMessage::Push { entry: e, body } => entry(e) + body.len(),
        GossipMessage::Digest { prefixes, .. } => 24 + 8 * prefixes.len(),
        GossipMessage::DigestReply { missing, wanted } => {
            missing.iter().map(entry).sum::<usize>() + 8 * wanted.len()
        }
        GossipMessage::Prune | GossipMessage::Graft => 0,
    }
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            speaks: Speaks::default(),
            // The stream: one connection carries everything, compacted after its first message.
            prefer: Via::Stream,
            breaker: BreakerConfig::default(),
            retry: RetryPolicy::default(),
            // The daemon's `distribution.streaming_threshold`: 1 MiB, past which a body is
            // better streamed in 64 KiB chunks than held in one message.
            streaming_threshold: 1024 * 1024,
            size: held_len,
        }
    }
}

/// How a transmission reaches its peer, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Via {
    /// The long-lived `PeerCommunication.Stream` (opened by the runtime if it has none).
    Stream,
    /// Unary gRPC calls.
    Unary,
    /// The JSON REST fallback.
    Rest,
}

impl Via {
    /// The advertised protocol this transport stands for.
    pub fn protocol(self) -> Protocol {
        match self {
            Via::Stream => Protocol::GrpcStream,
            Via::Unary => Protocol::Grpc,
            Via::Rest => Protocol::Rest,
        }
    }
}

/// One body to pull: by `id` from our peers, by the whole `hash` from Sorcha's (who know
/// whole hashes only); `size` picks unary or chunked (`StreamTransaction`) calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pull {
    pub id: TxId,
    pub hash: Option<TxHash>,
    pub size: u64,
}

/// What a transmission carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    /// One of our `GOSSIP_*` messages.
    Gossip(GossipMessage),
    /// Announcements for a peer that speaks only Sorcha's contract: one `NotifyTransaction`
    /// (REST: `POST /api/v1/transactions/notify`) each.
    Notify(Vec<AnnounceEntry>),
    /// Bodies to pull. On the stream: one `GOSSIP_FETCH` of at most [`MAX_FETCH_BATCH`] ids,
    /// answered on the stream. Unary or REST: exactly one pull, one call. Either way each
    /// body (or failure) comes back through `handle_fetched`.
    Fetch(Vec<Pull>),
}

/// How a transmission went, as the runtime saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered (queued on an open stream, or acknowledged by the call).
    Sent,
    /// The peer does not serve this transport (gRPC UNIMPLEMENTED, HTTP 404/405): not a
    /// fault of the peer, and never retried the same way.
    Refused,
    /// No answer at the transport level (connection refused or reset, UNAVAILABLE).
    Failed,
    /// No answer within the peer timeout.
    Timeout,
}

/// What the runtime must do (besides what [`Output`] carries for other machines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Transmit `what` to `to` over `via`; report with `handle_transmitted(peer, ticket, ..)`.
    /// Pulls' bodies or failures come back through `handle_fetched`; a unary pull (ticket
    /// 0) is reported that way only.
    Transmit {
        to: Contact,
        via: Via,
        what: What,
        ticket: u64,
    },
    /// Send a membership request over `via` (never the stream); when `rest_fallback`, a
    /// transport failure of gRPC is followed by the same request over REST.
    Request {
        to: Contact,
        request: Request,
        id: RequestId,
        via: Via,
        rest_fallback: bool,
    },
    /// Stop the link to `peer`: its worker, its stream, whatever it still sends.
    CloseLink(PeerId),
    /// A pull that cannot be made (circuit open, batch refused): fail it in gossip now so
    /// it moves to the next announcer instead of waiting for its timeout.
    PullFailed {
        from: PeerId,
        id: TxId,
    },
    Event(LinkEvent),
}

/// Why a message was not sent, as the daemon's `gossip_dropped_total{kind}` labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropKind {
    /// The peer's circuit is open.
    CircuitOpen,
    QueueFullControl,
    QueueFullAnnounce,
    QueueFullBody,
    /// Still queued when the link closed (evicted, forgotten, circuit opened).
    LinkClosed,
    /// The bounded set of extension speakers was full.
    SpeakersFull,
    /// The bounded table of refusals was full.
    SorchaOnlyFull,
    /// The peer does not speak it: our extension messages (digests) for a peer that speaks
    /// only Sorcha's contract, or anything after every transport was refused.
    NotSpoken,
}

impl DropKind {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            DropKind::CircuitOpen => "circuit_open",
            DropKind::QueueFullControl => "queue_full_control",
            DropKind::QueueFullAnnounce => "queue_full_announce",
            DropKind::QueueFullBody => "queue_full_body",
            DropKind::LinkClosed => "link_closed",
            DropKind::SpeakersFull => "speakers_full",
            DropKind::SorchaOnlyFull => "sorcha_only_full",
            DropKind::NotSpoken => "not_spoken",
        }
    }
}

/// What happened on the links, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    Dropped {
        kind: DropKind,
        count: u64,
    },
    /// A transmission failed for good (after its retries): a connection error.
    SendFailed {
        peer: PeerId,
    },
    CircuitOpened {
        peer: PeerId,
    },
    CircuitClosed {
        peer: PeerId,
    },
    /// A transport was refused: the message goes the next way at once.
    Downgraded {
        peer: PeerId,
    },
    /// `peer` refused `service` (UNIMPLEMENTED, HTTP 404/405): kept for
    /// [`REPROBE_REFUSED`](super::speech::REPROBE_REFUSED), worth storing with the time.
    Refused {
        peer: PeerId,
        service: Service,
    },
    /// `peer` answered `service`, which it had refused: the stored refusal goes.
    Served {
        peer: PeerId,
        service: Service,
    },
    /// `protocol` worked with `peer` and that is news (worth storing).
    Worked {
        peer: PeerId,
        protocol: Protocol,
    },
    /// The least recently used link was closed to make room.
    Evicted {
        peer: PeerId,
    },
}
