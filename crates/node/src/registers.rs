//! Register awareness: which registers each peer advertises (in the PeerInfo of its
//! `RegisterPeer`, in its heartbeats), kept per peer in memory and in the peer store, so
//! `FindPeersForRegister` answers with the peers that hold a register (full replicas first)
//! and the API shows them. This node's own registers come from the configuration
//! (`registers = [...]`) and go out in its PeerInfo and heartbeats.
//!
//! Only what a peer says about itself is kept: hearsay in other peers' lists is not.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sorcha_peer_core::model::PeerId;
use sorcha_peer_wire::discovery::PeerRegisterAdvertisement;
use sorcha_peer_wire::heartbeat::{RegisterAdvertisement, SyncStateProto};

use crate::clock::now;
use crate::store::{RegisterAd, StoreHandle};

/// Registers kept per peer at most; a peer advertising more is cut (Sorcha nodes hold a few).
pub const MAX_REGISTERS_PER_PEER: usize = 256;

/// Peers whose registers are kept at most: the peer list's own bound (`max_peers_in_list`
/// tops at 10,000); past it new peers' registers are refused and counted.
pub const MAX_PEERS: usize = 10_000;

/// Longest register id accepted, in bytes (Sorcha's are GUIDs or short names).
pub const MAX_REGISTER_ID: usize = 128;

pub type SharedRegisters = Arc<Mutex<RegisterBook>>;

#[derive(Debug, Default)]
pub struct RegisterBook {
    by_peer: HashMap<PeerId, Vec<RegisterAd>>,
    /// This node's own, as configured.
    own: Vec<RegisterAd>,
    store: Option<StoreHandle>,
    /// Peers whose registers were not kept because the book was full.
    pub refused: u64,
}

impl RegisterBook {
    /// A book advertising `own`, writing what changes to `store`, starting from `stored`.
    pub fn new(
        own: Vec<RegisterAd>,
        store: Option<StoreHandle>,
        stored: Vec<(PeerId, Vec<RegisterAd>)>,
    ) -> Self {
        Self {
            by_peer: stored.into_iter().take(MAX_PEERS).collect(),
            own,
            store,
            refused: 0,
        }
    }

    pub fn shared(self) -> SharedRegisters {
        Arc::new(Mutex::new(self))
    }

    /// This node's registers.
    pub fn own(&self) -> &[RegisterAd] {
        &self.own
    }

    /// What `peer` advertises.
    pub fn of(&self, peer: &PeerId) -> &[RegisterAd] {
        self.by_peer.get(peer).map_or(&[], Vec::as_slice)
    }

    /// `peer` says it holds `ads` (all of them: the list replaces the last one); stored when
    /// it changed.
    pub fn set(&mut self, peer: &PeerId, mut ads: Vec<RegisterAd>) {
        ads.retain(|a| !a.register_id.is_empty() && a.register_id.len() <= MAX_REGISTER_ID);
        ads.truncate(MAX_REGISTERS_PER_PEER);
        if self.by_peer.get(peer) == Some(&ads)
            || (ads.is_empty() && !self.by_peer.contains_key(peer))
        {
            return;
        }
        if !self.by_peer.contains_key(peer) && self.by_peer.len() >= MAX_PEERS {
            self.refused += 1;
            return;
        }
        if let Some(store) = &self.store {
            // A full writer queue loses this write only; the next advert stores it.
            let _ = store.set_registers(peer.clone(), ads.clone(), now());
        }
        self.by_peer.insert(peer.clone(), ads);
    }

    /// The peers advertising `register_id` (only full replicas if `full_only`): full replicas
    /// first, then the most recent version, then by id (a stable answer).
    pub fn advertisers(&self, register_id: &str, full_only: bool) -> Vec<(PeerId, RegisterAd)> {
        let mut found: Vec<(PeerId, RegisterAd)> = self
            .by_peer
            .iter()
            .filter_map(|(peer, ads)| {
                let ad = ads.iter().find(|a| a.register_id == register_id)?;
                (!full_only || ad.has_full_replica).then(|| (peer.clone(), ad.clone()))
            })
            .collect();
        found.sort_by(|(pa, a), (pb, b)| {
            (b.has_full_replica, b.latest_version, pa).cmp(&(
                a.has_full_replica,
                a.latest_version,
                pb,
            ))
        });
        found
    }
}

/// The registers of a PeerInfo.
pub fn from_peer_info(ads: &[PeerRegisterAdvertisement]) -> Vec<RegisterAd> {
    ads.iter()
        .take(MAX_REGISTERS_PER_PEER)
        .map(|a| RegisterAd {
            register_id: a.register_id.clone(),
            has_full_replica: a.has_full_replica,
            latest_version: a.latest_version,
            is_public: a.is_public,
        })
        .collect()
}

/// The registers of a heartbeat: a register fully replicated or active is a full replica.
pub fn from_heartbeat(ads: &[RegisterAdvertisement]) -> Vec<RegisterAd> {
    ads.iter()
        .take(MAX_REGISTERS_PER_PEER)
        .map(|a| RegisterAd {
            register_id: a.register_id.clone(),
            has_full_replica: matches!(
                a.sync_state(),
                SyncStateProto::FullyReplicated | SyncStateProto::Active
            ),
            latest_version: a.latest_version,
            is_public: a.is_public,
        })
        .collect()
}

pub fn to_peer_info(ads: &[RegisterAd]) -> Vec<PeerRegisterAdvertisement> {
    ads.iter()
        .map(|a| PeerRegisterAdvertisement {
            register_id: a.register_id.clone(),
            has_full_replica: a.has_full_replica,
            latest_version: a.latest_version,
            is_public: a.is_public,
        })
        .collect()
}

pub fn to_heartbeat(ads: &[RegisterAd]) -> Vec<RegisterAdvertisement> {
    ads.iter()
        .map(|a| RegisterAdvertisement {
            register_id: a.register_id.clone(),
            sync_state: if a.has_full_replica {
                SyncStateProto::FullyReplicated
            } else {
                SyncStateProto::Syncing
            }
            .into(),
            latest_version: a.latest_version,
            latest_docket_version: 0,
            is_public: a.is_public,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ad(name: &str, full: bool, version: i64) -> RegisterAd {
        RegisterAd {
            register_id: name.into(),
            has_full_replica: full,
            latest_version: version,
            is_public: true,
        }
    }

    fn peer(n: u32) -> PeerId {
        format!("peer{n}").parse().unwrap()
    }

    #[test]
    fn advertisers_come_full_replicas_first_and_lists_replace() {
        let mut book = RegisterBook::default();
        book.set(&peer(1), vec![ad("r", false, 9)]);
        book.set(&peer(2), vec![ad("r", true, 3), ad("s", true, 1)]);
        book.set(&peer(3), vec![ad("s", true, 1)]);
        let ids =
            |found: Vec<(PeerId, RegisterAd)>| found.into_iter().map(|f| f.0).collect::<Vec<_>>();
        assert_eq!(ids(book.advertisers("r", false)), vec![peer(2), peer(1)]);
        assert_eq!(ids(book.advertisers("r", true)), vec![peer(2)]);
        book.set(&peer(2), vec![ad("s", true, 2)]);
        assert_eq!(ids(book.advertisers("r", false)), vec![peer(1)]);
        book.set(&peer(4), vec![ad("", true, 1)]);
        assert!(
            book.of(&peer(4)).is_empty(),
            "an empty id is not a register"
        );
    }
}
