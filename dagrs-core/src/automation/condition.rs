//! Automation conditions: when the daemon should materialize an asset, as a tree of facts
//! about it and its dependencies, combined with `&`, `|` and `!`.

use std::fmt;
use std::ops::{BitAnd, BitOr, Not};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::schedule::Schedule;

/// When the daemon materializes an asset: Dagster's `AutomationCondition`.
///
/// Start from [`eager`], [`on_missing`] or [`on_cron`], or build one from the facts below
/// with `&`, `|` and `!`:
///
/// ```
/// use dagrs_core::automation::*;
///
/// // Eager, but not while an upstream's latest attempt failed.
/// let condition = eager() & !deps_failed();
/// assert_eq!(
///     condition.to_string(),
///     "(missing | deps_updated) & !deps_missing & !in_progress & !deps_in_progress & !deps_failed"
/// );
/// ```
///
/// Each fact is about the asset as of the daemon's evaluation; "since handled" means since
/// the asset was last materialized or last requested by automation, so a condition that holds
/// requests one run, not one per evaluation. For a partitioned asset, a run requested for
/// updated upstream partitions materializes the same partitions (when the two share their
/// partitions), else its newest partition.
#[derive(Clone)]
pub enum AutomationCondition {
    /// It was never materialized, and automation has not requested it since.
    Missing,
    /// A dependency was updated (materialized, or observed with a new data version) since it
    /// was handled.
    DepsUpdated,
    /// A queued or running run includes it.
    InProgress,
    /// A queued or running run includes one of its dependencies.
    DepsInProgress,
    /// One of its materializable dependencies was never materialized.
    DepsMissing,
    /// The latest run of one of its dependencies failed, with no materialization of it since.
    DepsFailed,
    /// A tick of the cron schedule passed since it was handled (ticks before the daemon
    /// started do not count).
    CronTickPassed(Box<Schedule>),
    /// Its latest materialization is older than this (or it has none): a freshness policy.
    Overdue(Duration),
    /// All of them hold.
    And(Vec<AutomationCondition>),
    /// One of them holds.
    Or(Vec<AutomationCondition>),
    /// It does not hold.
    Not(Box<AutomationCondition>),
}

/// Materializes the asset when it is missing or a dependency was updated, unless a dependency
/// is missing or something involved is in progress: Dagster's `AutomationCondition.eager()`.
pub fn eager() -> AutomationCondition {
    (missing() | deps_updated()) & !deps_missing() & !in_progress() & !deps_in_progress()
}

/// Materializes the asset once when it is missing and its dependencies are there.
pub fn on_missing() -> AutomationCondition {
    missing() & !deps_missing() & !in_progress() & !deps_in_progress()
}

/// Materializes the asset at each tick of `cron` (UTC; see [`Schedule`] for the syntax),
/// unless it is in progress.
pub fn on_cron(cron: &str) -> AutomationCondition {
    cron_tick_passed(cron) & !in_progress()
}

/// [`AutomationCondition::Missing`].
pub fn missing() -> AutomationCondition {
    AutomationCondition::Missing
}

/// [`AutomationCondition::DepsUpdated`].
pub fn deps_updated() -> AutomationCondition {
    AutomationCondition::DepsUpdated
}

/// [`AutomationCondition::InProgress`].
pub fn in_progress() -> AutomationCondition {
    AutomationCondition::InProgress
}

/// [`AutomationCondition::DepsInProgress`].
pub fn deps_in_progress() -> AutomationCondition {
    AutomationCondition::DepsInProgress
}

/// [`AutomationCondition::DepsMissing`].
pub fn deps_missing() -> AutomationCondition {
    AutomationCondition::DepsMissing
}

/// [`AutomationCondition::DepsFailed`].
pub fn deps_failed() -> AutomationCondition {
    AutomationCondition::DepsFailed
}

/// [`AutomationCondition::CronTickPassed`]: a tick of `cron` (UTC) passed since handled. A
/// bad expression is a `Definitions::build` error naming the asset.
pub fn cron_tick_passed(cron: &str) -> AutomationCondition {
    AutomationCondition::CronTickPassed(Box::new(Schedule::new("", "", cron)))
}

/// [`AutomationCondition::Overdue`]: the asset should be no older than `max_age`.
pub fn overdue(max_age: Duration) -> AutomationCondition {
    AutomationCondition::Overdue(max_age)
}

impl BitAnd for AutomationCondition {
    type Output = AutomationCondition;
    fn bitand(self, other: AutomationCondition) -> AutomationCondition {
        match self {
            AutomationCondition::And(mut all) => {
                all.push(other);
                AutomationCondition::And(all)
            }
            first => AutomationCondition::And(vec![first, other]),
        }
    }
}

impl BitOr for AutomationCondition {
    type Output = AutomationCondition;
    fn bitor(self, other: AutomationCondition) -> AutomationCondition {
        match self {
            AutomationCondition::Or(mut any) => {
                any.push(other);
                AutomationCondition::Or(any)
            }
            first => AutomationCondition::Or(vec![first, other]),
        }
    }
}

impl Not for AutomationCondition {
    type Output = AutomationCondition;
    fn not(self) -> AutomationCondition {
        match self {
            AutomationCondition::Not(inner) => *inner,
            other => AutomationCondition::Not(Box::new(other)),
        }
    }
}

impl fmt::Display for AutomationCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |f: &mut fmt::Formatter<'_>, items: &[AutomationCondition], sep: &str| {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(sep)?;
                }
                match item {
                    AutomationCondition::And(_) | AutomationCondition::Or(_) => {
                        write!(f, "({item})")?
                    }
                    _ => write!(f, "{item}")?,
                }
            }
            Ok(())
        };
        match self {
            AutomationCondition::Missing => f.write_str("missing"),
            AutomationCondition::DepsUpdated => f.write_str("deps_updated"),
            AutomationCondition::InProgress => f.write_str("in_progress"),
            AutomationCondition::DepsInProgress => f.write_str("deps_in_progress"),
            AutomationCondition::DepsMissing => f.write_str("deps_missing"),
            AutomationCondition::DepsFailed => f.write_str("deps_failed"),
            AutomationCondition::CronTickPassed(s) => {
                write!(f, "cron_tick_passed({:?})", s.cron_text)
            }
            AutomationCondition::Overdue(age) => {
                write!(f, "overdue({})", humantime::format_duration(*age))
            }
            AutomationCondition::And(all) => list(f, all, " & "),
            AutomationCondition::Or(any) => list(f, any, " | "),
            AutomationCondition::Not(inner) => match **inner {
                AutomationCondition::And(_) | AutomationCondition::Or(_) => write!(f, "!({inner})"),
                _ => write!(f, "!{inner}"),
            },
        }
    }
}

impl fmt::Debug for AutomationCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AutomationCondition({self})")
    }
}

impl AutomationCondition {
    /// What is wrong with it (a bad cron expression), if anything.
    pub(crate) fn problem(&self) -> Option<String> {
        match self {
            AutomationCondition::CronTickPassed(schedule) => schedule.problem(),
            AutomationCondition::And(items) | AutomationCondition::Or(items) => {
                items.iter().find_map(AutomationCondition::problem)
            }
            AutomationCondition::Not(inner) => inner.problem(),
            _ => None,
        }
    }

    /// Whether it holds, given the facts.
    pub(crate) fn holds(&self, facts: &Facts<'_>) -> bool {
        match self {
            AutomationCondition::Missing => facts.missing,
            AutomationCondition::DepsUpdated => facts.deps_updated.is_some(),
            AutomationCondition::InProgress => facts.in_progress,
            AutomationCondition::DepsInProgress => facts.deps_in_progress.is_some(),
            AutomationCondition::DepsMissing => facts.deps_missing.is_some(),
            AutomationCondition::DepsFailed => facts.deps_failed.is_some(),
            AutomationCondition::CronTickPassed(schedule) => facts.cron_tick(schedule).is_some(),
            AutomationCondition::Overdue(age) => facts.overdue(*age),
            AutomationCondition::And(all) => all.iter().all(|c| c.holds(facts)),
            AutomationCondition::Or(any) => any.iter().any(|c| c.holds(facts)),
            AutomationCondition::Not(inner) => !inner.holds(facts),
        }
    }

    /// Why it holds or does not, in words: the facts that decided it.
    pub(crate) fn explain(&self, facts: &Facts<'_>) -> String {
        match self {
            AutomationCondition::And(all) => match all.iter().find(|c| !c.holds(facts)) {
                Some(failing) => failing.explain(facts),
                None => join(all.iter().map(|c| c.explain(facts))),
            },
            AutomationCondition::Or(any) => match any.iter().find(|c| c.holds(facts)) {
                Some(holding) => holding.explain(facts),
                None => join(any.iter().map(|c| c.explain(facts))),
            },
            AutomationCondition::Not(inner) => inner.explain(facts),
            leaf => facts.describe(leaf),
        }
    }
}

fn join(parts: impl Iterator<Item = String>) -> String {
    let mut parts: Vec<String> = parts.collect();
    parts.dedup();
    parts.join("; ")
}

/// What the daemon knows about one asset when it evaluates its condition.
pub(crate) struct Facts<'a> {
    pub(crate) now: DateTime<Utc>,
    /// Never materialized, and not requested since.
    pub(crate) missing: bool,
    /// The dependency updated since handled, if one was.
    pub(crate) deps_updated: Option<&'a str>,
    pub(crate) in_progress: bool,
    pub(crate) deps_in_progress: Option<&'a str>,
    pub(crate) deps_missing: Option<&'a str>,
    pub(crate) deps_failed: Option<&'a str>,
    /// Its latest materialization.
    pub(crate) latest: Option<DateTime<Utc>>,
    /// Since when cron ticks count: when it was handled, or when the daemon started.
    pub(crate) handled: DateTime<Utc>,
}

impl Facts<'_> {
    /// The latest tick of `schedule` after the asset was handled, up to now.
    pub(crate) fn cron_tick(&self, schedule: &Schedule) -> Option<DateTime<Utc>> {
        schedule
            .ticks_after(self.handled)?
            .take_while(|tick| *tick <= self.now)
            .last()
    }

    fn overdue(&self, max_age: Duration) -> bool {
        let max_age = chrono::TimeDelta::from_std(max_age).unwrap_or(chrono::TimeDelta::MAX);
        self.latest
            .is_none_or(|latest| self.now.signed_duration_since(latest) > max_age)
    }

    fn describe(&self, leaf: &AutomationCondition) -> String {
        match leaf {
            AutomationCondition::Missing if self.missing => "never materialized".into(),
            AutomationCondition::Missing => "materialized before (or requested)".into(),
            AutomationCondition::DepsUpdated => match self.deps_updated {
                Some(dep) => format!("upstream `{dep}` updated"),
                None => "no upstream updated since handled".into(),
            },
            AutomationCondition::InProgress if self.in_progress => "in progress".into(),
            AutomationCondition::InProgress => "not in progress".into(),
            AutomationCondition::DepsInProgress => match self.deps_in_progress {
                Some(dep) => format!("upstream `{dep}` in progress"),
                None => "no upstream in progress".into(),
            },
            AutomationCondition::DepsMissing => match self.deps_missing {
                Some(dep) => format!("upstream `{dep}` never materialized"),
                None => "no upstream missing".into(),
            },
            AutomationCondition::DepsFailed => match self.deps_failed {
                Some(dep) => format!("upstream `{dep}` failed"),
                None => "no upstream failed".into(),
            },
            AutomationCondition::CronTickPassed(schedule) => match self.cron_tick(schedule) {
                Some(tick) => format!("cron tick {} passed", tick.to_rfc3339()),
                None => format!("no tick of {:?} since handled", schedule.cron_text),
            },
            AutomationCondition::Overdue(max_age) => {
                let within = humantime::format_duration(*max_age);
                match self.latest {
                    _ if !self.overdue(*max_age) => format!("fresh: materialized within {within}"),
                    Some(latest) => format!("overdue: last materialized {}", latest.to_rfc3339()),
                    None => format!("overdue: never materialized (should be within {within})"),
                }
            }
            _ => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts<'static> {
        Facts {
            now: "2026-01-01T01:30:00Z".parse().unwrap(),
            missing: false,
            deps_updated: None,
            in_progress: false,
            deps_in_progress: None,
            deps_missing: None,
            deps_failed: None,
            latest: Some("2026-01-01T00:10:00Z".parse().unwrap()),
            handled: "2026-01-01T00:10:00Z".parse().unwrap(),
        }
    }

    #[test]
    fn eager_requests_on_an_update_and_waits_for_what_is_in_progress() {
        let eager = eager();
        let mut f = facts();
        assert!(!eager.holds(&f));
        assert_eq!(
            eager.explain(&f),
            "materialized before (or requested); no upstream updated since handled"
        );
        f.deps_updated = Some("a");
        assert!(eager.holds(&f));
        assert_eq!(
            eager.explain(&f),
            "upstream `a` updated; no upstream missing; not in progress; no upstream in progress"
        );
        f.deps_in_progress = Some("a");
        assert!(!eager.holds(&f));
        assert_eq!(eager.explain(&f), "upstream `a` in progress");
        f.deps_in_progress = None;
        f.deps_failed = Some("a");
        assert!(eager.holds(&f));
        assert!(!(eager.clone() & !deps_failed()).holds(&f));
        assert_eq!((!!deps_failed()).to_string(), "deps_failed");
    }

    #[test]
    fn cron_ticks_count_from_when_the_asset_was_handled() {
        let hourly = on_cron("0 * * * *");
        let mut f = facts();
        assert!(hourly.holds(&f));
        assert_eq!(
            hourly.explain(&f),
            "cron tick 2026-01-01T01:00:00+00:00 passed; not in progress"
        );
        f.handled = "2026-01-01T01:00:00Z".parse().unwrap();
        assert!(!hourly.holds(&f));
        assert!(cron_tick_passed("61 * * * *").problem().is_some());
        assert!((eager() | cron_tick_passed("nope")).problem().is_some());
    }

    #[test]
    fn overdue_compares_the_latest_materialization_with_the_max_age() {
        let mut f = facts();
        assert!(overdue(Duration::from_secs(3600)).holds(&f));
        assert!(!overdue(Duration::from_secs(7200)).holds(&f));
        assert!(overdue(Duration::from_secs(7200))
            .explain(&f)
            .starts_with("fresh"));
        f.latest = None;
        assert_eq!(
            overdue(Duration::from_secs(60)).explain(&f),
            "overdue: never materialized (should be within 1m)"
        );
    }
}
