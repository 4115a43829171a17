//! The one error type of dagrs-core.

use std::fmt;

/// Everything that can go wrong in dagrs-core: building [`Definitions`](crate::Definitions),
/// parsing a selection or run config, planning a run, and talking to storage.
///
/// Problems found while checking definitions or a run's inputs are collected and returned
/// together as [`Error::Invalid`], so one attempt shows every mistake.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Several problems were found at once; nothing was run or written.
    #[error("{0}")]
    Invalid(Problems),

    /// Two or more assets were registered under one key.
    #[error("duplicate asset key `{key}`: it is defined {count} times; rename one of them (`#[asset(key = \"...\")]`) or register it once")]
    DuplicateAsset {
        /// The key in question.
        key: String,
        /// How many assets use it.
        count: usize,
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

    /// The dependency graph has a cycle; `cycle` starts and ends with the same asset.
    #[error("dependency cycle: {}; break it by removing one of these dependencies", .cycle.join(" -> "))]
    Cycle {
        /// The assets of the cycle in order, the first repeated at the end.
        cycle: Vec<String>,
    },

    /// An asset takes a resource that was not provided.
    #[error("asset `{asset}` needs resource `{resource}`, which was not provided; add it with `Definitions::builder().resource(...)`")]
    MissingResource {
        /// The asset that needs the resource.
        asset: String,
        /// The resource's type.
        resource: &'static str,
    },

    /// A config value does not fit the asset's config type.
    #[error("invalid config for asset `{asset}`{}: {reason}", at_path(.path))]
    InvalidConfig {
        /// The asset whose config is wrong.
        asset: String,
        /// Where in the config, e.g. `batch_size` or `buckets[2]`; empty for the whole value.
        path: String,
        /// What is wrong.
        reason: String,
    },

    /// Config was given for a key that is not an asset of these Definitions.
    #[error("config given for `{key}`, which is not an asset of these Definitions{hint}")]
    ConfigForUnknownAsset {
        /// The unknown key.
        key: String,
        /// "did you mean" advice, possibly empty.
        hint: Hint,
    },

    /// Config was given for an asset that takes no `Config<..>` parameter.
    #[error("config given for asset `{asset}`, which takes no config; remove it or add a `Config<..>` parameter")]
    UnexpectedConfig {
        /// The asset.
        asset: String,
    },

    /// A selection names an asset that does not exist.
    #[error("unknown asset `{name}` in selection `{selection}`{hint}")]
    UnknownAsset {
        /// The unknown name.
        name: String,
        /// The whole selection as given.
        selection: String,
        /// "did you mean" advice, possibly empty.
        hint: Hint,
    },

    /// A selection could not be parsed or selects nothing.
    #[error("invalid selection `{selection}`: {reason}")]
    InvalidSelection {
        /// The whole selection as given.
        selection: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A selected asset needs an upstream output that is neither selected nor stored.
    #[error("asset `{asset}` needs the output of `{input}`, which is not selected and has no stored materialization; select it too (e.g. `+{asset}`) or materialize it first")]
    MissingInput {
        /// The asset that takes the input.
        asset: String,
        /// The upstream asset.
        input: String,
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

    /// A parameter could not be injected when the asset ran (the checks of `Definitions::build`
    /// make this rare: it happens for contexts built by hand).
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
}

fn at_path(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!(" at `{path}`")
    }
}

/// Problems found together, for example every mistake in a set of definitions.
#[derive(Debug)]
pub struct Problems(pub Vec<Error>);

impl Problems {
    /// The problems, in the order they were found.
    pub fn iter(&self) -> std::slice::Iter<'_, Error> {
        self.0.iter()
    }

    /// Turns a list of problems into `Ok(())` when it is empty, otherwise into one error.
    /// A single problem is returned as itself.
    pub(crate) fn check(mut problems: Vec<Error>) -> Result<(), Error> {
        match problems.len() {
            0 => Ok(()),
            1 => Err(problems.remove(0)),
            _ => Err(Error::Invalid(Problems(problems))),
        }
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} problems found:", self.0.len())?;
        for problem in &self.0 {
            write!(f, "\n  - {problem}")?;
        }
        Ok(())
    }
}

impl Error {
    /// Every individual problem this error stands for: the list of an [`Error::Invalid`],
    /// or the error itself.
    pub fn problems(&self) -> Vec<&Error> {
        match self {
            Error::Invalid(problems) => problems.iter().collect(),
            other => vec![other],
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
}

/// "Did you mean" advice: the known names closest to an unknown one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hint(pub Vec<String>);

impl Hint {
    /// The known names close to `name`, closest first (at most three).
    pub fn closest<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> Self {
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
