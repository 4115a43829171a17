//! Partition status: which partitions of an asset are materialized, failed or in progress —
//! stored as ranges, updated from the event log by every backend the same way.

use serde::{Deserialize, Serialize};

use super::{PartitionRange, PartitionSet, PartitionsDefinition, RangeSet};
use crate::event::{Event, EventKind};
use crate::key::AssetKey;
use crate::text::named;

/// The status of an asset's partitions. A partition in none of the sets is missing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionStatus {
    /// Materialized by a successful step, and not failed since.
    pub materialized: PartitionSet,
    /// Their latest step failed for good (they may hold an older materialization).
    pub failed: PartitionSet,
    /// Targeted by a queued or running run (never stored: read from the active runs).
    pub in_progress: PartitionSet,
}

impl PartitionStatus {
    /// The partitions of `all` in no status: neither materialized, failed nor in progress.
    pub fn missing(&self, all: &PartitionSet) -> PartitionSet {
        all.difference(&self.materialized)
            .difference(&self.failed)
            .difference(&self.in_progress)
    }

    /// Records one outcome, as every store does.
    pub fn apply(&mut self, range: &PartitionRange, outcome: PartitionOutcome) {
        let set = range.to_set();
        match outcome {
            PartitionOutcome::Materialized => {
                self.materialized = self.materialized.union(&set);
                self.failed = self.failed.difference(&set);
            }
            PartitionOutcome::Failed => self.failed = self.failed.union(&set),
        }
    }
}

/// The partitions of one asset as they stand: which exist, and their status.
#[derive(Debug, Clone)]
pub struct AssetPartitions {
    /// The asset.
    pub asset: AssetKey,
    /// How it is partitioned.
    pub definition: PartitionsDefinition,
    /// Every partition that exists now.
    pub all: PartitionSet,
    /// Their status.
    pub status: PartitionStatus,
}

impl AssetPartitions {
    /// The partitions in no status.
    pub fn missing(&self) -> PartitionSet {
        self.status.missing(&self.all)
    }
}

/// What a step did to its partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartitionOutcome {
    /// Materialized.
    Materialized,
    /// Failed for good (no retry left).
    Failed,
}

named!(PartitionOutcome, "partition status", {
    Materialized => "materialized",
    Failed => "failed",
});

/// The partition outcomes that `events` record, in order: a partitioned materialization,
/// and a partitioned step failure that is not retried.
pub fn outcomes(
    events: &[Event],
) -> impl Iterator<Item = (&AssetKey, &PartitionRange, PartitionOutcome)> {
    events.iter().filter_map(|event| {
        let asset = event.asset.as_ref()?;
        match &event.kind {
            EventKind::Materialization {
                partition: Some(range),
                ..
            } => Some((asset, range, PartitionOutcome::Materialized)),
            EventKind::StepFailed {
                partition: Some(range),
                will_retry: false,
                ..
            } => Some((asset, range, PartitionOutcome::Failed)),
            _ => None,
        }
    })
}

/// For stores that keep one row per range: the stored ranges of one status touching
/// `[start, end)` (overlapping or adjacent) merged with it into the one range that replaces
/// them.
pub fn merged(touching: &[(i64, i64)], start: i64, end: i64) -> (i64, i64) {
    touching
        .iter()
        .fold((start, end), |(s, e), &(a, b)| (s.min(a), e.max(b)))
}

/// For stores that keep one row per range: what is left of the stored ranges overlapping
/// `[start, end)` once it is cut out.
pub fn cut(overlapping: &[(i64, i64)], start: i64, end: i64) -> Vec<(i64, i64)> {
    let stored = overlapping.iter().fold(RangeSet::new(), |set, &(a, b)| {
        set.union(&RangeSet::span(a, b))
    });
    stored
        .difference(&RangeSet::span(start, end))
        .ranges()
        .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(start: i64, end: i64) -> PartitionRange {
        PartitionRange {
            key: String::new(),
            dims: String::new(),
            start,
            end,
        }
    }

    #[test]
    fn a_success_clears_a_failure_and_a_failure_keeps_the_data() {
        let mut status = PartitionStatus::default();
        status.apply(&range(0, 10), PartitionOutcome::Materialized);
        status.apply(&range(5, 15), PartitionOutcome::Failed);
        assert_eq!(status.materialized.range_count(), 1);
        status.apply(&range(10, 15), PartitionOutcome::Materialized);
        assert_eq!(status.failed, range(5, 10).to_set());
        assert_eq!(status.materialized, range(0, 15).to_set());
        let all = range(0, 20).to_set();
        assert_eq!(status.missing(&all), range(15, 20).to_set());
    }

    #[test]
    fn row_helpers_merge_and_cut() {
        assert_eq!(merged(&[(0, 5), (10, 20)], 5, 10), (0, 20));
        assert_eq!(merged(&[], 5, 10), (5, 10));
        assert_eq!(cut(&[(0, 10), (12, 30)], 5, 20), [(0, 5), (20, 30)]);
    }
}
