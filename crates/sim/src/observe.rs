//! Faults as they happen, coverage samples, and the final report.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::Rng;
use rand::seq::SliceRandom;
use sorcha_peer_core::model::NodeState;
use sorcha_peer_core::node::Node;

use crate::graph::{self, GraphQuality};
use crate::metrics::{self, Heal, HealReport, NodeStates, Report, TxSummary};
use crate::scenario::Fault;
use crate::world::{Ev, Role, World, index_of_id};

impl World {
    /// Fault `i` of the scenario starts.
    pub(crate) fn fault(&mut self, i: usize) {
        self.faults_due -= 1;
        match self.scenario.faults[i].clone() {
            Fault::Churn {
                fraction,
                over,
                downtime,
                mode,
                ..
            } => {
                let k = self.scenario.topology.bootstrap_nodes;
                let mut up: Vec<usize> = (k..self.nodes.len()).filter(|n| self.is_up(*n)).collect();
                up.shuffle(&mut self.rng);
                let count = (fraction * up.len() as f64).round() as usize;
                for n in up.into_iter().take(count) {
                    let delay = Duration::from_millis(self.rng.random_range(0..=over.ms()));
                    let down_at = self.now.saturating_add(delay);
                    self.faults_due += 1;
                    self.queue.push(down_at, Ev::Down(n as u32, mode));
                    if let Some(downtime) = downtime {
                        self.faults_due += 1;
                        self.queue
                            .push(down_at.saturating_add(downtime.0), Ev::Up(n as u32));
                    }
                }
            }
            Fault::Fail {
                fraction, lasts, ..
            } => {
                let k = self.scenario.topology.bootstrap_nodes;
                let mut up: Vec<usize> = (k..self.nodes.len()).filter(|n| self.is_up(*n)).collect();
                up.shuffle(&mut self.rng);
                let count = (fraction * up.len() as f64).round() as usize;
                for n in up.into_iter().take(count) {
                    self.nodes[n].failing = true;
                    self.faults_due += 1;
                    let end = self.now.saturating_add(lasts.0);
                    self.queue.push(end, Ev::Failing(n as u32, false));
                }
                self.rec.count("fail_faults");
            }
            Fault::Partition {
                groups, heal_after, ..
            } => {
                let n = self.nodes.len();
                let mut order: Vec<usize> = (0..n).collect();
                order.shuffle(&mut self.rng);
                let mut assign = vec![0u16; n];
                let mut start = 0usize;
                let mut cumulative = 0.0;
                for (g, share) in groups.iter().enumerate() {
                    cumulative += share;
                    let end = if g + 1 == groups.len() {
                        n
                    } else {
                        ((cumulative * n as f64).round() as usize).min(n)
                    };
                    for &node in &order[start..end] {
                        assign[node] = g as u16;
                    }
                    start = end;
                }
                self.net.partition(assign);
                self.rec.count("partitions");
                if let Some(after) = heal_after {
                    self.faults_due += 1;
                    self.queue.push(self.now.saturating_add(after.0), Ev::Heal);
                }
            }
        }
    }

    pub(crate) fn heal(&mut self) {
        self.faults_due -= 1;
        self.net.heal();
        let connected = self.graph().weak_components == 1;
        self.rec.heals.push(Heal {
            at: self.now,
            graph_reconnected: connected.then_some(self.now),
        });
    }

    /// Up nodes that are honest: the nodes coverage counts.
    pub(crate) fn live_honest(&self) -> Vec<bool> {
        self.nodes
            .iter()
            .map(|n| n.core.is_some() && n.role == Role::Honest)
            .collect()
    }

    /// Delivered (live honest node, submitted tx) pairs over all such pairs.
    fn coverage(&self, counted: &[bool]) -> f64 {
        let m = counted.iter().filter(|c| **c).count();
        if self.txs.is_empty() || m == 0 {
            return 1.0;
        }
        let delivered: usize = self
            .txs
            .iter()
            .map(|tx| {
                (0..counted.len())
                    .filter(|n| counted[*n] && tx.has(*n))
                    .count()
            })
            .sum();
        delivered as f64 / (m * self.txs.len()) as f64
    }

    /// The active graph among up nodes.
    pub(crate) fn graph(&self) -> GraphQuality {
        let live: Vec<bool> = self.nodes.iter().map(|n| n.core.is_some()).collect();
        let edges: Vec<Vec<u32>> = self
            .nodes
            .iter()
            .map(|node| match &node.core {
                None => Vec::new(),
                Some(core) => core
                    .membership()
                    .active_peers()
                    .filter_map(|p| index_of_id(&p.node.peer_id))
                    .filter(|t| live[*t])
                    .map(|t| t as u32)
                    .collect(),
            })
            .collect();
        graph::quality(&live, &edges)
    }

    /// A coverage sample; ends the run once there is nothing left to see.
    pub(crate) fn sample(&mut self) {
        let counted = self.live_honest();
        let coverage = self.coverage(&counted);
        if !self.txs.is_empty() {
            self.rec.timeline.push((self.now.as_millis(), coverage));
        }
        let awaiting_graph = self.rec.heals.iter().any(|h| h.graph_reconnected.is_none());
        if awaiting_graph && self.graph().weak_components == 1 {
            let now = self.now;
            for h in self.rec.heals.iter_mut() {
                h.graph_reconnected.get_or_insert(now);
            }
        }
        let finished = self.submissions_done == self.scenario.transactions.count
            && self.faults_due == 0
            && coverage >= 1.0
            && self.rec.heals.iter().all(|h| h.graph_reconnected.is_some());
        if finished && self.scenario.stop_when_complete {
            self.done = true;
            return;
        }
        let next = self.now.saturating_add(self.scenario.sample_every.0);
        self.queue.push(next, Ev::Sample);
    }

    pub(crate) fn report(&self) -> Report {
        let counted = self.live_honest();
        let m = counted.iter().filter(|c| **c).count();
        let (time_ms, hops) = metrics::spreads(&self.txs, &counted);
        let complete_at = |tx: &metrics::TxRecord| {
            let all = (0..counted.len()).all(|n| !counted[n] || tx.has(n));
            all.then(|| {
                let last = (0..counted.len())
                    .filter(|n| counted[*n])
                    .map(|n| u64::from(tx.first[n]))
                    .max()
                    .unwrap_or(0);
                tx.submitted_at.as_millis() + last
            })
        };
        let complete = self
            .txs
            .iter()
            .filter(|tx| complete_at(tx).is_some())
            .count();
        let submitted = self.txs.len();
        let nodes = self.nodes.len();
        let rmr = if submitted == 0 {
            0.0
        } else {
            self.rec.bodies_received as f64 / (submitted * (nodes - 1)) as f64 - 1.0
        };
        let (announced, duplicates) = self.announcements_per_delivery(submitted);
        let end_s = (self.now.as_millis() as f64 / 1000.0).max(0.001);
        let membership_bytes = self.rec.warmup.membership + self.rec.measured.membership;
        let partitions = self.heal_reports(&complete_at);
        Report {
            scenario: self.scenario.name.clone(),
            seed: self.seed,
            nodes,
            end_ms: self.now.as_millis(),
            live_honest_nodes: m,
            transactions: TxSummary {
                submitted,
                complete,
                lost: submitted - complete,
            },
            coverage: self.coverage(&counted),
            time_ms,
            hops,
            rmr,
            rmr_announcements: duplicates,
            announcements_per_delivery: announced,
            bytes_per_node_per_tx: metrics::per_node_tx(&self.rec.measured, nodes, submitted),
            bytes_by_role: metrics::by_role(
                &self.rec.measured,
                &self.rec.measured_by_relays,
                (self.nodes.iter().filter(|n| n.relay).count(), nodes),
                submitted,
            ),
            membership_bytes_per_node_per_s: membership_bytes as f64 / nodes as f64 / end_s,
            graph: self.graph(),
            states: self.states(),
            partitions,
            counters: self.counters(),
            timeline: self.rec.timeline.clone(),
            events_processed: self.queue.pushed() - self.queue.len() as u64,
            attack: self.attack_report(),
        }
    }

    /// Per heal: when it happened, how long until every transaction submitted before it was on
    /// every counted node, and until the graph was whole again.
    fn heal_reports(
        &self,
        complete_at: &dyn Fn(&metrics::TxRecord) -> Option<u64>,
    ) -> Vec<HealReport> {
        self.rec
            .heals
            .iter()
            .map(|h| {
                let before: Vec<_> = self
                    .txs
                    .iter()
                    .filter(|tx| tx.submitted_at < h.at)
                    .collect();
                let converged: Option<Vec<u64>> = before.iter().map(|tx| complete_at(tx)).collect();
                HealReport {
                    healed_at_ms: h.at.as_millis(),
                    tx_converge_ms: converged.map(|c| {
                        c.into_iter()
                            .map(|at| at.saturating_sub(h.at.as_millis()))
                            .max()
                            .unwrap_or(0)
                    }),
                    graph_reconnect_ms: h
                        .graph_reconnected
                        .map(|at| at.since(h.at).as_millis() as u64),
                }
            })
            .collect()
    }

    /// Announced entries the up nodes received, and those of hashes they already knew, per
    /// delivery (`submitted` x (nodes - 1)).
    fn announcements_per_delivery(&self, submitted: usize) -> (f64, f64) {
        let cores = self.nodes.iter().filter_map(|n| n.core.as_ref());
        let (all, dup) = cores.fold((0, 0), |(all, dup), core| {
            let g = core.gossip().stats();
            (
                all + g.announcements_received,
                dup + g.duplicate_announcements,
            )
        });
        let deliveries = submitted * self.nodes.len().saturating_sub(1);
        if deliveries == 0 {
            return (0.0, 0.0);
        }
        (
            all as f64 / deliveries as f64,
            dup as f64 / deliveries as f64,
        )
    }

    fn states(&self) -> NodeStates {
        let mut s = NodeStates {
            online: 0,
            degraded: 0,
            offline: 0,
        };
        for core in self.nodes.iter().filter_map(|n| n.core.as_ref()) {
            match core.state() {
                NodeState::Online => s.online += 1,
                NodeState::Degraded => s.degraded += 1,
                NodeState::Offline => s.offline += 1,
            }
        }
        s
    }

    /// The run's own counters, the network's, and the cores' (summed over up nodes).
    fn counters(&self) -> BTreeMap<String, u64> {
        let mut c: BTreeMap<String, u64> = self
            .rec
            .counters
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        c.insert("messages_lost".into(), self.net.lost);
        c.insert("messages_blocked_by_partition".into(), self.net.blocked);
        c.insert("bodies_received".into(), self.rec.bodies_received);
        let mut add = |name: &str, v: u64| *c.entry(format!("core_{name}")).or_default() += v;
        for core in self.nodes.iter().filter_map(|n| n.core.as_ref()) {
            let g = core.gossip().stats();
            add("fetch_timeouts", g.fetch_timeouts);
            add("fetch_failures", g.fetch_failures);
            add("duplicate_bodies", g.duplicate_bodies);
            add("duplicate_announcements", g.duplicate_announcements);
            add("gossip_outputs_dropped", g.outputs_dropped);
            add("dropped_pending_full", g.dropped_pending_full);
            add("dropped_announcers_full", g.dropped_announcers_full);
            add("fetches_deferred", g.fetches_deferred);
            add("digests_sent", g.digests_sent);
            add("sweeps_sent", g.sweeps_sent);
            add("pushes_sent", g.pushes_sent);
            add("duplicate_pushes", g.duplicate_pushes);
            add("prunes_sent", g.prunes_sent);
            add("grafts_sent", g.grafts_sent);
            add("pushes_awaited", g.pushes_awaited);
            add("pushes_missed", g.pushes_missed);
            add("lazy_forgotten", g.lazy_forgotten);
            add("prunes_withheld", g.prunes_withheld);
            add("flood_duplicates", g.flood_duplicates);
            add("relays_replaced", g.relays_replaced);
            relay_counters(core, &mut add);
            let m = core.membership().stats();
            add("sends_refused", m.sends_refused);
            add("membership_outputs_dropped", m.outputs_dropped);
            add("requests_expired", m.requests_expired);
            add("refused_list_full", m.refused_list_full);
            add("pings_busy", m.pings_busy);
            add("relay_swaps", m.relay_swaps);
            add("known_peers", core.membership().known_count() as u64);
        }
        c
    }
}

/// How relays and leaves stand in `core` (zeros without relays): their eager links, whether
/// each leaf holds a relay and pushes from one, and relays in the active sets.
fn relay_counters(core: &Node, add: &mut impl FnMut(&str, u64)) {
    let (eager, eager_relays) = core.gossip().eager_peers();
    let relay = core.gossip().relays();
    let (eager, eager_relays) = (eager as u64, eager_relays as u64);
    add("eager_links", eager);
    add("eager_links_of_relays", if relay { eager } else { 0 });
    let names = ["eager_relay_links_of_relays", "eager_relay_links_of_leaves"];
    by_role(add, relay, names, eager_relays);
    add("relays", u64::from(relay));
    let leaf = core.gossip().is_leaf();
    let no_relay_peer = leaf && core.gossip().relay_peers() == 0;
    add("leaves_without_relay_peer", u64::from(no_relay_peer));
    add(
        "leaves_without_eager_relay",
        u64::from(leaf && eager_relays == 0),
    );
    let membership = core.membership();
    let active_relays = membership
        .active_peers()
        .filter(|p| membership.is_relay(&p.node.peer_id))
        .count() as u64;
    let names = ["active_relays_of_relays", "active_relays_of_leaves"];
    by_role(add, relay, names, active_relays);
}

/// `value` under the first of `names` for a relay, the second for a leaf (0 under the other).
fn by_role(add: &mut impl FnMut(&str, u64), relay: bool, names: [&str; 2], value: u64) {
    add(names[0], if relay { value } else { 0 });
    add(names[1], if relay { 0 } else { value });
}
