//! Drives a planned run: starts each step as soon as its dependencies succeeded, skips what
//! lies below a failure, and decides how the run ended.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::plan::Plan;
use super::step::{Step, StepReport};
use crate::definitions::Definitions;
use crate::event::{EventKind, RunStatus, StepStatus};
use crate::key::{AssetKey, RunId};
use crate::log::Sink;
use crate::result::StepOutcome;
use crate::scope::Shared;

/// Shared state of a running run.
pub(crate) struct Scheduler {
    pub(crate) defs: Definitions,
    pub(crate) run_id: RunId,
    pub(crate) sink: Sink,
    pub(crate) cancel: CancellationToken,
    pub(crate) semaphore: Arc<Semaphore>,
    /// The instance's concurrency pools.
    pub(crate) pools: crate::pool::Pools,
}

/// How a run ended, with what each step did and produced.
pub(crate) struct Driven {
    pub(crate) status: RunStatus,
    pub(crate) outcomes: Vec<StepOutcome>,
    pub(crate) outputs: HashMap<AssetKey, Shared>,
    /// The serialized output of each step that produced one.
    pub(crate) values: HashMap<AssetKey, serde_json::Value>,
}

#[derive(Clone, Copy, PartialEq)]
pub(super) enum State {
    Waiting,
    /// Its dependencies are done; it starts when a slot is free.
    Ready,
    Running,
    Done,
}

impl Scheduler {
    fn emit(&self, asset: Option<&AssetKey>, kind: EventKind) {
        self.sink.send(asset, kind);
    }

    /// Runs the plan to its end; the run's final event is the last one it drafts.
    pub(crate) async fn drive(&self, plan: Plan) -> Driven {
        let graph = &self.defs.inner().graph;
        let n = plan.selected.len();
        let mut position = HashMap::with_capacity(n);
        for (pos, &i) in plan.selected.iter().enumerate() {
            position.insert(i, pos);
        }
        self.emit(
            None,
            EventKind::RunStarted {
                selection: plan.keys.clone(),
            },
        );
        let mut waiting_on: Vec<usize> = plan
            .selected
            .iter()
            .map(|&i| {
                graph.edges.upstream[i]
                    .iter()
                    .filter(|u| position.contains_key(u))
                    .count()
            })
            .collect();
        let mut state = vec![State::Waiting; n];
        let mut outcomes: Vec<Option<StepOutcome>> = vec![None; n];
        let mut outputs: HashMap<AssetKey, Shared> = plan.external.clone();
        let mut values = HashMap::new();
        let mut running = JoinSet::new();
        // Steps whose dependencies are done, in the order they became ready: each starts when
        // a slot of the concurrency limit is free, so that a run of many assets holds tasks
        // only for the steps that run (and for those waiting to retry).
        let mut ready: VecDeque<usize> = (0..n).filter(|&pos| waiting_on[pos] == 0).collect();
        for &pos in &ready {
            state[pos] = State::Ready;
        }

        let backlog = self.sink.backlog();
        let log_full = || backlog.is_some_and(|b| b.is_full());
        loop {
            while let Some(&pos) = ready.front() {
                if self.cancel.is_cancelled() || log_full() {
                    break;
                }
                let Ok(permit) = Arc::clone(&self.semaphore).try_acquire_owned() else {
                    break;
                };
                ready.pop_front();
                if state[pos] == State::Ready {
                    self.spawn_step(
                        &mut running,
                        &plan,
                        pos,
                        permit,
                        &outputs,
                        &position,
                        &mut state,
                    );
                }
            }
            let reports = tokio::select! {
                joined = running.join_next(), if !running.is_empty() => match joined {
                    Some(Ok(done)) => done,
                    Some(Err(e)) => unreachable!("step drivers catch their steps' panics: {e}"),
                    None => continue,
                },
                // The writer caught up with the run's log.
                _ = async { backlog.expect("full only with a backlog").drained().await },
                    if !ready.is_empty() && !self.cancel.is_cancelled() && log_full() =>
                {
                    continue;
                }
                // A slot freed by a step still running (one waiting to retry).
                permit = Arc::clone(&self.semaphore).acquire_owned(),
                    if !ready.is_empty() && !self.cancel.is_cancelled() && !log_full() =>
                {
                    drop(permit);
                    continue;
                }
                else => break,
            };
            for (pos, report) in reports {
                state[pos] = State::Done;
                let status = report.outcome.status;
                let key = report.outcome.key.clone();
                if let Some(output) = report.output {
                    outputs.insert(key.clone(), output.value);
                    values.insert(key.clone(), output.json);
                }
                outcomes[pos] = Some(report.outcome);
                let asset = plan.selected[pos];
                if status == StepStatus::Succeeded {
                    if self.cancel.is_cancelled() {
                        continue;
                    }
                    for &down in &graph.edges.downstream[asset] {
                        let Some(&dpos) = position.get(&down) else {
                            continue;
                        };
                        waiting_on[dpos] -= 1;
                        if waiting_on[dpos] == 0 && state[dpos] == State::Waiting {
                            state[dpos] = State::Ready;
                            ready.push_back(dpos);
                        }
                    }
                } else {
                    let reason = match status {
                        StepStatus::Cancelled => format!("upstream `{key}` was cancelled"),
                        _ => format!("upstream `{key}` failed"),
                    };
                    let mut below = vec![false; graph.assets.len()];
                    graph.edges.mark_descendants(asset, None, &mut below);
                    for (dpos, &down) in plan.selected.iter().enumerate() {
                        if below[down] && state[dpos] == State::Waiting {
                            state[dpos] = State::Done;
                            outcomes[dpos] = Some(self.skip(&plan.keys[dpos], reason.clone()));
                        }
                    }
                }
            }
        }

        for pos in 0..n {
            if matches!(state[pos], State::Waiting | State::Ready) {
                outcomes[pos] = Some(self.skip(&plan.keys[pos], "run cancelled".into()));
            }
        }
        let outcomes: Vec<StepOutcome> = outcomes
            .into_iter()
            .map(|o| o.expect("every step ends with an outcome"))
            .collect();
        let status = self.finish(&outcomes);
        Driven {
            status,
            outcomes,
            outputs,
            values,
        }
    }

    /// Drafts the run's final event and returns the status it stands for.
    fn finish(&self, outcomes: &[StepOutcome]) -> RunStatus {
        let with = |status| {
            outcomes
                .iter()
                .filter(|o| o.status == status)
                .map(|o| o.key.clone())
                .collect::<Vec<_>>()
        };
        let failed = with(StepStatus::Failed);
        if self.cancel.is_cancelled() {
            self.emit(None, EventKind::RunCancelled);
            RunStatus::Cancelled
        } else if failed.is_empty() {
            self.emit(None, EventKind::RunSucceeded);
            RunStatus::Succeeded
        } else {
            let skipped = with(StepStatus::Skipped);
            self.emit(None, EventKind::RunFailed { failed, skipped });
            RunStatus::Failed
        }
    }

    fn skip(&self, key: &AssetKey, reason: String) -> StepOutcome {
        self.emit(Some(key), EventKind::StepSkipped { reason });
        StepOutcome::new(key.clone(), StepStatus::Skipped)
    }

    /// Starts the step at `pos` with the slot `permit`, marked running; for an out of a
    /// multi-asset, one step for all its selected outs.
    #[allow(clippy::too_many_arguments)]
    fn spawn_step(
        &self,
        running: &mut JoinSet<Vec<(usize, StepReport)>>,
        plan: &Plan,
        pos: usize,
        permit: OwnedSemaphorePermit,
        outputs: &HashMap<AssetKey, Shared>,
        position: &HashMap<usize, usize>,
        state: &mut [State],
    ) {
        state[pos] = State::Running;
        let asset = plan.selected[pos];
        let spec = &self.defs.inner().graph.assets[asset];
        if let Some(info) = &spec.multi {
            // The multi-step takes its own slot for each attempt.
            drop(permit);
            let graph = &self.defs.inner().graph;
            let members: Vec<usize> = crate::multi::siblings(graph, info)
                .filter_map(|i| position.get(&i).copied())
                .collect();
            for &member in &members {
                state[member] = State::Running;
            }
            let step = super::multi_step::MultiStep::new(self, plan, members, outputs);
            running.spawn(step.run().in_current_span());
            return;
        }
        let inputs = inputs_of(spec, outputs);
        let step = Step {
            permit: Some(permit),
            defs: self.defs.clone(),
            asset,
            run_id: self.run_id.clone(),
            sink: self.sink.clone(),
            cancel: self.cancel.clone(),
            semaphore: Arc::clone(&self.semaphore),
            pools: self.pools.clone(),
            plan: plan.steps[pos].clone(),
            inputs: Arc::new(inputs),
            first_attempt: 1,
            one_attempt: false,
            extension: None,
            worker: None,
        };
        running.spawn(async move { vec![(pos, step.run().await)] }.in_current_span());
    }
}

/// The outputs among `outputs` that `spec` takes as inputs.
pub(super) fn inputs_of(
    spec: &crate::asset::AssetSpec,
    outputs: &HashMap<AssetKey, Shared>,
) -> HashMap<AssetKey, Shared> {
    spec.needs
        .inputs
        .iter()
        .filter_map(|input| {
            let value = outputs.get(&input.key)?;
            Some((input.key.clone(), Arc::clone(value)))
        })
        .collect()
}
