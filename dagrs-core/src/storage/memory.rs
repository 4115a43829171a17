//! The in-memory store.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{
    runs_to_prune, AutomationRecord, CheckRecord, EventFilter, InstigatorStatus,
    MaterializationPosition, MaterializationRecord, PruneReport, Retention, RunFilter, RunRecord,
    Storage, TickRecord,
};
use crate::backfill::{BackfillRecord, BackfillStatus};
use crate::error::Error;
use crate::event::{Event, RunStatus};
use crate::key::{AssetKey, RunId};
use crate::partition::{PartitionRange, PartitionStatus};

/// Keeps runs and events in the process; everything is gone when it exits. The default
/// storage of [`Definitions`](crate::Definitions), and the one for tests.
#[derive(Debug, Default)]
pub struct InMemoryStorage {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    runs: Vec<RunRecord>,
    /// Each run's position in `runs`.
    run_index: HashMap<RunId, usize>,
    /// Each run's events, in seq order.
    events: HashMap<RunId, Vec<Event>>,
    /// Every materialization with its position (`id`), in position order.
    materializations: Vec<(u64, MaterializationRecord)>,
    /// How many materializations were ever appended (the last one's position).
    materializations_written: u64,
    /// Each asset's check evaluations, oldest first.
    checks: HashMap<AssetKey, Vec<CheckRecord>>,
    /// Automation evaluations by `(evaluated_at, write order)`: newest is last.
    automation: BTreeMap<(DateTime<Utc>, u64), AutomationRecord>,
    /// How many automation records were ever written (their write order).
    automation_written: u64,
    /// Ticks by `(name, tick)`.
    ticks: BTreeMap<(String, DateTime<Utc>), TickRecord>,
    run_keys: HashMap<(String, String), RunId>,
    instigators: BTreeMap<String, InstigatorStatus>,
    cursors: BTreeMap<String, String>,
    partitions: HashMap<AssetKey, PartitionStatus>,
    dynamic: BTreeMap<String, Vec<String>>,
    backfills: BTreeMap<String, BackfillRecord>,
}

impl InMemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        crate::lock(&self.inner)
    }
}

impl Inner {
    fn run_mut(&mut self, run_id: &RunId) -> Result<&mut RunRecord, Error> {
        let i = *self
            .run_index
            .get(run_id)
            .ok_or_else(|| Error::RunNotFound(run_id.to_string()))?;
        Ok(&mut self.runs[i])
    }

    fn run(&self, run_id: &RunId) -> Option<&RunRecord> {
        self.run_index.get(run_id).map(|&i| &self.runs[i])
    }
}

#[async_trait]
impl Storage for InMemoryStorage {
    async fn create_run(&self, run: &RunRecord) -> Result<(), Error> {
        let mut inner = self.lock();
        if inner.run_index.contains_key(&run.run_id) {
            return Err(Error::storage(
                "create a run",
                format!("run `{}` already exists", run.run_id),
            ));
        }
        let at = inner.runs.len();
        inner.run_index.insert(run.run_id.clone(), at);
        inner.runs.push(run.clone());
        Ok(())
    }

    async fn append_events(&self, events: &[Event]) -> Result<(), Error> {
        let mut inner = self.lock();
        // The executor's batches are one run's events in seq order: no set needed to find a
        // seq given twice.
        let in_order = events
            .windows(2)
            .all(|pair| pair[0].run_id == pair[1].run_id && pair[0].seq < pair[1].seq);
        let mut batch = HashSet::new();
        for event in events {
            if !inner.run_index.contains_key(&event.run_id) {
                return Err(Error::RunNotFound(event.run_id.to_string()));
            }
            let taken = inner
                .events
                .get(&event.run_id)
                .is_some_and(|log| log.binary_search_by_key(&event.seq, |e| e.seq).is_ok());
            if taken || (!in_order && !batch.insert((&event.run_id, event.seq))) {
                return Err(Error::storage(
                    "append events",
                    format!("run `{}` already has event {}", event.run_id, event.seq),
                ));
            }
        }
        for (asset, range, outcome) in crate::partition::status::outcomes(events) {
            let status = inner.partitions.entry(asset.clone()).or_default();
            status.apply(range, outcome);
        }
        for event in events {
            if let Some(record) = MaterializationRecord::of(event) {
                inner.materializations_written += 1;
                let id = inner.materializations_written;
                inner.materializations.push((id, record));
            }
            if let Some(record) = CheckRecord::of(event) {
                inner
                    .checks
                    .entry(record.asset.clone())
                    .or_default()
                    .push(record);
            }
            let log = inner.events.entry(event.run_id.clone()).or_default();
            match log.last() {
                Some(last) if last.seq > event.seq => {
                    let at = log.partition_point(|e| e.seq < event.seq);
                    log.insert(at, event.clone());
                }
                _ => log.push(event.clone()),
            }
        }
        Ok(())
    }

    async fn finish_run(
        &self,
        run_id: &RunId,
        status: RunStatus,
        ended_at: DateTime<Utc>,
        failure: Option<&str>,
    ) -> Result<bool, Error> {
        let mut inner = self.lock();
        let run = inner.run_mut(run_id)?;
        if run.status.is_final() {
            return Ok(false);
        }
        run.status = status;
        run.ended_at = Some(ended_at);
        if let Some(failure) = failure {
            run.failure = Some(failure.to_owned());
        }
        Ok(true)
    }

    async fn request_cancel(
        &self,
        run_id: &RunId,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, Error> {
        let mut inner = self.lock();
        let run = inner.run_mut(run_id)?;
        match run.status {
            RunStatus::Running => run.status = RunStatus::Canceling,
            RunStatus::Queued => {
                run.status = RunStatus::Cancelled;
                run.ended_at = Some(at);
            }
            _ => return Ok(false),
        }
        run.failure = Some(reason.to_owned());
        Ok(true)
    }

    async fn start_run(
        &self,
        run_id: &RunId,
        owner: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, Error> {
        let mut inner = self.lock();
        let run = inner.run_mut(run_id)?;
        if run.status != RunStatus::Queued {
            return Ok(false);
        }
        run.status = RunStatus::Running;
        run.owner = owner.to_owned();
        run.started_at = at;
        run.heartbeat_at = at;
        Ok(true)
    }

    async fn queued_runs(&self) -> Result<Vec<RunRecord>, Error> {
        let mut queued: Vec<RunRecord> = self
            .lock()
            .runs
            .iter()
            .filter(|r| r.status == RunStatus::Queued)
            .cloned()
            .collect();
        // Stable: runs queued at the same instant stay in creation order.
        queued.sort_by_key(|r| r.started_at);
        Ok(queued)
    }

    async fn heartbeat(&self, run_id: &RunId, at: DateTime<Utc>) -> Result<(), Error> {
        self.lock().run_mut(run_id)?.heartbeat_at = at;
        Ok(())
    }

    async fn run(&self, run_id: &RunId) -> Result<Option<RunRecord>, Error> {
        Ok(self.lock().run(run_id).cloned())
    }

    async fn runs(&self, limit: usize) -> Result<Vec<RunRecord>, Error> {
        let mut runs = self.lock().runs.clone();
        // Stable: runs started at the same instant stay newest (last created) first.
        runs.reverse();
        runs.sort_by_key(|r| std::cmp::Reverse(r.started_at));
        runs.truncate(limit);
        Ok(runs)
    }

    async fn runs_page(&self, filter: &RunFilter, limit: usize) -> Result<Vec<RunRecord>, Error> {
        let mut runs: Vec<RunRecord> = self
            .lock()
            .runs
            .iter()
            .filter(|r| filter.matches(r))
            .cloned()
            .collect();
        RunFilter::sort(&mut runs);
        runs.truncate(limit);
        Ok(runs)
    }

    async fn running_runs(&self) -> Result<Vec<RunRecord>, Error> {
        Ok(self
            .lock()
            .runs
            .iter()
            .filter(|r| matches!(r.status, RunStatus::Running | RunStatus::Canceling))
            .cloned()
            .collect())
    }

    async fn events(&self, run_id: &RunId, after: Option<u64>) -> Result<Vec<Event>, Error> {
        let inner = self.lock();
        let Some(log) = inner.events.get(run_id) else {
            return Ok(Vec::new());
        };
        let from = after.map_or(0, |a| a.saturating_add(1));
        Ok(match after {
            Some(u64::MAX) => Vec::new(),
            _ => log[log.partition_point(|e| e.seq < from)..].to_vec(),
        })
    }

    async fn events_page(
        &self,
        run_id: &RunId,
        filter: &EventFilter,
        limit: usize,
    ) -> Result<Vec<Event>, Error> {
        let inner = self.lock();
        let Some(log) = inner.events.get(run_id) else {
            return Ok(Vec::new());
        };
        let matching = log.iter().filter(|e| filter.matches(e));
        Ok(if filter.newest {
            let mut tail: Vec<Event> = matching.rev().take(limit).cloned().collect();
            tail.reverse();
            tail
        } else {
            matching.take(limit).cloned().collect()
        })
    }

    async fn latest_materialization(
        &self,
        asset: &AssetKey,
    ) -> Result<Option<MaterializationRecord>, Error> {
        Ok(self
            .lock()
            .materializations
            .iter()
            .rev()
            .map(|(_, m)| m)
            .find(|m| &m.asset == asset)
            .cloned())
    }

    async fn latest_materializations(&self) -> Result<Vec<MaterializationRecord>, Error> {
        let inner = self.lock();
        let mut latest: BTreeMap<&AssetKey, &MaterializationRecord> = BTreeMap::new();
        for (_, record) in &inner.materializations {
            latest.insert(&record.asset, record);
        }
        Ok(latest.into_values().cloned().collect())
    }

    async fn materializations(
        &self,
        asset: &AssetKey,
        limit: usize,
    ) -> Result<Vec<MaterializationRecord>, Error> {
        Ok(self
            .lock()
            .materializations
            .iter()
            .rev()
            .map(|(_, m)| m)
            .filter(|m| &m.asset == asset)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn materialization_position(&self) -> Result<MaterializationPosition, Error> {
        // Appended under the lock: every counted materialization is final.
        let written = self.lock().materializations_written;
        Ok(MaterializationPosition::new(0, written))
    }

    async fn materializations_after(
        &self,
        after: MaterializationPosition,
        limit: usize,
    ) -> Result<Vec<(MaterializationPosition, MaterializationRecord)>, Error> {
        let inner = self.lock();
        let from = inner
            .materializations
            .partition_point(|(id, _)| MaterializationPosition::new(0, *id) <= after);
        Ok(inner.materializations[from..]
            .iter()
            .take(limit)
            .map(|(id, m)| (MaterializationPosition::new(0, *id), m.clone()))
            .collect())
    }

    async fn check_records(
        &self,
        asset: &AssetKey,
        limit: usize,
    ) -> Result<Vec<CheckRecord>, Error> {
        let inner = self.lock();
        let Some(records) = inner.checks.get(asset) else {
            return Ok(Vec::new());
        };
        Ok(records.iter().rev().take(limit).cloned().collect())
    }

    async fn record_automation(&self, records: &[AutomationRecord]) -> Result<(), Error> {
        let mut inner = self.lock();
        for record in records {
            let order = inner.automation_written;
            inner.automation_written += 1;
            inner
                .automation
                .insert((record.evaluated_at, order), record.clone());
        }
        Ok(())
    }

    async fn automation_records(
        &self,
        asset: Option<&AssetKey>,
        limit: usize,
    ) -> Result<Vec<AutomationRecord>, Error> {
        let inner = self.lock();
        Ok(inner
            .automation
            .values()
            .rev()
            .filter(|r| asset.is_none_or(|asset| &r.asset == asset))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn prune(&self, keep: Retention, now: DateTime<Utc>) -> Result<PruneReport, Error> {
        let mut inner = self.lock();
        let doomed: HashSet<RunId> = runs_to_prune(&inner.runs, keep, now).into_iter().collect();
        let mut report = PruneReport::default();
        if let Some(cutoff) = super::tick_cutoff(keep, now) {
            let before = inner.ticks.len();
            inner.ticks.retain(|(_, tick), _| *tick >= cutoff);
            report.ticks = (before - inner.ticks.len()) as u64;
            inner.automation = inner.automation.split_off(&(cutoff, 0));
        }
        if !doomed.is_empty() {
            for records in inner.checks.values_mut() {
                records.retain(|c| !doomed.contains(&c.run_id));
            }
            inner.checks.retain(|_, records| !records.is_empty());
        }
        inner.runs.retain(|r| !doomed.contains(&r.run_id));
        let index = inner.runs.iter().enumerate();
        let index = index.map(|(i, r)| (r.run_id.clone(), i)).collect();
        inner.run_index = index;
        for run_id in &doomed {
            if let Some(events) = inner.events.remove(run_id) {
                report.events += events.len() as u64;
            }
        }
        report.runs = doomed.len() as u64;
        let mut latest: HashMap<AssetKey, usize> = HashMap::new();
        for (i, (_, record)) in inner.materializations.iter().enumerate() {
            latest.insert(record.asset.clone(), i);
        }
        let keep_index: HashSet<usize> = latest.into_values().collect();
        let before = inner.materializations.len();
        let mut index = 0;
        inner.materializations.retain(|(_, m)| {
            let kept = keep_index.contains(&index) || !doomed.contains(&m.run_id);
            index += 1;
            kept
        });
        report.materializations = (before - inner.materializations.len()) as u64;
        Ok(report)
    }

    async fn claim_ticks(&self, ticks: &[TickRecord]) -> Result<Vec<bool>, Error> {
        let mut inner = self.lock();
        Ok(ticks
            .iter()
            .map(|tick| {
                let key = (tick.name.clone(), tick.tick);
                if inner.ticks.contains_key(&key) {
                    return false;
                }
                inner.ticks.insert(key, tick.clone());
                true
            })
            .collect())
    }

    async fn update_ticks(&self, ticks: &[TickRecord]) -> Result<(), Error> {
        let mut inner = self.lock();
        if let Some(tick) = ticks
            .iter()
            .find(|t| !inner.ticks.contains_key(&(t.name.clone(), t.tick)))
        {
            return Err(Error::storage(
                "update ticks",
                format!("tick {} of `{}` was never claimed", tick.tick, tick.name),
            ));
        }
        for tick in ticks {
            inner
                .ticks
                .insert((tick.name.clone(), tick.tick), tick.clone());
        }
        Ok(())
    }

    async fn ticks(&self, name: Option<&str>, limit: usize) -> Result<Vec<TickRecord>, Error> {
        let inner = self.lock();
        let mut ticks: Vec<TickRecord> = inner
            .ticks
            .values()
            .filter(|t| name.is_none_or(|name| t.name == name))
            .cloned()
            .collect();
        ticks.sort_by(|a, b| b.tick.cmp(&a.tick).then_with(|| a.name.cmp(&b.name)));
        ticks.truncate(limit);
        Ok(ticks)
    }

    async fn claim_run_key(
        &self,
        instigator: &str,
        key: &str,
        run_id: &RunId,
    ) -> Result<Option<RunId>, Error> {
        let mut inner = self.lock();
        let key = (instigator.to_owned(), key.to_owned());
        if let Some(existing) = inner.run_keys.get(&key) {
            return Ok(Some(existing.clone()));
        }
        inner.run_keys.insert(key, run_id.clone());
        Ok(None)
    }

    async fn instigator_states(&self) -> Result<BTreeMap<String, InstigatorStatus>, Error> {
        Ok(self.lock().instigators.clone())
    }

    async fn set_instigator_state(
        &self,
        name: &str,
        status: InstigatorStatus,
    ) -> Result<(), Error> {
        self.lock().instigators.insert(name.to_owned(), status);
        Ok(())
    }

    async fn cursor(&self, name: &str) -> Result<Option<String>, Error> {
        Ok(self.lock().cursors.get(name).cloned())
    }

    async fn cursors(&self, prefix: &str) -> Result<BTreeMap<String, String>, Error> {
        let inner = self.lock();
        Ok(inner
            .cursors
            .range(prefix.to_owned()..)
            .take_while(|(name, _)| name.starts_with(prefix))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect())
    }

    async fn set_cursor(&self, name: &str, value: &str) -> Result<(), Error> {
        self.lock()
            .cursors
            .insert(name.to_owned(), value.to_owned());
        Ok(())
    }

    async fn partition_status(&self, asset: &AssetKey) -> Result<PartitionStatus, Error> {
        Ok(self
            .lock()
            .partitions
            .get(asset)
            .cloned()
            .unwrap_or_default())
    }

    async fn partition_materialization(
        &self,
        asset: &AssetKey,
        range: &PartitionRange,
    ) -> Result<Option<MaterializationRecord>, Error> {
        let covers = |m: &&MaterializationRecord| {
            m.partition.as_ref().is_some_and(|p| {
                p.dims == range.dims && p.start <= range.start && p.end >= range.end
            })
        };
        let inner = self.lock();
        let mut found = inner.materializations.iter().rev().map(|(_, m)| m);
        Ok(found.find(|m| &m.asset == asset && covers(m)).cloned())
    }

    async fn dynamic_partitions(&self, name: &str) -> Result<Vec<String>, Error> {
        Ok(self.lock().dynamic.get(name).cloned().unwrap_or_default())
    }

    async fn add_dynamic_partitions(
        &self,
        name: &str,
        keys: &[String],
    ) -> Result<Vec<String>, Error> {
        let mut inner = self.lock();
        let stored = inner.dynamic.entry(name.to_owned()).or_default();
        let mut added = Vec::new();
        for key in keys {
            if !stored.contains(key) {
                stored.push(key.clone());
                added.push(key.clone());
            }
        }
        Ok(added)
    }

    async fn delete_dynamic_partition(&self, name: &str, key: &str) -> Result<bool, Error> {
        let mut inner = self.lock();
        let Some(stored) = inner.dynamic.get_mut(name) else {
            return Ok(false);
        };
        let before = stored.len();
        stored.retain(|k| k != key);
        Ok(stored.len() < before)
    }

    async fn create_backfill(&self, backfill: &BackfillRecord) -> Result<(), Error> {
        let mut inner = self.lock();
        if inner.backfills.contains_key(&backfill.id) {
            return Err(Error::storage(
                "create a backfill",
                format!("backfill `{}` already exists", backfill.id),
            ));
        }
        inner
            .backfills
            .insert(backfill.id.clone(), backfill.clone());
        Ok(())
    }

    async fn backfill(&self, id: &str) -> Result<Option<BackfillRecord>, Error> {
        Ok(self.lock().backfills.get(id).cloned())
    }

    async fn backfills(
        &self,
        status: Option<&[BackfillStatus]>,
        limit: usize,
    ) -> Result<Vec<BackfillRecord>, Error> {
        let inner = self.lock();
        let mut found: Vec<BackfillRecord> = inner
            .backfills
            .values()
            .filter(|b| status.is_none_or(|s| s.contains(&b.status)))
            .cloned()
            .collect();
        found.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| b.id.cmp(&a.id))
        });
        found.truncate(limit);
        Ok(found)
    }

    async fn update_backfill(&self, backfill: &BackfillRecord) -> Result<bool, Error> {
        let mut inner = self.lock();
        let Some(stored) = inner.backfills.get_mut(&backfill.id) else {
            return Err(Error::storage(
                "update a backfill",
                format!("backfill `{}` does not exist", backfill.id),
            ));
        };
        if stored.version != backfill.version {
            return Ok(false);
        }
        *stored = backfill.clone();
        stored.version += 1;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    crate::storage_contract_tests!(async { Box::new(super::InMemoryStorage::new()) });
}
