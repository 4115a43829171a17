//! Pages of runs and of event logs: the filters of [`Storage::runs_page`] and
//! [`Storage::events_page`], with their meaning as plain Rust ([`RunFilter::matches`],
//! [`EventFilter::matches`]) that every backend must agree with.
//!
//! [`Storage::runs_page`]: super::Storage::runs_page
//! [`Storage::events_page`]: super::Storage::events_page

use std::cmp::Ordering;

use chrono::{DateTime, Utc};

use super::RunRecord;
use crate::event::{Event, EventKind, LogLevel, RunStatus};
use crate::job::JOB_TAG;
use crate::key::{AssetKey, RunId};

/// Which runs a page of runs holds. Every field that is set must match; the page lists
/// runs newest first, by start time and then by run id (both descending).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFilter {
    /// Only runs in this status.
    pub status: Option<RunStatus>,
    /// Only runs of this job (tag [`JOB_TAG`]).
    pub job: Option<String>,
    /// Only runs with this tag (key, value).
    pub tag: Option<(String, String)>,
    /// Only runs started at or after this instant.
    pub started_after: Option<DateTime<Utc>>,
    /// Only runs started before this instant.
    pub started_before: Option<DateTime<Utc>>,
    /// Only runs listed after this one: the last run of the previous page.
    pub after: Option<RunCursor>,
}

/// A position in a listing of runs (newest first): a run's start time and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunCursor {
    /// The run's start time.
    pub started_at: DateTime<Utc>,
    /// The run's id.
    pub run_id: RunId,
}

impl RunCursor {
    /// The position of `run`.
    pub fn of(run: &RunRecord) -> RunCursor {
        RunCursor {
            started_at: run.started_at,
            run_id: run.run_id.clone(),
        }
    }

    /// Whether `run` comes after this position in a listing (is older, or as old with a
    /// smaller id).
    pub fn precedes(&self, run: &RunRecord) -> bool {
        newest_first(
            (&self.started_at, &self.run_id),
            (&run.started_at, &run.run_id),
        ) == Ordering::Less
    }
}

/// `"<microseconds since the epoch>.<run id>"`, what a page's link to the next one carries.
impl std::fmt::Display for RunCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.started_at.timestamp_micros(), self.run_id)
    }
}

impl std::str::FromStr for RunCursor {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "`{}` is not a position in the run list",
                crate::bounded(text, 80)
            )
        };
        let (micros, run_id) = text.split_once('.').ok_or_else(bad)?;
        let micros: i64 = micros.parse().map_err(|_| bad())?;
        let started_at = DateTime::from_timestamp_micros(micros).ok_or_else(bad)?;
        if run_id.is_empty() {
            return Err(bad());
        }
        Ok(RunCursor {
            started_at,
            run_id: RunId::from(run_id),
        })
    }
}

/// The order of a page of runs: newest start first, then the larger id first.
fn newest_first(a: (&DateTime<Utc>, &RunId), b: (&DateTime<Utc>, &RunId)) -> Ordering {
    b.0.cmp(a.0).then_with(|| b.1.as_str().cmp(a.1.as_str()))
}

impl RunFilter {
    /// Whether `run` belongs to the listing (ignoring the page size).
    pub fn matches(&self, run: &RunRecord) -> bool {
        self.status.is_none_or(|s| run.status == s)
            && self
                .job
                .as_deref()
                .is_none_or(|job| run.tags.get(JOB_TAG).map(String::as_str) == Some(job))
            && self
                .tag
                .as_ref()
                .is_none_or(|(k, v)| run.tags.get(k) == Some(v))
            && self.started_after.is_none_or(|t| run.started_at >= t)
            && self.started_before.is_none_or(|t| run.started_at < t)
            && self.after.as_ref().is_none_or(|c| c.precedes(run))
    }

    /// Sorts `runs` in page order (newest first, by start time then run id).
    pub fn sort(runs: &mut [RunRecord]) {
        runs.sort_by(|a, b| newest_first((&a.started_at, &a.run_id), (&b.started_at, &b.run_id)));
    }
}

/// Which events of one run a page of events holds, in `seq` order. Every field that is set
/// must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only events with `seq > after`.
    pub after: Option<u64>,
    /// Only events with `seq < before`.
    pub before: Option<u64>,
    /// Only events of this asset (its step).
    pub asset: Option<AssetKey>,
    /// Leaves out log lines below this level (other events stay).
    pub min_level: Option<LogLevel>,
    /// Leaves out every log line: the step and run events alone (for a timeline).
    pub skip_logs: bool,
    /// The last matching events instead of the first (still returned in `seq` order): the
    /// tail of a log.
    pub newest: bool,
}

impl EventFilter {
    /// Whether `event` belongs to the page (ignoring the page size and `newest`).
    pub fn matches(&self, event: &Event) -> bool {
        let level_ok = match &event.kind {
            EventKind::Log { level, .. } => {
                !self.skip_logs && self.min_level.is_none_or(|min| *level >= min)
            }
            _ => true,
        };
        level_ok
            && self.after.is_none_or(|a| event.seq > a)
            && self.before.is_none_or(|b| event.seq < b)
            && self
                .asset
                .as_ref()
                .is_none_or(|a| event.asset.as_ref() == Some(a))
    }

    /// The levels a log line may have to be kept: `min_level` and above.
    pub fn levels(&self) -> Vec<LogLevel> {
        [
            LogLevel::Debug,
            LogLevel::Info,
            LogLevel::Warn,
            LogLevel::Error,
        ]
        .into_iter()
        .filter(|l| self.min_level.is_none_or(|min| *l >= min))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_print_and_parse_back() {
        let cursor = RunCursor {
            started_at: DateTime::from_timestamp_micros(1_767_225_600_123_456).unwrap(),
            run_id: RunId::from("a.b-c"),
        };
        assert_eq!(cursor.to_string().parse::<RunCursor>(), Ok(cursor));
        for bad in ["", "12", "x.run", "12.", "99999999999999999999.r"] {
            let err = bad.parse::<RunCursor>().unwrap_err();
            assert!(err.contains("not a position"), "{err}");
        }
    }
}
