//! Hands the offline queue to gossip once the node has a healthy peer: due transactions,
//! oldest first, in batches; confirmations noted by the body servers are applied in one
//! transaction per tick. The queue itself (SQLite, what is due, dead letters) is
//! [`crate::store::queue`]'s; this loop only moves entries from it into the node.

use std::time::Duration;

use sorcha_peer_core::model::{NodeState, TxHash};
use tokio::sync::watch;

use crate::clock::now;
use crate::handle::NodeHandle;
use crate::store::queue::{SharedQueue, with_queue};
use crate::telemetry::EventLog;
use crate::telemetry::events::EventKind;

/// Entries handed to gossip per flush step: large enough to flush tens of thousands per
/// second, small enough that the actor answers other requests in between.
const FLUSH_BATCH: usize = 512;
/// How often the flusher looks for due entries while the node has peers.
const FLUSH_TICK: Duration = Duration::from_millis(200);

/// Hands due transactions to gossip whenever the node has a healthy peer, until `stop`.
pub async fn flusher(
    queue: SharedQueue,
    node: NodeHandle,
    mut state: watch::Receiver<NodeState>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let confirmed = queue.take_confirmed();
        if !confirmed.is_empty()
            && let Err(e) = with_queue(&queue, move |q| q.confirm_many(&confirmed)).await
        {
            tracing::warn!(error = %e, "offline queue confirmation failed");
        }
        if *state.borrow() != NodeState::Offline {
            let taken = with_queue(&queue, |q| {
                let due = q.take_due(now(), FLUSH_BATCH)?;
                Ok((due, q.take_dead_lettered()))
            })
            .await;
            let due = taken.map(|(due, gave_up)| {
                report_dead_letters(node.events(), gave_up);
                due
            });
            match due {
                Ok(due) if !due.is_empty() => {
                    let count = due.len();
                    for entry in due {
                        // Known to gossip already (submitted before a restart was not) is fine:
                        // its digests and the peer's pulls carry it on.
                        if node.submit(entry.body, entry.register_id).await.is_err() {
                            break; // Saturated or stopping: the entries stay queued.
                        }
                    }
                    node.metrics()
                        .transaction_queue_size
                        .record(queue.pending() as i64, &[]);
                    tracing::info!(count, "offline queue flushed into gossip");
                    let detail = format!("{count} queued transactions handed to gossip");
                    node.events().record(EventKind::TxFlushed, None, detail);
                    continue;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "offline queue flush failed"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(FLUSH_TICK) => {}
            _ = state.changed() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Transactions the queue gave up on, in the event log.
fn report_dead_letters(events: &EventLog, gave_up: Vec<(TxHash, String)>) {
    for (hash, reason) in gave_up {
        let detail = format!("{hash}: {reason}");
        events.record(EventKind::TxDeadLettered, None, detail);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sorcha_peer_core::model::Timestamp;

    use super::*;
    use crate::store::queue::OfflineQueue;
    use crate::telemetry::Metrics;
    use crate::telemetry::events::Filter;

    #[test]
    fn a_transaction_the_queue_gives_up_on_is_logged() {
        let dir = tempfile::tempdir().unwrap();
        let mut queue = OfflineQueue::open_in(dir.path(), 10, 1, Duration::from_secs(1)).unwrap();
        let hash = TxHash::of(b"nobody pulls me");
        queue
            .push(hash, b"nobody pulls me", None, Timestamp::from_millis(0))
            .unwrap();
        assert_eq!(
            queue.take_due(Timestamp::from_millis(0), 10).unwrap().len(),
            1
        );
        assert!(
            queue
                .take_due(Timestamp::from_millis(60_000), 10)
                .unwrap()
                .is_empty()
        );
        let log = EventLog::new(100, &Metrics::new().unwrap());
        report_dead_letters(&log, queue.take_dead_lettered());
        let dead = log.query(
            &Filter {
                kinds: vec![EventKind::TxDeadLettered],
                ..Default::default()
            },
            10,
        );
        assert_eq!(dead.len(), 1);
        assert!(dead[0].detail.starts_with(&hash.to_string()), "{dead:?}");
        assert!(dead[0].detail.contains("after 1 attempts"), "{dead:?}");
    }
}
