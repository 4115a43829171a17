//! Per-asset overhead as the run store fills: 1,000 independent no-op assets materialized
//! into a SQLite and a PostgreSQL store holding 0, 100,000, 300,000 and 1,000,000
//! materializations (and three times as many events). Each size is reached by running the
//! same 1,000-asset run again and again through the executor (not timed), so the store holds
//! what a year of hourly runs would leave behind.
//!
//! ```text
//! cargo bench --bench store_growth
//! ```
//!
//! Needs PostgreSQL on 127.0.0.1:5432 (user postgres); the bench creates and drops its own
//! database. Filling both stores to a million materializations takes a few minutes;
//! `GROWTH_STORE=sqlite` (or `postgres`) measures one store alone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use dagrs_core::storage::{SqliteStorage, Storage};
use dagrs_core::{AssetSpec, Definitions, Instance, RunConfig};
use dagrs_postgres::testing::TestDatabase;
use dagrs_postgres::PgStorage;

/// Assets per run.
const ASSETS: usize = 1000;

/// The store sizes measured, in materializations.
const SIZES: [usize; 4] = [0, 100_000, 300_000, 1_000_000];

async fn run(instance: &Instance, defs: &Definitions) {
    let result = instance
        .materialize(defs, "*", RunConfig::new())
        .await
        .unwrap();
    assert!(result.success());
}

fn store_growth(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = rt.block_on(TestDatabase::create());
    let defs = Definitions::builder()
        .specs((0..ASSETS).map(|i| AssetSpec::new(format!("a{i}"), |_| async { Ok(()) })))
        .build()
        .unwrap();
    let mut stores: Vec<(&str, Arc<dyn Storage>)> = vec![
        (
            "sqlite",
            Arc::new(SqliteStorage::open(dir.path().join("growth.db")).unwrap()),
        ),
        (
            "postgres",
            Arc::new(
                rt.block_on(async { PgStorage::connect(db.pg.clone(), "growth").await.unwrap() }),
            ),
        ),
    ];
    if let Ok(only) = std::env::var("GROWTH_STORE") {
        stores.retain(|(name, _)| *name == only);
    }
    let mut group = c.benchmark_group("store_growth");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(ASSETS as u64));
    for (name, store) in stores {
        let instance = Instance::from_shared(store);
        let mut held = 0;
        for size in SIZES {
            let started = Instant::now();
            rt.block_on(async {
                while held < size {
                    run(&instance, &defs).await;
                    held += ASSETS;
                }
            });
            eprintln!(
                "{name}: filled to {held} materializations in {:.1?}",
                started.elapsed()
            );
            group.bench_function(BenchmarkId::new(name, size), |b| {
                b.to_async(&rt).iter(|| async {
                    run(&instance, &defs).await;
                })
            });
            // What the measurement added counts towards the next size.
            held = rt.block_on(count(&instance));
        }
    }
    group.finish();
}

/// How many materializations the store holds.
async fn count(instance: &Instance) -> usize {
    instance.storage().runs(usize::MAX).await.unwrap().len() * ASSETS
}

criterion_group!(benches, store_growth);
criterion_main!(benches);
