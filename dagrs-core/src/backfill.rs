//! Backfills: materializing a set of partitions of a selection as a stored state machine that
//! the daemon advances — launching runs chunk by chunk through the run queue, noting what
//! succeeded and failed, surviving restarts, cancellable and resumable.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::RunConfig;
use crate::key::RunId;
use crate::partition::{PartitionRange, PartitionSet};
use crate::text::named;

/// The run tag naming the backfill a run belongs to.
pub const BACKFILL_TAG: &str = "dagrs/backfill";

/// How a backfill cuts its partitions into runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "max")]
pub enum BackfillPolicy {
    /// One run per partition (Dagster's default).
    RunPerPartition,
    /// One run per contiguous range: assets get the whole range in their context
    /// (`ctx.partition_time_window()` covers it).
    SingleRun,
    /// Runs of at most this many partitions each.
    MaxPartitionsPerRun(u64),
}

impl BackfillPolicy {
    /// The most partitions in one run (`None`: a whole range).
    pub fn per_run(self) -> Option<u64> {
        match self {
            BackfillPolicy::RunPerPartition => Some(1),
            BackfillPolicy::SingleRun => None,
            BackfillPolicy::MaxPartitionsPerRun(n) => Some(n.max(1)),
        }
    }
}

impl std::fmt::Display for BackfillPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackfillPolicy::RunPerPartition => f.write_str("one run per partition"),
            BackfillPolicy::SingleRun => f.write_str("one run per range"),
            BackfillPolicy::MaxPartitionsPerRun(n) => write!(f, "at most {n} partitions per run"),
        }
    }
}

/// Where a backfill stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackfillStatus {
    /// Launching and watching its runs.
    Requested,
    /// Asked to stop: its queued runs are cancelled, its running runs asked to stop.
    Canceling,
    /// Every partition was materialized.
    Completed,
    /// Every run ended, and some partitions failed: resume it to retry those.
    Failed,
    /// Cancelled: resume it to launch what is left.
    Cancelled,
}

impl BackfillStatus {
    /// Whether the daemon still works on it.
    pub fn is_active(self) -> bool {
        matches!(self, BackfillStatus::Requested | BackfillStatus::Canceling)
    }
}

named!(BackfillStatus, "backfill status", {
    Requested => "requested",
    Canceling => "canceling",
    Completed => "completed",
    Failed => "failed",
    Cancelled => "cancelled",
});

/// One run of a backfill, launched or about to be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackfillRun {
    /// The run's id, chosen before it is submitted (so a crash in between submits it again,
    /// not twice).
    pub run_id: RunId,
    /// The partitions it materializes.
    pub range: PartitionRange,
}

/// A backfill as storage keeps it: one record, updated by compare-and-set on `version`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackfillRecord {
    /// Its id.
    pub id: String,
    /// Where it stands.
    pub status: BackfillStatus,
    /// The selection as the user wrote it.
    pub selection: String,
    /// Every partition it materializes.
    pub target: PartitionSet,
    /// How partitions are cut into runs.
    pub policy: BackfillPolicy,
    /// The run config of its runs.
    pub config: RunConfig,
    /// Tags of its runs.
    pub tags: BTreeMap<String, String>,
    /// Partitions handed to runs so far (in flight or ended).
    pub launched: PartitionSet,
    /// Partitions whose run succeeded.
    pub succeeded: PartitionSet,
    /// Partitions whose run failed or was cancelled.
    pub failed: PartitionSet,
    /// Runs launched and not seen ended yet.
    pub in_flight: Vec<BackfillRun>,
    /// At most this many runs in flight at once.
    pub max_in_flight: usize,
    /// When it was launched.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Why it was cancelled or stopped, if it was.
    pub reason: Option<String>,
    /// Bumped by every stored update; an update carrying an older version is refused.
    pub version: u64,
}

impl BackfillRecord {
    /// Partitions not handed to any run yet.
    pub fn remaining(&self) -> PartitionSet {
        self.target.difference(&self.launched)
    }

    /// Whether nothing is left to launch or to wait for.
    pub fn is_done(&self) -> bool {
        self.in_flight.is_empty() && self.remaining().is_empty()
    }
}
