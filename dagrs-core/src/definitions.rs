//! `Definitions`: everything the user's code defines — assets, resources, default config —
//! checked once. Where and how runs happen is the [`Instance`](crate::Instance)'s business.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;

use std::collections::BTreeMap;

use crate::asset::{Asset, AssetSpec};
use crate::check::CheckSpec;
use crate::config::RunConfig;
use crate::error::{DefinitionsError, Error, Hint, Problem, Provider};
use crate::graph::{selection, AssetGraph, Graph};
use crate::hook::Hook;
use crate::job::AssetJob;
use crate::key::AssetKey;
use crate::partition::{PartitionMapping, PartitionsDefinition};
use crate::requirements::{ConfigSupply, Provided, Supply};
use crate::resources::Resources;
use crate::schedule::Schedule;
use crate::sensor::{Sensor, SensorKind};
use crate::source::AssetKind;

/// A checked set of assets with their resources and default config: what the user's code
/// defines. Pure, no I/O; cheap to clone.
///
/// Built with [`Definitions::builder`]; [`DefinitionsBuilder::build`] checks everything
/// and reports every problem at once, so nothing runs on a broken graph.
///
/// ```
/// use dagrs_core::prelude::*;
///
/// #[asset]
/// async fn numbers() -> Result<Vec<u32>> { Ok(vec![1, 2, 3]) }
///
/// #[asset]
/// async fn total(numbers: Input<numbers>) -> Result<u32> { Ok(numbers.iter().sum()) }
///
/// let defs = Definitions::builder().asset::<numbers>().asset::<total>().build().unwrap();
/// assert_eq!(defs.select("numbers+").unwrap(), ["numbers", "total"]);
/// ```
#[derive(Clone)]
pub struct Definitions(Arc<Inner>);

pub(crate) struct Inner {
    pub(crate) graph: AssetGraph,
    pub(crate) resources: Resources,
    pub(crate) defaults: RunConfig,
    pub(crate) jobs: Vec<AssetJob>,
    pub(crate) schedules: Vec<Schedule>,
    pub(crate) sensors: Vec<Sensor>,
    /// Hooks of every asset.
    pub(crate) hooks: Vec<Hook>,
    /// The asset checks.
    pub(crate) checks: Vec<CheckSpec>,
    /// Per asset index: its checks (indices into `checks`).
    pub(crate) checks_by_asset: Vec<Vec<usize>>,
}

impl Definitions {
    /// Starts an empty set of definitions.
    pub fn builder() -> DefinitionsBuilder {
        DefinitionsBuilder {
            assets: Vec::new(),
            resources: Resources::default(),
            defaults: RunConfig::default(),
            jobs: Vec::new(),
            schedules: Vec::new(),
            sensors: Vec::new(),
            hooks: Vec::new(),
            checks: Vec::new(),
        }
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.0
    }

    /// The assets, dependencies first.
    pub fn assets(&self) -> impl Iterator<Item = &AssetSpec> + '_ {
        let graph = &self.0.graph;
        graph.order.iter().map(|&i| &graph.assets[i])
    }

    /// The asset with key `key`.
    pub fn asset(&self, key: &str) -> Option<&AssetSpec> {
        self.0.graph.get(key)
    }

    /// The keys of the assets that depend directly on `key`.
    pub fn dependents(&self, key: &str) -> Vec<&AssetKey> {
        let graph = &self.0.graph;
        match graph.index.get(key) {
            Some(&i) => graph.edges.downstream[i]
                .iter()
                .map(|&d| &graph.assets[d].key)
                .collect(),
            None => Vec::new(),
        }
    }

    /// Resolves a selection (see [the syntax](crate#selections)) to asset keys,
    /// dependencies first.
    pub fn select(&self, selection: &str) -> Result<Vec<AssetKey>, Error> {
        let graph = &self.0.graph;
        Ok(selection::resolve(graph, selection)?
            .into_iter()
            .map(|i| graph.assets[i].key.clone())
            .collect())
    }

    /// The default run config.
    pub fn default_config(&self) -> &RunConfig {
        &self.0.defaults
    }

    /// The resources.
    pub fn resources(&self) -> &Resources {
        &self.0.resources
    }

    /// The asset jobs.
    pub fn jobs(&self) -> &[AssetJob] {
        &self.0.jobs
    }

    /// The job named `name`.
    pub fn job(&self, name: &str) -> Option<&AssetJob> {
        self.0.jobs.iter().find(|job| job.name == name)
    }

    /// The schedules.
    pub fn schedules(&self) -> &[Schedule] {
        &self.0.schedules
    }

    /// The schedule named `name`.
    pub fn schedule(&self, name: &str) -> Option<&Schedule> {
        self.0.schedules.iter().find(|s| s.name == name)
    }

    /// The sensors.
    pub fn sensors(&self) -> &[Sensor] {
        &self.0.sensors
    }

    /// The sensor named `name`.
    pub fn sensor(&self, name: &str) -> Option<&Sensor> {
        self.0.sensors.iter().find(|s| s.name == name)
    }

    /// The hooks run on every asset.
    pub fn hooks(&self) -> &[Hook] {
        &self.0.hooks
    }

    /// The asset checks.
    pub fn checks(&self) -> &[CheckSpec] {
        &self.0.checks
    }

    /// The checks of asset `key`.
    pub fn checks_of(&self, key: &str) -> impl Iterator<Item = &CheckSpec> + '_ {
        let of = self
            .0
            .graph
            .index
            .get(key)
            .map(|&i| &self.0.checks_by_asset[i]);
        of.into_iter().flatten().map(|&c| &self.0.checks[c])
    }
}

impl std::fmt::Debug for Definitions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Definitions")
            .field("assets", &self.0.graph.assets.len())
            .field("resources", &self.0.resources)
            .finish_non_exhaustive()
    }
}

/// Collects assets, resources, defaults, jobs, schedules, sensors and hooks;
/// [`build`](DefinitionsBuilder::build) checks them.
pub struct DefinitionsBuilder {
    assets: Vec<AssetSpec>,
    resources: Resources,
    defaults: RunConfig,
    jobs: Vec<AssetJob>,
    schedules: Vec<Schedule>,
    sensors: Vec<Sensor>,
    hooks: Vec<Hook>,
    checks: Vec<CheckSpec>,
}

impl DefinitionsBuilder {
    /// Adds the asset `A` (a function marked `#[asset]`).
    pub fn asset<A: Asset>(mut self) -> Self {
        self.assets.push(A::spec());
        self
    }

    /// Adds the outs of multi-asset `M` (a function marked `#[multi_asset]`).
    pub fn multi_asset<M: crate::MultiAsset>(mut self) -> Self {
        self.assets.extend(M::specs());
        self
    }

    /// Adds assets given as specs, e.g. from [`assets!`](crate::assets) or built by hand.
    pub fn specs(mut self, specs: impl IntoIterator<Item = AssetSpec>) -> Self {
        if self.assets.is_empty() {
            // Collecting a `Vec`'s own iterator keeps its buffer: a million specs are not
            // copied.
            self.assets = specs.into_iter().collect();
        } else {
            self.assets.extend(specs);
        }
        self
    }

    /// Adds one asset given as a spec (built by hand, e.g. [`AssetSpec::external`]).
    pub fn spec(mut self, spec: AssetSpec) -> Self {
        self.assets.push(spec);
        self
    }

    /// Adds an asset check (see [`CheckSpec`]).
    pub fn check(mut self, check: CheckSpec) -> Self {
        self.checks.push(check);
        self
    }

    /// Adds asset checks, e.g. from [`checks!`](crate::checks).
    pub fn checks(mut self, checks: impl IntoIterator<Item = CheckSpec>) -> Self {
        self.checks.extend(checks);
        self
    }

    /// Provides a resource, injected into assets that take `Res<R>`. A second resource of
    /// the same type replaces the first.
    pub fn resource<R: Send + Sync + 'static>(mut self, resource: R) -> Self {
        self.resources.insert(resource);
        self
    }

    /// Sets the default run config; each run's config is merged over it.
    pub fn config(mut self, defaults: RunConfig) -> Self {
        self.defaults = defaults;
        self
    }

    /// Adds an asset job.
    pub fn job(mut self, job: AssetJob) -> Self {
        self.jobs.push(job);
        self
    }

    /// Adds a schedule.
    pub fn schedule(mut self, schedule: Schedule) -> Self {
        self.schedules.push(schedule);
        self
    }

    /// Adds a sensor.
    pub fn sensor(mut self, sensor: Sensor) -> Self {
        self.sensors.push(sensor);
        self
    }

    /// Adds a hook run on every asset (on success or failure, as the hook says).
    pub fn hook(mut self, hook: Hook) -> Self {
        self.hooks.push(hook);
        self
    }

    /// Checks the definitions: keys unique and well-formed, pool names well-formed, every
    /// dependency registered, inputs of the type their producer makes, no cycles (each one
    /// named), every needed resource provided, and the default config valid. All problems are reported together.
    pub fn build(self) -> Result<Definitions, DefinitionsError> {
        let mut problems = Vec::new();
        let mut index: HashMap<AssetKey, usize> = HashMap::with_capacity(self.assets.len());
        let mut duplicates: HashMap<&AssetKey, usize> = HashMap::new();
        for (i, spec) in self.assets.iter().enumerate() {
            if !AssetKey::is_valid(&spec.key) {
                problems.push(Problem::InvalidKey {
                    key: crate::text::bounded(&spec.key, crate::text::ECHO_LIMIT).into_owned(),
                });
            }
            if let Some(pool) = &spec.pool {
                if let Some(reason) = crate::pool::pool_name_problem(pool) {
                    let name = crate::text::bounded(pool, crate::text::ECHO_LIMIT);
                    problems.push(Problem::InvalidAsset {
                        asset: spec.key.to_string(),
                        reason: format!("its pool name {name:?} is invalid: {reason}"),
                    });
                }
            }
            // The first asset registered under a key is the one the key names.
            match index.entry(spec.key.clone()) {
                Entry::Occupied(_) => *duplicates.entry(&spec.key).or_insert(1) += 1,
                Entry::Vacant(slot) => {
                    slot.insert(i);
                }
            }
        }
        let mut duplicates: Vec<(&AssetKey, usize)> = duplicates.into_iter().collect();
        duplicates.sort();
        problems.extend(
            duplicates
                .into_iter()
                .map(|(key, count)| Problem::DuplicateAsset {
                    key: key.to_string(),
                    count,
                    defined_by: crate::multi::defined_by(&self.assets, key),
                }),
        );

        let keys = || self.assets.iter().map(|s| s.key.as_str());
        let mut edges = Vec::new();
        let mut leads = crate::multi::Leads::default();
        for (i, spec) in self.assets.iter().enumerate() {
            if index[&spec.key] != i {
                continue;
            }
            let lead = leads.lead(spec, i).is_none_or(|first| first == i);
            if let Some(problem) = crate::multi::check_out(&self.assets, &leads, spec) {
                problems.push(problem);
            }
            for dep in &spec.deps {
                match index.get(dep) {
                    Some(&d) => edges.push((d, i)),
                    None if !lead => {}
                    None => problems.push(Problem::UnknownDependency {
                        asset: spec.key.to_string(),
                        dep: dep.to_string(),
                        hint: Hint::closest(dep, keys()),
                    }),
                }
            }
            let inputs = |key: &AssetKey| match index.get(key) {
                Some(&d) => {
                    let (id, name) = self.assets[d].output_type;
                    Supply::Present(id, name)
                }
                None => Supply::Unchecked,
            };
            if !lead {
                continue; // its multi-asset's first out checks the needs they share
            }
            let config = match self.defaults.assets.get(spec.config_key().as_str()) {
                Some(value) => ConfigSupply::Given(value),
                None => ConfigSupply::Unchecked,
            };
            if let Err(found) = spec.needs.check(
                &spec.key,
                &Provided {
                    by: Provider::Definitions,
                    resources: Some(&self.resources),
                    inputs: &inputs,
                    config,
                },
            ) {
                problems.extend(found);
            }
        }
        let configured = self
            .defaults
            .assets
            .keys()
            .chain(self.defaults.retries.keys());
        for key in configured {
            if !index.contains_key(key.as_str()) {
                problems.push(Problem::ConfigForUnknownAsset {
                    key: crate::text::bounded(key, crate::text::ECHO_LIMIT).into_owned(),
                    hint: Hint::closest(key, keys()),
                });
            }
        }

        let edges = Graph::new(self.assets.len(), edges);
        let order = edges.topo_order();
        if order.is_none() {
            for cycle in edges.cycles() {
                problems.push(Problem::Cycle {
                    cycle: cycle
                        .into_iter()
                        .map(|i| self.assets[i].key.to_string())
                        .collect(),
                });
            }
        }
        DefinitionsError::check(problems)?;
        let graph = AssetGraph {
            order: order.expect("an acyclic graph has an order"),
            assets: self.assets,
            index,
            edges,
        };
        let mut problems = check_partitions(&graph);
        let checks_by_asset = check_checks(&graph, &self.checks, &self.resources, &mut problems);
        problems.extend(check_sources(&graph));
        problems.extend(check_automation(
            &graph,
            &self.resources,
            &self.defaults,
            &self.jobs,
            &self.schedules,
            &self.sensors,
            &self.hooks,
        ));
        DefinitionsError::check(problems)?;
        Ok(Definitions(Arc::new(Inner {
            graph,
            resources: self.resources,
            defaults: self.defaults,
            jobs: self.jobs,
            schedules: self.schedules,
            sensors: self.sensors,
            hooks: self.hooks,
            checks: self.checks,
            checks_by_asset,
        })))
    }
}

/// Checks asset checks: each on a known asset that runs, named once per asset, taking no
/// input but its asset's output and no config, with every resource it needs. Returns each
/// asset's checks.
fn check_checks(
    graph: &AssetGraph,
    checks: &[CheckSpec],
    resources: &Resources,
    problems: &mut Vec<Problem>,
) -> Vec<Vec<usize>> {
    let mut by_asset = vec![Vec::new(); graph.assets.len()];
    for (c, check) in checks.iter().enumerate() {
        let invalid = |reason: String| Problem::InvalidCheck {
            asset: crate::text::bounded(&check.asset, crate::text::ECHO_LIMIT).into_owned(),
            check: crate::text::bounded(&check.name, crate::text::ECHO_LIMIT).into_owned(),
            reason,
        };
        let Some(&i) = graph.index.get(&check.asset) else {
            problems.push(invalid(format!(
                "there is no such asset{}",
                Hint::closest(&check.asset, graph.keys())
            )));
            continue;
        };
        let spec = &graph.assets[i];
        if check.name.is_empty() || !AssetKey::is_valid(&check.name) {
            problems.push(invalid(
                "check names are non-empty and use only letters, digits, `_`, `-`, `.` and `/`"
                    .into(),
            ));
        }
        if spec.kind == AssetKind::External {
            problems.push(invalid(
                "the asset is external: checks run after a materialization or observation, \
                 and dagrs never runs it"
                    .into(),
            ));
        }
        if by_asset[i]
            .iter()
            .any(|&o: &usize| checks[o].name == check.name)
        {
            problems.push(invalid("the asset has another check of this name".into()));
            continue;
        }
        for input in &check.needs.inputs {
            if input.key != spec.key {
                problems.push(invalid(format!(
                    "it takes the output of `{}`; a check takes only the output of the asset \
                     it checks",
                    input.key
                )));
            }
        }
        if check.needs.config.is_some() {
            problems.push(invalid(
                "it takes a `Config<C>`; checks take no config (read settings from a \
                 resource)"
                    .into(),
            ));
        }
        let output = |_: &AssetKey| Supply::Present(spec.output_type.0, spec.output_type.1);
        let provided = Provided {
            by: Provider::Definitions,
            resources: Some(resources),
            inputs: &output,
            config: ConfigSupply::Unchecked,
        };
        if let Err(found) = check.needs.check(&spec.key, &provided) {
            problems.extend(found.into_iter().map(|p| invalid(p.to_string())));
        }
        by_asset[i].push(c);
    }
    by_asset
}

/// Checks source assets and automation conditions: no inputs from an external asset, no
/// automation on a source asset, every condition's cron valid.
fn check_sources(graph: &AssetGraph) -> Vec<Problem> {
    let mut problems = Vec::new();
    for spec in &graph.assets {
        let invalid = |reason: String| Problem::InvalidAsset {
            asset: spec.key.to_string(),
            reason,
        };
        if let Some(condition) = &spec.automation {
            if spec.kind.is_source() {
                problems.push(invalid(format!(
                    "it is an {} source asset, so it cannot have an automation condition: \
                     dagrs does not materialize it; put the condition on what depends on it",
                    spec.kind
                )));
            } else if let Some(reason) = condition.problem() {
                problems.push(invalid(format!(
                    "its automation condition is invalid: {reason}"
                )));
            }
        }
        for input in &spec.needs.inputs {
            if graph
                .get(&input.key)
                .is_some_and(|up| up.kind == AssetKind::External)
            {
                problems.push(invalid(format!(
                    "it takes the output of `{}`, an external asset that has none; depend on \
                     it with `deps = [...]` instead",
                    input.key
                )));
            }
        }
    }
    problems
}

/// Checks partitions: every definition valid, `Partition<T>` taken only by partitioned
/// assets, and every dependency between partitioned assets mapped (explicitly or by default)
/// with a mapping that fits.
fn check_partitions(graph: &AssetGraph) -> Vec<Problem> {
    let mut problems = Vec::new();
    for spec in &graph.assets {
        let invalid = |reason: String| Problem::InvalidPartitions {
            asset: spec.key.to_string(),
            reason,
        };
        let own = spec.partitions.as_ref();
        if let Some(problem) = own.and_then(PartitionsDefinition::problem) {
            problems.push(invalid(format!("its partitions are invalid: {problem}")));
            continue;
        }
        if let (Some(param), None) = (spec.needs.partition, own) {
            problems.push(invalid(format!(
                "it takes a `Partition<{}>` but is not partitioned; add `partitions = ...` to \
                 `#[asset]`",
                param.rsplit("::").next().unwrap_or(param)
            )));
        }
        for (dep, _) in &spec.mappings {
            if !spec.deps.contains(dep) {
                problems.push(invalid(format!(
                    "it maps the partitions of `{dep}`, which is not one of its dependencies"
                )));
            }
        }
        for dep in &spec.deps {
            let Some(up) = graph.get(dep).and_then(|d| d.partitions.as_ref()) else {
                if spec.mapping_for(dep).is_some() && graph.get(dep).is_some() {
                    problems.push(invalid(format!(
                        "it maps the partitions of `{dep}`, which is not partitioned"
                    )));
                }
                continue;
            };
            if up.problem().is_some() {
                continue; // reported on `dep` itself
            }
            let problem = match spec.mapping_for(dep) {
                Some(mapping) => mapping.problem(own, up),
                None => PartitionMapping::default_for(own, up).err().map(|why| {
                    format!(
                        "{why}; say which partitions of `{dep}` each of its partitions needs: \
                         `mappings({dep} = PartitionMapping::...)` (All, LastN, Static, ...)"
                    )
                }),
            };
            if let Some(problem) = problem {
                problems.push(invalid(format!(
                    "its partitions do not fit those of `{dep}`: {problem}"
                )));
            }
        }
    }
    problems
}

/// Checks jobs, schedules, sensors and hooks against the (valid) asset graph: names unique,
/// jobs' selections and config valid, schedules' expressions, time zones and jobs valid,
/// sensors' jobs and assets known, every resource they take provided.
fn check_automation(
    graph: &AssetGraph,
    resources: &Resources,
    defaults: &RunConfig,
    jobs: &[AssetJob],
    schedules: &[Schedule],
    sensors: &[Sensor],
    hooks: &[Hook],
) -> Vec<Problem> {
    let mut problems = Vec::new();
    let names = |kind: &'static str, names: Vec<&str>, problems: &mut Vec<Problem>| {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for name in names {
            *counts.entry(name).or_default() += 1;
        }
        for (name, count) in counts.into_iter().filter(|(_, n)| *n > 1) {
            problems.push(Problem::DuplicateName {
                kind,
                name: name.to_owned(),
                count,
            });
        }
    };
    names(
        "job",
        jobs.iter().map(|j| j.name.as_str()).collect(),
        &mut problems,
    );
    let instigators = schedules.iter().map(|s| s.name.as_str());
    let instigators = instigators.chain(sensors.iter().map(|s| s.name.as_str()));
    names("schedule or sensor", instigators.collect(), &mut problems);
    let job_names = || jobs.iter().map(|j| j.name.as_str());
    let unknown_job = |job: &str| {
        format!(
            "its job `{job}` is not defined{}; add it with `Definitions::builder().job(...)`",
            Hint::closest(job, job_names())
        )
    };
    let missing = |needs: &crate::requirements::Requirements| -> Vec<&'static str> {
        let nothing = |_: &AssetKey| Supply::Unchecked;
        let provided = Provided {
            by: Provider::Definitions,
            resources: Some(resources),
            inputs: &nothing,
            config: ConfigSupply::Unchecked,
        };
        match needs.check("", &provided) {
            Ok(_) => Vec::new(),
            Err(found) => found
                .into_iter()
                .filter_map(|p| match p {
                    Problem::MissingResource { resource, .. } => Some(resource),
                    _ => None,
                })
                .collect(),
        }
    };
    for job in jobs {
        let invalid = |reason: String| Problem::InvalidJob {
            job: job.name.clone(),
            reason,
        };
        if job.name.is_empty() || !AssetKey::is_valid(&job.name) {
            problems.push(invalid(
                "job names are non-empty and use only letters, digits, `_`, `-`, `.` and `/`"
                    .into(),
            ));
        }
        let selected = match selection::resolve(graph, &job.selection) {
            Ok(selected) => selected,
            Err(e) => {
                problems.push(invalid(e.to_string()));
                continue;
            }
        };
        let config = job.config.merged_over(defaults);
        for key in job.config.assets.keys().chain(job.config.retries.keys()) {
            if !graph.index.contains_key(key.as_str()) {
                problems.push(invalid(format!(
                    "its config names `{}`, which is not an asset{}",
                    crate::text::bounded(key, crate::text::ECHO_LIMIT),
                    Hint::closest(key, graph.keys())
                )));
            }
        }
        for &i in &selected {
            let spec = &graph.assets[i];
            let Some(value) = config.get(&spec.key) else {
                continue;
            };
            let nothing = |_: &AssetKey| Supply::Unchecked;
            let provided = Provided {
                by: Provider::Definitions,
                resources: None,
                inputs: &nothing,
                config: ConfigSupply::Given(value),
            };
            if let Err(found) = spec.needs.check(&spec.key, &provided) {
                problems.extend(found.into_iter().map(|p| invalid(p.to_string())));
            }
        }
        for hook in &job.hooks {
            for resource in missing(&hook.callback.needs) {
                problems.push(Problem::HookResource {
                    hook: hook.name.clone(),
                    resource,
                });
            }
        }
    }
    let all_hooks = graph.assets.iter().flat_map(|spec| spec.hooks.iter());
    for hook in hooks.iter().chain(all_hooks) {
        for resource in missing(&hook.callback.needs) {
            problems.push(Problem::HookResource {
                hook: hook.name.clone(),
                resource,
            });
        }
    }
    for schedule in schedules {
        let invalid = |reason: String| Problem::InvalidSchedule {
            schedule: schedule.name.clone(),
            reason,
        };
        if let Some(reason) = schedule.problem() {
            problems.push(invalid(reason));
        }
        match jobs.iter().find(|job| job.name == schedule.job) {
            None => problems.push(invalid(unknown_job(&schedule.job))),
            Some(job) if schedule.last_partition => {
                let keys = selection::resolve(graph, &job.selection).unwrap_or_default();
                let specs = keys.iter().map(|&i| &graph.assets[i]);
                let problem = match crate::partition::shared(specs) {
                    Err(reason) => Some(reason),
                    Ok(None) => Some(format!(
                        "it fills the last partition, but job `{}` selects no partitioned \
                         asset",
                        job.name
                    )),
                    Ok(Some(def))
                        if def.time_windows().is_none() || def.dimension_names().count() > 1 =>
                    {
                        Some(
                            "it fills the last partition, but the job's partitions are not \
                              time windows alone"
                                .into(),
                        )
                    }
                    Ok(Some(_)) => None,
                };
                problems.extend(problem.map(invalid));
            }
            Some(_) => {}
        }
    }
    for sensor in sensors {
        let invalid = |reason: String| Problem::InvalidSensor {
            sensor: sensor.name.clone(),
            reason,
        };
        if let Some(job) = &sensor.job {
            if !jobs.iter().any(|j| &j.name == job) {
                problems.push(invalid(unknown_job(job)));
            }
        }
        match &sensor.kind {
            SensorKind::Asset(assets) => {
                if sensor.job.is_none() {
                    problems.push(invalid(
                        "an asset sensor needs a job to run: `.job(\"...\")`".into(),
                    ));
                }
                for asset in assets {
                    if !graph.index.contains_key(asset) {
                        problems.push(invalid(format!(
                            "it watches `{asset}`, which is not an asset{}",
                            Hint::closest(asset, graph.keys())
                        )));
                    }
                }
            }
            SensorKind::RunStatus { status, of_job, .. } => {
                if !status.is_final() {
                    problems.push(invalid(format!(
                        "it watches runs that end as `{status}`, which is not an end; watch \
                         `succeeded`, `failed` or `cancelled`"
                    )));
                }
                if let Some(job) = of_job {
                    if !jobs.iter().any(|j| &j.name == job) {
                        problems.push(invalid(unknown_job(job)));
                    }
                }
            }
            SensorKind::Function(_) => {}
        }
        for resource in sensor.needs().map(missing).unwrap_or_default() {
            problems.push(invalid(format!(
                "it needs resource `{resource}`, which was not provided; add it with \
                 `Definitions::builder().resource(...)`"
            )));
        }
    }
    problems
}
