//! Declarative automation: conditions on assets that the [`Daemon`](crate::Daemon) evaluates
//! at every pass, requesting a run for each asset whose condition holds — instead of, or
//! beside, cron schedules.
//!
//! ```
//! use dagrs_core::prelude::*;
//!
//! #[asset]
//! async fn readings() -> Result<u32> { Ok(1) }
//!
//! // Runs whenever `readings` was updated, unless a run is already on it.
//! #[asset(deps = [readings], automation = eager())]
//! async fn hourly_means() -> Result<()> { Ok(()) }
//! ```
//!
//! Every evaluation that requests a run, or whose result changed since the last one, is
//! recorded with its reason (`asset automation NAME` on the command line, the asset page of
//! the web UI). A pass costs work in proportion to the assets with conditions plus what
//! changed since the last pass, not to the history.

mod condition;
pub(crate) mod evaluate;

pub use condition::{
    cron_tick_passed, deps_failed, deps_in_progress, deps_missing, deps_updated, eager,
    in_progress, missing, on_cron, on_missing, overdue, AutomationCondition,
};

/// The tag on runs requested by automation.
pub const AUTOMATION_TAG: &str = "dagrs/automation";
