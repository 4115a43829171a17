//! The functions that build partitions definitions, as written in `#[asset(partitions = ...)]`.

use super::{PartitionsDefinition, TimeWindows};

/// One partition per minute from `start` (e.g. `"2024-01-01T00:00Z"`); keys `2024-01-01-00:00`.
pub fn minutely(start: &str) -> TimeWindows {
    TimeWindows::minutely(start)
}

/// One partition per hour from `start` (e.g. `"2024-01-01T00:00Z"`); keys `2024-01-01-00:00`.
pub fn hourly(start: &str) -> TimeWindows {
    TimeWindows::hourly(start)
}

/// One partition per day from `start` (e.g. `"2024-01-01"`); keys `2024-01-01`.
pub fn daily(start: &str) -> TimeWindows {
    TimeWindows::daily(start)
}

/// One partition per week, Sunday to Sunday, from `start`; keys `2024-01-07`.
pub fn weekly(start: &str) -> TimeWindows {
    TimeWindows::weekly(start)
}

/// One partition per month from `start`; keys `2024-01-01`.
pub fn monthly(start: &str) -> TimeWindows {
    TimeWindows::monthly(start)
}

/// One partition between consecutive times of cron `expression` (5 fields, 6 with seconds
/// first), from `start`; keys `2024-01-01-06:00`.
pub fn cron(expression: &str, start: &str) -> TimeWindows {
    TimeWindows::cron(expression, start)
}

/// One partition per key, in order.
pub fn static_keys<K: Into<String>>(keys: impl IntoIterator<Item = K>) -> PartitionsDefinition {
    PartitionsDefinition::statics(keys.into_iter().map(Into::into).collect())
}

/// Keys added at run time and stored under `name`
/// ([`Instance::add_dynamic_partitions`](crate::Instance::add_dynamic_partitions), or a
/// sensor's result).
pub fn dynamic(name: &str) -> PartitionsDefinition {
    PartitionsDefinition::dynamic(name.to_owned())
}

/// The product of named dimensions, any number of them, at most one with time windows. Keys
/// join one key per dimension with `|`, in the order given: `eu|s1|2024-01-01`.
pub fn multi<N: Into<String>>(
    dimensions: impl IntoIterator<Item = (N, PartitionsDefinition)>,
) -> PartitionsDefinition {
    PartitionsDefinition::multi(
        dimensions
            .into_iter()
            .map(|(name, def)| (name.into(), def))
            .collect(),
    )
}
