//! Processes as they really end and meet: signals, kills at random points, closed pipes,
//! several commands at once on one store, and stores that are new, read-only, half-broken or
//! damaged.

use std::process::{Child, Stdio};
use std::time::Duration;

use dagrs_core::storage::Storage;
use dagrs_core::{EventKind, RunId, RunStatus};

use crate::home::{assert_clean, json, wait_for_slow, Home};

fn wait(child: Child) -> std::process::Output {
    let output = child.wait_with_output().unwrap();
    println!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Every run of the store has ended, and its log is whole: seqs 0, 1, 2, … without gaps,
/// starting with `RunStarted` — or, for a run whose process died between recording it and
/// writing its first event, with the `RunAbandoned` that ended it.
async fn assert_every_run_ended_with_a_whole_log(store: &dyn Storage) {
    for run in store.runs(1000).await.unwrap() {
        assert!(
            run.status.is_final(),
            "run {} is {}",
            run.run_id,
            run.status
        );
        let events = store.events(&run.run_id, None).await.unwrap();
        assert!(
            events.iter().enumerate().all(|(i, e)| e.seq == i as u64),
            "run {}: the log has a gap",
            run.run_id
        );
        if let Some(first) = events.first() {
            let abandoned = matches!(first.kind, EventKind::RunAbandoned { .. });
            assert!(
                matches!(first.kind, EventKind::RunStarted { .. }) || abandoned,
                "run {} starts with {:?}",
                run.run_id,
                first.kind
            );
            assert!(
                !abandoned || events.len() == 1,
                "run {}: {events:?}",
                run.run_id
            );
        }
    }
}

#[tokio::test]
async fn sigterm_and_sighup_cancel_the_run_and_record_its_end() {
    for (signal, says) in [("TERM", "SIGTERM"), ("HUP", "SIGHUP")] {
        let home = Home::new("signal");
        let child = home
            .probe(&["asset", "materialize", "--all"])
            .env("PROBE_HANG", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let store = home.store();
        let run_id = wait_for_slow(&store).await;
        let sent = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let output = tokio::task::spawn_blocking(move || wait(child))
            .await
            .unwrap();
        assert_clean(signal, &output);
        assert_eq!(output.status.code(), Some(1), "SIG{signal} exits 1");
        assert!(String::from_utf8_lossy(&output.stderr).contains(says));
        let run = store.run(&run_id).await.unwrap().unwrap();
        assert_eq!(run.status, RunStatus::Cancelled, "SIG{signal}");
        let events = store.events(&run_id, None).await.unwrap();
        assert!(matches!(
            events.last().unwrap().kind,
            EventKind::RunCancelled
        ));
        assert!(events.iter().any(|e| e.asset.as_deref() == Some("slow")
            && matches!(e.kind, EventKind::StepCancelled { .. })));
    }
}

#[tokio::test]
async fn kills_at_random_points_leave_every_run_ended_with_a_whole_log() {
    let home = Home::new("kills");
    for round in 0..12u64 {
        // Killed anywhere from before the store opens to after the run ends; half the runs
        // spend 200 ms in `slow`, so many kills land inside a step.
        let mut child = home
            .probe(&["asset", "materialize", "--all", "--json"])
            .env("PROBE_SLEEP_MS", if round % 2 == 0 { "200" } else { "0" })
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let delay = fastrand::u64(0..400);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        let signal = if round % 3 == 0 { "-TERM" } else { "-KILL" };
        let _ = std::process::Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status();
        let _ = child.wait();
    }
    // The next command ends what the kills left running.
    let listed = home.run(&["run", "list", "--json", "--limit", "100"]);
    assert_clean("run list after kills", &listed);
    assert!(listed.status.success());
    assert_every_run_ended_with_a_whole_log(&home.store()).await;
    let again = home.run(&["asset", "materialize", "--all"]);
    assert!(again.status.success(), "the store is fine after the kills");
}

#[test]
fn a_closed_pipe_ends_output_quietly() {
    let home = Home::new("pipe");
    for _ in 0..3 {
        assert!(home
            .run(&["asset", "materialize", "--all"])
            .status
            .success());
    }
    for args in [
        &["run", "list"][..],
        &["run", "list", "--json"],
        &["asset", "list"],
    ] {
        let mut child = home
            .probe(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Like `| head -0`: the reader is gone before the first line.
        drop(child.stdout.take());
        let output = wait(child);
        assert_clean(&args.join(" "), &output);
        assert_eq!(output.status.code(), Some(0), "{args:?}");
    }
}

#[test]
fn four_processes_opening_a_new_home_at_once_all_succeed() {
    for round in 0..5 {
        let home = Home::new("new-home");
        let children: Vec<Child> = (0..4)
            .map(|i| {
                let args: &[&str] = if i % 2 == 0 {
                    &["asset", "materialize", "--all"]
                } else {
                    &["run", "list"]
                };
                home.probe(args)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let output = wait(child);
            assert_clean("a new home", &output);
            assert!(
                output.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}

#[test]
fn prune_beside_running_commands_never_breaks_them() {
    let home = Home::new("prune-race");
    assert!(home
        .run(&["asset", "materialize", "--all"])
        .status
        .success());
    let mut children = Vec::new();
    for round in 0..6 {
        children.push(
            home.probe(&["storage", "prune", "--max-runs", "0"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        for args in [&["asset", "materialize", "--all"][..], &["run", "list"]] {
            children.push(
                home.probe(args)
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap(),
            );
        }
        if round % 2 == 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    for child in children {
        let output = wait(child);
        assert_clean("beside prune", &output);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[tokio::test]
async fn reading_commands_create_nothing_and_read_a_read_only_home() {
    let home = Home::new("read-only");
    let missing = home.path().join("never");
    for args in [&["run", "list"][..], &["asset", "list", "--json"]] {
        let output = home
            .probe(args)
            .env("DAGRS_HOME", &missing)
            .output()
            .unwrap();
        assert_clean("a read on a missing home", &output);
        assert!(output.status.success());
    }
    assert!(!missing.exists(), "a read created the home");

    assert!(home
        .run(&["asset", "materialize", "--all"])
        .status
        .success());
    let files = |dir: &std::path::Path| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let before = files(home.path());
    // The home as a read-only mount (root writes through file modes; a mount it cannot).
    let dir = home.path().display().to_string();
    let in_read_only_home = |args: &str| {
        let output = std::process::Command::new("unshare")
            .args(["-m", "sh", "-c"])
            .arg(format!(
                "mount --bind -o ro {dir} {dir} && exec {} {args}",
                crate::home::PROBE
            ))
            .env("DAGRS_HOME", home.path())
            .output()
            .expect("this test needs `unshare` (util-linux) to mount the home read-only");
        println!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    };
    let listed = in_read_only_home("run list --json");
    assert_clean("run list on a read-only home", &listed);
    assert!(listed.status.success());
    assert_eq!(json(&listed).as_array().unwrap().len(), 1);
    let shown = in_read_only_home("asset list");
    assert!(shown.status.success());
    let written = in_read_only_home("asset materialize --all");
    assert_clean("materialize on a read-only home", &written);
    assert_eq!(written.status.code(), Some(2));
    assert_eq!(files(home.path()), before, "nothing was added to the home");
}

#[tokio::test]
async fn a_run_whose_events_cannot_be_stored_is_never_marked_succeeded() {
    let home = Home::new("no-events");
    assert!(home.run(&["run", "list"]).status.success());
    assert!(home
        .run(&["asset", "materialize", "--all"])
        .status
        .success());
    let db = home.path().join("dagrs.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("DROP TABLE events")
        .unwrap();
    let output = home.run(&["asset", "materialize", "--all"]);
    assert_clean("no events table", &output);
    assert_eq!(output.status.code(), Some(2));
    let store = home.store();
    let runs = store.runs(10).await.unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].status, RunStatus::Failed, "{:?}", runs[0]);
    assert!(runs[0]
        .failure
        .as_deref()
        .is_some_and(|f| f.contains("cannot record its events")));
    assert_eq!(
        runs[1].status,
        RunStatus::Succeeded,
        "the earlier run is kept"
    );
}

#[test]
fn a_damaged_store_is_named_with_how_to_recover() {
    let home = Home::new("damaged");
    assert!(home
        .run(&["asset", "materialize", "--all"])
        .status
        .success());
    rusqlite::Connection::open(home.path().join("dagrs.db"))
        .unwrap()
        .execute_batch("UPDATE runs SET tags = CAST(x'ff7b7d' AS TEXT)")
        .unwrap();
    let output = home.run(&["run", "list"]);
    assert_clean("a damaged store", &output);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("is damaged") && stderr.contains(".recover"),
        "{stderr}"
    );
}

#[tokio::test]
async fn cancelling_a_run_that_just_ended_reports_its_true_end() {
    let home = Home::new("cancel-race");
    let done = home.run(&["asset", "materialize", "--all", "--json"]);
    let run_id = RunId::from(json(&done)["run_id"].as_str().unwrap());
    let cancel = home.run(&["run", "cancel", run_id.as_str()]);
    assert_clean("cancel after the end", &cancel);
    assert_eq!(cancel.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&cancel.stderr).contains("already ended (succeeded)"));
    let run = home.store().run(&run_id).await.unwrap().unwrap();
    assert_eq!(
        run.status,
        RunStatus::Succeeded,
        "the record keeps the truth"
    );
}
