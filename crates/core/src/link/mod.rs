//! The per-peer transport policy, sans IO: which transport to use with each peer, when to
//! stop calling it, how much may wait for it, and how pulls are grouped. It lives in the core
//! so that the daemon and the simulator run the very same policy; the runtime only carries
//! out [`Output::Transmit`] and [`Output::Request`] and reports how each went.
//!
//! - [`negotiate`]: what we speak ([`Speaks`]), the transport planned for each peer (the
//!   operator's preferred one where both sides speak it, else the best common one; a gRPC
//!   transport failure to a peer that may speak REST tries REST).
//! - [`speech`]: what each peer speaks, learnt from its answers: a refusal (UNIMPLEMENTED) is
//!   kept per peer and [`Service`] for [`REPROBE_REFUSED`] and never retried meanwhile; a
//!   peer that refused `PeerCommunication` and never showed it speaks our `GOSSIP_*`
//!   extensions gets Sorcha's `NotifyTransaction` only; an unknown peer is probed one
//!   message at a time. Every message is shaped for its peer as it leaves its link.
//! - `peer`: one peer's link: bounded Control / Announce / Body lanes, a window of
//!   transmissions in flight released as outcomes come back, retries with backoff.
//! - `pulls`: pulls to extension speakers whose link goes by the stream (the first batch
//!   opens it) gathered into `GOSSIP_FETCH` batches of at most [`MAX_FETCH_BATCH`] ids; the
//!   rest one unary call each.
//! - `ways`: which transport a message to a peer goes by now (the negotiated one, past what
//!   the peer refused), and the message shaped for what the peer speaks.
//! - [`types`]: the inputs and outputs at the machine's edge.
//!
//! Call order: [`Links::new`]; inputs ([`Links::send`], [`Links::pull`], [`Links::request`],
//! the `handle_*` reports, [`Links::handle_timeout`] once [`Links::poll_timeout`] is due) each
//! with the monotonic `now`; after each,
//! [`Links::flush_pulls`] once a round of pulls is in, then drain [`Links::poll_output`].
//! Each peer also has a circuit breaker ([`crate::breaker`]): every report about the peer
//! counts, an open circuit closes the link and refuses what is sent until it half-opens.

#[cfg(test)]
mod composed_tests;
pub mod negotiate;
mod peer;
mod pulls;
pub mod speech;
#[cfg(test)]
mod tests;
pub mod types;
mod ways;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand_chacha::ChaCha8Rng;

use crate::breaker::{BreakerState, Breakers, Rejected};
use crate::gossip::GossipMessage;
use crate::membership::{Contact, Request, RequestId};
use crate::model::{PeerId, Protocol, Timestamp, TxId};
use crate::time::Instant;
pub use negotiate::{Negotiator, Plan, Speaks};
use peer::{PeerLink, Verdict, lane_of};
pub use speech::{Dialect, REPROBE_REFUSED, Service, Speech};
pub use types::*;
use ways::Ways;

/// The breakers' time: they only compare and subtract instants, so the monotonic clock's
/// milliseconds serve as their timestamps.
fn stamp(now: Instant) -> Timestamp {
    Timestamp::from_millis(now.as_millis())
}

/// Membership requests whose peer and transport are remembered until answered: above
/// membership's own bound of requests in flight.
pub const MAX_REQUESTS: usize = 1024;

pub struct Links {
    config: LinkConfig,
    negotiator: Negotiator,
    speech: Speech,
    breakers: Breakers,
    /// Peers whose circuit is open, to close their links and report the change once.
    open_circuits: BTreeSet<PeerId>,
    links: BTreeMap<PeerId, PeerLink>,
    /// Links with a retry waiting: `poll_timeout` runs after every input and walked every
    /// link for none most of the time (4% of a simulation).
    retrying: usize,
    /// Pulls gathered for the stream until [`Links::flush_pulls`].
    batched: pulls::Batched,
    /// The peer and transport of each membership request in flight.
    requests: BTreeMap<RequestId, (Option<PeerId>, Via)>,
    rng: ChaCha8Rng,
    /// The last ticket handed out (0 is never one: unary pulls carry it).
    tickets: u64,
    outputs: VecDeque<Output>,
}

impl Links {
    pub fn new(config: LinkConfig, rng: ChaCha8Rng) -> Self {
        Self {
            negotiator: Negotiator::new(config.speaks, config.prefer),
            speech: Speech::default(),
            breakers: Breakers::new(config.breaker)
                .expect("invariant: the breaker config is validated with the configuration"),
            config,
            open_circuits: BTreeSet::new(),
            links: BTreeMap::new(),
            retrying: 0,
            batched: pulls::Batched::default(),
            requests: BTreeMap::new(),
            rng,
            tickets: 0,
            outputs: VecDeque::new(),
        }
    }

    // ---- getters ----

    /// The breaker state of `peer`'s circuit.
    pub fn circuit(&self, peer: &PeerId, now: Instant) -> BreakerState {
        self.breakers.state(peer, stamp(now))
    }

    /// The transport that last worked with `peer`.
    pub fn protocol(&self, peer: &PeerId) -> Option<Protocol> {
        self.negotiator.protocol(peer)
    }

    /// The transport `peer`'s link uses now, if it has one.
    pub fn via(&self, peer: &PeerId) -> Option<Via> {
        self.links.get(peer).map(PeerLink::via)
    }

    pub fn stream_open(&self, peer: &PeerId) -> bool {
        self.links.get(peer).is_some_and(PeerLink::stream_open)
    }

    pub fn len(&self) -> usize {
        self.links.len()
    }

    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    pub fn speaks(&self) -> Speaks {
        self.config.speaks
    }

    /// Whether pulls wait for [`Links::flush_pulls`].
    pub fn pulls_waiting(&self) -> bool {
        self.batched.count > 0
    }

    // ---- inputs ----

    /// Queues `message` on the link to `to` (a peer advertising `offers`), unless its
    /// circuit is open. It is shaped for the peer as it leaves (announcements to a peer that
    /// speaks only Sorcha's contract become notifications); our digests, prunes and grafts
    /// are not even queued for such a peer.
    pub fn send(&mut self, to: Contact, offers: &[Protocol], message: GossipMessage, now: Instant) {
        let Some(peer) = to.peer_id.clone() else {
            return; // Gossip always names a peer; a contact without one has nobody to send to.
        };
        if self.breakers.check(&peer, stamp(now)).is_err() {
            self.dropped(DropKind::CircuitOpen, 1);
            return;
        }
        let extension_only = matches!(
            message,
            GossipMessage::Digest { .. }
                | GossipMessage::DigestReply { .. }
                | GossipMessage::Prune
                | GossipMessage::Graft
        );
        if extension_only && self.speech.dialect(&peer, now) == Dialect::SorchaOnly {
            self.dropped(DropKind::NotSpoken, 1);
            return;
        }
        let lane = lane_of(&message, self.config.size);
        let size = self.config.size;
        let link = self.link(&peer, to, offers, now);
        let mut push_dropped = None;
        let refused = match link.enqueue(lane, What::Gossip(message), now) {
            Ok(()) => None,
            // A push the body lane has no room for is announced instead: the peer pulls the
            // body after its graft timeout. Dropped, the peer would hear of it from nobody
            // else (pushes take the place of announcements) until anti-entropy.
            Err((kind, What::Gossip(GossipMessage::Push { entry, .. }))) => {
                push_dropped = Some(kind);
                let announce = GossipMessage::Announce {
                    entries: vec![entry],
                };
                link.enqueue(lane_of(&announce, size), What::Gossip(announce), now)
                    .err()
            }
            Err(refused) => Some(refused),
        };
        if let Some(kind) = push_dropped {
            self.dropped(kind, 1);
        }
        match refused {
            None => self.release(&peer, now),
            Some((kind, _)) => self.dropped(kind, 1),
        }
    }

    /// A membership request to `to`; refused when its circuit is open (fail it at once).
    pub fn request(
        &mut self,
        to: Contact,
        offers: &[Protocol],
        request: Request,
        id: RequestId,
        now: Instant,
    ) -> Result<(), Rejected> {
        if let Some(peer) = &to.peer_id {
            self.breakers.check(peer, stamp(now))?;
        }
        let plan = self.negotiator.plan(to.peer_id.as_ref(), offers);
        // Requests are calls; the stream carries gossip only.
        let via = if plan.via == Via::Stream {
            Via::Unary
        } else {
            plan.via
        };
        if self.requests.len() >= MAX_REQUESTS {
            self.requests.pop_first();
        }
        self.requests.insert(id, (to.peer_id.clone(), via));
        let rest_fallback = plan.rest_fallback;
        self.outputs.push_back(Output::Request {
            to,
            request,
            id,
            via,
            rest_fallback,
        });
        Ok(())
    }

    /// The answer to request `id` came: `healthy` unless it was silence or a broken
    /// connection; `via` the transport that got an answer, if one did.
    pub fn handle_answered(
        &mut self,
        id: RequestId,
        healthy: bool,
        via: Option<Via>,
        now: Instant,
    ) {
        let Some((Some(peer), _)) = self.requests.remove(&id) else {
            return;
        };
        if let Some(via) = via
            && self.negotiator.worked(&peer, via.protocol(), false)
        {
            self.event(LinkEvent::Worked {
                peer: peer.clone(),
                protocol: via.protocol(),
            });
        }
        self.record(&peer, healthy, now);
    }

    /// A pull's body or failure came from `from` (for its breaker).
    pub fn handle_fetched(&mut self, from: &PeerId, healthy: bool, now: Instant) {
        self.record(from, healthy, now);
    }

    /// The runtime's report on transmission `ticket` to `peer`.
    pub fn handle_transmitted(
        &mut self,
        peer: &PeerId,
        ticket: u64,
        outcome: Outcome,
        now: Instant,
    ) {
        let policy = self.config.retry;
        let Some(link) = self.links.get_mut(peer) else {
            return; // Closed meanwhile: what it carried was counted then.
        };
        let had_retries = link.retry_at().is_some();
        let verdict = link.outcome(ticket, outcome, now, &policy, &mut self.rng);
        let has_retries = link.retry_at().is_some();
        self.count_retrying(had_retries, has_retries);
        match verdict {
            Verdict::Sent {
                via,
                service,
                gossip,
            } => {
                self.served(peer, service);
                if gossip {
                    // It took our message (over REST too): it speaks our extensions.
                    self.heard_gossip(peer);
                }
                if self.negotiator.worked(peer, via.protocol(), true) {
                    let protocol = via.protocol();
                    self.event(LinkEvent::Worked {
                        peer: peer.clone(),
                        protocol,
                    });
                }
                self.record(peer, true, now);
            }
            Verdict::Refused { service, what } => self.refused(peer, service, what, now),
            Verdict::Failed { pulls } => {
                self.fail_pulls(peer, pulls);
                self.event(LinkEvent::SendFailed { peer: peer.clone() });
                let fault = matches!(outcome, Outcome::Failed | Outcome::Timeout);
                self.record(peer, !fault, now);
            }
            Verdict::Retrying | Verdict::Unknown => {}
        }
        self.release(peer, now);
    }

    /// `peer` answered `service`: a refusal on record goes, and a `PeerCommunication` answer
    /// makes it a speaker of our extensions.
    fn served(&mut self, peer: &PeerId, service: Service) {
        let (lifted, full) = self.speech.served(peer, service);
        if let Some(kind) = full {
            self.dropped(kind, 1);
        }
        if lifted {
            let peer = peer.clone();
            self.event(LinkEvent::Served { peer, service });
        }
    }

    /// `peer` refused `service`: remembered (and stored by the runtime), and `what` goes
    /// again at once, shaped anew; a refused pull batch fails its pulls instead.
    fn refused(&mut self, peer: &PeerId, service: Service, what: What, now: Instant) {
        if let Some(kind) = self.speech.refused(peer, service, now) {
            self.dropped(kind, 1);
        }
        self.event(LinkEvent::Refused {
            peer: peer.clone(),
            service,
        });
        self.event(LinkEvent::Downgraded { peer: peer.clone() });
        if let What::Fetch(pulls) = &what {
            let ids = pulls.iter().map(|p| p.id).collect();
            self.fail_pulls(peer, ids);
            return;
        }
        let policy = self.config.retry;
        if let Some(link) = self.links.get_mut(peer) {
            let had_retries = link.retry_at().is_some();
            link.again(what, now, &policy);
            self.count_retrying(had_retries, true);
        }
    }

    /// The runtime opened a stream to `peer`, numbered `generation`.
    pub fn handle_stream_opened(&mut self, peer: &PeerId, generation: u64) {
        if let Some(link) = self.links.get_mut(peer) {
            link.stream_opened(generation);
        }
    }

    /// Stream `generation` to `peer` broke or fell silent.
    pub fn handle_stream_closed(&mut self, peer: &PeerId, generation: u64) {
        if let Some(link) = self.links.get_mut(peer) {
            link.stream_closed(generation);
        }
    }

    /// When the earliest retry is due (the node's `poll_timeout` takes the minimum).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.retrying == 0 {
            return None;
        }
        self.links.values().filter_map(PeerLink::retry_at).min()
    }

    /// A link had retries waiting before a change, and has after it.
    fn count_retrying(&mut self, had: bool, has: bool) {
        match (had, has) {
            (false, true) => self.retrying += 1,
            (true, false) => self.retrying -= 1,
            _ => {}
        }
    }

    /// Sends the retries that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<PeerId> = self
            .links
            .iter()
            .filter(|(_, l)| l.retry_at().is_some_and(|at| at <= now))
            .map(|(p, _)| p.clone())
            .collect();
        for peer in due {
            self.release(&peer, now);
        }
    }

    /// `peer` sent us gossip: it speaks our extensions.
    pub fn heard_gossip(&mut self, peer: &PeerId) {
        if let Some(kind) = self.speech.heard_gossip(peer) {
            self.dropped(kind, 1);
        }
    }

    /// `peer` called us and may speak for its id (a heartbeat or a registration): it is up,
    /// so an open circuit to it closes now instead of after its reset. A peer that was down
    /// long enough to trip its circuit and came back (a restart) would otherwise be refused
    /// for the whole reset: no pulls from it, no answers to its digests.
    pub fn heard_from(&mut self, peer: &PeerId, now: Instant) {
        if self.open_circuits.contains(peer) {
            self.breakers.revive(peer);
            self.record(peer, true, now);
        }
    }

    /// Membership forgot `peer`: so do we (its link closes; the store keeps its refusals).
    pub fn forget(&mut self, peer: &PeerId) {
        self.speech.forget(peer);
        self.close(peer);
    }

    /// A refusal of `service` by `peer` from an earlier run, `age` old (from the store).
    pub fn remember_refusal(
        &mut self,
        peer: &PeerId,
        service: Service,
        age: std::time::Duration,
        now: Instant,
    ) {
        if let Some(kind) = self.speech.remember(peer, service, age, now) {
            self.dropped(kind, 1);
        }
    }

    /// What `peer` speaks, as far as its answers told.
    pub fn dialect(&self, peer: &PeerId, now: Instant) -> Dialect {
        self.speech.dialect(peer, now)
    }

    /// Remembers a transport that worked with `peer` in an earlier run.
    pub fn remember(&mut self, peer: &PeerId, protocol: Protocol) {
        self.negotiator.worked(peer, protocol, true);
    }

    // ---- outputs ----

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    // ---- internals ----

    /// `peer`'s link, opened in the transport negotiated for it if it has none.
    fn link(
        &mut self,
        peer: &PeerId,
        to: Contact,
        offers: &[Protocol],
        now: Instant,
    ) -> &mut PeerLink {
        if !self.links.contains_key(peer) {
            if self.links.len() >= MAX_LINKS {
                self.close_least_recent();
            }
            let via = self.negotiator.plan(Some(peer), offers).via;
            self.links.insert(peer.clone(), PeerLink::new(to, via, now));
        }
        self.links
            .get_mut(peer)
            .expect("invariant: inserted above when missing")
    }

    /// Hands the runtime what `peer`'s window has room for, each message shaped for what the
    /// peer speaks now.
    fn release(&mut self, peer: &PeerId, now: Instant) {
        let policy = self.config.retry;
        let dialect = self.speech.dialect(peer, now);
        let Some(link) = self.links.get_mut(peer) else {
            return;
        };
        let ways = Ways {
            speech: &self.speech,
            speaks: self.config.speaks,
            peer,
            preferred: link.preferred,
            dialect,
            now,
        };
        link.probe = dialect == Dialect::Unknown;
        let via = match dialect {
            Dialect::SorchaOnly => ways.notify_via(),
            _ => ways.gossip_via(),
        };
        // Nothing left to send with: the window stays a call's, and each message is dropped.
        link.via = via.unwrap_or(Via::Unary);
        let (mut failed, mut dropped) = (Vec::new(), Vec::new());
        let had_retries = link.retry_at().is_some();
        let out = link.release(
            now,
            &policy,
            &mut self.tickets,
            (&mut failed, &mut dropped),
            &mut |what| ways.shape(what),
        );
        let has_retries = link.retry_at().is_some();
        for (ticket, via, what) in out {
            self.outputs.push_back(Output::Transmit {
                to: link.contact.clone(),
                via,
                what,
                ticket,
            });
        }
        self.count_retrying(had_retries, has_retries);
        for kind in dropped {
            self.dropped(kind, 1);
        }
        self.fail_pulls(peer, failed);
    }

    fn fail_pulls(&mut self, peer: &PeerId, ids: Vec<TxId>) {
        for id in ids {
            let from = peer.clone();
            self.outputs.push_back(Output::PullFailed { from, id });
        }
    }

    /// Records how a call to `peer` went, opening or closing its circuit.
    fn record(&mut self, peer: &PeerId, ok: bool, now: Instant) {
        if ok {
            self.breakers.record_success(peer, stamp(now));
        } else {
            self.breakers.record_failure(peer, stamp(now));
        }
        let open = matches!(
            self.breakers.state(peer, stamp(now)),
            BreakerState::Open { .. }
        );
        if open && self.open_circuits.insert(peer.clone()) {
            self.event(LinkEvent::CircuitOpened { peer: peer.clone() });
            self.close(peer);
        } else if !open && self.open_circuits.remove(peer) {
            self.event(LinkEvent::CircuitClosed { peer: peer.clone() });
        }
    }

    /// Peers whose circuit is open now.
    pub fn open_circuits(&self) -> usize {
        self.open_circuits.len()
    }

    fn close(&mut self, peer: &PeerId) {
        if let Some(link) = self.links.remove(peer) {
            self.count_retrying(link.retry_at().is_some(), false);
            let queued = link.pending() as u64;
            if queued > 0 {
                self.dropped(DropKind::LinkClosed, queued);
            }
            self.outputs.push_back(Output::CloseLink(peer.clone()));
        }
    }

    fn close_least_recent(&mut self) {
        let oldest = self
            .links
            .iter()
            .min_by_key(|(_, l)| l.used)
            .map(|(id, _)| id.clone());
        if let Some(peer) = oldest {
            self.close(&peer);
            self.event(LinkEvent::Evicted { peer });
        }
    }

    fn dropped(&mut self, kind: DropKind, count: u64) {
        self.event(LinkEvent::Dropped { kind, count });
    }

    fn event(&mut self, event: LinkEvent) {
        self.outputs.push_back(Output::Event(event));
    }
}
