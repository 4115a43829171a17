//! [`StepQueue`]: the contract between [`Worker`](super::Worker)s and the store that queues
//! the steps of their runs (dagrs-postgres implements it on PostgreSQL), and [`IoManager`]:
//! where a step's output waits for the steps on other machines that take it.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::Error;
use crate::event::{Event, StepStatus};
use crate::key::{AssetKey, RunId};
use crate::storage::RunRecord;

/// The owner recorded on runs driven by a step queue rather than by one process: recovery
/// of abandoned runs leaves them to the queue's leases.
pub const QUEUE_OWNER: &str = "queue";

/// The default lease of a claimed step: a worker that does not renew it within this time
/// loses the step, and another worker runs it again.
pub const DEFAULT_STEP_LEASE: Duration = Duration::from_secs(30);

/// One step of a run as it is queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedStep {
    /// The asset it materializes.
    pub asset: AssetKey,
    /// How many of the run's steps it waits for (0: ready at once).
    pub upstream: u32,
    /// The run's steps that wait for it.
    pub downstream: Vec<AssetKey>,
    /// Its concurrency pool, if any.
    pub pool: Option<String>,
    /// How many attempts it may take in all (its retry policy's retries, plus one).
    pub max_attempts: u32,
}

/// A step a worker claimed: it holds it until [`Claim::lease_until`], renewed by heartbeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The step's run.
    pub run_id: RunId,
    /// The step's asset.
    pub asset: AssetKey,
    /// The attempt this claim is for (1 for the first).
    pub attempt: u32,
    /// The fencing token: every write of the step names it, and fails once another claim of
    /// the step has taken over or the lease expired.
    pub token: i64,
    /// When the lease ends unless renewed.
    pub lease_until: DateTime<Utc>,
}

/// How a claimed step ended, with everything to record for it at once.
#[derive(Clone)]
pub struct StepEnd {
    /// The claim it ends.
    pub claim: Claim,
    /// `Succeeded`, `Failed` or `Cancelled`.
    pub status: StepStatus,
    /// Its events, in order; the queue numbers them (their `seq` is ignored).
    pub events: Vec<Event>,
    /// Its serialized output, kept for downstream steps, unless the worker's own
    /// [`IoManager`] stored it.
    pub output: Option<serde_json::Value>,
    /// For a failed attempt to be tried again: after how long (the step becomes ready
    /// again, for any worker).
    pub retry_in: Option<Duration>,
    /// What the queue attached to the step ([`StepQueue::attachment`]), e.g. a transaction
    /// the asset opened, to commit with the step's end.
    pub attachment: Option<Arc<dyn Any + Send + Sync>>,
}

impl std::fmt::Debug for StepEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepEnd")
            .field("claim", &self.claim)
            .field("status", &self.status)
            .field("events", &self.events.len())
            .finish_non_exhaustive()
    }
}

/// A worker as the queue knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerRecord {
    /// Its id (unique per process start).
    pub id: String,
    /// The machine it runs on.
    pub host: String,
    /// Its process id there.
    pub pid: u32,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Its last heartbeat.
    pub heartbeat_at: DateTime<Utc>,
    /// How many steps it holds now.
    pub claimed: u32,
}

/// What a heartbeat learned about a worker's claims.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Renewal {
    /// Claims the worker no longer holds (lease expired, or taken over): it must drop them.
    pub lost: Vec<i64>,
    /// Runs of its claims that are no longer running (cancelled): their steps must stop.
    pub stopped: Vec<RunId>,
}

/// A store that queues the steps of runs for [`Worker`](super::Worker)s on any machine: they
/// claim ready steps under a lease with a fencing token, renew it, and end each step with one
/// atomic write of its events, output and consequences (downstream steps made ready or
/// skipped, the run ended after its last step). dagrs-postgres implements it with
/// `FOR UPDATE SKIP LOCKED`, leases and `LISTEN/NOTIFY`.
#[async_trait]
pub trait StepQueue: Send + Sync + 'static {
    /// Records `run` (status running, owner [`QUEUE_OWNER`]) with its `RunStarted` event and
    /// its steps, at once, and wakes idle workers.
    async fn enqueue(
        &self,
        run: &RunRecord,
        started: &Event,
        steps: &[QueuedStep],
    ) -> Result<(), Error>;

    /// Registers (or re-registers) a worker and sets the slots of the pools it knows.
    async fn register_worker(
        &self,
        worker: &WorkerRecord,
        pools: &std::collections::BTreeMap<String, usize>,
    ) -> Result<(), Error>;

    /// Removes a worker that stopped.
    async fn deregister_worker(&self, worker: &str) -> Result<(), Error>;

    /// The registered workers, newest first.
    async fn workers(&self) -> Result<Vec<WorkerRecord>, Error>;

    /// Claims up to `limit` ready steps for `worker`, each under a lease of `lease`; steps of
    /// a pool are claimed only while the pool has a free slot.
    async fn claim(&self, worker: &str, limit: usize, lease: Duration)
        -> Result<Vec<Claim>, Error>;

    /// Records the worker's heartbeat and renews the leases of `claims` for `lease`.
    async fn renew(
        &self,
        worker: &str,
        claims: &[Claim],
        lease: Duration,
    ) -> Result<Renewal, Error>;

    /// Records how claimed steps ended; returns, per end, whether it was recorded (`false`:
    /// the claim had been lost, nothing was written).
    async fn finish(&self, ends: Vec<StepEnd>) -> Result<Vec<bool>, Error>;

    /// Hands claimed steps back unstarted (a worker stopping): ready again, the attempt not
    /// counted.
    async fn release(&self, claims: &[Claim]) -> Result<(), Error>;

    /// Ends what nobody holds any more: steps whose lease expired (retried while their
    /// attempts allow, else failed), cancelled runs' unclaimed steps, runs left with no step
    /// to run. Returns how many steps it changed.
    async fn maintain(&self, lease: Duration) -> Result<usize, Error>;

    /// The output step `asset` of `run_id` stored, if any.
    async fn load_output(
        &self,
        run_id: &RunId,
        asset: &AssetKey,
    ) -> Result<Option<serde_json::Value>, Error>;

    /// Waits until steps may have become ready (a notification), or `timeout` passed.
    async fn wait_for_steps(&self, timeout: Duration);

    /// A fresh value to attach to a claimed step's context (see
    /// [`AssetContext::extension`](crate::AssetContext::extension)), handed back in its
    /// [`StepEnd`]; `None` (the default) attaches nothing.
    fn attachment(&self) -> Option<Arc<dyn Any + Send + Sync>> {
        None
    }

    /// Whether `end` must be written on its own rather than with others in one batch (it
    /// commits a transaction of its own). Default: never.
    fn writes_alone(&self, _end: &StepEnd) -> bool {
        false
    }

    /// The largest serialized output the queue keeps, in bytes.
    fn output_limit(&self) -> usize;
}

/// Where step outputs wait for downstream steps on other workers: Dagster's IO managers.
/// Without one, a [`Worker`](super::Worker) keeps outputs in its [`StepQueue`] (in
/// PostgreSQL, written with the step's end); an implementation may put them elsewhere
/// (object storage, a shared disk) and keep only what it needs to find them.
#[async_trait]
pub trait IoManager: Send + Sync + 'static {
    /// Stores the output of step `asset` of `run_id` (again, if a retry produced it anew).
    async fn store(
        &self,
        run_id: &RunId,
        asset: &AssetKey,
        value: &serde_json::Value,
    ) -> Result<(), Error>;

    /// The stored output of step `asset` of `run_id`, if any.
    async fn load(
        &self,
        run_id: &RunId,
        asset: &AssetKey,
    ) -> Result<Option<serde_json::Value>, Error>;
}
