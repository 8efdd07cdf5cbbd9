//! The bans in force, shared read-only with the transport: [`NodeHandle::is_banned_id`] and
//! [`NodeHandle::is_banned_ip`] answer without a round trip to the actor, so a banned peer
//! can be refused at the door. The actor writes it whenever it bans or lifts a ban (the
//! core's bans stay the authority; this is their copy for readers), and the admin API reads
//! each ban's reason from it.
//!
//! [`NodeHandle::is_banned_id`]: super::NodeHandle::is_banned_id
//! [`NodeHandle::is_banned_ip`]: super::NodeHandle::is_banned_ip

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use sorcha_peer_core::model::{PeerId, Timestamp};

/// Bans kept per kind: the core's bounds (`membership::MAX_BANS`, `score::MAX_ADDRESS_BANS`).
pub const MAX_BOOK_ENTRIES: usize = 4096;

/// One ban as readers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanEntry {
    pub until: Timestamp,
    /// `operator`, or the offence that took the peer's score below the threshold.
    pub reason: String,
    pub strikes: u32,
}

/// Bans by id and by address, each bounded (expired ones go first, then the soonest to end).
#[derive(Debug, Default)]
pub struct BanBook {
    by_id: BTreeMap<PeerId, BanEntry>,
    by_ip: BTreeMap<IpAddr, BanEntry>,
}

pub type SharedBans = Arc<RwLock<BanBook>>;

impl BanBook {
    pub fn ban_id(&mut self, id: PeerId, entry: BanEntry, now: Timestamp) {
        insert(&mut self.by_id, id, entry, now);
    }

    pub fn ban_ip(&mut self, ip: IpAddr, entry: BanEntry, now: Timestamp) {
        insert(&mut self.by_ip, ip, entry, now);
    }

    pub fn lift_id(&mut self, id: &PeerId) {
        self.by_id.remove(id);
    }

    pub fn lift_ip(&mut self, ip: &IpAddr) {
        self.by_ip.remove(ip);
    }

    /// The ban of `id` in force at `now`.
    pub fn of_id(&self, id: &PeerId, now: Timestamp) -> Option<&BanEntry> {
        self.by_id.get(id).filter(|e| e.until > now)
    }

    pub fn of_ip(&self, ip: &IpAddr, now: Timestamp) -> Option<&BanEntry> {
        self.by_ip.get(ip).filter(|e| e.until > now)
    }

    /// The ids banned at `now`, with their bans.
    pub fn ids(&self, now: Timestamp) -> impl Iterator<Item = (&PeerId, &BanEntry)> {
        self.by_id.iter().filter(move |(_, e)| e.until > now)
    }

    /// Bans in force at `now`, ids and addresses.
    pub fn count(&self, now: Timestamp) -> usize {
        let live = |e: &BanEntry| e.until > now;
        self.by_id.values().filter(|e| live(e)).count()
            + self.by_ip.values().filter(|e| live(e)).count()
    }
}

fn insert<K: Ord + Clone>(
    map: &mut BTreeMap<K, BanEntry>,
    key: K,
    entry: BanEntry,
    now: Timestamp,
) {
    if !map.contains_key(&key) && map.len() >= MAX_BOOK_ENTRIES {
        map.retain(|_, e| e.until > now);
        if map.len() >= MAX_BOOK_ENTRIES {
            let soonest = map
                .iter()
                .min_by_key(|(_, e)| e.until)
                .map(|(k, _)| k.clone());
            if let Some(soonest) = soonest {
                map.remove(&soonest);
            }
        }
    }
    map.insert(key, entry);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_book_is_bounded_and_answers_only_bans_in_force() {
        let mut book = BanBook::default();
        let entry = |until| BanEntry {
            until: Timestamp::from_millis(until),
            reason: "operator".into(),
            strikes: 1,
        };
        for n in 0..(MAX_BOOK_ENTRIES + 5) {
            let ip = IpAddr::from([10, 0, (n / 256) as u8, (n % 256) as u8]);
            book.ban_ip(ip, entry(100 + n as u64), Timestamp::from_millis(0));
        }
        assert_eq!(book.by_ip.len(), MAX_BOOK_ENTRIES);
        let last = IpAddr::from([10, 0, 16, 4]);
        assert!(book.of_ip(&last, Timestamp::from_millis(50)).is_some());
        assert!(
            book.of_ip(&last, Timestamp::from_millis(1_000_000))
                .is_none()
        );
    }
}
