//! The context an asset runs in, its logger, and `build_asset_context()` for tests.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::asset::Asset;
use crate::error::{Error, Problems};
use crate::event::{EventKind, LogLevel, Metadata};
use crate::key::{AssetKey, RunId};
use crate::param::{Resources, StepScope};

/// An event on its way to the run's log; the log's writer gives it its sequence number.
pub(crate) struct Draft {
    pub(crate) asset: Option<AssetKey>,
    pub(crate) kind: EventKind,
    pub(crate) timestamp: DateTime<Utc>,
}

/// Where a context's log lines go: the run's event log, or a list kept for a test.
#[derive(Clone)]
pub(crate) enum Sink {
    Run(mpsc::UnboundedSender<Draft>),
    Local(Arc<Mutex<Vec<LogRecord>>>),
}

impl Sink {
    pub(crate) fn send(&self, asset: Option<&AssetKey>, kind: EventKind) {
        let timestamp = crate::event::now();
        match self {
            // A closed channel means the run has ended; late lines of a stray blocking task
            // have nowhere to go.
            Sink::Run(tx) => drop(tx.send(Draft {
                asset: asset.cloned(),
                kind,
                timestamp,
            })),
            Sink::Local(records) => {
                if let EventKind::Log { level, message } = kind {
                    lock(records).push(LogRecord {
                        level,
                        message,
                        timestamp,
                    });
                }
            }
        }
    }
}

/// Locks `mutex`, going on after a panic of another holder: every value dagrs keeps behind a
/// mutex is valid between statements, so a poisoned lock holds nothing half-written.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A log line kept by a test context (see [`AssetContextBuilder::logs`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord {
    /// Its level.
    pub level: LogLevel,
    /// The text.
    pub message: String,
    /// When it was logged.
    pub timestamp: DateTime<Utc>,
}

/// `ctx.log`: writes to the run's event log and to `tracing` (target `dagrs::asset`).
#[derive(Clone)]
pub struct Logger {
    sink: Sink,
    run_id: RunId,
    asset: AssetKey,
}

impl Logger {
    /// Logs at debug level.
    pub fn debug(&self, message: impl Into<String>) {
        self.log(LogLevel::Debug, message.into());
    }

    /// Logs at info level.
    pub fn info(&self, message: impl Into<String>) {
        self.log(LogLevel::Info, message.into());
    }

    /// Logs at warn level.
    pub fn warn(&self, message: impl Into<String>) {
        self.log(LogLevel::Warn, message.into());
    }

    /// Logs at error level.
    pub fn error(&self, message: impl Into<String>) {
        self.log(LogLevel::Error, message.into());
    }

    /// Logs at `level`. Passwords in URLs are masked before the line goes anywhere.
    pub fn log(&self, level: LogLevel, message: String) {
        let message = crate::event::mask_secrets(&message);
        let (run_id, asset) = (self.run_id.as_str(), self.asset.as_str());
        match level {
            LogLevel::Debug => tracing::debug!(target: "dagrs::asset", run_id, asset, "{message}"),
            LogLevel::Info => tracing::info!(target: "dagrs::asset", run_id, asset, "{message}"),
            LogLevel::Warn => tracing::warn!(target: "dagrs::asset", run_id, asset, "{message}"),
            LogLevel::Error => tracing::error!(target: "dagrs::asset", run_id, asset, "{message}"),
        }
        self.sink
            .send(Some(&self.asset), EventKind::Log { level, message });
    }
}

impl fmt::Debug for Logger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Logger")
            .field("run_id", &self.run_id)
            .field("asset", &self.asset)
            .finish()
    }
}

/// What an asset knows about the step it runs in; take it as a `&AssetContext` parameter.
pub struct AssetContext {
    /// The step's logger: `ctx.log.info("...")`.
    pub log: Logger,
    run_id: RunId,
    asset: AssetKey,
    attempt: u32,
    partition_key: Option<String>,
    metadata: Arc<Mutex<Metadata>>,
    cancel: CancellationToken,
}

impl AssetContext {
    pub(crate) fn new(
        run_id: RunId,
        asset: AssetKey,
        attempt: u32,
        sink: Sink,
        metadata: Arc<Mutex<Metadata>>,
        cancel: CancellationToken,
    ) -> Self {
        AssetContext {
            log: Logger {
                sink,
                run_id: run_id.clone(),
                asset: asset.clone(),
            },
            run_id,
            asset,
            attempt,
            partition_key: None,
            metadata,
            cancel,
        }
    }

    /// The id of the run.
    pub fn run_id(&self) -> &RunId {
        &self.run_id
    }

    /// The key of the asset being materialized.
    pub fn asset_key(&self) -> &AssetKey {
        &self.asset
    }

    /// The attempt number: 1, then 2 for the first retry, and so on.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The partition being materialized; `None` for unpartitioned assets.
    pub fn partition_key(&self) -> Option<&str> {
        self.partition_key.as_deref()
    }

    /// Attaches metadata (a row count, a path, ...) to this materialization; it is recorded
    /// in the event log. A later value for the same key replaces the earlier one.
    pub fn add_metadata(&self, key: impl Into<String>, value: impl Serialize) {
        let value = serde_json::to_value(value).unwrap_or_else(|e| {
            serde_json::Value::String(format!("<metadata not representable as JSON: {e}>"))
        });
        lock(&self.metadata).insert(key.into(), value);
    }

    /// The metadata attached so far.
    pub fn metadata(&self) -> Metadata {
        lock(&self.metadata).clone()
    }

    /// Whether the run was cancelled; long blocking work should check this now and then.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Completes when the run is cancelled.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }
}

impl fmt::Debug for AssetContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AssetContext")
            .field("run_id", &self.run_id)
            .field("asset", &self.asset)
            .field("attempt", &self.attempt)
            .field("partition_key", &self.partition_key)
            .finish_non_exhaustive()
    }
}

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
        partition_key: None,
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
    partition_key: Option<String>,
    resources: Resources,
    config: Option<serde_json::Value>,
    inputs: HashMap<AssetKey, Arc<dyn Any + Send + Sync>>,
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

    /// Sets the partition key.
    pub fn partition_key(mut self, key: impl Into<String>) -> Self {
        self.partition_key = Some(key.into());
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
        ctx.partition_key = self.partition_key.clone();
        ctx
    }

    /// Runs asset `A` with its parameters injected from this builder. Missing resources,
    /// inputs or bad config are reported before the asset runs.
    pub async fn invoke<A: Asset>(&self) -> anyhow::Result<A::Output> {
        let spec = A::spec();
        let asset = self.asset.clone().unwrap_or_else(|| spec.key.clone());
        let mut problems = Vec::new();
        for (id, resource) in &spec.needs.resources {
            if !self.resources.contains(*id) {
                problems.push(Error::MissingResource {
                    asset: asset.to_string(),
                    resource,
                });
            }
        }
        for input in &spec.needs.inputs {
            if !self.inputs.contains_key(&input.key) {
                problems.push(Error::MissingInput {
                    asset: asset.to_string(),
                    input: input.key.to_string(),
                });
            }
        }
        let config = match (&spec.needs.config, &self.config) {
            (Some(need), value) => match (need.decode)(&asset, value.as_ref()) {
                Ok(config) => Some(config),
                Err(e) => {
                    problems.push(e);
                    None
                }
            },
            (None, Some(_)) => {
                problems.push(Error::UnexpectedConfig {
                    asset: asset.to_string(),
                });
                None
            }
            (None, None) => None,
        };
        Problems::check(problems)?;
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

impl AssetContext {
    /// The log lines kept by a test context (from [`build_asset_context`]); empty inside a
    /// real run, whose lines go to the event log.
    pub fn log_records(&self) -> Vec<LogRecord> {
        match &self.log.sink {
            Sink::Local(records) => lock(records).clone(),
            Sink::Run(_) => Vec::new(),
        }
    }
}
