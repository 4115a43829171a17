//! Rows as SQLite keeps them: conversions of values, the row types read and written, and the
//! statements beyond a single query.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection};

use super::partitions::RangeUpdate;

use crate::error::Error;
use crate::event::{Event, RunStatus};
use crate::key::{AssetKey, RunId};
use crate::partition::PartitionRange;
use crate::storage::{
    runs_to_prune, tick_cutoff, AutomationRecord, CheckRecord, MaterializationPosition,
    MaterializationRecord, PruneReport, Retention, RunRecord, TickRecord,
};

/// `.or_storage(op)`: a SQLite error as an [`Error::Storage`]; a value that cannot be read
/// back, or a damaged file, as [`Damage`].
pub(super) trait OrStorage<T> {
    fn or_storage(self, op: &'static str) -> Result<T, Error>;
}

impl<T> OrStorage<T> for rusqlite::Result<T> {
    fn or_storage(self, op: &'static str) -> Result<T, Error> {
        self.map_err(|e| {
            let damaged = matches!(
                e,
                rusqlite::Error::FromSqlConversionFailure(..)
                    | rusqlite::Error::InvalidColumnType(..)
                    | rusqlite::Error::Utf8Error(..)
            ) || matches!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
            );
            if damaged {
                Error::storage(op, Damage(e.to_string()))
            } else {
                Error::storage(op, e)
            }
        })
    }
}

/// What was found unreadable in a store that opened fine: a sign that the file is damaged.
/// The store then stops writing (see `Shared::checked`).
#[derive(Debug)]
pub(super) struct Damage(pub(super) String);

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Damage {}

pub(super) fn is_primary_key_clash(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error(),
        Some(e) if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
    )
}

pub(super) fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

pub(super) fn instant(micros: i64, op: &'static str, what: &str) -> Result<DateTime<Utc>, Error> {
    DateTime::from_timestamp_micros(micros).ok_or_else(|| {
        Error::storage(
            op,
            Damage(format!(
                "the stored {what} ({micros} µs since 1970) is out of range"
            )),
        )
    })
}

fn seq_to_sql(seq: u64, run_id: &RunId, op: &'static str) -> Result<i64, Error> {
    i64::try_from(seq).map_err(|_| {
        Error::storage(
            op,
            format!(
                "event {seq} of run `{run_id}`: SQLite stores sequence numbers up to {}",
                i64::MAX
            ),
        )
    })
}

pub(super) fn seq_from_sql(seq: i64, op: &'static str) -> Result<u64, Error> {
    u64::try_from(seq).map_err(|_| {
        Error::storage(
            op,
            Damage(format!(
                "the stored event sequence number {seq} is negative"
            )),
        )
    })
}

pub(super) fn limit_to_sql(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

pub(super) fn to_json<T: serde::Serialize + ?Sized>(
    value: &T,
    op: &'static str,
) -> Result<String, Error> {
    serde_json::to_string(value).map_err(|e| Error::storage(op, e))
}

pub(super) fn from_json<T: serde::de::DeserializeOwned>(
    text: &str,
    op: &'static str,
    what: impl FnOnce() -> String,
) -> Result<T, Error> {
    serde_json::from_str(text)
        .map_err(|e| Error::storage(op, Damage(format!("{} cannot be read: {e}", what()))))
}

pub(super) const RUN_COLUMNS: &str =
    "run_id, status, selection, assets, config, tags, started_at, \
                           ended_at, owner, heartbeat_at, parent_run_id, failure";

/// A `runs` row as SQLite returns it.
pub(super) struct RunRow {
    run_id: String,
    status: String,
    selection: String,
    assets: String,
    config: String,
    tags: String,
    started_at: i64,
    ended_at: Option<i64>,
    owner: String,
    heartbeat_at: i64,
    parent_run_id: Option<String>,
    failure: Option<String>,
}

impl RunRow {
    pub(super) fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RunRow> {
        Ok(RunRow {
            run_id: row.get(0)?,
            status: row.get(1)?,
            selection: row.get(2)?,
            assets: row.get(3)?,
            config: row.get(4)?,
            tags: row.get(5)?,
            started_at: row.get(6)?,
            ended_at: row.get(7)?,
            owner: row.get(8)?,
            heartbeat_at: row.get(9)?,
            parent_run_id: row.get(10)?,
            failure: row.get(11)?,
        })
    }

    pub(super) fn into_record(self, op: &'static str) -> Result<RunRecord, Error> {
        let id = &self.run_id;
        let column = |name: &str| format!("the `{name}` of stored run `{id}`");
        Ok(RunRecord {
            status: self
                .status
                .parse::<RunStatus>()
                .map_err(|e| Error::storage(op, Damage(format!("stored run `{id}`: {e}"))))?,
            selection: self.selection,
            assets: from_json(&self.assets, op, || column("assets"))?,
            config: from_json(&self.config, op, || column("config"))?,
            tags: from_json(&self.tags, op, || column("tags"))?,
            started_at: instant(self.started_at, op, &column("started_at"))?,
            ended_at: self
                .ended_at
                .map(|at| instant(at, op, &column("ended_at")))
                .transpose()?,
            owner: self.owner,
            heartbeat_at: instant(self.heartbeat_at, op, &column("heartbeat_at"))?,
            parent_run_id: self.parent_run_id.map(RunId::from),
            failure: self.failure,
            run_id: RunId::from(self.run_id),
        })
    }
}

/// Runs `sql` and turns each row into a record: `from_row` reads the columns, `into` checks
/// and decodes them.
fn query_records<R, T>(
    conn: &Connection,
    op: &'static str,
    sql: &str,
    params: impl rusqlite::Params,
    from_row: fn(&rusqlite::Row<'_>) -> rusqlite::Result<R>,
    into: fn(R, &'static str) -> Result<T, Error>,
) -> Result<Vec<T>, Error> {
    let mut stmt = conn.prepare_cached(sql).or_storage(op)?;
    let rows = stmt
        .query_map(params, from_row)
        .or_storage(op)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .or_storage(op)?;
    rows.into_iter().map(|row| into(row, op)).collect()
}

pub(super) fn query_runs(
    conn: &Connection,
    op: &'static str,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<RunRecord>, Error> {
    query_records(conn, op, sql, params, RunRow::from_row, RunRow::into_record)
}

pub(super) const MATERIALIZATION_COLUMNS: &str =
    "asset, run_id, seq, timestamp, metadata, value, code_version, \
     partition_key, partition_dims, partition_start, partition_end";

/// A `materializations` row as SQLite returns it.
struct MaterializationRow {
    asset: String,
    run_id: String,
    seq: i64,
    timestamp: i64,
    metadata: String,
    value: String,
    code_version: Option<String>,
    partition_key: Option<String>,
    partition_dims: Option<String>,
    partition_start: Option<i64>,
    partition_end: Option<i64>,
}

impl MaterializationRow {
    fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<MaterializationRow> {
        Ok(MaterializationRow {
            asset: row.get(0)?,
            run_id: row.get(1)?,
            seq: row.get(2)?,
            timestamp: row.get(3)?,
            metadata: row.get(4)?,
            value: row.get(5)?,
            code_version: row.get(6)?,
            partition_key: row.get(7)?,
            partition_dims: row.get(8)?,
            partition_start: row.get(9)?,
            partition_end: row.get(10)?,
        })
    }

    fn into_record(self, op: &'static str) -> Result<MaterializationRecord, Error> {
        let column = |name: &str| {
            format!(
                "the `{name}` of the stored materialization of `{}` by run `{}`",
                self.asset, self.run_id
            )
        };
        let partition = match (
            self.partition_key,
            self.partition_dims,
            self.partition_start,
            self.partition_end,
        ) {
            (None, None, None, None) => None,
            (Some(key), Some(dims), Some(start), Some(end)) => Some(PartitionRange {
                key,
                dims,
                start,
                end,
            }),
            _ => {
                return Err(Error::storage(
                    op,
                    Damage(format!("{} is partly missing", column("partition"))),
                ))
            }
        };
        Ok(MaterializationRecord {
            partition,
            seq: seq_from_sql(self.seq, op)?,
            timestamp: instant(self.timestamp, op, &column("timestamp"))?,
            metadata: from_json(&self.metadata, op, || column("metadata"))?,
            value: from_json(&self.value, op, || column("value"))?,
            code_version: self.code_version,
            asset: AssetKey::from(self.asset),
            run_id: RunId::from(self.run_id),
        })
    }
}

pub(super) fn query_materializations(
    conn: &Connection,
    op: &'static str,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<MaterializationRecord>, Error> {
    query_records(
        conn,
        op,
        sql,
        params,
        MaterializationRow::from_row,
        MaterializationRow::into_record,
    )
}

/// Runs `sql`, whose columns are [`MATERIALIZATION_COLUMNS`] then `id`, into records with
/// their positions (the row id: writes are serialized, so ids become visible in order).
pub(super) fn query_positioned_materializations(
    conn: &Connection,
    op: &'static str,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<(MaterializationPosition, MaterializationRecord)>, Error> {
    query_records(
        conn,
        op,
        sql,
        params,
        |row| Ok((row.get::<_, i64>(11)?, MaterializationRow::from_row(row)?)),
        |(id, row), op| {
            let id = u64::try_from(id).map_err(|_| {
                Error::storage(
                    op,
                    Damage(format!("the stored materialization id {id} is negative")),
                )
            })?;
            Ok((MaterializationPosition::new(0, id), row.into_record(op)?))
        },
    )
}

pub(super) const CHECK_COLUMNS: &str =
    "asset, check_name, run_id, seq, timestamp, passed, severity, blocking, description, \
     metadata";

/// A `check_records` row as SQLite keeps it.
pub(super) struct CheckRow {
    asset: String,
    check: String,
    run_id: String,
    seq: i64,
    timestamp: i64,
    passed: bool,
    severity: String,
    blocking: bool,
    description: Option<String>,
    metadata: String,
}

impl CheckRow {
    /// The row of a check evaluation event; `None` for other events.
    fn of(event: &Event, op: &'static str) -> Result<Option<CheckRow>, Error> {
        let Some(record) = CheckRecord::of(event) else {
            return Ok(None);
        };
        Ok(Some(CheckRow {
            seq: seq_to_sql(record.seq, &record.run_id, op)?,
            timestamp: micros(record.timestamp),
            passed: record.passed,
            severity: record.severity.as_str().to_owned(),
            blocking: record.blocking,
            metadata: to_json(&record.metadata, op)?,
            description: record.description,
            asset: record.asset.to_string(),
            check: record.check,
            run_id: record.run_id.to_string(),
        }))
    }

    /// The columns in [`CHECK_COLUMNS`] order, as statement parameters `?1` to `?10`.
    fn params(&self) -> [&dyn rusqlite::ToSql; 10] {
        [
            &self.asset,
            &self.check,
            &self.run_id,
            &self.seq,
            &self.timestamp,
            &self.passed,
            &self.severity,
            &self.blocking,
            &self.description,
            &self.metadata,
        ]
    }

    pub(super) fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<CheckRow> {
        Ok(CheckRow {
            asset: row.get(0)?,
            check: row.get(1)?,
            run_id: row.get(2)?,
            seq: row.get(3)?,
            timestamp: row.get(4)?,
            passed: row.get(5)?,
            severity: row.get(6)?,
            blocking: row.get(7)?,
            description: row.get(8)?,
            metadata: row.get(9)?,
        })
    }

    pub(super) fn into_record(self, op: &'static str) -> Result<CheckRecord, Error> {
        let what = format!(
            "the stored evaluation of check `{}` of `{}` by run `{}`",
            self.check, self.asset, self.run_id
        );
        Ok(CheckRecord {
            seq: seq_from_sql(self.seq, op)?,
            timestamp: instant(self.timestamp, op, &what)?,
            passed: self.passed,
            severity: self
                .severity
                .parse()
                .map_err(|e| Error::storage(op, Damage(format!("{what}: {e}"))))?,
            blocking: self.blocking,
            description: self.description,
            metadata: from_json(&self.metadata, op, || format!("the metadata of {what}"))?,
            asset: AssetKey::from(self.asset),
            check: self.check,
            run_id: RunId::from(self.run_id),
        })
    }
}

pub(super) fn query_checks(
    conn: &Connection,
    op: &'static str,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<CheckRecord>, Error> {
    query_records(
        conn,
        op,
        sql,
        params,
        CheckRow::from_row,
        CheckRow::into_record,
    )
}

pub(super) const AUTOMATION_COLUMNS: &str = "asset, evaluated_at, requested, reason, run_ids";

/// An `automation_records` row as SQLite keeps it.
pub(super) struct AutomationRow {
    asset: String,
    evaluated_at: i64,
    requested: bool,
    reason: String,
    run_ids: String,
}

impl AutomationRow {
    pub(super) fn of(record: &AutomationRecord, op: &'static str) -> Result<AutomationRow, Error> {
        Ok(AutomationRow {
            asset: record.asset.to_string(),
            evaluated_at: micros(record.evaluated_at),
            requested: record.requested,
            reason: record.reason.clone(),
            run_ids: to_json(&record.run_ids, op)?,
        })
    }

    /// The columns in [`AUTOMATION_COLUMNS`] order, as statement parameters `?1` to `?5`.
    pub(super) fn params(&self) -> [&dyn rusqlite::ToSql; 5] {
        [
            &self.asset,
            &self.evaluated_at,
            &self.requested,
            &self.reason,
            &self.run_ids,
        ]
    }

    pub(super) fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<AutomationRow> {
        Ok(AutomationRow {
            asset: row.get(0)?,
            evaluated_at: row.get(1)?,
            requested: row.get(2)?,
            reason: row.get(3)?,
            run_ids: row.get(4)?,
        })
    }

    pub(super) fn into_record(self, op: &'static str) -> Result<AutomationRecord, Error> {
        let what = format!("the stored automation evaluation of `{}`", self.asset);
        Ok(AutomationRecord {
            evaluated_at: instant(self.evaluated_at, op, &what)?,
            requested: self.requested,
            run_ids: from_json(&self.run_ids, op, || format!("the run ids of {what}"))?,
            reason: self.reason,
            asset: AssetKey::from(self.asset),
        })
    }
}

pub(super) fn query_automation(
    conn: &Connection,
    op: &'static str,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<AutomationRecord>, Error> {
    query_records(
        conn,
        op,
        sql,
        params,
        AutomationRow::from_row,
        AutomationRow::into_record,
    )
}

pub(super) const TICK_COLUMNS: &str = "name, tick, kind, status, run_ids, reason";

/// A `ticks` row as SQLite keeps it.
pub(super) struct TickRow {
    name: String,
    tick: i64,
    kind: String,
    status: String,
    run_ids: String,
    reason: Option<String>,
}

impl TickRow {
    pub(super) fn of(tick: &TickRecord, op: &'static str) -> Result<TickRow, Error> {
        Ok(TickRow {
            name: tick.name.clone(),
            tick: micros(tick.tick),
            kind: tick.kind.as_str().to_owned(),
            status: tick.status.as_str().to_owned(),
            run_ids: to_json(&tick.run_ids, op)?,
            reason: tick.reason.clone(),
        })
    }

    /// The columns in [`TICK_COLUMNS`] order, as statement parameters `?1` to `?6`.
    pub(super) fn params(&self) -> [&dyn rusqlite::ToSql; 6] {
        [
            &self.name,
            &self.tick,
            &self.kind,
            &self.status,
            &self.run_ids,
            &self.reason,
        ]
    }

    pub(super) fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<TickRow> {
        Ok(TickRow {
            name: row.get(0)?,
            tick: row.get(1)?,
            kind: row.get(2)?,
            status: row.get(3)?,
            run_ids: row.get(4)?,
            reason: row.get(5)?,
        })
    }

    pub(super) fn into_record(self, op: &'static str) -> Result<TickRecord, Error> {
        let what = format!("tick of `{}`", self.name);
        let parse = |e: String| Error::storage(op, Damage(format!("{what}: {e}")));
        Ok(TickRecord {
            tick: instant(self.tick, op, &what)?,
            kind: self.kind.parse().map_err(parse)?,
            status: self.status.parse().map_err(parse)?,
            run_ids: from_json(&self.run_ids, op, || what.clone())?,
            reason: self.reason,
            name: self.name,
        })
    }
}

/// An event ready for `INSERT` (serialized by the caller, off the writer thread).
pub(super) struct EventInsert {
    run_id: RunId,
    seq: i64,
    timestamp: i64,
    asset: Option<String>,
    kind: String,
    materialization: Option<MaterializationInsert>,
    check: Option<CheckRow>,
}

struct MaterializationInsert {
    asset: String,
    metadata: String,
    value: String,
    code_version: Option<String>,
    partition: Option<PartitionRange>,
}

impl EventInsert {
    pub(super) fn new(event: &Event, op: &'static str) -> Result<EventInsert, Error> {
        let materialization = event
            .materialization()
            .map(|m| -> Result<_, Error> {
                Ok(MaterializationInsert {
                    asset: m.asset.to_string(),
                    metadata: to_json(m.metadata, op)?,
                    value: to_json(m.value, op)?,
                    code_version: m.code_version.map(str::to_owned),
                    partition: m.partition.cloned(),
                })
            })
            .transpose()?;
        Ok(EventInsert {
            seq: seq_to_sql(event.seq, &event.run_id, op)?,
            run_id: event.run_id.clone(),
            timestamp: micros(event.timestamp),
            asset: event.asset.as_ref().map(AssetKey::to_string),
            kind: to_json(&event.kind, op)?,
            materialization,
            check: CheckRow::of(event, op)?,
        })
    }
}

/// Appends events, their materialization and check records and the partition status they
/// change, in the caller's savepoint.
pub(super) fn append(
    conn: &Connection,
    events: &[EventInsert],
    partitions: &[RangeUpdate],
    op: &'static str,
) -> Result<(), Error> {
    let mut run_exists = conn
        .prepare_cached("SELECT 1 FROM runs WHERE run_id = ?1")
        .or_storage(op)?;
    let mut insert_event = conn
        .prepare_cached(
            "INSERT INTO events (run_id, seq, timestamp, asset, kind) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .or_storage(op)?;
    let mut insert_materialization = conn
        .prepare_cached(
            "INSERT INTO materializations \
             (asset, run_id, seq, timestamp, metadata, value, code_version, \
              partition_key, partition_dims, partition_start, partition_end, previous) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, \
                     (SELECT id FROM asset_latest WHERE asset = ?1))",
        )
        .or_storage(op)?;
    let mut set_latest = conn
        .prepare_cached(
            "INSERT INTO asset_latest (asset, id) VALUES (?1, last_insert_rowid()) \
             ON CONFLICT (asset) DO UPDATE SET id = excluded.id",
        )
        .or_storage(op)?;
    let mut insert_check = conn
        .prepare_cached(&format!(
            "INSERT INTO check_records ({CHECK_COLUMNS}) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
        ))
        .or_storage(op)?;
    let mut known: HashSet<&str> = HashSet::new();
    for event in events {
        let run_id = event.run_id.as_str();
        if known.insert(run_id) && !run_exists.exists([run_id]).or_storage(op)? {
            return Err(Error::RunNotFound(run_id.to_owned()));
        }
        insert_event
            .execute(params![
                run_id,
                event.seq,
                event.timestamp,
                event.asset,
                event.kind
            ])
            .map_err(|e| {
                if is_primary_key_clash(&e) {
                    Error::storage(
                        op,
                        format!("run `{run_id}` already has event {}", event.seq),
                    )
                } else {
                    Error::storage(op, e)
                }
            })?;
        if let Some(m) = &event.materialization {
            let p = m.partition.as_ref();
            insert_materialization
                .execute(params![
                    m.asset,
                    run_id,
                    event.seq,
                    event.timestamp,
                    m.metadata,
                    m.value,
                    m.code_version,
                    p.map(|p| &p.key),
                    p.map(|p| &p.dims),
                    p.map(|p| p.start),
                    p.map(|p| p.end),
                ])
                .or_storage(op)?;
            set_latest.execute([&m.asset]).or_storage(op)?;
        }
        if let Some(check) = &event.check {
            insert_check.execute(check.params()).or_storage(op)?;
        }
    }
    super::partitions::apply(conn, partitions, op)
}

pub(super) fn run_exists(conn: &Connection, run_id: &str, op: &'static str) -> Result<bool, Error> {
    conn.prepare_cached("SELECT 1 FROM runs WHERE run_id = ?1")
        .and_then(|mut stmt| stmt.exists([run_id]))
        .or_storage(op)
}

pub(super) fn prune(
    conn: &Connection,
    keep: Retention,
    now: DateTime<Utc>,
    op: &'static str,
) -> Result<PruneReport, Error> {
    let ticks = match tick_cutoff(keep, now) {
        Some(cutoff) => {
            conn.execute(
                "DELETE FROM automation_records WHERE evaluated_at < ?1",
                [micros(cutoff)],
            )
            .or_storage(op)?;
            conn.execute("DELETE FROM ticks WHERE tick < ?1", [micros(cutoff)])
                .or_storage(op)? as u64
        }
        None => 0,
    };
    let runs = query_runs(conn, op, &format!("SELECT {RUN_COLUMNS} FROM runs"), [])?;
    let doomed = runs_to_prune(&runs, keep, now);
    if doomed.is_empty() {
        return Ok(PruneReport {
            ticks,
            ..PruneReport::default()
        });
    }
    let doomed = to_json(&doomed, op)?;
    let delete = |sql: &str| -> Result<u64, Error> {
        let removed = conn.execute(sql, [&doomed]).or_storage(op)?;
        Ok(removed as u64)
    };
    // Events first: deleting the runs would cascade to them uncounted.
    let events = delete("DELETE FROM events WHERE run_id IN (SELECT value FROM json_each(?1))")?;
    let materializations = delete(
        "DELETE FROM materializations WHERE run_id IN (SELECT value FROM json_each(?1)) \
         AND id NOT IN (SELECT id FROM asset_latest)",
    )?;
    delete("DELETE FROM check_records WHERE run_id IN (SELECT value FROM json_each(?1))")?;
    let runs = delete("DELETE FROM runs WHERE run_id IN (SELECT value FROM json_each(?1))")?;
    Ok(PruneReport {
        runs,
        events,
        materializations,
        ticks,
    })
}
