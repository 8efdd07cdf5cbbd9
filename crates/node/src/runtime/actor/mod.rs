//! The one task that owns the core [`Node`]. Every listener talks to it through a cloneable
//! [`NodeHandle`] over a bounded channel; nothing else touches protocol state, so there are no
//! locks around it and inputs are handled in the order they arrive.
//!
//! The loop (`tokio::select!`, biased): answers to our own requests first (they free room in
//! the core's bounded pending map), then commands from the listeners, then the core's timers.
//! After each input the core's outputs are carried out: persistence, sends, events. The core
//! keeps its own deadlines; the loop sleeps on one tokio timer until `Node::poll_timeout`,
//! reset whenever that deadline changes, so no timer is kept (or refused) here. Every input
//! gets both clocks from one [`Clock`].
//!
//! Shutdown: the actor keeps answering until the last handle is dropped (the listeners drop
//! theirs once their in-flight requests are done), so no request is cut off mid-way.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use sorcha_peer_core::gossip::{self, GossipEvent, GossipMessage};
use sorcha_peer_core::link::{LinkEvent, Outcome, What};
use sorcha_peer_core::membership::Contact;
use sorcha_peer_core::membership::{KnownPeer, MembershipEvent};
use sorcha_peer_core::model::{NodeState, PeerId, Protocol, TxId};
use sorcha_peer_core::node::{Event, Node, Output};
use sorcha_peer_core::time::{Instant as CoreInstant, Now};
use tokio::sync::{broadcast, mpsc, watch};

use crate::address::AddressReport;
use crate::handle::PeerView;
use crate::store::transactions::TxStore;
use crate::store::{SendError, StoreHandle};
use crate::telemetry::Metrics;
use crate::transport::outbound::{Answer, Outbound, TransportSettings};
use crate::wire::TxName;

use crate::clock::{Clock, now};
use crate::handle::{
    COMMAND_QUEUE_CAPACITY, Command, DELIVERY_CAPACITY, Delivered, NodeHandle, Status, Submitted,
};

/// Answers to our own requests waiting for the actor. The core keeps at most
/// `MAX_PENDING_REQUESTS` (256) in flight, so this never fills.
pub const ANSWER_QUEUE_CAPACITY: usize = 1024;

/// What the actor needs from the configuration besides the core's own knobs.
#[derive(Debug, Clone)]
pub struct ActorSettings {
    /// How peers are reached.
    pub transport: TransportSettings,
    pub fetch_timeout: Duration,
    pub cache_max_transactions: usize,
    pub cache_max_bytes: usize,
    pub cache_ttl: Duration,
    /// What worked with each peer last time (from the peer store).
    pub remembered: Vec<(PeerId, Protocol)>,
}

/// Announced transactions whose arrival is being timed, at most (a few seconds of traffic at
/// thousands of transactions per second).
const MAX_HEARD: usize = 16_384;

/// The owner of the core node.
pub struct Actor {
    node: Node,
    rx: mpsc::Receiver<Command>,
    answers: mpsc::Receiver<Answer>,
    outbound: Outbound,
    store: StoreHandle,
    transactions: Arc<Mutex<TxStore>>,
    deliveries: broadcast::Sender<Delivered>,
    fetch_timeout: Duration,
    state: watch::Sender<NodeState>,
    clock: Clock,
    metrics: Arc<Metrics>,
    /// The latest result of address discovery.
    address: Option<AddressReport>,
    /// When each announced, not yet held transaction was first heard of, for
    /// `transaction_distribution_latency`; bounded, oldest forgotten first.
    heard: HashMap<TxId, Instant>,
    heard_order: VecDeque<TxId>,
}

impl Actor {
    /// `clock` must be the one `node` was created with: its deadlines count from its origin.
    pub fn new(
        node: Node,
        clock: Clock,
        metrics: Arc<Metrics>,
        store: StoreHandle,
        settings: &ActorSettings,
    ) -> (Self, NodeHandle) {
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE_CAPACITY);
        let (answers_tx, answers) = mpsc::channel(ANSWER_QUEUE_CAPACITY);
        let (deliveries, _) = broadcast::channel(DELIVERY_CAPACITY);
        let transactions = Arc::new(Mutex::new(TxStore::new(
            settings.cache_max_transactions,
            settings.cache_max_bytes,
            settings.cache_ttl,
        )));
        let peer_id = node.peer_id().clone();
        let (state, state_rx) = watch::channel(node.state());
        let handle = NodeHandle {
            state: state_rx,
            tx,
            metrics: metrics.clone(),
            peer_id: peer_id.clone(),
            transactions: transactions.clone(),
            deliveries: deliveries.clone(),
        };
        metrics.record_state(node.state());
        let outbound = Outbound::new(answers_tx, metrics.clone(), peer_id, &settings.transport);
        let mut outbound = outbound;
        let mut node = node;
        for (peer, protocol) in &settings.remembered {
            outbound.worked(peer, *protocol, true);
            node.remember_protocol(peer, *protocol);
        }
        let actor = Self {
            node,
            rx,
            answers,
            outbound,
            store,
            transactions,
            deliveries,
            fetch_timeout: settings.fetch_timeout,
            state,
            clock,
            metrics,
            address: None,
            heard: HashMap::new(),
            heard_order: VecDeque::new(),
        };
        (actor, handle)
    }

    /// Runs until every handle is dropped.
    pub async fn run(mut self) {
        self.carry_out();
        let mut deadline = self.node.poll_timeout();
        let sleep = tokio::time::sleep_until(self.wake_at(deadline));
        tokio::pin!(sleep);
        loop {
            let mut woke = false;
            tokio::select! {
                biased;
                Some(answer) = self.answers.recv() => self.handle_answer(answer),
                command = self.rx.recv() => match command {
                    Some(command) => self.handle(command, self.clock.now()),
                    None => break,
                },
                () = &mut sleep, if deadline.is_some() => {
                    self.node.handle_timeout(self.clock.now());
                    woke = true;
                }
            }
            self.carry_out();
            let next = self.node.poll_timeout();
            // A sleep that completed is re-armed even for the same deadline: polled again as
            // it is, it would be ready at once, every turn.
            if next != deadline || woke {
                deadline = next;
                sleep.as_mut().reset(self.wake_at(deadline));
            }
        }
        // The writer thread makes everything sent so far durable; the wait is short and only
        // at shutdown, so blocking this worker thread is fine.
        if let Err(e) = tokio::task::block_in_place(|| self.store.flush()) {
            tracing::warn!(error = %e, "peer store flush at shutdown failed");
        }
        tracing::debug!("node actor stopped: no handles left");
    }

    fn handle_answer(&mut self, answer: Answer) {
        if let Some((peer, ok)) = answer.health() {
            let peer = peer.clone();
            self.outbound.record(&peer, ok);
        }
        match answer {
            Answer::Membership {
                id,
                result,
                peer,
                via,
            } => {
                if let (Some(peer), Some(protocol)) = (&peer, via) {
                    self.note_protocol(peer, protocol, false);
                }
                self.node.handle_response(id, result, self.clock.now());
            }
            Answer::Fetched { from, id, result } => {
                self.node
                    .handle_fetched(&from, id, result, self.clock.now())
            }
            Answer::Outcome { .. } => {}
            Answer::Protocol { peer, protocol } => self.note_protocol(&peer, protocol, true),
        }
    }

    /// Notes when an announced transaction we lack was first heard of.
    fn heard_of(&mut self, id: TxId) {
        if self.node.gossip().is_known(&id) || self.heard.contains_key(&id) {
            return;
        }
        if self.heard_order.len() >= MAX_HEARD
            && let Some(oldest) = self.heard_order.pop_front()
        {
            self.heard.remove(&oldest);
        }
        self.heard.insert(id, Instant::now());
        self.heard_order.push_back(id);
    }

    /// Remembers the transport that worked with `peer`, in memory and in the peer store.
    fn note_protocol(&mut self, peer: &PeerId, protocol: Protocol, from_link: bool) {
        if self.outbound.worked(peer, protocol, from_link) {
            tracing::debug!(peer = %peer, protocol = protocol.as_str(), "transport chosen");
            self.persist(
                self.store
                    .set_preferred_protocol(peer.clone(), Some(protocol)),
            );
        }
    }

    /// What a contact's peer advertises it speaks (nothing known for bootstrap contacts).
    fn offers(&self, contact: &Contact) -> Vec<Protocol> {
        contact
            .peer_id
            .as_ref()
            .and_then(|id| self.node.membership().peer(id))
            .map(|p| p.node.supported_protocols.clone())
            .unwrap_or_default()
    }

    fn handle(&mut self, command: Command, now: Now) {
        // A dropped reply channel means the caller gave up (timeout, disconnect): nothing to do.
        match command {
            Command::Register { advert, reply } => {
                let _ = reply.send(self.node.handle_register(advert, now));
            }
            Command::Heartbeat { peer_id, reply } => {
                let _ = reply.send(self.node.handle_heartbeat(&peer_id, now));
            }
            Command::PeerList {
                requester,
                max,
                reply,
            } => {
                let list = self.node.peer_list(requester.as_ref(), max, now);
                let _ = reply.send((list, self.node.membership().known_count()));
            }
            Command::Exchange {
                from,
                adverts,
                max,
                reply,
            } => {
                let _ = reply.send(self.node.handle_exchange(&from, adverts, max, now));
            }
            Command::Ping { from, reply } => {
                let _ = reply.send(self.node.handle_ping(from.as_ref(), now));
            }
            Command::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Command::Peers { reply } => {
                let peers = self
                    .node
                    .membership()
                    .peers()
                    .map(|p| {
                        let id = &p.node.peer_id;
                        PeerView::of(
                            p,
                            now.wall,
                            self.outbound.circuit(id),
                            self.outbound.protocol(id),
                        )
                    })
                    .collect();
                let _ = reply.send(peers);
            }
            Command::Ban {
                peer_id,
                until,
                reply,
            } => {
                let done = match until {
                    Some(until) => self.node.ban(&peer_id, until, now),
                    None => {
                        self.node.unban(&peer_id, now);
                        true
                    }
                };
                if done {
                    self.persist(self.store.set_ban(peer_id, until));
                }
                let _ = reply.send(done);
            }
            Command::Remove { peer_id, reply } => {
                let known = self.node.membership().peer(&peer_id).is_some();
                self.node.remove(&peer_id, now);
                let _ = reply.send(known);
            }
            Command::SetAddress { report } => self.set_address(*report),
            Command::Submit {
                body,
                register_id,
                reply,
            } => {
                let result = self
                    .node
                    .submit(body, register_id, now)
                    .map(|outcome| Submitted {
                        hash: outcome.hash.to_string(),
                        new: outcome.new,
                        announced_to: self.node.gossip().peers().len(),
                    });
                let _ = reply.send(result);
            }
            Command::Gossip { from, message } => {
                self.outbound.heard_gossip_from(&from);
                if let GossipMessage::Announce { entries } = &message {
                    for entry in entries {
                        self.heard_of(entry.id);
                    }
                }
                self.node.handle_gossip(&from, message, now);
            }
            Command::Notify { from, entry, reply } => {
                self.outbound.heard_notify_from(&from);
                let known = self.node.gossip().is_known(&entry.id);
                self.heard_of(entry.id);
                self.node.handle_notify(&from, entry, now);
                let _ = reply.send(known);
            }
        }
    }

    /// A write the store refused (its queue full, or the writer gone) is counted; the peer is
    /// written again with its next change, and membership never depends on the store.
    fn persist(&self, sent: Result<(), SendError>) {
        if sent.is_err() {
            self.metrics.store_writes_refused_total.add(1, &[]);
        }
    }

    /// When to wake for the core's `deadline`; with none, the select loop ignores the sleep.
    fn wake_at(&self, deadline: Option<CoreInstant>) -> tokio::time::Instant {
        let never = CoreInstant::from_millis(u64::MAX);
        self.clock.instant(deadline.unwrap_or(never))
    }

    /// Carries out everything the core asked for, in order.
    fn carry_out(&mut self) {
        while let Some(output) = self.node.poll_output() {
            match output {
                Output::Send {
                    to, request, id, ..
                } => {
                    let offers = self.offers(&to);
                    self.outbound.send(&to, &offers, request, id);
                }
                Output::Transmit {
                    to, what, ticket, ..
                } => self.transmit(to, what, ticket),
                // The daemon's links still follow their own breakers (see `transmit`).
                Output::CloseLink(_) => {}
                Output::Store {
                    hash,
                    body,
                    register_id,
                    origin,
                } => {
                    if let Some(heard) = self.heard.remove(&hash.id()) {
                        let seconds = heard.elapsed().as_secs_f64();
                        self.metrics
                            .transaction_distribution_latency
                            .record(seconds, &[]);
                    }
                    let origin = match origin {
                        gossip::Origin::Local => "local".to_owned(),
                        gossip::Origin::Peer(id) => id.to_string(),
                    };
                    if let Ok(mut store) = self.transactions.lock() {
                        store.insert(hash, body, register_id, origin, now());
                    }
                }
                Output::Deliver {
                    hash,
                    register_id,
                    size,
                } => {
                    // No subscriber is fine; a lagging one is counted when it reads.
                    let _ = self.deliveries.send(Delivered {
                        hash: hash.to_string(),
                        register_id,
                        size,
                    });
                }
                Output::Persist(node) => self.persist(self.store.upsert(node)),
                Output::Forget(id) => {
                    self.outbound.forget(&id);
                    self.persist(self.store.forget(id));
                }
                Output::Event(event) => self.report(event),
            }
        }
        self.outbound.flush_fetches();
        let membership = self.node.membership();
        self.metrics
            .peer_count
            .record(membership.known_count() as i64, &[]);
        self.metrics
            .peer_count_active
            .record(healthy_active(membership.active_peers()) as i64, &[]);
        self.metrics.record_membership(membership.stats());
        let gossip = self.node.gossip();
        self.metrics.record_gossip(gossip.stats());
        self.metrics
            .gossip_pending
            .record(gossip.pending_count() as i64, &[]);
        self.metrics
            .gossip_fetches_in_flight
            .record(gossip.in_flight() as i64, &[]);
        if let Ok(store) = self.transactions.lock() {
            self.metrics
                .transaction_store_size
                .record(store.len() as i64, &[]);
            self.metrics
                .transaction_store_bytes
                .record(store.bytes() as i64, &[]);
        }
    }

    /// Hands a transmission to the daemon's own links and reports it sent at once, so the
    /// core's link releases the next one. Until the link workers execute the core's
    /// transport choices, the daemon's links keep choosing the transport, batching pulls
    /// and counting their drops themselves; the core's lanes drain as fast as they fill, and
    /// it drops only sends to a peer whose circuit it holds open (counted in `report`).
    fn transmit(&mut self, to: Contact, what: What, ticket: u64) {
        let offers = self.offers(&to);
        match what {
            What::Gossip(message) => self.outbound.send_gossip(&to, &offers, message),
            What::Notify(entries) => {
                let message = GossipMessage::Announce { entries };
                self.outbound.send_gossip(&to, &offers, message);
            }
            What::Fetch(pulls) => {
                for pull in pulls {
                    let mib = u32::try_from(pull.size >> 20).unwrap_or(u32::MAX);
                    let timeout = self.fetch_timeout + Duration::from_secs(1) * mib;
                    let name = TxName::new(pull.id, pull.hash);
                    self.outbound.fetch(&to, &offers, name, pull.size, timeout);
                }
            }
        }
        if let (Some(peer), true) = (&to.peer_id, ticket > 0) {
            self.node
                .handle_transmitted(peer, ticket, Outcome::Sent, self.clock.now());
        }
    }

    fn report(&self, event: Event) {
        let event = match event {
            Event::Membership(event) => event,
            // Only sends to a peer whose circuit the core holds open are dropped before they
            // reach the daemon's own links (see `transmit`), which count everything else.
            Event::Link(LinkEvent::Dropped { kind, count }) => {
                let kind = KeyValue::new("kind", kind.as_str());
                self.metrics.gossip_dropped_total.add(count, &[kind]);
                return;
            }
            Event::Link(_) => return,
            Event::Gossip(event) => return self.report_gossip(event),
            Event::UnknownPeer { peer_id } => {
                tracing::debug!(peer = %peer_id, "gossip for a peer membership forgot; dropped");
                return;
            }
        };
        match event {
            MembershipEvent::StateChanged { from, to } => {
                tracing::info!(from = from.as_str(), to = to.as_str(), "node state changed");
                self.metrics.record_state(to);
                self.state.send_replace(to);
            }
            MembershipEvent::Bootstrapped { peer_id } => {
                tracing::info!(peer = %peer_id, "bootstrapped")
            }
            MembershipEvent::BootstrapFailed { attempt, retry_at } => {
                let retry_in = retry_at.since(self.clock.now().mono);
                tracing::warn!(attempt, ?retry_in, "every bootstrap node failed; retrying");
            }
            MembershipEvent::DiscoveryRound { round, new_peers } => {
                self.metrics.discovery_rounds_total.add(1, &[]);
                if new_peers > 0 {
                    self.metrics.record_discovery_success(now());
                }
                tracing::debug!(round, new_peers, "discovery round");
            }
            MembershipEvent::PeerAdded { peer_id } => {
                tracing::debug!(peer = %peer_id, "peer added")
            }
            MembershipEvent::PeerActivated { peer_id } => {
                tracing::info!(peer = %peer_id, "peer connected")
            }
            MembershipEvent::PeerSuspect { peer_id } => {
                tracing::debug!(peer = %peer_id, "peer suspect")
            }
            MembershipEvent::PeerUnreachable { peer_id } => {
                tracing::info!(peer = %peer_id, "peer disconnected")
            }
            MembershipEvent::PeerRemoved { peer_id } => {
                tracing::info!(peer = %peer_id, "peer removed")
            }
        }
    }

    fn report_gossip(&self, event: GossipEvent) {
        match event {
            GossipEvent::BadBody { from, id } => {
                tracing::warn!(peer = %from, %id, "peer served a body that does not match its hash");
            }
            GossipEvent::FetchAbandoned { id } => {
                tracing::warn!(%id, "every announcer failed to serve a transaction; waiting for anti-entropy");
            }
            GossipEvent::Repaired { hash, from } => {
                tracing::debug!(%hash, peer = %from, "anti-entropy repair")
            }
        }
    }

    fn status(&self) -> Status {
        let membership = self.node.membership();
        Status {
            peer_id: self.node.peer_id().clone(),
            state: self.node.state(),
            peers_known: membership.known_count(),
            peers_active: healthy_active(membership.active_peers()),
            external_address: self
                .address
                .as_ref()
                .map(|a| a.external_address.to_string()),
            address_source: self.address.as_ref().map(|a| a.source),
            nat: self.address.as_ref().map(|a| a.nat),
            queue_size: 0,
            version: env!("CARGO_PKG_VERSION"),
        }
    }

    fn set_address(&mut self, report: AddressReport) {
        let changed = self.address.as_ref().is_none_or(|old| {
            old.external_address != report.external_address || old.port != report.port
        });
        if changed {
            tracing::info!(
                address = %report.external_address,
                port = report.port,
                source = ?report.source,
                nat = ?report.nat,
                "advertised address"
            );
            let mut advert = self.node.membership().self_advert().clone();
            advert.address = report.external_address.to_string();
            advert.port = report.port;
            // Peers learn the new address from our next registrations and exchanges.
            self.node.set_advert(advert);
        }
        if let Some(old) = &self.address {
            self.metrics.record_address(old, 0);
        }
        self.metrics.record_address(&report, 1);
        self.address = Some(report);
    }
}

fn healthy_active<'a>(active: impl Iterator<Item = &'a KnownPeer>) -> usize {
    active.filter(|p| p.is_healthy()).count()
}
