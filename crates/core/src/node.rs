//! `Node`: the composition of the protocol state machines that one daemon (or one simulated
//! node) owns. Today it keeps the peers that registered with it and answers the inbound
//! discovery and heartbeat calls; membership and gossip plug in here as they land.
//!
//! Call order (quinn style):
//! - getters (`peer_id`, `state`, `peers`, `peer_list`, ...) read state and never change it;
//! - `handle_*` feed one input in, with the current time;
//! - `poll_event` drains what happened, for the runtime to log, count and publish.

use std::collections::{BTreeMap, VecDeque};

use crate::model::{NodeState, PeerAdvert, PeerId, PeerNode, PeerStatus, Timestamp};

/// Events held for the runtime at most; beyond this the oldest is dropped and counted, so a
/// runtime that stops polling cannot make the core grow without bound.
pub const EVENT_QUEUE_CAPACITY: usize = 1024;

/// The knobs of the node that do not belong to one sub-machine.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// At least this many healthy peers is Online; fewer (but some) is Degraded.
    pub min_healthy_peers: usize,
    /// Most peers kept; registrations beyond it are refused.
    pub max_peers: usize,
}

/// What happened inside the node, for logs, metrics and the admin event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    PeerRegistered { peer_id: PeerId, new: bool },
    StateChanged { from: NodeState, to: NodeState },
}

/// Answer to an inbound heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatOutcome {
    Accepted,
    /// The sender must call RegisterPeer first (wire message "Peer not registered").
    NotRegistered,
}

/// Why an inbound registration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// The advert carries this node's own id.
    #[error("a peer cannot register with this node's own id")]
    SelfId,
    /// The peer is banned.
    #[error("peer {0} is banned")]
    Banned(PeerId),
    /// The peer list is full.
    #[error("peer list is full ({0} peers)")]
    Full(usize),
}

/// Counters of what the node refused or dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeStats {
    pub events_dropped: u64,
    pub registrations_refused: u64,
}

pub struct Node {
    peer_id: PeerId,
    config: NodeConfig,
    peers: BTreeMap<PeerId, PeerNode>,
    state: NodeState,
    events: VecDeque<NodeEvent>,
    stats: NodeStats,
}

impl Node {
    pub fn new(peer_id: PeerId, config: NodeConfig) -> Self {
        Self {
            peer_id,
            config,
            peers: BTreeMap::new(),
            state: NodeState::Offline,
            events: VecDeque::new(),
            stats: NodeStats::default(),
        }
    }

    // ---- getters ----

    pub fn peer_id(&self) -> &PeerId {
        &self.peer_id
    }

    pub fn state(&self) -> NodeState {
        self.state
    }

    pub fn stats(&self) -> &NodeStats {
        &self.stats
    }

    pub fn peers(&self) -> impl Iterator<Item = &PeerNode> {
        self.peers.values()
    }

    pub fn peer(&self, id: &PeerId) -> Option<&PeerNode> {
        self.peers.get(id)
    }

    /// Peers counted as healthy: answered recently and not banned.
    pub fn healthy_count(&self, now: Timestamp) -> usize {
        self.peers
            .values()
            .filter(|p| p.status == PeerStatus::Online && !p.is_banned(now))
            .count()
    }

    /// Up to `max` peers to hand to `requester`: never the requester itself, nor banned peers.
    pub fn peer_list(
        &self,
        requester: Option<&PeerId>,
        max: usize,
        now: Timestamp,
    ) -> Vec<PeerAdvert> {
        self.peers
            .values()
            .filter(|p| Some(&p.peer_id) != requester && !p.is_banned(now))
            .take(max)
            .map(PeerNode::advert)
            .collect()
    }

    // ---- inputs ----

    /// A peer called RegisterPeer with a validated advert.
    pub fn handle_register(
        &mut self,
        advert: PeerAdvert,
        now: Timestamp,
    ) -> Result<(), RegisterError> {
        let result = self.register(advert, now);
        if result.is_err() {
            self.stats.registrations_refused += 1;
        }
        result
    }

    fn register(&mut self, advert: PeerAdvert, now: Timestamp) -> Result<(), RegisterError> {
        if advert.peer_id == self.peer_id {
            return Err(RegisterError::SelfId);
        }
        let peer_id = advert.peer_id.clone();
        let known = self.peers.contains_key(&peer_id);
        if !known && self.peers.len() >= self.config.max_peers {
            return Err(RegisterError::Full(self.peers.len()));
        }
        let mut node = PeerNode::from_advert(advert, now);
        node.last_seen = now;
        node.status = PeerStatus::Online;
        if let Some(previous) = self.peers.get(&peer_id) {
            if previous.is_banned(now) {
                return Err(RegisterError::Banned(peer_id));
            }
            // What the peer says replaces what it said before; what we learned stays.
            node.first_seen = previous.first_seen;
            node.banned_until = previous.banned_until;
            node.latency = previous.latency;
        }
        self.peers.insert(peer_id.clone(), node);
        let new = !known;
        self.push_event(NodeEvent::PeerRegistered { peer_id, new });
        self.update_state(now);
        Ok(())
    }

    /// A heartbeat from `peer_id`: refreshes a known peer, asks an unknown one to register.
    pub fn handle_heartbeat(&mut self, peer_id: &PeerId, now: Timestamp) -> HeartbeatOutcome {
        match self.peers.get_mut(peer_id) {
            Some(peer) if !peer.is_banned(now) => {
                peer.last_seen = now;
                peer.failure_count = 0;
                peer.status = PeerStatus::Online;
                HeartbeatOutcome::Accepted
            }
            _ => HeartbeatOutcome::NotRegistered,
        }
    }

    // ---- outputs ----

    pub fn poll_event(&mut self) -> Option<NodeEvent> {
        self.events.pop_front()
    }

    fn push_event(&mut self, event: NodeEvent) {
        if self.events.len() >= EVENT_QUEUE_CAPACITY {
            self.events.pop_front();
            self.stats.events_dropped += 1;
        }
        self.events.push_back(event);
    }

    fn update_state(&mut self, now: Timestamp) {
        let to = NodeState::from_healthy(self.healthy_count(now), self.config.min_healthy_peers);
        if to != self.state {
            let from = std::mem::replace(&mut self.state, to);
            self.push_event(NodeEvent::StateChanged { from, to });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PeerCapabilities;

    fn advert(id: &str) -> PeerAdvert {
        PeerAdvert {
            peer_id: id.parse().unwrap(),
            address: "127.0.0.1".into(),
            port: 5001,
            supported_protocols: vec![],
            capabilities: PeerCapabilities {
                supports_streaming: true,
                supports_transaction_distribution: true,
                max_transaction_size: 1024,
            },
            last_seen: Timestamp::from_millis(0),
            is_seed_node: false,
        }
    }

    fn node(min_healthy: usize, max_peers: usize) -> Node {
        let config = NodeConfig {
            min_healthy_peers: min_healthy,
            max_peers,
        };
        Node::new("self".parse().unwrap(), config)
    }

    #[test]
    fn registrations_move_the_state_and_emit_events() {
        let mut n = node(2, 10);
        let t = Timestamp::from_millis(1_000);
        n.handle_register(advert("a"), t).unwrap();
        assert_eq!(n.state(), NodeState::Degraded);
        n.handle_register(advert("b"), t).unwrap();
        assert_eq!(n.state(), NodeState::Online);
        let events: Vec<_> = std::iter::from_fn(|| n.poll_event()).collect();
        assert_eq!(
            events,
            vec![
                NodeEvent::PeerRegistered {
                    peer_id: "a".parse().unwrap(),
                    new: true
                },
                NodeEvent::StateChanged {
                    from: NodeState::Offline,
                    to: NodeState::Degraded
                },
                NodeEvent::PeerRegistered {
                    peer_id: "b".parse().unwrap(),
                    new: true
                },
                NodeEvent::StateChanged {
                    from: NodeState::Degraded,
                    to: NodeState::Online
                },
            ]
        );
    }

    #[test]
    fn self_full_and_heartbeat_rules() {
        let mut n = node(1, 1);
        let t = Timestamp::from_millis(5);
        assert_eq!(
            n.handle_register(advert("self"), t),
            Err(RegisterError::SelfId)
        );
        let stranger: PeerId = "x".parse().unwrap();
        assert_eq!(
            n.handle_heartbeat(&stranger, t),
            HeartbeatOutcome::NotRegistered
        );
        n.handle_register(advert("a"), t).unwrap();
        assert_eq!(
            n.handle_register(advert("b"), t),
            Err(RegisterError::Full(1))
        );
        assert_eq!(n.stats().registrations_refused, 2);
        let a: PeerId = "a".parse().unwrap();
        assert_eq!(
            n.handle_heartbeat(&a, Timestamp::from_millis(9)),
            HeartbeatOutcome::Accepted
        );
        assert_eq!(n.peer(&a).unwrap().last_seen, Timestamp::from_millis(9));
        // Re-registering keeps first_seen.
        n.handle_register(advert("a"), Timestamp::from_millis(20))
            .unwrap();
        assert_eq!(n.peer(&a).unwrap().first_seen, t);
    }

    #[test]
    fn peer_list_excludes_requester_and_respects_max() {
        let mut n = node(1, 10);
        let t = Timestamp::from_millis(1);
        for id in ["a", "b", "c"] {
            n.handle_register(advert(id), t).unwrap();
        }
        let requester: PeerId = "b".parse().unwrap();
        let list = n.peer_list(Some(&requester), 10, t);
        assert_eq!(list.len(), 2);
        assert!(list.iter().all(|p| p.peer_id != requester));
        assert_eq!(n.peer_list(None, 1, t).len(), 1);
    }

    #[test]
    fn event_queue_is_bounded() {
        let mut n = node(1, 10);
        let t = Timestamp::from_millis(1);
        for _ in 0..EVENT_QUEUE_CAPACITY + 10 {
            n.handle_register(advert("a"), t).unwrap();
        }
        assert!(n.stats().events_dropped >= 10);
        assert_eq!(
            std::iter::from_fn(|| n.poll_event()).count(),
            EVENT_QUEUE_CAPACITY
        );
    }
}
