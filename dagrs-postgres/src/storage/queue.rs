//! The step queue of scale-out workers ([`StepQueue`]) on the store's tables: ready steps
//! claimed with `FOR UPDATE SKIP LOCKED` under a lease and a fencing token, each step's end
//! written in one transaction with its events (numbered from the run's counter, so a rolled
//! back write leaves no gap), its output and its consequences, and `LISTEN/NOTIFY` to wake
//! idle workers.

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use dagrs_core::storage::{CheckRecord, RunRecord};
use dagrs_core::worker::{Claim, QueuedStep, Renewal, StepEnd, StepQueue, WorkerRecord};
use dagrs_core::{AssetKey, ErrorInfo, Event, EventKind, RunId, RunStatus, StepStatus};
use deadpool_postgres::GenericClient;
use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio_postgres::types::Json;
use tokio_postgres::AsyncMessage;

use super::{range_updates, storage_error, CoreResult, EventColumns, Failure, PgStorage};
use crate::ident::Ident;
use crate::transaction::StepTransaction;

/// The default largest step output kept between workers: 64 MiB serialized.
pub const DEFAULT_OUTPUT_LIMIT: usize = 64 << 20;

/// Outputs are kept in rows of this many bytes.
const CHUNK: usize = 1 << 20;

/// The most expired leases one maintenance pass takes over.
const EXPIRED_BATCH: i64 = 256;

/// Set in each of the queue's transactions: its statements are planned for the tables as
/// they are now. A generic plan made while a table was new and empty (a sequential scan)
/// would stay cached on the pooled connection while the table grows.
const CUSTOM_PLANS: &str = "SET LOCAL plan_cache_mode = force_custom_plan";

/// The queue's statements, with the schema's quoted name filled in once.
pub(super) struct QueueSql {
    channel: String,
    tokens: String,
    init_run: String,
    insert_steps: String,
    claim: String,
    ready_pools: String,
    lock_pool: String,
    pool_held: String,
    renew: String,
    stopped_runs: String,
    worker_heartbeat: String,
    register_worker: String,
    set_pools: String,
    deregister_worker: String,
    workers: String,
    fence: String,
    lock_runs: String,
    skip_below: String,
    skip_unclaimed: String,
    advance_runs: String,
    store_outputs: String,
    load_output: String,
    release_downstream: String,
    run_outcome: String,
    end_run: String,
    expired: String,
    settle_expired: String,
    canceling_runs: String,
    empty_runs: String,
    release: String,
    delete_stale_workers: String,
}

impl QueueSql {
    pub(super) fn new(schema: &Ident) -> Self {
        let s = schema;
        QueueSql {
            channel: format!(
                "dagrs_steps_{:016x}",
                super::lock_key("steps", schema) as u64
            ),
            tokens: format!("{s}.step_tokens"),
            init_run: format!(
                "UPDATE {s}.runs SET next_seq = 1, steps_left = $2 WHERE run_id = $1"
            ),
            insert_steps: format!(
                "INSERT INTO {s}.steps (run_id, asset, status, waiting, downstream, pool, \
                                        max_attempts) \
                 SELECT $1, a, CASE WHEN w = 0 THEN 'ready' ELSE 'waiting' END, w, \
                        ARRAY(SELECT json_array_elements_text(d)), p, m \
                 FROM unnest($2::text[], $3::int[], $4::json[], $5::text[], $6::int[]) \
                     WITH ORDINALITY AS u(a, w, d, p, m, n) ORDER BY n"
            ),
            claim: format!(
                "WITH picked AS ( \
                     SELECT s.run_id, s.asset FROM {s}.steps s \
                     JOIN {s}.runs r ON r.run_id = s.run_id \
                     WHERE s.status = 'ready' AND s.pool IS NOT DISTINCT FROM $4 \
                       AND s.not_before <= now() AND r.status = 'running' \
                     ORDER BY s.id LIMIT $2 FOR UPDATE OF s SKIP LOCKED) \
                 UPDATE {s}.steps s SET status = 'claimed', worker = $1, \
                     token = nextval($5::text::regclass), attempts = s.attempts + 1, \
                     lease_until = now() + $3::bigint * interval '1 millisecond' \
                 FROM picked WHERE s.run_id = picked.run_id AND s.asset = picked.asset \
                 RETURNING s.run_id, s.asset, s.attempts, s.token, s.lease_until"
            ),
            ready_pools: format!(
                "SELECT DISTINCT pool FROM {s}.steps WHERE status = 'ready' AND pool IS NOT NULL"
            ),
            lock_pool: format!("SELECT slots FROM {s}.pools WHERE name = $1 FOR UPDATE"),
            pool_held: format!(
                "SELECT count(*) FROM {s}.steps \
                 WHERE status = 'claimed' AND pool = $1 AND lease_until > now()"
            ),
            renew: format!(
                "UPDATE {s}.steps SET lease_until = now() + $2::bigint * interval '1 millisecond' \
                 WHERE status = 'claimed' AND token = ANY($1) AND lease_until > now() \
                 RETURNING token"
            ),
            stopped_runs: format!(
                "SELECT DISTINCT s.run_id FROM {s}.steps s JOIN {s}.runs r ON r.run_id = s.run_id \
                 WHERE s.status = 'claimed' AND s.token = ANY($1) AND r.status <> 'running'"
            ),
            worker_heartbeat: format!("UPDATE {s}.workers SET heartbeat_at = now() WHERE id = $1"),
            register_worker: format!(
                "INSERT INTO {s}.workers (id, host, pid, started_at, heartbeat_at) \
                 VALUES ($1, $2, $3, $4, now()) \
                 ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()"
            ),
            set_pools: format!(
                "INSERT INTO {s}.pools (name, slots) SELECT * FROM unnest($1::text[], $2::int[]) \
                 ON CONFLICT (name) DO UPDATE SET slots = excluded.slots, updated_at = now()"
            ),
            deregister_worker: format!("DELETE FROM {s}.workers WHERE id = $1"),
            workers: format!(
                "SELECT w.id, w.host, w.pid, w.started_at, w.heartbeat_at, \
                        (SELECT count(*) FROM {s}.steps t \
                         WHERE t.status = 'claimed' AND t.worker = w.id) \
                 FROM {s}.workers w ORDER BY w.started_at DESC, w.id"
            ),
            // The lease is checked against the clock, not the transaction's start: a step's
            // own transaction may have begun long before its end.
            fence: format!(
                "UPDATE {s}.steps s SET status = u.status, worker = NULL, lease_until = NULL, \
                     not_before = now() + u.delay * interval '1 millisecond' \
                 FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::bigint[]) \
                     AS u(run_id, asset, token, status, delay) \
                 WHERE s.run_id = u.run_id AND s.asset = u.asset AND s.token = u.token \
                   AND s.status = 'claimed' AND s.lease_until > clock_timestamp() \
                 RETURNING s.run_id, s.asset, s.downstream"
            ),
            lock_runs: format!(
                "SELECT run_id FROM {s}.runs WHERE run_id = ANY($1) \
                 ORDER BY run_id FOR NO KEY UPDATE"
            ),
            skip_below: format!(
                "WITH RECURSIVE below(run_id, asset, root) AS ( \
                     SELECT s.run_id, d.asset, s.asset FROM {s}.steps s \
                     JOIN unnest($1::text[], $2::text[]) AS f(run_id, asset) \
                         ON s.run_id = f.run_id AND s.asset = f.asset \
                     CROSS JOIN LATERAL unnest(s.downstream) AS d(asset) \
                   UNION \
                     SELECT s.run_id, d.asset, b.root FROM below b \
                     JOIN {s}.steps s ON s.run_id = b.run_id AND s.asset = b.asset \
                     CROSS JOIN LATERAL unnest(s.downstream) AS d(asset)) \
                 UPDATE {s}.steps s SET status = 'skipped' \
                 FROM (SELECT DISTINCT ON (run_id, asset) run_id, asset, root FROM below \
                       ORDER BY run_id, asset, root) b \
                 WHERE s.run_id = b.run_id AND s.asset = b.asset \
                   AND s.status IN ('waiting', 'ready') \
                 RETURNING s.run_id, s.asset, b.root"
            ),
            skip_unclaimed: format!(
                "UPDATE {s}.steps SET status = 'skipped' \
                 WHERE run_id = $1 AND status IN ('waiting', 'ready') RETURNING asset"
            ),
            advance_runs: format!(
                "UPDATE {s}.runs r SET next_seq = r.next_seq + u.events, \
                     steps_left = r.steps_left - u.done, heartbeat_at = now() \
                 FROM unnest($1::text[], $2::bigint[], $3::int[]) AS u(run_id, events, done) \
                 WHERE r.run_id = u.run_id \
                 RETURNING r.run_id, r.next_seq - u.events, r.steps_left"
            ),
            store_outputs: format!(
                "INSERT INTO {s}.step_outputs (run_id, asset, chunk, data) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::bytea[])"
            ),
            load_output: format!(
                "SELECT data FROM {s}.step_outputs WHERE run_id = $1 AND asset = $2 \
                 ORDER BY chunk"
            ),
            release_downstream: format!(
                "UPDATE {s}.steps s SET waiting = s.waiting - u.n, \
                     status = CASE WHEN s.waiting - u.n = 0 AND s.status = 'waiting' \
                                   THEN 'ready' ELSE s.status END \
                 FROM unnest($1::text[], $2::text[], $3::int[]) AS u(run_id, asset, n) \
                 WHERE s.run_id = u.run_id AND s.asset = u.asset \
                 RETURNING s.status = 'ready'"
            ),
            run_outcome: format!(
                "SELECT r.status, s.asset, s.status FROM {s}.runs r \
                 LEFT JOIN {s}.steps s ON s.run_id = r.run_id \
                     AND s.status IN ('failed', 'skipped', 'cancelled') \
                 WHERE r.run_id = $1 ORDER BY s.id"
            ),
            end_run: format!(
                "UPDATE {s}.runs SET status = $2, ended_at = now(), next_seq = next_seq + 1 \
                 WHERE run_id = $1 AND status IN ('running', 'canceling') \
                 RETURNING next_seq - 1"
            ),
            expired: format!(
                "SELECT run_id, asset, attempts, max_attempts, worker FROM {s}.steps \
                 WHERE status = 'claimed' AND lease_until <= now() \
                 ORDER BY lease_until LIMIT $1 FOR UPDATE SKIP LOCKED"
            ),
            settle_expired: format!(
                "UPDATE {s}.steps s SET status = u.status, worker = NULL, lease_until = NULL, \
                     not_before = now() \
                 FROM unnest($1::text[], $2::text[], $3::text[]) AS u(run_id, asset, status) \
                 WHERE s.run_id = u.run_id AND s.asset = u.asset"
            ),
            canceling_runs: format!(
                "SELECT run_id FROM {s}.runs WHERE status = 'canceling' AND owner = 'queue' \
                 ORDER BY run_id FOR NO KEY UPDATE SKIP LOCKED"
            ),
            empty_runs: format!(
                "SELECT run_id FROM {s}.runs \
                 WHERE status IN ('running', 'canceling') AND owner = 'queue' AND steps_left = 0 \
                 ORDER BY run_id FOR NO KEY UPDATE SKIP LOCKED"
            ),
            release: format!(
                "UPDATE {s}.steps SET status = 'ready', worker = NULL, lease_until = NULL, \
                     attempts = attempts - 1 \
                 WHERE status = 'claimed' AND token = ANY($1)"
            ),
            delete_stale_workers: format!(
                "DELETE FROM {s}.workers WHERE heartbeat_at < now() - interval '1 day'"
            ),
        }
    }
}

/// A step's end as the queue records it: accepted by its fence (or taken over after its
/// lease expired).
struct Ended {
    run_id: RunId,
    asset: AssetKey,
    /// `succeeded`, `failed`, `cancelled`, or `ready` (to be retried).
    status: &'static str,
    events: Vec<Event>,
    output: Option<serde_json::Value>,
    /// The run's steps that wait for it (known for steps that ended through their fence).
    downstream: Vec<String>,
}

impl Ended {
    fn is_done(&self) -> bool {
        self.status != "ready"
    }
}

fn status_text(end: &StepEnd) -> &'static str {
    match end.status {
        _ if end.retry_in.is_some() => "ready",
        StepStatus::Succeeded => "succeeded",
        StepStatus::Cancelled => "cancelled",
        _ => "failed",
    }
}

/// The current time to the microsecond, as PostgreSQL keeps it.
fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::SubsecRound;
    chrono::Utc::now().trunc_subsecs(6)
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl PgStorage {
    /// The queue's statements.
    fn queue_sql(&self) -> &QueueSql {
        &self.inner.queue
    }

    async fn pooled(&self, operation: &'static str) -> CoreResult<deadpool_postgres::Client> {
        self.inner
            .pg
            .get()
            .await
            .map_err(|e| storage_error(operation, e))
    }

    /// Appends `events` in `tx` (their seqs already set), with what they change.
    async fn append_in(
        &self,
        tx: &impl GenericClient,
        events: &[Event],
    ) -> std::result::Result<(), Failure> {
        if events.is_empty() {
            return Ok(());
        }
        let checks: Vec<CheckRecord> = events.iter().filter_map(CheckRecord::of).collect();
        let columns = EventColumns::of(events, &checks).map_err(Failure::Invalid)?;
        let updates = range_updates(events);
        let locks = self.partition_locks(&updates);
        self.write_events_in(tx, &columns.params(), &updates, &locks)
            .await
    }

    /// Records `ended` steps (and skips what lies below those that failed or were
    /// cancelled, with `skipped` steps of cancelled runs) in `tx`, which holds the locks of
    /// their runs: events numbered from each run's counter, outputs, downstream steps made
    /// ready, and the end of every run left with no step to run. Returns whether steps became
    /// ready.
    async fn record(
        &self,
        tx: &impl GenericClient,
        ended: Vec<Ended>,
        cancelled_runs: &[RunId],
    ) -> std::result::Result<bool, Failure> {
        let sql = self.queue_sql();
        let mut per_run: BTreeMap<RunId, (Vec<Event>, i32)> = BTreeMap::new();
        // What lies below a failure or a cancellation is skipped.
        let stopped: Vec<&Ended> = ended
            .iter()
            .filter(|e| matches!(e.status, "failed" | "cancelled"))
            .collect();
        let stopped_status: HashMap<(&str, &str), &str> = stopped
            .iter()
            .map(|e| ((e.run_id.as_str(), e.asset.as_str()), e.status))
            .collect();
        for end in &ended {
            let entry = per_run.entry(end.run_id.clone()).or_default();
            entry.0.extend(end.events.iter().cloned());
            entry.1 += i32::from(end.is_done());
        }
        if !stopped.is_empty() {
            let runs: Vec<&str> = stopped.iter().map(|e| e.run_id.as_str()).collect();
            let assets: Vec<&str> = stopped.iter().map(|e| e.asset.as_str()).collect();
            let statement = tx
                .prepare_cached(&sql.skip_below)
                .await
                .map_err(Failure::Db)?;
            for row in tx
                .query(&statement, &[&runs, &assets])
                .await
                .map_err(Failure::Db)?
            {
                let run_id = RunId::from(row.try_get::<_, &str>(0).map_err(Failure::Db)?);
                let asset = AssetKey::from(row.try_get::<_, &str>(1).map_err(Failure::Db)?);
                let root: &str = row.try_get(2).map_err(Failure::Db)?;
                let reason = match stopped_status.get(&(run_id.as_str(), root)) {
                    Some(&"cancelled") => format!("upstream `{root}` was cancelled"),
                    _ => format!("upstream `{root}` failed"),
                };
                let entry = per_run.entry(run_id.clone()).or_default();
                entry.0.push(skip_event(&run_id, asset, reason));
                entry.1 += 1;
            }
        }
        for run_id in cancelled_runs {
            let statement = tx
                .prepare_cached(&sql.skip_unclaimed)
                .await
                .map_err(Failure::Db)?;
            for row in tx
                .query(&statement, &[&run_id.as_str()])
                .await
                .map_err(Failure::Db)?
            {
                let asset = AssetKey::from(row.try_get::<_, &str>(0).map_err(Failure::Db)?);
                let entry = per_run.entry(run_id.clone()).or_default();
                entry
                    .0
                    .push(skip_event(run_id, asset, "run cancelled".to_owned()));
                entry.1 += 1;
            }
        }
        // Number the events from each run's counter, and count its steps down.
        let runs: Vec<&str> = per_run.keys().map(RunId::as_str).collect();
        let counts: Vec<i64> = per_run.values().map(|(e, _)| e.len() as i64).collect();
        let done: Vec<i32> = per_run.values().map(|(_, d)| *d).collect();
        let statement = tx
            .prepare_cached(&sql.advance_runs)
            .await
            .map_err(Failure::Db)?;
        let mut finished = Vec::new();
        let mut events = Vec::new();
        for row in tx
            .query(&statement, &[&runs, &counts, &done])
            .await
            .map_err(Failure::Db)?
        {
            let run_id: &str = row.try_get(0).map_err(Failure::Db)?;
            let first: i64 = row.try_get(1).map_err(Failure::Db)?;
            let left: i32 = row.try_get(2).map_err(Failure::Db)?;
            let run_id = RunId::from(run_id);
            if left <= 0 {
                finished.push(run_id.clone());
            }
            if let Some((run_events, _)) = per_run.remove(&run_id) {
                for (i, mut event) in run_events.into_iter().enumerate() {
                    event.seq = u64::try_from(first).unwrap_or(0) + i as u64;
                    events.push(event);
                }
            }
        }
        self.append_in(tx, &events).await?;
        // Kept only for steps downstream in the run: the materialization record holds the
        // value for everyone else.
        let with_output: Vec<&Ended> = ended
            .iter()
            .filter(|e| e.output.is_some() && e.status == "succeeded" && !e.downstream.is_empty())
            .collect();
        if !with_output.is_empty() {
            // A step succeeds once (its fence sees to it): its output is new.
            let (mut runs, mut assets, mut chunks, mut data) = (vec![], vec![], vec![], vec![]);
            for end in &with_output {
                let bytes = serde_json::to_vec(end.output.as_ref().expect("filtered"))
                    .unwrap_or_else(|_| b"null".to_vec());
                for (i, chunk) in bytes.chunks(CHUNK).enumerate() {
                    runs.push(end.run_id.as_str());
                    assets.push(end.asset.as_str());
                    chunks.push(i as i32);
                    data.push(chunk.to_vec());
                }
            }
            let statement = tx
                .prepare_cached(&sql.store_outputs)
                .await
                .map_err(Failure::Db)?;
            tx.execute(&statement, &[&runs, &assets, &chunks, &data])
                .await
                .map_err(Failure::Db)?;
        }
        // Downstream steps whose upstream steps all succeeded become ready.
        let mut woke = ended.iter().any(|e| !e.is_done());
        let mut released: BTreeMap<(&str, &str), i32> = BTreeMap::new();
        for end in ended.iter().filter(|e| e.status == "succeeded") {
            for down in &end.downstream {
                *released.entry((end.run_id.as_str(), down)).or_default() += 1;
            }
        }
        if !released.is_empty() {
            let runs: Vec<&str> = released.keys().map(|k| k.0).collect();
            let assets: Vec<&str> = released.keys().map(|k| k.1).collect();
            let counts: Vec<i32> = released.values().copied().collect();
            let statement = tx
                .prepare_cached(&sql.release_downstream)
                .await
                .map_err(Failure::Db)?;
            for row in tx
                .query(&statement, &[&runs, &assets, &counts])
                .await
                .map_err(Failure::Db)?
            {
                woke |= row.try_get::<_, bool>(0).map_err(Failure::Db)?;
            }
        }
        for run_id in finished {
            self.end_run(tx, &run_id).await?;
        }
        if woke {
            self.notify(tx).await?;
        }
        Ok(woke)
    }

    /// Ends run `run_id`, which has no step left to run: cancelled if it was being
    /// cancelled, failed if a step failed, else succeeded; its final event last.
    async fn end_run(
        &self,
        tx: &impl GenericClient,
        run_id: &RunId,
    ) -> std::result::Result<(), Failure> {
        let sql = self.queue_sql();
        let statement = tx
            .prepare_cached(&sql.run_outcome)
            .await
            .map_err(Failure::Db)?;
        let rows = tx
            .query(&statement, &[&run_id.as_str()])
            .await
            .map_err(Failure::Db)?;
        let mut canceling = false;
        let (mut failed, mut skipped) = (Vec::new(), Vec::new());
        for row in &rows {
            canceling = row.try_get::<_, &str>(0).map_err(Failure::Db)? == "canceling";
            let Some(asset) = row.try_get::<_, Option<&str>>(1).map_err(Failure::Db)? else {
                continue;
            };
            match row.try_get::<_, Option<&str>>(2).map_err(Failure::Db)? {
                Some("failed") => failed.push(AssetKey::from(asset)),
                Some("skipped") => skipped.push(AssetKey::from(asset)),
                _ => {}
            }
        }
        let (status, kind) = if canceling {
            (RunStatus::Cancelled, EventKind::RunCancelled)
        } else if failed.is_empty() {
            (RunStatus::Succeeded, EventKind::RunSucceeded)
        } else {
            (RunStatus::Failed, EventKind::RunFailed { failed, skipped })
        };
        let statement = tx.prepare_cached(&sql.end_run).await.map_err(Failure::Db)?;
        let Some(row) = tx
            .query_opt(&statement, &[&run_id.as_str(), &status.as_str()])
            .await
            .map_err(Failure::Db)?
        else {
            return Ok(());
        };
        let seq: i64 = row.try_get(0).map_err(Failure::Db)?;
        let event = Event {
            run_id: run_id.clone(),
            seq: u64::try_from(seq).unwrap_or(0),
            timestamp: now(),
            asset: None,
            kind,
        };
        self.append_in(tx, std::slice::from_ref(&event)).await
    }

    async fn notify(&self, tx: &impl GenericClient) -> std::result::Result<(), Failure> {
        tx.execute("SELECT pg_notify($1, '')", &[&self.queue_sql().channel])
            .await
            .map_err(Failure::Db)?;
        Ok(())
    }

    async fn lock_runs(
        &self,
        tx: &impl GenericClient,
        runs: &BTreeSet<&str>,
    ) -> std::result::Result<(), Failure> {
        let runs: Vec<&str> = runs.iter().copied().collect();
        let statement = tx
            .prepare_cached(&self.queue_sql().lock_runs)
            .await
            .map_err(Failure::Db)?;
        tx.query(&statement, &[&runs]).await.map_err(Failure::Db)?;
        Ok(())
    }

    /// Fences and records `ends` in `tx`; returns per end whether it was recorded.
    async fn finish_in(
        &self,
        tx: &impl GenericClient,
        ends: Vec<StepEnd>,
    ) -> std::result::Result<Vec<bool>, Failure> {
        let sql = self.queue_sql();
        let runs: Vec<&str> = ends.iter().map(|e| e.claim.run_id.as_str()).collect();
        let assets: Vec<&str> = ends.iter().map(|e| e.claim.asset.as_str()).collect();
        let tokens: Vec<i64> = ends.iter().map(|e| e.claim.token).collect();
        let statuses: Vec<&str> = ends.iter().map(status_text).collect();
        let delays: Vec<i64> = ends.iter().map(|e| e.retry_in.map_or(0, millis)).collect();
        let statement = tx.prepare_cached(&sql.fence).await.map_err(Failure::Db)?;
        let mut accepted: HashMap<(String, String), Vec<String>> = tx
            .query(&statement, &[&runs, &assets, &tokens, &statuses, &delays])
            .await
            .map_err(Failure::Db)?
            .iter()
            .map(|row| Ok(((row.try_get(0)?, row.try_get(1)?), row.try_get(2)?)))
            .collect::<std::result::Result<_, tokio_postgres::Error>>()
            .map_err(Failure::Db)?;
        let mut recorded = Vec::with_capacity(ends.len());
        let mut ended = Vec::with_capacity(ends.len());
        for end in ends {
            let key = (
                end.claim.run_id.as_str().to_owned(),
                end.claim.asset.as_str().to_owned(),
            );
            let Some(downstream) = accepted.remove(&key) else {
                recorded.push(false);
                continue;
            };
            recorded.push(true);
            ended.push(Ended {
                status: status_text(&end),
                run_id: end.claim.run_id,
                asset: end.claim.asset,
                events: end.events,
                output: end.output,
                downstream,
            });
        }
        if ended.is_empty() {
            return Ok(recorded);
        }
        let locked: BTreeSet<&str> = ended.iter().map(|e| e.run_id.as_str()).collect();
        self.lock_runs(tx, &locked).await?;
        self.record(tx, ended, &[]).await?;
        Ok(recorded)
    }

    /// One maintenance pass in `tx`: expired leases, cancelled runs, runs with no step left.
    async fn maintain_in(&self, tx: &impl GenericClient) -> std::result::Result<usize, Failure> {
        let sql = self.queue_sql();
        let statement = tx.prepare_cached(&sql.expired).await.map_err(Failure::Db)?;
        let expired = tx
            .query(&statement, &[&EXPIRED_BATCH])
            .await
            .map_err(Failure::Db)?;
        let mut ended = Vec::with_capacity(expired.len());
        for row in &expired {
            let run_id = RunId::from(row.try_get::<_, &str>(0).map_err(Failure::Db)?);
            let asset = AssetKey::from(row.try_get::<_, &str>(1).map_err(Failure::Db)?);
            let attempts: i32 = row.try_get(2).map_err(Failure::Db)?;
            let max_attempts: i32 = row.try_get(3).map_err(Failure::Db)?;
            let worker: Option<&str> = row.try_get(4).map_err(Failure::Db)?;
            let will_retry = attempts < max_attempts;
            let message = format!(
                "worker {} stopped renewing its lease on the step (it was killed, paused or cut \
                 off from the database){}",
                worker.unwrap_or("?"),
                if will_retry {
                    "; another worker runs it again"
                } else {
                    "; no attempt is left"
                }
            );
            let attempt = u32::try_from(attempts).unwrap_or(0);
            let event = Event {
                run_id: run_id.clone(),
                seq: 0,
                timestamp: now(),
                asset: Some(asset.clone()),
                kind: EventKind::StepFailed {
                    attempt,
                    error: ErrorInfo {
                        message,
                        causes: Vec::new(),
                    },
                    will_retry,
                    partition: None,
                },
            };
            ended.push(Ended {
                run_id,
                asset,
                status: if will_retry { "ready" } else { "failed" },
                events: vec![event],
                output: None,
                downstream: Vec::new(),
            });
        }
        let changed = ended.len();
        if !ended.is_empty() {
            let runs: Vec<&str> = ended.iter().map(|e| e.run_id.as_str()).collect();
            let assets: Vec<&str> = ended.iter().map(|e| e.asset.as_str()).collect();
            let statuses: Vec<&str> = ended.iter().map(|e| e.status).collect();
            let statement = tx
                .prepare_cached(&sql.settle_expired)
                .await
                .map_err(Failure::Db)?;
            tx.execute(&statement, &[&runs, &assets, &statuses])
                .await
                .map_err(Failure::Db)?;
        }
        let statement = tx
            .prepare_cached(&sql.canceling_runs)
            .await
            .map_err(Failure::Db)?;
        let cancelled: Vec<RunId> = tx
            .query(&statement, &[])
            .await
            .map_err(Failure::Db)?
            .iter()
            .map(|row| row.try_get::<_, &str>(0).map(RunId::from))
            .collect::<std::result::Result<_, _>>()
            .map_err(Failure::Db)?;
        let mut locked: BTreeSet<&str> = ended.iter().map(|e| e.run_id.as_str()).collect();
        locked.extend(cancelled.iter().map(RunId::as_str));
        if !locked.is_empty() {
            let locked: BTreeSet<String> = locked.into_iter().map(str::to_owned).collect();
            self.lock_runs(tx, &locked.iter().map(String::as_str).collect())
                .await?;
            self.record(tx, ended, &cancelled).await?;
        }
        let statement = tx
            .prepare_cached(&sql.empty_runs)
            .await
            .map_err(Failure::Db)?;
        let empty = tx.query(&statement, &[]).await.map_err(Failure::Db)?;
        for row in &empty {
            let run_id = RunId::from(row.try_get::<_, &str>(0).map_err(Failure::Db)?);
            self.end_run(tx, &run_id).await?;
        }
        tx.execute(&sql.delete_stale_workers, &[])
            .await
            .map_err(Failure::Db)?;
        Ok(changed + empty.len())
    }

    /// Claims up to `limit` ready steps of `pool` (`None`: steps of no pool).
    async fn claim_of(
        &self,
        tx: &impl GenericClient,
        worker: &str,
        limit: i64,
        lease: Duration,
        pool: Option<&str>,
    ) -> std::result::Result<Vec<Claim>, Failure> {
        let sql = self.queue_sql();
        let statement = tx.prepare_cached(&sql.claim).await.map_err(Failure::Db)?;
        tx.query(
            &statement,
            &[&worker, &limit, &millis(lease), &pool, &sql.tokens],
        )
        .await
        .map_err(Failure::Db)?
        .iter()
        .map(|row| {
            Ok(Claim {
                run_id: RunId::from(row.try_get::<_, &str>(0)?),
                asset: AssetKey::from(row.try_get::<_, &str>(1)?),
                attempt: u32::try_from(row.try_get::<_, i32>(2)?).unwrap_or(1),
                token: row.try_get(3)?,
                lease_until: row.try_get(4)?,
            })
        })
        .collect::<std::result::Result<_, tokio_postgres::Error>>()
        .map_err(Failure::Db)
    }

    fn listener(&self) -> Arc<Listener> {
        Arc::clone(self.inner.listener.get_or_init(|| {
            Listener::start(
                self.inner.pg.pg_config().clone(),
                self.queue_sql().channel.clone(),
            )
        }))
    }
}

fn skip_event(run_id: &RunId, asset: AssetKey, reason: String) -> Event {
    Event {
        run_id: run_id.clone(),
        seq: 0,
        timestamp: now(),
        asset: Some(asset),
        kind: EventKind::StepSkipped { reason },
    }
}

/// Runs `work` in a transaction on a pooled connection, committed when it succeeds.
macro_rules! in_transaction {
    ($self:ident, $op:expr, |$tx:ident| $work:expr) => {{
        let mut client = $self.pooled($op).await?;
        let $tx = client.transaction().await.map_err($self.db_error($op))?;
        $tx.batch_execute(CUSTOM_PLANS)
            .await
            .map_err($self.db_error($op))?;
        let outcome = $work.await.map_err($self.failed($op))?;
        $tx.commit().await.map_err($self.db_error($op))?;
        Ok(outcome)
    }};
}

#[async_trait]
impl StepQueue for PgStorage {
    async fn enqueue(
        &self,
        run: &RunRecord,
        started: &Event,
        steps: &[QueuedStep],
    ) -> CoreResult<()> {
        const OP: &str = "queue a run's steps";
        let sql = self.queue_sql();
        let assets: Vec<&str> = steps.iter().map(|s| s.asset.as_str()).collect();
        let waiting: Vec<i32> = steps
            .iter()
            .map(|s| i32::try_from(s.upstream).unwrap_or(i32::MAX))
            .collect();
        let downstream: Vec<Json<Vec<&str>>> = steps
            .iter()
            .map(|s| Json(s.downstream.iter().map(AssetKey::as_str).collect()))
            .collect();
        let pools: Vec<Option<&str>> = steps.iter().map(|s| s.pool.as_deref()).collect();
        let attempts: Vec<i32> = steps
            .iter()
            .map(|s| i32::try_from(s.max_attempts).unwrap_or(i32::MAX))
            .collect();
        let count = i32::try_from(steps.len()).unwrap_or(i32::MAX);
        in_transaction!(self, OP, |tx| async {
            self.create_run_in(&tx, run).await?;
            tx.execute(&sql.init_run, &[&run.run_id.as_str(), &count])
                .await
                .map_err(Failure::Db)?;
            self.append_in(&tx, std::slice::from_ref(started)).await?;
            let statement = tx
                .prepare_cached(&sql.insert_steps)
                .await
                .map_err(Failure::Db)?;
            tx.execute(
                &statement,
                &[
                    &run.run_id.as_str(),
                    &assets,
                    &waiting,
                    &downstream,
                    &pools,
                    &attempts,
                ],
            )
            .await
            .map_err(Failure::Db)?;
            if steps.is_empty() {
                self.end_run(&tx, &run.run_id).await?;
            } else {
                self.notify(&tx).await?;
            }
            Ok::<_, Failure>(())
        })
    }

    async fn register_worker(
        &self,
        worker: &WorkerRecord,
        pools: &BTreeMap<String, usize>,
    ) -> CoreResult<()> {
        const OP: &str = "register a worker";
        let sql = self.queue_sql();
        let client = self.pooled(OP).await?;
        let pid = i32::try_from(worker.pid).unwrap_or(i32::MAX);
        client
            .execute(
                &sql.register_worker,
                &[&worker.id, &worker.host, &pid, &worker.started_at],
            )
            .await
            .map_err(self.db_error(OP))?;
        if !pools.is_empty() {
            let names: Vec<&str> = pools.keys().map(String::as_str).collect();
            let slots: Vec<i32> = pools
                .values()
                .map(|&n| i32::try_from(n).unwrap_or(i32::MAX))
                .collect();
            client
                .execute(&sql.set_pools, &[&names, &slots])
                .await
                .map_err(self.db_error(OP))?;
        }
        Ok(())
    }

    async fn deregister_worker(&self, worker: &str) -> CoreResult<()> {
        const OP: &str = "deregister a worker";
        self.pooled(OP)
            .await?
            .execute(&self.queue_sql().deregister_worker, &[&worker])
            .await
            .map_err(self.db_error(OP))?;
        Ok(())
    }

    async fn workers(&self) -> CoreResult<Vec<WorkerRecord>> {
        const OP: &str = "list the workers";
        self.pooled(OP)
            .await?
            .query(&self.queue_sql().workers, &[])
            .await
            .map_err(self.db_error(OP))?
            .iter()
            .map(|row| {
                Ok(WorkerRecord {
                    id: row.try_get(0)?,
                    host: row.try_get(1)?,
                    pid: u32::try_from(row.try_get::<_, i32>(2)?).unwrap_or(0),
                    started_at: row.try_get(3)?,
                    heartbeat_at: row.try_get(4)?,
                    claimed: u32::try_from(row.try_get::<_, i64>(5)?).unwrap_or(u32::MAX),
                })
            })
            .collect::<std::result::Result<_, tokio_postgres::Error>>()
            .map_err(self.db_error(OP))
    }

    async fn claim(&self, worker: &str, limit: usize, lease: Duration) -> CoreResult<Vec<Claim>> {
        const OP: &str = "claim steps";
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut client = self.pooled(OP).await?;
        let tx = client.transaction().await.map_err(self.db_error(OP))?;
        tx.batch_execute(CUSTOM_PLANS)
            .await
            .map_err(self.db_error(OP))?;
        let mut claims = self
            .claim_of(&tx, worker, limit, lease, None)
            .await
            .map_err(self.failed(OP))?;
        tx.commit().await.map_err(self.db_error(OP))?;
        if claims.len() as i64 >= limit {
            return Ok(claims);
        }
        // Steps of pools: each pool's row is locked while its free slots are counted and
        // taken, so two workers never both take its last slot.
        let statement = client
            .prepare_cached(&self.queue_sql().ready_pools)
            .await
            .map_err(self.db_error(OP))?;
        let pools: Vec<String> = client
            .query(&statement, &[])
            .await
            .map_err(self.db_error(OP))?
            .iter()
            .map(|row| row.try_get(0))
            .collect::<std::result::Result<_, _>>()
            .map_err(self.db_error(OP))?;
        for pool in pools {
            let want = limit - claims.len() as i64;
            if want <= 0 {
                break;
            }
            let tx = client.transaction().await.map_err(self.db_error(OP))?;
            tx.batch_execute(CUSTOM_PLANS)
                .await
                .map_err(self.db_error(OP))?;
            let slots: Option<i32> = tx
                .query_opt(&self.queue_sql().lock_pool, &[&pool])
                .await
                .map_err(self.db_error(OP))?
                .map(|row| row.try_get(0))
                .transpose()
                .map_err(self.db_error(OP))?;
            let free = match slots {
                None => want,
                Some(slots) => {
                    let held: i64 = tx
                        .query_one(&self.queue_sql().pool_held, &[&pool])
                        .await
                        .and_then(|row| row.try_get(0))
                        .map_err(self.db_error(OP))?;
                    (i64::from(slots) - held).clamp(0, want)
                }
            };
            if free > 0 {
                let taken = self
                    .claim_of(&tx, worker, free, lease, Some(&pool))
                    .await
                    .map_err(self.failed(OP))?;
                claims.extend(taken);
            }
            tx.commit().await.map_err(self.db_error(OP))?;
        }
        Ok(claims)
    }

    async fn renew(&self, worker: &str, claims: &[Claim], lease: Duration) -> CoreResult<Renewal> {
        const OP: &str = "renew leases";
        let sql = self.queue_sql();
        let client = self.pooled(OP).await?;
        client
            .execute(&sql.worker_heartbeat, &[&worker])
            .await
            .map_err(self.db_error(OP))?;
        if claims.is_empty() {
            return Ok(Renewal::default());
        }
        let tokens: Vec<i64> = claims.iter().map(|c| c.token).collect();
        let kept: HashSet<i64> = client
            .query(&sql.renew, &[&tokens, &millis(lease)])
            .await
            .map_err(self.db_error(OP))?
            .iter()
            .map(|row| row.try_get(0))
            .collect::<std::result::Result<_, _>>()
            .map_err(self.db_error(OP))?;
        let stopped = client
            .query(&sql.stopped_runs, &[&tokens])
            .await
            .map_err(self.db_error(OP))?
            .iter()
            .map(|row| row.try_get::<_, &str>(0).map(RunId::from))
            .collect::<std::result::Result<_, _>>()
            .map_err(self.db_error(OP))?;
        Ok(Renewal {
            lost: tokens.into_iter().filter(|t| !kept.contains(t)).collect(),
            stopped,
        })
    }

    async fn finish(&self, ends: Vec<StepEnd>) -> CoreResult<Vec<bool>> {
        const OP: &str = "record step ends";
        // A step that wrote in its own transaction ends in it: its data, its record and its
        // events commit together, or none of them.
        if let [end] = ends.as_slice() {
            if let Some(step_tx) = transaction_of(end) {
                return self.finish_transactional(step_tx, ends).await;
            }
        }
        in_transaction!(self, OP, |tx| self.finish_in(&tx, ends))
    }

    async fn release(&self, claims: &[Claim]) -> CoreResult<()> {
        const OP: &str = "hand steps back";
        let tokens: Vec<i64> = claims.iter().map(|c| c.token).collect();
        let client = self.pooled(OP).await?;
        client
            .execute(&self.queue_sql().release, &[&tokens])
            .await
            .map_err(self.db_error(OP))?;
        client
            .execute("SELECT pg_notify($1, '')", &[&self.queue_sql().channel])
            .await
            .map_err(self.db_error(OP))?;
        Ok(())
    }

    async fn maintain(&self, _lease: Duration) -> CoreResult<usize> {
        const OP: &str = "take over lost steps";
        in_transaction!(self, OP, |tx| self.maintain_in(&tx))
    }

    async fn load_output(
        &self,
        run_id: &RunId,
        asset: &AssetKey,
    ) -> CoreResult<Option<serde_json::Value>> {
        const OP: &str = "read a step's output";
        let rows = self
            .pooled(OP)
            .await?
            .query(
                &self.queue_sql().load_output,
                &[&run_id.as_str(), &asset.as_str()],
            )
            .await
            .map_err(self.db_error(OP))?;
        if rows.is_empty() {
            return Ok(None);
        }
        let mut bytes = Vec::new();
        for row in &rows {
            bytes.extend_from_slice(row.try_get::<_, &[u8]>(0).map_err(self.db_error(OP))?);
        }
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| storage_error(OP, e))
    }

    async fn wait_for_steps(&self, timeout: Duration) {
        let listener = self.listener();
        let _ = tokio::time::timeout(timeout, listener.notify.notified()).await;
    }

    fn attachment(&self) -> Option<Arc<dyn Any + Send + Sync>> {
        Some(Arc::new(StepTransaction::new(self.inner.pg.clone())))
    }

    fn writes_alone(&self, end: &StepEnd) -> bool {
        transaction_of(end).is_some_and(|tx| tx.was_opened())
    }

    fn output_limit(&self) -> usize {
        self.output_limit
    }
}

/// The step transaction attached to `end`, if any.
fn transaction_of(end: &StepEnd) -> Option<Arc<StepTransaction>> {
    Arc::clone(end.attachment.as_ref()?)
        .downcast::<StepTransaction>()
        .ok()
        .filter(|tx| tx.was_opened())
}

impl PgStorage {
    /// Ends a step that opened its own transaction: a success commits its end in it; any
    /// other end rolls the asset's writes back, then is recorded as usual.
    async fn finish_transactional(
        &self,
        step_tx: Arc<StepTransaction>,
        ends: Vec<StepEnd>,
    ) -> CoreResult<Vec<bool>> {
        const OP: &str = "commit a step with its data";
        let succeeded = ends[0].status == StepStatus::Succeeded && ends[0].retry_in.is_none();
        let Some(client) = step_tx.take_open().await else {
            // Its transaction was lost with an earlier try: the data is gone, so the step is
            // not recorded; its lease expires and it runs again.
            return Ok(vec![false]);
        };
        if !succeeded {
            let _ = client.batch_execute("ROLLBACK").await;
            drop(client);
            return in_transaction!(self, OP, |tx| self.finish_in(&tx, ends));
        }
        let outcome = match client.batch_execute(CUSTOM_PLANS).await {
            Ok(()) => self.finish_in(&client, ends).await,
            Err(e) => Err(Failure::Db(e)),
        };
        let committed = match outcome {
            Ok(recorded) if recorded.iter().all(|r| *r) => client
                .batch_execute("COMMIT")
                .await
                .map(|()| recorded)
                .map_err(Failure::Db),
            Ok(recorded) => {
                // Fenced out: another worker has the step; nothing of this one stays.
                let _ = client.batch_execute("ROLLBACK").await;
                Ok(recorded)
            }
            Err(e) => Err(e),
        };
        match committed {
            Ok(recorded) => Ok(recorded),
            Err(e) => {
                // The connection is in an unknown state: close it rather than pool it.
                drop(deadpool_postgres::Object::take(client));
                Err(self.failed(OP)(e))
            }
        }
    }
}

/// A connection that `LISTEN`s on the queue's channel and wakes the idle workers of this
/// process; it reconnects after losing the server, waking them too (a notification may
/// have been missed meanwhile).
pub(super) struct Listener {
    notify: Notify,
}

impl Listener {
    fn start(config: tokio_postgres::Config, channel: String) -> Arc<Self> {
        let listener = Arc::new(Listener {
            notify: Notify::new(),
        });
        let weak = Arc::downgrade(&listener);
        tokio::spawn(listen(config, channel, weak));
        listener
    }

    fn wake(&self) {
        self.notify.notify_waiters();
        // A worker between two waits takes this permit instead.
        self.notify.notify_one();
    }
}

async fn listen(config: tokio_postgres::Config, channel: String, listener: Weak<Listener>) {
    let mut pause = Duration::from_millis(100);
    loop {
        match listen_once(&config, &channel, &listener).await {
            Ok(()) => pause = Duration::from_millis(100),
            Err(e) => tracing::debug!(target: "dagrs::worker", "listening for steps: {e}"),
        }
        let Some(strong) = listener.upgrade() else {
            return;
        };
        strong.wake();
        drop(strong);
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

async fn listen_once(
    config: &tokio_postgres::Config,
    channel: &str,
    listener: &Weak<Listener>,
) -> std::result::Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(tokio_postgres::NoTls).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(_)) => {
                    if tx.send(()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    client.batch_execute(&format!("LISTEN {channel}")).await?;
    // Listening from now: whatever became ready before is found by the next claim.
    if let Some(strong) = listener.upgrade() {
        strong.wake();
    }
    while rx.recv().await.is_some() {
        while rx.try_recv().is_ok() {}
        match listener.upgrade() {
            Some(strong) => strong.wake(),
            None => break,
        }
    }
    driver.abort();
    Ok(())
}
