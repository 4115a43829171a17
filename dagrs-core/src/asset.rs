//! What an asset is: the [`Asset`] trait the macro implements, and [`AssetSpec`], the
//! runtime description every asset (macro-made or built by hand) turns into.

use std::any::TypeId;
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::automation::AutomationCondition;
use crate::backfill::BackfillPolicy;
use crate::hook::Hook;
use crate::key::AssetKey;
use crate::partition::{PartitionMapping, PartitionsDefinition};
use crate::requirements::Requirements;
use crate::retry::Retry;
use crate::scope::{Shared, StepScope};
use crate::source::{AssetKind, DataVersion};

/// An asset defined with `#[asset]`: the macro emits a marker type named like the function
/// and implements this trait for it, so the asset can be named in `deps = [...]`,
/// [`Input<A>`](crate::Input), [`DefinitionsBuilder::asset`](crate::DefinitionsBuilder::asset)
/// and [`RunResult::output`](crate::RunResult::output).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an asset",
    label = "not an asset",
    note = "name a function marked with `#[asset]`, or use a string key for assets defined elsewhere"
)]
pub trait Asset: 'static {
    /// The value the asset produces (its function's `Ok` type).
    type Output: AssetValue;
    /// The asset's key.
    const KEY: &'static str;
    /// The asset's runtime description.
    fn spec() -> AssetSpec;
}

/// A value an asset can produce: it is handed to downstream assets in memory and recorded,
/// serialized, in the event log, so it must be `Serialize + DeserializeOwned`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be an asset's output",
    note = "asset outputs must implement `serde::Serialize` and `serde::de::DeserializeOwned` and be `Send + Sync + 'static`"
)]
pub trait AssetValue: Serialize + DeserializeOwned + Send + Sync + 'static {}

#[diagnostic::do_not_recommend]
impl<T: Serialize + DeserializeOwned + Send + Sync + 'static> AssetValue for T {}

/// What an asset function may return: `Result<T, E>` with `E` convertible into
/// [`anyhow::Error`] (any `std::error::Error + Send + Sync + 'static`), or `()`.
#[diagnostic::on_unimplemented(
    message = "an asset function cannot return `{Self}`",
    label = "not an asset function's return type",
    note = "asset functions return `Result<T, E>` (e.g. `dagrs_core::prelude::Result<T>`) or nothing",
    note = "`T` is the asset's output: it must implement `serde::Serialize` and `serde::de::DeserializeOwned` and be `Send + Sync + 'static`",
    note = "`E` must convert into `anyhow::Error`, as any `std::error::Error + Send + Sync + 'static` does"
)]
pub trait IntoAssetResult {
    /// The produced value.
    type Output: AssetValue;
    /// Converts the function's return value.
    fn into_asset_result(self) -> anyhow::Result<Self::Output>;
}

#[diagnostic::do_not_recommend]
impl<T: AssetValue, E: Into<anyhow::Error>> IntoAssetResult for Result<T, E> {
    type Output = T;
    fn into_asset_result(self) -> anyhow::Result<T> {
        self.map_err(Into::into)
    }
}

#[diagnostic::do_not_recommend]
impl IntoAssetResult for () {
    type Output = ();
    fn into_asset_result(self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// The output of one successful attempt, type-erased.
pub(crate) struct StepOutput {
    pub(crate) value: Shared,
    pub(crate) json: serde_json::Value,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
pub(crate) type Compute =
    Arc<dyn Fn(StepScope) -> BoxFuture<anyhow::Result<StepOutput>> + Send + Sync>;

/// The runtime description of an asset: its key, dependencies, attributes and the function
/// that computes it.
///
/// `#[asset]` builds one for each function; build one by hand for assets whose shape is only
/// known at run time:
///
/// ```
/// use dagrs_core::{AssetSpec, Definitions};
///
/// let specs = (0..3).map(|i| {
///     AssetSpec::new(format!("part_{i}"), move |_scope| async move { Ok(i * 10) })
/// });
/// let defs = Definitions::builder().specs(specs).build().unwrap();
/// assert_eq!(defs.assets().count(), 3);
/// ```
#[derive(Clone)]
pub struct AssetSpec {
    pub(crate) key: AssetKey,
    pub(crate) deps: Vec<AssetKey>,
    pub(crate) group: Option<String>,
    /// The concurrency pool its steps take a slot of, if any.
    pub(crate) pool: Option<String>,
    pub(crate) tags: BTreeMap<String, String>,
    pub(crate) description: Option<String>,
    pub(crate) code_version: Option<String>,
    pub(crate) retry: Retry,
    pub(crate) timeout: Option<Duration>,
    pub(crate) hooks: Vec<Hook>,
    pub(crate) partitions: Option<PartitionsDefinition>,
    pub(crate) mappings: Vec<(AssetKey, PartitionMapping)>,
    pub(crate) backfill_policy: Option<BackfillPolicy>,
    pub(crate) needs: Requirements,
    pub(crate) kind: AssetKind,
    pub(crate) automation: Option<AutomationCondition>,
    pub(crate) compute: Compute,
    pub(crate) output_type: (TypeId, &'static str),
    pub(crate) decode_output: fn(serde_json::Value) -> Result<Shared, String>,
    /// The multi-asset it is an out of, if any.
    pub(crate) multi: Option<Arc<crate::multi::MultiInfo>>,
}

impl AssetSpec {
    /// An asset named `key` computed by `compute`, which gets the step's [`StepScope`]
    /// (context, resources, config, inputs) and returns the asset's value.
    pub fn new<T, F, Fut>(key: impl Into<AssetKey>, compute: F) -> Self
    where
        T: AssetValue,
        F: Fn(StepScope) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
    {
        fn decode<T: AssetValue>(value: serde_json::Value) -> Result<Shared, String> {
            serde_json::from_value::<T>(value)
                .map(|v| Arc::new(v) as Shared)
                .map_err(|e| e.to_string())
        }
        let compute = Arc::new(move |scope: StepScope| {
            let fut = compute(scope);
            Box::pin(async move {
                let value = fut.await?;
                let json = serde_json::to_value(&value)?;
                Ok(StepOutput {
                    value: Arc::new(value),
                    json,
                })
            }) as BoxFuture<anyhow::Result<StepOutput>>
        });
        AssetSpec {
            key: key.into(),
            deps: Vec::new(),
            group: None,
            pool: None,
            tags: BTreeMap::new(),
            description: None,
            code_version: None,
            retry: Retry::none(),
            timeout: None,
            hooks: Vec::new(),
            partitions: None,
            mappings: Vec::new(),
            backfill_policy: None,
            needs: Requirements::default(),
            kind: AssetKind::Materializable,
            automation: None,
            compute,
            output_type: (TypeId::of::<T>(), std::any::type_name::<T>()),
            decode_output: decode::<T>,
            multi: None,
        }
    }

    /// An external asset named `key`: written by something else, declared so that assets can
    /// depend on it and lineage starts at the real source. dagrs never selects or runs it.
    ///
    /// ```
    /// use dagrs_core::{AssetSpec, Definitions};
    ///
    /// let defs = Definitions::builder()
    ///     .spec(AssetSpec::external("influx/readings").description("InfluxDB measurement"))
    ///     .spec(AssetSpec::new("copied", |_scope| async { Ok(1) }).dep("influx/readings"))
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(defs.select("*").unwrap(), ["copied"]);
    /// ```
    pub fn external(key: impl Into<AssetKey>) -> Self {
        let key = key.into();
        let message = format!("`{key}` is an external asset: dagrs never materializes it");
        let mut spec = AssetSpec::new(key, move |_scope| {
            let message = message.clone();
            async move { Err::<(), _>(anyhow::anyhow!(message)) }
        });
        spec.kind = AssetKind::External;
        spec
    }

    /// An observable source asset named `key`: written by something else; when selected,
    /// `observe` reads its [`DataVersion`], and a version that differs from the last one
    /// recorded counts as an update, so what depends on it becomes stale (and `eager`
    /// automation runs it). `#[observable_source_asset]` builds one from a function.
    pub fn observable<F, Fut>(key: impl Into<AssetKey>, observe: F) -> Self
    where
        F: Fn(StepScope) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<DataVersion>> + Send + 'static,
    {
        let mut spec = AssetSpec::new(key, observe);
        spec.kind = AssetKind::Observable;
        spec
    }

    /// Lets the daemon materialize the asset when `condition` holds (see
    /// [`automation`](crate::automation)).
    pub fn automation(mut self, condition: AutomationCondition) -> Self {
        self.automation = Some(condition);
        self
    }

    /// Its kind: materializable, external or observable.
    pub fn kind(&self) -> AssetKind {
        self.kind
    }

    /// Its automation condition, if any.
    pub fn automation_condition(&self) -> Option<&AutomationCondition> {
        self.automation.as_ref()
    }

    /// Adds a dependency on the asset with key `key`.
    pub fn dep(mut self, key: impl Into<AssetKey>) -> Self {
        let key = key.into();
        if !self.deps.contains(&key) {
            self.deps.push(key);
        }
        self
    }

    /// Puts the asset into a group (used by `group:name` selections).
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Puts the asset's steps into concurrency pool `name`: each attempt takes one of the
    /// pool's slots, so an [`Instance`](crate::Instance) with
    /// [`with_pool_limit`](crate::Instance::with_pool_limit) runs at most that many steps of
    /// the pool at once, across all its runs. A pool the instance does not limit is unlimited.
    /// Names are non-empty, at most 255 bytes, with no control characters (checked by
    /// [`DefinitionsBuilder::build`](crate::DefinitionsBuilder::build)).
    ///
    /// ```
    /// use dagrs_core::AssetSpec;
    ///
    /// let spec = AssetSpec::new("load", |_scope| async { Ok(()) }).pool("warehouse");
    /// assert_eq!(spec.pool_name(), Some("warehouse"));
    /// ```
    pub fn pool(mut self, name: impl Into<String>) -> Self {
        self.pool = Some(name.into());
        self
    }

    /// Adds a tag (used by `tag:key=value` selections).
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(key.into(), value.into());
        self
    }

    /// Sets the description.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = Some(text.into());
        self
    }

    /// Sets the code version, recorded with every materialization.
    pub fn code_version(mut self, version: impl Into<String>) -> Self {
        self.code_version = Some(version.into());
        self
    }

    /// Sets the retry policy.
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    /// Adds a hook run after this asset's steps (on success or failure, as the hook says).
    pub fn hook(mut self, hook: Hook) -> Self {
        self.hooks.push(hook);
        self
    }

    /// Partitions the asset (see [`partitions`](crate::partitions)): each run materializes
    /// one partition or a range of them.
    pub fn partitions(mut self, def: impl Into<PartitionsDefinition>) -> Self {
        self.partitions = Some(def.into());
        self
    }

    /// Says which partitions of dependency `dep` each partition depends on (see
    /// [`PartitionMapping`] for the default).
    pub fn mapping(mut self, dep: impl Into<AssetKey>, mapping: PartitionMapping) -> Self {
        let dep = dep.into();
        self.mappings.retain(|(d, _)| *d != dep);
        self.mappings.push((dep, mapping));
        self
    }

    /// How backfills cut this asset's partitions into runs (default: one run per partition).
    pub fn backfill_policy(mut self, policy: BackfillPolicy) -> Self {
        self.backfill_policy = Some(policy);
        self
    }

    /// Its partitions, if it is partitioned.
    pub fn partitions_def(&self) -> Option<&PartitionsDefinition> {
        self.partitions.as_ref()
    }

    /// The mapping set for dependency `dep`, if any.
    pub fn mapping_for(&self, dep: &str) -> Option<&PartitionMapping> {
        self.mappings
            .iter()
            .find(|(d, _)| d.as_str() == dep)
            .map(|(_, m)| m)
    }

    /// Its backfill policy, if it sets one.
    pub fn backfill_policy_setting(&self) -> Option<BackfillPolicy> {
        self.backfill_policy
    }

    /// Fails an attempt that runs longer than `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Declares what the compute function needs (resources, config, inputs); inputs become
    /// dependencies.
    pub fn needs(mut self, declare: impl FnOnce(&mut Requirements)) -> Self {
        declare(&mut self.needs);
        let inputs: Vec<AssetKey> = self.needs.inputs.iter().map(|i| i.key.clone()).collect();
        for key in inputs {
            self = self.dep(key);
        }
        self
    }

    /// The asset's key.
    pub fn key(&self) -> &AssetKey {
        &self.key
    }

    /// The keys of the assets it depends on.
    pub fn deps(&self) -> &[AssetKey] {
        &self.deps
    }

    /// Its group, if any.
    pub fn group_name(&self) -> Option<&str> {
        self.group.as_deref()
    }

    /// Its concurrency pool, if any (see [`pool`](Self::pool)).
    pub fn pool_name(&self) -> Option<&str> {
        self.pool.as_deref()
    }

    /// Its tags.
    pub fn tags(&self) -> &BTreeMap<String, String> {
        &self.tags
    }

    /// Its description, if any.
    pub fn description_text(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// Its code version, if any.
    pub fn code_version_text(&self) -> Option<&str> {
        self.code_version.as_deref()
    }

    /// Its retry policy.
    pub fn retry_policy(&self) -> &Retry {
        &self.retry
    }

    /// The name of its output type.
    pub fn output_type_name(&self) -> &'static str {
        self.output_type.1
    }

    /// The name of the multi-asset it is an out of, if it is one.
    pub fn multi_asset_name(&self) -> Option<&str> {
        self.multi.as_deref().map(|m| m.name.as_str())
    }
}

impl fmt::Debug for AssetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AssetSpec")
            .field("key", &self.key)
            .field("deps", &self.deps)
            .field("group", &self.group)
            .field("pool", &self.pool)
            .field("tags", &self.tags)
            .field("retry", &self.retry)
            .field("timeout", &self.timeout)
            .field("partitions", &self.partitions)
            .field("kind", &self.kind)
            .field("automation", &self.automation)
            .field("output", &self.output_type.1)
            .finish_non_exhaustive()
    }
}

/// Runs a blocking asset body on tokio's blocking thread pool so it never stalls the async
/// workers. Used by the code `#[asset]` generates for non-`async` functions.
pub async fn run_blocking<T, F>(body: F) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> anyhow::Result<T> + Send + 'static,
{
    // `spawn_blocking` carries neither the step's span nor a scoped subscriber: both go
    // along, so what the body logs is the step's (and captured) as in an async asset.
    let span = tracing::Span::current();
    let dispatch = tracing::dispatcher::get_default(Clone::clone);
    let body = move || tracing::dispatcher::with_default(&dispatch, || span.in_scope(body));
    match tokio::task::spawn_blocking(body).await {
        Ok(result) => result,
        Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
        Err(join) => Err(anyhow::anyhow!("blocking asset task was cancelled: {join}")),
    }
}
