//! The writer thread: group commit over the one writing connection.
//!
//! It blocks for a first job, takes every job already waiting behind it (up to
//! [`GROUP_MAX_JOBS`]), applies the group in one SQLite transaction, enforces the bounds in the
//! same transaction, commits (the one fsync), then answers every job of the group and
//! publishes how many jobs are done. A statement that fails fails the whole group: each job
//! gets the error, nothing of the group is on disk, and the counters stay as they were.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{RecvTimeoutError, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};
use sorcha_peer_core::model::{Timestamp, TxHash, TxId};
use tokio::sync::{oneshot, watch};

use super::ids::{Ids, Undo};
use super::schema::{DEAD, KEPT, QUEUED};
use super::{Counters, DurableError, Limits, NewTx, lock};
use crate::store::channel;

/// Jobs waiting for the writer at most; past it writes are refused with
/// [`DurableError::Busy`] (counted). At 256-byte transactions that is 2 MiB, and a few groups'
/// worth: the disk, not this queue, is what a burst waits for.
pub const JOB_QUEUE_CAPACITY: usize = 8192;

/// Jobs in one group at most, so one SQLite transaction stays a few milliseconds long and the
/// first submitter of a group is not kept waiting behind an unbounded one.
pub const GROUP_MAX_JOBS: usize = 2048;

/// A group of jobs nobody waits on (pulled transactions, confirmations) waits this long after
/// its first job for more before it commits; a job someone waits on (a submission, a take, a
/// flush) commits the group at once. A commit of one row costs the writer most of what a commit
/// of ten does (the pages, the WAL frames, the locks, the fsync), and a node relaying 200 tx/s
/// took them one by one: `peer-lab run propagation` (20 nodes on 2 cores) spent a quarter of
/// its CPU in the writers. What waits instead is the node's announcements of those
/// transactions (`runtime/actor`: a peer is told of a transaction once it would survive our
/// crash); its pushes carry the body and go at once.
pub const UNAWAITED_LINGER: Duration = Duration::from_millis(20);

/// The TTL is enforced at most this often (and this often while idle).
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);

/// Rows examined per eviction step.
const EVICT_STEP: i64 = 256;

/// A queued row due for a delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub hash: TxHash,
    pub body: Vec<u8>,
    pub register_id: Option<String>,
    pub attempts: u32,
    /// Set when this take moved the row to the dead letters (why), so the caller can say so;
    /// such a row is not to be handed to gossip.
    pub gave_up: Option<String>,
}

pub(super) enum Job {
    Put {
        tx: NewTx,
        queue: bool,
        reply: Option<oneshot::Sender<Result<bool, DurableError>>>,
    },
    TakeDue {
        now: Timestamp,
        limit: usize,
        reply: oneshot::Sender<Result<Vec<Due>, DurableError>>,
    },
    Confirm {
        hashes: Vec<TxHash>,
    },
    Flush {
        reply: oneshot::Sender<Result<(), DurableError>>,
    },
}

enum Message {
    Job(Job),
    /// Commit what came before, then stop.
    Shutdown,
}

/// The sending side, shared by every clone of the store.
pub(super) struct Sender {
    tx: channel::Sender<Message>,
    /// Jobs sent so far; held while sending so the numbers follow the channel's order.
    sent: Mutex<u64>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Sender {
    /// Queues `job` without waiting; its number in the order of jobs.
    pub(super) fn send(&self, job: Job) -> Result<u64, DurableError> {
        let mut sent = lock(&self.sent);
        match self.tx.try_send(Message::Job(job)) {
            Ok(()) => {
                *sent += 1;
                Ok(*sent)
            }
            Err(TrySendError::Full(_)) => Err(DurableError::Busy),
            Err(TrySendError::Disconnected(_)) => Err(DurableError::Stopped),
        }
    }

    /// Commits what is queued and joins the thread; later sends get `Stopped`.
    pub(super) fn shutdown(&self) {
        let Some(thread) = lock(&self.thread).take() else {
            return;
        };
        let _ = self.tx.send_past_bound(Message::Shutdown);
        if thread.join().is_err() {
            tracing::error!("transaction store writer thread panicked");
        }
    }
}

/// Rows, bytes and queued rows, as the writer tracks them; applied to the shared counters only
/// once a group commits.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    rows: u64,
    bytes: u64,
    queued: u64,
    evicted: u64,
    expired: u64,
}

/// Starts the writer thread on `conn`; the sender and the count of jobs done.
pub(super) fn spawn(
    conn: Connection,
    path: PathBuf,
    limits: Limits,
    counters: Arc<Counters>,
    ids: Arc<Mutex<Ids>>,
) -> Result<(Sender, watch::Receiver<u64>), String> {
    let tally = initial_tally(&conn).map_err(|e| e.to_string())?;
    let (tx, rx) = channel::bounded(JOB_QUEUE_CAPACITY);
    let (done_tx, done_rx) = watch::channel(0);
    let mut worker = Worker {
        conn,
        path,
        limits,
        counters,
        ids,
        tally,
        done: 0,
        done_tx,
        last_expiry: Instant::now(),
    };
    worker.publish();
    let thread = std::thread::Builder::new()
        .name("tx-store".into())
        .spawn(move || worker.run(rx))
        .map_err(|e| e.to_string())?;
    let sender = Sender {
        tx,
        sent: Mutex::new(0),
        thread: Mutex::new(Some(thread)),
    };
    Ok((sender, done_rx))
}

fn initial_tally(conn: &Connection) -> rusqlite::Result<Tally> {
    conn.query_row(
        "SELECT count(*), coalesce(sum(length(body)), 0),
                (SELECT count(*) FROM transactions WHERE state = 1)
         FROM transactions",
        [],
        |r| {
            Ok(Tally {
                rows: r.get::<_, i64>(0)? as u64,
                bytes: r.get::<_, i64>(1)? as u64,
                queued: r.get::<_, i64>(2)? as u64,
                ..Tally::default()
            })
        },
    )
}

/// What a job gets back once its group is committed.
enum Outcome {
    Put(Result<bool, DurableError>),
    Due(Vec<Due>),
    Done,
}

struct Worker {
    conn: Connection,
    path: PathBuf,
    limits: Limits,
    counters: Arc<Counters>,
    /// The row of each id: changed here only, with the rows (`ids.rs`).
    ids: Arc<Mutex<Ids>>,
    tally: Tally,
    /// Jobs done (committed or failed), published on `done_tx`.
    done: u64,
    done_tx: watch::Sender<u64>,
    last_expiry: Instant,
}

impl Worker {
    fn run(mut self, rx: channel::Receiver<Message>) {
        loop {
            let first = match rx.recv_timeout(HOUSEKEEPING_INTERVAL) {
                Ok(Message::Job(job)) => job,
                Ok(Message::Shutdown) | Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => {
                    self.run_group(Vec::new());
                    continue;
                }
            };
            let (group, stop) = gather(&rx, first, UNAWAITED_LINGER);
            self.run_group(group);
            if stop {
                return;
            }
        }
    }

    /// Applies, commits and answers one group.
    fn run_group(&mut self, group: Vec<Job>) {
        let expire = self.last_expiry.elapsed() >= HOUSEKEEPING_INTERVAL;
        if group.is_empty() && !expire {
            return;
        }
        if expire {
            self.last_expiry = Instant::now();
        }
        let n = group.len() as u64;
        let applied = self.apply(&group, expire);
        // Counted and published before the answers, so a caller that reads the stats after
        // its answer sees its own write.
        self.done += n;
        match applied {
            Ok((outcomes, tally)) => {
                self.tally = tally;
                self.counters.groups.fetch_add(1, Ordering::Relaxed);
                self.counters.jobs.fetch_add(n, Ordering::Relaxed);
                self.publish();
                for (job, outcome) in group.into_iter().zip(outcomes) {
                    answer(job, outcome);
                }
            }
            Err(e) => {
                self.counters.failed_groups.fetch_add(1, Ordering::Relaxed);
                self.publish();
                tracing::error!(error = %e, jobs = n, path = %self.path.display(),
                    "transaction store group failed to commit; its writes are refused");
                let err = DurableError::sql(&self.path, &e);
                for job in group {
                    fail(job, err.clone());
                }
            }
        }
    }

    fn publish(&mut self) {
        let c = &self.counters;
        c.rows.store(self.tally.rows, Ordering::Relaxed);
        c.bytes.store(self.tally.bytes, Ordering::Relaxed);
        c.queued.store(self.tally.queued, Ordering::Relaxed);
        c.evicted
            .fetch_add(std::mem::take(&mut self.tally.evicted), Ordering::Relaxed);
        c.expired
            .fetch_add(std::mem::take(&mut self.tally.expired), Ordering::Relaxed);
        self.done_tx.send_replace(self.done);
    }

    /// Applies and commits `group`; if that fails, SQLite rolls the rows back and the id
    /// index is put back to match.
    fn apply(&mut self, group: &[Job], expire: bool) -> rusqlite::Result<(Vec<Outcome>, Tally)> {
        let mut undo = Undo::default();
        let applied = self.apply_rows(group, expire, &mut undo);
        if applied.is_err() {
            lock(&self.ids).undo(undo);
        }
        applied
    }

    fn apply_rows(
        &mut self,
        group: &[Job],
        expire: bool,
        undo: &mut Undo,
    ) -> rusqlite::Result<(Vec<Outcome>, Tally)> {
        let limits = self.limits;
        let mut tally = self.tally;
        let tx = self.conn.transaction()?;
        let rows = Rows {
            conn: &tx,
            ids: &self.ids,
        };
        let mut outcomes = Vec::with_capacity(group.len());
        for job in group {
            outcomes.push(match job {
                Job::Put { tx: new, queue, .. } => {
                    Outcome::Put(rows.put(new, *queue, &mut tally, &limits, undo)?)
                }
                Job::TakeDue { now, limit, .. } => {
                    Outcome::Due(take_due(&tx, *now, *limit, &mut tally, &limits)?)
                }
                Job::Confirm { hashes } => {
                    rows.confirm(hashes, &mut tally)?;
                    Outcome::Done
                }
                Job::Flush { .. } => Outcome::Done,
            });
        }
        if expire {
            let ttl = crate::clock::now()
                .as_millis()
                .saturating_sub(limits.ttl.as_millis() as u64);
            rows.expire_before(ttl, &mut tally, undo)?;
        }
        rows.evict(&mut tally, &limits, undo)?;
        tx.commit()?;
        Ok((outcomes, tally))
    }
}

/// `first` and the jobs behind it, up to [`GROUP_MAX_JOBS`]: those queued now and, while no
/// job of the group is awaited, those that come within `linger` of `first`; and whether a
/// shutdown came.
fn gather(rx: &channel::Receiver<Message>, first: Job, linger: Duration) -> (Vec<Job>, bool) {
    let deadline = Instant::now() + linger;
    let mut awaited = first.is_awaited();
    let mut group = vec![first];
    while group.len() < GROUP_MAX_JOBS {
        let next = if awaited {
            rx.try_recv().ok()
        } else {
            rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .ok()
        };
        match next {
            Some(Message::Job(job)) => {
                awaited |= job.is_awaited();
                group.push(job);
            }
            Some(Message::Shutdown) => return (group, true),
            None => break,
        }
    }
    (group, false)
}

impl Job {
    /// Someone waits for this job's commit.
    fn is_awaited(&self) -> bool {
        match self {
            Job::Put { reply, .. } => reply.is_some(),
            Job::TakeDue { .. } | Job::Flush { .. } => true,
            Job::Confirm { .. } => false,
        }
    }
}

fn answer(job: Job, outcome: Outcome) {
    // A receiver that went away gave up waiting (a client hung up): nothing to tell.
    match (job, outcome) {
        (
            Job::Put {
                reply: Some(reply), ..
            },
            Outcome::Put(result),
        ) => {
            let _ = reply.send(result);
        }
        (Job::TakeDue { reply, .. }, Outcome::Due(due)) => {
            let _ = reply.send(Ok(due));
        }
        (Job::Flush { reply }, _) => {
            let _ = reply.send(Ok(()));
        }
        _ => {}
    }
}

fn fail(job: Job, err: DurableError) {
    match job {
        Job::Put {
            reply: Some(reply), ..
        } => {
            let _ = reply.send(Err(err));
        }
        Job::TakeDue { reply, .. } => {
            let _ = reply.send(Err(err));
        }
        Job::Flush { reply } => {
            let _ = reply.send(Err(err));
        }
        Job::Put { reply: None, .. } | Job::Confirm { .. } => {}
    }
}

/// A queued row as `take_due` reads it: seq, hash, body, register id, attempts.
type QueuedRow = (i64, Vec<u8>, Vec<u8>, Option<String>, u32);

/// Takes due queued rows, oldest due first, booking an attempt (the next one after a doubling
/// delay); rows out of attempts become dead letters.
fn take_due(
    conn: &Connection,
    now: Timestamp,
    limit: usize,
    tally: &mut Tally,
    limits: &Limits,
) -> rusqlite::Result<Vec<Due>> {
    let rows: Vec<QueuedRow> = conn
        .prepare_cached(
            "SELECT seq, hash, body, register_id, attempts FROM transactions
             WHERE state = 1 AND next_attempt_at <= ?1 ORDER BY next_attempt_at LIMIT ?2",
        )?
        .query_map(params![now.to_wire(), limit as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<Result<_, _>>()?;
    let mut due = Vec::with_capacity(rows.len());
    for (seq, hash, body, register_id, attempts) in rows {
        let Ok(hash) = <[u8; 32]>::try_from(hash) else {
            continue; // The CHECK constraint makes this unreachable.
        };
        let hash = TxHash::from_bytes(hash);
        if attempts >= limits.max_retries {
            let reason = format!("no peer pulled it after {attempts} attempts");
            conn.prepare_cached("UPDATE transactions SET state = ?2, reason = ?3 WHERE seq = ?1")?
                .execute(params![seq, DEAD, reason])?;
            tally.queued = tally.queued.saturating_sub(1);
            let (body, gave_up) = (Vec::new(), Some(reason));
            due.push(Due {
                hash,
                body,
                register_id,
                attempts,
                gave_up,
            });
            continue;
        }
        let delay = limits.retry_delay.saturating_mul(1 << attempts.min(16));
        conn.prepare_cached(
            "UPDATE transactions SET attempts = attempts + 1, next_attempt_at = ?2 WHERE seq = ?1",
        )?
        .execute(params![seq, now.saturating_add(delay).to_wire()])?;
        due.push(Due {
            hash,
            body,
            register_id,
            attempts,
            gave_up: None,
        });
    }
    Ok(due)
}

/// The writing connection inside a group's SQLite transaction, with the id index that the
/// rows it inserts and deletes keep up to date.
struct Rows<'a> {
    conn: &'a Connection,
    ids: &'a Mutex<Ids>,
}

impl Rows<'_> {
    fn put(
        &self,
        new: &NewTx,
        queue: bool,
        tally: &mut Tally,
        limits: &Limits,
        undo: &mut Undo,
    ) -> rusqlite::Result<Result<bool, DurableError>> {
        let id = new.hash.id();
        if lock(self.ids).get(&id).is_some() {
            return Ok(Ok(false));
        }
        if queue && tally.queued >= limits.max_queued {
            return Ok(Err(DurableError::QueueFull(tally.queued)));
        }
        let state = if queue { QUEUED } else { KEPT };
        self.conn
            .prepare_cached(
                "INSERT INTO transactions
                     (id, hash, body, register_id, origin, first_seen, state, next_attempt_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?6)",
            )?
            .execute(params![
                &id.as_bytes()[..],
                &new.hash.as_bytes()[..],
                &new.body[..],
                new.register_id,
                new.origin,
                new.first_seen.to_wire(),
                state,
            ])?;
        lock(self.ids).insert(id, self.conn.last_insert_rowid(), undo);
        tally.rows += 1;
        tally.bytes += new.body.len() as u64;
        tally.queued += u64::from(queue);
        Ok(Ok(true))
    }

    /// Queued rows a peer pulled become kept rows.
    fn confirm(&self, hashes: &[TxHash], tally: &mut Tally) -> rusqlite::Result<()> {
        let mut update = self.conn.prepare_cached(
            "UPDATE transactions SET state = 0, next_attempt_at = 0 WHERE seq = ?1 AND state = 1",
        )?;
        for hash in hashes {
            let Some(seq) = lock(self.ids).get(&hash.id()) else {
                continue;
            };
            let n = update.execute(params![seq])? as u64;
            tally.queued = tally.queued.saturating_sub(n);
        }
        Ok(())
    }

    /// Deletes the row `seq`, whose id is `id`, and forgets the id.
    fn delete(&self, seq: i64, id: &[u8], undo: &mut Undo) -> rusqlite::Result<()> {
        self.conn
            .prepare_cached("DELETE FROM transactions WHERE seq = ?1")?
            .execute(params![seq])?;
        if let Ok(id) = <[u8; TxId::LEN]>::try_from(id) {
            lock(self.ids).remove(&TxId::from_bytes(id), undo);
        }
        Ok(())
    }

    /// Deletes unqueued rows first seen before `cutoff` (Unix ms), oldest first.
    ///
    /// Rows are walked in arrival (`seq`) order, stopping at the first unqueued row that is
    /// still young: `first_seen` is the clock at arrival, so it grows with `seq`, and the walk
    /// costs O(expired rows) with no index on `first_seen` (schema V2). Should the wall clock
    /// step back, a row behind a younger one waits until that one expires: the count and byte
    /// bounds still hold it in.
    fn expire_before(
        &self,
        cutoff: u64,
        tally: &mut Tally,
        undo: &mut Undo,
    ) -> rusqlite::Result<()> {
        let cutoff = i64::try_from(cutoff).unwrap_or(i64::MAX);
        let mut after = 0i64;
        loop {
            let rows: Vec<(i64, i64, i64, Vec<u8>)> = self
                .conn
                .prepare_cached(
                    "SELECT seq, length(body), first_seen, id FROM transactions
                     WHERE state != 1 AND seq > ?1 ORDER BY seq LIMIT ?2",
                )?
                .query_map(params![after, EVICT_STEP], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })?
                .collect::<Result<_, _>>()?;
            let last_step = rows.len() < EVICT_STEP as usize;
            for (seq, len, first_seen, id) in rows {
                if first_seen >= cutoff {
                    return Ok(());
                }
                self.delete(seq, &id, undo)?;
                tally.rows = tally.rows.saturating_sub(1);
                tally.bytes = tally.bytes.saturating_sub(len as u64);
                tally.expired += 1;
                after = seq;
            }
            if last_step {
                return Ok(());
            }
        }
    }

    /// Deletes the oldest unqueued rows until the count and byte bounds hold.
    fn evict(&self, tally: &mut Tally, limits: &Limits, undo: &mut Undo) -> rusqlite::Result<()> {
        let over = |t: &Tally| t.rows > limits.max_transactions || t.bytes > limits.max_bytes;
        while over(tally) {
            let victims: Vec<(i64, i64, Vec<u8>)> = self
                .conn
                .prepare_cached(
                    "SELECT seq, length(body), id FROM transactions
                     WHERE state != 1 ORDER BY seq LIMIT ?1",
                )?
                .query_map(params![EVICT_STEP], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?
                .collect::<Result<_, _>>()?;
            if victims.is_empty() {
                return Ok(()); // Only queued rows left: bounded by max_queued instead.
            }
            for (seq, len, id) in victims {
                if !over(tally) {
                    break;
                }
                self.delete(seq, &id, undo)?;
                tally.rows = tally.rows.saturating_sub(1);
                tally.bytes = tally.bytes.saturating_sub(len as u64);
                tally.evicted += 1;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn confirm() -> Job {
        Job::Confirm { hashes: Vec::new() }
    }

    #[test]
    fn unawaited_jobs_wait_for_company_and_an_awaited_one_ends_the_wait() {
        let (tx, rx) = channel::bounded(16);
        let late = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            tx.try_send(Message::Job(confirm())).unwrap();
            let (reply, answered) = oneshot::channel();
            tx.try_send(Message::Job(Job::Flush { reply })).unwrap();
            tx.try_send(Message::Job(confirm())).unwrap();
            (tx, answered)
        });
        // Lingering long: the first job waits for the late ones, up to the flush someone
        // waits for, which commits the group at once with what is queued behind it.
        let started = Instant::now();
        let (group, stop) = gather(&rx, confirm(), Duration::from_secs(60));
        assert_eq!((group.len(), stop), (4, false));
        assert!(group[2].is_awaited());
        assert!(started.elapsed() < Duration::from_secs(30));
        let (tx, _answered) = late.join().unwrap();
        // An awaited first job takes what is queued and does not wait.
        let (reply, _answered) = oneshot::channel();
        let (group, _) = gather(&rx, Job::Flush { reply }, Duration::from_secs(60));
        assert_eq!(group.len(), 1);
        // A shutdown ends the wait and says so.
        tx.send_past_bound(Message::Shutdown).unwrap();
        let (group, stop) = gather(&rx, confirm(), Duration::from_secs(60));
        assert_eq!((group.len(), stop), (1, true));
    }
}
