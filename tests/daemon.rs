//! Unattended operation, on a clock the tests move: schedules (hourly, daily, missed ticks,
//! daylight saving), sensors (function, asset, run status; cursors and run keys across a
//! restart), hooks (a failing one, Slack), the run queue (tag limits, cancelling) and the
//! daemon's graceful stop.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use dagrs_core::prelude::*;
use dagrs_core::storage::{InstigatorStatus, SqliteStorage, TickStatus};
use dagrs_core::{
    AssetJob, AssetKey, AssetSpec, Daemon, EventKind, Hook, HookContext, ManualClock, MissedTicks,
    Problem, RunOptions, RunQueue, RunRequest, RunStatus, Schedule, Sensor, SensorContext,
    SensorResult, SlackResource, TagLimit, JOB_TAG, SCHEDULE_TAG,
};
use tokio_util::sync::CancellationToken;

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

fn noop(name: &str) -> AssetSpec {
    AssetSpec::new(name, |_| async { Ok(()) })
}

/// A daemon on a manual clock at `start`, over `defs`, on an in-memory instance.
fn daemon(defs: &Definitions, start: &str) -> (Daemon, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(at(start)));
    let daemon = Daemon::new(Instance::ephemeral(), defs.clone()).with_clock(clock.clone());
    (daemon, clock)
}

fn pipeline(schedule: Schedule) -> Definitions {
    Definitions::builder()
        .specs([noop("raw"), noop("clean").dep("raw")])
        .job(AssetJob::new("pipeline", "*").tag("team", "data"))
        .schedule(schedule)
        .build()
        .unwrap()
}

/// The ticks of `name` the daemon's store holds, oldest first, as (time, status, runs).
async fn ticks(daemon: &Daemon, name: &str) -> Vec<(DateTime<Utc>, TickStatus, usize)> {
    let mut ticks: Vec<_> = daemon
        .instance()
        .storage()
        .ticks(Some(name), 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.tick, t.status, t.run_ids.len()))
        .collect();
    ticks.reverse();
    ticks
}

#[tokio::test]
async fn an_hourly_schedule_fires_each_tick_once_and_its_runs_succeed() {
    let defs = pipeline(Schedule::new("hourly", "pipeline", "0 * * * *").running());
    let (daemon, clock) = daemon(&defs, "2026-03-01T09:30:00Z");
    daemon.evaluate().await.unwrap();
    assert!(
        ticks(&daemon, "hourly").await.is_empty(),
        "it starts from now"
    );
    for _ in 0..3 {
        clock.advance(Duration::from_secs(3600));
        let first = daemon.evaluate().await.unwrap();
        assert_eq!(first.ticks.len(), 1);
        assert_eq!(
            first.started.len(),
            1,
            "the tick's run starts in the same pass"
        );
        let again = daemon.evaluate().await.unwrap();
        assert!(again.ticks.is_empty(), "a tick fires once");
    }
    daemon.wait_for_runs().await;
    assert_eq!(
        ticks(&daemon, "hourly").await,
        [
            (at("2026-03-01T10:00:00Z"), TickStatus::Fired, 1),
            (at("2026-03-01T11:00:00Z"), TickStatus::Fired, 1),
            (at("2026-03-01T12:00:00Z"), TickStatus::Fired, 1),
        ]
    );
    let runs = daemon.instance().runs(10).await.unwrap();
    assert_eq!(runs.len(), 3);
    for run in &runs {
        assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
        assert_eq!(run.tags[JOB_TAG], "pipeline");
        assert_eq!(run.tags[SCHEDULE_TAG], "hourly");
        assert_eq!(run.tags["team"], "data", "the job's tags");
        assert_eq!(run.assets, [AssetKey::from("raw"), AssetKey::from("clean")]);
    }
}

#[tokio::test]
async fn missed_ticks_after_an_outage_follow_the_policy() {
    for (policy, expected) in [
        (MissedTicks::Latest, vec!["2026-03-01T15:00:00Z"]),
        (
            MissedTicks::All { limit: 3 },
            vec![
                "2026-03-01T13:00:00Z",
                "2026-03-01T14:00:00Z",
                "2026-03-01T15:00:00Z",
            ],
        ),
    ] {
        let schedule = Schedule::new("hourly", "pipeline", "@hourly")
            .running()
            .missed_ticks(policy);
        let defs = pipeline(schedule);
        let (daemon, clock) = daemon(&defs, "2026-03-01T09:30:00Z");
        daemon.evaluate().await.unwrap();
        // Down from 09:30 to 15:10: six ticks missed.
        clock.set(at("2026-03-01T15:10:00Z"));
        daemon.evaluate().await.unwrap();
        daemon.wait_for_runs().await;
        let fired: Vec<DateTime<Utc>> = ticks(&daemon, "hourly")
            .await
            .into_iter()
            .map(|(tick, _, _)| tick)
            .collect();
        let expected: Vec<DateTime<Utc>> = expected.into_iter().map(at).collect();
        assert_eq!(fired, expected, "{policy:?}");
        assert_eq!(
            daemon.instance().runs(10).await.unwrap().len(),
            expected.len()
        );
    }
}

#[tokio::test]
async fn a_daily_schedule_across_both_daylight_saving_changes_in_berlin() {
    let schedule = Schedule::new("nightly", "pipeline", "0 2 * * *")
        .timezone("Europe/Berlin")
        .running()
        .missed_ticks(MissedTicks::All { limit: 10 });
    let defs = pipeline(schedule);
    let (daemon, clock) = daemon(&defs, "2026-03-28T12:00:00Z");
    daemon.evaluate().await.unwrap();
    // An hour at a time through the spring change, and again through the autumn one.
    for _ in 0..48 {
        clock.advance(Duration::from_secs(3600));
        daemon.evaluate().await.unwrap();
    }
    clock.set(at("2026-10-24T12:00:00Z"));
    daemon.evaluate().await.unwrap();
    for _ in 0..48 {
        clock.advance(Duration::from_secs(3600));
        daemon.evaluate().await.unwrap();
    }
    daemon.wait_for_runs().await;
    let fired: Vec<String> = ticks(&daemon, "nightly")
        .await
        .into_iter()
        .map(|(tick, _, _)| tick.to_rfc3339())
        .collect();
    // 02:00 does not exist on 29 March: it runs at 03:00 CEST. The jump from 30 March to
    // 24 October catches up on the last week (within the limit of ten). On 25 October 02:00
    // happens twice: it runs once.
    assert!(
        fired.contains(&"2026-03-29T01:00:00+00:00".to_owned()),
        "{fired:?}"
    );
    assert!(
        fired.contains(&"2026-03-30T00:00:00+00:00".to_owned()),
        "{fired:?}"
    );
    let autumn: Vec<&String> = fired
        .iter()
        .filter(|t| t.starts_with("2026-10-2"))
        .collect();
    assert_eq!(
        autumn,
        [
            "2026-10-20T00:00:00+00:00",
            "2026-10-21T00:00:00+00:00",
            "2026-10-22T00:00:00+00:00",
            "2026-10-23T00:00:00+00:00",
            "2026-10-24T00:00:00+00:00",
            "2026-10-25T00:00:00+00:00",
            "2026-10-26T01:00:00+00:00"
        ],
        "the catch-up after the jump, then 02:00 CEST once on the 25th, then 02:00 CET"
    );
}

#[test]
fn bad_schedules_and_sensors_are_definitions_errors_naming_them() {
    let err = Definitions::builder()
        .specs([noop("raw")])
        .job(AssetJob::new("pipeline", "*"))
        .job(AssetJob::new("broken", "raww+"))
        .schedule(Schedule::new("minute61", "pipeline", "61 * * * *"))
        .schedule(Schedule::new("three_fields", "pipeline", "* * *"))
        .schedule(Schedule::new("mars", "pipeline", "@hourly").timezone("Mars/Olympus"))
        .schedule(Schedule::new("february30", "pipeline", "0 0 30 2 *"))
        .schedule(Schedule::new("orphan", "pipelin", "@daily"))
        .sensor(Sensor::on_assets("watcher", ["ra"]).job("pipeline"))
        .build()
        .unwrap_err();
    let text = err.to_string();
    for says in [
        "schedule `minute61` is invalid: cron expression \"61 * * * *\" is invalid",
        "schedule `three_fields` is invalid",
        "schedule `mars` is invalid: time zone \"Mars/Olympus\" is unknown",
        "schedule `february30` is invalid: cron expression \"0 0 30 2 *\" never fires",
        "schedule `orphan` is invalid: its job `pipelin` is not defined; did you mean `pipeline`?",
        "job `broken` is invalid: invalid selection `raww+`: unknown asset `raww`; did you mean `raw`?",
        "sensor `watcher` is invalid: it watches `ra`, which is not an asset; did you mean `raw`?",
    ] {
        assert!(text.contains(says), "missing {says:?} in:\n{text}");
    }
    assert_eq!(err.problems().len(), 7, "{text}");
    assert!(err
        .problems()
        .iter()
        .all(|p| !matches!(p, Problem::Cycle { .. })));
}

static FILES_SEEN: AtomicUsize = AtomicUsize::new(0);

/// A sensor over a "folder" whose file names a test sets: a run per new file (its name is
/// the run key), the count of files seen as the cursor.
fn file_sensor(folder: Arc<Mutex<Vec<String>>>) -> Sensor {
    Sensor::new("new_files", move |ctx: SensorContext| {
        let folder = Arc::clone(&folder);
        async move {
            FILES_SEEN.fetch_add(1, Ordering::SeqCst);
            let seen: usize = ctx.cursor.as_deref().unwrap_or("0").parse()?;
            let files = folder.lock().unwrap().clone();
            if files.len() <= seen {
                return Ok(SensorResult::skip("no new files").cursor(seen.to_string()));
            }
            // Every file, old ones included: their run keys keep them from running twice.
            let requests = files
                .iter()
                .map(|f| RunRequest::new().run_key(f).tag("file", f));
            Ok(SensorResult::runs(requests).cursor(files.len().to_string()))
        }
    })
    .job("pipeline")
    .minimum_interval(Duration::from_secs(30))
    .running()
}

#[tokio::test]
async fn a_sensor_cursor_and_run_keys_survive_a_daemon_restart() {
    let home = tempfile::tempdir().unwrap();
    let folder = Arc::new(Mutex::new(vec!["a.csv".to_owned()]));
    let defs = Definitions::builder()
        .specs([noop("raw")])
        .job(AssetJob::new("pipeline", "*"))
        .sensor(file_sensor(Arc::clone(&folder)))
        .build()
        .unwrap();
    let clock = Arc::new(ManualClock::new(at("2026-03-01T09:00:00Z")));
    let store = || SqliteStorage::open(home.path().join("dagrs.db")).unwrap();
    let first = Daemon::new(Instance::new(store()), defs.clone()).with_clock(clock.clone());
    let pass = first.evaluate().await.unwrap();
    assert_eq!(pass.ticks[0].status, TickStatus::Fired);
    assert_eq!(pass.ticks[0].run_ids.len(), 1);
    clock.advance(Duration::from_secs(10));
    assert!(
        first.evaluate().await.unwrap().ticks.is_empty(),
        "not evaluated again before its minimum interval"
    );
    first.wait_for_runs().await;
    drop(first);

    // A new daemon (a restart) on the same store: the cursor and the run keys hold.
    folder.lock().unwrap().push("b.csv".into());
    clock.advance(Duration::from_secs(60));
    let second = Daemon::new(Instance::new(store()), defs.clone()).with_clock(clock.clone());
    let pass = second.evaluate().await.unwrap();
    let tick = &pass.ticks[0];
    assert_eq!(tick.status, TickStatus::Fired);
    assert_eq!(
        tick.run_ids.len(),
        1,
        "only b.csv runs: a.csv's key was used"
    );
    assert!(
        tick.reason
            .as_deref()
            .unwrap_or_default()
            .contains("run key `a.csv`"),
        "{tick:?}"
    );
    clock.advance(Duration::from_secs(60));
    let pass = second.evaluate().await.unwrap();
    assert_eq!(pass.ticks[0].status, TickStatus::Skipped);
    assert_eq!(pass.ticks[0].reason.as_deref(), Some("no new files"));
    second.wait_for_runs().await;
    let runs = second.instance().runs(10).await.unwrap();
    let mut files: Vec<&str> = runs.iter().map(|r| r.tags["file"].as_str()).collect();
    files.sort();
    assert_eq!(files, ["a.csv", "b.csv"], "each file ran once");
    let cursor = second
        .instance()
        .storage()
        .cursor("sensor/new_files")
        .await
        .unwrap();
    assert_eq!(cursor.as_deref(), Some("2"));
    assert!(FILES_SEEN.load(Ordering::SeqCst) >= 3);
}

#[tokio::test]
async fn an_asset_sensor_runs_its_job_once_per_new_materialization() {
    let defs = Definitions::builder()
        .specs([noop("raw"), noop("report").dep("raw")])
        .job(AssetJob::new("reports", "report"))
        .sensor(
            Sensor::on_assets("raw_changed", ["raw"])
                .job("reports")
                .minimum_interval(Duration::ZERO)
                .running(),
        )
        .build()
        .unwrap();
    let (daemon, clock) = daemon(&defs, "2026-03-01T09:00:00Z");
    let instance = daemon.instance().clone();
    let first = daemon.evaluate().await.unwrap();
    assert_eq!(
        first.ticks[0].status,
        TickStatus::Skipped,
        "it starts watching"
    );
    instance
        .materialize(&defs, "raw", RunConfig::new())
        .await
        .unwrap();
    clock.advance(Duration::from_secs(1));
    let fired = daemon.evaluate().await.unwrap();
    assert_eq!(fired.ticks[0].status, TickStatus::Fired);
    assert_eq!(fired.started.len(), 1);
    daemon.wait_for_runs().await;
    clock.advance(Duration::from_secs(1));
    let quiet = daemon.evaluate().await.unwrap();
    assert_eq!(quiet.ticks[0].status, TickStatus::Skipped, "nothing new");
    let report_runs = instance
        .runs(10)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.tags.get(JOB_TAG).map(String::as_str) == Some("reports"))
        .count();
    assert_eq!(report_runs, 1);
}

#[tokio::test]
async fn a_run_status_sensor_sees_each_failed_run_once() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sensor = Sensor::on_run_status("failures", RunStatus::Failed, {
        let seen = Arc::clone(&seen);
        move |ctx: dagrs_core::RunStatusContext| {
            let seen = Arc::clone(&seen);
            async move {
                seen.lock().unwrap().push(ctx.run.run_id.to_string());
                Ok(SensorResult::skip("noted"))
            }
        }
    })
    .minimum_interval(Duration::ZERO)
    .running();
    let defs = Definitions::builder()
        .specs([AssetSpec::new("flaky", |_| async {
            Err::<(), _>(anyhow::anyhow!("the source is down"))
        })])
        .sensor(sensor)
        .build()
        .unwrap();
    let (daemon, clock) = daemon(&defs, "2026-03-01T09:00:00Z");
    daemon.evaluate().await.unwrap();
    let failed = daemon
        .instance()
        .materialize(&defs, "*", RunConfig::new())
        .await
        .unwrap();
    // The run ended at the system clock's now: move the manual clock past it.
    clock.set(Utc::now() + chrono::Duration::seconds(1));
    daemon.evaluate().await.unwrap();
    clock.advance(Duration::from_secs(1));
    daemon.evaluate().await.unwrap();
    assert_eq!(*seen.lock().unwrap(), [failed.run_id().to_string()]);
}

/// A one-request HTTP server on 127.0.0.1: records each request (head and body) and
/// answers with `answer`.
fn recording_server(answer: &'static str) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            record
                .lock()
                .unwrap()
                .push(format!("{head}\n{}", String::from_utf8_lossy(&body)));
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                answer.len()
            );
            let _ = stream.write_all(response.as_bytes());
        }
    });
    (url, seen)
}

fn failing_defs(slack: SlackResource, extra: Hook) -> Definitions {
    Definitions::builder()
        .specs([
            AssetSpec::new("flaky", |_| async {
                Err::<(), _>(anyhow::anyhow!("cannot reach postgres://app:hunter2@db/x"))
            })
            .hook(extra),
            noop("fine"),
        ])
        .resource(slack)
        .hook(dagrs_core::slack_on_failure())
        .build()
        .unwrap()
}

#[tokio::test]
async fn slack_hears_of_a_failure_and_a_failing_hook_does_not_fail_its_run() {
    let (url, webhook) = recording_server("ok");
    let secret_url = format!("{url}/services/T000/B000/s3cretpath");
    let broken = Hook::on_failure("broken", |_ctx: HookContext| async {
        Err::<(), _>(anyhow::anyhow!("the pager is down"))
    });
    let defs = failing_defs(SlackResource::webhook(&secret_url), broken);
    let result = materialize(&defs, "*", RunConfig::new()).await.unwrap();
    assert_eq!(
        result.step("fine").unwrap().status,
        dagrs_core::StepStatus::Succeeded
    );
    assert_eq!(
        result.status(),
        RunStatus::Failed,
        "flaky failed, by itself"
    );
    let events = result.events().await.unwrap();
    let hooks: Vec<&EventKind> = events
        .iter()
        .map(|e| &e.kind)
        .filter(|k| {
            matches!(
                k,
                EventKind::HookCompleted { .. } | EventKind::HookFailed { .. }
            )
        })
        .collect();
    assert!(hooks.iter().any(|k| matches!(k,
        EventKind::HookFailed { hook, error } if hook == "broken" && error.message == "the pager is down")));
    assert!(hooks.iter().any(|k| matches!(k,
        EventKind::HookCompleted { hook } if hook == "slack_on_failure")));
    let requests = webhook.lock().unwrap().clone();
    assert_eq!(requests.len(), 1, "one message: flaky failed once");
    let request = &requests[0];
    assert!(
        request.starts_with("POST /services/T000/B000/s3cretpath"),
        "{request}"
    );
    let body: serde_json::Value =
        serde_json::from_str(request.split_once("\n\n").unwrap().1).unwrap();
    let text = body["text"].as_str().unwrap();
    assert!(text.contains("asset `flaky` failed"), "{text}");
    assert!(text.contains(&result.run_id().to_string()), "{text}");
    assert!(text.contains("attempt 1"), "{text}");
    assert!(!text.contains("hunter2"), "passwords stay masked: {text}");
    let logged = format!("{:?}", result.events().await.unwrap());
    assert!(
        !logged.contains("s3cretpath"),
        "the webhook URL never reaches the log"
    );
}

#[tokio::test]
async fn slack_bots_post_with_their_token_and_an_api_error_is_a_hook_failure() {
    let (url, api) = recording_server(r#"{"ok": false, "error": "channel_not_found"}"#);
    let bot = SlackResource::bot("xoxb-s3cret-token", "#alerts").api_base(&url);
    let nothing = Hook::on_success("nothing", |_ctx: HookContext| async { Ok(()) });
    let defs = failing_defs(bot, nothing);
    let result = materialize(&defs, "flaky", RunConfig::new()).await.unwrap();
    let requests = api.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    assert!(
        requests[0].starts_with("POST /chat.postMessage"),
        "{}",
        requests[0]
    );
    assert!(requests[0]
        .to_ascii_lowercase()
        .contains("authorization: bearer xoxb-s3cret-token"));
    assert!(
        requests[0].contains(r##""channel":"#alerts""##),
        "{}",
        requests[0]
    );
    let events = result.events().await.unwrap();
    let failure = events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::HookFailed { hook, error } if hook == "slack_on_failure" => Some(error),
            _ => None,
        })
        .expect("the API's refusal is the hook's failure");
    let text = failure.to_string();
    assert!(text.contains("channel_not_found"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
}

#[tokio::test]
async fn tag_limits_hold_under_a_burst_of_queued_runs() {
    static RUNNING: AtomicUsize = AtomicUsize::new(0);
    static PEAK: AtomicUsize = AtomicUsize::new(0);
    let busy = AssetSpec::new("busy", |_| async {
        let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
        PEAK.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
        RUNNING.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    });
    let defs = Definitions::builder()
        .specs([busy, noop("light")])
        .job(AssetJob::new("warehouse_load", "busy").tag("database", "warehouse"))
        .job(AssetJob::new("other", "light"))
        .build()
        .unwrap();
    let instance = Instance::ephemeral()
        .with_run_queue(RunQueue::new(10).tag_limit(TagLimit::new("database", 2)));
    let mut queued = Vec::new();
    for _ in 0..20 {
        queued.push(
            instance
                .submit_job(&defs, "warehouse_load", RunOptions::new())
                .await
                .unwrap(),
        );
    }
    for _ in 0..5 {
        instance
            .submit_job(&defs, "other", RunOptions::new())
            .await
            .unwrap();
    }
    // A queued run can be cancelled while it waits.
    let cancelled = instance
        .cancel_run(&queued[19], "not needed")
        .await
        .unwrap();
    assert_eq!(cancelled, dagrs_core::Cancellation::Cancelled);
    let daemon = Daemon::new(instance.clone(), defs.clone());
    let first = daemon.evaluate().await.unwrap();
    assert_eq!(
        first.started.len(),
        7,
        "2 warehouse runs (the tag limit) and the 5 others"
    );
    loop {
        daemon.evaluate().await.unwrap();
        let left = instance.storage().queued_runs().await.unwrap();
        let active = instance.storage().running_runs().await.unwrap();
        let loading = active
            .iter()
            .filter(|r| r.tags.contains_key("database"))
            .count();
        assert!(loading <= 2, "{loading} warehouse runs at once");
        if left.is_empty() && active.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    daemon.wait_for_runs().await;
    assert!(
        PEAK.load(Ordering::SeqCst) <= 2,
        "peak {}",
        PEAK.load(Ordering::SeqCst)
    );
    let runs = instance.runs(100).await.unwrap();
    let by_status = runs.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r.status.as_str()).or_insert(0) += 1;
        m
    });
    assert_eq!(
        by_status,
        BTreeMap::from([("cancelled", 1), ("succeeded", 24)])
    );
}

#[tokio::test]
async fn a_stopping_daemon_lets_runs_finish_within_its_grace_then_cancels_them() {
    let defs = Definitions::builder()
        .specs([
            AssetSpec::new("hangs", |scope| async move {
                scope.context().cancelled().await;
                Ok(())
            }),
            AssetSpec::new("quick", |_| async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok(())
            }),
        ])
        .job(AssetJob::new("hanging", "hangs"))
        .job(AssetJob::new("short", "quick"))
        .build()
        .unwrap();
    let instance = Instance::ephemeral();
    let hanging = instance
        .submit_job(&defs, "hanging", RunOptions::new())
        .await
        .unwrap();
    let short = instance
        .submit_job(&defs, "short", RunOptions::new())
        .await
        .unwrap();
    let daemon = Arc::new(
        Daemon::new(instance.clone(), defs)
            .with_interval(Duration::from_millis(10))
            .with_grace(Duration::from_millis(300)),
    );
    let shutdown = CancellationToken::new();
    let running = tokio::spawn({
        let (daemon, shutdown) = (Arc::clone(&daemon), shutdown.clone());
        async move { daemon.run(shutdown).await }
    });
    while !instance.storage().queued_runs().await.unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    shutdown.cancel();
    running.await.unwrap().unwrap();
    assert_eq!(
        instance.run(&short).await.unwrap().status,
        RunStatus::Succeeded
    );
    assert_eq!(
        instance.run(&hanging).await.unwrap().status,
        RunStatus::Cancelled,
        "cancelled after the grace period"
    );
}

#[tokio::test]
async fn stopped_schedules_and_sensors_do_not_tick_and_their_state_is_stored() {
    let defs = Definitions::builder()
        .specs([noop("raw")])
        .job(AssetJob::new("pipeline", "*"))
        .schedule(Schedule::new("hourly", "pipeline", "@hourly"))
        .build()
        .unwrap();
    let (daemon, clock) = daemon(&defs, "2026-03-01T09:30:00Z");
    daemon.evaluate().await.unwrap();
    clock.advance(Duration::from_secs(7200));
    assert!(
        daemon.evaluate().await.unwrap().ticks.is_empty(),
        "stopped by default"
    );
    daemon
        .instance()
        .set_instigator_status("hourly", InstigatorStatus::Running)
        .await
        .unwrap();
    assert_eq!(
        daemon
            .instance()
            .storage()
            .instigator_states()
            .await
            .unwrap()["hourly"],
        InstigatorStatus::Running
    );
}
