//! One pass over schedules and sensors: which ticks are due, claiming them, requesting their
//! runs and recording how each went.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, DurationRound, Utc};
use futures_util::{stream, StreamExt, TryStreamExt};

use super::{Daemon, Evaluation};
use crate::error::Error;
use crate::executor::RunOptions;
use crate::job::{RUN_KEY_TAG, SCHEDULE_TAG, SENSOR_TAG, TICK_TAG};
use crate::key::RunId;
use crate::lock;
use crate::schedule::Schedule;
use crate::sensor::{RunStatusContext, Sensor, SensorContext, SensorKind, SensorResult};
use crate::storage::{
    InstigatorKind, InstigatorStatus, MaterializationRecord, TickRecord, TickStatus,
};

/// Whether `name` runs: its stored state, else its default.
fn is_running(
    states: &BTreeMap<String, InstigatorStatus>,
    name: &str,
    default: InstigatorStatus,
) -> bool {
    states.get(name).copied().unwrap_or(default) == InstigatorStatus::Running
}

impl Daemon {
    pub(super) async fn evaluate_schedules(
        &self,
        now: DateTime<Utc>,
        states: &BTreeMap<String, InstigatorStatus>,
        evaluation: &mut Evaluation,
    ) -> Result<(), Error> {
        let storage = self.instance.storage();
        for schedule in self.defs.schedules() {
            if !is_running(states, &schedule.name, schedule.default_status) {
                lock(&self.state).schedule_cursors.remove(&schedule.name);
                continue;
            }
            let known = lock(&self.state)
                .schedule_cursors
                .get(&schedule.name)
                .copied();
            let after = match known {
                Some(after) => after,
                None => {
                    // First sight: from the stored cursor, or (never run) from now on.
                    let key = crate::schedule::cursor_key(&schedule.name);
                    let stored = storage.cursor(&key).await?;
                    let stored = stored.and_then(|text| DateTime::parse_from_rfc3339(&text).ok());
                    let after = match stored {
                        Some(at) => at.with_timezone(&Utc),
                        None => {
                            storage.set_cursor(&key, &now.to_rfc3339()).await?;
                            now
                        }
                    };
                    lock(&self.state)
                        .schedule_cursors
                        .insert(schedule.name.clone(), after);
                    after
                }
            };
            let due = schedule.due(after, now);
            let Some(&last) = due.last() else {
                continue;
            };
            for tick in due {
                if let Some(record) = self.fire(schedule, tick).await? {
                    evaluation.ticks.push(record);
                }
            }
            storage
                .set_cursor(
                    &crate::schedule::cursor_key(&schedule.name),
                    &last.to_rfc3339(),
                )
                .await?;
            lock(&self.state)
                .schedule_cursors
                .insert(schedule.name.clone(), last);
        }
        Ok(())
    }

    /// Claims `tick` of `schedule` and, when this daemon won it, queues its run; `None` when
    /// another daemon had it.
    async fn fire(
        &self,
        schedule: &Schedule,
        tick: DateTime<Utc>,
    ) -> Result<Option<TickRecord>, Error> {
        let run_id = RunId::default();
        let mut record = TickRecord {
            name: schedule.name.clone(),
            kind: InstigatorKind::Schedule,
            tick,
            status: TickStatus::Started,
            run_ids: vec![run_id.clone()],
            reason: None,
        };
        let storage = self.instance.storage();
        if !storage.claim_tick(&record).await? {
            return Ok(None);
        }
        let mut options = RunOptions::new()
            .run_id(run_id)
            .tag(SCHEDULE_TAG, &schedule.name)
            .tag(TICK_TAG, tick.to_rfc3339());
        let submitted = match self.defs.job(&schedule.job) {
            Some(job) if schedule.last_partition => {
                match Schedule::partition_at(&self.defs, &job.selection, tick) {
                    Ok(key) => {
                        options = options.partition(key);
                        Ok(())
                    }
                    Err(reason) => Err(Error::from(crate::error::Problem::InvalidPartition {
                        target: String::new(),
                        reason,
                    })),
                }
            }
            _ => Ok(()),
        };
        let submitted = match submitted {
            Ok(()) => {
                self.instance
                    .submit_job(&self.defs, &schedule.job, options)
                    .await
            }
            Err(e) => Err(e),
        };
        match submitted {
            Ok(_) => record.status = TickStatus::Fired,
            Err(e) => {
                record.status = TickStatus::Failed;
                record.run_ids.clear();
                record.reason = Some(e.to_string());
                tracing::warn!(target: "dagrs::daemon", schedule = %schedule.name, "tick failed: {e}");
            }
        }
        storage.update_tick(&record).await?;
        Ok(Some(record))
    }

    pub(super) async fn evaluate_sensors(
        &self,
        now: DateTime<Utc>,
        states: &BTreeMap<String, InstigatorStatus>,
        evaluation: &mut Evaluation,
    ) -> Result<(), Error> {
        let due: Vec<&Sensor> = {
            let mut state = lock(&self.state);
            self.defs
                .sensors()
                .iter()
                .filter(|sensor| is_running(states, &sensor.name, sensor.default_status))
                .filter(|sensor| {
                    let last = state.sensor_evaluated.get(&sensor.name);
                    if last.is_some_and(|last| now - *last < interval_of(sensor)) {
                        return false;
                    }
                    state.sensor_evaluated.insert(sensor.name.clone(), now);
                    true
                })
                .collect()
        };
        if due.is_empty() {
            return Ok(());
        }
        // Read once a pass, and only when a sensor needs it.
        let latest = if due.iter().any(|s| matches!(s.kind, SensorKind::Asset(_))) {
            let records = self.instance.storage().latest_materializations().await?;
            records
                .into_iter()
                .map(|m| (m.asset.to_string(), m))
                .collect()
        } else {
            HashMap::new()
        };
        // Many at once: their storage writes batch, and a slow sensor does not hold the rest.
        // Daemons evaluating one sensor share the tick of its interval: each tick is
        // claimed once, so one of them evaluates it. All claims in one write.
        let storage = self.instance.storage();
        let records: Vec<TickRecord> = due
            .iter()
            .map(|sensor| TickRecord {
                name: sensor.name.clone(),
                kind: InstigatorKind::Sensor,
                tick: quantize(now, interval_of(sensor)),
                status: TickStatus::Started,
                run_ids: Vec::new(),
                reason: None,
            })
            .collect();
        let won = storage.claim_ticks(&records).await?;
        let cursors = storage.cursors("sensor/").await?;
        let mut evaluations = Vec::new();
        for ((sensor, record), won) in due.into_iter().zip(records).zip(won) {
            if won {
                let cursor = cursors
                    .get(&crate::sensor::cursor_key(&sensor.name))
                    .cloned();
                evaluations.push(self.tick_sensor(sensor, record, now, cursor, &latest));
            }
        }
        // Many at once: a slow sensor does not hold the rest, and writes batch.
        let records: Vec<TickRecord> = stream::iter(evaluations)
            .buffered(SENSORS_AT_ONCE)
            .try_collect()
            .await?;
        storage.update_ticks(&records).await?;
        evaluation.ticks.extend(records);
        Ok(())
    }

    /// Evaluates a sensor whose tick this daemon claimed, and requests its runs.
    async fn tick_sensor(
        &self,
        sensor: &Sensor,
        mut record: TickRecord,
        now: DateTime<Utc>,
        cursor: Option<String>,
        latest: &HashMap<String, MaterializationRecord>,
    ) -> Result<TickRecord, Error> {
        match self.sense(sensor, now, cursor, latest).await {
            Ok(result) => self.request(sensor, result, &mut record).await?,
            Err(e) => {
                record.status = TickStatus::Failed;
                record.reason = Some(crate::text::mask_secrets(&format!("{e:#}")));
                tracing::warn!(target: "dagrs::daemon", sensor = %sensor.name, "evaluation failed: {e:#}");
            }
        }
        Ok(record)
    }

    /// Evaluates `sensor`: its function, or the built-in asset or run-status logic.
    pub(super) async fn sense(
        &self,
        sensor: &Sensor,
        now: DateTime<Utc>,
        cursor: Option<String>,
        latest: &HashMap<String, MaterializationRecord>,
    ) -> anyhow::Result<SensorResult> {
        let storage = self.instance.storage();
        let resources = self.defs.resources();
        match &sensor.kind {
            SensorKind::Function(callback) => {
                let context = SensorContext {
                    name: sensor.name.clone(),
                    cursor,
                    now,
                };
                callback.call(context, resources).await
            }
            SensorKind::Asset(assets) => Ok(asset_sensor(assets, latest, cursor)),
            SensorKind::RunStatus {
                status,
                of_job,
                callback,
            } => {
                // The first evaluation watches from now on.
                let Some(since) = cursor.and_then(|c| DateTime::parse_from_rfc3339(&c).ok()) else {
                    return Ok(
                        SensorResult::skip("watching runs from now on").cursor(now.to_rfc3339())
                    );
                };
                let since = since.with_timezone(&Utc);
                let mut ended: Vec<_> = storage
                    .runs(RUN_STATUS_WINDOW)
                    .await?
                    .into_iter()
                    .filter(|run| run.status == *status)
                    .filter(|run| run.ended_at.is_some_and(|end| end > since))
                    .filter(|run| {
                        of_job
                            .as_ref()
                            .is_none_or(|job| run.tags.get(crate::job::JOB_TAG) == Some(job))
                    })
                    .collect();
                ended.sort_by_key(|run| run.ended_at);
                let Some(newest) = ended.last().and_then(|run| run.ended_at) else {
                    return Ok(SensorResult::skip(format!("no run {status} since {since}")));
                };
                let mut requests = Vec::new();
                for run in ended {
                    let context = RunStatusContext {
                        name: sensor.name.clone(),
                        run,
                        now,
                    };
                    let result = callback.call(context, resources).await?;
                    requests.extend(result.requests);
                }
                let result = if requests.is_empty() {
                    SensorResult::skip("handled the runs; no run requested")
                } else {
                    SensorResult::runs(requests)
                };
                Ok(result.cursor(newest.to_rfc3339()))
            }
        }
    }

    /// Queues the runs `result` requests (each run key once), stores its cursor, and sets
    /// the tick's status, runs and reason.
    async fn request(
        &self,
        sensor: &Sensor,
        result: SensorResult,
        record: &mut TickRecord,
    ) -> Result<(), Error> {
        let storage = self.instance.storage();
        let mut reasons = Vec::new();
        for request in result.requests {
            let Some(job) = request.job.as_ref().or(sensor.job.as_ref()) else {
                reasons.push("a request names no job and the sensor has none".to_owned());
                continue;
            };
            let run_id = RunId::default();
            let mut options = RunOptions::new()
                .run_id(run_id.clone())
                .config(request.config)
                .tag(SENSOR_TAG, &sensor.name)
                .tag(TICK_TAG, record.tick.to_rfc3339());
            for (key, value) in request.tags {
                options = options.tag(key, value);
            }
            if let Some(key) = &request.run_key {
                if let Some(holder) = storage.claim_run_key(&sensor.name, key, &run_id).await? {
                    reasons.push(format!("run key `{key}` already launched run {holder}"));
                    continue;
                }
                options = options.tag(RUN_KEY_TAG, key);
            }
            match self.instance.submit_job(&self.defs, job, options).await {
                Ok(run_id) => record.run_ids.push(run_id),
                Err(e) => reasons.push(e.to_string()),
            }
        }
        if let Some(cursor) = &result.cursor {
            storage
                .set_cursor(&crate::sensor::cursor_key(&sensor.name), cursor)
                .await?;
        }
        record.status = if !record.run_ids.is_empty() {
            TickStatus::Fired
        } else if result.skip.is_some() || reasons.iter().all(|r| r.contains("run key")) {
            TickStatus::Skipped
        } else {
            TickStatus::Failed
        };
        let reason = result.skip.into_iter().chain(reasons).collect::<Vec<_>>();
        record.reason = (!reason.is_empty()).then(|| {
            crate::text::bounded(&reason.join("; "), 4 * crate::text::ECHO_LIMIT).into_owned()
        });
        Ok(())
    }
}

/// A sensor's minimum interval as a date-time duration.
fn interval_of(sensor: &Sensor) -> chrono::Duration {
    chrono::Duration::from_std(sensor.minimum_interval).unwrap_or(chrono::Duration::MAX)
}

/// How many sensors a pass evaluates at once.
const SENSORS_AT_ONCE: usize = 64;

/// How many of the newest runs a run-status sensor looks through.
const RUN_STATUS_WINDOW: usize = 500;

/// An asset sensor's evaluation: a run when a watched asset has a materialization the cursor
/// has not seen (its run key names them); the first evaluation only notes where things are.
fn asset_sensor(
    assets: &[crate::key::AssetKey],
    latest: &HashMap<String, MaterializationRecord>,
    cursor: Option<String>,
) -> SensorResult {
    let now: BTreeMap<String, String> = assets
        .iter()
        .filter_map(|asset| {
            let m = latest.get(asset.as_str())?;
            Some((asset.to_string(), format!("{}:{}", m.run_id, m.seq)))
        })
        .collect();
    let next = serde_json::to_string(&now).unwrap_or_default();
    let Some(seen) = cursor.and_then(|c| serde_json::from_str::<BTreeMap<String, String>>(&c).ok())
    else {
        return SensorResult::skip("watching the assets from now on").cursor(next);
    };
    let new: Vec<String> = now
        .iter()
        .filter(|(asset, at)| seen.get(*asset) != Some(*at))
        .map(|(asset, at)| format!("{asset}@{at}"))
        .collect();
    if new.is_empty() {
        return SensorResult::skip("no new materialization").cursor(next);
    }
    SensorResult::run(crate::sensor::RunRequest::new().run_key(new.join(","))).cursor(next)
}

/// `now` rounded down to a multiple of `interval` since the epoch (`now` itself for a zero
/// or enormous interval).
fn quantize(now: DateTime<Utc>, interval: chrono::Duration) -> DateTime<Utc> {
    if interval <= chrono::Duration::zero() {
        return now;
    }
    now.duration_trunc(interval).unwrap_or(now)
}
