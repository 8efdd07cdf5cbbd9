//! How a peer looks in the admin API and `sorcha-peer peers`.

use serde::{Deserialize, Serialize};
use sorcha_peer_core::membership::{KnownPeer, PeerHealth};
use sorcha_peer_core::model::{Protocol, Timestamp};

use crate::store::RegisterAd;

/// One row of `GET /api/v1/peers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerView {
    pub peer_id: String,
    pub address: String,
    pub port: u16,
    /// candidate (heard of, has not answered yet), alive, suspect, unreachable or banned.
    pub status: String,
    /// In the active set: heartbeaten and used for gossip.
    pub active: bool,
    /// It proved its id on an authenticated (TLS) connection; only such a connection may
    /// speak for it. Unverified peers hold a bounded share of the list.
    #[serde(default)]
    pub verified: bool,
    /// Milliseconds since the Unix epoch.
    pub first_seen: u64,
    pub last_seen: u64,
    pub last_seen_ago_ms: u64,
    pub latency_ms: Option<u64>,
    pub failure_count: u32,
    pub is_bootstrap: bool,
    pub banned_until: Option<u64>,
    /// Why it is banned: `operator`, or the offence that took its score below the threshold.
    #[serde(default)]
    pub ban_reason: Option<String>,
    /// Automatic bans so far (the next lasts twice as long as the last).
    #[serde(default)]
    pub ban_strikes: u32,
    /// The peer score (0 neutral; offences lower it, first deliveries raise it, it decays
    /// back towards 0; below `scoring.ban_threshold` the peer is banned).
    #[serde(default)]
    pub score: f64,
    pub protocols: Vec<String>,
    /// The peer's circuit breaker: closed, open (calls skipped) or half_open (one trial).
    pub circuit: String,
    /// The transport that last worked with the peer: GrpcStream, Grpc or Rest.
    pub protocol: Option<String>,
    /// What the peer showed it speaks by its answers: extensions (our gossip messages),
    /// sorcha_only (refused PeerCommunication: gets NotifyTransaction), or unknown.
    #[serde(default)]
    pub speaks: String,
    /// The registers the peer advertises (PeerInfo, heartbeats).
    #[serde(default)]
    pub registers: Vec<RegisterAd>,
}

impl PeerView {
    /// A banned peer the node no longer lists (it is not taken back while banned, and a
    /// restart loads no banned peer into the list): the ban alone.
    pub fn banned(id: &str, until: Timestamp, reason: &str, strikes: u32, now: Timestamp) -> Self {
        Self {
            peer_id: id.to_owned(),
            address: String::new(),
            port: 0,
            status: "banned".to_owned(),
            active: false,
            verified: false,
            first_seen: 0,
            last_seen: 0,
            last_seen_ago_ms: now.as_millis(),
            latency_ms: None,
            failure_count: 0,
            is_bootstrap: false,
            banned_until: Some(until.as_millis()),
            ban_reason: Some(reason.to_owned()),
            ban_strikes: strikes,
            score: 0.0,
            protocols: Vec::new(),
            circuit: "closed".to_owned(),
            protocol: None,
            speaks: String::new(),
            registers: Vec::new(),
        }
    }

    pub fn of(peer: &KnownPeer, now: Timestamp, circuit: &str, protocol: Option<Protocol>) -> Self {
        let node = &peer.node;
        let status = if node.is_banned(now) {
            "banned"
        } else {
            match peer.health {
                PeerHealth::Candidate => "candidate",
                PeerHealth::Alive => "alive",
                PeerHealth::Suspect => "suspect",
                PeerHealth::Unreachable => "unreachable",
            }
        };
        Self {
            peer_id: node.peer_id.to_string(),
            address: node.address.clone(),
            port: node.port,
            status: status.to_owned(),
            active: peer.active,
            verified: node.verified,
            first_seen: node.first_seen.as_millis(),
            last_seen: node.last_seen.as_millis(),
            last_seen_ago_ms: now.since(node.last_seen).as_millis() as u64,
            latency_ms: node.latency.map(|l| l.as_millis() as u64),
            failure_count: node.failure_count,
            is_bootstrap: node.is_bootstrap,
            banned_until: node.banned_until.map(Timestamp::as_millis),
            ban_reason: None,
            ban_strikes: 0,
            score: 0.0,
            protocols: node
                .supported_protocols
                .iter()
                .map(|p| p.as_str().to_owned())
                .collect(),
            circuit: circuit.to_owned(),
            protocol: protocol.map(|p| p.as_str().to_owned()),
            speaks: String::new(),
            registers: Vec::new(),
        }
    }
}
