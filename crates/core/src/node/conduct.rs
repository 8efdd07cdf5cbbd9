//! The node's side of the peer score: offences and deliveries in, automatic bans out.
//! [`Reputation`](crate::score::Reputation) keeps the numbers; here they meet membership
//! (bans of ids), the addresses unverified callers came from (bans of addresses), and the
//! runtime ([`Output::Banned`]).

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;

use super::{Node, Output};
use crate::gossip::Conduct;
use crate::model::{Caller, PeerId};
use crate::score::{BanRecord, BanSubject, Offence, Reputation};
use crate::time::Now;

/// Addresses remembered for ids that never proved themselves (what an automatic ban of such
/// an id also covers). One per caller seen lately; the oldest goes first.
pub const MAX_CALLER_ADDRESSES: usize = 4096;

/// Bans waiting for the runtime: a ban is at most two records (id and address) per offence
/// the node is told of, drained after every input.
pub const MAX_BAN_OUTPUTS: usize = 1024;

/// The addresses unverified ids called from, bounded, oldest forgotten first.
#[derive(Debug, Default)]
pub(super) struct CallerAddresses {
    by_id: BTreeMap<PeerId, String>,
    order: VecDeque<PeerId>,
}

impl CallerAddresses {
    /// Callers from 127.0.0.1 or ::1 are not remembered: an address ban covers the host, and
    /// that one is this machine's own, where labs and tests run many nodes and the operator's
    /// tools (other loopback addresses, as a lab's attackers on 127.77.0.K, can be banned).
    fn note(&mut self, id: &PeerId, ip: &str) {
        if is_this_host(ip) {
            return;
        }
        if let Some(known) = self.by_id.get_mut(id) {
            ip.clone_into(known);
            return;
        }
        if self.order.len() >= MAX_CALLER_ADDRESSES
            && let Some(oldest) = self.order.pop_front()
        {
            self.by_id.remove(&oldest);
        }
        self.by_id.insert(id.clone(), ip.to_owned());
        self.order.push_back(id.clone());
    }

    pub(super) fn of(&self, id: &PeerId) -> Option<&str> {
        self.by_id.get(id).map(String::as_str)
    }

    /// The unverified ids last seen calling from `ip` (a walk of at most
    /// [`MAX_CALLER_ADDRESSES`], done only when an address is banned).
    fn ids_at(&self, ip: &str) -> Vec<PeerId> {
        self.by_id
            .iter()
            .filter(|(_, at)| at.as_str() == ip)
            .map(|(id, _)| id.clone())
            .collect()
    }
}

/// 127.0.0.1 and ::1: never banned by address (see [`CallerAddresses::note`]).
fn is_this_host(ip: &str) -> bool {
    let own = |a: IpAddr| {
        a == IpAddr::from([127, 0, 0, 1]) || a == IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1])
    };
    ip.parse::<IpAddr>().is_ok_and(|a| own(a.to_canonical()))
}

impl Node {
    /// The peer score and ban counters.
    pub fn reputation(&self) -> &Reputation {
        &self.reputation
    }

    /// `peer` did something wrong (the transport reports limits; the core notes the rest
    /// itself). Below the threshold the peer is banned; an unverified peer's offences count
    /// against the address it called from too (see [`crate::score`]).
    pub fn note_offence(&mut self, peer: &PeerId, offence: Offence, now: Now) {
        self.last_now = now;
        if peer == self.peer_id() || self.is_banned(peer, now) {
            return;
        }
        self.reputation.count(offence);
        let reason = offence.as_str();
        let id = BanSubject::Peer(peer.clone());
        if self.reputation.penalize(&id, offence, now.mono) {
            self.auto_ban(peer, reason, now);
            return;
        }
        if let Some(ip) = self.unverified_address(peer)
            && self.reputation.penalize(&ip, offence, now.mono)
        {
            self.auto_ban(peer, reason, now);
        }
    }

    /// A caller known only by its address (no proven id: the transport's limits key such
    /// callers on their address) did something wrong: the address is scored and, below the
    /// threshold, banned like an unverified peer's. This host's own address never is.
    pub fn note_address_offence(&mut self, ip: &str, offence: Offence, now: Now) {
        self.last_now = now;
        if is_this_host(ip) || self.reputation.is_banned_address(ip, now.wall) {
            return;
        }
        self.reputation.count(offence);
        let subject = BanSubject::Address(ip.to_owned());
        if !self.reputation.penalize(&subject, offence, now.mono) {
            return;
        }
        let reason = offence.as_str();
        let record = self.reputation.strike(subject, reason, now);
        if self.reputation.ban_address(ip, record.until, now.wall) {
            self.push_ban(record);
        }
        // The ids that called from there are banned with it, as an unverified peer's
        // address is with its id: the operator sees the ban on the peer it belongs to.
        for id in self.addresses.ids_at(ip) {
            if !self.membership.is_banned(&id, now) {
                let record = self
                    .reputation
                    .strike(BanSubject::Peer(id.clone()), reason, now);
                self.membership.ban(&id, record.until, now);
                self.push_ban(record);
            }
        }
        self.sync_gossip_peers(now);
    }

    /// The address `peer` called from, if it never proved its id.
    fn unverified_address(&self, peer: &PeerId) -> Option<BanSubject> {
        let verified = self.membership.peer(peer).is_some_and(|p| p.node.verified);
        let ip = self.addresses.of(peer).filter(|_| !verified)?;
        Some(BanSubject::Address(ip.to_owned()))
    }

    /// `peer`'s score, as the admin API shows it.
    pub fn score(&self, peer: &PeerId, now: Now) -> f64 {
        let id = BanSubject::Peer(peer.clone());
        self.reputation.score(&id, now.mono)
    }

    /// Whether `peer` is banned, by id or by the address it called from.
    pub fn is_banned(&self, peer: &PeerId, now: Now) -> bool {
        self.membership.is_banned(peer, now)
            || self
                .addresses
                .of(peer)
                .is_some_and(|ip| self.reputation.is_banned_address(ip, now.wall))
    }

    /// The address `id` last called from without proving its id, if any (what a ban of it
    /// also covers).
    pub fn caller_address(&self, id: &PeerId) -> Option<&str> {
        self.addresses.of(id)
    }

    /// Whether calls from address `ip` are refused.
    pub fn is_banned_address(&self, ip: &str, now: Now) -> bool {
        self.reputation.is_banned_address(ip, now.wall)
    }

    /// A ban persisted in an earlier run (see [`Output::Banned`]): its strike count is kept so
    /// the next ban doubles, and it holds again if it has not ended.
    pub fn restore_ban(&mut self, record: &BanRecord, now: Now) {
        self.last_now = now;
        self.reputation.restore(record, now.wall);
        if let BanSubject::Peer(id) = &record.subject
            && record.until > now.wall
        {
            self.membership.ban(id, record.until, now);
        }
    }

    /// Refuses a caller whose address is banned; remembers where an unverified one called
    /// from, so a ban of its id covers that address too.
    pub(super) fn check_address(&mut self, id: Option<&PeerId>, caller: &Caller, now: Now) -> bool {
        let Caller::Unproven { ip: Some(ip) } = caller else {
            return true;
        };
        if self.reputation.is_banned_address(ip, now.wall) {
            self.reputation.note_refused_address();
            return false;
        }
        if let Some(id) = id {
            self.addresses.note(id, ip);
        }
        true
    }

    /// Turns what gossip saw peers do into score.
    pub(super) fn absorb_conduct(&mut self, now: Now) {
        while let Some((peer, conduct)) = self.gossip.take_conduct() {
            let offence = match conduct {
                Conduct::FirstDelivery => {
                    self.reputation.reward(&BanSubject::Peer(peer), now.mono);
                    continue;
                }
                Conduct::BadBody => Offence::WrongBody,
                Conduct::NotServed => Offence::Unserved,
                Conduct::Malformed => Offence::ProtocolViolation,
            };
            self.note_offence(&peer, offence, now);
        }
    }

    /// Bans `peer` for its next strike; a peer that never proved its id is banned by the
    /// address it called from too.
    fn auto_ban(&mut self, peer: &PeerId, reason: &str, now: Now) {
        let record = self
            .reputation
            .strike(BanSubject::Peer(peer.clone()), reason, now);
        self.membership.ban(peer, record.until, now);
        self.push_ban(record);
        if let Some(subject) = self.unverified_address(peer) {
            let record = self.reputation.strike(subject, reason, now);
            if let BanSubject::Address(ip) = &record.subject
                && self.reputation.ban_address(ip, record.until, now.wall)
            {
                self.push_ban(record);
            }
        }
        self.sync_gossip_peers(now);
    }

    fn push_ban(&mut self, record: BanRecord) {
        if self.bans_out.len() < MAX_BAN_OUTPUTS {
            self.bans_out.push_back(Output::Banned(record));
        } else {
            self.reputation.note_output_dropped();
        }
    }

    /// Lifts a ban of `id` and of the address it called from, and forgets its score.
    pub(super) fn lift(&mut self, id: &PeerId) {
        self.reputation.reset(&BanSubject::Peer(id.clone()));
        if let Some(ip) = self.addresses.of(id).map(str::to_owned) {
            self.reputation.unban_address(&ip);
            self.reputation.reset(&BanSubject::Address(ip));
        }
    }
}
