//! Errors by phase: [`DefinitionsError`] lists every problem of a set of definitions when it
//! is built; [`Error`] is everything that can go wrong afterwards, when a run is planned,
//! driven or read back. [`Problem`] is one mistake found by a check, in either phase.

use std::fmt;

use crate::text::{bounded, bounded_list, ECHO_LIMIT, LIST_LIMIT};

/// Who is expected to provide what an asset needs; it decides how a [`Problem`] says to fix
/// a missing resource, input or config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Provider {
    /// The [`Definitions`](crate::Definitions) being built.
    Definitions,
    /// A run: its selection, its run config and the stored materializations.
    Run,
    /// A test context from [`build_asset_context`](crate::build_asset_context).
    Test,
}

/// One mistake found by checking definitions, a run's config, or a test context. Checks
/// collect every problem they find, so one attempt shows them all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// Two or more assets were registered under one key.
    #[error("duplicate asset key `{key}`: it is defined {count} times{}; rename one of them (`#[asset(key = \"...\")]`) or register it once", by_list(.defined_by))]
    DuplicateAsset {
        /// The key in question.
        key: String,
        /// How many assets use it.
        count: usize,
        /// What defines it, in registration order, when a multi-asset is among them:
        /// `multi-asset `split`` for an out of a multi-asset, `asset `key`` for an asset;
        /// empty when only assets do.
        defined_by: Vec<String>,
    },

    /// An asset key contains characters that selections cannot express.
    #[error("invalid asset key `{key}`: keys are non-empty and use only letters, digits, `_`, `-`, `.` and `/`")]
    InvalidKey {
        /// The rejected key.
        key: String,
    },

    /// An asset depends on a key no registered asset has.
    #[error("asset `{asset}` depends on `{dep}`, which is not registered in these Definitions{hint}; register it or fix the name")]
    UnknownDependency {
        /// The asset that declares the dependency.
        asset: String,
        /// The missing dependency.
        dep: String,
        /// "did you mean" advice, possibly empty.
        hint: Hint,
    },

    /// An asset takes the output of another asset as a different type than that asset produces.
    #[error("asset `{asset}` takes the output of `{input}` as `{expected}`, but `{input}` produces `{actual}`")]
    InputTypeMismatch {
        /// The consuming asset.
        asset: String,
        /// The producing asset.
        input: String,
        /// The type the consumer asks for.
        expected: &'static str,
        /// The type the producer returns.
        actual: &'static str,
    },

    /// The dependency graph has a cycle; `cycle` starts and ends with the same asset, and each
    /// asset feeds the next (the next depends on it).
    #[error("dependency cycle: {}; break it by removing one of these dependencies", feeds(.cycle))]
    Cycle {
        /// The assets of the cycle in order, the first repeated at the end.
        cycle: Vec<String>,
    },

    /// An asset takes a resource that was not provided.
    #[error("asset `{asset}` needs resource `{resource}`, which was not provided; {}", match .provider {
        Provider::Test => "give it to the test with `build_asset_context().resource(...)`",
        _ => "add it with `Definitions::builder().resource(...)`",
    })]
    MissingResource {
        /// The asset that needs the resource.
        asset: String,
        /// The resource's type.
        resource: &'static str,
        /// Who should provide it.
        provider: Provider,
    },

    /// An asset takes the output of an upstream asset that is not available.
    #[error("asset `{asset}` needs the output of `{input}`, {}", match .provider {
        Provider::Test => format!("which the test does not provide; give it with `build_asset_context().input::<{input}>(...)`"),
        _ => format!("which is not selected and has no stored materialization; select it too (e.g. `+{asset}`) or materialize it first"),
    })]
    MissingInput {
        /// The asset that takes the input.
        asset: String,
        /// The upstream asset.
        input: String,
        /// Who should provide it.
        provider: Provider,
    },

    /// A config value does not fit the asset's config type.
    #[error("invalid config for asset `{asset}`{}: {reason}", at_path(.path))]
    InvalidConfig {
        /// The asset whose config is wrong.
        asset: String,
        /// Where in the config, e.g. `batch_size` or `buckets[2]`; empty for the whole value.
        path: String,
        /// What is wrong (cut to a bounded length).
        reason: String,
    },

    /// Config was given for a key that is not an asset of these Definitions.
    #[error("config given for `{key}`, which is not an asset of these Definitions{hint}")]
    ConfigForUnknownAsset {
        /// The unknown key (cut to a bounded length).
        key: String,
        /// "did you mean" advice, possibly empty.
        hint: Hint,
    },

    /// Config was given for an asset that takes no `Config<..>` parameter.
    #[error("config given for asset `{asset}`, which takes no config; {}", match .provider {
        Provider::Test => "remove `.config(...)` from the test context or add a `Config<..>` parameter",
        Provider::Definitions => "remove it from the default config or add a `Config<..>` parameter",
        Provider::Run => "remove it from the run config or add a `Config<..>` parameter",
    })]
    UnexpectedConfig {
        /// The asset.
        asset: String,
        /// Where the config came from.
        provider: Provider,
    },

    /// Two jobs, schedules or sensors have the same name.
    #[error("duplicate {kind} name `{name}`: it is defined {count} times; give each {kind} a name of its own")]
    DuplicateName {
        /// `job`, `schedule` or `sensor`.
        kind: &'static str,
        /// The name.
        name: String,
        /// How many use it.
        count: usize,
    },

    /// A job cannot run: its name, selection or config is wrong, or a hook lacks a resource.
    #[error("job `{job}` is invalid: {reason}")]
    InvalidJob {
        /// The job.
        job: String,
        /// What is wrong.
        reason: String,
    },

    /// A schedule cannot run: its cron expression, time zone or job is wrong.
    #[error("schedule `{schedule}` is invalid: {reason}")]
    InvalidSchedule {
        /// The schedule.
        schedule: String,
        /// What is wrong.
        reason: String,
    },

    /// A sensor cannot run: its job or watched assets are unknown, or it lacks a resource.
    #[error("sensor `{sensor}` is invalid: {reason}")]
    InvalidSensor {
        /// The sensor.
        sensor: String,
        /// What is wrong.
        reason: String,
    },

    /// An asset's partitions, partition mappings or `Partition<T>` parameter are wrong.
    #[error("asset `{asset}`: {reason}")]
    InvalidPartitions {
        /// The asset.
        asset: String,
        /// What is wrong, and how to fix it.
        reason: String,
    },

    /// A run's partition (key or range) is malformed, unknown, out of range, or does not fit
    /// the selected assets.
    #[error("partition `{target}` cannot run: {reason}")]
    InvalidPartition {
        /// The key or range as given (cut to a bounded length).
        target: String,
        /// What is wrong, naming what would be valid.
        reason: String,
    },

    /// A partition depends on partitions of an unselected asset that are not materialized.
    #[error("asset `{asset}` partition `{partition}` needs {missing_count} partition(s) of `{dep}` that are not materialized ({missing}); materialize them first, e.g. select `{dep}` too or backfill it")]
    UpstreamPartitions {
        /// The asset.
        asset: String,
        /// Its partitions in the run.
        partition: String,
        /// The dependency.
        dep: String,
        /// How many needed partitions are missing.
        missing_count: u64,
        /// The first missing ranges, as keys.
        missing: String,
    },

    /// An asset check is wrong: on an unknown or external asset, named twice, taking inputs
    /// other than its asset's output, or needing what is not provided.
    #[error("asset check `{check}` of `{asset}`: {reason}")]
    InvalidCheck {
        /// The asset it checks.
        asset: String,
        /// The check's name.
        check: String,
        /// What is wrong, and how to fix it.
        reason: String,
    },

    /// An asset's kind does not allow what it is given (an automation condition on a source
    /// asset, an input from an external one), or its automation condition is invalid.
    #[error("asset `{asset}`: {reason}")]
    InvalidAsset {
        /// The asset.
        asset: String,
        /// What is wrong, and how to fix it.
        reason: String,
    },

    /// A hook needs a resource that was not provided.
    #[error("hook `{hook}` needs resource `{resource}`, which was not provided; add it with `Definitions::builder().resource(...)`")]
    HookResource {
        /// The hook.
        hook: String,
        /// The resource's type.
        resource: &'static str,
    },

    /// The outs of a multi-asset do not fit together: an out has dependencies of its own,
    /// or partitions.
    #[error("multi-asset `{multi_asset}`: {reason}")]
    InvalidMultiAsset {
        /// The multi-asset.
        multi_asset: String,
        /// What is wrong.
        reason: String,
    },

    /// A stored output could not be read back as the type its asset produces.
    #[error("the stored output of asset `{asset}` cannot be read as `{type_name}`: {reason}; materialize `{asset}` again")]
    StoredOutput {
        /// The asset whose stored output is unreadable.
        asset: String,
        /// The type the output should have.
        type_name: &'static str,
        /// The decoding error.
        reason: String,
    },
}

/// `a` feeds `b`, `b` feeds `a` — bounded for very long cycles.
fn feeds(cycle: &[String]) -> String {
    let edges = cycle
        .windows(2)
        .map(|pair| format!("`{}` feeds `{}`", pair[0], pair[1]));
    bounded_list(edges, ", ")
}

/// ` (by multi-asset `split` and asset `clean`)`, or nothing for assets alone.
fn by_list(by: &[String]) -> String {
    if by.is_empty() {
        String::new()
    } else {
        format!(" (by {})", bounded_list(by.iter(), " and "))
    }
}

fn at_path(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!(" at `{path}`")
    }
}

/// Problems found together. Shows the first few and counts the rest, so the message stays
/// short however many there are; [`iter`](Self::iter) has them all.
#[derive(Debug)]
pub struct Problems(Vec<Problem>);

impl Problems {
    /// The problems, in the order they were found.
    pub fn iter(&self) -> std::slice::Iter<'_, Problem> {
        self.0.iter()
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let [one] = self.0.as_slice() {
            return one.fmt(f);
        }
        write!(f, "{} problems found:", self.0.len())?;
        for problem in self.0.iter().take(LIST_LIMIT * 2) {
            write!(f, "\n  - {problem}")?;
        }
        if self.0.len() > LIST_LIMIT * 2 {
            write!(f, "\n  - and {} more", self.0.len() - LIST_LIMIT * 2)?;
        }
        Ok(())
    }
}

impl<'a> IntoIterator for &'a Problems {
    type Item = &'a Problem;
    type IntoIter = std::slice::Iter<'a, Problem>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Definitions that cannot be built: every problem found, listed together (keys, unknown
/// dependencies, input types, cycles, missing resources, invalid default config).
#[derive(Debug, thiserror::Error)]
#[error("invalid definitions: {0}")]
pub struct DefinitionsError(pub(crate) Problems);

impl DefinitionsError {
    /// Every problem found.
    pub fn problems(&self) -> &Problems {
        &self.0
    }

    pub(crate) fn check(problems: Vec<Problem>) -> Result<(), DefinitionsError> {
        if problems.is_empty() {
            Ok(())
        } else {
            Err(DefinitionsError(Problems(problems)))
        }
    }
}

/// Everything that can go wrong once definitions are built: planning a run (its selection,
/// config and inputs), driving it, and reading or writing run history.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// What a run needs is wrong or missing (its config, an upstream output); nothing ran.
    #[error("{0}")]
    Invalid(Problems),

    /// A selection names unknown assets, groups or tags, cannot be parsed, or selects nothing.
    #[error("invalid selection `{selection}`: {}", .reasons.join("; "))]
    InvalidSelection {
        /// The selection as given, cut to a bounded length.
        selection: String,
        /// What is wrong, each distinct problem once.
        reasons: Vec<String>,
    },

    /// A job, schedule or sensor name that the definitions do not have.
    #[error("no job named `{name}`{hint}")]
    UnknownJob {
        /// The name as given (cut to a bounded length).
        name: String,
        /// "did you mean" advice, possibly empty.
        hint: Hint,
    },

    /// A schedule or sensor name that the definitions do not have.
    #[error("no schedule or sensor named `{name}`{hint}")]
    UnknownInstigator {
        /// The name as given (cut to a bounded length).
        name: String,
        /// "did you mean" advice, possibly empty.
        hint: Hint,
    },

    /// A sensor's evaluation failed.
    #[error("sensor `{sensor}` failed: {reason}")]
    Sensor {
        /// The sensor.
        sensor: String,
        /// Its error, passwords masked.
        reason: String,
    },

    /// A run config document (a file, or JSON text) could not be read or parsed.
    #[error("invalid run config in {origin}: {reason}")]
    RunConfig {
        /// Where it came from, e.g. `the file run.yaml`.
        origin: String,
        /// What is wrong with it (cut to a bounded length).
        reason: String,
    },

    /// A parameter could not be injected when the asset ran (the checks before a run make
    /// this rare: it happens for contexts built by hand).
    #[error("cannot inject `{param}` into asset `{asset}`: {reason}")]
    Injection {
        /// The asset.
        asset: String,
        /// The parameter type.
        param: &'static str,
        /// Why it could not be injected.
        reason: String,
    },

    /// A run asked to be re-executed has nothing left to run.
    #[error("run `{run_id}` has nothing to re-execute: every asset of it succeeded")]
    NothingToReexecute {
        /// The run.
        run_id: String,
    },

    /// A run that is still running cannot be re-executed.
    #[error(
        "run `{run_id}` is still running; cancel it or wait for it to end before re-executing it"
    )]
    RunStillRunning {
        /// The run.
        run_id: String,
    },

    /// A backfill that storage does not know, or that cannot do what was asked in its
    /// status.
    #[error("backfill `{id}`: {reason}")]
    Backfill {
        /// The backfill's id (cut to a bounded length).
        id: String,
        /// What is wrong.
        reason: String,
    },

    /// A run id that storage does not know.
    #[error("run `{0}` not found in storage")]
    RunNotFound(String),

    /// The storage backend failed.
    #[error("storage failed while trying to {operation}: {source}")]
    Storage {
        /// What dagrs was doing, e.g. "append events".
        operation: &'static str,
        /// The backend's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// A run could not be driven to its end (its task panicked or was aborted).
    #[error("run `{run_id}` was interrupted: {reason}")]
    RunInterrupted {
        /// The run.
        run_id: String,
        /// Why.
        reason: String,
    },

    /// Workers or the queue launcher were asked of an instance without a step queue.
    #[error("this instance has no step queue: workers and `--launcher queue` need an instance on PostgreSQL (`dagrs_postgres::PgStorage::instance`, or `Instance::with_step_queue`)")]
    NoStepQueue,

    /// A run that the step queue cannot take.
    #[error(
        "asset `{asset}` cannot run on the step queue: {reason}; launch the run in-process instead"
    )]
    NotQueueable {
        /// The asset.
        asset: String,
        /// Why.
        reason: String,
    },

    /// A step's serialized output is over the limit of what is kept for downstream steps.
    #[error("the output of `{asset}` is {size} bytes serialized, over the limit of {limit} bytes kept between workers; return a reference to the data (a table, a path) instead, or raise the limit (`PgStorage::with_output_limit`)")]
    OutputTooLarge {
        /// The asset.
        asset: String,
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

impl Error {
    /// Every problem of an [`Error::Invalid`]; empty for other errors.
    pub fn problems(&self) -> &[Problem] {
        match self {
            Error::Invalid(problems) => &problems.0,
            _ => &[],
        }
    }

    pub(crate) fn storage(
        operation: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error::Storage {
            operation,
            source: source.into(),
        }
    }

    pub(crate) fn invalid(problems: Vec<Problem>) -> Self {
        Error::Invalid(Problems(problems))
    }

    /// A selection error; `selection` is cut to a bounded length, and the reasons (each
    /// bounded by its maker) to the first few distinct ones.
    pub(crate) fn selection(selection: &str, mut reasons: Vec<String>) -> Self {
        let mut seen = std::collections::HashSet::new();
        reasons.retain(|reason| seen.insert(reason.clone()));
        if reasons.len() > LIST_LIMIT {
            let more = reasons.len() - LIST_LIMIT;
            reasons.truncate(LIST_LIMIT);
            reasons.push(format!("and {more} more"));
        }
        Error::InvalidSelection {
            selection: bounded(selection, ECHO_LIMIT).into_owned(),
            reasons,
        }
    }
}

impl From<Problem> for Error {
    fn from(problem: Problem) -> Self {
        Error::Invalid(Problems(vec![problem]))
    }
}

/// "Did you mean" advice: the known names closest to an unknown one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hint(pub Vec<String>);

impl Hint {
    /// The known names close to `name`, closest first (at most three). Names much longer than
    /// any key are not compared, so the work stays bounded.
    pub fn closest<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> Self {
        if name.len() > 4 * ECHO_LIMIT {
            return Hint::default();
        }
        let mut scored: Vec<(f64, &str)> = known
            .into_iter()
            .map(|candidate| (strsim::jaro_winkler(name, candidate), candidate))
            .filter(|(score, candidate)| {
                *score >= 0.8 || strsim::levenshtein(name, candidate) <= (name.len() / 3).max(1)
            })
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        scored.dedup_by(|a, b| a.1 == b.1);
        Hint(
            scored
                .into_iter()
                .take(3)
                .map(|(_, name)| name.to_owned())
                .collect(),
        )
    }
}

impl fmt::Display for Hint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [] => Ok(()),
            [one] => write!(f, "; did you mean `{one}`?"),
            many => {
                let quoted: Vec<String> = many.iter().map(|n| format!("`{n}`")).collect();
                write!(f, "; did you mean one of {}?", quoted.join(", "))
            }
        }
    }
}
