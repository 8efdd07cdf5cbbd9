//! What each side speaks. [`Negotiator`]: the transport to use with a peer, the operator's
//! preferred one when both sides speak it, else the best one both sides speak, remembered once
//! it has worked (the runtime stores it), with REST tried after a transport failure of gRPC to
//! a peer that may speak REST. Which messages a peer gets, and what it refused, is learnt from
//! its answers (`speech.rs`).

use std::collections::BTreeMap;

use crate::model::{PeerId, Protocol};

use super::types::Via;

/// Peers whose working transport is remembered at most (the runtime's store keeps the rest).
pub const MAX_REMEMBERED: usize = 4096;

/// Peers remembered as speaking the gossip extensions, or as refusing a service: eight times
/// the links kept open.
pub const MAX_SPEAKERS: usize = 8 * super::types::MAX_LINKS;

/// The transports a node speaks (and serves).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Speaks {
    pub stream: bool,
    pub grpc: bool,
    pub rest: bool,
}

impl Default for Speaks {
    /// Everything: the daemon's shipped configuration.
    fn default() -> Self {
        Self {
            stream: true,
            grpc: true,
            rest: true,
        }
    }
}

impl Speaks {
    /// As `supported_protocols` in our adverts, best first.
    pub fn protocols(self) -> Vec<Protocol> {
        let mut list = Vec::new();
        if self.grpc && self.stream {
            list.push(Protocol::GrpcStream);
        }
        if self.grpc {
            list.push(Protocol::Grpc);
        }
        if self.rest {
            list.push(Protocol::Rest);
        }
        list
    }

    /// Whether a node speaking this serves `via`.
    pub fn serves(self, via: Via) -> bool {
        match via {
            Via::Stream => self.grpc && self.stream,
            Via::Unary => self.grpc,
            Via::Rest => self.rest,
        }
    }
}

/// How to reach one peer: the first transport to try, and whether REST is worth trying
/// after a transport failure of gRPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub via: Via,
    pub rest_fallback: bool,
}

#[derive(Debug)]
pub struct Negotiator {
    speaks: Speaks,
    /// The operator's first choice (`communication.preferred_protocol`).
    prefer: Via,
    /// What last worked per peer.
    worked: BTreeMap<PeerId, Protocol>,
}

impl Negotiator {
    pub fn new(speaks: Speaks, prefer: Via) -> Self {
        Self {
            speaks,
            prefer,
            worked: BTreeMap::new(),
        }
    }

    pub fn speaks(&self) -> Speaks {
        self.speaks
    }

    /// The plan for `peer`, which advertises `offers` (empty: unknown, e.g. a bootstrap node).
    pub fn plan(&self, peer: Option<&PeerId>, offers: &[Protocol]) -> Plan {
        let s = self.speaks;
        let offered = |p| offers.is_empty() || offers.contains(&p);
        let remembered = peer.and_then(|p| self.worked.get(p)).copied();
        let stream_offered = s.grpc && s.stream && offered(Protocol::GrpcStream);
        // The operator's choice goes first wherever both sides speak it; the stream is the
        // best transport anyway, so only another choice changes the plan.
        let preferred = self.prefer != Via::Stream
            && s.serves(self.prefer)
            && (offers.is_empty()
                || offers.contains(&self.prefer.protocol())
                || (self.prefer == Via::Unary && offers.contains(&Protocol::GrpcStream)));
        let via = match remembered {
            _ if preferred => self.prefer,
            Some(Protocol::Rest) if s.rest => Via::Rest,
            Some(Protocol::GrpcStream) if s.grpc && s.stream => Via::Stream,
            // A unary answer says gRPC works; whether the stream does is the link's to find
            // out (it falls back to unary on a refusal, and remembers that).
            Some(Protocol::Grpc) if stream_offered => Via::Stream,
            Some(Protocol::Grpc | Protocol::GrpcStream) if s.grpc => Via::Unary,
            // Unknown offers (a bootstrap node): the stream, which falls back on a refusal.
            _ if stream_offered => Via::Stream,
            _ if s.grpc && (offered(Protocol::Grpc) || offered(Protocol::GrpcStream)) => Via::Unary,
            _ if s.rest && offered(Protocol::Rest) => Via::Rest,
            // Nothing in common that we know of: try what we speak best.
            _ if s.grpc => Via::Unary,
            _ => Via::Rest,
        };
        let rest_fallback = via != Via::Rest && s.rest && offered(Protocol::Rest);
        Plan { via, rest_fallback }
    }

    /// Records that `protocol` worked with `peer`; true if that is news (worth storing). A
    /// unary call working says nothing against a stream that works too: only `from_link`
    /// (what a link actually sends over) may replace GrpcStream with Grpc.
    pub fn worked(&mut self, peer: &PeerId, protocol: Protocol, from_link: bool) -> bool {
        let known = self.worked.get(peer).copied();
        if known == Some(protocol)
            || (!from_link && known == Some(Protocol::GrpcStream) && protocol == Protocol::Grpc)
        {
            return false;
        }
        if self.worked.len() >= MAX_REMEMBERED && !self.worked.contains_key(peer) {
            // Forget one; the runtime's store still has it for the next start.
            self.worked.pop_first();
        }
        self.worked.insert(peer.clone(), protocol);
        true
    }

    /// The transport that last worked with `peer`.
    pub fn protocol(&self, peer: &PeerId) -> Option<Protocol> {
        self.worked.get(peer).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Speaks = Speaks {
        stream: true,
        grpc: true,
        rest: true,
    };

    fn peer(name: &str) -> PeerId {
        name.parse().expect("a valid id")
    }

    #[test]
    fn the_best_common_transport_wins() {
        let n = Negotiator::new(ALL, Via::Stream);
        let p = |offers: &[Protocol]| n.plan(None, offers);
        assert_eq!(p(&[Protocol::GrpcStream, Protocol::Grpc]).via, Via::Stream);
        assert_eq!(p(&[Protocol::Grpc]).via, Via::Unary);
        assert!(!p(&[Protocol::Grpc]).rest_fallback, "no REST offered");
        assert_eq!(p(&[Protocol::Rest]).via, Via::Rest);
        let unknown = p(&[]);
        assert_eq!(
            unknown.via,
            Via::Stream,
            "tried first; a refusal falls back"
        );
        assert!(unknown.rest_fallback, "an unknown peer may speak REST");
    }

    #[test]
    fn a_peer_of_unknown_offers_gets_the_stream_tried_even_after_unary_calls_worked() {
        let mut n = Negotiator::new(ALL, Via::Stream);
        let bootstrap = peer("bootstrap");
        n.worked(&bootstrap, Protocol::Grpc, false);
        assert_eq!(n.plan(Some(&bootstrap), &[]).via, Via::Stream);
        assert_eq!(n.plan(Some(&bootstrap), &[Protocol::Grpc]).via, Via::Unary);
    }

    #[test]
    fn what_worked_is_remembered_and_what_we_do_not_speak_is_never_chosen() {
        let mut n = Negotiator::new(ALL, Via::Stream);
        let p = peer("p");
        assert!(n.worked(&p, Protocol::Rest, false));
        assert!(!n.worked(&p, Protocol::Rest, false));
        assert_eq!(n.plan(Some(&p), &[]).via, Via::Rest);
        assert!(n.worked(&p, Protocol::GrpcStream, true));
        assert!(
            !n.worked(&p, Protocol::Grpc, false),
            "a unary answer keeps the stream"
        );
        assert!(
            n.worked(&p, Protocol::Grpc, true),
            "a link that fell back says so"
        );
        let only = |stream, grpc, rest| Negotiator::new(Speaks { stream, grpc, rest }, Via::Stream);
        let both = [Protocol::GrpcStream, Protocol::Grpc];
        assert_eq!(only(false, false, true).plan(None, &both).via, Via::Rest);
        let plan = only(false, true, false).plan(None, &[Protocol::GrpcStream]);
        assert_eq!((plan.via, plan.rest_fallback), (Via::Unary, false));
        let all = vec![Protocol::GrpcStream, Protocol::Grpc, Protocol::Rest];
        assert_eq!(ALL.protocols(), all);
    }

    #[test]
    fn the_preferred_transport_goes_first_where_both_sides_speak_it() {
        let mut n = Negotiator::new(ALL, Via::Unary);
        let p = peer("p");
        assert_eq!(n.plan(None, &[]).via, Via::Unary);
        assert_eq!(n.plan(None, &[Protocol::GrpcStream]).via, Via::Unary);
        assert_eq!(
            n.plan(None, &[Protocol::Rest]).via,
            Via::Rest,
            "not offered"
        );
        n.worked(&p, Protocol::GrpcStream, true);
        assert_eq!(
            n.plan(Some(&p), &[]).via,
            Via::Unary,
            "preferred over remembered"
        );
        let rest = Negotiator::new(ALL, Via::Rest);
        assert_eq!(
            rest.plan(None, &[Protocol::Grpc, Protocol::Rest]).via,
            Via::Rest
        );
        assert_eq!(rest.plan(None, &[Protocol::Grpc]).via, Via::Unary);
        let grpc_only = Speaks { rest: false, ..ALL };
        let no_rest = Negotiator::new(grpc_only, Via::Rest);
        assert_eq!(
            no_rest.plan(None, &[]).via,
            Via::Stream,
            "we do not speak it"
        );
    }
}
