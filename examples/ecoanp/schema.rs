//! The EcoAnP tables, created when missing: `influx_tag`, one row per sensor tag, and
//! `influx_hist`, one row per reading, keyed by `(ts, tag_name)` (a hypertable where
//! TimescaleDB is installed).

use dagrs_postgres::readings_table_sql;
use dagrs_postgres::tokio_postgres::Client;
use dagrs_postgres::{create_hypertable, Ident, QualifiedName, TableKind};

const TAG_TABLE: &str = "CREATE TABLE IF NOT EXISTS influx_tag (
    key text PRIMARY KEY, tag_id text NOT NULL, tag_name text NOT NULL, tag_type text NOT NULL,
    unit text NOT NULL, meta jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now())";

/// Creates both tables if missing, `influx_hist` as a hypertable where TimescaleDB is there.
pub async fn ensure(client: &Client) -> anyhow::Result<TableKind> {
    client.batch_execute(TAG_TABLE).await?;
    let hist = readings_table_sql(&hist_table());
    client.batch_execute(&hist).await?;
    Ok(create_hypertable(client, &hist_table(), &Ident::new("ts")?).await?)
}

/// `influx_tag`, the table of sensor tags.
pub fn tag_table() -> QualifiedName {
    QualifiedName::new(Ident::new("influx_tag").expect("a valid name"))
}

/// `influx_hist`, the table of readings.
pub fn hist_table() -> QualifiedName {
    QualifiedName::new(Ident::new("influx_hist").expect("a valid name"))
}
