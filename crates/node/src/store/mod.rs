//! The peer store: what this node knows about other peers, kept in `<data_dir>/peers.db`
//! (SQLite, WAL) so a restarted node rejoins without its bootstrap nodes, and bans stick.
//!
//! - [`PeerStore`] (this file, `peers.rs`, `reads.rs`): the connection, with synchronous reads and
//!   writes. Start-up uses it directly: `open_in(data_dir)`, then [`PeerStore::load_for_start`]
//!   for `Membership::new`'s `stored_peers` and [`PeerStore::banned`] for its bans.
//! - [`StoreWriter`] (`writer.rs`): afterwards the store moves onto a dedicated thread, and the
//!   actor sends `Output::Persist` / `Output::Forget` as [`StoreCommand`]s over a bounded
//!   channel that never blocks it (`channel.rs`, the writers' channel that allocates as it
//!   fills); writes are coalesced per peer and committed in batches.
//! - `peers.rs`: the writes and their rules (dedup by id and by endpoint, bans that are only
//!   lifted on purpose), and what peers told us apart from their rows: the services they
//!   refused (with the time) and the registers they advertise; `reads.rs`: the queries.
//! - `bans.rs`: the peer score's automatic bans with their reasons and strike counts.
//! - `migrations.rs`: the versioned schema, and how a file is brought to it (a new file gets
//!   the latest schema at once; `transactions.db` too); `codec.rs`: rows to [`PeerNode`]s and
//!   back.
//! - [`durable`]: every accepted transaction, written before it is acknowledged or announced
//!   (`<data_dir>/transactions.db`, group commit); the offline queue is its queued rows
//!   ([`queue`] names them); [`transactions`]: the memory cache of bodies in front of it.
//!
//! Durability: `synchronous=NORMAL`. A commit survives a crash of the process but the last
//! few may be lost on power failure; peers are re-learned from the network, so that trade buys
//! fewer fsyncs on every heartbeat. (Transactions are in their own file, with
//! `storage.durability`, FULL by default.)
//!
//! [`PeerNode`]: sorcha_peer_core::model::PeerNode

mod bans;
mod channel;
mod codec;
pub mod durable;
mod migrations;
mod peers;
pub mod queue;
mod reads;
#[cfg(test)]
mod test_util;
pub mod transactions;
mod writer;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use sorcha_peer_core::model::{PeerId, Timestamp};

pub use peers::RegisterAd;
pub use writer::{
    BATCH_INTERVAL, BATCH_MAX_COMMANDS, FlushAck, SendError, StoreCommand, StoreHandle,
    StoreWriter, WRITER_QUEUE_CAPACITY, WriterConfig, WriterStats,
};

/// The file name of the peer store inside the data directory.
pub const PEERS_DB_FILE: &str = "peers.db";

/// How long a statement waits for a lock held by another connection (an operator's `sqlite3`
/// shell, a second reader) before failing. Long enough to ride out a checkpoint, short enough
/// that a stuck lock shows up as an error at start rather than a hang.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the peer store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file could not be opened or is not an SQLite database.
    #[error(
        "cannot open the peer store {}: {source} (move the file away to start with an empty store)",
        path.display()
    )]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    /// The schema could not be brought to this version (corrupt file or written by a newer
    /// version).
    #[error("cannot migrate the peer store {} to schema version {latest}: {source}", path.display())]
    Migrate {
        path: PathBuf,
        latest: usize,
        source: rusqlite_migration::Error,
    },
    /// A statement failed.
    #[error("peer store: {0}")]
    Sql(#[from] rusqlite::Error),
    /// A row holds a value this version cannot read.
    #[error("peer store row {peer_id:?} has an invalid {column}: {value:?}")]
    Corrupt {
        peer_id: String,
        column: &'static str,
        value: String,
    },
    /// The writer thread could not be started.
    #[error("cannot start the peer store writer thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// The writer thread has stopped (shut down, or panicked).
    #[error("the peer store writer has stopped")]
    WriterStopped,
    /// Batches failed to commit since the previous flush; their writes are lost (details in
    /// the log). Peers are re-learned, so the node goes on.
    #[error("{failed_batches} peer store batch(es) failed to commit since the last flush")]
    FlushFailed { failed_batches: u64 },
}

/// A ban on record: `peer_id` is refused until `until`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ban {
    pub peer_id: PeerId,
    pub until: Timestamp,
}

/// The SQLite connection to `peers.db`. Synchronous: use it directly at start-up, then hand it
/// to [`StoreWriter::spawn`] so writes leave the async runtime.
///
/// Call order: [`open`](Self::open) (or [`open_in`](Self::open_in)); reads
/// ([`load_for_start`](Self::load_for_start), [`banned`](Self::banned), ...) and writes
/// ([`upsert`](Self::upsert), [`set_ban`](Self::set_ban), ...) in any order; every write is
/// its own transaction, [`upsert_many`](Self::upsert_many) is one for the whole slice.
#[derive(Debug)]
pub struct PeerStore {
    conn: Connection,
    path: PathBuf,
}

impl PeerStore {
    /// Opens (creating if needed) `<data_dir>/peers.db`.
    pub fn open_in(data_dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open(data_dir.as_ref().join(PEERS_DB_FILE))
    }

    /// Opens (creating if needed) the store at `path` and brings its schema to this version.
    /// A file that is not an SQLite database gives [`StoreError::Open`] naming it.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        // NO_MUTEX: the connection is owned by one thread at a time (Send, not Sync), so
        // SQLite's own locking would be pure overhead.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(&path, flags).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        // The first statement that reads the file: a garbage file fails here with
        // "file is not a database".
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            // Some file systems (network mounts) cannot do WAL; the store still works, with
            // readers and the writer serialised.
            tracing::warn!(path = %path.display(), %mode, "peer store is not in WAL mode");
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(open_err)?;
        migrations::PEERS
            .bring_up(&mut conn)
            .map_err(|source| StoreError::Migrate {
                path: path.clone(),
                latest: migrations::MIGRATION_COUNT,
                source,
            })?;
        Ok(Self { conn, path })
    }

    /// The file this store reads and writes.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
