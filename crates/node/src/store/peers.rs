//! The queries of the peer store and the rules of its writes.
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
use sorcha_peer_core::model::{PeerId, PeerNode, PeerStatus, Protocol, Timestamp};

use super::codec::{
    PEER_COLUMNS, RawPeer, capabilities_to_text, latency_to_sql, millis_to_sql, protocol_from_text,
    protocols_to_text, status_to_text,
};
use super::{Ban, PeerStore, StoreError};

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
                           banned_until)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
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

fn max_ban(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    a.max(b)
}

/// SQLite takes signed limits; anything past `i64::MAX` rows means "all of them".
fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
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

    // ---- reads ----

    pub fn get(&self, id: &PeerId) -> Result<Option<PeerNode>, StoreError> {
        self.query_peers("WHERE peer_id = ?1", [id.as_str()])
            .map(|mut v| v.pop())
    }

    /// Every stored peer, by id.
    pub fn all(&self) -> Result<Vec<PeerNode>, StoreError> {
        self.query_peers("ORDER BY peer_id", [])
    }

    pub fn count(&self) -> Result<usize, StoreError> {
        let n: i64 = self
            .conn
            .query_row("SELECT count(*) FROM peers", [], |r| r.get(0))?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// What `Membership::new` gets as `stored_peers`: at most `limit` peers, most recently seen
    /// first. Peers banned at `now` are taken before any others, so a full store cannot push a
    /// ban out of the limit and a restart never lifts it. Bans of peers without a row come from
    /// [`banned`](Self::banned).
    pub fn load_for_start(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<PeerNode>, StoreError> {
        let sql = format!(
            "SELECT {PEER_COLUMNS} FROM (
                 SELECT * FROM peers
                 ORDER BY coalesce(banned_until > ?1, 0) DESC, last_seen DESC, peer_id
                 LIMIT ?2)
             ORDER BY last_seen DESC, peer_id"
        );
        self.collect(&sql, params![millis_to_sql(now), sql_limit(limit)])
    }

    /// Peers with this status, most recently seen first.
    pub fn by_status(&self, status: PeerStatus) -> Result<Vec<PeerNode>, StoreError> {
        self.query_peers(
            "WHERE status = ?1 ORDER BY last_seen DESC, peer_id",
            [status_to_text(status)],
        )
    }

    /// Peers seen at or after `since`, most recent first, at most `limit`.
    pub fn recently_seen(
        &self,
        since: Timestamp,
        limit: usize,
    ) -> Result<Vec<PeerNode>, StoreError> {
        self.query_peers(
            "WHERE last_seen >= ?1 ORDER BY last_seen DESC, peer_id LIMIT ?2",
            params![millis_to_sql(since), sql_limit(limit)],
        )
    }

    /// Up to `n` peers chosen at random, none banned at `now` (a sample is for dialling or
    /// passing on, and a banned peer must be neither). Takes `now` for that reason.
    pub fn random_sample(&self, n: usize, now: Timestamp) -> Result<Vec<PeerNode>, StoreError> {
        self.query_peers(
            "WHERE banned_until IS NULL OR banned_until <= ?1 ORDER BY random() LIMIT ?2",
            params![millis_to_sql(now), sql_limit(n)],
        )
    }

    /// Peers flagged as bootstrap (configured or advertised seed), by id.
    pub fn bootstraps(&self) -> Result<Vec<PeerNode>, StoreError> {
        self.query_peers("WHERE is_bootstrap = 1 ORDER BY peer_id", [])
    }

    /// Every ban in force at `now`, of stored peers and of peers without a row, by id. At start
    /// the daemon passes each to `Membership::ban`.
    pub fn banned(&self, now: Timestamp) -> Result<Vec<Ban>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT peer_id, max(banned_until) FROM (
                 SELECT peer_id, banned_until FROM peers WHERE banned_until > ?1
                 UNION ALL
                 SELECT peer_id, banned_until FROM orphan_bans WHERE banned_until > ?1)
             GROUP BY peer_id ORDER BY peer_id",
        )?;
        let rows = stmt.query_map([millis_to_sql(now)], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })?;
        let mut bans = Vec::new();
        for row in rows {
            let (id, until) = row?;
            let corrupt = |column, value| StoreError::Corrupt {
                peer_id: id.clone(),
                column,
                value,
            };
            let peer_id = id.parse().map_err(|_| corrupt("peer_id", id.clone()))?;
            let until = u64::try_from(until)
                .map(Timestamp::from_millis)
                .map_err(|_| corrupt("banned_until", until.to_string()))?;
            bans.push(Ban { peer_id, until });
        }
        Ok(bans)
    }

    /// The protocol that last worked with `id`, if recorded (names this version does not
    /// speak read as `None`).
    pub fn preferred_protocol(&self, id: &PeerId) -> Result<Option<Protocol>, StoreError> {
        let name: Option<Option<String>> = self
            .conn
            .query_row(
                "SELECT preferred_protocol FROM peers WHERE peer_id = ?1",
                [id.as_str()],
                |r| r.get(0),
            )
            .optional()?;
        Ok(name.flatten().as_deref().and_then(protocol_from_text))
    }

    fn query_peers(
        &self,
        tail: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<PeerNode>, StoreError> {
        self.collect(&format!("SELECT {PEER_COLUMNS} FROM peers {tail}"), params)
    }

    fn collect(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<PeerNode>, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt.query_map(params, RawPeer::from_row)?;
        rows.map(|raw| raw?.decode()).collect()
    }
}

#[cfg(test)]
mod tests {
    use tempfile::TempDir;

    use super::*;
    use crate::store::PEERS_DB_FILE;
    use crate::store::test_util::{id, node, t};

    fn open(dir: &TempDir) -> PeerStore {
        PeerStore::open_in(dir.path()).unwrap()
    }

    #[test]
    fn every_field_round_trips_and_survives_reopening() {
        let dir = TempDir::new().unwrap();
        let full = PeerNode {
            is_bootstrap: true,
            banned_until: Some(t(9_999_999)),
            status: PeerStatus::Busy,
            supported_protocols: Protocol::ALL.to_vec(),
            ..node(1, 2_000)
        };
        let empty = PeerNode {
            latency: None,
            banned_until: None,
            supported_protocols: vec![],
            status: PeerStatus::Unknown,
            failure_count: 0,
            ..node(2, 3_000)
        };
        {
            let mut store = open(&dir);
            store.upsert(&full).unwrap();
            store.upsert(&empty).unwrap();
            assert_eq!(store.get(&id(1)).unwrap().as_ref(), Some(&full));
            assert_eq!(store.get(&id(2)).unwrap().as_ref(), Some(&empty));
        }
        let store = open(&dir);
        assert_eq!(store.all().unwrap(), vec![full, empty]);
        assert_eq!(store.get(&id(3)).unwrap(), None);
    }

    #[test]
    fn opening_twice_keeps_the_data_and_the_schema_version() {
        let dir = TempDir::new().unwrap();
        let mut store = open(&dir);
        store.upsert(&node(1, 10)).unwrap();
        let second = open(&dir);
        assert_eq!(second.count().unwrap(), 1);
        drop((store, second));
        let again = open(&dir);
        let version: i64 = again
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, 2);
        let mode: String = again
            .conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
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
    fn load_for_start_orders_by_last_seen_bounds_and_keeps_bans() {
        let dir = TempDir::new().unwrap();
        let mut store = open(&dir);
        for n in 1..=10 {
            store.upsert(&node(n, u64::from(n) * 100)).unwrap();
        }
        let now = t(2_000);
        // The oldest peer is banned: it must not fall out of the limit.
        store.set_ban(&id(1), Some(t(9_000))).unwrap();
        // An expired ban gives no priority.
        store.set_ban(&id(2), Some(t(1_500))).unwrap();
        let loaded = store.load_for_start(now, 4).unwrap();
        let ids: Vec<_> = loaded.iter().map(|p| p.peer_id.clone()).collect();
        assert_eq!(ids, vec![id(10), id(9), id(8), id(1)]);
        assert_eq!(loaded[3].banned_until, Some(t(9_000)));
        assert_eq!(store.load_for_start(now, 100).unwrap().len(), 10);
        assert!(store.load_for_start(now, 0).unwrap().is_empty());
    }

    #[test]
    fn selections_filter_and_bound() {
        let dir = TempDir::new().unwrap();
        let mut store = open(&dir);
        for n in 1..=10 {
            let mut p = node(n, u64::from(n) * 100);
            p.is_bootstrap = n <= 2;
            p.status = if n % 2 == 0 {
                PeerStatus::Online
            } else {
                PeerStatus::Offline
            };
            store.upsert(&p).unwrap();
        }
        store.set_ban(&id(10), Some(t(9_000))).unwrap();
        let ids = |v: Vec<PeerNode>| v.into_iter().map(|p| p.peer_id).collect::<Vec<_>>();
        assert_eq!(ids(store.bootstraps().unwrap()), vec![id(1), id(2)]);
        assert_eq!(
            ids(store.by_status(PeerStatus::Online).unwrap()),
            vec![id(10), id(8), id(6), id(4), id(2)]
        );
        assert_eq!(
            ids(store.recently_seen(t(700), 2).unwrap()),
            vec![id(10), id(9)]
        );
        assert_eq!(ids(store.recently_seen(t(950), 5).unwrap()), vec![id(10)]);
        let sample = store.random_sample(3, t(0)).unwrap();
        assert_eq!(sample.len(), 3);
        let all_but_banned = ids(store.random_sample(100, t(0)).unwrap());
        assert_eq!(all_but_banned.len(), 9);
        assert!(
            !all_but_banned.contains(&id(10)),
            "banned peers are not sampled"
        );
        assert_eq!(store.random_sample(100, t(9_000)).unwrap().len(), 10);
    }

    #[test]
    fn a_garbage_file_gives_an_error_naming_the_path() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join(PEERS_DB_FILE);
        std::fs::write(
            &path,
            b"this is not a database, just some bytes ".repeat(200),
        )
        .unwrap();
        let err = PeerStore::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn a_corrupt_row_gives_a_typed_error() {
        let dir = TempDir::new().unwrap();
        let mut store = open(&dir);
        store.upsert(&node(1, 10)).unwrap();
        store
            .conn
            .execute("UPDATE peers SET capabilities = 'nonsense'", [])
            .unwrap();
        let err = store.all().unwrap_err();
        assert!(
            matches!(
                &err,
                StoreError::Corrupt {
                    column: "capabilities",
                    ..
                }
            ),
            "{err:?}"
        );
    }
}
