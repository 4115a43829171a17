//! Partitions in SQLite: partition status as one row per range, updated inside the write
//! that appends the events; the keys of dynamic partitions definitions; backfill records.

use rusqlite::{params, Connection, OptionalExtension};

use super::rows::{from_json, limit_to_sql, micros, to_json, Damage, OrStorage};
use crate::backfill::{BackfillRecord, BackfillStatus};
use crate::error::Error;
use crate::event::Event;
use crate::partition::status::{cut, merged, outcomes, PartitionOutcome};
use crate::partition::{PartitionSet, PartitionStatus};

/// The stored ranges of one status touching `[?4, ?5]`: those starting inside it, and the
/// one before it when it reaches `?4`. Ranges of one `(asset, status, dims)` are disjoint
/// and sorted, so only the last range starting before `?4` can reach it: two index seeks,
/// however many ranges are stored.
pub(super) const TOUCHING: &str = "\
    SELECT start_at, end_at FROM partition_ranges \
    WHERE asset = ?1 AND status = ?2 AND dims = ?3 AND start_at BETWEEN ?4 AND ?5 \
    UNION ALL \
    SELECT start_at, end_at FROM ( \
        SELECT start_at, end_at FROM partition_ranges \
        WHERE asset = ?1 AND status = ?2 AND dims = ?3 AND start_at < ?4 \
        ORDER BY start_at DESC LIMIT 1 \
    ) WHERE end_at >= ?4";

/// The stored ranges of one status overlapping `[?4, ?5)` (sharing at least one value).
pub(super) const OVERLAPPING: &str = "\
    SELECT start_at, end_at FROM partition_ranges \
    WHERE asset = ?1 AND status = ?2 AND dims = ?3 AND start_at >= ?4 AND start_at < ?5 \
    UNION ALL \
    SELECT start_at, end_at FROM ( \
        SELECT start_at, end_at FROM partition_ranges \
        WHERE asset = ?1 AND status = ?2 AND dims = ?3 AND start_at < ?4 \
        ORDER BY start_at DESC LIMIT 1 \
    ) WHERE end_at > ?4";

/// Removes the ranges starting in `[?4, ?5]` (those found touching or overlapping are
/// consecutive, so this removes exactly them).
const DELETE_RANGES: &str = "\
    DELETE FROM partition_ranges \
    WHERE asset = ?1 AND status = ?2 AND dims = ?3 AND start_at BETWEEN ?4 AND ?5";

/// Every range of an asset, in the order of the primary key: one seek, then a scan of the
/// asset's rows only.
pub(super) const STATUS: &str = "\
    SELECT status, dims, start_at, end_at FROM partition_ranges WHERE asset = ?1 \
    ORDER BY status, dims, start_at";

const INSERT_RANGE: &str = "\
    INSERT INTO partition_ranges (asset, status, dims, start_at, end_at) \
    VALUES (?1, ?2, ?3, ?4, ?5)";

/// The materializations of asset `?1` covering partitions `[?3, ?4)` of discrete keys `?2`
/// (found by the index on `(asset, partition_dims, partition_start, partition_end)`).
pub(super) const COVERING: &str = "\
    WHERE asset = ?1 AND partition_dims = ?2 AND partition_start <= ?3 AND partition_end >= ?4";

/// One partition outcome of an appended batch, ready for the writer thread.
pub(super) struct RangeUpdate {
    asset: String,
    dims: String,
    start: i64,
    end: i64,
    outcome: PartitionOutcome,
}

impl RangeUpdate {
    /// The partition outcomes `events` record, in order.
    pub(super) fn of(events: &[Event]) -> Vec<RangeUpdate> {
        outcomes(events)
            .filter(|(_, range, _)| range.end > range.start)
            .map(|(asset, range, outcome)| RangeUpdate {
                asset: asset.to_string(),
                dims: range.dims.clone(),
                start: range.start,
                end: range.end,
                outcome,
            })
            .collect()
    }
}

/// Applies partition outcomes as [`PartitionStatus::apply`] does, inside the caller's
/// transaction: a materialization joins the materialized ranges and leaves the failed ones,
/// a failure joins the failed ranges.
pub(super) fn apply(
    conn: &Connection,
    updates: &[RangeUpdate],
    op: &'static str,
) -> Result<(), Error> {
    for update in updates {
        match update.outcome {
            PartitionOutcome::Materialized => {
                union_into(conn, update, PartitionOutcome::Materialized, op)?;
                cut_from(conn, update, PartitionOutcome::Failed, op)?;
            }
            PartitionOutcome::Failed => union_into(conn, update, PartitionOutcome::Failed, op)?,
        }
    }
    Ok(())
}

/// The stored ranges found by `sql` (`TOUCHING` or `OVERLAPPING`) for `update` in `status`.
fn stored(
    conn: &Connection,
    sql: &str,
    update: &RangeUpdate,
    status: PartitionOutcome,
    op: &'static str,
) -> Result<Vec<(i64, i64)>, Error> {
    let mut stmt = conn.prepare_cached(sql).or_storage(op)?;
    let rows = stmt
        .query_map(
            params![
                update.asset,
                status.as_str(),
                update.dims,
                update.start,
                update.end
            ],
            |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?)),
        )
        .or_storage(op)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .or_storage(op)?;
    Ok(rows)
}

/// Replaces the stored ranges `old` (consecutive, of `update`'s asset and keys in `status`)
/// with `new`.
fn replace(
    conn: &Connection,
    update: &RangeUpdate,
    status: PartitionOutcome,
    old: &[(i64, i64)],
    new: &[(i64, i64)],
    op: &'static str,
) -> Result<(), Error> {
    let first = old.iter().map(|r| r.0).min();
    let last = old.iter().map(|r| r.0).max();
    if let (Some(first), Some(last)) = (first, last) {
        conn.prepare_cached(DELETE_RANGES)
            .and_then(|mut stmt| {
                stmt.execute(params![
                    update.asset,
                    status.as_str(),
                    update.dims,
                    first,
                    last
                ])
            })
            .or_storage(op)?;
    }
    let mut insert = conn.prepare_cached(INSERT_RANGE).or_storage(op)?;
    for &(start, end) in new {
        insert
            .execute(params![
                update.asset,
                status.as_str(),
                update.dims,
                start,
                end
            ])
            .or_storage(op)?;
    }
    Ok(())
}

fn union_into(
    conn: &Connection,
    update: &RangeUpdate,
    status: PartitionOutcome,
    op: &'static str,
) -> Result<(), Error> {
    let touching = stored(conn, TOUCHING, update, status, op)?;
    let joined = merged(&touching, update.start, update.end);
    if touching == [joined] {
        // Already stored as one range (a partition materialized again).
        return Ok(());
    }
    replace(conn, update, status, &touching, &[joined], op)
}

fn cut_from(
    conn: &Connection,
    update: &RangeUpdate,
    status: PartitionOutcome,
    op: &'static str,
) -> Result<(), Error> {
    let overlapping = stored(conn, OVERLAPPING, update, status, op)?;
    if overlapping.is_empty() {
        return Ok(());
    }
    let left = cut(&overlapping, update.start, update.end);
    replace(conn, update, status, &overlapping, &left, op)
}

/// The stored partition status of `asset`: one ordered read of its ranges.
pub(super) fn status(
    conn: &Connection,
    asset: &str,
    op: &'static str,
) -> Result<PartitionStatus, Error> {
    let mut stmt = conn.prepare_cached(STATUS).or_storage(op)?;
    let rows = stmt
        .query_map([asset], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, i64>(2)?,
                row.get::<_, i64>(3)?,
            ))
        })
        .or_storage(op)?;
    let mut materialized = Vec::new();
    let mut failed = Vec::new();
    for row in rows {
        let (status, dims, start, end) = row.or_storage(op)?;
        let status: PartitionOutcome = status.parse().map_err(|e| {
            Error::storage(op, Damage(format!("a partition range of `{asset}`: {e}")))
        })?;
        match status {
            PartitionOutcome::Materialized => materialized.push((dims, start, end)),
            PartitionOutcome::Failed => failed.push((dims, start, end)),
        }
    }
    let set = |rows, status: PartitionOutcome| {
        PartitionSet::from_rows(rows).map_err(|e| {
            Error::storage(
                op,
                Damage(format!("the {status} partitions of `{asset}`: {e}")),
            )
        })
    };
    Ok(PartitionStatus {
        materialized: set(materialized, PartitionOutcome::Materialized)?,
        failed: set(failed, PartitionOutcome::Failed)?,
        in_progress: PartitionSet::new(),
    })
}

/// The keys of dynamic partitions definition `name`, in the order they were added.
pub(super) fn dynamic_keys(
    conn: &Connection,
    name: &str,
    op: &'static str,
) -> Result<Vec<String>, Error> {
    let mut stmt = conn
        .prepare_cached("SELECT key FROM dynamic_partitions WHERE name = ?1 ORDER BY position")
        .or_storage(op)?;
    let keys = stmt
        .query_map([name], |row| row.get(0))
        .or_storage(op)?
        .collect::<rusqlite::Result<Vec<String>>>()
        .or_storage(op)?;
    Ok(keys)
}

/// Adds the keys `name` lacks, after those it has, in order; returns them.
pub(super) fn add_dynamic_keys(
    conn: &Connection,
    name: &str,
    keys: &[String],
    op: &'static str,
) -> Result<Vec<String>, Error> {
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO dynamic_partitions (name, key, position) VALUES (?1, ?2, \
                 (SELECT coalesce(max(position), 0) + 1 FROM dynamic_partitions \
                  WHERE name = ?1)) \
             ON CONFLICT (name, key) DO NOTHING",
        )
        .or_storage(op)?;
    let mut added = Vec::new();
    for key in keys {
        if insert.execute(params![name, key]).or_storage(op)? == 1 {
            added.push(key.clone());
        }
    }
    Ok(added)
}

/// A backfill as a row: its record, encoded off the writer thread.
pub(super) struct BackfillRow {
    pub(super) id: String,
    status: &'static str,
    created_at: i64,
    version: i64,
    body: String,
}

impl BackfillRow {
    /// The row of `backfill`, stored as version `version`.
    pub(super) fn of(
        backfill: &BackfillRecord,
        version: u64,
        op: &'static str,
    ) -> Result<BackfillRow, Error> {
        let sql_version = i64::try_from(version).map_err(|_| {
            Error::storage(
                op,
                format!(
                    "backfill `{}`: version {version} is beyond what SQLite stores ({})",
                    backfill.id,
                    i64::MAX
                ),
            )
        })?;
        let body = if backfill.version == version {
            to_json(backfill, op)?
        } else {
            to_json(
                &BackfillRecord {
                    version,
                    ..backfill.clone()
                },
                op,
            )?
        };
        Ok(BackfillRow {
            id: backfill.id.clone(),
            status: backfill.status.as_str(),
            created_at: micros(backfill.created_at),
            version: sql_version,
            body,
        })
    }

    pub(super) fn insert(&self, conn: &Connection) -> rusqlite::Result<usize> {
        conn.prepare_cached(
            "INSERT INTO backfills (id, status, created_at, version, body) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                self.id,
                self.status,
                self.created_at,
                self.version,
                self.body
            ])
        })
    }

    /// Stores the row if the stored version is `expected`; whether it did.
    pub(super) fn compare_and_set(
        &self,
        conn: &Connection,
        expected: i64,
        op: &'static str,
    ) -> Result<bool, Error> {
        let changed = conn
            .prepare_cached(
                "UPDATE backfills SET status = ?2, created_at = ?3, version = ?4, body = ?5 \
                 WHERE id = ?1 AND version = ?6",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    self.id,
                    self.status,
                    self.created_at,
                    self.version,
                    self.body,
                    expected
                ])
            })
            .or_storage(op)?;
        if changed > 0 {
            return Ok(true);
        }
        let exists = conn
            .prepare_cached("SELECT 1 FROM backfills WHERE id = ?1")
            .and_then(|mut stmt| stmt.exists([&self.id]))
            .or_storage(op)?;
        if !exists {
            return Err(Error::storage(
                op,
                format!("backfill `{}` does not exist", self.id),
            ));
        }
        Ok(false)
    }
}

const BACKFILL_COLUMNS: &str = "id, version, body";

fn backfill_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(String, i64, String)> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
}

fn decode_backfill(
    (id, version, body): (String, i64, String),
    op: &'static str,
) -> Result<BackfillRecord, Error> {
    let mut record: BackfillRecord =
        from_json(&body, op, || format!("the stored backfill `{id}`"))?;
    // The column is what compare-and-set checks: it is the version.
    record.version = u64::try_from(version).map_err(|_| {
        Error::storage(
            op,
            Damage(format!(
                "the stored backfill `{id}` has a negative version {version}"
            )),
        )
    })?;
    Ok(record)
}

/// One backfill, if stored.
pub(super) fn backfill(
    conn: &Connection,
    id: &str,
    op: &'static str,
) -> Result<Option<BackfillRecord>, Error> {
    conn.prepare_cached(&format!(
        "SELECT {BACKFILL_COLUMNS} FROM backfills WHERE id = ?1"
    ))
    .and_then(|mut stmt| stmt.query_row([id], backfill_from_row).optional())
    .or_storage(op)?
    .map(|row| decode_backfill(row, op))
    .transpose()
}

/// The newest backfills first, in one of `statuses` when given, at most `limit`.
pub(super) fn backfills(
    conn: &Connection,
    statuses: Option<&[BackfillStatus]>,
    limit: usize,
    op: &'static str,
) -> Result<Vec<BackfillRecord>, Error> {
    let statuses = statuses
        .map(|s| to_json(&s.iter().map(|s| s.as_str()).collect::<Vec<_>>(), op))
        .transpose()?;
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {BACKFILL_COLUMNS} FROM backfills \
             WHERE ?1 IS NULL OR status IN (SELECT value FROM json_each(?1)) \
             ORDER BY created_at DESC, id DESC LIMIT ?2"
        ))
        .or_storage(op)?;
    let rows = stmt
        .query_map(params![statuses, limit_to_sql(limit)], backfill_from_row)
        .or_storage(op)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .or_storage(op)?;
    rows.into_iter()
        .map(|row| decode_backfill(row, op))
        .collect()
}
