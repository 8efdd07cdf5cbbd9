//! Which transport to use with each peer: the best one both sides speak, remembered once it
//! has worked (and stored in the peer store), with the REST fallback tried when gRPC cannot
//! get through to a peer that may speak REST.

use std::collections::HashMap;

use sorcha_peer_core::model::{PeerId, Protocol};

use crate::config::Speaks;

use crate::transport::links::Mode;

/// Peers whose working transport is remembered at most (the store keeps the rest).
pub const MAX_REMEMBERED: usize = 4096;

/// How to reach one peer: the first mode to try and whether REST is worth trying after a
/// transport failure of gRPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub mode: Mode,
    pub rest_fallback: bool,
}

pub struct Negotiator {
    speaks: Speaks,
    /// What last worked per peer.
    worked: HashMap<PeerId, Protocol>,
}

impl Negotiator {
    pub fn new(speaks: Speaks) -> Self {
        Self {
            speaks,
            worked: HashMap::new(),
        }
    }

    /// The plan for `peer`, which advertises `offers` (empty: unknown, e.g. a bootstrap node).
    pub fn plan(&self, peer: Option<&PeerId>, offers: &[Protocol]) -> Plan {
        let s = self.speaks;
        let offered = |p| offers.is_empty() || offers.contains(&p);
        let remembered = peer.and_then(|p| self.worked.get(p)).copied();
        let stream_offered = s.grpc && s.stream && offered(Protocol::GrpcStream);
        let mode = match remembered {
            Some(Protocol::Rest) if s.rest => Mode::Rest,
            Some(Protocol::GrpcStream) if s.grpc && s.stream => Mode::Stream,
            // A unary answer says gRPC works; whether the stream does is the link's to find
            // out (it falls back to unary on a refusal, and remembers that).
            Some(Protocol::Grpc) if stream_offered => Mode::Stream,
            Some(Protocol::Grpc | Protocol::GrpcStream) if s.grpc => Mode::Unary,
            // Unknown offers (a bootstrap node): the stream, which falls back on a refusal.
            _ if stream_offered => Mode::Stream,
            _ if s.grpc && (offered(Protocol::Grpc) || offered(Protocol::GrpcStream)) => {
                Mode::Unary
            }
            _ if s.rest && offered(Protocol::Rest) => Mode::Rest,
            // Nothing in common that we know of: try what we speak best.
            _ if s.grpc => Mode::Unary,
            _ => Mode::Rest,
        };
        let rest_fallback = mode != Mode::Rest && s.rest && offered(Protocol::Rest);
        Plan {
            mode,
            rest_fallback,
        }
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
            // Forget an arbitrary one; the store still has it for the next start.
            if let Some(any) = self.worked.keys().next().cloned() {
                self.worked.remove(&any);
            }
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

    #[test]
    fn the_best_common_transport_wins() {
        let n = Negotiator::new(ALL);
        let p = |offers: &[Protocol]| n.plan(None, offers);
        assert_eq!(
            p(&[Protocol::GrpcStream, Protocol::Grpc]).mode,
            Mode::Stream
        );
        assert_eq!(p(&[Protocol::Grpc]).mode, Mode::Unary);
        assert!(
            !p(&[Protocol::Grpc]).rest_fallback,
            "the peer does not speak REST"
        );
        assert_eq!(p(&[Protocol::Rest]).mode, Mode::Rest);
        let unknown = p(&[]);
        assert_eq!(
            unknown.mode,
            Mode::Stream,
            "tried first; a refusal falls back"
        );
        assert!(unknown.rest_fallback, "an unknown peer may speak REST");
    }

    #[test]
    fn a_peer_of_unknown_offers_gets_the_stream_tried_even_after_unary_calls_worked() {
        // A bootstrap node: known by address only, answering membership calls (unary).
        let mut n = Negotiator::new(ALL);
        let peer: PeerId = "bootstrap".parse().unwrap();
        n.worked(&peer, Protocol::Grpc, false);
        assert_eq!(n.plan(Some(&peer), &[]).mode, Mode::Stream);
        // A peer that says it speaks no stream is not asked for one.
        assert_eq!(n.plan(Some(&peer), &[Protocol::Grpc]).mode, Mode::Unary);
    }

    #[test]
    fn what_worked_is_remembered_and_what_we_do_not_speak_is_never_chosen() {
        let mut n = Negotiator::new(ALL);
        let peer: PeerId = "p".parse().unwrap();
        assert!(n.worked(&peer, Protocol::Rest, false));
        assert!(!n.worked(&peer, Protocol::Rest, false));
        assert_eq!(n.plan(Some(&peer), &[]).mode, Mode::Rest);
        assert!(n.worked(&peer, Protocol::GrpcStream, true));
        assert!(
            !n.worked(&peer, Protocol::Grpc, false),
            "a unary answer keeps the stream"
        );
        assert!(
            n.worked(&peer, Protocol::Grpc, true),
            "a link that fell back to unary says so"
        );

        let rest_only = Negotiator::new(Speaks {
            stream: false,
            grpc: false,
            rest: true,
        });
        assert_eq!(
            rest_only
                .plan(None, &[Protocol::GrpcStream, Protocol::Grpc])
                .mode,
            Mode::Rest
        );
        let unary_only = Negotiator::new(Speaks {
            stream: false,
            grpc: true,
            rest: false,
        });
        let plan = unary_only.plan(None, &[Protocol::GrpcStream]);
        assert_eq!(plan.mode, Mode::Unary);
        assert!(!plan.rest_fallback);
        assert_eq!(
            ALL.protocols(),
            vec![Protocol::GrpcStream, Protocol::Grpc, Protocol::Rest]
        );
    }
}
