//! One automation pass of the daemon: follow what changed since the last pass, evaluate each
//! asset's condition, request runs for those that hold, and record the evaluations.
//!
//! The daemon keeps, per asset, when it was last updated and requested, whether its latest run
//! failed, and the partitions recently updated; a pass reads only the materializations
//! appended since the last one (from the storage's position, exactly once each, even when
//! writers commit out of order) and the runs in flight. Its work is the assets with
//! conditions plus what changed.

use std::collections::{BTreeMap, HashMap, VecDeque};

use chrono::{DateTime, Utc};

use super::condition::Facts;
use super::AUTOMATION_TAG;
use crate::definitions::Definitions;
use crate::error::Error;
use crate::executor::RunOptions;
use crate::instance::Instance;
use crate::key::{AssetKey, RunId};
use crate::partition::PartitionRange;
use crate::schedule::Schedule;
use crate::source::AssetKind;
use crate::storage::{AutomationRecord, MaterializationPosition, MaterializationRecord, RunRecord};

/// Materializations read in one query.
const PAGE: usize = 10_000;

/// Recent runs looked at for failures each pass.
const RECENT_RUNS: usize = 200;

/// Recently updated partitions kept per asset.
const RECENT_RANGES: usize = 64;

/// The storage cursor holding when automation last requested `asset`.
fn cursor_key(asset: &AssetKey) -> String {
    format!("automation/{asset}")
}

/// What the daemon knows between passes, per asset index.
pub(crate) struct AutomationState {
    /// When the daemon first evaluated: cron ticks count from then.
    started: DateTime<Utc>,
    /// The assets with a condition.
    conditioned: Vec<usize>,
    /// Latest update: a materialization, or an observation with a new data version.
    updated: Vec<Option<DateTime<Utc>>>,
    /// When automation last requested it.
    requested: Vec<Option<DateTime<Utc>>>,
    /// On the daemon's clock, when it was last requested (cron ticks count from then).
    cron_handled: Vec<Option<DateTime<Utc>>>,
    /// Its latest run failed, and nothing materialized it since.
    failed: Vec<bool>,
    /// Partitions recently updated, oldest first.
    ranges: Vec<VecDeque<(DateTime<Utc>, PartitionRange)>>,
    /// The last result recorded.
    last_result: Vec<Option<bool>>,
    /// Materializations after this position are not applied yet.
    position: MaterializationPosition,
    /// Runs ended up to here were looked at for failures.
    runs_until: DateTime<Utc>,
}

/// What one pass requested.
pub(crate) struct Requested {
    pub(crate) runs: Vec<RunId>,
}

impl AutomationState {
    /// The state of `defs` as `instance` stores it: every asset's latest update, and when
    /// automation requested it.
    pub(crate) async fn load(
        defs: &Definitions,
        instance: &Instance,
        now: DateTime<Utc>,
    ) -> Result<Self, Error> {
        let graph = &defs.inner().graph;
        let n = graph.assets.len();
        let conditioned = graph
            .order
            .iter()
            .copied()
            .filter(|&i| graph.assets[i].automation.is_some())
            .collect();
        let storage = instance.storage();
        let mut state = AutomationState {
            started: now,
            conditioned,
            updated: vec![None; n],
            requested: vec![None; n],
            cron_handled: vec![None; n],
            failed: vec![false; n],
            ranges: vec![VecDeque::new(); n],
            last_result: vec![None; n],
            // First the position, then the latest materializations: one appended in between
            // is applied twice, which changes nothing.
            position: storage.materialization_position().await?,
            runs_until: crate::event::now(),
        };
        for record in storage.latest_materializations().await? {
            state.apply(defs, &record);
        }
        for (name, value) in storage.cursors("automation/").await? {
            let asset = &name["automation/".len()..];
            let (Some(&i), Ok(at)) = (graph.index.get(asset), DateTime::parse_from_rfc3339(&value))
            else {
                continue;
            };
            state.requested[i] = Some(at.with_timezone(&Utc));
        }
        Ok(state)
    }

    /// Whether any asset has a condition.
    pub(crate) fn is_idle(&self) -> bool {
        self.conditioned.is_empty()
    }

    /// Takes one materialization record into account.
    fn apply(&mut self, defs: &Definitions, record: &MaterializationRecord) {
        let graph = &defs.inner().graph;
        let Some(&i) = graph.index.get(&record.asset) else {
            return;
        };
        if self.updated[i].is_none_or(|at| at < record.timestamp) {
            self.updated[i] = Some(record.timestamp);
            self.failed[i] = false;
        }
        if let Some(range) = &record.partition {
            let ranges = &mut self.ranges[i];
            ranges.push_back((record.timestamp, range.clone()));
            if ranges.len() > RECENT_RANGES {
                ranges.pop_front();
            }
        }
    }

    /// Reads the materializations appended since the last pass.
    async fn follow(&mut self, defs: &Definitions, instance: &Instance) -> Result<(), Error> {
        let storage = instance.storage();
        loop {
            let page = storage.materializations_after(self.position, PAGE).await?;
            for (position, record) in &page {
                self.position = *position;
                self.apply(defs, record);
            }
            if page.len() < PAGE {
                return Ok(());
            }
        }
    }

    /// Marks the assets whose latest run failed since the last pass.
    fn note_failures(&mut self, defs: &Definitions, recent: &[RunRecord]) {
        let graph = &defs.inner().graph;
        let mut until = self.runs_until;
        for run in recent {
            let Some(ended) = run.ended_at else { continue };
            if ended <= self.runs_until {
                continue;
            }
            until = until.max(ended);
            if run.status != crate::event::RunStatus::Failed {
                continue;
            }
            for key in &run.assets {
                if let Some(&i) = graph.index.get(key) {
                    if self.updated[i].is_none_or(|at| at < run.started_at) {
                        self.failed[i] = true;
                    }
                }
            }
        }
        self.runs_until = until;
    }
}

/// One automation pass at `now` (the daemon's clock): returns the runs it requested.
pub(crate) async fn evaluate(
    state: &mut AutomationState,
    defs: &Definitions,
    instance: &Instance,
    now: DateTime<Utc>,
) -> Result<Requested, Error> {
    let storage = instance.storage();
    state.follow(defs, instance).await?;
    let recent = storage.runs(RECENT_RUNS).await?;
    state.note_failures(defs, &recent);
    let graph = &defs.inner().graph;
    let mut in_flight = vec![false; graph.assets.len()];
    let active = storage.running_runs().await?;
    let queued = storage.queued_runs().await?;
    for run in active.iter().chain(&queued) {
        for key in &run.assets {
            if let Some(&i) = graph.index.get(key) {
                in_flight[i] = true;
            }
        }
    }

    let wall = crate::event::now();
    let mut records = Vec::new();
    let mut plain = Vec::new();
    let mut partitioned: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for &i in &state.conditioned {
        let spec = &graph.assets[i];
        let Some(condition) = &spec.automation else {
            continue;
        };
        let handled = match (state.updated[i], state.requested[i]) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let ups = &graph.edges.upstream[i];
        let first = |test: &dyn Fn(usize) -> bool| -> Option<&str> {
            ups.iter()
                .find(|&&d| test(d))
                .map(|&d| graph.assets[d].key.as_str())
        };
        let facts = Facts {
            now,
            missing: state.updated[i].is_none() && state.requested[i].is_none(),
            deps_updated: first(&|d| {
                state.updated[d].is_some_and(|at| handled.is_none_or(|h| at > h))
            }),
            in_progress: in_flight[i],
            deps_in_progress: first(&|d| in_flight[d]),
            deps_missing: first(&|d| {
                graph.assets[d].kind == AssetKind::Materializable && state.updated[d].is_none()
            }),
            deps_failed: first(&|d| state.failed[d]),
            latest: state.updated[i],
            handled: state.cron_handled[i].unwrap_or(state.started),
        };
        let holds = condition.holds(&facts);
        if holds || state.last_result[i] != Some(holds) {
            records.push((i, holds, condition.explain(&facts)));
        }
        state.last_result[i] = Some(holds);
        if !holds {
            continue;
        }
        if spec.partitions.is_none() {
            plain.push(i);
            continue;
        }
        for target in partition_targets(state, defs, i, handled, now) {
            partitioned.entry(target).or_default().push(i);
        }
    }

    // One run for the unpartitioned assets, one per partition target for the others.
    let mut runs: HashMap<usize, Vec<RunId>> = HashMap::new();
    let mut failures: HashMap<usize, String> = HashMap::new();
    let submit = |assets: Vec<usize>, partition: Option<String>| async move {
        let selection = assets
            .iter()
            .map(|&i| graph.assets[i].key.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        let mut options = RunOptions::new().tag(AUTOMATION_TAG, "true");
        if let Some(partition) = partition {
            options = options.partition(partition);
        }
        (assets, instance.submit(defs, &selection, options).await)
    };
    let mut batches = Vec::new();
    if !plain.is_empty() {
        batches.push(submit(plain, None).await);
    }
    for (target, assets) in partitioned {
        batches.push(submit(assets, Some(target)).await);
    }
    for (assets, submitted) in batches {
        match submitted {
            Ok(run_id) => {
                for i in assets {
                    runs.entry(i).or_default().push(run_id.clone());
                }
            }
            Err(e) => {
                let reason = crate::text::mask_secrets(&e.to_string());
                for i in assets {
                    failures.insert(i, reason.clone());
                }
            }
        }
    }

    let mut requested = Vec::new();
    let records: Vec<AutomationRecord> = records
        .into_iter()
        .map(|(i, holds, mut reason)| {
            let run_ids = runs.remove(&i).unwrap_or_default();
            if let Some(failure) = failures.get(&i) {
                reason = format!("{reason}; the run could not be requested: {failure}");
            }
            if holds && !run_ids.is_empty() {
                state.requested[i] = Some(wall);
                state.cron_handled[i] = Some(now);
                requested.extend(run_ids.iter().cloned());
            }
            AutomationRecord {
                asset: graph.assets[i].key.clone(),
                evaluated_at: now,
                requested: holds && !run_ids.is_empty(),
                reason: crate::text::bounded(&reason, 4 * crate::text::ECHO_LIMIT).into_owned(),
                run_ids,
            }
        })
        .collect();
    for record in records.iter().filter(|r| r.requested) {
        storage
            .set_cursor(&cursor_key(&record.asset), &wall.to_rfc3339())
            .await?;
    }
    if !records.is_empty() {
        storage.record_automation(&records).await?;
    }
    requested.sort();
    requested.dedup();
    Ok(Requested { runs: requested })
}

/// The partitions to request for partitioned asset `i`: those its dependencies updated since
/// it was handled, when they share its partitions; else its newest complete partition.
fn partition_targets(
    state: &AutomationState,
    defs: &Definitions,
    i: usize,
    handled: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Vec<String> {
    let graph = &defs.inner().graph;
    let spec = &graph.assets[i];
    let mut targets: Vec<String> = Vec::new();
    let mut other = false;
    for &d in &graph.edges.upstream[i] {
        let fresh = state.ranges[d]
            .iter()
            .filter(|(at, _)| handled.is_none_or(|h| *at > h));
        if graph.assets[d].partitions != spec.partitions {
            other |= state.updated[d].is_some_and(|at| handled.is_none_or(|h| at > h));
            continue;
        }
        for (_, range) in fresh {
            if !targets.contains(&range.key) {
                targets.push(range.key.clone());
            }
        }
    }
    if targets.is_empty() || other {
        if let Ok(newest) = Schedule::partition_at(defs, spec.key.as_str(), now) {
            if !targets.contains(&newest) {
                targets.push(newest);
            }
        }
    }
    targets
}
