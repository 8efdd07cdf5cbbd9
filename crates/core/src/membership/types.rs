//! What crosses the boundary of the membership machine: requests it sends, the answers the
//! daemon feeds back, timers, persistence intents, events, and the counters it keeps.

use std::time::Duration;

use crate::model::{NodeState, PeerAdvert, PeerId, PeerNode, PeerStatus};
use crate::time::{Instant, Now};

/// Where to send a request. Bootstrap nodes are known by address only until they answer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Contact {
    pub address: String,
    pub port: u16,
    pub peer_id: Option<PeerId>,
}

impl Contact {
    /// A configured bootstrap node: no peer id yet.
    pub fn bootstrap(address: impl Into<String>, port: u16) -> Self {
        Self {
            address: address.into(),
            port,
            peer_id: None,
        }
    }

    pub(crate) fn of(node: &PeerNode) -> Self {
        Self {
            address: node.address.clone(),
            port: node.port,
            peer_id: Some(node.peer_id.clone()),
        }
    }
}

/// Names one request so its answer can be matched with [`Membership::handle_response`].
///
/// [`Membership::handle_response`]: super::Membership::handle_response
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// A request for the daemon to send (one rpc of `sorcha.peer.discovery` / `heartbeat`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `RegisterPeer` with our own advert.
    Register { advert: PeerAdvert },
    /// `GetPeerList`.
    GetPeerList { max: u32 },
    /// `ExchangePeers`: what we know, and how many we want back.
    ExchangePeers { adverts: Vec<PeerAdvert>, max: u32 },
    /// `Ping`.
    Ping,
    /// `SendHeartbeat`; `sequence` is the request's `sequence_number`.
    Heartbeat { sequence: u64 },
}

/// A decoded answer to a [`Request`]; the variant matches the request's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Registered { success: bool },
    PeerList { peers: Vec<PeerAdvert> },
    Exchanged { peers: Vec<PeerAdvert> },
    Pong { peer_id: PeerId, status: PeerStatus },
    Heartbeat { outcome: HeartbeatOutcome },
}

/// Why a request got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No answer within `peer_timeout`.
    Timeout,
    /// Could not connect.
    Unreachable,
    /// The peer answered with an error (or a malformed answer).
    Refused,
}

/// How a heartbeat was received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatOutcome {
    Accepted,
    /// The sender is unknown: the daemon answers success=false, "Peer not registered", and the
    /// sender registers.
    NotRegistered,
    /// The sender is banned.
    Banned,
    /// The heartbeat names a verified peer but did not come over that peer's authenticated
    /// connection (someone else speaking in its name).
    Unproven,
}

/// Our answer to a `Ping`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pong {
    pub peer_id: PeerId,
    pub status: PeerStatus,
}

/// How a `RegisterPeer` was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterOutcome {
    /// A peer we did not know.
    Added,
    /// A peer we knew; its advert replaced ours of it.
    Updated,
}

/// Why an incoming request or advert was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The peer is banned.
    #[error("peer is banned")]
    Banned,
    /// The advert names this node.
    #[error("advert carries our own peer id")]
    SelfId,
    /// The address is not an IP address or host name, or cannot be dialled.
    #[error("invalid or undialable address")]
    BadAddress,
    /// Port 0.
    #[error("invalid port: expected 1 to 65535")]
    BadPort,
    /// A field or list longer than this node accepts.
    #[error("advert or list too large")]
    Oversized,
    /// Not seen by anyone for longer than `removal_after`.
    #[error("advert is stale")]
    Stale,
    /// The peer list is full of reachable peers.
    #[error("peer list is full")]
    ListFull,
    /// The unverified peers' share of the list (or of the active set) is full; they never
    /// displace verified peers.
    #[error("no room for more unverified peers: connect over TLS with the node's certificate")]
    UnverifiedFull,
    /// The id is verified and this call did not come over its authenticated connection.
    #[error("peer id is verified: it may only be spoken for over TLS with its own certificate")]
    NotProven,
    /// The connection's certificate proves another id than the one the message claims.
    #[error("peer id does not match the id of the connection's certificate")]
    IdMismatch,
}

/// Membership's timer kinds: one deadline each in its [`TimerTable`](crate::time::TimerTable)
/// (request timeouts are swept by `Probe`, so outstanding requests need no timer of their own).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Timer {
    /// Retry bootstrap after a failed attempt.
    Bootstrap,
    /// Heartbeat active peers, check passive ones, expire requests, sweep the list.
    Probe,
    /// Exchange peer lists with a few live peers.
    Refresh,
    /// Dials of hearsay held back by the dial gate may go again.
    Dial,
    /// Announce the peers that registered for the first time lately.
    Join,
    /// Ask a live peer for its list while ours is short of `discovery_target`.
    Grow,
}

/// What the machine asks the daemon to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send `request`; answer with `handle_response(id, ..)`.
    Send {
        to: Contact,
        request: Request,
        id: RequestId,
    },
    /// Store (insert or update) this peer.
    Persist(PeerNode),
    /// Delete this peer from the store.
    Forget(PeerId),
    Event(MembershipEvent),
}

/// What happened, for logs, the event log and the dashboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipEvent {
    StateChanged {
        from: NodeState,
        to: NodeState,
    },
    /// A bootstrap node answered.
    Bootstrapped {
        peer_id: PeerId,
    },
    /// Every bootstrap node failed; the next attempt is at `retry_at`.
    BootstrapFailed {
        attempt: u32,
        /// On the monotonic clock of the input that failed it.
        retry_at: Instant,
    },
    /// A recursive discovery round ended.
    DiscoveryRound {
        round: u32,
        new_peers: usize,
    },
    /// A peer entered the known list.
    PeerAdded {
        peer_id: PeerId,
    },
    /// A peer entered the active set.
    PeerActivated {
        peer_id: PeerId,
    },
    /// An active peer missed a contact; it is probed again.
    PeerSuspect {
        peer_id: PeerId,
    },
    /// A peer failed `failure_threshold` times and left the active set.
    PeerUnreachable {
        peer_id: PeerId,
    },
    /// A peer said it is shutting down and left the active set (it stays known).
    PeerLeft {
        peer_id: PeerId,
    },
    /// A peer left the known list.
    PeerRemoved {
        peer_id: PeerId,
    },
    /// A peer proved its id on an authenticated connection for the first time.
    PeerVerified {
        peer_id: PeerId,
    },
    /// A call claimed a verified peer's id without proving it, or proved another id.
    ClaimRefused {
        claimed: PeerId,
        why: Refusal,
    },
}

/// What we think of a known peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerHealth {
    /// Learned from another peer; has never answered us.
    Candidate,
    /// Answered (or contacted us) recently.
    Alive,
    /// Missed at least one contact, fewer than `failure_threshold`.
    Suspect,
    /// Missed `failure_threshold` contacts in a row.
    Unreachable,
}

/// A peer in the known list, as the getters show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownPeer {
    pub node: PeerNode,
    pub health: PeerHealth,
    pub active: bool,
    /// A heartbeat or ping to it is outstanding.
    pub(crate) probing: bool,
    /// It answered a `Ping` Busy (its in-degree is at `max_inbound`): not promoted before this.
    pub(crate) busy_until: Option<Instant>,
}

impl KnownPeer {
    pub fn is_healthy(&self) -> bool {
        matches!(self.health, PeerHealth::Alive | PeerHealth::Suspect)
    }
}

/// Counters the daemon exports as metrics: what was refused or dropped, and why.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MembershipStats {
    pub adverts_accepted: u64,
    pub refused_banned: u64,
    pub refused_self: u64,
    pub refused_bad_address: u64,
    pub refused_bad_port: u64,
    pub refused_oversized: u64,
    pub refused_stale: u64,
    pub refused_list_full: u64,
    /// Outputs (sends, events, intents) dropped because the output queue was full.
    pub outputs_dropped: u64,
    /// Sends not made because `MAX_PENDING_REQUESTS` were outstanding.
    pub sends_refused: u64,
    /// Answers to requests we no longer wait for.
    pub responses_unknown: u64,
    /// Answers of the wrong kind, or from another peer than asked.
    pub responses_mismatched: u64,
    /// Requests the daemon never answered, expired after twice `peer_timeout`.
    pub requests_expired: u64,
    pub bootstrap_attempts: u64,
    pub bootstrap_failures: u64,
    pub discovery_rounds: u64,
    pub peers_removed: u64,
    pub heartbeats_unregistered: u64,
    /// Pings answered Busy because `max_inbound` peers hold (or may hold) us active.
    pub pings_busy: u64,
    pub refused_unverified_full: u64,
    /// Active peers dropped for relays (`roles.rs`; only with relays on).
    pub relay_swaps: u64,
    /// Claims to speak for a verified id that did not come over its connection.
    pub refused_not_proven: u64,
    pub refused_id_mismatch: u64,
    /// Peers that proved their id for the first time.
    pub peers_verified: u64,
    /// Hearsay dials held back: over `dial_rate_per_second`...
    pub dials_deferred_rate: u64,
    /// ... over `max_dials_per_minute` distinct addresses...
    pub dials_deferred_distinct_cap: u64,
    /// ... to an address backing off after a failure...
    pub dials_deferred_backoff: u64,
    /// ... and candidates never dialled because nothing needs them (discovery knows enough or
    /// its session asked `max_discovery_asks` peers, or a message brought more than
    /// `max_hearsay_per_message`).
    pub dials_deferred_not_needed: u64,
    /// Hearsay dials made.
    pub hearsay_dials: u64,
    /// Adverts of new registrants sent to active peers (one per joiner and peer told).
    pub joins_announced: u64,
    /// New registrants not announced because `MAX_JOINERS` were waiting.
    pub joins_dropped: u64,
    /// Peer lists asked for while the list was short of `discovery_target` (`growth.rs`).
    pub growth_asks: u64,
}

impl MembershipStats {
    pub(crate) fn count_refusal(&mut self, why: Refusal) {
        let counter = match why {
            Refusal::Banned => &mut self.refused_banned,
            Refusal::SelfId => &mut self.refused_self,
            Refusal::BadAddress => &mut self.refused_bad_address,
            Refusal::BadPort => &mut self.refused_bad_port,
            Refusal::Oversized => &mut self.refused_oversized,
            Refusal::Stale => &mut self.refused_stale,
            Refusal::ListFull => &mut self.refused_list_full,
            Refusal::UnverifiedFull => &mut self.refused_unverified_full,
            Refusal::NotProven => &mut self.refused_not_proven,
            Refusal::IdMismatch => &mut self.refused_id_mismatch,
        };
        *counter += 1;
    }
}

/// Why we sent a request, kept until its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Purpose {
    BootstrapProbe {
        index: usize,
    },
    Register {
        peer: PeerId,
    },
    PeerList {
        peer: PeerId,
        discovery: bool,
    },
    /// A short list's ask (`growth.rs`): its answer is merged, not explored further.
    Grow {
        peer: PeerId,
    },
    Exchange {
        peer: PeerId,
    },
    Heartbeat {
        peer: PeerId,
    },
    Probe {
        peer: PeerId,
    },
}

impl Purpose {
    pub(crate) fn peer(&self) -> Option<&PeerId> {
        match self {
            Purpose::BootstrapProbe { .. } => None,
            Purpose::Register { peer }
            | Purpose::PeerList { peer, .. }
            | Purpose::Grow { peer }
            | Purpose::Exchange { peer }
            | Purpose::Heartbeat { peer }
            | Purpose::Probe { peer } => Some(peer),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub(crate) purpose: Purpose,
    pub(crate) sent_at: Instant,
}

impl Pending {
    pub(crate) fn rtt(&self, now: Now) -> Duration {
        now.mono.since(self.sent_at)
    }
}
