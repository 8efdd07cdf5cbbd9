//! Discovery and membership: who our peers are and whether the node is Online.
//!
//! [`Membership`] is a sans-IO state machine. It finds peers through configured bootstrap
//! nodes (or, when they are all down, the peers stored from the last run), discovers more by
//! asking peers for their lists, keeps a bounded *active set* it heartbeats and a larger
//! *passive list* to refill it from, suspects and drops peers that stop answering, and reports
//! Online / Degraded / Offline.
//!
//! Files: `config.rs` (knobs), `types.rs` (inputs, outputs, events, counters), `bootstrap.rs`
//! (bootstrap and its backoff), `discovery.rs` (recursive discovery and refresh exchange),
//! `health.rs` (heartbeats, suspicion, sweeping, node state), `views.rs` (active set, passive
//! list, adverts), `inbound.rs` (answers to other peers' requests), `dials.rs` (the gate that
//! bounds dials of hearsay: rate, distinct addresses a minute, backoff of failed addresses),
//! `joins.rs` (new registrants announced one hop to the active peers), `growth.rs` (in a node's first
//! seconds a short list asks live peers for theirs), `roles.rs` (relays first in the active set,
//! when the gossip layer's relays are on).

mod bootstrap;
mod config;
mod dials;
mod discovery;
mod growth;
mod health;
mod inbound;
mod joins;
mod roles;
mod types;
mod views;

#[cfg(test)]
mod claims_tests;
#[cfg(test)]
mod net_tests;
#[cfg(test)]
pub(crate) mod test_util;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand_chacha::ChaCha8Rng;

use crate::model::{NodeState, PeerAdvert, PeerId, PeerNode, Timestamp};
use crate::time::{Instant, Now, TimerTable};

pub use config::MembershipConfig;
pub use types::{
    Contact, Failure, HeartbeatOutcome, KnownPeer, MembershipEvent, MembershipStats, Output,
    PeerHealth, Pong, Refusal, RegisterOutcome, Request, RequestId, Response, Timer,
};

pub use dials::{DialRefusal, MAX_DIAL_BACKOFF};
pub use growth::{GROW_EVERY, GROW_WINDOW};
pub use joins::{JOIN_ANNOUNCE_DELAY, MAX_JOINERS};
pub use views::{MAX_ADVERTS_PER_ANSWER, MAX_ADVERTS_PER_MESSAGE};

use bootstrap::Bootstrap;
use dials::DialGate;
use discovery::Discovery;
use types::{Pending, Purpose};

/// Outputs queued before the daemon polls them. A tick emits at most one heartbeat per active
/// peer plus a few pings and exchanges; 4096 leaves two orders of magnitude of slack. Past it
/// everything is dropped and counted (timers are not outputs: see `timers`).
pub const MAX_OUTPUTS: usize = 4096;

/// Requests awaiting an answer: active set + discoveries + exchanges + probes stay far below.
pub const MAX_PENDING_REQUESTS: usize = 256;

/// Bans kept; more would let an operator script grow memory without bound.
pub const MAX_BANS: usize = 4096;

/// Peers remembered as heartbeating us: a popular node is heartbeated by many, and only the
/// freshest few are used for gossip anyway.
pub const MAX_HEARTBEATERS: usize = 1024;

/// The membership state machine of one node.
///
/// Call order, as in quinn's `Connection`:
/// - construct with [`Membership::new`] (stored peers from the database go in here); it
///   queues the first bootstrap request and the first timers;
/// - feed inputs as they happen, each with the current time ([`Now`]: deadlines on its
///   monotonic half, adverts, stored peers and bans on its wall-clock half): [`handle_response`]
///   for every answer (or failure) to a sent request, [`handle_timeout`] once [`poll_timeout`]
///   has passed, and
///   the incoming-request answers [`handle_register`], [`peer_list`], [`handle_exchange`],
///   [`handle_ping`], [`handle_heartbeat`] (each after [`check_claim`] has let the caller
///   speak for the id it names), proofs of identity [`note_proven`]; operator commands
///   [`ban`] and [`unban`];
/// - after every input, drain [`poll_output`] until `None` and execute the outputs in order
///   (persistence intents before the sends that follow them);
/// - read state any time with the getters ([`state`], [`peers`], [`active_peers`], [`peer`],
///   [`stats`], ...).
///
/// [`handle_response`]: Membership::handle_response
/// [`handle_timeout`]: Membership::handle_timeout
/// [`poll_timeout`]: Membership::poll_timeout
/// [`handle_register`]: Membership::handle_register
/// [`peer_list`]: Membership::peer_list
/// [`handle_exchange`]: Membership::handle_exchange
/// [`handle_ping`]: Membership::handle_ping
/// [`handle_heartbeat`]: Membership::handle_heartbeat
/// [`check_claim`]: Membership::check_claim
/// [`note_proven`]: Membership::note_proven
/// [`ban`]: Membership::ban
/// [`unban`]: Membership::unban
/// [`poll_output`]: Membership::poll_output
/// [`state`]: Membership::state
/// [`peers`]: Membership::peers
/// [`active_peers`]: Membership::active_peers
/// [`peer`]: Membership::peer
/// [`stats`]: Membership::stats
#[derive(Debug)]
pub struct Membership {
    config: MembershipConfig,
    /// How we describe ourselves; `last_seen` is set to `now` whenever it is sent.
    self_advert: PeerAdvert,
    /// Tried in order on every bootstrap attempt.
    bootstrap_contacts: Vec<Contact>,
    /// The known list, ordered so iteration (and so the RNG's choices) is deterministic.
    peers: BTreeMap<PeerId, KnownPeer>,
    /// Ids of `peers` with `active == true`, bounded by `config.active_size`.
    active: BTreeSet<PeerId>,
    /// How many of `peers` never proved their id (bounded by `config.unverified_share`).
    unverified: usize,
    /// Banned ids and until when (wall clock: a ban is persisted and outlives a restart);
    /// separate from `peers` so a ban outlives the peer's entry.
    bans: BTreeMap<PeerId, Timestamp>,
    /// Peers that heartbeated us, and when last (bounded by `MAX_HEARTBEATERS`).
    heartbeaters: BTreeMap<PeerId, Instant>,
    heartbeaters_added: u64,
    /// Active peers that answered a heartbeat "not registered", and when: once the
    /// registration is taken they are heartbeaten again at once (at most once per
    /// `probe_interval` each, so a peer that keeps forgetting us cannot make us spin).
    /// Bounded by the active set: only its peers go in, and each insertion first drops the
    /// entries of peers no longer active or older than `probe_interval`.
    rejoining: BTreeMap<PeerId, (Instant, bool)>,
    /// Peers told Online by a `Ping` that do not heartbeat us yet, and when: each may be about
    /// to promote us, so they count against `max_inbound` (bounded by it: past it nobody is
    /// told Online).
    reserved: BTreeMap<PeerId, Instant>,
    pending: BTreeMap<RequestId, Pending>,
    next_request: u64,
    heartbeat_sequence: u64,
    outputs: VecDeque<Output>,
    /// When each timer kind is due: at most one deadline per kind.
    timers: TimerTable<Timer>,
    state: NodeState,
    bootstrap: Bootstrap,
    discovery: Discovery,
    /// Bounds dials of hearsay (rate, distinct addresses, backoff).
    dials: DialGate,
    /// Peers that registered for the first time, to announce (bounded by `MAX_JOINERS`).
    joiners: Vec<PeerId>,
    /// When a short list last asked for more (`growth.rs`).
    growth: growth::Growth,
    rng: ChaCha8Rng,
    stats: MembershipStats,
}

impl Membership {
    /// A node advertising `self_advert`, bootstrapping through `bootstrap_contacts` (in order)
    /// and rejoining through `stored_peers` (from the peer store) if those are all down.
    pub fn new(
        config: MembershipConfig,
        self_advert: PeerAdvert,
        bootstrap_contacts: Vec<Contact>,
        stored_peers: Vec<PeerNode>,
        rng: ChaCha8Rng,
        now: Now,
    ) -> Self {
        let mut this = Self {
            config,
            self_advert,
            bootstrap_contacts,
            peers: BTreeMap::new(),
            active: BTreeSet::new(),
            unverified: 0,
            bans: BTreeMap::new(),
            heartbeaters: BTreeMap::new(),
            heartbeaters_added: 0,
            rejoining: BTreeMap::new(),
            reserved: BTreeMap::new(),
            pending: BTreeMap::new(),
            next_request: 0,
            heartbeat_sequence: 0,
            outputs: VecDeque::new(),
            timers: TimerTable::default(),
            state: NodeState::Offline,
            bootstrap: Bootstrap::default(),
            discovery: Discovery::default(),
            dials: DialGate::default(),
            joiners: Vec::new(),
            growth: growth::Growth::default(),
            rng,
            stats: MembershipStats::default(),
        };
        for node in stored_peers {
            this.load_stored(node, now);
        }
        this.schedule(
            now.mono.saturating_add(this.config.probe_interval),
            Timer::Probe,
        );
        this.schedule(
            now.mono.saturating_add(this.config.refresh_interval),
            Timer::Refresh,
        );
        this.start_bootstrap(now);
        this.fill_active(now);
        this.arm_growth(now);
        this
    }

    // ---- getters ----

    pub fn state(&self) -> NodeState {
        self.state
    }

    pub fn config(&self) -> &MembershipConfig {
        &self.config
    }

    pub fn self_id(&self) -> &PeerId {
        &self.self_advert.peer_id
    }

    /// Every known peer, banned and unreachable ones included (the admin table shows them).
    pub fn peers(&self) -> impl Iterator<Item = &KnownPeer> {
        self.peers.values()
    }

    pub fn active_peers(&self) -> impl Iterator<Item = &KnownPeer> {
        self.active.iter().filter_map(|id| self.peers.get(id))
    }

    pub fn peer(&self, id: &PeerId) -> Option<&KnownPeer> {
        self.peers.get(id)
    }

    pub fn known_count(&self) -> usize {
        self.peers.len()
    }

    pub fn active_count(&self) -> usize {
        self.active.len()
    }

    /// Known peers that never proved their id.
    pub fn unverified_count(&self) -> usize {
        self.unverified
    }

    /// Active peers that are alive or only suspect: what decides the node state.
    pub fn healthy_count(&self) -> usize {
        self.active_peers().filter(|p| p.is_healthy()).count()
    }

    pub fn is_banned(&self, id: &PeerId, now: Now) -> bool {
        self.bans.get(id).is_some_and(|until| *until > now.wall)
    }

    pub fn stats(&self) -> &MembershipStats {
        &self.stats
    }

    /// When `timer` is due, if armed.
    pub fn deadline(&self, timer: Timer) -> Option<Instant> {
        self.timers.get(timer)
    }

    // ---- inputs ----

    /// When membership next wants [`handle_timeout`](Membership::handle_timeout): its
    /// earliest timer.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Fires every timer due at `now`, earliest first.
    pub fn handle_timeout(&mut self, now: Now) {
        for timer in self.timers.due(now.mono) {
            self.handle_timer(timer, now);
        }
    }

    /// Fires `timer` if it is due at `now`; a timer not (or no longer) due is ignored.
    pub(crate) fn handle_timer(&mut self, timer: Timer, now: Now) {
        if !self.timers.take_if_due(timer, now.mono) {
            return;
        }
        match timer {
            Timer::Bootstrap => self.on_bootstrap_timer(now),
            Timer::Probe => self.on_probe_timer(now),
            Timer::Refresh => self.on_refresh_timer(now),
            Timer::Dial => {
                self.dispatch_discovery(now);
                self.fill_active(now);
            }
            Timer::Join => self.on_join_timer(now),
            Timer::Grow => self.on_grow_timer(now),
        }
    }

    /// The answer (or failure) of the request sent as `id`.
    pub fn handle_response(&mut self, id: RequestId, result: Result<Response, Failure>, now: Now) {
        let Some(pending) = self.pending.remove(&id) else {
            self.stats.responses_unknown += 1;
            return;
        };
        self.complete(pending, result, now);
        self.update_state(now);
    }

    // ---- outputs ----

    /// The next thing for the daemon to do, in order.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    // ---- internals shared by the submodules ----

    fn complete(&mut self, pending: Pending, result: Result<Response, Failure>, now: Now) {
        let rtt = pending.rtt(now);
        match (pending.purpose, result) {
            (Purpose::BootstrapProbe { index }, result) => {
                self.on_bootstrap_answer(index, result, now)
            }
            (Purpose::Register { peer }, Ok(Response::Registered { success: true })) => {
                self.mark_alive(&peer, Some(rtt), now);
                self.heartbeat_after_register(&peer, now);
            }
            (Purpose::PeerList { peer, discovery }, Ok(Response::PeerList { peers })) => {
                self.mark_alive(&peer, Some(rtt), now);
                self.on_peer_list(&peer, discovery, Some(peers), now);
            }
            (Purpose::Grow { peer }, Ok(Response::PeerList { peers })) => {
                self.mark_alive(&peer, Some(rtt), now);
                self.on_grow_answer(peers, now);
            }
            (Purpose::Exchange { peer }, Ok(Response::Exchanged { peers })) => {
                self.mark_alive(&peer, Some(rtt), now);
                self.on_exchange_answer(peers, now);
            }
            (Purpose::Heartbeat { peer }, Ok(Response::Heartbeat { outcome })) => {
                self.on_heartbeat_answer(&peer, outcome, rtt, now)
            }
            (Purpose::Probe { peer }, Ok(Response::Pong { peer_id, status }))
                if peer_id == peer =>
            {
                self.on_probe_answer(&peer, status, rtt, now)
            }
            (purpose, result) => {
                if result.is_ok() {
                    self.stats.responses_mismatched += 1;
                }
                if let Some(peer) = purpose.peer().cloned() {
                    self.record_failure(&peer, now);
                }
                if let Purpose::PeerList { peer, discovery } = purpose {
                    self.on_peer_list(&peer, discovery, None, now);
                }
            }
        }
    }

    /// Queues a request; `false` (counted) when too many are outstanding or the queue is full.
    fn send(&mut self, to: Contact, request: Request, purpose: Purpose, now: Now) -> bool {
        if self.pending.len() >= MAX_PENDING_REQUESTS || self.outputs.len() >= MAX_OUTPUTS {
            self.stats.sends_refused += 1;
            return false;
        }
        if let Some(peer) = purpose.peer()
            && matches!(purpose, Purpose::Heartbeat { .. } | Purpose::Probe { .. })
            && let Some(known) = self.peers.get_mut(peer)
        {
            known.probing = true;
        }
        let id = RequestId(self.next_request);
        self.next_request += 1;
        self.pending.insert(
            id,
            Pending {
                purpose,
                sent_at: now.mono,
            },
        );
        self.outputs.push_back(Output::Send { to, request, id });
        true
    }

    fn push(&mut self, output: Output) {
        if self.outputs.len() >= MAX_OUTPUTS {
            self.stats.outputs_dropped += 1;
            return;
        }
        self.outputs.push_back(output);
    }

    fn emit(&mut self, event: MembershipEvent) {
        self.push(Output::Event(event));
    }

    fn schedule(&mut self, at: Instant, timer: Timer) {
        self.timers.arm(timer, at);
    }

    fn persist(&mut self, id: &PeerId) {
        if let Some(known) = self.peers.get(id) {
            let node = known.node.clone();
            self.push(Output::Persist(node));
        }
    }

    /// Replaces what we advertise about ourselves (address discovery found a new address or
    /// port); the next registrations and exchanges carry it. The peer id cannot change.
    pub fn set_self_advert(&mut self, advert: PeerAdvert) {
        if advert.peer_id == self.self_advert.peer_id {
            self.self_advert = advert;
        }
    }

    pub fn self_advert(&self) -> &PeerAdvert {
        &self.self_advert
    }

    /// Our advert as we send it at `now`.
    fn advert_now(&self, now: Now) -> PeerAdvert {
        PeerAdvert {
            last_seen: now.wall,
            ..self.self_advert.clone()
        }
    }
}
