//! Runs a selection: plans and checks it, then drives the steps with tokio — each as soon as
//! its dependencies succeeded, up to a concurrency limit, with retries, timeouts, skipping and
//! cancellation — while one writer task records the event log in batches.

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::asset::StepOutput;
use crate::config::{ConfigValue, RunConfig};
use crate::context::{AssetContext, Draft, Sink};
use crate::definitions::Definitions;
use crate::error::{Error, Hint, Problems};
use crate::event::now;
use crate::event::{ErrorInfo, Event, EventKind, Metadata, RunStatus, StepStatus};
use crate::key::{AssetKey, RunId};
use crate::param::StepScope;
use crate::result::{RunResult, StepOutcome};
use crate::storage::recovery::this_process;
use crate::storage::{recover_abandoned_runs, RunRecord, Storage, HEARTBEAT_INTERVAL, LEASE};

/// Options of one run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    config: RunConfig,
    max_concurrency: Option<usize>,
    tags: BTreeMap<String, String>,
    run_id: Option<RunId>,
    events: Option<mpsc::UnboundedSender<Event>>,
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

    /// Limits how many steps run at once (at least 1), overriding the definitions' limit.
    pub fn max_concurrency(mut self, limit: usize) -> Self {
        self.max_concurrency = Some(limit.max(1));
        self
    }

    /// Adds a tag to the run.
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(key.into(), value.into());
        self
    }

    /// Uses `run_id` instead of a random one.
    pub fn run_id(mut self, run_id: impl Into<RunId>) -> Self {
        self.run_id = Some(run_id.into());
        self
    }

    /// Sends every event of the run, as it is recorded, to `events` (e.g. to show progress).
    pub fn forward_events(mut self, events: mpsc::UnboundedSender<Event>) -> Self {
        self.events = Some(events);
        self
    }
}

/// Materializes the assets of `selection` and waits for the run to end.
///
/// Everything is checked before the run starts — the selection, every selected asset's
/// config, and inputs from unselected assets (read from storage) — and reported together.
/// A run whose assets fail still returns `Ok`: look at [`RunResult::success`].
pub async fn materialize(
    defs: &Definitions,
    selection: &str,
    config: RunConfig,
) -> Result<RunResult, Error> {
    launch(defs, selection, RunOptions::new().config(config))
        .await?
        .wait()
        .await
}

/// Starts a run in the background and returns a handle to cancel or await it.
///
/// Runs left "running" by a process that died are marked failed first (see
/// [`recover_abandoned_runs`](crate::storage::recover_abandoned_runs)).
pub async fn launch(
    defs: &Definitions,
    selection: &str,
    options: RunOptions,
) -> Result<RunHandle, Error> {
    recover_abandoned_runs(&**defs.storage(), LEASE, now()).await?;
    let plan = Plan::new(defs, selection, &options, &HashMap::new()).await?;
    start(defs, selection, options, plan, None).await
}

/// Re-executes the assets of run `run_id` that did not succeed (failed, skipped, cancelled
/// or cut off by a crash), with the same config unless `options` gives one. The assets that
/// succeeded are not run again: where an output of theirs is needed, it is read from that
/// run's materializations.
pub async fn reexecute_from_failure(
    defs: &Definitions,
    run_id: &RunId,
    mut options: RunOptions,
) -> Result<RunHandle, Error> {
    let storage = Arc::clone(defs.storage());
    recover_abandoned_runs(&*storage, LEASE, now()).await?;
    let parent = storage
        .run(run_id)
        .await?
        .ok_or_else(|| Error::RunNotFound(run_id.to_string()))?;
    if parent.status == RunStatus::Running {
        return Err(Error::RunStillRunning {
            run_id: run_id.to_string(),
        });
    }
    let mut outputs = HashMap::new();
    let mut succeeded = Vec::new();
    for event in storage.events(run_id, None).await? {
        match (event.asset, event.kind) {
            (Some(asset), EventKind::StepSucceeded { .. }) => succeeded.push(asset),
            (Some(asset), EventKind::Materialization { value, .. }) => {
                outputs.insert(asset, value);
            }
            _ => {}
        }
    }
    let again: Vec<&str> = parent
        .assets
        .iter()
        .filter(|a| !succeeded.contains(a))
        .map(|a| a.as_str())
        .collect();
    if again.is_empty() {
        return Err(Error::NothingToReexecute {
            run_id: run_id.to_string(),
        });
    }
    let selection = again.join(" ");
    if options.config == RunConfig::default() {
        options.config = parent.config.clone();
    }
    let plan = Plan::new(defs, &selection, &options, &outputs).await?;
    start(defs, &selection, options, plan, Some(run_id.clone())).await
}

async fn start(
    defs: &Definitions,
    selection: &str,
    options: RunOptions,
    plan: Plan,
    parent: Option<RunId>,
) -> Result<RunHandle, Error> {
    let storage = Arc::clone(defs.storage());
    let run_id = options.run_id.clone().unwrap_or_default();
    let started_at = now();
    storage
        .create_run(&RunRecord {
            run_id: run_id.clone(),
            status: RunStatus::Running,
            selection: selection.to_owned(),
            assets: plan.keys.clone(),
            config: options.config,
            tags: options.tags,
            started_at,
            ended_at: None,
            owner: this_process(),
            heartbeat_at: started_at,
            parent_run_id: parent,
            failure: None,
        })
        .await?;
    let cancel = CancellationToken::new();
    let (tx, rx) = mpsc::unbounded_channel();
    let writer = tokio::spawn(write_events(
        Arc::clone(&storage),
        run_id.clone(),
        rx,
        options.events,
    ));
    let heartbeat = tokio::spawn(heartbeat(
        Arc::clone(&storage),
        run_id.clone(),
        cancel.clone(),
    ));
    let limit = options
        .max_concurrency
        .unwrap_or_else(|| defs.max_concurrency());
    let run = Run {
        defs: defs.clone(),
        run_id: run_id.clone(),
        sink: Sink::Run(tx),
        cancel: cancel.clone(),
        semaphore: Arc::new(Semaphore::new(limit)),
    };
    let retention = defs.retention();
    let task = tokio::spawn({
        let run_id = run_id.clone();
        async move {
            let (status, steps, outputs) = run.drive(plan).await;
            drop(run);
            let written = writer.await;
            heartbeat.abort();
            let (events, write_error) = written.map_err(|e| Error::RunInterrupted {
                run_id: run_id.to_string(),
                reason: format!("the event writer stopped: {e}"),
            })?;
            storage.finish_run(&run_id, status, now(), None).await?;
            if let Some(keep) = retention {
                storage.prune(keep, now()).await?;
            }
            if let Some(error) = write_error {
                return Err(error);
            }
            Ok(RunResult {
                run_id,
                status,
                steps,
                events,
                outputs,
            })
        }
    });
    Ok(RunHandle {
        run_id,
        cancel,
        task,
    })
}

/// Records a heartbeat for the run every [`HEARTBEAT_INTERVAL`] until aborted, and cancels
/// the run when its stored status says it ended (a `run cancel` from another process).
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

type Value = Arc<dyn Any + Send + Sync>;

/// A checked run: which assets, with which config and external inputs.
struct Plan {
    /// Selected asset indices, dependencies first.
    selected: Vec<usize>,
    /// Their keys, in the same order.
    keys: Vec<AssetKey>,
    /// Decoded config per selected asset (same order).
    configs: Vec<Option<ConfigValue>>,
    /// Outputs of unselected upstream assets, read from storage.
    external: HashMap<AssetKey, Value>,
}

impl Plan {
    /// Plans a run; upstream outputs found in `known` (serialized, e.g. those of the run being
    /// re-executed) are used before the latest stored materializations.
    async fn new(
        defs: &Definitions,
        selection: &str,
        options: &RunOptions,
        known: &HashMap<AssetKey, serde_json::Value>,
    ) -> Result<Self, Error> {
        let inner = defs.inner();
        let selected = crate::selection::resolve(defs, selection)?;
        let mut problems = Vec::new();
        for key in options.config.assets.keys() {
            match inner.index.get(key.as_str()) {
                None => problems.push(Error::ConfigForUnknownAsset {
                    key: key.clone(),
                    hint: Hint::closest(key, inner.assets.iter().map(|s| s.key.as_str())),
                }),
                Some(&i) if inner.assets[i].needs.config.is_none() => {
                    problems.push(Error::UnexpectedConfig { asset: key.clone() })
                }
                Some(_) => {}
            }
        }
        let config = options.config.merged_over(&inner.defaults);
        let mut configs = Vec::with_capacity(selected.len());
        let mut is_selected = vec![false; inner.assets.len()];
        for &i in &selected {
            is_selected[i] = true;
            let spec = &inner.assets[i];
            configs.push(match &spec.needs.config {
                Some(need) => match (need.decode)(&spec.key, config.get(&spec.key)) {
                    Ok(value) => Some(value),
                    Err(e) => {
                        problems.push(e);
                        None
                    }
                },
                None => None,
            });
        }
        let mut external = HashMap::new();
        for &i in &selected {
            let spec = &inner.assets[i];
            for input in &spec.needs.inputs {
                let producer = &inner.assets[inner.index[&input.key]];
                if is_selected[inner.index[&input.key]] || external.contains_key(&input.key) {
                    continue;
                }
                let stored = match known.get(&input.key) {
                    Some(value) => Some(value.clone()),
                    None => defs
                        .storage()
                        .latest_materialization(&input.key)
                        .await?
                        .map(|record| record.value),
                };
                match stored {
                    None => problems.push(Error::MissingInput {
                        asset: spec.key.to_string(),
                        input: input.key.to_string(),
                    }),
                    Some(value) => match (producer.decode_output)(value) {
                        Ok(value) => {
                            external.insert(input.key.clone(), value);
                        }
                        Err(reason) => problems.push(Error::StoredOutput {
                            asset: input.key.to_string(),
                            type_name: producer.output_type.1,
                            reason,
                        }),
                    },
                }
            }
        }
        Problems::check(problems)?;
        Ok(Plan {
            keys: selected
                .iter()
                .map(|&i| inner.assets[i].key.clone())
                .collect(),
            selected,
            configs,
            external,
        })
    }
}

/// What a step driver reports back.
struct StepReport {
    outcome: StepOutcome,
    output: Option<StepOutput>,
}

/// Shared state of a running run.
struct Run {
    defs: Definitions,
    run_id: RunId,
    sink: Sink,
    cancel: CancellationToken,
    semaphore: Arc<Semaphore>,
}

#[derive(Clone, Copy, PartialEq)]
enum State {
    Waiting,
    Running,
    Done,
}

impl Run {
    fn emit(&self, asset: Option<&AssetKey>, kind: EventKind) {
        self.sink.send(asset, kind);
    }

    /// Runs the plan to its end; returns the run status, the outcomes and the outputs.
    async fn drive(&self, plan: Plan) -> (RunStatus, Vec<StepOutcome>, HashMap<AssetKey, Value>) {
        let inner = self.defs.inner();
        let n = plan.selected.len();
        let mut position = HashMap::with_capacity(n);
        for (pos, &i) in plan.selected.iter().enumerate() {
            position.insert(i, pos);
        }
        let keys = plan.keys;
        self.emit(
            None,
            EventKind::RunStarted {
                selection: keys.clone(),
            },
        );
        let mut waiting_on: Vec<usize> = plan
            .selected
            .iter()
            .map(|&i| {
                inner.graph.upstream[i]
                    .iter()
                    .filter(|u| position.contains_key(u))
                    .count()
            })
            .collect();
        let mut state = vec![State::Waiting; n];
        let mut outcomes: Vec<Option<StepOutcome>> = vec![None; n];
        let mut outputs: HashMap<AssetKey, Value> = plan.external;
        let mut running = JoinSet::new();

        for pos in 0..n {
            if waiting_on[pos] == 0 {
                state[pos] = State::Running;
                self.spawn_step(
                    &mut running,
                    pos,
                    plan.selected[pos],
                    &plan.configs,
                    &outputs,
                );
            }
        }

        while let Some(joined) = running.join_next().await {
            let (pos, report) = match joined {
                Ok(done) => done,
                Err(e) => unreachable!("step drivers catch their steps' panics: {e}"),
            };
            state[pos] = State::Done;
            let status = report.outcome.status;
            let key = report.outcome.key.clone();
            if let Some(output) = report.output {
                outputs.insert(key.clone(), output.value);
            }
            outcomes[pos] = Some(report.outcome);
            let asset = plan.selected[pos];
            if status == StepStatus::Succeeded {
                if self.cancel.is_cancelled() {
                    continue;
                }
                for &down in &inner.graph.downstream[asset] {
                    let Some(&dpos) = position.get(&down) else {
                        continue;
                    };
                    waiting_on[dpos] -= 1;
                    if waiting_on[dpos] == 0 && state[dpos] == State::Waiting {
                        state[dpos] = State::Running;
                        self.spawn_step(&mut running, dpos, down, &plan.configs, &outputs);
                    }
                }
            } else {
                let reason = match status {
                    StepStatus::Cancelled => format!("upstream `{key}` was cancelled"),
                    _ => format!("upstream `{key}` failed"),
                };
                let mut below = vec![false; inner.assets.len()];
                inner.graph.mark_descendants(asset, None, &mut below);
                for (dpos, &down) in plan.selected.iter().enumerate() {
                    if below[down] && state[dpos] == State::Waiting {
                        state[dpos] = State::Done;
                        outcomes[dpos] = Some(self.skip(&keys[dpos], reason.clone()));
                    }
                }
            }
        }

        for pos in 0..n {
            if state[pos] == State::Waiting {
                outcomes[pos] = Some(self.skip(&keys[pos], "run cancelled".into()));
            }
        }
        let outcomes: Vec<StepOutcome> = outcomes
            .into_iter()
            .map(|o| o.expect("every step ends with an outcome"))
            .collect();
        let failed: Vec<AssetKey> = outcomes
            .iter()
            .filter(|o| o.status == StepStatus::Failed)
            .map(|o| o.key.clone())
            .collect();
        let status = if self.cancel.is_cancelled() {
            self.emit(None, EventKind::RunCancelled);
            RunStatus::Cancelled
        } else if failed.is_empty() {
            self.emit(None, EventKind::RunSucceeded);
            RunStatus::Succeeded
        } else {
            let skipped = outcomes
                .iter()
                .filter(|o| o.status == StepStatus::Skipped)
                .map(|o| o.key.clone())
                .collect();
            self.emit(None, EventKind::RunFailed { failed, skipped });
            RunStatus::Failed
        };
        (status, outcomes, outputs)
    }

    fn skip(&self, key: &AssetKey, reason: String) -> StepOutcome {
        self.emit(Some(key), EventKind::StepSkipped { reason });
        StepOutcome::new(key.clone(), StepStatus::Skipped)
    }

    fn spawn_step(
        &self,
        running: &mut JoinSet<(usize, StepReport)>,
        pos: usize,
        asset: usize,
        configs: &[Option<ConfigValue>],
        outputs: &HashMap<AssetKey, Value>,
    ) {
        let spec = &self.defs.inner().assets[asset];
        let inputs: HashMap<AssetKey, Value> = spec
            .needs
            .inputs
            .iter()
            .filter_map(|input| {
                let value = outputs.get(&input.key)?;
                Some((input.key.clone(), Arc::clone(value)))
            })
            .collect();
        let step = Step {
            defs: self.defs.clone(),
            asset,
            run_id: self.run_id.clone(),
            sink: self.sink.clone(),
            cancel: self.cancel.clone(),
            semaphore: Arc::clone(&self.semaphore),
            config: configs[pos].clone(),
            inputs: Arc::new(inputs),
        };
        running.spawn(async move { (pos, step.run().await) });
    }
}

/// One step of a run: everything its driver task needs.
struct Step {
    defs: Definitions,
    asset: usize,
    run_id: RunId,
    sink: Sink,
    cancel: CancellationToken,
    semaphore: Arc<Semaphore>,
    config: Option<ConfigValue>,
    inputs: Arc<HashMap<AssetKey, Value>>,
}

impl Step {
    async fn run(self) -> StepReport {
        let spec = &self.defs.inner().assets[self.asset];
        let key = &spec.key;
        let mut outcome = StepOutcome::new(key.clone(), StepStatus::Cancelled);
        for attempt in 1.. {
            let permit = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break,
                permit = Arc::clone(&self.semaphore).acquire_owned() => {
                    permit.expect("the run's semaphore is never closed")
                }
            };
            outcome.attempts = attempt;
            self.sink
                .send(Some(key), EventKind::StepStarted { attempt });
            let metadata = Arc::new(Mutex::new(Metadata::new()));
            let scope = StepScope {
                context: AssetContext::new(
                    self.run_id.clone(),
                    key.clone(),
                    attempt,
                    self.sink.clone(),
                    Arc::clone(&metadata),
                    self.cancel.clone(),
                ),
                resources: self.defs.inner().resources.clone(),
                config: self.config.clone(),
                inputs: Arc::clone(&self.inputs),
            };
            let started = Instant::now();
            let mut task = tokio::spawn((spec.compute)(scope));
            let deadline = async {
                match spec.timeout {
                    Some(limit) => tokio::time::sleep(limit).await,
                    None => std::future::pending().await,
                }
            };
            let result = tokio::select! {
                joined = &mut task => match joined {
                    Ok(result) => result,
                    Err(e) => Err(anyhow::anyhow!("asset panicked: {}", panic_message(e))),
                },
                _ = deadline => {
                    task.abort();
                    Err(anyhow::anyhow!(
                        "timed out after {:?}; raise the asset's `timeout` if it needs longer",
                        spec.timeout.unwrap_or_default()
                    ))
                }
                _ = self.cancel.cancelled() => {
                    task.abort();
                    self.sink.send(Some(key), EventKind::StepCancelled { attempt });
                    outcome.status = StepStatus::Cancelled;
                    return StepReport { outcome, output: None };
                }
            };
            drop(permit);
            let duration = started.elapsed();
            outcome.duration = Some(duration);
            outcome.metadata = std::mem::take(&mut *crate::context::lock(&metadata));
            match result {
                Ok(output) => {
                    self.sink.send(
                        Some(key),
                        EventKind::Materialization {
                            metadata: outcome.metadata.clone(),
                            value: output.json.clone(),
                            code_version: spec.code_version.clone(),
                        },
                    );
                    self.sink
                        .send(Some(key), EventKind::StepSucceeded { attempt, duration });
                    outcome.status = StepStatus::Succeeded;
                    outcome.error = None;
                    return StepReport {
                        outcome,
                        output: Some(output),
                    };
                }
                Err(error) => {
                    let info = ErrorInfo::from_anyhow(&error);
                    let will_retry = attempt <= spec.retry.max_retries();
                    self.sink.send(
                        Some(key),
                        EventKind::StepFailed {
                            attempt,
                            error: info.clone(),
                            will_retry,
                        },
                    );
                    outcome.error = Some(info);
                    if !will_retry {
                        outcome.status = StepStatus::Failed;
                        return StepReport {
                            outcome,
                            output: None,
                        };
                    }
                    let delay = spec.retry.delay(attempt);
                    self.sink.send(
                        Some(key),
                        EventKind::StepRetrying {
                            next_attempt: attempt + 1,
                            delay,
                        },
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.cancel.cancelled() => break,
                    }
                }
            }
        }
        if outcome.attempts == 0 {
            // Cancelled while waiting for a concurrency slot: it never started.
            self.sink.send(
                Some(key),
                EventKind::StepSkipped {
                    reason: "run cancelled".into(),
                },
            );
            outcome.status = StepStatus::Skipped;
        } else {
            self.sink.send(
                Some(key),
                EventKind::StepCancelled {
                    attempt: outcome.attempts,
                },
            );
            outcome.status = StepStatus::Cancelled;
        }
        StepReport {
            outcome,
            output: None,
        }
    }
}

fn panic_message(error: tokio::task::JoinError) -> String {
    if !error.is_panic() {
        return error.to_string();
    }
    let payload = error.into_panic();
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a non-string panic payload".to_owned()
    }
}

/// Numbers the run's events, writes them to storage in batches and keeps them for the
/// result; stops after the run's final event.
async fn write_events(
    storage: Arc<dyn Storage>,
    run_id: RunId,
    mut rx: mpsc::UnboundedReceiver<Draft>,
    forward: Option<mpsc::UnboundedSender<Event>>,
) -> (Vec<Event>, Option<Error>) {
    const BATCH: usize = 1024;
    let mut all = Vec::new();
    let mut drafts = Vec::with_capacity(BATCH);
    let mut error = None;
    let mut seq = 0;
    loop {
        if rx.recv_many(&mut drafts, BATCH).await == 0 {
            break;
        }
        let mut finished = false;
        let mut batch = Vec::with_capacity(drafts.len());
        for draft in drafts.drain(..) {
            if finished {
                break;
            }
            finished = matches!(
                draft.kind,
                EventKind::RunSucceeded | EventKind::RunFailed { .. } | EventKind::RunCancelled
            );
            batch.push(Event {
                run_id: run_id.clone(),
                seq,
                timestamp: draft.timestamp,
                asset: draft.asset,
                kind: draft.kind,
            });
            seq += 1;
        }
        if error.is_none() {
            if let Err(e) = storage.append_events(&batch).await {
                tracing::error!(target: "dagrs::storage", run_id = %run_id, "cannot record events: {e}");
                error = Some(e);
            }
        }
        if let Some(forward) = &forward {
            for event in &batch {
                // The receiver may have stopped listening; the run goes on.
                let _ = forward.send(event.clone());
            }
        }
        all.extend(batch);
        if finished {
            break;
        }
    }
    (all, error)
}
