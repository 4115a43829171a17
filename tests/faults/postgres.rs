//! PostgreSQL as the run store under faults: processes killed mid-run, several processes
//! setting up a new database at once, and the server itself stopped and restarted mid-run
//! (a server of the test's own, never the shared one).

use std::process::Stdio;
use std::time::Duration;

use dagrs_core::storage::Storage;
use dagrs_core::{EventKind, RunStatus};
use dagrs_postgres::testing::{TestDatabase, TestServer};
use dagrs_postgres::{PgStorage, PostgresResource, DEFAULT_SCHEMA};

use crate::home::{assert_clean, json, wait_for_slow, Home};

async fn store(url: &str) -> PgStorage {
    PgStorage::connect(PostgresResource::from_url(url).unwrap(), DEFAULT_SCHEMA)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_killed_run_on_postgres_is_recovered_by_the_next_command() {
    let db = TestDatabase::create().await;
    let home = Home::new("pg-kill");
    let probe = |args: &[&str]| {
        let mut command = home.probe(args);
        command.env("PROBE_DATABASE_URL", &db.url);
        command
    };
    let ok = probe(&["asset", "materialize", "--all", "--json"])
        .output()
        .unwrap();
    assert_clean("materialize on postgres", &ok);
    assert_eq!(json(&ok)["status"], "succeeded");

    let mut child = probe(&["asset", "materialize", "--all"])
        .env("PROBE_HANG", "1")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let store = store(&db.url).await;
    let run_id = wait_for_slow(&store).await;
    child.kill().unwrap();
    child.wait().unwrap();

    let listed = probe(&["run", "list", "--json"]).output().unwrap();
    assert_clean("run list on postgres", &listed);
    let runs = json(&listed);
    assert_eq!(runs[0]["run_id"], run_id.as_str());
    assert_eq!(runs[0]["status"], "failed");
    let events = store.events(&run_id, None).await.unwrap();
    assert!(matches!(
        events.last().unwrap().kind,
        EventKind::RunAbandoned { .. }
    ));
    let again = probe(&[
        "run",
        "reexecute",
        run_id.as_str(),
        "--from-failure",
        "--json",
    ])
    .output()
    .unwrap();
    assert_eq!(json(&again)["status"], "succeeded");
}

#[tokio::test]
async fn processes_setting_up_a_new_database_at_once_all_succeed() {
    for _ in 0..3 {
        // A database that does not exist yet: each process creates it and its store.
        let db = TestDatabase::reserve();
        let home = Home::new("pg-setup");
        let children: Vec<_> = (0..4)
            .map(|_| {
                home.probe(&["run", "list"])
                    .env("PROBE_DATABASE_URL", &db.url)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let output = child.wait_with_output().unwrap();
            assert_clean("a new database", &output);
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}

#[tokio::test]
async fn a_run_survives_a_restart_of_its_postgres() {
    let server = TestServer::start();
    let url = server.url("postgres");
    let home = Home::new("pg-restart");
    let child = home
        .probe(&["asset", "materialize", "--all", "--json"])
        .env("PROBE_DATABASE_URL", &url)
        .env("PROBE_SLEEP_MS", "2000")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let run_id = wait_for_slow(&store(&url).await).await;
    // The server goes away while `slow` runs, as in a crash, and comes back.
    server.restart();
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    println!("{}", String::from_utf8_lossy(&output.stderr));
    assert_clean("a run across a restart", &output);
    assert_eq!(json(&output)["status"], "succeeded");
    let store = store(&url).await;
    let run = store.run(&run_id).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Succeeded);
    let events = store.events(&run_id, None).await.unwrap();
    assert!(
        events.iter().enumerate().all(|(i, e)| e.seq == i as u64),
        "the log has no gap"
    );
    assert!(matches!(
        events.last().unwrap().kind,
        EventKind::RunSucceeded
    ));
    drop(store);
    // And a run that starts while the server is down fails cleanly, saying where.
    server.stop();
    let down = home
        .probe(&["asset", "materialize", "--all"])
        .env("PROBE_DATABASE_URL", &url)
        .output()
        .unwrap();
    assert_clean("a run with the server down", &down);
    assert_eq!(down.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&down.stderr).contains("cannot connect"));
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[tokio::test]
async fn two_daemons_on_one_postgres_fire_each_tick_once() {
    let db = TestDatabase::create().await;
    let storage = store(&db.url).await;
    let home = Home::new("two-daemons");
    // Both on a clock 600 times faster than real time from the same start: `every_minute`
    // ticks every 100 ms.
    let spawn = || {
        home.probe(&["daemon"])
            .env("PROBE_DATABASE_URL", &db.url)
            .env("PROBE_CLOCK_SPEED", "600")
            .env("PROBE_CLOCK_START", "2026-01-01T00:00:00Z")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let daemons = [spawn(), spawn()];
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let ticks = storage.ticks(Some("every_minute"), 1000).await.unwrap();
        if ticks.len() >= 60 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {} ticks in 90 s",
            ticks.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for daemon in daemons {
        let stopped = std::process::Command::new("kill")
            .args(["-TERM", &daemon.id().to_string()])
            .status()
            .unwrap();
        assert!(stopped.success());
        let output = daemon.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let mut ticks = storage.ticks(Some("every_minute"), 10_000).await.unwrap();
    ticks.reverse();
    assert!(ticks.len() >= 60);
    for pair in ticks.windows(2) {
        assert_eq!(
            pair[1].tick - pair[0].tick,
            chrono::Duration::minutes(1),
            "every minute once, none missed: {} then {}",
            pair[0].tick,
            pair[1].tick
        );
    }
    let mut run_ids = Vec::new();
    for tick in &ticks {
        assert_eq!(
            tick.status,
            dagrs_core::storage::TickStatus::Fired,
            "{tick:?}"
        );
        assert_eq!(tick.run_ids.len(), 1, "{tick:?}");
        run_ids.extend(tick.run_ids.iter().cloned());
    }
    let runs = storage.runs(10_000).await.unwrap();
    let scheduled: Vec<_> = runs
        .iter()
        .filter(|r| {
            r.tags.get(dagrs_core::SCHEDULE_TAG).map(String::as_str) == Some("every_minute")
        })
        .collect();
    assert_eq!(scheduled.len(), ticks.len(), "one run a tick");
    for run in scheduled {
        assert!(run_ids.contains(&run.run_id));
        assert!(
            matches!(run.status, RunStatus::Succeeded | RunStatus::Queued),
            "{:?}",
            run.status
        );
    }
}
