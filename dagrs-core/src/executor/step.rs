//! One step of a run: its attempts, each under the concurrency limit and the asset's
//! timeout, retried by its policy, stopped by cancellation.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::plan::StepPlan;
use crate::asset::StepOutput;
use crate::context::AssetContext;
use crate::definitions::Definitions;
use crate::event::{ErrorInfo, EventKind, Metadata, StepStatus};
use crate::hook::{HookContext, HookOn};
use crate::key::{AssetKey, RunId};
use crate::lock;
use crate::log::Sink;
use crate::observe::{meter, trace};
use crate::result::StepOutcome;
use crate::scope::{Shared, StepScope};
use crate::source::AssetKind;

/// What a step reports back to the scheduler.
pub(crate) struct StepReport {
    pub(crate) outcome: StepOutcome,
    pub(crate) output: Option<StepOutput>,
    /// For a step run one attempt at a time: the failed attempt is to be retried after this
    /// delay, by whoever claims the step next.
    pub(crate) retry_in: Option<std::time::Duration>,
}

/// One step of a run: everything its driver task needs.
pub(crate) struct Step {
    /// The slot of the first attempt, taken by the scheduler before it started the step.
    pub(crate) permit: Option<OwnedSemaphorePermit>,
    pub(crate) defs: Definitions,
    pub(crate) asset: usize,
    pub(crate) run_id: RunId,
    pub(crate) sink: Sink,
    pub(crate) cancel: CancellationToken,
    pub(crate) semaphore: Arc<Semaphore>,
    /// The instance's concurrency pools: each attempt takes a slot of the asset's.
    pub(crate) pools: crate::pool::Pools,
    pub(crate) plan: StepPlan,
    pub(crate) inputs: Arc<HashMap<AssetKey, Shared>>,
    /// The number of its first attempt here (1, or more for a step a worker claimed again).
    pub(crate) first_attempt: u32,
    /// Runs one attempt only, and reports a retry instead of waiting for it (a worker's
    /// step: the queue schedules the retry).
    pub(crate) one_attempt: bool,
    /// What the step's runner attaches to its context ([`AssetContext::extension`]).
    pub(crate) extension: Option<Arc<dyn Any + Send + Sync>>,
    /// The worker that runs it, when a worker does.
    pub(crate) worker: Option<String>,
}

impl Step {
    /// Runs attempts until one succeeds, the retry policy gives up, or the run is cancelled.
    pub(crate) async fn run(mut self) -> StepReport {
        let mut first = self.permit.take();
        let spec = &self.defs.inner().graph.assets[self.asset];
        let key = &spec.key;
        let retry = &self.plan.retry;
        let mut outcome = StepOutcome::new(key.clone(), StepStatus::Cancelled);
        for attempt in self.first_attempt.max(1).. {
            let permit = match first.take() {
                Some(_) if self.cancel.is_cancelled() => break,
                Some(permit) => permit,
                None => tokio::select! {
                    biased;
                    _ = self.cancel.cancelled() => break,
                    permit = Arc::clone(&self.semaphore).acquire_owned() => {
                        permit.expect("the run's semaphore is never closed")
                    }
                },
            };
            // Then a slot of the asset's pool, held for this attempt only.
            let waiting = |pool: &str| self.sink.send(Some(key), crate::pool::waiting_log(pool));
            let Ok(pool_slot) = self
                .pools
                .slot(spec.pool_name(), &self.cancel, waiting)
                .await
            else {
                break;
            };
            outcome.attempts = attempt;
            self.sink.send(
                Some(key),
                EventKind::StepStarted {
                    attempt,
                    worker: self.worker.clone(),
                },
            );
            let metadata = Arc::new(Mutex::new(Metadata::new()));
            let scope = StepScope {
                context: AssetContext::new(
                    self.run_id.clone(),
                    key.clone(),
                    attempt,
                    self.sink.clone(),
                    Arc::clone(&metadata),
                    self.cancel.clone(),
                )
                .with_partition(self.plan.partition.clone())
                .with_extension(self.extension.clone()),
                resources: self.defs.inner().resources.clone(),
                config: self.plan.config.clone(),
                inputs: Arc::clone(&self.inputs),
            };
            let log = trace::StepLog::new(self.sink.clone(), key.clone());
            let span = trace::step_span(
                &log,
                attempt,
                self.plan.partition.as_deref().map(|p| p.range.key.as_str()),
            );
            let started = Instant::now();
            // Polled in this task (no task of its own): dropping it stops it.
            let mut task = CatchUnwind((spec.compute)(scope).instrument(span.clone()));
            let deadline = async {
                match spec.timeout {
                    Some(limit) => tokio::time::sleep(limit).await,
                    None => std::future::pending().await,
                }
            };
            // A panic is a bug, not a passing failure: it is not retried.
            let mut retriable = true;
            let mut error_type = "error";
            // Cancellation first: an asset that ends because it was told to stop (a
            // `ctx.cancelled()` returning) is cancelled, not succeeded.
            let result = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => {
                    drop(task);
                    log.report_dropped();
                    trace::record_status(&span, false, Some("cancelled"));
                    self.sink.send(Some(key), EventKind::StepCancelled { attempt });
                    outcome.status = StepStatus::Cancelled;
                    return StepReport { outcome, output: None, retry_in: None };
                }
                caught = &mut task => match caught {
                    Ok(result) => result,
                    Err(payload) => {
                        retriable = false;
                        error_type = "panic";
                        Err(anyhow::anyhow!("asset panicked: {}", panic_text(payload)))
                    }
                },
                _ = deadline => {
                    drop(task);
                    error_type = "timeout";
                    Err(anyhow::anyhow!(
                        "timed out after {:?}; raise the asset's `timeout` if it needs longer",
                        spec.timeout.unwrap_or_default()
                    ))
                }
            };
            drop(permit);
            drop(pool_slot);
            let duration = started.elapsed();
            log.report_dropped();
            trace::record_status(&span, result.is_ok(), result.is_err().then_some(error_type));
            meter::step_attempt(key, result.is_ok(), duration);
            drop(span);
            outcome.duration = Some(duration);
            outcome.metadata = std::mem::take(&mut *lock(&metadata));
            let error = match result {
                Ok(output) => {
                    let partition = self.partition_range();
                    let kind = match spec.kind {
                        AssetKind::Observable => EventKind::Observation {
                            changed: self.plan.last_version.as_ref() != Some(&output.json),
                            data_version: output.json.clone(),
                            metadata: outcome.metadata.clone(),
                        },
                        _ => EventKind::Materialization {
                            metadata: outcome.metadata.clone(),
                            value: output.json.clone(),
                            code_version: spec.code_version.clone(),
                            partition: partition.clone(),
                        },
                    };
                    self.sink.send(Some(key), kind);
                    // A failing blocking check fails the step, after the materialization:
                    // the data is there, and nothing downstream reads it.
                    let blocked = super::checks::Checks {
                        defs: &self.defs,
                        asset: self.asset,
                        run_id: &self.run_id,
                        sink: &self.sink,
                        cancel: &self.cancel,
                        partition: self.plan.partition.as_ref(),
                    }
                    .run(attempt, &output)
                    .await;
                    if let Some(error) = blocked {
                        self.sink.send(
                            Some(key),
                            EventKind::StepFailed {
                                attempt,
                                error: error.clone(),
                                will_retry: false,
                                partition,
                            },
                        );
                        outcome.status = StepStatus::Failed;
                        outcome.error = Some(error);
                    } else {
                        self.sink
                            .send(Some(key), EventKind::StepSucceeded { attempt, duration });
                        outcome.status = StepStatus::Succeeded;
                        outcome.error = None;
                    }
                    self.run_hooks(&outcome).await;
                    return StepReport {
                        outcome,
                        output: Some(output),
                        retry_in: None,
                    };
                }
                Err(error) => error,
            };
            let info = ErrorInfo::from_anyhow(&error);
            let will_retry = retriable && attempt <= retry.max_retries();
            self.sink.send(
                Some(key),
                EventKind::StepFailed {
                    attempt,
                    error: info.clone(),
                    will_retry,
                    partition: self.partition_range(),
                },
            );
            outcome.error = Some(info);
            if !will_retry {
                outcome.status = StepStatus::Failed;
                self.run_hooks(&outcome).await;
                return StepReport {
                    outcome,
                    output: None,
                    retry_in: None,
                };
            }
            meter::step_retry(key);
            let delay = retry.delay(attempt);
            self.sink.send(
                Some(key),
                EventKind::StepRetrying {
                    next_attempt: attempt + 1,
                    delay,
                },
            );
            if self.one_attempt {
                outcome.status = StepStatus::Failed;
                return StepReport {
                    outcome,
                    output: None,
                    retry_in: Some(delay),
                };
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.cancel.cancelled() => break,
            }
        }
        outcome.status = if outcome.attempts == 0 {
            // Cancelled while waiting for a concurrency or pool slot: it never started.
            self.sink.send(
                Some(key),
                EventKind::StepSkipped {
                    reason: "run cancelled".into(),
                },
            );
            StepStatus::Skipped
        } else {
            self.sink.send(
                Some(key),
                EventKind::StepCancelled {
                    attempt: outcome.attempts,
                },
            );
            StepStatus::Cancelled
        };
        StepReport {
            outcome,
            output: None,
            retry_in: None,
        }
    }
}

impl Step {
    fn partition_range(&self) -> Option<crate::partition::PartitionRange> {
        Some(self.plan.partition.as_deref()?.range.clone())
    }

    /// Runs the hooks that apply to how the step ended, one after the other, each in a task
    /// of its own under its timeout; what they do is recorded, and never fails the step.
    pub(super) async fn run_hooks(&self, outcome: &StepOutcome) {
        let on = match outcome.status {
            StepStatus::Succeeded => HookOn::Success,
            StepStatus::Failed => HookOn::Failure,
            _ => return,
        };
        for hook in self.plan.hooks.iter().filter(|hook| hook.on == on) {
            let context = HookContext {
                run_id: self.run_id.clone(),
                asset: outcome.key.clone(),
                job: self.plan.job.clone(),
                status: outcome.status,
                attempt: outcome.attempts,
                error: outcome.error.clone(),
                metadata: outcome.metadata.clone(),
            };
            let called = hook.callback.call(context, &self.defs.inner().resources);
            let mut task = tokio::spawn(called);
            let done = tokio::time::timeout(hook.timeout, &mut task).await;
            if done.is_err() {
                task.abort();
            }
            let error = match done {
                Ok(Ok(Ok(()))) => None,
                Ok(Ok(Err(error))) => Some(ErrorInfo::from_anyhow(&error)),
                Ok(Err(join)) => Some(ErrorInfo::from_anyhow(&anyhow::anyhow!(
                    "the hook panicked: {}",
                    panic_message(join)
                ))),
                Err(_) => Some(ErrorInfo::from_anyhow(&anyhow::anyhow!(
                    "timed out after {:?}",
                    hook.timeout
                ))),
            };
            let hook = hook.name.clone();
            let kind = match error {
                None => EventKind::HookCompleted { hook },
                Some(error) => EventKind::HookFailed { hook, error },
            };
            self.sink.send(Some(&outcome.key), kind);
        }
    }
}

/// A future that turns a panic while polling `F` into an error (the payload).
pub(super) struct CatchUnwind<F>(pub(super) F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.0;
        // After a panic the future is never polled again.
        match catch_unwind(AssertUnwindSafe(|| Pin::new(inner).poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}

/// What a task's panic said, or why else it did not finish.
pub(super) fn panic_message(error: tokio::task::JoinError) -> String {
    if error.is_panic() {
        panic_text(error.into_panic())
    } else {
        error.to_string()
    }
}

/// The text of a panic's payload.
pub(super) fn panic_text(payload: Box<dyn Any + Send>) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a non-string panic payload".to_owned()
    }
}
