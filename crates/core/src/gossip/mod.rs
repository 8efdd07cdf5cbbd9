//! Transaction distribution: announce ids, pull bodies, dedup, anti-entropy.
//!
//! [`Gossip`] is a sans-IO state machine, one per node. A new transaction (submitted here, or
//! fetched or pushed from a peer) is stored, delivered to local subscribers once, and announced
//! to `fanout` active peers, batched per peer for `flush_interval`. A peer that hears of an
//! unknown transaction fetches the body from *one* announcer, checks its SHA-256, and on a
//! timeout, failure or bad body moves on to the next announcer. Every `anti_entropy_interval`
//! a node sends one random active peer a digest of its recent hashes (8-byte prefixes); the two
//! then announce to each other what the other lacks, so a node that was cut off or restarted
//! converges without anyone resubmitting.
//!
//! Transactions are known, announced and pulled by their [`TxId`]: the first 16 bytes of the
//! SHA-256, half the bytes of the hash in every announcement and pull. A body is accepted when
//! its SHA-256 starts with the id it was asked for. The whole hash travels alongside wherever
//! it is known ([`AnnounceEntry::hash`], [`Output::Fetch`]'s `hash`), because Sorcha's peers
//! know transactions only by it.
//!
//! The core keeps ids, whole hashes and their metadata, never bodies: bodies go out in
//! [`Output::Store`] and the runtime's store serves fetches. An eager push sends the body it
//! has in hand at the moment of acceptance, so it needs no body cache either.
//!
//! Small bodies (`eager_push_max_size`) go by eager push on a self-repairing tree
//! (Plumtree): pushed at once to the eager peers, announced to the others, a duplicate push
//! prunes its link (down to a floor of eager links), a push that does not come grafts the
//! announcer's (`tree.rs`).
//!
//! Files: `config.rs` (knobs), `types.rs` (messages, outputs, events, counters), `dedup.rs`
//! (exact recent set + rotating bloom), `announce.rs` (fanout, hop limit, batching, eager
//! push), `tree.rs` (which peers are eager: prune and graft), `relay.rs` (the tree's
//! optional relays and leaves), `pace.rs` (the accepted rate
//! above which the push pauses), `fetch.rs` (pending
//! transactions, announcers, fetch slots, verification), `anti_entropy.rs` (digests),
//! `net_tests.rs` (a 50-node mini network).
//!
//! Why the defaults are what they are (hop limit then flood, no eager push,
//! anti-entropy every 5 s) is measured, not argued: the 50-node figures of `net_tests.rs` and what they decided are
//! in `crates/sim/README.md` ("Gossip strategies at 50 nodes"), the 10,000-node ones beside them.

mod announce;
mod anti_entropy;
mod config;
mod dedup;
mod fetch;
mod pace;
mod relay;
mod tree;
mod types;

#[cfg(test)]
mod net_tests;
#[cfg(test)]
mod test_util;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand_chacha::ChaCha8Rng;

use crate::model::{PeerId, TxHash, TxId};
use crate::time::{Instant, Now, TimerTable};

pub use config::{FanoutMode, GossipConfig};
pub use fetch::Fetched;
pub use types::{
    AnnounceEntry, Arrival, Conduct, FetchFailure, GossipEvent, GossipMessage, GossipStats,
    HashPrefix, MAX_REGISTER_ID_LEN, Origin, Output, PrefixRange, SubmitError, SubmitOutcome,
    Timer, Way,
};

use dedup::{Dedup, KnownTx};
use fetch::Pending;

/// Outputs queued before the runtime polls them. One input emits at most a batch per active
/// peer plus a few fetches; 8192 is two orders of magnitude of slack. `Store` and
/// `Deliver` are always admitted (losing them would lose a transaction); sends, fetches and
/// events are dropped and counted.
pub const MAX_OUTPUTS: usize = 8192;

/// Conduct reports waiting for the node (it drains them after every input, so a few per
/// input at most; one input holds at most `MAX_ENTRIES_PER_MESSAGE` deliveries).
pub const MAX_CONDUCT: usize = 1024;

/// Entries read from one `Announce` or `DigestReply.missing`; the rest are dropped and counted.
/// Twice the default batch, so a peer with a larger `max_batch` still gets through mostly.
pub const MAX_ENTRIES_PER_MESSAGE: usize = 512;

/// Prefixes in one digest (sent and read): 16 KiB. A window holding more is covered by
/// successive digests, each of one slice of the hash space.
pub const MAX_DIGEST_ENTRIES: usize = 2048;

/// Entries and prefixes in one digest reply, each way.
pub const MAX_REPAIR_ENTRIES: usize = 512;

/// Waiting hashes examined per attempt to start fetches, so one input costs bounded work.
pub const MAX_FETCH_SCAN: usize = 256;

/// The transaction gossip state machine of one node.
///
/// Call order, as in quinn's `Connection`:
/// - construct with [`Gossip::new`]; it arms the anti-entropy timer;
/// - tell it the active peers whenever membership changes them: [`set_peers`];
/// - feed inputs as they happen, each with the current time ([`Now`]; gossip reads only its
///   monotonic half): [`submit`] for local transactions, [`handle_message`] for every gossip
///   message from a peer, [`handle_fetched`] with the result of every [`Output::Fetch`], and
///   [`handle_timeout`] once [`poll_timeout`] has passed;
/// - after every input, drain [`poll_output`] until `None` and execute the outputs in order
///   (a `Store` before the sends that follow it, since peers will fetch that body);
/// - read state any time with the getters ([`is_known`], [`known_count`], [`pending_count`],
///   [`in_flight`], [`stats`], ...).
///
/// [`set_peers`]: Gossip::set_peers
/// [`submit`]: Gossip::submit
/// [`handle_message`]: Gossip::handle_message
/// [`handle_fetched`]: Gossip::handle_fetched
/// [`handle_timeout`]: Gossip::handle_timeout
/// [`poll_timeout`]: Gossip::poll_timeout
/// [`poll_output`]: Gossip::poll_output
/// [`is_known`]: Gossip::is_known
/// [`known_count`]: Gossip::known_count
/// [`pending_count`]: Gossip::pending_count
/// [`in_flight`]: Gossip::in_flight
/// [`stats`]: Gossip::stats
#[derive(Debug)]
pub struct Gossip {
    config: GossipConfig,
    self_id: PeerId,
    /// Active peers, sorted, without us: the order (and so the RNG's picks) is deterministic.
    peers: Vec<PeerId>,
    dedup: Dedup,
    /// Announced transactions we lack, by id, bounded by `config.max_pending`.
    pending: BTreeMap<TxId, Pending>,
    /// Pending ids with no fetch in flight, oldest first.
    waiting: VecDeque<TxId>,
    /// Fetch deadlines, earliest first.
    deadlines: BTreeSet<(Instant, TxId)>,
    in_flight_per_peer: BTreeMap<PeerId, usize>,
    in_flight: usize,
    /// Announced sizes of the fetches in flight.
    in_flight_bytes: u64,
    /// Announcements waiting for the flush, per peer; each below `config.max_batch`.
    outbox: BTreeMap<PeerId, Vec<AnnounceEntry>>,
    /// Announcements of pushed transactions to lazy peers, per peer, until `lazy_due` (or
    /// the peer's next ordinary batch); each below `config.max_batch`.
    lazy_outbox: BTreeMap<PeerId, Vec<AnnounceEntry>>,
    lazy_due: Option<Instant>,
    /// Pushes a leaf missed in a row while it had an eager relay (`relay.rs`).
    leaf_misses: u32,
    /// When the outbox last went out: the next flush is due `flush_interval` after it.
    last_flush: Option<Instant>,
    outputs: VecDeque<Output>,
    /// What peers did, for the node's score (bounded by `MAX_CONDUCT`).
    conduct: VecDeque<(PeerId, Conduct)>,
    /// When each timer kind is due: at most one deadline per kind (fetch deadlines are in
    /// `deadlines`, and `FetchTimeout` is armed for the earliest of them).
    timers: TimerTable<Timer>,
    rng: ChaCha8Rng,
    stats: GossipStats,
    /// Where the next backstop sweep's slice of the hash space starts.
    digest_cursor: HashPrefix,
    /// When the next backstop sweep starts; a sweep in progress continues every round.
    next_sweep: Instant,
    /// Where the next recent digest's slice starts (one slice holds them at most rates).
    recent_cursor: HashPrefix,
    /// Peers owed a sweep (new active peers, or peers whose repairs filled a reply), with
    /// where their next slice starts; one slice goes each anti-entropy round, in turn.
    sweeps: VecDeque<(PeerId, HashPrefix)>,
    /// Peers that left the gossip peers lately, and when: one back within the span recent
    /// digests repair is not swept again (inbound peers come and go with heartbeats).
    departed: BTreeMap<PeerId, Instant>,
    /// Gossip peers that get announcements, not pushes (pruned either way; `tree.rs`).
    lazy: BTreeSet<PeerId>,
    /// Pending ids waiting for their eager push until the deadline, earliest first.
    graft_wait: VecDeque<(Instant, TxId)>,
    /// The rate of accepted transactions, which pauses the push when high (`pace.rs`).
    pace: pace::Pace,
}

impl Gossip {
    pub fn new(config: GossipConfig, self_id: PeerId, rng: ChaCha8Rng, now: Now) -> Self {
        let now = now.mono;
        let dedup = Dedup::new(
            config.bloom_bits,
            config.bloom_hashes,
            config.bloom_reset_interval,
            config.transaction_cache_ttl,
            config.max_known,
            now,
        );
        let config_sweep_interval = config.anti_entropy_sweep_interval;
        let mut this = Self {
            config,
            self_id,
            peers: Vec::new(),
            dedup,
            pending: BTreeMap::new(),
            waiting: VecDeque::new(),
            deadlines: BTreeSet::new(),
            in_flight_per_peer: BTreeMap::new(),
            in_flight: 0,
            in_flight_bytes: 0,
            outbox: BTreeMap::new(),
            lazy_outbox: BTreeMap::new(),
            lazy_due: None,
            leaf_misses: 0,
            last_flush: None,
            outputs: VecDeque::new(),
            conduct: VecDeque::new(),
            timers: TimerTable::default(),
            rng,
            stats: GossipStats::default(),
            digest_cursor: 0,
            next_sweep: now.saturating_add(config_sweep_interval),
            recent_cursor: 0,
            sweeps: VecDeque::new(),
            departed: BTreeMap::new(),
            lazy: BTreeSet::new(),
            graft_wait: VecDeque::new(),
            pace: pace::Pace::default(),
        };
        if let Some(every) = this.config.anti_entropy_interval {
            this.schedule(now.saturating_add(every), Timer::AntiEntropy);
        }
        this
    }

    // ---- getters ----

    pub fn config(&self) -> &GossipConfig {
        &self.config
    }

    pub fn self_id(&self) -> &PeerId {
        &self.self_id
    }

    pub fn peers(&self) -> &[PeerId] {
        &self.peers
    }

    /// Whether the transaction is known (stored here) within the dedup window.
    pub fn is_known(&self, id: &TxId) -> bool {
        self.dedup.get(id).is_some()
    }

    pub fn known_count(&self) -> usize {
        self.dedup.len()
    }

    /// Transactions announced to us that we are fetching or waiting to fetch.
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// Fetches outstanding.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    pub fn stats(&self) -> &GossipStats {
        &self.stats
    }

    /// When `timer` is due, if armed.
    pub fn deadline(&self, timer: Timer) -> Option<Instant> {
        self.timers.get(timer)
    }

    // ---- inputs ----

    /// The active peers chosen by membership; gossip announces to and digests with them only
    /// (it still answers and fetches from any peer that announces to it).
    pub fn set_peers(&mut self, peers: &[PeerId], now: Now) {
        let now = now.mono;
        self.housekeep(now);
        let mut peers: Vec<PeerId> = peers
            .iter()
            .filter(|p| **p != self.self_id)
            .cloned()
            .collect();
        peers.sort();
        peers.dedup();
        let old = std::mem::replace(&mut self.peers, peers);
        let left: Vec<PeerId> = old
            .iter()
            .filter(|p| self.peers.binary_search(p).is_err())
            .cloned()
            .collect();
        let joined: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|p| old.binary_search(p).is_err())
            .cloned()
            .collect();
        // Announcements batched for a peer that leaves go now (batches are only ever for
        // gossip peers): they were decided while it was one (inbound ones come and go with
        // heartbeats), and dropping them silently left the transaction to others' fanout.
        for peer in &left {
            self.flush_peer(peer);
        }
        self.forget_tree_peers(&left);
        let peers = &self.peers;
        self.sweeps.retain(|(p, _)| peers.binary_search(p).is_ok());
        self.note_departures(left, now);
        for peer in joined {
            self.start_tree_peer(&peer);
            if self.departed.remove(&peer).is_none() {
                self.owe_sweep(&peer);
            }
        }
    }

    /// A transaction submitted to this node. A new one is stored, delivered and announced; a
    /// known one changes nothing (`new: false`).
    pub fn submit(
        &mut self,
        body: Vec<u8>,
        register_id: Option<String>,
        now: Now,
    ) -> Result<SubmitOutcome, SubmitError> {
        let now = now.mono;
        self.housekeep(now);
        let max = self.config.max_transaction_size;
        let size = body.len() as u64;
        if body.is_empty() {
            return Err(SubmitError::Empty { max });
        }
        if size > max {
            return Err(SubmitError::TooLarge { size, max });
        }
        if let Some(len) = register_id.as_ref().map(String::len)
            && len > MAX_REGISTER_ID_LEN
        {
            return Err(SubmitError::RegisterIdTooLong { len });
        }
        self.stats.submitted += 1;
        let hash = TxHash::of(&body);
        if self.dedup.contains(&hash.id(), &mut self.stats) {
            return Ok(SubmitOutcome { hash, new: false });
        }
        let arrival = Arrival {
            way: Way::Submitted,
            hops: 0,
        };
        self.accept(hash, body, register_id, Origin::Local, arrival, now);
        Ok(SubmitOutcome { hash, new: true })
    }

    /// A transaction this node held before a restart (from its durable store): known again,
    /// so it is neither fetched nor delivered twice, and listed in the digests, so
    /// anti-entropy announces it to peers that lack it. Nothing is output. False if it was
    /// known already.
    pub fn restore(
        &mut self,
        hash: TxHash,
        size: u64,
        register_id: Option<String>,
        now: Now,
    ) -> bool {
        let id = hash.id();
        if self.dedup.contains(&id, &mut self.stats) {
            return false;
        }
        let known = KnownTx {
            hash,
            size,
            register_id,
            seen_at: now.mono,
            hops: 0,
            by_shortcut: false,
        };
        self.dedup.insert(id, known, &mut self.stats);
        true
    }

    /// A gossip message from `from`.
    pub fn handle_message(&mut self, from: &PeerId, message: GossipMessage, now: Now) {
        let now = now.mono;
        self.housekeep(now);
        if *from == self.self_id {
            self.stats.refused_from_self += 1;
            return;
        }
        match message {
            GossipMessage::Announce { entries } => self.on_announce(from, entries, false, now),
            GossipMessage::Push { entry, body } => self.on_push(from, entry, body, now),
            GossipMessage::Digest {
                range,
                prefixes,
                recent,
            } => self.on_digest(from, range, prefixes, recent, now),
            GossipMessage::DigestReply { missing, wanted } => {
                self.on_digest_reply(from, missing, wanted, now)
            }
            GossipMessage::Prune => self.on_prune(from),
            GossipMessage::Graft => self.on_graft(from),
        }
        self.start_fetches(now);
    }

    /// The result of the [`Output::Fetch`] of transaction `id` from `from`.
    pub fn handle_fetched(
        &mut self,
        from: &PeerId,
        id: TxId,
        result: Result<Vec<u8>, FetchFailure>,
        now: Now,
    ) {
        let now = now.mono;
        self.housekeep(now);
        self.on_fetched(from, id, result, now);
        self.start_fetches(now);
    }

    /// When gossip next wants [`handle_timeout`](Gossip::handle_timeout): its earliest timer.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Fires every timer due at `now`, earliest first.
    pub fn handle_timeout(&mut self, now: Now) {
        for timer in self.timers.due(now.mono) {
            self.handle_timer(timer, now);
        }
    }

    /// Fires `timer` if it is due at `now`; a timer not (or no longer) due is ignored.
    pub(crate) fn handle_timer(&mut self, timer: Timer, now: Now) {
        let now = now.mono;
        if !self.timers.take_if_due(timer, now) {
            return;
        }
        self.housekeep(now);
        match timer {
            Timer::Flush => self.flush_all(now),
            Timer::FetchTimeout => self.on_fetch_deadlines(now),
            Timer::AntiEntropy => self.on_anti_entropy_timer(now),
            Timer::Graft => self.on_graft_timer(now),
        }
        self.start_fetches(now);
    }

    // ---- outputs ----

    /// The next thing for the runtime to do, in order.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The next report of what a peer did, for the score; drain after every input.
    pub fn take_conduct(&mut self) -> Option<(PeerId, Conduct)> {
        self.conduct.pop_front()
    }

    // ---- internals shared by the submodules ----

    /// Notes what `peer` did (dropped, counted, when `MAX_CONDUCT` wait).
    fn note_conduct(&mut self, peer: &PeerId, conduct: Conduct) {
        if self.conduct.len() >= MAX_CONDUCT {
            self.stats.conduct_dropped += 1;
            return;
        }
        self.conduct.push_back((peer.clone(), conduct));
    }

    fn housekeep(&mut self, now: Instant) {
        self.dedup.expire(now);
    }

    /// Takes a new, verified transaction: remember, store, deliver, announce onwards.
    /// `arrival` says how it came, and how far it travelled (0 hops when submitted here).
    fn accept(
        &mut self,
        hash: TxHash,
        body: Vec<u8>,
        register_id: Option<String>,
        origin: Origin,
        mut arrival: Arrival,
        now: Instant,
    ) {
        let hops = arrival.hops;
        let size = body.len() as u64;
        let id = hash.id();
        let (announcers, repair) = self.forget_pending(&id);
        if let Origin::Peer(from) = &origin {
            self.note_conduct(&from.clone(), Conduct::FirstDelivery);
        }
        if repair && let Origin::Peer(from) = &origin {
            arrival.way = Way::Repaired;
            self.stats.anti_entropy_repairs += 1;
            let from = from.clone();
            self.emit(GossipEvent::Repaired { hash, from });
        }
        let known = KnownTx {
            hash,
            size,
            register_id: register_id.clone(),
            seen_at: now,
            hops,
            by_shortcut: false,
        };
        self.dedup.insert(id, known, &mut self.stats);
        self.stats.accepted += 1;
        self.pace.note(now, self.config.eager_push_max_rate);
        let local = matches!(origin, Origin::Local);
        let push_body = self.pushes_on(size, local).then(|| body.clone());
        if local && push_body.is_some() {
            self.pace.note_own_push();
        }
        let mut exclude = announcers;
        let from = match &origin {
            Origin::Peer(p) => Some(p.clone()),
            Origin::Local => None,
        };
        exclude.extend(from.clone());
        self.push(Output::Store {
            hash,
            body,
            register_id: register_id.clone(),
            origin,
        });
        self.push(Output::Deliver {
            hash,
            register_id: register_id.clone(),
            size,
            from,
            arrival,
        });
        let fanout = if hops < self.config.max_hops {
            self.config.fanout
        } else if self.config.flood_past_max_hops {
            self.config.flood_fanout
        } else {
            return;
        };
        let entry = AnnounceEntry {
            id,
            hash: Some(hash),
            size,
            register_id,
            hops: hops.saturating_add(1),
        };
        self.forward(entry, fanout, (push_body, local), &exclude, now);
    }

    /// Queues an output; sends, fetches and events are dropped (counted) when the queue is
    /// full, the rest always go in.
    fn push(&mut self, output: Output) {
        let droppable = matches!(
            output,
            Output::Send { .. } | Output::Fetch { .. } | Output::Event(_)
        );
        if droppable && self.outputs.len() >= MAX_OUTPUTS {
            self.stats.outputs_dropped += 1;
            return;
        }
        self.outputs.push_back(output);
    }

    fn emit(&mut self, event: GossipEvent) {
        self.push(Output::Event(event));
    }

    fn schedule(&mut self, at: Instant, timer: Timer) {
        self.timers.arm(timer, at);
    }

    /// Arms `timer` for `at` unless it is already armed for earlier.
    fn schedule_by(&mut self, at: Instant, timer: Timer) {
        self.timers.arm_by(timer, at);
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::*;
    use super::*;

    #[test]
    fn submissions_are_checked_with_typed_errors() {
        let mut g = node(0, [1], quiet());
        let max = g.config().max_transaction_size;
        assert_eq!(
            g.submit(vec![], None, ms(0)),
            Err(SubmitError::Empty { max })
        );
        let big = vec![0u8; max as usize + 1];
        let size = max + 1;
        assert_eq!(
            g.submit(big, None, ms(0)),
            Err(SubmitError::TooLarge { size, max })
        );
        let long = Some("r".repeat(MAX_REGISTER_ID_LEN + 1));
        assert!(matches!(
            g.submit(body(1), long, ms(0)),
            Err(SubmitError::RegisterIdTooLong { .. })
        ));
        assert!(drain(&mut g).is_empty());
        let ok = g.submit(body(1), None, ms(0)).expect("valid");
        assert_eq!(ok.hash, TxHash::of(&body(1)));
        assert!(ok.new);
    }

    #[test]
    fn a_restored_transaction_is_known_without_outputs() {
        let mut g = node(0, [1], quiet());
        let hash = TxHash::of(&body(1));
        assert!(g.restore(hash, body(1).len() as u64, None, ms(0)));
        assert!(!g.restore(hash, 1, None, ms(0)), "known already");
        assert!(
            drain(&mut g).is_empty(),
            "nothing stored, delivered or announced"
        );
        assert!(g.is_known(&hash.id()));
        assert!(!g.submit(body(1), None, ms(1)).expect("valid").new);
        g.handle_message(&id(1), announce(vec![entry(1, 1)]), ms(2));
        assert!(fetches(&drain(&mut g)).is_empty(), "never pulled again");
    }

    #[test]
    fn each_transaction_is_delivered_once_whatever_the_path() {
        let config = GossipConfig {
            eager_push_max_size: 1024,
            ..quiet()
        };
        let mut g = node(0, 1..=3, config);
        let mut out = Vec::new();
        g.handle_message(&id(1), announce(vec![entry(1, 1)]), ms(0));
        g.handle_fetched(&id(1), entry(1, 1).id, Ok(body(1)), ms(1));
        out.extend(drain(&mut g));
        assert!(!g.submit(body(1), None, ms(2)).expect("valid").new);
        let push = GossipMessage::Push {
            entry: entry(1, 1),
            body: body(1),
        };
        g.handle_message(&id(2), push, ms(3));
        g.handle_message(&id(3), announce(vec![entry(1, 1)]), ms(4));
        g.handle_fetched(&id(1), entry(1, 1).id, Ok(body(1)), ms(5));
        out.extend(drain(&mut g));
        assert_eq!(delivered(&out), vec![entry(1, 1).id]);
        assert_eq!(stored(&out).len(), 1);
        // Store comes before Deliver, and both before any send that names the hash.
        let store = out.iter().position(|o| matches!(o, Output::Store { .. }));
        let deliver = out.iter().position(|o| matches!(o, Output::Deliver { .. }));
        assert!(store < deliver);
    }

    #[test]
    fn bloom_false_positives_never_lose_a_transaction() {
        // 16 bits, 1 hash: after a few inserts nearly every query is a bloom "maybe".
        let config = GossipConfig {
            bloom_bits: 16,
            bloom_hashes: 1,
            ..quiet()
        };
        let mut g = node(0, [1], config);
        for n in 0..100 {
            g.submit(body(n), None, ms(0)).expect("valid");
        }
        drain(&mut g);
        let mut got = 0;
        for n in 100..300 {
            g.handle_message(&id(1), announce(vec![entry(n, 1)]), ms(1));
            let out = drain(&mut g);
            assert_eq!(fetches(&out).len(), 1, "tx {n} skipped");
            g.handle_fetched(&id(1), entry(n, 1).id, Ok(body(n)), ms(2));
            got += delivered(&drain(&mut g)).len();
        }
        assert_eq!(got, 200);
        assert_eq!(g.known_count(), 300);
        assert!(g.stats().bloom_false_positives > 150, "{:?}", g.stats());
    }

    #[test]
    fn messages_claiming_to_be_from_us_are_refused() {
        let mut g = node(0, [1], quiet());
        g.handle_message(&id(0), announce(vec![entry(1, 1)]), ms(0));
        assert!(drain(&mut g).is_empty());
        assert_eq!(g.stats().refused_from_self, 1);
    }

    #[test]
    fn announcements_batched_for_a_peer_that_leaves_are_sent_not_dropped() {
        let mut g = node(0, [1, 2], quiet());
        let hash = g.submit(body(1), None, ms(0)).expect("valid").hash;
        assert!(
            announces(&drain(&mut g)).is_empty(),
            "batched until the flush"
        );
        g.set_peers(&[id(1)], ms(1));
        let sent = announces(&drain(&mut g));
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(sent[0].0, id(2));
        assert_eq!(sent[0].1[0].hash, Some(hash));
        g.handle_timer(Timer::Flush, ms(10));
        let flushed = announces(&drain(&mut g));
        assert_eq!(flushed.len(), 1, "the staying peer's batch at the flush");
        assert_eq!(flushed[0].0, id(1));
    }

    #[test]
    fn peers_exclude_ourselves_and_a_timer_before_it_is_due_is_ignored() {
        let mut g = Gossip::new(
            GossipConfig::default(),
            id(0),
            rand::SeedableRng::seed_from_u64(1),
            ms(0),
        );
        assert!(drain(&mut g).is_empty());
        assert_eq!(g.poll_timeout(), Some(ms(5000).mono), "anti-entropy armed");
        g.set_peers(&[id(2), id(0), id(1), id(2)], ms(0));
        assert_eq!(g.peers(), &[id(1), id(2)]);
        g.handle_timer(Timer::AntiEntropy, ms(4999));
        assert!(drain(&mut g).is_empty());
        g.handle_timer(Timer::AntiEntropy, ms(5000));
        // A sweep to the first new peer, and the recent digest to a random one.
        assert_eq!(sends(&drain(&mut g)).len(), 2);
    }
}
