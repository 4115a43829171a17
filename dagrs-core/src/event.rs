//! The event log of a run: typed, ordered, serializable.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::key::{AssetKey, RunId};

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
    },
    /// An attempt failed.
    StepFailed {
        /// The attempt that failed.
        attempt: u32,
        /// The error with its chain of causes.
        error: ErrorInfo,
        /// Whether the retry policy schedules another attempt.
        will_retry: bool,
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
            EventKind::StepStarted { attempt } => write!(f, "started (attempt {attempt})"),
            EventKind::StepFailed {
                attempt,
                error,
                will_retry,
            } => write!(
                f,
                "failed (attempt {attempt}{}): {error}",
                if *will_retry { ", will retry" } else { "" }
            ),
            EventKind::StepRetrying {
                next_attempt,
                delay,
            } => write!(f, "retrying in {delay:?} (attempt {next_attempt})"),
            EventKind::Materialization { metadata, .. } => {
                f.write_str("materialized")?;
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
            EventKind::Log { level, message } => {
                write!(f, "{}: {message}", format!("{level:?}").to_lowercase())
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

/// `text` with the password of every URL in it (`scheme://user:password@host`) replaced by
/// `***`, so secrets that reach an error or a log line never reach the event log.
pub fn mask_secrets(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        // The authority ends at the first '/', '?', '#' or whitespace.
        let end = tail
            .find(|c: char| matches!(c, '/' | '?' | '#') || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..colon]);
                        out.push_str(":***");
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
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
pub enum RunStatus {
    /// Started and not finished.
    Running,
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

#[cfg(test)]
mod tests {
    use super::mask_secrets;

    #[test]
    fn passwords_in_urls_are_masked() {
        assert_eq!(
            mask_secrets("cannot reach postgres://app:hunter2@db:5432/x (timeout)"),
            "cannot reach postgres://app:***@db:5432/x (timeout)"
        );
        assert_eq!(
            mask_secrets("a http://u:p@h b https://v:q:r@i/path?x=1 c"),
            "a http://u:***@h b https://v:***@i/path?x=1 c"
        );
        assert_eq!(mask_secrets("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(mask_secrets("no url: a:b@c"), "no url: a:b@c");
        assert_eq!(mask_secrets("ends with ://"), "ends with ://");
        assert_eq!(mask_secrets("ünï://ü:ß@h"), "ünï://ü:***@h");
    }
}
