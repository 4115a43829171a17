//! Scale-out on PostgreSQL: runs queued step by step, claimed by workers under leases with
//! fencing tokens, outputs handed between workers, retries, failures, cancellation, leases
//! that expire, writes of a fenced-out worker refused, and transactional materialization.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dagrs_core::prelude::*;
use dagrs_core::storage::RunRecord;
use dagrs_core::worker::{StepEnd, StepQueue, Worker};
use dagrs_core::{AssetKey, Event, EventKind, Instance, RunId, RunOptions, RunStatus, StepStatus};
use dagrs_postgres::testing::TestDatabase;
use dagrs_postgres::{PgContext, PgStorage, DEFAULT_SCHEMA};
use tokio_util::sync::CancellationToken;

async fn store(db: &TestDatabase) -> PgStorage {
    PgStorage::connect(db.pg.clone(), DEFAULT_SCHEMA)
        .await
        .expect("the store on the test database")
}

/// Workers of `instance` running `defs` until the token is cancelled.
struct Workers {
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<Result<(), dagrs_core::Error>>>,
}

impl Workers {
    fn start(instance: &Instance, defs: &Definitions, count: usize, lease: Duration) -> Self {
        let stop = CancellationToken::new();
        let tasks = (0..count)
            .map(|_| {
                let worker = Worker::new(instance, defs.clone())
                    .unwrap()
                    .concurrency(4)
                    .lease(lease)
                    .poll_interval(Duration::from_millis(200));
                tokio::spawn(worker.run(stop.clone()))
            })
            .collect();
        Workers { stop, tasks }
    }

    async fn stop(self) {
        self.stop.cancel();
        for task in self.tasks {
            task.await.unwrap().unwrap();
        }
    }
}

async fn wait_for_end(instance: &Instance, run_id: &RunId) -> dagrs_core::storage::RunRecord {
    let run = instance
        .wait_for_end(run_id, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(
        run.status.is_final(),
        "run {run_id} is still {}",
        run.status
    );
    run
}

/// Runs `defs` once on the queue, with one worker, and returns the run's record and log.
async fn queued_once(instance: &Instance, defs: &Definitions) -> (RunRecord, Vec<Event>) {
    let workers = Workers::start(instance, defs, 1, Duration::from_secs(5));
    let run_id = instance
        .enqueue(defs, "*", RunOptions::new())
        .await
        .unwrap();
    let run = wait_for_end(instance, &run_id).await;
    workers.stop().await;
    let events = instance.events(&run_id).await.unwrap();
    (run, events)
}

/// The run's log has seqs 0, 1, 2, … without gaps, from `RunStarted` to a final event.
fn assert_whole_log(events: &[Event]) {
    assert!(
        events.iter().enumerate().all(|(i, e)| e.seq == i as u64),
        "the log has a gap: {:?}",
        events.iter().map(|e| e.seq).collect::<Vec<_>>()
    );
    assert!(matches!(
        events.first().unwrap().kind,
        EventKind::RunStarted { .. }
    ));
    assert!(events.last().unwrap().is_final());
    assert_eq!(events.iter().filter(|e| e.is_final()).count(), 1);
}

fn materializations(events: &[Event]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for event in events {
        if let EventKind::Materialization { .. } = event.kind {
            *counts
                .entry(event.asset.as_deref().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    counts
}

/// The workers that ran attempts of the run, as their steps' starts name them.
fn workers_of(events: &[Event]) -> HashSet<String> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::StepStarted { worker, .. } => {
                Some(worker.clone().expect("a queued step names its worker"))
            }
            _ => None,
        })
        .collect()
}

#[asset]
async fn source() -> Result<u64> {
    Ok(10)
}

#[asset]
async fn doubled(source: Input<source>) -> Result<u64> {
    tokio::time::sleep(Duration::from_millis(30)).await;
    Ok(*source * 2)
}

#[asset]
async fn tripled(source: Input<source>) -> Result<u64> {
    tokio::time::sleep(Duration::from_millis(30)).await;
    Ok(*source * 3)
}

#[asset]
async fn squared(source: Input<source>) -> Result<u64> {
    tokio::time::sleep(Duration::from_millis(30)).await;
    Ok(*source * *source)
}

#[asset]
async fn total(
    doubled: Input<doubled>,
    tripled: Input<tripled>,
    squared: Input<squared>,
) -> Result<u64> {
    Ok(*doubled + *tripled + *squared)
}

fn diamond() -> Definitions {
    Definitions::builder()
        .specs(assets![source, doubled, tripled, squared, total])
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_split_a_queued_run_and_hand_outputs_on() {
    let db = TestDatabase::create().await;
    let instance = store(&db).await.instance();
    let defs = diamond();
    let workers = Workers::start(&instance, &defs, 2, Duration::from_secs(5));
    let mut runs = Vec::new();
    for _ in 0..4 {
        runs.push(
            instance
                .enqueue(&defs, "*", RunOptions::new())
                .await
                .unwrap(),
        );
    }
    let mut seen = HashSet::new();
    for run_id in &runs {
        let run = wait_for_end(&instance, run_id).await;
        assert_eq!(run.status, RunStatus::Succeeded);
        let events = instance.events(run_id).await.unwrap();
        assert_whole_log(&events);
        let counts = materializations(&events);
        assert_eq!(counts.len(), 5, "{counts:?}");
        assert!(counts.values().all(|&n| n == 1), "{counts:?}");
        // The last step read its three inputs from the steps before it.
        let total = instance
            .storage()
            .materializations(&AssetKey::from("total"), 10)
            .await
            .unwrap();
        assert!(total.iter().all(|m| m.value == serde_json::json!(150)));
        seen.extend(workers_of(&events));
    }
    assert_eq!(seen.len(), 2, "both workers ran steps: {seen:?}");
    // While they run, the workers are listed; once stopped, they are gone.
    let queue = instance.step_queue().unwrap();
    assert_eq!(queue.workers().await.unwrap().len(), 2);
    workers.stop().await;
    assert!(queue.workers().await.unwrap().is_empty());
}

static FLAKY_CALLS: AtomicU32 = AtomicU32::new(0);

#[asset(retry = Retry::fixed(2, Duration::from_millis(10)))]
async fn flaky() -> Result<u32> {
    let call = FLAKY_CALLS.fetch_add(1, Ordering::SeqCst);
    anyhow::ensure!(call > 0, "the first attempt fails");
    Ok(call)
}

#[asset]
async fn broken() -> Result<u32> {
    anyhow::bail!("broken on purpose")
}

#[asset]
async fn below_broken(broken: Input<broken>) -> Result<u32> {
    Ok(*broken)
}

#[asset]
async fn further_below(below_broken: Input<below_broken>) -> Result<u32> {
    Ok(*below_broken)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_run_again_and_failures_skip_what_lies_below() {
    let db = TestDatabase::create().await;
    let instance = store(&db).await.instance();
    let defs = Definitions::builder()
        .specs(assets![flaky, broken, below_broken, further_below])
        .build()
        .unwrap();
    let workers = Workers::start(&instance, &defs, 2, Duration::from_secs(5));
    let run_id = instance
        .enqueue(&defs, "*", RunOptions::new())
        .await
        .unwrap();
    let run = wait_for_end(&instance, &run_id).await;
    workers.stop().await;
    assert_eq!(run.status, RunStatus::Failed);
    let events = instance.events(&run_id).await.unwrap();
    assert_whole_log(&events);
    let steps = dagrs_core::outcomes_from_events(&run.assets, &events);
    let status: HashMap<&str, StepStatus> =
        steps.iter().map(|s| (s.key.as_str(), s.status)).collect();
    assert_eq!(status["flaky"], StepStatus::Succeeded);
    assert_eq!(status["broken"], StepStatus::Failed);
    assert_eq!(status["below_broken"], StepStatus::Skipped);
    assert_eq!(status["further_below"], StepStatus::Skipped);
    assert!(events.iter().any(|e| matches!(
        e.kind,
        EventKind::StepFailed {
            attempt: 1,
            will_retry: true,
            ..
        }
    ) && e.asset.as_deref() == Some("flaky")));
    assert!(events.iter().any(|e| matches!(
        &e.kind,
        EventKind::StepSkipped { reason } if reason == "upstream `broken` failed"
    ) && e.asset.as_deref() == Some("further_below")));
    match &events.last().unwrap().kind {
        EventKind::RunFailed { failed, skipped } => {
            assert_eq!(failed, &[AssetKey::from("broken")]);
            assert_eq!(skipped.len(), 2);
        }
        other => panic!("the run ends with {other:?}"),
    }
}

/// A lost lease counts as an attempt: one retry lets another worker run it again.
#[asset(retry = Retry::fixed(1, Duration::from_millis(10)))]
async fn lone() -> Result<u32> {
    Ok(7)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_is_taken_over_and_the_late_write_is_refused() {
    let db = TestDatabase::create().await;
    let storage = store(&db).await;
    let instance = storage.clone().instance();
    let queue: &dyn StepQueue = &storage;
    let defs = Definitions::builder().specs(assets![lone]).build().unwrap();
    let run_id = instance
        .enqueue(&defs, "*", RunOptions::new())
        .await
        .unwrap();
    // A worker that claims the step, then goes silent (paused, cut off, killed).
    let claims = queue
        .claim("silent", 10, Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(claims.len(), 1);
    let stale = claims[0].clone();
    // While its lease holds, nobody else gets the step.
    assert!(queue
        .claim("other", 10, Duration::from_secs(5))
        .await
        .unwrap()
        .is_empty());
    tokio::time::sleep(Duration::from_millis(400)).await;
    let workers = Workers::start(&instance, &defs, 1, Duration::from_secs(5));
    let run = wait_for_end(&instance, &run_id).await;
    assert_eq!(run.status, RunStatus::Succeeded);
    // The silent worker comes back and tries to record its end: fenced out, nothing written.
    let late = StepEnd {
        events: vec![Event {
            run_id: run_id.clone(),
            seq: 0,
            timestamp: chrono::Utc::now(),
            asset: Some(stale.asset.clone()),
            kind: EventKind::StepSucceeded {
                attempt: stale.attempt,
                duration: Duration::ZERO,
            },
        }],
        claim: stale,
        status: StepStatus::Succeeded,
        output: Some(serde_json::json!(0)),
        retry_in: None,
        attachment: None,
    };
    assert_eq!(queue.finish(vec![late]).await.unwrap(), vec![false]);
    workers.stop().await;
    let events = instance.events(&run_id).await.unwrap();
    assert_whole_log(&events);
    assert_eq!(materializations(&events)["lone"], 1);
    assert!(events.iter().any(|e| matches!(
        &e.kind,
        EventKind::StepFailed { error, will_retry: true, .. }
            if error.message.contains("worker silent stopped renewing its lease")
    )));
}

#[asset]
async fn waits_to_be_cancelled(ctx: &AssetContext) -> Result<u32> {
    ctx.cancelled().await;
    Ok(0)
}

#[asset]
async fn after_cancelled(waits_to_be_cancelled: Input<waits_to_be_cancelled>) -> Result<u32> {
    Ok(*waits_to_be_cancelled)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_queued_run_stops_its_steps_and_ends_cancelled() {
    let db = TestDatabase::create().await;
    let instance = store(&db).await.instance();
    let defs = Definitions::builder()
        .specs(assets![waits_to_be_cancelled, after_cancelled])
        .build()
        .unwrap();
    // Short leases: workers renew (and learn of the cancellation) every third of one.
    let workers = Workers::start(&instance, &defs, 1, Duration::from_millis(600));
    let run_id = instance
        .enqueue(&defs, "*", RunOptions::new())
        .await
        .unwrap();
    let storage = instance.storage();
    for _ in 0..100 {
        let events = storage.events(&run_id, None).await.unwrap();
        if events.len() > 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    instance.cancel_run(&run_id, "test").await.unwrap();
    let run = wait_for_end(&instance, &run_id).await;
    workers.stop().await;
    assert_eq!(run.status, RunStatus::Cancelled);
    let events = instance.events(&run_id).await.unwrap();
    assert_whole_log(&events);
    let steps = dagrs_core::outcomes_from_events(&run.assets, &events);
    assert_eq!(steps[0].status, StepStatus::Cancelled);
    assert_eq!(steps[1].status, StepStatus::Skipped);
}

#[asset]
async fn big_output() -> Result<String> {
    Ok("x".repeat(10_000))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_over_the_limit_fails_its_step_saying_so() {
    let db = TestDatabase::create().await;
    let instance = store(&db).await.with_output_limit(1_000).instance();
    let defs = Definitions::builder()
        .specs(assets![big_output])
        .build()
        .unwrap();
    let (run, events) = queued_once(&instance, &defs).await;
    assert_eq!(run.status, RunStatus::Failed);
    assert!(materializations(&events).is_empty());
    let failure = events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::StepFailed { error, .. } => Some(error.message.clone()),
            _ => None,
        })
        .unwrap();
    assert!(
        failure.contains(
            "the output of `big_output` is 10002 bytes serialized, over the limit of 1000 bytes"
        ),
        "{failure}"
    );
}

#[tokio::test]
async fn without_a_step_queue_workers_and_enqueue_say_what_is_missing() {
    let defs = diamond();
    let instance = Instance::ephemeral();
    let error = Worker::new(&instance, defs.clone()).unwrap_err();
    assert!(error.to_string().contains("no step queue"), "{error}");
    let error = instance
        .enqueue(&defs, "*", RunOptions::new())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("PgStorage::instance"), "{error}");
}

static TX_ATTEMPTS: AtomicU32 = AtomicU32::new(0);

/// Writes its rows in the step's transaction; its first attempt fails after writing.
#[asset(retry = Retry::fixed(1, Duration::from_millis(10)))]
async fn loads_rows(ctx: &AssetContext) -> Result<i64> {
    let tx = ctx.pg_transaction().await?;
    tx.execute(
        "INSERT INTO public.loaded (n) SELECT generate_series(1, 100)",
        &[],
    )
    .await?;
    let attempt = TX_ATTEMPTS.fetch_add(1, Ordering::SeqCst);
    anyhow::ensure!(attempt > 0, "failing after the write");
    Ok(100)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_attempt_rolls_its_writes_back_and_the_retry_commits_them_once() {
    let db = TestDatabase::create().await;
    db.client()
        .await
        .batch_execute("CREATE TABLE public.loaded (n integer NOT NULL)")
        .await
        .unwrap();
    let instance = store(&db).await.instance();
    let defs = Definitions::builder()
        .specs(assets![loads_rows])
        .build()
        .unwrap();
    let (run, events) = queued_once(&instance, &defs).await;
    assert_eq!(run.status, RunStatus::Succeeded);
    let rows: i64 = db
        .client()
        .await
        .query_one("SELECT count(*) FROM public.loaded", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 100, "the failed attempt's rows were rolled back");
    assert_whole_log(&events);
    assert_eq!(materializations(&events)["loads_rows"], 1);
}

#[tokio::test]
async fn outside_a_worker_an_asset_has_no_step_transaction() {
    let db = TestDatabase::create().await;
    db.client()
        .await
        .batch_execute("CREATE TABLE public.loaded (n integer NOT NULL)")
        .await
        .unwrap();
    let defs = Definitions::builder()
        .specs(assets![loads_rows])
        .build()
        .unwrap();
    let result = store(&db)
        .await
        .instance()
        .materialize(&defs, "*", RunConfig::new())
        .await
        .unwrap();
    assert!(!result.success());
    let error = result.steps()[0].error.as_ref().unwrap();
    assert!(
        error
            .message
            .contains("this step has no PostgreSQL transaction"),
        "{error:?}"
    );
}

static IN_POOL: AtomicU32 = AtomicU32::new(0);
static MOST_IN_POOL: AtomicU32 = AtomicU32::new(0);

async fn pooled_step() -> Result<u32> {
    let now = IN_POOL.fetch_add(1, Ordering::SeqCst) + 1;
    MOST_IN_POOL.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(40)).await;
    IN_POOL.fetch_sub(1, Ordering::SeqCst);
    Ok(now)
}

#[asset(pool = "warehouse")]
async fn pooled_a() -> Result<u32> {
    pooled_step().await
}

#[asset(pool = "warehouse")]
async fn pooled_b() -> Result<u32> {
    pooled_step().await
}

#[asset(pool = "warehouse")]
async fn pooled_c() -> Result<u32> {
    pooled_step().await
}

#[asset(pool = "warehouse")]
async fn pooled_d() -> Result<u32> {
    pooled_step().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_limit_holds_across_workers_and_no_slot_stays_held() {
    let db = TestDatabase::create().await;
    let instance = store(&db).await.instance().with_pool_limit("warehouse", 1);
    let defs = Definitions::builder()
        .specs(assets![pooled_a, pooled_b, pooled_c, pooled_d])
        .build()
        .unwrap();
    let workers = Workers::start(&instance, &defs, 3, Duration::from_secs(5));
    let mut runs = Vec::new();
    for _ in 0..2 {
        runs.push(
            instance
                .enqueue(&defs, "*", RunOptions::new())
                .await
                .unwrap(),
        );
    }
    for run_id in &runs {
        assert_eq!(
            wait_for_end(&instance, run_id).await.status,
            RunStatus::Succeeded
        );
    }
    workers.stop().await;
    assert_eq!(
        MOST_IN_POOL.load(Ordering::SeqCst),
        1,
        "one slot, across three workers"
    );
    let held: i64 = db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM dagrs.steps WHERE status = 'claimed'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(held, 0);
}

fn exit(code: std::process::ExitCode) -> String {
    format!("{code:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_queues_a_run_for_a_worker_and_lists_workers() {
    let db = TestDatabase::create().await;
    let instance = store(&db).await.instance();
    let defs = diamond();
    let cli = |args: &[&str]| {
        let args: Vec<String> = std::iter::once("dagrs")
            .chain(args.iter().copied())
            .map(str::to_owned)
            .collect();
        dagrs_core::cli::run_with(defs.clone(), instance.clone(), args)
    };
    // A worker from the command line, stopped as SIGTERM would, from a task of its own.
    let worker = Worker::new(&instance, defs.clone()).unwrap();
    let stop = CancellationToken::new();
    let running = tokio::spawn(worker.run(stop.clone()));
    let code = cli(&[
        "asset",
        "materialize",
        "--select",
        "*",
        "--launcher",
        "queue",
        "--json",
    ])
    .await;
    assert_eq!(exit(code), exit(std::process::ExitCode::SUCCESS));
    let run = instance.runs(1).await.unwrap().remove(0);
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(run.owner, dagrs_core::worker::QUEUE_OWNER);
    let code = cli(&["worker", "list", "--json"]).await;
    assert_eq!(exit(code), exit(std::process::ExitCode::SUCCESS));
    stop.cancel();
    running.await.unwrap().unwrap();
    // On an instance without a step queue, both verbs say what is missing and exit 2.
    let plain = Instance::ephemeral();
    for args in [
        vec!["dagrs", "worker"],
        vec![
            "dagrs",
            "asset",
            "materialize",
            "--all",
            "--launcher",
            "queue",
        ],
    ] {
        let code = dagrs_core::cli::run_with(defs.clone(), plain.clone(), args).await;
        assert_eq!(exit(code), exit(std::process::ExitCode::from(2)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_ui_lists_the_workers() {
    use tower::ServiceExt;
    let db = TestDatabase::create().await;
    let instance = store(&db).await.instance();
    let defs = diamond();
    let workers = Workers::start(&instance, &defs, 2, Duration::from_secs(5));
    let queue = instance.step_queue().unwrap();
    while queue.workers().await.unwrap().len() < 2 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let listed = queue.workers().await.unwrap();
    let app = dagrs_core::web::router(instance.clone(), defs.clone());
    let response = app
        .oneshot(
            axum::http::Request::get("/workers")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), axum::http::StatusCode::OK);
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let body = String::from_utf8_lossy(&body);
    for worker in &listed {
        assert!(body.contains(&worker.id), "{} is listed", worker.id);
        assert!(body.contains(&worker.pid.to_string()));
    }
    workers.stop().await;
}

/// Outputs kept in a map the test can read: an IO manager other than the queue's.
#[derive(Default, Clone)]
struct MapIo(Arc<std::sync::Mutex<HashMap<(String, String), serde_json::Value>>>);

#[async_trait::async_trait]
impl dagrs_core::worker::IoManager for MapIo {
    async fn store(
        &self,
        run_id: &RunId,
        asset: &AssetKey,
        value: &serde_json::Value,
    ) -> std::result::Result<(), dagrs_core::Error> {
        self.0
            .lock()
            .unwrap()
            .insert((run_id.to_string(), asset.to_string()), value.clone());
        Ok(())
    }

    async fn load(
        &self,
        run_id: &RunId,
        asset: &AssetKey,
    ) -> std::result::Result<Option<serde_json::Value>, dagrs_core::Error> {
        Ok(self
            .0
            .lock()
            .unwrap()
            .get(&(run_id.to_string(), asset.to_string()))
            .cloned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_io_manager_of_the_workers_carries_outputs_instead_of_the_queue() {
    let db = TestDatabase::create().await;
    let instance = store(&db).await.instance();
    let defs = diamond();
    let io = MapIo::default();
    let stop = CancellationToken::new();
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let worker = Worker::new(&instance, defs.clone())
                .unwrap()
                .io_manager(io.clone());
            tokio::spawn(worker.run(stop.clone()))
        })
        .collect();
    let run_id = instance
        .enqueue(&defs, "*", RunOptions::new())
        .await
        .unwrap();
    let run = wait_for_end(&instance, &run_id).await;
    stop.cancel();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(run.status, RunStatus::Succeeded);
    let kept = io.0.lock().unwrap().clone();
    assert_eq!(
        kept[&(run_id.to_string(), "source".to_owned())],
        serde_json::json!(10)
    );
    assert_eq!(
        kept[&(run_id.to_string(), "total".to_owned())],
        serde_json::json!(150)
    );
    let in_queue: i64 = db
        .client()
        .await
        .query_one("SELECT count(*) FROM dagrs.step_outputs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(in_queue, 0, "the queue kept no output");
}

static SLOW_STARTS: AtomicU32 = AtomicU32::new(0);

#[asset]
async fn slow_step() -> Result<u32> {
    SLOW_STARTS.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    Ok(1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_worker_hands_back_what_outlasts_its_grace_period() {
    let db = TestDatabase::create().await;
    let instance = store(&db).await.instance();
    let defs = Definitions::builder()
        .specs(assets![slow_step])
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let first = tokio::spawn(
        Worker::new(&instance, defs.clone())
            .unwrap()
            .grace(Duration::from_millis(100))
            .run(stop.clone()),
    );
    let run_id = instance
        .enqueue(&defs, "*", RunOptions::new())
        .await
        .unwrap();
    while SLOW_STARTS.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // SIGTERM, as the CLI turns it into a stop: the step outlasts the grace period.
    stop.cancel();
    first.await.unwrap().unwrap();
    let client = db.client().await;
    let row = client
        .query_one(
            "SELECT status, attempts FROM dagrs.steps WHERE run_id = $1",
            &[&run_id.as_str()],
        )
        .await
        .unwrap();
    let (status, attempts): (String, i32) = (row.get(0), row.get(1));
    assert_eq!(
        (status.as_str(), attempts),
        ("ready", 0),
        "handed back, no attempt counted"
    );
    // Another worker runs it, as its first attempt.
    let (run, events) = {
        let workers = Workers::start(&instance, &defs, 1, Duration::from_secs(5));
        let run = wait_for_end(&instance, &run_id).await;
        workers.stop().await;
        (run, instance.events(&run_id).await.unwrap())
    };
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_whole_log(&events);
    let starts: Vec<u32> = events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::StepStarted { attempt, .. } => Some(attempt),
            _ => None,
        })
        .collect();
    assert_eq!(starts, [1]);
    assert_eq!(SLOW_STARTS.load(Ordering::SeqCst), 2);
}
