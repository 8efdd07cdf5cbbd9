//! The network model: how long a message takes from one node to another, whether it arrives.
//!
//! A link's base latency is a pure function of the seed and its two ends (a hash), so it is
//! the same in both directions and for every message without storing n^2 values; per message it
//! is stretched by up to `jitter` and a body adds `size / bandwidth`. Each message is lost with
//! probability `loss`, and messages between partition groups never arrive. The random draws
//! come from the model's own RNG stream, so they do not depend on what the nodes draw.

use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::scenario::{LatencySpec, NetworkSpec};

/// What happens to one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transit {
    /// It arrives after this long.
    Arrives(Duration),
    /// Dropped by the link (random loss).
    Lost,
    /// The ends are in different partition groups.
    Blocked,
}

#[derive(Debug)]
enum LatencyModel {
    Fixed(u64),
    Uniform {
        min: u64,
        max: u64,
    },
    Regions {
        of_node: Vec<u8>,
        matrix: Vec<Vec<u64>>,
        spread: f64,
    },
}

#[derive(Debug)]
pub struct Network {
    latency: LatencyModel,
    jitter: f64,
    loss: f64,
    bandwidth: u64,
    /// Seeds the per-link hash.
    salt: u64,
    /// Partition group per node; empty when the network is whole.
    groups: Vec<u16>,
    rng: ChaCha8Rng,
    /// Messages lost so far, and blocked by a partition.
    pub lost: u64,
    pub blocked: u64,
}

/// SplitMix64's finaliser: a well-mixed 64-bit hash of `z`.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Network {
    /// The model of `spec` for `nodes` nodes; regions are assigned with `rng`, which the model
    /// then keeps for loss and jitter.
    pub fn new(spec: &NetworkSpec, nodes: usize, mut rng: ChaCha8Rng) -> Self {
        let latency = match &spec.latency {
            LatencySpec::Fixed(d) => LatencyModel::Fixed(d.ms()),
            LatencySpec::Uniform { min, max } => LatencyModel::Uniform {
                min: min.ms(),
                max: max.ms(),
            },
            LatencySpec::Regions {
                weights,
                matrix,
                spread,
                ..
            } => {
                let total: f64 = weights.iter().sum();
                let of_node = (0..nodes)
                    .map(|_| {
                        let mut x = rng.random::<f64>() * total;
                        let mut region = weights.len() - 1;
                        for (i, w) in weights.iter().enumerate() {
                            if x < *w {
                                region = i;
                                break;
                            }
                            x -= w;
                        }
                        region as u8
                    })
                    .collect();
                LatencyModel::Regions {
                    of_node,
                    matrix: matrix
                        .iter()
                        .map(|row| row.iter().map(|d| d.ms()).collect())
                        .collect(),
                    spread: *spread,
                }
            }
        };
        Self {
            latency,
            jitter: spec.jitter,
            loss: spec.loss,
            bandwidth: spec.bandwidth.max(1),
            salt: rng.random(),
            groups: Vec::new(),
            rng,
            lost: 0,
            blocked: 0,
        }
    }

    /// The base latency of the link between `a` and `b`, in ms (symmetric).
    pub fn link_ms(&self, a: usize, b: usize) -> u64 {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let key = mix(self.salt ^ mix(((lo as u64) << 32) | hi as u64));
        match &self.latency {
            LatencyModel::Fixed(ms) => *ms,
            LatencyModel::Uniform { min, max } => min + key % (max - min + 1),
            LatencyModel::Regions {
                of_node,
                matrix,
                spread,
            } => {
                let base = matrix[of_node[a] as usize][of_node[b] as usize] as f64;
                let unit = (key >> 11) as f64 / (1u64 << 53) as f64;
                (base * (1.0 + spread * (2.0 * unit - 1.0)))
                    .round()
                    .max(0.0) as u64
            }
        }
    }

    /// Time on the wire of `bytes` from `from` to `to`, or why they never arrive.
    pub fn transit(&mut self, from: usize, to: usize, bytes: usize) -> Transit {
        if !self.connected(from, to) {
            self.blocked += 1;
            return Transit::Blocked;
        }
        if self.loss > 0.0 && self.rng.random_bool(self.loss) {
            self.lost += 1;
            return Transit::Lost;
        }
        let mut latency = self.link_ms(from, to);
        if self.jitter > 0.0 {
            let stretch = self.rng.random::<f64>() * self.jitter;
            latency += (latency as f64 * stretch).round() as u64;
        }
        let serialisation = (bytes as u64 * 1000 + self.bandwidth / 2) / self.bandwidth;
        Transit::Arrives(Duration::from_millis(latency + serialisation))
    }

    /// The worst case of a message's time on the wire (for deadlines of the daemon's calls).
    pub fn max_transit(&self, bytes: usize) -> Duration {
        let worst = match &self.latency {
            LatencyModel::Fixed(ms) => *ms,
            LatencyModel::Uniform { max, .. } => *max,
            LatencyModel::Regions { matrix, spread, .. } => {
                let top = matrix.iter().flatten().copied().max().unwrap_or(0) as f64;
                (top * (1.0 + spread)).ceil() as u64
            }
        };
        let worst = worst + (worst as f64 * self.jitter).ceil() as u64;
        Duration::from_millis(worst + bytes as u64 * 1000 / self.bandwidth + 1)
    }

    /// Splits the nodes into partition groups (one group id per node).
    pub fn partition(&mut self, groups: Vec<u16>) {
        self.groups = groups;
    }

    pub fn heal(&mut self) {
        self.groups.clear();
    }

    pub fn is_partitioned(&self) -> bool {
        !self.groups.is_empty()
    }

    /// Whether messages between `a` and `b` can get through (ignoring random loss).
    pub fn connected(&self, a: usize, b: usize) -> bool {
        self.groups.is_empty() || self.groups[a] == self.groups[b]
    }
}

/// `d` in whole milliseconds (saturating).
pub fn millis(d: Duration) -> u64 {
    ms(d)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;
    use crate::scenario::Dur;

    fn spec(latency: LatencySpec, loss: f64) -> NetworkSpec {
        NetworkSpec {
            latency,
            jitter: 0.0,
            loss,
            bandwidth: 1_000_000,
        }
    }

    fn uniform(min: u64, max: u64) -> LatencySpec {
        LatencySpec::Uniform {
            min: Dur(Duration::from_millis(min)),
            max: Dur(Duration::from_millis(max)),
        }
    }

    fn net(spec: &NetworkSpec, nodes: usize) -> Network {
        Network::new(spec, nodes, ChaCha8Rng::seed_from_u64(3))
    }

    #[test]
    fn loss_rate_matches_the_configuration() {
        let mut n = net(&spec(uniform(20, 200), 0.01), 100);
        let trials = 200_000;
        let lost = (0..trials)
            .filter(|i| n.transit(i % 100, (i * 7 + 1) % 100, 100) == Transit::Lost)
            .count();
        let rate = lost as f64 / trials as f64;
        // 1% of 200k: sd ~ 44 messages (0.022%); 5 sd either side.
        assert!((0.0089..=0.0111).contains(&rate), "loss rate {rate}");
        assert_eq!(n.lost, lost as u64);
        let mut none = net(&spec(uniform(20, 200), 0.0), 100);
        assert!((0..10_000).all(|i| matches!(none.transit(i % 100, 5, 10), Transit::Arrives(_))));
    }

    #[test]
    fn partitions_block_between_groups_only_until_healed() {
        let mut n = net(
            &spec(LatencySpec::Fixed(Dur(Duration::from_millis(10))), 0.0),
            4,
        );
        n.partition(vec![0, 0, 1, 1]);
        assert!(matches!(n.transit(0, 1, 10), Transit::Arrives(_)));
        assert!(matches!(n.transit(3, 2, 10), Transit::Arrives(_)));
        assert_eq!(n.transit(0, 2, 10), Transit::Blocked);
        assert_eq!(n.transit(3, 1, 10), Transit::Blocked);
        assert_eq!(n.blocked, 2);
        n.heal();
        assert!(matches!(n.transit(0, 2, 10), Transit::Arrives(_)));
    }

    #[test]
    fn link_latency_is_symmetric_stable_and_in_range() {
        let n = net(&spec(uniform(20, 200), 0.0), 1000);
        let mut seen = std::collections::BTreeSet::new();
        for a in 0..200 {
            for b in 0..50 {
                let l = n.link_ms(a, b);
                assert!((20..=200).contains(&l));
                assert_eq!(l, n.link_ms(b, a));
                seen.insert(l);
            }
        }
        assert!(
            seen.len() > 150,
            "latencies spread over the range: {}",
            seen.len()
        );
    }

    #[test]
    fn bandwidth_adds_size_over_rate() {
        let mut n = net(
            &spec(LatencySpec::Fixed(Dur(Duration::from_millis(10))), 0.0),
            2,
        );
        assert_eq!(
            n.transit(0, 1, 0),
            Transit::Arrives(Duration::from_millis(10))
        );
        // 1 MB/s: 500 KB take 500 ms more.
        assert_eq!(
            n.transit(0, 1, 500_000),
            Transit::Arrives(Duration::from_millis(510))
        );
    }

    #[test]
    fn regions_use_the_matrix() {
        let d = |ms| Dur(Duration::from_millis(ms));
        let latency = LatencySpec::Regions {
            names: vec!["eu".into(), "us".into()],
            weights: vec![1.0, 0.0],
            matrix: vec![vec![d(10), d(100)], vec![d(100), d(20)]],
            spread: 0.0,
        };
        let n = net(&spec(latency, 0.0), 10);
        assert_eq!(n.link_ms(1, 2), 10, "weight 0: everyone in eu");
    }
}
