//! Rows per second into the seed's `influx_hist` table (as the EcoAnP example creates it,
//! [`ecoanp::schema::ensure`]), seven ways:
//!
//! - `a_row_by_row_upsert`: one `INSERT … ON CONFLICT DO UPDATE` per row in
//!   one transaction, as the seed's Python asset does, over 100,000 stored rows;
//! - `b_bulk_into_empty`: [`Upsert`] with [`WriteMode::Auto`] into an empty
//!   table (it takes the direct `COPY` path), 1,000,000 rows;
//! - `c_bulk_upsert_over_existing`: [`Upsert`] with [`WriteMode::Upsert`]
//!   over 1,000,000 stored rows, every one changed;
//! - `d_raw_binary_copy`: tokio-postgres' `BinaryCopyInWriter` into an empty
//!   table, 1,000,000 rows: the ceiling;
//! - `e_replace_window_over_existing`: [`Upsert::replace_window`] over the
//!   window of 1,000,000 stored rows, every one changed (`DELETE`, then `COPY`);
//! - `f_upsert_unchanged_*`: [`Upsert`] with [`WriteMode::Upsert`] re-ingesting
//!   rows the table holds unchanged (it writes nothing, which the bench asserts):
//!   an hour of readings (32,400 rows) in the default chunks and in the EcoAnP
//!   pipeline's chunks of 1,000, and all 1,000,000, over 1,000,000 stored rows;
//! - `g_raw_binary_copy_hour`: as `d`, the hour's 32,400 rows, the ceiling for `f`.
//!
//! Each iteration's setup (emptying or refilling the table, `CHECKPOINT`) is
//! not timed. The bench creates its own database on `DAGRS_BENCH_PG`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`) and drops it at the end.
//!
//! The group `ingest_timescale` measures the bulk writes into a TimescaleDB
//! hypertable beside a plain table on the same server: into an empty table
//! (the direct `COPY` path), over 1,000,000 stored rows, and over 1,000,000
//! rows in compressed chunks. Its server is `TIMESCALE_URL` (a URL to any
//! database on a server with `shared_preload_libraries = 'timescaledb'`), else
//! a throwaway server of the bench's own (`TestServer`, which needs TimescaleDB
//! installed for the local PostgreSQL); without either, the group is skipped,
//! saying so.
//!
//! ```text
//! cargo bench --bench ingest                       # both groups
//! cargo bench --bench ingest -- ingest_timescale   # the TimescaleDB group only
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use dagrs_postgres::testing::TestServer;
use dagrs_postgres::tokio_postgres::binary_copy::BinaryCopyInWriter;
use dagrs_postgres::tokio_postgres::types::{ToSql, Type};
use dagrs_postgres::tokio_postgres::{self, Client, NoTls};
use dagrs_postgres::{
    compress_hypertable, readings_table_sql, Compression, CopyRow, Ident, PgInterval,
    QualifiedName, RowWriter, Upsert, WriteMode, WritePath,
};
use serde_json::{json, Value};

const BULK_ROWS: i64 = 1_000_000;
const ROW_BY_ROW_ROWS: i64 = 100_000;
/// An hour of the seed's readings: 9 tags, one reading per tag and second.
const HOUR_ROWS: i64 = 9 * 3600;
const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The seed's per-row statement.
const SEED_INSERT: &str = "INSERT INTO influx_hist (ts, tag_name, value, qc, meta)
    VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (ts, tag_name) DO UPDATE SET
        value = EXCLUDED.value, qc = EXCLUDED.qc, meta = EXCLUDED.meta,
        updated_at = CURRENT_TIMESTAMP";

const COPY_RAW: &str =
    "COPY influx_hist (ts, tag_name, value, qc, meta) FROM STDIN (FORMAT binary)";

struct Reading {
    ts: DateTime<Utc>,
    tag_name: String,
    value: f64,
    qc: i32,
    meta: Arc<Value>,
}

impl CopyRow for Reading {
    const COLUMNS: &'static [&'static str] = &["ts", "tag_name", "value", "qc", "meta"];

    fn write_row(&self, row: &mut RowWriter<'_>) {
        row.push(self.ts)
            .push(&self.tag_name)
            .push(self.value)
            .push(self.qc)
            .push(&*self.meta);
    }
}

/// `n` readings as the seed makes them: nine tags, one reading per tag and second.
fn readings(n: i64, version: u32) -> Vec<Reading> {
    let start = Utc.with_ymd_and_hms(2024, 5, 1, 0, 0, 0).unwrap();
    let meta = Arc::new(json!({ "source": "simulated" }));
    (0..n)
        .map(|i| Reading {
            ts: start + chrono::Duration::seconds(i / 9),
            tag_name: format!("D{}", 100 + i % 9),
            value: 10.0 + i as f64 * 0.1 + f64::from(version),
            qc: 1,
            meta: Arc::clone(&meta),
        })
        .collect()
}

fn table() -> QualifiedName {
    QualifiedName::parse("influx_hist").unwrap()
}

/// A plain table like `influx_hist`, beside the hypertable on the TimescaleDB server.
fn plain_table() -> QualifiedName {
    QualifiedName::parse("influx_plain").unwrap()
}

async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("the ingest bench needs PostgreSQL at {url}: {e}"));
    tokio::spawn(connection);
    client
}

/// The bench's own database, dropped when the bench ends.
struct BenchDb {
    admin_url: String,
    name: String,
    url: String,
}

impl BenchDb {
    /// The bench's database on `admin_url`'s server, with the EcoAnP tables.
    fn create(rt: &tokio::runtime::Runtime, admin_url: String) -> Self {
        let name = format!("dagrs_bench_ingest_{}", std::process::id());
        let mut config: tokio_postgres::Config = admin_url.parse().expect("a valid URL");
        config.dbname(&name);
        let url = format!(
            "postgres://{}@127.0.0.1:{}/{name}",
            config.get_user().unwrap_or("postgres"),
            config.get_ports().first().copied().unwrap_or(5432)
        );
        rt.block_on(async {
            let admin = connect(&admin_url).await;
            admin
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .await
                .expect("CREATE DATABASE");
            ecoanp::schema::ensure(&connect(&url).await)
                .await
                .expect("the EcoAnP tables");
        });
        Self {
            admin_url,
            name,
            url,
        }
    }
}

impl Drop for BenchDb {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    connect(&admin_url)
                        .await
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await
                })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop the bench database {}", self.name);
        }
    }
}

/// Empties the table and flushes dirty pages, so no iteration pays for the last one's.
async fn reset(client: &Client, table: &QualifiedName) {
    client
        .batch_execute(&format!("TRUNCATE {table}; CHECKPOINT"))
        .await
        .expect("TRUNCATE");
}

/// Empties the table and fills it with `rows`, vacuumed and analyzed.
async fn refill(client: &mut Client, table: &QualifiedName, rows: &[Reading]) {
    reset(client, table).await;
    let stats = Upsert::new(table.clone(), &["ts", "tag_name"])
        .unwrap()
        .mode(WriteMode::Direct)
        .execute(client, rows)
        .await
        .expect("refill");
    assert_eq!(stats.inserted, rows.len() as u64);
    client
        .batch_execute(&format!("VACUUM ANALYZE {table}"))
        .await
        .expect("VACUUM");
    client
        .batch_execute("CHECKPOINT")
        .await
        .expect("CHECKPOINT");
}

/// COPYs `rows` with tokio-postgres' `BinaryCopyInWriter` in a transaction of its own; the
/// time it took, commit included.
async fn raw_copy(client: &mut Client, rows: &[Reading]) -> Duration {
    let types = [
        Type::TIMESTAMPTZ,
        Type::TEXT,
        Type::FLOAT8,
        Type::INT4,
        Type::JSONB,
    ];
    let start = Instant::now();
    let tx = client.transaction().await.unwrap();
    let sink = tx.copy_in(COPY_RAW).await.unwrap();
    let writer = BinaryCopyInWriter::new(sink, &types);
    let mut writer = std::pin::pin!(writer);
    for r in rows {
        let row: [&(dyn ToSql + Sync); 5] = [&r.ts, &r.tag_name, &r.value, &r.qc, &*r.meta];
        writer.as_mut().write(&row).await.unwrap();
    }
    let copied = writer.as_mut().finish().await.unwrap();
    tx.commit().await.unwrap();
    let elapsed = start.elapsed();
    assert_eq!(copied, rows.len() as u64);
    elapsed
}

fn ingest(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let admin_url =
        std::env::var("DAGRS_BENCH_PG").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned());
    let db = BenchDb::create(&rt, admin_url);
    let mut client = rt.block_on(connect(&db.url));
    let small_v1 = readings(ROW_BY_ROW_ROWS, 1);
    let small_v2 = readings(ROW_BY_ROW_ROWS, 2);
    let bulk_v1 = readings(BULK_ROWS, 1);
    let bulk_v2 = readings(BULK_ROWS, 2);

    let mut group = c.benchmark_group("ingest");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(10));

    group.throughput(Throughput::Elements(ROW_BY_ROW_ROWS as u64));
    group.bench_function("a_row_by_row_upsert", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    refill(&mut client, &table(), &small_v1).await;
                    let start = Instant::now();
                    let tx = client.transaction().await.unwrap();
                    let statement = tx.prepare(SEED_INSERT).await.unwrap();
                    for r in &small_v2 {
                        tx.execute(&statement, &[&r.ts, &r.tag_name, &r.value, &r.qc, &*r.meta])
                            .await
                            .unwrap();
                    }
                    tx.commit().await.unwrap();
                    total += start.elapsed();
                }
                total
            })
        })
    });

    group.throughput(Throughput::Elements(BULK_ROWS as u64));
    group.bench_function("b_bulk_into_empty", |b| {
        let writer = Upsert::new(table(), &["ts", "tag_name"])
            .unwrap()
            .mode(WriteMode::Auto);
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    reset(&client, &table()).await;
                    let start = Instant::now();
                    let stats = writer.execute(&mut client, &bulk_v1).await.unwrap();
                    total += start.elapsed();
                    assert_eq!(
                        (stats.path, stats.inserted),
                        (WritePath::Direct, BULK_ROWS as u64)
                    );
                }
                total
            })
        })
    });

    group.bench_function("c_bulk_upsert_over_existing", |b| {
        let writer = Upsert::new(table(), &["ts", "tag_name"]).unwrap();
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    refill(&mut client, &table(), &bulk_v1).await;
                    let start = Instant::now();
                    let stats = writer.execute(&mut client, &bulk_v2).await.unwrap();
                    total += start.elapsed();
                    assert_eq!(
                        (stats.path, stats.updated),
                        (WritePath::Staged, BULK_ROWS as u64)
                    );
                }
                total
            })
        })
    });

    group.bench_function("e_replace_window_over_existing", |b| {
        let (start, end) = (bulk_v2[0].ts, bulk_v2[bulk_v2.len() - 1].ts);
        let writer = Upsert::new(table(), &["ts", "tag_name"])
            .unwrap()
            .replace_window("ts", start, end + chrono::Duration::seconds(1))
            .unwrap();
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    refill(&mut client, &table(), &bulk_v1).await;
                    let start = Instant::now();
                    let stats = writer.execute(&mut client, &bulk_v2).await.unwrap();
                    total += start.elapsed();
                    assert_eq!(
                        (stats.path, stats.deleted, stats.inserted),
                        (WritePath::ReplaceWindow, BULK_ROWS as u64, BULK_ROWS as u64)
                    );
                }
                total
            })
        })
    });

    group.bench_function("d_raw_binary_copy", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    reset(&client, &table()).await;
                    total += raw_copy(&mut client, &bulk_v1).await;
                }
                total
            })
        })
    });

    // Re-ingesting rows the table already holds, unchanged: an hour of readings (the seed's
    // shape, 9 tags × 3,600 s) and all 1,000,000, over the same 1,000,000 stored rows. Such a
    // write changes nothing, so the table is filled once.
    let hour = &bulk_v1[..HOUR_ROWS as usize];
    rt.block_on(refill(&mut client, &table(), &bulk_v1));
    let unchanged_cases: [(&str, &[Reading], usize); 3] = [
        ("f_upsert_unchanged_hour", hour, Upsert::DEFAULT_CHUNK_SIZE),
        // The EcoAnP pipeline's `influx_data` writes in chunks of its `batch_size`, 1,000.
        ("f_upsert_unchanged_hour_chunks_1000", hour, 1000),
        (
            "f_upsert_unchanged_all",
            &bulk_v1,
            Upsert::DEFAULT_CHUNK_SIZE,
        ),
    ];
    for (name, rows, chunk_size) in unchanged_cases {
        group.throughput(Throughput::Elements(rows.len() as u64));
        group.bench_function(name, |b| {
            let writer = Upsert::new(table(), &["ts", "tag_name"])
                .unwrap()
                .chunk_size(chunk_size);
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        let stats = writer.execute(&mut client, rows).await.unwrap();
                        total += start.elapsed();
                        // Nothing written: every row found stored and equal.
                        assert_eq!(
                            (stats.path, stats.inserted, stats.updated, stats.unchanged),
                            (WritePath::Staged, 0, 0, rows.len() as u64)
                        );
                    }
                    total
                })
            })
        });
    }

    // The ceiling for the hour: the same 32,400 rows COPYed into an empty table.
    group.throughput(Throughput::Elements(HOUR_ROWS as u64));
    group.bench_function("g_raw_binary_copy_hour", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    reset(&client, &table()).await;
                    total += raw_copy(&mut client, hour).await;
                }
                total
            })
        })
    });

    group.finish();
    drop(client);
    drop(db);
}

/// The TimescaleDB server: `TIMESCALE_URL`, else a `TestServer` of the bench's own.
fn timescale_server() -> Option<(String, Option<TestServer>)> {
    if let Ok(url) = std::env::var("TIMESCALE_URL") {
        return Some((url, None));
    }
    let server = std::panic::catch_unwind(TestServer::start_timescaledb).ok()?;
    Some((server.url("postgres"), Some(server)))
}

/// Writes into a hypertable, plain and compressed, beside a plain table on the same server.
fn ingest_timescale(c: &mut Criterion) {
    let Some((admin_url, server)) = timescale_server() else {
        eprintln!(
            "ingest_timescale skipped: no TimescaleDB (set TIMESCALE_URL, or install TimescaleDB \
             for the local PostgreSQL)"
        );
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let db = BenchDb::create(&rt, admin_url);
    let mut client = rt.block_on(connect(&db.url));
    rt.block_on(async {
        client
            .batch_execute(&readings_table_sql(&plain_table()))
            .await
            .unwrap();
        let compression = Compression::after(PgInterval::parse("7 days").unwrap())
            .segment_by([Ident::new("tag_name").unwrap()]);
        compress_hypertable(&client, &table(), Some(&compression))
            .await
            .expect("influx_hist is a hypertable: TimescaleDB is in use");
        // The bench compresses chunks itself; the policy must not do it behind its back.
        client
            .batch_execute(
                "SELECT alter_job(job_id, scheduled => FALSE) FROM timescaledb_information.jobs \
                 WHERE proc_name = 'policy_compression'",
            )
            .await
            .unwrap();
    });
    let bulk_v1 = readings(BULK_ROWS, 1);
    let bulk_v2 = readings(BULK_ROWS, 2);

    let mut group = c.benchmark_group("ingest_timescale");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Elements(BULK_ROWS as u64));

    for (name, target) in [("plain", plain_table()), ("hypertable", table())] {
        group.bench_function(format!("{name}_bulk_into_empty"), |b| {
            let writer = Upsert::new(target.clone(), &["ts", "tag_name"])
                .unwrap()
                .mode(WriteMode::Auto);
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        reset(&client, &target).await;
                        let start = Instant::now();
                        let stats = writer.execute(&mut client, &bulk_v1).await.unwrap();
                        total += start.elapsed();
                        assert_eq!(
                            (stats.path, stats.inserted),
                            (WritePath::Direct, BULK_ROWS as u64)
                        );
                    }
                    total
                })
            })
        });
    }

    for (name, target, compressed) in [
        ("plain", plain_table(), false),
        ("hypertable", table(), false),
        ("hypertable_compressed", table(), true),
    ] {
        group.bench_function(format!("{name}_upsert_over_existing"), |b| {
            let writer = Upsert::new(target.clone(), &["ts", "tag_name"]).unwrap();
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        refill(&mut client, &target, &bulk_v1).await;
                        if compressed {
                            client
                                .batch_execute(
                                    "SELECT compress_chunk(c) FROM show_chunks('influx_hist') c; \
                                     CHECKPOINT",
                                )
                                .await
                                .expect("compressing every chunk");
                        }
                        let compressed_chunks: i64 = client
                            .query_one(
                                "SELECT count(*) FROM timescaledb_information.chunks \
                                 WHERE hypertable_name = $1 AND is_compressed",
                                &[&target.name().as_str()],
                            )
                            .await
                            .unwrap()
                            .get(0);
                        assert_eq!(compressed_chunks > 0, compressed);
                        let start = Instant::now();
                        let tx = client.transaction().await.unwrap();
                        if compressed {
                            // 1,000,000 rows decompressed: past TimescaleDB's default limit.
                            tx.batch_execute(
                                "SET LOCAL timescaledb.max_tuples_decompressed_per_dml_transaction = 0",
                            )
                            .await
                            .unwrap();
                        }
                        let stats = writer.execute_in(&tx, &bulk_v2).await.unwrap();
                        tx.commit().await.unwrap();
                        total += start.elapsed();
                        assert_eq!(
                            (stats.path, stats.updated),
                            (WritePath::Staged, BULK_ROWS as u64)
                        );
                    }
                    total
                })
            })
        });
    }

    group.finish();
    drop(client);
    drop(db);
    drop(server);
}

criterion_group!(benches, ingest, ingest_timescale);
criterion_main!(benches);
