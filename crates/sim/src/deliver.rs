//! Carrying messages: what the daemon's adapters do, with the network model in between.
//!
//! - A membership `Send` travels to its target, which answers through its inbound methods (as
//!   the daemon's rpc handlers do); the answer travels back. If either leg is lost or blocked,
//!   the target crashed, or the answer would come after `peer_timeout`, the sender gets
//!   `Failure::Timeout` at the deadline, as the daemon's call timeout gives it. A node that
//!   *left* refuses the connection: `Failure::Unreachable` after the way back.
//! - A gossip message is one-way: it arrives or it does not.
//! - A `Fetch` is a call answered from the target's store (the transaction table survives
//!   restarts); its deadline is the core's own fetch timeout for that size. Droppers never
//!   answer; liars answer with the right size and the wrong bytes, and push such bodies too.

use std::time::Duration;

use sorcha_peer_core::gossip::{FetchFailure, GossipEvent, GossipMessage, Origin};
use sorcha_peer_core::link::{DropKind, LinkEvent, Via};
use sorcha_peer_core::membership::{
    Contact, Failure, MembershipEvent, Request, RequestId, Response,
};
use sorcha_peer_core::model::{Caller, NodeState, Timestamp, TxHash, TxId};
use sorcha_peer_core::node::Event;

use crate::metrics::Kind;
use crate::network::Transit;
use crate::wire::{self, Carriage};
use crate::world::{Ev, Role, World, index_of_address, index_of_id};

impl World {
    pub(crate) fn target(&self, contact: &Contact) -> Option<usize> {
        index_of_address(&contact.address).filter(|t| *t < self.nodes.len())
    }

    /// When a refused connection is reported: one round trip to the host and back.
    pub(crate) fn refused_at(&self, from: usize, to: usize) -> Timestamp {
        let rtt = 2 * self.net.link_ms(from, to);
        self.now.saturating_add(Duration::from_millis(rtt))
    }

    pub(crate) fn send_request(
        &mut self,
        n: usize,
        to: &Contact,
        request: Request,
        id: RequestId,
        (via, rest_fallback): (Via, bool),
    ) {
        let now = self.now;
        let deadline = now.saturating_add(self.config.membership.peer_timeout);
        let epoch = self.nodes[n].epoch;
        let bytes = wire::request_len(&request, &self.nodes[n].id, now);
        let kind = membership_kind(&request);
        self.count_traffic(n, kind, bytes, Carriage::CallRequest);
        self.rec.count(match request {
            Request::Register { .. } => "requests_register",
            Request::GetPeerList { .. } => "requests_get_peer_list",
            Request::ExchangePeers { .. } => "requests_exchange_peers",
            Request::Ping => "requests_ping",
            Request::Heartbeat { .. } => "requests_heartbeat",
        });
        let reply = |result| Ev::Response {
            node: n as u32,
            epoch,
            id,
            result,
            via: None,
        };
        let Some(target) = self.target(to) else {
            self.rec.count("dials_to_fake_addresses");
            self.queue.push(now, reply(Err(Failure::Unreachable)));
            return;
        };
        let Some((via, start)) = self.request_via(n, target, via, rest_fallback) else {
            let at = self.refused_at(n, target).min(deadline);
            self.queue.push(at, reply(Err(Failure::Unreachable)));
            return;
        };
        let (at, ev) = match self.net.transit(n, target, bytes) {
            Transit::Arrives(d) if start.saturating_add(d) <= deadline => {
                let ev = Ev::Request {
                    from: n as u32,
                    epoch,
                    to: target as u32,
                    id,
                    request: Box::new(request),
                    deadline,
                    via,
                };
                (start.saturating_add(d), ev)
            }
            _ => (deadline, reply(Err(Failure::Timeout))),
        };
        self.queue.push(at, ev);
    }

    /// The transport a request to `target` gets through on, and when it leaves by it: a peer
    /// that serves no gRPC gives no gRPC answer, so REST goes next, if planned, a round trip
    /// later; a failing peer fails every call (`None`).
    fn request_via(
        &self,
        n: usize,
        target: usize,
        via: Via,
        rest_fallback: bool,
    ) -> Option<(Via, Timestamp)> {
        let speaks = self.nodes[target].speaks;
        if self.nodes[target].failing {
            None
        } else if speaks.serves(via) {
            Some((via, self.now))
        } else if rest_fallback && speaks.serves(Via::Rest) {
            Some((Via::Rest, self.refused_at(n, target)))
        } else {
            None
        }
    }

    /// Request `id` from `from` arrives at `to` over `via` (the answer returns the same way).
    pub(crate) fn on_request(
        &mut self,
        (from, epoch): (usize, u32),
        to: usize,
        (id, via): (RequestId, Via),
        request: Request,
        deadline: Timestamp,
    ) {
        let reply = |result: Result<Response, Failure>| Ev::Response {
            node: from as u32,
            epoch,
            id,
            via: result.is_ok().then_some(via),
            result,
        };
        if !self.is_up(to) {
            self.rec.count("requests_to_down_nodes");
            let ev = if self.nodes[to].left {
                let at = self.refused_at(to, from).min(deadline);
                (at, reply(Err(Failure::Unreachable)))
            } else {
                (deadline, reply(Err(Failure::Timeout)))
            };
            self.queue.push(ev.0, ev.1);
            return;
        }
        let kind = membership_kind(&request);
        let result = self.answer(to, from, request);
        self.drain(to);
        let bytes = match (&result, &self.nodes[to].core) {
            (Ok(response), Some(core)) => {
                let known = core.membership().known_count();
                wire::response_len(response, &self.nodes[to].id, known, self.now)
            }
            _ => wire::ERROR_LEN,
        };
        self.count_traffic(to, kind, bytes, Carriage::CallAnswer);
        let now = self.now;
        match self.net.transit(to, from, bytes) {
            Transit::Arrives(d) if now.saturating_add(d) <= deadline => {
                self.queue.push(now.saturating_add(d), reply(result))
            }
            _ => self.queue.push(deadline, reply(Err(Failure::Timeout))),
        }
    }

    /// Node `to` answers `from`'s request through its inbound methods, as the rpc handlers do.
    fn answer(&mut self, to: usize, from: usize, request: Request) -> Result<Response, Failure> {
        let now = self.clock();
        let (sender, core) = self.sender_and_core(from, to).ok_or(Failure::Unreachable)?;
        // Simulated nodes talk over authenticated connections: every call proves its sender.
        let caller = Caller::Proven(sender.clone());
        Ok(match request {
            Request::Register { advert } => Response::Registered {
                success: core.handle_register(advert, &caller, now).is_ok(),
            },
            Request::GetPeerList { max } => Response::PeerList {
                peers: core.peer_list(Some(sender), &caller, max as usize, now),
            },
            Request::ExchangePeers { adverts, max } => Response::Exchanged {
                peers: core
                    .handle_exchange(sender, &caller, adverts, max as usize, now)
                    .map_err(|_| Failure::Refused)?,
            },
            Request::Ping => match core.handle_ping(Some(sender), &caller, now) {
                Ok(pong) => Response::Pong {
                    peer_id: pong.peer_id,
                    status: pong.status,
                },
                Err(_) => return Err(Failure::Refused),
            },
            Request::Heartbeat { .. } => Response::Heartbeat {
                outcome: core.handle_heartbeat(sender, &caller, now),
            },
        })
    }

    pub(crate) fn on_gossip(&mut self, from: usize, to: usize, mut message: GossipMessage) {
        let now = self.clock();
        let push = matches!(message, GossipMessage::Push { .. });
        // Liars lie in what they push as in what they serve: the right size, the wrong bytes.
        if let (Role::Liar, GossipMessage::Push { body, .. }) =
            (self.nodes[from].role, &mut message)
        {
            body.iter_mut().for_each(|b| *b = !*b);
        }
        let Some((sender, core)) = self.sender_and_core(from, to) else {
            return;
        };
        core.handle_gossip(sender, message, now);
        if push {
            self.rec.bodies_received += 1;
        }
        self.drain(to);
    }

    /// The deadline the daemon gives a fetch of `size` bytes: the core's own fetch timeout.
    pub(crate) fn fetch_deadline(&self, size: u64) -> Timestamp {
        let g = &self.config.gossip;
        let per_mib = g.fetch_timeout_per_mib.as_millis() * u128::from(size) / (1 << 20);
        let extra = Duration::from_millis(u64::try_from(per_mib).unwrap_or(u64::MAX));
        self.now
            .saturating_add(g.fetch_timeout.saturating_add(extra))
    }

    pub(crate) fn on_fetch_request(
        &mut self,
        from: usize,
        epoch: u32,
        to: usize,
        id: TxId,
        deadline: Timestamp,
        unary: bool,
    ) {
        let reply = |result| Ev::Fetched {
            node: from as u32,
            epoch,
            from: to as u32,
            id,
            result,
        };
        if !self.is_up(to) || self.nodes[to].role == Role::Dropper {
            let ev = if !self.is_up(to) && self.nodes[to].left {
                let at = self.refused_at(to, from).min(deadline);
                (at, reply(Err(FetchFailure::Unreachable)))
            } else {
                (deadline, reply(Err(FetchFailure::Timeout)))
            };
            self.queue.push(ev.0, ev.1);
            return;
        }
        let held = self
            .tx_by_id
            .get(&id)
            .map(|t| &self.txs[*t as usize])
            .filter(|tx| tx.has(to));
        let result = match (held, self.nodes[to].role) {
            (Some(tx), Role::Liar) => Ok(tx.body.iter().map(|b| !b).collect()),
            (Some(tx), _) => Ok(tx.body.clone()),
            (None, _) => Err(FetchFailure::NotFound),
        };
        let answer_len = if unary {
            wire::unary_fetch_answer_len
        } else {
            wire::fetch_answer_len
        };
        let carriage = if unary {
            Carriage::CallAnswer
        } else {
            Carriage::Stream
        };
        let bytes = match &result {
            Ok(body) => {
                let bytes = answer_len(id, Some(body));
                self.count_traffic(to, Kind::Bodies, bytes, carriage);
                bytes
            }
            Err(_) => {
                let bytes = answer_len(id, None);
                self.count_traffic(to, Kind::FetchRequests, bytes, carriage);
                bytes
            }
        };
        let now = self.now;
        match self.net.transit(to, from, bytes) {
            Transit::Arrives(d) if now.saturating_add(d) <= deadline => {
                self.queue.push(now.saturating_add(d), reply(result))
            }
            _ => self.queue.push(deadline, reply(Err(FetchFailure::Timeout))),
        }
    }

    pub(crate) fn on_fetched(
        &mut self,
        node: usize,
        epoch: u32,
        from: usize,
        id: TxId,
        result: Result<Vec<u8>, FetchFailure>,
    ) {
        let now = self.clock();
        if self.nodes[node].epoch != epoch || !self.is_up(node) {
            return;
        }
        let body = result.is_ok();
        match self.sender_and_core(from, node) {
            Some((sender, core)) => core.handle_fetched(sender, id, result, now),
            // A fetch that named no simulated node fails back to the fetcher itself.
            None => {
                let sender = self.nodes[from].id.clone();
                let core = self.nodes[node].core.as_mut().expect("checked up");
                core.handle_fetched(&sender, id, result, now);
            }
        }
        if body {
            self.rec.bodies_received += 1;
        }
        self.drain(node);
    }

    /// A node keeps a body: the first time, that is its delivery.
    pub(crate) fn on_store(&mut self, n: usize, hash: TxHash, origin: Origin) {
        let Some(&t) = self.tx_by_id.get(&hash.id()) else {
            self.rec.count("stores_of_unknown_hashes");
            return;
        };
        let hops = match &origin {
            Origin::Local => 0,
            Origin::Peer(p) => index_of_id(p)
                .map_or(0, |p| self.txs[t as usize].hops[p])
                .saturating_add(1),
        };
        let now = self.now;
        let tx = &mut self.txs[t as usize];
        if tx.has(n) {
            self.rec.count("stored_again_after_restart");
            return;
        }
        let ms = now.since(tx.submitted_at).as_millis();
        tx.first[n] = u32::try_from(ms).unwrap_or(u32::MAX - 1);
        tx.hops[n] = hops;
    }

    pub(crate) fn on_event(&mut self, event: &Event) {
        let name = match event {
            Event::Gossip(GossipEvent::BadBody { .. }) => "bad_bodies",
            Event::Gossip(GossipEvent::FetchAbandoned { .. }) => "fetches_abandoned",
            Event::Gossip(GossipEvent::Repaired { .. }) => "anti_entropy_repairs",
            Event::UnknownPeer { .. } => "gossip_to_unknown_peers",
            Event::Link(LinkEvent::CircuitOpened { .. }) => "circuits_opened",
            Event::Link(LinkEvent::CircuitClosed { .. }) => "circuits_closed",
            Event::Link(LinkEvent::Downgraded { .. }) => "links_downgraded",
            Event::Link(LinkEvent::Refused { .. }) => "link_refusals",
            Event::Link(LinkEvent::SendFailed { .. }) => "link_sends_failed",
            Event::Link(LinkEvent::Evicted { .. }) => "links_evicted",
            Event::Link(LinkEvent::Dropped { kind, count }) => {
                return self.rec.count_n(link_drop_name(*kind), *count);
            }
            Event::Membership(MembershipEvent::PeerUnreachable { .. }) => "peers_unreachable",
            Event::Membership(MembershipEvent::PeerRemoved { .. }) => "peers_removed",
            Event::Membership(MembershipEvent::BootstrapFailed { .. }) => "bootstrap_failures",
            Event::Membership(MembershipEvent::StateChanged {
                to: NodeState::Offline,
                ..
            }) => "went_offline",
            _ => return,
        };
        self.rec.count(name);
    }
}

/// The counter of a link's drops of `kind` (the daemon's `gossip_dropped_total{kind}`).
fn link_drop_name(kind: DropKind) -> &'static str {
    match kind {
        DropKind::CircuitOpen => "link_dropped_circuit_open",
        DropKind::QueueFullControl => "link_dropped_queue_full_control",
        DropKind::QueueFullAnnounce => "link_dropped_queue_full_announce",
        DropKind::QueueFullBody => "link_dropped_queue_full_body",
        DropKind::LinkClosed => "link_dropped_link_closed",
        DropKind::SpeakersFull => "link_dropped_speakers_full",
        DropKind::SorchaOnlyFull => "link_dropped_sorcha_only_full",
        DropKind::NotSpoken => "link_dropped_not_spoken",
    }
}

/// Heartbeats apart from the rest of membership.
fn membership_kind(request: &Request) -> Kind {
    match request {
        Request::Heartbeat { .. } => Kind::Heartbeats,
        _ => Kind::Membership,
    }
}
