//! The command line, run as a user would (a separate process on a SQLite store), and crash
//! safety end to end: a process running a pipeline is killed with SIGKILL in the
//! middle of a step; the next command marks the run failed, keeps its event log up to the
//! kill, and a re-execution from failure completes it.

use std::process::Stdio;

use dagrs_core::storage::Storage;
use dagrs_core::{EventKind, RunId, RunStatus};

use crate::home::{json, wait_for_slow, Home};

#[tokio::test]
async fn a_killed_run_is_marked_failed_and_reexecutes_from_failure() {
    let home = Home::new("crash");
    let mut child = home
        .probe(&["asset", "materialize", "--all"])
        .env("PROBE_HANG", "1")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let store = home.store();
    let run_id = wait_for_slow(&store).await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let before = store.events(&run_id, None).await.unwrap();
    assert_eq!(
        store.run(&run_id).await.unwrap().unwrap().status,
        RunStatus::Running,
        "nothing marked the run yet"
    );

    let listed = home.run(&["run", "list", "--json"]);
    assert!(listed.status.success());
    let runs = json(&listed);
    assert_eq!(runs[0]["run_id"], run_id.as_str());
    assert_eq!(runs[0]["status"], "failed");
    let failure = runs[0]["failure"].as_str().unwrap();
    assert!(failure.contains("is gone"), "{failure}");
    assert!(failure.contains("--from-failure"), "{failure}");

    // The log up to the kill is intact, followed by one RunAbandoned event.
    let after = store.events(&run_id, None).await.unwrap();
    assert_eq!(&after[..before.len()], &before[..]);
    assert_eq!(after.len(), before.len() + 1);
    assert!(matches!(
        after.last().unwrap().kind,
        EventKind::RunAbandoned { .. }
    ));
    assert!(after.iter().any(|e| e.asset.as_deref() == Some("first")
        && matches!(e.kind, EventKind::StepSucceeded { .. })));

    let shown = home.run(&["run", "show", run_id.as_str(), "--json"]);
    let steps = json(&shown)["steps"].clone();
    assert_eq!(steps[0]["status"], "succeeded");
    assert_eq!(steps[1]["status"], "cancelled", "slow was cut off");
    assert_eq!(steps[2]["status"], "skipped", "last never started");

    let again = home.run(&[
        "run",
        "reexecute",
        run_id.as_str(),
        "--from-failure",
        "--json",
    ]);
    assert!(again.status.success());
    let result = json(&again);
    assert_eq!(result["status"], "succeeded");
    let assets: Vec<&str> = result["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["asset"].as_str().unwrap())
        .collect();
    assert_eq!(
        assets,
        ["slow", "last"],
        "only what did not succeed runs again"
    );
    let child_run = RunId::from(result["run_id"].as_str().unwrap());
    let record = store.run(&child_run).await.unwrap().unwrap();
    assert_eq!(record.parent_run_id, Some(run_id.clone()));
    let last = store
        .latest_materialization(&"last".into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        last.value,
        serde_json::json!(63),
        "first's stored output was reused"
    );
}

#[test]
fn asset_list_shows_staleness_change_after_an_upstream_rematerialization() {
    let home = Home::new("stale");
    let listed = json(&home.run(&["asset", "list", "--json"]));
    assert_eq!(listed[0]["stale"]["reason"], "never_materialized");

    assert!(home
        .run(&["asset", "materialize", "--all"])
        .status
        .success());
    let listed = json(&home.run(&["asset", "list", "--json"]));
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["stale"].is_null()),
        "{listed}"
    );

    assert!(home
        .run(&["asset", "materialize", "--select", "first"])
        .status
        .success());
    let listed = json(&home.run(&["asset", "list", "--json"]));
    let stale = |key: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["key"] == key)
            .unwrap()["stale"]
            .clone()
    };
    assert!(stale("first").is_null());
    assert_eq!(stale("slow")["reason"], "upstream_newer");
    assert_eq!(stale("slow")["upstream"], "first");

    let table = home.run(&["asset", "list"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("yes (upstream `first` is newer)"), "{text}");
}

#[test]
fn config_files_in_every_format_and_bad_config_fails_before_the_run() {
    let home = Home::new("config");
    for (name, text) in [
        ("run.yaml", "assets:\n  first:\n    value: 5\n"),
        ("run.json", r#"{"assets": {"first": {"value": 5}}}"#),
        ("run.toml", "[assets.first]\nvalue = 5\n"),
    ] {
        let path = home.path().join(name);
        std::fs::write(&path, text).unwrap();
        let out = home.run(&[
            "asset",
            "materialize",
            "--all",
            "--config",
            path.to_str().unwrap(),
            "--json",
        ]);
        assert!(out.status.success(), "{name}");
        assert_eq!(json(&out)["status"], "succeeded");
    }
    let store_runs = || {
        let runs = json(&home.run(&["run", "list", "--json"]));
        runs.as_array().unwrap().len()
    };
    let before = store_runs();
    let bad = home.path().join("bad.yaml");
    std::fs::write(&bad, "assets:\n  first:\n    value: lots\n").unwrap();
    let out = home.run(&[
        "asset",
        "materialize",
        "--all",
        "--config",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid config for asset `first` at `value`"),
        "{stderr}"
    );
    assert_eq!(store_runs(), before, "nothing ran");

    let out = home.run(&["asset", "materialize", "--select", "frist"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean `first`?"));
}

#[test]
fn a_failed_run_exits_non_zero_and_prune_keeps_what_it_should() {
    let home = Home::new("prune");
    for _ in 0..3 {
        assert!(home
            .run(&["asset", "materialize", "--all"])
            .status
            .success());
    }
    let out = home.run(&["storage", "prune", "--max-runs", "1"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("pruned 2 runs"));
    let runs = json(&home.run(&["run", "list", "--json"]));
    assert_eq!(runs.as_array().unwrap().len(), 1);
    let listed = json(&home.run(&["asset", "list", "--json"]));
    assert!(listed
        .as_array()
        .unwrap()
        .iter()
        .all(|a| !a["latest"].is_null()));

    let out = home.run(&["storage", "prune"]);
    assert_eq!(out.status.code(), Some(2));

    let failed = home
        .probe(&["asset", "materialize", "--all"])
        .env("PROBE_FAIL", "1")
        .output()
        .unwrap();
    assert_eq!(failed.status.code(), Some(1), "a failed run exits with 1");
    let text = String::from_utf8_lossy(&failed.stdout);
    assert!(text.contains("slow was told to fail"), "{text}");
    let out = home.run(&["run", "show", "no-such-run"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("run `no-such-run` not found"));
}

#[tokio::test]
async fn run_cancel_from_another_process_stops_the_run() {
    let home = Home::new("cancel");
    let child = home
        .probe(&["asset", "materialize", "--all"])
        .env("PROBE_HANG", "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let store = home.store();
    let run_id = wait_for_slow(&store).await;

    let cancel = home.run(&["run", "cancel", run_id.as_str()]);
    assert!(cancel.status.success());
    // The running process sees the cancellation at its next heartbeat and stops.
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(1),
        "a cancelled run exits with 1"
    );
    let run = store.run(&run_id).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Cancelled);
    let events = store.events(&run_id, None).await.unwrap();
    assert!(matches!(
        events.last().unwrap().kind,
        EventKind::RunCancelled
    ));
    assert!(events
        .iter()
        .any(|e| e.asset.as_deref() == Some("slow")
            && matches!(e.kind, EventKind::StepCancelled { .. })));

    let again = home.run(&["run", "cancel", run_id.as_str()]);
    assert_eq!(
        again.status.code(),
        Some(1),
        "an ended run cannot be cancelled"
    );
}

#[tokio::test]
async fn jobs_schedules_queue_and_daemon_from_the_command_line() {
    let home = Home::new("daemon-cli");
    let listed = json(&home.run(&["schedule", "list", "--json"]));
    assert_eq!(listed[0]["name"], "every_minute");
    assert_eq!(listed[0]["status"], "stopped");
    let preview = home.run(&["schedule", "preview", "every_minute", "-n", "3"]);
    assert!(preview.status.success());
    assert_eq!(String::from_utf8_lossy(&preview.stdout).lines().count(), 3);
    assert!(home
        .run(&["schedule", "start", "every_minute"])
        .status
        .success());
    let listed = json(&home.run(&["schedule", "list", "--json"]));
    assert_eq!(listed[0]["status"], "running", "the state is stored");
    let unknown = home.run(&["schedule", "start", "every_minut"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("did you mean `every_minute`?"));

    let now = json(&home.run(&["job", "launch", "probe_job", "--json"]));
    assert_eq!(now["status"], "succeeded");
    let queued = home.run(&["job", "launch", "probe_job", "--queue"]);
    assert!(queued.status.success());
    let text = String::from_utf8_lossy(&queued.stdout).into_owned();
    let run_id = RunId::from(text.split_whitespace().nth(2).unwrap());
    let store = home.store();
    assert_eq!(
        store.run(&run_id).await.unwrap().unwrap().status,
        RunStatus::Queued
    );

    let daemon = home
        .probe(&["daemon", "--interval-ms", "50"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while store.run(&run_id).await.unwrap().unwrap().status != RunStatus::Succeeded {
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon never ran it"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let stopped = std::process::Command::new("kill")
        .args(["-INT", &daemon.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let output = daemon.wait_with_output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "Ctrl-C stops the daemon cleanly"
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("daemon stopped"));
    let ticks = home.run(&["tick", "list", "--schedule", "every_minute", "--json"]);
    assert!(ticks.status.success());
    assert!(json(&ticks).is_array());
}

#[test]
fn a_tracing_warning_in_an_asset_is_in_its_step_log_and_json_lines_name_the_run() {
    let home = Home::new("trace");
    let args = [
        "asset",
        "materialize",
        "--select",
        "first",
        "--log-format",
        "json",
    ];
    let out = home
        .probe(&args)
        .env("PROBE_TRACE", "1")
        .env("DAGRS_LOG", "debug")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"))
        })
        .collect();
    let in_step: Vec<_> = lines
        .iter()
        .filter(|l| {
            l["spans"]
                .as_str()
                .is_some_and(|s| s.ends_with("dagrs.step"))
        })
        .collect();
    assert!(
        in_step.len() >= 2,
        "ctx.log's line and the warning: {stderr}"
    );
    for line in &in_step {
        assert!(line["run_id"].is_string(), "{line}");
        assert_eq!(line["asset"], "first", "{line}");
    }
    let warning = lines
        .iter()
        .find(|l| l["message"] == "slow query")
        .unwrap_or_else(|| panic!("no warning in {stderr}"));
    assert_eq!(warning["level"], "WARN");
    assert_eq!(warning["target"], "probe_lib");
    assert_eq!(warning["rows"], 3);
    let run_id = warning["run_id"].as_str().unwrap();

    let shown = home.run(&["run", "show", run_id, "--logs"]);
    assert!(shown.status.success());
    let stdout = String::from_utf8_lossy(&shown.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains("[probe_lib]"))
        .unwrap_or_else(|| panic!("the warning is not in the run's log: {stdout}"));
    assert!(line.contains(" first "), "under its step: {line}");
    assert!(
        line.ends_with("warn: [probe_lib] slow query rows=3"),
        "{line}"
    );
    assert_eq!(
        stdout.matches("first ran").count(),
        1,
        "ctx.log's line once: {stdout}"
    );
}
