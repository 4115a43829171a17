//! The run queue: runs submitted to an instance wait as `Queued` until a daemon starts them,
//! in priority order, within a limit of concurrent runs and limits per run tag (Dagster's
//! `tag_concurrency_limits`).

use std::collections::BTreeMap;

use crate::job::PRIORITY_TAG;
use crate::storage::RunRecord;

/// The default limit on runs the queue lets run at once.
pub const DEFAULT_MAX_CONCURRENT_RUNS: usize = 10;

/// How many runs the queue lets run at once, in all and by tag.
///
/// ```
/// use dagrs_core::{RunQueue, TagLimit};
///
/// let queue = RunQueue::new(8)
///     .tag_limit(TagLimit::new("database", 2))           // at most 2 runs tagged `database`
///     .tag_limit(TagLimit::new("team", 1).per_value());  // 1 per team
/// assert_eq!(queue.max_concurrent_runs(), 8);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunQueue {
    max_concurrent_runs: usize,
    tag_limits: Vec<TagLimit>,
}

impl Default for RunQueue {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_CONCURRENT_RUNS)
    }
}

impl RunQueue {
    /// A queue that runs at most `max_concurrent_runs` runs at once (at least 1).
    pub fn new(max_concurrent_runs: usize) -> Self {
        RunQueue {
            max_concurrent_runs: max_concurrent_runs.max(1),
            tag_limits: Vec::new(),
        }
    }

    /// Adds a limit on runs with a tag.
    pub fn tag_limit(mut self, limit: TagLimit) -> Self {
        self.tag_limits.push(limit);
        self
    }

    /// The most runs at once.
    pub fn max_concurrent_runs(&self) -> usize {
        self.max_concurrent_runs
    }

    /// The limits by tag.
    pub fn tag_limits(&self) -> &[TagLimit] {
        &self.tag_limits
    }

    /// Which of `queued` to start, in order, given the `active` runs: by priority (tag
    /// [`PRIORITY_TAG`], higher first), then oldest first, while every limit holds. A run
    /// held back by a tag limit does not block the runs behind it.
    pub(crate) fn pick<'a>(
        &self,
        queued: &'a [RunRecord],
        active: &[RunRecord],
    ) -> Vec<&'a RunRecord> {
        let mut order: Vec<&RunRecord> = queued.iter().collect();
        order.sort_by_key(|run| std::cmp::Reverse(priority(run)));
        let mut running: Vec<&BTreeMap<String, String>> = active.iter().map(|r| &r.tags).collect();
        let mut picked = Vec::new();
        for run in order {
            if running.len() >= self.max_concurrent_runs {
                break;
            }
            let blocked = self.tag_limits.iter().any(|limit| {
                limit.applies(&run.tags).is_some_and(|value| {
                    let holding = running
                        .iter()
                        .filter(|tags| limit.applies(tags).is_some_and(|v| v == value))
                        .count();
                    holding >= limit.limit
                })
            });
            if !blocked {
                running.push(&run.tags);
                picked.push(run);
            }
        }
        picked
    }
}

fn priority(run: &RunRecord) -> i64 {
    run.tags
        .get(PRIORITY_TAG)
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(0)
}

/// A limit on concurrent runs with a tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagLimit {
    key: String,
    value: Option<String>,
    per_value: bool,
    limit: usize,
}

impl TagLimit {
    /// At most `limit` runs at once with tag `key`, whatever its value.
    pub fn new(key: impl Into<String>, limit: usize) -> Self {
        TagLimit {
            key: key.into(),
            value: None,
            per_value: false,
            limit,
        }
    }

    /// Only runs whose tag `key` is `value`.
    pub fn value(mut self, value: impl Into<String>) -> Self {
        self.value = Some(value.into());
        self
    }

    /// The limit holds for each value of the tag apart (e.g. one run per database).
    pub fn per_value(mut self) -> Self {
        self.per_value = true;
        self
    }

    /// Whether runs with `tags` count against the limit, and in which group: the tag's
    /// value for a per-value limit, else one group for all.
    fn applies<'t>(&self, tags: &'t BTreeMap<String, String>) -> Option<&'t str> {
        let value = tags.get(&self.key)?;
        if self.value.as_ref().is_some_and(|want| want != value) {
            return None;
        }
        Some(if self.per_value { value } else { "" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::contract::run_record;

    fn run(id: &str, minutes: i64, tags: &[(&str, &str)]) -> RunRecord {
        let mut run = run_record(id, minutes);
        run.tags = tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        run
    }

    fn ids(runs: Vec<&RunRecord>) -> Vec<&str> {
        runs.iter().map(|r| r.run_id.as_str()).collect()
    }

    #[test]
    fn priority_then_age_within_the_limit() {
        let queued = [
            run("old", 0, &[]),
            run("urgent", 5, &[(PRIORITY_TAG, "10")]),
            run("new", 9, &[]),
            run("low", 1, &[(PRIORITY_TAG, "-1")]),
        ];
        let queue = RunQueue::new(3);
        assert_eq!(ids(queue.pick(&queued, &[])), ["urgent", "old", "new"]);
        let active = [run("busy", 0, &[])];
        assert_eq!(ids(queue.pick(&queued, &active)), ["urgent", "old"]);
    }

    #[test]
    fn tag_limits_hold_back_only_the_runs_they_name() {
        let queued = [
            run("a1", 0, &[("db", "a")]),
            run("a2", 1, &[("db", "a")]),
            run("b1", 2, &[("db", "b")]),
            run("free", 3, &[]),
        ];
        let per_db = RunQueue::new(10).tag_limit(TagLimit::new("db", 1).per_value());
        assert_eq!(ids(per_db.pick(&queued, &[])), ["a1", "b1", "free"]);
        let all_db = RunQueue::new(10).tag_limit(TagLimit::new("db", 1));
        assert_eq!(ids(all_db.pick(&queued, &[])), ["a1", "free"]);
        let only_a = RunQueue::new(10).tag_limit(TagLimit::new("db", 1).value("a"));
        let active = [run("running_a", 0, &[("db", "a")])];
        assert_eq!(ids(only_a.pick(&queued, &active)), ["b1", "free"]);
    }
}
