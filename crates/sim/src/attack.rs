//! Attack scenarios: misbehaving roles beyond droppers and liars, and what the peer score
//! made of them.
//!
//! - **Flooders** announce `junk_per_tick` well-formed hashes nobody holds to each of their
//!   gossip peers every `every`; asked for them, they answer NOT_FOUND (the score's
//!   `unserved`).
//! - **Liars** (the existing role) serve wrong bodies (`wrong_body`).
//! - **Eclipsers** make a new identity every tick for `targets_per_tick` random honest nodes:
//!   it registers over plaintext (an unproven caller, from the eclipser's address), pushes
//!   `fake_adverts` peers at addresses no node has, and announces junk, one malformed entry
//!   among it (`protocol_violation`). These calls go straight into the target's core,
//!   without network delay: a simplification, as the fakes own no node slot.
//!
//! [`AttackReport`](crate::metrics::AttackReport) says what came of it: which attackers honest nodes banned and how soon
//! after the attack began, honest nodes banned by mistake, and the dials honest nodes made to
//! the fake addresses, per minute of attack.

use std::collections::BTreeMap;

use rand::Rng;
use rand::seq::IndexedRandom;
use sorcha_peer_core::gossip::{AnnounceEntry, GossipMessage};
use sorcha_peer_core::model::{Caller, PeerAdvert, PeerCapabilities, PeerId, Protocol, TxHash};
use sorcha_peer_core::score::{BanRecord, BanSubject};

use crate::metrics::AttackReport;
use crate::world::{Ev, PORT, Role, World, index_of_address, index_of_id};

impl World {
    /// Queues the first attack tick, if any node attacks.
    pub(crate) fn schedule_attack(&mut self) {
        let attacks = self
            .nodes
            .iter()
            .any(|n| matches!(n.role, Role::Flooder | Role::Eclipser));
        if attacks {
            let at =
                sorcha_peer_core::model::Timestamp::from_millis(self.scenario.attack.start.ms());
            self.queue.push(at, Ev::Attack);
        }
    }

    /// One attack tick: every live flooder and eclipser attacks, the next tick is queued.
    pub(crate) fn attack(&mut self) {
        for n in 0..self.nodes.len() {
            if !self.is_up(n) {
                continue;
            }
            match self.nodes[n].role {
                Role::Flooder => self.flood(n),
                Role::Eclipser => self.eclipse(n),
                _ => {}
            }
        }
        let next = self.now.saturating_add(self.scenario.attack.every.0);
        self.queue.push(next, Ev::Attack);
    }

    fn junk(&mut self, count: usize) -> Vec<AnnounceEntry> {
        (0..count)
            .map(|_| {
                let bytes: [u8; 16] = self.rng.random();
                AnnounceEntry {
                    id: TxHash::of(&bytes).id(),
                    hash: None,
                    size: 250,
                    register_id: None,
                    hops: 1,
                }
            })
            .collect()
    }

    fn flood(&mut self, n: usize) {
        let Some(core) = self.nodes[n].core.as_ref() else {
            return;
        };
        let peers: Vec<usize> = core
            .gossip()
            .peers()
            .iter()
            .filter_map(index_of_id)
            .collect();
        for to in peers {
            let entries = self.junk(self.scenario.attack.junk_per_tick);
            let message = GossipMessage::Announce { entries };
            let at = self
                .now
                .saturating_add(std::time::Duration::from_millis(self.net.link_ms(n, to)));
            self.queue.push(
                at,
                Ev::Gossip {
                    from: n as u32,
                    to: to as u32,
                    message,
                },
            );
        }
    }

    fn eclipse(&mut self, n: usize) {
        let honest: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.is_up(*i) && self.nodes[*i].role == Role::Honest)
            .collect();
        let count = self.scenario.attack.targets_per_tick;
        let targets: Vec<usize> = honest
            .choose_multiple(&mut self.rng, count)
            .copied()
            .collect();
        for to in targets {
            self.fake_identity_attacks(n, to);
        }
    }

    /// A new identity of eclipser `n` registers at `to`, pushes fake peers and announces junk.
    fn fake_identity_attacks(&mut self, n: usize, to: usize) {
        let log = &mut self.rec.ban_log;
        log.next_fake += 1;
        let fake: PeerId = format!("fake-{n}-{}", log.next_fake)
            .parse()
            .expect("a valid id");
        log.fakes.insert(fake.clone(), n);
        let caller = Caller::Unproven {
            ip: Some(self.nodes[n].address.clone()),
        };
        let now = self.clock();
        let me = fake_advert(&fake, &self.nodes[n].address, now.wall);
        let fakes: Vec<PeerAdvert> = (0..self.scenario.attack.fake_adverts)
            .map(|k| {
                let id: PeerId = format!("phantom-{n}-{k}").parse().expect("a valid id");
                fake_advert(&id, &fake_address(k), now.wall)
            })
            .collect();
        let mut entries = self.junk(self.scenario.attack.junk_per_tick);
        if let Some(first) = entries.first_mut() {
            first.size = 0; // malformed
        }
        let Some(core) = self.nodes[to].core.as_mut() else {
            return;
        };
        if core.handle_register(me, &caller, now).is_ok() {
            let _ = core.handle_exchange(&fake, &caller, fakes, 20, now);
            core.handle_gossip(&fake, GossipMessage::Announce { entries }, now);
        }
        self.drain(to);
    }

    /// Node `n` banned someone.
    pub(crate) fn on_ban(&mut self, n: usize, record: &BanRecord) {
        let attacker = match &record.subject {
            BanSubject::Peer(id) => {
                index_of_id(id).or_else(|| self.rec.ban_log.fakes.get(id).copied())
            }
            BanSubject::Address(ip) => index_of_address(ip),
        };
        let at = self.now.as_millis();
        self.rec.count("bans");
        self.rec
            .ban_log
            .bans
            .push((at, n, record.subject.key(), attacker));
    }

    pub(crate) fn attack_report(&self) -> Option<AttackReport> {
        let attackers: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].role != Role::Honest && self.nodes[*i].role != Role::Dropper)
            .collect();
        if attackers.is_empty() {
            return None;
        }
        let start = self.scenario.attack.start.ms();
        let mut first: BTreeMap<usize, u64> = BTreeMap::new();
        let mut banning = std::collections::BTreeSet::new();
        let mut honest_banned = 0;
        for (at, by, _, whom) in &self.rec.ban_log.bans {
            match whom {
                Some(a) if self.nodes[*a].role != Role::Honest => {
                    let since = at.saturating_sub(start);
                    first
                        .entry(*a)
                        .and_modify(|t| *t = (*t).min(since))
                        .or_insert(since);
                    banning.insert(*by);
                }
                _ => honest_banned += 1,
            }
        }
        let mut times: Vec<u64> = first.values().copied().collect();
        times.sort_unstable();
        let minutes = (self.now.as_millis().saturating_sub(start) as f64 / 60_000.0).max(1e-3);
        let fake_dials = self
            .rec
            .counters
            .get("dials_to_fake_addresses")
            .copied()
            .unwrap_or(0);
        Some(AttackReport {
            attackers: attackers.len(),
            attackers_banned: first.len(),
            first_ban_ms_p50: times.get(times.len().saturating_sub(1) / 2).copied(),
            first_ban_ms_max: times.last().copied(),
            honest_banning: banning.len(),
            honest_banned,
            bans: self.rec.ban_log.bans.len(),
            fake_dials_per_minute: fake_dials as f64 / minutes,
        })
    }
}

/// An address no simulated node has (nodes are in 10.0.0.0/8).
fn fake_address(k: usize) -> String {
    format!("172.16.{}.{}", (k / 250) % 250, k % 250 + 1)
}

fn fake_advert(id: &PeerId, address: &str, now: sorcha_peer_core::model::Timestamp) -> PeerAdvert {
    PeerAdvert {
        peer_id: id.clone(),
        address: address.to_owned(),
        port: PORT,
        supported_protocols: vec![Protocol::Grpc],
        capabilities: PeerCapabilities {
            supports_streaming: false,
            supports_transaction_distribution: true,
            max_transaction_size: 1 << 20,
        },
        last_seen: now,
        is_seed_node: false,
    }
}
