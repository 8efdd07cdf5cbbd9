//! Membership quality: the directed graph of active sets among live nodes.
//!
//! Gossip announces along active-set edges only, so a transaction submitted anywhere reaches
//! everyone (without anti-entropy's help) only if this graph is strongly connected.

use serde::Serialize;

/// Shape of the active graph at one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GraphQuality {
    /// Live nodes (the vertices).
    pub nodes: usize,
    /// Every live node reaches every other along active edges.
    pub strongly_connected: bool,
    /// Components when edge direction is ignored (1 = connected).
    pub weak_components: usize,
    /// How many live nodes hold each node in their active set.
    pub in_degree_min: usize,
    pub in_degree_mean: f64,
    pub in_degree_max: usize,
    pub out_degree_mean: f64,
}

/// `edges[v]` are the live nodes in `v`'s active set; `live[v]` says whether `v` is a vertex.
pub fn quality(live: &[bool], edges: &[Vec<u32>]) -> GraphQuality {
    let n = live.iter().filter(|l| **l).count();
    let mut in_degree = vec![0usize; live.len()];
    let mut reverse: Vec<Vec<u32>> = vec![Vec::new(); live.len()];
    let mut out_total = 0usize;
    for (v, targets) in edges.iter().enumerate() {
        for &w in targets {
            in_degree[w as usize] += 1;
            reverse[w as usize].push(v as u32);
            out_total += 1;
        }
    }
    let degrees: Vec<usize> = (0..live.len())
        .filter(|v| live[*v])
        .map(|v| in_degree[v])
        .collect();
    let first = live.iter().position(|l| *l);
    let strongly_connected = match first {
        None => true,
        Some(root) => reach(root, edges) == n && reach(root, &reverse) == n,
    };
    GraphQuality {
        nodes: n,
        strongly_connected,
        weak_components: weak_components(live, edges, &reverse),
        in_degree_min: degrees.iter().copied().min().unwrap_or(0),
        in_degree_mean: mean(degrees.iter().sum::<usize>(), n),
        in_degree_max: degrees.iter().copied().max().unwrap_or(0),
        out_degree_mean: mean(out_total, n),
    }
}

fn mean(total: usize, n: usize) -> f64 {
    if n == 0 { 0.0 } else { total as f64 / n as f64 }
}

/// Vertices reachable from `root` (itself included).
fn reach(root: usize, edges: &[Vec<u32>]) -> usize {
    let mut seen = vec![false; edges.len()];
    let mut stack = vec![root];
    seen[root] = true;
    let mut count = 0;
    while let Some(v) = stack.pop() {
        count += 1;
        for &w in &edges[v] {
            if !seen[w as usize] {
                seen[w as usize] = true;
                stack.push(w as usize);
            }
        }
    }
    count
}

fn weak_components(live: &[bool], edges: &[Vec<u32>], reverse: &[Vec<u32>]) -> usize {
    let mut seen = vec![false; live.len()];
    let mut components = 0;
    for root in 0..live.len() {
        if !live[root] || seen[root] {
            continue;
        }
        components += 1;
        seen[root] = true;
        let mut stack = vec![root];
        while let Some(v) = stack.pop() {
            for &w in edges[v].iter().chain(&reverse[v]) {
                if !seen[w as usize] {
                    seen[w as usize] = true;
                    stack.push(w as usize);
                }
            }
        }
    }
    components
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_is_strongly_connected_a_chain_is_not() {
        let live = vec![true; 4];
        let ring = vec![vec![1], vec![2], vec![3], vec![0]];
        let q = quality(&live, &ring);
        assert!(q.strongly_connected);
        assert_eq!(
            (q.weak_components, q.in_degree_min, q.in_degree_max),
            (1, 1, 1)
        );
        let chain = vec![vec![1], vec![2], vec![3], vec![]];
        let q = quality(&live, &chain);
        assert!(!q.strongly_connected);
        assert_eq!(q.weak_components, 1);
        let split = vec![vec![1], vec![0], vec![3], vec![2]];
        let q = quality(&live, &split);
        assert_eq!((q.strongly_connected, q.weak_components), (false, 2));
    }

    #[test]
    fn dead_nodes_are_not_vertices() {
        let live = vec![true, false, true];
        let q = quality(&live, &[vec![2], vec![], vec![0]]);
        assert!(q.strongly_connected);
        assert_eq!(q.nodes, 2);
        assert_eq!(q.in_degree_mean, 1.0);
    }
}
