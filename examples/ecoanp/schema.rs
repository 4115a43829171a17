//! The EcoAnP tables: `influx_tag` (one row per sensor tag) and `influx_hist` (one row per
//! reading, keyed by `(ts, tag_name)`), created when missing. With TimescaleDB installed,
//! `influx_hist` becomes a hypertable; without it, it stays a plain table.

use dagrs_postgres::tokio_postgres::Client;
use dagrs_postgres::{create_hypertable, Ident, QualifiedName, TableKind};

/// The table of sensor tags.
pub const TAG_TABLE: &str = "influx_tag";
/// The table of readings.
pub const HIST_TABLE: &str = "influx_hist";

/// Creates both tables (and the hypertable, where TimescaleDB is available) if missing.
pub async fn ensure(client: &Client) -> anyhow::Result<TableKind> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS influx_tag (
                 key        text PRIMARY KEY,
                 tag_id     text NOT NULL,
                 tag_name   text NOT NULL,
                 tag_type   text NOT NULL,
                 unit       text NOT NULL,
                 meta       jsonb NOT NULL DEFAULT '{}',
                 created_at timestamptz NOT NULL DEFAULT now(),
                 updated_at timestamptz NOT NULL DEFAULT now()
             );
             CREATE TABLE IF NOT EXISTS influx_hist (
                 ts         timestamptz NOT NULL,
                 tag_name   text NOT NULL,
                 value      double precision NOT NULL,
                 qc         integer NOT NULL,
                 meta       jsonb,
                 updated_at timestamptz NOT NULL DEFAULT now(),
                 PRIMARY KEY (ts, tag_name)
             );",
        )
        .await?;
    let kind = create_hypertable(client, &hist_table(), &Ident::new("ts")?).await?;
    Ok(kind)
}

/// `influx_tag` as a name for the bulk writer.
pub fn tag_table() -> QualifiedName {
    QualifiedName::new(Ident::new(TAG_TABLE).expect("a valid name"))
}

/// `influx_hist` as a name for the bulk writer and the aggregates.
pub fn hist_table() -> QualifiedName {
    QualifiedName::new(Ident::new(HIST_TABLE).expect("a valid name"))
}
