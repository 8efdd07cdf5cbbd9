//! Hands the offline queue to gossip once the node has a healthy peer: due transactions,
//! oldest first, in batches; confirmations noted by the body servers (a peer pulled a row) and
//! the link workers (a peer acknowledged a row's eager push) are applied in one transaction
//! per tick. The queue itself (SQLite, what is due, dead letters) is
//! [`crate::store::queue`]'s; this loop only moves entries from it into the node.

use std::time::Duration;

use sorcha_peer_core::model::{NodeState, TxId};
use tokio::sync::watch;
use tracing::Instrument as _;

use crate::clock::now;
use crate::handle::NodeHandle;
use crate::store::durable::Due;
use crate::store::queue::SharedQueue;
use crate::telemetry::events::EventKind;

/// Entries handed to gossip per flush step: large enough to flush tens of thousands per
/// second, small enough that the actor answers other requests in between (they go in one
/// command, `NodeHandle::submit_queued`; 1,024 leave ~2,100 outputs in the core's queue of
/// 8,192).
const FLUSH_BATCH: usize = 1024;
/// Pushable rows handed over at once: one link's body lane (its window takes as many more).
const PUSH_CHUNK: usize = 64;
/// How long a chunk waits for its confirmations before the next goes (a peer that neither
/// acknowledges nor pulls: an older version; a lost push is repaired by digests meanwhile).
const ACK_WAIT: Duration = Duration::from_millis(100);
/// How often the wait looks: acknowledgements come within a round trip on loopback.
const ACK_POLL: Duration = Duration::from_millis(1);
/// How often the flusher looks for due entries while the node has peers.
const FLUSH_TICK: Duration = Duration::from_millis(200);
/// How often it applies peers' pulls while entries are queued: the queue empties (and
/// `queue_size` says so) within this of the last pull.
const CONFIRM_TICK: Duration = Duration::from_millis(20);

/// Hands due transactions to gossip whenever the node has a healthy peer, until `stop`.
///
/// Pipelined: while the actor takes one batch, the store books the next (its commit, the
/// one fsync of a step, overlaps the actor's work), so a long queue is handed over at the
/// pace of the slower of the two, not of their sum. A booked batch is only an attempt:
/// its rows stay queued until a peer pulls them or acknowledges their push.
pub async fn flusher(
    (queue, push_max): (SharedQueue, u32),
    node: NodeHandle,
    mut state: watch::Receiver<NodeState>,
    mut stop: watch::Receiver<bool>,
) {
    let mut booked: Vec<Due> = Vec::new();
    loop {
        if let Err(e) = queue.confirm_pulled() {
            tracing::warn!(error = %e, "offline queue confirmation failed");
        }
        if *state.borrow() != NodeState::Offline {
            let due = match std::mem::take(&mut booked) {
                due if !due.is_empty() => Ok(due),
                _ => queue.take_due(now(), FLUSH_BATCH).await,
            };
            match due {
                Ok(due) if !due.is_empty() => {
                    // Before the hand-over: the pushes it causes ask to be acknowledged.
                    queue.await_ack(due.iter().filter(|d| d.gave_up.is_none()).map(|d| d.hash));
                    let paced = Paced {
                        queue: &queue,
                        push_max: u64::from(push_max),
                    };
                    let (flushed, next) = tokio::join!(
                        hand_over(&node, due, paced),
                        queue.take_due(now(), FLUSH_BATCH)
                    );
                    match next {
                        Ok(next) => booked = next,
                        Err(e) => tracing::warn!(error = %e, "offline queue flush failed"),
                    }
                    if flushed || !booked.is_empty() {
                        continue;
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "offline queue flush failed"),
            }
        }
        let tick = if queue.pending() > 0 {
            CONFIRM_TICK
        } else {
            FLUSH_TICK
        };
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = state.changed() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Hands one batch of due rows to gossip (dead letters go to the event log instead); true
/// if the actor took it. Known to gossip already (submitted before a restart) is fine: its
/// digests and the peer's pulls carry it on. Saturated or stopping: the entries stay queued
/// and are due again after their backoff.
async fn hand_over(node: &NodeHandle, due: Vec<Due>, paced: Paced<'_>) -> bool {
    let (gave_up, due): (Vec<_>, Vec<_>) = due.into_iter().partition(|d| d.gave_up.is_some());
    report_dead_letters(node, gave_up);
    if due.is_empty() {
        return true;
    }
    let count = due.len();
    let (pushed, announced): (Vec<_>, Vec<_>) = due
        .into_iter()
        .partition(|d| d.body.len() as u64 <= paced.push_max);
    let mut flushed = Ok(0);
    let mut pushed = pushed.into_iter().peekable();
    while pushed.peek().is_some() {
        let chunk: Vec<Due> = pushed.by_ref().take(PUSH_CHUNK).collect();
        let ids: Vec<TxId> = chunk.iter().map(|d| d.hash.id()).collect();
        flushed = submit(node, chunk).await;
        if flushed.is_err() {
            break;
        }
        paced.confirmed(&ids).await;
    }
    if flushed.is_ok() && !announced.is_empty() {
        flushed = submit(node, announced).await;
    }
    if flushed.is_ok() {
        tracing::debug!(count, "offline queue flushed into gossip");
        let detail = format!("{count} queued transactions handed to gossip");
        node.events().record(EventKind::TxFlushed, None, detail);
    }
    flushed.is_ok()
}

/// Hands `due` to gossip in one command.
async fn submit(node: &NodeHandle, due: Vec<Due>) -> Result<usize, crate::handle::HandleError> {
    let count = due.len();
    let entries = due.into_iter().map(|d| (d.body, d.register_id)).collect();
    node.submit_queued(entries)
        .instrument(tracing::debug_span!("flush", count))
        .await
}

/// The hand-over of bodies small enough to be pushed (`push_max`: the eager push threshold)
/// goes at the pace of their confirmations: a push that finds its peer's link full is dropped
/// (the link holds its window and body lane, 64 each), and the peer then gets it only from a
/// later digest. So such rows go [`PUSH_CHUNK`] at a time, the next chunk once the last is
/// confirmed (acknowledged or pulled) or after [`ACK_WAIT`].
#[derive(Clone, Copy)]
struct Paced<'a> {
    queue: &'a SharedQueue,
    push_max: u64,
}

impl Paced<'_> {
    /// Waits until none of `ids` waits for its confirmation, at most [`ACK_WAIT`].
    async fn confirmed(&self, ids: &[TxId]) {
        let deadline = tokio::time::Instant::now() + ACK_WAIT;
        while self.queue.awaits_any(ids) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(ACK_POLL).await;
        }
    }
}

/// Queued transactions the store gave up on (no peer pulled them after every attempt), in the
/// event log: they stay readable, listed under `/api/v1/queue`'s dead letters.
fn report_dead_letters(node: &NodeHandle, gave_up: Vec<Due>) {
    for dead in gave_up {
        let reason = dead.gave_up.unwrap_or_default();
        let detail = format!("{}: {reason}", dead.hash);
        node.events()
            .record(EventKind::TxDeadLettered, None, detail);
    }
}
