//! Bulk upsert: binary COPY into a staging table, then one `INSERT … ON CONFLICT` per chunk;
//! or a window of the table replaced: `DELETE`, then COPY.

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, SecondsFormat, Utc};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Transaction};

use crate::copy::{wire_type, Copied, CopyFailure, CopyIn, CopyRow};
use crate::error::{describe, query_error, Error, Result};
use crate::ident::{string_literal, Ident, QualifiedName};

/// Numbers staging tables, so calls inside one transaction never collide.
static STAGING_TABLES: AtomicU64 = AtomicU64::new(0);

/// How [`Upsert`] gets rows into the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum WriteMode {
    /// Always stage and merge: rows with a new key are inserted, rows with a
    /// stored key update it, and when the input holds a key twice the later
    /// row wins. Safe for any input and any table.
    #[default]
    Upsert,
    /// Check whether the table is empty (one index-free probe). If it is, lock
    /// it against concurrent writers (`SHARE ROW EXCLUSIVE`, until the
    /// transaction ends) and COPY straight into it; otherwise behave like
    /// [`Upsert`](Self::Upsert). On the direct path the input's keys must be
    /// unique: a repeated key is an [`Error::DuplicateKey`].
    Auto,
    /// COPY straight into the table, for rows the caller knows are new (an
    /// empty table, or a key range never written). A key that is already
    /// taken, by a stored row or an earlier input row, fails the whole call
    /// with [`Error::Conflict`]. This is as fast as a raw `COPY`.
    Direct,
}

/// Which path an [`Upsert`] call took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WritePath {
    /// Straight `COPY` into the target table.
    Direct,
    /// `COPY` into a staging table, then `INSERT … ON CONFLICT DO UPDATE`.
    Staged,
    /// `DELETE` of a window, then `COPY` straight into the table
    /// ([`Upsert::replace_window`]).
    ReplaceWindow,
}

/// What an [`Upsert`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct UpsertStats {
    /// Rows written with a key the table did not hold.
    pub inserted: u64,
    /// Stored rows whose values changed.
    pub updated: u64,
    /// Input rows that changed nothing: equal to the stored row, or replaced
    /// by a later input row with the same key.
    pub unchanged: u64,
    /// Stored rows deleted: those of the window that
    /// [`replace_window`](Upsert::replace_window) replaced; 0 on the other paths.
    pub deleted: u64,
    /// The path taken.
    pub path: WritePath,
}

impl UpsertStats {
    /// All input rows: `inserted + updated + unchanged`.
    pub fn rows(&self) -> u64 {
        self.inserted + self.updated + self.unchanged
    }
}

/// A bulk write of [`CopyRow`]s into one table, close to raw `COPY` speed.
///
/// Everything happens in one transaction: when anything fails (a bad value,
/// a violated constraint, a lost connection) the table is left exactly as it
/// was. Rows are streamed from the input iterator in binary `COPY` format in
/// chunks of [`chunk_size`](Self::chunk_size) rows (default 100,000), so
/// memory stays bounded however many rows come; each chunk goes into a
/// temporary staging table and is merged with
/// `INSERT … SELECT … ON CONFLICT (keys) DO UPDATE`. A stored row is only
/// rewritten when a value differs, so re-running the same input writes
/// nothing. When the table has an `updated_at` column that the row type
/// does not fill, updated rows get `updated_at = now()`.
///
/// To replace a time window of the table with the input instead (delete,
/// then `COPY`), see [`replace_window`](Self::replace_window).
///
/// The key columns must match a unique index or primary key of the table.
/// Table and column names are quoted as [`Ident`]s.
///
/// A TimescaleDB hypertable works like any table, compressed chunks included
/// (TimescaleDB 2.11 and newer decompress the rows a write touches). TimescaleDB
/// stops one transaction from decompressing more than
/// `timescaledb.max_tuples_decompressed_per_dml_transaction` rows (100,000 by
/// default): a bigger write into compressed time ranges fails with
/// [`Error::DecompressionLimit`], writing nothing. Raise the limit for the
/// write with `SET LOCAL timescaledb.max_tuples_decompressed_per_dml_transaction
/// = 0` (no limit) in a transaction passed to [`execute_in`](Self::execute_in).
///
/// ```no_run
/// # use dagrs_postgres::{CopyRow, RowWriter};
/// # struct Reading { ts: chrono::DateTime<chrono::Utc>, tag_name: String, value: f64 }
/// # impl CopyRow for Reading {
/// #     const COLUMNS: &'static [&'static str] = &["ts", "tag_name", "value"];
/// #     fn write_row(&self, row: &mut RowWriter<'_>) { row.push(self.ts).push(&self.tag_name).push(self.value); }
/// # }
/// # async fn demo(pg: dagrs_postgres::PostgresResource, readings: Vec<Reading>) -> Result<(), dagrs_postgres::Error> {
/// use dagrs_postgres::{QualifiedName, Upsert, WriteMode};
/// let mut client = pg.get().await?;
/// let stats = Upsert::new(QualifiedName::parse("influx_hist")?, &["ts", "tag_name"])?
///     .mode(WriteMode::Auto)
///     .execute(&mut client, &readings)
///     .await?;
/// println!("{} inserted, {} updated", stats.inserted, stats.updated);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Upsert {
    table: QualifiedName,
    keys: Vec<Ident>,
    chunk_size: usize,
    mode: WriteMode,
    /// Set by [`replace_window`](Self::replace_window), which then takes the place of `mode`.
    window: Option<Window>,
}

/// The rows [`Upsert::replace_window`] replaces: `start <= column < end`.
#[derive(Debug, Clone)]
struct Window {
    column: Ident,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

impl Window {
    /// `column >= 'start' AND column < 'end'`, the one condition of the `DELETE` and the
    /// `COPY … WHERE`. The bounds are literals (a `COPY` takes no parameters) of untyped
    /// text, so they take the column's type.
    fn condition(&self) -> String {
        let bound =
            |t: DateTime<Utc>| string_literal(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true));
        let column = &self.column;
        format!(
            "{column} >= {} AND {column} < {}",
            bound(self.start),
            bound(self.end)
        )
    }
}

impl Upsert {
    /// Rows per chunk unless set otherwise.
    pub const DEFAULT_CHUNK_SIZE: usize = 100_000;

    /// A write into `table`, matching rows on `key_columns`.
    pub fn new(table: QualifiedName, key_columns: &[&str]) -> Result<Self> {
        if key_columns.is_empty() {
            return Err(Error::InvalidSetting {
                setting: "key_columns",
                value: "[]".to_owned(),
                reason: "an upsert needs at least one key column (those of the table's \
                         primary key or of a unique index)",
            });
        }
        let keys = key_columns
            .iter()
            .map(|&key| Ident::new(key))
            .collect::<Result<_>>()?;
        Ok(Self {
            table,
            keys,
            chunk_size: Self::DEFAULT_CHUNK_SIZE,
            mode: WriteMode::default(),
            window: None,
        })
    }

    /// Rows per staging chunk (at least 1): bounds the staging table and the
    /// work of each merge statement.
    pub fn chunk_size(mut self, rows: usize) -> Self {
        self.chunk_size = rows;
        self
    }

    /// How rows get into the table; [`WriteMode::Upsert`] unless set. Replaces a
    /// window set by [`replace_window`](Self::replace_window).
    pub fn mode(mut self, mode: WriteMode) -> Self {
        self.mode = mode;
        self.window = None;
        self
    }

    /// Instead of merging, replaces a window of the table with the input: in one
    /// transaction, deletes the stored rows with `start <= column < end`, then COPYs the
    /// input straight in (as fast as [`WriteMode::Direct`], whether the rows changed or
    /// not; no staging, no merge). Readers see the old window or the new one, never a mix.
    ///
    /// Every input row must lie in the window: when some do not (or have `column` NULL),
    /// the call fails with [`Error::OutsideWindow`] and writes nothing; with
    /// [`execute_in`](Self::execute_in) the caller's transaction is left as it was and
    /// stays usable. The input's keys must be unique; a repeated key, or a row another
    /// transaction wrote into the window meanwhile, fails the call with
    /// [`Error::Query`] (duplicate key value). Set on top of [`mode`](Self::mode); a later
    /// `mode` call drops the window.
    ///
    /// `column` must be one of the row type's columns, a `timestamptz` (or a `timestamp`
    /// holding UTC) with an index that starts with it, such as the `(ts, tag_name)`
    /// primary key of the EcoAnP readings, so the `DELETE` reads the window only. An
    /// empty window (`end <= start`) is an [`Error::InvalidSetting`].
    ///
    /// ```no_run
    /// # use dagrs_postgres::{CopyRow, RowWriter};
    /// # struct Reading { ts: chrono::DateTime<chrono::Utc>, tag_name: String, value: f64 }
    /// # impl CopyRow for Reading {
    /// #     const COLUMNS: &'static [&'static str] = &["ts", "tag_name", "value"];
    /// #     fn write_row(&self, row: &mut RowWriter<'_>) { row.push(self.ts).push(&self.tag_name).push(self.value); }
    /// # }
    /// # async fn demo(pg: dagrs_postgres::PostgresResource, hour: Vec<Reading>,
    /// #     start: chrono::DateTime<chrono::Utc>) -> Result<(), dagrs_postgres::Error> {
    /// use dagrs_postgres::{QualifiedName, Upsert};
    /// let end = start + chrono::TimeDelta::hours(1);
    /// let mut client = pg.get().await?;
    /// let stats = Upsert::new(QualifiedName::parse("influx_hist")?, &["ts", "tag_name"])?
    ///     .replace_window("ts", start, end)?
    ///     .execute(&mut client, &hour)
    ///     .await?;
    /// println!("{} rows replaced by {}", stats.deleted, stats.inserted);
    /// # Ok(()) }
    /// ```
    pub fn replace_window(
        mut self,
        column: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Self> {
        if end <= start {
            return Err(Error::InvalidSetting {
                setting: "replace_window",
                value: format!("{start} to {end}"),
                reason: "the window must end after it starts (start inclusive, end exclusive)",
            });
        }
        self.window = Some(Window {
            column: Ident::new(column)?,
            start,
            end,
        });
        Ok(self)
    }

    /// Writes `rows` in a transaction of its own and commits it.
    ///
    /// A [`deadpool_postgres::Client`] from
    /// [`PostgresResource::get`](crate::PostgresResource::get) can be passed
    /// as `&mut client`.
    pub async fn execute<R, I>(&self, client: &mut Client, rows: I) -> Result<UpsertStats>
    where
        R: CopyRow,
        I: IntoIterator<Item = R>,
    {
        let tx = client.transaction().await.map_err(query_error(format!(
            "starting a transaction to write {}",
            self.table
        )))?;
        let stats = self.execute_in(&tx, rows).await?;
        tx.commit().await.map_err(query_error(format!(
            "committing the rows written to {}",
            self.table
        )))?;
        Ok(stats)
    }

    /// Writes `rows` inside the caller's transaction, which the caller
    /// commits, so other writes can commit or fail together with these rows.
    /// After an error the transaction is aborted and must be rolled back
    /// (except after [`Error::OutsideWindow`], which leaves it as it was).
    pub async fn execute_in<R, I>(&self, tx: &Transaction<'_>, rows: I) -> Result<UpsertStats>
    where
        R: CopyRow,
        I: IntoIterator<Item = R>,
    {
        if self.chunk_size == 0 {
            return Err(Error::InvalidSetting {
                setting: "chunk_size",
                value: "0".to_owned(),
                reason: "a chunk must hold at least 1 row",
            });
        }
        let columns = self.columns::<R>()?;
        let column_list = join(&columns);
        let table = &self.table;
        let probe = tx
            .prepare(&format!("SELECT {column_list} FROM {table}"))
            .await
            .map_err(query_error(format!("reading the column types of {table}")))?;
        let types: Vec<Type> = probe
            .columns()
            .iter()
            .map(|c| wire_type(c.type_()))
            .collect();
        let mut rows = rows.into_iter().peekable();
        let stats = if let Some(window) = &self.window {
            self.replace(tx, window, &column_list, &types, &mut rows)
                .await?
        } else {
            let path = match self.mode {
                WriteMode::Direct => WritePath::Direct,
                WriteMode::Upsert => WritePath::Staged,
                WriteMode::Auto => self.choose_path(tx).await?,
            };
            if path == WritePath::Direct {
                self.write_direct(tx, &column_list, &types, &mut rows)
                    .await?
            } else {
                self.write_staged(tx, &columns, &column_list, &types, &mut rows)
                    .await?
            }
        };
        tracing::debug!(
            table = %table,
            inserted = stats.inserted,
            updated = stats.updated,
            unchanged = stats.unchanged,
            deleted = stats.deleted,
            path = ?stats.path,
            "bulk write done"
        );
        Ok(stats)
    }

    /// The row type's columns as identifiers, with every key among them.
    fn columns<R: CopyRow>(&self) -> Result<Vec<Ident>> {
        if R::COLUMNS.is_empty() {
            return Err(Error::InvalidSetting {
                setting: "CopyRow::COLUMNS",
                value: "[]".to_owned(),
                reason: "a row must fill at least one column",
            });
        }
        let columns: Vec<Ident> = R::COLUMNS
            .iter()
            .map(|&name| Ident::new(name))
            .collect::<Result<_>>()?;
        if let Some(missing) = self.keys.iter().find(|key| !columns.contains(key)) {
            return Err(Error::UnknownKeyColumn {
                table: self.table.to_string(),
                column: missing.as_str().to_owned(),
                columns: R::COLUMNS.iter().map(|&c| c.to_owned()).collect(),
            });
        }
        if let Some(window) = self
            .window
            .as_ref()
            .filter(|w| !columns.contains(&w.column))
        {
            return Err(Error::InvalidSetting {
                setting: "replace_window",
                value: window.column.to_string(),
                reason: "the window's column must be one of CopyRow::COLUMNS, so that every \
                         row says where it falls",
            });
        }
        Ok(columns)
    }

    /// [`WriteMode::Auto`]: direct when the table is empty once locked.
    async fn choose_path(&self, tx: &Transaction<'_>) -> Result<WritePath> {
        let table = &self.table;
        if !self.is_empty(tx).await? {
            return Ok(WritePath::Staged);
        }
        tx.batch_execute(&format!("LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE"))
            .await
            .map_err(query_error(format!("locking {table} for a direct COPY")))?;
        // Another writer may have committed rows before the lock was granted.
        Ok(if self.is_empty(tx).await? {
            WritePath::Direct
        } else {
            WritePath::Staged
        })
    }

    async fn is_empty(&self, tx: &Transaction<'_>) -> Result<bool> {
        let table = &self.table;
        tx.query_one(&format!("SELECT NOT EXISTS (SELECT 1 FROM {table})"), &[])
            .await
            .map(|row| row.get(0))
            .map_err(query_error(format!("checking whether {table} is empty")))
    }

    async fn write_direct<R, I>(
        &self,
        tx: &Transaction<'_>,
        column_list: &str,
        types: &[Type],
        rows: &mut std::iter::Peekable<I>,
    ) -> Result<UpsertStats>
    where
        R: CopyRow,
        I: Iterator<Item = R>,
    {
        let table = self.table.to_string();
        let statement = format!("COPY {table} ({column_list}) FROM STDIN (FORMAT binary)");
        let copy = CopyIn {
            statement: &statement,
            types,
            table: &table,
            limit: u64::MAX,
            first_row: 0,
        };
        match copy.run(tx, rows).await {
            Ok(Copied { stored, .. }) => Ok(UpsertStats {
                inserted: stored,
                updated: 0,
                unchanged: 0,
                deleted: 0,
                path: WritePath::Direct,
            }),
            Err(CopyFailure::Encode(err)) => Err(err),
            // Auto only goes direct into a table it found empty and locked,
            // so a taken key can only come from the input itself.
            Err(CopyFailure::Server(err))
                if err.code() == Some(&SqlState::UNIQUE_VIOLATION)
                    && self.mode == WriteMode::Auto =>
            {
                Err(Error::DuplicateKey {
                    table,
                    keys: self.key_list(),
                })
            }
            Err(CopyFailure::Server(err)) if err.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                Err(Error::Conflict {
                    table,
                    reason: describe(&err),
                    source: err,
                })
            }
            Err(CopyFailure::Server(err)) => Err(decompression_limit(&table, &err)
                .unwrap_or_else(|| query_error(format!("copying rows into {table}"))(err))),
        }
    }

    async fn write_staged<R, I>(
        &self,
        tx: &Transaction<'_>,
        columns: &[Ident],
        column_list: &str,
        types: &[Type],
        rows: &mut std::iter::Peekable<I>,
    ) -> Result<UpsertStats>
    where
        R: CopyRow,
        I: Iterator<Item = R>,
    {
        let table = self.table.to_string();
        let staging = Ident::new(format!(
            "dagrs_staging_{}",
            STAGING_TABLES.fetch_add(1, Ordering::Relaxed)
        ))?;
        tx.batch_execute(&format!(
            "CREATE TEMP TABLE {staging} ON COMMIT DROP AS \
             SELECT {column_list} FROM {table} WITH NO DATA"
        ))
        .await
        .map_err(query_error(format!("creating a staging table for {table}")))?;
        let settings = self.staging_settings(tx).await?;
        let touch_updated_at =
            !columns.iter().any(|c| c.as_str() == "updated_at") && settings.has_updated_at;
        // The merge that drops unchanged rows first, and the one that does not.
        let mut merges = Vec::with_capacity(2);
        for filter in [true, false] {
            let sql = self.merge_sql(columns, column_list, &staging, touch_updated_at, filter);
            merges.push(
                tx.prepare(&sql)
                    .await
                    .map_err(query_error(format!("preparing the upsert into {table}")))?,
            );
        }
        let mut filter_unchanged = true;
        let copy_sql = format!("COPY {staging} ({column_list}) FROM STDIN (FORMAT binary)");
        let mut stats = UpsertStats {
            inserted: 0,
            updated: 0,
            unchanged: 0,
            deleted: 0,
            path: WritePath::Staged,
        };
        let mut first_row = 0u64;
        while rows.peek().is_some() {
            if first_row > 0 {
                // A fresh, empty heap keeps the staging rows in input order,
                // which the merge relies on to let the later duplicate win.
                tx.batch_execute(&format!("TRUNCATE {staging}"))
                    .await
                    .map_err(query_error(format!(
                        "emptying the staging table for {table}"
                    )))?;
            }
            let copy = CopyIn {
                statement: &copy_sql,
                types,
                table: &table,
                limit: u64::try_from(self.chunk_size).unwrap_or(u64::MAX),
                first_row,
            };
            let Copied { sent, .. } = copy.run(tx, rows).await.map_err(|failure| {
                failure.into_error(|| {
                    format!("copying rows {first_row}.. into the staging table for {table}")
                })
            })?;
            let merge = &merges[usize::from(!filter_unchanged)];
            let counts = tx.query_one(merge, &[]).await.map_err(|err| {
                decompression_limit(&table, &err).unwrap_or_else(|| {
                    query_error(format!(
                        "upserting rows {first_row}..{} into {table}",
                        first_row + sent
                    ))(err)
                })
            })?;
            let inserted = u64::try_from(counts.get::<_, i64>(0)).unwrap_or(0);
            let updated = u64::try_from(counts.get::<_, i64>(1)).unwrap_or(0);
            let unchanged = sent.saturating_sub(inserted + updated);
            stats.inserted += inserted;
            stats.updated += updated;
            stats.unchanged += unchanged;
            first_row += sent;
            // Dropping unchanged rows first costs every other row a second index lookup
            // (a chunk of changed rows took 15 to 25 % longer), so it is done for the first
            // chunk, then only while at least half of the last chunk was unchanged.
            filter_unchanged = unchanged * 2 >= sent;
        }
        let jit = string_literal(&settings.jit);
        tx.batch_execute(&format!(
            "DROP TABLE {staging}; SELECT set_config('jit', {jit}, true)"
        ))
        .await
        .map_err(query_error(format!(
            "dropping the staging table for {table}"
        )))?;
        Ok(stats)
    }

    /// The merge of one staged chunk; returns (inserted, updated).
    ///
    /// `DISTINCT ON (keys) … ORDER BY keys, ctid DESC` keeps the last input
    /// row per key (the staging heap is filled in input order). With
    /// `filter_unchanged`, rows equal to the stored row (compared as stored
    /// images, which works for every type, `json` included) are dropped before
    /// the `INSERT`, by one index lookup each (a scalar subquery, which the
    /// planner never turns into a join, so never into a scan of the whole
    /// table): an unchanged row is then neither locked nor written, where
    /// `ON CONFLICT DO UPDATE … WHERE` alone locks it, dirtying its page and
    /// writing WAL. The update's `WHERE` compares too, for rows another
    /// transaction changed meanwhile, and for the merge without the filter.
    /// `xmax = 0` marks fresh inserts.
    fn merge_sql(
        &self,
        columns: &[Ident],
        column_list: &str,
        staging: &Ident,
        touch_updated_at: bool,
        filter_unchanged: bool,
    ) -> String {
        let table = &self.table;
        let keys = join(&self.keys);
        let values: Vec<&Ident> = columns.iter().filter(|c| !self.keys.contains(c)).collect();
        let qualified = |alias: &str, idents: &[&Ident]| {
            idents
                .iter()
                .map(|c| format!("{alias}.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let key_match = self
            .keys
            .iter()
            .map(|k| format!("dagrs_stored.{k} = dagrs_input.{k}"))
            .collect::<Vec<_>>()
            .join(" AND ");
        // TRUE when the stored row equals the input row, NULL when there is none.
        let same = if values.is_empty() {
            "TRUE".to_owned()
        } else {
            format!(
                "ROW({})::record *= ROW({})::record",
                qualified("dagrs_stored", &values),
                qualified("dagrs_input", &values)
            )
        };
        let filter = if filter_unchanged {
            format!(
                "WHERE (SELECT {same} FROM {table} AS dagrs_stored WHERE {key_match}) IS NOT TRUE"
            )
        } else {
            String::new()
        };
        let on_conflict = if values.is_empty() {
            "DO NOTHING".to_owned()
        } else {
            let mut set: Vec<String> = values
                .iter()
                .map(|c| format!("{c} = EXCLUDED.{c}"))
                .collect();
            if touch_updated_at {
                set.push(format!("{} = now()", Ident::known("updated_at")));
            }
            format!(
                "DO UPDATE SET {} WHERE ROW({})::record *<> ROW({})::record",
                set.join(", "),
                qualified("dagrs_target", &values),
                qualified("EXCLUDED", &values)
            )
        };
        format!(
            "WITH written AS (\
                 INSERT INTO {table} AS dagrs_target ({column_list}) \
                 SELECT dagrs_input.* FROM (\
                     SELECT DISTINCT ON ({keys}) {column_list} FROM {staging} \
                     ORDER BY {keys}, ctid DESC) AS dagrs_input \
                 {filter} ON CONFLICT ({keys}) {on_conflict} \
                 RETURNING (dagrs_target.xmax = 0) AS inserted) \
             SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) \
             FROM written"
        )
    }

    /// Whether the table has an `updated_at` column; and turns JIT compilation off
    /// until the staging table is dropped, returning its setting to restore then. The
    /// merge's cost estimate can pass `jit_above_cost` (one index lookup per row), and
    /// compiling costs more than it saves: the time goes to lookups, not expressions
    /// (0.2 to 0.3 s more for a lookup per row over 100,000 staged rows, in `psql`).
    async fn staging_settings(&self, tx: &Transaction<'_>) -> Result<StagingSettings> {
        let table = self.table.to_string();
        let row = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_attribute \
                 WHERE attrelid = to_regclass($1) AND attname = 'updated_at' AND attnum > 0 \
                 AND NOT attisdropped), current_setting('jit'), set_config('jit', 'off', true)",
                &[&table],
            )
            .await
            .map_err(query_error(format!(
                "looking for column \"updated_at\" in {table}"
            )))?;
        Ok(StagingSettings {
            has_updated_at: row.get(0),
            jit: row.get(1),
        })
    }

    /// [`replace_window`](Self::replace_window): `DELETE` the window, then `COPY … WHERE`
    /// the window, inside a savepoint that is rolled back when the `WHERE` skipped a row.
    async fn replace<R, I>(
        &self,
        tx: &Transaction<'_>,
        window: &Window,
        column_list: &str,
        types: &[Type],
        rows: &mut std::iter::Peekable<I>,
    ) -> Result<UpsertStats>
    where
        R: CopyRow,
        I: Iterator<Item = R>,
    {
        let table = self.table.to_string();
        let Window { column, start, end } = window;
        let condition = window.condition();
        let what = format!("the window {start} <= {column} < {end} of {table}");
        tx.batch_execute("SAVEPOINT dagrs_replace_window")
            .await
            .map_err(query_error(format!("starting to replace {what}")))?;
        let deleted = tx
            .execute(&format!("DELETE FROM {table} WHERE {condition}"), &[])
            .await
            .map_err(|err| {
                decompression_limit(&table, &err)
                    .unwrap_or_else(|| query_error(format!("deleting {what}"))(err))
            })?;
        let statement =
            format!("COPY {table} ({column_list}) FROM STDIN (FORMAT binary) WHERE {condition}");
        let copy = CopyIn {
            statement: &statement,
            types,
            table: &table,
            limit: u64::MAX,
            first_row: 0,
        };
        let Copied { sent, stored } = copy
            .run(tx, rows)
            .await
            .map_err(|failure| failure.into_error(|| format!("copying rows into {what}")))?;
        if stored != sent {
            tx.batch_execute(
                "ROLLBACK TO SAVEPOINT dagrs_replace_window; \
                 RELEASE SAVEPOINT dagrs_replace_window",
            )
            .await
            .map_err(query_error(format!("undoing the replacement of {what}")))?;
            return Err(Error::OutsideWindow {
                table,
                column: column.to_string(),
                start: *start,
                end: *end,
                outside: sent - stored,
                rows: sent,
            });
        }
        tx.batch_execute("RELEASE SAVEPOINT dagrs_replace_window")
            .await
            .map_err(query_error(format!("replacing {what}")))?;
        Ok(UpsertStats {
            inserted: stored,
            updated: 0,
            unchanged: 0,
            deleted,
            path: WritePath::ReplaceWindow,
        })
    }

    fn key_list(&self) -> String {
        self.keys
            .iter()
            .map(Ident::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// What [`Upsert::staging_settings`] found.
struct StagingSettings {
    has_updated_at: bool,
    /// `jit` as it was, to restore.
    jit: String,
}

/// Writes `rows` into `table` with [`WriteMode::Upsert`] and the default
/// chunk size, in a transaction of its own; see [`Upsert`].
pub async fn upsert<R, I>(
    client: &mut Client,
    table: &QualifiedName,
    key_columns: &[&str],
    rows: I,
) -> Result<UpsertStats>
where
    R: CopyRow,
    I: IntoIterator<Item = R>,
{
    Upsert::new(table.clone(), key_columns)?
        .execute(client, rows)
        .await
}

/// TimescaleDB's limit on rows decompressed by one transaction's writes into compressed
/// chunks, as an [`Error::DecompressionLimit`]; `None` for any other error.
fn decompression_limit(table: &str, err: &tokio_postgres::Error) -> Option<Error> {
    let db = err.as_db_error()?;
    (db.code() == &SqlState::CONFIGURATION_LIMIT_EXCEEDED && db.message().contains("decompression"))
        .then(|| Error::DecompressionLimit {
            table: table.to_owned(),
            reason: describe(err),
        })
}

fn join(idents: &[Ident]) -> String {
    idents
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
