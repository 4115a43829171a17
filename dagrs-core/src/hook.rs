//! Hooks: functions run after a step succeeds or fails for good — per asset, per job, or
//! for every asset — with resources injected, e.g. a Slack alert. A failing hook is an event
//! in the run's log; it never fails the run.

use std::fmt;
use std::time::Duration;

use crate::event::{ErrorInfo, Metadata, StepStatus};
use crate::handler::{Callback, Handler};
use crate::key::{AssetKey, RunId};

/// When a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookOn {
    /// After the step materialized its asset.
    Success,
    /// After the step failed for good (its last attempt).
    Failure,
}

/// What a hook knows of the step it follows.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HookContext {
    /// The run.
    pub run_id: RunId,
    /// The step's asset.
    pub asset: AssetKey,
    /// The run's job, if it runs one.
    pub job: Option<String>,
    /// How the step ended.
    pub status: StepStatus,
    /// Its last attempt.
    pub attempt: u32,
    /// Why it failed, for failure hooks (passwords masked).
    pub error: Option<ErrorInfo>,
    /// The metadata of its materialization, for success hooks.
    pub metadata: Metadata,
}

/// The longest a hook may run unless told otherwise.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(30);

/// A function run after a step succeeds or fails: on an asset (`AssetSpec::hook`,
/// `#[asset(hooks = [...])]`), on a job (`AssetJob::hook`) or on every asset
/// (`DefinitionsBuilder::hook`). Resources are injected like an asset's: `Res<R>` parameters
/// after the context.
///
/// ```
/// use dagrs_core::{Hook, HookContext, Res};
///
/// struct Pager;
/// impl Pager {
///     async fn page(&self, text: &str) -> anyhow::Result<()> { Ok(()) }
/// }
///
/// let hook = Hook::on_failure("page_on_call", |ctx: HookContext, pager: Res<Pager>| async move {
///     let error = ctx.error.map(|e| e.to_string()).unwrap_or_default();
///     pager.page(&format!("{} failed in run {}: {error}", ctx.asset, ctx.run_id)).await
/// });
/// assert_eq!(hook.name(), "page_on_call");
/// ```
#[derive(Clone)]
pub struct Hook {
    pub(crate) name: String,
    pub(crate) on: HookOn,
    pub(crate) callback: Callback<HookContext, ()>,
    pub(crate) timeout: Duration,
}

impl Hook {
    /// A hook run after each step that succeeded.
    pub fn on_success<Args, H: Handler<HookContext, Args, ()>>(
        name: impl Into<String>,
        handler: H,
    ) -> Self {
        Self::new(name, HookOn::Success, handler)
    }

    /// A hook run after each step that failed for good.
    pub fn on_failure<Args, H: Handler<HookContext, Args, ()>>(
        name: impl Into<String>,
        handler: H,
    ) -> Self {
        Self::new(name, HookOn::Failure, handler)
    }

    fn new<Args, H: Handler<HookContext, Args, ()>>(
        name: impl Into<String>,
        on: HookOn,
        handler: H,
    ) -> Self {
        Hook {
            name: name.into(),
            on,
            callback: Callback::new(handler),
            timeout: DEFAULT_HOOK_TIMEOUT,
        }
    }

    /// Stops the hook after `timeout` (default [`DEFAULT_HOOK_TIMEOUT`]), as a failure.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The hook's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// When it runs.
    pub fn on(&self) -> HookOn {
        self.on
    }
}

impl fmt::Debug for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hook")
            .field("name", &self.name)
            .field("on", &self.on)
            .field("timeout", &self.timeout)
            .finish()
    }
}
