//! Backfills: materializing a set of partitions of a selection as a stored state machine that
//! the daemon advances — launching runs chunk by chunk through the run queue, noting what
//! succeeded and failed, surviving restarts, cancellable and resumable.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

mod driver;

#[cfg(any(feature = "cli", feature = "web"))]
pub(crate) use driver::backfill_definition;

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

/// A backfill to launch with [`Instance::launch_backfill`](crate::Instance::launch_backfill): a selection of partitioned
/// assets and the partitions to materialize.
///
/// ```
/// use dagrs_core::{BackfillPolicy, BackfillRequest};
///
/// let day = BackfillRequest::new("influx_data+")
///     .range("2026-11-01-00:00", "2026-11-02-00:00")
///     .policy(BackfillPolicy::MaxPartitionsPerRun(6));
/// # let _ = day;
/// ```
#[derive(Debug, Clone)]
pub struct BackfillRequest {
    selection: String,
    targets: Vec<String>,
    all: bool,
    policy: Option<BackfillPolicy>,
    config: RunConfig,
    tags: BTreeMap<String, String>,
    max_in_flight: Option<usize>,
}

impl BackfillRequest {
    /// A backfill of `selection` (see [the syntax](crate#selections)); name its partitions
    /// with [`partition`](Self::partition), [`range`](Self::range) or [`all`](Self::all).
    pub fn new(selection: impl Into<String>) -> Self {
        BackfillRequest {
            selection: selection.into(),
            targets: Vec::new(),
            all: false,
            policy: None,
            config: RunConfig::new(),
            tags: BTreeMap::new(),
            max_in_flight: None,
        }
    }

    /// Adds partition `key`, or a range `START...END` (END excluded).
    pub fn partition(mut self, key: impl Into<String>) -> Self {
        self.targets.push(key.into());
        self
    }

    /// Adds the partitions from `start` up to `end` (excluded).
    pub fn range(self, start: &str, end: &str) -> Self {
        self.partition(format!("{start}{}{end}", crate::partition::RANGE_SEPARATOR))
    }

    /// Takes every partition that exists now.
    pub fn all(mut self) -> Self {
        self.all = true;
        self
    }

    /// Cuts partitions into runs this way (default: the selected assets' own
    /// `backfill_policy`, else one run per partition).
    pub fn policy(mut self, policy: BackfillPolicy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// The run config of every run.
    pub fn config(mut self, config: RunConfig) -> Self {
        self.config = config;
        self
    }

    /// Adds a tag to every run.
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(key.into(), value.into());
        self
    }

    /// Keeps at most `runs` runs queued or running at once (default: twice the run queue's
    /// limit).
    pub fn max_in_flight(mut self, runs: usize) -> Self {
        self.max_in_flight = Some(runs.max(1));
        self
    }
}
