//! `build_asset_context()`: a context for unit-testing one asset, and running it with
//! injection from what the test provides.

use crate::context::StepPartition;
use crate::partition::{PartitionContext, PartitionRange, PartitionsDefinition};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::asset::Asset;
use crate::context::AssetContext;
use crate::error::{Error, Provider};
use crate::event::Metadata;
use crate::key::{AssetKey, RunId};
use crate::lock;
use crate::log::{LogRecord, Sink};
use crate::requirements::{ConfigSupply, Provided, Supply};
use crate::resources::Resources;
use crate::scope::{Shared, StepScope};

/// Starts a context for unit-testing one asset: give it resources, config, upstream inputs,
/// a run id or a partition, then call the asset function with [`build`](AssetContextBuilder::build)'s
/// context or run it with injection through [`invoke`](AssetContextBuilder::invoke).
///
/// ```
/// use dagrs_core::prelude::*;
///
/// #[derive(serde::Deserialize)]
/// #[serde(default)]
/// struct Greeting { name: String }
/// impl Default for Greeting { fn default() -> Self { Greeting { name: "world".into() } } }
///
/// #[asset]
/// async fn hello(ctx: &AssetContext, config: Config<Greeting>) -> Result<String> {
///     ctx.log.info("greeting");
///     ctx.add_metadata("length", config.name.len());
///     Ok(format!("hello, {}", config.name))
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let test = build_asset_context().config(serde_json::json!({ "name": "dagrs" }));
/// assert_eq!(test.invoke::<hello>().await.unwrap(), "hello, dagrs");
/// assert_eq!(test.metadata()["length"], 5);
///
/// // The function itself stays callable:
/// let ctx = build_asset_context().build();
/// let out = hello(&ctx, Config::new(Greeting { name: "you".into() })).await.unwrap();
/// assert_eq!(out, "hello, you");
/// assert_eq!(ctx.log_records().len(), 1);
/// # });
/// ```
pub fn build_asset_context() -> AssetContextBuilder {
    AssetContextBuilder {
        run_id: RunId::from("test-run"),
        asset: None,
        attempt: 1,
        partition: None,
        resources: Resources::default(),
        config: None,
        inputs: HashMap::new(),
        records: Arc::default(),
        metadata: Arc::default(),
        cancel: CancellationToken::new(),
    }
}

/// The builder [`build_asset_context`] returns.
pub struct AssetContextBuilder {
    run_id: RunId,
    asset: Option<AssetKey>,
    attempt: u32,
    partition: Option<Arc<StepPartition>>,
    resources: Resources,
    config: Option<serde_json::Value>,
    inputs: HashMap<AssetKey, Shared>,
    records: Arc<Mutex<Vec<LogRecord>>>,
    metadata: Arc<Mutex<Metadata>>,
    cancel: CancellationToken,
}

impl AssetContextBuilder {
    /// Provides a resource, injected as `Res<R>`.
    pub fn resource<R: Send + Sync + 'static>(mut self, resource: R) -> Self {
        self.resources.insert(resource);
        self
    }

    /// Sets the asset's config (anything serializable: a JSON value or the config struct).
    ///
    /// # Panics
    ///
    /// When `config` cannot be represented as JSON.
    pub fn config(mut self, config: impl Serialize) -> Self {
        self.config =
            Some(serde_json::to_value(config).expect("test config must be representable as JSON"));
        self
    }

    /// Provides the output of upstream asset `A`, injected as `Input<A>`.
    pub fn input<A: Asset>(mut self, value: A::Output) -> Self {
        self.inputs.insert(A::KEY.into(), Arc::new(value));
        self
    }

    /// Sets the run id (default `test-run`).
    pub fn run_id(mut self, run_id: impl Into<RunId>) -> Self {
        self.run_id = run_id.into();
        self
    }

    /// Sets the asset key the context reports (default: the invoked asset's, or `test`).
    pub fn asset_key(mut self, key: impl Into<AssetKey>) -> Self {
        self.asset = Some(key.into());
        self
    }

    /// Sets the attempt number (default 1).
    pub fn attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt;
        self
    }

    /// Sets the partition key (with no time window: see [`partition`](Self::partition)).
    pub fn partition_key(mut self, key: impl Into<String>) -> Self {
        let key = key.into();
        self.partition = Some(Arc::new(StepPartition {
            range: PartitionRange {
                key: key.clone(),
                dims: key.clone(),
                start: 0,
                end: 1,
            },
            single: true,
            window: None,
            dimensions: vec![(String::new(), key)],
        }));
        self
    }

    /// Sets the partition (a key, or a range `START...END`) of definition `def`, with its
    /// time window and dimensions, as a run would.
    ///
    /// # Panics
    ///
    /// When `target` is not a partition of `def` that exists now (or `def` has dynamic
    /// dimensions, whose keys live in a store).
    pub fn partition(mut self, def: impl Into<PartitionsDefinition>, target: &str) -> Self {
        let def = def.into();
        let ctx = PartitionContext {
            now: chrono::Utc::now().timestamp(),
            ..PartitionContext::default()
        };
        let range = def
            .parse_target(target, &ctx)
            .unwrap_or_else(|e| panic!("test partition `{target}`: {e}"));
        self.partition = Some(Arc::new(StepPartition::new(&def, range)));
        self
    }

    /// The token that cancels contexts built from here, to test cancellation handling.
    pub fn cancellation(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// A context to pass to an asset function directly. Its log lines and metadata are
    /// shared with this builder.
    pub fn build(&self) -> AssetContext {
        self.context(self.asset.clone().unwrap_or_else(|| "test".into()))
    }

    fn context(&self, asset: AssetKey) -> AssetContext {
        let mut ctx = AssetContext::new(
            self.run_id.clone(),
            asset,
            self.attempt,
            Sink::Local(Arc::clone(&self.records)),
            Arc::clone(&self.metadata),
            self.cancel.clone(),
        );
        ctx.partition = self.partition.clone();
        ctx
    }

    /// Runs asset `A` with its parameters injected from this builder. Missing resources or
    /// inputs, inputs of the wrong type and bad config are reported before the asset runs,
    /// each saying how to give the test what it lacks.
    pub async fn invoke<A: Asset>(&self) -> anyhow::Result<A::Output> {
        let spec = A::spec();
        let asset = self.asset.clone().unwrap_or_else(|| spec.key.clone());
        let inputs = |key: &AssetKey| match self.inputs.get(key) {
            Some(value) => Supply::Present((**value).type_id(), "a value of another type"),
            None => Supply::Missing,
        };
        let config = spec
            .needs
            .check(
                &asset,
                &Provided {
                    by: Provider::Test,
                    resources: Some(&self.resources),
                    inputs: &inputs,
                    config: self
                        .config
                        .as_ref()
                        .map_or(ConfigSupply::Absent, ConfigSupply::Given),
                },
            )
            .map_err(Error::invalid)?;
        let scope = StepScope {
            context: self.context(asset),
            resources: self.resources.clone(),
            config,
            inputs: Arc::new(self.inputs.clone()),
        };
        let output = (spec.compute)(scope).await?;
        let value = output
            .value
            .downcast::<A::Output>()
            .map_err(|_| anyhow::anyhow!("asset `{}` produced another type", A::KEY))?;
        Ok(Arc::try_unwrap(value).unwrap_or_else(|_| unreachable!("the output is not shared yet")))
    }

    /// The log lines written so far by contexts of this builder.
    pub fn logs(&self) -> Vec<LogRecord> {
        lock(&self.records).clone()
    }

    /// The metadata attached so far by contexts of this builder.
    pub fn metadata(&self) -> Metadata {
        lock(&self.metadata).clone()
    }
}
