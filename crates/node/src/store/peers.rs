//! The writes of the peer store and their rules.
//!
//! The writes are free functions over a `Connection` so [`PeerStore`]'s own methods (one
//! transaction each) and the batching writer (many in one transaction) share them.
//!
//! Rules, in one place:
//! - **Dedup by id**: `peer_id` is the primary key; an upsert of a known id updates its row.
//! - **Dedup by endpoint**: one row per `(address, port)`. A peer that comes back under a new
//!   id at a known endpoint (new key, reinstall) replaces the old row, which would otherwise be
//!   dialled forever and fail the id check.
//! - **Bans are only lifted on purpose**: [`set_ban`](PeerStore::set_ban) writes a ban exactly
//!   (lifting it with `None`); [`upsert`](PeerStore::upsert) can raise a ban but never lowers
//!   or drops one, so a stale `PeerNode` copy cannot unban a peer. When a new id replaces a
//!   banned row at the same endpoint, the ban is carried over to the new id (ids are free to
//!   make, the endpoint is what the banned operator keeps) and also kept for the old id. A
//!   forgotten peer's ban and a ban on a peer with no row live on in `orphan_bans` and come
//!   back onto the row if the peer is stored again.
//! - **`is_bootstrap` belongs to the endpoint**: it is carried over to a new id at the same
//!   address, because bootstrap nodes are configured as `HOST:PORT`.
//! - `first_seen` never moves forward; `preferred_protocol` is untouched by upserts.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use sorcha_peer_core::model::{PeerId, PeerNode, Protocol, Timestamp};

use super::codec::{
    capabilities_to_text, latency_to_sql, millis_to_sql, protocols_to_text, status_to_text,
};
use super::{PeerStore, StoreError};

/// Inserts or updates `node` under the rules of the module doc.
pub(super) fn upsert(conn: &Connection, node: &PeerNode) -> Result<(), StoreError> {
    let id = node.peer_id.as_str();
    let mut ban = node.banned_until.map(millis_to_sql);
    let mut is_bootstrap = node.is_bootstrap;

    // At most one row, by the UNIQUE endpoint index.
    let displaced: Option<(String, Option<i64>, bool)> = conn
        .query_row(
            "SELECT peer_id, banned_until, is_bootstrap FROM peers
             WHERE address = ?1 AND port = ?2 AND peer_id <> ?3",
            params![node.address, node.port, id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    if let Some((old_id, old_ban, old_bootstrap)) = displaced {
        if let Some(old_ban) = old_ban {
            raise_orphan_ban(conn, &old_id, old_ban)?;
        }
        ban = max_ban(ban, old_ban);
        is_bootstrap |= old_bootstrap;
        conn.execute("DELETE FROM peers WHERE peer_id = ?1", [&old_id])?;
    }
    let orphan: Option<i64> = conn
        .query_row(
            "DELETE FROM orphan_bans WHERE peer_id = ?1 RETURNING banned_until",
            [id],
            |r| r.get(0),
        )
        .optional()?;
    ban = max_ban(ban, orphan);

    conn.execute(
        "INSERT INTO peers (peer_id, address, port, protocols, capabilities, status,
                           first_seen, last_seen, failure_count, latency_ms, is_bootstrap,
                           banned_until, verified)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
         ON CONFLICT (peer_id) DO UPDATE SET
             address = excluded.address,
             port = excluded.port,
             protocols = excluded.protocols,
             capabilities = excluded.capabilities,
             status = excluded.status,
             first_seen = min(first_seen, excluded.first_seen),
             last_seen = excluded.last_seen,
             failure_count = excluded.failure_count,
             latency_ms = excluded.latency_ms,
             is_bootstrap = excluded.is_bootstrap,
             verified = max(verified, excluded.verified),
             banned_until = CASE
                 WHEN banned_until IS NULL THEN excluded.banned_until
                 WHEN excluded.banned_until IS NULL THEN banned_until
                 ELSE max(banned_until, excluded.banned_until) END",
        params![
            id,
            node.address,
            node.port,
            protocols_to_text(&node.supported_protocols),
            capabilities_to_text(&node.capabilities),
            status_to_text(node.status),
            millis_to_sql(node.first_seen),
            millis_to_sql(node.last_seen),
            node.failure_count,
            latency_to_sql(node.latency),
            is_bootstrap,
            ban,
            node.verified,
        ],
    )?;
    Ok(())
}

/// Deletes the row of `id`, keeping its ban (if any) in `orphan_bans`. True if it existed.
pub(super) fn remove(conn: &Connection, id: &PeerId) -> Result<bool, StoreError> {
    let removed: Option<Option<i64>> = conn
        .query_row(
            "DELETE FROM peers WHERE peer_id = ?1 RETURNING banned_until",
            [id.as_str()],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(Some(ban)) = removed {
        raise_orphan_ban(conn, id.as_str(), ban)?;
    }
    Ok(removed.is_some())
}

/// Sets (or with `None` lifts) the ban of `id`, stored or not.
pub(super) fn set_ban(
    conn: &Connection,
    id: &PeerId,
    until: Option<Timestamp>,
) -> Result<(), StoreError> {
    let until = until.map(millis_to_sql);
    let on_row = conn.execute(
        "UPDATE peers SET banned_until = ?2 WHERE peer_id = ?1",
        params![id.as_str(), until],
    )?;
    match until {
        Some(until) if on_row == 0 => {
            conn.execute(
                "INSERT INTO orphan_bans (peer_id, banned_until) VALUES (?1, ?2)
                 ON CONFLICT (peer_id) DO UPDATE SET banned_until = excluded.banned_until",
                params![id.as_str(), until],
            )?;
        }
        Some(_) => {}
        None => {
            conn.execute("DELETE FROM orphan_bans WHERE peer_id = ?1", [id.as_str()])?;
        }
    }
    Ok(())
}

/// Records the protocol that last worked with `id`. False if `id` has no row.
pub(super) fn set_preferred_protocol(
    conn: &Connection,
    id: &PeerId,
    protocol: Option<Protocol>,
) -> Result<bool, StoreError> {
    let changed = conn.execute(
        "UPDATE peers SET preferred_protocol = ?2 WHERE peer_id = ?1",
        params![id.as_str(), protocol.map(Protocol::as_str)],
    )?;
    Ok(changed > 0)
}

/// One register a peer advertises (PeerInfo's `PeerRegisterAdvertisement`, a heartbeat's
/// `RegisterAdvertisement`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RegisterAd {
    pub register_id: String,
    pub has_full_replica: bool,
    pub latest_version: i64,
    pub is_public: bool,
}

/// Records that `id` refused `service` at `at`, or with `None` that it serves it again.
pub(super) fn set_refusal(
    conn: &Connection,
    id: &PeerId,
    service: &str,
    at: Option<Timestamp>,
) -> Result<(), StoreError> {
    match at {
        Some(at) => conn.execute(
            "INSERT INTO peer_refusals (peer_id, service, refused_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (peer_id, service) DO UPDATE SET refused_at = excluded.refused_at",
            params![id.as_str(), service, millis_to_sql(at)],
        )?,
        None => conn.execute(
            "DELETE FROM peer_refusals WHERE peer_id = ?1 AND service = ?2",
            params![id.as_str(), service],
        )?,
    };
    Ok(())
}

/// Replaces the registers `id` advertises with `ads`, as of `at`.
pub(super) fn set_registers(
    conn: &Connection,
    id: &PeerId,
    ads: &[RegisterAd],
    at: Timestamp,
) -> Result<(), StoreError> {
    conn.execute(
        "DELETE FROM peer_registers WHERE peer_id = ?1",
        [id.as_str()],
    )?;
    for ad in ads {
        conn.execute(
            "INSERT OR REPLACE INTO peer_registers (peer_id, register_id, has_full_replica,
                 latest_version, is_public, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                id.as_str(),
                ad.register_id,
                ad.has_full_replica,
                ad.latest_version,
                ad.is_public,
                millis_to_sql(at)
            ],
        )?;
    }
    Ok(())
}

/// Keeps the later of an existing orphan ban of `id` and `until`.
fn raise_orphan_ban(conn: &Connection, id: &str, until: i64) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO orphan_bans (peer_id, banned_until) VALUES (?1, ?2)
         ON CONFLICT (peer_id) DO UPDATE SET
             banned_until = max(banned_until, excluded.banned_until)",
        params![id, until],
    )?;
    Ok(())
}

/// `None` (no ban) orders below any ban, so this is the later ban of the two.
fn max_ban(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    a.max(b)
}

impl PeerStore {
    // ---- writes (one transaction each) ----

    /// Inserts or updates one peer (rules in the module doc of `peers.rs`).
    pub fn upsert(&mut self, node: &PeerNode) -> Result<(), StoreError> {
        self.upsert_many(std::slice::from_ref(node))
    }

    /// Inserts or updates many peers in one transaction: all or none.
    pub fn upsert_many(&mut self, nodes: &[PeerNode]) -> Result<(), StoreError> {
        self.write(|conn| nodes.iter().try_for_each(|node| upsert(conn, node)))
    }

    /// Deletes a peer (`Output::Forget`); a ban on it stays on record. True if it was stored.
    pub fn remove(&mut self, id: &PeerId) -> Result<bool, StoreError> {
        self.write(|conn| remove(conn, id))
    }

    /// Bans `id` until `until`, or lifts its ban with `None`. Works for peers without a row
    /// too (kept in `orphan_bans`), because the core bans peers before they register.
    pub fn set_ban(&mut self, id: &PeerId, until: Option<Timestamp>) -> Result<(), StoreError> {
        self.write(|conn| set_ban(conn, id, until))
    }

    /// Records the protocol that last worked with `id` (`None` forgets it). False if `id` has
    /// no row: there is nothing to dial it with yet.
    pub fn set_preferred_protocol(
        &mut self,
        id: &PeerId,
        protocol: Option<Protocol>,
    ) -> Result<bool, StoreError> {
        self.write(|conn| set_preferred_protocol(conn, id, protocol))
    }

    /// Records (or with `None` lifts) a refusal of `service` by `id`, with its wall time.
    pub fn set_refusal(
        &mut self,
        id: &PeerId,
        service: &str,
        at: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        self.write(|conn| set_refusal(conn, id, service, at))
    }

    /// Replaces the registers `id` advertises.
    pub fn set_registers(
        &mut self,
        id: &PeerId,
        ads: &[RegisterAd],
        at: Timestamp,
    ) -> Result<(), StoreError> {
        self.write(|conn| set_registers(conn, id, ads, at))
    }

    /// Clears bans that ended at or before `now` (from rows and `orphan_bans`) so the table of
    /// orphan bans stays bounded. Returns how many were cleared.
    pub fn purge_expired_bans(&mut self, now: Timestamp) -> Result<usize, StoreError> {
        let now = millis_to_sql(now);
        self.write(|conn| {
            let rows = conn.execute(
                "UPDATE peers SET banned_until = NULL WHERE banned_until <= ?1",
                [now],
            )?;
            let orphans =
                conn.execute("DELETE FROM orphan_bans WHERE banned_until <= ?1", [now])?;
            Ok(rows + orphans)
        })
    }

    /// Runs `f` in an IMMEDIATE transaction: the write lock is taken at BEGIN, so a busy
    /// database waits in the busy handler instead of failing on the upgrade from read to write.
    pub(super) fn write<T>(
        &mut self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use sorcha_peer_core::model::PeerStatus;
    use tempfile::TempDir;

    use super::*;
    use crate::store::Ban;
    use crate::store::test_util::{id, node, t};

    fn open(dir: &TempDir) -> PeerStore {
        PeerStore::open_in(dir.path()).unwrap()
    }

    #[test]
    fn upsert_updates_but_keeps_first_seen_and_preferred_protocol() {
        let dir = TempDir::new().unwrap();
        let mut store = open(&dir);
        store.upsert(&node(1, 10)).unwrap();
        assert!(
            store
                .set_preferred_protocol(&id(1), Some(Protocol::GrpcStream))
                .unwrap()
        );
        let later = PeerNode {
            address: "10.9.9.9".into(),
            port: 6000,
            first_seen: t(5_000),
            failure_count: 0,
            latency: None,
            status: PeerStatus::Offline,
            ..node(1, 20)
        };
        store.upsert(&later).unwrap();
        let stored = store.get(&id(1)).unwrap().unwrap();
        assert_eq!(
            stored,
            PeerNode {
                first_seen: t(1_000),
                ..later
            }
        );
        assert_eq!(store.count().unwrap(), 1);
        assert_eq!(
            store.preferred_protocol(&id(1)).unwrap(),
            Some(Protocol::GrpcStream)
        );
        assert!(
            !store
                .set_preferred_protocol(&id(9), Some(Protocol::Rest))
                .unwrap()
        );
    }

    #[test]
    fn upsert_many_is_one_transaction() {
        let dir = TempDir::new().unwrap();
        let mut store = open(&dir);
        let mut bad = node(3, 10);
        bad.port = 0; // refused by the CHECK constraint
        let err = store.upsert_many(&[node(1, 10), node(2, 10), bad]);
        assert!(matches!(err, Err(StoreError::Sql(_))), "{err:?}");
        assert_eq!(store.count().unwrap(), 0, "nothing of a failed batch stays");
        store.upsert_many(&[node(1, 10), node(2, 10)]).unwrap();
        assert_eq!(store.count().unwrap(), 2);
    }

    #[test]
    fn a_new_id_at_a_known_endpoint_replaces_the_old_row() {
        let dir = TempDir::new().unwrap();
        let mut store = open(&dir);
        let old = PeerNode {
            is_bootstrap: true,
            ..node(1, 10)
        };
        store.upsert(&old).unwrap();
        store.upsert(&node(2, 10)).unwrap(); // another endpoint: untouched
        let newcomer = PeerNode {
            address: old.address.clone(),
            ..node(7, 20)
        };
        store.upsert(&newcomer).unwrap();
        assert_eq!(store.get(&id(1)).unwrap(), None);
        let stored = store.get(&id(7)).unwrap().unwrap();
        assert!(
            stored.is_bootstrap,
            "bootstrap flag belongs to the endpoint"
        );
        assert_eq!(store.count().unwrap(), 2);
        // Same address, another port: a different endpoint.
        store
            .upsert(&PeerNode {
                address: old.address.clone(),
                port: 5002,
                ..node(8, 20)
            })
            .unwrap();
        assert_eq!(store.count().unwrap(), 3);
    }

    #[test]
    fn a_ban_is_carried_to_the_new_id_and_kept_for_the_old_one() {
        let dir = TempDir::new().unwrap();
        let mut store = open(&dir);
        let until = t(100_000);
        store.upsert(&node(1, 10)).unwrap();
        store.set_ban(&id(1), Some(until)).unwrap();
        let evader = PeerNode {
            address: node(1, 0).address,
            ..node(7, 20)
        };
        store.upsert(&evader).unwrap();
        assert_eq!(
            store.get(&id(7)).unwrap().unwrap().banned_until,
            Some(until)
        );
        let bans = store.banned(t(50)).unwrap();
        assert_eq!(
            bans,
            vec![
                Ban {
                    peer_id: id(1),
                    until
                },
                Ban {
                    peer_id: id(7),
                    until
                }
            ]
        );
        // The old id coming back elsewhere is still banned.
        store
            .upsert(&PeerNode {
                address: "10.1.1.1".into(),
                ..node(1, 30)
            })
            .unwrap();
        assert_eq!(
            store.get(&id(1)).unwrap().unwrap().banned_until,
            Some(until)
        );
    }

    #[test]
    fn upserts_never_lower_a_ban_and_set_ban_lifts_it() {
        let dir = TempDir::new().unwrap();
        let mut store = open(&dir);
        let until = t(100_000);
        store
            .upsert(&PeerNode {
                banned_until: Some(until),
                ..node(1, 10)
            })
            .unwrap();
        store.upsert(&node(1, 20)).unwrap(); // a stale copy without the ban
        assert_eq!(
            store.get(&id(1)).unwrap().unwrap().banned_until,
            Some(until)
        );
        store
            .upsert(&PeerNode {
                banned_until: Some(t(200_000)),
                ..node(1, 30)
            })
            .unwrap();
        assert_eq!(
            store.get(&id(1)).unwrap().unwrap().banned_until,
            Some(t(200_000)),
            "raised"
        );
        store.set_ban(&id(1), Some(t(500))).unwrap();
        assert_eq!(
            store.get(&id(1)).unwrap().unwrap().banned_until,
            Some(t(500))
        );
        store.set_ban(&id(1), None).unwrap();
        assert_eq!(store.get(&id(1)).unwrap().unwrap().banned_until, None);
    }

    #[test]
    fn bans_are_returned_only_while_in_force_and_survive_restart_and_forget() {
        let dir = TempDir::new().unwrap();
        {
            let mut store = open(&dir);
            store.upsert(&node(1, 10)).unwrap();
            store.upsert(&node(2, 10)).unwrap();
            store.set_ban(&id(1), Some(t(1_000))).unwrap();
            store.set_ban(&id(2), Some(t(5_000))).unwrap();
            // Banned before it ever registered: no row, ban kept anyway.
            store.set_ban(&id(9), Some(t(5_000))).unwrap();
            assert!(store.remove(&id(2)).unwrap());
            assert!(!store.remove(&id(2)).unwrap());
        }
        let mut store = open(&dir);
        let ids = |bans: Vec<Ban>| bans.into_iter().map(|b| b.peer_id).collect::<Vec<_>>();
        assert_eq!(
            ids(store.banned(t(999)).unwrap()),
            vec![id(1), id(2), id(9)]
        );
        assert_eq!(ids(store.banned(t(1_000)).unwrap()), vec![id(2), id(9)]);
        assert_eq!(ids(store.banned(t(5_000)).unwrap()), vec![]);
        // A forgotten banned peer that is stored again gets its ban back.
        store.upsert(&node(2, 20)).unwrap();
        assert_eq!(
            store.get(&id(2)).unwrap().unwrap().banned_until,
            Some(t(5_000))
        );
        // Lifting works on rows and orphans alike.
        store.set_ban(&id(9), None).unwrap();
        assert_eq!(ids(store.banned(t(0)).unwrap()), vec![id(1), id(2)]);
        assert_eq!(store.purge_expired_bans(t(1_000)).unwrap(), 1);
        assert_eq!(store.get(&id(1)).unwrap().unwrap().banned_until, None);
    }

    #[test]
    fn refusals_and_registers_are_kept_with_their_time_and_replaced() {
        let dir = TempDir::new().unwrap();
        {
            let mut store = open(&dir);
            store.set_refusal(&id(1), "stream", Some(t(10))).unwrap();
            store.set_refusal(&id(1), "notify", Some(t(20))).unwrap();
            store.set_refusal(&id(1), "notify", None).unwrap();
            let ad = |name: &str, full| RegisterAd {
                register_id: name.into(),
                has_full_replica: full,
                latest_version: 7,
                is_public: true,
            };
            store
                .set_registers(&id(2), &[ad("a", true), ad("b", false)], t(5))
                .unwrap();
            store.set_registers(&id(2), &[ad("b", true)], t(6)).unwrap();
        }
        let store = open(&dir);
        assert_eq!(
            store.refusals().unwrap(),
            vec![(id(1), "stream".to_owned(), t(10))]
        );
        let registers = store.registers().unwrap();
        assert_eq!(registers.len(), 1);
        assert_eq!(registers[0].1.len(), 1, "replaced, not merged");
        assert!(registers[0].1[0].has_full_replica);
    }
}
