//! One peer's link: its bounded send lanes, what it has handed the runtime, what waits for a
//! retry, and its transport (the stream, unary after the peer refused the stream, REST).
//!
//! Flow control: the link hands the runtime at most a window of transmissions
//! ([`STREAM_WINDOW`] on a stream, where sends only queue; [`CALL_WINDOW`] on calls, one at a
//! time) and releases the next ones when the runtime reports outcomes. A slow peer therefore
//! fills and drops only its own lanes; a failed send pauses only its own link until the
//! retry.

use std::collections::VecDeque;

use crate::backoff::{Backoff, CallKind, ErrorClass, RetryDecision, RetryPolicy};
use crate::gossip::GossipMessage;
use crate::membership::Contact;
use crate::model::TxId;
use crate::sendqueue::{Lane, SendQueue, SendQueueConfig};
use crate::time::Instant;

use super::types::{CALL_WINDOW, DropKind, Outcome, Pull, REPROBE_AFTER, STREAM_WINDOW, Via, What};

/// A link's lanes: a few seconds of announcements at high rates, a handful of pushed bodies.
pub fn queue_config() -> SendQueueConfig {
    SendQueueConfig {
        control_capacity: 64,
        announce_capacity: 1024,
        body_capacity: 32,
        max_bytes: 4 * 1024 * 1024,
        fairness_interval: 8,
    }
}

/// A transmission handed to the runtime, with its retry schedule.
#[derive(Debug)]
struct InFlight {
    ticket: u64,
    via: Via,
    what: What,
    backoff: Backoff,
}

/// A failed transmission waiting for its retry.
#[derive(Debug)]
struct Retry {
    at: Instant,
    what: What,
    backoff: Backoff,
}

/// What an outcome means for the peer's breaker and for the machine.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Delivered over `via`.
    Sent(Via),
    /// Waiting for a retry (not yet a failure for the breaker).
    Retrying,
    /// Refused: tried the next transport (`Some`), or none is left.
    Refused { downgraded: bool },
    /// Failed for good; `pulls` could not be asked and fail now.
    Failed { pulls: Vec<TxId> },
    /// Not a ticket of this link (an outcome reported twice, or after a close).
    Unknown,
}

#[derive(Debug)]
pub struct PeerLink {
    pub contact: Contact,
    queue: SendQueue<What>,
    in_flight: VecDeque<InFlight>,
    retries: VecDeque<Retry>,
    /// The best transport the peer offers.
    preferred: Via,
    /// The transport in use.
    via: Via,
    downgraded_at: Option<Instant>,
    /// The generation of the open stream, as the runtime numbered it.
    stream: Option<u64>,
    /// When the link last took a message: the least recent is evicted first.
    pub used: Instant,
}

impl PeerLink {
    pub fn new(contact: Contact, via: Via, now: Instant) -> Self {
        Self {
            contact,
            queue: SendQueue::new(queue_config()).expect("invariant: the lane config is valid"),
            in_flight: VecDeque::new(),
            retries: VecDeque::new(),
            preferred: via,
            via,
            downgraded_at: None,
            stream: None,
            used: now,
        }
    }

    pub fn via(&self) -> Via {
        self.via
    }

    /// Whether pulls can ride this link's stream now.
    pub fn stream_open(&self) -> bool {
        self.via == Via::Stream && self.stream.is_some()
    }

    pub fn stream_opened(&mut self, generation: u64) {
        self.stream = Some(generation);
    }

    /// A reader of an older stream must not close a newer one.
    pub fn stream_closed(&mut self, generation: u64) {
        if self.stream == Some(generation) {
            self.stream = None;
        }
    }

    /// Items queued, in flight or waiting for a retry: dropped if the link closes.
    pub fn pending(&self) -> usize {
        self.queue.len() + self.in_flight.len() + self.retries.len()
    }

    /// The earliest retry, if one waits.
    pub fn retry_at(&self) -> Option<Instant> {
        self.retries.front().map(|r| r.at)
    }

    /// Queues `what` on `lane` (see [`lane_of`]); the drop kind if the lane refused it.
    pub fn enqueue(
        &mut self,
        (lane, size): (Lane, usize),
        what: What,
        now: Instant,
    ) -> Result<(), DropKind> {
        self.used = now;
        self.queue
            .push(lane, what, size)
            .map_err(|_| lane_drop(lane))
    }

    /// The transmissions the window has room for, retries first; pulls that can no longer
    /// ride a stream (the link went unary) come back in `failed`. Tickets come from
    /// `tickets`, shared by all links, so a late report for a closed link never matches a
    /// later link's transmission.
    pub fn release(
        &mut self,
        now: Instant,
        policy: &RetryPolicy,
        tickets: &mut u64,
        failed: &mut Vec<TxId>,
    ) -> Vec<(u64, Via, What)> {
        self.reprobe(now);
        let mut out = Vec::new();
        while self.in_flight.len() < self.window() {
            let (what, backoff) = match self.retries.front() {
                Some(r) if r.at <= now => {
                    let r = self.retries.pop_front().expect("front checked");
                    (r.what, r.backoff)
                }
                Some(_) => break, // Paused until the retry: the order of sends holds.
                None => match self.queue.pop() {
                    Some((_, what)) => (what, policy.backoff()),
                    None => break,
                },
            };
            if let What::Fetch(pulls) = &what
                && self.via != Via::Stream
            {
                failed.extend(pulls.iter().map(|p| p.id));
                continue;
            }
            *tickets += 1;
            out.push(self.hand_out(*tickets, what, backoff));
        }
        out
    }

    fn hand_out(&mut self, ticket: u64, what: What, backoff: Backoff) -> (u64, Via, What) {
        let via = self.via;
        self.in_flight.push_back(InFlight {
            ticket,
            via,
            what: what.clone(),
            backoff,
        });
        (ticket, via, what)
    }

    fn window(&self) -> usize {
        if self.via == Via::Stream {
            STREAM_WINDOW
        } else {
            CALL_WINDOW
        }
    }

    /// A link downgraded from the stream tries it again after [`REPROBE_AFTER`].
    fn reprobe(&mut self, now: Instant) {
        let due = self
            .downgraded_at
            .is_some_and(|at| now.since(at) > REPROBE_AFTER);
        if self.via == Via::Unary && self.preferred == Via::Stream && due {
            self.via = Via::Stream;
            self.downgraded_at = None;
        }
    }

    /// Applies the runtime's report on `ticket`.
    pub fn outcome(
        &mut self,
        ticket: u64,
        outcome: Outcome,
        now: Instant,
        rest: bool,
        policy: &RetryPolicy,
        rng: &mut impl rand::Rng,
    ) -> Verdict {
        let Some(at) = self.in_flight.iter().position(|f| f.ticket == ticket) else {
            return Verdict::Unknown;
        };
        let f = self
            .in_flight
            .remove(at)
            .expect("invariant: the position was just found");
        match outcome {
            Outcome::Sent => Verdict::Sent(f.via),
            Outcome::Refused => self.refused(f, now, rest),
            Outcome::Failed | Outcome::Timeout => {
                let class = match outcome {
                    Outcome::Timeout => ErrorClass::Timeout,
                    _ => ErrorClass::Unavailable,
                };
                self.failed(f, class, now, policy, rng)
            }
        }
    }

    /// The peer does not serve `f.via`: the stream downgrades to unary (re-probed later),
    /// unary to REST when we speak it; the message goes again the new way at once.
    fn refused(&mut self, f: InFlight, now: Instant, rest: bool) -> Verdict {
        let next = match f.via {
            Via::Stream => Via::Unary,
            Via::Unary if rest => Via::Rest,
            _ => {
                return Verdict::Failed {
                    pulls: pulls(&f.what),
                };
            }
        };
        if self.via == f.via {
            self.via = next;
            self.stream = None;
            if f.via == Via::Stream {
                self.downgraded_at = Some(now);
            }
        }
        if let What::Fetch(_) = f.what {
            return Verdict::Failed {
                pulls: pulls(&f.what),
            };
        }
        self.retries.push_front(Retry {
            at: now,
            what: f.what,
            backoff: f.backoff,
        });
        Verdict::Refused { downgraded: true }
    }

    /// Gossip is retried with backoff; notifications and pulls are not (the gossip core's
    /// own timers cover those).
    fn failed(
        &mut self,
        mut f: InFlight,
        class: ErrorClass,
        now: Instant,
        policy: &RetryPolicy,
        rng: &mut impl rand::Rng,
    ) -> Verdict {
        if f.via == Via::Stream {
            self.stream = None; // Broken or held past the deadline: the runtime opens anew.
        }
        if !matches!(f.what, What::Gossip(_)) {
            return Verdict::Failed {
                pulls: pulls(&f.what),
            };
        }
        match policy.decide(class, CallKind::Idempotent, &mut f.backoff, rng) {
            RetryDecision::RetryAfter(delay) => {
                let at = now.saturating_add(delay);
                let slot = self.retries.partition_point(|r| r.at <= at);
                self.retries.insert(
                    slot,
                    Retry {
                        at,
                        what: f.what,
                        backoff: f.backoff,
                    },
                );
                Verdict::Retrying
            }
            RetryDecision::GiveUp(_) => Verdict::Failed { pulls: Vec::new() },
        }
    }
}

fn pulls(what: &What) -> Vec<TxId> {
    match what {
        What::Fetch(pulls) => pulls.iter().map(|p: &Pull| p.id).collect(),
        _ => Vec::new(),
    }
}

/// Digests steer repairs (control, as do pulls); announcements are the bulk; pushed bodies
/// may wait. A message turned into a Sorcha notification keeps its message's lane. `size`:
/// [`LinkConfig::size`](super::LinkConfig::size).
pub fn lane_of(message: &GossipMessage, size: fn(&GossipMessage) -> usize) -> (Lane, usize) {
    let lane = match message {
        GossipMessage::Digest { .. } | GossipMessage::DigestReply { .. } => Lane::Control,
        GossipMessage::Announce { .. } => Lane::Announce,
        GossipMessage::Push { .. } => Lane::Body,
    };
    (lane, size(message))
}

/// A pull batch rides the control lane; an id is 16 bytes and its field's tag and length two
/// more.
pub fn fetch_lane(pulls: &[Pull]) -> (Lane, usize) {
    (Lane::Control, (TxId::LEN + 2) * pulls.len())
}

fn lane_drop(lane: Lane) -> DropKind {
    match lane {
        Lane::Control => DropKind::QueueFullControl,
        Lane::Announce => DropKind::QueueFullAnnounce,
        Lane::Body => DropKind::QueueFullBody,
    }
}
