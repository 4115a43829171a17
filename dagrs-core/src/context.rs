//! The context an asset runs in, and its logger.

use std::fmt;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::event::{EventKind, LogLevel, Metadata};
use crate::key::{AssetKey, RunId};
use crate::lock;
use crate::log::{LogRecord, Sink};
use crate::partition::{PartitionRange, TimeWindow};
use crate::text::mask_secrets;

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
        let message = mask_secrets(&message);
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
    pub(crate) partition: Option<Arc<StepPartition>>,
    metadata: Arc<Mutex<Metadata>>,
    cancel: CancellationToken,
    /// The outs a multi-asset's step materializes (name and key); `None` for an asset.
    pub(crate) selection: Option<Arc<[(String, AssetKey)]>>,
    extension: Option<Arc<dyn std::any::Any + Send + Sync>>,
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
            partition: None,
            metadata,
            cancel,
            selection: None,
            extension: None,
        }
    }

    pub(crate) fn with_extension(
        mut self,
        extension: Option<Arc<dyn std::any::Any + Send + Sync>>,
    ) -> Self {
        self.extension = extension;
        self
    }

    /// What the runner of this step attached to it, if it is a `T`: under a
    /// [`Worker`](crate::worker::Worker) on PostgreSQL, the step's transaction that
    /// `dagrs_postgres::PgContext::pg_transaction` opens. `None` elsewhere.
    pub fn extension<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        Arc::clone(self.extension.as_ref()?).downcast::<T>().ok()
    }

    pub(crate) fn with_partition(mut self, partition: Option<Arc<StepPartition>>) -> Self {
        self.partition = partition;
        self
    }

    pub(crate) fn with_selection(mut self, selection: Option<Arc<[(String, AssetKey)]>>) -> Self {
        self.selection = selection;
        self
    }

    /// The keys of the assets this step materializes: for a multi-asset, the outs the run
    /// selected (all of them unless it has `can_subset`); for an asset, its own key.
    pub fn selected_outputs(&self) -> Vec<&AssetKey> {
        match &self.selection {
            Some(outs) => outs.iter().map(|(_, key)| key).collect(),
            None => vec![&self.asset],
        }
    }

    /// Whether this step materializes `out`, given by out name (`clean`) or asset key
    /// (`readings/clean`); see [`selected_outputs`](Self::selected_outputs).
    pub fn is_selected(&self, out: &str) -> bool {
        match &self.selection {
            Some(outs) => outs
                .iter()
                .any(|(name, key)| name == out || key.as_str() == out),
            None => self.asset.as_str() == out,
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

    /// The partition being materialized, when the step materializes one; `None` for an
    /// unpartitioned asset and for a range of several partitions (see
    /// [`partition_range`](Self::partition_range)).
    pub fn partition_key(&self) -> Option<&str> {
        let partition = self.partition.as_deref()?;
        partition.single.then_some(partition.range.key.as_str())
    }

    /// The partitions being materialized: one, or a range materialized in one go.
    pub fn partition_range(&self) -> Option<&PartitionRange> {
        Some(&self.partition.as_deref()?.range)
    }

    /// The time window being materialized — of one partition, or covering the whole range —
    /// for time-partitioned assets.
    pub fn partition_time_window(&self) -> Option<TimeWindow> {
        self.partition.as_deref()?.window
    }

    /// The key of dimension `name` of a multi-dimensional partition (for the time dimension,
    /// the first window's key).
    pub fn partition_dimension(&self, name: &str) -> Option<&str> {
        let partition = self.partition.as_deref()?;
        let (_, key) = partition.dimensions.iter().find(|(n, _)| n == name)?;
        Some(key)
    }

    /// Attaches metadata (a row count, a path, ...) to this materialization; it is recorded
    /// in the event log. A later value for the same key replaces the earlier one.
    pub fn add_metadata(&self, key: impl Into<String>, value: impl Serialize) {
        let value = serde_json::to_value(value).unwrap_or_else(|e| {
            serde_json::Value::String(format!("<metadata not representable as JSON: {e}>"))
        });
        lock(&self.metadata).insert(key.into(), value);
    }

    /// Records the result of check `name` that the asset computed itself (Dagster's
    /// `AssetCheckResult` yielded by an asset). It is recorded like a `#[asset_check]`'s
    /// result, but never blocking: to stop what lies downstream, return an error, or declare
    /// a blocking `#[asset_check]`.
    pub fn report_check(&self, name: impl Into<String>, result: crate::check::CheckResult) {
        let name = name.into();
        self.log
            .sink
            .send(Some(&self.asset), result.into_event(&name, false));
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
            .field("partition", &self.partition_range())
            .finish_non_exhaustive()
    }
}

impl AssetContext {
    /// The log lines kept by a test context (from
    /// [`build_asset_context`](crate::build_asset_context)); empty inside a real run, whose
    /// lines go to the event log.
    pub fn log_records(&self) -> Vec<LogRecord> {
        match &self.log.sink {
            Sink::Local(records) => lock(records).clone(),
            Sink::Run(..) => Vec::new(),
        }
    }
}

/// The partitions one step materializes, as its context shows them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StepPartition {
    pub(crate) range: PartitionRange,
    /// Whether it is one partition (else a range).
    pub(crate) single: bool,
    pub(crate) window: Option<TimeWindow>,
    /// The key of each dimension by name.
    pub(crate) dimensions: Vec<(String, String)>,
}

impl StepPartition {
    pub(crate) fn new(def: &crate::partition::PartitionsDefinition, range: PartitionRange) -> Self {
        let single = def.count(&range.to_set()) == 1;
        StepPartition {
            single,
            window: def.window_of(&range),
            dimensions: def.dimension_keys(&range),
            range,
        }
    }
}
