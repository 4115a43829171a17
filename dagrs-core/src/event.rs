//! The event log of a run: typed, ordered, serializable.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::key::{AssetKey, RunId};
use crate::partition::PartitionRange;
use crate::text::{mask_secrets, named};

/// The current time, to the microsecond: what every backend keeps exactly.
pub(crate) fn now() -> DateTime<Utc> {
    use chrono::SubsecRound;
    Utc::now().trunc_subsecs(6)
}

/// Metadata an asset attaches to its materialization (row counts, paths, ...).
pub type Metadata = BTreeMap<String, serde_json::Value>;

/// One entry of a run's event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The run the event belongs to.
    pub run_id: RunId,
    /// Position in the run's log: 0, 1, 2, ... without gaps.
    pub seq: u64,
    /// When the event happened.
    pub timestamp: DateTime<Utc>,
    /// The asset the event is about; `None` for run-level events.
    pub asset: Option<AssetKey>,
    /// What happened.
    pub kind: EventKind,
}

/// What an [`Event`] records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// The run started with these assets selected, in the order they may run.
    RunStarted {
        /// The selected assets.
        selection: Vec<AssetKey>,
    },
    /// Every selected asset was materialized.
    RunSucceeded,
    /// At least one asset failed for good.
    RunFailed {
        /// The assets that failed.
        failed: Vec<AssetKey>,
        /// The assets skipped because something upstream failed.
        skipped: Vec<AssetKey>,
    },
    /// The run was cancelled before it could finish.
    RunCancelled,
    /// The run's process died (or stopped sending heartbeats) before the run ended; written
    /// by whoever found out.
    RunAbandoned {
        /// What was found, and how to re-execute the run.
        reason: String,
    },
    /// An attempt of a step started.
    StepStarted {
        /// 1 for the first attempt, 2 for the first retry, ...
        attempt: u32,
        /// The [`Worker`](crate::worker::Worker) that runs it, for a run on the step queue.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        worker: Option<String>,
    },
    /// An attempt failed.
    StepFailed {
        /// The attempt that failed.
        attempt: u32,
        /// The error with its chain of causes.
        error: ErrorInfo,
        /// Whether the retry policy schedules another attempt.
        will_retry: bool,
        /// The partitions the step was materializing, for a partitioned asset.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        partition: Option<PartitionRange>,
    },
    /// Another attempt is scheduled after a delay.
    StepRetrying {
        /// The attempt that will run next.
        next_attempt: u32,
        /// How long the executor waits before it.
        delay: Duration,
    },
    /// The asset was materialized.
    Materialization {
        /// Metadata the asset attached with `ctx.add_metadata`.
        metadata: Metadata,
        /// The asset's output, serialized.
        value: serde_json::Value,
        /// The asset's `code_version`, if it declares one.
        code_version: Option<String>,
        /// The partitions materialized, for a partitioned asset.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        partition: Option<PartitionRange>,
    },
    /// The step finished successfully.
    StepSucceeded {
        /// The attempt that succeeded.
        attempt: u32,
        /// How long that attempt ran.
        duration: Duration,
    },
    /// The step did not run.
    StepSkipped {
        /// Why, e.g. "upstream `a` failed" or "run cancelled".
        reason: String,
    },
    /// The step was running when the run was cancelled.
    StepCancelled {
        /// The attempt that was interrupted.
        attempt: u32,
    },
    /// A hook ran after the step.
    HookCompleted {
        /// The hook.
        hook: String,
    },
    /// A hook failed (or timed out); the run goes on.
    HookFailed {
        /// The hook.
        hook: String,
        /// Why.
        error: ErrorInfo,
    },
    /// An asset check was evaluated: a `#[asset_check]` after its asset's materialization, or
    /// a result the asset reported itself with `ctx.report_check`.
    CheckEvaluated {
        /// The check's name.
        check: String,
        /// Whether it passed.
        passed: bool,
        /// How bad a failure is.
        severity: crate::check::CheckSeverity,
        /// Whether a failure (of severity `error`) stops the assets downstream.
        blocking: bool,
        /// What it found.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        /// Numbers and facts it attached.
        #[serde(default, skip_serializing_if = "Metadata::is_empty")]
        metadata: Metadata,
    },
    /// A source asset was observed: its data version as the observation function saw it.
    /// A version that differs from the last one recorded counts as an update of the asset
    /// (a materialization record), so what depends on it becomes stale.
    Observation {
        /// The data version (a JSON string).
        data_version: serde_json::Value,
        /// Metadata the observation attached.
        #[serde(default, skip_serializing_if = "Metadata::is_empty")]
        metadata: Metadata,
        /// Whether the version differs from the last one recorded.
        changed: bool,
    },
    /// A log line from `ctx.log`.
    Log {
        /// Its level.
        level: LogLevel,
        /// The text.
        message: String,
    },
}

/// A one-line description, as the CLI shows it.
impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = |keys: &[AssetKey]| {
            keys.iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            EventKind::RunStarted { selection } => write!(f, "run started: {}", keys(selection)),
            EventKind::RunSucceeded => f.write_str("run succeeded"),
            EventKind::RunFailed { failed, skipped } => write!(
                f,
                "run failed: failed [{}], skipped [{}]",
                keys(failed),
                keys(skipped)
            ),
            EventKind::RunCancelled => f.write_str("run cancelled"),
            EventKind::RunAbandoned { reason } => write!(f, "run failed: {reason}"),
            EventKind::StepStarted { attempt, worker } => {
                write!(f, "started (attempt {attempt})")?;
                match worker {
                    Some(worker) => write!(f, " on worker {worker}"),
                    None => Ok(()),
                }
            }
            EventKind::StepFailed {
                attempt,
                error,
                will_retry,
                partition,
            } => {
                f.write_str("failed")?;
                if let Some(partition) = partition {
                    write!(f, " partition {partition}")?;
                }
                let retry = if *will_retry { ", will retry" } else { "" };
                write!(f, " (attempt {attempt}{retry}): {error}")
            }
            EventKind::StepRetrying {
                next_attempt,
                delay,
            } => write!(f, "retrying in {delay:?} (attempt {next_attempt})"),
            EventKind::Materialization {
                metadata,
                partition,
                ..
            } => {
                f.write_str("materialized")?;
                if let Some(partition) = partition {
                    write!(f, " partition {partition}")?;
                }
                for (k, v) in metadata {
                    write!(f, " {k}={v}")?;
                }
                Ok(())
            }
            EventKind::StepSucceeded { duration, .. } => {
                write!(f, "succeeded in {:.1?}", duration)
            }
            EventKind::StepSkipped { reason } => write!(f, "skipped: {reason}"),
            EventKind::StepCancelled { .. } => f.write_str("cancelled"),
            EventKind::HookCompleted { hook } => write!(f, "hook `{hook}` ran"),
            EventKind::HookFailed { hook, error } => write!(f, "hook `{hook}` failed: {error}"),
            EventKind::CheckEvaluated {
                check,
                passed,
                severity,
                blocking,
                description,
                metadata,
            } => {
                let verdict = if *passed { "passed" } else { "failed" };
                write!(f, "check `{check}` {verdict}")?;
                if !passed {
                    let blocking = if *blocking { ", blocking" } else { "" };
                    write!(f, " ({}{blocking})", severity.as_str())?;
                }
                if let Some(description) = description {
                    write!(f, ": {description}")?;
                }
                for (k, v) in metadata {
                    write!(f, " {k}={v}")?;
                }
                Ok(())
            }
            EventKind::Observation {
                data_version,
                changed,
                metadata,
            } => {
                let version = data_version
                    .as_str()
                    .map_or_else(|| data_version.to_string(), str::to_owned);
                let changed = if *changed { "new" } else { "unchanged" };
                write!(f, "observed data version {version} ({changed})")?;
                for (k, v) in metadata {
                    write!(f, " {k}={v}")?;
                }
                Ok(())
            }
            EventKind::Log { level, message } => {
                write!(f, "{}: {message}", level.as_str())
            }
        }
    }
}

/// The level of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Detail for debugging.
    Debug,
    /// Normal progress.
    Info,
    /// Something looks wrong but the asset goes on.
    Warn,
    /// Something failed.
    Error,
}

/// An error as recorded in the event log: its message and the chain of its causes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// The top-level message.
    pub message: String,
    /// The messages of the causes, outermost first (without `message`).
    pub causes: Vec<String>,
}

impl ErrorInfo {
    pub(crate) fn from_anyhow(error: &anyhow::Error) -> Self {
        let mut chain = error.chain().map(|e| mask_secrets(&e.to_string()));
        ErrorInfo {
            message: chain.next().unwrap_or_default(),
            causes: chain.collect(),
        }
    }
}

impl std::fmt::Display for ErrorInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        for cause in &self.causes {
            write!(f, ": {cause}")?;
        }
        Ok(())
    }
}

/// The state of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunStatus {
    /// Waiting in the run queue for a daemon to start it.
    Queued,
    /// Started and not finished.
    Running,
    /// Asked to cancel; its process stops it and records how it ended.
    Canceling,
    /// Every selected asset was materialized.
    Succeeded,
    /// At least one asset failed.
    Failed,
    /// Cancelled before the end.
    Cancelled,
}

/// How one step of a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Materialized.
    Succeeded,
    /// Failed after its last attempt.
    Failed,
    /// Not run because something upstream failed or the run was cancelled.
    Skipped,
    /// Interrupted by cancellation while running.
    Cancelled,
}

named!(RunStatus, "run status", {
    Queued => "queued",
    Running => "running",
    Canceling => "canceling",
    Succeeded => "succeeded",
    Failed => "failed",
    Cancelled => "cancelled",
});

named!(StepStatus, "step status", {
    Succeeded => "succeeded",
    Failed => "failed",
    Skipped => "skipped",
    Cancelled => "cancelled",
});

named!(LogLevel, "log level", {
    Debug => "debug",
    Info => "info",
    Warn => "warn",
    Error => "error",
});

impl RunStatus {
    /// Whether the run has ended (succeeded, failed or cancelled).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled
        )
    }
}

/// A materialization event's parts, borrowed from the event (see [`Event::materialization`]).
#[derive(Debug, Clone, Copy)]
pub struct MaterializationRef<'a> {
    /// The asset.
    pub asset: &'a AssetKey,
    /// Its metadata.
    pub metadata: &'a Metadata,
    /// Its serialized output.
    pub value: &'a serde_json::Value,
    /// The asset's code version at the time.
    pub code_version: Option<&'a str>,
    /// The partitions materialized, for a partitioned asset.
    pub partition: Option<&'a PartitionRange>,
}

impl Event {
    /// The materialization this event records, if it is one: what every store keeps as a
    /// materialization record. An observation of a source asset with a new data version is
    /// one too (its value is the version): it is when the asset's data changed.
    pub fn materialization(&self) -> Option<MaterializationRef<'_>> {
        match (&self.asset, &self.kind) {
            (
                Some(asset),
                EventKind::Materialization {
                    metadata,
                    value,
                    code_version,
                    partition,
                },
            ) => Some(MaterializationRef {
                asset,
                metadata,
                value,
                code_version: code_version.as_deref(),
                partition: partition.as_ref(),
            }),
            (
                Some(asset),
                EventKind::Observation {
                    data_version,
                    metadata,
                    changed: true,
                },
            ) => Some(MaterializationRef {
                asset,
                metadata,
                value: data_version,
                code_version: None,
                partition: None,
            }),
            _ => None,
        }
    }

    /// Whether this event ends its run's log.
    pub fn is_final(&self) -> bool {
        self.kind.is_final()
    }
}

impl EventKind {
    /// Whether an event of this kind ends a run's log (succeeded, failed, cancelled).
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            EventKind::RunSucceeded | EventKind::RunFailed { .. } | EventKind::RunCancelled
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_match_serde_and_parse_back() {
        for status in [
            RunStatus::Queued,
            RunStatus::Running,
            RunStatus::Canceling,
            RunStatus::Succeeded,
            RunStatus::Failed,
            RunStatus::Cancelled,
        ] {
            let serde = serde_json::to_value(status).unwrap();
            assert_eq!(serde, status.as_str());
            assert_eq!(status.as_str().parse::<RunStatus>(), Ok(status));
        }
        for level in [
            LogLevel::Debug,
            LogLevel::Info,
            LogLevel::Warn,
            LogLevel::Error,
        ] {
            assert_eq!(serde_json::to_value(level).unwrap(), level.as_str());
        }
        let err = "paused".parse::<RunStatus>().unwrap_err();
        assert!(err.contains("`paused`") && err.contains("running"), "{err}");
    }
}
