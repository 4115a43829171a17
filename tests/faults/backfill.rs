//! A backfill outlives the daemon that runs it: killed with SIGKILL mid-way, a new daemon
//! goes on from the stored state, and what was left — never what had succeeded — runs.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dagrs_core::storage::Storage;
use dagrs_core::{BackfillRecord, BackfillStatus, EventKind, BACKFILL_TAG, PARTITION_TAG};

use crate::home::{json, Home};

const DAY: &str = "2026-11-01-00:00...2026-11-02-00:00";

/// The probe with the hourly asset `hours`, each partition taking 150 ms.
fn probe(home: &Home, args: &[&str]) -> Command {
    let mut command = home.probe(args);
    command
        .env("PROBE_PARTITIONED", "1")
        .env("PROBE_SLEEP_MS", "150");
    command
}

fn daemon(home: &Home) -> Child {
    probe(home, &["daemon", "--interval-ms", "20", "--grace-s", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the daemon starts")
}

/// Hours in the succeeded set (each partition is 3600 s).
fn hours(set: &dagrs_core::partitions::PartitionSet) -> i64 {
    set.parts()
        .flat_map(|(_, r)| r.ranges())
        .map(|(start, end)| (end - start) / 3600)
        .sum()
}

async fn wait_for(
    store: &dyn Storage,
    id: &str,
    what: &str,
    done: impl Fn(&BackfillRecord) -> bool,
) -> BackfillRecord {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let backfill = store
            .backfill(id)
            .await
            .unwrap()
            .expect("the backfill is stored");
        if done(&backfill) {
            return backfill;
        }
        assert!(Instant::now() < deadline, "{what}: {backfill:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_backfill_whose_daemon_was_killed_finishes_only_what_was_left() {
    let home = Home::new("backfill-kill");
    let launched = probe(
        &home,
        &[
            "backfill",
            "launch",
            "--select",
            "hours",
            "--partition-range",
            DAY,
            "--max-in-flight",
            "3",
            "--detach",
            "--json",
        ],
    )
    .output()
    .unwrap();
    assert!(
        launched.status.success(),
        "{}",
        String::from_utf8_lossy(&launched.stderr)
    );
    let id = json(&launched)["id"].as_str().unwrap().to_owned();
    let store = home.store();

    let mut first = daemon(&home);
    let before = wait_for(&store, &id, "the first daemon made progress", |b| {
        hours(&b.succeeded) >= 6
    })
    .await;
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    let before = store
        .backfill(&id)
        .await
        .unwrap()
        .unwrap()
        .succeeded
        .union(&before.succeeded);
    assert!(hours(&before) < 24, "killed before the end");

    let mut second = daemon(&home);
    let ended = wait_for(&store, &id, "the second daemon ended it", |b| {
        !b.status.is_active()
    })
    .await;
    if ended.status == BackfillStatus::Failed {
        // Runs cut off by the kill failed: resuming retries those partitions only.
        let resumed = probe(&home, &["backfill", "resume", &id]).output().unwrap();
        assert!(
            resumed.status.success(),
            "{}",
            String::from_utf8_lossy(&resumed.stderr)
        );
        wait_for(&store, &id, "the resumed backfill ended", |b| {
            !b.status.is_active()
        })
        .await;
    }
    second.kill().unwrap();
    second.wait().unwrap();
    let done = store.backfill(&id).await.unwrap().unwrap();
    assert_eq!(done.status, BackfillStatus::Completed, "{done:?}");
    assert_eq!(hours(&done.succeeded), 24);

    // Every hour was materialized by one successful run, and no hour that had succeeded
    // ran again.
    let mut runs_per_hour: BTreeMap<String, usize> = BTreeMap::new();
    let mut materialized: BTreeMap<String, usize> = BTreeMap::new();
    for run in store.runs(1000).await.unwrap() {
        assert_eq!(run.tags[BACKFILL_TAG], id);
        *runs_per_hour
            .entry(run.tags[PARTITION_TAG].clone())
            .or_default() += 1;
        if run.status != dagrs_core::RunStatus::Succeeded {
            continue; // cut off by the kill
        }
        for event in store.events(&run.run_id, None).await.unwrap() {
            if let EventKind::Materialization {
                partition: Some(p), ..
            } = event.kind
            {
                *materialized.entry(p.key).or_default() += 1;
            }
        }
    }
    assert_eq!(materialized.len(), 24);
    assert!(materialized.values().all(|&n| n == 1), "{materialized:?}");
    for (start, end) in before.parts().flat_map(|(_, r)| r.ranges().to_vec()) {
        for hour in (start..end).step_by(3600) {
            let key = chrono::DateTime::from_timestamp(hour, 0)
                .unwrap()
                .format("%Y-%m-%d-%H:%M")
                .to_string();
            assert_eq!(runs_per_hour[&key], 1, "{key} had succeeded and ran again");
        }
    }
    let shown = probe(&home, &["asset", "partitions", "hours"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.contains("materialized") && text.contains(DAY),
        "{text}"
    );
}
