//! Hands the offline queue to gossip once the node has a healthy peer: due transactions,
//! oldest first, in batches; confirmations noted by the body servers (a peer pulled a row) and
//! the link workers (a peer acknowledged a row's eager push) are applied in one transaction
//! per tick. The queue itself (SQLite, what is due, dead letters) is
//! [`crate::store::queue`]'s; this loop only moves entries from it into the node.

use std::time::Duration;

use sorcha_peer_core::model::NodeState;
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
    queue: SharedQueue,
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
                    let (flushed, next) =
                        tokio::join!(hand_over(&node, due), queue.take_due(now(), FLUSH_BATCH));
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
///
/// The whole batch goes in one command, pushable bodies too: the node pushes its own up to
/// its push rate and announces the rest (core `gossip/pace.rs`), a push its peer's link has
/// no room for is announced instead (core `link`), and a peer's pull of an announced row
/// confirms it as an acknowledgement would. (Pacing pushes by their acknowledgements, 64 at a
/// time, halved the drain.)
async fn hand_over(node: &NodeHandle, due: Vec<Due>) -> bool {
    let (gave_up, due): (Vec<_>, Vec<_>) = due.into_iter().partition(|d| d.gave_up.is_some());
    report_dead_letters(node, gave_up);
    if due.is_empty() {
        return true;
    }
    let count = due.len();
    let entries = due.into_iter().map(|d| (d.body, d.register_id)).collect();
    let flushed = node
        .submit_queued(entries)
        .instrument(tracing::debug_span!("flush", count))
        .await;
    if flushed.is_ok() {
        tracing::debug!(count, "offline queue flushed into gossip");
        let detail = format!("{count} queued transactions handed to gossip");
        node.events().record(EventKind::TxFlushed, None, detail);
    }
    flushed.is_ok()
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
