//! The listeners' commands, by family: membership calls answered from the core, gossip
//! inputs, and the admin API's reads and changes. A dropped reply channel means the caller
//! gave up (timeout, disconnect): nothing to do.

use sorcha_peer_core::breaker::BreakerState;
use sorcha_peer_core::gossip::GossipMessage;
use sorcha_peer_core::link::Dialect;
use sorcha_peer_core::membership::{Contact, HeartbeatOutcome};
use sorcha_peer_core::model::Timestamp;
use sorcha_peer_core::time::Now;

use super::Actor;
use crate::handle::{Command, PeerView, Submitted};
use crate::telemetry::events::EventKind;

impl Actor {
    pub(super) fn handle(&mut self, command: Command, now: Now) {
        let Some(command) = self.membership_command(command, now) else {
            return;
        };
        let Some(command) = self.leaving_command(command, now) else {
            return;
        };
        let Some(command) = self.gossip_command(command, now) else {
            return;
        };
        self.admin_command(command, now);
    }

    /// The peer protocol's membership calls; any other command comes back.
    fn membership_command(&mut self, command: Command, now: Now) -> Option<Command> {
        match command {
            Command::Register {
                advert,
                caller,
                reply,
            } => {
                let peer = advert.peer_id.to_string();
                let outcome = self.node.handle_register(advert, &caller, now);
                if let Err(refusal) = &outcome {
                    let detail = format!("registration refused: {refusal}");
                    self.events.refused(&peer, &detail);
                }
                let _ = reply.send(outcome);
            }
            Command::Heartbeat {
                peer_id,
                caller,
                reply,
            } => {
                let outcome = self.node.handle_heartbeat(&peer_id, &caller, now);
                if outcome == HeartbeatOutcome::Banned {
                    let detail = "heartbeat refused: peer is banned";
                    self.events.refused(peer_id.as_str(), detail);
                }
                let _ = reply.send(outcome);
            }
            Command::PeerList {
                requester,
                caller,
                max,
                reply,
            } => {
                let list = self.node.peer_list(requester.as_ref(), &caller, max, now);
                let _ = reply.send((list, self.node.membership().known_count()));
            }
            Command::Exchange {
                from,
                caller,
                adverts,
                max,
                reply,
            } => {
                let answer = self.node.handle_exchange(&from, &caller, adverts, max, now);
                let _ = reply.send(answer);
            }
            Command::Ping {
                from,
                caller,
                reply,
            } => {
                let pong = self.node.handle_ping(from.as_ref(), &caller, now);
                if let (Err(refusal), Some(from)) = (&pong, &from) {
                    let detail = format!("ping refused: {refusal}");
                    self.events.refused(from.as_str(), &detail);
                }
                let _ = reply.send(pong);
            }
            other => return Some(other),
        }
        None
    }

    /// Going-aways: a peer's, and ours at shutdown; any other command comes back.
    fn leaving_command(&mut self, command: Command, now: Now) -> Option<Command> {
        match command {
            Command::Leaving {
                from,
                caller,
                reply,
            } => {
                let left = self.node.handle_leaving(&from, &caller, now);
                if let Err(refusal) = &left {
                    let detail = format!("going-away refused: {refusal}");
                    self.events.refused(from.as_str(), &detail);
                }
                let _ = reply.send(left);
            }
            Command::SayLeaving { timeout, reply } => {
                // Only to peers that showed they speak our extensions: a Sorcha peer that
                // refused PeerCommunication is not called again (it notices by heartbeats).
                let links = self.node.links();
                let to = self.node.membership().active_peers();
                let to = to
                    .filter(|p| links.dialect(&p.node.peer_id, now.mono) == Dialect::Extensions)
                    .map(|p| Contact {
                        address: p.node.address.clone(),
                        port: p.node.port,
                        peer_id: Some(p.node.peer_id.clone()),
                    })
                    .collect();
                let _ = reply.send(self.outbound.say_leaving(to, timeout));
            }
            other => return Some(other),
        }
        None
    }

    /// Submissions, and gossip and notifications from peers; any other command comes back.
    fn gossip_command(&mut self, command: Command, now: Now) -> Option<Command> {
        match command {
            Command::Submit {
                body,
                register_id,
                reply,
            } => {
                let result = self
                    .node
                    .submit(body, register_id, now)
                    .map(|outcome| Submitted {
                        hash: outcome.hash.to_string(),
                        new: outcome.new,
                        announced_to: outcome.new.then(|| self.node.gossip().peers().len()),
                    });
                let _ = reply.send(result);
            }
            Command::SubmitQueued { entries, reply } => {
                let mut new = 0;
                // One batch (at most the flusher's 1,024) leaves ~2 outputs each in the core's
                // queue (store, deliver; announcements go in batches of 256 per peer), well
                // inside its bound of 8,192; the loop carries them out after this command.
                for (body, register_id) in entries {
                    let submitted = self.node.submit(body, register_id, now);
                    new += usize::from(submitted.is_ok_and(|s| s.new));
                }
                let _ = reply.send(new);
            }
            Command::Gossip { from, message } => {
                if let GossipMessage::Announce { entries } = &message {
                    for entry in entries {
                        self.heard_of(entry.id);
                    }
                }
                self.node.handle_gossip(&from, message, now);
            }
            Command::Offence { peer_id, offence } => {
                self.node.note_offence(&peer_id, offence, now);
            }
            Command::AddressOffence { ip, offence } => {
                let ip = ip.to_canonical().to_string();
                self.node.note_address_offence(&ip, offence, now);
            }
            Command::Notify { from, entry, reply } => {
                let known = self.node.gossip().is_known(&entry.id);
                self.heard_of(entry.id);
                self.node.handle_notify(&from, entry, now);
                let _ = reply.send(known);
            }
            other => return Some(other),
        }
        None
    }

    /// The admin API and the address loop.
    fn admin_command(&mut self, command: Command, now: Now) {
        match command {
            Command::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Command::Peers { reply } => {
                let mut views = self.peer_views(now);
                let banned = self.banned_views(&views, now);
                views.extend(banned);
                let _ = reply.send(views);
            }
            Command::Ban {
                peer_id,
                until,
                reply,
            } => {
                let address = self.node.caller_address(&peer_id).map(str::to_owned);
                let done = match until {
                    Some(until) => self.node.ban(&peer_id, until, now),
                    None => {
                        self.node.unban(&peer_id, now);
                        true
                    }
                };
                if done {
                    self.record_ban(&peer_id, until);
                    self.operator_ban(&peer_id, until, address);
                    self.persist(self.store.set_ban(peer_id, until));
                }
                let _ = reply.send(done);
            }
            Command::Remove { peer_id, reply } => {
                let known = self.node.membership().peer(&peer_id).is_some();
                self.node.remove(&peer_id, now);
                let _ = reply.send(known);
            }
            Command::SetAddress { report } => self.set_address(*report),
            // Handled by the families above.
            Command::Register { .. }
            | Command::Heartbeat { .. }
            | Command::PeerList { .. }
            | Command::Exchange { .. }
            | Command::Ping { .. }
            | Command::Leaving { .. }
            | Command::SayLeaving { .. }
            | Command::Submit { .. }
            | Command::SubmitQueued { .. }
            | Command::Gossip { .. }
            | Command::Offence { .. }
            | Command::AddressOffence { .. }
            | Command::Notify { .. } => {}
        }
    }

    /// An operator's ban or unban, in the event log.
    fn record_ban(&self, peer_id: &sorcha_peer_core::model::PeerId, until: Option<Timestamp>) {
        let peer = Some(peer_id.to_string());
        match until {
            Some(until) => {
                let at =
                    std::time::UNIX_EPOCH + std::time::Duration::from_millis(until.as_millis());
                let detail = format!(
                    "by the operator until {}",
                    humantime::format_rfc3339_seconds(at)
                );
                self.events.record(EventKind::Banned, peer, detail);
            }
            None => self
                .events
                .record(EventKind::Unbanned, peer, "by the operator"),
        }
    }

    /// Every known peer as the admin API shows it, with its circuit and the transport that
    /// last worked, both from the core's link machine.
    fn peer_views(&self, now: Now) -> Vec<PeerView> {
        let links = self.node.links();
        self.node
            .membership()
            .peers()
            .map(|p| {
                let id = &p.node.peer_id;
                let circuit = match links.circuit(id, now.mono) {
                    BreakerState::Closed => "closed",
                    BreakerState::Open { .. } => "open",
                    BreakerState::HalfOpen => "half_open",
                };
                let mut view = PeerView::of(p, now.wall, circuit, links.protocol(id));
                (view.ban_reason, view.ban_strikes, view.score) = self.ban_view(id, now);
                view.speaks = match links.dialect(id, now.mono) {
                    Dialect::Extensions => "extensions",
                    Dialect::SorchaOnly => "sorcha_only",
                    Dialect::Unknown => "unknown",
                }
                .to_owned();
                view
            })
            .collect()
    }
}
