//! The EcoAnP pipeline's default source: a deterministic, built-in sensor
//! simulator, so the example runs without an InfluxDB.
//!
//! It simulates `n` voltage sensors named `D100`, `D101`, … `D(100+n-1)`
//! (unit `"V"`, type `"float"`, tag ids `"1"`, `"2"`, …) that each sample once
//! every `interval`, at instants aligned to multiples of the interval since
//! the Unix epoch. A sample's value is a pure function of the seed, the tag
//! and the timestamp — a slow sine (period one hour, a different phase and
//! level per tag) plus a small hash-based wobble, rounded to 4 decimals — so
//! the same window always yields the same rows, whoever asks and in whatever
//! order. About 1 % of the samples (chosen by the same hash) carry `qc = 0`
//! ("bad"); the rest carry `qc = 1`.
//!
//! Nothing here blocks or allocates beyond the returned rows: one hour of the
//! default 9 tags at 10 s is 3,240 rows.

use std::f64::consts::TAU;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::source::{Reading, TagSchema};

/// How many tags the default simulator has (`D100` … `D108`).
pub const DEFAULT_TAG_COUNT: usize = 9;

/// The default sampling interval: 10 seconds.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// The number in the first tag's name (`D100`).
pub const FIRST_TAG_NUMBER: usize = 100;

/// The unit of every simulated tag.
pub const UNIT: &str = "V";

/// The data type of every simulated tag.
pub const DATA_TYPE: &str = "float";

const NANOS_PER_SEC: i128 = 1_000_000_000;
/// The period of the simulated sine: one hour.
const PERIOD_NANOS: i128 = 3_600 * NANOS_PER_SEC;

/// Why a simulator could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimulatorError {
    /// The sampling interval was zero.
    #[error("the simulator's sampling interval must be positive, got 0 s; use e.g. 10 s")]
    ZeroInterval,
    /// The sampling interval does not fit in 64-bit nanoseconds (~292 years).
    #[error(
        "the simulator's sampling interval of {0:?} is too long; it must fit in \
         64-bit nanoseconds (about 292 years): use e.g. 10 s"
    )]
    IntervalTooLong(Duration),
}

/// A deterministic simulator of `n` sensor tags sampled every `interval`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Simulator {
    tags: Vec<TagSchema>,
    interval_nanos: i64,
    seed: u64,
}

impl Default for Simulator {
    /// 9 tags (`D100` … `D108`) sampled every 10 s, seed 0.
    fn default() -> Self {
        Self {
            tags: make_tags(DEFAULT_TAG_COUNT),
            interval_nanos: DEFAULT_INTERVAL.as_nanos() as i64,
            seed: 0,
        }
    }
}

impl Simulator {
    /// A simulator of `tag_count` tags (`D100` …) sampled every `interval`
    /// (seed 0). Fails when `interval` is zero or longer than ~292 years.
    pub fn new(tag_count: usize, interval: Duration) -> Result<Self, SimulatorError> {
        if interval.is_zero() {
            return Err(SimulatorError::ZeroInterval);
        }
        let interval_nanos = i64::try_from(interval.as_nanos())
            .map_err(|_| SimulatorError::IntervalTooLong(interval))?;
        Ok(Self {
            tags: make_tags(tag_count),
            interval_nanos,
            seed: 0,
        })
    }

    /// The same simulator with another seed: a different seed gives
    /// different (but again deterministic) values and bad-sample choices.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The simulated tags, in order `D100`, `D101`, …
    pub fn tags(&self) -> &[TagSchema] {
        &self.tags
    }

    /// The sampling interval.
    pub fn interval(&self) -> Duration {
        Duration::from_nanos(self.interval_nanos as u64)
    }

    /// The seed the values are derived from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Every reading of every tag in the half-open window `[start, end)`:
    /// one per tag at each multiple of the interval (since the Unix epoch)
    /// that falls in the window, ordered by timestamp, then by tag
    /// (`D100` first). A window with `end <= start` yields no rows.
    pub fn readings(&self, start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<Reading> {
        let (start_ns, end_ns) = (to_nanos(start), to_nanos(end));
        if end_ns <= start_ns || self.tags.is_empty() {
            return Vec::new();
        }
        let step = i128::from(self.interval_nanos);
        // The first multiple of the interval at or after `start`.
        let first = start_ns.div_euclid(step) * step
            + if start_ns.rem_euclid(step) == 0 {
                0
            } else {
                step
            };
        let steps = if first < end_ns {
            (end_ns - first - 1) / step + 1
        } else {
            0
        };
        let capacity = usize::try_from(steps)
            .unwrap_or(usize::MAX)
            .saturating_mul(self.tags.len());
        let mut rows = Vec::with_capacity(capacity);
        let mut t = first;
        while t < end_ns {
            if let Some(ts) = from_nanos(t) {
                for (index, tag) in self.tags.iter().enumerate() {
                    let (value, qc) = self.sample(index, t);
                    rows.push(Reading {
                        ts,
                        tag_name: tag.name.clone(),
                        value,
                        qc,
                    });
                }
            }
            t += step;
        }
        rows
    }

    /// The value and quality code of tag number `index` at `t_ns`
    /// nanoseconds since the epoch: a pure function of (seed, index, t_ns).
    fn sample(&self, index: usize, t_ns: i128) -> (f64, i32) {
        let tag_hash = mix(self.seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let h = mix(tag_hash ^ (t_ns as u64) ^ mix((t_ns >> 64) as u64));
        let level = 220.0 + 2.5 * index as f64;
        let amplitude = 5.0 + 0.5 * (index % 4) as f64;
        let phase =
            TAU * (t_ns.rem_euclid(PERIOD_NANOS) as f64 / PERIOD_NANOS as f64) + 0.7 * index as f64;
        // A uniform number in [-0.2, 0.2) from the hash's top 53 bits.
        let wobble = ((h >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 0.4;
        let value = ((level + amplitude * phase.sin() + wobble) * 1e4).round() / 1e4;
        let qc = if mix(h).is_multiple_of(100) { 0 } else { 1 };
        (value, qc)
    }
}

fn make_tags(count: usize) -> Vec<TagSchema> {
    (0..count)
        .map(|i| {
            let name = format!("D{}", FIRST_TAG_NUMBER + i);
            TagSchema {
                measurement: name.clone(),
                name,
                tag_id: (i + 1).to_string(),
                data_type: DATA_TYPE.to_owned(),
                unit: UNIT.to_owned(),
            }
        })
        .collect()
}

/// SplitMix64's finalizer: a fast, well-mixed, platform-independent hash.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn to_nanos(ts: DateTime<Utc>) -> i128 {
    i128::from(ts.timestamp()) * NANOS_PER_SEC + i128::from(ts.timestamp_subsec_nanos())
}

fn from_nanos(t: i128) -> Option<DateTime<Utc>> {
    let secs = i64::try_from(t.div_euclid(NANOS_PER_SEC)).ok()?;
    let nanos = u32::try_from(t.rem_euclid(NANOS_PER_SEC)).ok()?;
    DateTime::from_timestamp(secs, nanos)
}
