//! Tuning of the membership machine, with where each number came from.

use std::time::Duration;

/// Knobs of [`Membership`](super::Membership). The daemon fills them from the `PeerService`
/// section of the configuration; the simulator uses them to scale scenarios.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipConfig {
    /// How often a random few live peers are asked to exchange peer lists, so knowledge keeps
    /// spreading after bootstrap and churn cannot split the graph.
    pub refresh_interval: Duration,
    /// Bound of the known-peer list (active set plus passive list). Adverts arriving when it is
    /// full evict a peer already unreachable or are refused and counted.
    pub max_peers_in_list: usize,
    /// Healthy active peers needed to call the node Online; below it the node is Degraded and
    /// bootstraps again.
    pub min_healthy_peers: usize,
    /// How long the daemon waits for an answer before reporting `Failure::Timeout`. The core
    /// uses twice this to expire requests the daemon never answered.
    pub peer_timeout: Duration,
    /// Peer-list requests of a discovery round outstanding at once.
    pub max_concurrent_discoveries: usize,
    /// Peers one discovery session asks for their lists at most, its rounds together. A node
    /// among the first of a network starting together learns someone new in every round, so
    /// without a cap its session asked every node up at the time, each a new connection and
    /// TLS handshake (~20 per node for the first 30 of `peer-lab run scale-shipped`, a third
    /// of the start's handshakes). Eight lists of up to `peer_list_request_size` bring a
    /// joiner of a running network to its target; the growth asks (`growth.rs`, one list a
    /// second) carry an early node on.
    pub max_discovery_asks: usize,
    /// Consecutive failed contacts after which a peer is unreachable and leaves the active set.
    pub failure_threshold: u32,
    /// First bootstrap retry delay; it doubles per failed attempt.
    pub bootstrap_retry_base: Duration,
    /// Longest bootstrap retry delay.
    pub bootstrap_retry_cap: Duration,
    /// Peers we heartbeat and count as healthy (the active view).
    pub active_size: usize,
    /// Interval between heartbeats of each active peer (and passive-list checks).
    pub probe_interval: Duration,
    /// Passive peers pinged per probe tick so dead entries are found and live ones stay fresh.
    pub passive_checks_per_probe: usize,
    /// Live peers asked per refresh.
    pub exchange_fanout: usize,
    /// Adverts sent in, and asked for by, one exchange.
    pub exchange_size: u32,
    /// `max_peers` of the peer-list requests sent to bootstrap nodes and discovered peers.
    pub peer_list_request_size: u32,
    /// Peers that may hold this node in their active sets at once (they heartbeat it, or were
    /// told Online by a `Ping` lately and may be about to). Past it a `Ping` is answered Busy
    /// and the prober promotes another peer: the in-degree stays bounded, so bootstrap nodes
    /// and early joiners do not become hubs that thousands heartbeat (HyParView bounds its
    /// active view both ways for the same reason).
    pub max_inbound: usize,
    /// Known peers at which recursive discovery stops asking (capped by `max_peers_in_list`):
    /// the active set and a passive list to refill it from need far fewer than a full list.
    /// Peers learned later (registrations, exchanges) are still taken up to the list bound.
    pub discovery_target: usize,
    /// A peer not heard from (directly or through fresh gossip) for this long is not handed out
    /// nor accepted from gossip, and once unreachable or never verified it is forgotten. By
    /// default four refresh intervals: a live peer is re-advertised within one or two.
    pub removal_after: Duration,
    /// Percent of the known list, and of the active set, that peers which never proved their
    /// id may fill (100: no separate bound, as when the network is plaintext). They never
    /// displace verified peers, so a flood of unauthenticated identities cannot crowd out
    /// the authenticated ones.
    pub unverified_share: u8,
    /// Hearsay candidates (peers learnt from others that never answered us) dialled per
    /// second at most, after a burst of one second's worth.
    pub dial_rate_per_second: u32,
    /// Hearsay dials that may go at once before the rate applies.
    pub dial_burst: u32,
    /// Distinct hearsay addresses dialled per minute at most.
    pub max_dials_per_minute: usize,
    /// New candidates one peer list or exchange may add; the rest are refused (counted as
    /// dials deferred, `not_needed`).
    pub max_hearsay_per_message: usize,
    /// Percent of the nodes that are relays (`roles.rs`); 0, the default: no roles. The node
    /// sets it from `GossipConfig::relay_percent`, the one place the share is configured.
    pub relay_percent: u32,
    /// With relays on: active peers a relay wants to be relays (it fills its active set
    /// with relays first, and swaps a leaf out for a relay it knows of)...
    pub relay_active_relays: usize,
    /// ... and active peers a leaf wants to be relays.
    pub leaf_active_relays: usize,
    /// `max_inbound` of a relay: the leaves hold it active besides its relay peers.
    pub relay_max_inbound: usize,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        Self {
            // Sorcha design default (PeerService.RefreshIntervalMinutes = 15).
            refresh_interval: Duration::from_secs(15 * 60),
            // Sorcha design default (PeerService.MaxPeersInList).
            max_peers_in_list: 1000,
            // Sorcha design default (PeerService.MinHealthyPeers).
            min_healthy_peers: 5,
            // Sorcha design default (PeerService.PeerTimeoutSeconds).
            peer_timeout: Duration::from_secs(30),
            // Sorcha design default (PeerService.MaxConcurrentDiscoveries).
            max_concurrent_discoveries: 10,
            max_discovery_asks: 8, // Measured: see the field.
            // Sorcha design default; with probe_interval it gives a dead peer ~30 s (one
            // peer_timeout) before it leaves the active set, and one lost packet never does.
            failure_threshold: 3,
            // Wild guess: long enough not to hammer a restarting bootstrap node, short
            // enough that a node started a moment before its bootstrap node joins quickly.
            bootstrap_retry_base: Duration::from_secs(5),
            // Sorcha design default (bootstrap retry capped at 5 minutes).
            bootstrap_retry_cap: Duration::from_secs(5 * 60),
            // HyParView uses log(n)+c (5 at 10k nodes); 8 keeps min_healthy_peers (5) reachable
            // with three failures in flight, like Bitcoin's 8 outbound connections.
            active_size: 8,
            // Three heartbeats fit in one peer_timeout, so failure_threshold misses take about
            // as long as the Sorcha timeout.
            probe_interval: Duration::from_secs(10),
            // Wild guess: 2 pings per 10 s cycles through a 100-entry passive list in ~8 min.
            passive_checks_per_probe: 2,
            // HyParView's shuffle contacts one peer; three survive one or two dead choices.
            exchange_fanout: 3,
            // HyParView shuffles k_a + k_p = 7 entries; Sorcha lists are larger, 20 is a guess.
            exchange_size: 20,
            // Sorcha's bootstrap GetPeerList asks for 100 peers.
            peer_list_request_size: 100,
            // Twice active_size: room for every node's out-links with half the capacity spare.
            // Measured at 10,000 nodes (scale.toml n10000, seed 1), with the list turnover and
            // starved refill of the same change: unbounded, in-degree 0/7.9/2,379 (8,745 nodes
            // in nobody's active set), coverage 95.1%; 16: in-degree 0/8.0/29 (233 at 0),
            // 100% at 106 s; 24: max 47, 100% at 100 s, same bytes. The tighter bound won
            // (in-degree max 19 once a prober that registers first keeps its place).
            max_inbound: 16,
            // HyParView's passive view is k_p (log n + c) = 30 at 10,000 nodes; 50 adds the
            // active set and a margin. Measured at 10,000 nodes (scale.toml n10000, seed 1):
            // asking until the list was full (200) sent 630,000 peer-list requests, 653 of the
            // 1,504 bytes per node per tx, and took 1.7 GB; stopping at 50 sent 31,000, 235 B,
            // 0.97 GB.
            discovery_target: 50,
            removal_after: Duration::from_secs(60 * 60), // Four refresh intervals (see the field).
            // No separate bound by default: the daemon narrows it in `mixed` mode, where
            // plaintext peers exist beside authenticated ones.
            unverified_share: 100,
            // Filling an 8-peer active set and one discovery round of 10 asks takes a
            // couple of seconds at 5 a second; 10,000 pushed fake addresses give at most 5
            // dials a second (the probe saw 975 in 8 s). Bitcoin Core opens one
            // outbound connection at a time (a wild guess made safe by the burst).
            dial_rate_per_second: 5,
            // A joining node's first dials: its active set (8) and one discovery round
            // (`max_concurrent_discoveries`, 10), with a little room.
            dial_burst: 20,
            // A joining node dials its active set (8), a discovery round (10 at once,
            // a few rounds) and passive checks (2 per 10 s): well under 60.
            max_dials_per_minute: 60,
            // What one bootstrap peer list brings (Sorcha asks for 100).
            max_hearsay_per_message: 100,
            relay_percent: 0,
            // A relay's whole active set: the mesh among relays is what carries a
            // transaction far, and a relay meets leaves as they hold it active.
            relay_active_relays: 8,
            // Two, so a leaf whose eager relay fails has another at hand (it keeps one eager:
            // `GossipConfig::leaf_eager_peers`).
            leaf_active_relays: 2,
            // Its relay peers (8 out, about 8 in) plus the leaves, each holding two relays:
            // at 3 % relays ~65 leaves a relay on average, but peer lists spread relays
            // unevenly. sorcha-peer-sim relays.toml (crates/sim/README.md, session 13): at
            // 128, 2 % relays, 1,000 nodes, ~2 % of the leaves found every relay they knew
            // full (time to 99 % p95 1.7-1.9 s); 256 held at 3 %.
            relay_max_inbound: 256,
        }
    }
}
