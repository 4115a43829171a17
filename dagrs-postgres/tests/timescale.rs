//! dagrs-postgres against a real TimescaleDB: the extension, hypertables, continuous
//! aggregates with refresh and compression policies, idempotent re-creation, the
//! plain-PostgreSQL fallback giving the same numbers, upserts into compressed chunks, and
//! the servers and users that cannot have TimescaleDB.
//!
//! Built only with the feature `timescale`
//! (`cargo test -p dagrs-postgres --features timescale --test timescale`). The server is
//! `TIMESCALE_URL` (a URL to any database on a server with `shared_preload_libraries =
//! 'timescaledb'`; `.ci/run` starts one and sets it), else a throwaway server of the tests'
//! own (`TestServer`, started with that setting), which needs TimescaleDB installed for the
//! PostgreSQL that `DAGRS_PG_BIN` or `pg_config` names. Without TimescaleDB every test fails,
//! saying so. Each test creates and drops its own database.

use std::sync::{Arc, Mutex, PoisonError, Weak};

use chrono::{DateTime, Duration, TimeZone, Utc};
use dagrs_postgres::testing::{TestDatabase, TestServer};
use dagrs_postgres::tokio_postgres::{self, Client, NoTls};
use dagrs_postgres::{
    compress_hypertable, create_hypertable, enable_timescaledb, list_aggregates,
    readings_table_sql, timescaledb_available, AggregateKind, BucketAggregate, Compression,
    CopyRow, Error, Ident, PgInterval, QualifiedName, RowWriter, TableKind, TimescalePolicy,
    TimescaleStatus, Upsert, WriteMode, WritePath,
};

const BUCKETS: [&str; 3] = ["1 minute", "5 minutes", "1 hour"];

/// The setting TimescaleDB's loader defines on a server that preloads it.
const LOADER_SETTING: &str = "timescaledb.max_background_workers";

// ---------------------------------------------------------------------------------------
// The server and the databases

/// The tests' own TimescaleDB server, shared by the tests of this binary that run at the
/// same time, and stopped when the last of them ends.
static SERVER: Mutex<Weak<TestServer>> = Mutex::new(Weak::new());

/// A database of a test's own on a TimescaleDB server (dropped before the server stops).
struct TsDb {
    db: TestDatabase,
    _server: Option<Arc<TestServer>>,
}

impl std::ops::Deref for TsDb {
    type Target = TestDatabase;
    fn deref(&self) -> &TestDatabase {
        &self.db
    }
}

fn preloaded_server() -> TestServer {
    std::panic::catch_unwind(TestServer::start_timescaledb).unwrap_or_else(|_| {
        panic!(
            "these tests need TimescaleDB: a PostgreSQL server with shared_preload_libraries = \
             'timescaledb' did not start (above: why). Install TimescaleDB for this PostgreSQL \
             (on the CI machine: ../shared/timescaledb/install.sh), or set TIMESCALE_URL to a \
             server that preloads it"
        )
    })
}

/// The admin URL of the TimescaleDB server, and the server when it is the tests' own.
fn timescale_server() -> (String, Option<Arc<TestServer>>) {
    if let Ok(url) = std::env::var("TIMESCALE_URL") {
        return (url, None);
    }
    let mut shared = SERVER.lock().unwrap_or_else(PoisonError::into_inner);
    let server = shared.upgrade().unwrap_or_else(|| {
        let server = Arc::new(preloaded_server());
        *shared = Arc::downgrade(&server);
        server
    });
    (server.url("postgres"), Some(server))
}

/// A fresh database on the TimescaleDB server, the extension not created yet.
async fn timescale_db() -> TsDb {
    let (admin_url, server) = timescale_server();
    let db = TestDatabase::create_on(&admin_url).await;
    let preloaded: bool = db
        .client()
        .await
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_settings WHERE name = $1)",
            &[&LOADER_SETTING],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        preloaded,
        "the server at {admin_url} (TIMESCALE_URL) does not preload TimescaleDB: it needs \
         shared_preload_libraries = 'timescaledb'"
    );
    TsDb {
        db,
        _server: server,
    }
}

/// A fresh database with the extension created.
async fn timescale_db_enabled() -> (TsDb, deadpool_postgres::Client) {
    let db = timescale_db().await;
    let client = db.client().await;
    let status = enable_timescaledb(&client).await.unwrap();
    assert!(status.is_enabled(), "{status}");
    (db, client)
}

async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
    tokio::spawn(connection);
    client
}

/// A login role of a test's own on a server, dropped at the end (after the test's
/// databases, so declare it before them).
struct TestRole {
    name: String,
    admin_url: String,
}

impl TestRole {
    async fn create(admin_url: &str, name: &str) -> Self {
        let name = format!("{name}_{}", std::process::id());
        connect(admin_url)
            .await
            .batch_execute(&format!("CREATE ROLE \"{name}\" LOGIN"))
            .await
            .unwrap();
        Self {
            name,
            admin_url: admin_url.to_owned(),
        }
    }

    /// The URL of `database` for this role.
    fn url(&self, db: &TestDatabase) -> String {
        db.url.replacen(
            "postgres://postgres@",
            &format!("postgres://{}@", self.name),
            1,
        )
    }
}

impl Drop for TestRole {
    fn drop(&mut self) {
        let (url, name) = (self.admin_url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    let (client, connection) = tokio_postgres::connect(&url, NoTls).await?;
                    tokio::spawn(connection);
                    client
                        .batch_execute(&format!("DROP ROLE IF EXISTS \"{name}\""))
                        .await
                })
        })
        .join();
    }
}

// ---------------------------------------------------------------------------------------
// Rows, tables and aggregates

struct Reading {
    ts: DateTime<Utc>,
    tag_name: String,
    value: f64,
}

impl CopyRow for Reading {
    const COLUMNS: &'static [&'static str] = &["ts", "tag_name", "value"];

    fn write_row(&self, row: &mut RowWriter<'_>) {
        row.push(self.ts).push(&self.tag_name).push(self.value);
    }
}

/// Readings every 7.3 seconds for three tags, starting off any bucket boundary, over
/// about 3 hours for 1,500 of them; values scattered by a fixed formula. Old enough to be
/// compressed by any policy.
fn readings(range: std::ops::Range<i64>) -> Vec<Reading> {
    let start = Utc.with_ymd_and_hms(2024, 5, 1, 9, 58, 31).unwrap();
    range
        .map(|i| Reading {
            ts: start + Duration::milliseconds(i * 7_300),
            tag_name: format!("D{}", 100 + i % 3),
            value: ((i * 7919) % 1000) as f64 / 10.0 - 20.0,
        })
        .collect()
}

fn source() -> QualifiedName {
    QualifiedName::parse("influx_hist").unwrap()
}

fn ts() -> Ident {
    Ident::new("ts").unwrap()
}

fn tag_name() -> Ident {
    Ident::new("tag_name").unwrap()
}

fn interval(text: &str) -> PgInterval {
    PgInterval::parse(text).unwrap()
}

/// The seed's compression: after 7 days, segmented by tag.
fn seed_compression() -> Compression {
    Compression::after(interval("7 days")).segment_by([tag_name()])
}

fn seed_policy() -> TimescalePolicy {
    TimescalePolicy {
        compression: Some(seed_compression()),
        ..TimescalePolicy::default()
    }
}

fn aggregates(policy: &TimescalePolicy) -> Vec<BucketAggregate> {
    BUCKETS
        .iter()
        .map(|bucket| {
            BucketAggregate::with_prefix("influx_agg_", source(), interval(bucket))
                .unwrap()
                .policy(policy.clone())
        })
        .collect()
}

/// `influx_hist` with `rows`, written by the bulk upsert.
async fn readings_table(client: &mut deadpool_postgres::Client, rows: &[Reading]) {
    client
        .batch_execute(&readings_table_sql(&source()))
        .await
        .unwrap();
    Upsert::new(source(), &["ts", "tag_name"])
        .unwrap()
        .execute(client, rows)
        .await
        .unwrap();
}

/// What the EcoAnP pipeline sets up: a compressed hypertable and the three aggregates.
/// Returns every change made.
async fn seed_setup(client: &Client, policy: &TimescalePolicy) -> Vec<String> {
    assert_eq!(
        create_hypertable(client, &source(), &ts()).await.unwrap(),
        TableKind::Hypertable
    );
    let mut changes = compress_hypertable(client, &source(), policy.compression.as_ref())
        .await
        .unwrap();
    for aggregate in aggregates(policy) {
        let report = aggregate.create(client).await.unwrap();
        assert_eq!(report.kind, AggregateKind::Continuous, "{}", report.view);
        changes.extend(report.changes);
    }
    changes
}

async fn strings(client: &Client, sql: &str) -> Vec<String> {
    client
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// What `timescaledb_information` says about hypertables, continuous aggregates, jobs and
/// compression settings, one line each (nothing that changes by itself as time passes).
async fn timescale_catalog(client: &Client) -> Vec<String> {
    let mut lines = strings(
        client,
        "SELECT format('hypertable %s.%s dimensions=%s compression=%s', hypertable_schema, \
         hypertable_name, num_dimensions, compression_enabled) \
         FROM timescaledb_information.hypertables ORDER BY 1",
    )
    .await;
    lines.extend(
        strings(
            client,
            "SELECT format('aggregate %s.%s on %s.%s in %s.%s compression=%s \
             materialized_only=%s: %s', view_schema, view_name, hypertable_schema, \
             hypertable_name, materialization_hypertable_schema, \
             materialization_hypertable_name, compression_enabled, materialized_only, \
             view_definition) \
             FROM timescaledb_information.continuous_aggregates ORDER BY 1",
        )
        .await,
    );
    lines.extend(
        strings(
            client,
            "SELECT format('job %s %s every %s on %s.%s: %s', job_id, proc_name, \
             schedule_interval, hypertable_schema, hypertable_name, config) \
             FROM timescaledb_information.jobs ORDER BY job_id",
        )
        .await,
    );
    lines.extend(
        strings(
            client,
            "SELECT format('compression of %s.%s: %s segmentby=%s orderby=%s asc=%s', \
             hypertable_schema, hypertable_name, attname, segmentby_column_index, \
             orderby_column_index, orderby_asc) \
             FROM timescaledb_information.compression_settings ORDER BY 1",
        )
        .await,
    );
    lines
}

/// Every row of an aggregate view, in order.
async fn view_rows(
    client: &Client,
    view: &QualifiedName,
) -> Vec<(DateTime<Utc>, String, f64, f64, f64, i64)> {
    client
        .query(
            &format!(
                "SELECT bucket, tag_name, avg_value, min_value, max_value, record_count \
                 FROM {view} ORDER BY bucket, tag_name"
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
        .collect()
}

/// Compresses every chunk of a hypertable or continuous aggregate that is not compressed
/// yet, and returns how many chunks it has. The compression policy may be compressing
/// the same chunks in the background: a failure is tried again, a few times.
async fn compress_all(client: &Client, relation: &str) -> i64 {
    let sql = format!(
        "SELECT count(compress_chunk(c, if_not_compressed => TRUE)) FROM show_chunks('{relation}') c"
    );
    for attempt in 1.. {
        match client.query_one(&sql, &[]).await {
            Ok(row) => return row.get(0),
            Err(e) if attempt < 5 => {
                eprintln!("{sql}: {e:?}; trying again");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Err(e) => panic!("{sql}: {e:?}"),
        }
    }
    unreachable!()
}

async fn count(client: &Client, sql: &str) -> i64 {
    client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .get(0)
}

// ---------------------------------------------------------------------------------------
// The extension and hypertables

#[tokio::test]
async fn enable_creates_the_extension_once() {
    let db = timescale_db().await;
    let client = db.client().await;
    assert!(!timescaledb_available(&client).await.unwrap());
    let status = enable_timescaledb(&client).await.unwrap();
    let TimescaleStatus::Enabled { version } = &status else {
        panic!("{status}")
    };
    let installed: String = client
        .query_one(
            "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, &installed);
    assert!(timescaledb_available(&client).await.unwrap());
    assert_eq!(enable_timescaledb(&client).await.unwrap(), status);
}

#[tokio::test]
async fn hypertables_from_an_empty_and_a_filled_table() {
    let (_db, mut client) = timescale_db_enabled().await;
    // Empty: becomes a hypertable, and stays one on a second call.
    client
        .batch_execute(&readings_table_sql(
            &QualifiedName::parse("empty_hist").unwrap(),
        ))
        .await
        .unwrap();
    let empty = QualifiedName::parse("empty_hist").unwrap();
    for _ in 0..2 {
        let kind = create_hypertable(&client, &empty, &ts()).await.unwrap();
        assert_eq!(kind, TableKind::Hypertable);
    }
    // Filled: its rows move into chunks.
    let rows = readings(0..1500);
    readings_table(&mut client, &rows).await;
    let kind = create_hypertable(&client, &source(), &ts()).await.unwrap();
    assert_eq!(kind, TableKind::Hypertable);
    assert_eq!(
        count(&client, "SELECT count(*) FROM influx_hist").await,
        1500
    );
    assert_eq!(
        count(&client, "SELECT count(*) FROM ONLY influx_hist").await,
        0,
        "every row migrated out of the parent table into chunks"
    );
    assert!(
        count(
            &client,
            "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'influx_hist'"
        )
        .await
            >= 1
    );
    let hypertables = strings(
        &client,
        "SELECT hypertable_name::text FROM timescaledb_information.hypertables ORDER BY 1",
    )
    .await;
    assert_eq!(hypertables, ["empty_hist", "influx_hist"]);
}

// ---------------------------------------------------------------------------------------
// Continuous aggregates and policies

#[tokio::test]
async fn the_seed_gets_continuous_aggregates_with_refresh_and_compression_policies() {
    let (_db, mut client) = timescale_db_enabled().await;
    readings_table(&mut client, &readings(0..1500)).await;
    let changes = seed_setup(&client, &seed_policy()).await;
    assert_eq!(
        changes.len(),
        2 + 3 * 4,
        "compression and its policy on influx_hist; per aggregate: the view, its refresh \
         policy, compression and its policy: {changes:#?}"
    );

    let aggregates = strings(
        &client,
        "SELECT format('%s on %s compression=%s', view_name, hypertable_name, compression_enabled) \
         FROM timescaledb_information.continuous_aggregates ORDER BY view_name",
    )
    .await;
    assert_eq!(
        aggregates,
        [
            "influx_agg_1_hour on influx_hist compression=t",
            "influx_agg_1_minute on influx_hist compression=t",
            "influx_agg_5_minutes on influx_hist compression=t",
        ]
    );
    // The jobs, by the aggregate's (or the hypertable's) name: every 5 minutes the window
    // from 1 hour (2 hours 1 minute for hourly buckets: at least two buckets) to 1 minute
    // ago; compression after 7 days.
    let jobs = strings(
        &client,
        "SELECT format('%s %s every %s start=%s end=%s after=%s', \
                coalesce(c.view_name, j.hypertable_name), j.proc_name, j.schedule_interval, \
                (j.config->>'start_offset')::interval, (j.config->>'end_offset')::interval, \
                (j.config->>'compress_after')::interval) \
         FROM timescaledb_information.jobs j \
         LEFT JOIN timescaledb_information.continuous_aggregates c \
           ON (c.materialization_hypertable_schema, c.materialization_hypertable_name) \
              = (j.hypertable_schema, j.hypertable_name) \
           OR (c.view_schema, c.view_name) = (j.hypertable_schema, j.hypertable_name) \
         WHERE j.proc_name IN ('policy_refresh_continuous_aggregate', 'policy_compression') \
         ORDER BY 1",
    )
    .await;
    assert_eq!(
        jobs,
        [
            "influx_agg_1_hour policy_compression every 12:00:00 start=<NULL> end=<NULL> after=7 days",
            "influx_agg_1_hour policy_refresh_continuous_aggregate every 00:05:00 start=02:01:00 end=00:01:00 after=<NULL>",
            "influx_agg_1_minute policy_compression every 12:00:00 start=<NULL> end=<NULL> after=7 days",
            "influx_agg_1_minute policy_refresh_continuous_aggregate every 00:05:00 start=01:00:00 end=00:01:00 after=<NULL>",
            "influx_agg_5_minutes policy_compression every 12:00:00 start=<NULL> end=<NULL> after=7 days",
            "influx_agg_5_minutes policy_refresh_continuous_aggregate every 00:05:00 start=01:00:00 end=00:01:00 after=<NULL>",
            "influx_hist policy_compression every 12:00:00 start=<NULL> end=<NULL> after=7 days",
        ]
        .map(|line| line.replace("<NULL>", ""))
    );
    // Segmented by tag: the hypertable and every aggregate.
    let segmented = strings(
        &client,
        "SELECT format('%s.%s', hypertable_name, attname) \
         FROM timescaledb_information.compression_settings \
         WHERE segmentby_column_index IS NOT NULL ORDER BY 1",
    )
    .await;
    assert_eq!(segmented.len(), 4, "{segmented:?}");
    assert!(
        segmented.iter().all(|s| s.ends_with(".tag_name")),
        "{segmented:?}"
    );
    assert!(segmented.contains(&"influx_hist.tag_name".to_owned()));

    // Compression works on both: compress every chunk, and the numbers stay the same.
    let before = view_rows(&client, aggregates_named("influx_agg_5_minutes").view()).await;
    let compressed = compress_all(&client, "influx_hist").await
        + compress_all(&client, "influx_agg_5_minutes").await;
    assert!(compressed >= 2, "{compressed} chunks compressed");
    assert_eq!(
        view_rows(&client, aggregates_named("influx_agg_5_minutes").view()).await,
        before
    );
    assert_eq!(
        count(&client, "SELECT count(*) FROM influx_hist").await,
        1500
    );

    // list_aggregates reports them as continuous aggregates.
    let listed = list_aggregates(&client, "influx_agg_").await.unwrap();
    let listed: Vec<(&str, AggregateKind)> =
        listed.iter().map(|a| (a.name.as_str(), a.kind)).collect();
    assert_eq!(
        listed,
        [
            ("influx_agg_1_hour", AggregateKind::Continuous),
            ("influx_agg_1_minute", AggregateKind::Continuous),
            ("influx_agg_5_minutes", AggregateKind::Continuous),
        ]
    );
}

fn aggregates_named(name: &str) -> BucketAggregate {
    aggregates(&seed_policy())
        .into_iter()
        .find(|a| a.view().name().as_str() == name)
        .unwrap()
}

#[tokio::test]
async fn a_second_run_changes_nothing() {
    let (_db, mut client) = timescale_db_enabled().await;
    readings_table(&mut client, &readings(0..600)).await;
    assert!(!seed_setup(&client, &seed_policy()).await.is_empty());
    let before = timescale_catalog(&client).await;
    assert!(before.len() > 10, "{before:#?}");
    let changes = seed_setup(&client, &seed_policy()).await;
    assert_eq!(changes, Vec::<String>::new());
    for aggregate in aggregates(&seed_policy()) {
        let again = aggregate.create(&client).await.unwrap();
        assert!(!again.created);
        assert!(again.changes.is_empty(), "{:?}", again.changes);
    }
    assert_eq!(timescale_catalog(&client).await, before);
}

#[tokio::test]
async fn changed_policies_are_mended_then_left_alone() {
    let (_db, mut client) = timescale_db_enabled().await;
    readings_table(&mut client, &readings(0..600)).await;
    seed_setup(&client, &seed_policy()).await;
    let first = timescale_catalog(&client).await;

    let changed = TimescalePolicy {
        refresh_start_offset: interval("3 hours"),
        refresh_end_offset: interval("5 minutes"),
        refresh_schedule: interval("10 minutes"),
        compression: Some(Compression::after(interval("30 days"))),
    };
    let changes = seed_setup(&client, &changed).await;
    let joined = changes.join("\n");
    for expected in [
        "\"influx_hist\" is now segmented by nothing (was tag_name)",
        "replaced the compression policy of \"influx_hist\": compress after 30 days",
        "replaced the refresh policy of \"influx_agg_1_minute\": every 10 minutes, the window \
         from 3 hours to 5 minutes ago",
        "replaced the compression policy of \"influx_agg_1_hour\": compress after 30 days",
    ] {
        assert!(joined.contains(expected), "{expected:?} not in:\n{joined}");
    }
    assert_ne!(timescale_catalog(&client).await, first);
    let jobs = strings(
        &client,
        "SELECT format('%s %s', (config->>'start_offset')::interval, schedule_interval) \
         FROM timescaledb_information.jobs \
         WHERE proc_name = 'policy_refresh_continuous_aggregate' ORDER BY 1",
    )
    .await;
    assert_eq!(jobs, ["03:00:00 00:10:00"; 3]);
    let after = timescale_catalog(&client).await;
    assert!(seed_setup(&client, &changed).await.is_empty());
    assert_eq!(timescale_catalog(&client).await, after);

    // No compression: the policies go, compression stays on for what it compressed.
    let uncompressed = TimescalePolicy {
        compression: None,
        ..changed
    };
    let changes = seed_setup(&client, &uncompressed).await;
    assert_eq!(changes.len(), 4, "{changes:#?}");
    assert!(changes
        .iter()
        .all(|c| c.starts_with("removed the compression policy")));
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM timescaledb_information.jobs WHERE proc_name = 'policy_compression'"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn segment_by_columns_that_are_not_grouped_are_refused_before_any_sql() {
    let (_db, mut client) = timescale_db_enabled().await;
    readings_table(&mut client, &readings(0..10)).await;
    create_hypertable(&client, &source(), &ts()).await.unwrap();
    let policy = TimescalePolicy {
        compression: Some(
            Compression::after(interval("7 days")).segment_by([Ident::new("qc").unwrap()]),
        ),
        ..TimescalePolicy::default()
    };
    let err = aggregates(&policy)[0].create(&client).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidSetting {
                setting: "segment_by",
                ..
            }
        ),
        "{err}"
    );
    assert!(list_aggregates(&client, "").await.unwrap().is_empty());
}

#[tokio::test]
async fn refresh_over_a_window_fills_only_its_buckets() {
    let (_db, mut client) = timescale_db_enabled().await;
    client
        .batch_execute(&readings_table_sql(&source()))
        .await
        .unwrap();
    create_hypertable(&client, &source(), &ts()).await.unwrap();
    let hourly = aggregates_named("influx_agg_1_hour");
    assert!(hourly.create(&client).await.unwrap().created);
    // Rows after the view was created: not in it until it is refreshed.
    let rows = readings(0..1500); // 09:58:31 to 13:00:58
    Upsert::new(source(), &["ts", "tag_name"])
        .unwrap()
        .execute(&mut client, &rows)
        .await
        .unwrap();
    assert!(view_rows(&client, hourly.view()).await.is_empty());
    // 11:30 to 12:10 touches the buckets of 11:00 and 12:00: both are refreshed whole.
    let at = |h, m| Utc.with_ymd_and_hms(2024, 5, 1, h, m, 0).unwrap();
    let kind = hourly
        .refresh_window(&client, at(11, 30), at(12, 10))
        .await
        .unwrap();
    assert_eq!(kind, AggregateKind::Continuous);
    let refreshed = view_rows(&client, hourly.view()).await;
    let buckets: Vec<DateTime<Utc>> = refreshed.iter().map(|r| r.0).collect();
    assert_eq!(buckets, [[at(11, 0); 3], [at(12, 0); 3]].concat());
    let in_eleven = rows
        .iter()
        .filter(|r| r.ts >= at(11, 0) && r.ts < at(12, 0))
        .count();
    let counted: i64 = refreshed[..3].iter().map(|r| r.5).sum();
    assert_eq!(
        counted, in_eleven as i64,
        "whole buckets, not just the window"
    );
    // The whole range.
    assert_eq!(
        hourly.refresh(&client).await.unwrap(),
        AggregateKind::Continuous
    );
    assert_eq!(
        view_rows(&client, hourly.view()).await.len(),
        5 * 3,
        "09:00 to 13:00"
    );
}

// ---------------------------------------------------------------------------------------
// The same numbers without TimescaleDB

#[tokio::test]
async fn continuous_aggregates_equal_the_plain_postgresql_fallback() {
    let rows = readings(0..1500);
    // With TimescaleDB...
    let (_ts_db, mut ts_client) = timescale_db_enabled().await;
    readings_table(&mut ts_client, &rows).await;
    seed_setup(&ts_client, &seed_policy()).await;
    // ...and without: a database on the same server where the extension is not created.
    let plain_db = timescale_db().await;
    let mut plain_client = plain_db.client().await;
    readings_table(&mut plain_client, &rows).await;
    assert_eq!(
        create_hypertable(&plain_client, &source(), &ts())
            .await
            .unwrap(),
        TableKind::Plain
    );
    for aggregate in aggregates(&seed_policy()) {
        let report = aggregate.create(&plain_client).await.unwrap();
        assert_eq!(report.kind, AggregateKind::Materialized);
        let continuous = view_rows(&ts_client, aggregate.view()).await;
        let plain = view_rows(&plain_client, aggregate.view()).await;
        assert!(!plain.is_empty());
        assert_eq!(continuous.len(), plain.len(), "{}", aggregate.view());
        for (c, p) in continuous.iter().zip(&plain) {
            assert_eq!((c.0, &c.1, c.3, c.4, c.5), (p.0, &p.1, p.3, p.4, p.5));
            assert!(
                (c.2 - p.2).abs() <= 1e-9 * p.2.abs().max(1.0),
                "avg {c:?} vs {p:?}"
            );
        }
    }
}

#[tokio::test]
async fn materialized_views_left_by_a_plain_run_become_continuous_aggregates() {
    let db = timescale_db().await;
    let mut client = db.client().await;
    readings_table(&mut client, &readings(0..900)).await;
    // A first run before TimescaleDB was installed in the database.
    for aggregate in aggregates(&seed_policy()) {
        assert_eq!(
            aggregate.create(&client).await.unwrap().kind,
            AggregateKind::Materialized
        );
    }
    let plain = view_rows(&client, aggregates_named("influx_agg_1_minute").view()).await;
    // Then TimescaleDB comes, and the next run moves everything over.
    assert!(enable_timescaledb(&client).await.unwrap().is_enabled());
    assert_eq!(
        create_hypertable(&client, &source(), &ts()).await.unwrap(),
        TableKind::Hypertable
    );
    for aggregate in aggregates(&seed_policy()) {
        let report = aggregate.create(&client).await.unwrap();
        assert_eq!(report.kind, AggregateKind::Continuous);
        assert!(report.created);
        assert!(
            report.changes[0].starts_with("replaced materialized view"),
            "{:?}",
            report.changes
        );
    }
    assert_eq!(count(&client, "SELECT count(*) FROM pg_matviews").await, 0);
    let continuous = view_rows(&client, aggregates_named("influx_agg_1_minute").view()).await;
    assert_eq!(continuous.len(), plain.len());
    for (c, p) in continuous.iter().zip(&plain) {
        assert_eq!((c.0, &c.1, c.5), (p.0, &p.1, p.5));
    }
}

// ---------------------------------------------------------------------------------------
// Upserts into a hypertable and into compressed chunks

#[tokio::test]
async fn upserts_into_a_hypertable_and_its_compressed_chunks() {
    let (_db, mut client) = timescale_db_enabled().await;
    client
        .batch_execute(&readings_table_sql(&source()))
        .await
        .unwrap();
    create_hypertable(&client, &source(), &ts()).await.unwrap();
    compress_hypertable(&client, &source(), Some(&seed_compression()))
        .await
        .unwrap();
    let upsert = Upsert::new(source(), &["ts", "tag_name"]).unwrap();

    // Into the empty hypertable: the direct COPY path.
    let rows = readings(0..1200);
    let stats = upsert
        .clone()
        .mode(WriteMode::Auto)
        .execute(&mut client, &rows)
        .await
        .unwrap();
    assert_eq!((stats.path, stats.inserted), (WritePath::Direct, 1200));

    let compressed = compress_all(&client, "influx_hist").await;
    assert!(compressed >= 1);
    let compressed_chunks = "SELECT count(*) FROM timescaledb_information.chunks \
                             WHERE hypertable_name = 'influx_hist' AND is_compressed";
    assert_eq!(count(&client, compressed_chunks).await, compressed);

    // Staged: 300 changed rows and 300 new ones, all in compressed chunks' time range.
    let mut next: Vec<Reading> = readings(900..1500);
    for r in &mut next[..300] {
        r.value += 1000.0;
    }
    let stats = upsert.execute(&mut client, &next).await.unwrap();
    assert_eq!(
        (stats.path, stats.inserted, stats.updated, stats.unchanged),
        (WritePath::Staged, 300, 300, 0)
    );
    let stats = upsert.execute(&mut client, &next).await.unwrap();
    assert_eq!(
        (stats.inserted, stats.updated, stats.unchanged),
        (0, 0, 600)
    );
    assert_eq!(
        count(&client, "SELECT count(*) FROM influx_hist").await,
        1500
    );
    let changed = count(
        &client,
        "SELECT count(*) FROM influx_hist WHERE value >= 900",
    )
    .await;
    assert_eq!(changed, 300, "the changed values are stored");

    // Direct: new keys into compressed time ranges go in; a stored key is a conflict,
    // found in a compressed chunk, and nothing is written.
    compress_all(&client, "influx_hist").await;
    let fresh: Vec<Reading> = readings(0..200)
        .into_iter()
        .map(|r| Reading {
            tag_name: "D200".into(),
            ..r
        })
        .collect();
    let direct = upsert.clone().mode(WriteMode::Direct);
    let stats = direct.execute(&mut client, &fresh).await.unwrap();
    assert_eq!((stats.path, stats.inserted), (WritePath::Direct, 200));
    compress_all(&client, "influx_hist").await;
    let taken = readings(5..6);
    let err = direct.execute(&mut client, &taken).await.unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    assert_eq!(
        count(&client, "SELECT count(*) FROM influx_hist").await,
        1700
    );
    // Auto over stored rows takes the staged path.
    let stats = upsert
        .clone()
        .mode(WriteMode::Auto)
        .execute(&mut client, &taken)
        .await
        .unwrap();
    assert_eq!((stats.path, stats.unchanged), (WritePath::Staged, 1));
}

// ---------------------------------------------------------------------------------------
// Servers and users that cannot have TimescaleDB: a clear reason, and all plain

/// The plain path, whole: no extension, a plain table, materialized views.
async fn assert_all_plain(client: &Client) {
    assert!(!timescaledb_available(client).await.unwrap());
    assert_eq!(
        create_hypertable(client, &source(), &ts()).await.unwrap(),
        TableKind::Plain
    );
    assert!(
        compress_hypertable(client, &source(), Some(&seed_compression()))
            .await
            .unwrap()
            .is_empty()
    );
    for aggregate in aggregates(&seed_policy()) {
        let report = aggregate.create(client).await.unwrap();
        assert_eq!(report.kind, AggregateKind::Materialized);
    }
}

#[tokio::test]
async fn a_server_that_does_not_preload_timescaledb_falls_back_to_plain_postgresql() {
    // TimescaleDB is installed for this PostgreSQL (the TimescaleDB tests need it), but this
    // server does not load it at start.
    let server = TestServer::start();
    let offered = count(
        &connect(&server.url("postgres")).await,
        "SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'",
    )
    .await;
    assert_eq!(offered, 1, "TimescaleDB is installed for this PostgreSQL");
    let role = TestRole::create(&server.url("postgres"), "dagrs_app").await;
    let db = TestDatabase::create_on(&server.url("postgres")).await;
    let client = db.client().await;
    client
        .batch_execute(&format!(
            "GRANT CREATE, CONNECT ON DATABASE \"{}\" TO \"{}\"; \
             GRANT CREATE ON SCHEMA public TO \"{}\"",
            db.name, role.name, role.name
        ))
        .await
        .unwrap();
    // As a superuser, who may read shared_preload_libraries...
    let status = enable_timescaledb(&client).await.unwrap();
    assert_eq!(status, TimescaleStatus::NotPreloaded);
    assert!(
        status.to_string().contains("shared_preload_libraries"),
        "{status}"
    );
    // ...and as a user who may not: the same answer, and the connection stays usable
    // (creating the extension there would have ended it).
    let app = connect(&role.url(&db)).await;
    assert_eq!(
        enable_timescaledb(&app).await.unwrap(),
        TimescaleStatus::NotPreloaded
    );
    app.batch_execute(&readings_table_sql(&source()))
        .await
        .unwrap();
    assert_all_plain(&app).await;
    drop((app, client, db));
    drop(role);
}

#[tokio::test]
async fn a_user_who_may_not_create_extensions_falls_back_to_plain_postgresql() {
    let (admin_url, _server) = timescale_server();
    let role = TestRole::create(&admin_url, "dagrs_reader").await;
    let db = TestDatabase::create_on(&admin_url).await;
    let admin = db.client().await;
    admin
        .batch_execute(&format!(
            "GRANT CONNECT ON DATABASE \"{0}\" TO \"{1}\"; GRANT CREATE ON SCHEMA public TO \"{1}\"",
            db.name, role.name
        ))
        .await
        .unwrap();
    let app = connect(&role.url(&db)).await;
    let status = enable_timescaledb(&app).await.unwrap();
    assert_eq!(
        status,
        TimescaleStatus::NotPermitted {
            user: role.name.clone(),
            database: db.name.clone(),
        }
    );
    let message = status.to_string();
    assert!(
        message.contains(&role.name) && message.contains("CREATE EXTENSION timescaledb"),
        "{message}"
    );
    app.batch_execute(&readings_table_sql(&source()))
        .await
        .unwrap();
    assert_all_plain(&app).await;

    // With CREATE on the database it may: TimescaleDB is a trusted extension.
    admin
        .batch_execute(&format!(
            "GRANT CREATE ON DATABASE \"{}\" TO \"{}\"",
            db.name, role.name
        ))
        .await
        .unwrap();
    assert!(enable_timescaledb(&app).await.unwrap().is_enabled());
    drop((app, admin, db));
    drop(role);
}

#[tokio::test]
async fn writes_past_the_decompression_limit_fail_whole_unless_the_limit_is_raised() {
    let (_db, mut client) = timescale_db_enabled().await;
    client
        .batch_execute(&readings_table_sql(&source()))
        .await
        .unwrap();
    create_hypertable(&client, &source(), &ts()).await.unwrap();
    compress_hypertable(&client, &source(), Some(&seed_compression()))
        .await
        .unwrap();
    let upsert = Upsert::new(source(), &["ts", "tag_name"]).unwrap();
    upsert
        .execute(&mut client, readings(0..3000))
        .await
        .unwrap();
    compress_all(&client, "influx_hist").await;
    // A small limit for this connection, instead of writing 100,000 rows.
    client
        .batch_execute("SET timescaledb.max_tuples_decompressed_per_dml_transaction = 1000")
        .await
        .unwrap();
    let mut changed = readings(0..3000);
    for r in &mut changed {
        r.value += 1000.0;
    }
    let err = upsert.execute(&mut client, &changed).await.unwrap_err();
    assert!(matches!(err, Error::DecompressionLimit { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("\"influx_hist\"") && text.contains("current limit: 1000"),
        "{text}"
    );
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM influx_hist WHERE value >= 900"
        )
        .await,
        0,
        "nothing was written"
    );
    // Raised for one write, in the caller's transaction.
    let tx = client.transaction().await.unwrap();
    tx.batch_execute("SET LOCAL timescaledb.max_tuples_decompressed_per_dml_transaction = 0")
        .await
        .unwrap();
    let stats = upsert.execute_in(&tx, &changed).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(stats.updated, 3000);
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM influx_hist WHERE value >= 900"
        )
        .await,
        3000
    );
}
