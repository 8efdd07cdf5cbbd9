//! The queue preset's flow: node 0 alone takes transactions into its offline queue, then the
//! other nodes join it and it flushes the queue to them.

use std::time::{Duration, Instant};

use super::{
    Batch, Flow, LabError, POLL, bootstraps, keys, phase, rand_nonce, start_nodes, submit,
    wait_subscribed,
};
use crate::cluster::Cluster;
use crate::report::{QueueReport, Startup};
use crate::scenario::{Origins, Scenario};
use crate::settle::Listed;
use crate::summary::Measured;
use crate::traffic::Load;

/// When the other nodes were spawned, when node 0 left Offline, when its queue was empty.
struct Flush {
    joined: Instant,
    online_at: Option<Instant>,
    drained_at: Option<Instant>,
}

impl Flow<'_> {
    /// Node 0 alone queues; then the others join it and it flushes.
    pub(super) async fn queue(&self, count: usize) -> Result<Measured, LabError> {
        let base = self.start_alone().await?;
        let (mut batch, queued) = self.enqueue(&base, count).await;
        let flush = self.join(&base).await?;
        let queue = queue_report(queued, batch.outcome.seconds, &flush);
        progress!(
            self.started,
            "flushed in {} s",
            queue
                .flush_seconds
                .map_or("-".into(), |s| format!("{s:.3}"))
        );
        // Propagation of queued transactions counts from when node 0 could first send them.
        let t0 = flush.online_at.unwrap_or(flush.joined);
        for s in &mut batch.outcome.accepted {
            s.at = t0;
        }
        let keys = keys(&batch.outcome);
        let mut listed = Listed::default();
        let timeout = self.scenario.settle_timeout;
        let (settle_ms, lost) = self.settle(&mut listed, &keys, timeout, flush.joined).await;
        let mut measured = Measured {
            startup: Startup {
                // From the peers' spawn: node 0 was meant to stay Offline until then.
                online_ms: queue.online_after_ms,
                discovery_target_peers: self.scenario.discovery_goal(),
                ..Startup::default()
            },
            queue: Some(queue),
            ..Measured::default()
        };
        // The queue flow has no target rate: node 0 takes them as fast as it can.
        measured
            .phases
            .push(phase(0.0, &batch, keys.len(), lost.len(), settle_ms));
        measured.absorb(batch.outcome, lost);
        measured.listed = listed;
        Ok(measured)
    }

    /// Starts node 0 with no peer to bootstrap from; waits until it is ready and subscribed.
    /// Returns its HTTP base URL.
    async fn start_alone(&self) -> Result<String, LabError> {
        let cluster = self.cluster;
        cluster.start(0, &[]).await?;
        let base = cluster.http(0).unwrap_or_default();
        let deadline = Instant::now() + self.scenario.online_timeout;
        while !cluster.api().ready(&base).await {
            if Instant::now() > deadline {
                return Err(LabError::Queue("node 0 never became ready".into()));
            }
            tokio::time::sleep(POLL).await;
        }
        wait_subscribed(cluster, self.seen, 0..1).await?;
        cluster.mark().await;
        Ok(base)
    }

    /// Submits `count` transactions to node 0 (at `base`) while it is alone; also returns
    /// how many of them it queued.
    async fn enqueue(&self, base: &str, count: usize) -> (Batch, usize) {
        let t = &self.scenario.traffic;
        let load = Load {
            first_index: 0,
            count,
            size: t.size,
            rate: 0.0,
            concurrency: t.concurrency,
            origins: Origins::Node(0),
            seed: t.seed,
        };
        progress!(self.started, "node 0 is alone; queueing {count} tx");
        let batch = submit(self.cluster, load, rand_nonce()).await;
        let queued = batch.outcome.accepted.iter().filter(|s| s.queued).count();
        let status = self.cluster.api().status(base).await.ok();
        progress!(
            self.started,
            "{queued} queued in {:.2} s (queue_size {}); starting the other nodes",
            batch.outcome.seconds,
            status.as_ref().map_or(0, |s| s.queue_size)
        );
        (batch, queued)
    }

    /// Starts the other nodes (they bootstrap from node 0) while watching node 0 flush.
    async fn join(&self, base: &str) -> Result<Flush, LabError> {
        let (cluster, scenario) = (self.cluster, self.scenario);
        let boot = bootstraps(cluster, scenario);
        let joined = Instant::now();
        let starting = start_nodes(cluster, 1..scenario.nodes, &boot);
        let (started_rest, (online_at, drained_at)) =
            tokio::join!(starting, watch_flush(cluster, base, scenario));
        started_rest?;
        Ok(Flush {
            joined,
            online_at,
            drained_at,
        })
    }
}

/// When node 0 left Offline and when its queue was empty, polled every few ms.
async fn watch_flush(
    cluster: &Cluster,
    base: &str,
    scenario: &Scenario,
) -> (Option<Instant>, Option<Instant>) {
    let deadline = Instant::now() + scenario.online_timeout + scenario.settle_timeout;
    let (mut online, mut drained) = (None, None);
    while Instant::now() < deadline && drained.is_none() {
        if let Ok(s) = cluster.api().status(base).await {
            if online.is_none() && s.state != "offline" {
                online = Some(Instant::now());
            }
            if online.is_some() && s.queue_size == 0 {
                drained = Some(Instant::now());
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (online, drained)
}

/// The queue flow's figures.
fn queue_report(queued: usize, enqueue_seconds: f64, flush: &Flush) -> QueueReport {
    let flush_seconds = match (flush.online_at, flush.drained_at) {
        (Some(a), Some(b)) => Some(b.saturating_duration_since(a).as_secs_f64()),
        _ => None,
    };
    QueueReport {
        queued,
        enqueue_seconds,
        online_after_ms: flush
            .online_at
            .map(|a| (a - flush.joined).as_secs_f64() * 1000.0),
        flush_seconds,
        flush_tps: flush_seconds.map(|s| queued as f64 / s.max(1e-3)),
    }
}
