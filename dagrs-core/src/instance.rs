//! [`Instance`]: where and how runs happen — the run store, retention, limits, recovery of
//! abandoned runs and cancellation. [`Definitions`] say what exists; an instance runs it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::asset::AssetSpec;
use crate::config::RunConfig;
use crate::definitions::Definitions;
use crate::error::{Error, Problem};
use crate::event::{now, Event, RunStatus, StepStatus};
use crate::executor::plan::{Plan, Request};
use crate::executor::{drive, start, RunHandle, RunOptions, Settings, DEFAULT_MAX_CONCURRENCY};
use crate::key::RunId;
use crate::partition::{AssetPartitions, PartitionContext};
use crate::pool::Pools;
use crate::queue::RunQueue;
use crate::result::{outcomes_from_events, RunResult};
use crate::state::AssetState;
use crate::storage::recovery::this_process;
use crate::storage::{
    recover_abandoned_runs, AutomationRecord, CheckRecord, InMemoryStorage, InstigatorStatus,
    PruneReport, Retention, RunRecord, Storage, LEASE,
};
use crate::worker::launcher::{InProcessLauncher, RunLauncher, LAUNCHER_TAG};
use crate::worker::{QueuedStep, StepQueue, QUEUE_OWNER};

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
    queue: RunQueue,
    /// The limited concurrency pools, their slots shared by every run driven here.
    pools: Pools,
    ended: Arc<tokio::sync::Notify>,
    step_queue: Option<Arc<dyn StepQueue>>,
    launcher: Arc<dyn RunLauncher>,
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
            queue: RunQueue::default(),
            pools: Pools::default(),
            ended: Arc::new(tokio::sync::Notify::new()),
            step_queue: None,
            launcher: Arc::new(InProcessLauncher),
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

    /// Limits the runs the daemon starts from the queue (default [`RunQueue::default`]).
    pub fn with_run_queue(self, queue: RunQueue) -> Self {
        self.with(|inner| inner.queue = queue)
    }

    /// Queues steps for [`Worker`](crate::worker::Worker)s in `queue` (dagrs-postgres's
    /// `PgStorage::instance` sets it up): [`enqueue`](Self::enqueue) and workers use it.
    pub fn with_step_queue(self, queue: Arc<dyn StepQueue>) -> Self {
        self.with(|inner| inner.step_queue = Some(queue))
    }

    /// The step queue, if the instance has one.
    pub fn step_queue(&self) -> Option<&Arc<dyn StepQueue>> {
        self.0.step_queue.as_ref()
    }

    /// Starts runs with `launcher` in [`launch_with_launcher`](Self::launch_with_launcher)
    /// (default: [`InProcessLauncher`]).
    pub fn with_launcher(self, launcher: impl RunLauncher) -> Self {
        self.with(|inner| inner.launcher = Arc::new(launcher))
    }

    /// The instance's run launcher.
    pub fn launcher(&self) -> &Arc<dyn RunLauncher> {
        &self.0.launcher
    }

    /// Starts a run of `selection` with the instance's [`launcher`](Self::launcher) and
    /// returns its id; follow it with [`wait_for_end`](Self::wait_for_end) and its events.
    pub async fn launch_with_launcher(
        &self,
        defs: &Definitions,
        selection: &str,
        options: RunOptions,
    ) -> Result<RunId, Error> {
        let launcher = Arc::clone(&self.0.launcher);
        launcher.launch(self, defs, selection, options).await
    }

    /// Puts a run of `selection` on the step queue, checked as [`launch`](Self::launch)
    /// checks it: recorded as running with all its steps at once, for the workers of any
    /// machine to claim ([`Worker`](crate::worker::Worker)); the run goes on without this
    /// process. Fails when the instance has no step queue.
    pub async fn enqueue(
        &self,
        defs: &Definitions,
        selection: &str,
        options: RunOptions,
    ) -> Result<RunId, Error> {
        let queue = self.0.step_queue.as_ref().ok_or(Error::NoStepQueue)?;
        let storage = &*self.0.storage;
        let plan = Plan::new(defs, storage, Request::new(selection, &options)).await?;
        let steps = queued_steps(defs, &plan)?;
        let run_id = options.run_id.clone().unwrap_or_default();
        let at = now();
        let run = RunRecord {
            run_id: run_id.clone(),
            status: RunStatus::Running,
            selection: selection.to_owned(),
            assets: plan.keys.clone(),
            config: options.config,
            tags: options.tags,
            started_at: at,
            ended_at: None,
            owner: QUEUE_OWNER.to_owned(),
            heartbeat_at: at,
            parent_run_id: None,
            failure: None,
        };
        let started = Event {
            run_id: run_id.clone(),
            seq: 0,
            timestamp: at,
            asset: None,
            kind: crate::event::EventKind::RunStarted {
                selection: plan.keys,
            },
        };
        queue.enqueue(&run, &started, &steps).await?;
        Ok(run_id)
    }

    /// Drives queued run `run_id` in this process, if it is still queued (what the child of
    /// a [`SubprocessLauncher`](crate::worker::SubprocessLauncher) does); `None` when another
    /// process started it first.
    pub async fn execute_queued(
        &self,
        defs: &Definitions,
        run_id: &RunId,
    ) -> Result<Option<RunHandle>, Error> {
        let run = self.run(run_id).await?;
        match self.start_one(defs, &run).await? {
            Taken::Started(handle) => Ok(Some(handle)),
            Taken::No => Ok(None),
            Taken::Failed => Err(Error::RunInterrupted {
                run_id: run_id.to_string(),
                reason: self.run(run_id).await?.failure.unwrap_or_default(),
            }),
        }
    }

    /// Limits concurrency pool `name` to `slots` steps at once, across every run this
    /// instance drives in this process (two runs started from it share the slots). A step
    /// of an asset in the pool ([`AssetSpec::pool`], `#[asset(pool = "...")]`) takes a slot
    /// for each attempt, after its run's own concurrency slot, and gives it back when the
    /// attempt ends (not while it waits to retry); a step that has to wait logs so.
    ///
    /// A pool without a limit is unlimited. A limit of 0 is allowed and means that steps of
    /// that pool never start: their runs wait until they are cancelled. Setting a pool's
    /// limit again replaces it, with fresh slots for the instance this returns.
    ///
    /// In-process runs hold the limit within this process only: runs of other processes on
    /// the same store do not count. A [`Worker`](crate::worker::Worker) records the limits in
    /// its step queue, where they hold across every worker of every machine.
    ///
    /// ```
    /// use dagrs_core::Instance;
    ///
    /// let instance = Instance::ephemeral().with_pool_limit("warehouse", 2);
    /// assert_eq!(instance.pool_limits().get("warehouse"), Some(&2));
    /// ```
    pub fn with_pool_limit(self, name: impl Into<String>, slots: usize) -> Self {
        self.with(|inner| inner.pools.set_limit(name.into(), slots))
    }

    /// The limit of each limited concurrency pool (see
    /// [`with_pool_limit`](Self::with_pool_limit)); pools not listed are unlimited.
    pub fn pool_limits(&self) -> &BTreeMap<String, usize> {
        self.0.pools.limits()
    }

    /// The run queue's limits.
    pub fn run_queue(&self) -> &RunQueue {
        &self.0.queue
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
            pools: self.0.pools.clone(),
            ended: Arc::clone(&self.0.ended),
        }
    }

    /// Completes when a run driven by this instance next ends.
    pub(crate) fn run_ended(&self) -> tokio::sync::futures::Notified<'_> {
        self.0.ended.notified()
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
        let plan = Plan::new(defs, storage, Request::new(selection, &options)).await?;
        start(&self.settings(), defs, selection, options, plan, None).await
    }

    /// Checks a launch of `selection` with `options` as [`launch`](Self::launch) checks it —
    /// the selection, every selected asset's config, inputs from unselected assets, the
    /// partition — without starting anything; returns the assets it would run, dependencies
    /// first.
    pub async fn check_launch(
        &self,
        defs: &Definitions,
        selection: &str,
        options: &RunOptions,
    ) -> Result<Vec<crate::key::AssetKey>, Error> {
        let plan = Plan::new(defs, &*self.0.storage, Request::new(selection, options)).await?;
        Ok(plan.keys)
    }

    /// Starts a run of job `name` in the background: its selection, its config (under what
    /// `options` gives) and tags, and its hooks.
    pub async fn launch_job(
        &self,
        defs: &Definitions,
        name: &str,
        options: RunOptions,
    ) -> Result<RunHandle, Error> {
        let (selection, options) = job_run(defs, name, options)?;
        self.launch(defs, &selection, options).await
    }

    /// Puts a run of `selection` in the queue, checked as [`launch`](Self::launch) checks it,
    /// and returns its id: a daemon starts it when the queue's limits allow
    /// ([`RunQueue`]). It can be cancelled while it waits.
    pub async fn submit(
        &self,
        defs: &Definitions,
        selection: &str,
        options: RunOptions,
    ) -> Result<RunId, Error> {
        let storage = &*self.0.storage;
        let plan = Plan::new(defs, storage, Request::new(selection, &options)).await?;
        let run_id = options.run_id.unwrap_or_default();
        let at = now();
        storage
            .create_run(&RunRecord {
                run_id: run_id.clone(),
                status: RunStatus::Queued,
                selection: selection.to_owned(),
                assets: plan.keys,
                config: options.config,
                tags: options.tags,
                started_at: at,
                ended_at: None,
                owner: String::new(),
                heartbeat_at: at,
                parent_run_id: None,
                failure: None,
            })
            .await?;
        Ok(run_id)
    }

    /// Puts a run of job `name` in the queue (see [`submit`](Self::submit)).
    pub async fn submit_job(
        &self,
        defs: &Definitions,
        name: &str,
        options: RunOptions,
    ) -> Result<RunId, Error> {
        let (selection, options) = job_run(defs, name, options)?;
        self.submit(defs, &selection, options).await
    }

    /// Starts the queued runs the queue's limits allow now, in this process, and returns
    /// their handles (what a daemon does each tick). Of several processes doing this at once,
    /// each run is started by one. A queued run that no longer plans (its assets changed) is
    /// ended as failed, saying why.
    pub async fn start_queued_runs(&self, defs: &Definitions) -> Result<Vec<RunHandle>, Error> {
        // Runs queued for a launcher's child process are the child's.
        self.start_queued(defs, |run| !run.tags.contains_key(LAUNCHER_TAG))
            .await
    }

    /// Starts the queued runs that `only` accepts, as [`start_queued_runs`] does.
    ///
    /// [`start_queued_runs`]: Self::start_queued_runs
    pub(crate) async fn start_queued(
        &self,
        defs: &Definitions,
        only: impl Fn(&RunRecord) -> bool,
    ) -> Result<Vec<RunHandle>, Error> {
        let storage = &*self.0.storage;
        let mut queued = storage.queued_runs().await?;
        let depth = queued.len();
        queued.retain(|run| only(run));
        if queued.is_empty() {
            crate::observe::meter::queue_depth(depth);
            return Ok(Vec::new());
        }
        let active = storage.running_runs().await?;
        let mut started = Vec::new();
        let mut taken = 0;
        for run in self.0.queue.pick(&queued, &active) {
            match self.start_one(defs, run).await? {
                Taken::No => continue,
                Taken::Failed => {}
                Taken::Started(handle) => started.push(handle),
            }
            taken += 1;
        }
        crate::observe::meter::queue_depth(depth - taken);
        Ok(started)
    }

    /// Starts queued run `run` in this process unless another process took it first; a run
    /// that no longer plans is ended as failed, saying why.
    async fn start_one(&self, defs: &Definitions, run: &RunRecord) -> Result<Taken, Error> {
        let storage = &*self.0.storage;
        let settings = self.settings();
        let at = now();
        if !storage.start_run(&run.run_id, &settings.owner, at).await? {
            return Ok(Taken::No);
        }
        crate::observe::meter::queue_wait((at - run.started_at).to_std().unwrap_or_default());
        match Plan::new(defs, storage, Request::of_run(run)).await {
            Ok(plan) => Ok(Taken::Started(drive(
                &settings,
                defs,
                run.run_id.clone(),
                plan,
                None,
                None,
            ))),
            Err(e) => {
                let failure = format!("cannot start the queued run: {e}");
                storage
                    .finish_run(&run.run_id, RunStatus::Failed, now(), Some(&failure))
                    .await?;
                Ok(Taken::Failed)
            }
        }
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
        if let Some(partition) = parent.tags.get(crate::job::PARTITION_TAG) {
            options
                .tags
                .entry(crate::job::PARTITION_TAG.into())
                .or_insert_with(|| partition.clone());
        }
        let storage = &*self.0.storage;
        let request = Request {
            known: &outputs,
            ..Request::new(&selection, &options)
        };
        let plan = Plan::new(defs, storage, request).await?;
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

    /// Cancels run `run_id`: a queued run at once; a running one by asking its process,
    /// which stops it within a few seconds ([`HEARTBEAT_INTERVAL`](crate::HEARTBEAT_INTERVAL))
    /// and records how it ended — which may still be "succeeded" when the run finished first
    /// (use [`wait_for_end`](Self::wait_for_end) to learn the end). A run whose process is
    /// gone is ended as failed first; a run that has already ended is left as it is.
    pub async fn cancel_run(&self, run_id: &RunId, reason: &str) -> Result<Cancellation, Error> {
        self.recover_abandoned_runs().await?;
        let changed = self.0.storage.request_cancel(run_id, reason, now()).await?;
        let status = self.run(run_id).await?.status;
        Ok(match status {
            RunStatus::Canceling if changed => Cancellation::Requested,
            RunStatus::Cancelled if changed => Cancellation::Cancelled,
            status => Cancellation::AlreadyEnded(status),
        })
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

    /// Turns schedule or sensor `name` on or off (in storage, so it survives restarts). A
    /// schedule turned on starts from now: ticks before now do not run.
    pub async fn set_instigator_status(
        &self,
        name: &str,
        status: InstigatorStatus,
    ) -> Result<(), Error> {
        let storage = &self.0.storage;
        if status == InstigatorStatus::Running {
            // An empty cursor: the daemon starts the schedule from its own now.
            storage
                .set_cursor(&crate::schedule::cursor_key(name), "")
                .await?;
        }
        storage.set_instigator_state(name, status).await
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

    /// The partitions of partitioned asset `asset`: which exist now, and which are
    /// materialized, failed, or in progress (targeted by a queued or running run).
    pub async fn asset_partitions(
        &self,
        defs: &Definitions,
        asset: &str,
    ) -> Result<AssetPartitions, Error> {
        let spec = known_asset(defs, asset)?;
        if spec.partitions.is_none() {
            return Err(Error::from(Problem::InvalidPartitions {
                asset: spec.key.to_string(),
                reason: "it is not partitioned".into(),
            }));
        }
        let mut all = self.partitions_of(&[spec]).await?;
        Ok(all.remove(0))
    }

    /// The evaluations of asset `asset`'s checks, newest first, at most `limit` (`asset checks`
    /// on the command line). The checks it has are [`Definitions::checks_of`].
    pub async fn check_records(
        &self,
        defs: &Definitions,
        asset: &str,
        limit: usize,
    ) -> Result<Vec<CheckRecord>, Error> {
        let spec = known_asset(defs, asset)?;
        self.0.storage.check_records(&spec.key, limit).await
    }

    /// The automation evaluations of asset `asset` the daemon recorded, newest first, at
    /// most `limit` (`asset automation` on the command line).
    pub async fn automation_records(
        &self,
        defs: &Definitions,
        asset: &str,
        limit: usize,
    ) -> Result<Vec<AutomationRecord>, Error> {
        let spec = known_asset(defs, asset)?;
        self.0
            .storage
            .automation_records(Some(&spec.key), limit)
            .await
    }

    /// The partitions of each of `specs` (partitioned assets; others are left out) as
    /// [`asset_partitions`](Self::asset_partitions) gives them, reading the active runs and
    /// the stored dynamic keys once for all of them: what the web UI's catalog shows.
    pub(crate) async fn partitions_of(
        &self,
        specs: &[&crate::AssetSpec],
    ) -> Result<Vec<AssetPartitions>, Error> {
        let specs: Vec<(&crate::AssetSpec, &crate::partition::PartitionsDefinition)> = specs
            .iter()
            .filter_map(|s| s.partitions.as_ref().map(|d| (*s, d)))
            .collect();
        if specs.is_empty() {
            return Ok(Vec::new());
        }
        self.recover_before_reading().await;
        let storage = &*self.0.storage;
        let defs: Vec<&crate::partition::PartitionsDefinition> =
            specs.iter().map(|&(_, d)| d).collect();
        let ctx = PartitionContext::load(storage, defs, now().timestamp()).await?;
        let mut active = storage.running_runs().await?;
        active.extend(storage.queued_runs().await?);
        let mut out = Vec::with_capacity(specs.len());
        for (spec, def) in specs {
            let mut status = storage.partition_status(&spec.key).await?;
            for run in active.iter().filter(|r| r.assets.contains(&spec.key)) {
                let target = run.tags.get(crate::job::PARTITION_TAG);
                if let Some(Ok(range)) = target.map(|t| def.parse_target(t, &ctx)) {
                    status.in_progress = status.in_progress.union(&range.to_set());
                }
            }
            out.push(AssetPartitions {
                asset: spec.key.clone(),
                all: def.all(&ctx),
                definition: def.clone(),
                status,
            });
        }
        Ok(out)
    }

    /// Adds keys to dynamic partitions definition `name` (kept in storage, in order);
    /// returns those that were new. Keys are checked first: non-empty, at most 255 bytes,
    /// without `|`, `...`, `,` or control characters.
    pub async fn add_dynamic_partitions(
        &self,
        name: &str,
        keys: &[String],
    ) -> Result<Vec<String>, Error> {
        let problems: Vec<Problem> = keys
            .iter()
            .filter(|k| !crate::partition::valid_key(k))
            .map(|k| Problem::InvalidPartition {
                target: crate::text::bounded(k, crate::text::ECHO_LIMIT).into_owned(),
                reason: "keys are non-empty, at most 255 bytes, and hold no `|`, `...`, `,` \
                         or control character"
                    .into(),
            })
            .collect();
        if !problems.is_empty() {
            return Err(Error::invalid(problems));
        }
        self.0.storage.add_dynamic_partitions(name, keys).await
    }

    /// Removes key `key` of dynamic partitions definition `name`; `false` when it had none.
    /// The status of its partitions is kept.
    pub async fn delete_dynamic_partition(&self, name: &str, key: &str) -> Result<bool, Error> {
        self.0.storage.delete_dynamic_partition(name, key).await
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
            .field("pools", &self.0.pools)
            .finish_non_exhaustive()
    }
}

/// What became of a queued run this process tried to start.
enum Taken {
    /// Another process started it first.
    No,
    /// It no longer plans: ended as failed.
    Failed,
    /// Started here.
    Started(RunHandle),
}

/// The steps of `plan` as the step queue takes them. A multi-asset's outs run as one step,
/// which the queue does not take (yet).
fn queued_steps(defs: &Definitions, plan: &Plan) -> Result<Vec<QueuedStep>, Error> {
    let graph = &defs.inner().graph;
    let position: std::collections::HashSet<usize> = plan.selected.iter().copied().collect();
    let in_run = |list: &[usize]| -> Vec<usize> {
        list.iter()
            .copied()
            .filter(|i| position.contains(i))
            .collect()
    };
    plan.selected
        .iter()
        .zip(&plan.steps)
        .map(|(&i, step)| {
            let spec = &graph.assets[i];
            if spec.multi.is_some() {
                return Err(Error::NotQueueable {
                    asset: spec.key.to_string(),
                    reason: "the outs of a multi-asset run as one step, which the step queue does not take yet".into(),
                });
            }
            Ok(QueuedStep {
                asset: spec.key.clone(),
                upstream: u32::try_from(in_run(&graph.edges.upstream[i]).len()).unwrap_or(u32::MAX),
                downstream: in_run(&graph.edges.downstream[i])
                    .into_iter()
                    .map(|d| graph.assets[d].key.clone())
                    .collect(),
                pool: spec.pool_name().map(str::to_owned),
                max_attempts: step.retry.max_retries().saturating_add(1),
            })
        })
        .collect()
}

/// What [`Instance::cancel_run`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancellation {
    /// The run's process was asked to stop it.
    Requested,
    /// The run was queued: it is cancelled.
    Cancelled,
    /// The run was not queued or running (it had ended, or was being cancelled already).
    AlreadyEnded(RunStatus),
}

/// The selection and options of a run of job `name`: the job's config under the options',
/// its tags, and the job marked.
fn job_run(
    defs: &Definitions,
    name: &str,
    options: RunOptions,
) -> Result<(String, RunOptions), Error> {
    let job = defs.job(name).ok_or_else(|| Error::UnknownJob {
        name: crate::text::bounded(name, crate::text::ECHO_LIMIT).into_owned(),
        hint: crate::error::Hint::closest(name, defs.jobs().iter().map(|j| j.name.as_str())),
    })?;
    let mut options = options.job(name);
    options.config = options.config.merged_over(&job.config);
    for (key, value) in &job.tags {
        options
            .tags
            .entry(key.clone())
            .or_insert_with(|| value.clone());
    }
    Ok((job.selection.clone(), options))
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

/// The asset with key `name`, or an error suggesting the closest keys.
fn known_asset<'a>(defs: &'a Definitions, name: &str) -> Result<&'a AssetSpec, Error> {
    defs.asset(name).ok_or_else(|| {
        let hint = crate::error::Hint::closest(name, defs.assets().map(|a| a.key.as_str()));
        Error::selection(name, vec![format!("no asset has this key{hint}")])
    })
}
