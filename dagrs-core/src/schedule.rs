//! Cron schedules: a job run at the times a cron expression names, in a time zone.

use std::fmt;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds};
use croner::Cron;

use crate::storage::InstigatorStatus;

/// What a schedule does about ticks it missed while no daemon ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissedTicks {
    /// Runs only the latest missed tick (the default).
    Latest,
    /// Runs every missed tick, oldest first, but at most the `limit` most recent.
    All {
        /// The most missed ticks run at once.
        limit: usize,
    },
}

/// The longest stretch of missed ticks a schedule looks back over: ticks older than this
/// before the daemon came back are dropped.
pub const MAX_CATCH_UP: chrono::TimeDelta = chrono::TimeDelta::days(7);

/// The storage cursor of schedule `name`: the last tick it handled.
pub(crate) fn cursor_key(name: &str) -> String {
    format!("schedule/{name}")
}

/// A job run on a cron schedule, in a time zone: Dagster's `ScheduleDefinition`.
///
/// Expressions have 5 fields (`minute hour day-of-month month day-of-week`), 6 with seconds
/// first, or an alias (`@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`). Times are read
/// in the schedule's time zone (IANA names, default `UTC`): across a daylight saving change, a
/// time that does not exist runs at the next one that does, and a daily time that happens
/// twice runs once (an hourly schedule still runs every hour). A bad expression or time zone,
/// or one that never fires (`0 0 30 2 *`), is a `Definitions::build` error naming the
/// schedule.
///
/// ```
/// use dagrs_core::{MissedTicks, Schedule};
///
/// let nightly = Schedule::new("ecoanp_daily", "ecoanp_pipeline", "0 2 * * *")
///     .timezone("Asia/Seoul")
///     .description("EcoAnP daily pipeline")
///     .missed_ticks(MissedTicks::All { limit: 3 });
/// let next = nightly.ticks_after("2026-01-01T00:00:00Z".parse().unwrap()).unwrap();
/// assert_eq!(next.take(2).map(|t| t.to_rfc3339()).collect::<Vec<_>>(),
///            ["2026-01-01T17:00:00+00:00", "2026-01-02T17:00:00+00:00"]);
/// ```
#[derive(Clone)]
pub struct Schedule {
    pub(crate) name: String,
    pub(crate) job: String,
    pub(crate) cron_text: String,
    pub(crate) timezone_text: String,
    cron: Result<Cron, String>,
    timezone: Result<Tz, String>,
    pub(crate) description: Option<String>,
    pub(crate) default_status: InstigatorStatus,
    pub(crate) missed: MissedTicks,
    pub(crate) last_partition: bool,
}

impl Schedule {
    /// Schedule `name` running job `job` at the times `cron` names, in UTC, stopped until it
    /// is started (`schedule start NAME`) unless [`running`](Self::running) says otherwise.
    pub fn new(name: impl Into<String>, job: impl Into<String>, cron: impl Into<String>) -> Self {
        let cron_text = cron.into();
        let parser = CronParser::builder().seconds(Seconds::Optional).build();
        let cron = parser
            .parse(cron_text.trim())
            .map_err(|e| format!("cron expression {cron_text:?} is invalid: {e}"));
        Schedule {
            name: name.into(),
            job: job.into(),
            cron_text,
            timezone_text: "UTC".into(),
            cron,
            timezone: Ok(Tz::UTC),
            description: None,
            default_status: InstigatorStatus::Stopped,
            missed: MissedTicks::Latest,
            last_partition: false,
        }
    }

    /// Reads the cron expression in time zone `name` (an IANA name, e.g. `Europe/Berlin`).
    pub fn timezone(mut self, name: impl Into<String>) -> Self {
        self.timezone_text = name.into();
        self.timezone = self.timezone_text.parse::<Tz>().map_err(|_| {
            format!(
                "time zone {:?} is unknown; use an IANA name such as `UTC`, `Europe/Berlin` or \
                 `Asia/Seoul`",
                crate::text::bounded(&self.timezone_text, crate::text::ECHO_LIMIT)
            )
        });
        self
    }

    /// Sets the description.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = Some(text.into());
        self
    }

    /// Runs from the start, until stopped (default: stopped until started).
    pub fn running(mut self) -> Self {
        self.default_status = InstigatorStatus::Running;
        self
    }

    /// What to do about ticks missed while no daemon ran (default [`MissedTicks::Latest`]).
    pub fn missed_ticks(mut self, policy: MissedTicks) -> Self {
        self.missed = policy;
        self
    }

    /// Each tick materializes the partition that just closed: the last complete time window
    /// of the job's partitioned assets at the tick (an hourly tick at 01:05 fills
    /// 00:00–01:00). The job's partitioned assets must share time-window partitions.
    pub fn last_partition(mut self) -> Self {
        self.last_partition = true;
        self
    }

    /// The schedule's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The job it runs.
    pub fn job(&self) -> &str {
        &self.job
    }

    /// Its cron expression, as written.
    pub fn cron(&self) -> &str {
        &self.cron_text
    }

    /// Its time zone, as written.
    pub fn timezone_name(&self) -> &str {
        &self.timezone_text
    }

    /// Its description, if any.
    pub fn description_text(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// Whether it runs before anyone starts or stops it.
    pub fn default_status(&self) -> InstigatorStatus {
        self.default_status
    }

    /// Its policy for missed ticks.
    pub fn missed_ticks_policy(&self) -> MissedTicks {
        self.missed
    }

    /// `tick` in the schedule's time zone, as text (`2026-01-01 09:00:00 KST`).
    pub fn local_time(&self, tick: DateTime<Utc>) -> String {
        match &self.timezone {
            Ok(tz) => tick
                .with_timezone(tz)
                .format("%Y-%m-%d %H:%M:%S %Z")
                .to_string(),
            Err(_) => tick.to_rfc3339(),
        }
    }

    /// The partition a tick at `tick` materializes, for a [`last_partition`] schedule of a
    /// job over `selection`: the last window complete at the tick.
    ///
    /// [`last_partition`]: Self::last_partition
    pub(crate) fn partition_at(
        defs: &crate::Definitions,
        selection: &str,
        tick: DateTime<Utc>,
    ) -> Result<String, String> {
        let keys = defs.select(selection).map_err(|e| e.to_string())?;
        let specs = keys.iter().filter_map(|k| defs.asset(k));
        let def = crate::partition::shared(specs)?.ok_or("the job selects no partitioned asset")?;
        let windows = def
            .time_windows()
            .filter(|_| def.dimension_names().count() == 1);
        let windows = windows.ok_or(
            "the job's partitions are not time windows alone, so \"the last partition\" is not one",
        )?;
        let first = windows
            .first_start()
            .ok_or("the job's partitions are invalid")?;
        let end = windows.last_end(tick.timestamp()).unwrap_or(first);
        if end <= first {
            return Err(format!(
                "no partition is complete at {tick} (the first is `{}`)",
                windows.key(first)
            ));
        }
        let start = windows.window_start(end - 1).unwrap_or(first);
        Ok(def.range("", start, end).key)
    }

    /// What is wrong with the schedule, if anything: a bad expression or time zone, or an
    /// expression that never fires.
    pub(crate) fn problem(&self) -> Option<String> {
        let (cron, _) = match (&self.cron, &self.timezone) {
            (Err(e), _) | (_, Err(e)) => return Some(e.clone()),
            (Ok(cron), Ok(tz)) => (cron, tz),
        };
        let probe = DateTime::<Utc>::UNIX_EPOCH.with_timezone(&Tz::UTC);
        match cron.find_next_occurrence(&probe, false) {
            Ok(_) => None,
            Err(_) => Some(format!(
                "cron expression {:?} never fires (no such date, e.g. February 30th)",
                self.cron_text
            )),
        }
    }

    /// The ticks after `after` (exclusive), in order, as instants; `None` when the schedule
    /// is invalid.
    pub fn ticks_after(
        &self,
        after: DateTime<Utc>,
    ) -> Option<impl Iterator<Item = DateTime<Utc>> + '_> {
        let (cron, tz) = match (&self.cron, &self.timezone) {
            (Ok(cron), Ok(tz)) => (cron, *tz),
            _ => return None,
        };
        let mut at = after.with_timezone(&tz);
        Some(std::iter::from_fn(move || {
            let next = cron.find_next_occurrence(&at, false).ok()?;
            at = next;
            Some(next.with_timezone(&Utc))
        }))
    }

    /// The ticks due after `after` up to `now` (both as instants), by the missed-ticks
    /// policy: the latest only, or the most recent `limit` oldest first. Looks back at most
    /// [`MAX_CATCH_UP`].
    pub(crate) fn due(&self, after: DateTime<Utc>, now: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let from = after.max(now - MAX_CATCH_UP);
        let Some(ticks) = self.ticks_after(from) else {
            return Vec::new();
        };
        let mut due: Vec<DateTime<Utc>> = ticks.take_while(|t| *t <= now).collect();
        let keep = match self.missed {
            MissedTicks::Latest => 1,
            MissedTicks::All { limit } => limit.max(1),
        };
        if due.len() > keep {
            due.drain(..due.len() - keep);
        }
        due
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schedule")
            .field("name", &self.name)
            .field("job", &self.job)
            .field("cron", &self.cron_text)
            .field("timezone", &self.timezone_text)
            .field("default_status", &self.default_status)
            .field("missed", &self.missed)
            .field("last_partition", &self.last_partition)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    fn next(schedule: &Schedule, after: &str, n: usize) -> Vec<String> {
        schedule
            .ticks_after(at(after))
            .unwrap()
            .take(n)
            .map(|t| t.to_rfc3339())
            .collect()
    }

    #[test]
    fn bad_expressions_zones_and_dates_are_problems() {
        for (cron, says) in [
            ("61 * * * *", "invalid"),
            ("* * *", "invalid"),
            ("0 0 30 2 *", "never fires"),
        ] {
            let problem = Schedule::new("s", "j", cron).problem().unwrap();
            assert!(problem.contains(says), "{cron}: {problem}");
        }
        let problem = Schedule::new("s", "j", "@hourly")
            .timezone("Mars/Olympus")
            .problem()
            .unwrap();
        assert!(problem.contains("\"Mars/Olympus\" is unknown"), "{problem}");
        assert_eq!(Schedule::new("s", "j", "*/10 * * * * *").problem(), None);
    }

    #[test]
    fn daylight_saving_changes_in_berlin() {
        let daily = Schedule::new("d", "j", "0 2 * * *").timezone("Europe/Berlin");
        // 02:00 does not exist on 29 March 2026: it runs at 03:00 CEST (01:00 UTC).
        assert_eq!(
            next(&daily, "2026-03-28T12:00:00Z", 2),
            ["2026-03-29T01:00:00+00:00", "2026-03-30T00:00:00+00:00"]
        );
        // 02:00 happens twice on 25 October 2026: it runs once.
        assert_eq!(
            next(&daily, "2026-10-24T12:00:00Z", 2),
            ["2026-10-25T00:00:00+00:00", "2026-10-26T01:00:00+00:00"]
        );
        // An hourly schedule runs every hour, in both directions.
        let hourly = Schedule::new("h", "j", "0 * * * *").timezone("Europe/Berlin");
        assert_eq!(
            next(&hourly, "2026-10-24T23:30:00Z", 4),
            [
                "2026-10-25T00:00:00+00:00",
                "2026-10-25T01:00:00+00:00",
                "2026-10-25T02:00:00+00:00",
                "2026-10-25T03:00:00+00:00"
            ]
        );
        assert_eq!(
            next(&hourly, "2026-03-28T23:30:00Z", 3),
            [
                "2026-03-29T00:00:00+00:00",
                "2026-03-29T01:00:00+00:00",
                "2026-03-29T02:00:00+00:00"
            ]
        );
    }

    #[test]
    fn missed_ticks_follow_the_policy() {
        let hourly = Schedule::new("h", "j", "@hourly");
        let (after, now) = (at("2026-01-01T00:00:00Z"), at("2026-01-01T05:30:00Z"));
        assert_eq!(hourly.due(after, now), [at("2026-01-01T05:00:00Z")]);
        let all = hourly.clone().missed_ticks(MissedTicks::All { limit: 3 });
        assert_eq!(
            all.due(after, now),
            [
                at("2026-01-01T03:00:00Z"),
                at("2026-01-01T04:00:00Z"),
                at("2026-01-01T05:00:00Z")
            ]
        );
        assert!(hourly.due(now, now).is_empty());
        // A year-long outage looks back a week only.
        let minutely = Schedule::new("m", "j", "* * * * *")
            .missed_ticks(MissedTicks::All { limit: usize::MAX });
        let due = minutely.due(at("2025-01-01T00:00:00Z"), now);
        assert_eq!(due.len(), 7 * 24 * 60);
    }
}
