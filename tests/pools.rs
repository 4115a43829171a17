//! Concurrency pools: `#[asset(pool = "...")]`, the names `Definitions::build` accepts, the
//! slots an `Instance` shares between its runs, cancellation while a step waits for one, and
//! `--pool NAME=SLOTS` on the command line.

use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use dagrs_core::prelude::*;
use dagrs_core::{
    Asset, AssetSpec, Event, EventKind, Instance, LogLevel, MultiAsset, MultiAssetSpec,
    MultiOutputs, Problem, RunOptions, RunStatus, StepStatus,
};
use tokio::sync::mpsc;

/// How many pooled steps run at once, and the most that ever did.
#[derive(Default)]
struct Peak {
    running: AtomicUsize,
    most: AtomicUsize,
}

impl Peak {
    /// Counts one step in while `body` runs.
    async fn during<T>(&self, body: impl std::future::Future<Output = T>) -> T {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        let out = body.await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        out
    }

    fn most(&self) -> usize {
        self.most.load(Ordering::SeqCst)
    }
}

/// An asset of pool `pool` that takes `ms` milliseconds, counted by `peak`.
fn pooled(key: &str, pool: &str, peak: &Arc<Peak>, ms: u64) -> AssetSpec {
    let peak = Arc::clone(peak);
    AssetSpec::new(key, move |_| {
        let peak = Arc::clone(&peak);
        async move {
            peak.during(tokio::time::sleep(Duration::from_millis(ms)))
                .await;
            Ok(())
        }
    })
    .pool(pool)
}

const WAITING: &str = "waiting for a slot in pool `warehouse`";

/// Whether `events` has the pool's waiting line for `asset`.
fn waited(events: &[Event], asset: &str) -> bool {
    events.iter().any(|e| {
        e.asset.as_deref() == Some(asset)
            && matches!(&e.kind, EventKind::Log { level: LogLevel::Info, message } if message == WAITING)
    })
}

/// Receives forwarded events until `asset` logs that it waits for a slot.
async fn until_waiting(events: &mut mpsc::UnboundedReceiver<Event>, asset: &str) {
    let wait = async {
        while let Some(event) = events.recv().await {
            if waited(std::slice::from_ref(&event), asset) {
                return;
            }
        }
        panic!("the run ended before `{asset}` waited for a slot");
    };
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .expect("the step waits for a slot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runs_of_one_instance_share_the_slots_of_a_pool() {
    let peak = Arc::new(Peak::default());
    // Each run's `free` waits for the other's: both runs finish only if it overlaps.
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let free = {
        let barrier = Arc::clone(&barrier);
        AssetSpec::new("free", move |_| {
            let barrier = Arc::clone(&barrier);
            async move {
                barrier.wait().await;
                Ok(())
            }
        })
    };
    // A multi-asset in the pool takes one slot per attempt, for all its outs.
    let split = {
        let peak = Arc::clone(&peak);
        MultiAssetSpec::new("split", move |_| {
            let peak = Arc::clone(&peak);
            async move {
                peak.during(tokio::time::sleep(Duration::from_millis(20)))
                    .await;
                MultiOutputs::new().with("left", 1u32)?.with("right", 2u32)
            }
        })
        .out(dagrs_core::AssetOut::new::<u32>("left"))
        .out(dagrs_core::AssetOut::new::<u32>("right"))
        .pool("warehouse")
    };
    let mut specs = vec![
        pooled("load_a", "warehouse", &peak, 20),
        pooled("load_b", "warehouse", &peak, 20),
        pooled("load_c", "warehouse", &peak, 20),
        free,
    ];
    specs.extend(split.into_specs());
    let defs = Definitions::builder().specs(specs).build().unwrap();
    let instance = Instance::ephemeral().with_pool_limit("warehouse", 1);
    assert_eq!(instance.pool_limits().get("warehouse"), Some(&1));

    let first = instance
        .launch(&defs, "*", RunOptions::new())
        .await
        .unwrap();
    let second = instance
        .launch(&defs, "*", RunOptions::new())
        .await
        .unwrap();
    let both = async { (first.wait().await, second.wait().await) };
    let (first, second) = tokio::time::timeout(Duration::from_secs(60), both)
        .await
        .expect("the unpooled assets of the two runs overlap");
    let (first, second) = (first.unwrap(), second.unwrap());
    assert!(first.success() && second.success());
    assert_eq!(peak.most(), 1, "two pooled steps ran at once");

    let mut events = first.events().await.unwrap();
    events.extend(second.events().await.unwrap());
    // Eight pooled steps for one slot: some waited, and said so; `free` never did.
    let waits = events
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::Log { message, .. } if message == WAITING))
        .count();
    assert!(waits >= 1, "no step logged its wait");
    assert!(!waited(&events, "free"));
    assert!(
        !waited(&events, "right"),
        "a multi-asset logs under its first out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_cancelled_while_a_step_waits_for_a_slot_ends_cancelled_and_frees_nothing() {
    let peak = Arc::new(Peak::default());
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let started_tx = Arc::new(std::sync::Mutex::new(Some(started_tx)));
    let release = Arc::new(tokio::sync::Notify::new());
    let hold = {
        let release = Arc::clone(&release);
        AssetSpec::new("hold", move |_| {
            let (release, started_tx) = (Arc::clone(&release), Arc::clone(&started_tx));
            async move {
                if let Some(tx) = started_tx.lock().unwrap().take() {
                    tx.send(()).unwrap();
                }
                release.notified().await;
                Ok(())
            }
        })
        .pool("warehouse")
    };
    let defs = Definitions::builder()
        .specs([
            hold,
            AssetSpec::new("queued", |_| async { Ok(()) }).pool("warehouse"),
            pooled("count_a", "warehouse", &peak, 50),
            pooled("count_b", "warehouse", &peak, 50),
        ])
        .build()
        .unwrap();
    let instance = Instance::ephemeral().with_pool_limit("warehouse", 1);
    let holder = instance
        .launch(&defs, "hold", RunOptions::new())
        .await
        .unwrap();
    started_rx.await.unwrap();

    // The second run's step waits for the slot `hold` has; the run is cancelled meanwhile.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let waiting = instance
        .launch(&defs, "queued", RunOptions::new().forward_events(tx))
        .await
        .unwrap();
    until_waiting(&mut rx, "queued").await;
    waiting.cancel();
    let result = waiting.wait().await.unwrap();
    assert_eq!(result.status(), RunStatus::Cancelled);
    let queued = result.step("queued").unwrap();
    assert_eq!((queued.status, queued.attempts), (StepStatus::Skipped, 0));
    assert!(!result
        .events()
        .await
        .unwrap()
        .iter()
        .any(|e| matches!(e.kind, EventKind::StepStarted { .. })));

    // `hold` still has the slot: a third run waits too, and runs once it is given back.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let third = instance
        .launch(&defs, "queued", RunOptions::new().forward_events(tx))
        .await
        .unwrap();
    until_waiting(&mut rx, "queued").await;
    release.notify_one();
    assert!(holder.wait().await.unwrap().success());
    assert!(third.wait().await.unwrap().success());

    // And the pool still has exactly one slot.
    let counted = instance
        .materialize(&defs, "count_a count_b", RunConfig::new())
        .await
        .unwrap();
    assert!(counted.success());
    assert_eq!(peak.most(), 1);
}

#[tokio::test]
async fn steps_of_a_pool_limited_to_zero_never_start_until_the_run_is_cancelled() {
    let defs = Definitions::builder()
        .specs([AssetSpec::new("queued", |_| async { Ok(()) }).pool("warehouse")])
        .build()
        .unwrap();
    let instance = Instance::ephemeral().with_pool_limit("warehouse", 0);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handle = instance
        .launch(&defs, "*", RunOptions::new().forward_events(tx))
        .await
        .unwrap();
    until_waiting(&mut rx, "queued").await;
    handle.cancel();
    let result = handle.wait().await.unwrap();
    assert_eq!(result.status(), RunStatus::Cancelled);
    assert_eq!(result.step("queued").unwrap().status, StepStatus::Skipped);
}

/// Loads into the warehouse, one at a time.
#[asset(pool = "warehouse", group = "loads")]
async fn load_orders() -> Result<u32> {
    Ok(1)
}

#[asset]
async fn unpooled() -> Result<u32> {
    Ok(2)
}

#[multi_asset(outs(north: u32, south: u32), pool = "warehouse")]
async fn regions() -> Result<(u32, u32)> {
    Ok((1, 2))
}

#[test]
fn the_pool_key_of_the_macros_lands_in_the_spec() {
    assert_eq!(load_orders::spec().pool_name(), Some("warehouse"));
    assert_eq!(load_orders::spec().group_name(), Some("loads"));
    assert_eq!(unpooled::spec().pool_name(), None);
    let outs = regions::specs();
    assert_eq!(outs.len(), 2);
    assert!(outs.iter().all(|s| s.pool_name() == Some("warehouse")));
}

#[test]
fn a_bad_pool_name_is_a_build_error_naming_the_asset() {
    let noop = |key: &str| AssetSpec::new(key, |_| async { Ok(()) });
    let err = Definitions::builder()
        .specs([
            noop("empty").pool(""),
            noop("control").pool("ware\nhouse"),
            noop("long").pool("x".repeat(256)),
            noop("fine").pool("x".repeat(255)),
            noop("unicode").pool("entrepôt 1/2"),
        ])
        .build()
        .unwrap_err();
    let named: Vec<&str> = err
        .problems()
        .iter()
        .map(|p| match p {
            Problem::InvalidAsset { asset, reason } => {
                assert!(reason.contains("pool name"), "{reason}");
                asset.as_str()
            }
            other => panic!("unexpected problem: {other}"),
        })
        .collect();
    assert_eq!(named, ["empty", "control", "long"], "{err}");
    let text = err.to_string();
    assert!(
        text.contains("asset `empty`: its pool name \"\" is invalid: pool names are non-empty"),
        "{text}"
    );
    // Control characters are escaped, never printed as they are.
    assert!(text.contains(r#""ware\nhouse""#), "{text}");
}

fn exit(code: ExitCode) -> String {
    format!("{code:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_flag_limits_the_command_and_a_malformed_one_exits_2() {
    let peak = Arc::new(Peak::default());
    let defs = Definitions::builder()
        .specs([
            pooled("a", "warehouse", &peak, 30),
            pooled("b", "warehouse", &peak, 30),
        ])
        .build()
        .unwrap();
    let instance = Instance::ephemeral();
    let args = [
        "dagrs",
        "asset",
        "materialize",
        "--all",
        "--json",
        "--pool",
        "warehouse=1",
        "--pool",
        "other=3",
    ];
    let code = dagrs_core::cli::run_with(defs.clone(), instance.clone(), args).await;
    assert_eq!(exit(code), exit(ExitCode::SUCCESS));
    assert_eq!(peak.most(), 1, "the flag's limit was not applied");
    // The limits were for that command: the instance itself has none.
    assert!(instance.pool_limits().is_empty());
    let run = &instance.runs(1).await.unwrap()[0];
    let events = instance.events(&run.run_id).await.unwrap();
    assert!(waited(&events, "a") || waited(&events, "b"));

    for (verb, bad) in [
        (&["asset", "materialize", "--all"][..], "warehouse"),
        (&["asset", "materialize", "--all"][..], "warehouse=many"),
        (&["asset", "materialize", "--all"][..], "warehouse=-1"),
        (&["asset", "materialize", "--all"][..], "=1"),
        (&["daemon"][..], "warehouse=x"),
    ] {
        let mut args = vec!["dagrs"];
        args.extend(verb);
        args.extend(["--pool", bad]);
        let code = dagrs_core::cli::run_with(defs.clone(), instance.clone(), args).await;
        assert_eq!(exit(code), exit(ExitCode::from(2)), "--pool {bad}");
    }
    assert_eq!(
        instance.runs(10).await.unwrap().len(),
        1,
        "nothing else ran"
    );
}

#[test]
fn a_malformed_pool_flag_says_what_it_expects() {
    let home = tempfile::tempdir().unwrap();
    for (bad, says) in [
        ("warehouse", "expected NAME=SLOTS"),
        ("warehouse=many", "SLOTS must be a whole number"),
        ("=2", "invalid pool name: pool names are non-empty"),
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_dagrs-crash-probe"))
            .args(["asset", "materialize", "--all", "--pool", bad])
            .env("DAGRS_HOME", home.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("--pool"), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
    }
}
