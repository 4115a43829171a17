//! Rows per second into the seed's `influx_hist` table (as the EcoAnP example creates it,
//! [`ecoanp::schema::ensure`]), four ways:
//!
//! - `a_row_by_row_upsert`: one `INSERT … ON CONFLICT DO UPDATE` per row in
//!   one transaction, as the seed's Python asset does, over 100,000 stored rows;
//! - `b_bulk_into_empty`: [`Upsert`] with [`WriteMode::Auto`] into an empty
//!   table (it takes the direct `COPY` path), 1,000,000 rows;
//! - `c_bulk_upsert_over_existing`: [`Upsert`] with [`WriteMode::Upsert`]
//!   over 1,000,000 stored rows, every one changed;
//! - `d_raw_binary_copy`: tokio-postgres' `BinaryCopyInWriter` into an empty
//!   table, 1,000,000 rows: the ceiling.
//!
//! Each iteration's setup (emptying or refilling the table, `CHECKPOINT`) is
//! not timed. The bench creates its own database on `DAGRS_BENCH_PG`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`) and drops it at the end.
//!
//! ```text
//! cargo bench --bench ingest
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use dagrs_postgres::tokio_postgres::binary_copy::BinaryCopyInWriter;
use dagrs_postgres::tokio_postgres::types::{ToSql, Type};
use dagrs_postgres::tokio_postgres::{self, Client, NoTls};
use dagrs_postgres::{CopyRow, QualifiedName, RowWriter, Upsert, WriteMode, WritePath};
use serde_json::{json, Value};

const BULK_ROWS: i64 = 1_000_000;
const ROW_BY_ROW_ROWS: i64 = 100_000;
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
    fn create(rt: &tokio::runtime::Runtime) -> Self {
        let admin_url =
            std::env::var("DAGRS_BENCH_PG").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned());
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
async fn reset(client: &Client) {
    client
        .batch_execute("TRUNCATE influx_hist; CHECKPOINT")
        .await
        .expect("TRUNCATE");
}

/// Empties the table and fills it with `rows`, vacuumed and analyzed.
async fn refill(client: &mut Client, rows: &[Reading]) {
    reset(client).await;
    let stats = Upsert::new(table(), &["ts", "tag_name"])
        .unwrap()
        .mode(WriteMode::Direct)
        .execute(client, rows)
        .await
        .expect("refill");
    assert_eq!(stats.inserted, rows.len() as u64);
    client
        .batch_execute("VACUUM ANALYZE influx_hist")
        .await
        .expect("VACUUM");
    client
        .batch_execute("CHECKPOINT")
        .await
        .expect("CHECKPOINT");
}

fn ingest(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let db = BenchDb::create(&rt);
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
                    refill(&mut client, &small_v1).await;
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
                    reset(&client).await;
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
                    refill(&mut client, &bulk_v1).await;
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

    group.bench_function("d_raw_binary_copy", |b| {
        let types = [
            Type::TIMESTAMPTZ,
            Type::TEXT,
            Type::FLOAT8,
            Type::INT4,
            Type::JSONB,
        ];
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    reset(&client).await;
                    let start = Instant::now();
                    let tx = client.transaction().await.unwrap();
                    let sink = tx.copy_in(COPY_RAW).await.unwrap();
                    let writer = BinaryCopyInWriter::new(sink, &types);
                    let mut writer = std::pin::pin!(writer);
                    for r in &bulk_v1 {
                        let row: [&(dyn ToSql + Sync); 5] =
                            [&r.ts, &r.tag_name, &r.value, &r.qc, &*r.meta];
                        writer.as_mut().write(&row).await.unwrap();
                    }
                    let copied = writer.as_mut().finish().await.unwrap();
                    tx.commit().await.unwrap();
                    total += start.elapsed();
                    assert_eq!(copied, BULK_ROWS as u64);
                }
                total
            })
        })
    });

    group.finish();
    drop(client);
    drop(db);
}

criterion_group!(benches, ingest);
criterion_main!(benches);
