//! The durable transaction store: every transaction this node accepts (submitted here, queued
//! while Offline, or pulled from a peer) in `<data_dir>/transactions.db` (SQLite, WAL), written
//! before it is acknowledged or announced.
//!
//! Design. One file, one table (`schema.rs`), one row per transaction: the offline queue is
//! not a second copy but the rows in state `queued`, so a transaction is written once whether
//! it waits for a peer or not, and a peer's pull only flips its state. One thread owns the
//! writing connection (`writer.rs`) and commits in groups: it takes the first job off a bounded
//! channel, then every job already waiting behind it (up to [`GROUP_MAX_JOBS`]), applies them
//! in one SQLite transaction and answers them all after the one commit; while it waits on the
//! disk, the next group piles up, so a thousand concurrent submitters share a handful of
//! fsyncs. Submitters await their group's commit ([`TxDb::put`]); the actor, which must never
//! wait, hands over pulled transactions with [`TxDb::put_nowait`] and holds back its
//! announcements until [`TxDb::committed`] shows the write done (`runtime::actor`). Reads
//! (`reads.rs`) go through their own connection, which WAL lets run beside the writer, and
//! find a row by id through the in-memory index the writer keeps (`ids.rs`: an SQLite index on
//! random ids cost a random page write per row).
//!
//! A queued row leaves the queue on a peer's proof of receipt: the peer pulled it (the body
//! servers call [`TxDb::confirm_later`]), or acknowledged its eager push (`acks.rs` lists the
//! rows handed to gossip; the link workers ask for and read the acknowledgements).
//!
//! Bounds: the same as the memory cache (`distribution.cache_max_transactions`,
//! `cache_max_bytes`, `transaction_cache_ttl`), enforced after every group, oldest first, and
//! never on a queued row (those are bounded by `offline.max_queue_size` instead, refused with
//! [`DurableError::QueueFull`] and counted). Evictions and refusals are counted in
//! [`DurableStats`].
//!
//! Durability (`storage.durability`): `full` is `synchronous=FULL`, the WAL is fsynced at
//! every commit, so an acknowledged transaction survives a power cut; `normal` fsyncs only at
//! checkpoints: it survives a crash of the process (SIGKILL, panic) but the last commits may be
//! lost with the machine, for a faster commit on slow disks.

mod acks;
mod ids;
mod legacy;
mod reads;
mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};
use sorcha_peer_core::model::{Timestamp, TxHash, TxId};
use tokio::sync::watch;

pub use acks::{AWAIT_FOR, MAX_AWAITING};
pub use legacy::LEGACY_QUEUE_FILE;
pub use reads::{DeadLetter, Loaded};
pub use writer::{Due, GROUP_MAX_JOBS, JOB_QUEUE_CAPACITY};

/// File name of the store inside the data dir.
pub const TRANSACTIONS_DB_FILE: &str = "transactions.db";

/// How hard a commit waits for the disk (`storage.durability`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// `synchronous=FULL`: a commit survives a power cut.
    #[default]
    Full,
    /// `synchronous=NORMAL`: a commit survives a crash of the process, not of the machine.
    Normal,
}

/// What bounds the store, from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Rows at most (queued ones count, but are never evicted).
    pub max_transactions: u64,
    /// Body bytes at most.
    pub max_bytes: u64,
    /// Rows older than this are deleted (unless queued).
    pub ttl: Duration,
    /// Queued rows at most (`offline.max_queue_size`).
    pub max_queued: u64,
    /// Delivery attempts of a queued row before it becomes a dead letter.
    pub max_retries: u32,
    /// First retry delay of a queued row; doubles per attempt.
    pub retry_delay: Duration,
}

#[cfg(test)]
impl Limits {
    /// Small bounds for unit tests: 100 rows, 1 MiB, 10 queued, 3 retries 1 s apart.
    pub(crate) fn small() -> Self {
        Self {
            max_transactions: 100,
            max_bytes: 1 << 20,
            ttl: Duration::from_secs(3600),
            max_queued: 10,
            max_retries: 3,
            retry_delay: Duration::from_secs(1),
        }
    }
}

/// A transaction to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTx {
    pub hash: TxHash,
    pub body: Arc<[u8]>,
    pub register_id: Option<String>,
    /// `local`, or the id of the peer it came from.
    pub origin: String,
    pub first_seen: Timestamp,
}

/// Why the store refused or failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DurableError {
    /// The file could not be opened, is not an SQLite database, or has a schema this version
    /// cannot read.
    #[error(
        "cannot open the transaction store {}: {message} (move the file away to start with an empty store; its transactions are then lost on this node)",
        path.display()
    )]
    Open { path: PathBuf, message: String },
    /// The offline queue holds `offline.max_queue_size` transactions already.
    #[error(
        "the offline queue is full ({0} transactions, offline.max_queue_size); retry when the node is online"
    )]
    QueueFull(u64),
    /// The writer's job queue is full: the disk is slower than the submissions.
    #[error(
        "the transaction store is saturated ({JOB_QUEUE_CAPACITY} writes waiting); retry later"
    )]
    Busy,
    /// A statement or the commit failed.
    #[error("transaction store {}: {message}", path.display())]
    Sql { path: PathBuf, message: String },
    /// The writer thread has stopped.
    #[error("the transaction store has stopped")]
    Stopped,
}

impl DurableError {
    fn sql(path: &Path, source: &rusqlite::Error) -> Self {
        Self::Sql {
            path: path.to_path_buf(),
            message: source.to_string(),
        }
    }
}

/// Counters of the store, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DurableStats {
    /// Rows held, and their body bytes.
    pub rows: u64,
    pub bytes: u64,
    /// Rows queued for a peer.
    pub queued: u64,
    /// Groups committed, and the jobs in them.
    pub groups: u64,
    pub jobs: u64,
    /// Groups that failed to commit (their writes are lost, logged).
    pub failed_groups: u64,
    /// Rows evicted by the count or byte bound, and by the TTL.
    pub evicted: u64,
    pub expired: u64,
    /// Writes refused: the job queue full, or the writer stopped.
    pub refused: u64,
}

#[derive(Debug, Default)]
struct Counters {
    rows: AtomicU64,
    bytes: AtomicU64,
    queued: AtomicU64,
    groups: AtomicU64,
    jobs: AtomicU64,
    failed_groups: AtomicU64,
    evicted: AtomicU64,
    expired: AtomicU64,
    refused: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> DurableStats {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DurableStats {
            rows: l(&self.rows),
            bytes: l(&self.bytes),
            queued: l(&self.queued),
            groups: l(&self.groups),
            jobs: l(&self.jobs),
            failed_groups: l(&self.failed_groups),
            evicted: l(&self.evicted),
            expired: l(&self.expired),
            refused: l(&self.refused),
        }
    }
}

/// Confirmations (peers' pulls and acknowledged pushes of queued rows) buffered between two flusher ticks at most;
/// past it they are dropped and counted as refused: the row is offered again and confirmed on
/// a later pull, nothing is lost.
const MAX_PENDING_CONFIRMATIONS: usize = 65_536;

struct Shared {
    path: PathBuf,
    jobs: writer::Sender,
    reader: Mutex<Connection>,
    /// The row of each id (`ids.rs`), changed by the writer only.
    ids: Arc<Mutex<ids::Ids>>,
    counters: Arc<Counters>,
    committed: watch::Receiver<u64>,
    confirmed: Mutex<Vec<TxHash>>,
    /// Queued transactions handed to gossip, waiting for a pushed one's acknowledgement.
    awaiting: Mutex<acks::Awaiting>,
}

/// The store, cheap to clone: writes go to the writer thread, reads through the shared read
/// connection. Stopping: [`TxDb::shutdown`] commits what is queued and joins the thread.
#[derive(Clone)]
pub struct TxDb {
    shared: Arc<Shared>,
}

/// Opens `path` with the pragmas both connections share.
fn connect(path: &Path, flags: OpenFlags, durability: Durability) -> Result<Connection, String> {
    let conn = Connection::open_with_flags(path, flags).map_err(|e| e.to_string())?;
    conn.busy_timeout(super::BUSY_TIMEOUT)
        .map_err(|e| e.to_string())?;
    let synchronous = match durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    // The first statement that reads the file: a garbage file fails here.
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(|e| e.to_string())?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(path = %path.display(), %mode, "transaction store is not in WAL mode");
    }
    conn.pragma_update(None, "synchronous", synchronous)
        .map_err(|e| e.to_string())?;
    Ok(conn)
}

impl TxDb {
    /// Opens (creating if needed) `<data_dir>/transactions.db`, checks it, and starts the
    /// writer thread.
    pub fn open_in(
        data_dir: &Path,
        durability: Durability,
        limits: Limits,
    ) -> Result<Self, DurableError> {
        let path = data_dir.join(TRANSACTIONS_DB_FILE);
        let open_err = |message: String| DurableError::Open {
            path: path.clone(),
            message,
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = connect(&path, flags, durability).map_err(open_err)?;
        schema::TRANSACTIONS.bring_up(&mut conn).map_err(|e| {
            open_err(format!(
                "schema version {}: {e}",
                schema::TRANSACTIONS.version
            ))
        })?;
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(|e| open_err(e.to_string()))?;
        if check != "ok" {
            return Err(open_err(format!("integrity check failed: {check}")));
        }
        let mut ids = ids::Ids::load(&conn).map_err(open_err)?;
        let imported = legacy::import(&mut conn, data_dir, &mut ids).map_err(open_err)?;
        if imported > 0 {
            tracing::info!(imported, "offline queue of an earlier version imported");
        }
        let reader = connect(&path, flags, durability).map_err(open_err)?;
        let counters = Arc::new(Counters::default());
        let ids = Arc::new(Mutex::new(ids));
        let (jobs, committed) =
            writer::spawn(conn, path.clone(), limits, counters.clone(), ids.clone())
                .map_err(open_err)?;
        Ok(Self {
            shared: Arc::new(Shared {
                path,
                jobs,
                reader: Mutex::new(reader),
                ids,
                counters,
                committed,
                confirmed: Mutex::new(Vec::new()),
                awaiting: Mutex::default(),
            }),
        })
    }

    /// The file this store writes.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    pub fn stats(&self) -> DurableStats {
        self.shared.counters.snapshot()
    }

    /// Transactions queued for a peer (the offline queue's size).
    pub fn pending(&self) -> u64 {
        self.shared.counters.queued.load(Ordering::Relaxed)
    }

    /// Writes `tx` and waits for its group's commit; `queue` keeps it in the offline queue
    /// until a peer pulls it. True if it was new to the store.
    pub async fn put(&self, tx: NewTx, queue: bool) -> Result<bool, DurableError> {
        self.begin_put(tx, queue)?.await
    }

    /// [`put`](Self::put) in two steps: hands `tx` to the writer now (refused at once when
    /// the writer is saturated or stopped), and the future of its commit.
    pub fn begin_put(
        &self,
        tx: NewTx,
        queue: bool,
    ) -> Result<impl Future<Output = Result<bool, DurableError>> + use<>, DurableError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.send(writer::Job::Put {
            tx,
            queue,
            reply: Some(reply),
        })?;
        Ok(async move { answer.await.map_err(|_| DurableError::Stopped)? })
    }

    /// Hands `tx` to the writer without waiting; the number to compare with
    /// [`committed`](Self::committed) to know when it is on disk.
    pub fn put_nowait(&self, tx: NewTx) -> Result<u64, DurableError> {
        self.send(writer::Job::Put {
            tx,
            queue: false,
            reply: None,
        })
    }

    /// How many jobs are done (committed, or failed and logged): a job numbered `n` by
    /// [`put_nowait`](Self::put_nowait) is done once this reaches `n`.
    pub fn committed(&self) -> watch::Receiver<u64> {
        self.shared.committed.clone()
    }

    /// Takes up to `limit` queued rows due at `now`, booking an attempt for each; rows out of
    /// attempts become dead letters.
    pub async fn take_due(&self, now: Timestamp, limit: usize) -> Result<Vec<Due>, DurableError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.send(writer::Job::TakeDue { now, limit, reply })?;
        answer.await.map_err(|_| DurableError::Stopped)?
    }

    /// Lists queued transactions being handed to gossip: a push of one asks its receiver for
    /// an acknowledgement ([`wants_ack`](Self::wants_ack)), which confirms it
    /// ([`acknowledged`](Self::acknowledged)).
    pub fn await_ack(&self, hashes: impl IntoIterator<Item = TxHash>) {
        let refused = lock(&self.shared.awaiting).note(hashes, std::time::Instant::now());
        if refused > 0 {
            self.shared
                .counters
                .refused
                .fetch_add(refused, Ordering::Relaxed);
        }
    }

    /// Whether a push of `id` should ask its receiver to acknowledge it.
    pub fn wants_ack(&self, id: &TxId) -> bool {
        self.pending() > 0 && lock(&self.shared.awaiting).contains(id)
    }

    /// A peer acknowledged a push of `id`: if it waits in the queue, the flusher confirms it
    /// shortly. True if it was waiting.
    pub fn acknowledged(&self, id: &TxId) -> bool {
        let hash = lock(&self.shared.awaiting).take(id);
        hash.inspect(|hash| self.confirm_later(*hash)).is_some()
    }

    /// Notes that a peer pulled `hash`, or acknowledged its push; the flusher confirms it
    /// shortly.
    pub fn confirm_later(&self, hash: TxHash) {
        if self.pending() == 0 {
            return;
        }
        lock(&self.shared.awaiting).take(&hash.id());
        let mut confirmed = lock(&self.shared.confirmed);
        if confirmed.len() < MAX_PENDING_CONFIRMATIONS {
            confirmed.push(hash);
        } else {
            self.shared.counters.refused.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Turns the queued rows peers have pulled into kept ones (no wait for the commit).
    pub fn confirm_pulled(&self) -> Result<usize, DurableError> {
        let hashes = std::mem::take(&mut *lock(&self.shared.confirmed));
        let n = hashes.len();
        if n > 0 {
            self.send(writer::Job::Confirm { hashes })?;
        }
        Ok(n)
    }

    /// Waits until everything sent before is committed.
    pub async fn flush(&self) -> Result<(), DurableError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.send(writer::Job::Flush { reply })?;
        answer.await.map_err(|_| DurableError::Stopped)?
    }

    /// Commits what is queued and stops the writer thread (blocking: call it once the node's
    /// tasks are done).
    pub fn shutdown(&self) {
        self.shared.jobs.shutdown();
    }

    fn send(&self, job: writer::Job) -> Result<u64, DurableError> {
        self.shared.jobs.send(job).inspect_err(|_| {
            self.shared.counters.refused.fetch_add(1, Ordering::Relaxed);
        })
    }
}

/// A poisoned lock means a panic mid-statement; SQLite rolled the statement back, so the
/// connection (or the buffer) is still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests;
