//! Fixed-length time intervals for bucket sizes and policy offsets.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::error::{Error, Result};

const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;
const WEEK: u64 = 7 * DAY;
/// The longest interval accepted: 36,500 days (about 100 years).
const MAX_SECONDS: u64 = 36_500 * DAY;

/// Units from largest to smallest, as (seconds, singular, plural).
const UNITS: [(u64, &str, &str); 5] = [
    (WEEK, "week", "weeks"),
    (DAY, "day", "days"),
    (HOUR, "hour", "hours"),
    (MINUTE, "minute", "minutes"),
    (1, "second", "seconds"),
];

/// A positive, fixed-length interval parsed from text such as `"5 minutes"`.
///
/// Accepted: a whole number, optional spaces, and a unit — `s`, `sec`,
/// `second(s)`, `m`, `min`, `minute(s)`, `h`, `hr`, `hour(s)`, `d`, `day(s)`,
/// `w`, `week(s)` (any letter case) — from 1 second up to 36,500 days. Months
/// and years are rejected: they have no fixed length, and PostgreSQL's
/// `date_bin` cannot bucket by them. Anything else ("five minutes",
/// "-5 minutes", "1 minute; DROP TABLE x") is rejected with an error naming the
/// text and the accepted forms.
///
/// The value is normalized to the largest unit that divides it exactly, so
/// `"60 minutes"` and `"1h"` are both `1 hour`. SQL is rendered from the
/// parsed number, never from the input text.
///
/// ```
/// use dagrs_postgres::PgInterval;
/// let five = PgInterval::parse("5 minutes")?;
/// assert_eq!(five.as_secs(), 300);
/// assert_eq!(five.to_sql(), "INTERVAL '5 minutes'");
/// assert_eq!(five.suffix(), "5_minutes");
/// assert_eq!(PgInterval::parse("60m")?.to_string(), "1 hour");
/// assert!(PgInterval::parse("1 minute; DROP TABLE x").is_err());
/// # Ok::<(), dagrs_postgres::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PgInterval {
    seconds: u64,
}

impl PgInterval {
    /// Parses text such as `"30 seconds"`, `"5 minutes"`, `"1 hour"`, `"2 weeks"` or `"5m"`.
    pub fn parse(text: &str) -> Result<Self> {
        let reject = |reason| Error::InvalidInterval {
            value: text.to_owned(),
            reason,
        };
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(reject("it is empty"));
        }
        let digits_end = trimmed
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(trimmed.len());
        let (digits, rest) = trimmed.split_at(digits_end);
        if digits.is_empty() {
            return Err(reject(if trimmed.starts_with(['-', '+']) {
                "a sign is not allowed; the number must be a positive whole number"
            } else {
                "it must start with a whole number written in digits"
            }));
        }
        if rest.starts_with(['.', ',']) {
            return Err(reject(
                "fractions are not accepted; use a smaller unit (90 minutes, not 1.5 hours)",
            ));
        }
        let unit = rest.trim_start().to_ascii_lowercase();
        let unit_seconds = match unit.as_str() {
            "" => return Err(reject("it has no unit")),
            "s" | "sec" | "secs" | "second" | "seconds" => 1,
            "m" | "min" | "mins" | "minute" | "minutes" => MINUTE,
            "h" | "hr" | "hrs" | "hour" | "hours" => HOUR,
            "d" | "day" | "days" => DAY,
            "w" | "week" | "weeks" => WEEK,
            "mon" | "mons" | "month" | "months" | "y" | "yr" | "yrs" | "year" | "years" => {
                return Err(reject(
                    "months and years have no fixed length, so date_bin cannot bucket by them; \
                     use days or weeks",
                ))
            }
            _ => return Err(reject("the unit is not one of the accepted units")),
        };
        let count: u64 = digits
            .parse()
            .map_err(|_| reject("it is longer than 36500 days"))?;
        if count == 0 {
            return Err(reject("it must be greater than zero"));
        }
        count
            .checked_mul(unit_seconds)
            .filter(|&seconds| seconds <= MAX_SECONDS)
            .map(|seconds| Self { seconds })
            .ok_or_else(|| reject("it is longer than 36500 days"))
    }

    /// An interval of `seconds` seconds (1 second up to 36,500 days).
    pub fn from_secs(seconds: u64) -> Result<Self> {
        if seconds == 0 || seconds > MAX_SECONDS {
            return Err(Error::InvalidInterval {
                value: format!("{seconds} seconds"),
                reason: if seconds == 0 {
                    "it must be greater than zero"
                } else {
                    "it is longer than 36500 days"
                },
            });
        }
        Ok(Self { seconds })
    }

    /// The length in seconds.
    pub fn as_secs(&self) -> u64 {
        self.seconds
    }

    /// The length as a [`Duration`].
    pub fn as_duration(&self) -> Duration {
        Duration::from_secs(self.seconds)
    }

    /// An SQL interval literal built from the number, e.g. `INTERVAL '5 minutes'`.
    pub fn to_sql(&self) -> String {
        format!("INTERVAL '{self}'")
    }

    /// A suffix for names built from the interval, e.g. `5_minutes`, `1_hour`.
    pub fn suffix(&self) -> String {
        self.to_string().replace(' ', "_")
    }

    /// (count, unit) in the largest unit that divides the interval exactly.
    fn normalized(&self) -> (u64, &'static str) {
        let (unit, singular, plural) = UNITS
            .iter()
            .copied()
            .find(|(unit, _, _)| self.seconds % unit == 0)
            .unwrap_or(UNITS[UNITS.len() - 1]);
        let count = self.seconds / unit;
        (count, if count == 1 { singular } else { plural })
    }

    /// `self + other`, kept within the accepted range.
    pub(crate) fn saturating_add(self, other: Self) -> Self {
        Self {
            seconds: self.seconds.saturating_add(other.seconds).min(MAX_SECONDS),
        }
    }

    /// `self * factor`, kept within the accepted range.
    pub(crate) fn saturating_mul(self, factor: u64) -> Self {
        Self {
            seconds: self.seconds.saturating_mul(factor).min(MAX_SECONDS),
        }
    }
}

impl fmt::Display for PgInterval {
    /// The normalized text, e.g. `5 minutes`, `1 hour`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (count, unit) = self.normalized();
        write!(f, "{count} {unit}")
    }
}

impl fmt::Debug for PgInterval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgInterval({self})")
    }
}

impl FromStr for PgInterval {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        Self::parse(text)
    }
}

impl<'de> serde::Deserialize<'de> for PgInterval {
    /// Deserializes from text in any accepted form, so a config file with
    /// `time_buckets = ["1 minute", "5 minutes"]` is checked when it is read.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for PgInterval {
    /// Serializes as the normalized text, e.g. `"5 minutes"`.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_forms() {
        let cases = [
            ("1 minute", 60, "1 minute", "1_minute"),
            ("5 minutes", 300, "5 minutes", "5_minutes"),
            ("1 hour", 3600, "1 hour", "1_hour"),
            ("30 seconds", 30, "30 seconds", "30_seconds"),
            ("1 day", 86_400, "1 day", "1_day"),
            ("2 weeks", 1_209_600, "2 weeks", "2_weeks"),
            ("5m", 300, "5 minutes", "5_minutes"),
            ("1h", 3600, "1 hour", "1_hour"),
            ("30s", 30, "30 seconds", "30_seconds"),
            ("1d", 86_400, "1 day", "1_day"),
            ("2w", 1_209_600, "2 weeks", "2_weeks"),
            ("  15  MIN ", 900, "15 minutes", "15_minutes"),
            ("1 minutes", 60, "1 minute", "1_minute"),
            ("60 minutes", 3600, "1 hour", "1_hour"),
            ("90 minutes", 5400, "90 minutes", "90_minutes"),
            ("14 days", 1_209_600, "2 weeks", "2_weeks"),
            ("05 secs", 5, "5 seconds", "5_seconds"),
            ("2 hrs", 7200, "2 hours", "2_hours"),
            ("36500 days", MAX_SECONDS, "36500 days", "36500_days"),
        ];
        for (text, seconds, display, suffix) in cases {
            let interval = PgInterval::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(interval.as_secs(), seconds, "{text}");
            assert_eq!(interval.to_string(), display, "{text}");
            assert_eq!(interval.suffix(), suffix, "{text}");
            assert_eq!(interval.to_sql(), format!("INTERVAL '{display}'"), "{text}");
            assert_eq!(text.parse::<PgInterval>().unwrap(), interval);
        }
    }

    #[test]
    fn rejected_forms_name_the_value_and_the_reason() {
        let cases = [
            (
                "1 minute; DROP TABLE x",
                "the unit is not one of the accepted units",
            ),
            ("0 minutes", "it must be greater than zero"),
            ("-5 minutes", "a sign is not allowed"),
            ("+5 minutes", "a sign is not allowed"),
            ("five minutes", "it must start with a whole number"),
            ("1 month", "months and years have no fixed length"),
            ("2 years", "months and years have no fixed length"),
            ("1.5 hours", "fractions are not accepted"),
            ("", "it is empty"),
            ("   ", "it is empty"),
            ("5", "it has no unit"),
            ("5 fortnights", "the unit is not one of the accepted units"),
            (
                "1 minute 30 seconds",
                "the unit is not one of the accepted units",
            ),
            ("5 minutes'", "the unit is not one of the accepted units"),
            ("36501 days", "it is longer than 36500 days"),
            (
                "99999999999999999999999 seconds",
                "it is longer than 36500 days",
            ),
        ];
        for (text, reason) in cases {
            let err = PgInterval::parse(text).expect_err(text);
            let message = err.to_string();
            assert!(
                message.starts_with(&format!("invalid bucket interval {text:?}: {reason}")),
                "{text}: {message}"
            );
            assert!(message.contains("\"5 minutes\""), "{message}");
        }
    }

    #[test]
    fn from_secs_checks_the_range() {
        assert_eq!(PgInterval::from_secs(120).unwrap().to_string(), "2 minutes");
        assert!(PgInterval::from_secs(0).is_err());
        assert!(PgInterval::from_secs(MAX_SECONDS + 1).is_err());
    }

    #[test]
    fn arithmetic_saturates_at_the_maximum() {
        let hour = PgInterval::parse("1h").unwrap();
        assert_eq!(
            hour.saturating_mul(2).saturating_add(hour).as_secs(),
            3 * HOUR
        );
        assert_eq!(hour.saturating_mul(u64::MAX).as_secs(), MAX_SECONDS);
    }

    #[test]
    fn serde_round_trip_validates() {
        let parsed: Vec<PgInterval> =
            serde_json::from_str(r#"["1 minute", "5m", "1 hour"]"#).unwrap();
        assert_eq!(
            serde_json::to_string(&parsed).unwrap(),
            r#"["1 minute","5 minutes","1 hour"]"#
        );
        let err = serde_json::from_str::<PgInterval>(r#""1 month""#).unwrap_err();
        assert!(
            err.to_string()
                .contains("invalid bucket interval \"1 month\""),
            "{err}"
        );
    }

    #[test]
    fn a_bad_interval_in_config_is_an_error_when_the_config_is_read() {
        #[derive(Debug, serde::Deserialize)]
        struct Config {
            time_buckets: Vec<PgInterval>,
        }
        let ok: Config = serde_json::from_str(r#"{"time_buckets": ["1 minute", "5m"]}"#).unwrap();
        assert_eq!(ok.time_buckets[1].to_string(), "5 minutes");
        let err = serde_json::from_str::<Config>(r#"{"time_buckets": ["1 minute", "5 minuts"]}"#)
            .unwrap_err();
        assert!(
            err.to_string().starts_with(
                "invalid bucket interval \"5 minuts\": the unit is not one of the accepted units"
            ),
            "{err}"
        );
    }
}
