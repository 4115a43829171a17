//! The seed's three assets: `influx_tags` → `influx_data` → `create_aggregates`.

use std::sync::Arc;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use dagrs_core::prelude::*;
use dagrs_postgres::{
    list_aggregates, BucketAggregate, CopyRow, PgInterval, PostgresResource, RowWriter, Upsert,
    WriteMode,
};
use serde::{Deserialize, Serialize};

use crate::influx::InfluxClient;
use crate::schema;
use crate::simulator::Simulator;
use crate::source::{Reading, TagSchema};

/// Where tag schemas and readings come from: the built-in simulator, or a real InfluxDB.
pub enum Source {
    /// Deterministic simulated sensors.
    Simulator(Simulator),
    /// An InfluxDB 1.x server (or 2.x/3.x in v1 compatibility), over HTTP.
    Influx(Arc<InfluxClient>),
}

impl Source {
    /// What the source is, for logs (passwords masked).
    pub fn describe(&self) -> String {
        match self {
            Source::Simulator(sim) => format!(
                "simulator ({} tags every {:?})",
                sim.tags().len(),
                sim.interval()
            ),
            Source::Influx(client) => {
                format!("InfluxDB {} database {}", client.url(), client.database())
            }
        }
    }

    async fn tag_schemas(&self) -> anyhow::Result<Vec<TagSchema>> {
        match self {
            Source::Simulator(sim) => Ok(sim.tags().to_vec()),
            Source::Influx(client) => {
                let client = Arc::clone(client);
                Ok(tokio::task::spawn_blocking(move || client.tag_schemas()).await??)
            }
        }
    }

    async fn readings(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> anyhow::Result<Vec<Reading>> {
        match self {
            Source::Simulator(sim) => Ok(sim.readings(start, end)),
            Source::Influx(client) => {
                let client = Arc::clone(client);
                Ok(tokio::task::spawn_blocking(move || client.readings(start, end)).await??)
            }
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Source::Simulator(_) => "simulator",
            Source::Influx(_) => "influxdb",
        }
    }
}

/// Config of [`influx_tags`] (the seed's `InfluxTagsConfig`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct InfluxTagsConfig {
    /// Tags written per chunk.
    pub batch_size: usize,
    /// How many times reading the schema from the source is tried before the asset fails.
    pub retry_count: u32,
}

impl Default for InfluxTagsConfig {
    fn default() -> Self {
        InfluxTagsConfig {
            batch_size: 100,
            retry_count: 3,
        }
    }
}

/// What [`influx_tags`] produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TagSummary {
    /// Tags that were new.
    pub tags_created: u64,
    /// Tags that existed and changed.
    pub tags_updated: u64,
    /// Tags in the table afterwards.
    pub total_tags: i64,
    /// The tag names read from the source.
    pub tag_names: Vec<String>,
}

struct TagRow<'a> {
    tag: &'a TagSchema,
    meta: serde_json::Value,
}

impl CopyRow for TagRow<'_> {
    const COLUMNS: &'static [&'static str] =
        &["key", "tag_id", "tag_name", "tag_type", "unit", "meta"];
    fn write_row(&self, row: &mut RowWriter<'_>) {
        row.push(&self.tag.name)
            .push(&self.tag.tag_id)
            .push(&self.tag.name)
            .push(&self.tag.data_type)
            .push(&self.tag.unit)
            .push(&self.meta);
    }
}

/// Creates and updates sensor tags in `influx_tag` from the source's schema.
#[asset(group = "ecoanp", tags(team = "data_engineering", domain = "influxdb"))]
pub async fn influx_tags(
    ctx: &AssetContext,
    config: Config<InfluxTagsConfig>,
    pg: Res<PostgresResource>,
    source: Res<Source>,
) -> Result<TagSummary> {
    ctx.log.info(format!(
        "reading tag schemas from the {} (batch size {})",
        source.describe(),
        config.batch_size
    ));
    let mut attempt = 1;
    let schemas = loop {
        match source.tag_schemas().await {
            Ok(schemas) => break schemas,
            Err(e) if attempt < config.retry_count.max(1) => {
                ctx.log
                    .warn(format!("reading the schema failed (try {attempt}): {e:#}"));
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                attempt += 1;
            }
            Err(e) => return Err(e.context("reading tag schemas from the source")),
        }
    };
    let mut client = pg.get().await?;
    schema::ensure(&client).await?;
    // Collected first: an iterator holding a closure would make the future not `Send`.
    let rows: Vec<TagRow<'_>> = schemas
        .iter()
        .map(|tag| TagRow {
            tag,
            meta: serde_json::json!({ "source": source.name(), "original_schema": tag }),
        })
        .collect();
    let stats = Upsert::new(schema::tag_table(), &["key"])?
        .chunk_size(config.batch_size.max(1))
        .execute(&mut client, rows)
        .await?;
    let total: i64 = client
        .query_one("SELECT count(*) FROM influx_tag", &[])
        .await?
        .get(0);
    ctx.log.info(format!(
        "tags: {} created, {} updated, {total} in all",
        stats.inserted, stats.updated
    ));
    ctx.add_metadata("rows", schemas.len());
    ctx.add_metadata("inserted", stats.inserted);
    ctx.add_metadata("updated", stats.updated);
    Ok(TagSummary {
        tags_created: stats.inserted,
        tags_updated: stats.updated,
        total_tags: total,
        tag_names: schemas.into_iter().map(|t| t.name).collect(),
    })
}

/// Config of [`influx_data`] (the seed's `InfluxDataConfig`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct InfluxDataConfig {
    /// Length of the window of readings collected, ending at the last full hour.
    pub time_window_hours: u32,
    /// Rows written per chunk.
    pub batch_size: usize,
    /// End of the window instead of the last full hour (RFC 3339), for backfills and tests.
    pub window_end: Option<DateTime<Utc>>,
}

impl Default for InfluxDataConfig {
    fn default() -> Self {
        InfluxDataConfig {
            time_window_hours: 1,
            batch_size: 1000,
            window_end: None,
        }
    }
}

/// What [`influx_data`] produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IngestSummary {
    /// Readings read from the source and written.
    pub records: u64,
    /// Rows that were new.
    pub inserted: u64,
    /// Rows that existed and changed.
    pub updated: u64,
    /// Start of the window (inclusive).
    pub window_start: DateTime<Utc>,
    /// End of the window (exclusive).
    pub window_end: DateTime<Utc>,
    /// Whether the rows went straight in with COPY (no stored row in the window).
    pub direct_copy: bool,
}

struct HistRow<'a> {
    reading: &'a Reading,
    meta: &'a serde_json::Value,
}

impl CopyRow for HistRow<'_> {
    const COLUMNS: &'static [&'static str] = &["ts", "tag_name", "value", "qc", "meta"];
    fn write_row(&self, row: &mut RowWriter<'_>) {
        row.push(self.reading.ts)
            .push(&self.reading.tag_name)
            .push(self.reading.value)
            .push(self.reading.qc)
            .push(self.meta);
    }
}

/// Collects readings for the configured window from the source into `influx_hist`.
#[asset(group = "ecoanp", retry = Retry::exponential(3, Duration::from_secs(60)),
        tags(team = "data_engineering", domain = "data_collection"))]
pub async fn influx_data(
    ctx: &AssetContext,
    config: Config<InfluxDataConfig>,
    tags: Input<influx_tags>,
    pg: Res<PostgresResource>,
    source: Res<Source>,
) -> Result<IngestSummary> {
    anyhow::ensure!(
        config.time_window_hours > 0,
        "time_window_hours must be at least 1"
    );
    let end = match config.window_end {
        Some(end) => end,
        None => Utc::now().duration_trunc(TimeDelta::hours(1))?,
    };
    let start = end - TimeDelta::hours(i64::from(config.time_window_hours));
    ctx.log.info(format!(
        "collecting readings of {} tags from {start} to {end}",
        tags.tag_names.len()
    ));
    let mut readings = source.readings(start, end).await?;
    readings.retain(|r| tags.tag_names.contains(&r.tag_name));

    let mut client = pg.get().await?;
    let stored: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM influx_hist WHERE ts >= $1 AND ts < $2)",
            &[&start, &end],
        )
        .await?
        .get(0);
    let mode = if stored {
        WriteMode::Upsert
    } else {
        WriteMode::Direct
    };
    let meta = serde_json::json!({ "source": source.name() });
    let rows: Vec<HistRow<'_>> = readings
        .iter()
        .map(|reading| HistRow {
            reading,
            meta: &meta,
        })
        .collect();
    let stats = Upsert::new(schema::hist_table(), &["ts", "tag_name"])?
        .chunk_size(config.batch_size.max(1))
        .mode(mode)
        .execute(&mut client, rows)
        .await?;
    ctx.log.info(format!(
        "{} readings written: {} new, {} updated",
        readings.len(),
        stats.inserted,
        stats.updated
    ));
    ctx.add_metadata("rows", readings.len());
    ctx.add_metadata("inserted", stats.inserted);
    ctx.add_metadata("updated", stats.updated);
    ctx.add_metadata("unchanged", stats.unchanged);
    Ok(IngestSummary {
        records: readings.len() as u64,
        inserted: stats.inserted,
        updated: stats.updated,
        window_start: start,
        window_end: end,
        direct_copy: !stored,
    })
}

/// Config of [`create_aggregates`] (the seed's `AggregatesConfig`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AggregatesConfig {
    /// Bucket sizes, e.g. "1 minute"; each gets a view named `<view_prefix><size>`.
    pub time_buckets: Vec<String>,
    /// Prefix of the views' names.
    pub view_prefix: String,
}

impl Default for AggregatesConfig {
    fn default() -> Self {
        AggregatesConfig {
            time_buckets: vec!["1 minute".into(), "5 minutes".into(), "1 hour".into()],
            view_prefix: "influx_agg_".into(),
        }
    }
}

/// What [`create_aggregates`] produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AggregatesSummary {
    /// Views created by this run.
    pub aggregates_created: usize,
    /// Every aggregate view with the prefix, afterwards.
    pub aggregate_list: Vec<String>,
    /// The bucket sizes.
    pub time_buckets: Vec<String>,
    /// Whether TimescaleDB continuous aggregates were used (else materialized views).
    pub continuous: bool,
}

/// Builds time-bucketed aggregates (avg/min/max/count per tag) of `influx_hist`:
/// TimescaleDB continuous aggregates, or materialized views refreshed here.
#[asset(
    group = "ecoanp",
    tags(team = "data_engineering", domain = "aggregation")
)]
pub async fn create_aggregates(
    ctx: &AssetContext,
    config: Config<AggregatesConfig>,
    data: Input<influx_data>,
    pg: Res<PostgresResource>,
) -> Result<AggregatesSummary> {
    // Every bucket and view name is checked before any SQL runs.
    let aggregates = config
        .time_buckets
        .iter()
        .map(|bucket| {
            let interval = PgInterval::parse(bucket)?;
            BucketAggregate::with_prefix(&config.view_prefix, schema::hist_table(), interval)
        })
        .collect::<Result<Vec<_>, _>>()?;
    ctx.log.info(format!(
        "aggregating {} new readings into {} views",
        data.records,
        aggregates.len()
    ));
    let client = pg.get().await?;
    let mut created = 0;
    let mut continuous = false;
    for aggregate in &aggregates {
        let report = aggregate.create(&client).await?;
        continuous |= report.kind == dagrs_postgres::AggregateKind::Continuous;
        if report.created {
            created += 1;
            ctx.log
                .info(format!("created {} ({:?})", report.view, report.kind));
        } else {
            aggregate.refresh(&client).await?;
            ctx.log.info(format!("refreshed {}", report.view));
        }
    }
    let list: Vec<String> = list_aggregates(&client, &config.view_prefix)
        .await?
        .into_iter()
        .map(|info| info.name)
        .collect();
    ctx.add_metadata("aggregates", list.len());
    ctx.add_metadata("created", created);
    Ok(AggregatesSummary {
        aggregates_created: created,
        aggregate_list: list,
        time_buckets: config.time_buckets.clone(),
        continuous,
    })
}
