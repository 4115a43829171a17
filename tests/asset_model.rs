//! The rest of the asset model: asset checks (blocking, severities, errors, reported by the
//! asset itself), external and observable source assets, and declarative automation
//! evaluated by the daemon on a clock the tests move.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use dagrs_core::automation::{eager, on_cron, overdue, AUTOMATION_TAG};
use dagrs_core::partitions::hourly;
use dagrs_core::prelude::*;
use dagrs_core::{
    asset_check, checks, observable_source_asset, AssetSpec, CheckResult, CheckSeverity, CheckSpec,
    Daemon, DataVersion, EventKind, ManualClock, Problem, Res, RunStatus, Staleness, StepStatus,
    PARTITION_TAG,
};

// ---------------------------------------------------------------------------------------
// Asset checks

/// Readings with a gap: the check below finds it.
#[asset]
async fn readings() -> Result<Vec<Option<f64>>> {
    Ok(vec![Some(20.5), None, Some(21.0)])
}

#[asset(deps = [readings])]
async fn hourly_mean(readings: Input<readings>) -> Result<f64> {
    let values: Vec<f64> = readings.iter().flatten().copied().collect();
    Ok(values.iter().sum::<f64>() / values.len() as f64)
}

/// No reading is missing.
#[asset_check(asset = readings, blocking = true)]
async fn no_gaps(readings: Input<readings>) -> CheckResult {
    let gaps = readings.iter().filter(|r| r.is_none()).count();
    CheckResult::new(gaps == 0)
        .description(format!("{gaps} missing readings"))
        .metadata("gaps", gaps)
}

/// Readings are plausible temperatures; only a warning.
#[asset_check(asset = readings, blocking = true)]
fn plausible(readings: Input<readings>) -> CheckResult {
    let odd = readings.iter().flatten().filter(|v| **v > 21.0).count();
    CheckResult::new(odd == 0).severity(CheckSeverity::Warn)
}

fn checked(checks: Vec<CheckSpec>) -> Definitions {
    Definitions::builder()
        .specs(assets![readings, hourly_mean])
        .checks(checks)
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_failing_blocking_check_stops_downstream_and_keeps_the_materialization() {
    let defs = checked(checks![no_gaps]);
    let instance = Instance::ephemeral();
    let result = instance
        .materialize(&defs, "*", RunConfig::new())
        .await
        .unwrap();
    assert_eq!(result.status(), RunStatus::Failed);
    let step = result.step("readings").unwrap();
    assert_eq!(step.status, StepStatus::Failed);
    let error = step.error.as_ref().unwrap().to_string();
    assert!(error.contains("blocking check `no_gaps` failed"), "{error}");
    assert_eq!(
        attempts_of(&result, "readings"),
        1,
        "a check failure is not retried"
    );
    assert_eq!(
        result.step("hourly_mean").unwrap().status,
        StepStatus::Skipped
    );
    // The data is there: materialized, then checked.
    assert!(instance
        .storage()
        .latest_materialization(&"readings".into())
        .await
        .unwrap()
        .is_some());
    let events = result.events().await.unwrap();
    let kinds: Vec<&str> = events
        .iter()
        .filter(|e| e.asset.as_ref().is_some_and(|a| a.as_str() == "readings"))
        .map(|e| match &e.kind {
            EventKind::StepStarted { .. } => "started",
            EventKind::Materialization { .. } => "materialized",
            EventKind::CheckEvaluated { .. } => "checked",
            EventKind::StepFailed { .. } => "failed",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["started", "materialized", "checked", "failed"]);

    let records = instance.check_records(&defs, "readings", 10).await.unwrap();
    assert_eq!(records.len(), 1);
    let record = &records[0];
    assert_eq!(
        (record.check.as_str(), record.passed, record.blocking),
        ("no_gaps", false, true)
    );
    assert_eq!(record.description.as_deref(), Some("1 missing readings"));
    assert_eq!(record.metadata["gaps"], 1);
    assert_eq!(record.run_id, *result.run_id());
}

fn attempts_of(result: &dagrs_core::RunResult, key: &str) -> u32 {
    result.step(key).unwrap().attempts
}

#[tokio::test]
async fn warnings_and_non_blocking_failures_are_recorded_and_downstream_runs() {
    let lenient = CheckSpec::new("readings", "lenient", |_| async {
        Ok(CheckResult::failed("always unhappy"))
    });
    let defs = checked(vec![<plausible as dagrs_core::AssetCheck>::spec(), lenient]);
    let instance = Instance::ephemeral();
    let result = instance
        .materialize(&defs, "*", RunConfig::new())
        .await
        .unwrap();
    assert!(result.success(), "{:?}", result.steps());
    assert_eq!(result.output::<hourly_mean>(), Some(&20.75));
    let mut records = instance.check_records(&defs, "readings", 10).await.unwrap();
    records.sort_by(|a, b| a.check.cmp(&b.check));
    let seen: Vec<_> = records
        .iter()
        .map(|r| (r.check.as_str(), r.passed, r.severity, r.blocking))
        .collect();
    assert_eq!(
        seen,
        [
            ("lenient", false, CheckSeverity::Error, false),
            ("plausible", true, CheckSeverity::Warn, true),
        ]
    );
}

#[tokio::test]
async fn a_check_that_errors_or_panics_fails_and_a_blocking_one_blocks() {
    let erring = CheckSpec::new("readings", "erring", |_| async {
        Err(anyhow::anyhow!("the database is gone"))
    });
    let panicking = CheckSpec::new("readings", "panicking", |_| async {
        if true {
            panic!("bug in the check");
        }
        Ok(CheckResult::passed())
    })
    .blocking(true);
    let defs = checked(vec![erring, panicking]);
    let instance = Instance::ephemeral();
    let result = instance
        .materialize(&defs, "*", RunConfig::new())
        .await
        .unwrap();
    assert_eq!(
        result.step("hourly_mean").unwrap().status,
        StepStatus::Skipped
    );
    let records = instance.check_records(&defs, "readings", 10).await.unwrap();
    let text = |name: &str| {
        let r = records.iter().find(|r| r.check == name).unwrap();
        assert!(!r.passed);
        r.description.clone().unwrap()
    };
    assert!(text("erring").contains("the database is gone"));
    assert!(text("panicking").contains("bug in the check"));
}

#[tokio::test]
async fn an_asset_reports_check_results_it_computed_itself() {
    let spec = AssetSpec::new("counted", |scope| async move {
        let ctx = scope.context();
        ctx.report_check("row_count", CheckResult::new(true).metadata("rows", 3));
        ctx.report_check("no_nulls", CheckResult::failed("2 nulls in `value`"));
        Ok(3)
    });
    let downstream = AssetSpec::new("after", |_| async { Ok(()) }).dep("counted");
    let defs = Definitions::builder()
        .specs([spec, downstream])
        .build()
        .unwrap();
    let instance = Instance::ephemeral();
    let result = instance
        .materialize(&defs, "*", RunConfig::new())
        .await
        .unwrap();
    assert!(result.success(), "reported results never block");
    let records = instance.check_records(&defs, "counted", 10).await.unwrap();
    let mut seen: Vec<_> = records
        .iter()
        .map(|r| (r.check.as_str(), r.passed))
        .collect();
    seen.sort();
    assert_eq!(seen, [("no_nulls", false), ("row_count", true)]);
}

#[test]
fn definitions_report_every_bad_check_and_source_by_name() {
    let err = Definitions::builder()
        .specs(assets![readings, hourly_mean])
        .spec(AssetSpec::external("influx/raw"))
        .spec(
            AssetSpec::new("reads_external", |scope| async move {
                scope.input::<()>("influx/raw")?;
                Ok(())
            })
            .needs(|n| n.input::<()>("influx/raw")),
        )
        .spec(AssetSpec::external("influx/other").automation(eager()))
        .spec(AssetSpec::new("bad_cron", |_| async { Ok(()) }).automation(on_cron("0 25 * * *")))
        .checks(checks![no_gaps])
        .check(CheckSpec::new("readngs", "typo", |_| async {
            Ok(CheckResult::passed())
        }))
        .check(CheckSpec::new("readings", "no_gaps", |_| async {
            Ok(CheckResult::passed())
        }))
        .check(CheckSpec::new("influx/raw", "external", |_| async {
            Ok(CheckResult::passed())
        }))
        .check(
            CheckSpec::new("readings", "other_input", |_| async {
                Ok(CheckResult::passed())
            })
            .needs(|n| n.input::<f64>("hourly_mean")),
        )
        .check(
            CheckSpec::new("readings", "needs_resource", |_| async {
                Ok(CheckResult::passed())
            })
            .needs(|n| n.resource::<String>()),
        )
        .build()
        .unwrap_err();
    let text = err.to_string();
    for expected in [
        "asset check `typo` of `readngs`: there is no such asset; did you mean `readings`?",
        "asset check `no_gaps` of `readings`: the asset has another check of this name",
        "asset check `external` of `influx/raw`: the asset is external",
        "asset check `other_input` of `readings`: it takes the output of `hourly_mean`",
        "asset check `needs_resource` of `readings`",
        "asset `influx/other`: it is an external source asset, so it cannot have an automation condition",
        "asset `reads_external`: it takes the output of `influx/raw`, an external asset",
        "asset `bad_cron`: its automation condition is invalid",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert!(err
        .problems()
        .iter()
        .any(|p| matches!(p, Problem::InvalidCheck { check, .. } if check == "typo")));
}

// ---------------------------------------------------------------------------------------
// Source assets

/// What the observable source below reads as its version; the tests change it.
#[derive(Clone, Default)]
struct Upstream {
    version: Arc<Mutex<String>>,
    observed: Arc<AtomicUsize>,
}

/// The InfluxDB measurement, seen from here: its version is its newest point.
#[observable_source_asset(key = "influx/readings", group = "sources")]
async fn influx_readings(upstream: Res<Upstream>) -> Result<DataVersion> {
    upstream.observed.fetch_add(1, Ordering::SeqCst);
    Ok(DataVersion::new(upstream.version.lock().unwrap().clone()))
}

/// Copies the measurement; the daemon runs it when the measurement changes.
#[asset(deps = [influx_readings], automation = eager())]
async fn copied(ctx: &AssetContext) -> Result<String> {
    Ok(ctx.run_id().to_string())
}

fn sourced(upstream: &Upstream) -> Definitions {
    Definitions::builder()
        .specs(assets![influx_readings, copied])
        .spec(AssetSpec::external("influx/tags").description("written by the plant"))
        .spec(
            AssetSpec::new("tag_list", |_| async { Ok(vec!["D100".to_owned()]) })
                .dep("influx/tags"),
        )
        .resource(upstream.clone())
        .build()
        .unwrap()
}

#[tokio::test]
async fn external_assets_are_never_selected_and_start_lineage() {
    let defs = sourced(&Upstream::default());
    assert_eq!(defs.dependents("influx/tags"), ["tag_list"]);
    let all = defs.select("*").unwrap();
    assert!(!all.iter().any(|k| k.as_str() == "influx/tags"), "{all:?}");
    assert_eq!(defs.select("influx/tags+").unwrap(), ["tag_list"]);
    let err = defs.select("influx/tags").unwrap_err().to_string();
    assert!(
        err.contains("`influx/tags` is an external asset") && err.contains("`influx/tags+`"),
        "{err}"
    );
    let states = Instance::ephemeral().asset_states(&defs).await.unwrap();
    let external = states
        .iter()
        .find(|s| s.key.as_str() == "influx/tags")
        .unwrap();
    assert_eq!(external.stale, None, "a source asset is never stale");
}

#[tokio::test]
async fn observing_a_new_version_makes_downstream_stale_and_the_same_version_does_not() {
    let upstream = Upstream::default();
    *upstream.version.lock().unwrap() = "v1".into();
    let defs = sourced(&upstream);
    let instance = Instance::ephemeral();
    let first = instance
        .materialize(&defs, "influx/readings+", RunConfig::new())
        .await
        .unwrap();
    assert!(first.success());
    assert!(matches!(
        first
            .events()
            .await
            .unwrap()
            .iter()
            .find(|e| matches!(e.kind, EventKind::Observation { .. }))
            .unwrap()
            .kind,
        EventKind::Observation { changed: true, .. }
    ));
    let stale = |states: &[dagrs_core::AssetState]| {
        states
            .iter()
            .find(|s| s.key.as_str() == "copied")
            .unwrap()
            .stale
            .clone()
    };
    assert_eq!(stale(&instance.asset_states(&defs).await.unwrap()), None);

    // The same version again: an observation, not an update.
    let again = instance
        .materialize(&defs, "influx/readings", RunConfig::new())
        .await
        .unwrap();
    assert!(&again.events().await.unwrap().iter().any(|e| matches!(
        &e.kind,
        EventKind::Observation { changed: false, data_version, .. } if data_version == "v1"
    )));
    assert_eq!(stale(&instance.asset_states(&defs).await.unwrap()), None);

    *upstream.version.lock().unwrap() = "v2".into();
    instance
        .materialize(&defs, "influx/readings", RunConfig::new())
        .await
        .unwrap();
    assert_eq!(
        stale(&instance.asset_states(&defs).await.unwrap()),
        Some(Staleness::UpstreamNewer {
            upstream: "influx/readings".into()
        })
    );
    assert_eq!(upstream.observed.load(Ordering::SeqCst), 3);
}

// ---------------------------------------------------------------------------------------
// Declarative automation

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

/// The runs automation requested, oldest first.
async fn automation_runs(instance: &Instance) -> Vec<dagrs_core::storage::RunRecord> {
    let mut runs: Vec<_> = instance
        .runs(1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.tags.contains_key(AUTOMATION_TAG))
        .collect();
    runs.reverse();
    runs
}

#[tokio::test]
async fn a_new_source_version_makes_eager_launch_exactly_one_run() {
    let upstream = Upstream::default();
    *upstream.version.lock().unwrap() = "v1".into();
    let defs = sourced(&upstream);
    let instance = Instance::ephemeral();
    instance
        .materialize(&defs, "influx/readings copied", RunConfig::new())
        .await
        .unwrap();
    let clock = Arc::new(ManualClock::new(at("2026-03-01T09:30:00Z")));
    let daemon = Daemon::new(instance.clone(), defs.clone()).with_clock(clock.clone());
    for _ in 0..3 {
        let pass = daemon.evaluate().await.unwrap();
        assert!(pass.automation_runs.is_empty(), "nothing changed");
        clock.advance(Duration::from_secs(60));
    }

    *upstream.version.lock().unwrap() = "v2".into();
    instance
        .materialize(&defs, "influx/readings", RunConfig::new())
        .await
        .unwrap();
    let pass = daemon.evaluate().await.unwrap();
    assert_eq!(pass.automation_runs.len(), 1, "one run for the new version");
    assert_eq!(
        pass.started, pass.automation_runs,
        "started in the same pass"
    );
    // In flight, then done: never a second run for the same change.
    let again = daemon.evaluate().await.unwrap();
    assert!(again.automation_runs.is_empty());
    daemon.wait_for_runs().await;
    for _ in 0..3 {
        clock.advance(Duration::from_secs(60));
        assert!(daemon.evaluate().await.unwrap().automation_runs.is_empty());
    }
    let runs = automation_runs(&instance).await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, RunStatus::Succeeded);
    assert_eq!(runs[0].assets, ["copied"]);
    let states = instance.asset_states(&defs).await.unwrap();
    let copied = states.iter().find(|s| s.key.as_str() == "copied").unwrap();
    assert_eq!(copied.stale, None, "{states:?}");

    let records = instance
        .automation_records(&defs, "copied", 10)
        .await
        .unwrap();
    let requested: Vec<_> = records.iter().filter(|r| r.requested).collect();
    assert_eq!(requested.len(), 1);
    assert!(
        requested[0]
            .reason
            .contains("upstream `influx/readings` updated"),
        "{}",
        requested[0].reason
    );
    assert_eq!(requested[0].run_ids, [runs[0].run_id.clone()]);
    assert!(
        !records[0].requested,
        "the newest record says it is handled: {records:?}"
    );

    // A daemon started later knows the run was requested and the asset is up to date.
    let fresh = Daemon::new(instance.clone(), defs.clone()).with_clock(clock.clone());
    assert!(fresh.evaluate().await.unwrap().automation_runs.is_empty());
}

#[tokio::test]
async fn eager_fills_a_missing_asset_once_even_when_its_run_fails() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counting = calls.clone();
    let defs = Definitions::builder()
        .spec(AssetSpec::new("raw", |_| async { Ok(1) }))
        .spec(
            AssetSpec::new("flaky", move |_| {
                let calls = counting.clone();
                async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err::<(), _>(anyhow::anyhow!("the warehouse is down"))
                }
            })
            .dep("raw")
            .automation(eager()),
        )
        .build()
        .unwrap();
    let instance = Instance::ephemeral();
    let clock = Arc::new(ManualClock::new(at("2026-03-01T09:30:00Z")));
    let daemon = Daemon::new(instance.clone(), defs.clone()).with_clock(clock.clone());
    let pass = daemon.evaluate().await.unwrap();
    assert!(pass.automation_runs.is_empty(), "its upstream is missing");
    let records = instance
        .automation_records(&defs, "flaky", 10)
        .await
        .unwrap();
    assert_eq!(records[0].reason, "upstream `raw` never materialized");

    instance
        .materialize(&defs, "raw", RunConfig::new())
        .await
        .unwrap();
    assert_eq!(daemon.evaluate().await.unwrap().automation_runs.len(), 1);
    daemon.wait_for_runs().await;
    for _ in 0..3 {
        clock.advance(Duration::from_secs(60));
        assert!(daemon.evaluate().await.unwrap().automation_runs.is_empty());
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "a failed request is not repeated"
    );
    // A new upstream materialization is a new reason.
    instance
        .materialize(&defs, "raw", RunConfig::new())
        .await
        .unwrap();
    assert_eq!(daemon.evaluate().await.unwrap().automation_runs.len(), 1);
    daemon.wait_for_runs().await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn on_cron_runs_once_per_tick_from_the_daemons_start() {
    let defs = Definitions::builder()
        .spec(AssetSpec::new("report", |_| async { Ok(()) }).automation(on_cron("0 * * * *")))
        .build()
        .unwrap();
    let instance = Instance::ephemeral();
    let clock = Arc::new(ManualClock::new(at("2026-03-01T09:30:00Z")));
    let daemon = Daemon::new(instance.clone(), defs.clone()).with_clock(clock.clone());
    assert!(daemon.evaluate().await.unwrap().automation_runs.is_empty());
    clock.set(at("2026-03-01T09:59:59Z"));
    assert!(daemon.evaluate().await.unwrap().automation_runs.is_empty());
    clock.set(at("2026-03-01T10:00:01Z"));
    assert_eq!(daemon.evaluate().await.unwrap().automation_runs.len(), 1);
    daemon.wait_for_runs().await;
    clock.set(at("2026-03-01T10:30:00Z"));
    assert!(daemon.evaluate().await.unwrap().automation_runs.is_empty());
    // Two ticks passed while nothing evaluated: one run, not two.
    clock.set(at("2026-03-01T12:10:00Z"));
    assert_eq!(daemon.evaluate().await.unwrap().automation_runs.len(), 1);
    daemon.wait_for_runs().await;
    let records = instance
        .automation_records(&defs, "report", 10)
        .await
        .unwrap();
    assert!(records[0]
        .reason
        .contains("cron tick 2026-03-01T12:00:00+00:00 passed"));
}

#[tokio::test]
async fn an_overdue_asset_is_reported_and_refreshed() {
    let defs = Definitions::builder()
        .spec(AssetSpec::new("prices", |_| async { Ok(1) }).automation(
            overdue(Duration::from_secs(3600)) & !dagrs_core::automation::in_progress(),
        ))
        .build()
        .unwrap();
    let instance = Instance::ephemeral();
    instance
        .materialize(&defs, "prices", RunConfig::new())
        .await
        .unwrap();
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let daemon = Daemon::new(instance.clone(), defs.clone()).with_clock(clock.clone());
    assert!(daemon.evaluate().await.unwrap().automation_runs.is_empty());
    let records = instance
        .automation_records(&defs, "prices", 10)
        .await
        .unwrap();
    assert!(records[0].reason.starts_with("fresh"), "{records:?}");
    clock.advance(Duration::from_secs(2 * 3600));
    assert_eq!(daemon.evaluate().await.unwrap().automation_runs.len(), 1);
    daemon.wait_for_runs().await;
    let records = instance
        .automation_records(&defs, "prices", 10)
        .await
        .unwrap();
    assert!(
        records[0].reason.starts_with("overdue: last materialized"),
        "{records:?}"
    );
}

#[tokio::test]
async fn eager_on_a_partitioned_asset_runs_the_partitions_its_upstream_updated() {
    let defs = Definitions::builder()
        .spec(
            AssetSpec::new("hourly_raw", |_| async { Ok(()) })
                .partitions(hourly("2026-03-01T00:00Z")),
        )
        .spec(
            AssetSpec::new("hourly_agg", |_| async { Ok(()) })
                .partitions(hourly("2026-03-01T00:00Z"))
                .dep("hourly_raw")
                .automation(eager()),
        )
        .build()
        .unwrap();
    let instance = Instance::ephemeral();
    let clock = Arc::new(ManualClock::new(at("2026-03-01T09:30:00Z")));
    let daemon = Daemon::new(instance.clone(), defs.clone()).with_clock(clock.clone());
    daemon.evaluate().await.unwrap();
    for hour in ["2026-03-01-05:00", "2026-03-01-06:00"] {
        let run = instance
            .launch(
                &defs,
                "hourly_raw",
                dagrs_core::RunOptions::new().partition(hour),
            )
            .await
            .unwrap();
        assert!(run.wait().await.unwrap().success());
    }
    let pass = daemon.evaluate().await.unwrap();
    assert_eq!(
        pass.automation_runs.len(),
        2,
        "one run per updated partition"
    );
    daemon.wait_for_runs().await;
    let mut partitions: Vec<String> = automation_runs(&instance)
        .await
        .into_iter()
        .map(|r| {
            assert_eq!(r.status, RunStatus::Succeeded);
            r.tags[PARTITION_TAG].clone()
        })
        .collect();
    partitions.sort();
    assert_eq!(partitions, ["2026-03-01-05:00", "2026-03-01-06:00"]);
    clock.advance(Duration::from_secs(60));
    assert!(daemon.evaluate().await.unwrap().automation_runs.is_empty());
}

/// Two values from one function.
#[dagrs_core::multi_asset(outs(left: u32, right: u32))]
async fn pair() -> Result<(u32, u32)> {
    Ok((1, 2))
}

#[asset]
async fn after_left(left: Input<left>) -> Result<u32> {
    Ok(*left)
}

#[asset]
async fn after_right(right: Input<right>) -> Result<u32> {
    Ok(*right)
}

/// `left` is more than 5.
#[asset_check(asset = left, blocking = true)]
async fn left_is_big(left: Input<left>) -> CheckResult {
    CheckResult::new(*left > 5)
}

#[tokio::test]
async fn a_blocking_check_on_one_out_of_a_multi_asset_stops_only_what_reads_that_out() {
    let defs = Definitions::builder()
        .specs(assets![pair, after_left, after_right])
        .checks(checks![left_is_big])
        .build()
        .unwrap();
    let result = materialize(&defs, "*", RunConfig::new()).await.unwrap();
    let status = |key: &str| result.step(key).unwrap().status;
    assert_eq!(status("left"), StepStatus::Failed);
    assert_eq!(status("right"), StepStatus::Succeeded);
    assert_eq!(status("after_left"), StepStatus::Skipped);
    assert_eq!(status("after_right"), StepStatus::Succeeded);
    assert_eq!(
        result.output::<left>(),
        Some(&1),
        "materialized, then checked"
    );
}
