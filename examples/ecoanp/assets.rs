//! The seed's three assets, `influx_tags` → `influx_data` → `create_aggregates`, with the
//! seed's config (`InfluxTagsConfig`, `InfluxDataConfig`, `AggregatesConfig`) and defaults.

use std::num::NonZeroUsize;

use dagrs_core::partitions::TimeWindow;
use dagrs_core::prelude::*;
use dagrs_core::{observable_source_asset, DataVersion};
use dagrs_postgres::tokio_postgres::Client;
use dagrs_postgres::{
    compress_hypertable, list_aggregates, AggregateKind, BucketAggregate, Compression, CopyRow,
    Ident, PgInterval, PostgresResource, RowWriter, TimescalePolicy, Upsert, UpsertStats,
    WriteMode,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{schema, Reading, Source, TagSchema, Time};

/// Config of [`influx_tags()`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct InfluxTagsConfig {
    /// Tags written per chunk.
    pub batch_size: NonZeroUsize,
}

impl Default for InfluxTagsConfig {
    fn default() -> Self {
        InfluxTagsConfig {
            batch_size: NonZeroUsize::new(100).expect("not zero"),
        }
    }
}

/// What [`influx_tags()`] produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TagSummary {
    /// Tags that were new.
    pub tags_created: u64,
    /// Tags that existed and changed.
    pub tags_updated: u64,
    /// Tags in the table afterwards.
    pub total_tags: i64,
    /// The names of the tags read from the source.
    pub tag_names: Vec<String>,
}

struct TagRow<'a>(&'a TagSchema, Value);

impl CopyRow for TagRow<'_> {
    const COLUMNS: &'static [&'static str] =
        &["key", "tag_id", "tag_name", "tag_type", "unit", "meta"];
    fn write_row(&self, row: &mut RowWriter<'_>) {
        let TagRow(tag, meta) = self;
        row.push(&tag.name).push(&tag.tag_id).push(&tag.name);
        row.push(&tag.data_type).push(&tag.unit).push(meta);
    }
}

/// Creates and updates sensor tags in `influx_tag` from the source's schema; tried three
/// times (the seed's `retry_count`).
#[asset(group = "ecoanp", retry = Retry::linear(2, Duration::from_millis(200)),
        tags(team = "data_engineering", domain = "influxdb"))]
pub async fn influx_tags(
    ctx: &AssetContext,
    config: Config<InfluxTagsConfig>,
    pg: Res<PostgresResource>,
    source: Res<Source>,
) -> Result<TagSummary> {
    let schemas = source.tag_schemas().await?;
    // The first write of the pipeline creates what is missing (the database, the tables);
    // commands that only read never do.
    if pg.ensure_database().await? {
        ctx.log.info(format!("created database {}", pg.dbname()));
    }
    let mut client = pg.get().await?;
    schema::ensure(&client).await?.log(ctx);
    let meta = |tag| json!({ "source": source.name(), "original_schema": tag });
    let rows: Vec<_> = schemas.iter().map(|tag| TagRow(tag, meta(tag))).collect();
    let upsert = Upsert::new(schema::tag_table(), &["key"])?;
    let stats = write(
        ctx,
        upsert.chunk_size(config.batch_size.get()),
        &mut client,
        rows,
    )
    .await?;
    let count = client.query_one("SELECT count(*) FROM influx_tag", &[]);
    Ok(TagSummary {
        tags_created: stats.inserted,
        tags_updated: stats.updated,
        total_tags: count.await?.get(0),
        tag_names: schemas.into_iter().map(|t| t.name).collect(),
    })
}

/// Writes `rows`, logs what happened and adds it to the asset's metadata.
async fn write<R: CopyRow>(
    ctx: &AssetContext,
    upsert: Upsert,
    client: &mut Client,
    rows: Vec<R>,
) -> Result<UpsertStats> {
    let len = rows.len();
    let stats = upsert.execute(client, rows).await?;
    let (new, updated) = (stats.inserted, stats.updated);
    ctx.log
        .info(format!("{len} rows: {new} new, {updated} updated"));
    ctx.add_metadata("rows", len);
    ctx.add_metadata("inserted", new);
    ctx.add_metadata("updated", updated);
    ctx.add_metadata("unchanged", stats.unchanged);
    Ok(stats)
}

/// The InfluxDB measurements EcoAnP reads (or the simulator standing in for them): written by
/// the plant, only observed here. Its data version is the time of the newest point, so a new
/// point makes [`influx_data()`] stale.
#[observable_source_asset(group = "ecoanp", tags(domain = "influxdb"))]
pub async fn influx_readings(source: Res<Source>) -> Result<DataVersion> {
    let newest = source.newest_reading(chrono::Utc::now()).await?;
    let version = newest.map_or_else(|| "empty".to_owned(), |at| at.to_rfc3339());
    Ok(DataVersion::new(version))
}

/// Config of [`influx_data()`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct InfluxDataConfig {
    /// Rows written per chunk.
    pub batch_size: NonZeroUsize,
}

impl Default for InfluxDataConfig {
    fn default() -> Self {
        let batch_size = NonZeroUsize::new(1000).expect("not zero");
        InfluxDataConfig { batch_size }
    }
}

/// The most hours one run reads (31 days): the readings are held in memory.
pub const MAX_WINDOW_HOURS: i64 = 744;

/// What [`influx_data()`] produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IngestSummary {
    /// Readings read from the source and written.
    pub records: u64,
    /// Rows that were new.
    pub inserted: u64,
    /// Rows that existed and changed.
    pub updated: u64,
    /// Start of the window (inclusive).
    pub window_start: Time,
    /// End of the window (exclusive).
    pub window_end: Time,
    /// Whether the rows went straight in with COPY (nothing was stored in the window).
    pub direct_copy: bool,
}

struct HistRow<'a>(&'a Reading, &'a Value);

impl CopyRow for HistRow<'_> {
    const COLUMNS: &'static [&'static str] = &["ts", "tag_name", "value", "qc", "meta"];
    fn write_row(&self, row: &mut RowWriter<'_>) {
        let HistRow(reading, meta) = self;
        row.push(reading.ts).push(&reading.tag_name);
        row.push(reading.value).push(reading.qc).push(*meta);
    }
}

/// Collects the readings of its hours (one partition, or a range in one go) from the source
/// into `influx_hist`; running it again writes the same rows.
#[asset(group = "ecoanp", retry = Retry::exponential(3, Duration::from_secs(60)),
        tags(team = "data_engineering", domain = "data_collection"),
        partitions = crate::hours(), backfill = BackfillPolicy::MaxPartitionsPerRun(24),
        deps = [influx_readings])]
pub async fn influx_data(
    ctx: &AssetContext,
    config: Config<InfluxDataConfig>,
    window: Partition<TimeWindow>,
    tags: Input<influx_tags>,
    pg: Res<PostgresResource>,
    source: Res<Source>,
) -> Result<IngestSummary> {
    let TimeWindow { start, end } = *window;
    let hours = (end - start).num_hours();
    anyhow::ensure!(
        hours <= MAX_WINDOW_HOURS,
        "{hours} hours is more than one run reads ({MAX_WINDOW_HOURS}); backfill the range \
         instead: `backfill launch` cuts it into runs of 24 hours"
    );
    ctx.log.info(format!("reading {start} to {end}"));
    let mut readings = source.readings(start, end).await?;
    let read = readings.len();
    readings.retain(|r| tags.tag_names.contains(&r.tag_name));
    // Plain `tracing`, as any library logs: the capture layer puts it in the step's events.
    tracing::debug!(
        read,
        kept = readings.len(),
        "readings filtered by known tags"
    );

    let mut client = pg.get().await?;
    let sql = "SELECT EXISTS (SELECT 1 FROM influx_hist WHERE ts >= $1 AND ts < $2)";
    let stored: bool = client.query_one(sql, &[&start, &end]).await?.get(0);
    let mut upsert = Upsert::new(schema::hist_table(), &["ts", "tag_name"])?;
    if !stored {
        upsert = upsert.mode(WriteMode::Direct); // no row to update: plain COPY
    }
    let meta = json!({ "source": source.name() });
    let rows = readings.iter().map(|r| HistRow(r, &meta)).collect();
    let upsert = upsert.chunk_size(config.batch_size.get());
    let stats = match write(ctx, upsert.clone(), &mut client, rows).await {
        // Another run wrote the same window first: merge into what it wrote instead.
        Err(e)
            if matches!(
                e.downcast_ref(),
                Some(dagrs_postgres::Error::Conflict { .. })
            ) =>
        {
            ctx.log
                .info("the window was written meanwhile: merging into it");
            let rows = readings.iter().map(|r| HistRow(r, &meta)).collect();
            write(ctx, upsert.mode(WriteMode::Upsert), &mut client, rows).await?
        }
        other => other?,
    };
    Ok(IngestSummary {
        records: readings.len() as u64,
        inserted: stats.inserted,
        updated: stats.updated,
        window_start: start,
        window_end: end,
        direct_copy: !stored,
    })
}

/// Config of [`create_aggregates()`]; bucket sizes, the prefix and the policies are checked when
/// it is read. The policies apply where TimescaleDB is used; changing them changes the policies
/// of existing aggregates on the next run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AggregatesConfig {
    /// Bucket sizes, e.g. `"5 minutes"`; each gets a view `<view_prefix><size>`.
    pub time_buckets: Vec<PgInterval>,
    /// Prefix of the views' names, `[a-z_][a-z0-9_]*`.
    pub view_prefix: Ident,
    /// The refresh policy of the continuous aggregates.
    #[serde(deserialize_with = "refresh_window")]
    pub refresh: RefreshConfig,
    /// Compression of old chunks of `influx_hist` and of the aggregates; `null` for none
    /// (then policies set by earlier runs are removed).
    pub compression: Option<CompressionConfig>,
}

/// `refresh` in [`AggregatesConfig`]: every `schedule_interval`, TimescaleDB refreshes the
/// buckets from `start_offset` to `end_offset` ago. The seed's: every 5 minutes, from 1 hour to
/// 1 minute ago. A window shorter than two buckets is widened for that bucket size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RefreshConfig {
    /// Start of the window, before now; longer ago than `end_offset`.
    pub start_offset: PgInterval,
    /// End of the window, before now.
    pub end_offset: PgInterval,
    /// How often the refresh runs.
    pub schedule_interval: PgInterval,
}

impl Default for RefreshConfig {
    fn default() -> Self {
        let seed = TimescalePolicy::default();
        RefreshConfig {
            start_offset: seed.refresh_start_offset,
            end_offset: seed.refresh_end_offset,
            schedule_interval: seed.refresh_schedule,
        }
    }
}

/// `compression` in [`AggregatesConfig`]: chunks older than `after` are compressed, rows of
/// one `segment_by` value stored together. The seed's: after 7 days, by `tag_name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CompressionConfig {
    /// Compress chunks older than this.
    pub after: PgInterval,
    /// `[tag_name]` or `[]`: the only column both `influx_hist` and the aggregates have
    /// besides time and values.
    #[serde(deserialize_with = "segment_columns")]
    pub segment_by: Vec<Ident>,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        CompressionConfig {
            after: PgInterval::parse("7 days").expect("a valid interval"),
            segment_by: vec![Ident::plain("tag_name").expect("a plain name")],
        }
    }
}

impl Default for AggregatesConfig {
    fn default() -> Self {
        let bucket = |text| PgInterval::parse(text).expect("a valid interval");
        AggregatesConfig {
            time_buckets: vec![bucket("1 minute"), bucket("5 minutes"), bucket("1 hour")],
            view_prefix: Ident::plain("influx_agg_").expect("a plain name"),
            refresh: RefreshConfig::default(),
            compression: Some(CompressionConfig::default()),
        }
    }
}

impl AggregatesConfig {
    /// The policies of the aggregates, as dagrs-postgres takes them.
    pub fn policy(&self) -> TimescalePolicy {
        let RefreshConfig {
            start_offset,
            end_offset,
            schedule_interval,
        } = self.refresh;
        TimescalePolicy {
            refresh_start_offset: start_offset,
            refresh_end_offset: end_offset,
            refresh_schedule: schedule_interval,
            compression: self
                .compression
                .as_ref()
                .map(|c| Compression::after(c.after).segment_by(c.segment_by.iter().cloned())),
        }
    }
}

/// Reads `refresh`, refusing a window that ends before it starts.
fn refresh_window<'de, D: serde::Deserializer<'de>>(d: D) -> Result<RefreshConfig, D::Error> {
    let refresh = RefreshConfig::deserialize(d)?;
    if refresh.start_offset <= refresh.end_offset {
        let (start, end) = (refresh.start_offset, refresh.end_offset);
        let reason = format!(
            "start_offset ({start}) must be longer ago than end_offset ({end}): the refresh \
             window runs from start_offset to end_offset before now"
        );
        return Err(serde::de::Error::custom(reason));
    }
    Ok(refresh)
}

/// Reads `segment_by`: `tag_name` at most once, or nothing.
fn segment_columns<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Ident>, D::Error> {
    let columns = Vec::<Ident>::deserialize(d)?;
    if let Some(other) = columns.iter().find(|c| c.as_str() != "tag_name") {
        let reason = format!(
            "cannot segment by {other}: influx_hist and the aggregates share only tag_name \
             besides time and values; use [tag_name] or []"
        );
        return Err(serde::de::Error::custom(reason));
    }
    if columns.len() > 1 {
        return Err(serde::de::Error::custom(
            "tag_name is listed more than once",
        ));
    }
    Ok(columns)
}

/// What [`create_aggregates()`] produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AggregatesSummary {
    /// Views created by this run.
    pub aggregates_created: usize,
    /// Every aggregate view with the prefix, afterwards.
    pub aggregate_list: Vec<String>,
    /// The bucket sizes.
    pub time_buckets: Vec<PgInterval>,
    /// Whether they are TimescaleDB continuous aggregates (else materialized views).
    pub continuous: bool,
}

/// Builds avg/min/max/count per tag and time bucket of `influx_hist`: TimescaleDB continuous
/// aggregates with refresh and compression policies (and compression of `influx_hist`), or
/// materialized views refreshed here; partitioned like [`influx_data()`]. With the daemon
/// running, it follows `influx_data`: each hour written there is aggregated (`eager`).
#[asset(
    group = "ecoanp",
    tags(team = "data_engineering", domain = "aggregation"),
    partitions = crate::hours(),
    backfill = BackfillPolicy::MaxPartitionsPerRun(24),
    automation = eager()
)]
pub async fn create_aggregates(
    ctx: &AssetContext,
    config: Config<AggregatesConfig>,
    data: Input<influx_data>,
    pg: Res<PostgresResource>,
) -> Result<AggregatesSummary> {
    let prefix = config.view_prefix.as_str();
    let policy = config.policy();
    let aggregate = |&bucket| BucketAggregate::with_prefix(prefix, schema::hist_table(), bucket);
    let aggregates = config.time_buckets.iter().map(aggregate);
    let aggregates = aggregates.collect::<Result<Vec<_>, _>>()?;
    let collected = data.records;
    ctx.log.info(format!("{collected} readings collected"));
    let client = pg.get().await?;
    let compression = policy.compression.as_ref();
    let mut changes = compress_hypertable(&client, &schema::hist_table(), compression).await?;
    let (mut created, mut continuous) = (0, false);
    for aggregate in aggregates {
        let aggregate = aggregate.policy(policy.clone());
        let report = aggregate.create(&client).await?;
        continuous |= report.kind == AggregateKind::Continuous;
        changes.extend(report.changes);
        if report.created {
            created += 1;
        } else {
            // Only the buckets influx_data wrote (the whole view when it is a materialized one).
            let (start, end) = (data.window_start, data.window_end);
            aggregate.refresh_window(&client, start, end).await?;
            ctx.log
                .info(format!("refreshed {} for {start} to {end}", report.view));
        }
    }
    for change in &changes {
        ctx.log.info(change);
    }
    ctx.add_metadata("changes", changes.len());
    let list = list_aggregates(&client, prefix).await?;
    let aggregate_list: Vec<String> = list.into_iter().map(|info| info.name).collect();
    ctx.add_metadata("aggregates", aggregate_list.len());
    ctx.add_metadata("created", created);
    Ok(AggregatesSummary {
        aggregates_created: created,
        aggregate_list,
        time_buckets: config.time_buckets.clone(),
        continuous,
    })
}
