//! A deterministic mini network of `Gossip` machines: 50 nodes on a fixed random graph (8
//! active peers each), a virtual clock, 10-50 ms per message, fetches answered from the
//! target's store, optional message loss. Prints time to full coverage, traffic and duplicate
//! bodies; the figures are copied into the module doc. Nothing but the seed decides them.
//!
//! Run with `cargo test -p sorcha-peer-core gossip::net_tests -- --nocapture` to see them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::test_util::id;
use super::*;

const NODES: usize = 50;
const DEGREE: usize = 8;
const TXS: usize = 200;
/// Submissions are spread over this long, one every 10 ms.
const SUBMIT_EVERY_MS: u64 = 10;
/// Virtual time after which a run gives up.
const HORIZON_MS: u64 = 300_000;
/// Bytes of a fetch request on the wire (hash as hex, requester id, framing).
const FETCH_REQUEST_BYTES: usize = 120;
/// Framing of a fetch response around the body.
const FETCH_RESPONSE_OVERHEAD: usize = 80;

/// Bytes of a gossip message, roughly as a stream carries it. The real encoding lives in the
/// wire crate, which depends on this one, so this test cannot use it; the simulator counts
/// real bytes. Per message 9 bytes (gRPC prefix, type, payload field), per entry 23 (a 16-byte
/// id, size, hops), per prefix 8.
fn message_bytes(message: &GossipMessage) -> usize {
    9 + match message {
        GossipMessage::Announce { entries } => 23 * entries.len(),
        GossipMessage::Push { body, .. } => 26 + body.len(),
        GossipMessage::Digest { prefixes, .. } => 20 + 8 * prefixes.len(),
        GossipMessage::DigestReply { missing, wanted } => 23 * missing.len() + 8 * wanted.len(),
        GossipMessage::Prune | GossipMessage::Graft => 0,
    }
}

enum Ev {
    Submit(usize, Vec<u8>),
    Msg(usize, usize, GossipMessage),
    /// A fetch request from `.0` arrives at `.1`.
    FetchRequest(usize, usize, TxId),
    Fetched(usize, usize, TxId, Result<Vec<u8>, FetchFailure>),
    /// Node `.0`'s wake-up for the deadline `.1`; stale once the node re-armed.
    Wake(usize, Instant),
}

/// What a run measured.
#[derive(Debug, Clone, PartialEq)]
struct Report {
    /// (node, tx) pairs delivered, out of NODES x TXS.
    delivered: usize,
    /// Longest submit-to-last-delivery time of one transaction, ms (None: not all reached).
    full_ms_max: Option<u64>,
    /// Mean of the same over the transactions that reached every node.
    full_ms_mean: u64,
    msgs_per_node_tx: f64,
    bytes_per_node_tx: f64,
    dup_bodies_per_node: f64,
    fetch_failovers: u64,
    repairs: u64,
}

struct Net {
    now: Instant,
    rng: ChaCha8Rng,
    loss: f64,
    nodes: Vec<Gossip>,
    stores: Vec<BTreeMap<TxId, Vec<u8>>>,
    queue: BTreeMap<(Instant, u64), Ev>,
    /// The deadline each node's queued wake-up is for.
    wakes: Vec<Option<Instant>>,
    seq: u64,
    /// Per tx: submit time and the nodes that delivered it, with the last delivery time.
    txs: BTreeMap<TxHash, (Instant, BTreeSet<usize>, Instant)>,
    delivered: usize,
    messages: u64,
    bytes: u64,
}

impl Net {
    fn new(config: &GossipConfig, loss: f64, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let t0 = Now::from_millis(0);
        let mut nodes = Vec::new();
        for n in 0..NODES {
            let child = ChaCha8Rng::seed_from_u64(rng.random());
            let mut g = Gossip::new(config.clone(), id(n), child, t0);
            let mut others: Vec<usize> = (0..NODES).filter(|&m| m != n).collect();
            others.shuffle(&mut rng);
            let peers: Vec<PeerId> = others[..DEGREE].iter().map(|&m| id(m)).collect();
            g.set_peers(&peers, t0);
            nodes.push(g);
        }
        let mut net = Net {
            now: t0.mono,
            rng,
            loss,
            nodes,
            stores: vec![BTreeMap::new(); NODES],
            queue: BTreeMap::new(),
            wakes: vec![None; NODES],
            seq: 0,
            txs: BTreeMap::new(),
            delivered: 0,
            messages: 0,
            bytes: 0,
        };
        for n in 0..NODES {
            net.flush(n);
        }
        for k in 0..TXS {
            let origin = net.rng.random_range(0..NODES);
            let size = net.rng.random_range(200..4000);
            let mut body = vec![0u8; size];
            net.rng.fill(&mut body[..]);
            let at = Instant::from_millis(k as u64 * SUBMIT_EVERY_MS);
            net.at(at, Ev::Submit(origin, body));
        }
        net
    }

    fn at(&mut self, at: Instant, ev: Ev) {
        self.seq += 1;
        self.queue.insert((at, self.seq), ev);
    }

    fn latency(&mut self) -> Duration {
        Duration::from_millis(self.rng.random_range(10..=50))
    }

    /// Queues `ev` after one link latency, unless the link loses it.
    fn transmit(&mut self, bytes: usize, ev: Ev) {
        self.messages += 1;
        self.bytes += bytes as u64;
        if self.rng.random_bool(self.loss) {
            return;
        }
        let at = self.now.saturating_add(self.latency());
        self.at(at, ev);
    }

    fn run(&mut self) {
        let horizon = Instant::from_millis(HORIZON_MS);
        while self.delivered < NODES * TXS {
            let Some(entry) = self.queue.first_entry() else {
                break;
            };
            if entry.key().0 > horizon {
                break;
            }
            let ((at, _), ev) = entry.remove_entry();
            self.now = at;
            let now = Now::from_millis(at.as_millis());
            let n = match ev {
                Ev::Submit(n, body) => {
                    let hash = TxHash::of(&body);
                    self.txs.insert(hash, (at, BTreeSet::new(), at));
                    self.nodes[n].submit(body, None, now).expect("valid body");
                    n
                }
                Ev::Msg(from, to, message) => {
                    self.nodes[to].handle_message(&id(from), message, now);
                    to
                }
                Ev::FetchRequest(from, to, tx) => {
                    let result = self.stores[to]
                        .get(&tx)
                        .cloned()
                        .ok_or(FetchFailure::NotFound);
                    let len = result.as_ref().map_or(0, Vec::len);
                    let ev = Ev::Fetched(from, to, tx, result);
                    self.transmit(FETCH_RESPONSE_OVERHEAD + len, ev);
                    continue;
                }
                Ev::Fetched(n, from, tx, result) => {
                    self.nodes[n].handle_fetched(&id(from), tx, result, now);
                    n
                }
                Ev::Wake(n, deadline) if self.wakes[n] == Some(deadline) => {
                    self.wakes[n] = None;
                    self.nodes[n].handle_timeout(now);
                    n
                }
                Ev::Wake(..) => continue,
            };
            self.flush(n);
        }
    }

    fn flush(&mut self, n: usize) {
        while let Some(output) = self.nodes[n].poll_output() {
            match output {
                Output::Send { to, message } => {
                    let to = node_index(&to);
                    let bytes = message_bytes(&message);
                    self.transmit(bytes, Ev::Msg(n, to, message));
                }
                Output::Fetch { from, id: tx, .. } => {
                    let from = node_index(&from);
                    self.transmit(FETCH_REQUEST_BYTES, Ev::FetchRequest(n, from, tx));
                }
                Output::Store { hash, body, .. } => {
                    self.stores[n].insert(hash.id(), body);
                }
                Output::Deliver { hash, .. } => {
                    let (_, nodes, last) = self.txs.get_mut(&hash).expect("submitted tx");
                    assert!(nodes.insert(n), "node {n} got {hash} twice");
                    *last = self.now;
                    self.delivered += 1;
                }
                Output::Event(_) => {}
            }
        }
        let deadline = self.nodes[n].poll_timeout();
        if deadline != self.wakes[n] {
            self.wakes[n] = deadline;
            if let Some(at) = deadline {
                self.at(at.max(self.now), Ev::Wake(n, at));
            }
        }
    }

    fn report(&self) -> Report {
        let full: Vec<u64> = self
            .txs
            .values()
            .filter(|(_, nodes, _)| nodes.len() == NODES)
            .map(|(at, _, last)| last.since(*at).as_millis() as u64)
            .collect();
        let per = (NODES * TXS) as f64;
        let sum = |f: fn(&GossipStats) -> u64| self.nodes.iter().map(|g| f(g.stats())).sum::<u64>();
        Report {
            delivered: self.delivered,
            full_ms_max: (full.len() == TXS).then(|| full.iter().copied().max().unwrap_or(0)),
            full_ms_mean: full.iter().sum::<u64>() / full.len().max(1) as u64,
            msgs_per_node_tx: self.messages as f64 / per,
            bytes_per_node_tx: self.bytes as f64 / per,
            dup_bodies_per_node: sum(|s| s.duplicate_bodies) as f64 / NODES as f64,
            fetch_failovers: sum(|s| s.fetch_timeouts + s.fetch_failures + s.bad_bodies),
            repairs: sum(|s| s.anti_entropy_repairs),
        }
    }
}

fn node_index(peer: &PeerId) -> usize {
    peer.as_str()["node-".len()..]
        .parse()
        .expect("net ids are node-N")
}

fn run(name: &str, config: &GossipConfig, loss: f64, seed: u64) -> Report {
    let mut net = Net::new(config, loss, seed);
    net.run();
    let r = net.report();
    println!(
        "{name:<34} loss {:>3.0}%  coverage {:>6.2}%  full max {:>6} ms mean {:>5} ms  \
         msgs/node/tx {:>5.2}  bytes/node/tx {:>6.0}  dup bodies/node {:>5.2}  failovers {:>4}  repairs {:>4}",
        loss * 100.0,
        100.0 * r.delivered as f64 / (NODES * TXS) as f64,
        r.full_ms_max.map_or("-".to_string(), |m| m.to_string()),
        r.full_ms_mean,
        r.msgs_per_node_tx,
        r.bytes_per_node_tx,
        r.dup_bodies_per_node,
        r.fetch_failovers,
        r.repairs,
    );
    r
}

fn no_ae(config: GossipConfig) -> GossipConfig {
    GossipConfig {
        anti_entropy_interval: None,
        ..config
    }
}

#[test]
fn two_hundred_transactions_reach_all_fifty_nodes() {
    let r = run("default", &GossipConfig::default(), 0.0, 1);
    assert_eq!(r.delivered, NODES * TXS);
    assert!(r.full_ms_max.is_some());
}

#[test]
fn ten_percent_loss_heals_with_anti_entropy() {
    let r = run("default, 10% loss", &GossipConfig::default(), 0.1, 1);
    assert_eq!(r.delivered, NODES * TXS, "{r:?}");
}

#[test]
fn same_seed_same_numbers() {
    let config = GossipConfig::default();
    let a = run("default, 10% loss (again)", &config, 0.1, 2);
    assert_eq!(a, run("default, 10% loss (again)", &config, 0.1, 2));
}

/// The comparison behind the defaults (module doc). Asserts only what a strategy promises.
#[test]
fn strategies_compared() {
    let base = GossipConfig::default();
    let fixed3_hops3 = GossipConfig {
        fanout: FanoutMode::Fixed(3),
        max_hops: 3,
        flood_past_max_hops: false,
        ..base.clone()
    };
    let all_hops3 = GossipConfig {
        fanout: FanoutMode::All,
        ..fixed3_hops3.clone()
    };
    let hybrid = GossipConfig {
        fanout: FanoutMode::Fixed(3),
        max_hops: 3,
        flood_past_max_hops: true,
        ..base.clone()
    };
    let fixed3_open = GossipConfig {
        max_hops: 16,
        ..fixed3_hops3.clone()
    };
    let sqrt_open = GossipConfig {
        fanout: FanoutMode::Sqrt,
        ..fixed3_open.clone()
    };
    let all = GossipConfig {
        fanout: FanoutMode::All,
        max_hops: 16,
        ..base.clone()
    };
    let push = |c: &GossipConfig| GossipConfig {
        eager_push_max_size: 4096,
        eager_push_peers: 1,
        ..c.clone()
    };
    run(
        "fixed 3, 3 hops, no AE",
        &no_ae(fixed3_hops3.clone()),
        0.0,
        1,
    );
    run(
        "fixed 3, 16 hops, no AE",
        &no_ae(fixed3_open.clone()),
        0.0,
        1,
    );
    run("sqrt, 16 hops, no AE", &no_ae(sqrt_open), 0.0, 1);
    run("all, 3 hops, no AE", &no_ae(all_hops3), 0.0, 1);
    let flood = run("all, no AE", &no_ae(all.clone()), 0.0, 1);
    assert_eq!(
        flood.delivered,
        NODES * TXS,
        "flooding reaches a connected graph"
    );
    run("fixed 3 then all, no AE", &no_ae(hybrid.clone()), 0.0, 1);
    run("fixed 3, 3 hops, AE", &fixed3_hops3, 0.0, 1);
    run("fixed 3, 16 hops, AE", &fixed3_open, 0.0, 1);
    run("all, AE", &all, 0.0, 1);
    run("fixed 3 then all, AE", &hybrid, 0.0, 1);
    run("fixed 3 then all, push 1, AE", &push(&hybrid), 0.0, 1);
    run("all, push 1, AE", &push(&all), 0.0, 1);
    run("fixed 3, 3 hops, AE", &fixed3_hops3, 0.1, 1);
    run("all, AE", &all, 0.1, 1);
    run("fixed 3 then all, AE", &hybrid, 0.1, 1);
    run("fixed 3 then all, push 1, AE", &push(&hybrid), 0.1, 1);
}
