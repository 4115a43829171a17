//! Partitions at scale:
//!
//! - a minutely asset over two years (1,051,200 partitions) whose history is fragmented
//!   (every 100th minute failed, so 10,512 materialized ranges): its status and missing
//!   partitions (`Instance::asset_partitions` + `missing()`), with the status in memory,
//!   SQLite and PostgreSQL;
//! - planning a backfill of all of it (checks, first run's plan, stored record), and cutting
//!   all of it into one-partition runs;
//! - a backfill of 10,000 hourly partitions of a no-op asset, one run per partition, through
//!   the daemon on the in-memory store, end to end.
//!
//! ```text
//! cargo bench --bench partitions
//! ```

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use dagrs_core::partitions::{hourly, minutely, PartitionRange, PartitionsDefinition};
use dagrs_core::storage::{InMemoryStorage, RunRecord, SqliteStorage, Storage};
use dagrs_core::{
    AssetSpec, BackfillPolicy, BackfillRequest, BackfillStatus, Daemon, Definitions, Event,
    EventKind, Instance, RunConfig, RunId, RunStatus,
};
use dagrs_postgres::testing::TestDatabase;
use dagrs_postgres::PgStorage;
use tokio_util::sync::CancellationToken;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// 2024-11-30T00:00:00Z: two years before the benchmarks were first run.
const START: i64 = 1_732_924_800;

fn minutes() -> PartitionsDefinition {
    minutely("2024-11-30T00:00Z")
        .end("2026-11-30T00:00Z")
        .into()
}

fn defs(def: PartitionsDefinition) -> Definitions {
    Definitions::builder()
        .specs([AssetSpec::new("readings", |_| async { Ok(()) }).partitions(def)])
        .build()
        .unwrap()
}

/// Stores a history of `readings`: materialized ranges of 99 minutes, each followed by a
/// failed minute, up to `end` — in batches of one run per 1,000 ranges.
async fn fill(storage: &dyn Storage, end: i64) -> usize {
    let mut ranges = 0;
    let mut at = START;
    let mut batch = 0;
    while at < end {
        let run_id = RunId::from(format!("fill-{batch}").as_str());
        batch += 1;
        let now = chrono::Utc::now();
        storage
            .create_run(&RunRecord {
                run_id: run_id.clone(),
                status: RunStatus::Succeeded,
                selection: "readings".into(),
                assets: vec!["readings".into()],
                config: RunConfig::new(),
                tags: Default::default(),
                started_at: now,
                ended_at: Some(now),
                owner: String::new(),
                heartbeat_at: now,
                parent_run_id: None,
                failure: None,
            })
            .await
            .unwrap();
        let mut events = Vec::new();
        while at < end && events.len() < 2000 {
            let stop = (at + 99 * 60).min(end);
            let range = |start: i64, end: i64| PartitionRange {
                key: String::new(),
                dims: String::new(),
                start,
                end,
            };
            let seq = events.len() as u64;
            events.push(event(
                &run_id,
                seq,
                EventKind::Materialization {
                    metadata: Default::default(),
                    value: serde_json::Value::Null,
                    code_version: None,
                    partition: Some(range(at, stop)),
                },
            ));
            if stop + 60 <= end {
                events.push(event(
                    &run_id,
                    seq + 1,
                    EventKind::StepFailed {
                        attempt: 1,
                        error: dagrs_core::ErrorInfo {
                            message: "failed".into(),
                            causes: Vec::new(),
                        },
                        will_retry: false,
                        partition: Some(range(stop, stop + 60)),
                    },
                ));
            }
            ranges += 1;
            at = stop + 60;
        }
        storage.append_events(&events).await.unwrap();
    }
    ranges
}

fn event(run_id: &RunId, seq: u64, kind: EventKind) -> Event {
    Event {
        run_id: run_id.clone(),
        seq,
        timestamp: chrono::Utc::now(),
        asset: Some("readings".into()),
        kind,
    }
}

fn missing(c: &mut Criterion) {
    let rt = runtime();
    let def = minutes();
    let defs = defs(def.clone());
    let end = START + 730 * 86_400;
    let dir = tempfile::tempdir().unwrap();
    let db = rt.block_on(TestDatabase::create());
    let stores: Vec<(&str, Arc<dyn Storage>)> = vec![
        ("in_memory", Arc::new(InMemoryStorage::new())),
        (
            "sqlite",
            Arc::new(SqliteStorage::open(dir.path().join("p.db")).unwrap()),
        ),
        (
            "postgres",
            Arc::new(
                rt.block_on(PgStorage::connect(db.pg.clone(), "bench"))
                    .unwrap(),
            ),
        ),
    ];
    let mut group = c.benchmark_group("partitions_minutely_2_years_missing");
    group.sample_size(10);
    for (name, storage) in stores {
        let ranges = rt.block_on(fill(&*storage, end));
        let instance = Instance::from_shared(storage);
        let parts = rt
            .block_on(instance.asset_partitions(&defs, "readings"))
            .unwrap();
        let all = def.count(&parts.all);
        let missing = def.count(&parts.missing());
        eprintln!(
            "{name}: {all} partitions, {ranges} materialized ranges stored, {} failed, {missing} missing",
            def.count(&parts.status.failed)
        );
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                let parts = instance.asset_partitions(&defs, "readings").await.unwrap();
                parts.missing().range_count()
            })
        });
    }
    group.finish();
}

fn plan(c: &mut Criterion) {
    let rt = runtime();
    let def = minutes();
    let defs = defs(def.clone());
    let mut group = c.benchmark_group("partitions_minutely_2_years_backfill");
    group.sample_size(10);
    let instance = Instance::ephemeral();
    group.bench_function("launch_all", |b| {
        b.to_async(&rt).iter(|| async {
            let request = BackfillRequest::new("readings").all();
            instance.launch_backfill(&defs, request).await.unwrap()
        })
    });
    let parts = rt
        .block_on(instance.asset_partitions(&defs, "readings"))
        .unwrap();
    group.bench_function("cut_all_into_runs", |b| {
        b.iter(|| def.chunks(&parts.all, Some(1)).count())
    });
    group.finish();
}

fn backfill(c: &mut Criterion) {
    let rt = runtime();
    let defs = Definitions::builder()
        .specs([
            AssetSpec::new("hours", |_| async { Ok(()) }).partitions(hourly("2025-01-01T00:00Z"))
        ])
        .build()
        .unwrap();
    let mut group = c.benchmark_group("backfill_10000_hourly_partitions_one_run_each");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(30));
    group.bench_function("in_memory", |b| {
        b.to_async(&rt).iter(|| async {
            let instance = Instance::ephemeral();
            let request = BackfillRequest::new("hours")
                .range("2025-01-01-00:00", "2026-02-21-16:00")
                .policy(BackfillPolicy::RunPerPartition);
            let backfill = instance.launch_backfill(&defs, request).await.unwrap();
            let daemon = Daemon::new(instance.clone(), defs.clone());
            let shutdown = CancellationToken::new();
            let running = tokio::spawn({
                let shutdown = shutdown.clone();
                async move { daemon.run(shutdown).await }
            });
            loop {
                let b = instance.backfill(&backfill.id).await.unwrap();
                if !b.status.is_active() {
                    assert_eq!(b.status, BackfillStatus::Completed);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            shutdown.cancel();
            running.await.unwrap().unwrap();
        })
    });
    group.finish();
}

criterion_group!(benches, missing, plan, backfill);
criterion_main!(benches);
