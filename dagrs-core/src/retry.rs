//! Retry policies: how often and how long to wait before an asset is tried again.

use std::time::Duration;

/// How the delay grows from one retry to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backoff {
    /// The same delay before every retry.
    Fixed,
    /// `delay × n` before retry `n`.
    Linear,
    /// `delay × 2^(n-1)` before retry `n`.
    Exponential,
}

/// A retry policy, given to an asset with `#[asset(retry = ...)]`.
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
    fn jitter_stays_within_its_fraction() {
        let retry = Retry::fixed(1, 10 * S).jitter(0.2);
        let delays: Vec<Duration> = (0..200).map(|_| retry.delay(1)).collect();
        assert!(delays.iter().all(|d| *d >= 8 * S && *d <= 12 * S));
        assert!(delays.iter().any(|d| *d != 10 * S), "jitter moved no delay");
    }
}
