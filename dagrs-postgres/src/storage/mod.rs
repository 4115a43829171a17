//! A PostgreSQL [`Storage`] for dagrs: the run store that several processes, on several
//! machines, share. This file holds the store, its migrations and the `Storage` impl (one
//! method per operation, hence its length); the SQL text is in `sql`, row decoding in `rows`.

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use dagrs_core::partitions::{
    cut, merged, outcomes, PartitionOutcome, PartitionRange, PartitionSet, PartitionStatus,
};
use dagrs_core::storage::{
    runs_to_prune, tick_cutoff, AutomationRecord, CheckRecord, EventFilter, InstigatorStatus,
    MaterializationPosition, MaterializationRecord, PruneReport, Retention, RunFilter, RunRecord,
    Storage, TickRecord,
};
use dagrs_core::{AssetKey, BackfillRecord, BackfillStatus, Event, Metadata, RunId, RunStatus};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Json;
use tokio_postgres::Row;

use crate::error::{describe, query_error, Error, Result};
use crate::ident::Ident;
use crate::resource::PostgresResource;

mod page;
mod queue;
mod rows;
mod sql;

use self::queue::QueueSql;
pub use self::queue::DEFAULT_OUTPUT_LIMIT;

use self::rows::{
    automation_from_row, backfill_from_row, check_from_row, event_from_row,
    materialization_from_row, position_from_row, positioned_materialization_from_row, run_from_row,
    seq_param, tick_from_row,
};
use self::sql::Statements;

/// The schema [`PgStorage`] keeps its tables in unless told otherwise.
pub const DEFAULT_SCHEMA: &str = "dagrs";

/// One step of the store's layout, applied once, in order.
struct Migration {
    /// Positive; the stored version after this step.
    version: i32,
    name: &'static str,
    sql: &'static str,
}

/// Every migration, oldest first; versions count up from 1 without gaps.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "runs, events, materializations, ticks and cursors",
        sql: include_str!("migrations/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "queued and canceling runs; events of known runs only",
        sql: include_str!("migrations/0002_queued_canceling.sql"),
    },
    Migration {
        version: 3,
        name: "tick outcomes, run keys, schedule and sensor states, the run queue",
        sql: include_str!("migrations/0003_ticks_run_keys_instigators.sql"),
    },
    Migration {
        version: 4,
        name: "partitions of materializations, partition status, dynamic partitions, backfills",
        sql: include_str!("migrations/0004_partitions_backfills.sql"),
    },
    Migration {
        version: 5,
        name: "indexes for pages of runs and of event logs",
        sql: include_str!("migrations/0005_pages.sql"),
    },
    Migration {
        version: 6,
        name: "check records, automation records, materializations by time",
        sql: include_str!("migrations/0006_checks_automation.sql"),
    },
    Migration {
        version: 7,
        name: "the step queue: steps, their outputs, workers and pools",
        sql: include_str!("migrations/0007_step_queue.sql"),
    },
];

/// The schema version this build of dagrs-postgres creates and understands: the version of
/// its newest migration.
pub const SCHEMA_VERSION: u32 = MIGRATIONS[MIGRATIONS.len() - 1].version as u32;

/// The table, inside the store's schema, that records the applied migrations.
const VERSION_TABLE: &str = "dagrs_schema_version";

type BoxError = Box<dyn StdError + Send + Sync>;
type CoreResult<T> = std::result::Result<T, dagrs_core::Error>;

/// Runs, event logs, asset materializations, check records, schedule ticks, sensor cursors,
/// automation records, partition status, dynamic partitions and backfills, kept in tables of one PostgreSQL schema, for deployments
/// where several processes share one run history.
///
/// Partition status is kept as one row per range; a batch of events that changes it is
/// written in one transaction holding an advisory lock per asset, so writers of one asset in
/// several processes merge their ranges one after the other. A backfill is stored whole and
/// updated by compare-and-set on its version.
///
/// Every process that points at the same database and schema sees the same runs; a
/// schedule tick is claimed by one of them only ([`Storage::claim_tick`] is an
/// `INSERT … ON CONFLICT DO NOTHING`), and a run is finished once (a compare-and-set on
/// its status). Several stores can live side by side in one database under different
/// schema names.
///
/// [`PgStorage::new`] only checks the schema name; [`PgStorage::migrate`] creates the schema
/// and its tables or brings them up to date, and [`PgStorage::connect`] does both. The layout
/// is versioned ([`SCHEMA_VERSION`]); migrations run in one transaction behind an advisory
/// lock, so processes starting together do not race, and a store written by a newer
/// dagrs-postgres is refused ([`Error::SchemaTooNew`]) without being touched.
///
/// Cheap to clone (one `Arc`); clones share the [`PostgresResource`]'s pool.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use dagrs_postgres::{PgStorage, PostgresResource, DEFAULT_SCHEMA};
/// let pg = PostgresResource::from_env()?;
/// let storage = PgStorage::connect(pg, DEFAULT_SCHEMA).await?;
/// let instance = dagrs_core::Instance::new(storage);
/// let defs = dagrs_core::Definitions::builder()
///     .specs([dagrs_core::AssetSpec::new("answer", |_| async { Ok(42) })])
///     .build()?;
/// instance.materialize(&defs, "*", dagrs_core::RunConfig::new()).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PgStorage {
    inner: Arc<Inner>,
    output_limit: usize,
}

struct Inner {
    pg: PostgresResource,
    schema: Ident,
    sql: Statements,
    queue: QueueSql,
    /// Wakes this process's idle workers; started by the first wait.
    listener: std::sync::OnceLock<Arc<queue::Listener>>,
}

impl PgStorage {
    /// A store in `schema` (e.g. [`DEFAULT_SCHEMA`]) of the database `resource` connects to.
    ///
    /// Checks the schema name (an [`Ident`]: 1 to 63 bytes, no NUL; used as written, quoted)
    /// and opens no connection: call [`migrate`](Self::migrate) before the first use, or use
    /// [`connect`](Self::connect), which does both.
    pub fn new(resource: PostgresResource, schema: &str) -> Result<Self> {
        let schema = Ident::new(schema)?;
        let sql = Statements::new(&schema);
        let queue = QueueSql::new(&schema);
        Ok(Self {
            inner: Arc::new(Inner {
                pg: resource,
                schema,
                sql,
                queue,
                listener: std::sync::OnceLock::new(),
            }),
            output_limit: DEFAULT_OUTPUT_LIMIT,
        })
    }

    /// Keeps step outputs of up to `bytes` (serialized) for steps on other workers (default
    /// [`DEFAULT_OUTPUT_LIMIT`]); a larger output fails its step, saying so.
    pub fn with_output_limit(mut self, bytes: usize) -> Self {
        self.output_limit = bytes;
        self
    }

    /// An [`Instance`](dagrs_core::Instance) on this store with its step queue: runs can be
    /// [enqueued](dagrs_core::Instance::enqueue) for [`Worker`](dagrs_core::worker::Worker)s on
    /// any machine that opens the same store.
    pub fn instance(self) -> dagrs_core::Instance {
        let queue: Arc<dyn dagrs_core::worker::StepQueue> = Arc::new(self.clone());
        dagrs_core::Instance::new(self).with_step_queue(queue)
    }

    /// [`new`](Self::new) and [`migrate`](Self::migrate): a store that is ready to use.
    pub async fn connect(resource: PostgresResource, schema: &str) -> Result<Self> {
        let storage = Self::new(resource, schema)?;
        storage.migrate().await?;
        Ok(storage)
    }

    /// Creates the schema and its tables, or applies the migrations the store is missing;
    /// returns how many were applied (0 when it was up to date).
    ///
    /// All of it happens in one transaction that holds an advisory lock on the schema
    /// (`pg_advisory_xact_lock`), so processes that start together wait for each other and
    /// the migrations run once. A store already at [`SCHEMA_VERSION`] is only read. A store
    /// at a newer version than this build knows is refused with [`Error::SchemaTooNew`], and
    /// nothing is changed.
    pub async fn migrate(&self) -> Result<u32> {
        let mut client = self.inner.pg.get().await?;
        // Up to date (the usual case): no lock, no transaction, no DDL.
        if self.current_version(&client).await? == Some(SCHEMA_VERSION) {
            return Ok(0);
        }
        let schema = &self.inner.schema;
        let tx = client
            .transaction()
            .await
            .map_err(self.query_error(format!("starting to migrate schema {schema}")))?;
        tx.execute(
            "SELECT pg_advisory_xact_lock($1)",
            &[&lock_key("migrate", schema)],
        )
        .await
        .map_err(self.query_error(format!("locking schema {schema} for migration")))?;
        // Another process may have migrated the store while this one waited for the lock.
        let current = self.current_version(&tx).await?.unwrap_or(0);
        if current == SCHEMA_VERSION {
            return Ok(0);
        }
        let creating = format!("migrating schema {schema} from version {current}");
        let schema_exists = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1)",
                &[&schema.as_str()],
            )
            .await
            .and_then(|row| row.try_get::<_, bool>(0))
            .map_err(self.query_error(creating.clone()))?;
        let mut setup = String::new();
        if !schema_exists {
            setup.push_str(&format!("CREATE SCHEMA {schema};\n"));
        }
        // Unqualified names in the migrations land in the store's schema.
        setup.push_str(&format!(
            "SET LOCAL search_path TO {schema};\n\
             CREATE TABLE IF NOT EXISTS {version_table} (\n\
                 version    integer     PRIMARY KEY CHECK (version > 0),\n\
                 name       text        NOT NULL,\n\
                 applied_at timestamptz NOT NULL DEFAULT now()\n\
             );",
            version_table = Ident::known(VERSION_TABLE),
        ));
        tx.batch_execute(&setup)
            .await
            .map_err(self.query_error(creating.clone()))?;
        let record = format!(
            "INSERT INTO {schema}.{} (version, name) VALUES ($1, $2)",
            Ident::known(VERSION_TABLE)
        );
        let mut applied = 0;
        for migration in MIGRATIONS.iter().filter(|m| m.version as u32 > current) {
            let action = format!(
                "applying migration {} ({}) to schema {schema}",
                migration.version, migration.name
            );
            tx.batch_execute(migration.sql)
                .await
                .map_err(self.query_error(action.clone()))?;
            tx.execute(&record, &[&migration.version, &migration.name])
                .await
                .map_err(self.query_error(action))?;
            applied += 1;
        }
        tx.commit()
            .await
            .map_err(self.query_error(format!("committing the migration of schema {schema}")))?;
        tracing::info!(
            schema = %schema,
            database = %self.inner.pg.masked_url(),
            from = current,
            to = SCHEMA_VERSION,
            "migrated the dagrs store"
        );
        Ok(applied)
    }

    /// The store's schema version: `None` when it has not been created yet.
    pub async fn schema_version(&self) -> Result<Option<u32>> {
        let client = self.inner.pg.get().await?;
        self.read_version(&client).await
    }

    /// The schema the tables live in.
    pub fn schema(&self) -> &Ident {
        &self.inner.schema
    }

    /// The connection pool the store uses.
    pub fn resource(&self) -> &PostgresResource {
        &self.inner.pg
    }

    /// The store's version, refusing one newer than [`SCHEMA_VERSION`].
    async fn current_version(
        &self,
        client: &impl deadpool_postgres::GenericClient,
    ) -> Result<Option<u32>> {
        let version = self.read_version(client).await?;
        match version {
            Some(found) if found > SCHEMA_VERSION => Err(Error::SchemaTooNew {
                url: self.inner.pg.masked_url().to_owned(),
                schema: self.inner.schema.to_string(),
                found,
                supported: SCHEMA_VERSION,
            }),
            _ => Ok(version),
        }
    }

    async fn read_version(
        &self,
        client: &impl deadpool_postgres::GenericClient,
    ) -> Result<Option<u32>> {
        let schema = &self.inner.schema;
        let action = || format!("reading the schema version of {schema}");
        let exists = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables \
                 WHERE schemaname = $1 AND tablename = $2)",
                &[&schema.as_str(), &VERSION_TABLE],
            )
            .await
            .and_then(|row| row.try_get::<_, bool>(0))
            .map_err(self.query_error(action()))?;
        if !exists {
            return Ok(None);
        }
        let version: Option<i32> = client
            .query_one(&self.inner.sql.version, &[])
            .await
            .and_then(|row| row.try_get(0))
            .map_err(self.query_error(action()))?;
        // The table's CHECK keeps versions positive.
        Ok(version.and_then(|v| u32::try_from(v).ok()))
    }

    fn query_error(&self, action: String) -> impl FnOnce(tokio_postgres::Error) -> Error {
        let action = format!("{action} on {}", self.inner.pg.masked_url());
        query_error(action)
    }

    /// A pooled client, for `operation` of the [`Storage`] trait.
    async fn client(&self, operation: &'static str) -> CoreResult<deadpool_postgres::Client> {
        self.inner
            .pg
            .get()
            .await
            .map_err(|e| storage_error(operation, e))
    }

    /// Turns a driver error met during `operation` into dagrs-core's storage error, naming
    /// the schema and database, with a hint when the tables are missing.
    fn db_error(
        &self,
        operation: &'static str,
    ) -> impl FnOnce(tokio_postgres::Error) -> dagrs_core::Error + '_ {
        move |source| {
            let schema = &self.inner.schema;
            let mut reason = describe(&source);
            if source.code() == Some(&SqlState::UNDEFINED_TABLE) {
                reason.push_str(&format!(
                    "; the dagrs tables are missing from schema {schema}: call \
                     PgStorage::migrate (or create the store with PgStorage::connect) first"
                ));
            }
            storage_error(
                operation,
                Error::Query {
                    action: format!(
                        "the statement on schema {schema} of {}",
                        self.inner.pg.masked_url()
                    ),
                    reason,
                    source,
                },
            )
        }
    }

    /// Runs `attempt` — again, on a new connection, while the server cannot be reached (a
    /// restart, a failover), for up to [`RECONNECT_WITHIN`] — and returns what it gave, and
    /// whether it was tried again.
    async fn retrying<T, F, Fut>(
        &self,
        operation: &'static str,
        attempt: F,
    ) -> (CoreResult<T>, bool)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, Failure>>,
    {
        let deadline = tokio::time::Instant::now() + RECONNECT_WITHIN;
        let mut pause = Duration::from_millis(50);
        let mut retried = false;
        loop {
            match attempt().await {
                Ok(outcome) => return (Ok(outcome), retried),
                Err(failure)
                    if failure.is_transient() && tokio::time::Instant::now() < deadline =>
                {
                    tracing::warn!(
                        target: "dagrs::storage",
                        database = %self.inner.pg.masked_url(),
                        "cannot {operation}, trying again: {failure}"
                    );
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                    retried = true;
                }
                Err(failure) => return (Err(self.failed(operation)(failure)), retried),
            }
        }
    }

    /// Runs a cached prepared statement, [`retrying`](Self::retrying) while the server cannot
    /// be reached, and returns its rows (or the count of rows it changed), and whether it was
    /// tried again.
    async fn statement(
        &self,
        operation: &'static str,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        want_rows: bool,
    ) -> (CoreResult<Outcome>, bool) {
        self.retrying(operation, || async {
            let client = self.inner.pg.get().await.map_err(Failure::Pool)?;
            let statement = client.prepare_cached(sql).await.map_err(Failure::Db)?;
            if want_rows {
                client.query(&statement, params).await.map(Outcome::Rows)
            } else {
                client.execute(&statement, params).await.map(Outcome::Count)
            }
            .map_err(Failure::Db)
        })
        .await
    }

    /// Runs a cached prepared statement and returns its rows.
    async fn query(
        &self,
        operation: &'static str,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> CoreResult<Vec<Row>> {
        match self.statement(operation, sql, params, true).await.0? {
            Outcome::Rows(rows) => Ok(rows),
            Outcome::Count(_) => unreachable!("asked for rows"),
        }
    }

    /// Runs a cached prepared statement and returns how many rows it changed.
    async fn execute(
        &self,
        operation: &'static str,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> CoreResult<u64> {
        match self.statement(operation, sql, params, false).await.0? {
            Outcome::Count(count) => Ok(count),
            Outcome::Rows(_) => unreachable!("asked for a count"),
        }
    }

    /// Runs a compare-and-set statement that returns `(changed, exists)` for `run_id`.
    async fn compare_and_set(
        &self,
        operation: &'static str,
        sql: &str,
        run_id: &RunId,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> CoreResult<bool> {
        let rows = self.query(operation, sql, params).await?;
        let row = rows
            .first()
            .ok_or_else(|| storage_error(operation, "the statement returned no row"))?;
        let changed: bool = row.try_get(0).map_err(|e| storage_error(operation, e))?;
        let exists: bool = row.try_get(1).map_err(|e| storage_error(operation, e))?;
        if !exists {
            return Err(dagrs_core::Error::RunNotFound(run_id.to_string()));
        }
        Ok(changed)
    }

    async fn runs_where(
        &self,
        operation: &'static str,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> CoreResult<Vec<RunRecord>> {
        self.query(operation, sql, params)
            .await?
            .iter()
            .map(|row| run_from_row(row).map_err(|e| storage_error(operation, e)))
            .collect()
    }

    async fn materializations_where(
        &self,
        operation: &'static str,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> CoreResult<Vec<MaterializationRecord>> {
        self.query(operation, sql, params)
            .await?
            .iter()
            .map(|row| materialization_from_row(row).map_err(|e| storage_error(operation, e)))
            .collect()
    }

    /// Records `run` through `client` (a connection, or a transaction).
    async fn create_run_in(
        &self,
        client: &impl deadpool_postgres::GenericClient,
        run: &RunRecord,
    ) -> std::result::Result<(), Failure> {
        let statement = client
            .prepare_cached(&self.inner.sql.create_run)
            .await
            .map_err(Failure::Db)?;
        client
            .execute(
                &statement,
                &[
                    &run.run_id.as_str(),
                    &run.status.as_str(),
                    &run.selection,
                    &Json(&run.assets),
                    &Json(&run.config),
                    &Json(&run.tags),
                    &run.started_at,
                    &run.ended_at,
                    &run.owner,
                    &run.heartbeat_at,
                    &run.parent_run_id.as_ref().map(RunId::as_str),
                    &run.failure,
                ],
            )
            .await
            .map_err(Failure::Db)?;
        Ok(())
    }

    /// Turns a failed attempt at `operation` into the crate's error.
    fn failed(&self, operation: &'static str) -> impl FnOnce(Failure) -> dagrs_core::Error + '_ {
        move |failure| match failure {
            Failure::Pool(e) => storage_error(operation, e),
            Failure::Invalid(e) => storage_error(operation, e),
            Failure::Db(e) => self.db_error(operation)(e),
        }
    }

    /// The advisory locks of the assets `updates` change the partition status of, in the
    /// order they are taken.
    fn partition_locks(&self, updates: &[RangeUpdate<'_>]) -> Vec<i64> {
        let mut locks: Vec<i64> = updates
            .iter()
            .map(|u| self.partition_lock(u.asset))
            .collect();
        locks.sort_unstable();
        locks.dedup();
        locks
    }

    /// The advisory lock that writers of `asset`'s partition status take, in this store.
    fn partition_lock(&self, asset: &AssetKey) -> i64 {
        lock_key(&format!("partitions\0{asset}"), &self.inner.schema)
    }

    /// Appends a batch that changes partition status — its events, its materializations and
    /// the status — in one transaction holding the partition locks of its assets (so two
    /// writers of one asset merge their ranges one after the other). Tried again as a whole,
    /// on a new connection, while the server cannot be reached, like
    /// [`statement`](Self::statement); also returns whether it was tried again.
    async fn append_with_partitions(
        &self,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        updates: &[RangeUpdate<'_>],
    ) -> (CoreResult<()>, bool) {
        const OP: &str = "append events";
        let locks = self.partition_locks(updates);
        self.retrying(OP, || {
            self.try_append_with_partitions(params, updates, &locks)
        })
        .await
    }

    async fn try_append_with_partitions(
        &self,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        updates: &[RangeUpdate<'_>],
        locks: &[i64],
    ) -> std::result::Result<(), Failure> {
        let mut client = self.inner.pg.get().await.map_err(Failure::Pool)?;
        let tx = client.transaction().await.map_err(Failure::Db)?;
        self.write_events_in(&tx, params, updates, locks).await?;
        tx.commit().await.map_err(Failure::Db)
    }

    /// Writes a batch of events in `tx`: the events, their materializations and check
    /// records, and the partition status they change, under the partition `locks` of their
    /// assets.
    async fn write_events_in(
        &self,
        tx: &impl deadpool_postgres::GenericClient,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        updates: &[RangeUpdate<'_>],
        locks: &[i64],
    ) -> std::result::Result<(), Failure> {
        let sql = &self.inner.sql;
        if !locks.is_empty() {
            let lock = tx
                .prepare_cached(&sql.lock_partitions)
                .await
                .map_err(Failure::Db)?;
            tx.execute(&lock, &[&locks]).await.map_err(Failure::Db)?;
        }
        let append = tx
            .prepare_cached(&sql.append_events)
            .await
            .map_err(Failure::Db)?;
        tx.execute(&append, params).await.map_err(Failure::Db)?;
        for update in updates {
            let (asset, range) = (update.asset.as_str(), update.range);
            match update.outcome {
                PartitionOutcome::Materialized => {
                    self.join_range(tx, asset, PartitionOutcome::Materialized, range)
                        .await?;
                    self.cut_range(tx, asset, PartitionOutcome::Failed, range)
                        .await?;
                }
                PartitionOutcome::Failed => {
                    self.join_range(tx, asset, PartitionOutcome::Failed, range)
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// Removes the stored ranges of `asset` in `status` that `take` (`take_touching` or
    /// `take_overlapping`) finds for `range`, and returns them.
    async fn take_ranges(
        &self,
        tx: &impl deadpool_postgres::GenericClient,
        take: &str,
        asset: &str,
        status: PartitionOutcome,
        range: &PartitionRange,
    ) -> std::result::Result<Vec<(i64, i64)>, Failure> {
        let take = tx.prepare_cached(take).await.map_err(Failure::Db)?;
        tx.query(
            &take,
            &[
                &asset,
                &status.as_str(),
                &range.dims.as_str(),
                &range.start,
                &range.end,
            ],
        )
        .await
        .map_err(Failure::Db)?
        .iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect::<std::result::Result<_, tokio_postgres::Error>>()
        .map_err(Failure::Db)
    }

    /// Stores `ranges` of `asset` in `status`, for discrete keys `dims`.
    async fn put_ranges(
        &self,
        tx: &impl deadpool_postgres::GenericClient,
        asset: &str,
        status: PartitionOutcome,
        dims: &str,
        ranges: &[(i64, i64)],
    ) -> std::result::Result<(), Failure> {
        if ranges.is_empty() {
            return Ok(());
        }
        let starts: Vec<i64> = ranges.iter().map(|r| r.0).collect();
        let ends: Vec<i64> = ranges.iter().map(|r| r.1).collect();
        let insert = tx
            .prepare_cached(&self.inner.sql.insert_ranges)
            .await
            .map_err(Failure::Db)?;
        tx.execute(&insert, &[&asset, &status.as_str(), &dims, &starts, &ends])
            .await
            .map_err(Failure::Db)?;
        Ok(())
    }

    /// `range` joins the ranges of `asset` in `status`: it and the stored ranges it touches
    /// become one row.
    async fn join_range(
        &self,
        tx: &impl deadpool_postgres::GenericClient,
        asset: &str,
        status: PartitionOutcome,
        range: &PartitionRange,
    ) -> std::result::Result<(), Failure> {
        let sql = &self.inner.sql;
        let touching = self
            .take_ranges(tx, &sql.take_touching, asset, status, range)
            .await?;
        let joined = merged(&touching, range.start, range.end);
        self.put_ranges(tx, asset, status, &range.dims, &[joined])
            .await
    }

    /// `range` leaves the ranges of `asset` in `status`.
    async fn cut_range(
        &self,
        tx: &impl deadpool_postgres::GenericClient,
        asset: &str,
        status: PartitionOutcome,
        range: &PartitionRange,
    ) -> std::result::Result<(), Failure> {
        let sql = &self.inner.sql;
        let overlapping = self
            .take_ranges(tx, &sql.take_overlapping, asset, status, range)
            .await?;
        if overlapping.is_empty() {
            return Ok(());
        }
        let left = cut(&overlapping, range.start, range.end);
        self.put_ranges(tx, asset, status, &range.dims, &left).await
    }
}

impl fmt::Debug for PgStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStorage")
            .field("url", &self.inner.pg.masked_url())
            .field("schema", &self.inner.schema)
            .finish()
    }
}

#[async_trait]
impl Storage for PgStorage {
    async fn create_run(&self, run: &RunRecord) -> CoreResult<()> {
        const OP: &str = "create a run";
        let (outcome, _) = self
            .retrying(OP, || async {
                let client = self.inner.pg.get().await.map_err(Failure::Pool)?;
                self.create_run_in(&client, run).await
            })
            .await;
        outcome
    }

    async fn append_events(&self, events: &[Event]) -> CoreResult<()> {
        const OP: &str = "append events";
        if events.is_empty() {
            return Ok(());
        }
        let checks: Vec<CheckRecord> = events.iter().filter_map(CheckRecord::of).collect();
        let columns = EventColumns::of(events, &checks).map_err(|e| storage_error(OP, e))?;
        let params = columns.params();
        let (run_ids, seqs) = (&columns.run_ids, &columns.seqs);
        let updates = range_updates(events);
        let (appended, retried) = if updates.is_empty() {
            let (outcome, retried) = self
                .statement(OP, &self.inner.sql.append_events, &params, false)
                .await;
            (outcome.map(drop), retried)
        } else {
            self.append_with_partitions(&params, &updates).await
        };
        let Err(e) = appended else {
            return Ok(());
        };
        // A batch tried again after a lost connection may have been committed the first
        // time: all of it being there then means it was written once.
        if retried && is_unique_violation(&e) {
            let present = self
                .query(OP, &self.inner.sql.events_present, &[run_ids, seqs])
                .await?;
            let present: i64 = present
                .first()
                .map_or(Ok(0), |row| row.try_get(0))
                .map_err(|e| storage_error(OP, e))?;
            if present == events.len() as i64 {
                return Ok(());
            }
        }
        // The foreign key rejects events of unknown runs: name the first such run.
        let unknown = self
            .query(OP, &self.inner.sql.unknown_runs, &[run_ids])
            .await?;
        match unknown.first() {
            Some(row) => Err(dagrs_core::Error::RunNotFound(
                row.try_get(0).map_err(|e| storage_error(OP, e))?,
            )),
            None => Err(e),
        }
    }

    async fn finish_run(
        &self,
        run_id: &RunId,
        status: RunStatus,
        ended_at: DateTime<Utc>,
        failure: Option<&str>,
    ) -> CoreResult<bool> {
        self.compare_and_set(
            "finish a run",
            &self.inner.sql.finish_run,
            run_id,
            &[&run_id.as_str(), &status.as_str(), &ended_at, &failure],
        )
        .await
    }

    async fn request_cancel(
        &self,
        run_id: &RunId,
        reason: &str,
        at: DateTime<Utc>,
    ) -> CoreResult<bool> {
        self.compare_and_set(
            "request a cancellation",
            &self.inner.sql.request_cancel,
            run_id,
            &[&run_id.as_str(), &reason, &at],
        )
        .await
    }

    async fn start_run(&self, run_id: &RunId, owner: &str, at: DateTime<Utc>) -> CoreResult<bool> {
        self.compare_and_set(
            "start a queued run",
            &self.inner.sql.start_run,
            run_id,
            &[&run_id.as_str(), &owner, &at],
        )
        .await
    }

    async fn queued_runs(&self) -> CoreResult<Vec<RunRecord>> {
        self.runs_where("list queued runs", &self.inner.sql.queued_runs, &[])
            .await
    }

    async fn heartbeat(&self, run_id: &RunId, at: DateTime<Utc>) -> CoreResult<()> {
        let changed = self
            .execute(
                "record a heartbeat",
                &self.inner.sql.heartbeat,
                &[&run_id.as_str(), &at],
            )
            .await?;
        if changed == 0 {
            return Err(dagrs_core::Error::RunNotFound(run_id.to_string()));
        }
        Ok(())
    }

    async fn run(&self, run_id: &RunId) -> CoreResult<Option<RunRecord>> {
        Ok(self
            .runs_where("read a run", &self.inner.sql.run, &[&run_id.as_str()])
            .await?
            .pop())
    }

    async fn runs(&self, limit: usize) -> CoreResult<Vec<RunRecord>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.runs_where("list runs", &self.inner.sql.runs, &[&limit])
            .await
    }

    async fn runs_page(&self, filter: &RunFilter, limit: usize) -> CoreResult<Vec<RunRecord>> {
        let (sql, params) = page::runs(&self.inner.schema, filter, limit);
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            params.iter().map(|p| &**p as _).collect();
        self.runs_where("list a page of runs", &sql, &params).await
    }

    async fn running_runs(&self) -> CoreResult<Vec<RunRecord>> {
        self.runs_where("list running runs", &self.inner.sql.running_runs, &[])
            .await
    }

    async fn events(&self, run_id: &RunId, after: Option<u64>) -> CoreResult<Vec<Event>> {
        const OP: &str = "read events";
        let after = match after.map(i64::try_from) {
            None => -1,
            Some(Ok(after)) => after,
            // Nothing is stored past the largest bigint.
            Some(Err(_)) => return Ok(Vec::new()),
        };
        self.query(OP, &self.inner.sql.events, &[&run_id.as_str(), &after])
            .await?
            .iter()
            .map(|row| event_from_row(run_id, row).map_err(|e| storage_error(OP, e)))
            .collect()
    }

    async fn events_page(
        &self,
        run_id: &RunId,
        filter: &EventFilter,
        limit: usize,
    ) -> CoreResult<Vec<Event>> {
        const OP: &str = "read a page of events";
        let (sql, params) = page::events(&self.inner.schema, run_id, filter, limit);
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            params.iter().map(|p| &**p as _).collect();
        let mut events = self
            .query(OP, &sql, &params)
            .await?
            .iter()
            .map(|row| event_from_row(run_id, row).map_err(|e| storage_error(OP, e)))
            .collect::<CoreResult<Vec<_>>>()?;
        if filter.newest {
            events.reverse();
        }
        Ok(events)
    }

    async fn latest_materialization(
        &self,
        asset: &AssetKey,
    ) -> CoreResult<Option<MaterializationRecord>> {
        Ok(self
            .materializations_where(
                "read the latest materialization",
                &self.inner.sql.latest_materialization,
                &[&asset.as_str()],
            )
            .await?
            .pop())
    }

    async fn latest_materializations(&self) -> CoreResult<Vec<MaterializationRecord>> {
        self.materializations_where(
            "read the latest materializations",
            &self.inner.sql.latest_materializations,
            &[],
        )
        .await
    }

    async fn materializations(
        &self,
        asset: &AssetKey,
        limit: usize,
    ) -> CoreResult<Vec<MaterializationRecord>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.materializations_where(
            "read materializations",
            &self.inner.sql.materializations,
            &[&asset.as_str(), &limit],
        )
        .await
    }

    async fn materialization_position(&self) -> CoreResult<MaterializationPosition> {
        const OP: &str = "read the materialization position";
        match self
            .query(OP, &self.inner.sql.materialization_position, &[])
            .await?
            .first()
        {
            None => Ok(MaterializationPosition::default()),
            Some(row) => position_from_row(row, 0).map_err(|e| storage_error(OP, e)),
        }
    }

    async fn materializations_after(
        &self,
        after: MaterializationPosition,
        limit: usize,
    ) -> CoreResult<Vec<(MaterializationPosition, MaterializationRecord)>> {
        const OP: &str = "read materializations after a position";
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let tx = after.transaction().to_string();
        let id = i64::try_from(after.id()).unwrap_or(i64::MAX);
        self.query(
            OP,
            &self.inner.sql.materializations_after,
            &[&tx, &id, &limit],
        )
        .await?
        .iter()
        .map(|row| positioned_materialization_from_row(row).map_err(|e| storage_error(OP, e)))
        .collect()
    }

    async fn check_records(&self, asset: &AssetKey, limit: usize) -> CoreResult<Vec<CheckRecord>> {
        const OP: &str = "read check records";
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.query(
            OP,
            &self.inner.sql.check_records,
            &[&asset.as_str(), &limit],
        )
        .await?
        .iter()
        .map(|row| check_from_row(row).map_err(|e| storage_error(OP, e)))
        .collect()
    }

    async fn record_automation(&self, records: &[AutomationRecord]) -> CoreResult<()> {
        const OP: &str = "record automation evaluations";
        if records.is_empty() {
            return Ok(());
        }
        let assets: Vec<&str> = records.iter().map(|r| r.asset.as_str()).collect();
        let evaluated: Vec<DateTime<Utc>> = records.iter().map(|r| r.evaluated_at).collect();
        let requested: Vec<bool> = records.iter().map(|r| r.requested).collect();
        let reasons: Vec<&str> = records.iter().map(|r| r.reason.as_str()).collect();
        let run_ids: Vec<Json<&Vec<RunId>>> = records.iter().map(|r| Json(&r.run_ids)).collect();
        // Not tried again after a lost connection: the first try may have been committed,
        // and a record written twice would be listed twice.
        let client = self.client(OP).await?;
        let statement = client
            .prepare_cached(&self.inner.sql.record_automation)
            .await
            .map_err(self.db_error(OP))?;
        client
            .execute(
                &statement,
                &[&assets, &evaluated, &requested, &reasons, &run_ids],
            )
            .await
            .map_err(self.db_error(OP))?;
        Ok(())
    }

    async fn automation_records(
        &self,
        asset: Option<&AssetKey>,
        limit: usize,
    ) -> CoreResult<Vec<AutomationRecord>> {
        const OP: &str = "read automation records";
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = &self.inner.sql;
        let rows = match asset {
            Some(asset) => {
                self.query(OP, &sql.automation_records_of, &[&asset.as_str(), &limit])
                    .await?
            }
            None => self.query(OP, &sql.automation_records, &[&limit]).await?,
        };
        rows.iter()
            .map(|row| automation_from_row(row).map_err(|e| storage_error(OP, e)))
            .collect()
    }

    async fn prune(&self, keep: Retention, now: DateTime<Utc>) -> CoreResult<PruneReport> {
        const OP: &str = "prune the event log";
        let sql = &self.inner.sql;
        let mut client = self.client(OP).await?;
        let tx = client.transaction().await.map_err(self.db_error(OP))?;
        // One pruner at a time per store: concurrent ones would delete the same rows in
        // different orders and could deadlock.
        tx.execute(
            "SELECT pg_advisory_xact_lock($1)",
            &[&lock_key("prune", &self.inner.schema)],
        )
        .await
        .map_err(self.db_error(OP))?;
        let finished = tx
            .prepare_cached(&sql.finished_runs)
            .await
            .map_err(self.db_error(OP))?;
        let runs = tx
            .query(&finished, &[])
            .await
            .map_err(self.db_error(OP))?
            .iter()
            .map(|row| run_from_row(row).map_err(|e| storage_error(OP, e)))
            .collect::<CoreResult<Vec<_>>>()?;
        let ticks = match tick_cutoff(keep, now) {
            Some(cutoff) => {
                tx.execute(&sql.delete_automation, &[&cutoff])
                    .await
                    .map_err(self.db_error(OP))?;
                tx.execute(&sql.delete_ticks, &[&cutoff])
                    .await
                    .map_err(self.db_error(OP))?
            }
            None => 0,
        };
        let doomed = runs_to_prune(&runs, keep, now);
        if doomed.is_empty() {
            tx.commit().await.map_err(self.db_error(OP))?;
            return Ok(PruneReport {
                ticks,
                ..PruneReport::default()
            });
        }
        let ids: Vec<&str> = doomed.iter().map(RunId::as_str).collect();
        let mut deleted = [0; 4];
        let steps = [
            &sql.delete_events,
            &sql.delete_materializations,
            &sql.delete_check_records,
            &sql.delete_runs,
        ];
        for (count, statement) in deleted.iter_mut().zip(steps) {
            let statement = tx
                .prepare_cached(statement)
                .await
                .map_err(self.db_error(OP))?;
            *count = tx
                .execute(&statement, &[&ids])
                .await
                .map_err(self.db_error(OP))?;
        }
        tx.commit().await.map_err(self.db_error(OP))?;
        let [events, materializations, _check_records, runs] = deleted;
        Ok(PruneReport {
            runs,
            events,
            materializations,
            ticks,
        })
    }

    async fn claim_ticks(&self, ticks: &[TickRecord]) -> CoreResult<Vec<bool>> {
        const OP: &str = "claim ticks";
        if ticks.is_empty() {
            return Ok(Vec::new());
        }
        let columns = TickColumns::of(ticks);
        let claimed = self
            .query(OP, &self.inner.sql.claim_ticks, &columns.params())
            .await?;
        let claimed: Vec<usize> = claimed
            .iter()
            .map(|row| row.try_get::<_, i64>(0).map(|n| n as usize - 1))
            .collect::<Result<_, _>>()
            .map_err(|e| storage_error(OP, e))?;
        Ok((0..ticks.len()).map(|i| claimed.contains(&i)).collect())
    }

    async fn update_ticks(&self, ticks: &[TickRecord]) -> CoreResult<()> {
        const OP: &str = "update ticks";
        if ticks.is_empty() {
            return Ok(());
        }
        let columns = TickColumns::of(ticks);
        let changed = self
            .execute(OP, &self.inner.sql.update_ticks, &columns.params())
            .await?;
        if changed != ticks.len() as u64 {
            return Err(storage_error(
                OP,
                format!(
                    "{} of {} ticks were never claimed",
                    ticks.len() as u64 - changed,
                    ticks.len()
                ),
            ));
        }
        Ok(())
    }

    async fn ticks(&self, name: Option<&str>, limit: usize) -> CoreResult<Vec<TickRecord>> {
        const OP: &str = "list ticks";
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.query(OP, &self.inner.sql.ticks, &[&name, &limit])
            .await?
            .iter()
            .map(|row| tick_from_row(row).map_err(|e| storage_error(OP, e)))
            .collect()
    }

    async fn claim_run_key(
        &self,
        instigator: &str,
        key: &str,
        run_id: &RunId,
    ) -> CoreResult<Option<RunId>> {
        const OP: &str = "claim a run key";
        let rows = self
            .query(
                OP,
                &self.inner.sql.claim_run_key,
                &[&instigator, &key, &run_id.as_str()],
            )
            .await?;
        let row = rows
            .first()
            .ok_or_else(|| storage_error(OP, "the statement returned no row"))?;
        let (holder, claimed): (String, bool) = (
            row.try_get(0).map_err(|e| storage_error(OP, e))?,
            row.try_get(1).map_err(|e| storage_error(OP, e))?,
        );
        Ok((!claimed).then(|| RunId::from(holder)))
    }

    async fn instigator_states(&self) -> CoreResult<BTreeMap<String, InstigatorStatus>> {
        const OP: &str = "read schedule and sensor states";
        self.query(OP, &self.inner.sql.instigator_states, &[])
            .await?
            .iter()
            .map(|row| {
                let name: String = row.try_get(0).map_err(|e| storage_error(OP, e))?;
                let status: &str = row.try_get(1).map_err(|e| storage_error(OP, e))?;
                let status = status.parse().map_err(|e: String| storage_error(OP, e))?;
                Ok((name, status))
            })
            .collect()
    }

    async fn set_instigator_state(&self, name: &str, status: InstigatorStatus) -> CoreResult<()> {
        self.execute(
            "store a schedule or sensor state",
            &self.inner.sql.set_instigator_state,
            &[&name, &status.as_str()],
        )
        .await?;
        Ok(())
    }

    async fn cursor(&self, name: &str) -> CoreResult<Option<String>> {
        const OP: &str = "read a cursor";
        match self
            .query(OP, &self.inner.sql.cursor, &[&name])
            .await?
            .first()
        {
            Some(row) => row.try_get(0).map_err(|e| storage_error(OP, e)),
            None => Ok(None),
        }
    }

    async fn cursors(&self, prefix: &str) -> CoreResult<BTreeMap<String, String>> {
        const OP: &str = "read cursors";
        self.query(OP, &self.inner.sql.cursors, &[&prefix])
            .await?
            .iter()
            .map(|row| {
                Ok((
                    row.try_get(0).map_err(|e| storage_error(OP, e))?,
                    row.try_get(1).map_err(|e| storage_error(OP, e))?,
                ))
            })
            .collect()
    }

    async fn set_cursor(&self, name: &str, value: &str) -> CoreResult<()> {
        self.execute(
            "store a cursor",
            &self.inner.sql.set_cursor,
            &[&name, &value],
        )
        .await?;
        Ok(())
    }

    async fn partition_status(&self, asset: &AssetKey) -> CoreResult<PartitionStatus> {
        const OP: &str = "read partition status";
        let rows = self
            .query(OP, &self.inner.sql.partition_status, &[&asset.as_str()])
            .await?;
        let mut materialized = Vec::new();
        let mut failed = Vec::new();
        for row in &rows {
            let get = |e| storage_error(OP, e);
            let status: &str = row.try_get(0).map_err(get)?;
            let range: (String, i64, i64) = (
                row.try_get(1).map_err(get)?,
                row.try_get(2).map_err(get)?,
                row.try_get(3).map_err(get)?,
            );
            match status.parse::<PartitionOutcome>() {
                Ok(PartitionOutcome::Materialized) => materialized.push(range),
                Ok(PartitionOutcome::Failed) => failed.push(range),
                Err(e) => {
                    return Err(storage_error(
                        OP,
                        format!("a stored partition range of `{asset}`: {e}"),
                    ))
                }
            }
        }
        let set = |rows, status: PartitionOutcome| {
            PartitionSet::from_rows(rows).map_err(|e| {
                storage_error(OP, format!("the {status} partitions of `{asset}`: {e}"))
            })
        };
        Ok(PartitionStatus {
            materialized: set(materialized, PartitionOutcome::Materialized)?,
            failed: set(failed, PartitionOutcome::Failed)?,
            in_progress: PartitionSet::new(),
        })
    }

    async fn partition_materialization(
        &self,
        asset: &AssetKey,
        range: &PartitionRange,
    ) -> CoreResult<Option<MaterializationRecord>> {
        Ok(self
            .materializations_where(
                "read a partition's materialization",
                &self.inner.sql.partition_materialization,
                &[
                    &asset.as_str(),
                    &range.dims.as_str(),
                    &range.start,
                    &range.end,
                ],
            )
            .await?
            .pop())
    }

    async fn dynamic_partitions(&self, name: &str) -> CoreResult<Vec<String>> {
        const OP: &str = "read dynamic partitions";
        self.query(OP, &self.inner.sql.dynamic_partitions, &[&name])
            .await?
            .iter()
            .map(|row| row.try_get(0).map_err(|e| storage_error(OP, e)))
            .collect()
    }

    async fn add_dynamic_partitions(&self, name: &str, keys: &[String]) -> CoreResult<Vec<String>> {
        const OP: &str = "add dynamic partitions";
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        // One idempotent statement: tried again after a lost connection, it adds nothing
        // twice (though keys its first try added are then not reported as new).
        let rows = self
            .query(OP, &self.inner.sql.add_dynamic_partitions, &[&name, &keys])
            .await?;
        let mut added = rows
            .iter()
            .map(|row| Ok((row.try_get::<_, i64>(1)?, row.try_get::<_, String>(0)?)))
            .collect::<std::result::Result<Vec<_>, tokio_postgres::Error>>()
            .map_err(|e| storage_error(OP, e))?;
        added.sort_unstable();
        Ok(added.into_iter().map(|(_, key)| key).collect())
    }

    async fn delete_dynamic_partition(&self, name: &str, key: &str) -> CoreResult<bool> {
        let removed = self
            .execute(
                "delete a dynamic partition",
                &self.inner.sql.delete_dynamic_partition,
                &[&name, &key],
            )
            .await?;
        Ok(removed > 0)
    }

    async fn create_backfill(&self, backfill: &BackfillRecord) -> CoreResult<()> {
        const OP: &str = "create a backfill";
        let version = version_param(backfill.version, &backfill.id, OP)?;
        let (created, retried) = self
            .statement(
                OP,
                &self.inner.sql.create_backfill,
                &[
                    &backfill.id,
                    &backfill.status.as_str(),
                    &backfill.created_at,
                    &version,
                    &Json(backfill),
                ],
                false,
            )
            .await;
        let Err(e) = created else {
            return Ok(());
        };
        if !is_unique_violation(&e) {
            return Err(e);
        }
        // Tried again after a lost connection, the first try may have stored it.
        if retried && self.backfill(&backfill.id).await?.as_ref() == Some(backfill) {
            return Ok(());
        }
        Err(storage_error(
            OP,
            format!("backfill `{}` already exists", backfill.id),
        ))
    }

    async fn backfill(&self, id: &str) -> CoreResult<Option<BackfillRecord>> {
        const OP: &str = "read a backfill";
        self.query(OP, &self.inner.sql.backfill, &[&id])
            .await?
            .first()
            .map(|row| backfill_from_row(row).map_err(|e| storage_error(OP, e)))
            .transpose()
    }

    async fn backfills(
        &self,
        status: Option<&[BackfillStatus]>,
        limit: usize,
    ) -> CoreResult<Vec<BackfillRecord>> {
        const OP: &str = "list backfills";
        let statuses: Option<Vec<&str>> = status.map(|s| s.iter().map(|s| s.as_str()).collect());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.query(OP, &self.inner.sql.backfills, &[&statuses, &limit])
            .await?
            .iter()
            .map(|row| backfill_from_row(row).map_err(|e| storage_error(OP, e)))
            .collect()
    }

    async fn update_backfill(&self, backfill: &BackfillRecord) -> CoreResult<bool> {
        const OP: &str = "update a backfill";
        let next = backfill.version.checked_add(1).ok_or_else(|| {
            storage_error(
                OP,
                format!("backfill `{}` is at the last version", backfill.id),
            )
        })?;
        let stored = BackfillRecord {
            version: next,
            ..backfill.clone()
        };
        let expected = version_param(backfill.version, &backfill.id, OP)?;
        let next = version_param(next, &backfill.id, OP)?;
        let (outcome, retried) = self
            .statement(
                OP,
                &self.inner.sql.update_backfill,
                &[
                    &backfill.id,
                    &backfill.status.as_str(),
                    &backfill.created_at,
                    &next,
                    &Json(&stored),
                    &expected,
                ],
                true,
            )
            .await;
        let Outcome::Rows(rows) = outcome? else {
            unreachable!("asked for rows")
        };
        let row = rows
            .first()
            .ok_or_else(|| storage_error(OP, "the statement returned no row"))?;
        let changed: bool = row.try_get(0).map_err(|e| storage_error(OP, e))?;
        let exists: bool = row.try_get(1).map_err(|e| storage_error(OP, e))?;
        if !exists {
            return Err(storage_error(
                OP,
                format!("backfill `{}` does not exist", backfill.id),
            ));
        }
        if !changed && retried {
            // Tried again after a lost connection, the first try may have stored it.
            return Ok(self.backfill(&backfill.id).await?.as_ref() == Some(&stored));
        }
        Ok(changed)
    }
}

/// Ticks, column by column, for the statements that take them as arrays.
struct TickColumns<'a> {
    names: Vec<&'a str>,
    ticks: Vec<DateTime<Utc>>,
    kinds: Vec<&'static str>,
    statuses: Vec<&'static str>,
    run_ids: Vec<Json<&'a Vec<RunId>>>,
    reasons: Vec<Option<&'a str>>,
}

impl<'a> TickColumns<'a> {
    fn of(ticks: &'a [TickRecord]) -> Self {
        TickColumns {
            names: ticks.iter().map(|t| t.name.as_str()).collect(),
            ticks: ticks.iter().map(|t| t.tick).collect(),
            kinds: ticks.iter().map(|t| t.kind.as_str()).collect(),
            statuses: ticks.iter().map(|t| t.status.as_str()).collect(),
            run_ids: ticks.iter().map(|t| Json(&t.run_ids)).collect(),
            reasons: ticks.iter().map(|t| t.reason.as_deref()).collect(),
        }
    }

    fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 6] {
        [
            &self.names,
            &self.ticks,
            &self.kinds,
            &self.statuses,
            &self.run_ids,
            &self.reasons,
        ]
    }
}

/// One `append_events` batch, column by column: its events, and the materializations and
/// check records among them.
struct EventColumns<'a> {
    run_ids: Vec<&'a str>,
    seqs: Vec<i64>,
    timestamps: Vec<DateTime<Utc>>,
    assets: Vec<Option<&'a str>>,
    kinds: Vec<Json<&'a dagrs_core::EventKind>>,
    m: MaterializationColumns<'a>,
    c: CheckColumns<'a>,
}

impl<'a> EventColumns<'a> {
    fn of(events: &'a [Event], checks: &'a [CheckRecord]) -> std::result::Result<Self, BoxError> {
        let mut columns = EventColumns {
            run_ids: Vec::with_capacity(events.len()),
            seqs: Vec::with_capacity(events.len()),
            timestamps: Vec::with_capacity(events.len()),
            assets: Vec::with_capacity(events.len()),
            kinds: Vec::with_capacity(events.len()),
            m: MaterializationColumns::default(),
            c: CheckColumns::of(checks)?,
        };
        for event in events {
            let seq = seq_param(event)?;
            columns.run_ids.push(event.run_id.as_str());
            columns.seqs.push(seq);
            columns.timestamps.push(event.timestamp);
            columns.assets.push(event.asset.as_deref());
            columns.kinds.push(Json(&event.kind));
            if let Some(materialization) = event.materialization() {
                let m = &mut columns.m;
                m.assets.push(materialization.asset.as_str());
                m.run_ids.push(event.run_id.as_str());
                m.seqs.push(seq);
                m.timestamps.push(event.timestamp);
                m.metadata.push(Json(materialization.metadata));
                m.values.push(Json(materialization.value));
                m.code_versions.push(materialization.code_version);
                let partition = materialization.partition;
                m.partition_keys.push(partition.map(|p| p.key.as_str()));
                m.partition_dims.push(partition.map(|p| p.dims.as_str()));
                m.partition_starts.push(partition.map(|p| p.start));
                m.partition_ends.push(partition.map(|p| p.end));
            }
        }
        Ok(columns)
    }

    /// The parameters of the `append_events` statement.
    fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 26] {
        let (m, c) = (&self.m, &self.c);
        [
            &self.run_ids,
            &self.seqs,
            &self.timestamps,
            &self.assets,
            &self.kinds,
            &m.assets,
            &m.run_ids,
            &m.seqs,
            &m.timestamps,
            &m.metadata,
            &m.values,
            &m.code_versions,
            &m.partition_keys,
            &m.partition_dims,
            &m.partition_starts,
            &m.partition_ends,
            &c.assets,
            &c.checks,
            &c.run_ids,
            &c.seqs,
            &c.timestamps,
            &c.passed,
            &c.severities,
            &c.blocking,
            &c.descriptions,
            &c.metadata,
        ]
    }
}

/// The materializations of one `append_events` batch, column by column.
#[derive(Default)]
struct MaterializationColumns<'a> {
    assets: Vec<&'a str>,
    run_ids: Vec<&'a str>,
    seqs: Vec<i64>,
    timestamps: Vec<DateTime<Utc>>,
    metadata: Vec<Json<&'a Metadata>>,
    values: Vec<Json<&'a serde_json::Value>>,
    code_versions: Vec<Option<&'a str>>,
    partition_keys: Vec<Option<&'a str>>,
    partition_dims: Vec<Option<&'a str>>,
    partition_starts: Vec<Option<i64>>,
    partition_ends: Vec<Option<i64>>,
}

/// The check records of one `append_events` batch, column by column.
struct CheckColumns<'a> {
    assets: Vec<&'a str>,
    checks: Vec<&'a str>,
    run_ids: Vec<&'a str>,
    seqs: Vec<i64>,
    timestamps: Vec<DateTime<Utc>>,
    passed: Vec<bool>,
    severities: Vec<&'static str>,
    blocking: Vec<bool>,
    descriptions: Vec<Option<&'a str>>,
    metadata: Vec<Json<&'a Metadata>>,
}

impl<'a> CheckColumns<'a> {
    fn of(records: &'a [CheckRecord]) -> std::result::Result<Self, BoxError> {
        Ok(CheckColumns {
            assets: records.iter().map(|r| r.asset.as_str()).collect(),
            checks: records.iter().map(|r| r.check.as_str()).collect(),
            run_ids: records.iter().map(|r| r.run_id.as_str()).collect(),
            seqs: records
                .iter()
                .map(|r| {
                    i64::try_from(r.seq).map_err(|_| {
                        format!(
                            "event {} of run `{}` is beyond the largest seq PostgreSQL stores",
                            r.seq, r.run_id
                        )
                    })
                })
                .collect::<std::result::Result<_, _>>()?,
            timestamps: records.iter().map(|r| r.timestamp).collect(),
            passed: records.iter().map(|r| r.passed).collect(),
            severities: records.iter().map(|r| r.severity.as_str()).collect(),
            blocking: records.iter().map(|r| r.blocking).collect(),
            descriptions: records.iter().map(|r| r.description.as_deref()).collect(),
            metadata: records.iter().map(|r| Json(&r.metadata)).collect(),
        })
    }
}

/// The partition outcomes of a batch of events.
fn range_updates(events: &[Event]) -> Vec<RangeUpdate<'_>> {
    outcomes(events)
        .filter(|(_, range, _)| range.end > range.start)
        .map(|(asset, range, outcome)| RangeUpdate {
            asset,
            range,
            outcome,
        })
        .collect()
}

/// One partition outcome of an appended batch.
struct RangeUpdate<'a> {
    asset: &'a AssetKey,
    range: &'a PartitionRange,
    outcome: PartitionOutcome,
}

/// How long a statement is tried again while the server cannot be reached.
const RECONNECT_WITHIN: Duration = Duration::from_secs(30);

/// What a statement returned.
enum Outcome {
    Rows(Vec<Row>),
    Count(u64),
}

/// Why an attempt at a statement failed.
enum Failure {
    Pool(Error),
    Db(tokio_postgres::Error),
    /// Not the server's: something to write that it cannot take (never tried again).
    Invalid(BoxError),
}

impl Failure {
    /// Whether the server could not be reached or went away: worth trying again on a new
    /// connection, unlike an error of the statement itself.
    fn is_transient(&self) -> bool {
        match self {
            Failure::Pool(e) => matches!(e, Error::Connect { .. }),
            Failure::Invalid(_) => false,
            Failure::Db(e) => {
                e.is_closed()
                    || match e.code() {
                        None => e.as_db_error().is_none(),
                        Some(code) => {
                            code.code().starts_with("08")
                                || [
                                    SqlState::ADMIN_SHUTDOWN,
                                    SqlState::CRASH_SHUTDOWN,
                                    SqlState::CANNOT_CONNECT_NOW,
                                ]
                                .contains(code)
                        }
                    }
            }
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Pool(e) => e.fmt(f),
            Failure::Db(e) => f.write_str(&describe(e)),
            Failure::Invalid(e) => e.fmt(f),
        }
    }
}

/// Whether `error` is a unique violation reported by the server.
fn is_unique_violation(error: &dagrs_core::Error) -> bool {
    let mut source: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(cause) = source {
        if let Some(pg) = cause.downcast_ref::<tokio_postgres::Error>() {
            return pg.code() == Some(&SqlState::UNIQUE_VIOLATION);
        }
        source = cause.source();
    }
    false
}

/// A backfill version as PostgreSQL stores it (a `bigint`).
fn version_param(version: u64, id: &str, operation: &'static str) -> CoreResult<i64> {
    i64::try_from(version).map_err(|_| {
        storage_error(
            operation,
            format!(
                "backfill `{id}`: version {version} is beyond what PostgreSQL stores ({})",
                i64::MAX
            ),
        )
    })
}

fn storage_error(operation: &'static str, source: impl Into<BoxError>) -> dagrs_core::Error {
    dagrs_core::Error::Storage {
        operation,
        source: source.into(),
    }
}

/// An advisory lock key for `purpose` on `schema`: a stable 64-bit FNV-1a hash, the same in
/// every process and build.
fn lock_key(purpose: &str, schema: &Ident) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in ["dagrs-postgres", purpose, schema.as_str()]
        .join("\0")
        .bytes()
    {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_count_up_from_one_without_gaps() {
        for (i, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(migration.version as usize, i + 1, "{}", migration.name);
            assert!(!migration.sql.trim().is_empty());
        }
        assert_eq!(SCHEMA_VERSION as usize, MIGRATIONS.len());
    }

    #[test]
    fn the_status_check_allows_every_status() {
        let latest = MIGRATIONS
            .iter()
            .rev()
            .find(|m| m.sql.contains("runs_status_known"))
            .unwrap();
        for status in [
            RunStatus::Queued,
            RunStatus::Running,
            RunStatus::Canceling,
            RunStatus::Succeeded,
            RunStatus::Failed,
            RunStatus::Cancelled,
        ] {
            assert!(
                latest.sql.contains(&format!("'{status}'")),
                "the runs_status_known check allows {status}"
            );
        }
    }

    #[test]
    fn the_partition_and_backfill_checks_allow_every_status() {
        let sql = MIGRATIONS[3].sql;
        for status in [
            BackfillStatus::Requested,
            BackfillStatus::Canceling,
            BackfillStatus::Completed,
            BackfillStatus::Failed,
            BackfillStatus::Cancelled,
        ] {
            assert!(
                sql.contains(&format!("'{status}'")),
                "backfills allow {status}"
            );
        }
        for outcome in [PartitionOutcome::Materialized, PartitionOutcome::Failed] {
            assert!(
                sql.contains(&format!("'{outcome}'")),
                "ranges allow {outcome}"
            );
        }
    }

    #[test]
    fn the_check_record_check_allows_every_severity() {
        let sql = MIGRATIONS[5].sql;
        for severity in [
            dagrs_core::CheckSeverity::Warn,
            dagrs_core::CheckSeverity::Error,
        ] {
            assert!(
                sql.contains(&format!("'{}'", severity.as_str())),
                "check records allow {severity:?}"
            );
        }
    }

    /// The statements of check records, automation records and materialization positions
    /// read by index in order (no sort), as the server plans them once cached, on tables
    /// holding many rows.
    #[cfg(feature = "testing")]
    #[tokio::test]
    async fn check_automation_and_position_statements_read_by_index() {
        let db = crate::testing::TestDatabase::create().await;
        let storage = PgStorage::connect(db.pg.clone(), DEFAULT_SCHEMA)
            .await
            .unwrap();
        let client = db.client().await;
        client
            .batch_execute(
                "INSERT INTO dagrs.materializations (asset, run_id, seq, ts, metadata, value) \
                 SELECT 'a' || (m % 10), 'r', m, now() - m * interval '1 second', '{}', '1' \
                 FROM generate_series(0, 99999) AS m; \
                 INSERT INTO dagrs.check_records (asset, check_name, run_id, seq, ts, passed, \
                     severity, blocking, metadata) \
                 SELECT 'a' || (m % 100), 'c', 'r' || (m % 1000), m, now(), true, 'warn', \
                     false, '{}' \
                 FROM generate_series(0, 99999) AS m; \
                 INSERT INTO dagrs.automation_records (asset, evaluated_at, requested, reason, \
                     run_ids) \
                 SELECT 'a' || (m % 100), now() - m * interval '1 second', false, 'x', '[]' \
                 FROM generate_series(0, 99999) AS m; \
                 ANALYZE dagrs.materializations; ANALYZE dagrs.check_records; \
                 ANALYZE dagrs.automation_records; \
                 SET plan_cache_mode = force_generic_plan;",
            )
            .await
            .unwrap();
        let sql = &storage.inner.sql;
        for (name, statement, args) in [
            (
                "materializations_after",
                &sql.materializations_after,
                "'0', 0, 10",
            ),
            (
                "materialization_position",
                &sql.materialization_position,
                "",
            ),
            ("check_records", &sql.check_records, "'a1', 10"),
            ("automation_records", &sql.automation_records, "10"),
            (
                "automation_records_of",
                &sql.automation_records_of,
                "'a1', 10",
            ),
            (
                "delete_check_records",
                &sql.delete_check_records,
                "ARRAY['r1']",
            ),
        ] {
            client
                .batch_execute(&format!("PREPARE {name} AS {statement}"))
                .await
                .unwrap();
            let plan: Vec<String> = client
                .query(
                    &match args {
                        "" => format!("EXPLAIN EXECUTE {name}"),
                        _ => format!("EXPLAIN EXECUTE {name}({args})"),
                    },
                    &[],
                )
                .await
                .unwrap()
                .iter()
                .map(|row| row.get(0))
                .collect();
            let plan = plan.join("\n");
            assert!(!plan.contains("Seq Scan"), "{name} scans a table:\n{plan}");
            assert!(!plan.contains("Sort"), "{name} sorts:\n{plan}");
            assert!(plan.contains("Index"), "{name}:\n{plan}");
        }
    }

    #[test]
    fn lock_keys_differ_by_purpose_and_schema_and_are_stable() {
        let dagrs = Ident::new("dagrs").unwrap();
        let other = Ident::new("other").unwrap();
        assert_ne!(lock_key("migrate", &dagrs), lock_key("prune", &dagrs));
        assert_ne!(lock_key("migrate", &dagrs), lock_key("migrate", &other));
        assert_eq!(lock_key("migrate", &dagrs), lock_key("migrate", &dagrs));
    }

    /// The statements behind partition status and partition lookups seek by index, as the
    /// server plans them once cached (a generic plan), on tables holding many rows.
    #[cfg(feature = "testing")]
    #[tokio::test]
    async fn partition_statements_seek_by_index() {
        let db = crate::testing::TestDatabase::create().await;
        let storage = PgStorage::connect(db.pg.clone(), DEFAULT_SCHEMA)
            .await
            .unwrap();
        let client = db.client().await;
        client
            .batch_execute(
                "INSERT INTO dagrs.partition_ranges (asset, status, dims, start_at, end_at) \
                 SELECT 'a' || (m % 10), 'materialized', '', m * 120, m * 120 + 60 \
                 FROM generate_series(0, 99999) AS m; \
                 INSERT INTO dagrs.materializations (asset, run_id, seq, ts, metadata, value, \
                     partition_key, partition_dims, partition_start, partition_end) \
                 SELECT 'a' || (m % 10), 'r', m, now(), '{}', '1', 'k', '', m * 60, m * 60 + 60 \
                 FROM generate_series(0, 99999) AS m; \
                 ANALYZE dagrs.partition_ranges; ANALYZE dagrs.materializations; \
                 SET plan_cache_mode = force_generic_plan;",
            )
            .await
            .unwrap();
        let sql = &storage.inner.sql;
        for (name, statement, args) in [
            (
                "take_touching",
                &sql.take_touching,
                "'a1', 'materialized', '', 6000, 6600",
            ),
            (
                "take_overlapping",
                &sql.take_overlapping,
                "'a1', 'failed', '', 6000, 6600",
            ),
            ("partition_status", &sql.partition_status, "'a1'"),
            (
                "partition_materialization",
                &sql.partition_materialization,
                "'a1', '', 6000, 6060",
            ),
        ] {
            client
                .batch_execute(&format!("PREPARE {name} AS {statement}"))
                .await
                .unwrap();
            let plan: Vec<String> = client
                .query(&format!("EXPLAIN EXECUTE {name}({args})"), &[])
                .await
                .unwrap()
                .iter()
                .map(|row| row.get(0))
                .collect();
            let plan = plan.join("\n");
            assert!(!plan.contains("Seq Scan"), "{name} scans a table:\n{plan}");
            assert!(plan.contains("Index"), "{name}:\n{plan}");
            if name.starts_with("take_") {
                assert!(
                    plan.lines()
                        .any(|line| line.contains("Index Cond") && line.contains("start_at >=")),
                    "{name} seeks the range by its start:\n{plan}"
                );
            }
        }
    }

    #[test]
    fn statements_quote_the_schema() {
        let storage = PgStorage::new(
            PostgresResource::from_url("postgres://u:s3cret@h/d").unwrap(),
            r#"my "odd" schema"#,
        )
        .unwrap();
        assert!(storage
            .inner
            .sql
            .create_run
            .starts_with(r#"INSERT INTO "my ""odd"" schema".runs"#));
        let debug = format!("{storage:?}");
        assert!(
            debug.contains("***") && !debug.contains("s3cret"),
            "{debug}"
        );
        assert!(matches!(
            PgStorage::new(PostgresResource::from_url("postgres://h/d").unwrap(), ""),
            Err(Error::InvalidIdent { .. })
        ));
    }
}
