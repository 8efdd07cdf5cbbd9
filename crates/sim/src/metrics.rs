//! What a run measures: per-transaction delivery records, traffic by kind, counters, the
//! coverage timeline, and the [`Report`] computed from them at the end.
//!
//! Definitions (also in the README of the crate's scenarios):
//! - *coverage*: delivered (live honest node, transaction) pairs over all such pairs, where a
//!   node is live if it is up at the end and honest if it is neither a dropper nor a liar;
//! - *time / hops to X%*: per transaction, when (how many pull hops from the origin) the
//!   ceil(X% of live honest nodes)-th of them received it; then p50, p95 and max over the
//!   transactions that got that far (`unreached` counts the others);
//! - *RMR*: bodies received (fetch answers with a body, pushes) / (transactions x (nodes - 1))
//!   - 1: 0 means every node received each body exactly once;
//! - *RMR of announcements*: announced entries of already known hashes / (transactions x
//!   (nodes - 1)): the duplicate announcements each delivery cost;
//! - *bytes per node per transaction*: bytes sent from the first submission to the end, by
//!   kind, over nodes x transactions (sizes: `wire.rs`); `all` adds the framing estimate
//!   (HTTP/2 frames and headers, TCP/IP headers: `wire::framing_len`) to the messages.

use std::collections::BTreeMap;

use serde::Serialize;
use sorcha_peer_core::model::{Timestamp, TxHash};

use crate::graph::GraphQuality;
use crate::wire::{Carriage, framing_len};

/// `TxRecord::first` of a node that never received the transaction.
pub const NEVER: u32 = u32::MAX;

/// One submitted transaction and who received it when.
#[derive(Debug)]
pub struct TxRecord {
    pub hash: TxHash,
    pub body: Vec<u8>,
    pub submitted_at: Timestamp,
    pub origin: u32,
    /// Per node: ms from submission to its first `Store` (kept across restarts: the store is
    /// on disk), or [`NEVER`].
    pub first: Vec<u32>,
    /// Per node: pull hops from the origin (the origin is 0).
    pub hops: Vec<u16>,
}

impl TxRecord {
    pub fn has(&self, node: usize) -> bool {
        self.first[node] != NEVER
    }
}

/// Bytes sent, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Traffic {
    /// `Announce` messages.
    pub announcements: u64,
    /// `Digest` and `DigestReply` messages.
    pub anti_entropy: u64,
    /// Fetch calls (`TransactionRequest`).
    pub fetch_requests: u64,
    /// Fetch answers and pushes (the bodies).
    pub bodies: u64,
    /// Membership requests and answers (heartbeats included).
    pub membership: u64,
    /// The eager tree's `Prune` and `Graft` messages.
    pub tree: u64,
    /// Of `membership`, heartbeats and their answers.
    pub heartbeats: u64,
    /// What the transport adds to all of the above (estimated: [`framing_len`]).
    pub framing: u64,
}

/// What a message is, for [`Traffic::add`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Announcements,
    AntiEntropy,
    FetchRequests,
    Bodies,
    Membership,
    Heartbeats,
    Tree,
}

impl Traffic {
    /// `self` less `part` (a part of it), kind by kind.
    pub fn minus(&self, part: &Traffic) -> Traffic {
        Traffic {
            announcements: self.announcements - part.announcements,
            anti_entropy: self.anti_entropy - part.anti_entropy,
            fetch_requests: self.fetch_requests - part.fetch_requests,
            bodies: self.bodies - part.bodies,
            membership: self.membership - part.membership,
            tree: self.tree - part.tree,
            heartbeats: self.heartbeats - part.heartbeats,
            framing: self.framing - part.framing,
        }
    }

    /// The messages' bytes (protobuf and gRPC prefix), framing left out.
    pub fn total(&self) -> u64 {
        self.announcements
            + self.anti_entropy
            + self.fetch_requests
            + self.bodies
            + self.membership
            + self.tree
    }

    /// A `bytes`-byte message of `kind` sent as `carriage` says, and its framing.
    pub fn add(&mut self, kind: Kind, bytes: usize, carriage: Carriage) {
        let field = match kind {
            Kind::Announcements => &mut self.announcements,
            Kind::AntiEntropy => &mut self.anti_entropy,
            Kind::FetchRequests => &mut self.fetch_requests,
            Kind::Bodies => &mut self.bodies,
            Kind::Membership => &mut self.membership,
            Kind::Tree => &mut self.tree,
            Kind::Heartbeats => {
                self.heartbeats += bytes as u64;
                &mut self.membership
            }
        };
        *field += bytes as u64;
        self.framing += framing_len(bytes, carriage) as u64;
    }
}

/// A partition heal and when the active graph was whole again.
#[derive(Debug, Clone)]
pub struct Heal {
    pub at: Timestamp,
    pub graph_reconnected: Option<Timestamp>,
}

/// Bans seen during the run: (ms, banning node, banned subject, the attacker it was, if any).
#[derive(Debug, Default)]
pub struct BanLog {
    pub bans: Vec<(u64, usize, String, Option<usize>)>,
    /// Identities made by eclipsers, to tell whose a banned fake id was.
    pub(crate) fakes: BTreeMap<sorcha_peer_core::model::PeerId, usize>,
    pub(crate) next_fake: u64,
}

/// What the attack came to (the `attack` section of a report).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttackReport {
    pub attackers: usize,
    /// Attackers (their node, or an identity or address of theirs) banned by at least one
    /// honest node.
    pub attackers_banned: usize,
    /// Time from the attack's start to each banned attacker's first ban: p50 and max.
    pub first_ban_ms_p50: Option<u64>,
    pub first_ban_ms_max: Option<u64>,
    /// Honest nodes that banned at least one attacker.
    pub honest_banning: usize,
    /// Bans of honest nodes by honest nodes (mistakes).
    pub honest_banned: usize,
    /// Bans made in all (ids and addresses).
    pub bans: usize,
    /// Dials honest nodes made to the fake addresses, per minute of attack.
    pub fake_dials_per_minute: f64,
}

/// Counters and samples kept while the simulation runs.
#[derive(Debug, Default)]
pub struct Recorder {
    /// Traffic before the first submission.
    pub warmup: Traffic,
    /// Traffic from the first submission on.
    pub measured: Traffic,
    /// Of `measured`, what relays sent (`GossipConfig::relay_percent`; empty without relays).
    pub measured_by_relays: Traffic,
    pub measuring_since: Option<Timestamp>,
    pub bodies_received: u64,
    pub counters: BTreeMap<&'static str, u64>,
    /// (ms, coverage) samples.
    pub timeline: Vec<(u64, f64)>,
    pub heals: Vec<Heal>,
    /// Bans the nodes made (see `attack.rs`).
    pub ban_log: BanLog,
}

impl Recorder {
    pub fn count(&mut self, name: &'static str) {
        self.count_n(name, 1);
    }

    pub fn count_n(&mut self, name: &'static str, n: u64) {
        *self.counters.entry(name).or_default() += n;
    }

    /// A `bytes`-byte message of `kind` sent as `carriage` says, by a relay or not.
    pub fn traffic(&mut self, kind: Kind, bytes: usize, carriage: Carriage, relay: bool) {
        if self.measuring_since.is_none() {
            return self.warmup.add(kind, bytes, carriage);
        }
        self.measured.add(kind, bytes, carriage);
        if relay {
            self.measured_by_relays.add(kind, bytes, carriage);
        }
    }
}

/// A figure over transactions: p50, p95 and max of those that reached the target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Spread {
    pub p50: Option<u64>,
    pub p95: Option<u64>,
    pub max: Option<u64>,
    /// Transactions that never reached the target.
    pub unreached: usize,
}

/// A figure at 50, 90, 99 and 100% of the live honest nodes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Spreads {
    pub to_50: Spread,
    pub to_90: Spread,
    pub to_99: Spread,
    pub to_100: Spread,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TxSummary {
    pub submitted: usize,
    /// Reached every live honest node.
    pub complete: usize,
    /// Missed at least one live honest node at the end.
    pub lost: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PerNodeTx {
    pub announcements: f64,
    pub anti_entropy: f64,
    pub fetch_requests: f64,
    pub bodies: f64,
    pub membership: f64,
    /// `Prune` and `Graft` (the eager tree's upkeep).
    pub tree: f64,
    /// Of `membership`, heartbeats and their answers.
    pub heartbeats: f64,
    /// The messages: the six kinds above (protobuf and gRPC prefix).
    pub total: f64,
    /// The framing estimate: HTTP/2 frame and header bytes, TCP/IP headers.
    pub framing: f64,
    /// Every byte on the wire: `total` + `framing`.
    pub all: f64,
    /// The gossip share of `all`: announcements, anti-entropy, fetches, bodies, tree, with their
    /// framing pro rata.
    pub gossip_all: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealReport {
    pub healed_at_ms: u64,
    /// From the heal until every transaction submitted before it reached every live honest
    /// node; null if some never did.
    pub tx_converge_ms: Option<u64>,
    /// From the heal until the active graph was one piece again (one weak component, sampled;
    /// strong connectivity is no test: nodes nobody holds as active exist without faults).
    pub graph_reconnect_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeStates {
    pub online: usize,
    pub degraded: usize,
    pub offline: usize,
}

/// Everything a run reports (the JSON written by `--out` and `--json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub scenario: String,
    pub seed: u64,
    pub nodes: usize,
    /// Virtual time at which the run ended.
    pub end_ms: u64,
    pub live_honest_nodes: usize,
    pub transactions: TxSummary,
    pub coverage: f64,
    pub time_ms: Spreads,
    pub hops: Spreads,
    pub rmr: f64,
    /// Announced entries of hashes already known, per delivery (transactions x (nodes - 1)):
    /// the announcements' RMR.
    pub rmr_announcements: f64,
    /// Announced entries received in all, per delivery (1 + `rmr_announcements` when every
    /// delivery was announced once before it was known).
    pub announcements_per_delivery: f64,
    pub bytes_per_node_per_tx: PerNodeTx,
    /// With relays: what a relay and what a leaf sends, each per node of its kind per
    /// transaction (`bytes_per_node_per_tx` is their mean over all nodes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_by_role: Option<BytesByRole>,
    /// Membership bytes per node per second over the whole run (warm-up included).
    pub membership_bytes_per_node_per_s: f64,
    pub graph: GraphQuality,
    pub states: NodeStates,
    pub partitions: Vec<HealReport>,
    pub counters: BTreeMap<String, u64>,
    /// Coverage samples: [ms, fraction of delivered (live honest node, submitted tx) pairs].
    pub timeline: Vec<(u64, f64)>,
    pub events_processed: u64,
    /// What came of an attack, when the scenario has attackers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attack: Option<AttackReport>,
}

/// The k-th smallest (1-based) that X% of `m` needs.
fn needed(percent: usize, m: usize) -> usize {
    (percent * m).div_ceil(100).max(1)
}

/// p50, p95 (nearest rank) and max of `values`.
fn spread(mut values: Vec<u64>, unreached: usize) -> Spread {
    values.sort_unstable();
    let rank = |p: usize| (!values.is_empty()).then(|| values[needed(p, values.len()) - 1]);
    Spread {
        p50: rank(50),
        p95: rank(95),
        max: values.last().copied(),
        unreached,
    }
}

/// Time and hop spreads over `txs`, counting the nodes with `counted[n]`.
pub fn spreads(txs: &[TxRecord], counted: &[bool]) -> (Spreads, Spreads) {
    let m = counted.iter().filter(|c| **c).count();
    let percents = [50, 90, 99, 100];
    let mut times: [Vec<u64>; 4] = Default::default();
    let mut hops: [Vec<u64>; 4] = Default::default();
    for tx in txs {
        let mut t: Vec<u32> = Vec::with_capacity(m);
        let mut h: Vec<u16> = Vec::with_capacity(m);
        for n in (0..counted.len()).filter(|n| counted[*n] && tx.has(*n)) {
            t.push(tx.first[n]);
            h.push(tx.hops[n]);
        }
        t.sort_unstable();
        h.sort_unstable();
        for (i, p) in percents.iter().enumerate() {
            let k = needed(*p, m);
            if t.len() >= k {
                times[i].push(u64::from(t[k - 1]));
                hops[i].push(u64::from(h[k - 1]));
            }
        }
    }
    let build = |v: [Vec<u64>; 4]| {
        let [a, b, c, d] = v.map(|values| {
            let unreached = txs.len() - values.len();
            spread(values, unreached)
        });
        Spreads {
            to_50: a,
            to_90: b,
            to_99: c,
            to_100: d,
        }
    };
    (build(times), build(hops))
}

/// [`Report::bytes_by_role`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BytesByRole {
    pub relays: usize,
    pub per_relay: PerNodeTx,
    pub per_leaf: PerNodeTx,
}

/// What relays and leaves sent of `measured` (`by_relays` the relays' part), `relays` of
/// `nodes` being relays; `None` without relays.
pub fn by_role(
    measured: &Traffic,
    by_relays: &Traffic,
    (relays, nodes): (usize, usize),
    txs: usize,
) -> Option<BytesByRole> {
    if relays == 0 {
        return None;
    }
    Some(BytesByRole {
        relays,
        per_relay: per_node_tx(by_relays, relays, txs),
        per_leaf: per_node_tx(
            &measured.minus(by_relays),
            nodes.saturating_sub(relays),
            txs,
        ),
    })
}

/// Bytes per node per transaction.
pub fn per_node_tx(t: &Traffic, nodes: usize, txs: usize) -> PerNodeTx {
    let per = (nodes * txs.max(1)) as f64;
    PerNodeTx {
        announcements: t.announcements as f64 / per,
        anti_entropy: t.anti_entropy as f64 / per,
        fetch_requests: t.fetch_requests as f64 / per,
        bodies: t.bodies as f64 / per,
        membership: t.membership as f64 / per,
        tree: t.tree as f64 / per,
        heartbeats: t.heartbeats as f64 / per,
        total: t.total() as f64 / per,
        framing: t.framing as f64 / per,
        all: (t.total() + t.framing) as f64 / per,
        gossip_all: gossip_all(t) / per,
    }
}

/// The gossip kinds' bytes with their share of the framing.
fn gossip_all(t: &Traffic) -> f64 {
    let messages = t.total();
    if messages == 0 {
        return 0.0;
    }
    let gossip = (messages - t.membership) as f64;
    gossip + t.framing as f64 * gossip / messages as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tx(first: Vec<u32>, hops: Vec<u16>) -> TxRecord {
        TxRecord {
            hash: TxHash::of(b"x"),
            body: vec![],
            submitted_at: Timestamp::from_millis(0),
            origin: 0,
            first,
            hops,
        }
    }

    #[test]
    fn spreads_take_the_rank_each_target_needs() {
        // Ten nodes; the tenth never receives tx 0.
        let t0 = tx(
            vec![0, 10, 20, 30, 40, 50, 60, 70, 80, NEVER],
            vec![0, 1, 1, 2, 2, 2, 3, 3, 3, 0],
        );
        let t1 = tx(
            (0..10).map(|i| i * 100).collect(),
            vec![0, 1, 1, 1, 2, 2, 2, 2, 2, 9],
        );
        let counted = vec![true; 10];
        let (time, hops) = spreads(&[t0, t1], &counted);
        assert_eq!(time.to_50.max, Some(400), "5th of 10 for tx 1");
        assert_eq!(time.to_50.p50, Some(40));
        assert_eq!(time.to_90.max, Some(800));
        assert_eq!(time.to_100.unreached, 1);
        assert_eq!(time.to_100.max, Some(900));
        assert_eq!(hops.to_100.max, Some(9));
        // Not counting node 9, tx 0 is complete.
        let mut counted = counted;
        counted[9] = false;
        assert_eq!(
            spreads(&[tx(vec![0; 10], vec![0; 10])], &counted)
                .0
                .to_100
                .unreached,
            0
        );
    }

    #[test]
    fn all_bytes_are_the_messages_and_their_framing() {
        let mut t = Traffic::default();
        t.add(Kind::Announcements, 100, Carriage::Stream);
        t.add(Kind::Heartbeats, 60, Carriage::CallRequest);
        t.add(Kind::Membership, 40, Carriage::CallAnswer);
        assert_eq!((t.membership, t.heartbeats, t.total()), (100, 60, 200));
        let framing = 49 + (9 + 29 + 40) + (9 + 28 + 40);
        assert_eq!(t.framing, framing);
        let p = per_node_tx(&t, 2, 1);
        assert_eq!(p.all, (200 + framing) as f64 / 2.0);
        // Gossip is half the messages, so half the framing.
        assert_eq!(p.gossip_all, (100.0 + framing as f64 / 2.0) / 2.0);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let s = spread((1..=100).collect(), 0);
        assert_eq!((s.p50, s.p95, s.max), (Some(50), Some(95), Some(100)));
        assert_eq!(spread(vec![], 3).p50, None);
    }
}
