//! Recursive discovery and periodic refresh.
//!
//! A discovery *session* starts from newly learned peers (from a bootstrap node's list or an
//! exchange). Round 1 asks each of them for its list, at most `max_concurrent_discoveries` at
//! once; peers new to us found in round k are asked in round k+1. The session stops when a
//! round brings nothing new or the list is full. Peers learned this way are candidates until
//! they answer us.

use std::collections::VecDeque;

use rand::seq::SliceRandom;

use super::{Contact, Membership, MembershipEvent, PeerHealth, Purpose, Request, Timer};
use crate::model::{PeerAdvert, PeerId, Timestamp};

/// Progress of the current discovery session. Both queues hold ids of the known list, each
/// at most once, so they are bounded by `max_peers_in_list`.
#[derive(Debug, Default)]
pub(super) struct Discovery {
    /// 0 when no session runs.
    round: u32,
    /// Peers still to ask this round.
    queue: VecDeque<PeerId>,
    /// Peers learned this round, to ask next round.
    next: Vec<PeerId>,
    in_flight: usize,
    new_this_round: usize,
}

impl Membership {
    /// Adds newly learned peers to discovery: the next round of a running session, or round 1.
    pub(super) fn discover(&mut self, new_peers: Vec<PeerId>, now: Timestamp) {
        if new_peers.is_empty() {
            return;
        }
        if self.discovery.round == 0 {
            self.discovery.round = 1;
            self.discovery.queue = new_peers.into();
            self.discovery.new_this_round = 0;
            self.dispatch_discovery(now);
        } else {
            self.discovery.new_this_round += new_peers.len();
            self.discovery.next.extend(new_peers);
        }
    }

    /// Outstanding discovery requests (never above `max_concurrent_discoveries`).
    pub fn discoveries_in_flight(&self) -> usize {
        self.discovery.in_flight
    }

    /// The current discovery round, 0 when discovery is idle.
    pub fn discovery_round(&self) -> u32 {
        self.discovery.round
    }

    fn dispatch_discovery(&mut self, now: Timestamp) {
        while self.discovery.in_flight < self.config.max_concurrent_discoveries {
            let Some(id) = self.discovery.queue.pop_front() else {
                break;
            };
            let Some(known) = self.peers.get(&id) else {
                continue;
            };
            if known.health == PeerHealth::Unreachable || self.is_banned(&id, now) {
                continue;
            }
            let to = Contact::of(&known.node);
            let max = self.config.peer_list_request_size;
            let purpose = Purpose::PeerList {
                peer: id,
                discovery: true,
            };
            if !self.send(to, Request::GetPeerList { max }, purpose, now) {
                break;
            }
            self.discovery.in_flight += 1;
        }
        self.finish_round_if_done(now);
    }

    fn finish_round_if_done(&mut self, now: Timestamp) {
        let d = &self.discovery;
        if d.round == 0 || d.in_flight > 0 || !d.queue.is_empty() {
            return;
        }
        let (round, new_peers) = (d.round, d.new_this_round);
        self.stats.discovery_rounds += 1;
        self.emit(MembershipEvent::DiscoveryRound { round, new_peers });
        let full = self.peers.len() >= self.config.max_peers_in_list;
        if new_peers == 0 || full || self.discovery.next.is_empty() {
            self.discovery = Default::default();
            return;
        }
        self.discovery.round += 1;
        self.discovery.queue = std::mem::take(&mut self.discovery.next).into();
        self.discovery.new_this_round = 0;
        self.dispatch_discovery(now);
    }

    /// A peer list arrived (`Some`) or its request failed (`None`).
    pub(super) fn on_peer_list(
        &mut self,
        _from: &PeerId,
        discovery: bool,
        peers: Option<Vec<PeerAdvert>>,
        now: Timestamp,
    ) {
        let new_peers = peers
            .map(|peers| self.merge_adverts(peers, now))
            .unwrap_or_default();
        if discovery && self.discovery.round > 0 {
            self.discovery.in_flight = self.discovery.in_flight.saturating_sub(1);
            self.discovery.new_this_round += new_peers.len();
            self.discovery.next.extend(new_peers);
            self.dispatch_discovery(now);
        } else {
            self.discover(new_peers, now);
        }
        self.fill_active(now);
    }

    pub(super) fn on_exchange_answer(&mut self, peers: Vec<PeerAdvert>, now: Timestamp) {
        let new_peers = self.merge_adverts(peers, now);
        self.discover(new_peers, now);
        self.fill_active(now);
    }

    /// Exchange lists with a few random healthy active peers; bootstrap again if below
    /// `min_healthy_peers`.
    pub(super) fn on_refresh_timer(&mut self, now: Timestamp) {
        self.schedule(
            now.saturating_add(self.config.refresh_interval),
            Timer::Refresh,
        );
        let mut targets: Vec<PeerId> = self
            .active_peers()
            .filter(|p| p.health == PeerHealth::Alive)
            .map(|p| p.node.peer_id.clone())
            .collect();
        targets.shuffle(&mut self.rng);
        targets.truncate(self.config.exchange_fanout);
        for id in targets {
            self.send_exchange(&id, now);
        }
        if self.healthy_count() < self.config.min_healthy_peers && !self.is_bootstrapping() {
            self.start_bootstrap(now);
        }
        self.fill_active(now);
    }

    fn send_exchange(&mut self, id: &PeerId, now: Timestamp) {
        let Some(known) = self.peers.get(id) else {
            return;
        };
        let to = Contact::of(&known.node);
        let max = self.config.exchange_size;
        let mut adverts = self.handout(Some(id), max.saturating_sub(1) as usize, now);
        adverts.insert(0, self.advert_now(now));
        let purpose = Purpose::Exchange { peer: id.clone() };
        self.send(to, Request::ExchangePeers { adverts, max }, purpose, now);
    }
}
