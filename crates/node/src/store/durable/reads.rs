//! The reads, over the store's own read connection (WAL lets it run beside the writer): one
//! transaction by id (its row found in the writer's index, `ids.rs`), the rows to load at
//! start, the dead letters. Each is a short indexed query; they are synchronous, and callers
//! on the async runtime that may scan (dead letters, the start-up load) run them on the
//! blocking pool.

use std::sync::Arc;

use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use sorcha_peer_core::model::{Timestamp, TxHash, TxId};

use super::schema::QUEUED;
use super::{DurableError, TxDb, lock};
use crate::store::transactions::StoredTx;

/// One dead letter, as `GET /api/v1/queue` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    pub hash: String,
    pub size: usize,
    pub queued_at: u64,
    pub attempts: u32,
    pub reason: String,
}

/// A row read at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub tx: StoredTx,
    /// Still queued for a peer: the flusher announces it, not the restore.
    pub queued: bool,
}

type Row = (Vec<u8>, Vec<u8>, Option<String>, String, i64, i64);

fn to_stored(row: Row) -> Option<(StoredTx, bool)> {
    let (hash, body, register_id, origin, first_seen, state) = row;
    let hash = TxHash::from_bytes(<[u8; 32]>::try_from(hash).ok()?);
    let stored = StoredTx {
        hash,
        body: Arc::from(body),
        register_id,
        first_seen: Timestamp::from_millis(u64::try_from(first_seen).unwrap_or(0)),
        origin,
    };
    Some((stored, state == QUEUED))
}

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

impl TxDb {
    /// The transaction with this id, whose whole hash must be `hash` when one is given.
    pub fn find(&self, id: &TxId, hash: Option<&TxHash>) -> Result<Option<StoredTx>, DurableError> {
        let Some(seq) = lock(&self.shared.ids).get(id) else {
            return Ok(None);
        };
        let conn = lock(&self.shared.reader);
        let row = conn
            .prepare_cached(
                "SELECT hash, body, register_id, origin, first_seen, state
                 FROM transactions WHERE seq = ?1",
            )
            .and_then(|mut s| s.query_row(params![seq], read_row).optional())
            .map_err(|e| DurableError::sql(self.path(), &e))?;
        let found = row.and_then(to_stored).map(|(tx, _)| tx);
        // The row of `seq` may have been deleted, and the number reused, since the lookup.
        let found = found.filter(|tx| tx.hash.id() == *id);
        Ok(found.filter(|tx| hash.is_none_or(|h| *h == tx.hash)))
    }

    /// The newest rows first seen after `since`, at most `limit` rows and `max_bytes` of
    /// bodies, returned oldest first (the order the caches keep). Queued rows come first,
    /// whatever their age: they are the ones a restart must not forget.
    pub fn load_recent(
        &self,
        since: Timestamp,
        limit: usize,
        max_bytes: u64,
    ) -> Result<Vec<Loaded>, DurableError> {
        let conn = lock(&self.shared.reader);
        let sql_err = |e| DurableError::sql(self.path(), &e);
        let mut stmt = conn
            .prepare(
                "SELECT hash, body, register_id, origin, first_seen, state FROM transactions
                 WHERE state = 1 OR first_seen >= ?1
                 ORDER BY state = 1 DESC, seq DESC LIMIT ?2",
            )
            .map_err(sql_err)?;
        let rows = stmt
            .query_map(
                params![since.to_wire(), i64::try_from(limit).unwrap_or(i64::MAX)],
                read_row,
            )
            .map_err(sql_err)?;
        let mut loaded = Vec::new();
        let mut bytes = 0u64;
        for row in rows {
            let Some((tx, queued)) = to_stored(row.map_err(sql_err)?) else {
                continue;
            };
            bytes += tx.body.len() as u64;
            if bytes > max_bytes && !queued {
                break;
            }
            loaded.push(Loaded { tx, queued });
        }
        loaded.sort_by_key(|l| l.tx.first_seen);
        Ok(loaded)
    }

    /// Dead letters, oldest first, at most `limit`.
    pub fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, DurableError> {
        let conn = lock(&self.shared.reader);
        let sql_err = |e| DurableError::sql(self.path(), &e);
        let mut stmt = conn
            .prepare_cached(
                "SELECT hash, length(body), first_seen, attempts, coalesce(reason, '')
                 FROM transactions WHERE state = 2 ORDER BY seq LIMIT ?1",
            )
            .map_err(sql_err)?;
        let rows = stmt
            .query_map(params![i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
                let hash: Vec<u8> = r.get(0)?;
                Ok(DeadLetter {
                    hash: hex::encode(hash),
                    size: r.get::<_, i64>(1)? as usize,
                    queued_at: r.get::<_, i64>(2)? as u64,
                    attempts: r.get(3)?,
                    reason: r.get(4)?,
                })
            })
            .map_err(sql_err)?;
        rows.collect::<Result<_, _>>().map_err(sql_err)
    }
}
