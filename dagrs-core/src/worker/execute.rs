//! One claimed step on a worker: its run's plan (made once per run, as the submitter made
//! it), its inputs (from upstream steps' stored outputs), one attempt with the executor's own
//! logic, and the end to record.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use super::step_queue::{Claim, StepEnd};
use super::Worker;
use crate::error::{Error, Problem};
use crate::event::{now, ErrorInfo, Event, EventKind, StepStatus};
use crate::executor::plan::{Plan, Request};
use crate::executor::step::Step;
use crate::key::{AssetKey, RunId};
use crate::lock;
use crate::log::{Backlog, Draft, Sink};
use crate::scope::Shared;

/// What became of a claimed step.
pub(super) enum Executed {
    /// It ran (or could not): record this end.
    End(StepEnd),
    /// It could not be prepared for a passing reason (the store unreachable): hand it back.
    Release(Claim),
}

impl Executed {
    pub(super) fn claim(&self) -> &Claim {
        match self {
            Executed::End(end) => &end.claim,
            Executed::Release(claim) => claim,
        }
    }
}

/// A run's plan, with each selected asset's position in it.
struct RunPlan {
    plan: Plan,
    position: HashMap<AssetKey, usize>,
}

/// The plans of the runs a worker has steps of, made once per run (the steps of a run that
/// arrive together wait for one plan).
#[derive(Default)]
pub(super) struct Plans(Mutex<HashMap<RunId, Arc<tokio::sync::OnceCell<Arc<RunPlan>>>>>);

impl Plans {
    /// Runs whose plans are kept at most; older ones are made again when needed.
    const KEPT: usize = 256;

    async fn get(&self, worker: &Worker, run_id: &RunId) -> Result<Arc<RunPlan>, Error> {
        let cell = {
            let mut plans = lock(&self.0);
            if plans.len() >= Self::KEPT && !plans.contains_key(run_id) {
                plans.clear();
            }
            Arc::clone(plans.entry(run_id.clone()).or_default())
        };
        let plan = cell
            .get_or_try_init(|| async {
                let storage = worker.instance.storage();
                let run = storage
                    .run(run_id)
                    .await?
                    .ok_or_else(|| Error::RunNotFound(run_id.to_string()))?;
                let plan = Plan::new(&worker.defs, &**storage, Request::of_run(&run)).await?;
                let position = plan
                    .keys
                    .iter()
                    .enumerate()
                    .map(|(pos, key)| (key.clone(), pos))
                    .collect();
                Ok::<_, Error>(Arc::new(RunPlan { plan, position }))
            })
            .await?;
        Ok(Arc::clone(plan))
    }
}

/// Runs one attempt of `claim`'s step.
pub(super) async fn run(
    worker: &Worker,
    plans: &Plans,
    claim: Claim,
    cancel: CancellationToken,
) -> Executed {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let sink = Sink::Run(tx, Arc::new(Backlog::default()));
    let attachment = worker.queue.attachment();
    let prepared = prepare(
        worker,
        plans,
        &claim,
        sink.clone(),
        cancel,
        attachment.clone(),
    )
    .await;
    let step = match prepared {
        Ok(step) => step,
        Err(Error::Storage { .. }) => return Executed::Release(claim),
        Err(error) => return Executed::End(not_runnable(claim, &worker.id, &error)),
    };
    let report = step.run().await;
    drop(sink);
    let mut drafts = Vec::new();
    while let Ok(draft) = rx.try_recv() {
        drafts.push(draft);
    }
    let mut events = events_of(&claim.run_id, drafts);
    let mut status = report.outcome.status;
    let mut output = report.output.map(|output| output.json);
    if let Some(value) = output.take() {
        match keep_output(worker, &claim, value).await {
            Ok(kept) => output = kept,
            Err(error) => {
                // The step cannot hand its output on: it failed, whatever it recorded.
                events.retain(|e| {
                    !matches!(
                        e.kind,
                        EventKind::Materialization { .. } | EventKind::StepSucceeded { .. }
                    )
                });
                events.push(event(
                    &claim,
                    EventKind::StepFailed {
                        attempt: claim.attempt,
                        error: ErrorInfo::from_anyhow(&anyhow::Error::new(error)),
                        will_retry: false,
                        partition: None,
                    },
                ));
                status = StepStatus::Failed;
            }
        }
    }
    Executed::End(StepEnd {
        claim,
        status,
        events,
        output,
        retry_in: report.retry_in,
        attachment,
    })
}

/// The step of `claim`, with its plan and inputs.
async fn prepare(
    worker: &Worker,
    plans: &Plans,
    claim: &Claim,
    sink: Sink,
    cancel: CancellationToken,
    extension: Option<Arc<dyn std::any::Any + Send + Sync>>,
) -> Result<Step, Error> {
    let run = plans.get(worker, &claim.run_id).await?;
    let graph = &worker.defs.inner().graph;
    let (Some(&asset), Some(&pos)) = (
        graph.index.get(&claim.asset),
        run.position.get(&claim.asset),
    ) else {
        return Err(Error::NotQueueable {
            asset: claim.asset.to_string(),
            reason: "this worker's definitions do not select it in this run; run workers with the same definitions as the process that queued the run".into(),
        });
    };
    let spec = &graph.assets[asset];
    let mut inputs: HashMap<AssetKey, Shared> = HashMap::new();
    for input in &spec.needs.inputs {
        if let Some(value) = run.plan.external.get(&input.key) {
            inputs.insert(input.key.clone(), Arc::clone(value));
            continue;
        }
        if !run.position.contains_key(&input.key) {
            continue;
        }
        let stored = match &worker.io {
            Some(io) => io.load(&claim.run_id, &input.key).await?,
            None => worker.queue.load_output(&claim.run_id, &input.key).await?,
        };
        // A missing output is reported by the parameter that wants it.
        let Some(value) = stored else { continue };
        let producer = &graph.assets[graph.index[&input.key]];
        let value = (producer.decode_output)(value).map_err(|reason| Problem::StoredOutput {
            asset: input.key.to_string(),
            type_name: producer.output_type.1,
            reason: crate::text::bounded(&reason, 1024).into_owned(),
        })?;
        inputs.insert(input.key.clone(), value);
    }
    let semaphore = Arc::new(Semaphore::new(1));
    Ok(Step {
        permit: Some(
            Arc::clone(&semaphore)
                .try_acquire_owned()
                .expect("a new semaphore has its permit"),
        ),
        defs: worker.defs.clone(),
        asset,
        run_id: claim.run_id.clone(),
        sink,
        cancel,
        semaphore,
        plan: run.plan.steps[pos].clone(),
        inputs: Arc::new(inputs),
        // The queue holds pool slots for claimed steps, across workers.
        pools: crate::pool::Pools::default(),
        first_attempt: claim.attempt,
        one_attempt: true,
        extension,
        worker: Some(worker.id.clone()),
    })
}

/// Keeps a step's output for the steps downstream: in the worker's IO manager (nothing left
/// for the queue), or in the queue, within its limit.
async fn keep_output(
    worker: &Worker,
    claim: &Claim,
    value: serde_json::Value,
) -> Result<Option<serde_json::Value>, Error> {
    if let Some(io) = &worker.io {
        io.store(&claim.run_id, &claim.asset, &value).await?;
        return Ok(None);
    }
    let limit = worker.queue.output_limit();
    let size = serde_json::to_vec(&value).map_or(usize::MAX, |bytes| bytes.len());
    if size > limit {
        return Err(Error::OutputTooLarge {
            asset: claim.asset.to_string(),
            size,
            limit,
        });
    }
    Ok(Some(value))
}

/// The end of a step that cannot run at all (its run or plan is gone or invalid): failed,
/// not retried, saying why.
fn not_runnable(claim: Claim, worker: &str, error: &Error) -> StepEnd {
    let error = ErrorInfo::from_anyhow(&anyhow::anyhow!("{error}"));
    let events = vec![
        event(
            &claim,
            EventKind::StepStarted {
                attempt: claim.attempt,
                worker: Some(worker.to_owned()),
            },
        ),
        event(
            &claim,
            EventKind::StepFailed {
                attempt: claim.attempt,
                error,
                will_retry: false,
                partition: None,
            },
        ),
    ];
    StepEnd {
        claim,
        status: StepStatus::Failed,
        events,
        output: None,
        retry_in: None,
        attachment: None,
    }
}

fn event(claim: &Claim, kind: EventKind) -> Event {
    Event {
        run_id: claim.run_id.clone(),
        seq: 0,
        timestamp: now(),
        asset: Some(claim.asset.clone()),
        kind,
    }
}

fn events_of(run_id: &RunId, drafts: Vec<Draft>) -> Vec<Event> {
    drafts
        .into_iter()
        .map(|draft| Event {
            run_id: run_id.clone(),
            seq: 0,
            timestamp: draft.timestamp,
            asset: draft.asset,
            kind: draft.kind,
        })
        .collect()
}
