//! Sets of partitions as ranges: what partition status, runs and backfills are stored and
//! computed as, so a million contiguous partitions are one range, not a million rows.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Sorted, disjoint, non-adjacent half-open ranges `[start, end)` of `i64`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RangeSet(Vec<(i64, i64)>);

impl RangeSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The set of one range `[start, end)` (empty when `end <= start`).
    pub fn span(start: i64, end: i64) -> Self {
        if end > start {
            RangeSet(vec![(start, end)])
        } else {
            RangeSet::default()
        }
    }

    /// The ranges, in order.
    pub fn ranges(&self) -> &[(i64, i64)] {
        &self.0
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `value` is in the set.
    pub fn contains(&self, value: i64) -> bool {
        let i = self.0.partition_point(|&(_, end)| end <= value);
        self.0.get(i).is_some_and(|&(start, _)| start <= value)
    }

    /// Whether every value of `other` is in the set.
    pub fn covers(&self, other: &RangeSet) -> bool {
        other.difference(self).is_empty()
    }

    /// Every value in either set.
    pub fn union(&self, other: &RangeSet) -> RangeSet {
        let mut all: Vec<(i64, i64)> = self.0.iter().chain(&other.0).copied().collect();
        all.sort_unstable();
        let mut merged: Vec<(i64, i64)> = Vec::with_capacity(all.len());
        for (start, end) in all {
            match merged.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        RangeSet(merged)
    }

    /// The values of the set that are not in `other`.
    pub fn difference(&self, other: &RangeSet) -> RangeSet {
        let mut out = Vec::new();
        let mut j = 0;
        for &(mut start, end) in &self.0 {
            while j < other.0.len() && other.0[j].1 <= start {
                j += 1;
            }
            let mut k = j;
            while start < end {
                match other.0.get(k) {
                    Some(&(cut_start, cut_end)) if cut_start < end => {
                        if cut_start > start {
                            out.push((start, cut_start));
                        }
                        start = start.max(cut_end);
                        k += 1;
                    }
                    _ => {
                        out.push((start, end));
                        break;
                    }
                }
            }
        }
        RangeSet(out)
    }

    /// The values in both sets.
    pub fn intersection(&self, other: &RangeSet) -> RangeSet {
        self.difference(&self.difference(other))
    }
}

impl fmt::Display for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (start, end)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "[{start}, {end})")?;
        }
        Ok(())
    }
}

/// A set of partitions of one partitions definition: for each combination of discrete keys
/// (`""` for a definition with none), ranges along its time dimension — window starts in
/// seconds since the Unix epoch, `[first window's start, last window's end)` — or `[0, 1)`
/// for a definition without time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PartitionSet(BTreeMap<String, RangeSet>);

impl PartitionSet {
    /// No partition.
    pub fn new() -> Self {
        Self::default()
    }

    /// The partitions `ranges` of discrete key `keys`.
    pub fn of(keys: impl Into<String>, ranges: RangeSet) -> Self {
        let mut set = PartitionSet::default();
        set.insert(keys.into(), ranges);
        set
    }

    /// The set that stored rows `(discrete keys, start, end)` hold, one row per range `[start,
    /// end)`, in any order: what stores that keep one row per range read their sets back
    /// with. Sorts once per discrete key (reading many ranges stays `O(n log n)`) and keeps
    /// the rows as they are, so the set's [`range_count`](Self::range_count) is the number of
    /// rows stored.
    ///
    /// Fails, naming the rows, when they are not what a store writes: an empty range, or two
    /// ranges of the same keys that overlap or touch (a store merges those into one row).
    pub fn from_rows(rows: impl IntoIterator<Item = (String, i64, i64)>) -> Result<Self, String> {
        let mut grouped: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
        for (keys, start, end) in rows {
            if end <= start {
                return Err(format!(
                    "the stored range [{start}, {end}) of keys `{keys}` is empty"
                ));
            }
            grouped.entry(keys).or_default().push((start, end));
        }
        let mut set = PartitionSet::default();
        for (keys, mut ranges) in grouped {
            ranges.sort_unstable();
            if let Some(pair) = ranges.windows(2).find(|pair| pair[1].0 <= pair[0].1) {
                let ((a, b), (c, d)) = (pair[0], pair[1]);
                return Err(format!(
                    "the stored ranges [{a}, {b}) and [{c}, {d}) of keys `{keys}` overlap or \
                     touch; they should be one range"
                ));
            }
            set.0.insert(keys, RangeSet(ranges));
        }
        Ok(set)
    }

    pub(crate) fn insert(&mut self, keys: String, ranges: RangeSet) {
        if ranges.is_empty() {
            return;
        }
        let merged = match self.0.remove(&keys) {
            Some(existing) => existing.union(&ranges),
            None => ranges,
        };
        self.0.insert(keys, merged);
    }

    /// The discrete keys with their ranges.
    pub fn parts(&self) -> impl Iterator<Item = (&str, &RangeSet)> {
        self.0.iter().map(|(k, r)| (k.as_str(), r))
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.values().all(RangeSet::is_empty)
    }

    /// How many ranges it holds (its size in storage).
    pub fn range_count(&self) -> usize {
        self.0.values().map(|r| r.ranges().len()).sum()
    }

    /// Every partition in either set.
    pub fn union(&self, other: &PartitionSet) -> PartitionSet {
        let mut out = self.clone();
        for (keys, ranges) in &other.0 {
            out.insert(keys.clone(), ranges.clone());
        }
        out
    }

    /// The partitions of the set that are not in `other`.
    pub fn difference(&self, other: &PartitionSet) -> PartitionSet {
        let mut out = PartitionSet::default();
        for (keys, ranges) in &self.0 {
            let left = match other.0.get(keys) {
                Some(cut) => ranges.difference(cut),
                None => ranges.clone(),
            };
            out.insert(keys.clone(), left);
        }
        out
    }

    /// The partitions in both sets.
    pub fn intersection(&self, other: &PartitionSet) -> PartitionSet {
        self.difference(&self.difference(other))
    }

    /// Whether every partition of `other` is in the set.
    pub fn covers(&self, other: &PartitionSet) -> bool {
        other.difference(self).is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ranges: &[(i64, i64)]) -> RangeSet {
        ranges
            .iter()
            .fold(RangeSet::new(), |s, &(a, b)| s.union(&RangeSet::span(a, b)))
    }

    #[test]
    fn unions_merge_overlapping_and_adjacent_ranges() {
        assert_eq!(
            set(&[(0, 5), (5, 10), (20, 30), (8, 12)]).ranges(),
            [(0, 12), (20, 30)]
        );
        assert!(RangeSet::span(3, 3).is_empty());
    }

    #[test]
    fn differences_and_intersections_cut_ranges() {
        let a = set(&[(0, 100)]);
        let b = set(&[(10, 20), (30, 40), (90, 200)]);
        assert_eq!(a.difference(&b).ranges(), [(0, 10), (20, 30), (40, 90)]);
        assert_eq!(a.intersection(&b).ranges(), [(10, 20), (30, 40), (90, 100)]);
        assert!(a.covers(&set(&[(5, 6), (50, 60)])));
        assert!(!a.covers(&set(&[(99, 101)])));
        assert!(a.contains(0) && a.contains(99) && !a.contains(100));
        let many = set(&[(0, 1), (2, 3), (4, 5)]);
        assert_eq!(many.difference(&set(&[(0, 5)])), RangeSet::new());
        assert_eq!(
            set(&[(0, 10)]).difference(&set(&[(2, 3), (5, 6)])).ranges(),
            [(0, 2), (3, 5), (6, 10)]
        );
    }

    #[test]
    fn sets_from_rows_keep_each_row_and_refuse_rows_a_store_never_writes() {
        let row = |keys: &str, start, end| (keys.to_owned(), start, end);
        let read = PartitionSet::from_rows([
            row("eu", 30, 40),
            row("", 0, 1),
            row("eu", 0, 10),
            row("eu", 11, 20),
        ])
        .unwrap();
        let parts: Vec<(&str, &[(i64, i64)])> =
            read.parts().map(|(k, r)| (k, r.ranges())).collect();
        assert_eq!(
            parts,
            [
                ("", &[(0, 1)][..]),
                ("eu", &[(0, 10), (11, 20), (30, 40)][..])
            ]
        );
        assert_eq!(read.range_count(), 4);
        assert_eq!(
            read,
            PartitionSet::of("", set(&[(0, 1)]))
                .union(&PartitionSet::of("eu", set(&[(0, 10), (11, 20), (30, 40)])))
        );
        assert!(PartitionSet::from_rows(Vec::new()).unwrap().is_empty());
        let touching = PartitionSet::from_rows([row("eu", 10, 20), row("eu", 0, 10)]);
        assert!(touching
            .unwrap_err()
            .contains("[0, 10) and [10, 20) of keys `eu`"));
        assert!(PartitionSet::from_rows([row("eu", 0, 10), row("eu", 5, 6)]).is_err());
        assert!(PartitionSet::from_rows([row("", 5, 5)]).is_err());
        assert!(PartitionSet::from_rows([row("eu", 0, 10), row("us", 10, 20)]).is_ok());
    }

    #[test]
    fn partition_sets_combine_per_discrete_key() {
        let a =
            PartitionSet::of("eu", set(&[(0, 10)])).union(&PartitionSet::of("us", set(&[(0, 5)])));
        let b = PartitionSet::of("eu", set(&[(5, 10)]));
        let left = a.difference(&b);
        assert_eq!(left.range_count(), 2);
        assert!(a.covers(&b) && !b.covers(&a));
        assert_eq!(a.intersection(&b), b);
        assert!(a.difference(&a).is_empty());
    }
}
