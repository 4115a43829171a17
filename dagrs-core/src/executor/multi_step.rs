//! The step of a multi-asset: its function runs once for all the outs a run selects, with the
//! attempts, retries, timeout and cancellation of one step, and every event recorded for each
//! out, so that each out's history reads like any asset's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::plan::{Plan, StepPlan};
use super::scheduler::Scheduler;
use super::step::{panic_text, CatchUnwind, Step, StepReport};
use crate::asset::StepOutput;
use crate::context::AssetContext;
use crate::definitions::Definitions;
use crate::event::{ErrorInfo, EventKind, Metadata, StepStatus};
use crate::key::{AssetKey, RunId};
use crate::lock;
use crate::log::Sink;
use crate::multi::MultiInfo;
use crate::result::StepOutcome;
use crate::scope::{Shared, StepScope};

/// One selected out: its position in the plan, its asset index and its step plan.
struct Member {
    pos: usize,
    asset: usize,
    key: AssetKey,
    plan: StepPlan,
}

/// The step of a multi-asset's selected outs.
pub(crate) struct MultiStep {
    defs: Definitions,
    run_id: RunId,
    sink: Sink,
    cancel: CancellationToken,
    semaphore: Arc<Semaphore>,
    pools: crate::pool::Pools,
    members: Vec<Member>,
    inputs: Arc<HashMap<AssetKey, Shared>>,
}

impl MultiStep {
    /// The step of the outs at `positions` of `plan` (selected outs of one multi-asset, in
    /// the order of its outs).
    pub(crate) fn new(
        scheduler: &Scheduler,
        plan: &Plan,
        positions: Vec<usize>,
        outputs: &HashMap<AssetKey, Shared>,
    ) -> Self {
        let graph = &scheduler.defs.inner().graph;
        let members: Vec<Member> = positions
            .into_iter()
            .map(|pos| {
                let asset = plan.selected[pos];
                Member {
                    pos,
                    asset,
                    key: graph.assets[asset].key.clone(),
                    plan: plan.steps[pos].clone(),
                }
            })
            .collect();
        // The outs share their needs: the first one's inputs are everyone's.
        let lead = &graph.assets[members[0].asset];
        let inputs = super::scheduler::inputs_of(lead, outputs);
        MultiStep {
            defs: scheduler.defs.clone(),
            run_id: scheduler.run_id.clone(),
            sink: scheduler.sink.clone(),
            cancel: scheduler.cancel.clone(),
            semaphore: Arc::clone(&scheduler.semaphore),
            pools: scheduler.pools.clone(),
            members,
            inputs: Arc::new(inputs),
        }
    }

    fn each(&self, kind: impl Fn() -> EventKind) {
        for member in &self.members {
            self.sink.send(Some(&member.key), kind());
        }
    }

    /// Runs attempts until one succeeds, the retry policy gives up, or the run is cancelled;
    /// reports how each out ended.
    pub(crate) async fn run(self) -> Vec<(usize, StepReport)> {
        let graph = &self.defs.inner().graph;
        let lead = &graph.assets[self.members[0].asset];
        let info: &MultiInfo = lead.multi.as_deref().expect("a multi-asset's out");
        let lead_plan = &self.members[0].plan;
        let retry = &lead_plan.retry;
        let selection: Arc<[(String, AssetKey)]> = self
            .members
            .iter()
            .map(|m| {
                let name = info.out_name(&m.key).unwrap_or(m.key.as_str());
                (name.to_owned(), m.key.clone())
            })
            .collect();
        let mut started = 0;
        let mut last: Option<(ErrorInfo, Metadata, std::time::Duration)> = None;
        let ended = 'attempts: loop {
            let attempt = started + 1;
            let permit = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break 'attempts StepStatus::Cancelled,
                permit = Arc::clone(&self.semaphore).acquire_owned() => {
                    permit.expect("the run's semaphore is never closed")
                }
            };
            // Then a slot of its pool, held for this attempt only; the wait is logged under
            // the first selected out, as the function's own log lines are.
            let waiting = |pool: &str| {
                self.sink
                    .send(Some(&lead.key), crate::pool::waiting_log(pool))
            };
            let Ok(pool_slot) = self
                .pools
                .slot(lead.pool_name(), &self.cancel, waiting)
                .await
            else {
                break 'attempts StepStatus::Cancelled;
            };
            started = attempt;
            self.each(|| EventKind::StepStarted {
                attempt,
                worker: None,
            });
            let metadata = Arc::new(Mutex::new(Metadata::new()));
            let scope = StepScope {
                context: AssetContext::new(
                    self.run_id.clone(),
                    lead.key.clone(),
                    attempt,
                    self.sink.clone(),
                    Arc::clone(&metadata),
                    self.cancel.clone(),
                )
                .with_selection(Some(Arc::clone(&selection))),
                resources: self.defs.inner().resources.clone(),
                config: lead_plan.config.clone(),
                inputs: Arc::clone(&self.inputs),
            };
            // Captured lines and the step's span go under the first selected out.
            let log = crate::observe::trace::StepLog::new(self.sink.clone(), lead.key.clone());
            let span = crate::observe::trace::step_span(&log, attempt, None);
            let started = Instant::now();
            // Polled in this task, cancellation first, as a single step's asset is.
            let mut task =
                CatchUnwind(tracing::Instrument::instrument((info.compute)(scope), span));
            let deadline = async {
                match lead.timeout {
                    Some(limit) => tokio::time::sleep(limit).await,
                    None => std::future::pending().await,
                }
            };
            let mut retriable = true;
            let result = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => {
                    drop(task);
                    self.each(|| EventKind::StepCancelled { attempt });
                    return self.ended(StepStatus::Cancelled, attempt, None).await;
                }
                caught = &mut task => match caught {
                    Ok(result) => result,
                    Err(payload) => {
                        retriable = false;
                        Err(anyhow::anyhow!("asset panicked: {}", panic_text(payload)))
                    }
                },
                _ = deadline => {
                    drop(task);
                    Err(anyhow::anyhow!(
                        "timed out after {:?}; raise the asset's `timeout` if it needs longer",
                        lead.timeout.unwrap_or_default()
                    ))
                }
            };
            drop(permit);
            drop(pool_slot);
            let duration = started.elapsed();
            let metadata = std::mem::take(&mut *lock(&metadata));
            let error = match result.and_then(|outputs| self.split(info, outputs)) {
                Ok(outputs) => {
                    let mut reports = Vec::with_capacity(self.members.len());
                    for (member, output) in self.members.iter().zip(outputs) {
                        let spec = &graph.assets[member.asset];
                        self.sink.send(
                            Some(&member.key),
                            EventKind::Materialization {
                                metadata: metadata.clone(),
                                value: output.json.clone(),
                                code_version: spec.code_version.clone(),
                                partition: None,
                            },
                        );
                        let blocked = super::checks::Checks {
                            defs: &self.defs,
                            asset: member.asset,
                            run_id: &self.run_id,
                            sink: &self.sink,
                            cancel: &self.cancel,
                            partition: member.plan.partition.as_ref(),
                        }
                        .run(attempt, &output)
                        .await;
                        let mut outcome =
                            StepOutcome::new(member.key.clone(), StepStatus::Succeeded);
                        match blocked {
                            // A failing blocking check fails this out, after its materialization.
                            Some(error) => {
                                self.sink.send(
                                    Some(&member.key),
                                    EventKind::StepFailed {
                                        attempt,
                                        error: error.clone(),
                                        will_retry: false,
                                        partition: None,
                                    },
                                );
                                outcome.status = StepStatus::Failed;
                                outcome.error = Some(error);
                            }
                            None => self.sink.send(
                                Some(&member.key),
                                EventKind::StepSucceeded { attempt, duration },
                            ),
                        }
                        outcome.attempts = attempt;
                        outcome.duration = Some(duration);
                        outcome.metadata = metadata.clone();
                        self.hooks(member, &outcome).await;
                        reports.push((
                            member.pos,
                            StepReport {
                                outcome,
                                output: Some(output),
                                retry_in: None,
                            },
                        ));
                    }
                    return reports;
                }
                Err(error) => error,
            };
            let info_error = ErrorInfo::from_anyhow(&error);
            let will_retry = retriable && attempt <= retry.max_retries();
            self.each(|| EventKind::StepFailed {
                attempt,
                error: info_error.clone(),
                will_retry,
                partition: None,
            });
            last = Some((info_error, metadata, duration));
            if !will_retry {
                break 'attempts StepStatus::Failed;
            }
            let delay = retry.delay(attempt);
            self.each(|| EventKind::StepRetrying {
                next_attempt: attempt + 1,
                delay,
            });
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.cancel.cancelled() => break 'attempts StepStatus::Cancelled,
            }
        };
        match ended {
            StepStatus::Failed => self.ended(StepStatus::Failed, started, last).await,
            _ if started == 0 => {
                // Cancelled while waiting for a concurrency or pool slot: it never started.
                self.each(|| EventKind::StepSkipped {
                    reason: "run cancelled".into(),
                });
                self.ended(StepStatus::Skipped, 0, None).await
            }
            _ => {
                self.each(|| EventKind::StepCancelled { attempt: started });
                self.ended(StepStatus::Cancelled, started, last).await
            }
        }
    }

    /// The outputs of the selected outs, in their order; an error when one is missing or of
    /// another type. Values of unselected outs are dropped.
    fn split(
        &self,
        info: &MultiInfo,
        mut outputs: crate::multi::MultiOutputs,
    ) -> anyhow::Result<Vec<StepOutput>> {
        let graph = &self.defs.inner().graph;
        self.members
            .iter()
            .map(|member| {
                let spec = &graph.assets[member.asset];
                outputs
                    .take(&info.name, &member.key, spec.output_type)?
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "multi-asset `{}` returned no value for selected out `{}`",
                            info.name,
                            info.out_name(&member.key).unwrap_or(member.key.as_str())
                        )
                    })
            })
            .collect()
    }

    /// Every out's report for a step that ended without outputs, hooks run.
    async fn ended(
        &self,
        status: StepStatus,
        attempts: u32,
        last: Option<(ErrorInfo, Metadata, std::time::Duration)>,
    ) -> Vec<(usize, StepReport)> {
        let mut reports = Vec::with_capacity(self.members.len());
        for member in &self.members {
            let mut outcome = StepOutcome::new(member.key.clone(), status);
            outcome.attempts = attempts;
            if let Some((error, metadata, duration)) = &last {
                outcome.error = Some(error.clone());
                outcome.metadata = metadata.clone();
                outcome.duration = Some(*duration);
            }
            self.hooks(member, &outcome).await;
            reports.push((
                member.pos,
                StepReport {
                    outcome,
                    output: None,
                    retry_in: None,
                },
            ));
        }
        reports
    }

    /// Runs the out's hooks, as a step of its own would.
    async fn hooks(&self, member: &Member, outcome: &StepOutcome) {
        if member.plan.hooks.is_empty() {
            return;
        }
        let step = Step {
            permit: None,
            defs: self.defs.clone(),
            asset: member.asset,
            run_id: self.run_id.clone(),
            sink: self.sink.clone(),
            cancel: self.cancel.clone(),
            semaphore: Arc::clone(&self.semaphore),
            pools: self.pools.clone(),
            plan: member.plan.clone(),
            inputs: Arc::clone(&self.inputs),
            first_attempt: 1,
            one_attempt: false,
            extension: None,
            worker: None,
        };
        step.run_hooks(outcome).await;
    }
}
