//! Anti-entropy: what gossip lost is found by comparing digests, the sorted 8-byte prefixes
//! of the hashes a node holds (or is fetching) in one slice of the hash space.
//!
//! - Every `anti_entropy_interval` a node sends one random active peer a **recent digest**:
//!   the hashes it first saw within `anti_entropy_recent`. Losses are repaired within seconds,
//!   and each hash goes into a handful of digests; listing the whole window every time cost
//!   more bytes than the announcements at a steady 1 tx/s (each hash in ~120 digests).
//! - Older gaps (a partition, a restart, a node offline for a while) are found by **sweeps**:
//!   digests of everything first seen within `anti_entropy_window`, one slice after the other
//!   until the hash space is covered, so they walk the window however many transactions it
//!   holds. A node sweeps each new active peer (links change when a partition heals or a node
//!   comes back), a peer whose repairs filled a reply (it has more to give), and, as a
//!   backstop, a random peer every `anti_entropy_sweep_interval`.
//!
//! The peer answers with a `DigestReply`: full entries for its hashes in the slice that the
//! digest lacks (the sender fetches them from it) and the prefixes it lacks itself (the sender
//! answers those with a reply carrying the full entries, which asks for nothing, so exchanges
//! end there). To a recent digest it offers only hashes from the younger two thirds of the
//! span: one it saw near the old end the sender may have seen earlier and already dropped
//! from its digests. Hashes first seen less than `anti_entropy_settle` ago stay out of both
//! sides: gossip is most likely still carrying them, and offering them would only race it.
//!
//! Each message is bounded ([`MAX_DIGEST_ENTRIES`], [`MAX_REPAIR_ENTRIES`]), and so is the work
//! one digest costs ([`MAX_DIGEST_SCAN`]); a node far behind catches up over several rounds.

use std::collections::BTreeSet;
use std::time::Duration;

use rand::Rng;

use super::types::prefix_of;
use super::{
    AnnounceEntry, Conduct, Gossip, GossipMessage, HashPrefix, MAX_DIGEST_ENTRIES,
    MAX_REPAIR_ENTRIES, Output, PrefixRange, Timer,
};
use crate::model::{PeerId, TxId};
use crate::time::Instant;

/// Known hashes examined to build or answer one digest: the window may hold up to
/// `max_known` hashes and older ones sit between them in hash order.
pub const MAX_DIGEST_SCAN: usize = 16 * MAX_DIGEST_ENTRIES;

/// Departed gossip peers remembered (a few times the gossip peers a node has).
pub const MAX_DEPARTED: usize = 64;

impl Gossip {
    /// Known hashes first seen in `[now - span, now - settle]` go into digests and replies.
    fn span(&self, now: Instant, span: Duration) -> (Instant, Instant) {
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let at = now.as_millis();
        let since = at.saturating_sub(millis(span));
        let until = at.saturating_sub(millis(self.config.anti_entropy_settle));
        (Instant::from_millis(since), Instant::from_millis(until))
    }

    /// Remembers peers that left the gossip peers for the younger two thirds of the recent
    /// span, at most [`MAX_DEPARTED`] (the oldest are forgotten: they will be swept if they
    /// come back).
    pub(super) fn note_departures(&mut self, left: Vec<PeerId>, now: Instant) {
        let recent = self.config.anti_entropy_recent;
        let (since, _) = self.span(now, recent - recent / 3);
        self.departed.retain(|_, at| *at >= since);
        for peer in left {
            if self.departed.len() >= MAX_DEPARTED
                && let Some(oldest) = self.departed.iter().min_by_key(|(_, at)| **at)
            {
                let oldest = oldest.0.clone();
                self.departed.remove(&oldest);
            }
            self.departed.insert(peer, now);
        }
    }

    /// Queues a sweep of `peer` from the start of the hash space, unless one is queued.
    pub(super) fn owe_sweep(&mut self, peer: &PeerId) {
        let queued = self.sweeps.iter().any(|(p, _)| p == peer);
        if self.config.anti_entropy_interval.is_some() && !queued {
            self.sweeps.push_back((peer.clone(), 0));
        }
    }

    pub(super) fn on_anti_entropy_timer(&mut self, now: Instant) {
        let Some(every) = self.config.anti_entropy_interval else {
            return;
        };
        self.schedule(now.saturating_add(every), Timer::AntiEntropy);
        if self.peers.is_empty() {
            return;
        }
        if let Some((to, first)) = self.sweeps.pop_front() {
            let (range, prefixes) = self.sweep_slice(now, first);
            if let Some(next) = range.last.checked_add(1) {
                self.sweeps.push_back((to.clone(), next));
            }
            self.send_digest(to, range, prefixes, None);
        }
        let to = self.peers[self.rng.random_range(0..self.peers.len())].clone();
        if now >= self.next_sweep {
            let (range, prefixes) = self.sweep_slice(now, self.digest_cursor);
            match range.last.checked_add(1) {
                Some(next) => self.digest_cursor = next,
                None => {
                    self.digest_cursor = 0;
                    let every = self.config.anti_entropy_sweep_interval;
                    self.next_sweep = now.saturating_add(every);
                }
            }
            self.send_digest(to, range, prefixes, None);
        } else {
            let (range, prefixes) = self.recent_slice(now, self.recent_cursor);
            self.recent_cursor = range.last.checked_add(1).unwrap_or(0);
            let recent = Some(self.config.anti_entropy_recent);
            self.send_digest(to, range, prefixes, recent);
        }
    }

    fn send_digest(
        &mut self,
        to: PeerId,
        range: PrefixRange,
        prefixes: Vec<HashPrefix>,
        recent: Option<Duration>,
    ) {
        self.stats.digests_sent += 1;
        self.stats.sweeps_sent += u64::from(recent.is_none());
        let message = GossipMessage::Digest {
            range,
            prefixes,
            recent,
        };
        self.push(Output::Send { to, message });
    }

    /// Moves the dedup's recent index to the span recent digests list.
    fn track_recent(&mut self, now: Instant) {
        let (since, until) = self.span(now, self.config.anti_entropy_recent);
        self.dedup.track_recent(since, until);
    }

    /// A recent digest's slice starting at `first`: the prefixes of the hashes first seen
    /// within `anti_entropy_recent` (from the recent index, tracked to `now` first) and of
    /// the pending ones, up to [`MAX_DIGEST_ENTRIES`]. Both lists are in id order, so only
    /// the slice's first entries of each are looked at.
    fn recent_slice(&mut self, now: Instant, first: HashPrefix) -> (PrefixRange, Vec<HashPrefix>) {
        self.track_recent(now);
        let (since, until) = self.span(now, self.config.anti_entropy_recent);
        let rest = PrefixRange::starting_at(first);
        let taken = MAX_DIGEST_ENTRIES + 1;
        let recent: Vec<HashPrefix> = match self.dedup.recent_in_range(rest, since, until) {
            Some(ids) => ids.take(taken).map(|(h, _)| prefix_of(h)).collect(),
            None => Vec::new(),
        };
        let pending = self.pending.range(rest.ids()).take(taken);
        let mut prefixes = recent;
        prefixes.extend(pending.map(|(h, _)| prefix_of(h)));
        prefixes.sort_unstable();
        prefixes.dedup();
        match prefixes.get(MAX_DIGEST_ENTRIES) {
            // Sorted, distinct and at least `first`: the one past the limit is above `first`.
            Some(&cut) => {
                prefixes.truncate(MAX_DIGEST_ENTRIES);
                let range = PrefixRange {
                    first,
                    last: cut - 1,
                };
                (range, prefixes)
            }
            None => (rest, prefixes),
        }
    }

    /// A sweep's slice starting at `first`: every prefix of a window hash or a pending hash,
    /// in order, until [`MAX_DIGEST_ENTRIES`] are taken or [`MAX_DIGEST_SCAN`] hashes
    /// examined; the slice ends just before the first prefix left out (or at the end of the
    /// space).
    fn sweep_slice(&self, now: Instant, first: HashPrefix) -> (PrefixRange, Vec<HashPrefix>) {
        let (since, until) = self.span(now, self.config.anti_entropy_window);
        let rest = PrefixRange::starting_at(first);
        let mut known = self
            .dedup
            .in_range(rest)
            .map(|(h, tx)| (*h, (since..=until).contains(&tx.seen_at)))
            .peekable();
        let mut pending = self
            .pending
            .range(rest.ids())
            .map(|(h, _)| (*h, true))
            .peekable();
        let mut prefixes: Vec<HashPrefix> = Vec::new();
        let mut scanned = 0;
        loop {
            let next: Option<(TxId, bool)> = match (known.peek(), pending.peek()) {
                (Some(k), Some(p)) if k.0 <= p.0 => known.next(),
                (Some(_), Some(_)) | (None, Some(_)) => pending.next(),
                (Some(_), None) => known.next(),
                (None, None) => None,
            };
            let Some((id, wanted)) = next else {
                return (rest, prefixes);
            };
            let prefix = prefix_of(&id);
            let new_prefix = prefixes.last() != Some(&prefix);
            let full = prefixes.len() >= MAX_DIGEST_ENTRIES || scanned >= MAX_DIGEST_SCAN;
            if full && new_prefix && prefix > first {
                // `prefix - 1` cannot underflow: prefix > first >= 0.
                let range = PrefixRange {
                    first,
                    last: prefix - 1,
                };
                return (range, prefixes);
            }
            scanned += 1;
            if wanted && new_prefix {
                prefixes.push(prefix);
            }
        }
    }

    pub(super) fn on_digest(
        &mut self,
        from: &PeerId,
        range: PrefixRange,
        mut prefixes: Vec<HashPrefix>,
        recent: Option<Duration>,
        now: Instant,
    ) {
        self.stats.digests_received += 1;
        if range.first > range.last {
            self.stats.refused_bad_digests += 1;
            self.note_conduct(from, Conduct::Malformed);
            return;
        }
        if prefixes.len() > MAX_DIGEST_ENTRIES {
            self.stats.dropped_over_message_limit += (prefixes.len() - MAX_DIGEST_ENTRIES) as u64;
            prefixes.truncate(MAX_DIGEST_ENTRIES);
        }
        let theirs: BTreeSet<HashPrefix> = prefixes
            .into_iter()
            .filter(|p| range.contains(*p))
            .collect();
        self.track_recent(now);
        let missing = self.offer(range, &theirs, recent, now);
        let wanted: Vec<HashPrefix> = theirs
            .into_iter()
            .filter(|p| {
                let one = PrefixRange::single(*p);
                self.dedup.by_prefix(*p).is_none() && self.pending.range(one.ids()).next().is_none()
            })
            .take(MAX_REPAIR_ENTRIES)
            .collect();
        if missing.is_empty() && wanted.is_empty() {
            return;
        }
        let message = GossipMessage::DigestReply { missing, wanted };
        self.push(Output::Send {
            to: from.clone(),
            message,
        });
    }

    /// What a digest lacks of ours in its `range`: the full entries to offer, at most
    /// [`MAX_REPAIR_ENTRIES`] after examining at most [`MAX_DIGEST_SCAN`] hashes. To a recent
    /// digest, the hashes of the younger two thirds of its span, from the recent index when
    /// it holds them (the slice only, from its top: a sweep's reply takes from the bottom, so
    /// a peer far behind that sent both in one round is not offered the same hashes twice),
    /// else by the time index (the span).
    fn offer(
        &self,
        range: PrefixRange,
        theirs: &BTreeSet<HashPrefix>,
        recent: Option<Duration>,
        now: Instant,
    ) -> Vec<AnnounceEntry> {
        let lacking = |h: &TxId| {
            let prefix = prefix_of(h);
            range.contains(prefix) && !theirs.contains(&prefix)
        };
        let entry = |(_, tx): (&TxId, &super::dedup::KnownTx)| tx.entry(1);
        let window = self.config.anti_entropy_window;
        let Some(span) = recent else {
            let (since, until) = self.span(now, window);
            return self
                .dedup
                .in_range(range)
                .take(MAX_DIGEST_SCAN)
                .filter(|(_, tx)| (since..=until).contains(&tx.seen_at))
                .filter(|(h, _)| lacking(h))
                .take(MAX_REPAIR_ENTRIES)
                .map(entry)
                .collect();
        };
        let offered = span.min(window);
        let (since, until) = self.span(now, offered - offered / 3);
        if let Some(ids) = self.dedup.recent_in_range(range, since, until) {
            return ids
                .rev()
                .take(MAX_DIGEST_SCAN)
                .filter(|(h, _)| !theirs.contains(&prefix_of(h)))
                .filter_map(|(h, _)| self.dedup.get(h))
                .take(MAX_REPAIR_ENTRIES)
                .map(|tx| tx.entry(1))
                .collect();
        }
        self.dedup
            .seen_between(since, until)
            .take(MAX_DIGEST_SCAN)
            .filter(|(h, _)| lacking(h))
            .take(MAX_REPAIR_ENTRIES)
            .map(entry)
            .collect()
    }

    pub(super) fn on_digest_reply(
        &mut self,
        from: &PeerId,
        missing: Vec<AnnounceEntry>,
        mut wanted: Vec<HashPrefix>,
        now: Instant,
    ) {
        // A full reply means the peer had more to offer: sweep it until it has not.
        let active = self.peers.binary_search(from).is_ok();
        if missing.len() >= MAX_REPAIR_ENTRIES && active {
            self.owe_sweep(from);
        }
        self.on_announce(from, missing, true, now);
        if wanted.len() > MAX_REPAIR_ENTRIES {
            self.stats.dropped_over_message_limit += (wanted.len() - MAX_REPAIR_ENTRIES) as u64;
            wanted.truncate(MAX_REPAIR_ENTRIES);
        }
        let entries: Vec<AnnounceEntry> = wanted
            .into_iter()
            .filter_map(|p| self.dedup.by_prefix(p))
            .map(|(_, tx)| tx.entry(1))
            .collect();
        if entries.is_empty() {
            return;
        }
        let message = GossipMessage::DigestReply {
            missing: entries,
            wanted: Vec::new(),
        };
        self.push(Output::Send {
            to: from.clone(),
            message,
        });
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, VecDeque};
    use std::time::Duration;

    use super::super::test_util::*;
    use super::super::*;
    use crate::model::TxHash;

    /// Node 0 holding 20 submitted transactions, node 1 holding none; each the other's peer.
    fn pair() -> ([Gossip; 2], BTreeMap<TxId, Vec<u8>>) {
        let config = GossipConfig::default();
        let mut full = node(0, [1], config.clone());
        let mut bodies = BTreeMap::new();
        for n in 0..20 {
            let out = full.submit(body(n), None, ms(100)).expect("valid");
            bodies.insert(out.hash.id(), body(n));
        }
        drain(&mut full);
        ([unswept(full), unswept(node(1, [0], config))], bodies)
    }

    /// The node without the sweeps it owes its new peers (tested on their own below), so its
    /// rounds send recent digests only.
    fn unswept(mut g: Gossip) -> Gossip {
        g.sweeps.clear();
        g
    }

    /// The digests among `out`: (range, prefixes, recent span).
    fn digests(out: &[Output]) -> Vec<(PrefixRange, Vec<HashPrefix>, Option<Duration>)> {
        sends(out)
            .into_iter()
            .filter_map(|(_, m)| match m {
                GossipMessage::Digest {
                    range,
                    prefixes,
                    recent,
                } => Some((range, prefixes, recent)),
                _ => None,
            })
            .collect()
    }

    /// Fires node `n`'s anti-entropy timer, then carries messages between the two and answers
    /// fetches from `bodies` until nothing moves. Returns the outputs node 1 produced.
    fn round(
        nodes: &mut [Gossip; 2],
        n: usize,
        mut now: u64,
        bodies: &BTreeMap<TxId, Vec<u8>>,
    ) -> Vec<Output> {
        nodes[n].handle_timer(Timer::AntiEntropy, ms(now));
        let mut queue: VecDeque<(usize, Output)> =
            drain(&mut nodes[n]).into_iter().map(|o| (n, o)).collect();
        let mut seen_by_1 = Vec::new();
        while let Some((at, output)) = queue.pop_front() {
            now += 1;
            let target = match output {
                Output::Send { message, .. } => {
                    nodes[1 - at].handle_message(&id(at), message, ms(now));
                    1 - at
                }
                Output::Fetch { from, id, .. } => {
                    let body = bodies.get(&id).cloned().ok_or(FetchFailure::NotFound);
                    nodes[at].handle_fetched(&from, id, body, ms(now));
                    at
                }
                _ => continue,
            };
            let out = drain(&mut nodes[target]);
            if target == 1 {
                seen_by_1.extend(out.iter().cloned());
            }
            queue.extend(out.into_iter().map(|o| (target, o)));
        }
        seen_by_1
    }

    #[test]
    fn an_empty_digest_brings_a_node_everything() {
        let (mut nodes, bodies) = pair();
        let out = round(&mut nodes, 1, 5000, &bodies);
        assert_eq!(delivered(&out).len(), 20);
        assert_eq!(nodes[1].known_count(), 20);
        assert_eq!(nodes[1].stats().anti_entropy_repairs, 20);
        assert!(events(&out).contains(&GossipEvent::Repaired {
            hash: TxHash::of(&body(0)),
            from: id(0)
        }));
    }

    #[test]
    fn a_digest_of_what_the_peer_lacks_is_answered_with_wants() {
        let (mut nodes, bodies) = pair();
        let out = round(&mut nodes, 0, 5000, &bodies);
        assert_eq!(delivered(&out).len(), 20);
        assert_eq!(nodes[1].stats().anti_entropy_repairs, 20);
        assert_eq!(nodes[0].stats().digests_sent, 1);
        assert_eq!(nodes[1].stats().digests_received, 1);
    }

    #[test]
    fn nodes_in_sync_exchange_only_the_digest() {
        let (mut nodes, bodies) = pair();
        round(&mut nodes, 1, 5000, &bodies);
        let out = round(&mut nodes, 0, 5000, &bodies);
        assert!(sends(&out).is_empty(), "no reply: {out:?}");
        assert_eq!(nodes[0].stats().digests_sent, 1);
        assert_eq!(nodes[1].stats().digests_received, 1);
    }

    #[test]
    fn recent_digests_list_recent_hashes_and_sweeps_the_window() {
        let (mut nodes, _) = pair();
        let listed = |g: &mut Gossip, at: u64| {
            g.handle_timer(Timer::AntiEntropy, ms(at));
            digests(&drain(g))
                .into_iter()
                .map(|(_, prefixes, recent)| (prefixes.len(), recent.is_some()))
                .collect::<Vec<_>>()
        };
        // Submitted at 100 ms: recent until 30.1 s, in the window until 10 min 0.1 s.
        assert_eq!(listed(&mut nodes[0], 5000), [(20, true)]);
        assert_eq!(listed(&mut nodes[0], 30_101), [(0, true)]);
        nodes[0].owe_sweep(&id(1));
        assert_eq!(listed(&mut nodes[0], 40_000), [(20, false), (0, true)]);
        nodes[0].owe_sweep(&id(1));
        // Out of the window; the backstop sweep (due every 5 min) replaces the recent digest.
        let late = 100 + 10 * 60 * 1000 + 1;
        assert_eq!(listed(&mut nodes[0], late), [(0, false), (0, false)]);
    }

    #[test]
    fn a_new_peer_is_swept_at_once() {
        let (mut nodes, _) = pair();
        // A minute on, the transactions are out of recent digests.
        nodes[0].set_peers(&[id(1), id(2)], ms(60_000));
        nodes[0].handle_timer(Timer::AntiEntropy, ms(60_000));
        let out = drain(&mut nodes[0]);
        let sweep: Vec<_> = sends(&out)
            .into_iter()
            .filter(|(_, m)| matches!(m, GossipMessage::Digest { recent: None, .. }))
            .collect();
        assert_eq!(sweep.len(), 1, "{out:?}");
        assert_eq!(sweep[0].0, id(2), "the new peer, not the old one");
        assert!(
            matches!(&sweep[0].1, GossipMessage::Digest { prefixes, .. } if prefixes.len() == 20)
        );
        nodes[0].handle_timer(Timer::AntiEntropy, ms(65_000));
        let later = digests(&drain(&mut nodes[0]));
        assert!(
            later.iter().all(|(_, _, recent)| recent.is_some()),
            "one sweep"
        );
    }

    #[test]
    fn replies_to_a_recent_digest_offer_the_younger_two_thirds_of_its_span() {
        let (mut nodes, _) = pair();
        let empty_recent = |secs| GossipMessage::Digest {
            range: PrefixRange::FULL,
            prefixes: vec![],
            recent: Some(Duration::from_secs(secs)),
        };
        // Seen at 100 ms, asked at 25.1 s: 25 s old, in the older third of a 30 s span, where
        // the sender may have seen it earlier and dropped it.
        nodes[0].handle_message(&id(1), empty_recent(30), ms(25_100));
        assert!(sends(&drain(&mut nodes[0])).is_empty());
        nodes[0].handle_message(&id(1), empty_recent(60), ms(25_100));
        let reply = sends(&drain(&mut nodes[0]));
        assert!(
            matches!(&reply[0].1, GossipMessage::DigestReply { missing, .. } if missing.len() == 20),
            "{reply:?}"
        );
    }

    #[test]
    fn a_full_reply_is_followed_by_sweeps_until_the_peer_has_no_more() {
        let count = 3 * MAX_REPAIR_ENTRIES + 10;
        let gaps: Vec<usize> = (0..count).collect();
        let (mut nodes, bodies) = large_pair(count, &gaps);
        assert_eq!(nodes[0].known_count(), 0);
        let mut rounds = 0;
        while nodes[0].known_count() < count && rounds < 10 {
            rounds += 1;
            round(&mut nodes, 0, 5000 * rounds, &bodies);
        }
        assert_eq!(nodes[0].known_count(), count);
        // A recent digest each round brings 512; the first full reply adds a sweep to each
        // round after it, which brings 512 more.
        assert_eq!(rounds, 3);
    }

    #[test]
    fn the_backstop_sweep_comes_every_sweep_interval() {
        let (mut nodes, _) = pair();
        let every = GossipConfig::default().anti_entropy_sweep_interval;
        let sweeps_until = |g: &mut Gossip, from: u64, to: u64| {
            (from..to)
                .step_by(5000)
                .map(|at| {
                    g.handle_timer(Timer::AntiEntropy, ms(at));
                    let d = digests(&drain(g));
                    d.iter().filter(|(_, _, recent)| recent.is_none()).count()
                })
                .sum::<usize>()
        };
        let end = every.as_millis() as u64;
        assert_eq!(sweeps_until(&mut nodes[0], 5000, end), 0);
        assert_eq!(sweeps_until(&mut nodes[0], end, 2 * end), 1);
    }

    /// Two nodes holding `count` transactions first seen at 100 ms, except that node 0 lacks
    /// those in `gaps`.
    fn large_pair(count: usize, gaps: &[usize]) -> ([Gossip; 2], BTreeMap<TxId, Vec<u8>>) {
        let config = GossipConfig::default();
        let mut nodes = [node(0, [1], config.clone()), node(1, [0], config)];
        let mut bodies = BTreeMap::new();
        for n in 0..count {
            bodies.insert(TxHash::of(&body(n)).id(), body(n));
            for (i, g) in nodes.iter_mut().enumerate() {
                if i == 1 || !gaps.contains(&n) {
                    g.submit(body(n), None, ms(100)).expect("valid");
                }
            }
        }
        for g in &mut nodes {
            drain(g);
        }
        (nodes.map(unswept), bodies)
    }

    fn digest_of(out: &[Output]) -> (PrefixRange, Vec<HashPrefix>) {
        match digests(out).as_slice() {
            [(range, prefixes, _)] => (*range, prefixes.clone()),
            other => panic!("expected one digest, got {other:?}"),
        }
    }

    #[test]
    fn successive_digests_walk_a_window_larger_than_one_digest() {
        let (mut nodes, _) = large_pair(5000, &[]);
        let mut next_first = 0;
        let mut covered = 0;
        for k in 0..3 {
            nodes[0].handle_timer(Timer::AntiEntropy, ms(5000 * (k + 1)));
            let (range, prefixes) = digest_of(&drain(&mut nodes[0]));
            assert_eq!(range.first, next_first, "slices are contiguous");
            assert!(prefixes.len() <= MAX_DIGEST_ENTRIES);
            assert!(prefixes.windows(2).all(|w| w[0] < w[1]), "ascending");
            assert!(prefixes.iter().all(|p| range.contains(*p)));
            covered += prefixes.len();
            if range.last == HashPrefix::MAX {
                assert_eq!(k, 2, "5,000 hashes take three digests of at most 2,048");
                break;
            }
            next_first = range.last + 1;
        }
        assert_eq!(covered, 5000, "every hash in exactly one slice");
        nodes[0].handle_timer(Timer::AntiEntropy, ms(20_000));
        let (range, _) = digest_of(&drain(&mut nodes[0]));
        assert_eq!(range.first, 0, "the walk starts over");
    }

    #[test]
    fn an_old_gap_is_repaired_however_many_newer_transactions_there_are() {
        // Newest-first digests of 2,048 never mentioned these: 5,000 newer hashes buried them.
        let gaps = [3, 2500, 4999];
        for sender in [0, 1] {
            let (mut nodes, bodies) = large_pair(5000, &gaps);
            for k in 0..3 {
                round(&mut nodes, sender, 5000 * (k + 1), &bodies);
            }
            assert_eq!(
                nodes[0].known_count(),
                5000,
                "digests sent by node {sender}"
            );
            for n in gaps {
                assert!(nodes[0].is_known(&TxHash::of(&body(n)).id()));
            }
            assert_eq!(nodes[0].stats().anti_entropy_repairs, 3);
        }
    }

    #[test]
    fn fresh_hashes_stay_out_of_digests_and_replies() {
        let config = GossipConfig::default();
        let mut nodes = [node(0, [1], config.clone()), node(1, [0], config)].map(unswept);
        let mut bodies = BTreeMap::new();
        for n in 0..20 {
            // 200 ms before the first digest: within the 300 ms settle time.
            let out = nodes[0].submit(body(n), None, ms(4800)).expect("valid");
            bodies.insert(out.hash.id(), body(n));
        }
        drain(&mut nodes[0]);
        nodes[0].handle_timer(Timer::AntiEntropy, ms(5000));
        let (_, prefixes) = digest_of(&drain(&mut nodes[0]));
        assert!(prefixes.is_empty(), "{prefixes:?}");
        let out = round(&mut nodes, 1, 5000, &bodies);
        assert!(delivered(&out).is_empty(), "node 0 does not offer them yet");
        let out = round(&mut nodes, 1, 10_000, &bodies);
        assert_eq!(delivered(&out).len(), 20, "settled: offered");
    }

    #[test]
    fn a_digest_with_an_empty_range_is_refused() {
        let (mut nodes, _) = pair();
        let range = PrefixRange { first: 9, last: 8 };
        let digest = GossipMessage::Digest {
            range,
            prefixes: vec![],
            recent: None,
        };
        nodes[0].handle_message(&id(1), digest, ms(5000));
        assert!(sends(&drain(&mut nodes[0])).is_empty());
        assert_eq!(nodes[0].stats().refused_bad_digests, 1);
    }
}
