//! A deterministic in-memory network of `Membership` machines: the harness delivers every
//! `Send` to the target's `handle_*` method, carries the answer back after a fixed latency and
//! wakes each node at its `poll_timeout` on a virtual clock (both clocks of [`Now`] run
//! together here). Nothing but the seed decides the outcome.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::test_util::{addr, advert, contact, id};
use super::*;

const LATENCY: Duration = Duration::from_millis(20);

enum Ev {
    Start(usize),
    /// Node `.0`'s wake-up for deadline `.1`; stale once the node re-armed.
    Wake(usize, Instant),
    Answer(usize, RequestId, Result<Response, Failure>),
}

struct Net {
    now: Now,
    seed: u64,
    nodes: Vec<Option<Membership>>,
    dead: BTreeSet<usize>,
    by_addr: BTreeMap<String, usize>,
    queue: BTreeMap<(Instant, u64), Ev>,
    /// The deadline each node's queued wake-up is for.
    wakes: Vec<Option<Instant>>,
    seq: u64,
    bootstrap: Vec<Contact>,
}

impl Net {
    fn new(size: usize, seed: u64) -> Self {
        let mut net = Net {
            now: Now::from_millis(0),
            seed,
            nodes: (0..size).map(|_| None).collect(),
            dead: BTreeSet::new(),
            by_addr: (0..size).map(|n| (addr(n), n)).collect(),
            queue: BTreeMap::new(),
            wakes: vec![None; size],
            seq: 0,
            bootstrap: vec![contact(0), contact(1)],
        };
        for n in 0..size {
            let at = Instant::from_millis(n as u64 * 300);
            net.at(at, Ev::Start(n));
        }
        net
    }

    fn at(&mut self, at: Instant, ev: Ev) {
        self.seq += 1;
        self.queue.insert((at, self.seq), ev);
    }

    fn run_until(&mut self, end: Instant) {
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > end {
                break;
            }
            let ((at, _), ev) = entry.remove_entry();
            let at = Now::from_millis(at.as_millis());
            self.now = at;
            let node = match ev {
                Ev::Start(n) => {
                    let rng = ChaCha8Rng::seed_from_u64(self.seed * 1000 + n as u64);
                    let config = MembershipConfig::default();
                    let me = advert(n, at);
                    let bootstrap = self.bootstrap.clone();
                    self.nodes[n] = Some(Membership::new(config, me, bootstrap, vec![], rng, at));
                    n
                }
                Ev::Wake(n, deadline) if self.wakes[n] == Some(deadline) => {
                    self.wakes[n] = None;
                    if let Some(m) = self.node(n) {
                        m.handle_timeout(at);
                    }
                    n
                }
                Ev::Wake(..) => continue,
                Ev::Answer(n, rid, result) => {
                    if let Some(m) = self.node(n) {
                        m.handle_response(rid, result, at);
                    }
                    n
                }
            };
            self.flush(node);
        }
        self.now = Now::from_millis(end.as_millis());
    }

    /// A live node.
    fn node(&mut self, n: usize) -> Option<&mut Membership> {
        if self.dead.contains(&n) {
            return None;
        }
        self.nodes[n].as_mut()
    }

    fn flush(&mut self, first: usize) {
        let mut dirty = VecDeque::from([first]);
        while let Some(n) = dirty.pop_front() {
            while let Some(output) = self.node(n).and_then(|m| m.poll_output()) {
                match output {
                    Output::Send { to, request, id } => {
                        let (result, target) = self.deliver(n, &to, request);
                        let back = self.now.mono.saturating_add(LATENCY * 2);
                        self.at(back, Ev::Answer(n, id, result));
                        dirty.extend(target);
                    }
                    Output::Persist(_) | Output::Forget(_) | Output::Event(_) => {}
                }
            }
            self.rearm(n);
        }
    }

    /// Queues a wake-up for node `n`'s deadline when it changed; the old one goes stale.
    fn rearm(&mut self, n: usize) {
        let deadline = self.node(n).and_then(|m| m.poll_timeout());
        if deadline != self.wakes[n] {
            self.wakes[n] = deadline;
            if let Some(at) = deadline {
                self.at(at.max(self.now.mono), Ev::Wake(n, at));
            }
        }
    }

    /// Runs the target's handler as the daemon would and returns the answer.
    fn deliver(
        &mut self,
        from: usize,
        to: &Contact,
        request: Request,
    ) -> (Result<Response, Failure>, Option<usize>) {
        let now = self.now.saturating_add(LATENCY);
        let Some(&target) = self.by_addr.get(&to.address) else {
            return (Err(Failure::Unreachable), None);
        };
        let Some(m) = self.node(target) else {
            return (Err(Failure::Unreachable), None);
        };
        let sender = id(from);
        let response = match request {
            Request::Register { advert } => Response::Registered {
                success: m.handle_register(advert, now).is_ok(),
            },
            Request::GetPeerList { max } => Response::PeerList {
                peers: m.peer_list(Some(&sender), max as usize, now),
            },
            Request::ExchangePeers { adverts, max } => Response::Exchanged {
                peers: m.handle_exchange(&sender, adverts, max as usize, now),
            },
            Request::Ping => match m.handle_ping(Some(&sender), now) {
                Ok(pong) => Response::Pong {
                    peer_id: pong.peer_id,
                    status: pong.status,
                },
                Err(_) => return (Err(Failure::Refused), Some(target)),
            },
            Request::Heartbeat { .. } => Response::Heartbeat {
                outcome: m.handle_heartbeat(&sender, now),
            },
        };
        (Ok(response), Some(target))
    }

    fn live(&self) -> impl Iterator<Item = (usize, &Membership)> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(n, _)| !self.dead.contains(n))
            .filter_map(|(n, m)| m.as_ref().map(|m| (n, m)))
    }

    /// Per node: state, known ids, active ids.
    fn summary(&self) -> Vec<(NodeState, Vec<PeerId>, Vec<PeerId>)> {
        self.live()
            .map(|(_, m)| {
                let known = m.peers().map(|p| p.node.peer_id.clone()).collect();
                let active = m.active_peers().map(|p| p.node.peer_id.clone()).collect();
                (m.state(), known, active)
            })
            .collect()
    }
}

fn minutes(m: u64) -> Instant {
    Instant::from_millis(m * 60_000)
}

fn run_scenario(seed: u64) -> Vec<(NodeState, Vec<PeerId>, Vec<PeerId>)> {
    let mut net = Net::new(30, seed);
    net.run_until(minutes(30));
    for (n, m) in net.live() {
        assert_eq!(m.state(), NodeState::Online, "node {n} not online");
        assert!(m.known_count() >= 20, "node {n} knows {}", m.known_count());
        assert!(m.active_count() <= m.config().active_size);
    }
    let killed = [1, 7, 13, 19, 25];
    net.dead.extend(killed);
    net.run_until(minutes(30 + 90));
    let killed_ids: BTreeSet<PeerId> = killed.iter().map(|&n| id(n)).collect();
    for (n, m) in net.live() {
        assert_eq!(
            m.state(),
            NodeState::Online,
            "node {n} not online after churn"
        );
        for p in m.peers() {
            assert!(
                !killed_ids.contains(&p.node.peer_id),
                "node {n} still lists dead {} ({:?})",
                p.node.peer_id,
                p.health
            );
        }
    }
    net.summary()
}

#[test]
fn thirty_nodes_join_survive_churn_and_are_deterministic() {
    let first = run_scenario(7);
    assert_eq!(first.len(), 25);
    assert_eq!(first, run_scenario(7), "same seed, different outcome");
}
