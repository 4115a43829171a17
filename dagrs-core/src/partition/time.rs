//! Time-window partitions: windows between the ticks of a cadence (minutely, hourly, daily,
//! weekly, monthly or any cron expression) in a time zone, from a start, to an optional end.
//!
//! A window is `[tick, next tick)`, held as seconds since the Unix epoch; its key is its
//! start in the time zone, formatted (`2026-11-01-00:00` hourly, `2026-11-01` daily).

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds};
use croner::Cron;

use crate::text::{bounded, ECHO_LIMIT};

/// A window of time: `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimeWindow {
    /// Its first instant.
    pub start: DateTime<Utc>,
    /// The first instant after it.
    pub end: DateTime<Utc>,
}

/// How often windows start.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cadence {
    Minutely,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Cron(String),
}

impl Cadence {
    fn cron_text(&self) -> &str {
        match self {
            Cadence::Minutely => "* * * * *",
            Cadence::Hourly => "0 * * * *",
            Cadence::Daily => "0 0 * * *",
            Cadence::Weekly => "0 0 * * 0",
            Cadence::Monthly => "0 0 1 * *",
            Cadence::Cron(text) => text,
        }
    }

    fn default_format(&self) -> &'static str {
        match self {
            Cadence::Daily | Cadence::Weekly | Cadence::Monthly => "%Y-%m-%d",
            _ => "%Y-%m-%d-%H:%M",
        }
    }

    /// The window length in seconds when every window has it in time zone `tz`.
    fn fixed_step(&self, tz: Tz) -> Option<i64> {
        match self {
            // Every zone's offset is a whole number of minutes.
            Cadence::Minutely => Some(60),
            Cadence::Hourly if tz == Tz::UTC => Some(3_600),
            Cadence::Daily if tz == Tz::UTC => Some(86_400),
            _ => None,
        }
    }
}

/// Time-window partitions, built with [`minutely`](crate::partitions::minutely),
/// [`hourly`](crate::partitions::hourly), [`daily`](crate::partitions::daily),
/// [`weekly`](crate::partitions::weekly), [`monthly`](crate::partitions::monthly) or
/// [`cron`](crate::partitions::cron), then refined:
///
/// ```
/// use dagrs_core::partitions::{daily, hourly};
///
/// let hours = hourly("2024-01-01T00:00Z");
/// let days = daily("2024-01-01").timezone("Asia/Seoul").end("2025-01-01").end_offset(1);
/// # let _ = (hours, days);
/// ```
///
/// A mistake (a start that is not a date, an unknown time zone, a bad cron expression) is a
/// `Definitions::build` error naming the asset.
#[derive(Debug, Clone)]
pub struct TimeWindows {
    cadence: Cadence,
    start_text: String,
    end_text: Option<String>,
    timezone_text: String,
    format: String,
    end_offset: i32,
    resolved: Result<Resolved, String>,
}

/// The parts of a definition, checked.
#[derive(Debug, Clone)]
struct Resolved {
    cron: Cron,
    tz: Tz,
    step: Option<i64>,
    /// The first window's start.
    first: i64,
    /// Windows start before this (a boundary), when the definition has an end.
    end: Option<i64>,
}

impl PartialEq for TimeWindows {
    fn eq(&self, other: &Self) -> bool {
        self.cadence == other.cadence
            && self.start_text == other.start_text
            && self.end_text == other.end_text
            && self.timezone_text == other.timezone_text
            && self.format == other.format
            && self.end_offset == other.end_offset
    }
}

impl TimeWindows {
    fn new(cadence: Cadence, start: &str) -> Self {
        TimeWindows {
            format: cadence.default_format().to_owned(),
            cadence,
            start_text: start.to_owned(),
            end_text: None,
            timezone_text: "UTC".into(),
            end_offset: 0,
            resolved: Err(String::new()),
        }
        .resolve()
    }

    pub(crate) fn minutely(start: &str) -> Self {
        Self::new(Cadence::Minutely, start)
    }

    pub(crate) fn hourly(start: &str) -> Self {
        Self::new(Cadence::Hourly, start)
    }

    pub(crate) fn daily(start: &str) -> Self {
        Self::new(Cadence::Daily, start)
    }

    pub(crate) fn weekly(start: &str) -> Self {
        Self::new(Cadence::Weekly, start)
    }

    pub(crate) fn monthly(start: &str) -> Self {
        Self::new(Cadence::Monthly, start)
    }

    pub(crate) fn cron(expression: &str, start: &str) -> Self {
        Self::new(Cadence::Cron(expression.trim().to_owned()), start)
    }

    /// Reads times in time zone `name` (an IANA name such as `Asia/Seoul`; default `UTC`):
    /// windows start at local ticks, keys are local times.
    pub fn timezone(mut self, name: impl Into<String>) -> Self {
        self.timezone_text = name.into();
        self.resolve()
    }

    /// No window starts at or after `end` (same forms as the start).
    pub fn end(mut self, end: impl Into<String>) -> Self {
        self.end_text = Some(end.into());
        self.resolve()
    }

    /// Shifts the last partition by `windows`: `1` includes the window in progress, `-1`
    /// stops one window earlier (default `0`: the last complete window).
    pub fn end_offset(mut self, windows: i32) -> Self {
        self.end_offset = windows;
        self.resolve()
    }

    /// Formats keys with `format` (chrono `strftime` syntax), which must name every field the
    /// cadence needs to tell windows apart.
    pub fn format(mut self, format: impl Into<String>) -> Self {
        self.format = format.into();
        self.resolve()
    }

    fn resolve(mut self) -> Self {
        self.resolved = self.check();
        self
    }

    fn check(&self) -> Result<Resolved, String> {
        let parser = CronParser::builder().seconds(Seconds::Optional).build();
        let cron_text = self.cadence.cron_text();
        let cron = parser.parse(cron_text).map_err(|e| {
            format!(
                "cron expression {:?} is invalid: {e}",
                bounded(cron_text, ECHO_LIMIT)
            )
        })?;
        let tz: Tz = self.timezone_text.parse().map_err(|_| {
            format!(
                "time zone {:?} is unknown; use an IANA name such as `UTC`, `Europe/Berlin` or \
                 `Asia/Seoul`",
                bounded(&self.timezone_text, ECHO_LIMIT)
            )
        })?;
        let step = self.cadence.fixed_step(tz);
        let mut resolved = Resolved {
            cron,
            tz,
            step,
            first: 0,
            end: None,
        };
        let start = parse_instant(&self.start_text, tz).ok_or_else(|| {
            format!(
                "start {:?} is not a date or time; write e.g. `2024-01-01`, \
                 `2024-01-01T00:00Z` or `2024-01-01T09:00+09:00`",
                bounded(&self.start_text, ECHO_LIMIT)
            )
        })?;
        resolved.first = resolved.next_boundary(start - 1).ok_or_else(|| {
            format!(
                "cron expression {:?} never fires after the start",
                bounded(cron_text, ECHO_LIMIT)
            )
        })?;
        if let Some(end_text) = &self.end_text {
            let end = parse_instant(end_text, tz).ok_or_else(|| {
                format!(
                    "end {:?} is not a date or time; write e.g. `2025-01-01`",
                    bounded(end_text, ECHO_LIMIT)
                )
            })?;
            if end <= resolved.first {
                return Err(format!(
                    "end {:?} is not after the first window's start",
                    bounded(end_text, ECHO_LIMIT)
                ));
            }
            resolved.end = Some(end);
        }
        // The format must tell windows apart and read back: try it on the first windows.
        let mut at = resolved.first;
        for _ in 0..3 {
            let key = format_key(&self.format, tz, at);
            if parse_key_time(&self.format, tz, &key) != Some(at) {
                return Err(format!(
                    "key format {:?} does not read back the window starting {}: it must \
                     include every field that changes between windows",
                    bounded(&self.format, ECHO_LIMIT),
                    DateTime::<Utc>::from_timestamp(at, 0).unwrap_or_default()
                ));
            }
            at = match resolved.next_boundary(at) {
                Some(next) => next,
                None => break,
            };
        }
        Ok(resolved)
    }

    /// What is wrong with the definition, if anything.
    pub(crate) fn problem(&self) -> Option<&str> {
        self.resolved.as_ref().err().map(String::as_str)
    }

    fn resolved(&self) -> Option<&Resolved> {
        self.resolved.as_ref().ok()
    }

    /// The start of the first window.
    pub(crate) fn first_start(&self) -> Option<i64> {
        Some(self.resolved()?.first)
    }

    /// The end of the last window that exists at `now`: the last complete window's end,
    /// moved by the end offset, at most the definition's end; never before the first start.
    pub(crate) fn last_end(&self, now: i64) -> Option<i64> {
        let r = self.resolved()?;
        let mut end = r.boundary_at_or_before(now).unwrap_or(r.first);
        end = r.advance(end, i64::from(self.end_offset))?;
        if let Some(limit) = r.end {
            // Windows starting before the end exist: the last one ends at a boundary.
            let last_start = r.boundary_at_or_before(limit - 1).unwrap_or(r.first);
            end = end.min(r.next_boundary(last_start)?);
        }
        Some(end.max(r.first))
    }

    /// The end of the window starting at `start`.
    pub(crate) fn window_end(&self, start: i64) -> Option<i64> {
        self.resolved()?.next_boundary(start)
    }

    /// The start of the window that holds `at`.
    pub(crate) fn window_start(&self, at: i64) -> Option<i64> {
        self.resolved()?.boundary_at_or_before(at)
    }

    /// The boundary `n` windows after `from` (a boundary).
    pub(crate) fn advance(&self, from: i64, n: i64) -> Option<i64> {
        self.resolved()?.advance(from, n)
    }

    /// How many windows `[start, end)` (boundaries) holds.
    pub(crate) fn count(&self, start: i64, end: i64) -> u64 {
        let Some(r) = self.resolved() else { return 0 };
        if end <= start {
            return 0;
        }
        if let Some(step) = r.step {
            return ((end - start) / step) as u64;
        }
        let mut n = 0;
        let mut at = start;
        while at < end {
            match r.next_boundary(at) {
                Some(next) => at = next,
                None => break,
            }
            n += 1;
        }
        n
    }

    /// The key of the window starting at `start`.
    pub(crate) fn key(&self, start: i64) -> String {
        match self.resolved() {
            Some(r) => format_key(&self.format, r.tz, start),
            None => start.to_string(),
        }
    }

    /// The window start `key` names, if it is a key of this definition's format and a
    /// window start (range checks are the caller's).
    pub(crate) fn parse_key(&self, key: &str) -> Result<i64, String> {
        let r = self.resolved().ok_or("the definition is invalid")?;
        let at = parse_key_time(&self.format, r.tz, key).ok_or_else(|| {
            format!(
                "`{}` is not a key of these partitions: keys look like `{}` (format `{}`)",
                bounded(key, ECHO_LIMIT),
                self.key(r.first),
                self.format
            )
        })?;
        if r.boundary_at_or_before(at) != Some(at) {
            let start = r.boundary_at_or_before(at).unwrap_or(r.first);
            return Err(format!(
                "`{}` is not the start of a window; the window holding it is `{}`",
                bounded(key, ECHO_LIMIT),
                self.key(start)
            ));
        }
        Ok(at)
    }

    /// The window as date-times.
    pub(crate) fn window(start: i64, end: i64) -> TimeWindow {
        let at = |s| DateTime::<Utc>::from_timestamp(s, 0).unwrap_or_default();
        TimeWindow {
            start: at(start),
            end: at(end),
        }
    }
}

impl Resolved {
    /// The smallest window start after `t`.
    fn next_boundary(&self, t: i64) -> Option<i64> {
        if let Some(step) = self.step {
            return Some(self.first + (t - self.first).div_euclid(step) * step + step);
        }
        let at = DateTime::<Utc>::from_timestamp(t, 0)?.with_timezone(&self.tz);
        let next = self.cron.find_next_occurrence(&at, false).ok()?;
        Some(next.timestamp())
    }

    /// The largest window start at or before `t`.
    fn boundary_at_or_before(&self, t: i64) -> Option<i64> {
        if let Some(step) = self.step {
            return Some(self.first + (t - self.first).div_euclid(step) * step);
        }
        let at = DateTime::<Utc>::from_timestamp(t, 0)?.with_timezone(&self.tz);
        let previous = self.cron.find_previous_occurrence(&at, true).ok()?;
        Some(previous.timestamp())
    }

    /// The boundary `n` windows after boundary `from` (before, when `n` is negative).
    fn advance(&self, from: i64, n: i64) -> Option<i64> {
        if let Some(step) = self.step {
            return from.checked_add(n.checked_mul(step)?);
        }
        let mut at = from;
        for _ in 0..n.unsigned_abs() {
            at = if n > 0 {
                self.next_boundary(at)?
            } else {
                self.boundary_at_or_before(at - 1)?
            };
        }
        Some(at)
    }
}

fn format_key(format: &str, tz: Tz, at: i64) -> String {
    match DateTime::<Utc>::from_timestamp(at, 0) {
        Some(t) => t.with_timezone(&tz).format(format).to_string(),
        None => at.to_string(),
    }
}

/// The instant of key `key` in `format`, read in `tz` (the earlier of two when a clock change
/// repeats the local time).
fn parse_key_time(format: &str, tz: Tz, key: &str) -> Option<i64> {
    if key.len() > 64 {
        return None;
    }
    let naive = NaiveDateTime::parse_from_str(key, format)
        .ok()
        .or_else(|| {
            NaiveDate::parse_from_str(key, format)
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        })?;
    Some(tz.from_local_datetime(&naive).earliest()?.timestamp())
}

/// A start or end as written: RFC 3339 (seconds optional), or a local date or date-time read
/// in `tz`.
fn parse_instant(text: &str, tz: Tz) -> Option<i64> {
    let text = text.trim();
    if text.len() > 64 {
        return None;
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.timestamp());
    }
    // RFC 3339 without seconds: `2024-01-01T00:00Z`, `2024-01-01T09:00+09:00`.
    if let Some((date_time, zone)) = split_zone(text) {
        let with_seconds = format!("{date_time}:00{zone}");
        if let Ok(t) = DateTime::parse_from_rfc3339(&with_seconds) {
            return Some(t.timestamp());
        }
    }
    let local = [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%d-%H:%M",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
    .or_else(|| {
        NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
    })?;
    Some(tz.from_local_datetime(&local).earliest()?.timestamp())
}

/// `2024-01-01T00:00Z` → (`2024-01-01T00:00`, `Z`), when the time has hours and minutes only.
fn split_zone(text: &str) -> Option<(&str, &str)> {
    let t = text.find('T')?;
    let zone_at = text[t..].find(['Z', 'z', '+', '-'])? + t;
    let time = &text[t + 1..zone_at];
    (time.len() == 5).then(|| text.split_at(zone_at))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text).unwrap().timestamp()
    }

    #[test]
    fn starts_are_read_in_every_documented_form() {
        for text in [
            "2024-01-01T00:00Z",
            "2024-01-01T00:00:00Z",
            "2024-01-01T09:00+09:00",
            "2024-01-01",
            "2024-01-01T00:00",
            "2024-01-01-00:00",
        ] {
            assert_eq!(
                parse_instant(text, Tz::UTC),
                Some(at("2024-01-01T00:00:00Z")),
                "{text}"
            );
        }
        assert_eq!(
            parse_instant("2024-01-01", Tz::Asia__Seoul),
            Some(at("2023-12-31T15:00:00Z"))
        );
        assert_eq!(parse_instant("yesterday", Tz::UTC), None);
    }

    #[test]
    fn hourly_windows_keys_and_ends() {
        let hours = TimeWindows::hourly("2024-01-01T00:00Z");
        assert_eq!(hours.problem(), None);
        let first = hours.first_start().unwrap();
        assert_eq!(hours.key(first), "2024-01-01-00:00");
        assert_eq!(hours.parse_key("2024-01-01-05:00"), Ok(first + 5 * 3600));
        assert!(hours
            .parse_key("2024-01-01-05:30")
            .unwrap_err()
            .contains("2024-01-01-05:00"));
        assert!(hours
            .parse_key("2024-13-01-00:00")
            .unwrap_err()
            .contains("keys look like"));
        let now = at("2024-01-02T10:30:00Z");
        assert_eq!(hours.last_end(now), Some(at("2024-01-02T10:00:00Z")));
        assert_eq!(
            hours.clone().end_offset(1).last_end(now),
            Some(at("2024-01-02T11:00:00Z"))
        );
        assert_eq!(hours.count(first, at("2024-01-02T00:00:00Z")), 24);
        let ended = hours.end("2024-01-01T12:00Z");
        assert_eq!(ended.last_end(now), Some(at("2024-01-01T12:00:00Z")));
    }

    #[test]
    fn daily_windows_in_a_zone_with_clock_changes() {
        let days = TimeWindows::daily("2026-03-28").timezone("Europe/Berlin");
        assert_eq!(days.problem(), None);
        let first = days.first_start().unwrap();
        assert_eq!(first, at("2026-03-27T23:00:00Z"));
        // 29 March has 23 hours in Berlin.
        let second = days.window_end(first).unwrap();
        assert_eq!(days.window_end(second), Some(at("2026-03-29T22:00:00Z")));
        assert_eq!(days.key(second), "2026-03-29");
        assert_eq!(days.parse_key("2026-03-29"), Ok(second));
        assert_eq!(days.count(first, at("2026-03-31T22:00:00Z")), 4);
        assert_eq!(days.advance(first, 2), Some(at("2026-03-29T22:00:00Z")));
        assert_eq!(days.advance(at("2026-03-29T22:00:00Z"), -2), Some(first));
    }

    #[test]
    fn monthly_and_cron_windows() {
        let months = TimeWindows::monthly("2024-01-15");
        assert_eq!(months.key(months.first_start().unwrap()), "2024-02-01");
        assert_eq!(
            months.count(at("2024-02-01T00:00:00Z"), at("2025-02-01T00:00:00Z")),
            12
        );
        let shifts = TimeWindows::cron("0 6,18 * * *", "2024-01-01");
        let first = shifts.first_start().unwrap();
        assert_eq!(shifts.key(first), "2024-01-01-06:00");
        assert_eq!(shifts.window_end(first), Some(at("2024-01-01T18:00:00Z")));
    }

    #[test]
    fn mistakes_are_problems() {
        let problem = |w: TimeWindows| w.problem().unwrap().to_owned();
        assert!(problem(TimeWindows::hourly("soon")).contains("not a date"));
        assert!(
            problem(TimeWindows::daily("2024-01-01").timezone("Mars/Base")).contains("unknown")
        );
        assert!(problem(TimeWindows::cron("61 * * * *", "2024-01-01")).contains("invalid"));
        assert!(
            problem(TimeWindows::hourly("2024-01-01").format("%Y-%m-%d")).contains("read back")
        );
        assert!(problem(TimeWindows::daily("2024-01-01").end("2023-01-01")).contains("not after"));
    }
}
