//! The simulated world: every node's core `Node`, the event queue, the network, the clock.
//!
//! One event is handled at a time, in (time, push order). Handling gives one node an input; its
//! outputs are drained at once and become new events (a message arriving later, an answer),
//! never direct calls into another node, so no node ever runs inside another's input. Timers:
//! each node has at most one wake-up queued, for its core's `poll_timeout`, re-queued after an
//! input that changed that deadline; a wake-up for a deadline since replaced is dropped
//! unhandled. Virtual time drives both clocks of the core's `Now`.
//!
//! Files: `world.rs` (setup, the loop, node lifecycle), `deliver.rs` (sends, requests, fetches
//! and their answers), `observe.rs` (samples, faults, the final report).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use rand::seq::SliceRandom;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sorcha_peer_core::link::{Speaks, Via};
use sorcha_peer_core::membership::{Contact, Failure, RequestId, Response};
use sorcha_peer_core::model::{
    PeerAdvert, PeerCapabilities, PeerId, PeerNode, Timestamp, TxHash, TxId,
};
use sorcha_peer_core::node::{Node, NodeConfig, Output};
use sorcha_peer_core::time::{Instant, Now};

pub(crate) use crate::event::Ev;
use crate::metrics::{Recorder, Report, TxRecord};
use crate::network::Network;
use crate::queue::EventQueue;
use crate::scenario::{ChurnMode, Fault, Scenario};

/// The peer port every simulated node listens on.
pub const PORT: u16 = 5001;

/// Bootstrap nodes start this far apart, before everyone else.
const BOOTSTRAP_STAGGER_MS: u64 = 100;

/// How a node behaves towards transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Honest,
    /// Never announces, forwards or answers fetches.
    Dropper,
    /// Answers fetches with wrong bodies.
    Liar,
    /// Announces hashes nobody holds (see `attack.rs`).
    Flooder,
    /// Makes fake identities that push fake peers and announce junk (see `attack.rs`).
    Eclipser,
}

/// A node slot: the core while the node is up, and what survives it going down.
pub(crate) struct SimNode {
    pub(crate) id: PeerId,
    pub(crate) address: String,
    pub(crate) role: Role,
    pub(crate) bootstrap: Vec<Contact>,
    pub(crate) core: Option<Node>,
    /// Bumped when the node goes down, so events for the old incarnation are dropped.
    pub(crate) epoch: u32,
    /// How it went down last: a node that left refuses connections, a crashed one is silent.
    pub(crate) left: bool,
    /// The deadline this incarnation's queued wake-up is for; a wake-up for another one
    /// is stale.
    pub(crate) wake: Option<Instant>,
    /// The peer store (what the node persisted), kept across restarts.
    pub(crate) stored: BTreeMap<PeerId, PeerNode>,
    /// The transports it serves (and advertises).
    pub(crate) speaks: Speaks,
    /// Failing every call made to it (a `fail` fault), while still calling out.
    pub(crate) failing: bool,
    /// A relay (`GossipConfig::relay_percent`), computed once from its id: every message
    /// it sends is counted by role.
    pub(crate) relay: bool,
}

pub struct World {
    pub(crate) scenario: Scenario,
    pub(crate) seed: u64,
    pub(crate) config: NodeConfig,
    pub(crate) now: Timestamp,
    pub(crate) queue: EventQueue<Ev>,
    pub(crate) net: Network,
    pub(crate) nodes: Vec<SimNode>,
    pub(crate) txs: Vec<TxRecord>,
    pub(crate) tx_by_id: BTreeMap<TxId, u32>,
    /// Seeds each node incarnation's RNG, in the order they start.
    pub(crate) node_seeds: ChaCha8Rng,
    /// Faults, origins and bodies.
    pub(crate) rng: ChaCha8Rng,
    pub(crate) rec: Recorder,
    /// Fault events (downs, ups, partitions, heals) still queued: no early stop before them.
    pub(crate) faults_due: usize,
    pub(crate) next_origin: usize,
    /// Submission events handled (a submission finding no live origin counts too).
    pub(crate) submissions_done: usize,
    pub(crate) done: bool,
    /// Open streams by (from, to): the runtime's number for each and the incarnations of
    /// both ends it was opened between (a restart of either end breaks it).
    pub(crate) streams: BTreeMap<(u32, u32), (u64, u32, u32)>,
    pub(crate) next_stream: u64,
}

/// Digits of a node index in its peer id: enough for the largest network a scenario allows.
const ID_DIGITS: usize = 8;

/// Node `n`'s peer id: 40 characters like the daemon's derived ids (as many bytes on the
/// wire), readable in traces: `node00001234` and dashes. The index comes first and at a fixed
/// width, so ids sort as their indices do (as they did when it was the last 36 characters)
/// and two ids differ within their first 16 bytes: the core compares ids eight bytes at a
/// time, and most of its maps are keyed by them.
pub fn peer_id(n: usize) -> PeerId {
    let id = format!("node{n:0ID_DIGITS$}");
    format!("{id:-<40}").parse().expect("digits are a valid id")
}

/// The node index of a simulated peer id.
pub(crate) fn index_of_id(id: &PeerId) -> Option<usize> {
    let digits = id.as_str().strip_prefix("node")?.get(..ID_DIGITS)?;
    digits.parse().ok()
}

/// Node `n`'s address: `10.a.b.c` with `a.b.c` = n + 1.
pub fn address(n: usize) -> String {
    let v = n as u32 + 1;
    Ipv4Addr::new(10, (v >> 16) as u8, (v >> 8) as u8, v as u8).to_string()
}

/// The node index of an address `address` gave, if it is one.
pub(crate) fn index_of_address(address: &str) -> Option<usize> {
    let ip: Ipv4Addr = address.parse().ok()?;
    let [a, b, c, d] = ip.octets();
    if a != 10 {
        return None;
    }
    let v = (u32::from(b) << 16) | (u32::from(c) << 8) | u32::from(d);
    (v as usize).checked_sub(1)
}

impl World {
    /// Builds the world of `scenario` for `seed`: roles, bootstrap lists, start times, the
    /// transaction schedule and the faults, all drawn from the seed.
    pub fn new(scenario: &Scenario, seed: u64) -> Self {
        let mut master = ChaCha8Rng::seed_from_u64(seed);
        let net_rng = ChaCha8Rng::seed_from_u64(master.next_u64());
        let node_seeds = ChaCha8Rng::seed_from_u64(master.next_u64());
        let rng = ChaCha8Rng::seed_from_u64(master.next_u64());
        let n = scenario.nodes;
        let mut world = World {
            scenario: scenario.clone(),
            seed,
            config: scenario.node_config(),
            now: Timestamp::from_millis(0),
            queue: EventQueue::default(),
            net: Network::new(&scenario.network, n, net_rng),
            nodes: Vec::with_capacity(n),
            txs: Vec::new(),
            tx_by_id: BTreeMap::new(),
            node_seeds,
            rng,
            rec: Recorder::default(),
            faults_due: 0,
            next_origin: 0,
            submissions_done: 0,
            done: false,
            streams: BTreeMap::new(),
            next_stream: 0,
        };
        world.build_nodes();
        world.schedule_starts();
        world.schedule_transactions();
        world.schedule_faults();
        world.schedule_attack();
        let first_sample = Timestamp::from_millis(scenario.sample_every.ms());
        world.queue.push(first_sample, Ev::Sample);
        world
    }

    fn build_nodes(&mut self) {
        let n = self.scenario.nodes;
        let k = self.scenario.topology.bootstrap_nodes;
        let [lo, hi] = self.scenario.topology.bootstrap_per_node;
        let contact = |b: usize| Contact::bootstrap(address(b), PORT);
        for i in 0..n {
            let bootstrap = if i < k {
                (0..k).filter(|b| *b != i).map(contact).collect()
            } else {
                let count = self.rng.random_range(lo.min(k)..=hi.min(k));
                let mut all: Vec<usize> = (0..k).collect();
                all.shuffle(&mut self.rng);
                all.truncate(count);
                all.into_iter().map(contact).collect()
            };
            let id = peer_id(i);
            let relay = id.in_relay_share(self.config.gossip.relay_percent);
            self.nodes.push(SimNode {
                id,
                address: address(i),
                role: Role::Honest,
                bootstrap,
                core: None,
                epoch: 0,
                left: false,
                wake: None,
                stored: BTreeMap::new(),
                speaks: Speaks::default(),
                failing: false,
                relay,
            });
        }
        let mut others: Vec<usize> = (k..n).collect();
        others.shuffle(&mut self.rng);
        let droppers = (self.scenario.roles.droppers * n as f64).round() as usize;
        let liars = (self.scenario.roles.liars * n as f64).round() as usize;
        let mut picked = others.into_iter();
        for i in picked.by_ref().take(droppers) {
            self.nodes[i].role = Role::Dropper;
        }
        for i in picked.by_ref().take(liars) {
            self.nodes[i].role = Role::Liar;
        }
        let roles = &self.scenario.roles;
        let flooders = (roles.flooders * n as f64).round() as usize;
        let eclipsers = (roles.eclipsers * n as f64).round() as usize;
        for i in picked.by_ref().take(flooders) {
            self.nodes[i].role = Role::Flooder;
        }
        for i in picked.take(eclipsers) {
            self.nodes[i].role = Role::Eclipser;
        }
        self.assign_transports();
    }

    /// Picks the unary-only and REST-only nodes among the non-bootstrap ones (no draw at
    /// all when there are none, so other scenarios keep their random streams).
    fn assign_transports(&mut self) {
        let t = self.scenario.transports.clone();
        if t.unary_only == 0.0 && t.rest_only == 0.0 {
            return;
        }
        let n = self.nodes.len();
        let k = self.scenario.topology.bootstrap_nodes;
        let mut others: Vec<usize> = (k..n).collect();
        others.shuffle(&mut self.rng);
        let unary = (t.unary_only * n as f64).round() as usize;
        let rest = (t.rest_only * n as f64).round() as usize;
        let mut picked = others.into_iter();
        for i in picked.by_ref().take(unary) {
            self.nodes[i].speaks = Speaks {
                stream: false,
                grpc: true,
                rest: false,
            };
        }
        for i in picked.take(rest) {
            self.nodes[i].speaks = Speaks {
                stream: false,
                grpc: false,
                rest: true,
            };
        }
    }

    fn schedule_starts(&mut self) {
        let k = self.scenario.topology.bootstrap_nodes;
        let join_over = self.scenario.topology.join_over.ms();
        for i in 0..self.scenario.nodes {
            let at = if i < k {
                i as u64 * BOOTSTRAP_STAGGER_MS
            } else {
                k as u64 * BOOTSTRAP_STAGGER_MS + self.rng.random_range(0..=join_over)
            };
            self.queue
                .push(Timestamp::from_millis(at), Ev::Start(i as u32));
        }
    }

    fn schedule_transactions(&mut self) {
        let tx = &self.scenario.transactions;
        let start = tx.start.ms() as f64;
        let every = 1000.0 / tx.rate;
        for k in 0..tx.count {
            let at = (start + k as f64 * every).round() as u64;
            self.queue.push(Timestamp::from_millis(at), Ev::Submit);
        }
    }

    fn schedule_faults(&mut self) {
        let faults = self.scenario.faults.clone();
        for (i, fault) in faults.iter().enumerate() {
            match fault {
                Fault::Churn { at, .. } | Fault::Partition { at, .. } | Fault::Fail { at, .. } => {
                    self.faults_due += 1;
                    self.queue
                        .push(Timestamp::from_millis(at.ms()), Ev::Fault(i));
                }
            }
        }
    }

    /// Runs to the end (or until everything is delivered) and reports.
    pub fn run(&mut self) -> Report {
        let end = Timestamp::from_millis(self.scenario.duration.ms());
        while !self.done {
            let Some(at) = self.queue.next_at() else {
                break;
            };
            if at > end {
                break;
            }
            let (at, ev) = self.queue.pop().expect("peeked");
            self.now = at;
            self.handle(ev);
        }
        if !self.done {
            self.now = end;
        }
        self.report()
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Start(n) => self.start(n as usize),
            Ev::Up(n) => {
                self.faults_due -= 1;
                self.start(n as usize);
            }
            Ev::Down(n, mode) => self.down(n as usize, mode),
            Ev::Wake { node, epoch, at } => self.wake(node as usize, epoch, at),
            Ev::Request {
                from,
                epoch,
                to,
                id,
                request,
                deadline,
                via,
            } => self.on_request(
                (from as usize, epoch),
                to as usize,
                (id, via),
                *request,
                deadline,
            ),
            Ev::Response {
                node,
                epoch,
                id,
                result,
                via,
            } => self.on_response(node as usize, epoch, id, result, via),
            Ev::Transmitted {
                node,
                epoch,
                peer,
                ticket,
                outcome,
            } => self.on_transmitted(node as usize, epoch, peer as usize, ticket, outcome),
            Ev::Notify { from, to, entry } => self.on_notify(from as usize, to as usize, entry),
            Ev::Failing(n, on) => {
                self.faults_due -= 1;
                self.nodes[n as usize].failing = on;
            }
            Ev::Gossip { from, to, message } => self.on_gossip(from as usize, to as usize, message),
            Ev::FetchRequest {
                from,
                epoch,
                to,
                id,
                deadline,
                unary,
            } => self.on_fetch_request(from as usize, epoch, to as usize, id, deadline, unary),
            Ev::Fetched {
                node,
                epoch,
                from,
                id,
                result,
            } => self.on_fetched(node as usize, epoch, from as usize, id, result),
            Ev::Submit => self.submit(),
            Ev::Fault(i) => self.fault(i),
            Ev::Heal => self.heal(),
            Ev::Sample => self.sample(),
            Ev::Attack => self.attack(),
        }
    }

    fn on_response(
        &mut self,
        n: usize,
        epoch: u32,
        id: RequestId,
        result: Result<Response, Failure>,
        via: Option<Via>,
    ) {
        let now = self.clock();
        if let Some(core) = self.live_core(n, epoch) {
            core.handle_response_via(id, result, via, now);
            self.drain(n);
        }
    }

    /// The core of node `n` if it is up in incarnation `epoch`.
    pub(crate) fn live_core(&mut self, n: usize, epoch: u32) -> Option<&mut Node> {
        let node = &mut self.nodes[n];
        if node.epoch != epoch {
            return None;
        }
        node.core.as_mut()
    }

    /// Node `from`'s id and node `to`'s core, borrowed together (no clone of the id per
    /// message); `None` if `to` is down or is `from`.
    pub(crate) fn sender_and_core(
        &mut self,
        from: usize,
        to: usize,
    ) -> Option<(&PeerId, &mut Node)> {
        if from == to {
            return None;
        }
        let (sender, target) = if from < to {
            let (a, b) = self.nodes.split_at_mut(to);
            (&a[from], &mut b[0])
        } else {
            let (a, b) = self.nodes.split_at_mut(from);
            (&b[0], &mut a[to])
        };
        Some((&sender.id, target.core.as_mut()?))
    }

    pub(crate) fn is_up(&self, n: usize) -> bool {
        self.nodes[n].core.is_some()
    }

    /// Counts a message node `sender` sent (relays' apart: `Report::bytes_by_role`).
    pub(crate) fn count_traffic(
        &mut self,
        sender: usize,
        kind: crate::metrics::Kind,
        bytes: usize,
        carriage: crate::wire::Carriage,
    ) {
        let relay = self.nodes[sender].relay;
        self.rec.traffic(kind, bytes, carriage, relay);
    }

    fn advert(&self, n: usize) -> PeerAdvert {
        PeerAdvert {
            peer_id: self.nodes[n].id.clone(),
            address: self.nodes[n].address.clone(),
            port: PORT,
            supported_protocols: self.nodes[n].speaks.protocols(),
            capabilities: PeerCapabilities {
                supports_streaming: self.nodes[n].speaks.stream,
                supports_transaction_distribution: true,
                max_transaction_size: u32::try_from(self.config.gossip.max_transaction_size)
                    .unwrap_or(u32::MAX),
            },
            last_seen: self.now,
            is_seed_node: n < self.scenario.topology.bootstrap_nodes,
        }
    }

    /// Starts (or restarts, with its stored peers) node `n`.
    fn start(&mut self, n: usize) {
        if self.is_up(n) {
            return;
        }
        let rng = ChaCha8Rng::seed_from_u64(self.node_seeds.next_u64());
        let stored: Vec<PeerNode> = self.nodes[n].stored.values().cloned().collect();
        let mut config = self.config.clone();
        config.link.speaks = self.nodes[n].speaks;
        let core = Node::new(
            config,
            self.advert(n),
            self.nodes[n].bootstrap.clone(),
            stored,
            rng,
            self.clock(),
        );
        self.nodes[n].core = Some(core);
        self.drain(n);
    }

    fn down(&mut self, n: usize, mode: ChurnMode) {
        self.faults_due -= 1;
        let node = &mut self.nodes[n];
        if node.core.take().is_some() {
            node.epoch += 1;
            node.left = mode == ChurnMode::Leave;
            node.wake = None;
            self.rec.count("nodes_down");
        }
    }

    /// The core's `Now` at the current virtual time: both clocks read it.
    pub(crate) fn clock(&self) -> Now {
        Now::from_millis(self.now.as_millis())
    }

    fn wake(&mut self, n: usize, epoch: u32, at: Instant) {
        let now = self.clock();
        let node = &mut self.nodes[n];
        if node.epoch != epoch || node.wake != Some(at) {
            return;
        }
        node.wake = None;
        if let Some(core) = node.core.as_mut() {
            core.handle_timeout(now);
            self.drain(n);
        }
    }

    /// Carries out everything node `n` asked for, in order.
    pub(crate) fn drain(&mut self, n: usize) {
        while let Some(output) = self.nodes[n].core.as_mut().and_then(Node::poll_output) {
            match output {
                Output::Send {
                    to,
                    request,
                    id,
                    via,
                    rest_fallback,
                } => self.send_request(n, &to, request, id, (via, rest_fallback)),
                Output::Transmit {
                    to,
                    via,
                    what,
                    ticket,
                } => self.transmit(n, &to, via, what, ticket),
                Output::CloseLink(peer) => self.close_link(n, &peer),
                Output::Store { hash, origin, .. } => self.on_store(n, hash, origin),
                Output::Deliver { .. } => self.rec.count("deliveries"),
                Output::Persist(peer) => {
                    self.nodes[n].stored.insert(peer.peer_id.clone(), peer);
                }
                Output::Forget(id) => {
                    self.nodes[n].stored.remove(&id);
                }
                Output::Event(event) => self.on_event(&event),
                Output::Banned(record) => self.on_ban(n, &record),
            }
        }
        self.rearm(n);
    }

    /// Queues a wake-up for node `n`'s deadline if it changed since the last one queued (the
    /// earlier wake-up then goes stale). Runs after every input, as `drain` does.
    fn rearm(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        let deadline = node.core.as_ref().and_then(Node::poll_timeout);
        if deadline == node.wake {
            return;
        }
        node.wake = deadline;
        let Some(at) = deadline else {
            return;
        };
        let ev = Ev::Wake {
            node: n as u32,
            epoch: node.epoch,
            at,
        };
        let when = Timestamp::from_millis(at.as_millis()).max(self.now);
        self.queue.push(when, ev);
    }

    /// Submits transaction `k` at a live honest origin.
    fn submit(&mut self) {
        self.submissions_done += 1;
        let Some(origin) = self.pick_origin() else {
            self.rec.count("submissions_without_origin");
            return;
        };
        let tx = &self.scenario.transactions;
        let size = match tx.size_max {
            Some(max) => self.rng.random_range(tx.size..=max),
            None => tx.size,
        } as usize;
        let register_id = tx.register_id.clone();
        let mut body = vec![0u8; size];
        self.rng.fill_bytes(&mut body);
        let hash = TxHash::of(&body);
        let n = self.nodes.len();
        self.tx_by_id.insert(hash.id(), self.txs.len() as u32);
        self.txs.push(TxRecord {
            hash,
            body: body.clone(),
            submitted_at: self.now,
            origin: origin as u32,
            first: vec![crate::metrics::NEVER; n],
            hops: vec![0; n],
        });
        self.rec.measuring_since.get_or_insert(self.now);
        let now = self.clock();
        let core = self.nodes[origin].core.as_mut().expect("origin is up");
        if core.submit(body, register_id, now).is_err() {
            self.rec.count("submissions_refused");
        }
        self.drain(origin);
    }

    fn pick_origin(&mut self) -> Option<usize> {
        let usable = |w: &World, i: usize| w.is_up(i) && w.nodes[i].role == Role::Honest;
        if let crate::scenario::Origins::Nodes(list) = &self.scenario.transactions.origins {
            let list = list.clone();
            for _ in 0..list.len() {
                let i = list[self.next_origin % list.len()];
                self.next_origin += 1;
                if usable(self, i) {
                    return Some(i);
                }
            }
            return None;
        }
        for _ in 0..64 {
            let i = self.rng.random_range(0..self.nodes.len());
            if usable(self, i) {
                return Some(i);
            }
        }
        (0..self.nodes.len()).find(|i| usable(self, *i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_ids_map_back_to_indices() {
        for n in [0, 1, 254, 255, 256, 65_535, 65_536, 9_999, 1_000_000] {
            let a = address(n);
            assert!(sorcha_peer_core::model::validate_address(&a).is_ok(), "{a}");
            assert_eq!(index_of_address(&a), Some(n));
            assert_eq!(index_of_id(&peer_id(n)), Some(n));
            assert_eq!(peer_id(n).as_str().len(), 40);
        }
        assert_eq!(index_of_address("192.168.0.1"), None);
    }
}
