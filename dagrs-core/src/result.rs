//! What a run returns: status, per-asset outcomes and outputs, and its event log read back
//! from storage.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::asset::Asset;
use crate::error::Error;
use crate::event::{ErrorInfo, Event, EventKind, Metadata, RunStatus, StepStatus};
use crate::key::{AssetKey, RunId};
use crate::storage::Storage;

/// How one asset of a run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutcome {
    /// The asset.
    pub key: AssetKey,
    /// How it ended.
    pub status: StepStatus,
    /// How many attempts ran (0 when skipped).
    pub attempts: u32,
    /// How long the last attempt ran.
    pub duration: Option<Duration>,
    /// The metadata of its materialization.
    pub metadata: Metadata,
    /// The error of the last failed attempt.
    pub error: Option<ErrorInfo>,
}

impl StepOutcome {
    /// An outcome with no attempts, duration, metadata or error yet.
    pub(crate) fn new(key: AssetKey, status: StepStatus) -> Self {
        StepOutcome {
            key,
            status,
            attempts: 0,
            duration: None,
            metadata: Metadata::new(),
            error: None,
        }
    }
}

/// The outcome of each of `assets` as told by a run's event log (for stored runs).
pub fn outcomes_from_events(assets: &[AssetKey], events: &[Event]) -> Vec<StepOutcome> {
    let mut outcomes: Vec<StepOutcome> = assets
        .iter()
        .map(|key| StepOutcome::new(key.clone(), StepStatus::Skipped))
        .collect();
    let mut running = vec![false; assets.len()];
    for event in events {
        let Some(i) = event
            .asset
            .as_ref()
            .and_then(|a| assets.iter().position(|k| k == a))
        else {
            continue;
        };
        let outcome = &mut outcomes[i];
        match &event.kind {
            EventKind::StepStarted { attempt, .. } => {
                outcome.attempts = *attempt;
                running[i] = true;
            }
            EventKind::StepFailed { error, .. } => {
                outcome.status = StepStatus::Failed;
                outcome.error = Some(error.clone());
                running[i] = false;
            }
            EventKind::Materialization { metadata, .. } => outcome.metadata = metadata.clone(),
            EventKind::StepSucceeded { duration, .. } => {
                outcome.status = StepStatus::Succeeded;
                outcome.duration = Some(*duration);
                outcome.error = None;
                running[i] = false;
            }
            EventKind::StepCancelled { .. } => {
                outcome.status = StepStatus::Cancelled;
                running[i] = false;
            }
            _ => {}
        }
    }
    // A step that started and never ended was cut off (its process died).
    for (outcome, cut) in outcomes.iter_mut().zip(running) {
        if cut {
            outcome.status = StepStatus::Cancelled;
        }
    }
    outcomes
}

/// The result of a finished run: how each asset ended and what it produced. The full event
/// log stays in storage (a run of many assets would otherwise hold all of it in memory) and
/// is read back by [`events`](Self::events).
pub struct RunResult {
    pub(crate) run_id: RunId,
    pub(crate) status: RunStatus,
    pub(crate) steps: Vec<StepOutcome>,
    pub(crate) outputs: HashMap<AssetKey, Arc<dyn Any + Send + Sync>>,
    pub(crate) values: HashMap<AssetKey, serde_json::Value>,
    pub(crate) storage: Arc<dyn Storage>,
}

impl RunResult {
    /// Whether every selected asset was materialized.
    pub fn success(&self) -> bool {
        self.status == RunStatus::Succeeded
    }

    /// The run's id.
    pub fn run_id(&self) -> &RunId {
        &self.run_id
    }

    /// How the run ended.
    pub fn status(&self) -> RunStatus {
        self.status
    }

    /// The outcome of every selected asset, dependencies first.
    pub fn steps(&self) -> &[StepOutcome] {
        &self.steps
    }

    /// The outcome of asset `key`, if it was selected.
    pub fn step(&self, key: &str) -> Option<&StepOutcome> {
        self.steps.iter().find(|s| s.key == key)
    }

    /// The run's complete event log, in order, read back from the instance's storage (so it
    /// is there as long as the run is: a pruned run has none).
    pub async fn events(&self) -> Result<Vec<Event>, Error> {
        self.storage.events(&self.run_id, None).await
    }

    /// The output of asset `A`, typed: `result.output::<influx_tags>()`. `None` when `A`
    /// was not materialized in this run.
    pub fn output<A: Asset>(&self) -> Option<&A::Output> {
        self.outputs.get(A::KEY)?.downcast_ref::<A::Output>()
    }

    /// The serialized output of asset `key`, as recorded with its materialization (for an
    /// observable source asset, its data version). `None` when `key` produced nothing in this
    /// run.
    pub fn output_value(&self, key: &str) -> Option<&serde_json::Value> {
        self.values.get(key)
    }
}

impl fmt::Debug for RunResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunResult")
            .field("run_id", &self.run_id)
            .field("status", &self.status)
            .field("steps", &self.steps)
            .finish_non_exhaustive()
    }
}

/// A table of the run: one line per asset with status, attempts, duration and metadata,
/// and the error of each failed asset.
impl fmt::Display for RunResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "run {} {:?}", self.run_id, self.status)?;
        let width = self
            .steps
            .iter()
            .map(|s| s.key.len())
            .max()
            .unwrap_or(5)
            .max(5);
        writeln!(
            f,
            "  {:<width$}  {:<9}  {:>8}  {:>10}  metadata",
            "asset", "status", "attempts", "duration"
        )?;
        for step in &self.steps {
            let status = step.status.as_str();
            let duration = step
                .duration
                .map(|d| format!("{:.1?}", d))
                .unwrap_or_else(|| "-".into());
            let metadata: Vec<String> = step
                .metadata
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            writeln!(
                f,
                "  {:<width$}  {:<9}  {:>8}  {:>10}  {}",
                step.key,
                status,
                step.attempts,
                duration,
                metadata.join(" ")
            )?;
            if let Some(error) = &step.error {
                writeln!(f, "  {:<width$}  error: {error}", "")?;
            }
        }
        Ok(())
    }
}
