//! Bootstrap: the configured nodes are tried in order with a `Ping` (they have no known id
//! yet; the `Pong` tells it). The first that answers gets our `RegisterPeer` and a
//! `GetPeerList`, whose answer starts recursive discovery. When all fail the node retries with
//! exponential backoff and jitter; stored peers (see `fill_active`) meanwhile keep it joined.

use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::{
    Contact, Failure, Membership, MembershipConfig, MembershipEvent, PeerHealth, Purpose, Request,
    Response, Timer,
};
use crate::model::{PeerCapabilities, PeerNode, PeerStatus, Protocol, Timestamp};

/// Where bootstrap stands.
#[derive(Debug, Default)]
pub(super) struct Bootstrap {
    phase: Phase,
    /// Failed attempts in a row (every contact failed), drives the backoff.
    failed_attempts: u32,
}

#[derive(Debug, Default, PartialEq, Eq)]
enum Phase {
    #[default]
    Idle,
    /// Waiting for the answer of contact `index`.
    Trying,
    /// Every contact failed; the retry timer is armed.
    Waiting,
}

/// Delay before retry number `attempt` (1-based): `base * 2^(attempt-1)` capped at `cap`, then
/// "equal jitter": uniform in [half, full] so retries of many nodes spread out but never come
/// sooner than half the backoff.
pub(super) fn backoff_delay(
    config: &MembershipConfig,
    attempt: u32,
    rng: &mut ChaCha8Rng,
) -> Duration {
    let exponent = attempt.saturating_sub(1).min(30);
    let full = config
        .bootstrap_retry_base
        .saturating_mul(1 << exponent)
        .min(config.bootstrap_retry_cap);
    let full_ms = u64::try_from(full.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rng.random_range(full_ms / 2..=full_ms))
}

impl Membership {
    /// Starts an attempt at the first contact, unless one is under way.
    pub(super) fn start_bootstrap(&mut self, now: Timestamp) {
        if self.bootstrap.phase == Phase::Trying || self.bootstrap_contacts.is_empty() {
            return;
        }
        self.stats.bootstrap_attempts += 1;
        self.try_bootstrap_contact(0, now);
    }

    /// Pings contact `index`; past the last contact the attempt has failed.
    fn try_bootstrap_contact(&mut self, index: usize, now: Timestamp) {
        let Some(contact) = self.bootstrap_contacts.get(index).cloned() else {
            self.bootstrap_failed(now);
            return;
        };
        self.bootstrap.phase = Phase::Trying;
        let purpose = Purpose::BootstrapProbe { index };
        if !self.send(contact, Request::Ping, purpose, now) {
            self.bootstrap_failed(now);
        }
    }

    fn bootstrap_failed(&mut self, now: Timestamp) {
        self.bootstrap.failed_attempts = self.bootstrap.failed_attempts.saturating_add(1);
        self.bootstrap.phase = Phase::Waiting;
        self.stats.bootstrap_failures += 1;
        let delay = backoff_delay(&self.config, self.bootstrap.failed_attempts, &mut self.rng);
        let retry_at = now.saturating_add(delay);
        self.schedule(retry_at, Timer::Bootstrap);
        self.emit(MembershipEvent::BootstrapFailed {
            attempt: self.bootstrap.failed_attempts,
            retry_at,
        });
    }

    pub(super) fn on_bootstrap_timer(&mut self, now: Timestamp) {
        if self.bootstrap.phase != Phase::Waiting {
            return;
        }
        self.bootstrap.phase = Phase::Idle;
        if self.healthy_count() >= self.config.min_healthy_peers {
            // Rejoined through stored peers or incoming registrations meanwhile.
            self.bootstrap.failed_attempts = 0;
            return;
        }
        self.start_bootstrap(now);
    }

    pub(super) fn on_bootstrap_answer(
        &mut self,
        index: usize,
        result: Result<Response, Failure>,
        now: Timestamp,
    ) {
        let peer_id = match result {
            Ok(Response::Pong { peer_id, .. })
                if peer_id != self.self_advert.peer_id && !self.is_banned(&peer_id, now) =>
            {
                peer_id
            }
            Ok(_) | Err(_) => return self.try_bootstrap_contact(index + 1, now),
        };
        let Some(contact) = self.bootstrap_contacts.get(index).cloned() else {
            return;
        };
        self.bootstrap.phase = Phase::Idle;
        self.bootstrap.failed_attempts = 0;
        if !self.peers.contains_key(&peer_id) {
            let node = bootstrap_node(&contact, peer_id.clone(), now);
            if let Err(why) = self.insert_peer(node, PeerHealth::Alive) {
                self.stats.count_refusal(why);
                return;
            }
        }
        if let Some(known) = self.peers.get_mut(&peer_id) {
            known.node.is_bootstrap = true;
        }
        self.mark_alive(&peer_id, None, now);
        self.activate(&peer_id);
        self.emit(MembershipEvent::Bootstrapped {
            peer_id: peer_id.clone(),
        });
        let to = Contact {
            peer_id: Some(peer_id.clone()),
            ..contact
        };
        let advert = self.advert_now(now);
        let register = Purpose::Register {
            peer: peer_id.clone(),
        };
        self.send(to.clone(), Request::Register { advert }, register, now);
        let max = self.config.peer_list_request_size;
        let list = Purpose::PeerList {
            peer: peer_id,
            discovery: false,
        };
        self.send(to, Request::GetPeerList { max }, list, now);
    }

    /// Whether a bootstrap attempt is under way or scheduled.
    pub fn is_bootstrapping(&self) -> bool {
        self.bootstrap.phase != Phase::Idle
    }
}

/// The entry for a bootstrap node we only know by address and its `Pong`.
fn bootstrap_node(contact: &Contact, peer_id: crate::model::PeerId, now: Timestamp) -> PeerNode {
    PeerNode {
        peer_id,
        address: contact.address.clone(),
        port: contact.port,
        supported_protocols: vec![Protocol::Grpc],
        capabilities: PeerCapabilities {
            supports_streaming: false,
            supports_transaction_distribution: true,
            max_transaction_size: 0,
        },
        status: PeerStatus::Online,
        first_seen: now,
        last_seen: now,
        failure_count: 0,
        latency: None,
        is_bootstrap: true,
        banned_until: None,
    }
}
