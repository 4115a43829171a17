//! Scale-out on the local PostgreSQL: how many no-op steps worker processes (the crash
//! probe's release binary, `worker --concurrency 256`) claim, run and record per second with
//! 1, 2 and 4 workers; how long an idle worker takes from a run's enqueue to its step's start
//! (LISTEN/NOTIFY); and the cost of a step run through the queue against one run in-process,
//! side by side.
//!
//! `cargo build --release --bin dagrs-crash-probe && cargo bench --bench workers`

#[path = "../tests/support/wide.rs"]
mod wide;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dagrs_core::storage::Storage;
use dagrs_core::{Definitions, EventKind, Instance, RunConfig, RunId, RunOptions};
use dagrs_postgres::testing::TestDatabase;
use dagrs_postgres::{PgStorage, DEFAULT_SCHEMA};

/// Steps per queued run in the throughput and overhead groups.
const STEPS: usize = 2_000;

/// The crash probe's release binary, beside the running bench's.
fn probe() -> std::path::PathBuf {
    let probe = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("dagrs-crash-probe"))
        .unwrap();
    assert!(
        probe.exists(),
        "{} is missing: run `cargo build --release --bin dagrs-crash-probe` first",
        probe.display()
    );
    probe
}

/// Worker processes on `url`, running `wide` assets; killed when dropped.
struct Workers(Vec<Child>);

impl Workers {
    fn start(url: &str, count: usize, steps: usize) -> Self {
        let children = (0..count)
            .map(|_| {
                Command::new(probe())
                    .args(["worker", "--concurrency", "256"])
                    .env("PROBE_DATABASE_URL", url)
                    .env("PROBE_STEPS", steps.to_string())
                    .env("PROBE_CHAINS", steps.to_string())
                    .env("DAGRS_HOME", std::env::temp_dir())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        Workers(children)
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits (polling every millisecond) until `run_id` has ended.
async fn until_ended(storage: &dyn Storage, run_id: &RunId) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let run = storage.run(run_id).await.unwrap().unwrap();
        if run.status.is_final() {
            assert_eq!(run.status, dagrs_core::RunStatus::Succeeded);
            return;
        }
        assert!(Instant::now() < deadline, "run {run_id} did not end");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn defs(steps: usize) -> Definitions {
    Definitions::builder()
        .specs(wide::wide(steps, steps, None, None))
        .build()
        .unwrap()
}

/// Waits until `count` workers are registered.
async fn registered(instance: &Instance, count: usize) {
    let queue = instance.step_queue().unwrap();
    while queue.workers().await.unwrap().len() < count {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = runtime.block_on(TestDatabase::create());
    let instance: Instance = runtime
        .block_on(PgStorage::connect(db.pg.clone(), DEFAULT_SCHEMA))
        .unwrap()
        .instance();
    let storage = std::sync::Arc::clone(instance.storage());
    let many = defs(STEPS);

    let mut group = c.benchmark_group("queue_throughput");
    group
        .sample_size(10)
        .throughput(Throughput::Elements(STEPS as u64));
    for workers in [1, 2, 4] {
        let running = Workers::start(&db.url, workers, STEPS);
        runtime.block_on(registered(&instance, workers));
        group.bench_function(
            BenchmarkId::new("no_op_steps", format!("{workers}_workers")),
            |b| {
                b.to_async(&runtime).iter_custom(|iters| {
                    let (instance, storage, many) = (&instance, &storage, &many);
                    async move {
                        let started = Instant::now();
                        for _ in 0..iters {
                            let run_id = instance
                                .enqueue(many, "*", RunOptions::new())
                                .await
                                .unwrap();
                            until_ended(&**storage, &run_id).await;
                        }
                        started.elapsed()
                    }
                });
            },
        );
        drop(running);
        runtime.block_on(async {
            let queue = instance.step_queue().unwrap();
            for worker in queue.workers().await.unwrap() {
                queue.deregister_worker(&worker.id).await.unwrap();
            }
        });
    }
    group.finish();

    // One step per run, one idle worker: from the enqueue call to the step's start, as the
    // worker recorded it.
    let one = defs(1);
    let mut group = c.benchmark_group("enqueue_to_start");
    group.sample_size(20);
    let running = Workers::start(&db.url, 1, 1);
    runtime.block_on(registered(&instance, 1));
    group.bench_function("idle_worker", |b| {
        b.to_async(&runtime).iter_custom(|iters| {
            let (instance, storage, one) = (&instance, &storage, &one);
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    // Let the worker go idle (waiting on LISTEN) first.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    let enqueued = chrono::Utc::now();
                    let run_id = instance.enqueue(one, "*", RunOptions::new()).await.unwrap();
                    until_ended(&**storage, &run_id).await;
                    let started = storage
                        .events(&run_id, None)
                        .await
                        .unwrap()
                        .into_iter()
                        .find(|e| matches!(e.kind, EventKind::StepStarted { .. }))
                        .unwrap()
                        .timestamp;
                    total += (started - enqueued).to_std().unwrap_or_default();
                }
                total
            }
        });
    });
    drop(running);
    group.finish();

    // The same run of no-op steps, in-process on the same store, and through the queue with
    // one worker: the cost per step of going through the queue.
    let mut group = c.benchmark_group("step_overhead");
    group
        .sample_size(10)
        .throughput(Throughput::Elements(STEPS as u64));
    group.bench_function("in_process", |b| {
        b.to_async(&runtime).iter(|| async {
            let result = instance
                .materialize(&many, "*", RunConfig::new())
                .await
                .unwrap();
            assert!(result.success());
        });
    });
    runtime.block_on(async {
        let queue = instance.step_queue().unwrap();
        for worker in queue.workers().await.unwrap() {
            queue.deregister_worker(&worker.id).await.unwrap();
        }
    });
    let running = Workers::start(&db.url, 1, STEPS);
    runtime.block_on(registered(&instance, 1));
    group.bench_function("queued_1_worker", |b| {
        b.to_async(&runtime).iter(|| async {
            let run_id = instance
                .enqueue(&many, "*", RunOptions::new())
                .await
                .unwrap();
            until_ended(&*storage, &run_id).await;
        });
    });
    drop(running);
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
