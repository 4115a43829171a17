//! PostgreSQL for dagrs: a pooled connection resource, bulk `COPY`-based
//! upserts, TimescaleDB helpers that fall back to plain PostgreSQL, and a run
//! store.
//!
//! - [`PostgresResource`]: a deadpool-postgres pool built from a URL,
//!   `DATABASE_URL` or a [`PostgresConfig`]; cheap to clone, injected into
//!   assets as `Res<PostgresResource>`; passwords are masked everywhere.
//! - [`Ident`], [`QualifiedName`], [`PgInterval`]: names and intervals from
//!   configuration are validated and quoted, never pasted into SQL.
//! - [`CopyRow`] and [`Upsert`]: binary `COPY` into a staging table and one
//!   `INSERT … ON CONFLICT` per chunk, all in one transaction; or straight
//!   `COPY` when the rows are known to be new, or replace a time window
//!   (`DELETE`, then `COPY`).
//! - [`enable_timescaledb`], [`create_hypertable`], [`compress_hypertable`],
//!   [`BucketAggregate`]: hypertables, continuous aggregates with refresh and
//!   compression policies on TimescaleDB (2.11 or newer), materialized views
//!   over `date_bin` without it; [`TimescaleStatus`] says why TimescaleDB is
//!   not used when it is not.
//! - [`PgStorage`]: the run store for shared deployments (runs, event logs,
//!   materializations, schedule ticks and cursors) in a schema of its own,
//!   with embedded, versioned migrations; it is also the step queue of scale-out
//!   workers ([`PgStorage::instance`]), and [`PgContext::pg_transaction`] lets an asset
//!   commit its data with its materialization.
//! - `testing::TestDatabase` (feature `testing`): a throwaway database per test.
//!
//! [`tokio_postgres`] and [`deadpool_postgres`] are re-exported, so the
//! versions always match.

mod aggregate;
mod copy;
mod error;
mod ident;
mod interval;
mod resource;
mod storage;
#[cfg(feature = "testing")]
pub mod testing;
mod timescale;
mod transaction;
mod upsert;

pub use aggregate::{
    list_aggregates, readings_table_sql, refresh_aggregate, AggregateInfo, AggregateKind,
    AggregateReport, BucketAggregate, TimescalePolicy,
};
pub use copy::{CopyRow, RowWriter};
pub use error::{Error, Result};
pub use ident::{Ident, QualifiedName};
pub use interval::PgInterval;
pub use resource::{PoolOptions, PostgresConfig, PostgresResource, DATABASE_URL};
pub use storage::{PgStorage, DEFAULT_OUTPUT_LIMIT, DEFAULT_SCHEMA, SCHEMA_VERSION};
pub use timescale::{
    compress_hypertable, create_hypertable, enable_timescaledb, timescaledb_available, Compression,
    TableKind, TimescaleStatus, TIMESCALEDB_MIN_VERSION,
};
pub use transaction::{PgContext, PgTransaction};
pub use upsert::{upsert, Upsert, UpsertStats, WriteMode, WritePath};

pub use deadpool_postgres;
pub use tokio_postgres;
