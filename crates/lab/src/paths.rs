//! The way each transaction went through the cluster, hop by hop, as the nodes tell it: each
//! delivery event names the node it came from, how (`pushed`, `pulled`, `repaired`) and the
//! hops travelled ([`crate::observe::Came`]), and is stamped by its node. A hop's time is the
//! receiver's stamp minus its sender's: what the link, both nodes' turns and any wait for a
//! pull added. The path to the node that made 90 % of a transaction's coverage says whether
//! a slow transaction took many hops or one slow one.

use std::collections::BTreeMap;

use sorcha_peer_core::gossip::Way;

use crate::observe::Came;
use crate::report::{PathFigures, Paths, distribution};

/// One node's delivery of one transaction: ms after submission, and how it came.
pub type Delivery = (Option<f64>, Option<Came>);

/// The figures of `per_tx`: for each transaction, each node's delivery; `nodes` in the
/// cluster.
pub fn paths(per_tx: &[Vec<Delivery>], nodes: usize) -> Paths {
    let mut hop_ms: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    let mut hops = Vec::new();
    let mut to_90 = Traced::default();
    for deliveries in per_tx {
        for (at, came) in deliveries {
            let Some(came) = came else { continue };
            if came.how != Way::Submitted {
                hops.push(f64::from(came.hops));
            }
            if let Some(ms) = hop_time(deliveries, *at, came) {
                hop_ms.entry(came.how.as_str()).or_default().push(ms);
            }
        }
        if let Some(node) = ninety(deliveries, nodes) {
            to_90.follow(deliveries, node);
        }
    }
    Paths {
        hop_ms: hop_ms
            .into_iter()
            .map(|(how, ms)| (how, distribution(ms)))
            .collect(),
        hops: distribution(hops),
        to_90: to_90.figures(),
    }
}

/// The receiver's arrival minus its sender's, when both are known (0 at the least: one
/// machine's clock, but the stamps are taken in different processes).
fn hop_time(deliveries: &[Delivery], at: Option<f64>, came: &Came) -> Option<f64> {
    let from = came.from?;
    let sent = deliveries.get(from)?.0?;
    Some((at? - sent).max(0.0))
}

/// The node whose arrival made `ceil(0.9 * nodes)` holders, if that many had it.
fn ninety(deliveries: &[Delivery], nodes: usize) -> Option<usize> {
    let needed = ((0.9 * nodes as f64).ceil() as usize).clamp(1, nodes.max(1));
    let mut timed: Vec<(f64, usize)> = deliveries
        .iter()
        .enumerate()
        .filter_map(|(i, (at, _))| Some(((*at)?, i)))
        .collect();
    if timed.len() < needed {
        return None;
    }
    timed.sort_by(|a, b| a.0.total_cmp(&b.0));
    Some(timed[needed - 1].1)
}

/// The paths followed so far.
#[derive(Default)]
struct Traced {
    hops: Vec<f64>,
    slowest: Vec<f64>,
    with_pull: usize,
}

impl Traced {
    /// Walks back from `node` to the transaction's origin, at most one step per delivery
    /// (a loop in what the nodes said ends the walk untraced).
    fn follow(&mut self, deliveries: &[Delivery], mut node: usize) {
        let (mut hops, mut slowest, mut pulled) = (0, 0.0_f64, false);
        for _ in 0..deliveries.len() {
            let Some(came) = deliveries[node].1 else {
                return;
            };
            if came.how == Way::Submitted {
                self.hops.push(f64::from(hops));
                self.slowest.push(slowest);
                self.with_pull += usize::from(pulled);
                return;
            }
            let Some(ms) = hop_time(deliveries, deliveries[node].0, &came) else {
                return;
            };
            hops += 1;
            slowest = slowest.max(ms);
            pulled |= matches!(came.how, Way::Pulled | Way::Repaired);
            let Some(from) = came.from else { return };
            node = from;
        }
    }

    fn figures(self) -> PathFigures {
        PathFigures {
            traced: self.hops.len(),
            hops: distribution(self.hops),
            slowest_hop_ms: distribution(self.slowest),
            with_pull: self.with_pull,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn came(from: Option<usize>, how: Way, hops: u32) -> Option<Came> {
        Some(Came { from, how, hops })
    }

    #[test]
    fn hops_are_timed_by_their_senders_and_the_ninety_percent_path_is_followed_home() {
        // 0 submitted; 1 pushed from 0; 2 pulled from 1; 3 pushed from 2; 4 from a node the
        // lab does not run.
        let tx = vec![
            (Some(2.0), came(None, Way::Submitted, 0)),
            (Some(3.0), came(Some(0), Way::Pushed, 1)),
            (Some(90.0), came(Some(1), Way::Pulled, 2)),
            (Some(91.5), came(Some(2), Way::Pushed, 3)),
            (Some(4.0), came(None, Way::Pushed, 1)),
        ];
        let p = paths(&[tx], 5);
        assert_eq!(p.hop_ms["pushed"].count, 2);
        assert_eq!(p.hop_ms["pushed"].max, Some(1.5));
        assert_eq!(p.hop_ms["pulled"].p50, Some(87.0));
        assert_eq!(p.hops.count, 4);
        assert_eq!(p.hops.max, Some(3.0));
        // 90 % of 5 is 5 nodes: the last, node 3, three hops from the origin.
        assert_eq!(p.to_90.traced, 1);
        assert_eq!(p.to_90.hops.p50, Some(3.0));
        assert_eq!(p.to_90.slowest_hop_ms.p50, Some(87.0));
        assert_eq!(p.to_90.with_pull, 1);
    }

    #[test]
    fn a_loop_or_a_missing_way_leaves_the_path_untraced() {
        let looped = vec![
            (Some(1.0), came(Some(1), Way::Pushed, 1)),
            (Some(2.0), came(Some(0), Way::Pushed, 1)),
        ];
        let unsaid = vec![
            (Some(1.0), None),
            (Some(2.0), came(Some(0), Way::Pushed, 1)),
        ];
        let p = paths(&[looped, unsaid], 2);
        assert_eq!(p.to_90.traced, 0);
        assert_eq!(p.hop_ms["pushed"].count, 3);
    }

    #[test]
    fn a_transaction_short_of_ninety_percent_has_no_path() {
        let tx = vec![(Some(1.0), came(None, Way::Submitted, 0)), (None, None)];
        assert_eq!(paths(&[tx], 2).to_90, PathFigures::default());
    }
}
