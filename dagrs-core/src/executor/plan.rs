//! Planning a run: which assets, with which config, retry policy and external inputs —
//! everything checked before the run starts, every problem reported together.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{ConfigValue, RunConfig};
use crate::context::StepPartition;
use crate::definitions::Definitions;
use crate::error::{Error, Hint, Problem, Provider};
use crate::graph::selection;
use crate::hook::Hook;
use crate::key::AssetKey;
use crate::requirements::{ConfigSupply, Provided, Supply};
use crate::retry::Retry;
use crate::scope::Shared;
use crate::storage::Storage;
use crate::text::{bounded, ECHO_LIMIT};

/// A checked run: which assets, with which config, retries and external inputs.
pub(crate) struct Plan {
    /// Selected asset indices, dependencies first.
    pub(crate) selected: Vec<usize>,
    /// Their keys, in the same order.
    pub(crate) keys: Vec<AssetKey>,
    /// Per selected asset (same order): its decoded config and retry policy.
    pub(crate) steps: Vec<StepPlan>,
    /// Outputs of unselected upstream assets, read from storage.
    pub(crate) external: HashMap<AssetKey, Shared>,
}

/// What one step runs with.
#[derive(Clone)]
pub(crate) struct StepPlan {
    pub(crate) config: Option<ConfigValue>,
    pub(crate) retry: Retry,
    /// The hooks after the step: the asset's, the job's and those of every asset.
    pub(crate) hooks: Vec<Hook>,
    /// The run's job, if it runs one.
    pub(crate) job: Option<String>,
    /// The partitions the step materializes, for a partitioned asset in a partitioned run.
    pub(crate) partition: Option<Arc<StepPartition>>,
}

impl Plan {
    /// Plans a run of `selection` with `config`; upstream outputs found in `known`
    /// (serialized, e.g. those of the run being re-executed) are used before the latest
    /// stored materializations.
    pub(crate) async fn new(
        defs: &Definitions,
        storage: &dyn Storage,
        selection: &str,
        config: &RunConfig,
        job: Option<&str>,
        known: &HashMap<AssetKey, serde_json::Value>,
    ) -> Result<Self, Error> {
        config.check_size()?;
        let inner = defs.inner();
        let graph = &inner.graph;
        let selected = selection::resolve(graph, selection)?;
        let mut problems = Vec::new();
        for key in config.assets.keys().chain(config.retries.keys()) {
            if !graph.index.contains_key(key.as_str()) {
                problems.push(Problem::ConfigForUnknownAsset {
                    key: bounded(key, ECHO_LIMIT).into_owned(),
                    hint: Hint::closest(key, graph.keys()),
                });
            }
        }
        let run_config = config.merged_over(&inner.defaults);
        let mut is_selected = vec![false; graph.assets.len()];
        for &i in &selected {
            is_selected[i] = true;
        }
        let problems_before = problems.len();
        let external =
            read_inputs(defs, storage, &selected, &is_selected, known, &mut problems).await?;
        // Inputs whose stored output is unreadable are reported once, as that.
        let unreadable: Vec<String> = problems[problems_before..]
            .iter()
            .filter_map(|p| match p {
                Problem::StoredOutput { asset, .. } => Some(asset.clone()),
                _ => None,
            })
            .collect();
        let mut steps = Vec::with_capacity(selected.len());
        for &i in &selected {
            let spec = &graph.assets[i];
            let inputs = |key: &AssetKey| {
                let producer = &graph.assets[graph.index[key]];
                if is_selected[graph.index[key]] || external.contains_key(key) {
                    Supply::Present(producer.output_type.0, producer.output_type.1)
                } else if unreadable.iter().any(|u| u == key.as_str()) {
                    Supply::Unchecked
                } else {
                    Supply::Missing
                }
            };
            let given = run_config.get(&spec.key);
            let checked = spec.needs.check(
                &spec.key,
                &Provided {
                    by: Provider::Run,
                    resources: None,
                    inputs: &inputs,
                    config: given.map_or(ConfigSupply::Absent, ConfigSupply::Given),
                },
            );
            let config = checked.unwrap_or_else(|found| {
                problems.extend(found);
                None
            });
            let retry = run_config
                .retries
                .get(spec.key.as_str())
                .unwrap_or(&spec.retry)
                .clone();
            let job_hooks = job
                .and_then(|name| defs.job(name))
                .map(|j| j.hooks.as_slice());
            let hooks = spec
                .hooks
                .iter()
                .chain(job_hooks.unwrap_or_default())
                .chain(&inner.hooks)
                .cloned()
                .collect();
            steps.push(StepPlan {
                config,
                retry,
                hooks,
                job: job.map(str::to_owned),
                partition: None,
            });
        }
        if !problems.is_empty() {
            return Err(Error::invalid(problems));
        }
        Ok(Plan {
            keys: selected
                .iter()
                .map(|&i| graph.assets[i].key.clone())
                .collect(),
            selected,
            steps,
            external,
        })
    }
}

/// The outputs of unselected assets that selected ones take: from `known` first, else the
/// latest stored materialization, decoded as their producer's output type. Inputs with no
/// output anywhere are left out (the requirements check reports them).
async fn read_inputs(
    defs: &Definitions,
    storage: &dyn Storage,
    selected: &[usize],
    is_selected: &[bool],
    known: &HashMap<AssetKey, serde_json::Value>,
    problems: &mut Vec<Problem>,
) -> Result<HashMap<AssetKey, Shared>, Error> {
    let graph = &defs.inner().graph;
    let mut external = HashMap::new();
    for &i in selected {
        for input in &graph.assets[i].needs.inputs {
            let producer_index = graph.index[&input.key];
            if is_selected[producer_index] || external.contains_key(&input.key) {
                continue;
            }
            let stored = match known.get(&input.key) {
                Some(value) => Some(value.clone()),
                None => storage
                    .latest_materialization(&input.key)
                    .await?
                    .map(|record| record.value),
            };
            let Some(value) = stored else { continue };
            let producer = &graph.assets[producer_index];
            match (producer.decode_output)(value) {
                Ok(value) => {
                    external.insert(input.key.clone(), value);
                }
                Err(reason) => problems.push(Problem::StoredOutput {
                    asset: input.key.to_string(),
                    type_name: producer.output_type.1,
                    reason: bounded(&reason, 4 * ECHO_LIMIT).into_owned(),
                }),
            }
        }
    }
    Ok(external)
}
