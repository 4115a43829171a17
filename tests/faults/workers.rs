//! Scale-out workers as processes under faults: workers SIGKILLed at random while they run
//! steps, their PostgreSQL restarted under them (a server of the test's own), and a worker
//! killed between its step's data write and its commit.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use dagrs_core::storage::Storage;
use dagrs_core::{EventKind, RunStatus};
use dagrs_postgres::testing::TestServer;
use dagrs_postgres::{PgStorage, PostgresResource, DEFAULT_SCHEMA};

use crate::home::Home;

async fn store(url: &str) -> PgStorage {
    PgStorage::connect(PostgresResource::from_url(url).unwrap(), DEFAULT_SCHEMA)
        .await
        .unwrap()
}

/// A worker process of the probe on `url`, with a 1 s lease.
fn worker(home: &Home, url: &str, env: &[(&str, &str)]) -> Child {
    let mut command = home.probe(&[
        "worker",
        "--lease-s",
        "1",
        "--grace-s",
        "5",
        "--concurrency",
        "8",
        "--pool",
        "chaos=3",
    ]);
    command
        .env("PROBE_DATABASE_URL", url)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command.spawn().expect("a worker starts")
}

/// `asset materialize --select SELECTION --launcher queue` on `url`: queues a run and
/// follows it to its end.
fn submit(home: &Home, url: &str, env: &[(&str, &str)], selection: &str) -> Child {
    home.probe(&[
        "asset",
        "materialize",
        "--select",
        selection,
        "--launcher",
        "queue",
        "--json",
    ])
    .env("PROBE_DATABASE_URL", url)
    .envs(env.iter().copied())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap()
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Stops a worker as a service manager would: SIGTERM, then waits for it.
fn terminate(mut child: Child) {
    let pid = child.id().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    kill(&mut child);
    panic!("worker {pid} did not stop within 30 s of SIGTERM");
}

async fn count(url: &str, sql: &str) -> i64 {
    let pg = PostgresResource::from_url(url).unwrap();
    pg.get()
        .await
        .unwrap()
        .query_one(sql, &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_killed_at_random_and_a_database_restart_lose_and_repeat_nothing() {
    const RUNS: usize = 4;
    const STEPS: usize = 250;
    let server = TestServer::start();
    let url = server.url("postgres");
    let home = Home::new("chaos");
    // Every fourth step is in pool `chaos`, which the workers limit to 3 slots.
    let env = [
        ("PROBE_STEPS", "250"),
        ("PROBE_SLEEP_MS", "5"),
        ("PROBE_POOL", "chaos"),
    ];
    // The store exists before the processes start.
    let storage = store(&url).await;
    let mut workers: Vec<Child> = (0..4).map(|_| worker(&home, &url, &env)).collect();
    let submitters: Vec<Child> = (0..RUNS)
        .map(|_| submit(&home, &url, &env, "group:wide"))
        .collect();
    let started = Instant::now();
    let mut restarted = false;
    let mut kills = 0;
    // SIGKILL a random worker every 200–500 ms (and start a new one), and restart the
    // database once, while the runs go on.
    loop {
        let running = storage.running_runs().await;
        if let Ok(running) = &running {
            let runs = storage.runs(100).await.unwrap_or_default();
            if runs.len() == RUNS && running.is_empty() {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "the runs did not end within 240 s"
        );
        tokio::time::sleep(Duration::from_millis(fastrand::u64(200..500))).await;
        if !restarted && started.elapsed() > Duration::from_secs(2) {
            server.restart();
            restarted = true;
            continue;
        }
        let victim = fastrand::usize(..workers.len());
        kill(&mut workers[victim]);
        workers[victim] = worker(&home, &url, &env);
        kills += 1;
    }
    println!("{kills} workers killed, the database restarted once");
    assert!(restarted && kills >= 3, "{kills} kills");
    for submitter in submitters {
        let output = tokio::task::spawn_blocking(move || submitter.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        println!("{}", String::from_utf8_lossy(&output.stderr));
    }
    for child in workers {
        terminate(child);
    }

    let runs = storage.runs(100).await.unwrap();
    assert_eq!(runs.len(), RUNS);
    let mut steps = 0;
    let mut taken_over = 0;
    for run in &runs {
        assert_eq!(run.status, RunStatus::Succeeded, "run {}", run.run_id);
        let events = storage.events(&run.run_id, None).await.unwrap();
        assert!(
            events.iter().enumerate().all(|(i, e)| e.seq == i as u64),
            "run {}: the log has a gap",
            run.run_id
        );
        assert!(matches!(events[0].kind, EventKind::RunStarted { .. }));
        assert!(matches!(
            events.last().unwrap().kind,
            EventKind::RunSucceeded
        ));
        let succeeded = events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::StepSucceeded { .. }))
            .count();
        assert_eq!(succeeded, STEPS, "run {}", run.run_id);
        steps += succeeded;
        taken_over += events
            .iter()
            .filter(|e| matches!(
                &e.kind,
                EventKind::StepFailed { error, .. } if error.message.contains("stopped renewing its lease")
            ))
            .count();
    }
    // The kills hit steps in flight, which other workers took over.
    assert!(
        taken_over > 0,
        "no step was taken over from a killed worker"
    );
    println!("{taken_over} steps taken over after their worker died");
    assert_eq!(steps, RUNS * STEPS);
    // Exactly one materialization record per successful step: none lost, none repeated.
    let records = count(&url, "SELECT count(*) FROM dagrs.materializations").await;
    let distinct = count(
        &url,
        "SELECT count(DISTINCT (run_id, asset)) FROM dagrs.materializations",
    )
    .await;
    assert_eq!(
        (records, distinct),
        ((RUNS * STEPS) as i64, (RUNS * STEPS) as i64)
    );
    // No claim, and so no slot of pool `chaos`, is left held; the pooled steps all ran.
    let claimed = count(
        &url,
        "SELECT count(*) FROM dagrs.steps WHERE status = 'claimed'",
    )
    .await;
    assert_eq!(claimed, 0);
    let pooled = count(
        &url,
        "SELECT count(*) FROM dagrs.steps WHERE pool = 'chaos' AND status = 'succeeded'",
    )
    .await;
    assert_eq!(pooled, (RUNS * STEPS.div_ceil(4)) as i64);
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_before_its_commit_leaves_neither_rows_nor_record() {
    let server = TestServer::start();
    let url = server.url("postgres");
    let home = Home::new("tx-kill");
    let storage = store(&url).await;
    let pg = PostgresResource::from_url(&url).unwrap();
    pg.get()
        .await
        .unwrap()
        .batch_execute("CREATE TABLE public.probe_rows (run_id text NOT NULL, n integer NOT NULL)")
        .await
        .unwrap();
    let mark = home.path().join("written");
    let mark_text = mark.to_string_lossy().into_owned();
    let env = [("PROBE_TX", "1"), ("PROBE_TX_MARK", mark_text.as_str())];
    let mut first = worker(&home, &url, &env);
    let submitter = submit(&home, &url, &env, "tx_rows");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !mark.exists() {
        assert!(Instant::now() < deadline, "the step never wrote its rows");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The rows are written, not committed: nobody else sees them.
    assert_eq!(
        count(&url, "SELECT count(*) FROM public.probe_rows").await,
        0
    );
    kill(&mut first);
    let rows_after_kill = count(&url, "SELECT count(*) FROM public.probe_rows").await;
    let records_after_kill = count(&url, "SELECT count(*) FROM dagrs.materializations").await;
    assert_eq!((rows_after_kill, records_after_kill), (0, 0));
    // Another worker takes the step over once the lease expires, and commits both once.
    let second = worker(&home, &url, &env);
    let output = tokio::task::spawn_blocking(move || submitter.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    println!("{}", String::from_utf8_lossy(&output.stderr));
    terminate(second);
    let run = storage.runs(1).await.unwrap().remove(0);
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(
        count(&url, "SELECT count(*) FROM public.probe_rows").await,
        100
    );
    assert_eq!(
        count(&url, "SELECT count(*) FROM dagrs.materializations").await,
        1
    );
    let events = storage.events(&run.run_id, None).await.unwrap();
    assert!(events.iter().any(|e| matches!(
        &e.kind,
        EventKind::StepFailed { error, will_retry: true, .. }
            if error.message.contains("stopped renewing its lease")
    )));
}

#[tokio::test]
async fn the_subprocess_launcher_runs_the_run_in_a_child_process() {
    let home = Home::new("subprocess");
    let output = home.run(&[
        "asset",
        "materialize",
        "--all",
        "--launcher",
        "subprocess",
        "--json",
    ]);
    crate::home::assert_clean("--launcher subprocess", &output);
    let result = crate::home::json(&output);
    assert_eq!(result["status"], "succeeded");
    let store = home.store();
    let run = store.runs(1).await.unwrap().remove(0);
    assert_eq!(run.status, RunStatus::Succeeded);
    // Driven by another process than the one that launched it, tagged for that child.
    let (_, pid) = run.owner.rsplit_once(':').unwrap();
    assert_ne!(pid, "0");
    assert_eq!(run.tags["dagrs/launcher"], "subprocess");
    let events = store.events(&run.run_id, None).await.unwrap();
    assert!(events.iter().enumerate().all(|(i, e)| e.seq == i as u64));
    assert!(matches!(
        events.last().unwrap().kind,
        EventKind::RunSucceeded
    ));
}

#[tokio::test]
async fn a_subprocess_that_dies_before_starting_its_run_leaves_it_failed() {
    let home = Home::new("subprocess-dies");
    // The child fails before it opens the store: its run, queued for it, is ended by the
    // launcher, saying why.
    let output = home
        .probe(&[
            "asset",
            "materialize",
            "--all",
            "--launcher",
            "subprocess",
            "--json",
        ])
        .env("PROBE_CHILD_EXIT", "1")
        .output()
        .unwrap();
    crate::home::assert_clean("a child that dies", &output);
    assert_eq!(output.status.code(), Some(1));
    let run = home.store().runs(1).await.unwrap().remove(0);
    assert_eq!(run.status, RunStatus::Failed);
    assert!(
        run.failure
            .as_deref()
            .is_some_and(|f| f.contains("exited") && f.contains("before starting it")),
        "{:?}",
        run.failure
    );
}
