//! Detecting TimescaleDB and turning tables into hypertables.

use tokio_postgres::Client;

use crate::error::{describe, query_error, Result};
use crate::ident::{Ident, QualifiedName};

/// What a table is after [`create_hypertable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    /// A TimescaleDB hypertable, partitioned by time.
    Hypertable,
    /// A plain PostgreSQL table: TimescaleDB is not installed in this database.
    Plain,
}

/// Whether the `timescaledb` extension is installed in the connected database.
pub async fn timescaledb_available(client: &Client) -> Result<bool> {
    client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')",
            &[],
        )
        .await
        .map(|row| row.get(0))
        .map_err(query_error("checking for the timescaledb extension"))
}

/// Installs TimescaleDB in the connected database when the server offers it,
/// and tells whether it is installed now.
///
/// Runs `CREATE EXTENSION IF NOT EXISTS timescaledb` only when
/// `pg_available_extensions` lists it. When the server does not offer it, or
/// cannot load it (it must be in `shared_preload_libraries`, and the user
/// needs the right to create extensions), this returns `false` and logs why
/// at `warn` level, so callers fall back to plain PostgreSQL.
pub async fn enable_timescaledb(client: &Client) -> Result<bool> {
    if timescaledb_available(client).await? {
        return Ok(true);
    }
    let offered: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')",
            &[],
        )
        .await
        .map(|row| row.get(0))
        .map_err(query_error(
            "looking for timescaledb in pg_available_extensions",
        ))?;
    if !offered {
        tracing::info!("TimescaleDB is not offered by this server; using plain PostgreSQL");
        return Ok(false);
    }
    match client
        .batch_execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        .await
    {
        Ok(()) => Ok(true),
        Err(err) => {
            tracing::warn!(
                reason = %describe(&err),
                "cannot create the timescaledb extension; using plain PostgreSQL"
            );
            Ok(false)
        }
    }
}

/// Turns `table` into a hypertable partitioned on `time_column` when
/// TimescaleDB is installed (existing rows are migrated; a table that already
/// is one is left alone), and leaves it a plain table otherwise, saying so in
/// the result and in an `info` log.
pub async fn create_hypertable(
    client: &Client,
    table: &QualifiedName,
    time_column: &Ident,
) -> Result<TableKind> {
    if !timescaledb_available(client).await? {
        tracing::info!(table = %table, "TimescaleDB is not installed; the table stays a plain table");
        return Ok(TableKind::Plain);
    }
    client
        .execute(
            "SELECT create_hypertable($1::text::regclass, $2::text::name, \
             if_not_exists => TRUE, migrate_data => TRUE)",
            &[&table.to_string(), &time_column.as_str()],
        )
        .await
        .map_err(query_error(format!("turning {table} into a hypertable")))?;
    Ok(TableKind::Hypertable)
}
