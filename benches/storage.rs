//! Run storage: event writes per second into SQLite and PostgreSQL, materialization overhead
//! per asset on a 1,000-asset graph with each backend, and the start-to-exit time of the
//! example's `asset list`.
//!
//! ```text
//! cargo build --release --example ecoanp && cargo bench --bench storage
//! ```
//!
//! Needs PostgreSQL on 127.0.0.1:5432 (user postgres); the bench creates and drops its own
//! database.

#[path = "support/example.rs"]
mod example;

use std::process::Command;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use dagrs_core::storage::{contract, InMemoryStorage, SqliteStorage, Storage};
use dagrs_core::{AssetSpec, Definitions, Event, EventKind, Instance, LogLevel, RunConfig};
use dagrs_postgres::testing::TestDatabase;
use dagrs_postgres::PgStorage;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A scratch folder and PostgreSQL database, removed at the end.
struct Scratch {
    dir: tempfile::TempDir,
    db: TestDatabase,
}

impl Scratch {
    fn new(rt: &tokio::runtime::Runtime) -> Self {
        Scratch {
            dir: tempfile::tempdir().unwrap(),
            db: rt.block_on(TestDatabase::create()),
        }
    }

    fn sqlite(&self, name: &str) -> SqliteStorage {
        SqliteStorage::open(self.dir.path().join(format!("{name}.db"))).unwrap()
    }

    async fn postgres(&self, schema: &str) -> PgStorage {
        PgStorage::connect(self.db.pg.clone(), schema)
            .await
            .unwrap()
    }
}

/// Events of one run, as the executor writes them: batches of `batch` events.
fn batches(run: &str, events: usize, batch: usize) -> Vec<Vec<Event>> {
    let all: Vec<Event> = (0..events as u64)
        .map(|seq| {
            contract::event(
                run,
                seq,
                Some("asset"),
                EventKind::Log {
                    level: LogLevel::Info,
                    message: format!("step {seq} wrote 1000 rows"),
                },
            )
        })
        .collect();
    all.chunks(batch).map(<[Event]>::to_vec).collect()
}

fn event_writes(c: &mut Criterion) {
    let rt = runtime();
    let scratch = Scratch::new(&rt);
    let stores: Vec<(&str, Arc<dyn Storage>)> = vec![
        ("sqlite", Arc::new(scratch.sqlite("events"))),
        (
            "postgres",
            Arc::new(rt.block_on(scratch.postgres("events"))),
        ),
    ];
    let mut group = c.benchmark_group("event_writes");
    group.sample_size(10);
    const EVENTS: usize = 10_000;
    group.throughput(Throughput::Elements(EVENTS as u64));
    for (name, store) in &stores {
        for batch in [1usize, 100, 1000] {
            let mut run = 0u64;
            group.bench_with_input(
                BenchmarkId::new(*name, format!("batch_{batch}")),
                &batch,
                |b, &batch| {
                    b.to_async(&rt).iter_batched(
                        || {
                            run += 1;
                            let id = format!("{name}-{batch}-{run}");
                            let record = contract::run_record(&id, 0);
                            (record, batches(&id, EVENTS, batch))
                        },
                        |(record, batches)| {
                            let store = Arc::clone(store);
                            async move {
                                store.create_run(&record).await.unwrap();
                                for batch in &batches {
                                    store.append_events(batch).await.unwrap();
                                }
                            }
                        },
                        BatchSize::PerIteration,
                    )
                },
            );
        }
    }
    group.finish();
}

fn materialization_overhead(c: &mut Criterion) {
    let rt = runtime();
    let scratch = Scratch::new(&rt);
    let specs: Vec<AssetSpec> = (0..1000)
        .map(|i| AssetSpec::new(format!("a{i}"), |_| async { Ok(()) }))
        .collect();
    let stores: Vec<(&str, Arc<dyn Storage>)> = vec![
        ("in_memory", Arc::new(InMemoryStorage::new())),
        ("sqlite", Arc::new(scratch.sqlite("runs"))),
        ("postgres", Arc::new(rt.block_on(scratch.postgres("runs")))),
    ];
    let mut group = c.benchmark_group("materialize_1000");
    group.sample_size(10);
    group.throughput(Throughput::Elements(1000));
    let defs = Definitions::builder().specs(specs).build().unwrap();
    for (name, store) in stores {
        let instance = Instance::from_shared(store);
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                let result = instance
                    .materialize(&defs, "*", RunConfig::new())
                    .await
                    .unwrap();
                assert!(result.success());
            })
        });
    }
    group.finish();
}

fn cli_asset_list(c: &mut Criterion) {
    let example = example::ecoanp();
    let home = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let status = Command::new(&example)
            .args(args)
            .env("DAGRS_HOME", home.path())
            .env_remove("INFLUX_URL")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "ecoanp {args:?} failed");
    };
    run(&["asset", "materialize", "--all"]);
    let mut group = c.benchmark_group("cli");
    group.sample_size(20);
    group.bench_function("ecoanp_asset_list", |b| b.iter(|| run(&["asset", "list"])));
    group.finish();
}

criterion_group!(
    benches,
    event_writes,
    materialization_overhead,
    cli_asset_list
);
criterion_main!(benches);
