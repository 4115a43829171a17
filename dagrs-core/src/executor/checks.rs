//! Asset checks in a step: evaluated on the asset's fresh output right after its
//! materialization, all at once, each result recorded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use super::step::panic_message;
use crate::asset::StepOutput;
use crate::check::CheckResult;
use crate::context::{AssetContext, StepPartition};
use crate::definitions::Definitions;
use crate::event::{ErrorInfo, Metadata};
use crate::key::RunId;
use crate::log::Sink;
use crate::scope::StepScope;

/// The checks of one asset in one step.
pub(crate) struct Checks<'a> {
    pub(crate) defs: &'a Definitions,
    /// The asset's index.
    pub(crate) asset: usize,
    pub(crate) run_id: &'a RunId,
    pub(crate) sink: &'a Sink,
    pub(crate) cancel: &'a CancellationToken,
    pub(crate) partition: Option<&'a Arc<StepPartition>>,
}

impl Checks<'_> {
    /// Evaluates the asset's checks on its fresh output, all at once, each in a task of its
    /// own, and records every result. Returns the error that fails the step when a blocking
    /// check failed with severity `error` (or could not be evaluated).
    pub(crate) async fn run(&self, attempt: u32, output: &StepOutput) -> Option<ErrorInfo> {
        let inner = self.defs.inner();
        let checks = &inner.checks_by_asset[self.asset];
        if checks.is_empty() {
            return None;
        }
        let key = &inner.graph.assets[self.asset].key;
        let inputs = Arc::new(HashMap::from([(key.clone(), Arc::clone(&output.value))]));
        let tasks: Vec<_> = checks
            .iter()
            .map(|&c| {
                let check = &inner.checks[c];
                let scope = StepScope {
                    context: AssetContext::new(
                        self.run_id.clone(),
                        key.clone(),
                        attempt,
                        self.sink.clone(),
                        Arc::new(Mutex::new(Metadata::new())),
                        self.cancel.clone(),
                    )
                    .with_partition(self.partition.cloned()),
                    resources: inner.resources.clone(),
                    config: None,
                    inputs: Arc::clone(&inputs),
                };
                tokio::spawn((check.compute)(scope))
            })
            .collect();
        let mut blocked = Vec::new();
        for (&c, task) in checks.iter().zip(tasks) {
            let check = &inner.checks[c];
            let result = match task.await {
                Ok(Ok(result)) => result,
                Ok(Err(error)) => CheckResult::failed(format!(
                    "the check could not be evaluated: {}",
                    ErrorInfo::from_anyhow(&error)
                )),
                Err(join) => {
                    CheckResult::failed(format!("the check panicked: {}", panic_message(join)))
                }
            };
            if check.blocking && result.blocks() {
                blocked.push(check.name.clone());
            }
            self.sink
                .send(Some(key), result.into_event(&check.name, check.blocking));
        }
        if blocked.is_empty() {
            return None;
        }
        let names = blocked
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ");
        Some(ErrorInfo {
            message: format!(
                "blocking check {names} failed, so nothing downstream runs; the materialization \
                 is recorded — see `asset checks {key}`"
            ),
            causes: Vec::new(),
        })
    }
}
