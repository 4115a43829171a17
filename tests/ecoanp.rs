//! The EcoAnP pipeline on real PostgreSQL (and, for its source, the real InfluxDB): each asset
//! unit-tested with `build_asset_context`, the aggregates checked against sums computed here,
//! bad config rejected before anything runs, and the whole pipeline run twice.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use dagrs_core::prelude::*;
use dagrs_core::{AssetContextBuilder, BackfillRequest, BackfillStatus, RunOptions};
use dagrs_postgres::testing::TestDatabase;
use ecoanp::assets::{AggregatesSummary, IngestSummary, TagSummary};
use ecoanp::{create_aggregates, influx_data, influx_tags, Influx, Simulator, Source};
use serde_json::json;

fn window_end() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
}

/// The hour ending at [`window_end`].
const HOUR: &str = "2026-03-01-11:00";

fn hour() -> RunOptions {
    RunOptions::new().partition(HOUR)
}

/// Runs `selection` of `defs` for [`HOUR`] on `instance`.
async fn run(instance: &Instance, defs: &Definitions, selection: &str) -> dagrs_core::RunResult {
    instance
        .launch(defs, selection, hour())
        .await
        .unwrap()
        .wait()
        .await
        .unwrap()
}

fn sim() -> Simulator {
    Simulator::default()
}

fn context(db: &TestDatabase) -> AssetContextBuilder {
    build_asset_context()
        .resource(db.pg.clone())
        .resource(Source::Simulator(sim()))
}

async fn tags(db: &TestDatabase) -> TagSummary {
    context(db).invoke::<influx_tags>().await.unwrap()
}

async fn data(db: &TestDatabase, tags: TagSummary) -> IngestSummary {
    context(db)
        .input::<influx_tags>(tags)
        .partition(ecoanp::hours(), HOUR)
        .config(json!({ "batch_size": 500 }))
        .invoke::<influx_data>()
        .await
        .unwrap()
}

#[tokio::test]
async fn influx_tags_creates_then_updates_nothing() {
    let db = TestDatabase::create().await;
    let first = tags(&db).await;
    assert_eq!((first.tags_created, first.total_tags), (9, 9));
    assert_eq!(first.tag_names.first().map(String::as_str), Some("D100"));
    let second = tags(&db).await;
    assert_eq!(
        (second.tags_created, second.tags_updated, second.total_tags),
        (0, 0, 9)
    );

    let client = db.pg.get().await.unwrap();
    let row = client
        .query_one(
            "SELECT tag_id, tag_type, unit, meta->>'source' FROM influx_tag WHERE key = 'D104'",
            &[],
        )
        .await
        .unwrap();
    let (id, kind, unit, source): (String, String, String, String) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(
        (id.as_str(), kind.as_str(), unit.as_str(), source.as_str()),
        ("5", "float", "V", "simulator")
    );
}

#[tokio::test]
async fn influx_data_copies_a_new_window_then_upserts_idempotently() {
    let db = TestDatabase::create().await;
    let tags = tags(&db).await;
    let first = data(&db, tags.clone()).await;
    assert_eq!(first.records, 9 * 360, "9 tags every 10 s for an hour");
    assert_eq!((first.inserted, first.updated), (3240, 0));
    assert!(first.direct_copy, "a new window goes straight in with COPY");
    assert_eq!(
        first.window_start,
        window_end() - chrono::Duration::hours(1)
    );

    let again = data(&db, tags).await;
    assert_eq!(again.records, 3240);
    assert_eq!((again.inserted, again.updated), (0, 0));
    assert!(!again.direct_copy);

    let client = db.pg.get().await.unwrap();
    let count: i64 = client
        .query_one("SELECT count(*) FROM influx_hist", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 3240);
    let expected = sim().readings(first.window_start, first.window_end);
    let probe = &expected[1234];
    let stored: f64 = client
        .query_one(
            "SELECT value FROM influx_hist WHERE ts = $1 AND tag_name = $2",
            &[&probe.ts, &probe.tag_name],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, probe.value);
}

#[tokio::test]
async fn aggregates_match_sums_computed_independently() {
    let db = TestDatabase::create().await;
    let ingest = data(&db, tags(&db).await).await;
    let summary: AggregatesSummary = context(&db)
        .input::<influx_data>(ingest.clone())
        .invoke::<create_aggregates>()
        .await
        .unwrap();
    assert!(!summary.continuous, "TimescaleDB is not installed here");
    assert_eq!(summary.aggregates_created, 3);
    assert_eq!(
        summary.aggregate_list,
        [
            "influx_agg_1_hour",
            "influx_agg_1_minute",
            "influx_agg_5_minutes"
        ]
    );

    let readings = sim().readings(ingest.window_start, ingest.window_end);
    let client = db.pg.get().await.unwrap();
    for (view, seconds) in [
        ("influx_agg_1_minute", 60),
        ("influx_agg_5_minutes", 300),
        ("influx_agg_1_hour", 3600),
    ] {
        let mut expected: BTreeMap<(i64, String), (f64, f64, f64, i64)> = BTreeMap::new();
        for r in &readings {
            let bucket = r.ts.timestamp().div_euclid(seconds) * seconds;
            let e = expected.entry((bucket, r.tag_name.clone())).or_insert((
                0.0,
                f64::INFINITY,
                f64::NEG_INFINITY,
                0,
            ));
            e.0 += r.value;
            e.1 = e.1.min(r.value);
            e.2 = e.2.max(r.value);
            e.3 += 1;
        }
        let rows = client
            .query(
                &format!(
                    "SELECT extract(epoch FROM bucket)::bigint, tag_name, avg_value, min_value, \
                     max_value, record_count FROM {view}"
                ),
                &[],
            )
            .await
            .unwrap();
        assert_eq!(
            rows.len(),
            expected.len(),
            "{view}: one row per bucket and tag"
        );
        for row in rows {
            let key = (row.get::<_, i64>(0), row.get::<_, String>(1));
            let (sum, min, max, count) = expected[&key];
            let (avg, lo, hi, n): (f64, f64, f64, i64) =
                (row.get(2), row.get(3), row.get(4), row.get(5));
            assert!(
                (avg - sum / count as f64).abs() < 1e-9,
                "{view} {key:?} avg"
            );
            assert_eq!((lo, hi, n), (min, max, count), "{view} {key:?}");
        }
    }

    // A second run refreshes the views and picks up new rows.
    let earlier = ingest.window_start - chrono::Duration::minutes(30);
    client
        .execute(
            "INSERT INTO influx_hist (ts, tag_name, value, qc) VALUES ($1, 'D100', 1000.0, 1)",
            &[&earlier],
        )
        .await
        .unwrap();
    let again: AggregatesSummary = context(&db)
        .input::<influx_data>(ingest.clone())
        .invoke::<create_aggregates>()
        .await
        .unwrap();
    assert_eq!(again.aggregates_created, 0);
    let max: f64 = client
        .query_one(
            "SELECT max(max_value) FROM influx_agg_1_hour WHERE tag_name = 'D100'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(max, 1000.0);
}

#[tokio::test]
async fn bad_buckets_and_view_names_are_rejected_before_any_sql() {
    let db = TestDatabase::create().await;
    let ingest = data(&db, tags(&db).await).await;
    let bad = [
        (
            json!({ "time_buckets": ["1 minute", "1 minute; DROP TABLE influx_hist"] }),
            "invalid bucket interval \"1 minute; DROP TABLE influx_hist\"",
        ),
        (
            json!({ "time_buckets": ["5 minuts"] }),
            "invalid bucket interval \"5 minuts\"",
        ),
        (json!({ "time_buckets": ["five minutes"] }), "five minutes"),
        (
            json!({ "view_prefix": "agg\"; DROP TABLE influx_hist; --" }),
            "invalid SQL identifier \"agg\\\"; DROP TABLE influx_hist; --\"",
        ),
        (json!({ "view_prefix": "Influx-Agg" }), "[a-z_][a-z0-9_]*"),
    ];
    for (config, expected) in &bad {
        // Rejected when the config is read: by the test context...
        let err = context(&db)
            .input::<influx_data>(ingest.clone())
            .config(config.clone())
            .invoke::<create_aggregates>()
            .await
            .unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("create_aggregates"), "{text}");
        assert!(text.contains(expected), "{text}");
        // ...and by Definitions, before any run.
        let err = ecoanp::pipeline(db.pg.clone(), Source::Simulator(sim()))
            .config(RunConfig::new().asset("create_aggregates", config.clone()))
            .build()
            .err()
            .unwrap_or_else(|| panic!("{config} was accepted"));
        assert!(err.to_string().contains(expected), "{err}");
    }
    let client = db.pg.get().await.unwrap();
    let views: i64 = client
        .query_one("SELECT count(*) FROM pg_matviews", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(views, 0, "no view was created by a rejected config");
    let rows: i64 = client
        .query_one("SELECT count(*) FROM influx_hist", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 3240, "the data is untouched");
}

#[tokio::test]
async fn bad_hours_are_rejected_before_anything_runs() {
    let pg = dagrs_postgres::PostgresResource::from_url("postgres://postgres@127.0.0.1/x").unwrap();
    let defs = ecoanp::pipeline(pg, Source::Simulator(sim()))
        .build()
        .unwrap();
    let instance = Instance::ephemeral();
    for (partition, says) in [
        (
            "2025-12-31-23:00",
            "partitions exist from `2026-01-01-00:00`",
        ),
        (
            "2026-03-01-11:30",
            "the window holding it is `2026-03-01-11:00`",
        ),
        ("2026-03-01", "keys look like `2026-01-01-00:00`"),
        ("2026-03-02-00:00...2026-03-01-00:00", "backwards"),
    ] {
        let options = RunOptions::new().partition(partition);
        let err = instance
            .launch(&defs, "*", options)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(says), "{partition}: {err}");
    }
    let err = instance
        .launch(&defs, "*", RunOptions::new())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("name a partition"), "{err}");
    assert!(instance.runs(10).await.unwrap().is_empty(), "nothing ran");
}

#[tokio::test]
async fn two_runs_writing_the_same_new_window_at_once_both_succeed_first_time() {
    let db = TestDatabase::create().await;
    let tags = tags(&db).await;
    let (a, b) = tokio::join!(data(&db, tags.clone()), data(&db, tags));
    assert_eq!(a.records, 3240);
    assert_eq!(b.records, 3240);
    assert!(
        a.direct_copy || b.direct_copy,
        "at least one went straight in with COPY"
    );
    let rows: i64 = db
        .client()
        .await
        .query_one("SELECT count(*) FROM influx_hist", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 3240, "each reading once");
}

#[tokio::test]
async fn an_unreachable_database_is_named_with_its_password_masked() {
    let pg = dagrs_postgres::PostgresResource::from_url(
        "postgres://postgres:s3cret-pw@127.0.0.1:1/ecoanp",
    )
    .unwrap();
    let err = build_asset_context()
        .resource(pg)
        .resource(Source::Simulator(sim()))
        .invoke::<influx_tags>()
        .await
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("127.0.0.1:1"), "{text}");
    assert!(text.contains("ecoanp"), "{text}");
    assert!(text.contains("***"), "{text}");
    assert!(!text.contains("s3cret-pw"), "{text}");
}

#[tokio::test]
async fn an_unreachable_influxdb_is_tried_three_times_and_named_with_its_password_masked() {
    // A port nothing listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://alice:s3cr3t-pw@127.0.0.1:{port}");
    let db = TestDatabase::create().await;
    let defs = ecoanp::pipeline(
        db.pg.clone(),
        Source::Influx(Influx::new(&url, "ecoanp").unwrap()),
    )
    .build()
    .unwrap();
    let result = run(&Instance::ephemeral(), &defs, "*").await;
    assert!(!result.success());
    let step = result.step("influx_tags").unwrap();
    assert_eq!(step.attempts, 3, "the asset's retry policy: 2 retries");
    let error = step.error.as_ref().unwrap().to_string();
    let server = format!("cannot reach InfluxDB at http://alice:***@127.0.0.1:{port}");
    assert!(error.contains(&server), "{error}");
    assert!(!error.contains("s3cr3t-pw"), "{error}");
    let skipped = result.step("influx_data").unwrap().status;
    assert_eq!(skipped, dagrs_core::StepStatus::Skipped);
}

#[tokio::test]
async fn the_pipeline_runs_twice_with_identical_counts() {
    let db = TestDatabase::create().await;
    let defs = ecoanp::pipeline(db.pg.clone(), Source::Simulator(sim()))
        .build()
        .unwrap();
    let instance = Instance::ephemeral();
    let first = run(&instance, &defs, "*").await;
    assert!(first.success(), "{first}");
    let second = run(&instance, &defs, "*").await;
    assert!(second.success(), "{second}");
    let rows = |r: &dagrs_core::RunResult| r.step("influx_data").unwrap().metadata["rows"].clone();
    assert_eq!(rows(&first), rows(&second));
    assert_eq!(second.step("influx_data").unwrap().metadata["inserted"], 0);
}

#[tokio::test]
async fn the_pipeline_reads_from_a_real_influxdb() {
    let url = std::env::var("INFLUX_URL").unwrap_or_else(|_| "http://127.0.0.1:8086".into());
    let influx = Influx::new(&url, &format!("ecoanp_test_{}", std::process::id())).unwrap();
    // Seeds the simulator's two hours before the window's end into a new database.
    let seeded = influx
        .seed_if_missing(window_end())
        .await
        .unwrap_or_else(|e| {
            panic!("this test needs InfluxDB (`bash .ci/influxd.sh` starts one): {e}")
        });
    assert_eq!(seeded, Some(2 * 3240));

    let db = TestDatabase::create().await;
    let defs = ecoanp::pipeline(db.pg.clone(), Source::Influx(influx.clone()))
        .build()
        .unwrap();
    let launched = Instance::ephemeral().launch(&defs, "*", hour()).await;
    let result = match launched {
        Ok(handle) => handle.wait().await,
        Err(e) => Err(e),
    };
    influx.drop_database().await.unwrap();
    let result = result.unwrap();
    assert!(result.success(), "{result}");
    assert_eq!(result.output::<influx_tags>().unwrap().total_tags, 9);
    assert_eq!(
        result.output::<influx_data>().unwrap().records,
        3240,
        "only the last hour"
    );
    let client = db.pg.get().await.unwrap();
    let source: String = client
        .query_one("SELECT DISTINCT meta->>'source' FROM influx_hist", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(source, "influxdb");
}

/// The backfill of a day: one run of 24 hours (the assets' policy), one materialized range
/// for the day, and running an hour of it again writes the same rows.
#[tokio::test]
async fn a_day_backfilled_is_one_range_and_running_it_again_changes_nothing() {
    let db = TestDatabase::create().await;
    let defs = ecoanp::pipeline(db.pg.clone(), Source::Simulator(sim()))
        .build()
        .unwrap();
    let instance = Instance::ephemeral();
    let tags = instance.materialize(&defs, "influx_tags", RunConfig::new());
    assert!(tags.await.unwrap().success());
    let day = BackfillRequest::new("influx_data+").range("2026-11-01-00:00", "2026-11-02-00:00");
    let backfill = instance.launch_backfill(&defs, day).await.unwrap();
    let done = instance
        .run_backfill(&defs, &backfill.id, |_| {})
        .await
        .unwrap();
    assert_eq!(done.status, BackfillStatus::Completed);
    let runs = instance.runs(10).await.unwrap();
    assert_eq!(runs.len(), 2, "the tags run and one run for the day");
    let parts = instance
        .asset_partitions(&defs, "influx_data")
        .await
        .unwrap();
    let ranges = parts.definition.describe(&parts.status.materialized);
    assert_eq!(ranges.len(), 1);
    assert_eq!(ranges[0].0.key, "2026-11-01-00:00...2026-11-02-00:00");
    assert_eq!(ranges[0].1, 24);

    let rows = || async {
        let client = db.pg.get().await.unwrap();
        let row = client
            .query_one("SELECT count(*), sum(value) FROM influx_hist", &[])
            .await
            .unwrap();
        (row.get::<_, i64>(0), row.get::<_, f64>(1))
    };
    let before = rows().await;
    assert_eq!(before.0, 24 * 3240);
    let again = instance
        .launch(
            &defs,
            "influx_data",
            RunOptions::new().partition("2026-11-01-05:00"),
        )
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert!(again.success(), "{again}");
    assert_eq!(again.step("influx_data").unwrap().metadata["inserted"], 0);
    assert_eq!(rows().await, before, "the same rows");
}

#[test]
fn aggregate_policies_are_config_checked_when_it_is_read() {
    let build = |config: serde_json::Value| {
        let pg =
            dagrs_postgres::PostgresResource::from_url("postgres://postgres@127.0.0.1/x").unwrap();
        ecoanp::pipeline(pg, Source::Simulator(sim()))
            .config(RunConfig::new().asset("create_aggregates", config))
            .build()
    };
    let bad = [
        (
            json!({ "refresh": { "start_offset": "1 minute", "end_offset": "1 hour" } }),
            "start_offset (1 minute) must be longer ago than end_offset (1 hour)",
        ),
        (
            json!({ "refresh": { "schedule_interval": "5 minutes; DROP TABLE influx_hist" } }),
            "invalid bucket interval \"5 minutes; DROP TABLE influx_hist\"",
        ),
        (
            json!({ "compression": { "after": "1 month" } }),
            "months and years have no fixed length",
        ),
        (
            json!({ "compression": { "segment_by": ["qc"] } }),
            "cannot segment by \"qc\"",
        ),
        (
            json!({ "compression": { "segment_by": ["tag_name", "tag_name"] } }),
            "tag_name is listed more than once",
        ),
        (
            json!({ "compression": { "segment_by": ["Tag Name"] } }),
            "invalid SQL identifier \"Tag Name\"",
        ),
    ];
    for (config, expected) in bad {
        let err = build(config.clone())
            .err()
            .unwrap_or_else(|| panic!("{config} was accepted"))
            .to_string();
        assert!(err.contains("create_aggregates"), "{err}");
        assert!(err.contains(expected), "{expected:?} not in: {err}");
    }
    // Partial policies keep the seed's other values; `compression: null` turns it off.
    let config: ecoanp::assets::AggregatesConfig = serde_json::from_value(json!({
        "refresh": { "schedule_interval": "10 minutes" },
        "compression": null,
    }))
    .unwrap();
    let policy = config.policy();
    assert_eq!(policy.refresh_schedule.to_string(), "10 minutes");
    assert_eq!(policy.refresh_start_offset.to_string(), "1 hour");
    assert_eq!(policy.compression, None);
    let seed = ecoanp::assets::AggregatesConfig::default().policy();
    let compression = seed.compression.unwrap();
    assert_eq!(compression.after.to_string(), "1 week");
    assert_eq!(compression.segment_by[0].as_str(), "tag_name");
    assert!(
        build(json!({ "compression": null, "refresh": { "end_offset": "2 minutes" } })).is_ok()
    );
}
