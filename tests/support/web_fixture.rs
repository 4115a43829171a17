//! Definitions for the web UI's tests, benchmark and screenshots: a small sensor pipeline
//! in three groups, with config, metadata, a log line that looks like a script, a job, two
//! schedules and a sensor; and large generated graphs for the benchmark.

#![allow(dead_code)]

use dagrs_core::prelude::*;
use dagrs_core::{AssetJob, AssetSpec, RunStatus, Schedule, Sensor, SensorResult};
use serde::{Deserialize, Serialize};

/// The log line every run of `sensor_readings` writes: it must show as text.
pub const SCRIPT_LINE: &str = "<script>alert(1)</script>";

/// Config of [`sensor_readings`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReadingsConfig {
    /// Hours of readings.
    pub hours: u32,
    /// How long the asset takes, in milliseconds (to watch a run live).
    pub delay_ms: u64,
    /// Fails, as a sensor that does not answer (to show a failed run).
    pub fail: bool,
}

impl Default for ReadingsConfig {
    fn default() -> Self {
        ReadingsConfig {
            hours: 1,
            delay_ms: 0,
            fail: false,
        }
    }
}

/// Tag schemas of the nine sensors.
#[asset(
    group = "ingest",
    tags(team = "data", domain = "influxdb"),
    code_version = "2"
)]
async fn sensor_tags(ctx: &AssetContext) -> Result<Vec<String>> {
    let tags: Vec<String> = (100..109).map(|i| format!("D{i}")).collect();
    ctx.log.info(format!("{} tags", tags.len()));
    ctx.add_metadata("tags", tags.len());
    Ok(tags)
}

/// Readings of every sensor for the configured window.
#[asset(group = "ingest", tags(team = "data", domain = "influxdb"))]
async fn sensor_readings(
    ctx: &AssetContext,
    config: Config<ReadingsConfig>,
    tags: Input<sensor_tags>,
) -> Result<u64> {
    ctx.log.info(SCRIPT_LINE);
    ctx.log.debug(format!("reading {} hours", config.hours));
    tokio::time::sleep(Duration::from_millis(config.delay_ms)).await;
    if config.fail {
        ctx.log.error("sensor D104 did not answer");
        anyhow::bail!("reading D104: connection reset by peer");
    }
    let rows = tags.len() as u64 * 360 * u64::from(config.hours) + fastrand::u64(0..40);
    ctx.add_metadata("rows", rows);
    ctx.add_metadata("source", "simulator");
    Ok(rows)
}

/// One-minute averages.
#[asset(group = "transform", tags(team = "analytics"))]
async fn minute_averages(ctx: &AssetContext, readings: Input<sensor_readings>) -> Result<u64> {
    ctx.log.info("bucketing by minute");
    let rows = *readings / 10;
    ctx.add_metadata("rows", rows);
    Ok(rows)
}

/// Five-minute averages.
#[asset(group = "transform", tags(team = "analytics"))]
async fn five_minute_averages(ctx: &AssetContext, minutes: Input<minute_averages>) -> Result<u64> {
    let rows = *minutes / 5;
    ctx.add_metadata("rows", rows);
    Ok(rows)
}

/// Hourly averages.
#[asset(group = "transform", tags(team = "analytics"))]
async fn hourly_averages(ctx: &AssetContext, minutes: Input<minute_averages>) -> Result<u64> {
    ctx.log.warn("two sensors reported gaps");
    let rows = *minutes / 60;
    ctx.add_metadata("rows", rows);
    Ok(rows)
}

/// The daily report.
#[asset(group = "reports", deps = [hourly_averages, five_minute_averages], tags(team = "analytics"))]
async fn daily_report(ctx: &AssetContext) -> Result<String> {
    ctx.add_metadata("pages", 3);
    Ok("report".into())
}

/// Sensor health flags.
#[asset(group = "reports", deps = [sensor_readings])]
async fn sensor_health(ctx: &AssetContext) -> Result<u32> {
    ctx.add_metadata("healthy", 9);
    Ok(9)
}

/// The pipeline's definitions.
pub fn definitions() -> Definitions {
    Definitions::builder()
        .specs(assets![
            sensor_tags,
            sensor_readings,
            minute_averages,
            five_minute_averages,
            hourly_averages,
            daily_report,
            sensor_health
        ])
        .job(AssetJob::new("sensors_pipeline", "*").description("the whole pipeline"))
        .schedule(
            Schedule::new("sensors_hourly", "sensors_pipeline", "0 * * * *")
                .description("every hour")
                .running(),
        )
        .schedule(
            Schedule::new("sensors_nightly", "sensors_pipeline", "0 2 * * *")
                .timezone("Asia/Seoul")
                .description("02:00 in Seoul"),
        )
        .sensor(
            Sensor::on_run_status("failure_alert", RunStatus::Failed, |_ctx| async move {
                Ok(SensorResult::skip("alerted"))
            })
            .description("says so when a run fails"),
        )
        .build()
        .expect("the fixture's definitions are valid")
}

/// `n` generated assets in layers of `width`, each depending on up to two assets of the
/// layer before, in groups of 500: the benchmark's large graph.
pub fn large_definitions(n: usize, width: usize) -> Definitions {
    let specs = (0..n).map(|i| {
        let mut spec = AssetSpec::new(format!("asset_{i:05}"), |_| async { Ok(()) })
            .group(format!("group_{:02}", i / 500))
            .tag("tier", ["bronze", "silver", "gold"][i % 3])
            .description(format!("generated asset {i}"));
        if i >= width {
            let layer_start = (i / width - 1) * width;
            spec = spec.dep(format!("asset_{:05}", layer_start + i % width));
            spec = spec.dep(format!("asset_{:05}", layer_start + (i * 7 + 3) % width));
        }
        spec
    });
    Definitions::builder()
        .specs(specs)
        .build()
        .expect("generated definitions are valid")
}

/// The first day of [`partitioned_definitions`]' partitions: two days before today (UTC),
/// so two whole days of hourly partitions exist, and today's hours so far.
pub fn partitions_start() -> chrono::NaiveDate {
    (chrono::Utc::now() - chrono::Duration::days(2)).date_naive()
}

/// The hourly key of `hour` o'clock on the `day`-th day (0, 1 or 2) of
/// [`partitions_start`]: `2026-11-28-05:00`.
pub fn hour_key(day: u64, hour: u32) -> String {
    let date = partitions_start() + chrono::Days::new(day);
    format!("{}-{hour:02}:00", date.format("%Y-%m-%d"))
}

/// Partitioned assets for the pages of partitions and backfills, with one unpartitioned
/// asset: `hourly_sensor` (hourly, from [`partitions_start`]; a partition at 05:00 fails,
/// one at 07:00 waits while `hold` is set), and `region_daily` (daily by region, one of the
/// regions a key that looks like markup).
pub fn partitioned_definitions(hold: std::sync::Arc<std::sync::atomic::AtomicBool>) -> Definitions {
    use dagrs_core::partitions::{daily, hourly, multi, static_keys};
    let start = partitions_start();
    let hourly_sensor = AssetSpec::new("hourly_sensor", move |scope| {
        let hold = hold.clone();
        async move {
            let key = scope
                .context()
                .partition_key()
                .unwrap_or_default()
                .to_owned();
            if key.ends_with("-05:00") {
                anyhow::bail!("sensor offline at {key}");
            }
            if key.ends_with("-07:00") {
                while hold.load(std::sync::atomic::Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            Ok(key)
        }
    })
    .group("partitioned")
    .description("hourly readings of one sensor")
    .partitions(hourly(&format!("{}T00:00Z", start.format("%Y-%m-%d"))));
    let region_daily = AssetSpec::new("region_daily", |_| async { Ok(1u32) })
        .group("partitioned")
        .partitions(multi([
            ("region", static_keys(["eu", "us", "<i>ap</i>"])),
            ("day", daily(&start.format("%Y-%m-%d").to_string()).into()),
        ]));
    Definitions::builder()
        .specs(assets![sensor_tags])
        .specs([hourly_sensor, region_daily])
        .build()
        .expect("the partitioned fixture's definitions are valid")
}
