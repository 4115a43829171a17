//! Run history as users rely on it: staleness, re-execution from failure, retention,
//! cancellation through storage, abandoned runs.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use dagrs_core::prelude::*;
use dagrs_core::storage::{
    contract::run_record, recover_abandoned_runs, InMemoryStorage, Retention, Storage,
};
use dagrs_core::{AssetSpec, EventKind, Instance, RunOptions, RunStatus, Staleness, StepStatus};

fn store() -> Arc<dyn Storage> {
    Arc::new(InMemoryStorage::new())
}

#[tokio::test]
async fn staleness_follows_upstream_materializations_and_code_versions() {
    let instance = Instance::ephemeral();
    let build = |version: &str| {
        Definitions::builder()
            .specs([
                AssetSpec::new("raw", |_| async { Ok(1) }),
                AssetSpec::new("clean", |_| async { Ok(2) })
                    .dep("raw")
                    .code_version(version),
            ])
            .build()
            .unwrap()
    };
    let defs = build("v1");
    let stale = |states: &[dagrs_core::AssetState], key: &str| {
        states.iter().find(|s| s.key == key).unwrap().stale.clone()
    };
    let states = instance.asset_states(&defs).await.unwrap();
    assert_eq!(stale(&states, "raw"), Some(Staleness::NeverMaterialized));

    assert!(instance
        .materialize(&defs, "*", RunConfig::new())
        .await
        .unwrap()
        .success());
    let states = instance.asset_states(&defs).await.unwrap();
    assert_eq!(stale(&states, "raw"), None);
    assert_eq!(stale(&states, "clean"), None);

    assert!(instance
        .materialize(&defs, "raw", RunConfig::new())
        .await
        .unwrap()
        .success());
    let states = instance.asset_states(&defs).await.unwrap();
    assert_eq!(
        stale(&states, "clean"),
        Some(Staleness::UpstreamNewer {
            upstream: "raw".into()
        })
    );

    assert!(instance
        .materialize(&defs, "clean", RunConfig::new())
        .await
        .unwrap()
        .success());
    assert_eq!(
        stale(&instance.asset_states(&defs).await.unwrap(), "clean"),
        None
    );

    let changed = build("v2");
    assert_eq!(
        stale(&instance.asset_states(&changed).await.unwrap(), "clean"),
        Some(Staleness::CodeVersionChanged {
            materialized: Some("v1".into()),
            current: Some("v2".into()),
        })
    );
}

#[tokio::test]
async fn reexecution_runs_only_what_failed_and_reuses_stored_outputs() {
    static BROKEN: AtomicBool = AtomicBool::new(true);
    static SOURCE_RUNS: AtomicUsize = AtomicUsize::new(0);
    #[asset]
    async fn source() -> Result<u32> {
        SOURCE_RUNS.fetch_add(1, Ordering::SeqCst);
        Ok(20)
    }
    #[asset]
    async fn transform(source: Input<source>) -> Result<u32> {
        anyhow::ensure!(!BROKEN.load(Ordering::SeqCst), "transform is broken");
        Ok(*source + 1)
    }
    #[asset]
    async fn report(transform: Input<transform>) -> Result<String> {
        Ok(format!("value {}", *transform))
    }
    #[asset]
    async fn side(source: Input<source>) -> Result<u32> {
        Ok(*source)
    }
    let defs = Definitions::builder()
        .specs(assets![source, transform, report, side])
        .build()
        .unwrap();
    let instance = Instance::ephemeral();
    let first = instance
        .materialize(&defs, "*", RunConfig::new())
        .await
        .unwrap();
    assert_eq!(first.status(), RunStatus::Failed);
    assert_eq!(first.step("report").unwrap().status, StepStatus::Skipped);

    BROKEN.store(false, Ordering::SeqCst);
    let second = instance
        .reexecute_from_failure(&defs, first.run_id(), RunOptions::new())
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert!(second.success(), "{second}");
    let ran: Vec<&str> = second.steps().iter().map(|s| s.key.as_str()).collect();
    assert_eq!(ran, ["transform", "report"]);
    assert_eq!(
        SOURCE_RUNS.load(Ordering::SeqCst),
        1,
        "source is not run again"
    );
    assert_eq!(
        second.output::<report>().map(String::as_str),
        Some("value 21")
    );
    let record = instance.run(second.run_id()).await.unwrap();
    assert_eq!(record.parent_run_id.as_ref(), Some(first.run_id()));

    let err = instance
        .reexecute_from_failure(&defs, second.run_id(), RunOptions::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nothing to re-execute"), "{err}");
}

#[tokio::test]
async fn retention_after_each_run_keeps_the_newest_runs() {
    let defs = Definitions::builder()
        .specs([AssetSpec::new("a", |_| async { Ok(()) })])
        .build()
        .unwrap();
    let instance = Instance::ephemeral().with_retention(Retention {
        max_age: None,
        max_runs: Some(2),
    });
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(
            instance
                .materialize(&defs, "*", RunConfig::new())
                .await
                .unwrap()
                .run_id()
                .clone(),
        );
    }
    let kept: Vec<_> = instance
        .runs(10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.run_id)
        .collect();
    assert_eq!(kept, [ids[3].clone(), ids[2].clone()]);
    assert!(instance
        .storage()
        .events(&ids[0], None)
        .await
        .unwrap()
        .is_empty());
    let latest = instance
        .storage()
        .latest_materialization(&"a".into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(latest.run_id, ids[3]);
}

#[tokio::test(start_paused = true)]
async fn a_cancellation_requested_by_another_process_stops_the_run() {
    let defs = Definitions::builder()
        .specs([AssetSpec::new("waits", |scope| async move {
            scope.context().cancelled().await;
            Ok(())
        })])
        .build()
        .unwrap();
    let instance = Instance::ephemeral();
    let handle = instance
        .launch(&defs, "*", RunOptions::new())
        .await
        .unwrap();
    // What `run cancel ID` does from another process: it asks, and the run's own process
    // stops the run and records how it ended.
    let asked = instance
        .cancel_run(handle.run_id(), "cancelled from the command line")
        .await
        .unwrap();
    assert_eq!(asked, dagrs_core::Cancellation::Requested);
    let result = handle.wait().await.unwrap();
    assert_eq!(result.status(), RunStatus::Cancelled);
    assert!(matches!(
        result.events().await.unwrap().last().unwrap().kind,
        EventKind::RunCancelled
    ));
    let stored = instance.run(result.run_id()).await.unwrap();
    assert_eq!(stored.status, RunStatus::Cancelled);
    assert_eq!(
        stored.failure.as_deref(),
        Some("cancelled from the command line")
    );
}

#[tokio::test]
async fn a_cancellation_that_loses_the_race_reports_how_the_run_ended() {
    let defs = Definitions::builder()
        .specs([AssetSpec::new("quick", |_| async { Ok(1) })])
        .build()
        .unwrap();
    let instance = Instance::ephemeral();
    let result = instance
        .materialize(&defs, "*", RunConfig::new())
        .await
        .unwrap();
    let too_late = instance
        .cancel_run(result.run_id(), "too late")
        .await
        .unwrap();
    assert_eq!(
        too_late,
        dagrs_core::Cancellation::AlreadyEnded(RunStatus::Succeeded),
        "the run had already ended"
    );
    let stored = instance.run(result.run_id()).await.unwrap();
    assert_eq!(
        (stored.status, stored.failure),
        (RunStatus::Succeeded, None)
    );
}

#[tokio::test]
async fn a_run_without_heartbeats_is_marked_failed() {
    let storage = store();
    let mut silent = run_record("silent", 0);
    silent.owner = "some-other-host:12".into();
    storage.create_run(&silent).await.unwrap();
    let mut fresh = run_record("fresh", 0);
    fresh.owner = "some-other-host:13".into();
    fresh.heartbeat_at = chrono::Utc::now();
    storage.create_run(&fresh).await.unwrap();

    let marked = recover_abandoned_runs(
        &*storage,
        std::time::Duration::from_secs(30),
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    assert_eq!(marked, ["silent".into()]);
    let silent = storage.run(&"silent".into()).await.unwrap().unwrap();
    assert_eq!(silent.status, RunStatus::Failed);
    assert!(silent
        .failure
        .unwrap()
        .contains("no heartbeat from its process some-other-host:12"));
    let events = storage.events(&"silent".into(), None).await.unwrap();
    assert!(matches!(
        events.last().unwrap().kind,
        EventKind::RunAbandoned { .. }
    ));
    assert_eq!(
        storage.run(&"fresh".into()).await.unwrap().unwrap().status,
        RunStatus::Running
    );
}
