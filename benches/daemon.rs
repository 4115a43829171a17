//! The daemon: one evaluation pass over 1,000 schedules and 1,000 sensors (every sensor due,
//! the worst case), on the in-memory and the SQLite store; and the time from a schedule's
//! tick to its run's first step, with the daemon running on the system clock.
//!
//! ```text
//! cargo bench --bench daemon
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DurationRound, TimeDelta, Utc};
use criterion::{criterion_group, criterion_main, Criterion};
use dagrs_core::storage::SqliteStorage;
use dagrs_core::{
    AssetJob, AssetSpec, Daemon, Definitions, EventKind, Instance, ManualClock, Schedule, Sensor,
    SensorContext, SensorResult,
};
use tokio_util::sync::CancellationToken;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// 1,000 hourly schedules (at minutes spread over the hour) and 1,000 sensors that skip, all
/// running, sensors due every `interval`.
fn many(interval: Duration) -> Definitions {
    let schedules = (0..1000).map(|i| {
        Schedule::new(
            format!("schedule_{i}"),
            "job",
            format!("{} * * * *", i % 60),
        )
        .running()
    });
    let sensors = (0..1000).map(|i| {
        Sensor::new(format!("sensor_{i}"), |_ctx: SensorContext| async {
            Ok(SensorResult::skip("nothing new"))
        })
        .minimum_interval(interval)
        .running()
    });
    let mut defs = Definitions::builder()
        .specs([AssetSpec::new("a", |_| async { Ok(()) })])
        .job(AssetJob::new("job", "*"));
    for schedule in schedules {
        defs = defs.schedule(schedule);
    }
    for sensor in sensors {
        defs = defs.sensor(sensor);
    }
    defs.build().unwrap()
}

fn evaluate(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    // Every sensor due at every pass (the worst case), or each every 30 s with a pass a
    // second (the default interval: a thirtieth of them due at each pass).
    for (case, interval, step) in [
        ("all_due", Duration::ZERO, Duration::from_millis(1)),
        ("every_30s", Duration::from_secs(30), Duration::from_secs(1)),
    ] {
        let defs = many(interval);
        let instances = [
            ("in_memory", Instance::ephemeral()),
            (
                "sqlite",
                Instance::new(SqliteStorage::open(dir.path().join(format!("{case}.db"))).unwrap()),
            ),
        ];
        let mut group =
            c.benchmark_group(format!("daemon_pass_1000_schedules_1000_sensors_{case}"));
        group.sample_size(20);
        for (name, instance) in instances {
            // No schedule is due between ticks; the clock moves `step` a pass.
            let clock = Arc::new(ManualClock::new("2026-01-01T00:00:30Z".parse().unwrap()));
            let daemon = Daemon::new(instance, defs.clone()).with_clock(clock.clone());
            rt.block_on(daemon.evaluate()).unwrap();
            group.bench_function(name, |b| {
                b.iter(|| {
                    clock.advance(step);
                    rt.block_on(daemon.evaluate()).unwrap()
                })
            });
        }
        group.finish();
    }
}

fn tick_to_run_start(c: &mut Criterion) {
    let rt = runtime();
    let defs = Definitions::builder()
        .specs([AssetSpec::new("a", |_| async { Ok(()) })])
        .job(AssetJob::new("job", "*"))
        .schedule(Schedule::new("every_second", "job", "* * * * * *").running())
        .build()
        .unwrap();
    let instance = Instance::ephemeral();
    let shutdown = CancellationToken::new();
    let daemon =
        Arc::new(Daemon::new(instance.clone(), defs).with_interval(Duration::from_secs(5)));
    let running = rt.spawn({
        let (daemon, shutdown) = (Arc::clone(&daemon), shutdown.clone());
        async move { daemon.run(shutdown).await }
    });
    let mut group = c.benchmark_group("schedule");
    group.sample_size(10);
    group.bench_function("tick_to_run_start", |b| {
        b.iter_custom(|iterations| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iterations {
                    // The next tick, then its run's first step.
                    let tick = (Utc::now() + TimeDelta::seconds(1))
                        .duration_trunc(TimeDelta::seconds(1))
                        .unwrap();
                    let deadline = Instant::now() + Duration::from_secs(5);
                    let started = loop {
                        let started = first_step_after(&instance, tick).await;
                        if let Some(at) = started {
                            break at;
                        }
                        assert!(Instant::now() < deadline, "no run for tick {tick}");
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    };
                    total += (started - tick).to_std().unwrap_or_default();
                }
                total
            })
        })
    });
    group.finish();
    shutdown.cancel();
    rt.block_on(running).unwrap().unwrap();
}

/// When the first step of the run of `tick` started, if it has.
async fn first_step_after(
    instance: &Instance,
    tick: chrono::DateTime<Utc>,
) -> Option<chrono::DateTime<Utc>> {
    let run = instance
        .runs(5)
        .await
        .ok()?
        .into_iter()
        .find(|run| run.tags.get(dagrs_core::TICK_TAG) == Some(&tick.to_rfc3339()))?;
    let events = instance.events(&run.run_id).await.ok()?;
    events
        .iter()
        .find(|e| matches!(e.kind, EventKind::StepStarted { .. }))
        .map(|e| e.timestamp)
}

criterion_group!(benches, evaluate, tick_to_run_start);
criterion_main!(benches);
