//! Software-defined data assets in Rust.
//!
//! Write plain functions that each produce one data asset, mark them with [`#[asset]`](asset),
//! and let dagrs check the graph and materialize it: in dependency order, in parallel where
//! the graph allows, with retries, config, injected resources and a complete event log.
//!
//! ```
//! use dagrs_core::prelude::*;
//!
//! /// Tag names read from the source.
//! #[asset(group = "ecoanp")]
//! async fn tags(ctx: &AssetContext) -> Result<Vec<String>> {
//!     ctx.log.info("reading tags");
//!     Ok(vec!["D100".into(), "D101".into()])
//! }
//!
//! #[asset(group = "ecoanp", retry = Retry::exponential(3, Duration::from_secs(1)))]
//! async fn tag_count(ctx: &AssetContext, tags: Input<tags>) -> Result<usize> {
//!     ctx.add_metadata("rows", tags.len());
//!     Ok(tags.len())
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let defs = Definitions::builder().specs(assets![tags, tag_count]).build().unwrap();
//! let result = materialize(&defs, "*", RunConfig::new()).await.unwrap();
//! assert!(result.success());
//! assert_eq!(result.output::<tag_count>(), Some(&2));
//! # });
//! ```
//!
//! # Parameters
//!
//! An asset function's parameters are injected by type ([`AssetParam`]):
//! [`&AssetContext`](AssetContext) (run id, attempt, `ctx.log`, metadata),
//! [`Config<C>`] (serde config with defaults, checked before the run starts),
//! [`Res<R>`] (a resource registered on the [`Definitions`]), [`Input<A>`] (the output
//! of asset `A`, typed by `A` itself) and [`Partition<T>`] (the partition a run materializes,
//! for assets with [`partitions`]). Functions may be `async` or blocking; blocking ones
//! run on tokio's blocking pool.
//!
//! # Selections
//!
//! [`materialize`] and [`Definitions::select`] take a selection: space- or comma-separated
//! terms whose union is selected.
//!
//! | term | selects |
//! |---|---|
//! | `name` | the asset |
//! | `name+`, `name+2` | it and everything downstream (or 2 levels down) |
//! | `+name`, `2+name` | it and everything upstream (or 2 levels up) |
//! | `*` | every asset |
//! | `group:x` | the assets of group `x` |
//! | `tag:k=v`, `tag:k` | the assets with tag `k` (equal to `v`) |
//!
//! An unknown name is an error that suggests the closest names.
//!
//! # Where runs happen
//!
//! [`Definitions`] hold what the code defines; an [`Instance`] holds where and how it runs:
//! the run store — [`storage::InMemoryStorage`] ([`Instance::ephemeral`], what
//! [`materialize`] uses), `storage::SqliteStorage` (feature `sqlite`, the embedded default of
//! the `cli`), or PostgreSQL through `dagrs-postgres` — with retention, limits, recovery of
//! runs whose process died, cancellation and re-execution from failure.
//!
//! # Cargo features
//!
//! - `cli` (default): the command line, [`cli`] (clap, indicatif, comfy-table); implies `sqlite`.
//! - `sqlite` (default): the embedded SQLite run store (bundled SQLite).
//! - `testing`: the storage contract suite, `storage::contract`, for backends' tests.
//! - `slack`: `SlackResource` and the `slack_on_failure` hook (HTTPS through ureq and rustls).
//! - `web`: the web UI, `web` (an axum router: asset catalog, lineage graph, runs with live
//!   logs, launchpad, schedules and sensors); with `cli`, the `ui` and `dev` verbs.
//!
//! A service that embeds only the executor and PostgreSQL builds with
//! `default-features = false` and compiles none of them.

mod asset;
pub mod automation;
mod backfill;
mod check;
#[cfg(feature = "cli")]
pub mod cli;
mod clock;
mod config;
mod context;
mod daemon;
mod definitions;
mod error;
mod event;
mod executor;
mod graph;
mod handler;
mod hook;
mod instance;
mod job;
mod key;
mod log;
mod multi;
pub mod observe;
mod param;
mod partition;
mod pool;
mod queue;
mod requirements;
mod resources;
mod result;
mod retry;
mod schedule;
mod scope;
mod sensor;
#[cfg(feature = "slack")]
mod slack;
mod source;
mod state;
pub mod storage;
mod test_context;
mod text;
#[cfg(feature = "web")]
pub mod web;
pub mod worker;

pub use asset::{Asset, AssetSpec, AssetValue, IntoAssetResult};
pub use backfill::{
    BackfillPolicy, BackfillRecord, BackfillRequest, BackfillRun, BackfillStatus, BACKFILL_TAG,
};
pub use check::{AssetCheck, CheckResult, CheckSeverity, CheckSpec, IntoCheckResult};
pub use clock::{Clock, ManualClock, ScaledClock, SystemClock};
pub use config::{ConfigFormat, RunConfig, MAX_CONFIG_BYTES, MAX_CONFIG_DEPTH};
pub use context::{AssetContext, Logger};
pub use daemon::{Daemon, Evaluation, DEFAULT_DAEMON_INTERVAL, DEFAULT_GRACE};
pub use definitions::{Definitions, DefinitionsBuilder};
pub use error::{DefinitionsError, Error, Hint, Problem, Problems, Provider};
pub use event::{
    ErrorInfo, Event, EventKind, LogLevel, MaterializationRef, Metadata, RunStatus, StepStatus,
};
pub use executor::{RunHandle, RunOptions, DEFAULT_MAX_CONCURRENCY, HEARTBEAT_INTERVAL};
pub use handler::Handler;
pub use hook::{Hook, HookContext, HookOn, DEFAULT_HOOK_TIMEOUT};
pub use instance::{materialize, Cancellation, Instance};
pub use job::{
    AssetJob, JOB_TAG, PARTITION_TAG, PRIORITY_TAG, RUN_KEY_TAG, SCHEDULE_TAG, SENSOR_TAG, TICK_TAG,
};
pub use key::{AssetKey, RunId};
pub use log::LogRecord;
pub use multi::{AssetOut, MultiAsset, MultiAssetSpec, MultiOutputs};
pub use param::{AssetParam, Config, FromPartition, Input, Partition, Res};
pub use queue::{RunQueue, TagLimit, DEFAULT_MAX_CONCURRENT_RUNS};
pub use requirements::Requirements;
pub use resources::Resources;
pub use result::{outcomes_from_events, RunResult, StepOutcome};
pub use retry::{Backoff, Retry};
pub use schedule::{MissedTicks, Schedule, MAX_CATCH_UP};
pub use scope::StepScope;
pub use sensor::{
    RunRequest, RunStatusContext, Sensor, SensorContext, SensorResult, DEFAULT_MINIMUM_INTERVAL,
};
#[cfg(feature = "slack")]
pub use slack::{slack_on_failure, SlackError, SlackResource, SLACK_API};
pub use source::{AssetKind, DataVersion};
pub use state::{AssetState, Staleness};
pub use test_context::{build_asset_context, AssetContextBuilder};
pub use text::{bounded, mask_secrets};

/// Locks `mutex`, going on after a panic of another holder: every value dagrs keeps behind a
/// mutex is valid between statements, so a poisoned lock holds nothing half-written.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Marks a function as an asset. See the [crate docs](crate) for parameters.
///
/// Keys: `deps = [path, "string", ...]`, `group = "..."`, `pool = "..."` (a concurrency pool,
/// see [`AssetSpec::pool`] and [`Instance::with_pool_limit`]), `tags(key = "value", ...)`,
/// `description = "..."` (default: the doc comment), `retry = <Retry>`,
/// `timeout = <Duration>`, `code_version = "..."`, `key = "..."` (default: the function name),
/// `hooks = [<Hook>, ...]`, `partitions = <PartitionsDefinition>` (e.g. `hourly("2026-01-01")`),
/// `mappings(dep = <PartitionMapping>, ...)` and `backfill = <BackfillPolicy>`; the last three
/// see [`partitions`]`::*` without an import. `automation = <AutomationCondition>` lets the
/// daemon materialize it (e.g. `automation = eager()`; it sees [`automation`]`::*`).
///
/// The macro keeps the function as written, so it stays callable from tests, and adds a
/// marker type of the same name that implements [`Asset`]: name it in `deps`, in
/// [`Input<A>`], in [`DefinitionsBuilder::asset`] and in [`RunResult::output`].
pub use dagrs_macros::asset;

/// Marks a function as an asset check of `asset`, run right after each of its
/// materializations, in the same step.
///
/// Keys: `asset = path` (or `"string/key"`; a path is checked by the compiler), `name = "..."`
/// (default: the function name), `blocking = true` (a failure of severity `error` fails the
/// step after the materialization is recorded, so nothing downstream runs) and
/// `description = "..."` (default: the doc comment). Parameters are injected as for
/// [`asset`]: `&AssetContext`, `Res<R>` and `Input<A>` of the checked asset `A`. The function
/// returns a [`CheckResult`] or `Result<CheckResult>` (an error is a failure of severity
/// `error`). Register checks with [`DefinitionsBuilder::checks`] and [`checks!`].
///
/// ```
/// use dagrs_core::prelude::*;
/// use dagrs_core::{asset_check, checks, CheckResult};
///
/// #[asset]
/// async fn readings() -> Result<Vec<f64>> { Ok(vec![20.5, 21.0]) }
///
/// /// Every reading is a plausible temperature.
/// #[asset_check(asset = readings, blocking = true)]
/// async fn in_range(readings: Input<readings>) -> CheckResult {
///     let bad = readings.iter().filter(|v| !(-40.0..=60.0).contains(*v)).count();
///     CheckResult::new(bad == 0).metadata("out_of_range", bad)
/// }
///
/// let defs = Definitions::builder()
///     .specs(assets![readings])
///     .checks(checks![in_range])
///     .build()
///     .unwrap();
/// assert_eq!(defs.checks_of("readings").next().unwrap().name(), "in_range");
/// ```
pub use dagrs_macros::asset_check;

/// Marks a function as an observable source asset: something else writes the data, and the
/// function reads its [`DataVersion`] when the asset is selected. A new version counts as an
/// update: assets that depend on it become stale, and `eager` automation runs them.
///
/// Keys: `key`, `group`, `tags(...)`, `description`, `retry`, `timeout`, `code_version`, as
/// for [`asset`]. The function returns `Result<DataVersion>`.
///
/// ```
/// use dagrs_core::prelude::*;
/// use dagrs_core::{observable_source_asset, DataVersion};
///
/// /// The InfluxDB measurement EcoAnP reads.
/// #[observable_source_asset(key = "influx/readings")]
/// async fn influx_readings() -> Result<DataVersion> {
///     Ok(DataVersion::new("2026-11-30T12:00:00Z"))
/// }
///
/// #[asset(deps = [influx_readings])]
/// async fn copied() -> Result<()> { Ok(()) }
/// ```
pub use dagrs_macros::observable_source_asset;

/// Marks a function as a multi-asset: one function that materializes several assets, its
/// outs, each with its own key, group, typed output, history and staleness.
///
/// ```
/// use dagrs_core::prelude::*;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Serialize, Deserialize, PartialEq)]
/// pub struct Stats { count: usize }
///
/// #[asset]
/// async fn raw() -> Result<Vec<f64>> { Ok(vec![1.0, -2.0, 3.0]) }
///
/// /// Cleans the readings and counts them, in one pass.
/// #[multi_asset(outs(clean: Vec<f64>, stats: Stats = (key = "readings/stats", group = "silver")),
///               group = "bronze")]
/// async fn split(raw: Input<raw>) -> Result<(Vec<f64>, Stats)> {
///     let clean: Vec<f64> = raw.iter().copied().filter(|v| *v >= 0.0).collect();
///     let stats = Stats { count: clean.len() };
///     Ok((clean, stats))
/// }
///
/// #[asset]
/// async fn total(clean: Input<clean>) -> Result<f64> { Ok(clean.iter().sum()) }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let defs = Definitions::builder().specs(assets![raw, split, total]).build().unwrap();
/// let result = materialize(&defs, "*", RunConfig::new()).await.unwrap();
/// assert_eq!(result.output::<stats>(), Some(&Stats { count: 2 }));
/// assert_eq!(result.output::<total>(), Some(&4.0));
/// # });
/// ```
///
/// `outs(name: Type, ...)` declares the outs in order; the function returns
/// `Result<(T1, T2, ...)>`, one value per out, which the compiler checks against the outs. An
/// out is followed by its own options if it needs some:
/// `name: Type = (key = "...", group = "...", description = "...", code_version = "...", tags(k = "v"))`
/// (default: the out's name as key, and the multi-asset's group, description and code version;
/// its tags add to the multi-asset's).
///
/// The macro keeps the function as written and adds a marker type per out, named like the
/// out, that implements [`Asset`] (name it in `deps = [...]`, [`Input<A>`] and
/// [`RunResult::output`]), and a marker named like the function that implements
/// [`MultiAsset`] (name it in [`assets!`] or [`DefinitionsBuilder::multi_asset`]).
///
/// Other keys: `deps = [...]`, `group`, `pool` (one slot per attempt of the function),
/// `tags(...)`, `description` (default: the doc comment), `retry`, `timeout`, `hooks = [...]`,
/// `code_version`, as on [`asset`], for the function and so for every out; every out depends on what the function depends on (its
/// `Input`s and `deps`). The function's config (`Config<C>`) is given under its first out's key.
///
/// `can_subset = true` lets a run materialize some outs only: the function then returns
/// `Result<(Option<T1>, Option<T2>, ...)>` and asks [`AssetContext::is_selected`] or
/// [`AssetContext::selected_outputs`] what to compute; `None` for a selected out fails the
/// step, a value for an unselected out is dropped. Without it, selecting any out selects all
/// of them. Either way the function runs once per run, as one step: attempts, retries, timeout
/// and cancellation are shared, and each out's events (started, materialized, failed) are
/// recorded under its own key. Multi-assets cannot be partitioned yet.
pub use dagrs_macros::multi_asset;

/// The specs of several `#[asset]` and `#[multi_asset]` functions, for
/// [`DefinitionsBuilder::specs`]: `assets![influx_tags, influx_data, create_aggregates]`.
/// A multi-asset gives the specs of all its outs.
#[macro_export]
macro_rules! assets {
    ($($asset:ty),* $(,)?) => {{
        #[allow(unused_mut)]
        let mut specs: ::std::vec::Vec<$crate::AssetSpec> = ::std::vec::Vec::new();
        $(specs.extend(<$asset as $crate::__private::IntoSpecs>::into_specs());)*
        specs
    }};
}

/// The specs of several `#[asset_check]` functions, for [`DefinitionsBuilder::checks`]:
/// `checks![no_gaps, values_in_range]`.
#[macro_export]
macro_rules! checks {
    ($($check:ty),* $(,)?) => {
        ::std::vec![$(<$check as $crate::AssetCheck>::spec()),*]
    };
}

/// Partitions: definitions ([`hourly`](partitions::hourly), [`static_keys`](partitions::static_keys),
/// [`multi`](partitions::multi), ...), mappings between them, and sets of partitions as ranges.
pub mod partitions {
    pub use crate::backfill::BackfillPolicy;
    pub use crate::partition::define::*;
    pub use crate::partition::status::{cut, merged, outcomes, PartitionOutcome};
    pub use crate::partition::{
        AssetPartitions, Chunks, PartitionContext, PartitionMapping, PartitionRange, PartitionSet,
        PartitionStatus, PartitionsDefinition, RangeSet, TimeWindow, TimeWindows,
        DIMENSION_SEPARATOR, RANGE_SEPARATOR,
    };
}

/// What most asset code needs: `use dagrs_core::prelude::*;`.
pub mod prelude {
    pub use crate::{
        asset, assets, build_asset_context, materialize, multi_asset, AssetContext, Config,
        Definitions, Input, Instance, Partition, Res, Retry, RunConfig,
    };
    pub use std::time::Duration;

    /// The result type of asset functions: any error converts into it with `?`.
    pub type Result<T, E = anyhow::Error> = std::result::Result<T, E>;
}

/// Re-exported for the code `#[asset]` generates; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::asset::{run_blocking, Asset, AssetSpec, IntoAssetResult};
    pub use crate::check::{AssetCheck, CheckSpec, IntoCheckResult};
    pub use crate::multi::{
        AssetOut, IntoMultiResult, IntoSpecs, MultiAsset, MultiAssetSpec, MultiOutputs, OutValue,
    };
    pub use crate::param::AssetParam;
    pub use crate::requirements::Requirements;
    pub use crate::scope::StepScope;
    pub use anyhow;
}

/// `anyhow`, which asset errors convert into.
pub use anyhow;
