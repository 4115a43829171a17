//! The default source: `n` voltage sensors `D100`, `D101`, … sampled every `interval`, at
//! multiples of it since the Unix epoch. A value is a pure function of the tag and the instant
//! (a one-hour sine, a level per tag and a hashed wobble, to 4 decimals), and about 1 % of the
//! samples have `qc = 0`: a window always yields the same rows.

use std::f64::consts::TAU;
use std::time::Duration;

use chrono::DateTime;

use crate::{Reading, TagSchema, Time};

/// One hour in nanoseconds: the period of the sine.
const PERIOD: i64 = 3_600_000_000_000;

/// Simulated sensor tags sampled at a fixed interval.
#[derive(Debug, Clone, PartialEq)]
pub struct Simulator {
    tags: Vec<TagSchema>,
    interval: i64,
}

impl Default for Simulator {
    /// 9 tags, `D100` … `D108`, every 10 s: 3,240 readings an hour.
    fn default() -> Self {
        Self::new(9, Duration::from_secs(10)).expect("10 s is a valid interval")
    }
}

impl Simulator {
    /// `tag_count` tags (`D100`, …, ids `1`, …, unit `V`, type `float`) sampled every
    /// `interval`, which must be positive and fit in 64-bit nanoseconds.
    pub fn new(tag_count: usize, interval: Duration) -> anyhow::Result<Self> {
        let nanos = i64::try_from(interval.as_nanos()).ok().filter(|&n| n > 0);
        let invalid = || anyhow::anyhow!("invalid simulator interval {interval:?}: use e.g. 10 s");
        let tag = |i: usize| TagSchema {
            name: format!("D{}", 100 + i),
            tag_id: (i + 1).to_string(),
            data_type: "float".into(),
            unit: "V".into(),
        };
        let tags = (0..tag_count).map(tag).collect();
        let interval = nanos.ok_or_else(invalid)?;
        Ok(Self { tags, interval })
    }

    /// The tags, `D100` first.
    pub fn tags(&self) -> &[TagSchema] {
        &self.tags
    }

    /// The newest sampling instant at or before `now` (`None` outside 1677–2262).
    pub fn newest(&self, now: Time) -> Option<Time> {
        let now = now.timestamp_nanos_opt()?;
        Some(DateTime::from_timestamp_nanos(
            now.div_euclid(self.interval) * self.interval,
        ))
    }

    /// Every reading in `[start, end)`, by time, then tag (nothing outside 1677–2262).
    pub fn readings(&self, start: Time, end: Time) -> Vec<Reading> {
        let (Some(start), Some(end)) = (start.timestamp_nanos_opt(), end.timestamp_nanos_opt())
        else {
            return Vec::new();
        };
        // The instants k × interval in the window.
        let step = self.interval;
        let first = start.div_euclid(step) + i64::from(start.rem_euclid(step) != 0);
        let instants = (first..=end.saturating_sub(1).div_euclid(step)).map(|k| k * step);
        let tags = self.tags.iter().enumerate();
        let at = |t| tags.clone().map(move |(index, tag)| sample(index, tag, t));
        instants.flat_map(at).collect()
    }
}

/// The reading of tag number `index` at `t` ns since the epoch: a pure function of both.
fn sample(index: usize, tag: &TagSchema, t: i64) -> Reading {
    let tag_hash = mix((index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let h = mix(tag_hash ^ t as u64);
    let (level, amplitude) = (220.0 + 2.5 * index as f64, 5.0 + 0.5 * (index % 4) as f64);
    let phase = TAU * (t.rem_euclid(PERIOD) as f64 / PERIOD as f64) + 0.7 * index as f64;
    let wobble = ((h >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 0.4;
    let value = ((level + amplitude * phase.sin() + wobble) * 1e4).round() / 1e4;
    let (ts, tag_name) = (DateTime::from_timestamp_nanos(t), tag.name.clone());
    Reading {
        ts,
        tag_name,
        value,
        qc: if mix(h) % 100 == 0 { 0 } else { 1 },
    }
}

/// SplitMix64's finalizer: a fast, well-mixed, platform-independent hash.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
