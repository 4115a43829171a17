//! Partitions and backfills as a user relies on them: typed partition access, mappings
//! (hourly into daily), three dimensions, bad input caught before any run, backfills with
//! each policy, failure and resume, cancellation, and schedules that fill the last
//! partition.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dagrs_core::partitions::{daily, dynamic, hourly, multi, static_keys, PartitionMapping};
use dagrs_core::prelude::*;
use dagrs_core::{
    AssetJob, AssetSpec, BackfillPolicy, BackfillRecord, BackfillRequest, BackfillStatus, Daemon,
    Error, ManualClock, Partition, Problem, RunOptions, RunStatus, Schedule, PARTITION_TAG,
};
use tokio_util::sync::CancellationToken;

/// Every partition key (or range) an asset was run with, in order.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<String>>>);

impl Seen {
    fn push(&self, key: String) {
        self.0.lock().unwrap().push(key);
    }
    fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
    fn counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for key in self.all() {
            *counts.entry(key).or_default() += 1;
        }
        counts
    }
}

/// An hourly asset that notes each partition (or range) it materializes, and fails the
/// partitions listed in `fail` once each.
fn hourly_asset(name: &str, seen: &Seen, fail: &[&str]) -> AssetSpec {
    let seen = seen.clone();
    let fail: Arc<Mutex<Vec<String>>> =
        Arc::new(Mutex::new(fail.iter().map(|s| s.to_string()).collect()));
    AssetSpec::new(name, move |scope| {
        let seen = seen.clone();
        let fail = fail.clone();
        async move {
            let range = scope.context().partition_range().unwrap().key.clone();
            seen.push(range.clone());
            let mut fail = fail.lock().unwrap();
            if let Some(i) = fail.iter().position(|f| *f == range) {
                fail.remove(i);
                anyhow::bail!("partition {range} failed on purpose");
            }
            Ok(range)
        }
    })
    .partitions(hourly("2026-11-01T00:00Z"))
}

/// Runs a daemon over `defs` on `instance` until backfill `id` ends; returns it.
async fn run_backfill(instance: &Instance, defs: &Definitions, id: &str) -> BackfillRecord {
    let daemon =
        Daemon::new(instance.clone(), defs.clone()).with_interval(Duration::from_millis(5));
    let shutdown = CancellationToken::new();
    let running = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { daemon.run(shutdown).await }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let backfill = loop {
        let backfill = instance.backfill(id).await.unwrap();
        if !backfill.status.is_active() {
            break backfill;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "backfill {id} never ended"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    shutdown.cancel();
    running.await.unwrap().unwrap();
    backfill
}

fn problems(error: &Error) -> Vec<String> {
    error.problems().iter().map(|p| p.to_string()).collect()
}

/// A daily asset needs the 24 hours of its hourly dependency: planning says which are
/// missing; once an hourly backfill of that day ran as one range, the day runs, sees its
/// window, and reads the range's output as its input.
#[tokio::test]
async fn an_hourly_asset_feeds_a_daily_one() {
    #[asset(partitions = hourly("2026-11-01T00:00Z"), backfill = BackfillPolicy::SingleRun)]
    async fn hourly_readings(window: Partition<dagrs_core::partitions::TimeWindow>) -> Result<i64> {
        Ok((window.end - window.start).num_hours())
    }

    #[asset(partitions = daily("2026-11-01"))]
    async fn daily_summary(
        ctx: &AssetContext,
        hours: Input<hourly_readings>,
        day: Partition,
    ) -> Result<String> {
        let window = ctx.partition_time_window().unwrap();
        Ok(format!(
            "{} {} {}",
            *day,
            *hours,
            (window.end - window.start).num_hours()
        ))
    }

    let defs = Definitions::builder()
        .specs(assets![hourly_readings, daily_summary])
        .build()
        .unwrap();
    let instance = Instance::ephemeral();
    let day = RunOptions::new().partition("2026-11-02");
    let missing = instance
        .launch(&defs, "daily_summary", day.clone())
        .await
        .unwrap_err();
    let text = problems(&missing).join("\n");
    assert!(
        text.contains("needs 24 partition(s) of `hourly_readings`"),
        "{text}"
    );
    assert!(
        text.contains("2026-11-02-00:00...2026-11-03-00:00"),
        "{text}"
    );
    assert!(instance.runs(10).await.unwrap().is_empty(), "nothing ran");

    let backfill =
        BackfillRequest::new("hourly_readings").range("2026-11-02-00:00", "2026-11-03-00:00");
    let backfill = instance.launch_backfill(&defs, backfill).await.unwrap();
    assert_eq!(
        backfill.policy,
        BackfillPolicy::SingleRun,
        "the asset's own policy"
    );
    let done = run_backfill(&instance, &defs, &backfill.id).await;
    assert_eq!(done.status, BackfillStatus::Completed);
    assert_eq!(
        instance.runs(10).await.unwrap().len(),
        1,
        "one run for the range"
    );

    let result = instance
        .launch(&defs, "daily_summary", day)
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert!(result.success(), "{result}");
    assert_eq!(
        result.output::<daily_summary>().map(String::as_str),
        Some("2026-11-02 24 24")
    );
}

/// Partitions that do not fit need a mapping: `Definitions::build` says so, naming both
/// assets and how to map them; explicit mappings that do not fit are refused too.
#[test]
fn mismatched_partitions_need_a_mapping() {
    let keyed =
        AssetSpec::new("by_region", |_| async { Ok(()) }).partitions(static_keys(["eu", "us"]));
    let timed = AssetSpec::new("hourly", |_| async { Ok(()) })
        .partitions(hourly("2026-11-01T00:00Z"))
        .dep("by_region");
    let error = Definitions::builder()
        .specs([keyed.clone(), timed.clone()])
        .build()
        .unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("asset `hourly`") && text.contains("`by_region`"),
        "{text}"
    );
    assert!(
        text.contains("mappings(by_region = PartitionMapping::"),
        "{text}"
    );
    let mapped = timed.clone().mapping("by_region", PartitionMapping::All);
    assert!(Definitions::builder()
        .specs([keyed.clone(), mapped])
        .build()
        .is_ok());
    let wrong = timed.mapping("by_region", PartitionMapping::Identity);
    let text = Definitions::builder()
        .specs([keyed, wrong])
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("`Identity` needs both assets partitioned alike"),
        "{text}"
    );

    let unpartitioned = AssetSpec::new("plain", |scope| async move {
        Ok(scope.context().partition_key().is_some())
    })
    .needs(|n| n.partition::<String>());
    let text = Definitions::builder()
        .specs([unpartitioned])
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("takes a `Partition<String>` but is not partitioned"),
        "{text}"
    );
    let bad = AssetSpec::new("bad", |_| async { Ok(()) }).partitions(hourly("whenever"));
    let text = Definitions::builder()
        .specs([bad])
        .build()
        .unwrap_err()
        .to_string();
    assert!(text.contains("start \"whenever\" is not a date"), "{text}");
}

/// Three dimensions: region (static) × sensor (dynamic, stored) × day. Keys, dimensions in
/// the context, a backfill of everything, and the status as one range per combination.
#[tokio::test]
async fn three_dimensions() {
    let seen = Seen::default();
    let spec = {
        let seen = seen.clone();
        AssetSpec::new("readings", move |scope| {
            let seen = seen.clone();
            async move {
                let ctx = scope.context();
                let dims = ["region", "sensor", "day"]
                    .map(|d| ctx.partition_dimension(d).unwrap().to_owned());
                seen.push(dims.join("/"));
                Ok(())
            }
        })
        .partitions(multi([
            ("region", static_keys(["eu", "us"])),
            ("sensor", dynamic("sensors")),
            ("day", daily("2026-11-01").end("2026-11-04").into()),
        ]))
    };
    let defs = Definitions::builder().specs([spec]).build().unwrap();
    let instance = Instance::ephemeral();
    let unknown = instance
        .launch(
            &defs,
            "readings",
            RunOptions::new().partition("eu|s1|2026-11-01"),
        )
        .await
        .unwrap_err();
    assert!(
        problems(&unknown)[0].contains("`s1` does not exist"),
        "{unknown}"
    );
    let sensors = ["s1".to_owned(), "s2".to_owned()];
    assert_eq!(
        instance
            .add_dynamic_partitions("sensors", &sensors)
            .await
            .unwrap()
            .len(),
        2
    );
    assert!(instance
        .add_dynamic_partitions("sensors", &sensors)
        .await
        .unwrap()
        .is_empty());
    let one = instance
        .launch(
            &defs,
            "readings",
            RunOptions::new().partition("us|s2|2026-11-03"),
        )
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert!(one.success());
    assert_eq!(seen.all(), ["us/s2/2026-11-03"]);

    let all = BackfillRequest::new("readings").all();
    let backfill = instance.launch_backfill(&defs, all).await.unwrap();
    let done = run_backfill(&instance, &defs, &backfill.id).await;
    assert_eq!(done.status, BackfillStatus::Completed);
    let parts = instance.asset_partitions(&defs, "readings").await.unwrap();
    assert_eq!(parts.definition.count(&parts.all), 2 * 2 * 3);
    assert_eq!(parts.definition.count(&parts.status.materialized), 12);
    assert!(parts.missing().is_empty());
    assert_eq!(
        parts.status.materialized.range_count(),
        4,
        "one range per region × sensor"
    );
    assert_eq!(seen.counts().len(), 12);
}

/// Every bad partition input is an error before any run, naming what would be valid.
#[tokio::test]
async fn bad_partition_input_is_refused_before_anything_runs() {
    let seen = Seen::default();
    let keyed =
        AssetSpec::new("by_region", |_| async { Ok(()) }).partitions(static_keys(["eu", "us"]));
    let defs = Definitions::builder()
        .specs([
            hourly_asset("hours", &seen, &[]),
            keyed,
            AssetSpec::new("plain", |_| async { Ok(()) }),
        ])
        .build()
        .unwrap();
    let instance = Instance::ephemeral();
    let cases: [(&str, &str, &str); 7] = [
        ("by_region", "asia", "the keys are `eu`, `us`"),
        (
            "hours",
            "2019-01-01-00:00",
            "partitions exist from `2026-11-01-00:00`",
        ),
        ("hours", "2026-11-01", "keys look like `2026-11-01-00:00`"),
        (
            "hours",
            "2026-11-01-00:30",
            "the window holding it is `2026-11-01-00:00`",
        ),
        ("hours", "2026-11-02-00:00...2026-11-01-00:00", "backwards"),
        ("hours", "2126-01-01-00:00", "does not exist"),
        (
            "plain",
            "2026-11-01-00:00",
            "none of the selected assets is partitioned",
        ),
    ];
    for (asset, target, says) in cases {
        let error = instance
            .launch(&defs, asset, RunOptions::new().partition(target))
            .await
            .unwrap_err();
        let text = error.to_string();
        assert!(text.contains(says), "{asset} {target}: {text}");
        assert!(matches!(
            error.problems()[0],
            Problem::InvalidPartition { .. }
        ));
    }
    let error = instance
        .launch(&defs, "hours", RunOptions::new())
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("`hours` are partitioned: name a partition"),
        "{error}"
    );
    let error = instance
        .launch_backfill(&defs, BackfillRequest::new("hours plain").all())
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("`plain` is not partitioned"),
        "{error}"
    );
    let error = instance
        .launch_backfill(
            &defs,
            BackfillRequest::new("hours").range("2026-11-02-00:00", "2026-11-02-00:00"),
        )
        .await
        .unwrap_err();
    assert!(error.to_string().contains("empty or backwards"), "{error}");
    assert!(instance.runs(10).await.unwrap().is_empty());
    assert!(instance.backfills(10).await.unwrap().is_empty());
    assert!(seen.all().is_empty());
}

/// One run per partition, at most N per run, or one per range: what each asset sees.
#[tokio::test]
async fn backfill_policies_cut_partitions_into_runs() {
    for (policy, runs, first) in [
        (BackfillPolicy::RunPerPartition, 24, "2026-11-01-00:00"),
        (
            BackfillPolicy::MaxPartitionsPerRun(5),
            5,
            "2026-11-01-00:00...2026-11-01-05:00",
        ),
        (
            BackfillPolicy::SingleRun,
            1,
            "2026-11-01-00:00...2026-11-02-00:00",
        ),
    ] {
        let seen = Seen::default();
        let defs = Definitions::builder()
            .specs([hourly_asset("hours", &seen, &[])])
            .build()
            .unwrap();
        let instance = Instance::ephemeral();
        let request = BackfillRequest::new("hours")
            .range("2026-11-01-00:00", "2026-11-02-00:00")
            .policy(policy)
            .max_in_flight(3);
        let backfill = instance.launch_backfill(&defs, request).await.unwrap();
        let done = run_backfill(&instance, &defs, &backfill.id).await;
        assert_eq!(done.status, BackfillStatus::Completed, "{policy}");
        let mut keys = seen.all();
        keys.sort();
        assert_eq!(keys.len(), runs, "{policy}: {keys:?}");
        assert_eq!(keys[0], first, "{policy}");
        let parts = instance.asset_partitions(&defs, "hours").await.unwrap();
        let materialized = parts.definition.describe(&parts.status.materialized);
        assert_eq!(materialized.len(), 1, "{policy}: one stored range");
        assert_eq!(materialized[0].0.key, "2026-11-01-00:00...2026-11-02-00:00");
        assert_eq!(materialized[0].1, 24);
    }
}

/// A backfill with failed partitions ends as failed; resumed, it runs only those again.
#[tokio::test]
async fn a_resumed_backfill_retries_only_its_failed_partitions() {
    let seen = Seen::default();
    let failing = ["2026-11-01-03:00", "2026-11-01-07:00"];
    let defs = Definitions::builder()
        .specs([hourly_asset("hours", &seen, &failing)])
        .build()
        .unwrap();
    let instance = Instance::ephemeral();
    let request = BackfillRequest::new("hours").range("2026-11-01-00:00", "2026-11-01-12:00");
    let backfill = instance.launch_backfill(&defs, request).await.unwrap();
    let failed = run_backfill(&instance, &defs, &backfill.id).await;
    assert_eq!(failed.status, BackfillStatus::Failed);
    let def = instance
        .asset_partitions(&defs, "hours")
        .await
        .unwrap()
        .definition;
    let failed_keys: Vec<String> = def
        .describe(&failed.failed)
        .into_iter()
        .map(|(r, _)| r.key)
        .collect();
    assert_eq!(failed_keys, failing);
    let parts = instance.asset_partitions(&defs, "hours").await.unwrap();
    assert_eq!(def.count(&parts.status.failed), 2);

    let resumed = instance.resume_backfill(&backfill.id).await.unwrap();
    assert_eq!(resumed.status, BackfillStatus::Requested);
    let done = run_backfill(&instance, &defs, &backfill.id).await;
    assert_eq!(done.status, BackfillStatus::Completed);
    let counts = seen.counts();
    assert_eq!(counts.len(), 12);
    for (key, count) in counts {
        let expected = if failing.contains(&key.as_str()) {
            2
        } else {
            1
        };
        assert_eq!(count, expected, "{key}");
    }
    let parts = instance.asset_partitions(&defs, "hours").await.unwrap();
    assert!(
        parts.status.failed.is_empty(),
        "a success clears the failure"
    );
    assert_eq!(def.count(&parts.status.materialized), 12);
    let error = instance.resume_backfill(&backfill.id).await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("only a failed or cancelled backfill resumes"),
        "{error}"
    );
}

/// Cancelling stops launching and ends the backfill once its runs ended; resuming launches
/// what was left, not what already succeeded.
#[tokio::test]
async fn a_cancelled_backfill_resumes_where_it_stopped() {
    let seen = Seen::default();
    let slow = {
        let seen = seen.clone();
        AssetSpec::new("slow_hours", move |scope| {
            let seen = seen.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(30)).await;
                seen.push(scope.context().partition_key().unwrap().to_owned());
                Ok(())
            }
        })
        .partitions(hourly("2026-11-01T00:00Z"))
    };
    let defs = Definitions::builder().specs([slow]).build().unwrap();
    let instance = Instance::ephemeral();
    let request = BackfillRequest::new("slow_hours")
        .range("2026-11-01-00:00", "2026-11-02-00:00")
        .max_in_flight(1);
    let backfill = instance.launch_backfill(&defs, request).await.unwrap();
    let daemon =
        Daemon::new(instance.clone(), defs.clone()).with_interval(Duration::from_millis(5));
    let shutdown = CancellationToken::new();
    let running = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { daemon.run(shutdown).await }
    });
    while seen.all().len() < 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let canceling = instance
        .cancel_backfill(&backfill.id, "enough for now")
        .await
        .unwrap();
    assert_eq!(canceling.status, BackfillStatus::Canceling);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while instance
        .backfill(&backfill.id)
        .await
        .unwrap()
        .status
        .is_active()
    {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shutdown.cancel();
    running.await.unwrap().unwrap();
    let cancelled = instance.backfill(&backfill.id).await.unwrap();
    assert_eq!(cancelled.status, BackfillStatus::Cancelled);
    assert_eq!(cancelled.reason.as_deref(), Some("enough for now"));
    let done_before = seen.all().len();
    assert!(done_before < 24, "it stopped early: {done_before}");

    instance.resume_backfill(&backfill.id).await.unwrap();
    let done = run_backfill(&instance, &defs, &backfill.id).await;
    assert_eq!(done.status, BackfillStatus::Completed);
    let counts = seen.counts();
    assert_eq!(counts.len(), 24);
    // Only a run cut off by the cancellation runs twice.
    assert!(
        counts.values().filter(|&&n| n > 1).count() <= 1,
        "{counts:?}"
    );
    let runs = instance.runs(100).await.unwrap();
    assert!(runs.iter().all(|r| r.tags.contains_key(PARTITION_TAG)));
    assert!(runs
        .iter()
        .any(|r| r.status == RunStatus::Cancelled || r.status == RunStatus::Succeeded));
}

/// An hourly schedule over a partitioned job fills the hour that just closed.
#[tokio::test]
async fn a_schedule_fills_the_last_complete_partition() {
    let seen = Seen::default();
    let defs = Definitions::builder()
        .specs([hourly_asset("hours", &seen, &[])])
        .job(AssetJob::new("hourly_job", "hours"))
        .schedule(
            Schedule::new("fill_hours", "hourly_job", "5 * * * *")
                .last_partition()
                .running(),
        )
        .build()
        .unwrap();
    let clock = Arc::new(ManualClock::new("2026-11-02T00:30:00Z".parse().unwrap()));
    let instance = Instance::ephemeral();
    let daemon = Daemon::new(instance.clone(), defs.clone()).with_clock(clock.clone());
    daemon.evaluate().await.unwrap();
    clock.set("2026-11-02T01:05:00Z".parse().unwrap());
    let evaluation = daemon.evaluate().await.unwrap();
    assert_eq!(evaluation.started.len(), 1);
    daemon.wait_for_runs().await;
    assert_eq!(seen.all(), ["2026-11-02-00:00"]);
    let run = &instance.runs(1).await.unwrap()[0];
    assert_eq!(run.tags[PARTITION_TAG], "2026-11-02-00:00");
    assert_eq!(run.status, RunStatus::Succeeded);

    let unpartitioned = Definitions::builder()
        .specs([AssetSpec::new("plain", |_| async { Ok(()) })])
        .job(AssetJob::new("plain_job", "plain"))
        .schedule(Schedule::new("s", "plain_job", "@hourly").last_partition())
        .build()
        .unwrap_err();
    assert!(
        unpartitioned
            .to_string()
            .contains("selects no partitioned asset"),
        "{unpartitioned}"
    );
}
