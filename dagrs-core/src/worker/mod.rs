//! Scale-out: [`Worker`]s on any number of machines run the steps of queued runs, claimed
//! from a [`StepQueue`] (PostgreSQL's, in dagrs-postgres) under leases with fencing tokens.
//!
//! - [`step_queue`]: the contract with the queue, and [`IoManager`] for outputs;
//! - `execute`: one claimed step, run with the executor's own attempt logic;
//! - [`launcher`]: where a run is driven — in this process, a child process, or the queue.

pub mod launcher;
pub mod step_queue;

mod execute;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use self::execute::{Executed, Plans};
pub use self::launcher::{InProcessLauncher, QueueLauncher, RunLauncher, SubprocessLauncher};
pub use self::step_queue::{
    Claim, IoManager, QueuedStep, Renewal, StepEnd, StepQueue, WorkerRecord, DEFAULT_STEP_LEASE,
    QUEUE_OWNER,
};
use crate::definitions::Definitions;
use crate::error::Error;
use crate::event::now;
use crate::instance::Instance;
use crate::lock;

/// The default number of steps one worker runs at once.
pub const DEFAULT_WORKER_CONCURRENCY: usize = 16;

/// How long a stopping worker lets its steps finish before it hands them back.
pub const DEFAULT_WORKER_GRACE: Duration = Duration::from_secs(30);

/// The most step ends a worker records in one write.
const FINISH_BATCH: usize = 256;

/// A worker: claims ready steps of queued runs from its instance's [`StepQueue`], runs them
/// (with the executor's retries, timeouts, checks and hooks), and records each step's end
/// with its events and output in one write that its fencing token guards. Run several, in
/// several processes on several machines: they share the work through the queue.
///
/// ```no_run
/// # async fn demo(instance: dagrs_core::Instance, defs: dagrs_core::Definitions)
/// #     -> Result<(), dagrs_core::Error> {
/// use dagrs_core::worker::Worker;
/// use tokio_util::sync::CancellationToken;
///
/// let stop = CancellationToken::new(); // cancel it (e.g. on SIGTERM) to stop gracefully
/// Worker::new(&instance, defs)?.concurrency(8).run(stop).await?;
/// # Ok(()) }
/// ```
pub struct Worker {
    instance: Instance,
    defs: Definitions,
    queue: Arc<dyn StepQueue>,
    io: Option<Arc<dyn IoManager>>,
    concurrency: usize,
    lease: Duration,
    grace: Duration,
    poll: Duration,
    id: String,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.id)
            .field("concurrency", &self.concurrency)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// A worker of `instance`'s step queue running the steps of `defs` (the same definitions
    /// as the processes that queue the runs). Fails when the instance has no step queue.
    pub fn new(instance: &Instance, defs: Definitions) -> Result<Self, Error> {
        let queue = Arc::clone(instance.step_queue().ok_or(Error::NoStepQueue)?);
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        Ok(Worker {
            instance: instance.clone(),
            defs,
            queue,
            io: None,
            concurrency: DEFAULT_WORKER_CONCURRENCY,
            lease: DEFAULT_STEP_LEASE,
            grace: DEFAULT_WORKER_GRACE,
            poll: Duration::from_secs(1),
            id: format!(
                "{host}:{}:{}",
                std::process::id(),
                uuid::Uuid::new_v4().simple()
            ),
        })
    }

    /// Runs at most `steps` steps at once (at least 1; default
    /// [`DEFAULT_WORKER_CONCURRENCY`]).
    pub fn concurrency(mut self, steps: usize) -> Self {
        self.concurrency = steps.max(1);
        self
    }

    /// How long a claim lasts without a heartbeat (default [`DEFAULT_STEP_LEASE`], at least
    /// 100 ms): after a crash, another worker takes the step over within this time.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_millis(100));
        self
    }

    /// How long a stopping worker lets its steps finish (default [`DEFAULT_WORKER_GRACE`]).
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// How often an idle worker looks for steps without being notified (default 1 s).
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll = interval.max(Duration::from_millis(10));
        self
    }

    /// Keeps step outputs in `io` instead of the step queue.
    pub fn io_manager(mut self, io: impl IoManager) -> Self {
        self.io = Some(Arc::new(io));
        self
    }

    /// The worker's id, as `worker list` shows it.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Claims and runs steps until `stop` is cancelled; then claims nothing more, lets its
    /// steps finish within the grace period, hands back those still running, and leaves.
    /// Errors of the queue while running (a database restart) are logged and retried; only
    /// failing to register at all is returned.
    pub async fn run(self, stop: CancellationToken) -> Result<(), Error> {
        let started = now();
        let record = WorkerRecord {
            id: self.id.clone(),
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            pid: std::process::id(),
            started_at: started,
            heartbeat_at: started,
            claimed: 0,
        };
        self.queue
            .register_worker(&record, self.instance.pool_limits())
            .await?;
        tracing::info!(target: "dagrs::worker", worker = %self.id, "worker started");
        let shared = Arc::new(Shared {
            held: Mutex::new(HashMap::new()),
            plans: Plans::default(),
            finished_at: Mutex::new(None),
        });
        let slots = Arc::new(Semaphore::new(self.concurrency));
        let unrecorded = Arc::new(Semaphore::new(self.concurrency * 2));
        let (ends_tx, ends_rx) = mpsc::unbounded_channel();
        let heartbeat = tokio::spawn(heartbeat(
            Arc::clone(&self.queue),
            self.id.clone(),
            Arc::clone(&shared),
            self.lease,
        ));
        let finisher = tokio::spawn(finish_loop(
            Arc::clone(&self.queue),
            Arc::clone(&shared),
            ends_rx,
        ));
        let this = Arc::new(self);
        let mut pause = Duration::from_millis(50);
        let mut maintained = tokio::time::Instant::now();
        let maintain_every = (this.lease / 4).max(Duration::from_millis(100));
        while !stop.is_cancelled() {
            if maintained.elapsed() >= maintain_every {
                maintained = tokio::time::Instant::now();
                if let Err(e) = this.queue.maintain(this.lease).await {
                    tracing::warn!(target: "dagrs::worker", "cannot look for lost steps: {e}");
                }
            }
            let free = slots
                .available_permits()
                .min(unrecorded.available_permits());
            if free == 0 {
                // Wait for the limit that is reached: a step to end, or ends to be recorded.
                let limit = if slots.available_permits() == 0 {
                    &slots
                } else {
                    &unrecorded
                };
                tokio::select! {
                    _ = stop.cancelled() => break,
                    permit = Arc::clone(limit).acquire_owned() => drop(permit),
                    _ = tokio::time::sleep(maintain_every) => {}
                }
                continue;
            }
            let claims = match this.queue.claim(&this.id, free, this.lease).await {
                Ok(claims) => {
                    pause = Duration::from_millis(50);
                    claims
                }
                Err(e) => {
                    tracing::warn!(target: "dagrs::worker", "cannot claim steps, trying again in {pause:?}: {e}");
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
            if claims.is_empty() {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = this.queue.wait_for_steps(this.poll.min(maintain_every)) => {}
                }
                // Every idle worker is woken at once: one that has just ended a step lets
                // the others claim first, so that the steps of a chain spread between them.
                let recent = lock(&shared.finished_at)
                    .is_some_and(|at| at.elapsed() < Duration::from_millis(5));
                if recent {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                continue;
            }
            for claim in claims {
                let permit = Arc::clone(&slots)
                    .try_acquire_owned()
                    .expect("claims never outnumber the free slots");
                let unrecorded = Arc::clone(&unrecorded)
                    .try_acquire_owned()
                    .expect("claims never outnumber the unrecorded ends allowed");
                let cancel = CancellationToken::new();
                lock(&shared.held).insert(
                    claim.token,
                    Held {
                        claim: claim.clone(),
                        cancel: cancel.clone(),
                        running: true,
                        releasing: false,
                    },
                );
                let this = Arc::clone(&this);
                let shared = Arc::clone(&shared);
                let ends = ends_tx.clone();
                tokio::spawn(async move {
                    let token = claim.token;
                    let executed = execute::run(&this, &shared.plans, claim, cancel).await;
                    if let Some(held) = lock(&shared.held).get_mut(&token) {
                        held.running = false;
                    }
                    // The slot frees as the step ends: the next claims overlap the writing
                    // of this one's end, which `unrecorded` still bounds.
                    drop(permit);
                    let _ = ends.send((executed, unrecorded));
                });
            }
        }
        // Stopping: nothing new; in-flight steps get the grace period, then are handed back.
        let all = u32::try_from(this.concurrency).unwrap_or(u32::MAX);
        let drained = tokio::time::timeout(this.grace, slots.acquire_many(all)).await;
        if drained.is_err() {
            hand_back(&shared);
            let _ = slots.acquire_many(all).await;
        }
        drop(ends_tx);
        let _ = finisher.await;
        heartbeat.abort();
        this.queue.deregister_worker(&this.id).await?;
        tracing::info!(target: "dagrs::worker", worker = %this.id, "worker stopped");
        Ok(())
    }
}

/// Stops the steps still running after the grace period: they end as handed back.
fn hand_back(shared: &Shared) {
    let mut held = lock(&shared.held);
    tracing::warn!(target: "dagrs::worker", steps = held.len(), "grace period over: handing back the steps still running");
    for step in held.values_mut().filter(|step| step.running) {
        step.releasing = true;
        step.cancel.cancel();
    }
}

/// A claim this worker holds.
struct Held {
    claim: step_queue::Claim,
    cancel: CancellationToken,
    /// Its step still runs (else its end waits to be recorded).
    running: bool,
    /// Handed back unfinished when it ends (the worker is stopping), not recorded.
    releasing: bool,
}

/// What the worker's tasks share.
struct Shared {
    held: Mutex<HashMap<i64, Held>>,
    plans: Plans,
    /// When this worker last recorded step ends.
    finished_at: Mutex<Option<std::time::Instant>>,
}

/// Renews the worker's leases every third of the lease, and stops the steps it lost or whose
/// run stopped.
async fn heartbeat(queue: Arc<dyn StepQueue>, id: String, shared: Arc<Shared>, lease: Duration) {
    let mut ticks = tokio::time::interval(lease / 3);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let claims: Vec<Claim> = lock(&shared.held)
            .values()
            .map(|held| held.claim.clone())
            .collect();
        match queue.renew(&id, &claims, lease).await {
            Ok(renewal) => {
                let held = lock(&shared.held);
                for token in &renewal.lost {
                    if let Some(step) = held.get(token) {
                        tracing::warn!(target: "dagrs::worker", run_id = %step.claim.run_id, asset = %step.claim.asset, "lost the step's lease: stopping it");
                        step.cancel.cancel();
                    }
                }
                for step in held.values() {
                    if renewal.stopped.contains(&step.claim.run_id) {
                        step.cancel.cancel();
                    }
                }
            }
            Err(e) => tracing::warn!(target: "dagrs::worker", "cannot renew the leases: {e}"),
        }
    }
}

/// Records step ends in batches, each as one write, trying again while the queue cannot be
/// reached (the lease decides whether a late write still counts).
async fn finish_loop(
    queue: Arc<dyn StepQueue>,
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<(Executed, tokio::sync::OwnedSemaphorePermit)>,
) {
    let mut batch = Vec::with_capacity(FINISH_BATCH);
    while rx.recv_many(&mut batch, FINISH_BATCH).await > 0 {
        let mut ends = Vec::with_capacity(batch.len());
        let mut released = Vec::new();
        let mut permits = Vec::with_capacity(batch.len());
        for (executed, permit) in batch.drain(..) {
            permits.push(permit);
            let releasing = lock(&shared.held)
                .get(&executed.claim().token)
                .is_some_and(|held| held.releasing);
            match executed {
                Executed::End(end) if !releasing => ends.push(end),
                other => released.push(other.claim().clone()),
            }
        }
        let tokens: Vec<i64> = ends
            .iter()
            .map(|end| end.claim.token)
            .chain(released.iter().map(|claim| claim.token))
            .collect();
        if !released.is_empty() {
            if let Err(e) = queue.release(&released).await {
                tracing::warn!(target: "dagrs::worker", "cannot hand steps back (their leases will expire): {e}");
            }
        }
        // Transactional steps carry their transaction: one write each, on it.
        let (own, shared_write): (Vec<StepEnd>, Vec<StepEnd>) =
            ends.into_iter().partition(|end| queue.writes_alone(end));
        for group in own.into_iter().map(|end| vec![end]).chain([shared_write]) {
            if group.is_empty() {
                continue;
            }
            finish_with_retries(&*queue, group).await;
        }
        let mut held = lock(&shared.held);
        for token in tokens {
            held.remove(&token);
        }
        drop(held);
        *lock(&shared.finished_at) = Some(std::time::Instant::now());
        drop(permits);
    }
}

/// Writes `ends`, trying again for a while when the queue cannot be reached.
async fn finish_with_retries(queue: &dyn StepQueue, ends: Vec<StepEnd>) {
    let mut pause = Duration::from_millis(50);
    let mut ends = Some(ends);
    for _ in 0..40 {
        let batch = ends.take().expect("kept for another try");
        let kept: Vec<StepEnd> = batch.clone();
        match queue.finish(batch).await {
            Ok(recorded) => {
                let lost = recorded.iter().filter(|r| !**r).count();
                if lost > 0 {
                    tracing::warn!(target: "dagrs::worker", steps = lost, "steps ended after their lease was lost: another worker has them");
                }
                return;
            }
            Err(e) => {
                tracing::warn!(target: "dagrs::worker", "cannot record step ends, trying again in {pause:?}: {e}");
                ends = Some(kept);
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
    }
    tracing::error!(target: "dagrs::worker", "gave up recording step ends: their leases expire and other workers run them again");
}
