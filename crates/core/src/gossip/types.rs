//! What crosses the boundary of the gossip machine: the messages peers exchange, the outputs
//! the runtime carries out, timers, events, errors and counters.

use std::time::Duration;

use crate::model::{PeerId, TxHash, TxId};

/// Longest register id accepted in an announcement or a submission. Sorcha register ids are
/// GUIDs or 32-digit hex (32 to 36 characters); 128 leaves room without letting a peer make us
/// keep kilobytes per hash.
pub const MAX_REGISTER_ID_LEN: usize = 128;

/// Where a transaction came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Submitted to this node.
    Local,
    /// Fetched from, or pushed by, this peer.
    Peer(PeerId),
}

/// How a transaction reached this node, for subscribers and the lab's per-hop timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    pub way: Way,
    /// How far it travelled to us: 0 when submitted here, 1 from its origin.
    pub hops: u32,
}

/// The way a transaction reached this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    Submitted,
    /// Pushed by a peer (the eager tree, or the origin's shortcut).
    Pushed,
    /// Announced by a peer and pulled from it.
    Pulled,
    /// Missing from a peer's digest and pulled from it (anti-entropy).
    Repaired,
}

impl Way {
    const ALL: [Way; 4] = [Way::Submitted, Way::Pushed, Way::Pulled, Way::Repaired];

    /// The name subscribers see.
    pub fn as_str(self) -> &'static str {
        match self {
            Way::Submitted => "submitted",
            Way::Pushed => "pushed",
            Way::Pulled => "pulled",
            Way::Repaired => "repaired",
        }
    }

    /// The way named `name` ([`as_str`](Self::as_str)), for readers of the stream.
    pub fn from_name(name: &str) -> Option<Way> {
        Way::ALL.into_iter().find(|w| w.as_str() == name)
    }
}

/// One transaction a peer says it holds. Maps onto `TransactionNotification` (hash, size,
/// register id) for Sorcha peers, which ignore `hops`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceEntry {
    /// What our peers send: the first half of the hash.
    pub id: TxId,
    /// The whole hash, when known: always in what this node sends (it holds the body), so
    /// Sorcha peers can be told it; in what it receives only from Sorcha peers, which fetch
    /// and are fetched from by whole hash. Our peers' wire carries the id alone.
    pub hash: Option<TxHash>,
    /// Body size in bytes, as announced (advisory: the id is the authority).
    pub size: u64,
    pub register_id: Option<String>,
    /// Announcements this entry has travelled, this one included (the origin sends 1).
    pub hops: u32,
}

/// The first 8 bytes of a hash (and id), big-endian: what an anti-entropy digest carries per
/// transaction.
/// Among the ~2,000 hashes of a digest a collision has odds of about 2^-42.
pub type HashPrefix = u64;

/// An inclusive range of hash prefixes: the slice of the hash space one digest covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixRange {
    pub first: HashPrefix,
    pub last: HashPrefix,
}

impl PrefixRange {
    /// Every hash.
    pub const FULL: PrefixRange = PrefixRange {
        first: 0,
        last: HashPrefix::MAX,
    };

    /// From `first` to the end of the space.
    pub fn starting_at(first: HashPrefix) -> Self {
        PrefixRange {
            first,
            last: HashPrefix::MAX,
        }
    }

    /// The one prefix `prefix`.
    pub fn single(prefix: HashPrefix) -> Self {
        PrefixRange {
            first: prefix,
            last: prefix,
        }
    }

    pub fn contains(&self, prefix: HashPrefix) -> bool {
        (self.first..=self.last).contains(&prefix)
    }

    /// The ids of the range, as a range of the ordered maps (empty when `first > last`).
    pub(crate) fn ids(&self) -> std::ops::RangeInclusive<TxId> {
        let mut lo = [0u8; TxId::LEN];
        let mut hi = [0xffu8; TxId::LEN];
        lo[..8].copy_from_slice(&self.first.to_be_bytes());
        hi[..8].copy_from_slice(&self.last.to_be_bytes());
        TxId::from_bytes(lo)..=TxId::from_bytes(hi)
    }
}

pub(crate) fn prefix_of(id: &TxId) -> HashPrefix {
    let mut b = [0u8; 8];
    b.copy_from_slice(&id.as_bytes()[..8]);
    u64::from_be_bytes(b)
}

/// What one gossip core says to another. The runtime maps these onto the wire: for Sorcha
/// peers each announce entry becomes a unary `NotifyTransaction` (pushes become a notify too,
/// and the body is fetched); our own peers get batched `PeerMessage`s of new message types.
/// The encoding, and so what a message costs in bytes, belongs to the wire crate
/// (`sorcha-peer-wire`), which depends on this one: the core never needs a message's size, and
/// where a byte budget is kept on messages (a send queue's `max_bytes`) the caller, which
/// encodes them, passes the size in (`SendQueue::push`).
/// Pulls are not messages: they are [`Output::Fetch`], which the runtime carries out with
/// `GetTransaction` or `StreamTransaction`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GossipMessage {
    /// Hashes the sender holds, batched per peer.
    Announce { entries: Vec<AnnounceEntry> },
    /// Eager push of a small body with its announcement.
    Push { entry: AnnounceEntry, body: Vec<u8> },
    /// The sender got a body it already had from us: stop pushing to it, announce instead
    /// (the link leaves the eager tree both ways; `tree.rs`).
    Prune,
    /// The sender had to pull a body we only announced: push to it again (the link joins
    /// the eager tree both ways).
    Graft,
    /// Anti-entropy: the prefixes, ascending, of every hash within `range` that the sender
    /// first saw within `recent` (`None`: within its whole window), or is fetching. A digest
    /// covers one slice of the hash space; successive digests walk the whole of it.
    Digest {
        range: PrefixRange,
        prefixes: Vec<HashPrefix>,
        recent: Option<Duration>,
    },
    /// Answer to a digest: entries the digest lacked (the digest's sender fetches them) and
    /// prefixes of the digest the replier lacks (answered with an `Announce`).
    DigestReply {
        missing: Vec<AnnounceEntry>,
        wanted: Vec<HashPrefix>,
    },
}

/// Why a fetch brought no body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchFailure {
    /// No answer in time.
    Timeout,
    /// The peer answered `found = false` / NOT_FOUND.
    NotFound,
    /// Could not connect, or the call failed.
    Unreachable,
    /// The body exceeded the size limit before it was read whole.
    TooLarge,
    /// No address is known for the announcer (yet): it announced before this node learnt of
    /// it, as peers do while a node starts. Nothing was sent.
    UnknownPeer,
}

/// Gossip's timer kinds: one deadline each in its [`TimerTable`](crate::time::TimerTable)
/// (fetch deadlines are kept apart, and `FetchTimeout` is armed for the earliest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Timer {
    /// Send the batched announcements.
    Flush,
    /// Fail over fetches past their deadline.
    FetchTimeout,
    /// Send a digest to a random active peer.
    AntiEntropy,
    /// Pull the announced transactions whose eager push did not come in time.
    Graft,
}

/// What the machine asks the runtime to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send `message` to `to`.
    Send {
        to: PeerId,
        message: GossipMessage,
    },
    /// Fetch transaction `id` from `from` (GetTransaction, or StreamTransaction when `size`
    /// is above the streaming threshold) and feed the result to `handle_fetched`. `hash` is
    /// the whole hash `from` announced, if it did (Sorcha peers are asked by whole hash).
    Fetch {
        from: PeerId,
        id: TxId,
        hash: Option<TxHash>,
        size: u64,
    },
    /// Keep this body so peers can fetch it; must be applied before the sends that follow.
    Store {
        hash: TxHash,
        body: Vec<u8>,
        register_id: Option<String>,
        origin: Origin,
    },
    /// Hand the transaction to local subscribers; exactly once per id (within the TTL).
    Deliver {
        hash: TxHash,
        register_id: Option<String>,
        size: u64,
        /// The peer it came from (`None`: submitted here).
        from: Option<PeerId>,
        arrival: Arrival,
    },
    Event(GossipEvent),
}

/// What happened, for logs, the event log and reputation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GossipEvent {
    /// `from` served a body whose SHA-256 does not start with the id it was asked for (or is
    /// not the whole hash it announced).
    BadBody { from: PeerId, id: TxId },
    /// Every remembered announcer failed; anti-entropy may bring the transaction back.
    /// `unknown_announcers`: none of them could even be asked, as no address was known for
    /// any (expected while a node starts and hears from peers it has not learnt yet); false
    /// when a pull was tried and failed (timeouts, errors, wrong bodies: worth a warning).
    FetchAbandoned { id: TxId, unknown_announcers: bool },
    /// A transaction this node lacked arrived through anti-entropy.
    Repaired { hash: TxHash, from: PeerId },
}

/// What a peer did that its score should hear of ([`crate::score`]); the node drains these
/// with [`Gossip::take_conduct`](super::Gossip::take_conduct) after every input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conduct {
    /// Served or pushed a body that does not match its hash.
    BadBody,
    /// Announced a transaction, then answered NOT_FOUND for it.
    NotServed,
    /// Sent a malformed message (bad entries, too many entries, an empty digest range).
    Malformed,
    /// Delivered a transaction this node did not have yet.
    FirstDelivery,
}

/// Result of a submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubmitOutcome {
    pub hash: TxHash,
    /// `false` when the hash was already known: nothing was stored, delivered or announced.
    pub new: bool,
}

/// Why a submission was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The body has no bytes.
    #[error("empty transaction: expected 1 to {max} bytes")]
    Empty { max: u64 },
    /// The body is larger than `max_transaction_size`.
    #[error("transaction of {size} bytes is too large: at most {max} bytes")]
    TooLarge { size: u64, max: u64 },
    /// The register id is longer than [`MAX_REGISTER_ID_LEN`].
    #[error("register id of {len} characters is too long: at most {MAX_REGISTER_ID_LEN}")]
    RegisterIdTooLong { len: usize },
}

/// Counters the daemon exports as metrics: traffic, and what was refused or dropped, and why.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GossipStats {
    pub submitted: u64,
    pub accepted: u64,
    pub announce_messages_sent: u64,
    pub announcements_sent: u64,
    pub announcements_received: u64,
    /// Announced hashes we already knew.
    pub duplicate_announcements: u64,
    pub pushes_sent: u64,
    pub pushes_received: u64,
    /// Pushed bodies already known when they arrived (part of `duplicate_bodies`): the
    /// eager tree's redundancy, each answered by a prune.
    pub duplicate_pushes: u64,
    pub prunes_sent: u64,
    pub prunes_received: u64,
    pub grafts_sent: u64,
    pub grafts_received: u64,
    /// Announced transactions whose pull waited for an eager push (`graft_timeout`).
    pub pushes_awaited: u64,
    /// Of `pushes_awaited`, those that were pulled after all (the push did not come).
    pub pushes_missed: u64,
    /// Lazy peers that left the gossip peers (eager again if they come back).
    pub lazy_forgotten: u64,
    /// Duplicate pushes not answered by a prune: we pushed to `eager_min_peers` or fewer.
    pub prunes_withheld: u64,
    /// Our own submissions pushed to lazy peers (`origin_push_peers`), per peer.
    pub shortcuts_sent: u64,
    /// Pushes taken as an origin's shortcut (`tree.rs`), new or duplicate.
    pub shortcuts_received: u64,
    /// Duplicate pushes where either copy came by the early flood (`flood_push_hops`):
    /// not answered by a prune.
    pub flood_duplicates: u64,
    /// A leaf's eager relays pruned because it missed `LEAF_MISSES_TO_SWAP` pushes in a row
    /// with them (`relay.rs`): the announcing relay took their place.
    pub relays_replaced: u64,
    /// Bodies (fetched or pushed) of hashes already known when they arrived.
    pub duplicate_bodies: u64,
    pub fetches: u64,
    pub fetch_failures: u64,
    pub fetch_timeouts: u64,
    /// Pending hashes given up after every announcer failed.
    pub fetches_abandoned: u64,
    /// Fetch results for hashes no longer pending and not known.
    pub fetches_unexpected: u64,
    pub bad_bodies: u64,
    pub digests_sent: u64,
    /// Of `digests_sent`, the sweeps (slices of the whole window).
    pub sweeps_sent: u64,
    pub digests_received: u64,
    pub anti_entropy_repairs: u64,
    /// Bloom said "maybe" and the exact set said no.
    pub bloom_false_positives: u64,
    /// Bloom said "no": the exact set was not consulted.
    pub bloom_negatives: u64,
    /// New hashes refused because `max_pending` were pending.
    pub dropped_pending_full: u64,
    /// Announcers not remembered because `max_announcers` were.
    pub dropped_announcers_full: u64,
    /// Entries (of announces, digests, replies) beyond a message's limit.
    pub dropped_over_message_limit: u64,
    /// Announced entries with a size of 0 or above the limit, or a register id too long.
    pub refused_bad_entries: u64,
    /// Pushed or fetched bodies above `max_transaction_size`.
    pub refused_oversized_bodies: u64,
    /// Messages claiming to come from this node.
    pub refused_from_self: u64,
    /// Digests whose range was empty (first above last), ignored.
    pub refused_bad_digests: u64,
    /// Outputs dropped because the output queue was full.
    pub outputs_dropped: u64,
    /// Known hashes forgotten before their TTL because `max_known` were kept.
    pub known_evicted: u64,
    /// Times a fetch had to wait for a free slot.
    pub fetches_deferred: u64,
    /// Conduct reports dropped because `MAX_CONDUCT` were waiting for the node.
    pub conduct_dropped: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_way_is_read_back_from_its_name_and_nothing_else_is() {
        for way in Way::ALL {
            assert_eq!(Way::from_name(way.as_str()), Some(way));
        }
        assert_eq!(Way::from_name("teleported"), None);
        assert_eq!(Way::from_name("Pushed"), None);
    }
}
