//! The bounded send queue of one peer, with priority lanes.
//!
//! Three lanes, highest first: [`Lane::Control`] (pings, heartbeats, peer exchange, wants),
//! [`Lane::Announce`] (transaction hashes) and [`Lane::Body`] (transaction bodies). Each lane
//! is bounded by a count and the whole queue by bytes, so a slow peer costs a known amount of
//! memory. When the bytes run out, the lowest lane gives way: a higher-lane item evicts the
//! oldest lower-lane items, a body is refused. Control is never evicted. Losing an
//! announcement or a body is recoverable (the peer pulls it or anti-entropy brings it);
//! losing a control message can stall a protocol exchange.
//!
//! The lanes idea follows rust-libp2p gossipsub's `queue.rs` (priority and non-priority
//! queues); here the bound is in bytes too and lower lanes are not starved.

use std::collections::VecDeque;

/// Lanes in a queue.
pub const LANES: usize = 3;

/// A priority lane; the declaration order is the priority order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Lane {
    /// Protocol control: pings, heartbeats, peer exchange, wants. Never evicted.
    Control,
    /// Transaction announcements (hashes).
    Announce,
    /// Transaction bodies: the bulk of the bytes, the first to give way.
    Body,
}

impl Lane {
    /// Highest priority first.
    pub const ALL: [Lane; LANES] = [Lane::Control, Lane::Announce, Lane::Body];

    fn index(self) -> usize {
        self as usize
    }
}

/// Why a send queue configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendQueueConfigError {
    /// A lane that can hold nothing.
    #[error("send queue capacity of lane {0:?} is 0: expected at least 1 item")]
    ZeroCapacity(Lane),
    /// A queue that can hold no byte.
    #[error("send queue max_bytes is 0: expected at least 1")]
    ZeroMaxBytes,
    /// 0 or 1 would serve lower lanes before higher ones.
    #[error("send queue fairness_interval is {0}: expected at least 2")]
    FairnessTooSmall(u32),
}

/// Bounds of a [`SendQueue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendQueueConfig {
    /// Items in [`Lane::Control`].
    pub control_capacity: usize,
    /// Items in [`Lane::Announce`].
    pub announce_capacity: usize,
    /// Items in [`Lane::Body`].
    pub body_capacity: usize,
    /// Sum of the sizes of all queued items.
    pub max_bytes: usize,
    /// Under contention at most `fairness_interval - 1` pops in a row serve a higher lane
    /// while a lower one waits; the next serves the oldest lower-lane item. Lower lanes so
    /// get at least 1/`fairness_interval` of the pops.
    pub fairness_interval: u32,
}

impl Default for SendQueueConfig {
    fn default() -> Self {
        Self {
            // Wild guess: a few control messages per active peer per probe tick; 128 is
            // minutes of them, more means the connection is dead.
            control_capacity: 128,
            // A Sorcha notification is ~200 bytes; 1024 of them is ~200 KiB and seconds of a
            // busy network. Beyond that the peer is too slow and anti-entropy catches up.
            announce_capacity: 1024,
            // Bodies are up to 1 MiB inline (larger ones stream in 64 KiB chunks), so the
            // byte bound usually bites first; 64 bounds the count of small ones.
            body_capacity: 64,
            // Eight full-size bodies; with 8 active peers at most 64 MiB of send buffers.
            max_bytes: 8 << 20,
            // Wild guess: lower lanes get at least 1/8 of the pops under a flood.
            fairness_interval: 8,
        }
    }
}

impl SendQueueConfig {
    pub fn validate(&self) -> Result<(), SendQueueConfigError> {
        if let Some(lane) = Lane::ALL.into_iter().find(|l| self.capacity(*l) == 0) {
            return Err(SendQueueConfigError::ZeroCapacity(lane));
        }
        if self.max_bytes == 0 {
            return Err(SendQueueConfigError::ZeroMaxBytes);
        }
        if self.fairness_interval < 2 {
            return Err(SendQueueConfigError::FairnessTooSmall(
                self.fairness_interval,
            ));
        }
        Ok(())
    }

    /// The item bound of `lane`.
    pub fn capacity(&self, lane: Lane) -> usize {
        match lane {
            Lane::Control => self.control_capacity,
            Lane::Announce => self.announce_capacity,
            Lane::Body => self.body_capacity,
        }
    }
}

/// Why an item was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DropReason {
    /// The item's lane holds its maximum count.
    #[error("lane {lane:?} holds its maximum of {capacity} items")]
    LaneFull { lane: Lane, capacity: usize },
    /// Not enough free bytes, and evicting every lower-lane item would not make enough.
    #[error(
        "{size} bytes do not fit: {queued} of {max} bytes queued and lower lanes cannot make room"
    )]
    QueueFull {
        size: usize,
        queued: usize,
        max: usize,
    },
    /// The item alone is larger than the whole queue.
    #[error("item of {size} bytes is larger than the queue bound of {max} bytes")]
    TooLarge { size: usize, max: usize },
}

/// A refused item, handed back to the caller with the reason.
#[derive(Debug, thiserror::Error)]
#[error("send queue refused a {lane:?} item: {reason}")]
pub struct Dropped<T> {
    pub lane: Lane,
    pub item: T,
    #[source]
    pub reason: DropReason,
}

/// Counters of one lane.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LaneStats {
    /// Items accepted.
    pub pushed: u64,
    /// Items handed out by `pop`.
    pub popped: u64,
    /// Accepted items later evicted to make room for a higher lane (always 0 for Control).
    pub evicted: u64,
    /// Items refused on push.
    pub refused: u64,
}

/// A snapshot of a queue's counters and occupancy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendQueueStats {
    /// Per lane, indexed in [`Lane::ALL`] order; read with [`SendQueueStats::lane`].
    pub lanes: [LaneStats; LANES],
    /// Items queued per lane, in [`Lane::ALL`] order.
    pub lens: [usize; LANES],
    /// Bytes queued.
    pub bytes: usize,
}

impl SendQueueStats {
    pub fn lane(&self, lane: Lane) -> &LaneStats {
        &self.lanes[lane.index()]
    }
}

#[derive(Debug)]
struct Queued<T> {
    /// Push order across lanes, so the fairness rule can find the oldest lower-lane item.
    seq: u64,
    size: usize,
    item: T,
}

/// The send queue of one peer.
///
/// Call order: [`SendQueue::new`] when the peer's connection is set up; [`SendQueue::push`]
/// for everything to send (a `Dropped` hands the item back with the reason); whenever the
/// connection can take more, [`SendQueue::pop`] until `None` or the transport is busy.
/// [`SendQueue::stats`] and the length getters any time. Sizes are whatever the caller
/// counts (the encoded message length); they need not be exact, only consistent.
///
/// `pop` serves the highest non-empty lane, except that after `fairness_interval - 1` pops in
/// a row that passed over a waiting lower-lane item, it serves the oldest lower-lane item.
#[derive(Debug)]
pub struct SendQueue<T> {
    config: SendQueueConfig,
    lanes: [VecDeque<Queued<T>>; LANES],
    /// Bytes queued per lane; their sum is at most `config.max_bytes`.
    lane_bytes: [usize; LANES],
    next_seq: u64,
    /// Pops in a row that served a higher lane while a lower lane waited.
    passed_over: u32,
    stats: [LaneStats; LANES],
}

impl<T> SendQueue<T> {
    pub fn new(config: SendQueueConfig) -> Result<Self, SendQueueConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            lanes: Default::default(),
            lane_bytes: [0; LANES],
            next_seq: 0,
            passed_over: 0,
            stats: Default::default(),
        })
    }

    /// Queues `item` of `size` bytes on `lane`, evicting the oldest lower-lane items (lowest
    /// lane first) if the bytes are short and that makes enough room. Nothing is evicted
    /// when the item is refused anyway.
    pub fn push(&mut self, lane: Lane, item: T, size: usize) -> Result<(), Dropped<T>> {
        if let Err(reason) = self.make_room(lane, size) {
            self.stats[lane.index()].refused += 1;
            return Err(Dropped { lane, item, reason });
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.lanes[lane.index()].push_back(Queued { seq, size, item });
        self.lane_bytes[lane.index()] += size;
        self.stats[lane.index()].pushed += 1;
        Ok(())
    }

    fn make_room(&mut self, lane: Lane, size: usize) -> Result<(), DropReason> {
        let max = self.config.max_bytes;
        if size > max {
            return Err(DropReason::TooLarge { size, max });
        }
        let capacity = self.config.capacity(lane);
        if self.lanes[lane.index()].len() >= capacity {
            return Err(DropReason::LaneFull { lane, capacity });
        }
        let queued = self.bytes();
        let free = max - queued;
        if size <= free {
            return Ok(());
        }
        let evictable: usize = self.lane_bytes[lane.index() + 1..].iter().sum();
        if free + evictable < size {
            return Err(DropReason::QueueFull { size, queued, max });
        }
        for victim in (lane.index() + 1..LANES).rev() {
            while self.bytes() + size > max {
                let Some(old) = self.lanes[victim].pop_front() else {
                    break;
                };
                self.lane_bytes[victim] -= old.size;
                self.stats[victim].evicted += 1;
            }
        }
        debug_assert!(self.bytes() + size <= max, "evictable bytes were counted");
        Ok(())
    }

    /// The next item to send, with its lane; see the type's doc for the order.
    pub fn pop(&mut self) -> Option<(Lane, T)> {
        let top = self.lanes.iter().position(|l| !l.is_empty())?;
        let oldest_lower = self.lanes[top + 1..]
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.front().map(|q| (q.seq, top + 1 + i)))
            .min()
            .map(|(_, lane)| lane);
        let from = match oldest_lower {
            Some(lower) if self.passed_over + 1 >= self.config.fairness_interval => {
                self.passed_over = 0;
                lower
            }
            Some(_) => {
                self.passed_over += 1;
                top
            }
            None => {
                self.passed_over = 0;
                top
            }
        };
        let queued = self.lanes[from]
            .pop_front()
            .expect("`from` is the top lane or a lower lane with a front item");
        self.lane_bytes[from] -= queued.size;
        self.stats[from].popped += 1;
        Some((Lane::ALL[from], queued.item))
    }

    /// Items queued in all lanes.
    pub fn len(&self) -> usize {
        self.lanes.iter().map(VecDeque::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.lanes.iter().all(VecDeque::is_empty)
    }

    /// Items queued in `lane`.
    pub fn lane_len(&self, lane: Lane) -> usize {
        self.lanes[lane.index()].len()
    }

    /// Bytes queued in all lanes.
    pub fn bytes(&self) -> usize {
        self.lane_bytes.iter().sum()
    }

    pub fn config(&self) -> &SendQueueConfig {
        &self.config
    }

    pub fn stats(&self) -> SendQueueStats {
        SendQueueStats {
            lanes: self.stats,
            lens: Lane::ALL.map(|l| self.lane_len(l)),
            bytes: self.bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Small bounds so tests reach them: 3 control, 4 announce, 3 body items, 100 bytes.
    fn config(fairness_interval: u32) -> SendQueueConfig {
        SendQueueConfig {
            control_capacity: 3,
            announce_capacity: 4,
            body_capacity: 3,
            max_bytes: 100,
            fairness_interval,
        }
    }

    /// A queue where fairness never kicks in within a test's few pops.
    fn strict() -> SendQueue<&'static str> {
        SendQueue::new(config(1000)).unwrap()
    }

    fn drain<T>(q: &mut SendQueue<T>) -> Vec<(Lane, T)> {
        std::iter::from_fn(|| q.pop()).collect()
    }

    #[test]
    fn serves_control_then_announce_then_body_fifo_within_a_lane() {
        let mut q = strict();
        q.push(Lane::Body, "b1", 10).unwrap();
        q.push(Lane::Announce, "a1", 1).unwrap();
        q.push(Lane::Control, "c1", 1).unwrap();
        q.push(Lane::Body, "b2", 10).unwrap();
        q.push(Lane::Announce, "a2", 1).unwrap();
        q.push(Lane::Control, "c2", 1).unwrap();
        assert_eq!(q.len(), 6);
        assert_eq!(q.bytes(), 24);
        let order: Vec<&str> = drain(&mut q).into_iter().map(|(_, i)| i).collect();
        assert_eq!(order, ["c1", "c2", "a1", "a2", "b1", "b2"]);
        assert!(q.is_empty());
        assert_eq!(q.bytes(), 0);
    }

    #[test]
    fn full_lane_refuses_and_hands_the_item_back() {
        let mut q = strict();
        for n in 0..3 {
            q.push(Lane::Control, "c", n).unwrap();
        }
        let dropped = q.push(Lane::Control, "late", 1).unwrap_err();
        assert_eq!(dropped.item, "late");
        assert_eq!(
            dropped.reason,
            DropReason::LaneFull {
                lane: Lane::Control,
                capacity: 3
            }
        );
        assert_eq!(q.stats().lane(Lane::Control).refused, 1);
        assert_eq!(q.stats().lane(Lane::Control).pushed, 3);
    }

    #[test]
    fn item_larger_than_the_queue_is_refused() {
        let mut q = strict();
        let dropped = q.push(Lane::Control, "huge", 101).unwrap_err();
        assert_eq!(
            dropped.reason,
            DropReason::TooLarge {
                size: 101,
                max: 100
            }
        );
        assert!(q.push(Lane::Control, "exact", 100).is_ok());
    }

    #[test]
    fn body_into_a_full_queue_is_refused_without_evicting() {
        let mut q = strict();
        q.push(Lane::Body, "b1", 60).unwrap();
        q.push(Lane::Announce, "a1", 30).unwrap();
        let dropped = q.push(Lane::Body, "b2", 20).unwrap_err();
        assert_eq!(
            dropped.reason,
            DropReason::QueueFull {
                size: 20,
                queued: 90,
                max: 100
            }
        );
        let stats = q.stats();
        assert_eq!(stats.lane(Lane::Body).refused, 1);
        assert_eq!(stats.lane(Lane::Body).evicted, 0);
        assert_eq!(stats.lane(Lane::Announce).evicted, 0);
        assert_eq!(stats.bytes, 90);
    }

    #[test]
    fn announcement_evicts_the_oldest_bodies() {
        let mut q = strict();
        q.push(Lane::Body, "b1", 40).unwrap();
        q.push(Lane::Body, "b2", 40).unwrap();
        q.push(Lane::Body, "b3", 20).unwrap();
        q.push(Lane::Announce, "a1", 30).unwrap();
        assert_eq!(
            q.stats().lane(Lane::Body).evicted,
            1,
            "40 bytes freed suffice"
        );
        assert_eq!(q.bytes(), 90);
        let left: Vec<&str> = drain(&mut q).into_iter().map(|(_, i)| i).collect();
        assert_eq!(left, ["a1", "b2", "b3"]);
    }

    #[test]
    fn control_evicts_bodies_before_announcements_and_is_never_evicted() {
        let mut q = strict();
        q.push(Lane::Announce, "a1", 30).unwrap();
        q.push(Lane::Body, "b1", 30).unwrap();
        q.push(Lane::Control, "c1", 30).unwrap();
        // 10 free: c2 needs 40, so the body goes, the older announcement stays.
        q.push(Lane::Control, "c2", 40).unwrap();
        let stats = q.stats();
        assert_eq!(stats.lane(Lane::Body).evicted, 1);
        assert_eq!(stats.lane(Lane::Announce).evicted, 0);
        assert_eq!(stats.lens, [2, 1, 0]);
        // c3 needs 30 with none free and no body left: the announcement goes; c1, c2 stay.
        q.push(Lane::Control, "c3", 30).unwrap();
        let stats = q.stats();
        assert_eq!(stats.lane(Lane::Announce).evicted, 1);
        assert_eq!(stats.lane(Lane::Control).evicted, 0);
        assert_eq!(stats.lens, [3, 0, 0]);
        assert_eq!(stats.bytes, 100);
    }

    #[test]
    fn nothing_is_evicted_when_eviction_would_not_make_enough_room() {
        let mut q = strict();
        q.push(Lane::Control, "c1", 50).unwrap();
        q.push(Lane::Control, "c2", 30).unwrap();
        q.push(Lane::Body, "b1", 10).unwrap();
        // 10 free + 10 evictable < 25.
        let dropped = q.push(Lane::Control, "c3", 25).unwrap_err();
        assert!(matches!(dropped.reason, DropReason::QueueFull { .. }));
        assert_eq!(q.stats().lane(Lane::Body).evicted, 0);
        assert_eq!(q.lane_len(Lane::Body), 1);
        // An announcement cannot push control out either.
        let dropped = q.push(Lane::Announce, "a1", 25).unwrap_err();
        assert!(matches!(dropped.reason, DropReason::QueueFull { .. }));
        assert_eq!(q.lane_len(Lane::Control), 2);
    }

    #[test]
    fn fairness_serves_a_body_every_nth_pop_under_an_announcement_flood() {
        let mut q = SendQueue::new(SendQueueConfig {
            announce_capacity: 100,
            max_bytes: 1000,
            ..config(4)
        })
        .unwrap();
        q.push(Lane::Body, 1000u32, 1).unwrap();
        q.push(Lane::Body, 1001, 1).unwrap();
        for n in 0..20u32 {
            q.push(Lane::Announce, n, 1).unwrap();
        }
        let lanes: Vec<Lane> = (0..10).map(|_| q.pop().unwrap().0).collect();
        use Lane::{Announce as A, Body as B};
        assert_eq!(lanes, [A, A, A, B, A, A, A, B, A, A]);
    }

    #[test]
    fn fairness_serves_the_oldest_lower_lane_item() {
        let mut q = SendQueue::new(config(2)).unwrap();
        q.push(Lane::Body, "old body", 1).unwrap();
        q.push(Lane::Announce, "announce", 1).unwrap();
        q.push(Lane::Control, "c1", 1).unwrap();
        q.push(Lane::Control, "c2", 1).unwrap();
        let order: Vec<&str> = drain(&mut q).into_iter().map(|(_, i)| i).collect();
        assert_eq!(order, ["c1", "old body", "c2", "announce"]);
    }

    #[test]
    fn fairness_streak_resets_when_no_lower_lane_waits() {
        let mut q = SendQueue::new(config(3)).unwrap();
        q.push(Lane::Control, "c1", 1).unwrap();
        q.push(Lane::Control, "c2", 1).unwrap();
        assert_eq!(q.pop(), Some((Lane::Control, "c1")));
        assert_eq!(q.pop(), Some((Lane::Control, "c2")));
        q.push(Lane::Control, "c3", 1).unwrap();
        q.push(Lane::Control, "c4", 1).unwrap();
        q.push(Lane::Body, "b1", 1).unwrap();
        assert_eq!(q.pop(), Some((Lane::Control, "c3")));
        assert_eq!(q.pop(), Some((Lane::Control, "c4")));
        assert_eq!(q.pop(), Some((Lane::Body, "b1")));
    }

    #[test]
    fn invalid_configs_are_refused() {
        let bad = |c: SendQueueConfig| SendQueue::<()>::new(c).unwrap_err();
        assert_eq!(
            bad(SendQueueConfig {
                announce_capacity: 0,
                ..config(8)
            }),
            SendQueueConfigError::ZeroCapacity(Lane::Announce)
        );
        assert_eq!(
            bad(SendQueueConfig {
                max_bytes: 0,
                ..config(8)
            }),
            SendQueueConfigError::ZeroMaxBytes
        );
        assert_eq!(bad(config(1)), SendQueueConfigError::FairnessTooSmall(1));
        assert!(SendQueue::<()>::new(SendQueueConfig::default()).is_ok());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push(Lane, usize),
        Pop,
    }

    fn op() -> impl Strategy<Value = Op> {
        let lane = prop_oneof![Just(Lane::Control), Just(Lane::Announce), Just(Lane::Body)];
        prop_oneof![
            3 => (lane, 0usize..=110).prop_map(|(l, s)| Op::Push(l, s)),
            1 => Just(Op::Pop),
        ]
    }

    /// Checks one random push against the model, which mirrors the queue lane by lane as
    /// (id, size): bounds hold, and only lower lanes ever lose items.
    fn check_push(
        q: &mut SendQueue<u64>,
        model: &mut [VecDeque<(u64, usize)>; LANES],
        lane: Lane,
        id: u64,
        size: usize,
    ) -> Result<(), TestCaseError> {
        let before = q.stats();
        let lower_bytes: usize = model[lane.index() + 1..]
            .iter()
            .flatten()
            .map(|(_, s)| s)
            .sum();
        match q.push(lane, id, size) {
            Ok(()) => model[lane.index()].push_back((id, size)),
            Err(dropped) => {
                prop_assert_eq!(dropped.item, id);
                if let DropReason::QueueFull { .. } = dropped.reason {
                    // Refused for bytes only if all lower-lane bytes could not make room.
                    prop_assert!(100 - before.bytes + lower_bytes < size);
                }
            }
        }
        let after = q.stats();
        // Lowest lane first, so the model of the lanes below is current when a lane is checked.
        for l in Lane::ALL.into_iter().rev() {
            let evicted = after.lane(l).evicted - before.lane(l).evicted;
            prop_assert!(evicted == 0 || l > lane, "{:?} evicted by {:?}", l, lane);
            // Lowest lane first: a lane gives way only once every lane below it is empty.
            let below_left = model[l.index() + 1..].iter().any(|m| !m.is_empty());
            prop_assert!(
                evicted == 0 || !below_left,
                "{:?} evicted before lower lanes",
                l
            );
            for _ in 0..evicted {
                model[l.index()].pop_front();
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn random_pushes_and_pops_respect_bounds_and_keep_control(
            ops in prop::collection::vec(op(), 1..200),
            fairness in 2u32..5,
        ) {
            let cfg = config(fairness);
            let mut q = SendQueue::new(cfg).unwrap();
            let mut model: [VecDeque<(u64, usize)>; LANES] = Default::default();
            let mut passed_over = 0;
            for (id, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Push(lane, size) => check_push(&mut q, &mut model, lane, id as u64, size)?,
                    Op::Pop => {
                        let top = model.iter().position(|l| !l.is_empty());
                        let lower_waiting =
                            top.is_some_and(|t| model[t + 1..].iter().any(|l| !l.is_empty()));
                        let popped = q.pop();
                        let Some(top) = top else {
                            prop_assert!(popped.is_none());
                            continue;
                        };
                        let (lane, item) = popped.expect("model says non-empty");
                        let front = model[lane.index()].pop_front().expect("lane non-empty");
                        prop_assert_eq!(item, front.0, "FIFO within a lane");
                        if lane.index() == top && lower_waiting {
                            passed_over += 1;
                        } else {
                            passed_over = 0;
                        }
                        prop_assert!(passed_over < fairness, "lower lanes starved");
                    }
                }
                let stats = q.stats();
                prop_assert!(stats.bytes <= cfg.max_bytes);
                for l in Lane::ALL {
                    let m = &model[l.index()];
                    let s = stats.lane(l);
                    prop_assert!(m.len() <= cfg.capacity(l));
                    prop_assert_eq!(stats.lens[l.index()], m.len());
                    prop_assert_eq!(s.pushed, s.popped + s.evicted + m.len() as u64);
                }
                prop_assert_eq!(stats.lane(Lane::Control).evicted, 0);
                let model_bytes: usize = model.iter().flatten().map(|(_, s)| s).sum();
                prop_assert_eq!(stats.bytes, model_bytes);
            }
        }
    }
}
