//! Carrying the core's transmissions over the transport its link machine chose, as the
//! daemon's link workers do, and reporting each outcome back to the sender's core.
//!
//! - On a stream: the first transmission to a peer opens one (reported with
//!   `handle_stream_opened`); a send is reported `Sent` at once (it only queues), and the
//!   message travels one way. A restart of either end breaks the stream.
//! - A unary or REST call: the message travels, and the call's answer reports `Sent` a round
//!   trip later; a lost leg reports `Timeout` at the peer timeout.
//! - A peer that does not serve the transport refuses it (`Refused`, as UNIMPLEMENTED or a
//!   404) after a round trip; a peer that left, or is failing (a `fail` fault), fails the
//!   call (`Failed`); a crashed one never answers (`Timeout`).
//! - Pulls: a `GOSSIP_FETCH` batch asks for each body on the stream; a unary pull is a
//!   `GetTransaction` call. Either is answered from the target's store (`deliver.rs`).

use sorcha_peer_core::gossip::GossipMessage;
use sorcha_peer_core::link::{Outcome, Pull, Via, What};
use sorcha_peer_core::membership::Contact;
use sorcha_peer_core::model::{PeerId, Timestamp};

use crate::metrics::Kind;
use crate::network::Transit;
use crate::wire::{self, Carriage};
use crate::world::{Ev, Role, World, index_of_id};

impl World {
    pub(crate) fn transmit(&mut self, n: usize, to: &Contact, via: Via, what: What, ticket: u64) {
        let suppressed = matches!(what, What::Gossip(_) | What::Notify(_));
        let Some(target) = self.target(to) else {
            return; // Every simulated contact names a node; the core's link waits no longer.
        };
        if suppressed && self.nodes[n].role == Role::Dropper {
            self.rec.count("gossip_suppressed_by_droppers");
            self.report_now(n, target, ticket, Outcome::Sent);
            return;
        }
        self.rec.count(match via {
            Via::Stream => "transmits_stream",
            Via::Unary => "transmits_unary",
            Via::Rest => "transmits_rest",
        });
        if let Some((outcome, at)) = self.refusal(n, target, via) {
            self.refuse(n, target, via, what, ticket, (outcome, at));
            return;
        }
        match via {
            Via::Stream => {
                self.open_stream(n, target);
                self.report_now(n, target, ticket, Outcome::Sent);
                self.carry(n, target, what, false);
            }
            Via::Unary | Via::Rest => self.call(n, target, what, ticket),
        }
    }

    /// Why `target` will not take a transmission over `via`, and when the sender learns it.
    fn refusal(&self, n: usize, target: usize, via: Via) -> Option<(Outcome, Timestamp)> {
        let peer = &self.nodes[target];
        let rtt = self.refused_at(n, target);
        if !self.is_up(target) {
            if peer.left {
                return Some((Outcome::Failed, rtt));
            }
            let deadline = self.now.saturating_add(self.config.membership.peer_timeout);
            return Some((Outcome::Timeout, deadline));
        }
        if peer.failing {
            return Some((Outcome::Failed, rtt));
        }
        (!peer.speaks.serves(via)).then_some((Outcome::Refused, rtt))
    }

    /// Reports a refusal when it would be seen; a broken stream is closed at once, and a
    /// unary pull fails as the fetch's own answer.
    fn refuse(
        &mut self,
        n: usize,
        target: usize,
        via: Via,
        what: What,
        ticket: u64,
        (outcome, at): (Outcome, Timestamp),
    ) {
        if via == Via::Stream {
            self.close_stream(n, target);
        }
        let epoch = self.nodes[n].epoch;
        if ticket == 0 {
            let What::Fetch(pulls) = what else { return };
            for pull in pulls {
                let result = Err(match outcome {
                    Outcome::Timeout => sorcha_peer_core::gossip::FetchFailure::Timeout,
                    _ => sorcha_peer_core::gossip::FetchFailure::Unreachable,
                });
                let ev = Ev::Fetched {
                    node: n as u32,
                    epoch,
                    from: target as u32,
                    id: pull.id,
                    result,
                };
                self.queue.push(at, ev);
            }
            return;
        }
        let ev = Ev::Transmitted {
            node: n as u32,
            epoch,
            peer: target as u32,
            ticket,
            outcome,
        };
        self.queue.push(at, ev);
    }

    /// A unary or REST call: the message travels, its answer reports the outcome.
    fn call(&mut self, n: usize, target: usize, what: What, ticket: u64) {
        if ticket == 0 {
            if let What::Fetch(pulls) = what {
                for pull in pulls {
                    self.pull(n, target, pull, true);
                }
            }
            return;
        }
        let deadline = self.now.saturating_add(self.config.membership.peer_timeout);
        let arrived = self.carry(n, target, what, true);
        let back = arrived.and_then(|d| match self.net.transit(target, n, wire::ERROR_LEN) {
            Transit::Arrives(b) => Some(self.now.saturating_add(d + b)),
            _ => None,
        });
        let (outcome, at) = match back {
            Some(at) if at <= deadline => (Outcome::Sent, at),
            _ => (Outcome::Timeout, deadline),
        };
        let ev = Ev::Transmitted {
            node: n as u32,
            epoch: self.nodes[n].epoch,
            peer: target as u32,
            ticket,
            outcome,
        };
        self.queue.push(at, ev);
    }

    /// Sends `what` on its way to `target`, counting its bytes; when it arrives, if it does.
    fn carry(
        &mut self,
        n: usize,
        target: usize,
        what: What,
        unary: bool,
    ) -> Option<std::time::Duration> {
        match what {
            What::Gossip(message) => self.carry_gossip(n, target, message, unary),
            What::Notify(entries) => {
                // Counted as the unary announcement it stands for (Sorcha's notifications
                // carry the whole hash: a little more).
                let message = GossipMessage::Announce { entries };
                let bytes = self.gossip_bytes(n, target, &message, true);
                let call = Carriage::CallRequest;
                self.count_traffic(n, Kind::Announcements, bytes, call);
                let GossipMessage::Announce { entries } = message else {
                    unreachable!("built above")
                };
                let Transit::Arrives(d) = self.net.transit(n, target, bytes) else {
                    return None;
                };
                for entry in entries {
                    let (from, to) = (n as u32, target as u32);
                    let ev = Ev::Notify { from, to, entry };
                    self.queue.push(self.now.saturating_add(d), ev);
                }
                Some(d)
            }
            What::Fetch(pulls) => self.carry_batch(n, target, pulls),
        }
    }

    fn carry_gossip(
        &mut self,
        n: usize,
        target: usize,
        message: GossipMessage,
        unary: bool,
    ) -> Option<std::time::Duration> {
        let bytes = self.gossip_bytes(n, target, &message, unary);
        let kind = match &message {
            GossipMessage::Announce { .. } => Kind::Announcements,
            GossipMessage::Push { .. } => Kind::Bodies,
            GossipMessage::Digest { .. } | GossipMessage::DigestReply { .. } => Kind::AntiEntropy,
            GossipMessage::Prune | GossipMessage::Graft => Kind::Tree,
        };
        let carriage = if unary {
            Carriage::CallRequest
        } else {
            Carriage::Stream
        };
        self.count_traffic(n, kind, bytes, carriage);
        let Transit::Arrives(d) = self.net.transit(n, target, bytes) else {
            return None;
        };
        let ev = Ev::Gossip {
            from: n as u32,
            to: target as u32,
            message,
        };
        self.queue.push(self.now.saturating_add(d), ev);
        Some(d)
    }

    /// A gossip message on a stream (compact), or a whole envelope in a call.
    fn gossip_bytes(&self, n: usize, target: usize, message: &GossipMessage, unary: bool) -> usize {
        if unary {
            let (from, to) = (&self.nodes[n].id, &self.nodes[target].id);
            wire::unary_gossip_len(message, from, to, self.now)
        } else {
            wire::gossip_len(message)
        }
    }

    /// One `GOSSIP_FETCH` on the stream: each id is asked at the target when it arrives; a
    /// lost batch leaves each pull to its fetch deadline.
    fn carry_batch(
        &mut self,
        n: usize,
        target: usize,
        pulls: Vec<Pull>,
    ) -> Option<std::time::Duration> {
        let ids: Vec<_> = pulls.iter().map(|p| p.id).collect();
        let bytes = wire::fetch_batch_len(&ids);
        let stream = Carriage::Stream;
        self.count_traffic(n, Kind::FetchRequests, bytes, stream);
        let transit = self.net.transit(n, target, bytes);
        let epoch = self.nodes[n].epoch;
        for pull in &pulls {
            let deadline = self.fetch_deadline(pull.size);
            let ev = match transit {
                Transit::Arrives(d) if self.now.saturating_add(d) <= deadline => {
                    let ev = Ev::FetchRequest {
                        from: n as u32,
                        epoch,
                        to: target as u32,
                        id: pull.id,
                        deadline,
                        unary: false,
                    };
                    (self.now.saturating_add(d), ev)
                }
                _ => (deadline, self.fetch_timeout(n, target, pull)),
            };
            self.queue.push(ev.0, ev.1);
        }
        match transit {
            Transit::Arrives(d) => Some(d),
            _ => None,
        }
    }

    /// One unary `GetTransaction` call.
    fn pull(&mut self, n: usize, target: usize, pull: Pull, unary: bool) {
        let bytes = wire::unary_fetch_request_len(pull.id, &self.nodes[n].id);
        let call = Carriage::CallRequest;
        self.count_traffic(n, Kind::FetchRequests, bytes, call);
        let deadline = self.fetch_deadline(pull.size);
        let ev = match self.net.transit(n, target, bytes) {
            Transit::Arrives(d) if self.now.saturating_add(d) <= deadline => {
                let ev = Ev::FetchRequest {
                    from: n as u32,
                    epoch: self.nodes[n].epoch,
                    to: target as u32,
                    id: pull.id,
                    deadline,
                    unary,
                };
                (self.now.saturating_add(d), ev)
            }
            _ => (deadline, self.fetch_timeout(n, target, &pull)),
        };
        self.queue.push(ev.0, ev.1);
    }

    fn fetch_timeout(&self, n: usize, target: usize, pull: &Pull) -> Ev {
        Ev::Fetched {
            node: n as u32,
            epoch: self.nodes[n].epoch,
            from: target as u32,
            id: pull.id,
            result: Err(sorcha_peer_core::gossip::FetchFailure::Timeout),
        }
    }

    /// Opens a stream from `n` to `target` unless one is open between these incarnations.
    fn open_stream(&mut self, n: usize, target: usize) {
        let epochs = (self.nodes[n].epoch, self.nodes[target].epoch);
        let key = (n as u32, target as u32);
        if let Some(&(_, a, b)) = self.streams.get(&key) {
            if (a, b) == epochs {
                return;
            }
            self.close_stream(n, target);
        }
        self.next_stream += 1;
        let generation = self.next_stream;
        self.streams.insert(key, (generation, epochs.0, epochs.1));
        let now = self.clock();
        if let Some((peer, core)) = self.sender_and_core(target, n) {
            core.handle_stream_opened(peer, generation, now);
        }
    }

    fn close_stream(&mut self, n: usize, target: usize) {
        let Some((generation, ..)) = self.streams.remove(&(n as u32, target as u32)) else {
            return;
        };
        let now = self.clock();
        if let Some((peer, core)) = self.sender_and_core(target, n) {
            core.handle_stream_closed(peer, generation, now);
        }
    }

    /// The core closed its link to `peer` (circuit opened, evicted, forgotten).
    pub(crate) fn close_link(&mut self, n: usize, peer: &PeerId) {
        if let Some(target) = index_of_id(peer).filter(|t| *t < self.nodes.len()) {
            self.streams.remove(&(n as u32, target as u32));
        }
    }

    /// Reports `outcome` of `ticket` to `n`'s core now (a stream send only queues).
    fn report_now(&mut self, n: usize, target: usize, ticket: u64, outcome: Outcome) {
        if ticket == 0 {
            return;
        }
        let now = self.clock();
        if let Some((peer, core)) = self.sender_and_core(target, n) {
            core.handle_transmitted(peer, ticket, outcome, now);
        }
    }

    pub(crate) fn on_transmitted(
        &mut self,
        n: usize,
        epoch: u32,
        target: usize,
        ticket: u64,
        outcome: Outcome,
    ) {
        if self.nodes[n].epoch != epoch {
            return;
        }
        let now = self.clock();
        if let Some((peer, core)) = self.sender_and_core(target, n) {
            core.handle_transmitted(peer, ticket, outcome, now);
            self.drain(n);
        }
    }

    pub(crate) fn on_notify(
        &mut self,
        from: usize,
        to: usize,
        entry: sorcha_peer_core::gossip::AnnounceEntry,
    ) {
        let now = self.clock();
        if let Some((sender, core)) = self.sender_and_core(from, to) {
            core.handle_notify(sender, entry, now);
            self.drain(to);
        }
    }
}
