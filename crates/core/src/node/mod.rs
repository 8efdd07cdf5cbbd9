//! `Node`: the protocol state machines one daemon (or one simulated node) owns, composed.
//! [`Membership`] decides who our peers are; [`Gossip`] spreads transactions over the healthy
//! members of the active set, which the node hands it whenever that set changes; [`Links`]
//! carries both to each peer (transport, breaker, send lanes, pull batching), so the runtime
//! only transmits what it is told over the transport it is told and reports how it went.
//!
//! Call order (quinn style):
//! - construct with [`Node::new`];
//! - getters ([`Node::state`], [`Node::membership`], [`Node::gossip`]) never change state;
//! - inputs: the `handle_*` methods, [`Node::submit`] and the inbound-request answers, each
//!   with the current time as a [`Now`] (monotonic for deadlines, wall clock for the wire and
//!   the peer store; see [`crate::time`]);
//! - after every input, drain [`Node::poll_output`] until `None` and carry the outputs out in
//!   order (persistence and stores before the sends that follow them);
//! - report each transmission's outcome ([`Node::handle_transmitted`]) and the streams the
//!   runtime opens and loses ([`Node::handle_stream_opened`], [`Node::handle_stream_closed`]):
//!   a link releases its next messages only as earlier ones are reported;
//! - timers: the node keeps its deadlines itself. After every input ask
//!   [`Node::poll_timeout`] when it next wants to be woken, and at (or after) that instant call
//!   [`Node::handle_timeout`], which fires every timer due. There is no other timer source, so
//!   none can be dropped: each sub-machine keeps one deadline per timer kind (membership 3,
//!   gossip 3), and work with many deadlines (outstanding requests, fetches) keeps them in its
//!   own bounded table behind one of those kinds.

mod conduct;

use std::collections::VecDeque;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::gossip::AnnounceEntry;
use crate::gossip::{
    self, FetchFailure, Fetched, Gossip, GossipConfig, GossipMessage, SubmitError, SubmitOutcome,
};
use crate::link::{self, LinkConfig, LinkEvent, Links, Outcome, Pull, Via, What};
use crate::membership::{
    self, Contact, Failure, HeartbeatOutcome, Membership, MembershipConfig, Pong, Refusal,
    RegisterOutcome, RequestId, Response,
};
use crate::model::{
    Caller, NodeState, PeerAdvert, PeerId, PeerNode, Protocol, Timestamp, TxHash, TxId,
};
use crate::score::{BanRecord, Reputation, ScoreConfig};
use crate::time::{Instant, Now};

pub use conduct::{MAX_BAN_OUTPUTS, MAX_CALLER_ADDRESSES};

/// The knobs of every sub-machine.
#[derive(Debug, Clone, Default)]
pub struct NodeConfig {
    pub membership: MembershipConfig,
    pub gossip: GossipConfig,
    pub link: LinkConfig,
    pub score: ScoreConfig,
}

/// What the runtime must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send a membership `request` to `to` over `via` (then over REST after a transport
    /// failure, when `rest_fallback`); answer with [`Node::handle_response_via`] and `id`.
    Send {
        to: Contact,
        request: membership::Request,
        id: RequestId,
        via: Via,
        rest_fallback: bool,
    },
    /// Transmit gossip or pulls to a peer (its address resolved from membership) over `via`;
    /// report with [`Node::handle_transmitted`] and `ticket`. Pulled bodies (or failures) come
    /// back through [`Node::handle_fetched`]; a unary pull (ticket 0) is reported that way
    /// only.
    Transmit {
        to: Contact,
        via: Via,
        what: What,
        ticket: u64,
    },
    /// Stop the link to this peer (its worker, its stream): its circuit opened, it was
    /// evicted or forgotten.
    CloseLink(PeerId),
    /// Keep this body (serve it to peers, hand it to local readers), before what follows.
    Store {
        hash: TxHash,
        body: Vec<u8>,
        register_id: Option<String>,
        origin: gossip::Origin,
    },
    /// Tell local subscribers about a new transaction (once per hash).
    Deliver {
        hash: TxHash,
        register_id: Option<String>,
        size: u64,
        /// The peer it came from (`None`: submitted here).
        from: Option<PeerId>,
        arrival: gossip::Arrival,
    },
    /// Store this peer.
    Persist(PeerNode),
    /// Delete this peer from the store.
    Forget(PeerId),
    /// The peer score banned an id or an address: persist it (its strike count too, so the
    /// next ban doubles after a restart; give it back with [`Node::restore_ban`]) and log it.
    Banned(BanRecord),
    /// Something happened: log it, count it, show it.
    Event(Event),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Membership(membership::MembershipEvent),
    Gossip(gossip::GossipEvent),
    Link(LinkEvent),
    /// A gossip send or fetch named a peer membership no longer knows; it was dropped.
    UnknownPeer {
        peer_id: PeerId,
    },
}

pub struct Node {
    membership: Membership,
    gossip: Gossip,
    links: Links,
    /// What gossip was last told the active peers are, to tell it again only on change.
    gossip_peers: Vec<PeerId>,
    /// The time of the latest input, for work `poll_output` must feed back (a fetch from a
    /// peer that vanished fails at once, as of the input that produced it).
    last_now: Now,
    reputation: Reputation,
    /// Where unverified ids called from (what their bans also cover).
    addresses: conduct::CallerAddresses,
    /// Automatic bans for the runtime, ahead of every other output.
    bans_out: VecDeque<Output>,
}

impl Node {
    /// A node advertising `advert`, joining through `bootstrap` (in order) or, when those are
    /// all down, through the `stored` peers of its last run. Each sub-machine gets its own RNG
    /// derived from `rng`, so a seed reproduces the whole node.
    pub fn new(
        config: NodeConfig,
        advert: PeerAdvert,
        bootstrap: Vec<Contact>,
        stored: Vec<PeerNode>,
        mut rng: ChaCha8Rng,
        now: Now,
    ) -> Self {
        let membership_rng = ChaCha8Rng::seed_from_u64(rng.next_u64());
        let gossip_rng = ChaCha8Rng::seed_from_u64(rng.next_u64());
        let link_rng = ChaCha8Rng::seed_from_u64(rng.next_u64());
        let id = advert.peer_id.clone();
        // The share of relays is one setting, the gossip layer's: membership follows it.
        let membership_config = MembershipConfig {
            relay_percent: config.gossip.relay_percent,
            ..config.membership
        };
        let membership = Membership::new(
            membership_config,
            advert,
            bootstrap,
            stored,
            membership_rng,
            now,
        );
        Self {
            membership,
            gossip: Gossip::new(config.gossip, id, gossip_rng, now),
            links: Links::new(config.link, link_rng),
            gossip_peers: Vec::new(),
            last_now: now,
            reputation: Reputation::new(config.score),
            addresses: conduct::CallerAddresses::default(),
            bans_out: VecDeque::new(),
        }
    }

    // ---- getters ----

    pub fn peer_id(&self) -> &PeerId {
        self.membership.self_id()
    }

    pub fn state(&self) -> NodeState {
        self.membership.state()
    }

    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    pub fn gossip(&self) -> &Gossip {
        &self.gossip
    }

    pub fn links(&self) -> &Links {
        &self.links
    }

    // ---- inputs ----

    /// The answer to an [`Output::Send`], from a runtime that does not say which transport
    /// got it.
    pub fn handle_response(&mut self, id: RequestId, result: Result<Response, Failure>, now: Now) {
        self.handle_response_via(id, result, None, now);
    }

    /// The answer to an [`Output::Send`]; `via`: the transport that got an answer.
    pub fn handle_response_via(
        &mut self,
        id: RequestId,
        result: Result<Response, Failure>,
        via: Option<Via>,
        now: Now,
    ) {
        self.last_now = now;
        let healthy = !matches!(result, Err(Failure::Timeout | Failure::Unreachable));
        self.links.handle_answered(id, healthy, via, now.mono);
        self.membership.handle_response(id, result, now);
        self.sync_gossip_peers(now);
    }

    /// How the transmission `ticket` to `peer` went.
    pub fn handle_transmitted(&mut self, peer: &PeerId, ticket: u64, outcome: Outcome, now: Now) {
        self.last_now = now;
        self.links
            .handle_transmitted(peer, ticket, outcome, now.mono);
    }

    /// The runtime opened a stream to `peer` (numbered by the runtime, so that the close of
    /// an older one is told apart).
    pub fn handle_stream_opened(&mut self, peer: &PeerId, generation: u64, now: Now) {
        self.last_now = now;
        self.links.handle_stream_opened(peer, generation);
    }

    /// Stream `generation` to `peer` broke or fell silent.
    pub fn handle_stream_closed(&mut self, peer: &PeerId, generation: u64, now: Now) {
        self.last_now = now;
        self.links.handle_stream_closed(peer, generation);
    }

    /// A transport that worked with `peer` in an earlier run (from the peer store).
    pub fn remember_protocol(&mut self, peer: &PeerId, protocol: Protocol) {
        self.links.remember(peer, protocol);
    }

    /// A refusal of `service` by `peer` stored at wall time `at` in an earlier run: it holds
    /// for what is left of [`link::REPROBE_REFUSED`].
    pub fn remember_refusal(
        &mut self,
        peer: &PeerId,
        service: link::Service,
        at: Timestamp,
        now: Now,
    ) {
        let age = now.wall.since(at);
        self.links.remember_refusal(peer, service, age, now.mono);
    }

    /// When the node next wants [`Node::handle_timeout`]: the earliest deadline of
    /// membership, gossip and the links' retries. Ask again after every input; `None` only
    /// before anything is armed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.membership.poll_timeout(),
            self.gossip.poll_timeout(),
            self.links.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Fires every timer due at `now.mono` (membership's, then gossip's; each earliest first).
    /// Calling it early, or twice, fires nothing that is not due.
    pub fn handle_timeout(&mut self, now: Now) {
        self.last_now = now;
        self.membership.handle_timeout(now);
        self.sync_gossip_peers(now);
        self.gossip.handle_timeout(now);
        self.absorb_conduct(now);
        self.links.handle_timeout(now.mono);
    }

    pub fn set_advert(&mut self, advert: PeerAdvert) {
        self.membership.set_self_advert(advert);
    }

    /// A transaction submitted on this node.
    pub fn submit(
        &mut self,
        body: Vec<u8>,
        register_id: Option<String>,
        now: Now,
    ) -> Result<SubmitOutcome, SubmitError> {
        self.last_now = now;
        self.gossip.submit(body, register_id, now)
    }

    /// A transaction held before a restart: see [`Gossip::restore`].
    pub fn restore_transaction(
        &mut self,
        hash: TxHash,
        size: u64,
        register_id: Option<String>,
        now: Now,
    ) -> bool {
        self.last_now = now;
        self.gossip.restore(hash, size, register_id, now)
    }

    /// A gossip message from `from`; dropped if `from` is banned.
    pub fn handle_gossip(&mut self, from: &PeerId, message: GossipMessage, now: Now) {
        self.last_now = now;
        self.links.heard_gossip(from);
        if !self.is_banned(from, now) {
            self.gossip.handle_message(from, message, now);
            self.absorb_conduct(now);
        }
    }

    /// An announcement in Sorcha's `NotifyTransaction` from `from` (the caller, which holds
    /// the body). What `from` speaks is learnt from its answers, not from this.
    pub fn handle_notify(&mut self, from: &PeerId, entry: AnnounceEntry, now: Now) {
        self.last_now = now;
        if !self.is_banned(from, now) {
            let message = GossipMessage::Announce {
                entries: vec![entry],
            };
            self.gossip.handle_message(from, message, now);
            self.absorb_conduct(now);
        }
    }

    /// The body (or failure) of a pull of an [`Output::Transmit`].
    pub fn handle_fetched(
        &mut self,
        from: &PeerId,
        id: TxId,
        result: Result<Vec<u8>, FetchFailure>,
        now: Now,
    ) {
        self.last_now = now;
        let healthy = !matches!(
            result,
            Err(FetchFailure::Timeout | FetchFailure::Unreachable)
        );
        self.links.handle_fetched(from, healthy, now.mono);
        self.gossip.handle_fetched(from, id, result, now);
        self.absorb_conduct(now);
    }

    /// The bodies (or failures) of several pulls at once, in the order they came: each as
    /// [`handle_fetched`](Node::handle_fetched), with one scan for new fetches after all.
    pub fn handle_fetched_batch(&mut self, results: Vec<Fetched>, now: Now) {
        self.last_now = now;
        for (from, _, result) in &results {
            let healthy = !matches!(
                result,
                Err(FetchFailure::Timeout | FetchFailure::Unreachable)
            );
            self.links.handle_fetched(from, healthy, now.mono);
        }
        self.gossip.handle_fetched_batch(results, now);
    }

    /// `RegisterPeer` from `caller`: refused when the caller may not speak for the id it
    /// registers (see [`Membership::check_claim`]).
    pub fn handle_register(
        &mut self,
        advert: PeerAdvert,
        caller: &Caller,
        now: Now,
    ) -> Result<RegisterOutcome, Refusal> {
        self.last_now = now;
        if !self.check_address(Some(&advert.peer_id), caller, now) {
            return Err(Refusal::Banned);
        }
        let proven = self.membership.check_claim(&advert.peer_id, caller)?;
        self.links.heard_from(&advert.peer_id, now.mono);
        let result = if proven {
            self.membership.handle_register_proven(advert, now)
        } else {
            self.membership.handle_register(advert, now)
        };
        self.sync_gossip_peers(now);
        result
    }

    /// `GetPeerList`; a requester that may not speak for the id it names is answered as an
    /// anonymous one.
    pub fn peer_list(
        &mut self,
        requester: Option<&PeerId>,
        caller: &Caller,
        max: usize,
        now: Now,
    ) -> Vec<PeerAdvert> {
        self.last_now = now;
        if !self.check_address(requester, caller, now) {
            return Vec::new();
        }
        let requester = requester.filter(|id| self.claim(id, caller).is_ok());
        self.membership.peer_list(requester, max, now)
    }

    /// `ExchangePeers`: refused (nothing merged, nothing answered) when the caller may not
    /// speak for `from`.
    pub fn handle_exchange(
        &mut self,
        from: &PeerId,
        caller: &Caller,
        adverts: Vec<PeerAdvert>,
        max: usize,
        now: Now,
    ) -> Result<Vec<PeerAdvert>, Refusal> {
        self.last_now = now;
        self.claim(from, caller)?;
        Ok(self.membership.handle_exchange(from, adverts, max, now))
    }

    pub fn handle_ping(
        &mut self,
        from: Option<&PeerId>,
        caller: &Caller,
        now: Now,
    ) -> Result<Pong, Refusal> {
        self.last_now = now;
        if !self.check_address(from, caller, now) {
            return Err(Refusal::Banned);
        }
        if let Some(id) = from {
            self.claim(id, caller)?;
        }
        self.membership.handle_ping(from, now)
    }

    /// `SendHeartbeat`: a heartbeat in a verified peer's name that did not come over its
    /// authenticated connection keeps nobody alive.
    pub fn handle_heartbeat(
        &mut self,
        from: &PeerId,
        caller: &Caller,
        now: Now,
    ) -> HeartbeatOutcome {
        self.last_now = now;
        if !self.check_address(Some(from), caller, now) {
            return HeartbeatOutcome::Banned;
        }
        if self.claim(from, caller).is_err() {
            return HeartbeatOutcome::Unproven;
        }
        self.links.heard_from(from, now.mono);
        let before = self.membership.heartbeaters_added();
        let outcome = self.membership.handle_heartbeat(from, now);
        // Heartbeats are the most frequent input; only a new heartbeater can change the
        // gossip peers here.
        if self.membership.heartbeaters_added() != before {
            self.sync_gossip_peers(now);
        }
        outcome
    }

    /// `from` said it is shutting down (a going-away): out of the active set at once.
    /// Refused, with nothing changed, when `caller` may not speak for `from`.
    pub fn handle_leaving(
        &mut self,
        from: &PeerId,
        caller: &Caller,
        now: Now,
    ) -> Result<(), Refusal> {
        self.last_now = now;
        self.claim(from, caller)?;
        self.membership.handle_leaving(from, now);
        self.sync_gossip_peers(now);
        Ok(())
    }

    /// An outbound connection proved `peer`'s id (its certificate carries the key the id
    /// derives from).
    pub fn handle_proven(&mut self, peer: &PeerId, now: Now) {
        self.last_now = now;
        self.membership.note_proven(peer);
    }

    /// Lets `caller` speak for `id`, noting a proof; refused (and counted by membership) when
    /// it may not, or when its address is banned.
    fn claim(&mut self, id: &PeerId, caller: &Caller) -> Result<(), Refusal> {
        if !self.check_address(Some(id), caller, self.last_now) {
            return Err(Refusal::Banned);
        }
        if self.membership.check_claim(id, caller)? {
            self.membership.note_proven(id);
        }
        Ok(())
    }

    /// Bans `id` until `until`; false if the ban list is full.
    pub fn ban(&mut self, id: &PeerId, until: Timestamp, now: Now) -> bool {
        self.last_now = now;
        let done = self.membership.ban(id, until, now);
        self.sync_gossip_peers(now);
        done
    }

    /// Lifts a ban of `id` (an operator's or an automatic one, with the address ban that
    /// came with it) and forgets its score; its strike count stays, so a relapse doubles.
    pub fn unban(&mut self, id: &PeerId, now: Now) {
        self.last_now = now;
        self.membership.unban(id, now);
        self.lift(id);
    }

    pub fn remove(&mut self, id: &PeerId, now: Now) {
        self.last_now = now;
        self.membership.remove(id, now);
        self.sync_gossip_peers(now);
    }

    /// Hands gossip the healthy active peers when they changed.
    /// Runs after every input: compares by reference and clones only on change (the
    /// simulator measured the per-input clones at 10,000 nodes).
    fn sync_gossip_peers(&mut self, now: Now) {
        let peers = self.membership.gossip_peer_ids(now);
        if !peers.iter().copied().eq(self.gossip_peers.iter()) {
            let peers: Vec<PeerId> = peers.into_iter().cloned().collect();
            self.gossip.set_peers(&peers, now);
            self.gossip_peers = peers;
        }
    }

    // ---- outputs ----

    /// The next thing for the runtime to do. Gossip's sends and pulls and membership's
    /// requests go through the link machine first; pulls gathered for streams are flushed
    /// once gossip has nothing more to say.
    pub fn poll_output(&mut self) -> Option<Output> {
        if let Some(ban) = self.bans_out.pop_front() {
            return Some(ban);
        }
        loop {
            if let Some(output) = self.links.poll_output() {
                match self.link_output(output) {
                    Some(output) => return Some(output),
                    None => continue,
                }
            }
            if let Some(output) = self.membership.poll_output() {
                match self.membership_output(output) {
                    Some(output) => return Some(output),
                    None => continue,
                }
            }
            if let Some(output) = self.gossip.poll_output() {
                match self.gossip_output(output) {
                    Some(output) => return Some(output),
                    None => continue,
                }
            }
            if !self.links.pulls_waiting() {
                return None;
            }
            self.links.flush_pulls(self.last_now.mono);
        }
    }

    /// A request refused by an open circuit fails at once (safe here: membership only queues
    /// outputs), as the daemon's call would.
    fn membership_output(&mut self, output: membership::Output) -> Option<Output> {
        use membership::Output as M;
        Some(match output {
            M::Send { to, request, id } => {
                let offers = offers(&self.membership, to.peer_id.as_ref());
                let now = self.last_now;
                if self
                    .links
                    .request(to, offers, request, id, now.mono)
                    .is_err()
                {
                    self.membership
                        .handle_response(id, Err(Failure::Unreachable), now);
                    self.sync_gossip_peers(now);
                }
                return None;
            }
            M::Persist(node) => Output::Persist(node),
            M::Forget(id) => {
                self.links.forget(&id);
                Output::Forget(id)
            }
            M::Event(event) => Output::Event(Event::Membership(event)),
        })
    }

    fn link_output(&mut self, output: link::Output) -> Option<Output> {
        use link::Output as L;
        Some(match output {
            L::Transmit {
                to,
                via,
                what,
                ticket,
            } => Output::Transmit {
                to,
                via,
                what,
                ticket,
            },
            L::Request {
                to,
                request,
                id,
                via,
                rest_fallback,
            } => Output::Send {
                to,
                request,
                id,
                via,
                rest_fallback,
            },
            L::CloseLink(peer) => Output::CloseLink(peer),
            L::PullFailed { from, id } => {
                let failed = Err(FetchFailure::Unreachable);
                self.gossip.handle_fetched(&from, id, failed, self.last_now);
                return None;
            }
            L::Event(event) => Output::Event(Event::Link(event)),
        })
    }

    /// Resolves gossip's peer ids to addresses and hands sends and pulls to the links; a
    /// peer membership forgot in the meantime turns the send into an event (and a pull into
    /// an immediate failure, so gossip moves on to the next announcer).
    fn gossip_output(&mut self, output: gossip::Output) -> Option<Output> {
        use gossip::Output as G;
        let now = self.last_now;
        Some(match output {
            G::Send { to, message } => match self.contact(&to) {
                Some(contact) => {
                    let offers = offers(&self.membership, Some(&to));
                    self.links.send(contact, offers, message, now.mono);
                    return None;
                }
                None => Output::Event(Event::UnknownPeer { peer_id: to }),
            },
            G::Fetch {
                from,
                id,
                hash,
                size,
            } => match self.contact(&from) {
                Some(contact) => {
                    let offers = offers(&self.membership, Some(&from));
                    let pull = Pull { id, hash, size };
                    self.links.pull(contact, offers, pull, now.mono);
                    return None;
                }
                None => {
                    // Feeding the failure back here is safe: gossip only queues outputs.
                    let failed = Err(FetchFailure::Unreachable);
                    self.gossip.handle_fetched(&from, id, failed, now);
                    Output::Event(Event::UnknownPeer { peer_id: from })
                }
            },
            G::Store {
                hash,
                body,
                register_id,
                origin,
            } => Output::Store {
                hash,
                body,
                register_id,
                origin,
            },
            G::Deliver {
                hash,
                register_id,
                size,
                from,
                arrival,
            } => Output::Deliver {
                hash,
                register_id,
                size,
                from,
                arrival,
            },
            G::Event(event) => Output::Event(Event::Gossip(event)),
        })
    }

    fn contact(&self, id: &PeerId) -> Option<Contact> {
        self.membership.peer(id).map(|known| Contact {
            address: known.node.address.clone(),
            port: known.node.port,
            peer_id: Some(id.clone()),
        })
    }
}

/// What `peer` advertises it speaks (nothing known for bootstrap contacts).
fn offers<'a>(membership: &'a Membership, peer: Option<&PeerId>) -> &'a [Protocol] {
    peer.and_then(|id| membership.peer(id))
        .map_or(&[], |known| known.node.supported_protocols.as_slice())
}

#[cfg(test)]
mod score_tests;
#[cfg(test)]
mod tests;
