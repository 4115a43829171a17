//! Where runs, their event logs and asset materializations are kept.
//!
//! The executor writes through the [`Storage`] trait in batches. Backends:
//! [`InMemoryStorage`] (tests, one-off runs), [`SqliteStorage`] (the embedded default) and, in
//! `dagrs-postgres`, a PostgreSQL store for shared deployments. Every backend passes the same
//! contract suite, `contract` (feature `testing`).

#[cfg(any(test, feature = "testing"))]
pub mod contract;
mod memory;
mod page;
pub(crate) mod recovery;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use memory::InMemoryStorage;
pub use page::{EventFilter, RunCursor, RunFilter};
pub use recovery::{recover_abandoned_runs, LEASE};
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStorage;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::backfill::{BackfillRecord, BackfillStatus};
use crate::config::RunConfig;
use crate::error::Error;
use crate::event::{Event, EventKind, Metadata, RunStatus};
use crate::key::{AssetKey, RunId};
use crate::partition::{PartitionRange, PartitionStatus};
use crate::text::named;

/// A run as storage keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run's id.
    pub run_id: RunId,
    /// Its state.
    pub status: RunStatus,
    /// The selection as the user wrote it.
    pub selection: String,
    /// The selected assets.
    pub assets: Vec<AssetKey>,
    /// The run config as given (before defaults were merged in).
    pub config: RunConfig,
    /// Free-form tags of the run.
    pub tags: BTreeMap<String, String>,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended, once it has.
    pub ended_at: Option<DateTime<Utc>>,
    /// The process that runs it, as `host:pid`.
    pub owner: String,
    /// The last sign of life of that process.
    pub heartbeat_at: DateTime<Utc>,
    /// The run this one re-executes, if any.
    pub parent_run_id: Option<RunId>,
    /// Why the run failed, when it did not fail through its assets (e.g. its process died).
    pub failure: Option<String>,
}

/// A position in the order materializations become visible: what
/// [`Storage::materializations_after`] continues from. Opaque to callers: compare, store and
/// pass back positions, but do not read meaning into their parts.
///
/// Positions only grow, in the order each store makes materializations final: the in-memory
/// store counts them under its lock, SQLite uses the row id (writes are serialized, so ids
/// become visible in order), and PostgreSQL pairs the writing transaction's id with the row
/// id, so rows of transactions still running are held back until no older one can appear.
/// [`Default`] (and [`START`](Self::START)) is before every materialization.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct MaterializationPosition {
    transaction: u64,
    id: u64,
}

impl MaterializationPosition {
    /// Before every materialization.
    pub const START: MaterializationPosition = MaterializationPosition {
        transaction: 0,
        id: 0,
    };

    /// For storage implementations: the position of row `id` written by transaction
    /// `transaction` (0 in stores whose ids alone are in order).
    pub const fn new(transaction: u64, id: u64) -> Self {
        MaterializationPosition { transaction, id }
    }

    /// For storage implementations: the transaction part.
    pub const fn transaction(self) -> u64 {
        self.transaction
    }

    /// For storage implementations: the row part.
    pub const fn id(self) -> u64 {
        self.id
    }
}

/// One materialization of an asset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaterializationRecord {
    /// The asset.
    pub asset: AssetKey,
    /// The run that materialized it.
    pub run_id: RunId,
    /// The event's position in that run's log.
    pub seq: u64,
    /// When.
    pub timestamp: DateTime<Utc>,
    /// Its metadata.
    pub metadata: Metadata,
    /// Its serialized output.
    pub value: serde_json::Value,
    /// The asset's code version at the time.
    pub code_version: Option<String>,
    /// The partitions it materialized, for a partitioned asset.
    pub partition: Option<PartitionRange>,
}

impl MaterializationRecord {
    /// The record of a materialization event; `None` for other events.
    pub fn of(event: &Event) -> Option<MaterializationRecord> {
        let m = event.materialization()?;
        Some(MaterializationRecord {
            asset: m.asset.clone(),
            run_id: event.run_id.clone(),
            seq: event.seq,
            timestamp: event.timestamp,
            metadata: m.metadata.clone(),
            value: m.value.clone(),
            code_version: m.code_version.map(str::to_owned),
            partition: m.partition.cloned(),
        })
    }
}

/// One evaluation of an asset check: every `CheckEvaluated` event appended becomes one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckRecord {
    /// The asset checked.
    pub asset: AssetKey,
    /// The check's name.
    pub check: String,
    /// The run it was evaluated in.
    pub run_id: RunId,
    /// The event's position in that run's log.
    pub seq: u64,
    /// When.
    pub timestamp: DateTime<Utc>,
    /// Whether it passed.
    pub passed: bool,
    /// How bad a failure is.
    pub severity: crate::check::CheckSeverity,
    /// Whether a failure stops what lies downstream.
    pub blocking: bool,
    /// What it found.
    pub description: Option<String>,
    /// Facts it attached.
    pub metadata: Metadata,
}

impl CheckRecord {
    /// The record of a check evaluation event; `None` for other events.
    pub fn of(event: &Event) -> Option<CheckRecord> {
        let (
            Some(asset),
            EventKind::CheckEvaluated {
                check,
                passed,
                severity,
                blocking,
                description,
                metadata,
            },
        ) = (&event.asset, &event.kind)
        else {
            return None;
        };
        Some(CheckRecord {
            asset: asset.clone(),
            check: check.clone(),
            run_id: event.run_id.clone(),
            seq: event.seq,
            timestamp: event.timestamp,
            passed: *passed,
            severity: *severity,
            blocking: *blocking,
            description: description.clone(),
            metadata: metadata.clone(),
        })
    }
}

/// One evaluation of an asset's automation condition, as the daemon records it: whenever it
/// requested a run, and whenever its result or reason changed since the last record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutomationRecord {
    /// The asset.
    pub asset: AssetKey,
    /// When the daemon evaluated it.
    pub evaluated_at: DateTime<Utc>,
    /// Whether the condition held, so a run was requested.
    pub requested: bool,
    /// Why it held or did not, e.g. "upstream `influx_data` updated; nothing in progress".
    pub reason: String,
    /// The runs requested for it (several for partitioned assets).
    pub run_ids: Vec<RunId>,
}

/// What kind of thing ticks: a schedule or a sensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstigatorKind {
    /// A cron schedule.
    Schedule,
    /// A sensor.
    Sensor,
}

/// Whether a schedule or sensor is switched on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstigatorStatus {
    /// It ticks.
    Running,
    /// It does not.
    Stopped,
}

/// How a tick went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TickStatus {
    /// Claimed; its runs are being requested.
    Started,
    /// It requested runs.
    Fired,
    /// It had nothing to do (a sensor's skip reason, or run keys already used).
    Skipped,
    /// Its evaluation or its run requests failed.
    Failed,
}

/// One tick of a schedule or sensor, as storage keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TickRecord {
    /// The schedule or sensor.
    pub name: String,
    /// Which of the two it is.
    pub kind: InstigatorKind,
    /// The instant the tick stands for: the cron time of a schedule, the evaluation time of a
    /// sensor.
    pub tick: DateTime<Utc>,
    /// How it went.
    pub status: TickStatus,
    /// The runs it requested.
    pub run_ids: Vec<RunId>,
    /// Why it skipped or failed.
    pub reason: Option<String>,
}

named!(TickStatus, "tick status", {
    Started => "started",
    Fired => "fired",
    Skipped => "skipped",
    Failed => "failed",
});

named!(InstigatorKind, "instigator kind", {
    Schedule => "schedule",
    Sensor => "sensor",
});

named!(InstigatorStatus, "instigator status", {
    Running => "running",
    Stopped => "stopped",
});

/// What to keep when pruning the event log; `None` fields do not limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// Keep finished runs younger than this.
    pub max_age: Option<Duration>,
    /// Keep at most this many finished runs (the newest).
    pub max_runs: Option<usize>,
}

/// What [`Storage::prune`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneReport {
    /// Runs removed.
    pub runs: u64,
    /// Events removed.
    pub events: u64,
    /// Materialization records removed (never an asset's latest).
    pub materializations: u64,
    /// Schedule and sensor ticks removed (older than the age kept).
    pub ticks: u64,
}

/// A store for runs, event logs, asset materializations and schedule/sensor state.
///
/// The contract (checked by the `contract` suite, feature `testing`): `append_events` is
/// atomic, rejects a `(run_id, seq)` pair it already holds and events of a run it does not
/// know ([`Error::RunNotFound`]); events come back in `seq` order; every event with a
/// [`Event::materialization`] (a `Materialization`, or an `Observation` with a new data
/// version) becomes a [`MaterializationRecord`] and every `CheckEvaluated` event a
/// [`CheckRecord`], in the same write; `finish_run` only moves a run out of
/// an active status (running or canceling), once; `request_cancel` moves a running run to
/// canceling and ends a queued one; `start_run` moves a queued run to running, once; `prune`
/// never removes an active or queued run nor the latest materialization of an asset;
/// `claim_tick` says yes once per `(name, tick)`, and `claim_run_key` once per
/// `(instigator, key)`; every partitioned materialization and partitioned final step failure
/// appended updates the asset's partition status in the same write (as
/// [`PartitionStatus::apply`] does), kept as ranges and never pruned; `update_backfill`
/// stores a backfill only when its version is the stored one.
#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// Records a new run; fails if the id is taken.
    async fn create_run(&self, run: &RunRecord) -> Result<(), Error>;

    /// Appends a batch of events (of one or more runs), all or none.
    async fn append_events(&self, events: &[Event]) -> Result<(), Error>;

    /// Ends a run that is still active (`Running` or `Canceling`) with `status`, `ended_at`
    /// and a failure reason (`None` keeps the one recorded, e.g. by a cancellation request);
    /// returns `false` (and changes nothing) when the run had already ended: the status of a
    /// run is decided once.
    async fn finish_run(
        &self,
        run_id: &RunId,
        status: RunStatus,
        ended_at: DateTime<Utc>,
        failure: Option<&str>,
    ) -> Result<bool, Error>;

    /// Asks for run `run_id` to be cancelled, with `reason` as its failure reason: a
    /// `Running` run becomes `Canceling` (its process stops it and records its end); a
    /// `Queued` run, which no process holds yet, ends as `Cancelled` at `at`. Returns `false`
    /// (and changes nothing) for a run in any other status.
    async fn request_cancel(
        &self,
        run_id: &RunId,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, Error>;

    /// Starts queued run `run_id` in process `owner` at `at`: moves it from `Queued` to
    /// `Running` (its start time and heartbeat become `at`); returns `false` (and changes
    /// nothing) when it was not queued, so of several daemons one starts it.
    async fn start_run(
        &self,
        run_id: &RunId,
        owner: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, Error>;

    /// The queued runs, oldest first.
    async fn queued_runs(&self) -> Result<Vec<RunRecord>, Error>;

    /// Records a sign of life of the process running `run_id`.
    async fn heartbeat(&self, run_id: &RunId, at: DateTime<Utc>) -> Result<(), Error>;

    /// One run, if known.
    async fn run(&self, run_id: &RunId) -> Result<Option<RunRecord>, Error>;

    /// The newest runs first (by start time), at most `limit`.
    async fn runs(&self, limit: usize) -> Result<Vec<RunRecord>, Error>;

    /// One page of runs: those matching `filter`, newest first (by start time, then by run
    /// id, both descending), at most `limit`. The next page is the same filter with
    /// [`after`](RunFilter::after) set to the last run of this one.
    async fn runs_page(&self, filter: &RunFilter, limit: usize) -> Result<Vec<RunRecord>, Error>;

    /// The active runs: those whose status is `Running` or `Canceling`.
    async fn running_runs(&self) -> Result<Vec<RunRecord>, Error>;

    /// A run's events with `seq > after` (all when `after` is `None`), in order.
    async fn events(&self, run_id: &RunId, after: Option<u64>) -> Result<Vec<Event>, Error>;

    /// One page of run `run_id`'s events: those matching `filter`, in `seq` order, at most
    /// `limit` (the first ones, or the last ones with [`newest`](EventFilter::newest)).
    async fn events_page(
        &self,
        run_id: &RunId,
        filter: &EventFilter,
        limit: usize,
    ) -> Result<Vec<Event>, Error>;

    /// The latest materialization of `asset`, if any.
    async fn latest_materialization(
        &self,
        asset: &AssetKey,
    ) -> Result<Option<MaterializationRecord>, Error>;

    /// The latest materialization of every asset that has one.
    async fn latest_materializations(&self) -> Result<Vec<MaterializationRecord>, Error>;

    /// The materializations of `asset`, newest first, at most `limit`.
    async fn materializations(
        &self,
        asset: &AssetKey,
        limit: usize,
    ) -> Result<Vec<MaterializationRecord>, Error>;

    /// The position of the newest materialization that is final: visible, and no
    /// materialization before it can still appear. [`Default`] when there is none.
    async fn materialization_position(&self) -> Result<MaterializationPosition, Error>;

    /// The materializations after `after`, in position order, at most `limit`: how the daemon
    /// follows what changed. Passing the last returned position again continues exactly:
    /// every materialization appended is returned once across calls, even when concurrent
    /// writers commit out of order, because one is returned only once no other can still
    /// appear before it. So a committed materialization can show a little late: PostgreSQL
    /// holds it back while any transaction of its server that began writing before it runs.
    async fn materializations_after(
        &self,
        after: MaterializationPosition,
        limit: usize,
    ) -> Result<Vec<(MaterializationPosition, MaterializationRecord)>, Error>;

    /// The evaluations of `asset`'s checks, newest first, at most `limit`.
    async fn check_records(
        &self,
        asset: &AssetKey,
        limit: usize,
    ) -> Result<Vec<CheckRecord>, Error>;

    /// Records automation evaluations (in one write).
    async fn record_automation(&self, records: &[AutomationRecord]) -> Result<(), Error>;

    /// Automation evaluations of `asset` (of every asset when `None`), newest first, at most
    /// `limit`.
    async fn automation_records(
        &self,
        asset: Option<&AssetKey>,
        limit: usize,
    ) -> Result<Vec<AutomationRecord>, Error>;

    /// Removes finished runs outside `keep` (as of `now`) with their events, materialization
    /// and check records, except each asset's latest materialization; and schedule and
    /// sensor ticks and automation records older than `keep.max_age` (see [`tick_cutoff`]).
    async fn prune(&self, keep: Retention, now: DateTime<Utc>) -> Result<PruneReport, Error>;

    /// Claims ticks of schedules or sensors (`name`, `tick`) by recording them, all in one
    /// write: for each, `true` only for the first claim, so a tick fires once even with
    /// several daemons.
    async fn claim_ticks(&self, ticks: &[TickRecord]) -> Result<Vec<bool>, Error>;

    /// Records what claimed ticks did (their status, runs, reason), in one write.
    async fn update_ticks(&self, ticks: &[TickRecord]) -> Result<(), Error>;

    /// Claims one tick (see [`claim_ticks`](Self::claim_ticks)).
    async fn claim_tick(&self, tick: &TickRecord) -> Result<bool, Error> {
        Ok(self
            .claim_ticks(std::slice::from_ref(tick))
            .await?
            .first()
            .copied()
            .unwrap_or(false))
    }

    /// Records what one claimed tick did (see [`update_ticks`](Self::update_ticks)).
    async fn update_tick(&self, tick: &TickRecord) -> Result<(), Error> {
        self.update_ticks(std::slice::from_ref(tick)).await
    }

    /// The newest ticks first (by tick time), of instigator `name` or of all, at most `limit`.
    async fn ticks(&self, name: Option<&str>, limit: usize) -> Result<Vec<TickRecord>, Error>;

    /// Claims run key `key` of instigator `instigator` for run `run_id`: `None` for the
    /// first claim; else the run that holds it, so a request never launches twice.
    async fn claim_run_key(
        &self,
        instigator: &str,
        key: &str,
        run_id: &RunId,
    ) -> Result<Option<RunId>, Error>;

    /// The stored on/off state of every schedule and sensor that was ever switched.
    async fn instigator_states(&self) -> Result<BTreeMap<String, InstigatorStatus>, Error>;

    /// Stores whether schedule or sensor `name` runs.
    async fn set_instigator_state(&self, name: &str, status: InstigatorStatus)
        -> Result<(), Error>;

    /// The cursor stored under `name` (a sensor's position), if any.
    async fn cursor(&self, name: &str) -> Result<Option<String>, Error>;

    /// Every stored cursor whose name starts with `prefix`, by name (one read for a daemon's
    /// many sensors).
    async fn cursors(&self, prefix: &str) -> Result<BTreeMap<String, String>, Error>;

    /// Stores `value` as the cursor `name`.
    async fn set_cursor(&self, name: &str, value: &str) -> Result<(), Error>;

    /// The stored partition status of `asset`: its materialized and failed ranges
    /// (`in_progress` is left empty: it comes from the active runs).
    async fn partition_status(&self, asset: &AssetKey) -> Result<PartitionStatus, Error>;

    /// The latest materialization of `asset` whose partitions cover all of `range` (same
    /// discrete keys, a span holding `range`'s), if any.
    async fn partition_materialization(
        &self,
        asset: &AssetKey,
        range: &PartitionRange,
    ) -> Result<Option<MaterializationRecord>, Error>;

    /// The keys of dynamic partitions definition `name`, in the order they were added.
    async fn dynamic_partitions(&self, name: &str) -> Result<Vec<String>, Error>;

    /// Adds keys to dynamic partitions definition `name`, keeping their order; keys it
    /// holds already are left as they are. Returns the keys that were new.
    async fn add_dynamic_partitions(
        &self,
        name: &str,
        keys: &[String],
    ) -> Result<Vec<String>, Error>;

    /// Removes key `key` of dynamic partitions definition `name`; `false` when it had none.
    async fn delete_dynamic_partition(&self, name: &str, key: &str) -> Result<bool, Error>;

    /// Records a new backfill; fails if the id is taken.
    async fn create_backfill(&self, backfill: &BackfillRecord) -> Result<(), Error>;

    /// One backfill, if known.
    async fn backfill(&self, id: &str) -> Result<Option<BackfillRecord>, Error>;

    /// The newest backfills first (by creation), only those in `status` when given, at most
    /// `limit`.
    async fn backfills(
        &self,
        status: Option<&[BackfillStatus]>,
        limit: usize,
    ) -> Result<Vec<BackfillRecord>, Error>;

    /// Stores `backfill` if the stored one has its `version`, as version `version + 1`;
    /// returns `false` (and changes nothing) when another writer got there first.
    async fn update_backfill(&self, backfill: &BackfillRecord) -> Result<bool, Error>;
}

/// Ticks older than this go when pruning by age: `now - max_age`, if expressible.
pub fn tick_cutoff(keep: Retention, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let age = chrono::Duration::from_std(keep.max_age?).ok()?;
    now.checked_sub_signed(age)
}

/// Which runs [`Storage::prune`] removes: finished, and older than `max_age` or beyond the
/// newest `max_runs` finished runs. Shared by the backends so they agree.
pub fn runs_to_prune(runs: &[RunRecord], keep: Retention, now: DateTime<Utc>) -> Vec<RunId> {
    let mut finished: Vec<&RunRecord> = runs.iter().filter(|r| r.status.is_final()).collect();
    finished.sort_by_key(|r| std::cmp::Reverse(r.started_at));
    finished
        .iter()
        .enumerate()
        .filter(|(rank, run)| {
            let too_many = keep.max_runs.is_some_and(|max| *rank >= max);
            // An age beyond what dates can express keeps everything.
            let too_old = keep.max_age.is_some_and(|age| {
                chrono::Duration::from_std(age)
                    .ok()
                    .and_then(|age| now.checked_sub_signed(age))
                    .is_some_and(|cutoff| run.started_at < cutoff)
            });
            too_many || too_old
        })
        .map(|(_, run)| run.run_id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_ages_keep_everything_instead_of_wrapping() {
        let mut old = contract::run_record("old", 0);
        old.status = RunStatus::Succeeded;
        let now = contract::at(10 * 365 * 24 * 60);
        for age in [Duration::MAX, Duration::from_secs(u64::MAX / 2)] {
            let keep = Retention {
                max_age: Some(age),
                max_runs: None,
            };
            assert!(runs_to_prune(std::slice::from_ref(&old), keep, now).is_empty());
        }
        let keep = Retention {
            max_age: Some(Duration::from_secs(86_400)),
            max_runs: None,
        };
        assert_eq!(runs_to_prune(&[old], keep, now), ["old".into()]);
    }
}
