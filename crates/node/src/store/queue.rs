//! The durable queue of transactions submitted while the node is Offline.
//!
//! A submission while no peer is healthy is inserted into `<data_dir>/queue.db` (SQLite,
//! `synchronous=FULL`) and only then answered, so an acknowledged transaction survives
//! `kill -9` at any moment. Once the node has a healthy peer, the [`flusher`] hands queued
//! transactions to gossip, oldest first, in batches. An entry stays queued until a peer pulls
//! its body (the serving handlers [`OfflineQueue::confirm`] it); until then it is handed to
//! gossip again after a doubling delay, and after `max_retries` attempts it moves to the
//! dead-letter table, which the API shows. Nothing is dropped silently: a full queue refuses
//! new submissions with a reason.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use sorcha_peer_core::model::{Timestamp, TxHash};

/// File name of the queue inside the data dir.
pub const QUEUE_FILE: &str = "queue.db";

/// Why the queue refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The queue holds `max_queue_size` transactions already.
    #[error(
        "the offline queue is full ({0} transactions, offline.max_queue_size); retry when the node is online"
    )]
    Full(u64),
    /// SQLite failed.
    #[error("offline queue {}: {source}", path.display())]
    Sql {
        path: PathBuf,
        source: rusqlite::Error,
    },
}

/// One transaction that gave up, as `GET /api/v1/queue` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    pub hash: String,
    pub size: usize,
    pub queued_at: u64,
    pub attempts: u32,
    pub reason: String,
}

/// A queued transaction due for a delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub hash: TxHash,
    pub body: Vec<u8>,
    pub register_id: Option<String>,
    pub attempts: u32,
}

pub struct OfflineQueue {
    conn: Connection,
    path: PathBuf,
    max_size: u64,
    max_retries: u32,
    /// First retry delay; doubles per attempt.
    retry_delay: Duration,
    /// Entries moved to the dead letters since the last [`OfflineQueue::take_dead_lettered`],
    /// with why (at most one `take_due` batch between two calls of the flusher).
    dead_lettered: Vec<(TxHash, String)>,
}

impl OfflineQueue {
    pub fn open_in(
        data_dir: &Path,
        max_size: u64,
        max_retries: u32,
        retry_delay: Duration,
    ) -> Result<Self, QueueError> {
        let path = data_dir.join(QUEUE_FILE);
        let sql = |source| QueueError::Sql {
            path: path.clone(),
            source,
        };
        let conn = Connection::open(&path).map_err(sql)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA busy_timeout = 5000;
             CREATE TABLE IF NOT EXISTS queue (
                 hash            TEXT    NOT NULL PRIMARY KEY,
                 body            BLOB    NOT NULL,
                 register_id     TEXT,
                 queued_at       INTEGER NOT NULL,
                 attempts        INTEGER NOT NULL DEFAULT 0,
                 next_attempt_at INTEGER NOT NULL
             ) STRICT;
             CREATE INDEX IF NOT EXISTS queue_due ON queue (next_attempt_at);
             CREATE TABLE IF NOT EXISTS dead_letters (
                 hash      TEXT    NOT NULL PRIMARY KEY,
                 body      BLOB    NOT NULL,
                 register_id TEXT,
                 queued_at INTEGER NOT NULL,
                 attempts  INTEGER NOT NULL,
                 reason    TEXT    NOT NULL
             ) STRICT;",
        )
        .map_err(sql)?;
        Ok(Self {
            conn,
            path,
            max_size,
            max_retries,
            retry_delay,
            dead_lettered: Vec::new(),
        })
    }

    /// The entries moved to the dead letters since the last call, with why.
    pub fn take_dead_lettered(&mut self) -> Vec<(TxHash, String)> {
        std::mem::take(&mut self.dead_lettered)
    }

    fn sql(&self, source: rusqlite::Error) -> QueueError {
        QueueError::Sql {
            path: self.path.clone(),
            source,
        }
    }

    /// Queues a transaction durably; true if it was new to the queue.
    pub fn push(
        &mut self,
        hash: TxHash,
        body: &[u8],
        register_id: Option<&str>,
        now: Timestamp,
    ) -> Result<bool, QueueError> {
        let len = self.count()?;
        if len >= self.max_size {
            return Err(QueueError::Full(len));
        }
        let inserted = self
            .conn
            .execute(
                "INSERT OR IGNORE INTO queue (hash, body, register_id, queued_at, next_attempt_at)
                 VALUES (?1, ?2, ?3, ?4, ?4)",
                params![hash.to_string(), body, register_id, now.to_wire()],
            )
            .map_err(|e| self.sql(e))?;
        Ok(inserted == 1)
    }

    /// Transactions waiting (not dead letters).
    pub fn count(&self) -> Result<u64, QueueError> {
        self.conn
            .query_row("SELECT COUNT(*) FROM queue", [], |row| row.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(|e| self.sql(e))
    }

    /// Takes up to `limit` due entries and books an attempt for each: the next one is due
    /// after a doubling delay; entries past `max_retries` move to the dead-letter table.
    pub fn take_due(&mut self, now: Timestamp, limit: usize) -> Result<Vec<Due>, QueueError> {
        let (max_retries, base) = (self.max_retries, self.retry_delay);
        let path = self.path.clone();
        let sql = |source| QueueError::Sql {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sql)?;
        let due: Vec<Due> = {
            let mut select = tx
                .prepare_cached(
                    "SELECT hash, body, register_id, attempts FROM queue
                     WHERE next_attempt_at <= ?1 ORDER BY queued_at LIMIT ?2",
                )
                .map_err(sql)?;
            let rows = select
                .query_map(params![now.to_wire(), limit as i64], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get(1)?,
                        row.get(2)?,
                        row.get::<_, u32>(3)?,
                    ))
                })
                .map_err(sql)?;
            rows.filter_map(Result::ok)
                .filter_map(|(hash, body, register_id, attempts)| {
                    let hash = hash.parse().ok()?;
                    Some(Due {
                        hash,
                        body,
                        register_id,
                        attempts,
                    })
                })
                .collect()
        };
        let mut handed = Vec::with_capacity(due.len());
        let mut gave_up = Vec::new();
        for entry in due {
            let key = entry.hash.to_string();
            if entry.attempts >= max_retries {
                let reason = format!("no peer pulled it after {} attempts", entry.attempts);
                tx.execute(
                    "INSERT OR REPLACE INTO dead_letters (hash, body, register_id, queued_at, attempts, reason)
                     SELECT hash, body, register_id, queued_at, attempts, ?2 FROM queue WHERE hash = ?1",
                    params![key, reason],
                )
                .map_err(sql)?;
                tx.execute("DELETE FROM queue WHERE hash = ?1", params![key])
                    .map_err(sql)?;
                gave_up.push((entry.hash, reason));
                continue;
            }
            let delay = base.saturating_mul(1 << entry.attempts.min(16));
            tx.execute(
                "UPDATE queue SET attempts = attempts + 1, next_attempt_at = ?2 WHERE hash = ?1",
                params![key, now.saturating_add(delay).to_wire()],
            )
            .map_err(sql)?;
            handed.push(entry);
        }
        tx.commit().map_err(sql)?;
        self.dead_lettered.extend(gave_up);
        Ok(handed)
    }

    /// A peer pulled `hash`: it has left the node, so it leaves the queue.
    pub fn confirm(&mut self, hash: &TxHash) -> Result<bool, QueueError> {
        self.confirm_many(std::slice::from_ref(hash)).map(|n| n > 0)
    }

    /// Confirms many at once, in one transaction (one disk sync instead of one per hash);
    /// returns how many were queued.
    pub fn confirm_many(&mut self, hashes: &[TxHash]) -> Result<usize, QueueError> {
        let path = self.path.clone();
        let sql = |source| QueueError::Sql {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sql)?;
        let mut removed = 0;
        {
            let mut delete = tx
                .prepare_cached("DELETE FROM queue WHERE hash = ?1")
                .map_err(sql)?;
            for hash in hashes {
                removed += delete.execute(params![hash.to_string()]).map_err(sql)?;
            }
        }
        tx.commit().map_err(sql)?;
        Ok(removed)
    }

    pub fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        let mut select = self
            .conn
            .prepare_cached(
                "SELECT hash, length(body), queued_at, attempts, reason FROM dead_letters
                 ORDER BY queued_at LIMIT ?1",
            )
            .map_err(|e| self.sql(e))?;
        let rows = select
            .query_map(params![limit as i64], |row| {
                Ok(DeadLetter {
                    hash: row.get(0)?,
                    size: row.get::<_, i64>(1)? as usize,
                    queued_at: row.get::<_, i64>(2)? as u64,
                    attempts: row.get(3)?,
                    reason: row.get(4)?,
                })
            })
            .map_err(|e| self.sql(e))?;
        Ok(rows.filter_map(Result::ok).collect())
    }

    pub fn contains(&self, hash: &TxHash) -> Result<bool, QueueError> {
        self.conn
            .query_row(
                "SELECT 1 FROM queue WHERE hash = ?1",
                params![hash.to_string()],
                |_| Ok(()),
            )
            .optional()
            .map(|row| row.is_some())
            .map_err(|e| self.sql(e))
    }
}

/// The queue shared by the HTTP handlers (push), the body servers (confirm) and the flusher,
/// with its length mirrored in an atomic so the hot paths know without a query whether there
/// is anything to confirm.
pub struct Shared {
    queue: Mutex<OfflineQueue>,
    pending: AtomicU64,
    /// Hashes peers pulled, waiting for the flusher to delete them in one transaction.
    confirmed: Mutex<Vec<TxHash>>,
}

/// Confirmations buffered between two flusher ticks at most; past it they are dropped (the
/// entry is offered again and confirmed on a later pull, nothing is lost).
const MAX_PENDING_CONFIRMATIONS: usize = 65_536;

pub type SharedQueue = Arc<Shared>;

pub fn share(queue: OfflineQueue) -> Result<SharedQueue, QueueError> {
    let pending = AtomicU64::new(queue.count()?);
    Ok(Arc::new(Shared {
        queue: Mutex::new(queue),
        pending,
        confirmed: Mutex::new(Vec::new()),
    }))
}

impl Shared {
    /// Transactions waiting in the queue.
    pub fn pending(&self) -> u64 {
        self.pending.load(Ordering::Relaxed)
    }

    /// Notes that a peer pulled `hash`; the flusher removes it from the queue shortly.
    pub fn confirm_later(&self, hash: TxHash) {
        if self.pending() == 0 {
            return;
        }
        let mut confirmed = self.confirmed.lock().unwrap_or_else(|p| p.into_inner());
        if confirmed.len() < MAX_PENDING_CONFIRMATIONS {
            confirmed.push(hash);
        }
    }

    /// The confirmations noted since the last call, for the flusher to apply.
    pub fn take_confirmed(&self) -> Vec<TxHash> {
        std::mem::take(&mut *self.confirmed.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Runs `f` on the queue on a blocking thread (SQLite with `synchronous=FULL` waits for the
/// disk, which must never stall an async worker).
pub async fn with_queue<T: Send + 'static>(
    queue: &SharedQueue,
    f: impl FnOnce(&mut OfflineQueue) -> Result<T, QueueError> + Send + 'static,
) -> Result<T, QueueError> {
    let queue = queue.clone();
    let joined = tokio::task::spawn_blocking(move || {
        // A poisoned lock means a panic mid-statement; SQLite rolled the statement back.
        let mut guard = queue
            .queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let result = f(&mut guard);
        if let Ok(len) = guard.count() {
            queue.pending.store(len, Ordering::Relaxed);
        }
        result
    })
    .await;
    joined.unwrap_or_else(|e| {
        Err(QueueError::Sql {
            path: PathBuf::from(QUEUE_FILE),
            source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    fn open(dir: &tempfile::TempDir, max: u64) -> OfflineQueue {
        OfflineQueue::open_in(dir.path(), max, 3, Duration::from_secs(1)).unwrap()
    }

    #[test]
    fn survives_reopening_and_refuses_when_full() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = open(&dir, 2);
        assert!(q.push(TxHash::of(b"a"), b"a", Some("reg"), t(1)).unwrap());
        assert!(
            !q.push(TxHash::of(b"a"), b"a", None, t(2)).unwrap(),
            "same hash once"
        );
        q.push(TxHash::of(b"b"), b"b", None, t(3)).unwrap();
        let full = q.push(TxHash::of(b"c"), b"c", None, t(4)).unwrap_err();
        assert!(full.to_string().contains("full"), "{full}");
        drop(q);
        let q = open(&dir, 2);
        assert_eq!(q.count().unwrap(), 2);
        assert!(q.contains(&TxHash::of(b"a")).unwrap());
    }

    #[test]
    fn attempts_back_off_then_dead_letter() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = open(&dir, 10);
        let hash = TxHash::of(b"x");
        q.push(hash, b"x", Some("r"), t(0)).unwrap();
        let first = q.take_due(t(0), 10).unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].register_id.as_deref(), Some("r"));
        assert!(
            q.take_due(t(500), 10).unwrap().is_empty(),
            "not due before the 1 s delay"
        );
        assert_eq!(q.take_due(t(1_000), 10).unwrap().len(), 1, "second attempt");
        assert!(
            q.take_due(t(2_500), 10).unwrap().is_empty(),
            "delay doubled to 2 s"
        );
        assert_eq!(q.take_due(t(3_000), 10).unwrap().len(), 1, "third attempt");
        assert!(
            q.take_due(t(60_000), 10).unwrap().is_empty(),
            "out of attempts"
        );
        assert_eq!(q.count().unwrap(), 0);
        let dead = q.dead_letters(10).unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].hash, hash.to_string());
        assert_eq!(dead[0].attempts, 3);
        let gave_up = q.take_dead_lettered();
        assert_eq!(gave_up.len(), 1, "the flusher is told, for the event log");
        assert_eq!(gave_up[0].0, hash);
        assert!(q.take_dead_lettered().is_empty());
    }

    #[test]
    fn confirmations_in_a_batch_remove_only_queued_entries() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = open(&dir, 10);
        for body in [b"p", b"q", b"r"] {
            q.push(TxHash::of(body), body, None, t(0)).unwrap();
        }
        let removed = q
            .confirm_many(&[
                TxHash::of(b"p"),
                TxHash::of(b"r"),
                TxHash::of(b"never queued"),
            ])
            .unwrap();
        assert_eq!(removed, 2);
        assert_eq!(q.count().unwrap(), 1);
        assert!(q.contains(&TxHash::of(b"q")).unwrap());
    }

    #[test]
    fn confirmation_removes_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = open(&dir, 10);
        q.push(TxHash::of(b"y"), b"y", None, t(0)).unwrap();
        assert!(q.confirm(&TxHash::of(b"y")).unwrap());
        assert!(!q.confirm(&TxHash::of(b"y")).unwrap());
        assert_eq!(q.count().unwrap(), 0);
    }
}
