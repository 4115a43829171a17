//! Multi-assets: one function that materializes several assets at once. [`MultiAssetSpec`]
//! is the runtime description (built by `#[multi_asset]`, or by hand), which turns into one
//! [`AssetSpec`] per out: each out is an asset of its own in the graph (its own key, group,
//! selection, history and staleness), and the executor runs the function once for all the
//! outs a run selects.

use std::any::TypeId;
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::asset::{AssetSpec, AssetValue, StepOutput};
use crate::error::Problem;
use crate::graph::AssetGraph;
use crate::hook::Hook;
use crate::key::AssetKey;
use crate::requirements::Requirements;
use crate::retry::Retry;
use crate::scope::StepScope;

/// A multi-asset defined with `#[multi_asset]`: the macro emits a marker type named like the
/// function and implements this trait for it, so that [`assets!`](crate::assets) and
/// [`DefinitionsBuilder::multi_asset`](crate::DefinitionsBuilder::multi_asset) register
/// every out at once. Each out has a marker of its own that implements
/// [`Asset`](crate::Asset).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a multi-asset",
    label = "not a multi-asset",
    note = "name a function marked with `#[multi_asset]`"
)]
pub trait MultiAsset: 'static {
    /// The multi-asset's name (its function's name).
    const NAME: &'static str;
    /// The multi-asset's runtime description.
    fn multi_spec() -> MultiAssetSpec;
    /// The specs of its outs, one per out, for [`DefinitionsBuilder::specs`](crate::DefinitionsBuilder::specs).
    fn specs() -> Vec<AssetSpec> {
        Self::multi_spec().into_specs()
    }
}

/// What [`assets!`](crate::assets) accepts: an asset (through a blanket impl for every
/// [`Asset`](crate::Asset)) or a multi-asset (implemented by `#[multi_asset]`).
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an asset or a multi-asset",
    label = "not an asset",
    note = "name a function marked with `#[asset]` or `#[multi_asset]`"
)]
pub trait IntoSpecs {
    /// The specs it registers.
    fn into_specs() -> Vec<AssetSpec>;
}

#[diagnostic::do_not_recommend]
impl<A: crate::Asset> IntoSpecs for A {
    fn into_specs() -> Vec<AssetSpec> {
        vec![A::spec()]
    }
}

/// The values a multi-asset's function produced, one per out key; what its compute function
/// returns. An out the run did not select may be left out (with `can_subset`).
#[derive(Default)]
pub struct MultiOutputs {
    values: std::collections::HashMap<AssetKey, (TypeId, &'static str, StepOutput)>,
}

impl MultiOutputs {
    /// No values yet.
    pub fn new() -> Self {
        MultiOutputs::default()
    }

    /// Sets the value of out `key`; fails when the value cannot be serialized.
    pub fn set<T: AssetValue>(&mut self, key: impl Into<AssetKey>, value: T) -> anyhow::Result<()> {
        let key = key.into();
        let json = serde_json::to_value(&value)
            .map_err(|e| anyhow::anyhow!("the value of out `{key}` cannot be serialized: {e}"))?;
        let output = StepOutput {
            value: Arc::new(value),
            json,
        };
        let type_name = std::any::type_name::<T>();
        self.values
            .insert(key, (TypeId::of::<T>(), type_name, output));
        Ok(())
    }

    /// Sets the value of out `key` and returns the outputs, for chaining.
    pub fn with<T: AssetValue>(
        mut self,
        key: impl Into<AssetKey>,
        value: T,
    ) -> anyhow::Result<Self> {
        self.set(key, value)?;
        Ok(self)
    }

    /// Whether out `key` has a value.
    pub fn contains(&self, key: &str) -> bool {
        self.values.contains_key(key)
    }

    /// Takes the value of out `key`, checking that it has the type `expected` (id and name).
    pub(crate) fn take(
        &mut self,
        multi: &str,
        key: &AssetKey,
        expected: (TypeId, &'static str),
    ) -> anyhow::Result<Option<StepOutput>> {
        let Some((id, name, output)) = self.values.remove(key) else {
            return Ok(None);
        };
        if id != expected.0 {
            anyhow::bail!(
                "multi-asset `{multi}` returned a `{name}` for out `{key}`, which produces `{}`",
                expected.1
            );
        }
        Ok(Some(output))
    }
}

impl fmt::Debug for MultiOutputs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.values.iter().map(|(k, (_, name, _))| (k, name)))
            .finish()
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
pub(crate) type MultiCompute =
    Arc<dyn Fn(StepScope) -> BoxFuture<anyhow::Result<MultiOutputs>> + Send + Sync>;

/// One out of a multi-asset: its key, output type and own attributes. Unset attributes are
/// the multi-asset's.
pub struct AssetOut {
    name: String,
    spec: AssetSpec,
    group: Option<String>,
    description: Option<String>,
    code_version: Option<String>,
    tags: BTreeMap<String, String>,
}

impl AssetOut {
    /// An out with key `key` producing `T`.
    pub fn new<T: AssetValue>(key: impl Into<AssetKey>) -> Self {
        let key = key.into();
        // The compute function is the multi-asset's, set when the out is added to it.
        let spec = AssetSpec::new::<T, _, _>(key.clone(), |_| async {
            anyhow::bail!("an out is computed by its multi-asset")
        });
        AssetOut {
            name: key.to_string(),
            spec,
            group: None,
            description: None,
            code_version: None,
            tags: BTreeMap::new(),
        }
    }

    /// The name the function knows the out by (default: its key), as
    /// [`AssetContext::is_selected`](crate::AssetContext::is_selected) accepts it.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Puts the out into a group of its own (default: the multi-asset's).
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Sets the out's description (default: the multi-asset's).
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = Some(text.into());
        self
    }

    /// Sets the out's code version (default: the multi-asset's).
    pub fn code_version(mut self, version: impl Into<String>) -> Self {
        self.code_version = Some(version.into());
        self
    }

    /// Adds a tag to the out, besides the multi-asset's.
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(key.into(), value.into());
        self
    }

    /// The out's key.
    pub fn key(&self) -> &AssetKey {
        &self.spec.key
    }
}

impl fmt::Debug for AssetOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AssetOut")
            .field("name", &self.name)
            .field("key", &self.spec.key)
            .field("output", &self.spec.output_type.1)
            .finish_non_exhaustive()
    }
}

/// What the outs of one multi-asset share: its name, its outs and its function. Every out's
/// [`AssetSpec`] points to it; the executor runs `compute` once for the outs selected.
pub(crate) struct MultiInfo {
    pub(crate) name: String,
    /// Name and key of each out, in declaration order.
    pub(crate) outs: Vec<(String, AssetKey)>,
    pub(crate) can_subset: bool,
    pub(crate) compute: MultiCompute,
}

impl MultiInfo {
    /// The out's name of `key`.
    pub(crate) fn out_name(&self, key: &AssetKey) -> Option<&str> {
        self.outs
            .iter()
            .find(|(_, k)| k == key)
            .map(|(name, _)| name.as_str())
    }
}

impl fmt::Debug for MultiInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MultiInfo")
            .field("name", &self.name)
            .field("outs", &self.outs)
            .field("can_subset", &self.can_subset)
            .finish_non_exhaustive()
    }
}

/// The runtime description of a multi-asset: one function that materializes several assets,
/// its outs. `#[multi_asset]` builds one for each function; build one by hand for shapes only
/// known at run time. Its [`into_specs`](Self::into_specs) are registered like any asset's.
///
/// Every out depends on what the function depends on. Without
/// [`can_subset`](Self::can_subset), selecting any out selects them all; with it, a run
/// materializes only the outs it selects, and the function learns which from
/// [`AssetContext::selected_outputs`](crate::AssetContext::selected_outputs).
///
/// ```
/// use dagrs_core::{materialize, AssetOut, Definitions, MultiAssetSpec, MultiOutputs, RunConfig};
///
/// let split = MultiAssetSpec::new("split", |scope| async move {
///     let mut outs = MultiOutputs::new();
///     for key in scope.context().selected_outputs() {
///         outs.set(key.clone(), key.len())?;
///     }
///     Ok(outs)
/// })
/// .out(AssetOut::new::<usize>("left"))
/// .out(AssetOut::new::<usize>("right_side"))
/// .can_subset(true);
/// let defs = Definitions::builder().specs(split.into_specs()).build().unwrap();
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let result = materialize(&defs, "right_side", RunConfig::new()).await.unwrap();
/// assert_eq!(result.output_value("right_side").and_then(|v| v.as_u64()), Some(10));
/// assert_eq!(result.output_value("left"), None);
/// # });
/// ```
pub struct MultiAssetSpec {
    name: String,
    outs: Vec<AssetOut>,
    can_subset: bool,
    deps: Vec<AssetKey>,
    group: Option<String>,
    pool: Option<String>,
    tags: BTreeMap<String, String>,
    description: Option<String>,
    code_version: Option<String>,
    retry: Retry,
    timeout: Option<Duration>,
    hooks: Vec<Hook>,
    needs: Requirements,
    compute: MultiCompute,
}

impl MultiAssetSpec {
    /// A multi-asset named `name` computed by `compute`, which gets the step's
    /// [`StepScope`] and returns a value for each selected out.
    pub fn new<F, Fut>(name: impl Into<String>, compute: F) -> Self
    where
        F: Fn(StepScope) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<MultiOutputs>> + Send + 'static,
    {
        let compute: MultiCompute = Arc::new(move |scope| Box::pin(compute(scope)));
        MultiAssetSpec {
            name: name.into(),
            outs: Vec::new(),
            can_subset: false,
            deps: Vec::new(),
            group: None,
            pool: None,
            tags: BTreeMap::new(),
            description: None,
            code_version: None,
            retry: Retry::none(),
            timeout: None,
            hooks: Vec::new(),
            needs: Requirements::default(),
            compute,
        }
    }

    /// Adds an out.
    pub fn out(mut self, out: AssetOut) -> Self {
        self.outs.push(out);
        self
    }

    /// Whether a run may materialize some of the outs only (default: no, selecting one
    /// selects all).
    pub fn can_subset(mut self, can_subset: bool) -> Self {
        self.can_subset = can_subset;
        self
    }

    /// Adds a dependency, shared by every out.
    pub fn dep(mut self, key: impl Into<AssetKey>) -> Self {
        let key = key.into();
        if !self.deps.contains(&key) {
            self.deps.push(key);
        }
        self
    }

    /// Puts every out into a group (an out may name its own).
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Puts the function's step into concurrency pool `name` (see [`AssetSpec::pool`]):
    /// each attempt of the function, which materializes all the selected outs, takes one
    /// slot.
    pub fn pool(mut self, name: impl Into<String>) -> Self {
        self.pool = Some(name.into());
        self
    }

    /// Adds a tag to every out.
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(key.into(), value.into());
        self
    }

    /// Sets the description of every out (an out may have its own).
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = Some(text.into());
        self
    }

    /// Sets the code version of every out (an out may have its own).
    pub fn code_version(mut self, version: impl Into<String>) -> Self {
        self.code_version = Some(version.into());
        self
    }

    /// Sets the retry policy of the function.
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    /// Fails an attempt of the function that runs longer than `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Adds a hook, run after the step for each out.
    pub fn hook(mut self, hook: Hook) -> Self {
        self.hooks.push(hook);
        self
    }

    /// Declares what the compute function needs (resources, config, inputs); inputs become
    /// dependencies of every out. Its config is given under the first out's key.
    pub fn needs(mut self, declare: impl FnOnce(&mut Requirements)) -> Self {
        declare(&mut self.needs);
        let inputs: Vec<AssetKey> = self.needs.inputs.iter().map(|i| i.key.clone()).collect();
        for key in inputs {
            self = self.dep(key);
        }
        self
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The keys of its outs, in order.
    pub fn out_keys(&self) -> impl Iterator<Item = &AssetKey> + '_ {
        self.outs.iter().map(AssetOut::key)
    }

    /// One spec per out, sharing the function: what [`Definitions`](crate::Definitions)
    /// register. Run on its own (e.g. by
    /// [`AssetContextBuilder::invoke`](crate::AssetContextBuilder::invoke)), an out's spec
    /// runs the function with only that out selected.
    pub fn into_specs(self) -> Vec<AssetSpec> {
        let info = Arc::new(MultiInfo {
            name: self.name,
            outs: self
                .outs
                .iter()
                .map(|out| (out.name.clone(), out.spec.key.clone()))
                .collect(),
            can_subset: self.can_subset,
            compute: self.compute,
        });
        let mut specs = Vec::with_capacity(self.outs.len());
        for out in self.outs {
            let mut spec = out.spec;
            spec.deps = self.deps.clone();
            spec.group = out.group.or_else(|| self.group.clone());
            spec.pool = self.pool.clone();
            spec.tags = self.tags.clone();
            spec.tags.extend(out.tags);
            spec.description = out.description.or_else(|| self.description.clone());
            spec.code_version = out.code_version.or_else(|| self.code_version.clone());
            spec.retry = self.retry.clone();
            spec.timeout = self.timeout;
            spec.hooks = self.hooks.clone();
            spec.needs = self.needs.clone();
            spec.compute = out_compute(Arc::clone(&info), spec.key.clone(), spec.output_type);
            spec.multi = Some(Arc::clone(&info));
            specs.push(spec);
        }
        specs
    }

    /// The spec of out `key` alone (what an out's marker registers).
    pub fn out_spec(self, key: &str) -> AssetSpec {
        let name = self.name.clone();
        self.into_specs()
            .into_iter()
            .find(|spec| spec.key.as_str() == key)
            .unwrap_or_else(|| panic!("multi-asset `{name}` has no out `{key}`"))
    }
}

impl fmt::Debug for MultiAssetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MultiAssetSpec")
            .field("name", &self.name)
            .field("outs", &self.outs)
            .field("can_subset", &self.can_subset)
            .field("deps", &self.deps)
            .finish_non_exhaustive()
    }
}

/// The compute function of one out run alone: the multi-asset's, with only that out selected.
fn out_compute(
    info: Arc<MultiInfo>,
    key: AssetKey,
    output_type: (TypeId, &'static str),
) -> crate::asset::Compute {
    Arc::new(move |mut scope: StepScope| {
        let info = Arc::clone(&info);
        let key = key.clone();
        Box::pin(async move {
            let name = info.out_name(&key).unwrap_or(key.as_str()).to_owned();
            scope.context = scope
                .context
                .with_selection(Some(Arc::new([(name, key.clone())])));
            let mut outputs = (info.compute)(scope).await?;
            outputs.take(&info.name, &key, output_type)?.ok_or_else(|| {
                anyhow::anyhow!(
                    "multi-asset `{}` returned no value for selected out `{key}`",
                    info.name
                )
            })
        })
    })
}

/// Adds to `selected` (indices in topological order) every out of the multi-assets it
/// selects some outs of and that cannot be subset; the order stays topological.
pub(crate) fn expand_selection(graph: &AssetGraph, selected: Vec<usize>) -> Vec<usize> {
    let mut marks = vec![false; graph.assets.len()];
    for &i in &selected {
        marks[i] = true;
    }
    let mut added = false;
    let mut seen = std::collections::HashSet::new();
    for &i in &selected {
        let Some(info) = graph.assets[i].multi.as_ref().filter(|m| !m.can_subset) else {
            continue;
        };
        if !seen.insert(Arc::as_ptr(info)) {
            continue;
        }
        for sibling in siblings(graph, info) {
            if !marks[sibling] {
                marks[sibling] = true;
                added = true;
            }
        }
    }
    if !added {
        return selected;
    }
    graph.order.iter().copied().filter(|&i| marks[i]).collect()
}

/// The indices of the outs of `info` registered in `graph`.
pub(crate) fn siblings<'a>(
    graph: &'a AssetGraph,
    info: &'a Arc<MultiInfo>,
) -> impl Iterator<Item = usize> + 'a {
    info.outs.iter().filter_map(move |(_, key)| {
        let &i = graph.index.get(key)?;
        let same = graph.assets[i]
            .multi
            .as_ref()
            .is_some_and(|m| Arc::ptr_eq(m, info));
        same.then_some(i)
    })
}

/// Checks that a `#[multi_asset]` function returns `Result<Outs, E>`; used by the code the
/// macro generates, which names the outs' types in `Outs`.
#[diagnostic::on_unimplemented(
    message = "this multi-asset function must return `Result<{Outs}>`, one value per out in order",
    label = "does not match the declared outs",
    note = "the tuple holds one value per out of `outs(...)`, in order; with `can_subset = true`, each is an `Option`",
    note = "the error type must convert into `anyhow::Error`, as any `std::error::Error + Send + Sync + 'static` does"
)]
pub trait IntoMultiResult<Outs> {
    /// Converts the function's return value.
    fn into_multi_result(self) -> anyhow::Result<Outs>;
}

#[diagnostic::do_not_recommend]
impl<Outs, E: Into<anyhow::Error>> IntoMultiResult<Outs> for Result<Outs, E> {
    fn into_multi_result(self) -> anyhow::Result<Outs> {
        self.map_err(Into::into)
    }
}

impl AssetSpec {
    /// The key its config is given under: its own, or for an out of a multi-asset, the first
    /// out's (the function's config is one value).
    pub(crate) fn config_key(&self) -> &AssetKey {
        match self.multi.as_deref().and_then(|m| m.outs.first()) {
            Some((_, first)) => first,
            None => &self.key,
        }
    }
}

/// The first out met of each multi-asset: it checks the needs that the outs share, so that
/// checking them again does not repeat the problems.
#[derive(Default)]
/// Keyed by the address of the multi-asset's shared info (an integer, so plans stay `Send`).
pub(crate) struct Leads(std::collections::HashMap<usize, usize>);

impl Leads {
    /// `None` for an asset, or the first out of its multi-asset met so far: `at` (given for
    /// it) when `spec` is the first, else what was given for the first.
    pub(crate) fn lead(&mut self, spec: &AssetSpec, at: usize) -> Option<usize> {
        let info = spec.multi.as_ref()?;
        Some(*self.0.entry(Arc::as_ptr(info) as usize).or_insert(at))
    }
}

/// The problem with `spec`, an out of a multi-asset, when it does not fit the first out met
/// (whose lead `leads` knows): every out has the function's dependencies, and none is
/// partitioned.
pub(crate) fn check_out(assets: &[AssetSpec], leads: &Leads, spec: &AssetSpec) -> Option<Problem> {
    let info = spec.multi.as_ref()?;
    let invalid = |reason: String| Problem::InvalidMultiAsset {
        multi_asset: info.name.clone(),
        reason,
    };
    if spec.partitions.is_some() {
        return Some(invalid(format!(
            "its out `{}` is partitioned, which multi-assets cannot be yet",
            spec.key
        )));
    }
    let lead = &assets[*leads.0.get(&(Arc::as_ptr(info) as usize))?];
    let mut own: Vec<&AssetKey> = spec.deps.iter().collect();
    let mut shared: Vec<&AssetKey> = lead.deps.iter().collect();
    own.sort();
    shared.sort();
    let list = |keys: &[&AssetKey]| {
        if keys.is_empty() {
            "nothing".to_owned()
        } else {
            crate::text::bounded_list(keys.iter().map(|k| format!("`{k}`")), ", ")
        }
    };
    (own != shared).then(|| {
        invalid(format!(
            "its out `{}` depends on {}, its out `{}` on {}; every out depends on what the \
             function depends on",
            spec.key,
            list(&own),
            lead.key,
            list(&shared),
        ))
    })
}

/// What defines `key` among `assets`, for a duplicate key: empty unless a multi-asset does.
pub(crate) fn defined_by(assets: &[AssetSpec], key: &AssetKey) -> Vec<String> {
    let by: Vec<&AssetSpec> = assets.iter().filter(|s| s.key == *key).collect();
    if by.iter().all(|s| s.multi.is_none()) {
        return Vec::new();
    }
    by.iter()
        .map(|s| match s.multi.as_deref() {
            Some(m) => format!("multi-asset `{}`", m.name),
            None => format!("asset `{}`", s.key),
        })
        .collect()
}

/// The output type of a `#[multi_asset]` out, checked once: the code the macro generates
/// names an out's type through this trait, so a type that cannot be an output is one error at
/// the out rather than one per place that uses it.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be an asset's output",
    label = "not an asset output",
    note = "asset outputs must implement `serde::Serialize` and `serde::de::DeserializeOwned` and be `Send + Sync + 'static`"
)]
pub trait OutValue {
    /// The type itself.
    type Output: AssetValue;
}

#[diagnostic::do_not_recommend]
impl<T: AssetValue> OutValue for T {
    type Output = T;
}
