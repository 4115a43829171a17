//! Sensors: functions the daemon polls that request runs — with run keys, so one request
//! never launches twice — or say why they skipped, keeping a cursor in storage; and two
//! built-in kinds: asset sensors (a run when given assets are materialized) and run-status
//! sensors (a function called for each run that succeeded or failed).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::RunConfig;
use crate::event::RunStatus;
use crate::handler::{Callback, Handler};
use crate::key::AssetKey;
use crate::storage::{InstigatorStatus, RunRecord};

/// The shortest time between two evaluations of a sensor unless told otherwise.
pub const DEFAULT_MINIMUM_INTERVAL: Duration = Duration::from_secs(30);

/// What a sensor function knows when it is evaluated.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SensorContext {
    /// The sensor.
    pub name: String,
    /// The cursor it stored last time, if any.
    pub cursor: Option<String>,
    /// The evaluation's time.
    pub now: DateTime<Utc>,
}

/// What a run-status sensor's function knows: the run that ended.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RunStatusContext {
    /// The sensor.
    pub name: String,
    /// The run, as it ended.
    pub run: RunRecord,
    /// The evaluation's time.
    pub now: DateTime<Utc>,
}

/// A run a sensor asks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunRequest {
    pub(crate) job: Option<String>,
    pub(crate) run_key: Option<String>,
    pub(crate) config: RunConfig,
    pub(crate) tags: BTreeMap<String, String>,
}

impl RunRequest {
    /// A request for a run of the sensor's job.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs job `name` instead of the sensor's.
    pub fn job(mut self, name: impl Into<String>) -> Self {
        self.job = Some(name.into());
        self
    }

    /// A key that makes the request launch once: a second request with the same key (from
    /// this sensor, ever) is dropped.
    pub fn run_key(mut self, key: impl Into<String>) -> Self {
        self.run_key = Some(key.into());
        self
    }

    /// Materializes partition `key`, or a range `START...END` (END excluded), of the job's
    /// partitioned assets.
    pub fn partition(mut self, key: impl Into<String>) -> Self {
        self.tags
            .insert(crate::job::PARTITION_TAG.into(), key.into());
        self
    }

    /// Run config, merged over the job's.
    pub fn config(mut self, config: RunConfig) -> Self {
        self.config = config;
        self
    }

    /// Adds a tag to the run.
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(key.into(), value.into());
        self
    }
}

/// One line: job, run key, config and tags.
impl fmt::Display for RunRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.job.as_deref().unwrap_or("the sensor's job"))?;
        if let Some(key) = &self.run_key {
            write!(f, ", run key `{key}`")?;
        }
        if self.config != RunConfig::default() {
            let config = serde_json::to_string(&self.config).unwrap_or_default();
            write!(f, ", config {}", crate::text::bounded(&config, 200))?;
        }
        for (key, value) in &self.tags {
            write!(f, ", {key}={value}")?;
        }
        Ok(())
    }
}

/// The storage cursor of sensor `name`: what its last evaluation returned.
pub(crate) fn cursor_key(name: &str) -> String {
    format!("sensor/{name}")
}

/// What a sensor's evaluation says: runs to request, or why it skipped, and a new cursor.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SensorResult {
    pub(crate) requests: Vec<RunRequest>,
    pub(crate) skip: Option<String>,
    pub(crate) cursor: Option<String>,
}

impl SensorResult {
    /// Requests one run.
    pub fn run(request: RunRequest) -> Self {
        Self::runs([request])
    }

    /// Requests these runs.
    pub fn runs(requests: impl IntoIterator<Item = RunRequest>) -> Self {
        SensorResult {
            requests: requests.into_iter().collect(),
            ..Self::default()
        }
    }

    /// Requests nothing, for `reason`.
    pub fn skip(reason: impl Into<String>) -> Self {
        SensorResult {
            skip: Some(reason.into()),
            ..Self::default()
        }
    }

    /// Stores `cursor` for the next evaluation.
    pub fn cursor(mut self, cursor: impl Into<String>) -> Self {
        self.cursor = Some(cursor.into());
        self
    }

    /// The runs requested.
    pub fn requests(&self) -> &[RunRequest] {
        &self.requests
    }

    /// Why it skipped, if it did.
    pub fn skip_reason(&self) -> Option<&str> {
        self.skip.as_deref()
    }

    /// The new cursor, if any.
    pub fn new_cursor(&self) -> Option<&str> {
        self.cursor.as_deref()
    }
}

#[derive(Clone)]
pub(crate) enum SensorKind {
    Function(Callback<SensorContext, SensorResult>),
    Asset(Vec<AssetKey>),
    RunStatus {
        status: RunStatus,
        of_job: Option<String>,
        callback: Callback<RunStatusContext, SensorResult>,
    },
}

/// A sensor: polled by the daemon at most every `minimum_interval`, stopped until started
/// (`sensor start NAME`) unless [`running`](Self::running) says otherwise.
///
/// ```
/// use dagrs_core::{RunRequest, Sensor, SensorContext, SensorResult};
///
/// // A run for every new file, once per file (its name is the run key).
/// let files = Sensor::new("new_files", |ctx: SensorContext| async move {
///     let seen: usize = ctx.cursor.as_deref().unwrap_or("0").parse()?;
///     let names = ["a.csv", "b.csv"];
///     if seen >= names.len() {
///         return Ok(SensorResult::skip("no new files"));
///     }
///     let requests = names[seen..].iter().map(|name| RunRequest::new().run_key(*name));
///     Ok(SensorResult::runs(requests).cursor(names.len().to_string()))
/// })
/// .job("ingest")
/// .minimum_interval(std::time::Duration::from_secs(60));
/// assert_eq!(files.name(), "new_files");
/// ```
#[derive(Clone)]
pub struct Sensor {
    pub(crate) name: String,
    pub(crate) job: Option<String>,
    pub(crate) kind: SensorKind,
    pub(crate) minimum_interval: Duration,
    pub(crate) default_status: InstigatorStatus,
    pub(crate) description: Option<String>,
}

impl Sensor {
    /// A sensor evaluated by `handler`, a function of a [`SensorContext`] and resources
    /// (`Res<R>`) returning a [`SensorResult`].
    pub fn new<Args, H: Handler<SensorContext, Args, SensorResult>>(
        name: impl Into<String>,
        handler: H,
    ) -> Self {
        Self::of(name, SensorKind::Function(Callback::new(handler)))
    }

    /// An asset sensor: requests a run of its [`job`](Self::job) whenever one of `assets`
    /// has been materialized since the last evaluation.
    pub fn on_assets<K: Into<AssetKey>>(
        name: impl Into<String>,
        assets: impl IntoIterator<Item = K>,
    ) -> Self {
        Self::of(
            name,
            SensorKind::Asset(assets.into_iter().map(Into::into).collect()),
        )
    }

    /// A run-status sensor: calls `handler` with each run that ended with `status`
    /// (`Succeeded`, `Failed` or `Cancelled`) since the last evaluation — of every job, or of
    /// the one named with [`of_job`](Self::of_job) — e.g. to alert, or to request runs.
    pub fn on_run_status<Args, H: Handler<RunStatusContext, Args, SensorResult>>(
        name: impl Into<String>,
        status: RunStatus,
        handler: H,
    ) -> Self {
        Self::of(
            name,
            SensorKind::RunStatus {
                status,
                of_job: None,
                callback: Callback::new(handler),
            },
        )
    }

    fn of(name: impl Into<String>, kind: SensorKind) -> Self {
        Sensor {
            name: name.into(),
            job: None,
            kind,
            minimum_interval: DEFAULT_MINIMUM_INTERVAL,
            default_status: InstigatorStatus::Stopped,
            description: None,
        }
    }

    /// The job its run requests run, unless a request names another.
    pub fn job(mut self, name: impl Into<String>) -> Self {
        self.job = Some(name.into());
        self
    }

    /// For a run-status sensor: watches only the runs of job `name`.
    pub fn of_job(mut self, name: impl Into<String>) -> Self {
        if let SensorKind::RunStatus { of_job, .. } = &mut self.kind {
            *of_job = Some(name.into());
        }
        self
    }

    /// The shortest time between two evaluations (default [`DEFAULT_MINIMUM_INTERVAL`]).
    pub fn minimum_interval(mut self, interval: Duration) -> Self {
        self.minimum_interval = interval;
        self
    }

    /// Runs from the start, until stopped (default: stopped until started).
    pub fn running(mut self) -> Self {
        self.default_status = InstigatorStatus::Running;
        self
    }

    /// Sets the description.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = Some(text.into());
        self
    }

    /// The sensor's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its job, if it has one.
    pub fn job_name(&self) -> Option<&str> {
        self.job.as_deref()
    }

    /// The shortest time between two evaluations.
    pub fn interval(&self) -> Duration {
        self.minimum_interval
    }

    /// Whether it runs before anyone starts or stops it.
    pub fn default_status(&self) -> InstigatorStatus {
        self.default_status
    }

    /// Its description, if any.
    pub fn description_text(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// What kind of sensor it is: `function`, `asset` or `run_status`.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            SensorKind::Function(_) => "function",
            SensorKind::Asset(_) => "asset",
            SensorKind::RunStatus { .. } => "run_status",
        }
    }

    /// The resources its function takes.
    pub(crate) fn needs(&self) -> Option<&crate::requirements::Requirements> {
        match &self.kind {
            SensorKind::Function(callback) => Some(&callback.needs),
            SensorKind::RunStatus { callback, .. } => Some(&callback.needs),
            SensorKind::Asset(_) => None,
        }
    }
}

impl fmt::Debug for Sensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sensor")
            .field("name", &self.name)
            .field("kind", &self.kind_name())
            .field("job", &self.job)
            .field("minimum_interval", &self.minimum_interval)
            .field("default_status", &self.default_status)
            .finish()
    }
}
