//! One peer's link: its bounded send lanes, what it has handed the runtime, what waits for a
//! retry, and its transport (set by the link machine from what the peer speaks; each
//! message is shaped for the peer as it leaves, see `Links::release`).
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

use super::speech::Service;
use super::types::{CALL_WINDOW, DropKind, Outcome, Pull, STREAM_WINDOW, Via, What};

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
    /// Delivered over `via`, by `service`; `gossip`: it was one of our extension messages.
    Sent {
        via: Via,
        service: Service,
        gossip: bool,
    },
    /// Waiting for a retry (not yet a failure for the breaker).
    Retrying,
    /// `service` refused `what` (handed back: the link machine sends it the next way).
    Refused { service: Service, what: What },
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
    /// The transport negotiated for the peer (what it offers, what we prefer).
    pub preferred: Via,
    /// The transport of the link's messages now (the link machine sets it from what the
    /// peer refused).
    pub via: Via,
    /// The peer's dialect is unknown: one message at a time until an answer tells.
    pub probe: bool,
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
            probe: true,
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

    /// Queues `what` on `lane` (see [`lane_of`]); if the lane refused it, the drop kind and
    /// `what` back.
    pub fn enqueue(
        &mut self,
        (lane, size): (Lane, usize),
        what: What,
        now: Instant,
    ) -> Result<(), (DropKind, What)> {
        self.used = now;
        self.queue
            .push(lane, what, size)
            .map_err(|dropped| (lane_drop(lane), dropped.item))
    }

    /// The transmissions the window has room for, retries first, each as `shape` makes it
    /// for the peer (or drops it, counted in `dropped`); pulls that can no longer ride a
    /// stream (the link went unary) come back in `failed`. Tickets come from `tickets`,
    /// shared by all links, so a late report for a closed link never matches a later link's
    /// transmission.
    pub fn release(
        &mut self,
        now: Instant,
        policy: &RetryPolicy,
        tickets: &mut u64,
        (failed, dropped): (&mut Vec<TxId>, &mut Vec<DropKind>),
        shape: &mut dyn FnMut(What) -> Result<(Via, What), DropKind>,
    ) -> Vec<(u64, Via, What)> {
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
            let (via, what) = match shape(what) {
                Ok(shaped) => shaped,
                Err(kind) => {
                    dropped.push(kind);
                    continue;
                }
            };
            *tickets += 1;
            out.push(self.hand_out(*tickets, via, what, backoff));
        }
        out
    }

    /// Puts back a refused message to go again at once, ahead of the rest.
    pub fn again(&mut self, what: What, now: Instant, policy: &RetryPolicy) {
        self.retries.push_front(Retry {
            at: now,
            what,
            backoff: policy.backoff(),
        });
    }

    fn hand_out(
        &mut self,
        ticket: u64,
        via: Via,
        what: What,
        backoff: Backoff,
    ) -> (u64, Via, What) {
        self.in_flight.push_back(InFlight {
            ticket,
            via,
            what: what.clone(),
            backoff,
        });
        (ticket, via, what)
    }

    fn window(&self) -> usize {
        if self.probe {
            1
        } else if self.via == Via::Stream {
            STREAM_WINDOW
        } else {
            CALL_WINDOW
        }
    }

    /// Applies the runtime's report on `ticket`.
    pub fn outcome(
        &mut self,
        ticket: u64,
        outcome: Outcome,
        now: Instant,
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
            Outcome::Sent => Verdict::Sent {
                via: f.via,
                service: Service::of(f.via, &f.what),
                gossip: matches!(f.what, What::Gossip(_) | What::Fetch(_)),
            },
            Outcome::Refused => {
                if f.via == Via::Stream {
                    self.stream = None;
                }
                Verdict::Refused {
                    service: Service::of(f.via, &f.what),
                    what: f.what,
                }
            }
            Outcome::Failed | Outcome::Timeout => {
                let class = match outcome {
                    Outcome::Timeout => ErrorClass::Timeout,
                    _ => ErrorClass::Unavailable,
                };
                self.failed(f, class, now, policy, rng)
            }
        }
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
        GossipMessage::Digest { .. }
        | GossipMessage::DigestReply { .. }
        | GossipMessage::Prune
        | GossipMessage::Graft => Lane::Control,
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
