//! A left-to-right layered layout of the asset graph, computed on the server: each asset's
//! column is the length of the longest path from a source to it; within a column, nodes are
//! ordered by the mean row of their upstream nodes (one sweep), so edges mostly run
//! straight. Collapsed groups become one node each. O(assets + edges), plus a sort per
//! column.

use std::collections::{BTreeSet, HashMap};

use crate::definitions::Definitions;

/// Width of a node.
pub(crate) const NODE_W: f64 = 190.0;
/// Height of a node.
pub(crate) const NODE_H: f64 = 30.0;
const GAP_X: f64 = 70.0;
const GAP_Y: f64 = 12.0;
const MARGIN: f64 = 16.0;

/// A node: an asset, or a collapsed group.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    /// The asset key, or the group's name.
    pub(crate) id: String,
    /// Whether it stands for a collapsed group.
    pub(crate) group: bool,
    /// Members (1 for an asset).
    pub(crate) size: usize,
    /// Its column.
    pub(crate) layer: usize,
    /// Its top-left corner.
    pub(crate) x: f64,
    /// Its top-left corner.
    pub(crate) y: f64,
}

/// The layout: nodes, edges between node indexes, and the size of the drawing.
#[derive(Debug, Clone, Default)]
pub(crate) struct Layout {
    pub(crate) nodes: Vec<Node>,
    pub(crate) edges: Vec<(usize, usize)>,
    pub(crate) width: f64,
    pub(crate) height: f64,
}

/// Lays out the assets of `defs` that `keep` keeps, with the groups in `collapsed` folded
/// into one node each.
pub(crate) fn layout(
    defs: &Definitions,
    collapsed: &BTreeSet<String>,
    keep: impl Fn(&str) -> bool,
) -> Layout {
    // Columns of every asset: `defs.assets()` lists dependencies first.
    let mut layer_of: HashMap<&str, usize> = HashMap::new();
    for spec in defs.assets() {
        let layer = spec
            .deps()
            .iter()
            .filter_map(|d| layer_of.get(d.as_str()))
            .map(|l| l + 1)
            .max()
            .unwrap_or(0);
        layer_of.insert(spec.key().as_str(), layer);
    }
    // Nodes: kept assets outside collapsed groups, and one node per collapsed group (in the
    // column of its earliest member).
    let mut nodes: Vec<Node> = Vec::new();
    let mut node_of: HashMap<&str, usize> = HashMap::new();
    let mut group_node: HashMap<&str, usize> = HashMap::new();
    for spec in defs.assets() {
        let key = spec.key().as_str();
        if !keep(key) {
            continue;
        }
        let layer = layer_of[key];
        match spec.group_name().filter(|g| collapsed.contains(*g)) {
            Some(group) => {
                let index = *group_node.entry(group).or_insert_with(|| {
                    nodes.push(Node {
                        id: group.to_owned(),
                        group: true,
                        size: 0,
                        layer,
                        x: 0.0,
                        y: 0.0,
                    });
                    nodes.len() - 1
                });
                let node = &mut nodes[index];
                node.size += 1;
                node.layer = node.layer.min(layer);
                node_of.insert(key, index);
            }
            None => {
                nodes.push(Node {
                    id: key.to_owned(),
                    group: false,
                    size: 1,
                    layer,
                    x: 0.0,
                    y: 0.0,
                });
                node_of.insert(key, nodes.len() - 1);
            }
        }
    }
    let mut edges: BTreeSet<(usize, usize)> = BTreeSet::new();
    for spec in defs.assets() {
        let Some(&to) = node_of.get(spec.key().as_str()) else {
            continue;
        };
        for dep in spec.deps() {
            if let Some(&from) = node_of.get(dep.as_str()) {
                if from != to {
                    edges.insert((from, to));
                }
            }
        }
    }
    // Compact the columns (filtering may leave empty ones), then order each column by the
    // mean row of its upstream nodes.
    let used: BTreeSet<usize> = nodes.iter().map(|n| n.layer).collect();
    let rank: HashMap<usize, usize> = used.iter().enumerate().map(|(i, l)| (*l, i)).collect();
    for node in &mut nodes {
        node.layer = rank[&node.layer];
    }
    let mut upstream: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for &(from, to) in &edges {
        upstream[to].push(from);
    }
    let mut columns: Vec<Vec<usize>> = vec![Vec::new(); used.len()];
    for (i, node) in nodes.iter().enumerate() {
        columns[node.layer].push(i);
    }
    let mut row = vec![0.0_f64; nodes.len()];
    for column in &mut columns {
        let weight = |i: usize| -> f64 {
            let ups: Vec<f64> = upstream[i]
                .iter()
                .filter(|u| nodes[**u].layer < nodes[i].layer)
                .map(|u| row[*u])
                .collect();
            if ups.is_empty() {
                f64::MAX
            } else {
                ups.iter().sum::<f64>() / ups.len() as f64
            }
        };
        let mut keyed: Vec<(f64, usize)> = column.iter().map(|&i| (weight(i), i)).collect();
        keyed.sort_by(|a, b| {
            a.0.total_cmp(&b.0)
                .then_with(|| nodes[a.1].id.cmp(&nodes[b.1].id))
        });
        *column = keyed.into_iter().map(|(_, i)| i).collect();
        for (r, &i) in column.iter().enumerate() {
            row[i] = r as f64;
        }
    }
    let tallest = columns.iter().map(Vec::len).max().unwrap_or(0);
    for column in &columns {
        // Short columns are centred against the tallest one.
        let offset = (tallest - column.len()) as f64 / 2.0;
        for (r, &i) in column.iter().enumerate() {
            let node = &mut nodes[i];
            node.x = MARGIN + node.layer as f64 * (NODE_W + GAP_X);
            node.y = MARGIN + (r as f64 + offset) * (NODE_H + GAP_Y);
        }
    }
    Layout {
        width: MARGIN * 2.0 + columns.len() as f64 * (NODE_W + GAP_X) - GAP_X,
        height: MARGIN * 2.0 + tallest as f64 * (NODE_H + GAP_Y),
        nodes,
        edges: edges.into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::asset::AssetSpec;

    fn spec(key: &str, deps: &[&str], group: &str) -> AssetSpec {
        let mut spec = AssetSpec::new(key, |_| async { Ok(()) }).group(group);
        for d in deps {
            spec = spec.dep(*d);
        }
        spec
    }

    #[test]
    fn columns_follow_the_longest_path_and_groups_fold() {
        let defs = Definitions::builder()
            .specs([
                spec("a", &[], "g1"),
                spec("b", &["a"], "g1"),
                spec("c", &["a", "b"], "g2"),
                spec("d", &[], "g2"),
            ])
            .build()
            .unwrap();
        let all = layout(&defs, &BTreeSet::new(), |_| true);
        let layer = |id: &str| all.nodes.iter().find(|n| n.id == id).unwrap().layer;
        assert_eq!(
            (layer("a"), layer("b"), layer("c"), layer("d")),
            (0, 1, 2, 0)
        );
        assert_eq!(all.edges.len(), 3);
        let folded = layout(&defs, &BTreeSet::from(["g1".to_owned()]), |_| true);
        let g1 = folded.nodes.iter().find(|n| n.id == "g1").unwrap();
        assert!(g1.group && g1.size == 2);
        assert_eq!(folded.nodes.len(), 3);
        assert_eq!(folded.edges.len(), 1, "g1 -> c, once");
    }
}
