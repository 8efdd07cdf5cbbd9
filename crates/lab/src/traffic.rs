//! Submitting transactions: unique bodies, a target rate (or as fast as the concurrency
//! allows), origins chosen among the nodes able to answer.

use std::time::{Duration, Instant};

use futures::StreamExt;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::api::{Submitted, TxKey};
use crate::cluster::Cluster;
use crate::scenario::Origins;

/// Refusal texts kept for the report.
const MAX_REFUSALS_KEPT: usize = 5;

/// One accepted transaction: when it was submitted, to whom.
#[derive(Debug, Clone, Copy)]
pub struct Submission {
    pub key: TxKey,
    pub at: Instant,
    pub node: usize,
    pub queued: bool,
    /// From the `POST` to its answer: what a submitter waits for its acknowledgement.
    pub answered_in: Duration,
}

#[derive(Debug, Default)]
pub struct PhaseOutcome {
    pub accepted: Vec<Submission>,
    pub submitted: usize,
    pub refused: usize,
    pub refusals: Vec<String>,
    pub seconds: f64,
}

/// What one phase submits.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Numbers the bodies; phases use disjoint ranges so every body is unique.
    pub first_index: usize,
    pub count: usize,
    pub size: usize,
    /// tx/s; 0: as fast as `concurrency` allows.
    pub rate: f64,
    pub concurrency: usize,
    pub origins: Origins,
    pub seed: u64,
}

/// A unique body of exactly `size` bytes (at least the prefix): `peer-lab NONCE INDEX ` and
/// seeded filler.
pub fn body(nonce: u64, index: usize, size: usize, seed: u64) -> Vec<u8> {
    let mut body = format!("peer-lab {nonce:016x} {index:010} ").into_bytes();
    let mut rng =
        ChaCha8Rng::seed_from_u64(seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    const FILLER: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    while body.len() < size {
        body.push(FILLER[rng.random_range(0..FILLER.len())]);
    }
    body
}

/// The node a submission goes to: `pick` (random) walks to the next node able to answer.
pub fn origin(cluster: &Cluster, origins: Origins, pick: usize) -> Option<usize> {
    match origins {
        Origins::Node(i) => cluster.is_responsive(i).then_some(i),
        Origins::Random => {
            let n = cluster.len();
            (0..n)
                .map(|k| (pick + k) % n)
                .find(|i| cluster.is_responsive(*i))
        }
    }
}

/// Submits `load`, at most `concurrency` in flight, each at its slot when a rate is set.
pub async fn submit(cluster: &Cluster, load: Load, nonce: u64) -> PhaseOutcome {
    let mut rng = ChaCha8Rng::seed_from_u64(load.seed.wrapping_add(load.first_index as u64));
    let picks: Vec<usize> = (0..load.count)
        .map(|_| rng.random_range(0..cluster.len()))
        .collect();
    let start = tokio::time::Instant::now();
    let started = Instant::now();
    let attempts = futures::stream::iter(0..load.count).map(|k| {
        let pick = picks[k];
        async move {
            if load.rate > 0.0 {
                let slot = Duration::from_secs_f64(k as f64 / load.rate);
                tokio::time::sleep_until(start + slot).await;
            }
            let index = load.first_index + k;
            let Some(node) = origin(cluster, load.origins, pick) else {
                let error = "no node able to answer".to_owned();
                return Err(Submitted::Refused { code: 0, error });
            };
            let Some(base) = cluster.http(node) else {
                let error = format!("node {node} has no address");
                return Err(Submitted::Refused { code: 0, error });
            };
            let at = Instant::now();
            match cluster
                .api()
                .submit(node, &base, body(nonce, index, load.size, load.seed))
                .await
            {
                Submitted::Accepted { key, queued } => Ok(Submission {
                    key,
                    at,
                    node,
                    queued,
                    answered_in: at.elapsed(),
                }),
                refused => Err(refused),
            }
        }
    });
    let mut answers = attempts.buffer_unordered(load.concurrency);
    let mut outcome = PhaseOutcome::default();
    while let Some(answer) = answers.next().await {
        outcome.submitted += 1;
        match answer {
            Ok(s) => outcome.accepted.push(s),
            Err(refused) => {
                outcome.refused += 1;
                if outcome.refusals.len() < MAX_REFUSALS_KEPT
                    && let Submitted::Refused { code, error } = refused
                {
                    outcome.refusals.push(format!("HTTP {code}: {error}"));
                }
            }
        }
    }
    outcome.seconds = started.elapsed().as_secs_f64();
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_unique_sized_and_reproducible() {
        let a = body(7, 1, 256, 1);
        assert_eq!(a.len(), 256);
        assert_eq!(a, body(7, 1, 256, 1));
        assert_ne!(a, body(7, 2, 256, 1));
        assert_ne!(a, body(8, 1, 256, 1));
        assert!(body(7, 1, 10, 1).starts_with(b"peer-lab "));
    }
}
