//! Runs a planned selection: records the run, drives its steps with tokio (each as soon as
//! its dependencies succeeded, up to a concurrency limit, with retries, timeouts, skipping
//! and cancellation), writes the event log in batches, and decides the run's end once.
//!
//! - [`plan`]: what runs, with which config, retries and inputs, checked up front;
//! - `scheduler`: the order steps start in, skipping and the run's outcome;
//! - `step`: one step's attempts;
//! - [`crate::log`]: the event log's drafts and writer.

mod checks;
mod multi_step;
pub(crate) mod plan;
mod scheduler;
pub(crate) mod step;
mod targets;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use self::plan::Plan;
use self::scheduler::Scheduler;
use crate::config::RunConfig;
use crate::definitions::Definitions;
use crate::error::Error;
use crate::event::{now, Event, RunStatus};
use crate::key::RunId;
use crate::log::{write_events, Backlog, Sink};
use crate::observe;
use crate::result::RunResult;
use crate::storage::{Retention, RunRecord, Storage};

/// The default limit on steps running at once in one run.
pub const DEFAULT_MAX_CONCURRENCY: usize = 16;

/// How often a running run records a heartbeat and looks for a cancellation request.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);

/// Options of one run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub(crate) config: RunConfig,
    max_concurrency: Option<usize>,
    pub(crate) tags: BTreeMap<String, String>,
    pub(crate) run_id: Option<RunId>,
    events: Option<mpsc::UnboundedSender<Event>>,
    pub(crate) job: Option<String>,
}

impl RunOptions {
    /// Default options: no run config beyond the definitions' defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// The run config, merged over the definitions' defaults.
    pub fn config(mut self, config: RunConfig) -> Self {
        self.config = config;
        self
    }

    /// Limits how many steps run at once (at least 1), overriding the instance's limit.
    pub fn max_concurrency(mut self, limit: usize) -> Self {
        self.max_concurrency = Some(limit.max(1));
        self
    }

    /// Adds a tag to the run.
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(key.into(), value.into());
        self
    }

    /// Materializes partition `key`, or the range `START...END` (END excluded), of the
    /// selected partitioned assets (tag [`PARTITION_TAG`](crate::PARTITION_TAG)).
    pub fn partition(mut self, key: impl Into<String>) -> Self {
        self.tags
            .insert(crate::job::PARTITION_TAG.into(), key.into());
        self
    }

    /// Materializes the partitions from `start` up to `end` (excluded).
    pub fn partition_range(self, start: &str, end: &str) -> Self {
        self.partition(format!("{start}{}{end}", crate::partition::RANGE_SEPARATOR))
    }

    /// Uses `run_id` instead of a random one.
    pub fn run_id(mut self, run_id: impl Into<RunId>) -> Self {
        self.run_id = Some(run_id.into());
        self
    }

    /// Marks the run as a run of job `name` (tag [`JOB_TAG`](crate::JOB_TAG)): its hooks run.
    /// [`Instance::launch_job`](crate::Instance::launch_job) sets it, with the job's selection,
    /// config and tags.
    pub fn job(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        self.tags.insert(crate::job::JOB_TAG.into(), name.clone());
        self.job = Some(name);
        self
    }

    /// Sends every event of the run, as it is recorded, to `events` (e.g. to show progress).
    pub fn forward_events(mut self, events: mpsc::UnboundedSender<Event>) -> Self {
        self.events = Some(events);
        self
    }
}

/// Where a run is recorded and how it is limited: what the instance hands the executor.
pub(crate) struct Settings {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) retention: Option<Retention>,
    pub(crate) max_concurrency: usize,
    pub(crate) owner: String,
    /// The instance's concurrency pools, shared by its runs.
    pub(crate) pools: crate::pool::Pools,
    /// Told whenever a run driven here ends (wakes the daemon).
    pub(crate) ended: Arc<tokio::sync::Notify>,
}

/// Records the planned run and starts driving it in the background.
pub(crate) async fn start(
    settings: &Settings,
    defs: &Definitions,
    selection: &str,
    options: RunOptions,
    plan: Plan,
    parent: Option<RunId>,
) -> Result<RunHandle, Error> {
    let run_id = options.run_id.clone().unwrap_or_default();
    let started_at = now();
    settings
        .storage
        .create_run(&RunRecord {
            run_id: run_id.clone(),
            status: RunStatus::Running,
            selection: selection.to_owned(),
            assets: plan.keys.clone(),
            config: options.config,
            tags: options.tags,
            started_at,
            ended_at: None,
            owner: settings.owner.clone(),
            heartbeat_at: started_at,
            parent_run_id: parent,
            failure: None,
        })
        .await?;
    Ok(drive(
        settings,
        defs,
        run_id,
        plan,
        options.max_concurrency,
        options.events,
    ))
}

/// Drives run `run_id`, already recorded as running by this process, in the background.
pub(crate) fn drive(
    settings: &Settings,
    defs: &Definitions,
    run_id: RunId,
    plan: Plan,
    max_concurrency: Option<usize>,
    forward: Option<mpsc::UnboundedSender<Event>>,
) -> RunHandle {
    let storage = Arc::clone(&settings.storage);
    let cancel = CancellationToken::new();
    let (tx, rx) = mpsc::unbounded_channel();
    let backlog = Arc::new(Backlog::default());
    let writer = tokio::spawn(write_events(
        Arc::clone(&storage),
        run_id.clone(),
        rx,
        Arc::clone(&backlog),
        forward,
    ));
    let heartbeat = tokio::spawn(heartbeat(
        Arc::clone(&storage),
        run_id.clone(),
        cancel.clone(),
    ));
    let span = observe::trace::run_span(&run_id, &plan.selection, plan.job.as_deref());
    observe::meter::run_started();
    let limit = max_concurrency.unwrap_or(settings.max_concurrency);
    let scheduler = Scheduler {
        defs: defs.clone(),
        run_id: run_id.clone(),
        sink: Sink::Run(tx, backlog),
        cancel: cancel.clone(),
        semaphore: Arc::new(Semaphore::new(limit)),
        pools: settings.pools.clone(),
    };
    let retention = settings.retention;
    let notify = Arc::clone(&settings.ended);
    let task = tokio::spawn({
        let run_id = run_id.clone();
        async move {
            let driven = scheduler.drive(plan).await;
            drop(scheduler);
            let written = writer.await;
            heartbeat.abort();
            let written = written.map_err(|e| Error::RunInterrupted {
                run_id: run_id.to_string(),
                reason: format!("the event writer stopped: {e}"),
            })?;
            // A run whose log could not be stored is never recorded as succeeded.
            let (status, failure) = match &written {
                Some(e) => (
                    RunStatus::Failed,
                    Some(format!("cannot record its events: {e}")),
                ),
                None => (driven.status, None),
            };
            observe::trace::record_status(
                &tracing::Span::current(),
                status == RunStatus::Succeeded,
                None,
            );
            observe::meter::run_ended(status);
            let ended = storage
                .finish_run(&run_id, status, now(), failure.as_deref())
                .await?;
            notify.notify_one();
            if let Some(keep) = retention {
                storage.prune(keep, now()).await?;
            }
            if let Some(error) = written {
                return Err(error);
            }
            // Another process may have ended the run first: its record is the truth.
            let status = if ended {
                status
            } else {
                storage.run(&run_id).await?.map_or(status, |run| run.status)
            };
            Ok(RunResult {
                run_id,
                status,
                steps: driven.outcomes,
                outputs: driven.outputs,
                values: driven.values,
                storage,
            })
        }
        .instrument(span)
    });
    RunHandle {
        run_id,
        cancel,
        task,
    }
}

/// Records a heartbeat for the run every [`HEARTBEAT_INTERVAL`] until aborted, and cancels
/// the run when its stored status asks for it (a `run cancel` from another process).
async fn heartbeat(storage: Arc<dyn Storage>, run_id: RunId, cancel: CancellationToken) {
    let mut ticks = tokio::time::interval(HEARTBEAT_INTERVAL);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        if let Err(e) = storage.heartbeat(&run_id, now()).await {
            tracing::warn!(target: "dagrs::storage", run_id = %run_id, "cannot record a heartbeat: {e}");
        }
        match storage.run(&run_id).await {
            Ok(Some(run)) if run.status != RunStatus::Running => cancel.cancel(),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(target: "dagrs::storage", run_id = %run_id, "cannot read the run's status: {e}")
            }
        }
    }
}

/// A run in progress.
pub struct RunHandle {
    run_id: RunId,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Result<RunResult, Error>>,
}

impl std::fmt::Debug for RunHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunHandle")
            .field("run_id", &self.run_id)
            .field("cancelled", &self.cancel.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl RunHandle {
    /// The run's id.
    pub fn run_id(&self) -> &RunId {
        &self.run_id
    }

    /// Cancels the run: nothing new starts, running steps are told (`ctx.is_cancelled()`)
    /// and async steps are stopped at their next `.await`; the run ends as cancelled.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Whether the run has ended (its result waits in [`wait`](Self::wait)).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// A token that cancels the run when cancelled, e.g. to wire it to Ctrl-C.
    pub fn cancellation_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Waits for the run to end.
    pub async fn wait(self) -> Result<RunResult, Error> {
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(Error::RunInterrupted {
                run_id: self.run_id.to_string(),
                reason: e.to_string(),
            }),
        }
    }
}
