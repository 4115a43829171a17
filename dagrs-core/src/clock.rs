//! Time as schedules and sensors see it: the system clock, or a clock a test moves by hand.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::lock;

/// Where schedules, sensors and the daemon read the time. Tests give the daemon a
/// [`ManualClock`] and move it, so hourly and daily schedules, missed ticks and daylight
/// saving changes are tested without waiting.
pub trait Clock: Send + Sync + 'static {
    /// The current time, to the microsecond.
    fn now(&self) -> DateTime<Utc>;

    /// How long to wait, in real time, until the clock shows `at` (zero when it is past).
    fn until(&self, at: DateTime<Utc>) -> Duration {
        (at - self.now()).to_std().unwrap_or_default()
    }
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        crate::event::now()
    }
}

/// A clock that shows what it is set to, for tests: [`set`](Self::set) and
/// [`advance`](Self::advance) move it; nothing else does.
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    /// A clock showing `at`.
    pub fn new(at: DateTime<Utc>) -> Self {
        ManualClock(Mutex::new(at))
    }

    /// Sets the time.
    pub fn set(&self, at: DateTime<Utc>) {
        *lock(&self.0) = at;
    }

    /// Moves the time forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = lock(&self.0);
        *now += chrono::Duration::from_std(by).unwrap_or(chrono::Duration::MAX);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *lock(&self.0)
    }

    /// A manual clock moves only by hand: nothing is worth waiting for.
    fn until(&self, _at: DateTime<Utc>) -> Duration {
        Duration::ZERO
    }
}

/// A clock that runs `speed` times faster than the system clock from `start`, for tests that
/// run a daemon as a process over hours of schedule time in seconds.
#[derive(Debug, Clone, Copy)]
pub struct ScaledClock {
    start: DateTime<Utc>,
    real_start: DateTime<Utc>,
    speed: u32,
}

impl ScaledClock {
    /// A clock showing `start` now, moving `speed` times as fast as real time (at least 1).
    pub fn new(start: DateTime<Utc>, speed: u32) -> Self {
        ScaledClock {
            start,
            real_start: crate::event::now(),
            speed: speed.max(1),
        }
    }
}

impl Clock for ScaledClock {
    fn now(&self) -> DateTime<Utc> {
        let real = crate::event::now() - self.real_start;
        self.start + real * self.speed as i32
    }

    fn until(&self, at: DateTime<Utc>) -> Duration {
        (at - self.now()).to_std().unwrap_or_default() / self.speed
    }
}
