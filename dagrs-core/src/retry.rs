//! Retry policies: how often and how long to wait before an asset is tried again.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How the delay grows from one retry to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backoff {
    /// The same delay before every retry.
    #[default]
    Fixed,
    /// `delay × n` before retry `n`.
    Linear,
    /// `delay × 2^(n-1)` before retry `n`.
    Exponential,
}

/// A retry policy, given to an asset with `#[asset(retry = ...)]`, or for one run in its
/// run config (`retries: { influx_data: { max_retries: 5, delay: 30s, backoff: exponential } }`,
/// durations as `500ms`, `30s`, `5m`, `1h` or whole seconds).
///
/// ```
/// use dagrs_core::Retry;
/// use std::time::Duration;
///
/// // 3 retries after 60 s, 120 s and 240 s, each moved by up to ±10 %, never over 5 minutes.
/// let retry = Retry::exponential(3, Duration::from_secs(60))
///     .jitter(0.1)
///     .max_delay(Duration::from_secs(300));
/// assert_eq!(retry.max_retries(), 3);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    max_retries: u32,
    delay: Duration,
    backoff: Backoff,
    jitter: f64,
    max_delay: Option<Duration>,
}

impl Retry {
    /// No retries: the first failure is final. The default.
    pub const fn none() -> Self {
        Retry {
            max_retries: 0,
            delay: Duration::ZERO,
            backoff: Backoff::Fixed,
            jitter: 0.0,
            max_delay: None,
        }
    }

    /// Up to `max_retries` retries, waiting `delay` before each.
    pub const fn fixed(max_retries: u32, delay: Duration) -> Self {
        Self::with_backoff(max_retries, delay, Backoff::Fixed)
    }

    /// Up to `max_retries` retries, waiting `delay`, `2 × delay`, `3 × delay`, ...
    pub const fn linear(max_retries: u32, delay: Duration) -> Self {
        Self::with_backoff(max_retries, delay, Backoff::Linear)
    }

    /// Up to `max_retries` retries, waiting `delay`, `2 × delay`, `4 × delay`, ...
    pub const fn exponential(max_retries: u32, delay: Duration) -> Self {
        Self::with_backoff(max_retries, delay, Backoff::Exponential)
    }

    /// Up to `max_retries` retries with the given first delay and backoff.
    pub const fn with_backoff(max_retries: u32, delay: Duration, backoff: Backoff) -> Self {
        Retry {
            max_retries,
            delay,
            backoff,
            jitter: 0.0,
            max_delay: None,
        }
    }

    /// Moves each delay randomly by up to `± fraction` of itself (clamped to `0.0..=1.0`),
    /// so that many failing steps do not retry in lockstep.
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = if fraction.is_nan() {
            0.0
        } else {
            fraction.clamp(0.0, 1.0)
        };
        self
    }

    /// Caps every delay at `max`.
    pub fn max_delay(mut self, max: Duration) -> Self {
        self.max_delay = Some(max);
        self
    }

    /// How many times a failed attempt is retried.
    pub fn max_retries(&self) -> u32 {
        self.max_retries
    }

    /// The backoff.
    pub fn backoff(&self) -> Backoff {
        self.backoff
    }

    /// The delay before retry number `retry` (1 for the first retry), before jitter.
    pub fn base_delay(&self, retry: u32) -> Duration {
        let retry = retry.max(1);
        let delay = match self.backoff {
            Backoff::Fixed => self.delay,
            Backoff::Linear => self.delay.saturating_mul(retry),
            Backoff::Exponential => {
                let factor = 2u32.checked_pow(retry - 1).unwrap_or(u32::MAX);
                self.delay.saturating_mul(factor)
            }
        };
        self.cap(delay)
    }

    /// The delay before retry number `retry`, with jitter applied.
    pub fn delay(&self, retry: u32) -> Duration {
        let base = self.base_delay(retry);
        if self.jitter == 0.0 {
            return base;
        }
        let spread = (fastrand::f64() * 2.0 - 1.0) * self.jitter;
        self.cap(base.mul_f64((1.0 + spread).max(0.0)))
    }

    fn cap(&self, delay: Duration) -> Duration {
        match self.max_delay {
            Some(max) => delay.min(max),
            None => delay,
        }
    }
}

impl Default for Retry {
    fn default() -> Self {
        Self::none()
    }
}

/// The most retries a run config may ask for.
pub const MAX_RETRIES: u32 = 1_000;

/// The longest delay a run config may ask for.
pub const MAX_DELAY: Duration = Duration::from_secs(7 * 24 * 3600);

/// A retry policy as written in a run config.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryConfig {
    max_retries: u32,
    #[serde(default, with = "duration_text")]
    delay: Duration,
    #[serde(default)]
    backoff: Backoff,
    #[serde(default)]
    jitter: f64,
    #[serde(
        default,
        with = "optional_duration_text",
        skip_serializing_if = "Option::is_none"
    )]
    max_delay: Option<Duration>,
}

impl Serialize for Retry {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        RetryConfig {
            max_retries: self.max_retries,
            delay: self.delay,
            backoff: self.backoff,
            jitter: self.jitter,
            max_delay: self.max_delay,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Retry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let config = RetryConfig::deserialize(deserializer)?;
        if config.max_retries > MAX_RETRIES {
            return Err(D::Error::custom(format!(
                "max_retries {} is more than the {MAX_RETRIES} allowed",
                config.max_retries
            )));
        }
        for delay in std::iter::once(config.delay).chain(config.max_delay) {
            if delay > MAX_DELAY {
                return Err(D::Error::custom(format!(
                    "a retry delay of {} is longer than the {} allowed",
                    humantime::format_duration(delay),
                    humantime::format_duration(MAX_DELAY)
                )));
            }
        }
        if !(0.0..=1.0).contains(&config.jitter) {
            return Err(D::Error::custom(format!(
                "jitter {} is not a fraction between 0 and 1",
                config.jitter
            )));
        }
        let mut retry = Retry::with_backoff(config.max_retries, config.delay, config.backoff)
            .jitter(config.jitter);
        retry.max_delay = config.max_delay;
        Ok(retry)
    }
}

/// Durations in config as text (`500ms`, `30s`, `5m`, `1h 30m`) or whole seconds.
pub(crate) mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `500ms`, `30s`, `1h 30m`.
    pub(crate) fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*value))
    }

    /// Reads text or whole seconds.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Seconds(u64),
            Text(String),
        }
        match Form::deserialize(d)? {
            Form::Seconds(secs) => Ok(Duration::from_secs(secs)),
            Form::Text(text) => humantime::parse_duration(&text).map_err(|e| {
                serde::de::Error::custom(format!(
                    "`{}` is not a duration ({e}); write e.g. `500ms`, `30s`, `5m` or `1h`",
                    crate::text::bounded(&text, crate::text::ECHO_LIMIT)
                ))
            }),
        }
    }
}

mod optional_duration_text {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        value: &Option<Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => super::duration_text::serialize(value, s),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        super::duration_text::deserialize(d).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn backoffs_grow_as_documented() {
        let fixed = Retry::fixed(3, S);
        let linear = Retry::linear(3, S);
        let exp = Retry::exponential(4, S);
        assert_eq!(
            (1..=3).map(|n| fixed.delay(n)).collect::<Vec<_>>(),
            [S, S, S]
        );
        assert_eq!(
            (1..=3).map(|n| linear.delay(n)).collect::<Vec<_>>(),
            [S, 2 * S, 3 * S]
        );
        assert_eq!(
            (1..=4).map(|n| exp.delay(n)).collect::<Vec<_>>(),
            [S, 2 * S, 4 * S, 8 * S]
        );
    }

    #[test]
    fn max_delay_caps_and_huge_retries_saturate() {
        let retry = Retry::exponential(100, S).max_delay(10 * S);
        assert_eq!(retry.delay(4), 8 * S);
        assert_eq!(retry.delay(5), 10 * S);
        assert_eq!(retry.delay(90), 10 * S);
    }

    #[test]
    fn policies_read_from_config_and_round_trip() {
        let retry: Retry = serde_json::from_value(serde_json::json!({
            "max_retries": 5, "delay": "30s", "backoff": "exponential", "max_delay": "5m"
        }))
        .unwrap();
        assert_eq!(
            retry,
            Retry::exponential(5, 30 * S).max_delay(Duration::from_secs(300))
        );
        let again: Retry = serde_json::from_value(serde_json::to_value(&retry).unwrap()).unwrap();
        assert_eq!(again, retry);
        let seconds: Retry =
            serde_json::from_value(serde_json::json!({"max_retries": 1, "delay": 2})).unwrap();
        assert_eq!(seconds, Retry::fixed(1, 2 * S));
        for (bad, says) in [
            (
                serde_json::json!({"max_retries": 4294967295u32}),
                "more than",
            ),
            (
                serde_json::json!({"max_retries": 1, "delay": "30 parsecs"}),
                "not a duration",
            ),
            (
                serde_json::json!({"max_retries": 1, "delay": "9999h"}),
                "longer than",
            ),
            (
                serde_json::json!({"max_retries": 1, "jitter": 2.0}),
                "between 0 and 1",
            ),
            (
                serde_json::json!({"max_retries": 1, "tries": 2}),
                "unknown field",
            ),
        ] {
            let err = serde_json::from_value::<Retry>(bad)
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{err}");
        }
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let retry = Retry::fixed(1, 10 * S).jitter(0.2);
        let delays: Vec<Duration> = (0..200).map(|_| retry.delay(1)).collect();
        assert!(delays.iter().all(|d| *d >= 8 * S && *d <= 12 * S));
        assert!(delays.iter().any(|d| *d != 10 * S), "jitter moved no delay");
    }
}
