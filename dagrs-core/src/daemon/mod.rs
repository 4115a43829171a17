//! The daemon: evaluates schedules and sensors, starts queued runs, and records every tick —
//! a value an embedding service spawns on its own runtime, or the `daemon` CLI verb. Each
//! tick fires once, also with several daemons on one PostgreSQL store: ticks and run keys are
//! claimed in storage, and queued runs are started by compare-and-set.

mod evaluate;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::automation::evaluate::{self as automation, AutomationState};
use crate::clock::{Clock, SystemClock};
use crate::definitions::Definitions;
use crate::error::Error;
use crate::executor::RunHandle;
use crate::instance::Instance;
use crate::key::RunId;
use crate::lock;
use crate::sensor::SensorResult;
use crate::storage::TickRecord;

/// How often the daemon looks at its sensors and queue when no schedule is due sooner.
pub const DEFAULT_DAEMON_INTERVAL: Duration = Duration::from_secs(1);

/// How long a stopping daemon lets its runs finish before it cancels them.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(60);

/// What one evaluation pass did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Evaluation {
    /// The ticks this daemon claimed, as they ended.
    pub ticks: Vec<TickRecord>,
    /// The runs it queued for backfills.
    pub backfill_runs: Vec<RunId>,
    /// The runs it started from the queue.
    pub started: Vec<RunId>,
    /// The runs it queued for assets whose automation condition held.
    pub automation_runs: Vec<RunId>,
}

/// Evaluates the schedules and sensors of `defs` and starts queued runs on `instance`.
///
/// ```no_run
/// # async fn demo(instance: dagrs_core::Instance, defs: dagrs_core::Definitions) {
/// use dagrs_core::Daemon;
/// use tokio_util::sync::CancellationToken;
///
/// let shutdown = CancellationToken::new();
/// let daemon = Daemon::new(instance, defs);
/// let running = tokio::spawn({
///     let shutdown = shutdown.clone();
///     async move { daemon.run(shutdown).await }
/// });
/// // ... later, on SIGTERM:
/// shutdown.cancel();
/// running.await.unwrap().unwrap();
/// # }
/// ```
pub struct Daemon {
    instance: Instance,
    defs: Definitions,
    clock: Arc<dyn Clock>,
    interval: Duration,
    grace: Duration,
    state: Mutex<State>,
}

/// What the daemon remembers between passes.
#[derive(Default)]
struct State {
    /// Per schedule: the last tick handled (read from storage once).
    schedule_cursors: HashMap<String, DateTime<Utc>>,
    /// Per sensor: when it was last evaluated by this daemon.
    sensor_evaluated: HashMap<String, DateTime<Utc>>,
    /// The runs this daemon started and that may still run.
    in_flight: Vec<RunHandle>,
    /// What automation knows between passes (loaded at the first).
    automation: Option<AutomationState>,
}

impl Daemon {
    /// A daemon for `defs` on `instance`, on the system clock.
    pub fn new(instance: Instance, defs: Definitions) -> Self {
        Daemon {
            instance,
            defs,
            clock: Arc::new(SystemClock),
            interval: DEFAULT_DAEMON_INTERVAL,
            grace: DEFAULT_GRACE,
            state: Mutex::default(),
        }
    }

    /// Reads the time from `clock` (a [`ManualClock`](crate::ManualClock) in tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Looks at sensors and the queue at least this often (default
    /// [`DEFAULT_DAEMON_INTERVAL`]); schedules wake it at their ticks.
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(1));
        self
    }

    /// How long [`run`](Self::run) lets runs finish after shutdown before cancelling them
    /// (default [`DEFAULT_GRACE`]).
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The instance it works on.
    pub fn instance(&self) -> &Instance {
        &self.instance
    }

    /// One pass at the clock's time: fires due schedule ticks, evaluates due sensors and the
    /// assets' automation conditions, advances backfills, then starts what the run queue
    /// allows. A failing schedule or
    /// sensor is recorded as a failed tick; the pass goes on.
    pub async fn evaluate(&self) -> Result<Evaluation, Error> {
        // Runs whose process died hold no queue slot, and their backfills see them end.
        if let Err(e) = self.instance.recover_abandoned_runs().await {
            tracing::warn!(target: "dagrs::daemon", "cannot end abandoned runs: {e}");
        }
        let now = self.clock.now();
        let mut evaluation = Evaluation::default();
        let states = self.instance.storage().instigator_states().await?;
        self.evaluate_schedules(now, &states, &mut evaluation)
            .await?;
        self.evaluate_sensors(now, &states, &mut evaluation).await?;
        // A store that fails automation still lets the queue move; the next pass loads again.
        if let Err(e) = self.evaluate_automation(now, &mut evaluation).await {
            tracing::warn!(target: "dagrs::daemon", "automation evaluation failed: {e}");
        }
        self.run_queue(&mut evaluation).await?;
        Ok(evaluation)
    }

    /// Evaluates the automation conditions of the assets and queues the runs they request.
    async fn evaluate_automation(
        &self,
        now: DateTime<Utc>,
        evaluation: &mut Evaluation,
    ) -> Result<(), Error> {
        let taken = lock(&self.state).automation.take();
        let mut state = match taken {
            Some(state) => state,
            None => AutomationState::load(&self.defs, &self.instance, now).await?,
        };
        if state.is_idle() {
            lock(&self.state).automation = Some(state);
            return Ok(());
        }
        // On an error the state is dropped, and loaded again at the next pass.
        let requested = automation::evaluate(&mut state, &self.defs, &self.instance, now).await?;
        evaluation.automation_runs = requested.runs;
        lock(&self.state).automation = Some(state);
        Ok(())
    }

    /// Advances backfills and starts what the run queue allows: what a pass does when a run
    /// ended, between full passes.
    async fn run_queue(&self, evaluation: &mut Evaluation) -> Result<(), Error> {
        evaluation.backfill_runs = self.instance.advance_backfills(&self.defs).await?;
        let started = self.instance.start_queued_runs(&self.defs).await?;
        evaluation.started = started.iter().map(|h| h.run_id().clone()).collect();
        let mut state = lock(&self.state);
        state.in_flight.retain(|handle| !handle.is_finished());
        state.in_flight.extend(started);
        Ok(())
    }

    /// Evaluates sensor `name` once, as the daemon would, and returns what it says —
    /// launching nothing, claiming no tick, storing no cursor.
    pub async fn preview_sensor(&self, name: &str) -> Result<SensorResult, Error> {
        let sensor = self
            .defs
            .sensor(name)
            .ok_or_else(|| Error::UnknownInstigator {
                name: crate::text::bounded(name, crate::text::ECHO_LIMIT).into_owned(),
                hint: crate::error::Hint::closest(
                    name,
                    self.defs.sensors().iter().map(|s| s.name()),
                ),
            })?;
        let storage = self.instance.storage();
        let latest = storage.latest_materializations().await?;
        let latest = latest
            .into_iter()
            .map(|m| (m.asset.to_string(), m))
            .collect();
        let cursor = storage.cursor(&crate::sensor::cursor_key(name)).await?;
        self.sense(sensor, self.clock.now(), cursor, &latest)
            .await
            .map_err(|e| Error::Sensor {
                sensor: name.to_owned(),
                reason: crate::text::mask_secrets(&format!("{e:#}")),
            })
    }

    /// Waits until every run this daemon started has ended.
    pub async fn wait_for_runs(&self) {
        let handles = std::mem::take(&mut lock(&self.state).in_flight);
        for handle in handles {
            let run_id = handle.run_id().clone();
            if let Err(e) = handle.wait().await {
                tracing::warn!(target: "dagrs::daemon", run_id = %run_id, "a run ended with an error: {e}");
            }
        }
    }

    /// Evaluates until `shutdown` is cancelled, waking at schedule ticks and at least every
    /// interval — and, to advance backfills and the queue, whenever one of its runs ends;
    /// then starts nothing more, lets its runs finish within the grace period, and cancels
    /// (and records as cancelled) those still running.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<(), Error> {
        tracing::info!(target: "dagrs::daemon", "daemon started");
        let mut next_full = tokio::time::Instant::now();
        while !shutdown.is_cancelled() {
            let passed = if tokio::time::Instant::now() >= next_full {
                let passed = self.evaluate().await.map(drop);
                next_full = tokio::time::Instant::now() + self.next_wake();
                passed
            } else {
                self.run_queue(&mut Evaluation::default()).await
            };
            if let Err(e) = passed {
                tracing::error!(target: "dagrs::daemon", "evaluation failed: {e}");
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep_until(next_full) => {}
                _ = self.instance.run_ended() => {}
            }
        }
        tracing::info!(target: "dagrs::daemon", "daemon stopping");
        let handles = std::mem::take(&mut lock(&self.state).in_flight);
        let cancels: Vec<CancellationToken> =
            handles.iter().map(RunHandle::cancellation_token).collect();
        let waiting = async {
            for handle in handles {
                let _ = handle.wait().await;
            }
        };
        tokio::pin!(waiting);
        if tokio::time::timeout(self.grace, &mut waiting)
            .await
            .is_err()
        {
            tracing::warn!(target: "dagrs::daemon", "grace period over: cancelling the runs still running");
            cancels.iter().for_each(CancellationToken::cancel);
            waiting.await;
        }
        Ok(())
    }

    /// How long to sleep: until the next schedule tick, at most the interval.
    fn next_wake(&self) -> Duration {
        let state = lock(&self.state);
        let next_tick = self
            .defs
            .schedules()
            .iter()
            .filter_map(|s| {
                let after = *state.schedule_cursors.get(&s.name)?;
                s.ticks_after(after)?.next()
            })
            .min();
        match next_tick {
            Some(at) => self.clock.until(at).min(self.interval),
            None => self.interval,
        }
    }
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("interval", &self.interval)
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}
