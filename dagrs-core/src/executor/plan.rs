//! Planning a run: which assets, with which config, retry policy and external inputs —
//! everything checked before the run starts, every problem reported together.

use std::collections::HashMap;
use std::sync::Arc;

use super::targets::Target;
use crate::context::StepPartition;

use crate::config::{ConfigValue, RunConfig};
use crate::definitions::Definitions;
use crate::error::{Error, Hint, Problem, Provider};
use crate::graph::selection;
use crate::hook::Hook;
use crate::key::AssetKey;
use crate::requirements::{ConfigSupply, Provided, Supply};
use crate::retry::Retry;
use crate::scope::Shared;
use crate::source::AssetKind;
use crate::storage::Storage;
use crate::text::{bounded, ECHO_LIMIT};

/// What a run is asked to do: the input of planning.
pub(crate) struct Request<'a> {
    pub(crate) selection: &'a str,
    pub(crate) config: &'a RunConfig,
    pub(crate) job: Option<&'a str>,
    /// The partition key or range (`START...END`) it materializes.
    pub(crate) partition: Option<&'a str>,
    /// Outputs known already (serialized), e.g. those of the run being re-executed.
    pub(crate) known: &'a HashMap<AssetKey, serde_json::Value>,
}

impl<'a> Request<'a> {
    /// A run of `selection` with the options' config, job and partition.
    pub(crate) fn new(selection: &'a str, options: &'a super::RunOptions) -> Self {
        Request {
            selection,
            config: &options.config,
            job: options.job.as_deref(),
            partition: options
                .tags
                .get(crate::job::PARTITION_TAG)
                .map(String::as_str),
            known: empty(),
        }
    }

    /// The run recorded as `run` (e.g. queued earlier).
    pub(crate) fn of_run(run: &'a crate::storage::RunRecord) -> Self {
        Request {
            selection: &run.selection,
            config: &run.config,
            job: run.tags.get(crate::job::JOB_TAG).map(String::as_str),
            partition: run.tags.get(crate::job::PARTITION_TAG).map(String::as_str),
            known: empty(),
        }
    }
}

fn empty() -> &'static HashMap<AssetKey, serde_json::Value> {
    static EMPTY: std::sync::OnceLock<HashMap<AssetKey, serde_json::Value>> =
        std::sync::OnceLock::new();
    EMPTY.get_or_init(HashMap::new)
}

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
    /// The selection asked for, and the job run, for the run's span.
    pub(crate) selection: String,
    pub(crate) job: Option<String>,
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
    /// For an observable source asset: the data version recorded last, if any.
    pub(crate) last_version: Option<serde_json::Value>,
}

impl Plan {
    /// Plans `request`; upstream outputs found in its `known` outputs are used before the
    /// stored materializations.
    pub(crate) async fn new(
        defs: &Definitions,
        storage: &dyn Storage,
        request: Request<'_>,
    ) -> Result<Self, Error> {
        let Request {
            selection,
            config,
            job,
            partition,
            known,
        } = request;
        config.check_size()?;
        let inner = defs.inner();
        let graph = &inner.graph;
        let selected = selection::resolve(graph, selection)?;
        let selected = crate::multi::expand_selection(graph, selected);
        let mut problems = Vec::new();
        let target =
            super::targets::resolve(defs, storage, &selected, partition, &mut problems).await?;
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
        if let Some(target) = &target {
            target
                .check_upstream(defs, storage, &selected, &is_selected, &mut problems)
                .await?;
        }
        let external = read_inputs(
            defs,
            storage,
            (&selected, &is_selected),
            known,
            target.as_ref(),
            &mut problems,
        )
        .await?;
        let step_partition = target
            .as_ref()
            .map(|t| Arc::new(StepPartition::new(&t.def, t.range.clone())));
        // Inputs whose stored output is unreadable are reported once, as that.
        let unreadable: Vec<String> = problems[problems_before..]
            .iter()
            .filter_map(|p| match p {
                Problem::StoredOutput { asset, .. } => Some(asset.clone()),
                _ => None,
            })
            .collect();
        let mut steps: Vec<StepPlan> = Vec::with_capacity(selected.len());
        let mut leads = crate::multi::Leads::default();
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
            let given = run_config.get(spec.config_key());
            let lead = leads.lead(spec, steps.len());
            let checked = if let Some(first) = lead.filter(|&first| first != steps.len()) {
                // The multi-asset's first selected out checked the needs they share.
                let first: &StepPlan = &steps[first];
                Ok(first.config.clone())
            } else {
                spec.needs.check(
                    &spec.key,
                    &Provided {
                        by: Provider::Run,
                        resources: None,
                        inputs: &inputs,
                        config: given.map_or(ConfigSupply::Absent, ConfigSupply::Given),
                    },
                )
            };
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
            let last_version = match spec.kind {
                AssetKind::Observable => storage
                    .latest_materialization(&spec.key)
                    .await?
                    .map(|record| record.value),
                _ => None,
            };
            steps.push(StepPlan {
                config,
                retry,
                hooks,
                job: job.map(str::to_owned),
                partition: step_partition.clone().filter(|_| spec.partitions.is_some()),
                last_version,
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
            selection: selection.to_owned(),
            job: job.map(str::to_owned),
        })
    }
}

/// The outputs of unselected assets that selected ones take: from `known` first, else the
/// stored materialization — for a partitioned asset's partitioned input, the latest that
/// covers the partitions it maps to; else the latest — decoded as their producer's output
/// type. Inputs with no output anywhere are left out (the requirements check reports them).
async fn read_inputs(
    defs: &Definitions,
    storage: &dyn Storage,
    (selected, is_selected): (&[usize], &[bool]),
    known: &HashMap<AssetKey, serde_json::Value>,
    target: Option<&Target>,
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
            let mapped = target.and_then(|t| t.mapped_input(defs, i, producer_index));
            let stored = match (known.get(&input.key), mapped) {
                (Some(value), _) => Some(value.clone()),
                (None, Some(range)) => storage
                    .partition_materialization(&input.key, &range)
                    .await?
                    .map(|record| record.value),
                (None, None) => storage
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
