//! Where runs and their event logs are kept. The executor writes through the [`Storage`]
//! trait in batches; [`InMemoryStorage`] keeps everything in the process (tests, one-off
//! runs), and other backends (SQLite, PostgreSQL) implement the same trait.

mod memory;

pub use memory::InMemoryStorage;

use std::collections::BTreeMap;

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
}

/// The latest materialization of an asset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaterializationRecord {
    /// The asset.
    pub asset: AssetKey,
    /// The run that materialized it.
    pub run_id: RunId,
    /// When.
    pub timestamp: DateTime<Utc>,
    /// Its metadata.
    pub metadata: Metadata,
    /// Its serialized output.
    pub value: serde_json::Value,
    /// The asset's code version at the time.
    pub code_version: Option<String>,
}

/// A store for runs, event logs and asset materializations.
///
/// Implementations must keep each run's events in `seq` order, make `append_events`
/// atomic (all of a batch or none), and update the latest materialization of an asset from
/// the `Materialization` events they append.
#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// Records a new run.
    async fn create_run(&self, run: &RunRecord) -> Result<(), Error>;

    /// Appends a batch of events (of one or more runs), atomically.
    async fn append_events(&self, events: &[Event]) -> Result<(), Error>;

    /// Sets a run's status and end time.
    async fn set_run_status(
        &self,
        run_id: &RunId,
        status: RunStatus,
        ended_at: Option<DateTime<Utc>>,
    ) -> Result<(), Error>;

    /// One run, if known.
    async fn run(&self, run_id: &RunId) -> Result<Option<RunRecord>, Error>;

    /// The newest runs first, at most `limit`.
    async fn runs(&self, limit: usize) -> Result<Vec<RunRecord>, Error>;

    /// A run's events with `seq > after` (all when `after` is `None`), in order.
    async fn events(&self, run_id: &RunId, after: Option<u64>) -> Result<Vec<Event>, Error>;

    /// The latest materialization of `asset`, if any.
    async fn latest_materialization(
        &self,
        asset: &AssetKey,
    ) -> Result<Option<MaterializationRecord>, Error>;
}
