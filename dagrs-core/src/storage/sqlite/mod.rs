//! The embedded store: one SQLite file, written by one thread per process, in batches.
//!
//! The file carries `PRAGMA application_id` [`APPLICATION_ID`](file::APPLICATION_ID) (so dagrs
//! recognises its own stores and never writes into another program's database) and
//! `PRAGMA user_version`, the schema version; [`MIGRATIONS`](file::MIGRATIONS) holds the schema.
//! See [`SqliteStorage`] for the rest. This file is the `Storage` impl, one method per
//! operation (over 400 lines for that reason); the file, its rows and its writer live beside it.

mod file;
mod page;
mod partitions;
mod rows;
#[cfg(test)]
mod tests;
mod writer;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, params_from_iter, OptionalExtension};

use self::file::{resolve, resolve_existing};
use self::partitions::{BackfillRow, RangeUpdate, COVERING};
use self::rows::{
    append, from_json, instant, is_primary_key_clash, limit_to_sql, micros, prune,
    query_automation, query_checks, query_materializations, query_positioned_materializations,
    query_runs, run_exists, seq_from_sql, to_json, AutomationRow, Damage, EventInsert, OrStorage,
    RunRow, TickRow, AUTOMATION_COLUMNS, CHECK_COLUMNS, MATERIALIZATION_COLUMNS, RUN_COLUMNS,
    TICK_COLUMNS,
};
use self::writer::{lock, registry, Shared};
use super::{
    AutomationRecord, CheckRecord, EventFilter, InstigatorStatus, MaterializationPosition,
    MaterializationRecord, PruneReport, Retention, RunFilter, RunRecord, Storage, TickRecord,
};
use crate::backfill::{BackfillRecord, BackfillStatus};
use crate::error::Error;
use crate::event::{Event, EventKind, RunStatus};
use crate::key::{AssetKey, RunId};
use crate::partition::{PartitionRange, PartitionStatus};

/// The embedded store: runs, event logs, materializations, check records, ticks, cursors,
/// automation records, partition status, dynamic partitions and backfills in one SQLite file
/// (by default [`default_path`](Self::default_path)).
///
/// # Writes: one writer per file and process, batched
///
/// Every `SqliteStorage` of one file in a process (clones, and separate [`open`](Self::open)s
/// of the same path) shares one writer: a thread that owns the process's only write
/// connection and takes commands from a channel. It drains what is queued (up to 256
/// commands), runs each command in its own savepoint of one `BEGIN IMMEDIATE` transaction,
/// commits once, then answers every caller. A command that fails is rolled back to its
/// savepoint and only its caller gets the error; the rest of the batch commits. Callers are
/// answered after the commit, so `Ok` means written: a crash of the process loses nothing
/// that was acknowledged (with `synchronous = NORMAL`, a power cut may lose the last commits).
///
/// As a process never has two writers, concurrent runs never fail with "database is locked";
/// another process using the same file (a CLI beside a daemon) waits for the lock, up to
/// [`BUSY_TIMEOUT`](Self::BUSY_TIMEOUT).
///
/// # Reads
///
/// Reads run on tokio's blocking pool, never on the async runtime's threads, on a small pool
/// of read-only connections; WAL mode lets them run beside the writer.
///
/// # The file
///
/// A schema version is checked on open, and missing migrations are applied in one
/// transaction. Opening refuses, without changing the file, anything that is not a dagrs
/// store: a file that is not a SQLite database, another program's database, or a store
/// written by a newer version of dagrs. Instants are kept as integer microseconds since the
/// Unix epoch (UTC), so they come back exactly to the microsecond and sort correctly;
/// finer fractions are truncated.
///
/// Cheap to clone. Dropping the last handle of a file stops its writer and closes the file;
/// the drop waits until the writer has answered every queued command.
#[derive(Clone)]
pub struct SqliteStorage {
    shared: Arc<Shared>,
}

impl SqliteStorage {
    /// How long a connection waits for a lock held by another process before it fails.
    pub const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

    /// Opens the store at `path`, creating the file and its parent folders when missing and
    /// bringing its schema up to date.
    ///
    /// Fails, without changing the file, when it is not a SQLite database, when it is a
    /// SQLite database of some other program (one that holds tables but is not a dagrs store),
    /// or when it was written by a newer version of dagrs. Opening blocks the calling thread
    /// for as long as the file takes to check (up to [`BUSY_TIMEOUT`](Self::BUSY_TIMEOUT)
    /// when another process holds a lock on it).
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStorage, Error> {
        let path = resolve(path.as_ref())?;
        let mut stores = lock(registry());
        stores.retain(|_, store| store.strong_count() > 0);
        if let Some(shared) = stores.get(&path).and_then(Weak::upgrade) {
            return Ok(SqliteStorage { shared });
        }
        let shared = Arc::new(Shared::open(path.clone())?);
        stores.insert(path, Arc::downgrade(&shared));
        Ok(SqliteStorage { shared })
    }

    /// Opens the existing store at `path` for reading only — nothing is created, migrated or
    /// written, so a store in a read-only folder can be inspected — or `Ok(None)` when there
    /// is no file at `path`. Writes through it fail with an error that says so.
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Option<SqliteStorage>, Error> {
        let path = path.as_ref();
        if !path.exists() {
            return Ok(None);
        }
        let path = resolve_existing(path)?;
        Ok(Some(SqliteStorage {
            shared: Arc::new(Shared::open_read_only(path)?),
        }))
    }

    /// Opens the store at [`default_path`](Self::default_path).
    pub fn open_default() -> Result<SqliteStorage, Error> {
        Self::open(Self::default_path())
    }

    /// Where the embedded store lives by default: `$DAGRS_HOME/dagrs.db` when `DAGRS_HOME`
    /// is set (and not empty), otherwise `./.dagrs/dagrs.db`.
    pub fn default_path() -> PathBuf {
        default_path_in(std::env::var_os("DAGRS_HOME").map(PathBuf::from))
    }

    /// The file of this store, as an absolute path with symbolic links resolved.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }
}

impl fmt::Debug for SqliteStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stats = &self.shared.stats;
        f.debug_struct("SqliteStorage")
            .field("path", &self.shared.path)
            .field("queued_writes", &stats.queued.load(Ordering::Relaxed))
            .field("write_batches", &stats.batches.load(Ordering::Relaxed))
            .finish()
    }
}

fn default_path_in(home: Option<PathBuf>) -> PathBuf {
    match home {
        Some(home) if !home.as_os_str().is_empty() => home.join("dagrs.db"),
        _ => Path::new(".dagrs").join("dagrs.db"),
    }
}

#[async_trait]
impl Storage for SqliteStorage {
    async fn create_run(&self, run: &RunRecord) -> Result<(), Error> {
        const OP: &str = "create a run";
        let run_id = run.run_id.clone();
        // Encoded here, so the writer thread only runs the statement.
        let values: Vec<SqlValue> = vec![
            run.run_id.to_string().into(),
            run.status.as_str().to_owned().into(),
            run.selection.clone().into(),
            to_json(&run.assets, OP)?.into(),
            to_json(&run.config, OP)?.into(),
            to_json(&run.tags, OP)?.into(),
            micros(run.started_at).into(),
            run.ended_at.map(micros).into(),
            run.owner.clone().into(),
            micros(run.heartbeat_at).into(),
            run.parent_run_id.as_ref().map(RunId::to_string).into(),
            run.failure.clone().into(),
        ];
        self.write(OP, move |conn| {
            conn.prepare_cached(&format!(
                "INSERT INTO runs ({RUN_COLUMNS}) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
            ))
            .and_then(|mut stmt| stmt.execute(params_from_iter(values)))
            .map_err(|e| {
                if is_primary_key_clash(&e) {
                    Error::storage(OP, format!("run `{run_id}` already exists"))
                } else {
                    Error::storage(OP, e)
                }
            })?;
            Ok(())
        })
        .await
    }

    async fn append_events(&self, events: &[Event]) -> Result<(), Error> {
        const OP: &str = "append events";
        if events.is_empty() {
            return Ok(());
        }
        let rows = events
            .iter()
            .map(|event| EventInsert::new(event, OP))
            .collect::<Result<Vec<_>, _>>()?;
        let partitions = RangeUpdate::of(events);
        self.write(OP, move |conn| append(conn, &rows, &partitions, OP))
            .await
    }

    async fn finish_run(
        &self,
        run_id: &RunId,
        status: RunStatus,
        ended_at: DateTime<Utc>,
        failure: Option<&str>,
    ) -> Result<bool, Error> {
        const OP: &str = "finish a run";
        let run_id = run_id.clone();
        let failure = failure.map(str::to_owned);
        self.write(OP, move |conn| {
            let changed = conn
                .prepare_cached(
                    "UPDATE runs SET status = ?2, ended_at = ?3, failure = coalesce(?4, failure) \
                     WHERE run_id = ?1 AND status IN ('running', 'canceling')",
                )
                .and_then(|mut stmt| {
                    stmt.execute(params![
                        run_id.as_str(),
                        status.as_str(),
                        micros(ended_at),
                        failure
                    ])
                })
                .or_storage(OP)?;
            if changed == 0 && !run_exists(conn, run_id.as_str(), OP)? {
                return Err(Error::RunNotFound(run_id.to_string()));
            }
            Ok(changed > 0)
        })
        .await
    }

    async fn request_cancel(
        &self,
        run_id: &RunId,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, Error> {
        const OP: &str = "request a cancellation";
        let (run_id, reason) = (run_id.clone(), reason.to_owned());
        self.write(OP, move |conn| {
            let changed = conn
                .prepare_cached(
                    "UPDATE runs SET failure = ?2, \
                         status = CASE status WHEN 'queued' THEN 'cancelled' ELSE 'canceling' END, \
                         ended_at = CASE status WHEN 'queued' THEN ?3 ELSE ended_at END \
                     WHERE run_id = ?1 AND status IN ('running', 'queued')",
                )
                .and_then(|mut stmt| stmt.execute(params![run_id.as_str(), reason, micros(at)]))
                .or_storage(OP)?;
            if changed == 0 && !run_exists(conn, run_id.as_str(), OP)? {
                return Err(Error::RunNotFound(run_id.to_string()));
            }
            Ok(changed > 0)
        })
        .await
    }

    async fn start_run(
        &self,
        run_id: &RunId,
        owner: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, Error> {
        const OP: &str = "start a queued run";
        let (run_id, owner) = (run_id.clone(), owner.to_owned());
        self.write(OP, move |conn| {
            let changed = conn
                .prepare_cached(
                    "UPDATE runs SET status = 'running', owner = ?2, started_at = ?3, \
                         heartbeat_at = ?3 \
                     WHERE run_id = ?1 AND status = 'queued'",
                )
                .and_then(|mut stmt| stmt.execute(params![run_id.as_str(), owner, micros(at)]))
                .or_storage(OP)?;
            if changed == 0 && !run_exists(conn, run_id.as_str(), OP)? {
                return Err(Error::RunNotFound(run_id.to_string()));
            }
            Ok(changed > 0)
        })
        .await
    }

    async fn queued_runs(&self) -> Result<Vec<RunRecord>, Error> {
        const OP: &str = "list queued runs";
        self.read(OP, move |conn| {
            query_runs(
                conn,
                OP,
                &format!(
                    "SELECT {RUN_COLUMNS} FROM runs WHERE status = 'queued' \
                     ORDER BY started_at, rowid"
                ),
                [],
            )
        })
        .await
    }

    async fn heartbeat(&self, run_id: &RunId, at: DateTime<Utc>) -> Result<(), Error> {
        const OP: &str = "record a heartbeat";
        let run_id = run_id.clone();
        self.write(OP, move |conn| {
            let changed = conn
                .prepare_cached("UPDATE runs SET heartbeat_at = ?2 WHERE run_id = ?1")
                .and_then(|mut stmt| stmt.execute(params![run_id.as_str(), micros(at)]))
                .or_storage(OP)?;
            if changed == 0 {
                return Err(Error::RunNotFound(run_id.to_string()));
            }
            Ok(())
        })
        .await
    }

    async fn run(&self, run_id: &RunId) -> Result<Option<RunRecord>, Error> {
        const OP: &str = "read a run";
        let run_id = run_id.clone();
        self.read(OP, move |conn| {
            conn.prepare_cached(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?1"))
                .and_then(|mut stmt| {
                    stmt.query_row([run_id.as_str()], RunRow::from_row)
                        .optional()
                })
                .or_storage(OP)?
                .map(|row| row.into_record(OP))
                .transpose()
        })
        .await
    }

    async fn runs(&self, limit: usize) -> Result<Vec<RunRecord>, Error> {
        const OP: &str = "list runs";
        self.read(OP, move |conn| {
            // `rowid` breaks ties between runs started at the same instant: last created first.
            query_runs(
                conn,
                OP,
                &format!(
                    "SELECT {RUN_COLUMNS} FROM runs ORDER BY started_at DESC, rowid DESC LIMIT ?1"
                ),
                [limit_to_sql(limit)],
            )
        })
        .await
    }

    async fn runs_page(&self, filter: &RunFilter, limit: usize) -> Result<Vec<RunRecord>, Error> {
        const OP: &str = "list a page of runs";
        let filter = filter.clone();
        self.read(OP, move |conn| page::runs(conn, &filter, limit, OP))
            .await
    }

    async fn running_runs(&self) -> Result<Vec<RunRecord>, Error> {
        const OP: &str = "list running runs";
        self.read(OP, move |conn| {
            query_runs(
                conn,
                OP,
                &format!(
                    "SELECT {RUN_COLUMNS} FROM runs WHERE status IN ('running', 'canceling') \
                     ORDER BY rowid"
                ),
                [],
            )
        })
        .await
    }

    async fn events(&self, run_id: &RunId, after: Option<u64>) -> Result<Vec<Event>, Error> {
        const OP: &str = "read events";
        let run_id = run_id.clone();
        let after = after.map_or(-1, |seq| i64::try_from(seq).unwrap_or(i64::MAX));
        self.read(OP, move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT seq, timestamp, asset, kind FROM events \
                     WHERE run_id = ?1 AND seq > ?2 ORDER BY seq",
                )
                .or_storage(OP)?;
            let rows = stmt
                .query_map(params![run_id.as_str(), after], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, Option<String>>(2)?,
                        row.get::<_, String>(3)?,
                    ))
                })
                .or_storage(OP)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .or_storage(OP)?;
            rows.into_iter()
                .map(|(seq, timestamp, asset, kind)| {
                    let seq = seq_from_sql(seq, OP)?;
                    let what = || format!("event {seq} of run `{run_id}`");
                    Ok(Event {
                        run_id: run_id.clone(),
                        seq,
                        timestamp: instant(timestamp, OP, &what())?,
                        asset: asset.map(AssetKey::from),
                        kind: from_json::<EventKind>(&kind, OP, what)?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn events_page(
        &self,
        run_id: &RunId,
        filter: &EventFilter,
        limit: usize,
    ) -> Result<Vec<Event>, Error> {
        const OP: &str = "read a page of events";
        let (run_id, filter) = (run_id.clone(), filter.clone());
        self.read(OP, move |conn| {
            page::events(conn, &run_id, &filter, limit, OP)
        })
        .await
    }

    async fn latest_materialization(
        &self,
        asset: &AssetKey,
    ) -> Result<Option<MaterializationRecord>, Error> {
        const OP: &str = "read the latest materialization";
        let asset = asset.clone();
        self.read(OP, move |conn| {
            let mut latest = query_materializations(
                conn,
                OP,
                &format!(
                    "SELECT {MATERIALIZATION_COLUMNS} FROM materializations \
                     WHERE id = (SELECT id FROM asset_latest WHERE asset = ?1)"
                ),
                [asset.as_str()],
            )?;
            Ok(latest.pop())
        })
        .await
    }

    async fn latest_materializations(&self) -> Result<Vec<MaterializationRecord>, Error> {
        const OP: &str = "read the latest materializations";
        self.read(OP, move |conn| {
            query_materializations(
                conn,
                OP,
                &format!(
                    "SELECT {MATERIALIZATION_COLUMNS} FROM materializations \
                     WHERE id IN (SELECT id FROM asset_latest) ORDER BY asset"
                ),
                [],
            )
        })
        .await
    }

    async fn materializations(
        &self,
        asset: &AssetKey,
        limit: usize,
    ) -> Result<Vec<MaterializationRecord>, Error> {
        const OP: &str = "read materializations";
        let asset = asset.clone();
        self.read(OP, move |conn| {
            query_materializations(
                conn,
                OP,
                &format!(
                    // The asset's chain, newest first (it ends where pruning cut it).
                    "WITH RECURSIVE chain (id, n) AS ( \
                         SELECT id, 1 FROM asset_latest WHERE asset = ?1 AND ?2 > 0 \
                         UNION ALL \
                         SELECT m.previous, chain.n + 1 FROM chain \
                         JOIN materializations AS m ON m.id = chain.id \
                         WHERE m.previous IS NOT NULL AND chain.n < ?2) \
                     SELECT {MATERIALIZATION_COLUMNS} FROM materializations \
                     WHERE id IN (SELECT id FROM chain) ORDER BY id DESC"
                ),
                params![asset.as_str(), limit_to_sql(limit)],
            )
        })
        .await
    }

    async fn materialization_position(&self) -> Result<MaterializationPosition, Error> {
        const OP: &str = "read the materialization position";
        self.read(OP, move |conn| {
            // Each asset's latest materialization survives pruning: the newest row stays.
            let id: Option<i64> = conn
                .prepare_cached("SELECT MAX(id) FROM materializations")
                .and_then(|mut stmt| stmt.query_row([], |row| row.get(0)))
                .or_storage(OP)?;
            Ok(MaterializationPosition::new(
                0,
                seq_from_sql(id.unwrap_or(0), OP)?,
            ))
        })
        .await
    }

    async fn materializations_after(
        &self,
        after: MaterializationPosition,
        limit: usize,
    ) -> Result<Vec<(MaterializationPosition, MaterializationRecord)>, Error> {
        const OP: &str = "read materializations after a position";
        // The transaction part is always 0 here; a later one is past every row.
        let after = match after.transaction() {
            0 => i64::try_from(after.id()).unwrap_or(i64::MAX),
            _ => i64::MAX,
        };
        self.read(OP, move |conn| {
            query_positioned_materializations(
                conn,
                OP,
                &format!(
                    "SELECT {MATERIALIZATION_COLUMNS}, id FROM materializations \
                     WHERE id > ?1 ORDER BY id LIMIT ?2"
                ),
                params![after, limit_to_sql(limit)],
            )
        })
        .await
    }

    async fn check_records(
        &self,
        asset: &AssetKey,
        limit: usize,
    ) -> Result<Vec<CheckRecord>, Error> {
        const OP: &str = "read check records";
        let asset = asset.clone();
        self.read(OP, move |conn| {
            query_checks(
                conn,
                OP,
                &format!(
                    "SELECT {CHECK_COLUMNS} FROM check_records \
                     WHERE asset = ?1 ORDER BY id DESC LIMIT ?2"
                ),
                params![asset.as_str(), limit_to_sql(limit)],
            )
        })
        .await
    }

    async fn record_automation(&self, records: &[AutomationRecord]) -> Result<(), Error> {
        const OP: &str = "record automation evaluations";
        if records.is_empty() {
            return Ok(());
        }
        let rows = records
            .iter()
            .map(|record| AutomationRow::of(record, OP))
            .collect::<Result<Vec<_>, _>>()?;
        self.write(OP, move |conn| {
            let mut insert = conn
                .prepare_cached(&format!(
                    "INSERT INTO automation_records ({AUTOMATION_COLUMNS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5)"
                ))
                .or_storage(OP)?;
            for row in &rows {
                insert.execute(row.params()).or_storage(OP)?;
            }
            Ok(())
        })
        .await
    }

    async fn automation_records(
        &self,
        asset: Option<&AssetKey>,
        limit: usize,
    ) -> Result<Vec<AutomationRecord>, Error> {
        const OP: &str = "read automation records";
        let asset = asset.cloned();
        self.read(OP, move |conn| {
            // Two statements, so each reads its own index in order.
            match &asset {
                Some(asset) => query_automation(
                    conn,
                    OP,
                    &format!(
                        "SELECT {AUTOMATION_COLUMNS} FROM automation_records WHERE asset = ?1 \
                         ORDER BY evaluated_at DESC, id DESC LIMIT ?2"
                    ),
                    params![asset.as_str(), limit_to_sql(limit)],
                ),
                None => query_automation(
                    conn,
                    OP,
                    &format!(
                        "SELECT {AUTOMATION_COLUMNS} FROM automation_records \
                         ORDER BY evaluated_at DESC, id DESC LIMIT ?1"
                    ),
                    [limit_to_sql(limit)],
                ),
            }
        })
        .await
    }

    async fn prune(&self, keep: Retention, now: DateTime<Utc>) -> Result<PruneReport, Error> {
        const OP: &str = "prune the event log";
        self.write(OP, move |conn| prune(conn, keep, now, OP)).await
    }

    async fn claim_ticks(&self, ticks: &[TickRecord]) -> Result<Vec<bool>, Error> {
        const OP: &str = "claim ticks";
        let rows = ticks
            .iter()
            .map(|tick| TickRow::of(tick, OP))
            .collect::<Result<Vec<_>, _>>()?;
        self.write(OP, move |conn| {
            let mut insert = conn
                .prepare_cached(&format!(
                    "INSERT INTO ticks ({TICK_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                     ON CONFLICT (name, tick) DO NOTHING"
                ))
                .or_storage(OP)?;
            rows.iter()
                .map(|row| Ok(insert.execute(row.params()).or_storage(OP)? == 1))
                .collect()
        })
        .await
    }

    async fn update_ticks(&self, ticks: &[TickRecord]) -> Result<(), Error> {
        const OP: &str = "update ticks";
        let rows = ticks
            .iter()
            .map(|tick| {
                Ok((
                    TickRow::of(tick, OP)?,
                    format!("tick {} of `{}`", tick.tick, tick.name),
                ))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        self.write(OP, move |conn| {
            let mut update = conn
                .prepare_cached(
                    "UPDATE ticks SET kind = ?3, status = ?4, run_ids = ?5, reason = ?6 \
                     WHERE name = ?1 AND tick = ?2",
                )
                .or_storage(OP)?;
            for (row, what) in &rows {
                if update.execute(row.params()).or_storage(OP)? == 0 {
                    return Err(Error::storage(OP, format!("{what} was never claimed")));
                }
            }
            Ok(())
        })
        .await
    }

    async fn ticks(&self, name: Option<&str>, limit: usize) -> Result<Vec<TickRecord>, Error> {
        const OP: &str = "list ticks";
        let name = name.map(str::to_owned);
        self.read(OP, move |conn| {
            let sql = format!(
                "SELECT {TICK_COLUMNS} FROM ticks WHERE ?1 IS NULL OR name = ?1 \
                 ORDER BY tick DESC, name LIMIT ?2"
            );
            let mut stmt = conn.prepare_cached(&sql).or_storage(OP)?;
            let rows = stmt
                .query_map(params![name, limit_to_sql(limit)], TickRow::from_row)
                .or_storage(OP)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .or_storage(OP)?;
            rows.into_iter().map(|row| row.into_record(OP)).collect()
        })
        .await
    }

    async fn claim_run_key(
        &self,
        instigator: &str,
        key: &str,
        run_id: &RunId,
    ) -> Result<Option<RunId>, Error> {
        const OP: &str = "claim a run key";
        let (instigator, key, run_id) = (instigator.to_owned(), key.to_owned(), run_id.clone());
        self.write(OP, move |conn| {
            let inserted = conn
                .prepare_cached(
                    "INSERT INTO run_keys (instigator, run_key, run_id) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (instigator, run_key) DO NOTHING",
                )
                .and_then(|mut stmt| stmt.execute(params![instigator, key, run_id.as_str()]))
                .or_storage(OP)?;
            if inserted == 1 {
                return Ok(None);
            }
            conn.prepare_cached(
                "SELECT run_id FROM run_keys WHERE instigator = ?1 AND run_key = ?2",
            )
            .and_then(|mut stmt| stmt.query_row(params![instigator, key], |row| row.get(0)))
            .map(|id: String| Some(RunId::from(id)))
            .or_storage(OP)
        })
        .await
    }

    async fn instigator_states(&self) -> Result<BTreeMap<String, InstigatorStatus>, Error> {
        const OP: &str = "read schedule and sensor states";
        self.read(OP, move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT name, status FROM instigators")
                .or_storage(OP)?;
            let rows = stmt
                .query_map([], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
                })
                .or_storage(OP)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .or_storage(OP)?;
            rows.into_iter()
                .map(|(name, status)| {
                    let status = status
                        .parse()
                        .map_err(|e| Error::storage(OP, Damage(format!("`{name}`: {e}"))))?;
                    Ok((name, status))
                })
                .collect()
        })
        .await
    }

    async fn set_instigator_state(
        &self,
        name: &str,
        status: InstigatorStatus,
    ) -> Result<(), Error> {
        const OP: &str = "store a schedule or sensor state";
        let name = name.to_owned();
        self.write(OP, move |conn| {
            conn.prepare_cached(
                "INSERT INTO instigators (name, status) VALUES (?1, ?2) \
                 ON CONFLICT (name) DO UPDATE SET status = excluded.status",
            )
            .and_then(|mut stmt| stmt.execute(params![name, status.as_str()]))
            .or_storage(OP)?;
            Ok(())
        })
        .await
    }

    async fn cursor(&self, name: &str) -> Result<Option<String>, Error> {
        const OP: &str = "read a cursor";
        let name = name.to_owned();
        self.read(OP, move |conn| {
            conn.prepare_cached("SELECT value FROM cursors WHERE name = ?1")
                .and_then(|mut stmt| stmt.query_row([&name], |row| row.get(0)).optional())
                .or_storage(OP)
        })
        .await
    }

    async fn cursors(&self, prefix: &str) -> Result<BTreeMap<String, String>, Error> {
        const OP: &str = "read cursors";
        let prefix = prefix.to_owned();
        self.read(OP, move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT name, value FROM cursors WHERE substr(name, 1, length(?1)) = ?1",
                )
                .or_storage(OP)?;
            let rows = stmt
                .query_map([&prefix], |row| Ok((row.get(0)?, row.get(1)?)))
                .or_storage(OP)?
                .collect::<rusqlite::Result<BTreeMap<String, String>>>()
                .or_storage(OP)?;
            Ok(rows)
        })
        .await
    }

    async fn set_cursor(&self, name: &str, value: &str) -> Result<(), Error> {
        const OP: &str = "store a cursor";
        let (name, value) = (name.to_owned(), value.to_owned());
        self.write(OP, move |conn| {
            conn.prepare_cached(
                "INSERT INTO cursors (name, value) VALUES (?1, ?2) \
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            )
            .and_then(|mut stmt| stmt.execute(params![name, value]))
            .or_storage(OP)?;
            Ok(())
        })
        .await
    }

    async fn partition_status(&self, asset: &AssetKey) -> Result<PartitionStatus, Error> {
        const OP: &str = "read partition status";
        let asset = asset.clone();
        self.read(OP, move |conn| partitions::status(conn, asset.as_str(), OP))
            .await
    }

    async fn partition_materialization(
        &self,
        asset: &AssetKey,
        range: &PartitionRange,
    ) -> Result<Option<MaterializationRecord>, Error> {
        const OP: &str = "read a partition's materialization";
        let (asset, range) = (asset.clone(), range.clone());
        self.read(OP, move |conn| {
            let mut found = query_materializations(
                conn,
                OP,
                &format!(
                    "SELECT {MATERIALIZATION_COLUMNS} FROM materializations {COVERING} \
                     ORDER BY id DESC LIMIT 1"
                ),
                params![asset.as_str(), range.dims, range.start, range.end],
            )?;
            Ok(found.pop())
        })
        .await
    }

    async fn dynamic_partitions(&self, name: &str) -> Result<Vec<String>, Error> {
        const OP: &str = "read dynamic partitions";
        let name = name.to_owned();
        self.read(OP, move |conn| partitions::dynamic_keys(conn, &name, OP))
            .await
    }

    async fn add_dynamic_partitions(
        &self,
        name: &str,
        keys: &[String],
    ) -> Result<Vec<String>, Error> {
        const OP: &str = "add dynamic partitions";
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let (name, keys) = (name.to_owned(), keys.to_vec());
        self.write(OP, move |conn| {
            partitions::add_dynamic_keys(conn, &name, &keys, OP)
        })
        .await
    }

    async fn delete_dynamic_partition(&self, name: &str, key: &str) -> Result<bool, Error> {
        const OP: &str = "delete a dynamic partition";
        let (name, key) = (name.to_owned(), key.to_owned());
        self.write(OP, move |conn| {
            let removed = conn
                .prepare_cached("DELETE FROM dynamic_partitions WHERE name = ?1 AND key = ?2")
                .and_then(|mut stmt| stmt.execute(params![name, key]))
                .or_storage(OP)?;
            Ok(removed > 0)
        })
        .await
    }

    async fn create_backfill(&self, backfill: &BackfillRecord) -> Result<(), Error> {
        const OP: &str = "create a backfill";
        let row = BackfillRow::of(backfill, backfill.version, OP)?;
        self.write(OP, move |conn| {
            row.insert(conn).map_err(|e| {
                if is_primary_key_clash(&e) {
                    Error::storage(OP, format!("backfill `{}` already exists", row.id))
                } else {
                    Error::storage(OP, e)
                }
            })?;
            Ok(())
        })
        .await
    }

    async fn backfill(&self, id: &str) -> Result<Option<BackfillRecord>, Error> {
        const OP: &str = "read a backfill";
        let id = id.to_owned();
        self.read(OP, move |conn| partitions::backfill(conn, &id, OP))
            .await
    }

    async fn backfills(
        &self,
        status: Option<&[BackfillStatus]>,
        limit: usize,
    ) -> Result<Vec<BackfillRecord>, Error> {
        const OP: &str = "list backfills";
        let status = status.map(<[BackfillStatus]>::to_vec);
        self.read(OP, move |conn| {
            partitions::backfills(conn, status.as_deref(), limit, OP)
        })
        .await
    }

    async fn update_backfill(&self, backfill: &BackfillRecord) -> Result<bool, Error> {
        const OP: &str = "update a backfill";
        let next = backfill.version.checked_add(1).ok_or_else(|| {
            Error::storage(
                OP,
                format!("backfill `{}` is at the last version", backfill.id),
            )
        })?;
        let row = BackfillRow::of(backfill, next, OP)?;
        let expected = i64::try_from(backfill.version).unwrap_or(i64::MAX);
        self.write(OP, move |conn| row.compare_and_set(conn, expected, OP))
            .await
    }
}
