//! [`PartitionsDefinition`]: the dimensions of an asset's partitions, their keys and
//! coordinates, parsing keys and ranges against what exists, and cutting sets into runs.

use super::{
    valid_key, PartitionContext, PartitionRange, PartitionSet, RangeSet, TimeWindow, TimeWindows,
    DIMENSION_SEPARATOR, RANGE_SEPARATOR,
};
use crate::text::{bounded, ECHO_LIMIT};

/// The span of a partition without a time dimension.
const POINT: (i64, i64) = (0, 1);

/// How an asset is partitioned: built with the functions of [`partitions`](crate::partitions),
/// named in `#[asset(partitions = ...)]` or [`AssetSpec::partitions`](crate::AssetSpec::partitions).
/// Share one between assets by returning it from a function.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionsDefinition {
    pub(super) dims: Vec<Dimension>,
}

/// One dimension of a definition.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Dimension {
    pub(super) name: String,
    pub(super) kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Kind {
    Time(Box<TimeWindows>),
    Static(Vec<String>),
    Dynamic(String),
}

impl From<TimeWindows> for PartitionsDefinition {
    fn from(windows: TimeWindows) -> Self {
        PartitionsDefinition::single(Kind::Time(Box::new(windows)))
    }
}

impl PartitionsDefinition {
    fn single(kind: Kind) -> Self {
        PartitionsDefinition {
            dims: vec![Dimension {
                name: String::new(),
                kind,
            }],
        }
    }

    pub(crate) fn statics(keys: Vec<String>) -> Self {
        Self::single(Kind::Static(keys))
    }

    pub(crate) fn dynamic(name: String) -> Self {
        Self::single(Kind::Dynamic(name))
    }

    pub(crate) fn multi(dims: Vec<(String, PartitionsDefinition)>) -> Self {
        let mut out = Vec::new();
        for (name, def) in dims {
            for mut dim in def.dims {
                // A nested multi-dimensional definition is flattened; its names kept.
                if dim.name.is_empty() {
                    dim.name = name.clone();
                } else {
                    dim.name = format!("{name}.{}", dim.name);
                }
                out.push(dim);
            }
        }
        PartitionsDefinition { dims: out }
    }

    /// The dimension names (`[""]` for a one-dimensional definition).
    pub fn dimension_names(&self) -> impl Iterator<Item = &str> {
        self.dims.iter().map(|d| d.name.as_str())
    }

    /// The names of the dynamic partitions definitions it uses.
    pub fn dynamic_names(&self) -> impl Iterator<Item = &str> {
        self.dims.iter().filter_map(|d| match &d.kind {
            Kind::Dynamic(name) => Some(name.as_str()),
            _ => None,
        })
    }

    /// Its time dimension, if it has one.
    pub fn time_windows(&self) -> Option<&TimeWindows> {
        self.dims.iter().find_map(|d| match &d.kind {
            Kind::Time(w) => Some(&**w),
            _ => None,
        })
    }

    pub(super) fn is_multi(&self) -> bool {
        self.dims.len() > 1
    }

    /// What is wrong with the definition, if anything.
    pub(crate) fn problem(&self) -> Option<String> {
        if self.dims.is_empty() {
            return Some("a multi-dimensional definition needs at least one dimension".into());
        }
        if self.time_windows_count() > 1 {
            return Some("at most one dimension can be a time dimension".into());
        }
        let mut names: Vec<&str> = self.dims.iter().map(|d| d.name.as_str()).collect();
        names.sort_unstable();
        if self.is_multi() {
            if let Some(name) = names.iter().find(|n| !valid_name(n)) {
                return Some(format!(
                    "dimension name {:?} is not valid: use letters, digits and `_`",
                    bounded(name, ECHO_LIMIT)
                ));
            }
            if let Some(pair) = names.windows(2).find(|p| p[0] == p[1]) {
                return Some(format!("dimension `{}` is named twice", pair[0]));
            }
        }
        for dim in &self.dims {
            let at = if self.is_multi() {
                format!("dimension `{}`: ", dim.name)
            } else {
                String::new()
            };
            let problem = match &dim.kind {
                Kind::Time(w) => w.problem().map(str::to_owned),
                Kind::Static(keys) => static_problem(keys),
                Kind::Dynamic(name) if !valid_name(name) => Some(format!(
                    "dynamic partitions name {:?} is not valid: use letters, digits and `_`",
                    bounded(name, ECHO_LIMIT)
                )),
                Kind::Dynamic(_) => None,
            };
            if let Some(problem) = problem {
                return Some(format!("{at}{problem}"));
            }
        }
        None
    }

    fn time_windows_count(&self) -> usize {
        self.dims
            .iter()
            .filter(|d| matches!(d.kind, Kind::Time(_)))
            .count()
    }

    /// The keys of each discrete dimension, in order.
    fn discrete_keys<'a>(&'a self, ctx: &'a PartitionContext) -> Vec<(&'a str, &'a [String])> {
        self.dims
            .iter()
            .filter(|d| !matches!(d.kind, Kind::Time(_)))
            .map(|d| (d.name.as_str(), keys_of(d, ctx)))
            .collect()
    }

    /// The span every partition's time coordinates fall in: the windows that exist at
    /// `ctx.now`, or `[0, 1)` without time.
    fn span(&self, ctx: &PartitionContext) -> (i64, i64) {
        match self.time_windows() {
            Some(w) => {
                let first = w.first_start().unwrap_or(0);
                (first, w.last_end(ctx.now).unwrap_or(first))
            }
            None => POINT,
        }
    }

    /// Every partition that exists at `ctx.now`.
    pub fn all(&self, ctx: &PartitionContext) -> PartitionSet {
        let (start, end) = self.span(ctx);
        let mut combos: Vec<String> = vec![String::new()];
        for (_, keys) in self.discrete_keys(ctx) {
            let mut next = Vec::with_capacity(combos.len() * keys.len());
            for prefix in &combos {
                for key in keys {
                    next.push(join_dims(prefix, key));
                }
            }
            combos = next;
        }
        let mut set = PartitionSet::new();
        for dims in combos {
            set.insert(dims, RangeSet::span(start, end));
        }
        set
    }

    /// How many partitions `set` holds.
    pub fn count(&self, set: &PartitionSet) -> u64 {
        set.parts()
            .flat_map(|(_, ranges)| ranges.ranges())
            .map(|&(start, end)| match self.time_windows() {
                Some(w) => w.count(start, end),
                None => 1,
            })
            .sum()
    }

    /// The parts of `key`, one per dimension.
    fn parts<'k>(&self, key: &'k str) -> Result<Vec<&'k str>, String> {
        let parts: Vec<&str> = key.split(DIMENSION_SEPARATOR).collect();
        if parts.len() != self.dims.len() {
            return Err(format!(
                "`{}` has {} part(s) but these partitions have {} dimension(s) ({}); write one \
                 key per dimension, separated by `|`",
                bounded(key, ECHO_LIMIT),
                parts.len(),
                self.dims.len(),
                self.dimension_names().collect::<Vec<_>>().join(", ")
            ));
        }
        Ok(parts)
    }

    /// Partition `key` (one key, with `|` between dimensions), checked against what exists.
    pub fn parse_key(&self, key: &str, ctx: &PartitionContext) -> Result<PartitionRange, String> {
        let (mut dims, mut span) = (String::new(), POINT);
        for (dim, part) in self.dims.iter().zip(self.parts(key)?) {
            match &dim.kind {
                Kind::Time(w) => {
                    let start = w.parse_key(part)?;
                    let (first, last) = self.span(ctx);
                    if start < first || start >= last {
                        return Err(format!(
                            "partition `{}` does not exist{}",
                            bounded(part, ECHO_LIMIT),
                            self.valid_range(ctx)
                        ));
                    }
                    span = (start, w.window_end(start).unwrap_or(start + 1));
                }
                _ => {
                    let keys = keys_of(dim, ctx);
                    if !keys.iter().any(|k| k == part) {
                        return Err(unknown_key(dim, part, keys));
                    }
                    dims = join_dims(&dims, part);
                }
            }
        }
        Ok(PartitionRange {
            key: key.to_owned(),
            dims,
            start: span.0,
            end: span.1,
        })
    }

    /// A key (`KEY`) or a range (`START...END`, END excluded: `2026-11-01...2026-11-02` is
    /// the 1st of November), checked against what exists.
    pub fn parse_target(
        &self,
        text: &str,
        ctx: &PartitionContext,
    ) -> Result<PartitionRange, String> {
        match text.split_once(RANGE_SEPARATOR) {
            None => self.parse_key(text, ctx),
            Some((start, end)) => self.parse_range(start, end, ctx),
        }
    }

    /// The partitions from `start` up to `end` (excluded), both keys with the same discrete
    /// parts.
    pub fn parse_range(
        &self,
        start: &str,
        end: &str,
        ctx: &PartitionContext,
    ) -> Result<PartitionRange, String> {
        if self.time_windows().is_none() {
            return Err(
                "ranges need a time dimension; these partitions have none: name one key".into(),
            );
        }
        let first = self.parse_key(start, ctx)?;
        let (start_parts, end_parts) = (self.parts(start)?, self.parts(end)?);
        let mut stop = first.start;
        for ((dim, a), b) in self.dims.iter().zip(start_parts).zip(end_parts) {
            match &dim.kind {
                // The end is excluded: it may be the window after the last one.
                Kind::Time(w) => {
                    stop = w.parse_key(b)?;
                    let (_, last) = self.span(ctx);
                    if stop > last {
                        return Err(format!(
                            "partition `{}` does not exist{}",
                            bounded(b, ECHO_LIMIT),
                            self.valid_range(ctx)
                        ));
                    }
                }
                _ if a != b => {
                    return Err(format!(
                        "a range keeps every dimension but time fixed: `{}` and `{}` differ \
                         in `{}`",
                        bounded(start, ECHO_LIMIT),
                        bounded(end, ECHO_LIMIT),
                        dim.name
                    ))
                }
                _ => {}
            }
        }
        if stop <= first.start {
            return Err(format!(
                "range `{}...{}` is empty or backwards: the end comes first or equals the \
                 start (the end is excluded: write the key after the last partition){}",
                bounded(start, ECHO_LIMIT),
                bounded(end, ECHO_LIMIT),
                self.valid_range(ctx)
            ));
        }
        Ok(self.range(&first.dims, first.start, stop))
    }

    /// `; partitions exist from A to B`, or nothing when none exist yet.
    fn valid_range(&self, ctx: &PartitionContext) -> String {
        let (first, last) = self.span(ctx);
        let Some(w) = self.time_windows() else {
            return String::new();
        };
        if last <= first {
            return format!(
                "; no partition exists yet (the first, `{}`, exists once it is complete)",
                w.key(first)
            );
        }
        let last_start = w.window_start(last - 1).unwrap_or(first);
        format!(
            "; partitions exist from `{}` to `{}` (write ranges as `{}...{}`)",
            w.key(first),
            w.key(last_start),
            w.key(first),
            w.key(last)
        )
    }

    /// The range of discrete keys `dims` over `[start, end)`, with its key as users write it.
    pub fn range(&self, dims: &str, start: i64, end: i64) -> PartitionRange {
        let key = |at: i64| self.key_at(dims, at);
        let key = match self.time_windows() {
            Some(w) if w.window_end(start).is_some_and(|e| e < end) => {
                format!("{}{RANGE_SEPARATOR}{}", key(start), key(end))
            }
            _ => key(start),
        };
        PartitionRange {
            key,
            dims: dims.to_owned(),
            start,
            end,
        }
    }

    /// The key of the partition with discrete keys `dims` whose window starts at `at`.
    fn key_at(&self, dims: &str, at: i64) -> String {
        let mut discrete = dims.split(DIMENSION_SEPARATOR);
        let parts: Vec<String> = self
            .dims
            .iter()
            .map(|d| match &d.kind {
                Kind::Time(w) => w.key(at),
                _ => discrete.next().unwrap_or_default().to_owned(),
            })
            .collect();
        parts.join("|")
    }

    /// The ranges of `set` as users write them, with how many partitions each holds.
    pub fn describe(&self, set: &PartitionSet) -> Vec<(PartitionRange, u64)> {
        set.parts()
            .flat_map(|(dims, ranges)| {
                ranges.ranges().iter().map(move |&(start, end)| {
                    let count = match self.time_windows() {
                        Some(w) => w.count(start, end),
                        None => 1,
                    };
                    (self.range(dims, start, end), count)
                })
            })
            .collect()
    }

    /// `set` cut into runs of at most `per_run` partitions each (`None`: one run per
    /// contiguous range); without time, one run per partition.
    pub fn chunks(&self, set: &PartitionSet, per_run: Option<u64>) -> Chunks<'_> {
        let ranges = set
            .parts()
            .flat_map(|(dims, r)| {
                r.ranges()
                    .iter()
                    .map(move |&(s, e)| (dims.to_owned(), s, e))
            })
            .collect::<Vec<_>>();
        Chunks {
            def: self,
            ranges: ranges.into_iter(),
            current: None,
            per_run,
        }
    }

    /// The time window of a range, when the definition has time.
    pub(crate) fn window_of(&self, range: &PartitionRange) -> Option<TimeWindow> {
        self.time_windows()
            .map(|_| TimeWindows::window(range.start, range.end))
    }

    /// The discrete keys of a range by dimension name.
    pub(crate) fn dimension_keys(&self, range: &PartitionRange) -> Vec<(String, String)> {
        let mut discrete = range.dims.split(DIMENSION_SEPARATOR);
        self.dims
            .iter()
            .map(|d| match &d.kind {
                Kind::Time(w) => (d.name.clone(), w.key(range.start)),
                _ => (
                    d.name.clone(),
                    discrete.next().unwrap_or_default().to_owned(),
                ),
            })
            .collect()
    }
}

/// The chunks of [`PartitionsDefinition::chunks`], in order.
#[derive(Debug)]
pub struct Chunks<'a> {
    def: &'a PartitionsDefinition,
    ranges: std::vec::IntoIter<(String, i64, i64)>,
    current: Option<(String, i64, i64)>,
    per_run: Option<u64>,
}

impl Iterator for Chunks<'_> {
    type Item = PartitionRange;

    fn next(&mut self) -> Option<PartitionRange> {
        loop {
            if self.current.is_none() {
                self.current = Some(self.ranges.next()?);
            }
            let (dims, start, end) = self.current.take()?;
            if start >= end {
                continue;
            }
            let stop = match (self.def.time_windows(), self.per_run) {
                (Some(w), Some(n)) => w
                    .advance(start, i64::try_from(n.max(1)).unwrap_or(i64::MAX))
                    .map_or(end, |stop| stop.min(end)),
                _ => end,
            };
            if stop < end {
                self.current = Some((dims.clone(), stop, end));
            }
            return Some(self.def.range(&dims, start, stop));
        }
    }
}

fn join_dims(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}{DIMENSION_SEPARATOR}{key}")
    }
}

/// The keys of discrete dimension `dim` (none for time).
fn keys_of<'a>(dim: &'a Dimension, ctx: &'a PartitionContext) -> &'a [String] {
    match &dim.kind {
        Kind::Static(keys) => keys,
        Kind::Dynamic(name) => ctx.dynamic.get(name).map_or(&[][..], Vec::as_slice),
        Kind::Time(_) => &[],
    }
}

fn unknown_key(dim: &Dimension, key: &str, keys: &[String]) -> String {
    let listed = crate::text::bounded_list(keys.iter().map(|k| format!("`{k}`")), ", ");
    let what = match &dim.kind {
        Kind::Dynamic(name) => format!(
            " — add it first (`Instance::add_dynamic_partitions(\"{name}\", ...)` or the \
             `partitions add {name} KEY` command)"
        ),
        _ => String::new(),
    };
    let hint = crate::error::Hint::closest(key, keys.iter().map(String::as_str));
    if keys.is_empty() {
        return format!(
            "partition `{}` does not exist: there are no keys yet{what}",
            bounded(key, ECHO_LIMIT)
        );
    }
    format!(
        "partition `{}` does not exist (the keys are {listed}){hint}{what}",
        bounded(key, ECHO_LIMIT)
    )
}

/// Keys are non-empty, unique, and hold no separator.
fn static_problem(keys: &[String]) -> Option<String> {
    if keys.is_empty() {
        return Some("static partitions need at least one key".into());
    }
    if let Some(key) = keys.iter().find(|k| !valid_key(k)) {
        return Some(format!(
            "partition key {:?} is not valid: keys are non-empty, at most 255 bytes, and hold \
             no `|`, `...`, `,` or control character",
            bounded(key, ECHO_LIMIT)
        ));
    }
    let mut sorted: Vec<&String> = keys.iter().collect();
    sorted.sort_unstable();
    sorted.windows(2).find(|p| p[0] == p[1]).map(|p| {
        format!(
            "partition key `{}` is listed twice",
            bounded(p[0], ECHO_LIMIT)
        )
    })
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::partitions::{daily, dynamic, hourly, multi, static_keys};

    fn ctx(now: &str) -> PartitionContext {
        PartitionContext {
            now: chrono::DateTime::parse_from_rfc3339(now)
                .unwrap()
                .timestamp(),
            dynamic: BTreeMap::from([("sensors".into(), vec!["s1".into(), "s2".into()])]),
        }
    }

    #[test]
    fn keys_ranges_and_bad_input() {
        let def: PartitionsDefinition = hourly("2026-11-01T00:00Z").into();
        let c = ctx("2026-11-03T10:30:00Z");
        let day = def
            .parse_target("2026-11-01-00:00...2026-11-02-00:00", &c)
            .unwrap();
        assert_eq!(def.count(&day.to_set()), 24);
        assert_eq!(day.key, "2026-11-01-00:00...2026-11-02-00:00");
        let one = def.parse_target("2026-11-01-05:00", &c).unwrap();
        assert_eq!(one.end - one.start, 3600);
        // The end may be the window after the last one.
        assert!(def
            .parse_target("2026-11-03-09:00...2026-11-03-10:00", &c)
            .is_ok());
        let err = def.parse_target("2026-11-03-11:00", &c).unwrap_err();
        assert!(
            err.contains("does not exist") && err.contains("2026-11-03-09:00"),
            "{err}"
        );
        let err = def.parse_target("2026-10-31-23:00", &c).unwrap_err();
        assert!(err.contains("from `2026-11-01-00:00`"), "{err}");
        let err = def
            .parse_target("2026-11-02-00:00...2026-11-01-00:00", &c)
            .unwrap_err();
        assert!(err.contains("backwards"), "{err}");
        let err = def.parse_target("11/01/2026", &c).unwrap_err();
        assert!(err.contains("keys look like `2026-11-01-00:00`"), "{err}");
        assert_eq!(def.count(&def.all(&c)), 24 * 2 + 10);
    }

    #[test]
    fn three_dimensions() {
        let def = multi([
            ("region", static_keys(["eu", "us"])),
            ("sensor", dynamic("sensors")),
            ("day", daily("2026-11-01").into()),
        ]);
        assert_eq!(def.problem(), None);
        let c = ctx("2026-11-04T00:00:00Z");
        let all = def.all(&c);
        assert_eq!(def.count(&all), 2 * 2 * 3);
        let p = def.parse_key("us|s2|2026-11-02", &c).unwrap();
        assert_eq!(p.dims, "us|s2");
        assert_eq!(
            def.dimension_keys(&p)[2],
            ("day".into(), "2026-11-02".into())
        );
        let err = def.parse_key("us|s3|2026-11-02", &c).unwrap_err();
        assert!(
            err.contains("`s3` does not exist") && err.contains("`s1`, `s2`"),
            "{err}"
        );
        assert!(def
            .parse_key("us|2026-11-02", &c)
            .unwrap_err()
            .contains("3 dimension"));
        let range = def
            .parse_target("eu|s1|2026-11-01...eu|s1|2026-11-03", &c)
            .unwrap();
        assert_eq!(def.count(&range.to_set()), 2);
        let left = all.difference(&range.to_set());
        assert_eq!(def.count(&left), 10);
        let two_times = multi([
            ("a", daily("2026-01-01").into()),
            ("b", hourly("2026-01-01").into()),
        ]);
        assert!(two_times.problem().unwrap().contains("at most one"));
    }

    #[test]
    fn chunks_follow_the_policy() {
        let def: PartitionsDefinition = hourly("2026-11-01T00:00Z").into();
        let c = ctx("2026-11-02T00:00:00Z");
        let all = def.all(&c);
        assert_eq!(def.chunks(&all, Some(1)).count(), 24);
        assert_eq!(def.chunks(&all, Some(5)).count(), 5);
        let whole: Vec<_> = def.chunks(&all, None).collect();
        assert_eq!(whole.len(), 1);
        assert_eq!(whole[0].key, "2026-11-01-00:00...2026-11-02-00:00");
        let keys: PartitionsDefinition = static_keys(["a", "b", "c"]);
        assert_eq!(keys.chunks(&keys.all(&c), None).count(), 3);
        assert!(static_keys(["a", "a"]).problem().unwrap().contains("twice"));
        assert!(static_keys(["a|b"])
            .problem()
            .unwrap()
            .contains("not valid"));
    }
}
