//! The core's events, by machine: logged, counted, shown. Link events keep the daemon's
//! metric names and labels (`gossip_dropped_total{kind}`, `circuit_breakers_open`,
//! `channels_evicted_total`), and a transport that worked is stored for the next run. What an
//! operator follows (peers up and down, state, discovery, drops, bad bodies) also goes to the
//! event log.

use opentelemetry::KeyValue;
use sorcha_peer_core::gossip::GossipEvent;
use sorcha_peer_core::link::LinkEvent;
use sorcha_peer_core::membership::MembershipEvent;
use sorcha_peer_core::node::Event;

use super::Actor;
use super::gauges::Slot;
use crate::clock::now;
use crate::telemetry::events::EventKind;

impl Actor {
    /// The durable store's gauges, and what its counters gained since the last turn.
    pub(super) fn record_durable(&self) {
        let now = self.db.stats();
        let before = self.reported_db.replace(now);
        let m = &self.metrics;
        let (rows, bytes) = (now.rows as i64, now.bytes as i64);
        self.gauges.set(Slot::DbRows, &m.transaction_db_rows, rows);
        self.gauges
            .set(Slot::DbBytes, &m.transaction_db_bytes, bytes);
        m.transaction_queue_size.record(now.queued as i64, &[]);
        let deltas = [
            (
                &m.transaction_db_commits_total,
                now.groups.saturating_sub(before.groups),
            ),
            (
                &m.transaction_db_writes_total,
                now.jobs.saturating_sub(before.jobs),
            ),
            (
                &m.transaction_db_commit_failures_total,
                now.failed_groups.saturating_sub(before.failed_groups),
            ),
            (
                &m.transaction_db_evicted_total,
                now.evicted.saturating_sub(before.evicted),
            ),
            (
                &m.transaction_db_expired_total,
                now.expired.saturating_sub(before.expired),
            ),
            (
                &m.transaction_store_refused_total,
                now.refused.saturating_sub(before.refused),
            ),
        ];
        for (counter, delta) in deltas {
            if delta > 0 {
                counter.add(delta, &[]);
            }
        }
    }

    pub(super) fn report(&self, event: Event) {
        match event {
            Event::Membership(event) => self.report_membership(event),
            Event::Link(event) => self.report_link(event),
            Event::Gossip(event) => self.report_gossip(event),
            Event::UnknownPeer { peer_id } => {
                tracing::debug!(peer = %peer_id, "gossip for a peer membership forgot; dropped");
            }
        }
    }

    fn report_link(&self, event: LinkEvent) {
        match event {
            LinkEvent::Dropped { kind, count } => {
                self.events.limit_hit(
                    "gossip",
                    None,
                    &format!("{count} dropped ({})", kind.as_str()),
                );
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
        let gauge = &self.metrics.circuit_breakers_open;
        self.gauges.set(Slot::Circuits, gauge, open);
    }

    fn report_membership(&self, event: MembershipEvent) {
        match event {
            MembershipEvent::StateChanged { from, to } => {
                tracing::info!(from = from.as_str(), to = to.as_str(), "node state changed");
                let detail = format!("{} -> {}", from.as_str(), to.as_str());
                self.events.record(EventKind::StateChanged, None, detail);
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
                // The core reports a round once its answers are in: a marker span (no
                // duration) that OTLP shows beside the announce and pull spans.
                let _round = tracing::debug_span!("discovery_round", round, new_peers).entered();
                self.metrics.discovery_rounds_total.add(1, &[]);
                if new_peers > 0 {
                    self.metrics.record_discovery_success(now());
                }
                tracing::debug!(round, new_peers, "discovery round");
                let detail = format!("round {round}: {new_peers} new peers");
                self.events.record(EventKind::DiscoveryRound, None, detail);
            }
            MembershipEvent::PeerAdded { peer_id } => {
                tracing::debug!(peer = %peer_id, "peer added")
            }
            MembershipEvent::PeerActivated { peer_id } => {
                tracing::info!(peer = %peer_id, "peer connected");
                let peer = Some(peer_id.to_string());
                self.events
                    .record(EventKind::PeerConnected, peer, "joined the active set");
            }
            MembershipEvent::PeerSuspect { peer_id } => {
                tracing::debug!(peer = %peer_id, "peer suspect")
            }
            MembershipEvent::PeerUnreachable { peer_id } => {
                tracing::info!(peer = %peer_id, "peer disconnected");
                let peer = Some(peer_id.to_string());
                self.events
                    .record(EventKind::PeerDisconnected, peer, "stopped answering");
            }
            MembershipEvent::PeerLeft { peer_id } => {
                tracing::info!(peer = %peer_id, "peer is shutting down: disconnected");
                let peer = Some(peer_id.to_string());
                self.events.record(
                    EventKind::PeerDisconnected,
                    peer,
                    "said it is shutting down",
                );
            }
            MembershipEvent::PeerRemoved { peer_id } => {
                tracing::info!(peer = %peer_id, "peer removed");
                let peer = Some(peer_id.to_string());
                self.events.record(
                    EventKind::PeerDisconnected,
                    peer,
                    "removed from the peer list",
                );
            }
            MembershipEvent::PeerVerified { peer_id } => {
                tracing::info!(peer = %peer_id, "peer proved its id over TLS: verified");
                let peer = Some(peer_id.to_string());
                self.events
                    .record(EventKind::PeerVerified, peer, "proved its id over TLS");
            }
            MembershipEvent::ClaimRefused { claimed, why } => {
                tracing::warn!(peer = %claimed, reason = %why, "refused a call in a verified peer's name");
                let detail = format!("call in its name without its proof refused: {why}");
                self.events.refused(claimed.as_str(), &detail);
            }
        }
    }

    fn report_gossip(&self, event: GossipEvent) {
        match event {
            GossipEvent::BadBody { from, id } => {
                tracing::warn!(peer = %from, %id, "peer served a body that does not match its hash");
                let detail = format!("body for {id} does not match its hash");
                self.events
                    .record(EventKind::BadBody, Some(from.to_string()), detail);
            }
            // Announced by peers this node has no address for yet (they know it before it
            // knows them, as while it starts): nothing was tried, anti-entropy brings it once
            // they are known, so no operator needs to hear of it.
            GossipEvent::FetchAbandoned {
                id,
                unknown_announcers: true,
            } => {
                tracing::debug!(%id, "announced only by peers not known yet; waiting for anti-entropy");
            }
            GossipEvent::FetchAbandoned {
                id,
                unknown_announcers: false,
            } => {
                tracing::warn!(%id, "every announcer failed to serve a transaction; waiting for anti-entropy");
            }
            GossipEvent::Repaired { hash, from } => {
                tracing::debug!(%hash, peer = %from, "anti-entropy repair")
            }
        }
    }
}
