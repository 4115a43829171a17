//! Rows as PostgreSQL returns them, and values as it takes them.

use dagrs_core::partitions::PartitionRange;
use dagrs_core::storage::{
    AutomationRecord, CheckRecord, MaterializationPosition, MaterializationRecord, RunRecord,
    TickRecord,
};
use dagrs_core::{AssetKey, BackfillRecord, Event, EventKind, RunId};
use tokio_postgres::types::Json;
use tokio_postgres::Row;

use super::BoxError;

pub(super) fn seq_param(event: &Event) -> std::result::Result<i64, BoxError> {
    i64::try_from(event.seq).map_err(|_| {
        format!(
            "event {} of run `{}` is beyond the largest seq PostgreSQL stores ({})",
            event.seq,
            event.run_id,
            i64::MAX
        )
        .into()
    })
}

pub(super) fn seq_from(value: i64) -> std::result::Result<u64, BoxError> {
    u64::try_from(value).map_err(|_| format!("stored seq {value} is negative").into())
}

pub(super) fn run_from_row(row: &Row) -> std::result::Result<RunRecord, BoxError> {
    Ok(RunRecord {
        run_id: RunId::from(row.try_get::<_, &str>(0)?),
        status: row.try_get::<_, &str>(1)?.parse()?,
        selection: row.try_get(2)?,
        assets: row.try_get::<_, Json<_>>(3)?.0,
        config: row.try_get::<_, Json<_>>(4)?.0,
        tags: row.try_get::<_, Json<_>>(5)?.0,
        started_at: row.try_get(6)?,
        ended_at: row.try_get(7)?,
        owner: row.try_get(8)?,
        heartbeat_at: row.try_get(9)?,
        parent_run_id: row.try_get::<_, Option<&str>>(10)?.map(RunId::from),
        failure: row.try_get(11)?,
    })
}

pub(super) fn event_from_row(run_id: &RunId, row: &Row) -> std::result::Result<Event, BoxError> {
    Ok(Event {
        run_id: run_id.clone(),
        seq: seq_from(row.try_get(0)?)?,
        timestamp: row.try_get(1)?,
        asset: row.try_get::<_, Option<&str>>(2)?.map(AssetKey::from),
        kind: row.try_get::<_, Json<EventKind>>(3)?.0,
    })
}

pub(super) fn materialization_from_row(
    row: &Row,
) -> std::result::Result<MaterializationRecord, BoxError> {
    Ok(MaterializationRecord {
        asset: AssetKey::from(row.try_get::<_, &str>(0)?),
        run_id: RunId::from(row.try_get::<_, &str>(1)?),
        seq: seq_from(row.try_get(2)?)?,
        timestamp: row.try_get(3)?,
        metadata: row.try_get::<_, Json<_>>(4)?.0,
        value: row.try_get(5)?,
        code_version: row.try_get(6)?,
        partition: match row.try_get::<_, Option<String>>(7)? {
            None => None,
            Some(key) => Some(PartitionRange {
                key,
                dims: row.try_get(8)?,
                start: row.try_get(9)?,
                end: row.try_get(10)?,
            }),
        },
    })
}

/// The position `(tx, id)` read from columns `at` and `at + 1`.
pub(super) fn position_from_row(
    row: &Row,
    at: usize,
) -> std::result::Result<MaterializationPosition, BoxError> {
    let tx: i64 = row.try_get(at)?;
    let id: i64 = row.try_get(at + 1)?;
    let tx = u64::try_from(tx).map_err(|_| format!("stored transaction id {tx} is negative"))?;
    let id =
        u64::try_from(id).map_err(|_| format!("stored materialization id {id} is negative"))?;
    Ok(MaterializationPosition::new(tx, id))
}

/// A materialization from its `MATERIALIZATION_COLUMNS` followed by its position.
pub(super) fn positioned_materialization_from_row(
    row: &Row,
) -> std::result::Result<(MaterializationPosition, MaterializationRecord), BoxError> {
    Ok((position_from_row(row, 11)?, materialization_from_row(row)?))
}

/// A backfill from its `BACKFILL_COLUMNS`; a body that does not decode names the backfill.
pub(super) fn backfill_from_row(row: &Row) -> Result<BackfillRecord, BoxError> {
    let id: &str = row.try_get(0)?;
    let version: i64 = row.try_get(1)?;
    let body: serde_json::Value = row.try_get::<_, Json<_>>(2)?.0;
    let mut record: BackfillRecord = serde_json::from_value(body)
        .map_err(|e| format!("the stored backfill `{id}` cannot be read: {e}"))?;
    // The column is what compare-and-set checks: it is the version.
    record.version = u64::try_from(version)
        .map_err(|_| format!("the stored backfill `{id}` has a negative version {version}"))?;
    Ok(record)
}

pub(super) fn tick_from_row(row: &Row) -> Result<TickRecord, BoxError> {
    Ok(TickRecord {
        name: row.try_get(0)?,
        tick: row.try_get(1)?,
        kind: row.try_get::<_, &str>(2)?.parse()?,
        status: row.try_get::<_, &str>(3)?.parse()?,
        run_ids: row.try_get::<_, Json<_>>(4)?.0,
        reason: row.try_get(5)?,
    })
}

/// A check record from its `CHECK_COLUMNS`.
pub(super) fn check_from_row(row: &Row) -> Result<CheckRecord, BoxError> {
    Ok(CheckRecord {
        asset: AssetKey::from(row.try_get::<_, &str>(0)?),
        check: row.try_get(1)?,
        run_id: RunId::from(row.try_get::<_, &str>(2)?),
        seq: seq_from(row.try_get(3)?)?,
        timestamp: row.try_get(4)?,
        passed: row.try_get(5)?,
        severity: row.try_get::<_, &str>(6)?.parse()?,
        blocking: row.try_get(7)?,
        description: row.try_get(8)?,
        metadata: row.try_get::<_, Json<_>>(9)?.0,
    })
}

/// An automation record from its `AUTOMATION_COLUMNS`.
pub(super) fn automation_from_row(row: &Row) -> Result<AutomationRecord, BoxError> {
    Ok(AutomationRecord {
        asset: AssetKey::from(row.try_get::<_, &str>(0)?),
        evaluated_at: row.try_get(1)?,
        requested: row.try_get(2)?,
        reason: row.try_get(3)?,
        run_ids: row.try_get::<_, Json<_>>(4)?.0,
    })
}
