//! Writes off the hot path: a dedicated thread owns the [`PeerStore`] and commits batches.
//!
//! The actor must never wait on SQLite (an fsync at a checkpoint can take tens of
//! milliseconds), so it hands each `Output::Persist` / `Output::Forget` to a [`StoreHandle`],
//! whose `try_send` onto a bounded channel returns at once. A full channel refuses the write
//! and counts it ([`WriterStats::refused`], exported as a metric): losing a peer update is
//! acceptable (the next heartbeat persists it again), blocking the actor is not.
//!
//! The thread collects commands into a batch, merging repeated upserts of one peer (heartbeats
//! persist the same peer over and over), and commits the batch in one transaction when it is
//! [`BATCH_INTERVAL`] old, holds [`BATCH_MAX_COMMANDS`] commands, or a flush asks for it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sorcha_peer_core::model::{PeerId, PeerNode, Protocol, Timestamp};

use super::{PeerStore, StoreError, channel, peers};

/// Commands the channel holds before it refuses. At ~300 bytes a command that is ~1 MiB; a
/// full round of heartbeats to a 1,000-peer list fits four times over.
pub const WRITER_QUEUE_CAPACITY: usize = 4096;

/// Commit at least this often while writes are pending: an operator's `sqlite3` or the
/// admin page sees a peer within a tenth of a second, and heartbeats still share commits.
pub const BATCH_INTERVAL: Duration = Duration::from_millis(100);

/// Commit once a batch holds this many commands, so one transaction stays short (a few
/// milliseconds) even under a burst of peer exchange.
pub const BATCH_MAX_COMMANDS: usize = 512;

/// Sizes of the writer; [`Default`] takes the constants above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterConfig {
    /// Capacity of the command channel (at least 1).
    pub queue_capacity: usize,
    /// Commands that force a commit (at least 1).
    pub batch_max_commands: usize,
    /// Longest a pending write waits for its commit.
    pub batch_interval: Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            queue_capacity: WRITER_QUEUE_CAPACITY,
            batch_max_commands: BATCH_MAX_COMMANDS,
            batch_interval: BATCH_INTERVAL,
        }
    }
}

/// One write for the store thread.
#[derive(Debug)]
pub enum StoreCommand {
    /// `Output::Persist`: [`PeerStore::upsert`].
    Upsert(PeerNode),
    /// `Output::Forget`: [`PeerStore::remove`].
    Forget(PeerId),
    /// [`PeerStore::set_ban`].
    SetBan {
        peer_id: PeerId,
        until: Option<Timestamp>,
    },
    /// [`PeerStore::set_preferred_protocol`].
    SetPreferredProtocol {
        peer_id: PeerId,
        protocol: Option<Protocol>,
    },
    /// [`PeerStore::set_refusal`] (`service` by its name).
    SetRefusal {
        peer_id: PeerId,
        service: &'static str,
        at: Option<Timestamp>,
    },
    /// [`PeerStore::set_registers`].
    SetRegisters {
        peer_id: PeerId,
        registers: Vec<super::peers::RegisterAd>,
        at: Timestamp,
    },
    /// [`PeerStore::set_auto_ban`].
    SetAutoBan(sorcha_peer_core::score::BanRecord),
    /// [`PeerStore::lift_auto_ban`] (the subject's key).
    LiftAutoBan(String),
    /// Commit everything sent before it, then answer. Made by [`StoreHandle::flush`].
    Flush(FlushAck),
}

/// The answer channel of a [`StoreCommand::Flush`]: how many batches failed since the previous
/// flush. Opaque so only [`StoreHandle::flush`] makes one.
#[derive(Debug)]
pub struct FlushAck(SyncSender<u64>);

/// Why a command was not queued. Either way it is counted in [`WriterStats::refused`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The channel holds `WriterConfig::queue_capacity` commands.
    #[error("peer store writer queue is full")]
    Full,
    /// The writer thread has stopped.
    #[error("peer store writer has stopped")]
    Stopped,
}

/// Counters of the writer, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Commands queued.
    pub accepted: u64,
    /// Commands refused because the channel was full or the writer had stopped.
    pub refused: u64,
    /// Upserts merged into an earlier pending upsert of the same peer.
    pub coalesced: u64,
    /// Transactions committed.
    pub batches_committed: u64,
    /// Transactions that failed; their writes are lost and logged.
    pub batches_failed: u64,
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    refused: AtomicU64,
    coalesced: AtomicU64,
    batches_committed: AtomicU64,
    batches_failed: AtomicU64,
}

enum Message {
    Command(StoreCommand),
    /// Sent by [`StoreWriter`]'s drop: commit and stop even while handles remain.
    Shutdown,
}

/// A cheap, cloneable sender of [`StoreCommand`]s; usable from async code, it never blocks
/// except in [`flush`](Self::flush).
#[derive(Debug, Clone)]
pub struct StoreHandle {
    tx: channel::Sender<Message>,
    counters: Arc<Counters>,
}

impl StoreHandle {
    /// Queues `command` without waiting; refusals are counted.
    pub fn send(&self, command: StoreCommand) -> Result<(), SendError> {
        match self.tx.try_send(Message::Command(command)) {
            Ok(()) => {
                self.counters.accepted.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(err) => {
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
                Err(match err {
                    TrySendError::Full(_) => SendError::Full,
                    TrySendError::Disconnected(_) => SendError::Stopped,
                })
            }
        }
    }

    pub fn upsert(&self, node: PeerNode) -> Result<(), SendError> {
        self.send(StoreCommand::Upsert(node))
    }

    pub fn set_auto_ban(
        &self,
        record: sorcha_peer_core::score::BanRecord,
    ) -> Result<(), SendError> {
        self.send(StoreCommand::SetAutoBan(record))
    }

    pub fn lift_auto_ban(&self, subject: String) -> Result<(), SendError> {
        self.send(StoreCommand::LiftAutoBan(subject))
    }

    pub fn forget(&self, peer_id: PeerId) -> Result<(), SendError> {
        self.send(StoreCommand::Forget(peer_id))
    }

    pub fn set_ban(&self, peer_id: PeerId, until: Option<Timestamp>) -> Result<(), SendError> {
        self.send(StoreCommand::SetBan { peer_id, until })
    }

    pub fn set_preferred_protocol(
        &self,
        peer_id: PeerId,
        protocol: Option<Protocol>,
    ) -> Result<(), SendError> {
        self.send(StoreCommand::SetPreferredProtocol { peer_id, protocol })
    }

    pub fn set_refusal(
        &self,
        peer_id: PeerId,
        service: &'static str,
        at: Option<Timestamp>,
    ) -> Result<(), SendError> {
        self.send(StoreCommand::SetRefusal {
            peer_id,
            service,
            at,
        })
    }

    pub fn set_registers(
        &self,
        peer_id: PeerId,
        registers: Vec<super::peers::RegisterAd>,
        at: Timestamp,
    ) -> Result<(), SendError> {
        self.send(StoreCommand::SetRegisters {
            peer_id,
            registers,
            at,
        })
    }

    /// Blocks until every command queued before this call is committed (waiting for room in
    /// the channel if needed: a flush must not be refused). Blocking: from async code use
    /// [`flush_async`](Self::flush_async).
    pub fn flush(&self) -> Result<(), StoreError> {
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        self.tx
            .send_past_bound(Message::Command(StoreCommand::Flush(FlushAck(ack_tx))))
            .map_err(|_| StoreError::WriterStopped)?;
        match ack_rx.recv() {
            Ok(0) => Ok(()),
            Ok(failed_batches) => Err(StoreError::FlushFailed { failed_batches }),
            Err(_) => Err(StoreError::WriterStopped),
        }
    }

    /// [`flush`](Self::flush) on tokio's blocking pool, for graceful shutdown.
    pub async fn flush_async(&self) -> Result<(), StoreError> {
        let handle = self.clone();
        tokio::task::spawn_blocking(move || handle.flush())
            .await
            .map_err(|_| StoreError::WriterStopped)?
    }

    pub fn stats(&self) -> WriterStats {
        let c = &self.counters;
        WriterStats {
            accepted: c.accepted.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            coalesced: c.coalesced.load(Ordering::Relaxed),
            batches_committed: c.batches_committed.load(Ordering::Relaxed),
            batches_failed: c.batches_failed.load(Ordering::Relaxed),
        }
    }
}

/// Owns the writer thread. Dropping it commits what is queued and joins the thread; handles
/// still around afterwards get [`SendError::Stopped`].
#[derive(Debug)]
pub struct StoreWriter {
    handle: StoreHandle,
    thread: Option<JoinHandle<()>>,
}

impl StoreWriter {
    /// Moves `store` onto a new thread named `peer-store` and starts taking commands.
    pub fn spawn(store: PeerStore, config: WriterConfig) -> Result<Self, StoreError> {
        let (tx, rx) = channel::bounded(config.queue_capacity.max(1));
        let counters = Arc::new(Counters::default());
        let worker = Worker {
            store,
            config,
            counters: Arc::clone(&counters),
            failed_since_flush: 0,
        };
        let thread = std::thread::Builder::new()
            .name("peer-store".into())
            .spawn(move || worker.run(rx))
            .map_err(StoreError::Spawn)?;
        Ok(Self {
            handle: StoreHandle { tx, counters },
            thread: Some(thread),
        })
    }

    /// The sender to give to the actor and the communication layer.
    pub fn handle(&self) -> &StoreHandle {
        &self.handle
    }

    /// Commits what is queued, stops the thread and reports batches that failed since the
    /// last flush.
    pub fn shutdown(mut self) -> Result<(), StoreError> {
        let flushed = self.handle.flush();
        self.stop();
        flushed
    }

    fn stop(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        // It fails only if the thread is gone already, and then there is nothing to stop.
        let _ = self.handle.tx.send_past_bound(Message::Shutdown);
        if thread.join().is_err() {
            tracing::error!("peer store writer thread panicked");
        }
    }
}

impl Drop for StoreWriter {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The pending writes of one batch, in arrival order.
#[derive(Default)]
struct Batch {
    commands: Vec<StoreCommand>,
    /// Index in `commands` of the upsert of a peer that later upserts may merge into: only
    /// while no other command about that peer came after it, so order per peer is kept.
    mergeable: HashMap<PeerId, usize>,
    /// Commands received into this batch, merged ones included: the size trigger counts work
    /// received, so a flood of merges still commits on time.
    received: usize,
    opened: Option<Instant>,
}

impl Batch {
    /// Adds a write (not a flush). True if it was merged into a pending upsert.
    fn push(&mut self, command: StoreCommand) -> bool {
        self.received += 1;
        self.opened.get_or_insert_with(Instant::now);
        let id = match &command {
            StoreCommand::Upsert(node) => &node.peer_id,
            StoreCommand::Forget(id)
            | StoreCommand::SetBan { peer_id: id, .. }
            | StoreCommand::SetPreferredProtocol { peer_id: id, .. }
            | StoreCommand::SetRefusal { peer_id: id, .. }
            | StoreCommand::SetRegisters { peer_id: id, .. } => id,
            // About no peer row: nothing to merge, order kept by position.
            StoreCommand::SetAutoBan(_) | StoreCommand::LiftAutoBan(_) => {
                self.commands.push(command);
                return false;
            }
            StoreCommand::Flush(_) => return false,
        };
        if let StoreCommand::Upsert(node) = command {
            if let Some(&at) = self.mergeable.get(&node.peer_id)
                && let Some(StoreCommand::Upsert(pending)) = self.commands.get_mut(at)
            {
                // Last value wins, except that a merge must not lose a ban the earlier upsert
                // would have raised (upserts never lower bans).
                let banned_until = pending.banned_until.max(node.banned_until);
                *pending = PeerNode {
                    banned_until,
                    ..node
                };
                return true;
            }
            self.mergeable
                .insert(node.peer_id.clone(), self.commands.len());
            self.commands.push(StoreCommand::Upsert(node));
        } else {
            self.mergeable.remove(id);
            self.commands.push(command);
        }
        false
    }

    fn deadline(&self, interval: Duration) -> Option<Instant> {
        self.opened.map(|at| at + interval)
    }
}

struct Worker {
    store: PeerStore,
    config: WriterConfig,
    counters: Arc<Counters>,
    failed_since_flush: u64,
}

impl Worker {
    fn run(mut self, rx: channel::Receiver<Message>) {
        let mut batch = Batch::default();
        loop {
            let message = match batch.deadline(self.config.batch_interval) {
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(deadline) => {
                    rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
                }
            };
            match message {
                Ok(Message::Command(StoreCommand::Flush(FlushAck(ack)))) => {
                    self.commit(&mut batch);
                    // The flusher may have given up waiting; nothing to tell then.
                    let _ = ack.send(std::mem::take(&mut self.failed_since_flush));
                }
                Ok(Message::Command(command)) => {
                    if batch.push(command) {
                        self.counters.coalesced.fetch_add(1, Ordering::Relaxed);
                    }
                    if batch.received >= self.config.batch_max_commands.max(1) {
                        self.commit(&mut batch);
                    }
                }
                Err(RecvTimeoutError::Timeout) => self.commit(&mut batch),
                Ok(Message::Shutdown) | Err(RecvTimeoutError::Disconnected) => {
                    self.commit(&mut batch);
                    return;
                }
            }
        }
    }

    fn commit(&mut self, batch: &mut Batch) {
        let batch = std::mem::take(batch);
        if batch.commands.is_empty() {
            return;
        }
        let n = batch.commands.len();
        let result = self.store.write(|conn| {
            for command in &batch.commands {
                apply(conn, command)?;
            }
            Ok(())
        });
        match result {
            Ok(()) => {
                self.counters
                    .batches_committed
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                self.counters.batches_failed.fetch_add(1, Ordering::Relaxed);
                self.failed_since_flush += 1;
                tracing::warn!(%error, commands = n, path = %self.store.path().display(),
                    "peer store batch failed; its writes are lost until the peers are persisted again");
            }
        }
    }
}

fn apply(conn: &rusqlite::Connection, command: &StoreCommand) -> Result<(), StoreError> {
    match command {
        StoreCommand::Upsert(node) => peers::upsert(conn, node),
        StoreCommand::Forget(id) => peers::remove(conn, id).map(drop),
        StoreCommand::SetBan { peer_id, until } => peers::set_ban(conn, peer_id, *until),
        StoreCommand::SetAutoBan(record) => super::bans::set_auto_ban(conn, record),
        StoreCommand::LiftAutoBan(subject) => super::bans::lift_auto_ban(conn, subject),
        StoreCommand::SetPreferredProtocol { peer_id, protocol } => {
            peers::set_preferred_protocol(conn, peer_id, *protocol).map(drop)
        }
        StoreCommand::SetRefusal {
            peer_id,
            service,
            at,
        } => peers::set_refusal(conn, peer_id, service, *at),
        StoreCommand::SetRegisters {
            peer_id,
            registers,
            at,
        } => peers::set_registers(conn, peer_id, registers, *at),
        StoreCommand::Flush(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::{Connection, TransactionBehavior};
    use tempfile::TempDir;

    use super::*;
    use crate::store::PEERS_DB_FILE;
    use crate::store::test_util::{id, node, t};

    /// A writer that only commits on flush, drop or a full batch, so tests see batching.
    fn slow_config() -> WriterConfig {
        WriterConfig {
            batch_interval: Duration::from_secs(3600),
            ..WriterConfig::default()
        }
    }

    fn spawn(dir: &TempDir, config: WriterConfig) -> StoreWriter {
        StoreWriter::spawn(PeerStore::open_in(dir.path()).unwrap(), config).unwrap()
    }

    #[test]
    fn many_upserts_of_one_peer_coalesce_and_the_last_wins() {
        let dir = TempDir::new().unwrap();
        let writer = spawn(&dir, slow_config());
        let h = writer.handle();
        for seen in 1..=100 {
            h.upsert(node(1, seen)).unwrap();
        }
        h.upsert(node(2, 5)).unwrap();
        h.flush().unwrap();
        let stats = h.stats();
        assert_eq!(stats.accepted, 101);
        assert_eq!(stats.coalesced, 99);
        assert_eq!(stats.batches_committed, 1);
        let reader = PeerStore::open_in(dir.path()).unwrap();
        assert_eq!(reader.count().unwrap(), 2);
        assert_eq!(reader.get(&id(1)).unwrap().unwrap().last_seen, t(100));
    }

    #[test]
    fn coalescing_keeps_the_order_of_other_commands_and_bans() {
        let dir = TempDir::new().unwrap();
        let writer = spawn(&dir, slow_config());
        let h = writer.handle();
        h.upsert(node(1, 1)).unwrap();
        h.forget(id(1)).unwrap();
        h.upsert(node(1, 2)).unwrap(); // after the forget: must not merge into the first
        h.upsert(PeerNode {
            banned_until: Some(t(9_000)),
            ..node(2, 1)
        })
        .unwrap();
        h.upsert(node(2, 2)).unwrap(); // merged: the ban must survive the merge
        h.set_ban(id(3), Some(t(9_000))).unwrap();
        h.set_preferred_protocol(id(1), Some(Protocol::Rest))
            .unwrap();
        h.flush().unwrap();
        let reader = PeerStore::open_in(dir.path()).unwrap();
        assert_eq!(reader.get(&id(1)).unwrap().unwrap().last_seen, t(2));
        assert_eq!(
            reader.preferred_protocol(&id(1)).unwrap(),
            Some(Protocol::Rest)
        );
        let p2 = reader.get(&id(2)).unwrap().unwrap();
        assert_eq!((p2.last_seen, p2.banned_until), (t(2), Some(t(9_000))));
        assert_eq!(reader.banned(t(0)).unwrap().len(), 2);
    }

    #[test]
    fn flush_makes_writes_visible_to_another_connection() {
        let dir = TempDir::new().unwrap();
        let writer = spawn(&dir, slow_config());
        writer.handle().upsert(node(1, 10)).unwrap();
        // A raw connection, not a PeerStore: what any reader of the file sees.
        let raw = Connection::open(dir.path().join(PEERS_DB_FILE)).unwrap();
        let count = || -> i64 {
            raw.query_row("SELECT count(*) FROM peers", [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(count(), 0, "not committed before the interval or a flush");
        writer.handle().flush().unwrap();
        assert_eq!(count(), 1);
    }

    #[test]
    fn the_interval_commits_without_a_flush() {
        let dir = TempDir::new().unwrap();
        let writer = spawn(
            &dir,
            WriterConfig {
                batch_interval: Duration::from_millis(20),
                ..WriterConfig::default()
            },
        );
        writer.handle().upsert(node(1, 10)).unwrap();
        let reader = PeerStore::open_in(dir.path()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while reader.count().unwrap() == 0 {
            assert!(Instant::now() < deadline, "never committed");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_full_batch_commits_without_a_flush() {
        let dir = TempDir::new().unwrap();
        let writer = spawn(
            &dir,
            WriterConfig {
                batch_max_commands: 3,
                ..slow_config()
            },
        );
        for n in 1..=3 {
            writer.handle().upsert(node(n, 10)).unwrap();
        }
        let reader = PeerStore::open_in(dir.path()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while reader.count().unwrap() < 3 {
            assert!(Instant::now() < deadline, "never committed");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_full_channel_refuses_and_counts_without_blocking() {
        let dir = TempDir::new().unwrap();
        // Another connection holds the write lock, so the writer's first commit waits in the
        // busy handler while the sender fills the channel.
        let mut locker = Connection::open(dir.path().join(PEERS_DB_FILE)).unwrap();
        let writer = spawn(
            &dir,
            WriterConfig {
                queue_capacity: 2,
                batch_max_commands: 1,
                ..slow_config()
            },
        );
        let lock = locker
            .transaction_with_behavior(TransactionBehavior::Exclusive)
            .unwrap();
        let h = writer.handle();
        h.upsert(node(100, 1)).unwrap();
        let started = Instant::now();
        let mut accepted = 1;
        let mut refused = 0;
        for n in 1..=50 {
            match h.upsert(node(n, 1)) {
                Ok(()) => accepted += 1,
                Err(SendError::Full) => refused += 1,
                Err(SendError::Stopped) => panic!("writer stopped"),
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "try_send blocked"
        );
        // At most the capacity plus the one command the writer holds (and one it may have
        // taken before it blocked) get in.
        assert!(refused >= 50 - 4, "refused {refused}");
        assert_eq!(h.stats().refused, refused);
        assert_eq!(h.stats().accepted, accepted);
        lock.rollback().unwrap();
        h.flush().unwrap();
        let reader = PeerStore::open_in(dir.path()).unwrap();
        assert_eq!(reader.count().unwrap() as u64, accepted);
    }

    #[test]
    fn dropping_the_writer_commits_what_is_queued() {
        let dir = TempDir::new().unwrap();
        let writer = spawn(&dir, slow_config());
        let handle = writer.handle().clone();
        for n in 1..=20 {
            handle.upsert(node(n, 10)).unwrap();
        }
        drop(writer);
        assert_eq!(PeerStore::open_in(dir.path()).unwrap().count().unwrap(), 20);
        assert_eq!(handle.upsert(node(21, 10)), Err(SendError::Stopped));
        assert_eq!(handle.stats().refused, 1);
        assert!(matches!(handle.flush(), Err(StoreError::WriterStopped)));
    }

    #[test]
    fn failed_batches_are_reported_by_the_next_flush() {
        let dir = TempDir::new().unwrap();
        let writer = spawn(&dir, slow_config());
        let h = writer.handle();
        h.upsert(PeerNode {
            port: 0, // refused by the CHECK constraint: the whole batch fails
            ..node(1, 10)
        })
        .unwrap();
        let err = h.flush().unwrap_err();
        assert!(
            matches!(err, StoreError::FlushFailed { failed_batches: 1 }),
            "{err:?}"
        );
        h.upsert(node(2, 10)).unwrap();
        h.flush().unwrap();
        assert_eq!(h.stats().batches_failed, 1);
        writer.shutdown().unwrap();
    }

    #[tokio::test]
    async fn flush_async_does_not_need_a_blocking_caller() {
        let dir = TempDir::new().unwrap();
        let writer = spawn(&dir, slow_config());
        writer.handle().upsert(node(1, 10)).unwrap();
        writer.handle().flush_async().await.unwrap();
        assert_eq!(PeerStore::open_in(dir.path()).unwrap().count().unwrap(), 1);
    }
}
