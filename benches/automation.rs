//! Declarative automation and asset checks.
//!
//! - One daemon pass over 10,000 assets that all have an automation condition (5,000 roots
//!   `on_missing`, 5,000 children `eager` on one root each), on the in-memory and the SQLite
//!   store: with nothing changed since the last pass, and with 100 roots materialized since
//!   (so 100 children are requested, in one queued run). The queue starts nothing, so the pass
//!   is measured alone.
//! - A run of 1,000 no-op assets with one passing check each, beside the same run without.
//!
//! ```text
//! cargo bench --bench automation
//! ```

use std::sync::Arc;

use chrono::Utc;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use dagrs_core::automation::{eager, on_missing, AUTOMATION_TAG};
use dagrs_core::storage::SqliteStorage;
use dagrs_core::{
    materialize, AssetSpec, CheckResult, CheckSpec, Daemon, Definitions, Event, EventKind,
    Instance, ManualClock, RunConfig, RunId, RunQueue, RunStatus, TagLimit,
};

const ROOTS: usize = 5_000;
const CHANGED: usize = 100;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn noop(name: String) -> AssetSpec {
    AssetSpec::new(name, |_| async { Ok(()) })
}

/// 5,000 roots that fill themselves when missing, each with a child that follows it.
fn conditioned() -> Definitions {
    let roots = (0..ROOTS).map(|i| noop(format!("root_{i}")).automation(on_missing()));
    let children = (0..ROOTS).map(|i| {
        noop(format!("child_{i}"))
            .dep(format!("root_{i}"))
            .automation(eager())
    });
    Definitions::builder()
        .specs(roots.chain(children))
        .build()
        .unwrap()
}

/// Records a materialization of each root in `roots`, as a run that did it would.
async fn materialize_roots(instance: &Instance, roots: std::ops::Range<usize>) {
    let storage = instance.storage();
    let run_id = RunId::default();
    let now = Utc::now();
    storage
        .create_run(&dagrs_core::storage::RunRecord {
            run_id: run_id.clone(),
            status: RunStatus::Running,
            selection: "roots".into(),
            assets: roots.clone().map(|i| format!("root_{i}").into()).collect(),
            config: RunConfig::new(),
            tags: Default::default(),
            started_at: now,
            ended_at: None,
            owner: String::new(),
            heartbeat_at: now,
            parent_run_id: None,
            failure: None,
        })
        .await
        .unwrap();
    let events: Vec<Event> = roots
        .enumerate()
        .map(|(seq, i)| Event {
            run_id: run_id.clone(),
            seq: seq as u64,
            timestamp: Utc::now(),
            asset: Some(format!("root_{i}").into()),
            kind: EventKind::Materialization {
                metadata: Default::default(),
                value: serde_json::Value::Null,
                code_version: None,
                partition: None,
            },
        })
        .collect();
    storage.append_events(&events).await.unwrap();
    storage
        .finish_run(&run_id, RunStatus::Succeeded, Utc::now(), None)
        .await
        .unwrap();
}

/// Ends the runs automation queued, so the next pass finds nothing in progress.
async fn clear_queue(instance: &Instance) {
    let storage = instance.storage();
    for run in storage.queued_runs().await.unwrap() {
        storage
            .request_cancel(&run.run_id, "bench", Utc::now())
            .await
            .unwrap();
    }
}

fn passes(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let defs = conditioned();
    let instances = [
        ("in_memory", Instance::ephemeral()),
        (
            "sqlite",
            Instance::new(SqliteStorage::open(dir.path().join("automation.db")).unwrap()),
        ),
    ];
    let mut group = c.benchmark_group("automation_pass_10000_assets");
    group.sample_size(20);
    for (name, instance) in instances {
        // No automation run starts: the pass is measured, not the runs it requests.
        let held = TagLimit::new(AUTOMATION_TAG, 0);
        let instance = instance.with_run_queue(RunQueue::new(1).tag_limit(held));
        rt.block_on(async {
            let result = instance
                .materialize(&defs, "*", RunConfig::new())
                .await
                .unwrap();
            assert!(result.success());
        });
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let daemon = Daemon::new(instance.clone(), defs.clone()).with_clock(clock);
        rt.block_on(async {
            let first = daemon.evaluate().await.unwrap();
            assert!(first.automation_runs.is_empty(), "everything is up to date");
        });
        group.bench_function(format!("{name}/nothing_changed"), |b| {
            b.iter(|| {
                let pass = rt.block_on(daemon.evaluate()).unwrap();
                assert!(pass.automation_runs.is_empty());
            })
        });
        let mut next = 0;
        group.bench_function(format!("{name}/{CHANGED}_upstreams_changed"), |b| {
            b.iter_batched(
                || {
                    let first = next % (ROOTS / CHANGED) * CHANGED;
                    next += 1;
                    rt.block_on(async {
                        clear_queue(&instance).await;
                        materialize_roots(&instance, first..first + CHANGED).await;
                    });
                },
                |()| {
                    let pass = rt.block_on(daemon.evaluate()).unwrap();
                    assert_eq!(
                        pass.automation_runs.len(),
                        1,
                        "one run for the 100 children"
                    );
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

fn checks(c: &mut Criterion) {
    let rt = runtime();
    let specs = || (0..1_000).map(|i| noop(format!("a{i}")));
    let plain = Definitions::builder().specs(specs()).build().unwrap();
    let checked = Definitions::builder()
        .specs(specs())
        .checks((0..1_000).map(|i| {
            CheckSpec::new(format!("a{i}"), "ok", |_| async {
                Ok(CheckResult::passed())
            })
        }))
        .build()
        .unwrap();
    let mut group = c.benchmark_group("run_1000_noop_assets");
    group.sample_size(20);
    for (name, defs) in [("without_checks", plain), ("one_check_each", checked)] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let result = rt
                    .block_on(materialize(&defs, "*", RunConfig::new()))
                    .unwrap();
                assert!(result.success());
            })
        });
    }
    group.finish();
}

criterion_group!(benches, passes, checks);
criterion_main!(benches);
