//! How messages reach one peer now: its negotiated transport, minus what it refused, and
//! each message shaped for what the peer speaks (see the `link` module's map).

use crate::gossip::GossipMessage;
use crate::model::PeerId;
use crate::time::Instant;

use super::{Dialect, DropKind, Service, Speaks, Speech, Via, What};

/// How messages reach one peer now: its negotiated transport, minus what it refused.
pub(super) struct Ways<'a> {
    pub(super) speech: &'a Speech,
    pub(super) speaks: Speaks,
    pub(super) peer: &'a PeerId,
    pub(super) preferred: Via,
    pub(super) dialect: Dialect,
    pub(super) now: Instant,
}

impl Ways<'_> {
    fn refuses(&self, service: Service) -> bool {
        self.speech.refuses(self.peer, service, self.now)
    }

    /// REST, unless we do not speak it or the peer refused it.
    fn rest(&self) -> Result<Via, DropKind> {
        if self.speaks.rest && !self.refuses(Service::Rest) {
            Ok(Via::Rest)
        } else {
            Err(DropKind::NotSpoken)
        }
    }

    /// Our messages: the negotiated transport, past what the peer refused.
    pub(super) fn gossip_via(&self) -> Result<Via, DropKind> {
        let mut via = self.preferred;
        if via == Via::Stream && self.refuses(Service::Stream) {
            via = Via::Unary;
        }
        if via == Via::Unary && (self.refuses(Service::Communication) || !self.speaks.grpc) {
            return self.rest();
        }
        if via == Via::Rest {
            return self.rest();
        }
        Ok(via)
    }

    /// Sorcha's `NotifyTransaction`: a unary call (the stream has no such message), else REST.
    pub(super) fn notify_via(&self) -> Result<Via, DropKind> {
        if self.preferred == Via::Rest || !self.speaks.grpc || self.refuses(Service::Notify) {
            self.rest()
        } else {
            Ok(Via::Unary)
        }
    }

    /// `what` as the peer gets it, and over which transport; or why it is not sent.
    pub(super) fn shape(&self, what: What) -> Result<(Via, What), DropKind> {
        let notify = |entries| Ok((self.notify_via()?, What::Notify(entries)));
        match what {
            What::Gossip(message) if self.dialect == Dialect::SorchaOnly => match message {
                GossipMessage::Announce { entries } => notify(entries),
                GossipMessage::Push { entry, .. } => notify(vec![entry]),
                GossipMessage::Digest { .. }
                | GossipMessage::DigestReply { .. }
                | GossipMessage::Prune
                | GossipMessage::Graft => Err(DropKind::NotSpoken),
            },
            What::Gossip(message) => Ok((self.gossip_via()?, What::Gossip(message))),
            What::Notify(entries) => notify(entries),
            What::Fetch(pulls) => Ok((Via::Stream, What::Fetch(pulls))),
        }
    }
}
