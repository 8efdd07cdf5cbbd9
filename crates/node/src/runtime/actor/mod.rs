//! The one task that owns the core [`Node`]. Every listener talks to it through a cloneable
//! [`NodeHandle`] over a bounded channel; nothing else touches protocol state, so there are no
//! locks around it and inputs are handled in the order they arrive.
//!
//! The loop (`tokio::select!`, biased): answers to our own requests first (they free room in
//! the core's bounded pending map), then commands from the listeners, then the core's timers.
//! After each input the core's outputs are carried out: persistence, sends, events. The core
//! chooses every transport, breaker and retry; the daemon only executes its transmissions
//! (each peer's link worker, [`crate::transport::links`]) and feeds back how they went. The
//! core keeps its own deadlines; the loop sleeps on one tokio timer until `Node::poll_timeout`,
//! reset whenever that deadline changes, so no timer is kept (or refused) here. Every input
//! gets both clocks from one [`Clock`].
//!
//! Here: the loop and the outputs; `commands.rs`: the listeners' commands; `report.rs`: the
//! core's events as logs and metrics; `bans.rs`: bans persisted, logged, counted and shared.
//!
//! Shutdown: the actor keeps answering until the last handle is dropped (the listeners drop
//! theirs once their in-flight requests are done), so no request is cut off mid-way.

mod bans;
mod commands;
mod gauges;
mod report;

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry::metrics::Gauge;
use sorcha_peer_core::gossip;
use sorcha_peer_core::link::{Service, Via, What};
use sorcha_peer_core::membership::{Contact, KnownPeer};
use sorcha_peer_core::model::{NodeState, PeerId, Protocol, Timestamp, TxHash, TxId};
use sorcha_peer_core::node::{Node, Output};
use sorcha_peer_core::time::Instant as CoreInstant;
use tokio::sync::{broadcast, mpsc, watch};

use crate::address::AddressReport;
use crate::store::durable::{DurableStats, Loaded, NewTx, TxDb};
use crate::store::transactions::TxStore;
use crate::store::{SendError, StoreHandle};
use crate::telemetry::events::EventKind;
use crate::telemetry::{EventLog, Metrics};
use crate::transport::outbound::{Answer, Outbound, TransportSettings};
use crate::wire::TxName;
use gauges::Slot;

use crate::clock::{Clock, now};
use crate::handle::origins::Origins;
use crate::handle::{
    COMMAND_QUEUE_CAPACITY, Command, DELIVERY_CAPACITY, Delivered, NodeHandle, Status,
};
use crate::registers::SharedRegisters;

/// Answers, outcomes and stream reports waiting for the actor. Membership requests (at most
/// `MAX_PENDING_REQUESTS`, 256) never fill it; link workers with many reports at once may,
/// and then wait to send (nothing is lost), while the actor drains this queue first.
pub const ANSWER_QUEUE_CAPACITY: usize = 1024;

/// Pulled bodies fed to the core in one call at most: a few per-peer fetch windows (32), so
/// the batch stays a short, bounded piece of work between two other inputs.
const FETCHED_BATCH: usize = 128;

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
    /// `security.mode`, for the status.
    pub security_mode: &'static str,
    /// What peers refused in earlier runs, and when (from the peer store).
    pub refusals: Vec<(PeerId, Service, Timestamp)>,
    /// The registers peers advertise, and ours.
    pub registers: SharedRegisters,
    /// Where the actor records what happened (shared with the handle's holders).
    pub events: Arc<EventLog>,
}

/// Transmissions held until the durable store has committed the transactions they may name,
/// at most. Past it they go at once (counted in `transaction_store_unheld_total`): the store
/// is far behind the network, and holding more would only grow memory.
pub const MAX_HELD_TRANSMITS: usize = 16_384;

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
    /// Durable store: pulled transactions are written here before they are announced on.
    db: TxDb,
    /// Jobs the store has done; a transmission waits until it covers `gate`.
    committed: watch::Receiver<u64>,
    /// The store's number of the latest pulled transaction handed to it.
    gate: u64,
    /// Transmissions waiting for the store, in order, each with the job it waits for.
    held: VecDeque<(u64, Contact, Via, What, u64)>,
    /// The store's counters as last reported, to add only the difference.
    reported_db: Cell<DurableStats>,
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
    security_mode: &'static str,
    events: Arc<EventLog>,
    /// The bans in force, shared with the handle's holders.
    bans: crate::handle::bans::SharedBans,
    /// The score's counters as last reported, to add only the difference.
    reported_score: Cell<sorcha_peer_core::score::ScoreStats>,
    /// The membership counters of dial deferrals as last reported.
    reported_dials: Cell<sorcha_peer_core::membership::MembershipStats>,
    /// The per-turn gauges' last values: one is recorded again only when it changed.
    gauges: gauges::Recorded,
}

impl Actor {
    /// `clock` must be the one `node` was created with: its deadlines count from its origin.
    pub fn new(
        node: Node,
        clock: Clock,
        metrics: Arc<Metrics>,
        store: StoreHandle,
        db: TxDb,
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
        let origins = Origins::shared();
        let (state, state_rx) = watch::channel(node.state());
        let bans = crate::handle::bans::SharedBans::default();
        let handle = NodeHandle {
            state: state_rx,
            tx,
            metrics: metrics.clone(),
            peer_id: peer_id.clone(),
            transactions: transactions.clone(),
            db: db.clone(),
            deliveries: deliveries.clone(),
            registers: settings.registers.clone(),
            origins: origins.clone(),
            events: settings.events.clone(),
            bans: bans.clone(),
            stopping: Arc::new(watch::channel(false).0),
        };
        metrics.record_state(node.state());
        let outbound = Outbound::new(
            answers_tx,
            metrics.clone(),
            peer_id,
            &settings.transport,
            origins,
        );
        let mut node = node;
        for (peer, protocol) in &settings.remembered {
            node.remember_protocol(peer, *protocol);
        }
        for (peer, service, at) in &settings.refusals {
            node.remember_refusal(peer, *service, *at, clock.now());
        }
        let actor = Self {
            node,
            rx,
            answers,
            outbound,
            store,
            transactions,
            committed: db.committed(),
            db,
            gate: 0,
            held: VecDeque::new(),
            reported_db: Cell::default(),
            deliveries,
            fetch_timeout: settings.fetch_timeout,
            state,
            clock,
            metrics,
            address: None,
            heard: HashMap::new(),
            heard_order: VecDeque::new(),
            security_mode: settings.security_mode,
            events: settings.events.clone(),
            bans,
            reported_score: Cell::default(),
            reported_dials: Cell::default(),
            gauges: gauges::Recorded::default(),
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
                Some(answer) = self.answers.recv() => self.handle_answers(answer),
                changed = self.committed.changed(), if !self.held.is_empty() => {
                    self.release_held(changed.is_err())
                }
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

    /// `first`, and the pulled bodies already waiting behind it, fed back together: the core
    /// then looks for new fetches once per batch rather than once per body (see
    /// `Gossip::handle_fetched_batch`). Order is kept: a different answer ends the batch and
    /// is handled after it.
    fn handle_answers(&mut self, first: Answer) {
        let Answer::Fetched { from, id, result } = first else {
            return self.handle_answer(first);
        };
        let mut batch = vec![(from, id, result)];
        let mut next = None;
        while batch.len() < FETCHED_BATCH {
            match self.answers.try_recv() {
                Ok(Answer::Fetched { from, id, result }) => batch.push((from, id, result)),
                Ok(other) => {
                    next = Some(other);
                    break;
                }
                Err(_) => break,
            }
        }
        self.node.handle_fetched_batch(batch, self.clock.now());
        if let Some(answer) = next {
            self.handle_answer(answer);
        }
    }

    /// Feeds back what the transport saw: answers, outcomes, streams opened and lost.
    fn handle_answer(&mut self, answer: Answer) {
        let now = self.clock.now();
        match answer {
            Answer::Membership { id, result, via } => {
                self.node.handle_response_via(id, result, via, now)
            }
            Answer::Fetched { from, id, result } => {
                self.node.handle_fetched(&from, id, result, now)
            }
            Answer::Transmitted {
                peer,
                ticket,
                outcome,
            } => self.node.handle_transmitted(&peer, ticket, outcome, now),
            Answer::StreamOpened { peer, generation } => {
                self.node.handle_stream_opened(&peer, generation, now)
            }
            Answer::StreamClosed { peer, generation } => {
                self.node.handle_stream_closed(&peer, generation, now)
            }
            Answer::Proven { peer } => self.node.handle_proven(&peer, now),
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
                    to,
                    request,
                    id,
                    via,
                    rest_fallback,
                } => self.outbound.send(&to, request, id, (via, rest_fallback)),
                Output::Transmit {
                    to,
                    via,
                    what,
                    ticket,
                } => self.transmit_when_durable(to, via, what, ticket),
                Output::CloseLink(peer) => self.outbound.close_link(&peer),
                Output::Store {
                    hash,
                    body,
                    register_id,
                    origin,
                } => self.store_body(hash, body, register_id, origin),
                Output::Deliver {
                    hash,
                    register_id,
                    size,
                    from,
                    arrival,
                } => self.deliver(hash, register_id, size, from, arrival),
                Output::Persist(node) => self.persist(self.store.upsert(node)),
                Output::Forget(id) => self.persist(self.store.forget(id)),
                Output::Event(event) => self.report(event),
                Output::Banned(record) => self.banned(record),
            }
        }
        self.record_gauges();
    }

    /// Tells the event log and local subscribers of a new transaction, and how it came.
    fn deliver(
        &self,
        hash: TxHash,
        register_id: Option<String>,
        size: u64,
        from: Option<PeerId>,
        arrival: gossip::Arrival,
    ) {
        let from = from.map(|p| p.to_string());
        let how = match arrival.way {
            gossip::Way::Submitted => "submitted here",
            way => way.as_str(),
        };
        let detail = format!("{hash} ({size} bytes, {how})");
        self.events
            .record(EventKind::TxAccepted, from.clone(), detail);
        // No subscriber is fine; a lagging one is counted when it reads.
        let _ = self.deliveries.send(Delivered {
            hash: hash.to_string(),
            register_id,
            size,
            at_us: crate::clock::unix_micros(),
            from,
            how: arrival.way.as_str(),
            hops: arrival.hops,
        });
    }

    /// Keeps a body for peers and local readers, timing its arrival if it was announced.
    fn store_body(
        &mut self,
        hash: TxHash,
        body: Vec<u8>,
        register_id: Option<String>,
        origin: gossip::Origin,
    ) {
        if let Some(heard) = self.heard.remove(&hash.id()) {
            let seconds = heard.elapsed().as_secs_f64();
            self.metrics
                .transaction_distribution_latency
                .record(seconds, &[]);
        }
        let (origin, pulled) = match origin {
            gossip::Origin::Local => ("local".to_owned(), false),
            gossip::Origin::Peer(id) => (id.to_string(), true),
        };
        let body: Arc<[u8]> = body.into();
        let first_seen = now();
        // A local transaction is written by its submitter (the commit runs beside gossip).
        if pulled {
            let new = NewTx {
                hash,
                body: body.clone(),
                register_id: register_id.clone(),
                origin: origin.clone(),
                first_seen,
            };
            match self.db.put_nowait(new) {
                Ok(job) => self.gate = job,
                // Counted by the store (`transaction_store_refused_total`).
                Err(e) => tracing::debug!(error = %e, %hash, "pulled transaction not written"),
            }
        }
        if let Ok(mut store) = self.transactions.lock() {
            store.insert(hash, body, register_id, origin, first_seen);
        }
    }

    /// Transactions held before a restart: known to the core again (anti-entropy announces
    /// them to peers that lack them), and cached. Queued ones are the flusher's to announce,
    /// so the core is not told of them.
    pub fn restore(&mut self, loaded: Vec<Loaded>) {
        let now = self.clock.now();
        let mut store = self.transactions.lock().unwrap_or_else(|p| p.into_inner());
        for Loaded { tx, queued } in loaded {
            if !queued {
                let size = tx.body.len() as u64;
                self.node
                    .restore_transaction(tx.hash, size, tx.register_id.clone(), now);
            }
            store.insert(tx.hash, tx.body, tx.register_id, tx.origin, tx.first_seen);
        }
    }

    /// Sends a transmission now, or holds it (in order) until the store has committed every
    /// pulled transaction handed to it so far: a peer is told of a transaction only once it
    /// would survive our crash. What names nothing the peer would pull from us never waits
    /// ([`names_held`]).
    fn transmit_when_durable(&mut self, to: Contact, via: Via, what: What, ticket: u64) {
        let waits =
            names_held(&what) && (!self.held.is_empty() || self.gate > *self.committed.borrow());
        if !waits {
            return self.transmit(to, via, what, ticket);
        }
        if self.held.len() >= MAX_HELD_TRANSMITS {
            self.metrics.transaction_store_unheld_total.add(1, &[]);
            return self.transmit(to, via, what, ticket);
        }
        self.held.push_back((self.gate, to, via, what, ticket));
    }

    /// Sends the held transmissions whose transactions are committed now (all of them once
    /// the store has `stopped`: nothing will be committed any more).
    fn release_held(&mut self, stopped: bool) {
        let done = if stopped {
            u64::MAX
        } else {
            *self.committed.borrow_and_update()
        };
        while self.held.front().is_some_and(|(gate, ..)| *gate <= done) {
            if let Some((_, to, via, what, ticket)) = self.held.pop_front() {
                self.transmit(to, via, what, ticket);
            }
        }
    }

    /// The gauges that follow the core's state after every turn.
    fn record_gauges(&self) {
        let m = &self.metrics;
        let set = |slot, gauge: &Gauge<i64>, value: usize| {
            self.gauges.set(slot, gauge, value as i64);
        };
        let membership = self.node.membership();
        set(Slot::Peers, &m.peer_count, membership.known_count());
        let active = healthy_active(membership.active_peers());
        set(Slot::ActivePeers, &m.peer_count_active, active);
        m.record_membership(membership.stats());
        let gossip = self.node.gossip();
        m.record_gossip(gossip.stats());
        set(Slot::Pending, &m.gossip_pending, gossip.pending_count());
        set(
            Slot::InFlight,
            &m.gossip_fetches_in_flight,
            gossip.in_flight(),
        );
        self.record_circuits();
        self.record_durable();
        self.record_score();
        if let Ok(store) = self.transactions.lock() {
            set(Slot::StoreSize, &m.transaction_store_size, store.len());
            set(Slot::StoreBytes, &m.transaction_store_bytes, store.bytes());
        }
    }

    /// Hands a transmission to the peer's link worker, which reports its outcome; one that
    /// cannot be handed over is reported now. A unary pull (ticket 0) is one fetch call per
    /// body, whose result is its only report.
    fn transmit(&mut self, to: Contact, via: Via, what: What, ticket: u64) {
        if ticket == 0 {
            let What::Fetch(pulls) = what else {
                return; // The core gives every other transmission a ticket.
            };
            for pull in pulls {
                // A large body takes longer: a second more per MiB.
                let mib = u32::try_from(pull.size >> 20).unwrap_or(u32::MAX);
                let timeout = self.fetch_timeout + Duration::from_secs(1) * mib;
                let name = TxName::new(pull.id, pull.hash);
                self.outbound.fetch(&to, via, name, pull.size, timeout);
            }
            return;
        }
        if let (Err(outcome), Some(peer)) =
            (self.outbound.transmit(&to, via, what, ticket), &to.peer_id)
        {
            self.node
                .handle_transmitted(peer, ticket, outcome, self.clock.now());
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
            security_mode: self.security_mode,
            certificate_fingerprint: self.outbound.certificate_fingerprint(),
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
            let detail = format!(
                "{}:{} (source {}, nat {})",
                report.external_address,
                report.port,
                crate::address::label(&report.source),
                crate::address::label(&report.nat)
            );
            self.events.record(EventKind::AddressChanged, None, detail);
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

/// Whether `what` tells a peer of transactions it may then pull from us (announcements,
/// digests and their replies), so it waits for our store. A push carries its body: the peer
/// needs nothing more from us, so it goes at once (the commit cost every pushed hop a turn
/// of the store's writer thread: 90 % p95 at 100 tx/s roughly halved without it,
/// `crates/lab/README.md`, session 11); prunes and grafts, and pulls, name nothing we hold.
fn names_held(what: &What) -> bool {
    use gossip::GossipMessage as M;
    !matches!(
        what,
        What::Fetch(_) | What::Gossip(M::Push { .. } | M::Prune | M::Graft)
    )
}
