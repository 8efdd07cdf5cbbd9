//! What each peer speaks, learnt from its answers, never from its adverts (a Sorcha C# peer
//! advertises `GrpcStream` and answers UNIMPLEMENTED to `PeerCommunication`).
//!
//! - A peer that sent us gossip, or took one of our `PeerCommunication` messages, speaks our
//!   extensions ([`Dialect::Extensions`]).
//! - A refusal (gRPC UNIMPLEMENTED, HTTP 404/405) is an answer, not a fault: it is kept per
//!   peer and [`Service`] for [`REPROBE_REFUSED`], never retried the same way meanwhile; the
//!   runtime stores it with its wall time, so a restart keeps it. A peer that refused
//!   `PeerCommunication` (its stream or its unary call) and never showed it speaks our
//!   extensions is [`Dialect::SorchaOnly`]: it gets Sorcha's `NotifyTransaction` and nothing of
//!   ours.
//! - Any other peer is [`Dialect::Unknown`]: its link sends one message at a time (a probe)
//!   until the first answer says which.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::model::PeerId;
use crate::time::Instant;

use super::negotiate::MAX_SPEAKERS;
use super::types::{DropKind, Via, What};

/// A refusal holds this long; then the next message to the peer probes the service again.
/// Rare on purpose: a Sorcha peer answers the same way for its whole life, and each probe is
/// one refused call.
pub const REPROBE_REFUSED: Duration = Duration::from_secs(3600);

/// What a peer may refuse: the unit of a remembered refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Service {
    /// `PeerCommunication.Stream`.
    Stream,
    /// `PeerCommunication.SendMessage` (the service as a whole for a peer that is not known
    /// to speak our extensions).
    Communication,
    /// `TransactionDistribution.NotifyTransaction`.
    Notify,
    /// The REST fallback's routes.
    Rest,
}

impl Service {
    pub const ALL: [Service; 4] = [
        Service::Stream,
        Service::Communication,
        Service::Notify,
        Service::Rest,
    ];

    /// The name the peer store and the logs use.
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Stream => "stream",
            Service::Communication => "communication",
            Service::Notify => "notify",
            Service::Rest => "rest",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// The service a transmission of `what` over `via` calls.
    pub fn of(via: Via, what: &What) -> Self {
        match (via, what) {
            (Via::Rest, _) => Service::Rest,
            (_, What::Notify(_)) => Service::Notify,
            (Via::Stream, _) => Service::Stream,
            (Via::Unary, _) => Service::Communication,
        }
    }
}

/// Which messages a peer gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Our `GOSSIP_*` messages.
    Extensions,
    /// Sorcha's contract only: `NotifyTransaction`, and it pulls with `GetTransaction`.
    SorchaOnly,
    /// Not known yet: probed one message at a time.
    Unknown,
}

#[derive(Debug, Default)]
pub struct Speech {
    /// Peers that sent us gossip or took our messages over `PeerCommunication` (bounded by
    /// [`MAX_SPEAKERS`]; past it a peer is probed again, which costs nothing when it speaks).
    speakers: BTreeSet<PeerId>,
    /// Refusals in force, until when (bounded by [`MAX_SPEAKERS`] peers).
    refused: BTreeMap<PeerId, BTreeMap<Service, Instant>>,
}

impl Speech {
    /// `peer` sent us gossip: it speaks our extensions. The drop to count if the set is full.
    pub fn heard_gossip(&mut self, peer: &PeerId) -> Option<DropKind> {
        if self.speakers.contains(peer) {
            return None;
        }
        if self.speakers.len() >= MAX_SPEAKERS {
            return Some(DropKind::SpeakersFull);
        }
        self.speakers.insert(peer.clone());
        None
    }

    /// `service` answered: a refusal of it is lifted (true: it was on record). A
    /// `PeerCommunication` answer also proves the peer speaks our extensions.
    pub fn served(&mut self, peer: &PeerId, service: Service) -> (bool, Option<DropKind>) {
        let lifted = self
            .refused
            .get_mut(peer)
            .is_some_and(|r| r.remove(&service).is_some());
        if self.refused.get(peer).is_some_and(BTreeMap::is_empty) {
            self.refused.remove(peer);
        }
        let full = match service {
            Service::Stream | Service::Communication => self.heard_gossip(peer),
            Service::Notify | Service::Rest => None,
        };
        (lifted, full)
    }

    /// `peer` refused `service` at `now`: in force for [`REPROBE_REFUSED`].
    pub fn refused(&mut self, peer: &PeerId, service: Service, now: Instant) -> Option<DropKind> {
        self.refused_until(peer, service, now.saturating_add(REPROBE_REFUSED))
    }

    /// A refusal from an earlier run, `age` old; nothing if it has run out.
    pub fn remember(
        &mut self,
        peer: &PeerId,
        service: Service,
        age: Duration,
        now: Instant,
    ) -> Option<DropKind> {
        let left = REPROBE_REFUSED.checked_sub(age)?;
        self.refused_until(peer, service, now.saturating_add(left))
    }

    fn refused_until(
        &mut self,
        peer: &PeerId,
        service: Service,
        until: Instant,
    ) -> Option<DropKind> {
        if !self.refused.contains_key(peer) && self.refused.len() >= MAX_SPEAKERS {
            return Some(DropKind::SorchaOnlyFull);
        }
        self.refused
            .entry(peer.clone())
            .or_default()
            .insert(service, until);
        None
    }

    /// Whether a refusal of `service` by `peer` is in force at `now`.
    pub fn refuses(&self, peer: &PeerId, service: Service, now: Instant) -> bool {
        self.refused
            .get(peer)
            .and_then(|r| r.get(&service))
            .is_some_and(|until| *until > now)
    }

    pub fn speaks_gossip(&self, peer: &PeerId) -> bool {
        self.speakers.contains(peer)
    }

    pub fn dialect(&self, peer: &PeerId, now: Instant) -> Dialect {
        if self.speakers.contains(peer) {
            Dialect::Extensions
        } else if self.refuses(peer, Service::Stream, now)
            || self.refuses(peer, Service::Communication, now)
        {
            Dialect::SorchaOnly
        } else {
            Dialect::Unknown
        }
    }

    pub fn forget(&mut self, peer: &PeerId) {
        self.speakers.remove(peer);
        self.refused.remove(peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: &str) -> PeerId {
        name.parse().expect("a valid id")
    }

    fn at(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    #[test]
    fn a_refusal_makes_a_peer_sorcha_only_until_it_runs_out_or_the_peer_speaks() {
        let mut s = Speech::default();
        let p = peer("p");
        assert_eq!(s.dialect(&p, at(0)), Dialect::Unknown);
        assert_eq!(s.refused(&p, Service::Stream, at(0)), None);
        assert_eq!(s.dialect(&p, at(1)), Dialect::SorchaOnly);
        let later = at(REPROBE_REFUSED.as_millis() as u64 + 1);
        assert_eq!(s.dialect(&p, later), Dialect::Unknown, "probed again");
        s.heard_gossip(&p);
        assert_eq!(s.dialect(&p, at(1)), Dialect::Extensions);
        assert!(
            s.refuses(&p, Service::Stream, at(1)),
            "the rpc stays refused"
        );
        assert_eq!(s.served(&p, Service::Stream), (true, None));
        assert!(!s.refuses(&p, Service::Stream, at(1)));
    }

    #[test]
    fn remembered_refusals_keep_what_is_left_of_their_time() {
        let mut s = Speech::default();
        let p = peer("p");
        let half = REPROBE_REFUSED / 2;
        s.remember(&p, Service::Communication, half, at(0));
        assert!(s.refuses(&p, Service::Communication, at(half.as_millis() as u64 - 1)));
        assert!(!s.refuses(&p, Service::Communication, at(half.as_millis() as u64 + 1)));
        s.remember(&p, Service::Notify, REPROBE_REFUSED * 2, at(0));
        assert!(!s.refuses(&p, Service::Notify, at(0)), "ran out");
        assert_eq!(Service::from_name("notify"), Some(Service::Notify));
    }
}
