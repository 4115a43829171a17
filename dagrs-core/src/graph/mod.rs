//! The asset graph: assets indexed by key, their edges, and the algorithms over them
//! (topological order, cycles, ancestors, descendants, selections). Kept apart from the
//! executor; every algorithm is iterative, so 10,000-deep chains are fine.

pub(crate) mod selection;

use std::collections::{HashMap, VecDeque};

use crate::asset::AssetSpec;
use crate::key::AssetKey;

/// Assets with their index by key, their edges and a topological order: what selections
/// and run plans are computed on.
pub(crate) struct AssetGraph {
    /// The assets, in registration order; an asset's index is its position here.
    pub(crate) assets: Vec<AssetSpec>,
    /// Each key's index (the first asset registered under it).
    pub(crate) index: HashMap<AssetKey, usize>,
    /// Dependencies between indices.
    pub(crate) edges: Graph,
    /// Every index, dependencies first.
    pub(crate) order: Vec<usize>,
}

impl AssetGraph {
    /// The asset with key `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&AssetSpec> {
        self.index.get(key).map(|&i| &self.assets[i])
    }

    /// The keys of every asset, for "did you mean" advice.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &str> + '_ {
        self.assets.iter().map(|spec| spec.key.as_str())
    }
}

/// Adjacency lists of the asset graph; node `i` is the `i`-th asset of the definitions.
#[derive(Debug, Clone, Default)]
pub(crate) struct Graph {
    /// `upstream[i]`: the assets `i` depends on.
    pub(crate) upstream: Vec<Vec<usize>>,
    /// `downstream[i]`: the assets that depend on `i`.
    pub(crate) downstream: Vec<Vec<usize>>,
}

impl Graph {
    /// A graph of `n` nodes from `(dependency, dependent)` edges.
    pub(crate) fn new(n: usize, edges: impl IntoIterator<Item = (usize, usize)>) -> Self {
        let mut graph = Graph {
            upstream: vec![Vec::new(); n],
            downstream: vec![Vec::new(); n],
        };
        for (from, to) in edges {
            graph.upstream[to].push(from);
            graph.downstream[from].push(to);
        }
        graph
    }

    pub(crate) fn len(&self) -> usize {
        self.upstream.len()
    }

    /// A topological order (dependencies first, ties by index), or `None` if there is a cycle.
    pub(crate) fn topo_order(&self) -> Option<Vec<usize>> {
        let mut indegree: Vec<usize> = self.upstream.iter().map(Vec::len).collect();
        let mut ready: VecDeque<usize> = (0..self.len()).filter(|&i| indegree[i] == 0).collect();
        let mut order = Vec::with_capacity(self.len());
        while let Some(node) = ready.pop_front() {
            order.push(node);
            for &next in &self.downstream[node] {
                indegree[next] -= 1;
                if indegree[next] == 0 {
                    ready.push_back(next);
                }
            }
        }
        (order.len() == self.len()).then_some(order)
    }

    /// One cycle through every strongly connected component that has one, each as a path
    /// whose first node is repeated at the end. Empty when the graph is acyclic.
    pub(crate) fn cycles(&self) -> Vec<Vec<usize>> {
        self.strongly_connected()
            .into_iter()
            .filter_map(|component| {
                let first = component[0];
                if component.len() == 1 && !self.downstream[first].contains(&first) {
                    return None;
                }
                Some(self.cycle_within(&component))
            })
            .collect()
    }

    /// A shortest cycle through the smallest node of `component` that stays inside it.
    fn cycle_within(&self, component: &[usize]) -> Vec<usize> {
        let start = *component.iter().min().expect("components are non-empty");
        let mut inside = vec![false; self.len()];
        for &node in component {
            inside[node] = true;
        }
        let mut parent = vec![usize::MAX; self.len()];
        let mut queue = VecDeque::from([start]);
        while let Some(node) = queue.pop_front() {
            for &next in &self.downstream[node] {
                if next == start {
                    let mut chain = Vec::new();
                    let mut at = node;
                    while at != start {
                        chain.push(at);
                        at = parent[at];
                    }
                    chain.reverse();
                    let mut path = vec![start];
                    path.extend(chain);
                    path.push(start);
                    return path;
                }
                if inside[next] && parent[next] == usize::MAX {
                    parent[next] = node;
                    queue.push_back(next);
                }
            }
        }
        unreachable!("a strongly connected component with an edge has a cycle")
    }

    /// Tarjan's strongly connected components, iteratively.
    fn strongly_connected(&self) -> Vec<Vec<usize>> {
        const UNSEEN: usize = usize::MAX;
        let n = self.len();
        let mut index = vec![UNSEEN; n];
        let mut low = vec![0; n];
        let mut on_stack = vec![false; n];
        let mut stack = Vec::new();
        let mut components = Vec::new();
        let mut next_index = 0;
        for root in 0..n {
            if index[root] != UNSEEN {
                continue;
            }
            let mut work: Vec<(usize, usize)> = vec![(root, 0)];
            while let Some(&mut (node, ref mut child)) = work.last_mut() {
                if *child == 0 && index[node] == UNSEEN {
                    index[node] = next_index;
                    low[node] = next_index;
                    next_index += 1;
                    stack.push(node);
                    on_stack[node] = true;
                }
                if let Some(&next) = self.downstream[node].get(*child) {
                    *child += 1;
                    if index[next] == UNSEEN {
                        work.push((next, 0));
                    } else if on_stack[next] {
                        low[node] = low[node].min(index[next]);
                    }
                    continue;
                }
                work.pop();
                if let Some(&(parent, _)) = work.last() {
                    low[parent] = low[parent].min(low[node]);
                }
                if low[node] == index[node] {
                    let mut component = Vec::new();
                    loop {
                        let member = stack.pop().expect("the node is on the stack");
                        on_stack[member] = false;
                        component.push(member);
                        if member == node {
                            break;
                        }
                    }
                    components.push(component);
                }
            }
        }
        components
    }

    /// The nodes reachable from `start` along `edges` within `depth` steps (all when `None`),
    /// `start` included.
    fn reach(edges: &[Vec<usize>], start: usize, depth: Option<usize>, out: &mut [bool]) {
        let mut frontier = vec![start];
        out[start] = true;
        let mut level = 0;
        while !frontier.is_empty() && depth.is_none_or(|d| level < d) {
            let mut next_frontier = Vec::new();
            for node in frontier {
                for &next in &edges[node] {
                    if !out[next] {
                        out[next] = true;
                        next_frontier.push(next);
                    }
                }
            }
            frontier = next_frontier;
            level += 1;
        }
    }

    /// Marks `start` and its ancestors up to `depth` levels.
    pub(crate) fn mark_ancestors(&self, start: usize, depth: Option<usize>, out: &mut [bool]) {
        Self::reach(&self.upstream, start, depth, out);
    }

    /// Marks `start` and its descendants up to `depth` levels.
    pub(crate) fn mark_descendants(&self, start: usize, depth: Option<usize>, out: &mut [bool]) {
        Self::reach(&self.downstream, start, depth, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topo_order_puts_dependencies_first() {
        let g = Graph::new(4, [(2, 0), (0, 1), (3, 1)]);
        let order = g.topo_order().unwrap();
        let pos = |n| order.iter().position(|&x| x == n).unwrap();
        assert!(pos(2) < pos(0) && pos(0) < pos(1) && pos(3) < pos(1));
    }

    #[test]
    fn finds_every_cycle_and_self_loop() {
        // 0 -> 1 -> 2 -> 0, 3 -> 4 -> 3, 5 -> 5, 6 acyclic.
        let g = Graph::new(7, [(0, 1), (1, 2), (2, 0), (3, 4), (4, 3), (5, 5), (2, 6)]);
        assert!(g.topo_order().is_none());
        let mut cycles = g.cycles();
        cycles.sort();
        assert_eq!(cycles, vec![vec![0, 1, 2, 0], vec![3, 4, 3], vec![5, 5]]);
    }

    #[test]
    fn deep_chains_do_not_overflow() {
        let n = 100_000;
        let g = Graph::new(n, (1..n).map(|i| (i - 1, i)));
        assert_eq!(g.topo_order().unwrap().len(), n);
        assert!(g.cycles().is_empty());
    }

    #[test]
    fn reach_respects_depth() {
        let g = Graph::new(4, [(0, 1), (1, 2), (2, 3)]);
        let mut marks = vec![false; 4];
        g.mark_descendants(0, Some(2), &mut marks);
        assert_eq!(marks, [true, true, true, false]);
        let mut marks = vec![false; 4];
        g.mark_ancestors(3, None, &mut marks);
        assert_eq!(marks, [true, true, true, true]);
    }
}
