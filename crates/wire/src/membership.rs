//! Membership on the wire: a core [`Request`] as the rpc that carries it ([`Call`]), an rpc's
//! answer ([`Answer`]) back to a core [`Response`], and the answers this node gives, built
//! here so that the daemon's services and the simulator's sizes are the same messages.

use std::fmt;

use sorcha_peer_core::membership::{HeartbeatOutcome, Request, Response};
use sorcha_peer_core::model::{ModelError, PeerAdvert, PeerId, PeerStatus, Timestamp};

use crate::discovery::{
    PeerExchangeRequest, PeerExchangeResponse, PeerListRequest, PeerListResponse, PingRequest,
    PingResponse, RegisterPeerRequest, RegisterPeerResponse,
};
use crate::heartbeat::{PeerHeartbeatRequest, PeerHeartbeatResponse};
use crate::peers::{advert_to_proto, status_from_proto, status_to_proto, valid_adverts};
use crate::size::wire_len;

/// The message Sorcha peers look for to know they must call RegisterPeer.
pub const NOT_REGISTERED: &str = "Peer not registered";
/// Our answer to a banned peer; it must not register again.
pub const BANNED: &str = "Peer is banned";
/// Our answer to a heartbeat in a verified peer's name that did not come over its
/// authenticated connection.
pub const NOT_PROVEN: &str =
    "Peer id is verified: heartbeat over TLS with the certificate of its key";
/// Our answer to a registration taken.
pub const REGISTERED: &str = "Peer registered";

/// A membership request as the rpc that carries it, from this node.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    /// `PeerDiscovery.Ping`.
    Ping(PingRequest),
    /// `PeerDiscovery.RegisterPeer`.
    Register(RegisterPeerRequest),
    /// `PeerDiscovery.GetPeerList`.
    GetPeerList(PeerListRequest),
    /// `PeerDiscovery.ExchangePeers`.
    ExchangePeers(PeerExchangeRequest),
    /// `PeerHeartbeat.SendHeartbeat`.
    Heartbeat(PeerHeartbeatRequest),
}

impl Call {
    /// `request` from `me`; `now` is the wall clock for the fields that carry one.
    pub fn new(request: &Request, me: &PeerId, now: Timestamp) -> Self {
        let max_peers = |max: u32| i32::try_from(max).unwrap_or(i32::MAX);
        match request {
            Request::Ping => Call::Ping(PingRequest {
                peer_id: me.to_string(),
            }),
            Request::Register { advert } => Call::Register(RegisterPeerRequest {
                peer_info: Some(advert_to_proto(advert)),
            }),
            Request::GetPeerList { max } => Call::GetPeerList(PeerListRequest {
                requesting_peer_id: me.to_string(),
                max_peers: max_peers(*max),
            }),
            Request::ExchangePeers { adverts, max } => Call::ExchangePeers(PeerExchangeRequest {
                peer_id: me.to_string(),
                known_peers: adverts.iter().map(advert_to_proto).collect(),
                max_peers: max_peers(*max),
            }),
            Request::Heartbeat { sequence } => Call::Heartbeat(PeerHeartbeatRequest {
                peer_id: me.to_string(),
                timestamp: now.to_wire(),
                sequence_number: i64::try_from(*sequence).unwrap_or(i64::MAX),
                ..Default::default()
            }),
        }
    }

    /// Bytes of the request on the wire ([`wire_len`]).
    pub fn wire_len(&self) -> usize {
        match self {
            Call::Ping(m) => wire_len(m),
            Call::Register(m) => wire_len(m),
            Call::GetPeerList(m) => wire_len(m),
            Call::ExchangePeers(m) => wire_len(m),
            Call::Heartbeat(m) => wire_len(m),
        }
    }
}

/// The answer to a [`Call`], as its rpc returns it.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Pong(PingResponse),
    Registered(RegisterPeerResponse),
    PeerList(PeerListResponse),
    Exchanged(PeerExchangeResponse),
    Heartbeat(PeerHeartbeatResponse),
}

/// An answer that does not make a [`Response`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidAnswer {
    /// The ping answer's `peer_id` is not a valid peer id.
    #[error("ping answer: peer_id: {0}")]
    PeerId(ModelError),
}

impl Answer {
    /// This node's answer (as `me`, knowing `known` peers) to a request the core answered
    /// with `response`, as the daemon's services give it. A refused registration says why in
    /// the daemon ([`registered`]); the response does not keep the reason, so here it says
    /// only that it was refused.
    pub fn new(response: &Response, me: &PeerId, known: usize, now: Timestamp) -> Self {
        match response {
            Response::Pong { peer_id, status } => Answer::Pong(pong(peer_id, *status, now)),
            Response::Registered { success } => {
                let refusal: Option<&dyn fmt::Display> =
                    if *success { None } else { Some(&"refused") };
                Answer::Registered(registered(refusal))
            }
            Response::PeerList { peers } => Answer::PeerList(peer_list(peers, known)),
            Response::Exchanged { peers } => Answer::Exchanged(exchanged(peers)),
            Response::Heartbeat { outcome } => {
                Answer::Heartbeat(heartbeat_answer(*outcome, me, now))
            }
        }
    }

    /// Bytes of the answer on the wire ([`wire_len`]).
    pub fn wire_len(&self) -> usize {
        match self {
            Answer::Pong(m) => wire_len(m),
            Answer::Registered(m) => wire_len(m),
            Answer::PeerList(m) => wire_len(m),
            Answer::Exchanged(m) => wire_len(m),
            Answer::Heartbeat(m) => wire_len(m),
        }
    }

    /// The answer as the core reads it: invalid adverts dropped (membership counts what it
    /// refuses of the rest), missing capabilities meaning transactions up to `max_tx`.
    pub fn into_response(self, max_tx: u32) -> Result<Response, InvalidAnswer> {
        Ok(match self {
            Answer::Pong(pong) => Response::Pong {
                peer_id: pong.peer_id.parse().map_err(InvalidAnswer::PeerId)?,
                status: status_from_proto(pong.status()),
            },
            Answer::Registered(answer) => Response::Registered {
                success: answer.success,
            },
            Answer::PeerList(answer) => Response::PeerList {
                peers: valid_adverts(&answer.peers, max_tx),
            },
            Answer::Exchanged(answer) => Response::Exchanged {
                peers: valid_adverts(&answer.known_peers, max_tx),
            },
            Answer::Heartbeat(answer) => Response::Heartbeat {
                outcome: heartbeat_outcome(answer.success, &answer.message),
            },
        })
    }
}

/// Our answer to a ping: who we are and how we are.
pub fn pong(me: &PeerId, status: PeerStatus, now: Timestamp) -> PingResponse {
    PingResponse {
        peer_id: me.to_string(),
        // Seconds, as C# reads a ping's time.
        timestamp: now.to_wire_secs(),
        status: status_to_proto(status).into(),
    }
}

/// Our answer to a registration: taken, or refused and why.
pub fn registered(refusal: Option<&dyn fmt::Display>) -> RegisterPeerResponse {
    match refusal {
        None => RegisterPeerResponse {
            success: true,
            message: REGISTERED.into(),
        },
        Some(why) => RegisterPeerResponse {
            success: false,
            message: format!("registration refused: {why}"),
        },
    }
}

/// Our peer list; Sorcha reads `total_peers` as how many the answering node knows (`known`),
/// not how many it sent.
pub fn peer_list(adverts: &[PeerAdvert], known: usize) -> PeerListResponse {
    PeerListResponse {
        peers: adverts.iter().map(advert_to_proto).collect(),
        total_peers: i32::try_from(known).unwrap_or(i32::MAX),
    }
}

/// Our side of a peer exchange.
pub fn exchanged(adverts: &[PeerAdvert]) -> PeerExchangeResponse {
    PeerExchangeResponse {
        known_peers: adverts.iter().map(advert_to_proto).collect(),
        success: true,
        message: String::new(),
    }
}

/// Our answer to a heartbeat: accepted, "register first" ([`NOT_REGISTERED`]) or [`BANNED`].
pub fn heartbeat_answer(
    outcome: HeartbeatOutcome,
    me: &PeerId,
    now: Timestamp,
) -> PeerHeartbeatResponse {
    let (success, message) = match outcome {
        HeartbeatOutcome::Accepted => (true, ""),
        HeartbeatOutcome::NotRegistered => (false, NOT_REGISTERED),
        HeartbeatOutcome::Banned => (false, BANNED),
        HeartbeatOutcome::Unproven => (false, NOT_PROVEN),
    };
    PeerHeartbeatResponse {
        success,
        peer_id: me.to_string(),
        timestamp: now.to_wire(),
        message: message.to_owned(),
        ..Default::default()
    }
}

/// How a heartbeat answer reads: accepted, "register first", or refused (banned).
pub fn heartbeat_outcome(success: bool, message: &str) -> HeartbeatOutcome {
    match (success, message) {
        (true, _) => HeartbeatOutcome::Accepted,
        (false, NOT_REGISTERED) => HeartbeatOutcome::NotRegistered,
        (false, NOT_PROVEN) => HeartbeatOutcome::Unproven,
        (false, _) => HeartbeatOutcome::Banned,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sorcha_peer_core::model::{PeerCapabilities, Protocol};

    fn advert(id: &PeerId) -> PeerAdvert {
        PeerAdvert {
            peer_id: id.clone(),
            address: "10.0.1.2".into(),
            port: 5001,
            supported_protocols: vec![Protocol::Grpc],
            capabilities: PeerCapabilities {
                supports_streaming: true,
                supports_transaction_distribution: true,
                max_transaction_size: 1 << 20,
            },
            last_seen: Timestamp::from_millis(1_764_000_000_000),
            is_seed_node: false,
        }
    }

    #[test]
    fn answers_read_back_as_the_core_gave_them() {
        let me: PeerId = "a".repeat(40).parse().unwrap();
        let now = Timestamp::from_millis(1_764_000_000_000);
        let responses = [
            Response::Pong {
                peer_id: me.clone(),
                status: PeerStatus::Busy,
            },
            Response::Registered { success: true },
            Response::Registered { success: false },
            Response::PeerList {
                peers: vec![advert(&me); 3],
            },
            Response::Exchanged {
                peers: vec![advert(&me)],
            },
            Response::Heartbeat {
                outcome: HeartbeatOutcome::NotRegistered,
            },
            Response::Heartbeat {
                outcome: HeartbeatOutcome::Banned,
            },
        ];
        for response in responses {
            let answer = Answer::new(&response, &me, 7, now);
            assert_eq!(answer.into_response(1024).unwrap(), response);
        }
    }

    #[test]
    fn calls_carry_the_request() {
        let me: PeerId = "a".repeat(40).parse().unwrap();
        let now = Timestamp::from_millis(1_764_000_000_000);
        let Call::Heartbeat(beat) = Call::new(&Request::Heartbeat { sequence: 9 }, &me, now) else {
            panic!("a heartbeat is SendHeartbeat");
        };
        assert_eq!(
            (beat.peer_id.as_str(), beat.sequence_number, beat.timestamp),
            (me.as_str(), 9, now.to_wire())
        );
        let exchange = Request::ExchangePeers {
            adverts: vec![advert(&me); 2],
            max: 0,
        };
        let Call::ExchangePeers(m) = Call::new(&exchange, &me, now) else {
            panic!("ExchangePeers");
        };
        assert_eq!(m.known_peers.len(), 2);
        assert_eq!(m.max_peers, 0, "zero: the answerer's choice");
        let bad = Answer::Pong(PingResponse {
            peer_id: String::new(),
            ..Default::default()
        });
        let error = bad.into_response(1024).unwrap_err().to_string();
        assert!(error.starts_with("ping answer: peer_id"), "{error}");
    }
}
