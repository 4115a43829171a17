//! The executor as users rely on it: ordering, concurrency, retries, skipping, timeouts,
//! cancellation and the event log.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use dagrs_core::prelude::*;
use dagrs_core::{
    AssetSpec, Event, EventKind, Instance, LogLevel, Problem, RunOptions, RunStatus, StepStatus,
};

fn kinds_of<'a>(events: &'a [Event], asset: &str) -> Vec<&'a EventKind> {
    events
        .iter()
        .filter(|e| e.asset.as_deref() == Some(asset))
        .map(|e| &e.kind)
        .collect()
}

fn position(events: &[Event], asset: &str, pred: impl Fn(&EventKind) -> bool) -> usize {
    events
        .iter()
        .position(|e| e.asset.as_deref() == Some(asset) && pred(&e.kind))
        .unwrap_or_else(|| panic!("no such event for {asset}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_assets_overlap_in_time() {
    // Each asset waits for the other at a barrier: they can only finish if they run at once.
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let spec = |name: &str| {
        let barrier = Arc::clone(&barrier);
        AssetSpec::new(name, move |_| {
            let barrier = Arc::clone(&barrier);
            async move {
                barrier.wait().await;
                Ok(())
            }
        })
    };
    let defs = Definitions::builder()
        .specs([spec("left"), spec("right")])
        .build()
        .unwrap();
    let result = materialize(&defs, "*", RunConfig::new()).await.unwrap();
    assert!(result.success());
    let events = &result.events().await.unwrap();
    let started = |a| position(events, a, |k| matches!(k, EventKind::StepStarted { .. }));
    let done = |a| position(events, a, |k| matches!(k, EventKind::StepSucceeded { .. }));
    assert!(started("left") < done("right") && started("right") < done("left"));
    // The log is numbered without gaps.
    assert!(events.iter().enumerate().all(|(i, e)| e.seq == i as u64));
}

#[tokio::test]
async fn concurrency_limit_is_respected() {
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let specs = (0..8).map(|i| {
        let (running, peak) = (Arc::clone(&running), Arc::clone(&peak));
        AssetSpec::new(format!("a{i}"), move |_| {
            let (running, peak) = (Arc::clone(&running), Arc::clone(&peak));
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                for _ in 0..10 {
                    tokio::task::yield_now().await;
                }
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            }
        })
    });
    let defs = Definitions::builder().specs(specs).build().unwrap();
    let handle = Instance::ephemeral()
        .with_max_concurrency(3)
        .launch(&defs, "*", RunOptions::new())
        .await
        .unwrap();
    assert!(handle.wait().await.unwrap().success());
    assert!(
        peak.load(Ordering::SeqCst) <= 3,
        "peak {}",
        peak.load(Ordering::SeqCst)
    );
    assert!(peak.load(Ordering::SeqCst) >= 2, "steps never overlapped");
}

#[tokio::test]
async fn assets_run_after_their_dependencies_and_get_typed_inputs() {
    #[asset]
    async fn numbers() -> Result<Vec<u64>> {
        Ok(vec![1, 2, 3, 4])
    }
    #[asset]
    fn total(numbers: Input<numbers>) -> Result<u64> {
        Ok(numbers.iter().sum())
    }
    #[asset]
    async fn report(
        ctx: &AssetContext,
        total: Input<total>,
        numbers: Input<numbers>,
    ) -> Result<String> {
        ctx.log.info(format!("{} numbers", numbers.len()));
        ctx.add_metadata("rows", numbers.len());
        Ok(format!("sum={}", *total))
    }
    let defs = Definitions::builder()
        .specs(assets![report, total, numbers])
        .build()
        .unwrap();
    let result = materialize(&defs, "*", RunConfig::new()).await.unwrap();
    assert!(result.success(), "{result}");
    assert_eq!(result.output::<total>(), Some(&10));
    assert_eq!(
        result.output::<report>().map(String::as_str),
        Some("sum=10")
    );
    assert_eq!(
        result.output_value("numbers"),
        Some(&serde_json::json!([1, 2, 3, 4]))
    );
    let events = &result.events().await.unwrap();
    let done = |a| position(events, a, |k| matches!(k, EventKind::StepSucceeded { .. }));
    let started = |a| position(events, a, |k| matches!(k, EventKind::StepStarted { .. }));
    assert!(done("numbers") < started("total") && done("total") < started("report"));
    let report_events = kinds_of(events, "report");
    assert!(report_events.iter().any(|k| matches!(k,
        EventKind::Log { level: LogLevel::Info, message } if message == "4 numbers")));
    assert!(report_events.iter().any(|k| matches!(k,
        EventKind::Materialization { metadata, .. } if metadata["rows"] == 4)));
    assert_eq!(result.step("report").unwrap().metadata["rows"], 4);
    assert!(matches!(
        events.last().unwrap().kind,
        EventKind::RunSucceeded
    ));
}

#[tokio::test(start_paused = true)]
async fn retries_follow_the_backoff_and_every_attempt_is_an_event() {
    let attempts: Arc<Mutex<Vec<tokio::time::Instant>>> = Arc::default();
    let seen = Arc::clone(&attempts);
    let flaky = AssetSpec::new("flaky", move |scope| {
        let seen = Arc::clone(&seen);
        async move {
            seen.lock().unwrap().push(tokio::time::Instant::now());
            if scope.context().attempt() < 3 {
                anyhow::bail!("source not ready (attempt {})", scope.context().attempt());
            }
            Ok(scope.context().attempt())
        }
    })
    .retry(Retry::exponential(3, Duration::from_secs(60)));
    let defs = Definitions::builder().specs([flaky]).build().unwrap();
    let result = materialize(&defs, "*", RunConfig::new()).await.unwrap();
    assert!(result.success());
    let step = result.step("flaky").unwrap();
    assert_eq!((step.status, step.attempts), (StepStatus::Succeeded, 3));

    let times = attempts.lock().unwrap().clone();
    assert_eq!(times[1] - times[0], Duration::from_secs(60));
    assert_eq!(times[2] - times[1], Duration::from_secs(120));

    let events = result.events().await.unwrap();
    let kinds = kinds_of(&events, "flaky");
    let retries: Vec<(u32, Duration)> = kinds
        .iter()
        .filter_map(|k| match k {
            EventKind::StepRetrying {
                next_attempt,
                delay,
            } => Some((*next_attempt, *delay)),
            _ => None,
        })
        .collect();
    assert_eq!(
        retries,
        [(2, Duration::from_secs(60)), (3, Duration::from_secs(120))]
    );
    let failures: Vec<(u32, bool, String)> = kinds
        .iter()
        .filter_map(|k| match k {
            EventKind::StepFailed {
                attempt,
                will_retry,
                error,
                ..
            } => Some((*attempt, *will_retry, error.message.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        failures,
        [
            (1, true, "source not ready (attempt 1)".to_string()),
            (2, true, "source not ready (attempt 2)".to_string())
        ]
    );
    let starts = kinds
        .iter()
        .filter(|k| matches!(k, EventKind::StepStarted { .. }))
        .count();
    assert_eq!(starts, 3);
}

#[tokio::test(start_paused = true)]
async fn a_step_that_keeps_failing_fails_after_its_last_retry_with_its_error_chain() {
    let broken = AssetSpec::new("broken", |_| async {
        let cause =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        Err::<(), _>(anyhow::Error::new(cause).context("cannot reach the source"))
    })
    .retry(Retry::linear(2, Duration::from_secs(5)));
    let defs = Definitions::builder().specs([broken]).build().unwrap();
    let result = materialize(&defs, "broken", RunConfig::new())
        .await
        .unwrap();
    assert_eq!(result.status(), RunStatus::Failed);
    let step = result.step("broken").unwrap();
    assert_eq!((step.status, step.attempts), (StepStatus::Failed, 3));
    let error = step.error.as_ref().unwrap();
    assert_eq!(error.message, "cannot reach the source");
    assert_eq!(error.causes, ["connection refused"]);
    let delays: Vec<Duration> = kinds_of(&result.events().await.unwrap(), "broken")
        .into_iter()
        .filter_map(|k| match k {
            EventKind::StepRetrying { delay, .. } => Some(*delay),
            _ => None,
        })
        .collect();
    assert_eq!(delays, [Duration::from_secs(5), Duration::from_secs(10)]);
}

#[tokio::test]
async fn a_failure_skips_everything_downstream_and_the_sibling_branch_still_runs() {
    let ok = |name: &str| AssetSpec::new(name, |_| async { Ok(1u8) });
    let defs = Definitions::builder()
        .specs([
            AssetSpec::new("source", |_| async {
                Err::<u8, _>(anyhow::anyhow!("boom"))
            }),
            ok("clean").dep("source"),
            ok("report").dep("clean").dep("side"),
            ok("side"),
            ok("side_report").dep("side"),
        ])
        .build()
        .unwrap();
    let result = materialize(&defs, "*", RunConfig::new()).await.unwrap();
    assert!(!result.success());
    let status = |k| result.step(k).unwrap().status;
    assert_eq!(status("source"), StepStatus::Failed);
    assert_eq!(status("clean"), StepStatus::Skipped);
    assert_eq!(status("report"), StepStatus::Skipped);
    assert_eq!(status("side"), StepStatus::Succeeded);
    assert_eq!(status("side_report"), StepStatus::Succeeded);
    assert!(kinds_of(&result.events().await.unwrap(), "clean")
        .iter()
        .any(|k| matches!(k,
        EventKind::StepSkipped { reason } if reason == "upstream `source` failed")));
    match &result.events().await.unwrap().last().unwrap().kind {
        EventKind::RunFailed { failed, skipped } => {
            assert_eq!(failed, &["source"]);
            assert_eq!(skipped, &["clean", "report"]);
        }
        other => panic!("run ended with {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_step_over_its_timeout_fails() {
    let slow = AssetSpec::new("slow", |_| async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(())
    })
    .timeout(Duration::from_secs(30));
    let defs = Definitions::builder().specs([slow]).build().unwrap();
    let result = materialize(&defs, "*", RunConfig::new()).await.unwrap();
    let step = result.step("slow").unwrap();
    assert_eq!(step.status, StepStatus::Failed);
    assert!(step
        .error
        .as_ref()
        .unwrap()
        .message
        .starts_with("timed out after 30s"));
}

#[tokio::test]
async fn a_panicking_asset_fails_with_the_panic_message_and_is_not_retried() {
    let defs = Definitions::builder()
        .specs([AssetSpec::new("panics", |_| async {
            if true {
                panic!("index out of range");
            }
            Ok(())
        })
        .retry(Retry::fixed(3, Duration::from_secs(60)))])
        .build()
        .unwrap();
    let result = materialize(&defs, "*", RunConfig::new()).await.unwrap();
    let step = result.step("panics").unwrap();
    assert_eq!(
        step.error.as_ref().unwrap().message,
        "asset panicked: index out of range"
    );
    assert_eq!(
        step.attempts, 1,
        "a panic is a bug: retrying it cannot help"
    );
}

#[tokio::test]
async fn cancelling_a_run_stops_it_tells_running_steps_and_skips_the_rest() {
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let started_tx = Arc::new(Mutex::new(Some(started_tx)));
    let (told_tx, told_rx) = std::sync::mpsc::channel();
    let told_tx = Arc::new(Mutex::new(told_tx));
    // A blocking step cannot be dropped at an await: it has to notice the cancellation.
    let long = AssetSpec::new("long", move |scope| {
        let started_tx = Arc::clone(&started_tx);
        let told_tx = Arc::clone(&told_tx);
        dagrs_core::__private::run_blocking(move || {
            started_tx.lock().unwrap().take().unwrap().send(()).unwrap();
            while !scope.context().is_cancelled() {
                std::thread::sleep(Duration::from_millis(1));
            }
            told_tx.lock().unwrap().send(scope.context().attempt())?;
            Ok(())
        })
    });
    let defs = Definitions::builder()
        .specs([
            long,
            AssetSpec::new("after", |_| async { Ok(()) }).dep("long"),
        ])
        .build()
        .unwrap();
    let instance = Instance::ephemeral();
    let handle = instance
        .launch(&defs, "*", RunOptions::new())
        .await
        .unwrap();
    started_rx.await.unwrap();
    handle.cancel();
    let result = handle.wait().await.unwrap();
    assert_eq!(result.status(), RunStatus::Cancelled);
    assert_eq!(result.step("long").unwrap().status, StepStatus::Cancelled);
    assert_eq!(result.step("after").unwrap().status, StepStatus::Skipped);
    assert!(kinds_of(&result.events().await.unwrap(), "long")
        .iter()
        .any(|k| matches!(k, EventKind::StepCancelled { attempt: 1 })));
    assert!(kinds_of(&result.events().await.unwrap(), "after")
        .iter()
        .any(|k| matches!(k,
        EventKind::StepSkipped { reason } if reason == "upstream `long` was cancelled")));
    assert!(matches!(
        result.events().await.unwrap().last().unwrap().kind,
        EventKind::RunCancelled
    ));
    let stored = instance.run(result.run_id()).await.unwrap();
    assert_eq!(stored.status, RunStatus::Cancelled);
    assert_eq!(told_rx.recv_timeout(Duration::from_secs(60)).unwrap(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn blocking_assets_do_not_stall_the_async_runtime() {
    // The blocking asset waits for a message that only the async asset sends; on a
    // single-threaded runtime this finishes only if the blocking asset runs off the runtime.
    let (tx, rx) = std::sync::mpsc::channel::<u32>();
    let rx = Arc::new(Mutex::new(rx));
    let tx = Arc::new(Mutex::new(tx));
    let defs = Definitions::builder()
        .specs([
            AssetSpec::new("waits", move |_| {
                let rx = Arc::clone(&rx);
                dagrs_core::__private::run_blocking(move || {
                    let got = rx.lock().unwrap().recv_timeout(Duration::from_secs(60))?;
                    Ok(got)
                })
            }),
            AssetSpec::new("sends", move |_| {
                let tx = Arc::clone(&tx);
                async move {
                    tokio::task::yield_now().await;
                    tx.lock().unwrap().send(7)?;
                    Ok(())
                }
            }),
        ])
        .build()
        .unwrap();
    let result = materialize(&defs, "*", RunConfig::new()).await.unwrap();
    assert!(result.success(), "{result}");
    assert_eq!(result.output_value("waits"), Some(&serde_json::json!(7)));
}

#[tokio::test]
async fn an_unselected_input_comes_from_the_last_stored_materialization() {
    #[asset]
    async fn base() -> Result<u32> {
        Ok(20)
    }
    #[asset]
    async fn doubled(base: Input<base>) -> Result<u32> {
        Ok(*base * 2)
    }
    let defs = Definitions::builder()
        .specs(assets![base, doubled])
        .build()
        .unwrap();
    let instance = Instance::ephemeral();
    let err = instance
        .materialize(&defs, "doubled", RunConfig::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err.problems(), [Problem::MissingInput { asset, input, .. }] if asset == "doubled" && input == "base"),
        "{err}"
    );
    assert!(err.to_string().contains("select it too (e.g. `+doubled`)"));
    assert!(
        instance.runs(10).await.unwrap().is_empty(),
        "a rejected run was recorded"
    );

    assert!(instance
        .materialize(&defs, "base", RunConfig::new())
        .await
        .unwrap()
        .success());
    let result = instance
        .materialize(&defs, "doubled", RunConfig::new())
        .await
        .unwrap();
    assert_eq!(result.output::<doubled>(), Some(&40));
    assert_eq!(result.steps().len(), 1);
}

#[tokio::test]
async fn passwords_never_reach_the_event_log() {
    let leaky = AssetSpec::new("leaky", |scope| async move {
        scope
            .context()
            .log
            .info("connecting to postgres://app:hunter2@db:5432/ecoanp");
        Err::<(), _>(anyhow::anyhow!(
            "cannot connect to postgres://app:hunter2@db:5432/ecoanp"
        ))
    });
    let defs = Definitions::builder().specs([leaky]).build().unwrap();
    let result = materialize(&defs, "*", RunConfig::new()).await.unwrap();
    let log = serde_json::to_string(&result.events().await.unwrap()).unwrap();
    assert!(!log.contains("hunter2"), "{log}");
    assert!(log.contains("postgres://app:***@db:5432/ecoanp"), "{log}");
    let error = result.step("leaky").unwrap().error.clone().unwrap();
    assert_eq!(
        error.message,
        "cannot connect to postgres://app:***@db:5432/ecoanp"
    );
}

#[tokio::test]
async fn steps_waiting_for_a_slot_when_the_run_is_cancelled_are_skipped() {
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let started_tx = Arc::new(Mutex::new(Some(started_tx)));
    let busy = AssetSpec::new("busy", move |scope| {
        let started_tx = Arc::clone(&started_tx);
        async move {
            started_tx.lock().unwrap().take().unwrap().send(()).unwrap();
            scope.context().cancelled().await;
            Ok(())
        }
    });
    let defs = Definitions::builder()
        .specs([busy, AssetSpec::new("queued", |_| async { Ok(()) })])
        .build()
        .unwrap();
    let handle = Instance::ephemeral()
        .launch(&defs, "busy queued", RunOptions::new().max_concurrency(1))
        .await
        .unwrap();
    started_rx.await.unwrap();
    handle.cancel();
    let result = handle.wait().await.unwrap();
    assert_eq!(result.step("busy").unwrap().status, StepStatus::Cancelled);
    let queued = result.step("queued").unwrap();
    assert_eq!((queued.status, queued.attempts), (StepStatus::Skipped, 0));
    assert!(kinds_of(&result.events().await.unwrap(), "queued")
        .iter()
        .any(|k| matches!(k,
        EventKind::StepSkipped { reason } if reason == "run cancelled")));
}
