//! [`Instance`]: where and how runs happen — the run store, retention, limits, recovery of
//! abandoned runs and cancellation. [`Definitions`] say what exists; an instance runs it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::RunConfig;
use crate::definitions::Definitions;
use crate::error::Error;
use crate::event::{now, Event, RunStatus, StepStatus};
use crate::executor::plan::Plan;
use crate::executor::{start, RunHandle, RunOptions, Settings, DEFAULT_MAX_CONCURRENCY};
use crate::key::RunId;
use crate::result::{outcomes_from_events, RunResult};
use crate::state::AssetState;
use crate::storage::recovery::this_process;
use crate::storage::{
    recover_abandoned_runs, InMemoryStorage, PruneReport, Retention, RunRecord, Storage, LEASE,
};

/// Where and how runs happen: the run store (in memory, SQLite or PostgreSQL), retention,
/// the concurrency limit, recovery of runs whose process died, and cancellation. The
/// command line, and every long-running part, talk to an instance, never to storage behind
/// its back. Cheap to clone.
///
/// ```
/// use dagrs_core::prelude::*;
/// use dagrs_core::Instance;
///
/// #[asset]
/// async fn answer() -> Result<u32> { Ok(42) }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let defs = Definitions::builder().asset::<answer>().build().unwrap();
/// let instance = Instance::ephemeral();
/// let result = instance.materialize(&defs, "*", RunConfig::new()).await.unwrap();
/// assert!(result.success());
/// assert_eq!(instance.runs(10).await.unwrap().len(), 1);
/// # });
/// ```
#[derive(Clone)]
pub struct Instance(Arc<Inner>);

#[derive(Clone)]
struct Inner {
    storage: Arc<dyn Storage>,
    retention: Option<Retention>,
    max_concurrency: usize,
    lease: Duration,
}

impl Instance {
    /// An instance that records runs in `storage`.
    pub fn new(storage: impl Storage) -> Self {
        Self::from_shared(Arc::new(storage))
    }

    /// An instance that records runs in a store shared with other code.
    pub fn from_shared(storage: Arc<dyn Storage>) -> Self {
        Instance(Arc::new(Inner {
            storage,
            retention: None,
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            lease: LEASE,
        }))
    }

    /// An instance that keeps runs in memory, gone when it is dropped: for tests and
    /// one-off scripts ([`materialize`](crate::materialize) uses one).
    pub fn ephemeral() -> Self {
        Self::new(InMemoryStorage::new())
    }

    /// An instance on the SQLite store at `path` (created when missing).
    #[cfg(feature = "sqlite")]
    pub fn sqlite(path: impl AsRef<std::path::Path>) -> Result<Self, Error> {
        Ok(Self::new(crate::storage::SqliteStorage::open(path)?))
    }

    /// An instance on the embedded SQLite store:
    /// [`SqliteStorage::default_path`](crate::storage::SqliteStorage::default_path).
    #[cfg(feature = "sqlite")]
    pub fn sqlite_default() -> Result<Self, Error> {
        Self::sqlite(crate::storage::SqliteStorage::default_path())
    }

    fn with(mut self, change: impl FnOnce(&mut Inner)) -> Self {
        change(Arc::make_mut(&mut self.0));
        self
    }

    /// Prunes the event log to `keep` after each run (see [`Storage::prune`]).
    pub fn with_retention(self, keep: Retention) -> Self {
        self.with(|inner| inner.retention = Some(keep))
    }

    /// Limits how many steps of one run run at once (default
    /// [`DEFAULT_MAX_CONCURRENCY`]; at least 1); [`RunOptions::max_concurrency`] overrides it.
    pub fn with_max_concurrency(self, limit: usize) -> Self {
        self.with(|inner| inner.max_concurrency = limit.max(1))
    }

    /// How long a run may go without a heartbeat before it counts as abandoned (default
    /// [`LEASE`]).
    pub fn with_lease(self, lease: Duration) -> Self {
        self.with(|inner| inner.lease = lease)
    }

    /// The run store.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.0.storage
    }

    /// The retention enforced after each run, if any.
    pub fn retention(&self) -> Option<Retention> {
        self.0.retention
    }

    fn settings(&self) -> Settings {
        Settings {
            storage: Arc::clone(&self.0.storage),
            retention: self.0.retention,
            max_concurrency: self.0.max_concurrency,
            owner: this_process(),
        }
    }

    /// Materializes the assets of `selection` and waits for the run to end.
    ///
    /// Everything is checked before the run starts — the selection, every selected asset's
    /// config, and inputs from unselected assets (read from storage) — and reported
    /// together. A run whose assets fail still returns `Ok`: look at
    /// [`RunResult::success`].
    pub async fn materialize(
        &self,
        defs: &Definitions,
        selection: &str,
        config: RunConfig,
    ) -> Result<RunResult, Error> {
        self.launch(defs, selection, RunOptions::new().config(config))
            .await?
            .wait()
            .await
    }

    /// Starts a run in the background and returns a handle to cancel or await it. Runs left
    /// active by a process that died are ended first.
    pub async fn launch(
        &self,
        defs: &Definitions,
        selection: &str,
        options: RunOptions,
    ) -> Result<RunHandle, Error> {
        self.recover_abandoned_runs().await?;
        let storage = &*self.0.storage;
        let plan = Plan::new(defs, storage, selection, &options.config, &HashMap::new()).await?;
        start(&self.settings(), defs, selection, options, plan, None).await
    }

    /// Re-executes the assets of run `run_id` that did not succeed (failed, skipped,
    /// cancelled or cut off by a crash), with the same config unless `options` gives one.
    /// The assets that succeeded are not run again: where an output of theirs is needed, it
    /// is read from that run's materializations.
    pub async fn reexecute_from_failure(
        &self,
        defs: &Definitions,
        run_id: &RunId,
        mut options: RunOptions,
    ) -> Result<RunHandle, Error> {
        let parent = self.run(run_id).await?;
        if !parent.status.is_final() {
            return Err(Error::RunStillRunning {
                run_id: run_id.to_string(),
            });
        }
        let events = self.0.storage.events(run_id, None).await?;
        let again: Vec<String> = outcomes_from_events(&parent.assets, &events)
            .into_iter()
            .filter(|outcome| outcome.status != StepStatus::Succeeded)
            .map(|outcome| outcome.key.to_string())
            .collect();
        if again.is_empty() {
            return Err(Error::NothingToReexecute {
                run_id: run_id.to_string(),
            });
        }
        let outputs = events
            .iter()
            .filter_map(|event| {
                let m = event.materialization()?;
                Some((m.asset.clone(), m.value.clone()))
            })
            .collect();
        let selection = again.join(" ");
        if options.config == RunConfig::default() {
            options.config = parent.config.clone();
        }
        let storage = &*self.0.storage;
        let plan = Plan::new(defs, storage, &selection, &options.config, &outputs).await?;
        let settings = self.settings();
        start(
            &settings,
            defs,
            &selection,
            options,
            plan,
            Some(run_id.clone()),
        )
        .await
    }

    /// Asks the process running `run_id` to cancel it, and tells how the run stands: its
    /// process stops it within a few seconds ([`HEARTBEAT_INTERVAL`](crate::HEARTBEAT_INTERVAL))
    /// and records how it ended — which may still be "succeeded" when the run finished
    /// first. A run whose process is gone is ended as failed at once; a run that has already
    /// ended is left as it is. Use [`wait_for_end`](Self::wait_for_end) to learn the end.
    pub async fn cancel_run(&self, run_id: &RunId, reason: &str) -> Result<RunStatus, Error> {
        self.recover_abandoned_runs().await?;
        self.0.storage.request_cancel(run_id, reason).await?;
        Ok(self.run(run_id).await?.status)
    }

    /// Waits (polling storage, at most `timeout`) until run `run_id` has ended; returns its
    /// record as it stands then.
    pub async fn wait_for_end(
        &self,
        run_id: &RunId,
        timeout: Duration,
    ) -> Result<RunRecord, Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let run = self.run(run_id).await?;
            if run.status.is_final() || tokio::time::Instant::now() >= deadline {
                return Ok(run);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Run `run_id`, after ending abandoned runs (where the store can be written).
    pub async fn run(&self, run_id: &RunId) -> Result<RunRecord, Error> {
        self.recover_before_reading().await;
        self.0
            .storage
            .run(run_id)
            .await?
            .ok_or_else(|| Error::RunNotFound(run_id.to_string()))
    }

    /// The newest runs first, at most `limit`, after ending abandoned runs (where the store
    /// can be written).
    pub async fn runs(&self, limit: usize) -> Result<Vec<RunRecord>, Error> {
        self.recover_before_reading().await;
        self.0.storage.runs(limit).await
    }

    /// The event log of run `run_id`, in order.
    pub async fn events(&self, run_id: &RunId) -> Result<Vec<Event>, Error> {
        self.0.storage.events(run_id, None).await
    }

    /// The state of every asset of `defs`: its last materialization and whether it is stale.
    pub async fn asset_states(&self, defs: &Definitions) -> Result<Vec<AssetState>, Error> {
        crate::state::asset_states(defs, &*self.0.storage).await
    }

    /// Removes finished runs outside `keep`, with their events (see [`Storage::prune`]).
    pub async fn prune(&self, keep: Retention) -> Result<PruneReport, Error> {
        self.0.storage.prune(keep, now()).await
    }

    /// Ends abandoned runs before a read, so it shows them as they are; a store that cannot
    /// be written (read-only, damaged) is read as it stands.
    async fn recover_before_reading(&self) {
        if let Err(e) = self.recover_abandoned_runs().await {
            tracing::warn!(target: "dagrs::storage", "cannot end abandoned runs before reading: {e}");
        }
    }

    /// Ends every active run whose process died or stopped sending heartbeats (see
    /// [`recover_abandoned_runs`]); returns the runs it ended.
    pub async fn recover_abandoned_runs(&self) -> Result<Vec<RunId>, Error> {
        recover_abandoned_runs(&*self.0.storage, self.0.lease, now()).await
    }
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("retention", &self.0.retention)
            .field("max_concurrency", &self.0.max_concurrency)
            .field("lease", &self.0.lease)
            .finish_non_exhaustive()
    }
}

/// Materializes the assets of `selection` of `defs` on an ephemeral, in-memory instance and
/// waits for the run to end: the one-line path for tests and scripts. See
/// [`Instance::materialize`].
pub async fn materialize(
    defs: &Definitions,
    selection: &str,
    config: RunConfig,
) -> Result<RunResult, Error> {
    Instance::ephemeral()
        .materialize(defs, selection, config)
        .await
}
