//! Tuning of the gossip machine, with where each number came from.

use std::time::Duration;

/// How many active peers a newly accepted transaction is announced to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FanoutMode {
    /// This many (or all active peers, if fewer).
    Fixed(usize),
    /// `ceil(sqrt(active peers))`: grows with the view, as in Sorcha's adaptive fanout.
    Sqrt,
    /// Every active peer (Bitcoin's `inv` to all peers): announcements are hashes, the pull
    /// fetches each body once, so flooding them costs little and reaches every connected node.
    All,
}

impl FanoutMode {
    /// Peers to announce to when `active` peers are available.
    pub fn count(self, active: usize) -> usize {
        match self {
            FanoutMode::Fixed(n) => n.min(active),
            FanoutMode::Sqrt => (active as f64).sqrt().ceil() as usize,
            FanoutMode::All => active,
        }
    }
}

/// Knobs of [`Gossip`](super::Gossip). The daemon fills them from the `distribution` section
/// (Sorcha's `TransactionDistribution`); the simulator uses them to compare strategies.
#[derive(Debug, Clone, PartialEq)]
pub struct GossipConfig {
    /// Announcement targets per accepted transaction.
    pub fanout: FanoutMode,
    /// A transaction received with this many hops is not announced further (`gossip_rounds`).
    pub max_hops: u32,
    /// Past `max_hops`, announce to `flood_fanout` peers instead of stopping.
    pub flood_past_max_hops: bool,
    /// Announcement targets per accepted transaction past `max_hops`.
    pub flood_fanout: FanoutMode,
    /// Announcements go out at most once per this interval: at once after a quiet interval,
    /// else batched until it has passed since the last flush.
    pub flush_interval: Duration,
    /// Entries per `Announce`; a batch this full is sent at once.
    pub max_batch: usize,
    /// Largest body accepted from a peer, submitted, or announced, in bytes.
    pub max_transaction_size: u64,
    /// A fetch not answered in this time (plus `fetch_timeout_per_mib`) moves to the next
    /// announcer.
    pub fetch_timeout: Duration,
    /// Extra fetch time per MiB of announced size, for streamed bodies.
    pub fetch_timeout_per_mib: Duration,
    /// Fetches outstanding at once, over all peers.
    pub max_in_flight: usize,
    /// Fetches outstanding at once from one peer.
    pub max_in_flight_per_peer: usize,
    /// Announced bytes of the fetches outstanding at once; a fetch that would pass it waits
    /// (unless nothing is in flight, so one body larger than this still comes).
    pub max_in_flight_bytes: u64,
    /// Announced hashes waiting for (or being fetched); more are refused and counted.
    pub max_pending: usize,
    /// Announcers remembered per pending hash, tried in order of arrival.
    pub max_announcers: usize,
    /// Bodies up to this size are pushed at once to the eager peers (the tree of
    /// `tree.rs`), the rest of the fanout getting the batched announcement; larger bodies
    /// are announced and pulled. 0 disables eager push.
    pub eager_push_max_size: usize,
    /// Eager peers pushed to per transaction at most (picked at random when more are eager).
    pub eager_push_peers: usize,
    /// How long an announced transaction small enough to be pushed waits for the push
    /// before it is pulled from the announcer, which is then grafted into the tree.
    pub graft_timeout: Duration,
    /// A duplicate push does not prune its sender while we push to this many gossip peers
    /// or fewer: the eager links keep a floor, so the tree stays shallow and a lost push
    /// has another eager path (`tree.rs`).
    pub eager_min_peers: usize,
    /// Lazy peers a pushed transaction is announced to besides, at most (the announcement
    /// goes to `fanout` minus the peers pushed to, and to no more than this).
    pub pushed_announce_peers: usize,
    /// A duplicate push arriving this long or more after the first copy is pruned even
    /// under `eager_min_peers`, down to `slow_push_floor` eager peers: the floor keeps the
    /// links whose copies come close behind the first, likely the fast ones.
    pub slow_push_lag: Duration,
    /// The eager peers a slow duplicate push never prunes below.
    pub slow_push_floor: usize,
    /// Announcements of pushed transactions to lazy peers (there for repair, not speed)
    /// wait up to this long, batched, riding along with any other announcement to the same
    /// peer before then. Zero: they go with the others every `flush_interval`.
    pub lazy_flush_interval: Duration,
    /// A small body is pushed to every gossip peer, eager or lazy, while its hop count is
    /// at most this (the origin's push is hop 1): few nodes hold it that early, so few of
    /// these pushes are duplicates, and they seed the tree in many places at once. Their
    /// duplicates, and duplicates of a body that first came this way, prune nothing (they
    /// say nothing about the tree's links). 0: off.
    pub flood_push_hops: u32,
    /// Percent of nodes (by a hash of their id, so every node agrees without a message)
    /// that are relays: the floors above hold among relays only, a leaf keeps
    /// `leaf_eager_peers` eager relays and prunes every other duplicate push, relays
    /// announce pushed transactions to every lazy leaf and leaves only their own
    /// (`relay.rs`); membership follows the same setting (`membership/roles.rs`). 0: off,
    /// no node is a relay.
    pub relay_percent: u32,
    /// Announcements of pushed transactions to lazy peers go to one that has some waiting
    /// already (`lazy_flush_interval`), when one does: they share a message.
    pub lazy_same_peer: bool,
    /// Eager relays a leaf keeps when relays are on.
    pub leaf_eager_peers: usize,
    /// Accepted transactions per second above which the node relays no body by push and
    /// waits for no push (relayed bodies announced and pulled until the rate falls; its own
    /// submissions are still pushed; `pace.rs`). 0: no limit.
    pub eager_push_max_rate: u32,
    /// Our own submissions are pushed besides to up to this many lazy gossip peers: a
    /// shortcut past the tree's first hops, whose duplicates prune nothing (`tree.rs`). The
    /// receivers' rules assume the network's nodes share the setting. 0: no shortcut.
    pub origin_push_peers: usize,
    /// How long a known hash is remembered (dedup window; Sorcha's `transaction_cache_ttl`).
    pub transaction_cache_ttl: Duration,
    /// Known hashes kept at most; the oldest is forgotten (counted) when full.
    pub max_known: usize,
    /// Bits of one bloom generation (two are kept).
    pub bloom_bits: usize,
    /// Hash functions of the bloom.
    pub bloom_hashes: u32,
    /// A new bloom generation starts this often; still-known hashes are carried over.
    pub bloom_reset_interval: Duration,
    /// How often a digest goes to one random active peer; `None` disables anti-entropy.
    pub anti_entropy_interval: Option<Duration>,
    /// Hashes first seen within this window go into a sweep: a digest walking everything a
    /// node could still be missing, sent to each new active peer and every
    /// `anti_entropy_sweep_interval`.
    pub anti_entropy_window: Duration,
    /// The periodic digests list only the hashes first seen this recently: losses are
    /// repaired within seconds, and a hash is not listed again every interval for the whole
    /// window.
    pub anti_entropy_recent: Duration,
    /// How often a node walks its whole window in sweeps besides those to new peers (the
    /// backstop for a gap no link change brought to light).
    pub anti_entropy_sweep_interval: Duration,
    /// Hashes first seen less than this long ago stay out of digests and their replies: gossip
    /// is most likely still delivering them.
    pub anti_entropy_settle: Duration,
}

impl Default for GossipConfig {
    /// Each value, and where it came from, is in the module of its concern below.
    fn default() -> Self {
        Self {
            fanout: announce::FANOUT,
            max_hops: announce::MAX_HOPS,
            flood_past_max_hops: announce::FLOOD_PAST_MAX_HOPS,
            flood_fanout: announce::FLOOD_FANOUT,
            flush_interval: announce::FLUSH_INTERVAL,
            max_batch: announce::MAX_BATCH,
            max_transaction_size: fetch::MAX_TRANSACTION_SIZE,
            fetch_timeout: fetch::TIMEOUT,
            fetch_timeout_per_mib: fetch::TIMEOUT_PER_MIB,
            max_in_flight: fetch::MAX_IN_FLIGHT,
            max_in_flight_per_peer: fetch::MAX_IN_FLIGHT_PER_PEER,
            max_in_flight_bytes: fetch::MAX_IN_FLIGHT_BYTES,
            max_pending: fetch::MAX_PENDING,
            max_announcers: fetch::MAX_ANNOUNCERS,
            eager_push_max_size: fetch::EAGER_PUSH_MAX_SIZE,
            eager_push_peers: fetch::EAGER_PUSH_PEERS,
            graft_timeout: fetch::GRAFT_TIMEOUT,
            eager_min_peers: fetch::EAGER_MIN_PEERS,
            pushed_announce_peers: fetch::PUSHED_ANNOUNCE_PEERS,
            slow_push_lag: fetch::SLOW_PUSH_LAG,
            slow_push_floor: fetch::SLOW_PUSH_FLOOR,
            lazy_flush_interval: fetch::LAZY_FLUSH_INTERVAL,
            flood_push_hops: fetch::FLOOD_PUSH_HOPS,
            relay_percent: fetch::RELAY_PERCENT,
            lazy_same_peer: fetch::LAZY_SAME_PEER,
            leaf_eager_peers: fetch::LEAF_EAGER_PEERS,
            eager_push_max_rate: fetch::EAGER_PUSH_MAX_RATE,
            origin_push_peers: 0,
            transaction_cache_ttl: known::TRANSACTION_CACHE_TTL,
            max_known: known::MAX_KNOWN,
            bloom_bits: known::BLOOM_BITS,
            bloom_hashes: known::BLOOM_HASHES,
            bloom_reset_interval: known::BLOOM_RESET_INTERVAL,
            anti_entropy_interval: anti_entropy::INTERVAL,
            anti_entropy_window: anti_entropy::WINDOW,
            anti_entropy_recent: anti_entropy::RECENT,
            anti_entropy_sweep_interval: anti_entropy::SWEEP_INTERVAL,
            anti_entropy_settle: anti_entropy::SETTLE,
        }
    }
}

/// Defaults for announcing: to how many peers, how far, how often.
mod announce {
    use std::time::Duration;

    use super::FanoutMode;

    // Sorcha's design default (TransactionDistribution.FanoutFactor) is 3, for the first
    // max_hops hops. In a small network most nodes are reached within those hops, and a
    // node with ~16 gossip peers is missed by all of them at 3 with a chance of ~(13/16)^16
    // = 4 %: peer-lab propagation (20 nodes, 200 tx/s, load 12-25, 2 runs each) had 100 %
    // p95 at 2.5-3.6 s (anti-entropy) with 3 and 0.23-0.35 s with 6, for +38 B/node/tx of
    // announcements (425 -> 461). In a large network most nodes are past max_hops and
    // announce to flood_fanout anyway: sorcha-peer-sim scale.toml n1000, seeds 1-3, t99 p95
    // 3.06 / 3.01 / 3.09 s at 3 against 2.77 / 2.63 / 2.69 s at 6, all bytes +1 %.
    pub const FANOUT: FanoutMode = FanoutMode::Fixed(6);
    // Sorcha design default (TransactionDistribution.GossipRounds).
    pub const MAX_HOPS: u32 = 3;
    // Measured in net_tests (module doc): stopping at the hop limit leaves ~45% of a
    // 50-node network to anti-entropy; announcing onwards to all reaches everyone.
    pub const FLOOD_PAST_MAX_HOPS: bool = true;
    // sorcha-peer-sim, 10,000 nodes (scale.toml n10000, seed 1): flooding every gossip
    // peer (~16) past the hop limit cost 880 B/node/tx (488 of announcements), t99 p95
    // 7.3 s; 6 peers 698 B, 8.0 s; 4 peers 606 B, 9.4 s; 3 peers 569 B, 10.7 s; all at
    // 100% coverage. peer-lab propagation (20 nodes): 3 peers put 5% of deliveries on
    // anti-entropy (90% p95 44 -> 1,067 ms); 6 peers keep 90% p95 at 41 ms (100% p95
    // 48 -> 1,220 ms) for 21% fewer bytes at 10,000 nodes. Re-measured with honest
    // envelopes, recent digests and a 1 s fetch timeout (seed 1): 6: 682 B, t99 p95
    // 4.3 s; 5: 637 B, 4.8 s; 4: 596 B (600, 616 on seeds 2, 3), 5.8 s. Kept at 6;
    // with announcements and pulls by 16-byte id it costs 561 / 574 / 572 B (seeds
    // 1-3), under the 600 B goal without giving up the last percent.
    pub const FLOOD_FANOUT: FanoutMode = FanoutMode::Fixed(6);
    // Bitcoin trickles inv every ~100 ms on average; 10 ms adds less than one LAN RTT
    // per hop and still merges bursts of submissions. Only a burst waits for it (the first
    // announcement after a quiet interval goes at once): sorcha-peer-sim scale.toml n1000
    // (10 tx/s), seeds 1-3, t99 p95 3.30 / 3.01 / 3.12 s when every announcement waited,
    // 3.06 / 3.01 / 3.09 s since, all bytes +2 % (fewer announcements share a message).
    pub const FLUSH_INTERVAL: Duration = Duration::from_millis(10);
    // Bitcoin caps INVENTORY_BROADCAST_MAX at 1000 per trickle; 256 entries are ~25 KB
    // with register ids, under one 64 KiB chunk.
    pub const MAX_BATCH: usize = 256;
}

/// Defaults for pulling bodies: sizes, timeouts, what may be outstanding, eager push.
mod fetch {
    use std::time::Duration;

    // Sorcha design default (MaxTransactionSize 10 MiB).
    pub const MAX_TRANSACTION_SIZE: u64 = 10 * 1024 * 1024;
    // A pull on a healthy link answers within a round trip; one lost on the way (1%
    // loss) held its node back for the whole timeout. sorcha-peer-sim, 1,000 nodes
    // (faults.toml baseline-1000, seed 1): t99 p95 7.3 s at 5 s, 4.3 s at 2 s, 3.5 s at
    // 1 s, with no more bodies fetched twice (a late answer is still taken while the
    // hash is pending). Round trips of 20-400 ms here, under 600 ms between continents.
    pub const TIMEOUT: Duration = Duration::from_secs(1);
    // Streaming 1 MiB at a pessimistic 1 MiB/s.
    pub const TIMEOUT_PER_MIB: Duration = Duration::from_secs(1);
    // Bitcoin keeps up to 100 getdata in flight per peer (MAX_PEER_TX_REQUEST_IN_FLIGHT).
    // Pulls from a stream peer go in batches (GOSSIP_FETCH), and a batch is as large as
    // the per-peer window: 32 per peer, 256 in all drained `peer-lab run queue` at
    // 13,100-13,250 tx/s against 11,470-12,590 with 8 and 64 (3 runs each); bodies in
    // transit are bounded in bytes by `max_in_flight_bytes` besides.
    pub const MAX_IN_FLIGHT: usize = 256;
    pub const MAX_IN_FLIGHT_PER_PEER: usize = 32;
    // Eight largest transactions, or thousands of typical ones.
    pub const MAX_IN_FLIGHT_BYTES: u64 = 8 * 10 * 1024 * 1024;
    // Bitcoin's MAX_PEER_TX_ANNOUNCEMENTS is 5000 per peer; 10,000 hashes in all is
    // ~2 MB of metadata.
    pub const MAX_PENDING: usize = 10_000;
    // Bitcoin remembers every announcer; 4 survive three dead or lying peers.
    pub const MAX_ANNOUNCERS: usize = 4;
    // Pushing to one random fanout target (net_tests, 50 nodes) saved ~120 ms of mean
    // coverage time for ~0.8 duplicate bodies per node per tx (+63% bytes), so it was off.
    // On the eager tree (tree.rs), sorcha-peer-sim scale.toml n1000, seed 1: time to 99%
    // p95 3.3 -> 1.7 s, B/node/tx 538 -> 849 (RMR 1.27); n10000: crates/sim/README.md.
    // 16 KiB: a typical transaction (~250 B to a few KiB) goes by push; a push is one
    // message on the peer's stream, and its duplicates cost whole bodies, so large bodies
    // keep announce-and-pull.
    // Off by default: the sim's attack test no longer bans every liar (they are rarely
    // pulled from), and bytes rose ~60%; 16 * 1024 is what was measured.
    pub const EAGER_PUSH_MAX_SIZE: usize = 0;
    // Every eager peer: the tree decides who they are (a node has ~16 gossip peers, all
    // eager at first); the bound keeps one transaction's pushes finite.
    pub const EAGER_PUSH_PEERS: usize = 16;
    // iroh-gossip's plumtree waits 80 ms for a message announced by IHAVE before it
    // grafts.
    pub const GRAFT_TIMEOUT: Duration = Duration::from_millis(80);
    // sorcha-peer-sim (crates/sim/README.md, session 9), scale network with push on,
    // 1,000 nodes, seed 1, t99 p95 / B/node/tx: no floor 1.85 s / 866; 2: 1.55 s / 881;
    // 3: 1.24 s / 886; 4: 0.99 s / 932; 5: 0.89 s / 1,034; 6: 0.81 s / 1,154. At 10,000
    // nodes 4 gives 1.41 s / 956 (no floor: 2.39 s / 911), under the 1.5 s goal; 4 with a
    // 200 ms graft timeout 1.64 s / 870.
    pub const EAGER_MIN_PEERS: usize = 4;
    // The next four are off (the behaviour before them): sorcha-peer-sim, tree.toml
    // (crates/sim/README.md, session 11), push on, 1,000 nodes, seed 1, t99 p95 / gossip
    // B/node/tx with framing: floor 4 793 ms / 1,291; eager_min_peers 16,
    // pushed_announce_peers 1, slow_push_lag 100 ms, slow_push_floor 3: 825 ms / 872; at
    // 10,000 nodes (seeds 1-3) 1.09-1.29 s / 919-934 (all bytes 941-962). Not defaults: the
    // lag is absolute, fitted to the simulator's 20-200 ms links; on a LAN no duplicate is
    // slow, so with no floor for quick ones nothing would be pruned.
    pub const PUSHED_ANNOUNCE_PEERS: usize = usize::MAX;
    pub const SLOW_PUSH_LAG: Duration = Duration::MAX;
    pub const SLOW_PUSH_FLOOR: usize = 2;
    // Batched lazy announcements with the above: 200 ms saved ~55 B (1,000 nodes) for
    // +70 ms; 500 ms ~70 B for +160 ms (10,000 nodes: t99 p95 up to 1.51 s).
    pub const LAZY_FLUSH_INTERVAL: Duration = Duration::ZERO;
    // The next four are off (session 12 of crates/sim/README.md). With the session 11
    // knobs above (fast3-a1), sorcha-peer-sim tree.toml, 10,000 nodes, seeds 1-3, t99 p95 /
    // gossip B/node/tx with framing: fast3-a1 1.15-1.26 s / 916-941; with lazy
    // announcements batched 200 ms to one peer (LAZY_SAME_PEER) 1.25-1.39 s / 821-841; plus
    // the flood to hop 2, 1.20-1.36 s / 833-841, but at 100 nodes (attack.toml) it leaves
    // nodes with no eager link, waiting for anti-entropy (t100 max 2-5 s); plus 80 % relays
    // 1.33-1.45 s / 776-804, with the flood's tail. Session 13: with membership making
    // relays meet and each leaf's second relay announcing to it (relays.toml n10000-r3,
    // 3 % relays, floors of 8), 1.17-1.22 s / 571-573; relays stay off here all the same:
    // a relay sends ~16 KB per transaction, so which nodes are relays must be an
    // operator's choice, not the id hash that stands in for it in the simulator.
    pub const LAZY_SAME_PEER: bool = false;
    pub const FLOOD_PUSH_HOPS: u32 = 0;
    pub const RELAY_PERCENT: u32 = 0;
    // A leaf with two eager relays gets each body about twice: 1,000 nodes, 30 % relays,
    // gossip 718 B with one, 982 B with two.
    pub const LEAF_EAGER_PEERS: usize = 1;
    // No limit: the simulator's figures are the tree's alone. The daemon sets its own
    // (`Config::gossip`), measured in the lab.
    pub const EAGER_PUSH_MAX_RATE: u32 = 0;
}

/// Defaults for remembering known hashes (the dedup window and its bloom).
mod known {
    use std::time::Duration;

    // Sorcha design default (TransactionCacheTtlSeconds = 3600).
    pub const TRANSACTION_CACHE_TTL: Duration = Duration::from_secs(3600);
    // An hour at ~25 tx/s sustained; ~150 bytes each, ~15 MB.
    pub const MAX_KNOWN: usize = 100_000;
    // 10 bits per entry of max_known and 7 hashes: ~1% false positives (Bloom 1970),
    // 122 KiB per generation.
    pub const BLOOM_BITS: usize = 1_000_000;
    pub const BLOOM_HASHES: u32 = 7;
    // Wild guess: a sixth of the TTL keeps rotation cheap (carry-over is O(known)).
    pub const BLOOM_RESET_INTERVAL: Duration = Duration::from_secs(10 * 60);
}

/// Defaults for anti-entropy: digests, sweeps, and what they leave to gossip.
mod anti_entropy {
    use std::time::Duration;

    // sorcha-peer-sim, 1,000 nodes, 1 s fetch timeout, seed 1: at 2 s the recent digests
    // cost 172 B/node/tx at a steady 1 tx/s against 87 at 5 s (a hash is in 15 digests,
    // not 6), for a last node reached in 7.7 s instead of 15.8 s (burst of 100: 7.0 s
    // against 9.8 s); time to 99% (p95) is the same, 3.3-3.5 s. The lost pulls that
    // held nodes back are the fetch timeout's to fail over, not anti-entropy's.
    pub const INTERVAL: Option<Duration> = Some(Duration::from_secs(5));
    // Long enough to bridge a restart or a short partition; older history is the
    // register sync's job, not gossip's.
    pub const WINDOW: Duration = Duration::from_secs(10 * 60);
    // sorcha-peer-sim, 1,000 nodes at a steady 1 tx/s (steady.toml, seed 1): listing
    // the whole window in every digest cost 502 B/node/tx of digests, each hash going
    // into ~120 of them. Recent digests of 15 s: 70 B, but one transaction of 600 was
    // lost and one waited 217 s for a sweep; 30 s: 88 B, every node within 31.5 s;
    // 60 s: 110 B.
    pub const RECENT: Duration = Duration::from_secs(30);
    // The backstop only: gaps found by neither recent digests nor a new link's sweep.
    // Every 5 min a 600-hash window is listed about twice in its 10 minutes.
    pub const SWEEP_INTERVAL: Duration = Duration::from_secs(5 * 60);
    // peer-lab throughput (10 nodes, 2,000+ tx/s, digests every 500 ms): without it a
    // third of all deliveries were "repairs" of hashes announcements were about to
    // bring. 1 s fixed that but kept the last few nodes of `propagation` waiting (100%
    // p95 1.3 s); 300 ms: 0.56-0.63 s, and throughput still has no repair storm
    // (digest replies < 1 B/node/tx, none lost at 7,391 tx/s).
    pub const SETTLE: Duration = Duration::from_millis(300);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fanout_modes_count_targets() {
        assert_eq!(FanoutMode::Fixed(3).count(8), 3);
        assert_eq!(FanoutMode::Fixed(3).count(2), 2);
        assert_eq!(FanoutMode::Sqrt.count(8), 3);
        assert_eq!(FanoutMode::Sqrt.count(9), 3);
        assert_eq!(FanoutMode::Sqrt.count(10), 4);
        assert_eq!(FanoutMode::Sqrt.count(0), 0);
        assert_eq!(FanoutMode::All.count(8), 8);
    }
}
