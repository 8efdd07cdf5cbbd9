//! Waiting until every live node holds every transaction, and deciding what was lost.
//!
//! The SSE streams say when each node had each transaction. A node whose stream may have
//! missed some (it restarted, or its stream lagged) is asked for its hash list instead, at
//! most every [`LIST_EVERY`]; what a listing finds counts as held but not timed.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::api::TxKey;
use crate::cluster::Cluster;
use crate::observe::Observations;
use crate::report;

/// How often settling looks at the streams.
const POLL: Duration = Duration::from_millis(50);
/// How often a node with a gap in its stream is listed.
const LIST_EVERY: Duration = Duration::from_secs(1);

/// Hashes found by listing, per node: held, with no arrival time.
#[derive(Default)]
pub struct Listed {
    held: HashMap<usize, HashSet<TxKey>>,
    last: HashMap<usize, Instant>,
}

impl Listed {
    pub fn holds(&self, i: usize, key: &TxKey) -> bool {
        self.held.get(&i).is_some_and(|s| s.contains(key))
    }

    pub fn count(&self, i: usize) -> usize {
        self.held.get(&i).map_or(0, HashSet::len)
    }

    async fn refresh(&mut self, cluster: &Cluster, i: usize, force: bool) {
        let due = self.last.get(&i).is_none_or(|t| t.elapsed() >= LIST_EVERY);
        if !(force || due) {
            return;
        }
        self.last.insert(i, Instant::now());
        let Some(base) = cluster.http(i) else {
            return;
        };
        if let Ok(keys) = cluster.api().hashes(&base).await {
            self.held.entry(i).or_default().extend(keys);
        }
    }
}

/// Whether node `i` holds `key`, by its stream or a listing.
pub fn holds(seen: &Observations, listed: &Listed, i: usize, key: &TxKey) -> bool {
    seen.first_seen(i, key).is_some() || listed.holds(i, key)
}

fn missing(seen: &Observations, listed: &Listed, i: usize, keys: &[TxKey]) -> usize {
    if seen.missing(i, keys) == 0 {
        return 0;
    }
    keys.iter().filter(|k| !holds(seen, listed, i, k)).count()
}

/// Waits until every live node holds every one of `keys`, or `timeout`; returns how long it
/// took (`None`: not within the timeout).
pub async fn settle(
    cluster: &Cluster,
    seen: &Observations,
    listed: &mut Listed,
    keys: &[TxKey],
    timeout: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    // What each node still lacks; checked again only for what is still missing.
    let mut remaining: Vec<Vec<TxKey>> = vec![keys.to_vec(); cluster.len()];
    loop {
        let mut done = true;
        for i in (0..cluster.len()).filter(|i| cluster.is_live(*i)) {
            remaining[i].retain(|k| !holds(seen, listed, i, k));
            if remaining[i].is_empty() {
                continue;
            }
            if seen.gaps(i) > 0 || seen.overflow(i) > 0 || !seen.is_connected(i) {
                listed.refresh(cluster, i, false).await;
                remaining[i].retain(|k| !holds(seen, listed, i, k));
                if remaining[i].is_empty() {
                    continue;
                }
            }
            done = false;
        }
        if done {
            return Some(started.elapsed());
        }
        if started.elapsed() > timeout {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The transactions some live node still lacks, after one last listing of every node that
/// seems to lack something (its stream may simply have missed the event).
pub async fn lost(
    cluster: &Cluster,
    seen: &Observations,
    listed: &mut Listed,
    keys: &[TxKey],
) -> Vec<TxKey> {
    let live: Vec<usize> = (0..cluster.len()).filter(|i| cluster.is_live(*i)).collect();
    for &i in &live {
        if missing(seen, listed, i, keys) > 0 {
            listed.refresh(cluster, i, true).await;
        }
    }
    report::lost(keys, &live, |i, key| holds(seen, listed, i, key))
}

/// How many of `keys` node `i` lacks.
pub fn missing_on(seen: &Observations, listed: &Listed, i: usize, keys: &[TxKey]) -> usize {
    missing(seen, listed, i, keys)
}
