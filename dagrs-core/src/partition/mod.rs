//! Partitions: an asset split into slices materialized separately — time windows, static
//! keys, dynamic keys added at run time, or a product of those (any number of dimensions,
//! at most one of them time).
//!
//! Every partition has coordinates: its discrete keys joined by `|` (`""` when there are
//! none), and a span `[start, end)` — its window in seconds since the Unix epoch, or `[0, 1)`
//! without a time dimension. Sets of partitions ([`PartitionSet`]) are ranges over those
//! coordinates, so status, runs and backfills stay the size of their ranges, not of their
//! partitions.

pub(crate) mod define;
mod definition;
pub(crate) mod mapping;
mod ranges;
pub(crate) mod status;
mod time;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

pub use definition::{Chunks, PartitionsDefinition};
pub use mapping::PartitionMapping;
pub use ranges::{PartitionSet, RangeSet};
pub use status::{AssetPartitions, PartitionStatus};
pub use time::{TimeWindow, TimeWindows};

/// Separates the dimensions of a multi-dimensional key: `eu|2026-11-01`.
pub const DIMENSION_SEPARATOR: char = '|';

/// Separates the two ends of a range of keys: `START...END`, END excluded.
pub const RANGE_SEPARATOR: &str = "...";

/// A contiguous run of partitions with the same discrete keys: what one run targets, and
/// what a materialization covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PartitionRange {
    /// As users write it: one key, or `START...END` (END excluded).
    pub key: String,
    /// The discrete keys, joined by `|` (`""` when there are none).
    pub dims: String,
    /// The first window's start, in seconds since the Unix epoch (`0` without time).
    pub start: i64,
    /// The last window's end (`1` without time).
    pub end: i64,
}

impl PartitionRange {
    /// The range as a set.
    pub fn to_set(&self) -> PartitionSet {
        PartitionSet::of(self.dims.clone(), RangeSet::span(self.start, self.end))
    }
}

impl fmt::Display for PartitionRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key)
    }
}

/// What partitions exist depends on the time and on stored dynamic keys: this is both.
#[derive(Debug, Clone, Default)]
pub struct PartitionContext {
    /// Now, in seconds since the Unix epoch.
    pub now: i64,
    /// The stored keys of each dynamic partitions definition, by name, in the order added.
    pub dynamic: BTreeMap<String, Vec<String>>,
}

impl PartitionContext {
    /// The context at `now` (seconds since the Unix epoch) with the stored keys of every
    /// dynamic dimension of `defs`.
    pub async fn load<'a>(
        storage: &dyn crate::storage::Storage,
        defs: impl IntoIterator<Item = &'a PartitionsDefinition>,
        now: i64,
    ) -> Result<Self, crate::error::Error> {
        let mut ctx = PartitionContext {
            now,
            dynamic: BTreeMap::new(),
        };
        for def in defs {
            for name in def.dynamic_names() {
                if !ctx.dynamic.contains_key(name) {
                    let keys = storage.dynamic_partitions(name).await?;
                    ctx.dynamic.insert(name.to_owned(), keys);
                }
            }
        }
        Ok(ctx)
    }
}

/// The one partitions definition the partitioned assets among `specs` share: `None` when
/// none is partitioned; an error naming two assets partitioned differently.
pub(crate) fn shared<'a>(
    specs: impl IntoIterator<Item = &'a crate::AssetSpec>,
) -> Result<Option<&'a PartitionsDefinition>, String> {
    let mut first: Option<(&str, &PartitionsDefinition)> = None;
    for spec in specs {
        let Some(def) = &spec.partitions else {
            continue;
        };
        match first {
            None => first = Some((spec.key.as_str(), def)),
            Some((key, d)) if d != def => {
                return Err(format!(
                    "`{key}` and `{}` are partitioned differently; a run materializes \
                     partitions of one definition: select them separately",
                    spec.key
                ))
            }
            Some(_) => {}
        }
    }
    Ok(first.map(|(_, def)| def))
}

/// Whether `key` can be a static or dynamic partition key.
pub(crate) fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 255
        && !key.contains(DIMENSION_SEPARATOR)
        && !key.contains(RANGE_SEPARATOR)
        && !key.contains(',')
        && !key.chars().any(char::is_control)
}
