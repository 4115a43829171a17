//! The EcoAnP tables, created when missing: `influx_tag`, one row per sensor tag, and
//! `influx_hist`, one row per reading, keyed by `(ts, tag_name)`: a hypertable where the
//! server offers TimescaleDB (the extension is created when missing), a plain table otherwise.

use dagrs_core::prelude::AssetContext;
use dagrs_postgres::readings_table_sql;
use dagrs_postgres::tokio_postgres::Client;
use dagrs_postgres::{
    create_hypertable, enable_timescaledb, Ident, QualifiedName, TableKind, TimescaleStatus,
};

/// `CREATE TABLE IF NOT EXISTS influx_tag`, as [`ensure`] runs it.
pub const TAG_TABLE: &str = "CREATE TABLE IF NOT EXISTS influx_tag (
    key text PRIMARY KEY, tag_id text NOT NULL, tag_name text NOT NULL, tag_type text NOT NULL,
    unit text NOT NULL, meta jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now())";

/// What [`ensure`] found and made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schema {
    /// TimescaleDB in use, or why not (then everything is plain PostgreSQL).
    pub timescale: TimescaleStatus,
    /// What `influx_hist` is.
    pub hist: TableKind,
}

impl Schema {
    /// Logs why TimescaleDB is not used, as a warning when the server offers it but it cannot
    /// be used (not preloaded, not permitted, too old).
    pub fn log(&self, ctx: &AssetContext) {
        match &self.timescale {
            TimescaleStatus::Enabled { .. } => ctx
                .log
                .info(format!("{}; influx_hist is a hypertable", self.timescale)),
            TimescaleStatus::NotOffered => ctx.log.info(self.timescale.to_string()),
            other => ctx.log.warn(other.to_string()),
        }
    }
}

/// Creates both tables if missing, and TimescaleDB with `influx_hist` as a hypertable where the
/// server offers it. Where it cannot be used (not installed on the server, not in
/// `shared_preload_libraries`, no right to create extensions, older than dagrs needs),
/// everything stays plain PostgreSQL, and [`Schema::timescale`] says why; a database that
/// already has a TimescaleDB too old for dagrs is an error, before anything is created.
pub async fn ensure(client: &Client) -> anyhow::Result<Schema> {
    let timescale = enable_timescaledb(client).await?;
    client.batch_execute(TAG_TABLE).await?;
    let hist = readings_table_sql(&hist_table());
    client.batch_execute(&hist).await?;
    let hist = create_hypertable(client, &hist_table(), &Ident::new("ts")?).await?;
    Ok(Schema { timescale, hist })
}

/// `influx_tag`, the table of sensor tags.
pub fn tag_table() -> QualifiedName {
    QualifiedName::new(Ident::new("influx_tag").expect("a valid name"))
}

/// `influx_hist`, the table of readings.
pub fn hist_table() -> QualifiedName {
    QualifiedName::new(Ident::new("influx_hist").expect("a valid name"))
}
