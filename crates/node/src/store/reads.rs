//! The reads of the peer store: start-up loading, the selections other layers ask for, bans,
//! and what peers told us (refusals, registers). Every method decodes rows through `codec.rs`, so a bad row is a typed error.

use rusqlite::{OptionalExtension, params};
use sorcha_peer_core::model::{PeerId, PeerNode, PeerStatus, Protocol, Timestamp};

use super::codec::{PEER_COLUMNS, RawPeer, millis_to_sql, protocol_from_text, status_to_text};
use super::peers::RegisterAd;
use super::{Ban, PeerStore, StoreError};

/// SQLite takes signed limits; anything past `i64::MAX` rows means "all of them".
fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

impl PeerStore {
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
    /// Every refusal on record: (peer, service name, when).
    pub fn refusals(&self) -> Result<Vec<(PeerId, String, Timestamp)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT peer_id, service, refused_at FROM peer_refusals ORDER BY peer_id")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, service, at) = row?;
            // A row this version cannot read is skipped: a refusal is only a hint.
            if let Ok(id) = id.parse() {
                out.push((id, service, Timestamp::from_millis(at.max(0) as u64)));
            }
        }
        Ok(out)
    }

    /// Every peer's advertised registers, by peer.
    pub fn registers(&self) -> Result<Vec<(PeerId, Vec<RegisterAd>)>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT peer_id, register_id, has_full_replica, latest_version, is_public
             FROM peer_registers ORDER BY peer_id, register_id",
        )?;
        let rows = stmt.query_map([], |r| {
            let ad = RegisterAd {
                register_id: r.get(1)?,
                has_full_replica: r.get(2)?,
                latest_version: r.get(3)?,
                is_public: r.get(4)?,
            };
            Ok((r.get::<_, String>(0)?, ad))
        })?;
        let mut out: Vec<(PeerId, Vec<RegisterAd>)> = Vec::new();
        for row in rows {
            let (id, ad) = row?;
            let Ok(id) = id.parse::<PeerId>() else {
                continue;
            };
            match out.last_mut() {
                Some((last, ads)) if *last == id => ads.push(ad),
                _ => out.push((id, vec![ad])),
            }
        }
        Ok(out)
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
            verified: false,
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
        assert_eq!(version, super::super::migrations::MIGRATION_COUNT as i64);
        let mode: String = again
            .conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
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
