//! Asset jobs: a name for a selection of assets with its run config and tags — what
//! schedules and sensors launch, and `job launch NAME` runs.

use std::collections::BTreeMap;

use crate::config::RunConfig;
use crate::hook::Hook;

/// The run tag naming the job of a run.
pub const JOB_TAG: &str = "dagrs/job";
/// The run tag naming the schedule that requested a run.
pub const SCHEDULE_TAG: &str = "dagrs/schedule";
/// The run tag naming the sensor that requested a run.
pub const SENSOR_TAG: &str = "dagrs/sensor";
/// The run tag holding the tick (RFC 3339) that requested a run.
pub const TICK_TAG: &str = "dagrs/tick";
/// The run tag holding a sensor's run key.
pub const RUN_KEY_TAG: &str = "dagrs/run_key";
/// The run tag holding the partition a run materializes: a key, or a range `START...END`
/// (END excluded).
pub const PARTITION_TAG: &str = "dagrs/partition";
/// The run tag holding a run's priority in the queue (an integer; higher runs first).
pub const PRIORITY_TAG: &str = "dagrs/priority";

/// A named selection of assets, with run config and tags: Dagster's `define_asset_job`.
///
/// ```
/// use dagrs_core::{AssetJob, RunConfig};
///
/// let job = AssetJob::new("ecoanp_pipeline", "*")
///     .description("the whole EcoAnP pipeline")
///     .tag("team", "data_engineering")
///     .config(RunConfig::new().asset("influx_data", serde_json::json!({ "batch_size": 500 })));
/// assert_eq!(job.name(), "ecoanp_pipeline");
/// ```
#[derive(Clone, Debug)]
pub struct AssetJob {
    pub(crate) name: String,
    pub(crate) selection: String,
    pub(crate) config: RunConfig,
    pub(crate) tags: BTreeMap<String, String>,
    pub(crate) description: Option<String>,
    pub(crate) hooks: Vec<Hook>,
}

impl AssetJob {
    /// A job named `name` over `selection` (see [the syntax](crate#selections)).
    pub fn new(name: impl Into<String>, selection: impl Into<String>) -> Self {
        AssetJob {
            name: name.into(),
            selection: selection.into(),
            config: RunConfig::new(),
            tags: BTreeMap::new(),
            description: None,
            hooks: Vec::new(),
        }
    }

    /// Run config of the job's runs, merged over the definitions' defaults (and under what
    /// a run is given).
    pub fn config(mut self, config: RunConfig) -> Self {
        self.config = config;
        self
    }

    /// Adds a tag to the job's runs (used by the run queue's tag limits, among others).
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(key.into(), value.into());
        self
    }

    /// Sets the description.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = Some(text.into());
        self
    }

    /// Adds a hook run on every step of the job's runs.
    pub fn hook(mut self, hook: Hook) -> Self {
        self.hooks.push(hook);
        self
    }

    /// The job's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its selection.
    pub fn selection(&self) -> &str {
        &self.selection
    }

    /// Its run config.
    pub fn run_config(&self) -> &RunConfig {
        &self.config
    }

    /// Its tags.
    pub fn tags(&self) -> &BTreeMap<String, String> {
        &self.tags
    }

    /// Its description, if any.
    pub fn description_text(&self) -> Option<&str> {
        self.description.as_deref()
    }
}
