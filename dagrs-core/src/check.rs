//! Asset checks: data-quality tests attached to an asset, run right after each of its
//! materializations, in the same step. A failing *blocking* check of severity `error` fails
//! the step after the materialization is recorded, so everything downstream is skipped.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::event::Metadata;
use crate::key::AssetKey;
use crate::requirements::Requirements;
use crate::scope::StepScope;
use crate::text::named;

/// How bad a failing check is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckSeverity {
    /// Worth a look; never stops anything.
    Warn,
    /// The data is wrong; a blocking check of this severity stops what lies downstream.
    #[default]
    Error,
}

named!(CheckSeverity, "check severity", {
    Warn => "warn",
    Error => "error",
});

/// What a check found: passed or failed, how bad, why, and facts to keep with it.
///
/// ```
/// use dagrs_core::{CheckResult, CheckSeverity};
///
/// let gaps = 2;
/// let result = CheckResult::new(gaps == 0)
///     .description(format!("{gaps} hours without readings"))
///     .severity(CheckSeverity::Warn)
///     .metadata("gaps", gaps);
/// assert!(!result.is_passed());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct CheckResult {
    pub(crate) passed: bool,
    pub(crate) severity: CheckSeverity,
    pub(crate) description: Option<String>,
    pub(crate) metadata: Metadata,
}

impl CheckResult {
    /// Passed when `passed` is true, else failed (severity `error`).
    pub fn new(passed: bool) -> Self {
        CheckResult {
            passed,
            severity: CheckSeverity::Error,
            description: None,
            metadata: Metadata::new(),
        }
    }

    /// A passing result.
    pub fn passed() -> Self {
        Self::new(true)
    }

    /// A failing result (severity `error`), saying what is wrong.
    pub fn failed(description: impl Into<String>) -> Self {
        Self::new(false).description(description)
    }

    /// Sets the severity of a failure (default [`CheckSeverity::Error`]).
    pub fn severity(mut self, severity: CheckSeverity) -> Self {
        self.severity = severity;
        self
    }

    /// Says what the check found.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = Some(text.into());
        self
    }

    /// Attaches a value (a count, a bound, a sample) to the result.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Serialize) -> Self {
        let value = serde_json::to_value(value).unwrap_or_else(|e| e.to_string().into());
        self.metadata.insert(key.into(), value);
        self
    }

    /// Whether it passed.
    pub fn is_passed(&self) -> bool {
        self.passed
    }

    /// Whether this result stops downstream assets when its check is blocking: it failed
    /// with severity `error`.
    pub(crate) fn blocks(&self) -> bool {
        !self.passed && self.severity == CheckSeverity::Error
    }

    /// The event recording this result of check `name`.
    pub(crate) fn into_event(self, name: &str, blocking: bool) -> crate::event::EventKind {
        crate::event::EventKind::CheckEvaluated {
            check: name.to_owned(),
            passed: self.passed,
            severity: self.severity,
            blocking,
            description: self.description.map(|d| crate::text::mask_secrets(&d)),
            metadata: self.metadata,
        }
    }
}

/// What a check function may return: a [`CheckResult`], or `Result<CheckResult, E>` (an
/// error counts as a failure of severity `error`).
#[diagnostic::on_unimplemented(
    message = "an asset check cannot return `{Self}`",
    label = "not an asset check's return type",
    note = "asset checks return `CheckResult` or `Result<CheckResult, E>` with `E` convertible into `anyhow::Error`"
)]
pub trait IntoCheckResult {
    /// Converts the function's return value.
    fn into_check_result(self) -> anyhow::Result<CheckResult>;
}

impl IntoCheckResult for CheckResult {
    fn into_check_result(self) -> anyhow::Result<CheckResult> {
        Ok(self)
    }
}

impl<E: Into<anyhow::Error>> IntoCheckResult for Result<CheckResult, E> {
    fn into_check_result(self) -> anyhow::Result<CheckResult> {
        self.map_err(Into::into)
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type CheckCompute = Arc<dyn Fn(StepScope) -> BoxFuture<anyhow::Result<CheckResult>> + Send + Sync>;

/// An asset check defined with `#[asset_check]`: the macro emits a marker type named like
/// the function and implements this trait for it.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an asset check",
    label = "not an asset check",
    note = "name a function marked with `#[asset_check(asset = ...)]`"
)]
pub trait AssetCheck: 'static {
    /// The check's runtime description.
    fn spec() -> CheckSpec;
}

/// The runtime description of an asset check: which asset it checks, its name, whether it
/// blocks, and the function that evaluates it. `#[asset_check]` builds one; build one by hand
/// for checks known only at run time:
///
/// ```
/// use dagrs_core::{AssetSpec, CheckResult, CheckSpec, Definitions};
///
/// let defs = Definitions::builder()
///     .spec(AssetSpec::new("rows", |_scope| async { Ok(3_u64) }))
///     .check(CheckSpec::new("rows", "not_empty", |scope| async move {
///         let rows = scope.input::<u64>("rows")?;
///         Ok(CheckResult::new(*rows > 0))
///     }).blocking(true))
///     .build()
///     .unwrap();
/// assert_eq!(defs.checks_of("rows").count(), 1);
/// ```
#[derive(Clone)]
pub struct CheckSpec {
    pub(crate) asset: AssetKey,
    pub(crate) name: String,
    pub(crate) blocking: bool,
    pub(crate) description: Option<String>,
    pub(crate) needs: Requirements,
    pub(crate) compute: CheckCompute,
}

impl CheckSpec {
    /// Check `name` of asset `asset`, evaluated by `compute`, which gets a [`StepScope`] whose
    /// only input is the asset's fresh output.
    pub fn new<F, Fut>(asset: impl Into<AssetKey>, name: impl Into<String>, compute: F) -> Self
    where
        F: Fn(StepScope) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<CheckResult>> + Send + 'static,
    {
        let compute: CheckCompute = Arc::new(move |scope| Box::pin(compute(scope)) as BoxFuture<_>);
        CheckSpec {
            asset: asset.into(),
            name: name.into(),
            blocking: false,
            description: None,
            needs: Requirements::default(),
            compute,
        }
    }

    /// Whether a failure of severity `error` stops the assets downstream (default: no).
    pub fn blocking(mut self, blocking: bool) -> Self {
        self.blocking = blocking;
        self
    }

    /// Sets the description.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = Some(text.into());
        self
    }

    /// Declares what the function needs (resources, config, the asset's output).
    pub fn needs(mut self, declare: impl FnOnce(&mut Requirements)) -> Self {
        declare(&mut self.needs);
        self
    }

    /// The asset it checks.
    pub fn asset(&self) -> &AssetKey {
        &self.asset
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether it blocks.
    pub fn is_blocking(&self) -> bool {
        self.blocking
    }

    /// Its description, if any.
    pub fn description_text(&self) -> Option<&str> {
        self.description.as_deref()
    }
}

impl fmt::Debug for CheckSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckSpec")
            .field("asset", &self.asset)
            .field("name", &self.name)
            .field("blocking", &self.blocking)
            .finish_non_exhaustive()
    }
}

/// One check of an asset as the command line and the web UI list it: declared with
/// `#[asset_check]` (`spec`), or only reported by the asset itself, with its latest result.
pub(crate) struct CheckSummary<'a> {
    pub(crate) name: &'a str,
    pub(crate) spec: Option<&'a CheckSpec>,
    pub(crate) latest: Option<&'a crate::storage::CheckRecord>,
}

impl CheckSummary<'_> {
    /// `yes`, `no`, or `reported` for a check the asset reported itself.
    pub(crate) fn blocking_text(&self) -> &'static str {
        match self.spec {
            Some(spec) if spec.blocking => "yes",
            Some(_) => "no",
            None => "reported",
        }
    }
}

/// The declared checks, then those only the records (newest first) name, each with its
/// newest record.
pub(crate) fn summaries<'a>(
    declared: impl Iterator<Item = &'a CheckSpec>,
    records: &'a [crate::storage::CheckRecord],
) -> Vec<CheckSummary<'a>> {
    let mut all: Vec<CheckSummary<'a>> = declared
        .map(|spec| CheckSummary {
            name: &spec.name,
            spec: Some(spec),
            latest: None,
        })
        .collect();
    for record in records {
        match all.iter_mut().find(|s| s.name == record.check) {
            Some(summary) => {
                summary.latest.get_or_insert(record);
            }
            None => all.push(CheckSummary {
                name: &record.check,
                spec: None,
                latest: Some(record),
            }),
        }
    }
    all
}
