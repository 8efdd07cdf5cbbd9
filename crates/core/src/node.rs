//! `Node`: the protocol state machines one daemon (or one simulated node) owns, composed.
//! [`Membership`] decides who our peers are; [`Gossip`] spreads transactions over the healthy
//! members of the active set, which the node hands it whenever that set changes.
//!
//! Call order (quinn style):
//! - construct with [`Node::new`];
//! - getters ([`Node::state`], [`Node::membership`], [`Node::gossip`]) never change state;
//! - inputs: the `handle_*` methods, [`Node::submit`] and the inbound-request answers, each
//!   with the current time as a [`Now`] (monotonic for deadlines, wall clock for the wire and
//!   the peer store; see [`crate::time`]);
//! - after every input, drain [`Node::poll_output`] until `None` and carry the outputs out in
//!   order (persistence and stores before the sends that follow them);
//! - timers: the node keeps its deadlines itself. After every input ask
//!   [`Node::poll_timeout`] when it next wants to be woken, and at (or after) that instant call
//!   [`Node::handle_timeout`], which fires every timer due. There is no other timer source, so
//!   none can be dropped: each sub-machine keeps one deadline per timer kind (membership 3,
//!   gossip 3), and work with many deadlines (outstanding requests, fetches) keeps them in its
//!   own bounded table behind one of those kinds.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::gossip::{
    self, FetchFailure, Gossip, GossipConfig, GossipMessage, SubmitError, SubmitOutcome,
};
use crate::membership::{
    self, Contact, Failure, HeartbeatOutcome, Membership, MembershipConfig, Pong, Refusal,
    RegisterOutcome, RequestId, Response,
};
use crate::model::{NodeState, PeerAdvert, PeerId, PeerNode, Timestamp, TxHash, TxId};
use crate::time::{Instant, Now};

/// The knobs of every sub-machine.
#[derive(Debug, Clone, Default)]
pub struct NodeConfig {
    pub membership: MembershipConfig,
    pub gossip: GossipConfig,
}

/// What the runtime must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send a membership `request` to `to`; answer with [`Node::handle_response`] and `id`.
    Send {
        to: Contact,
        request: membership::Request,
        id: RequestId,
    },
    /// Send a gossip message to a peer (its address resolved from membership).
    Gossip { to: Contact, message: GossipMessage },
    /// Fetch the body of transaction `id` from `from` (by `hash`, the whole hash `from`
    /// announced, if it named one); answer with [`Node::handle_fetched`].
    Fetch {
        from: Contact,
        id: TxId,
        hash: Option<TxHash>,
        size: u64,
    },
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
    },
    /// Store this peer.
    Persist(PeerNode),
    /// Delete this peer from the store.
    Forget(PeerId),
    /// Something happened: log it, count it, show it.
    Event(Event),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Membership(membership::MembershipEvent),
    Gossip(gossip::GossipEvent),
    /// A gossip send or fetch named a peer membership no longer knows; it was dropped.
    UnknownPeer {
        peer_id: PeerId,
    },
}

pub struct Node {
    membership: Membership,
    gossip: Gossip,
    /// What gossip was last told the active peers are, to tell it again only on change.
    gossip_peers: Vec<PeerId>,
    /// The time of the latest input, for work `poll_output` must feed back (a fetch from a
    /// peer that vanished fails at once, as of the input that produced it).
    last_now: Now,
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
        let id = advert.peer_id.clone();
        let membership = Membership::new(
            config.membership,
            advert,
            bootstrap,
            stored,
            membership_rng,
            now,
        );
        Self {
            membership,
            gossip: Gossip::new(config.gossip, id, gossip_rng, now),
            gossip_peers: Vec::new(),
            last_now: now,
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

    // ---- inputs ----

    pub fn handle_response(&mut self, id: RequestId, result: Result<Response, Failure>, now: Now) {
        self.last_now = now;
        self.membership.handle_response(id, result, now);
        self.sync_gossip_peers(now);
    }

    /// When the node next wants [`Node::handle_timeout`]: the earliest deadline of membership
    /// and gossip. Ask again after every input; `None` only before anything is armed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.membership.poll_timeout(), self.gossip.poll_timeout()) {
            (Some(m), Some(g)) => Some(m.min(g)),
            (m, g) => m.or(g),
        }
    }

    /// Fires every timer due at `now.mono` (membership's, then gossip's; each earliest first).
    /// Calling it early, or twice, fires nothing that is not due.
    pub fn handle_timeout(&mut self, now: Now) {
        self.last_now = now;
        self.membership.handle_timeout(now);
        self.sync_gossip_peers(now);
        self.gossip.handle_timeout(now);
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

    /// A gossip message from `from`; dropped if `from` is banned.
    pub fn handle_gossip(&mut self, from: &PeerId, message: GossipMessage, now: Now) {
        self.last_now = now;
        if !self.membership.is_banned(from, now) {
            self.gossip.handle_message(from, message, now);
        }
    }

    /// The result of an [`Output::Fetch`].
    pub fn handle_fetched(
        &mut self,
        from: &PeerId,
        id: TxId,
        result: Result<Vec<u8>, FetchFailure>,
        now: Now,
    ) {
        self.last_now = now;
        self.gossip.handle_fetched(from, id, result, now);
    }

    pub fn handle_register(
        &mut self,
        advert: PeerAdvert,
        now: Now,
    ) -> Result<RegisterOutcome, Refusal> {
        self.last_now = now;
        let result = self.membership.handle_register(advert, now);
        self.sync_gossip_peers(now);
        result
    }

    pub fn peer_list(
        &mut self,
        requester: Option<&PeerId>,
        max: usize,
        now: Now,
    ) -> Vec<PeerAdvert> {
        self.last_now = now;
        self.membership.peer_list(requester, max, now)
    }

    pub fn handle_exchange(
        &mut self,
        from: &PeerId,
        adverts: Vec<PeerAdvert>,
        max: usize,
        now: Now,
    ) -> Vec<PeerAdvert> {
        self.last_now = now;
        self.membership.handle_exchange(from, adverts, max, now)
    }

    pub fn handle_ping(&mut self, from: Option<&PeerId>, now: Now) -> Result<Pong, Refusal> {
        self.last_now = now;
        self.membership.handle_ping(from, now)
    }

    pub fn handle_heartbeat(&mut self, from: &PeerId, now: Now) -> HeartbeatOutcome {
        self.last_now = now;
        let before = self.membership.heartbeaters_added();
        let outcome = self.membership.handle_heartbeat(from, now);
        // Heartbeats are the most frequent input; only a new heartbeater can change the
        // gossip peers here.
        if self.membership.heartbeaters_added() != before {
            self.sync_gossip_peers(now);
        }
        outcome
    }

    /// Bans `id` until `until`; false if the ban list is full.
    pub fn ban(&mut self, id: &PeerId, until: Timestamp, now: Now) -> bool {
        self.last_now = now;
        let done = self.membership.ban(id, until, now);
        self.sync_gossip_peers(now);
        done
    }

    pub fn unban(&mut self, id: &PeerId, now: Now) {
        self.last_now = now;
        self.membership.unban(id, now);
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
        let peers = self.membership.gossip_peers(now);
        if peers != self.gossip_peers {
            self.gossip.set_peers(&peers, now);
            self.gossip_peers = peers;
        }
    }

    // ---- outputs ----

    pub fn poll_output(&mut self) -> Option<Output> {
        if let Some(output) = self.membership.poll_output() {
            return Some(Self::membership_output(output));
        }
        loop {
            let output = self.gossip.poll_output()?;
            if let Some(output) = self.gossip_output(output) {
                return Some(output);
            }
        }
    }

    fn membership_output(output: membership::Output) -> Output {
        use membership::Output as M;
        match output {
            M::Send { to, request, id } => Output::Send { to, request, id },
            M::Persist(node) => Output::Persist(node),
            M::Forget(id) => Output::Forget(id),
            M::Event(event) => Output::Event(Event::Membership(event)),
        }
    }

    /// Resolves gossip's peer ids to addresses; a peer membership forgot in the meantime
    /// turns the send into an event (and a fetch into an immediate failure, so gossip moves on
    /// to the next announcer).
    fn gossip_output(&mut self, output: gossip::Output) -> Option<Output> {
        use gossip::Output as G;
        Some(match output {
            G::Send { to, message } => match self.contact(&to) {
                Some(contact) => Output::Gossip {
                    to: contact,
                    message,
                },
                None => Output::Event(Event::UnknownPeer { peer_id: to }),
            },
            G::Fetch {
                from,
                id,
                hash,
                size,
            } => match self.contact(&from) {
                Some(contact) => Output::Fetch {
                    from: contact,
                    id,
                    hash,
                    size,
                },
                None => {
                    // Feeding the failure back here is safe: gossip only queues outputs.
                    let failed = Err(FetchFailure::Unreachable);
                    self.gossip.handle_fetched(&from, id, failed, self.last_now);
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
            } => Output::Deliver {
                hash,
                register_id,
                size,
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::{PeerCapabilities, Protocol};

    const PROBE_MS: u64 = 10_000;
    const AE_MS: u64 = 3_000;
    /// A wall clock far from the monotonic one, as in the daemon.
    const WALL_MS: u64 = 1_800_000_000_000;

    fn at(mono: u64, wall: u64) -> Now {
        Now::new(Instant::from_millis(mono), Timestamp::from_millis(wall))
    }

    /// A node with no peers: only the periodic timers are armed (membership's probe and
    /// refresh, gossip's anti-entropy).
    fn node(now: Now) -> Node {
        let mut config = NodeConfig::default();
        config.membership.probe_interval = Duration::from_millis(PROBE_MS);
        config.gossip.anti_entropy_interval = Some(Duration::from_millis(AE_MS));
        let advert = PeerAdvert {
            peer_id: "node-0".parse().expect("valid id"),
            address: "10.0.0.1".into(),
            port: 5001,
            supported_protocols: vec![Protocol::Grpc],
            capabilities: PeerCapabilities {
                supports_streaming: true,
                supports_transaction_distribution: true,
                max_transaction_size: 1 << 20,
            },
            last_seen: now.wall,
            is_seed_node: false,
        };
        let mut node = Node::new(
            config,
            advert,
            vec![],
            vec![],
            ChaCha8Rng::seed_from_u64(1),
            now,
        );
        while node.poll_output().is_some() {}
        node
    }

    fn probe(node: &Node) -> Option<u64> {
        let at = node.membership().deadline(membership::Timer::Probe);
        at.map(Instant::as_millis)
    }

    fn anti_entropy(node: &Node) -> Option<u64> {
        let at = node.gossip().deadline(gossip::Timer::AntiEntropy);
        at.map(Instant::as_millis)
    }

    #[test]
    fn a_wall_clock_step_moves_no_pending_deadline() {
        let mut node = node(at(0, WALL_MS));
        assert_eq!(node.poll_timeout(), Some(Instant::from_millis(AE_MS)));
        // The wall clock steps back an hour, then forward a day; the monotonic one ticks on.
        node.handle_ping(None, at(1, WALL_MS - 3_600_000))
            .expect("answered");
        assert_eq!(node.poll_timeout(), Some(Instant::from_millis(AE_MS)));
        node.handle_timeout(at(AE_MS - 1, WALL_MS + 86_400_000));
        assert_eq!(anti_entropy(&node), Some(AE_MS), "not due: nothing fired");
        assert_eq!(probe(&node), Some(PROBE_MS));
        node.handle_timeout(at(AE_MS, WALL_MS - 3_600_000));
        assert_eq!(
            anti_entropy(&node),
            Some(2 * AE_MS),
            "fired on time, re-armed"
        );
        assert_eq!(probe(&node), Some(PROBE_MS));
    }

    #[test]
    fn poll_timeout_is_the_earliest_deadline_and_handle_timeout_fires_only_the_due() {
        let mut node = node(at(0, WALL_MS));
        let wall = |mono| WALL_MS + mono;
        assert_eq!(anti_entropy(&node), Some(AE_MS));
        assert_eq!(probe(&node), Some(PROBE_MS));
        assert_eq!(
            node.poll_timeout(),
            Some(Instant::from_millis(AE_MS)),
            "gossip's"
        );
        // Every anti-entropy round up to 9 s fires alone; the probe waits.
        for round in 1..=3 {
            let due = round * AE_MS;
            node.handle_timeout(at(due, wall(due)));
            assert_eq!(anti_entropy(&node), Some(due + AE_MS));
            assert_eq!(probe(&node), Some(PROBE_MS), "not due at {due}");
        }
        assert_eq!(
            node.poll_timeout(),
            Some(Instant::from_millis(PROBE_MS)),
            "membership's"
        );
        // At 12 s both are due: both fire, once each, however often we are woken.
        for _ in 0..2 {
            node.handle_timeout(at(12_000, wall(12_000)));
            assert_eq!(probe(&node), Some(12_000 + PROBE_MS));
            assert_eq!(anti_entropy(&node), Some(12_000 + AE_MS));
        }
        assert_eq!(node.poll_timeout(), Some(Instant::from_millis(15_000)));
    }
}
