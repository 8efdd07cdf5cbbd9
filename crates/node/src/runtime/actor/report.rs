//! The core's events, by machine: logged, counted, shown. Link events keep the daemon's
//! metric names and labels (`gossip_dropped_total{kind}`, `circuit_breakers_open`,
//! `channels_evicted_total`), and a transport that worked is stored for the next run.

use opentelemetry::KeyValue;
use sorcha_peer_core::gossip::GossipEvent;
use sorcha_peer_core::link::LinkEvent;
use sorcha_peer_core::membership::MembershipEvent;
use sorcha_peer_core::node::Event;

use super::Actor;
use crate::clock::now;

impl Actor {
    pub(super) fn report(&self, event: Event) {
        match event {
            Event::Membership(event) => self.report_membership(event),
            Event::Link(event) => self.report_link(event),
            Event::Gossip(event) => report_gossip(event),
            Event::UnknownPeer { peer_id } => {
                tracing::debug!(peer = %peer_id, "gossip for a peer membership forgot; dropped");
            }
        }
    }

    fn report_link(&self, event: LinkEvent) {
        match event {
            LinkEvent::Dropped { kind, count } => {
                let kind = KeyValue::new("kind", kind.as_str());
                self.metrics.gossip_dropped_total.add(count, &[kind]);
            }
            LinkEvent::SendFailed { peer } => {
                tracing::debug!(peer = %peer, "send failed after its retries")
            }
            LinkEvent::CircuitOpened { peer } => {
                tracing::info!(peer = %peer, "circuit opened: calls to the peer are skipped until it half-opens");
                self.record_circuits();
            }
            LinkEvent::CircuitClosed { peer } => {
                tracing::info!(peer = %peer, "circuit closed");
                self.record_circuits();
            }
            LinkEvent::Downgraded { peer } => {
                tracing::debug!(peer = %peer, "peer refuses the transport; using the next one")
            }
            LinkEvent::Worked { peer, protocol } => {
                tracing::debug!(peer = %peer, protocol = protocol.as_str(), "transport chosen");
                self.persist(self.store.set_preferred_protocol(peer, Some(protocol)));
            }
            LinkEvent::Refused { peer, service } => {
                tracing::info!(peer = %peer, service = service.as_str(), "peer refused a service; not called again until the re-probe");
                self.persist(self.store.set_refusal(peer, service.as_str(), Some(now())));
            }
            LinkEvent::Served { peer, service } => {
                tracing::info!(peer = %peer, service = service.as_str(), "peer serves a service it had refused");
                self.persist(self.store.set_refusal(peer, service.as_str(), None));
            }
            LinkEvent::Evicted { peer } => {
                tracing::debug!(peer = %peer, "least recently used link closed");
                self.metrics.channels_evicted_total.add(1, &[]);
            }
        }
    }

    pub(super) fn record_circuits(&self) {
        let open = self.node.links().open_circuits() as i64;
        self.metrics.circuit_breakers_open.record(open, &[]);
    }

    fn report_membership(&self, event: MembershipEvent) {
        match event {
            MembershipEvent::StateChanged { from, to } => {
                tracing::info!(from = from.as_str(), to = to.as_str(), "node state changed");
                self.metrics.record_state(to);
                self.state.send_replace(to);
            }
            MembershipEvent::Bootstrapped { peer_id } => {
                tracing::info!(peer = %peer_id, "bootstrapped")
            }
            MembershipEvent::BootstrapFailed { attempt, retry_at } => {
                let retry_in = retry_at.since(self.clock.now().mono);
                tracing::warn!(attempt, ?retry_in, "every bootstrap node failed; retrying");
            }
            MembershipEvent::DiscoveryRound { round, new_peers } => {
                self.metrics.discovery_rounds_total.add(1, &[]);
                if new_peers > 0 {
                    self.metrics.record_discovery_success(now());
                }
                tracing::debug!(round, new_peers, "discovery round");
            }
            MembershipEvent::PeerAdded { peer_id } => {
                tracing::debug!(peer = %peer_id, "peer added")
            }
            MembershipEvent::PeerActivated { peer_id } => {
                tracing::info!(peer = %peer_id, "peer connected")
            }
            MembershipEvent::PeerSuspect { peer_id } => {
                tracing::debug!(peer = %peer_id, "peer suspect")
            }
            MembershipEvent::PeerUnreachable { peer_id } => {
                tracing::info!(peer = %peer_id, "peer disconnected")
            }
            MembershipEvent::PeerRemoved { peer_id } => {
                tracing::info!(peer = %peer_id, "peer removed")
            }
            MembershipEvent::PeerVerified { peer_id } => {
                tracing::info!(peer = %peer_id, "peer proved its id over TLS: verified");
            }
            MembershipEvent::ClaimRefused { claimed, why } => {
                tracing::warn!(peer = %claimed, reason = %why, "refused a call in a verified peer's name");
            }
        }
    }
}

fn report_gossip(event: GossipEvent) {
    match event {
        GossipEvent::BadBody { from, id } => {
            tracing::warn!(peer = %from, %id, "peer served a body that does not match its hash");
        }
        GossipEvent::FetchAbandoned { id } => {
            tracing::warn!(%id, "every announcer failed to serve a transaction; waiting for anti-entropy");
        }
        GossipEvent::Repaired { hash, from } => {
            tracing::debug!(%hash, peer = %from, "anti-entropy repair")
        }
    }
}
