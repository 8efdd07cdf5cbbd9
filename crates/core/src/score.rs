//! The peer score and the automatic bans it leads to.
//!
//! [`Reputation`] keeps one number per peer id, in the spirit of gossipsub v1.1's P1-P7 but
//! far smaller: offences ([`Offence`]) subtract a weight, useful first deliveries of a
//! transaction add a little (capped, so a peer cannot bank credit for a later attack), and
//! the whole score decays towards 0 with a half-life, so an old mistake is forgiven. When a
//! penalty takes a score below [`ScoreConfig::ban_threshold`] the node bans the peer: for
//! `ban_base`, doubled on every repeat ("strike") up to `ban_cap`. A peer that never proved
//! its id can make a new one for free, its address costs more: its offences are charged to
//! the address it called from too ([`BanSubject::Address`]), so identities made by the
//! dozen from one address add up to a ban of that address (the simulator's eclipse scenario
//! was never banned while only ids were scored). Peers behind one NAT share that score.
//!
//! Where the weights came from (ours, not gossipsub's, whose weights are per topic):
//! - `wrong_body` (-40): a body whose SHA-256 does not match the hash is never an accident of
//!   the network (TLS and TCP check bytes); two in a half-life ban (gossipsub's P4, invalid
//!   messages, is the heaviest of its penalties too).
//! - `protocol_violation` (-20): a malformed message (empty entries, over-long register ids,
//!   more entries than a message may carry, an empty digest range) is a bug or an attack;
//!   three ban. Announcing more than our `max_transaction_size` is *not* one (peers may be
//!   configured differently).
//! - `unserved` (-10): announcing a hash and then answering NOT_FOUND; a peer that restarted
//!   without its store may do it a few times honestly, so five are needed (P3-like).
//! - `limit_exceeded` (-10): rate limits are refused at the door already; the node transport
//!   reports one per ten refusals of a peer, so six reports (60 refusals within a half-life,
//!   when the limits sit above honest peak rates) mean it ignores them.
//! - `first_delivery` (+1, capped at +20): gossipsub's P2 (first message deliveries), capped
//!   like its `first_message_deliveries_cap`.
//!
//! Memory is bounded: at most `max_tracked` scores (those decayed to nothing go first, then
//! the one nearest 0; counted in `evicted`), at most `MAX_STRIKES` strike records and
//! `MAX_ADDRESS_BANS` address bans.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::model::{PeerId, Timestamp};
use crate::time::{Instant, Now};

/// Strike records kept (a banned subject's count, so the next ban doubles).
pub const MAX_STRIKES: usize = 4096;

/// Addresses banned at once; past it the ban covers the id only (counted).
pub const MAX_ADDRESS_BANS: usize = 4096;

/// A score this close to 0 has decayed to nothing: its entry may be dropped.
const NEGLIGIBLE: f64 = 0.5;

/// What a peer did wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Offence {
    /// Served (or pushed) a body whose hash is not the one announced.
    WrongBody,
    /// Announced a transaction, then answered NOT_FOUND when asked for it.
    Unserved,
    /// Went past one of the node's per-peer limits (reported by the transport).
    LimitExceeded,
    /// Sent a malformed message.
    ProtocolViolation,
}

impl Offence {
    pub const ALL: [Offence; 4] = [
        Offence::WrongBody,
        Offence::Unserved,
        Offence::LimitExceeded,
        Offence::ProtocolViolation,
    ];

    /// The label of metrics and ban reasons.
    pub fn as_str(self) -> &'static str {
        match self {
            Offence::WrongBody => "wrong_body",
            Offence::Unserved => "unserved",
            Offence::LimitExceeded => "limit_exceeded",
            Offence::ProtocolViolation => "protocol_violation",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Knobs of the score; see the module doc for where each number came from.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreConfig {
    /// Off: offences are counted, nobody is banned automatically.
    pub enabled: bool,
    /// A penalty that takes the score below this bans the peer.
    pub ban_threshold: f64,
    /// Time for a score to decay halfway to 0. Ten minutes: gossipsub's decay intervals
    /// forgive in minutes, and a ban-worthy burst must fall within one.
    pub half_life: Duration,
    pub wrong_body: f64,
    pub unserved: f64,
    pub limit_exceeded: f64,
    pub protocol_violation: f64,
    pub first_delivery: f64,
    /// Highest score a peer can reach with deliveries.
    pub max_positive: f64,
    /// Scores kept at most.
    pub max_tracked: usize,
    /// First ban's length (one minute: long enough to stop a flood, short enough that a
    /// mistaken ban of an honest peer costs little), doubled per strike...
    pub ban_base: Duration,
    /// ... up to this (a day, as Bitcoin Core's default ban time).
    pub ban_cap: Duration,
    /// How long a strike count outlives its ban's end before it is forgotten (a week).
    pub strikes_kept_for: Duration,
}

impl Default for ScoreConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            ban_threshold: -50.0,
            half_life: Duration::from_secs(10 * 60),
            wrong_body: 40.0,
            unserved: 10.0,
            limit_exceeded: 10.0,
            protocol_violation: 20.0,
            first_delivery: 1.0,
            max_positive: 20.0,
            max_tracked: 4096,
            ban_base: Duration::from_secs(60),
            ban_cap: Duration::from_secs(24 * 60 * 60),
            strikes_kept_for: Duration::from_secs(7 * 24 * 60 * 60),
        }
    }
}

impl ScoreConfig {
    fn weight(&self, offence: Offence) -> f64 {
        match offence {
            Offence::WrongBody => self.wrong_body,
            Offence::Unserved => self.unserved,
            Offence::LimitExceeded => self.limit_exceeded,
            Offence::ProtocolViolation => self.protocol_violation,
        }
    }
}

/// What a ban covers: a verified peer's id, or an unverified peer's address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BanSubject {
    Peer(PeerId),
    Address(String),
}

impl BanSubject {
    /// `peer:<id>` or `ip:<address>`, as stored; [`BanSubject::parse`] reads it back.
    pub fn key(&self) -> String {
        self.to_string()
    }

    pub fn parse(key: &str) -> Option<Self> {
        if let Some(id) = key.strip_prefix("peer:") {
            return id.parse().ok().map(BanSubject::Peer);
        }
        let ip = key.strip_prefix("ip:")?;
        (!ip.is_empty() && ip.len() <= 64).then(|| BanSubject::Address(ip.to_owned()))
    }
}

impl fmt::Display for BanSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BanSubject::Peer(id) => write!(f, "peer:{id}"),
            BanSubject::Address(ip) => write!(f, "ip:{ip}"),
        }
    }
}

/// An automatic ban, as the runtime persists and logs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanRecord {
    pub subject: BanSubject,
    /// The offence that took the score below the threshold.
    pub reason: String,
    pub until: Timestamp,
    /// Bans of this subject so far, this one included: the next lasts twice as long.
    pub strikes: u32,
}

/// Counters the daemon exports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScoreStats {
    /// Penalties by offence, in [`Offence::ALL`] order.
    pub penalties: [u64; 4],
    pub rewards: u64,
    /// Scores dropped to keep `max_tracked`.
    pub evicted: u64,
    /// Automatic bans, ids and addresses.
    pub bans: u64,
    /// Address bans not kept because `MAX_ADDRESS_BANS` were in force.
    pub address_bans_refused: u64,
    /// Calls refused because their address is banned.
    pub refused_banned_address: u64,
    /// Ban records the node could not queue for the runtime (never expected: it drains them
    /// after every input).
    pub outputs_dropped: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    value: f64,
    at: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Strike {
    count: u32,
    until: Timestamp,
}

/// Scores, strike counts and address bans of one node. Sans-IO: every call takes `now`.
#[derive(Debug)]
pub struct Reputation {
    config: ScoreConfig,
    /// By id, and by address for peers that never proved their id (see [`BanSubject`]).
    scores: BTreeMap<BanSubject, Entry>,
    strikes: BTreeMap<BanSubject, Strike>,
    /// Banned addresses and until when (wall clock: persisted).
    addresses: BTreeMap<String, Timestamp>,
    stats: ScoreStats,
}

impl Reputation {
    pub fn new(config: ScoreConfig) -> Self {
        Self {
            config,
            scores: BTreeMap::new(),
            strikes: BTreeMap::new(),
            addresses: BTreeMap::new(),
            stats: ScoreStats::default(),
        }
    }

    pub fn config(&self) -> &ScoreConfig {
        &self.config
    }

    pub fn stats(&self) -> &ScoreStats {
        &self.stats
    }

    /// Scores held (at most `max_tracked`).
    pub fn tracked(&self) -> usize {
        self.scores.len()
    }

    /// `subject`'s score at `now` (0 when never scored).
    pub fn score(&self, subject: &BanSubject, now: Instant) -> f64 {
        self.scores
            .get(subject)
            .map_or(0.0, |e| self.decayed(*e, now))
    }

    /// Strikes recorded against `subject`.
    pub fn strikes(&self, subject: &BanSubject) -> u32 {
        self.strikes.get(subject).map_or(0, |s| s.count)
    }

    pub fn is_banned_address(&self, ip: &str, now: Timestamp) -> bool {
        self.addresses.get(ip).is_some_and(|until| *until > now)
    }

    /// Subtracts `offence`'s weight; true when the score is now below the ban threshold.
    pub fn penalize(&mut self, subject: &BanSubject, offence: Offence, now: Instant) -> bool {
        let value = self.add(subject, -self.config.weight(offence), now);
        self.config.enabled && value < self.config.ban_threshold
    }

    /// Counts an offence once, however many subjects it is charged to.
    pub fn count(&mut self, offence: Offence) {
        self.stats.penalties[offence.index()] += 1;
    }

    /// A useful first delivery from `subject`.
    pub fn reward(&mut self, subject: &BanSubject, now: Instant) {
        self.stats.rewards += 1;
        self.add(subject, self.config.first_delivery, now);
    }

    /// Forgets `subject`'s score (an operator lifted its ban).
    pub fn reset(&mut self, subject: &BanSubject) {
        self.scores.remove(subject);
    }

    /// Records a strike against `subject` and returns the ban it earns: `ban_base` doubled
    /// per earlier strike, at most `ban_cap`.
    pub fn strike(&mut self, subject: BanSubject, reason: &str, now: Now) -> BanRecord {
        self.stats.bans += 1;
        let count = self.strikes(&subject).saturating_add(1);
        let until = now.wall.saturating_add(self.ban_length(count));
        self.keep_strike(subject.clone(), Strike { count, until }, now.wall);
        BanRecord {
            subject,
            reason: reason.to_owned(),
            until,
            strikes: count,
        }
    }

    /// How long the `count`th ban lasts.
    pub fn ban_length(&self, count: u32) -> Duration {
        let doublings = count.saturating_sub(1).min(32);
        self.config
            .ban_base
            .saturating_mul(1u32 << doublings.min(31))
            .min(self.config.ban_cap)
    }

    /// Bans address `ip` until `until`; false (counted) when too many are banned.
    pub fn ban_address(&mut self, ip: &str, until: Timestamp, now: Timestamp) -> bool {
        self.addresses.retain(|_, t| *t > now);
        if self.addresses.len() >= MAX_ADDRESS_BANS && !self.addresses.contains_key(ip) {
            self.stats.address_bans_refused += 1;
            return false;
        }
        self.addresses.insert(ip.to_owned(), until);
        true
    }

    pub fn unban_address(&mut self, ip: &str) {
        self.addresses.remove(ip);
    }

    /// Takes a ban persisted in an earlier run: its strike count (so doubling continues) and,
    /// for an address still banned, the ban.
    pub fn restore(&mut self, record: &BanRecord, now: Timestamp) {
        let strike = Strike {
            count: record.strikes,
            until: record.until,
        };
        self.keep_strike(record.subject.clone(), strike, now);
        if let BanSubject::Address(ip) = &record.subject
            && record.until > now
        {
            self.ban_address(ip, record.until, now);
        }
    }

    pub(crate) fn note_output_dropped(&mut self) {
        self.stats.outputs_dropped += 1;
    }

    /// Counts a call refused for its banned address.
    pub fn note_refused_address(&mut self) {
        self.stats.refused_banned_address += 1;
    }

    fn keep_strike(&mut self, subject: BanSubject, strike: Strike, now: Timestamp) {
        let kept = self.config.strikes_kept_for;
        self.strikes
            .retain(|_, s| now.since(s.until) <= kept || s.until > now);
        if self.strikes.len() >= MAX_STRIKES && !self.strikes.contains_key(&subject) {
            // The strike whose ban ended longest ago goes.
            let oldest = self
                .strikes
                .iter()
                .min_by_key(|(_, s)| s.until)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.strikes.remove(&oldest);
            }
        }
        self.strikes.insert(subject, strike);
    }

    fn decayed(&self, entry: Entry, now: Instant) -> f64 {
        let half = self.config.half_life.as_secs_f64();
        if half <= 0.0 {
            return entry.value;
        }
        let age = now.since(entry.at).as_secs_f64();
        entry.value * 0.5f64.powf(age / half)
    }

    /// Adds `delta` to `subject`'s decayed score (capped above at `max_positive`); returns it.
    fn add(&mut self, subject: &BanSubject, delta: f64, now: Instant) -> f64 {
        let current = self.score(subject, now);
        let value = (current + delta).min(self.config.max_positive);
        let known = self.scores.contains_key(subject);
        if !known && self.scores.len() >= self.config.max_tracked {
            self.make_room(now);
        }
        if known || self.scores.len() < self.config.max_tracked.max(1) {
            self.scores
                .insert(subject.clone(), Entry { value, at: now });
        }
        value
    }

    /// Drops every score decayed to nothing; if none has, the one nearest 0.
    fn make_room(&mut self, now: Instant) {
        let before = self.scores.len();
        let half = self.config.half_life;
        let decayed = |e: &Entry| {
            let age = now.since(e.at).as_secs_f64();
            let factor = if half.is_zero() {
                1.0
            } else {
                0.5f64.powf(age / half.as_secs_f64())
            };
            (e.value * factor).abs()
        };
        self.scores.retain(|_, e| decayed(e) >= NEGLIGIBLE);
        if self.scores.len() == before {
            let nearest = self
                .scores
                .iter()
                .min_by(|a, b| decayed(a.1).total_cmp(&decayed(b.1)))
                .map(|(subject, _)| subject.clone());
            if let Some(subject) = nearest {
                self.scores.remove(&subject);
            }
        }
        self.stats.evicted += (before - self.scores.len()) as u64;
    }
}

#[cfg(test)]
mod tests;
