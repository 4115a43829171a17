//! Partition mappings: which partitions of an upstream asset a partition of a downstream
//! asset depends on.

use std::collections::BTreeMap;

use super::definition::Kind;
use super::{PartitionContext, PartitionRange, PartitionSet, PartitionsDefinition, RangeSet};

/// Which partitions of a dependency a partition depends on; set per dependency with
/// `#[asset(mappings(dep = PartitionMapping::...))]` or
/// [`AssetSpec::mapping`](crate::AssetSpec::mapping).
///
/// Without one: the same partitions when both assets are partitioned alike; the overlapping
/// windows when both have time windows of different lengths (a daily asset takes the 24
/// hours of an hourly one); every partition when only the dependency is partitioned. Any
/// other pair is a `Definitions::build` error asking for a mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionMapping {
    /// The partition with the same key.
    Identity,
    /// The upstream windows that overlap the partition's window.
    TimeWindow,
    /// Every upstream partition.
    All,
    /// The `n` upstream windows that end with the partition's window (a rolling window), or
    /// the `n` latest for an unpartitioned asset.
    LastN(u32),
    /// Explicit pairs: upstream key → the downstream keys that depend on it.
    Static(BTreeMap<String, Vec<String>>),
}

impl PartitionMapping {
    /// The `n` upstream windows ending with the partition's own.
    pub fn last(n: u32) -> Self {
        PartitionMapping::LastN(n)
    }

    /// Explicit pairs of upstream key → downstream key.
    pub fn static_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (up, down) in pairs {
            map.entry(up.to_owned()).or_default().push(down.to_owned());
        }
        PartitionMapping::Static(map)
    }

    /// The mapping used when none is given, or why there is none.
    pub(crate) fn default_for(
        down: Option<&PartitionsDefinition>,
        up: &PartitionsDefinition,
    ) -> Result<Self, String> {
        match down {
            None => Ok(PartitionMapping::All),
            Some(down) if down == up => Ok(PartitionMapping::Identity),
            Some(down) if down.time_windows().is_some() && up.time_windows().is_some() => {
                Ok(PartitionMapping::TimeWindow)
            }
            Some(_) => Err("they are partitioned differently".into()),
        }
    }

    /// What is wrong with using this mapping between the two definitions, if anything.
    pub(crate) fn problem(
        &self,
        down: Option<&PartitionsDefinition>,
        up: &PartitionsDefinition,
    ) -> Option<String> {
        let discrete = |d: &PartitionsDefinition| -> Vec<Kind> {
            d.dims
                .iter()
                .filter(|d| !matches!(d.kind, Kind::Time(_)))
                .map(|d| d.kind.clone())
                .collect()
        };
        match (self, down) {
            (PartitionMapping::All, _) => None,
            (PartitionMapping::LastN(0), _) => Some("`last(n)` needs n of at least 1".into()),
            (PartitionMapping::LastN(_), _) if up.time_windows().is_none() => {
                Some("`last(n)` needs time windows upstream".into())
            }
            (PartitionMapping::LastN(_), None) => None,
            (_, None) => Some("only `All` and `LastN` map to an unpartitioned asset".into()),
            (PartitionMapping::Identity, Some(down)) if down != up => Some(
                "`Identity` needs both assets partitioned alike; use `TimeWindow` between \
                 different time windows"
                    .into(),
            ),
            (PartitionMapping::TimeWindow | PartitionMapping::LastN(_), Some(down))
                if down.time_windows().is_none() || up.time_windows().is_none() =>
            {
                Some("it needs time windows on both sides".into())
            }
            (PartitionMapping::TimeWindow | PartitionMapping::LastN(_), Some(down))
                if !discrete(up).is_empty() && discrete(up) != discrete(down) =>
            {
                Some("the other dimensions must be the same on both sides".into())
            }
            (PartitionMapping::Static(_), Some(down))
                if down.time_windows().is_some()
                    || up.time_windows().is_some()
                    || down.is_multi()
                    || up.is_multi() =>
            {
                Some("`Static` maps between one-dimensional key partitions".into())
            }
            (PartitionMapping::Static(map), Some(down)) => {
                let none = PartitionContext::default();
                let bad_up = map.keys().find(|k| up.parse_key(k, &none).is_err());
                let bad_down = map
                    .values()
                    .flatten()
                    .find(|k| down.parse_key(k, &none).is_err());
                match (bad_up, bad_down, &up.dims[0].kind, &down.dims[0].kind) {
                    (Some(k), _, Kind::Static(_), _) => {
                        Some(format!("upstream key `{k}` is not a partition upstream"))
                    }
                    (_, Some(k), _, Kind::Static(_)) => Some(format!(
                        "downstream key `{k}` is not a partition of the asset"
                    )),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// The upstream partitions partition `target` of `down` (or all of it, when `down` is
    /// not partitioned) depends on.
    pub(crate) fn upstream(
        &self,
        down: Option<(&PartitionsDefinition, &PartitionRange)>,
        up: &PartitionsDefinition,
        ctx: &PartitionContext,
    ) -> PartitionSet {
        let all = up.all(ctx);
        let keep_dims = |range: &PartitionRange| {
            if up.dims.iter().all(|d| matches!(d.kind, Kind::Time(_))) {
                String::new()
            } else {
                range.dims.clone()
            }
        };
        let mapped = match (self, down) {
            (PartitionMapping::All, _) => return all,
            (PartitionMapping::Identity, Some((_, range))) => range.to_set(),
            (PartitionMapping::TimeWindow, Some((_, range))) => {
                let Some(w) = up.time_windows() else {
                    return PartitionSet::new();
                };
                let start = w.window_start(range.start).unwrap_or(range.start);
                let last = w.window_start(range.end - 1).unwrap_or(range.end);
                let end = w.window_end(last).unwrap_or(range.end);
                PartitionSet::of(keep_dims(range), RangeSet::span(start, end))
            }
            (PartitionMapping::LastN(n), down) => {
                let Some(w) = up.time_windows() else {
                    return PartitionSet::new();
                };
                let (dims, end) = match down {
                    Some((_, range)) => {
                        let last = w.window_start(range.end - 1).unwrap_or(range.end);
                        (keep_dims(range), w.window_end(last).unwrap_or(range.end))
                    }
                    None => (String::new(), w.last_end(ctx.now).unwrap_or(0)),
                };
                let start = w.advance(end, -i64::from(*n)).unwrap_or(end);
                let mut set = PartitionSet::new();
                for (d, _) in all.parts() {
                    if dims.is_empty() || d == dims {
                        set.insert(d.to_owned(), RangeSet::span(start, end));
                    }
                }
                set
            }
            (PartitionMapping::Static(map), Some((_, range))) => {
                let mut set = PartitionSet::new();
                for (up_key, downs) in map {
                    if downs.contains(&range.dims) {
                        set.insert(up_key.clone(), RangeSet::span(0, 1));
                    }
                }
                set
            }
            (_, None) => return all,
        };
        // Only partitions that exist are needed.
        mapped.intersection(&all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partitions::{daily, hourly, static_keys};

    #[test]
    fn a_day_takes_its_24_hours() {
        let hours: PartitionsDefinition = hourly("2026-11-01T00:00Z").into();
        let days: PartitionsDefinition = daily("2026-11-01").into();
        let ctx = PartitionContext {
            now: chrono::DateTime::parse_from_rfc3339("2026-11-05T00:00:00Z")
                .unwrap()
                .timestamp(),
            ..Default::default()
        };
        let mapping = PartitionMapping::default_for(Some(&days), &hours).unwrap();
        assert_eq!(mapping, PartitionMapping::TimeWindow);
        let day = days.parse_key("2026-11-02", &ctx).unwrap();
        let needed = mapping.upstream(Some((&days, &day)), &hours, &ctx);
        assert_eq!(hours.count(&needed), 24);
        assert_eq!(
            hours.describe(&needed)[0].0.key,
            "2026-11-02-00:00...2026-11-03-00:00"
        );
        let week = PartitionMapping::last(3).upstream(Some((&days, &day)), &days, &ctx);
        assert_eq!(days.describe(&week)[0].0.key, "2026-11-01...2026-11-03");
        let keys = static_keys(["a", "b"]);
        assert!(PartitionMapping::default_for(Some(&keys), &hours).is_err());
        assert!(PartitionMapping::Identity
            .problem(Some(&days), &hours)
            .is_some());
        let pairs = PartitionMapping::static_pairs([("a", "x")]);
        let other = static_keys(["x"]);
        assert_eq!(pairs.problem(Some(&other), &keys), None);
        let x = other.parse_key("x", &ctx).unwrap();
        let needed = pairs.upstream(Some((&other, &x)), &keys, &ctx);
        assert_eq!(needed, PartitionSet::of("a", RangeSet::span(0, 1)));
    }
}
