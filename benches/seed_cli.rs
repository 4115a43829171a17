//! The seed pipeline from the command line against the same SQL from `psql`.
//!
//! - `ecoanp_materialize_all`: the example's release binary, `ecoanp asset materialize
//!   --select '*'` (the last closed hour, readings from the simulator: `INFLUX_URL` unset),
//!   with a fresh, empty database (`DATABASE_URL`) and a fresh `DAGRS_HOME` each time;
//! - `psql_script`: `psql` running one script that does the same SQL work on a fresh, empty
//!   database: the pipeline's `CREATE TABLE`s, its rows (the simulator's tags and the
//!   hour's readings, with `COPY … FROM STDIN`), its materialized views and their indexes,
//!   and its checks' queries, all generated from the `ecoanp` and `dagrs-postgres`
//!   libraries that the binary runs.
//!
//! The script commits where the pipeline does (each `COPY`, each view with its index), so
//! both pay for the same number of commits. Creating and dropping the databases is not timed. At the end the bench prints the ratio
//! of the two medians (the target is at most 1.2). Each run is checked: 3,240 readings in
//! `influx_hist`, nine tags, three aggregates counting every reading.
//!
//! ```text
//! cargo build --release --example ecoanp && cargo bench --bench seed_cli
//! ```
//!
//! Needs PostgreSQL (`DAGRS_BENCH_PG`, default `postgres://postgres@127.0.0.1:5432/postgres`)
//! and `psql` on the `PATH`.

#[path = "support/example.rs"]
mod example;

use std::cell::RefCell;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DurationRound, TimeDelta, Utc};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use dagrs_postgres::testing::TestDatabase;
use dagrs_postgres::{readings_table_sql, BucketAggregate};
use ecoanp::assets::AggregatesConfig;
use ecoanp::{checks, schema, Simulator, Time};
use serde_json::json;

const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// The simulator's readings in an hour: 9 tags every 10 s.
const HOUR_READINGS: i64 = 9 * 360;

/// The hour `ecoanp asset materialize` picks at `now`: the one that just closed.
fn last_closed_hour(now: Time) -> (Time, Time) {
    let end = now.duration_trunc(TimeDelta::hours(1)).unwrap();
    (end - TimeDelta::hours(1), end)
}

/// An SQL string literal (no backslashes in what the bench quotes).
fn literal(text: &str) -> String {
    assert!(!text.contains('\\'));
    format!("'{}'", text.replace('\'', "''"))
}

/// The pipeline's SQL work for the hour `[start, end)` as one `psql` script, written from
/// the same sources the binary uses.
fn script(start: Time, end: Time) -> String {
    let sim = Simulator::default();
    let mut sql = String::new();
    // influx_tags: the tables, then the tags.
    writeln!(sql, "{};", schema::TAG_TABLE).unwrap();
    writeln!(sql, "{};", readings_table_sql(&schema::hist_table())).unwrap();
    sql.push_str("COPY influx_tag (key, tag_id, tag_name, tag_type, unit, meta) FROM STDIN;\n");
    for tag in sim.tags() {
        let meta = json!({ "source": "simulator", "original_schema": tag });
        writeln!(
            sql,
            "{}\t{}\t{}\t{}\t{}\t{meta}",
            tag.name, tag.tag_id, tag.name, tag.data_type, tag.unit
        )
        .unwrap();
    }
    sql.push_str("\\.\nSELECT count(*) FROM influx_tag;\n");
    // influx_data: whether the hour holds rows, then its readings.
    let (from, to) = (literal(&start.to_rfc3339()), literal(&end.to_rfc3339()));
    writeln!(
        sql,
        "SELECT EXISTS (SELECT 1 FROM influx_hist WHERE ts >= {from} AND ts < {to});"
    )
    .unwrap();
    let meta = json!({ "source": "simulator" });
    sql.push_str("COPY influx_hist (ts, tag_name, value, qc, meta) FROM STDIN;\n");
    for r in sim.readings(start, end) {
        let ts = r.ts.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
        writeln!(sql, "{ts}\t{}\t{:?}\t{}\t{meta}", r.tag_name, r.value, r.qc).unwrap();
    }
    sql.push_str("\\.\n");
    for (name, query) in [("gaps", checks::GAPS_SQL), ("ranges", checks::RANGES_SQL)] {
        writeln!(sql, "PREPARE {name}(timestamptz, timestamptz) AS {query};").unwrap();
        writeln!(sql, "EXECUTE {name}({from}, {to});").unwrap();
    }
    // create_aggregates: a materialized view and its index per bucket size.
    let config = AggregatesConfig::default();
    let mut views = Vec::new();
    for &bucket in &config.time_buckets {
        let prefix = config.view_prefix.as_str();
        let aggregate = BucketAggregate::with_prefix(prefix, schema::hist_table(), bucket).unwrap();
        // One transaction each, as `BucketAggregate::create` runs them.
        let statements = aggregate.materialized_statements().join(";\n");
        writeln!(sql, "BEGIN;\n{statements};\nCOMMIT;").unwrap();
        views.push(aggregate.view().name().clone());
    }
    writeln!(
        sql,
        "PREPARE raw(timestamptz, timestamptz) AS {};",
        checks::RAW_COUNT_SQL
    )
    .unwrap();
    writeln!(sql, "EXECUTE raw({from}, {to});").unwrap();
    for view in &views {
        let name = view.as_str();
        let query = checks::bucket_count_sql(view);
        writeln!(sql, "PREPARE {name}(timestamptz, timestamptz) AS {query};").unwrap();
        writeln!(sql, "EXECUTE {name}({from}, {to});").unwrap();
    }
    sql
}

/// What both ways must leave: every reading of an hour, the tags, three aggregates
/// counting every reading.
async fn check_result(db: &TestDatabase) {
    let client = db.client().await;
    let count = |sql: &'static str| {
        let client = &client;
        async move { client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    assert_eq!(
        count("SELECT count(*) FROM influx_hist").await,
        HOUR_READINGS
    );
    assert_eq!(count("SELECT count(*) FROM influx_tag").await, 9);
    for view in [
        "influx_agg_1_minute",
        "influx_agg_5_minutes",
        "influx_agg_1_hour",
    ] {
        let sql = format!("SELECT sum(record_count)::int8 FROM {view}");
        let counted: i64 = client.query_one(&sql, &[]).await.unwrap().get(0);
        assert_eq!(counted, HOUR_READINGS, "{view}");
    }
}

/// Runs `command` to success, timed.
fn timed(command: &mut Command) -> Duration {
    let start = Instant::now();
    let output = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let elapsed = start.elapsed();
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    elapsed
}

fn median(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

fn seed_cli(c: &mut Criterion) {
    let example = example::ecoanp();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let admin_url =
        std::env::var("DAGRS_BENCH_PG").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned());
    let fresh_db = || rt.block_on(TestDatabase::create_on(&admin_url));
    let cli_times = RefCell::new(Vec::new());
    let psql_times = RefCell::new(Vec::new());

    let mut group = c.benchmark_group("seed_cli");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(5));

    group.bench_function("ecoanp_materialize_all", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let db = fresh_db();
                let home = tempfile::tempdir().unwrap();
                let elapsed = timed(
                    Command::new(&example)
                        .args(["asset", "materialize", "--select", "*"])
                        .env("DATABASE_URL", &db.url)
                        .env("DAGRS_HOME", home.path())
                        .env_remove("INFLUX_URL")
                        .env_remove("SLACK_WEBHOOK_URL"),
                );
                rt.block_on(check_result(&db));
                cli_times.borrow_mut().push(elapsed);
                total += elapsed;
            }
            total
        })
    });

    let dir = tempfile::tempdir().unwrap();
    group.bench_function("psql_script", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let db = fresh_db();
                let (start, end) = last_closed_hour(Utc::now());
                let path = write_script(dir.path(), &script(start, end));
                // Without TLS, as the binary connects (psql would negotiate it by default).
                let url = format!("{}?sslmode=disable", db.url);
                let elapsed = timed(
                    Command::new("psql")
                        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &url, "-f"])
                        .arg(&path),
                );
                rt.block_on(check_result(&db));
                psql_times.borrow_mut().push(elapsed);
                total += elapsed;
            }
            total
        })
    });
    group.finish();

    let (cli, psql) = (median(&cli_times.borrow()), median(&psql_times.borrow()));
    println!(
        "seed_cli: CLI {cli:.1?}, psql {psql:.1?} (medians of {} and {} runs): CLI/psql = {:.2} \
         (target: at most 1.2)",
        cli_times.borrow().len(),
        psql_times.borrow().len(),
        cli.as_secs_f64() / psql.as_secs_f64()
    );
}

fn write_script(dir: &Path, sql: &str) -> PathBuf {
    let path = dir.join("seed.sql");
    std::fs::write(&path, sql).unwrap();
    path
}

criterion_group!(benches, seed_cli);
criterion_main!(benches);
