//! Where runs, their event logs and asset materializations are kept.
//!
//! The executor writes through the [`Storage`] trait in batches. Backends:
//! [`InMemoryStorage`] (tests, one-off runs), [`SqliteStorage`] (the embedded default) and, in
//! `dagrs-postgres`, a PostgreSQL store for shared deployments. Every backend passes the same
//! contract suite, `contract` (feature `testing`).

#[cfg(any(test, feature = "testing"))]
pub mod contract;
mod memory;
pub(crate) mod recovery;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use memory::InMemoryStorage;
pub use recovery::{recover_abandoned_runs, LEASE};
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStorage;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::RunConfig;
use crate::error::Error;
use crate::event::{Event, Metadata, RunStatus};
use crate::key::{AssetKey, RunId};

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
        })
    }
}

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
}

/// A store for runs, event logs, asset materializations and schedule/sensor state.
///
/// The contract (checked by the `contract` suite, feature `testing`): `append_events` is
/// atomic, rejects a `(run_id, seq)` pair it already holds and events of a run it does not
/// know ([`Error::RunNotFound`]); events come back in `seq` order; every `Materialization`
/// event appended becomes a [`MaterializationRecord`]; `finish_run` only moves a run out of
/// an active status (running or canceling), once; `request_cancel` only moves a running run
/// to canceling; `prune` never removes an active run nor the latest materialization of an
/// asset; `claim_tick` says yes once per `(name, tick)`.
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

    /// Asks the process running `run_id` to cancel it: moves a `Running` run to `Canceling`
    /// with `reason` as its failure reason; returns `false` (and changes nothing) when the run
    /// is not running.
    async fn request_cancel(&self, run_id: &RunId, reason: &str) -> Result<bool, Error>;

    /// Records a sign of life of the process running `run_id`.
    async fn heartbeat(&self, run_id: &RunId, at: DateTime<Utc>) -> Result<(), Error>;

    /// One run, if known.
    async fn run(&self, run_id: &RunId) -> Result<Option<RunRecord>, Error>;

    /// The newest runs first (by start time), at most `limit`.
    async fn runs(&self, limit: usize) -> Result<Vec<RunRecord>, Error>;

    /// The active runs: those whose status is `Running` or `Canceling`.
    async fn running_runs(&self) -> Result<Vec<RunRecord>, Error>;

    /// A run's events with `seq > after` (all when `after` is `None`), in order.
    async fn events(&self, run_id: &RunId, after: Option<u64>) -> Result<Vec<Event>, Error>;

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

    /// Removes finished runs outside `keep` (as of `now`) with their events and
    /// materialization records, except each asset's latest materialization.
    async fn prune(&self, keep: Retention, now: DateTime<Utc>) -> Result<PruneReport, Error>;

    /// Claims tick `tick` of schedule or sensor `name`; `true` only for the first claim, so
    /// a tick fires once even with several daemons.
    async fn claim_tick(&self, name: &str, tick: DateTime<Utc>) -> Result<bool, Error>;

    /// The cursor stored under `name` (a sensor's position), if any.
    async fn cursor(&self, name: &str) -> Result<Option<String>, Error>;

    /// Stores `value` as the cursor `name`.
    async fn set_cursor(&self, name: &str, value: &str) -> Result<(), Error>;
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
