//! The SQLite store's own tests: the contract suite, and what only a file has (reopening,
//! versions, foreign files, one writer per file, batching, instants).

use std::collections::BTreeMap;
use std::fs;
use std::time::Instant;

use chrono::TimeZone;
use rusqlite::Connection;
use serde_json::json;

use super::file::{APPLICATION_ID, SCHEMA_VERSION, SQLITE_HEADER};
use super::*;
use crate::backfill::BackfillStatus;
use crate::check::CheckSeverity;
use crate::event::LogLevel;
use crate::partition::status::PartitionOutcome;
use crate::storage::contract::{
    at, automation_record, backfill_record, check_evaluated, event, minutes,
    partition_materialized, run_record,
};
use crate::storage::{CheckRecord, MaterializationPosition};

/// A fresh temp folder, removed on drop, with the store's file in it.
struct TempDir(tempfile::TempDir);

impl TempDir {
    fn new(name: &str) -> TempDir {
        TempDir(
            tempfile::Builder::new()
                .prefix(&format!("dagrs-sqlite-{name}-"))
                .tempdir()
                .unwrap(),
        )
    }

    fn file(&self) -> PathBuf {
        self.0.path().join("dagrs.db")
    }
}

/// A store in its own temp folder, which goes when the store does.
struct TestStore {
    storage: SqliteStorage,
    _dir: TempDir,
}

impl TestStore {
    fn fresh() -> TestStore {
        let dir = TempDir::new("contract");
        let storage = SqliteStorage::open(dir.file()).unwrap();
        TestStore { storage, _dir: dir }
    }
}

impl std::ops::Deref for TestStore {
    type Target = SqliteStorage;
    fn deref(&self) -> &SqliteStorage {
        &self.storage
    }
}

crate::storage_contract_tests!(async { TestStore::fresh() });

fn log(id: &str, seq: u64, message: &str) -> Event {
    event(
        id,
        seq,
        Some("a"),
        EventKind::Log {
            level: LogLevel::Info,
            message: message.into(),
        },
    )
}

fn materialization(id: &str, seq: u64, asset: &str, value: serde_json::Value) -> Event {
    event(
        id,
        seq,
        Some(asset),
        EventKind::Materialization {
            metadata: BTreeMap::from([("rows".to_owned(), json!(seq))]),
            value,
            code_version: Some("v1".into()),
            partition: None,
        },
    )
}

/// Whether a store of `path` is open in this process.
fn is_open(path: &Path) -> bool {
    let path = fs::canonicalize(path).unwrap();
    lock(registry())
        .get(&path)
        .and_then(Weak::upgrade)
        .is_some()
}

fn open_error(path: &Path) -> String {
    SqliteStorage::open(path)
        .expect_err("the file must be refused")
        .to_string()
}

/// The files in `dir`, by name.
fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn reopening_keeps_everything() {
    let dir = TempDir::new("reopen");
    let path = dir.0.path().join("nested").join("folders").join("dagrs.db");
    let mut parent = run_record("p1", 0);
    parent.tags.insert("owner".into(), "ops".into());
    let mut child = run_record("p2", 5);
    child.parent_run_id = Some(parent.run_id.clone());
    let events = vec![
        event(
            "p1",
            0,
            None,
            EventKind::RunStarted {
                selection: vec!["a".into()],
            },
        ),
        event(
            "p1",
            1,
            Some("a"),
            EventKind::StepStarted {
                attempt: 1,
                worker: None,
            },
        ),
        materialization("p1", 2, "a", json!({"rows": [1, 2, 3]})),
        event(
            "p1",
            3,
            Some("a"),
            EventKind::StepSucceeded {
                attempt: 1,
                duration: Duration::from_micros(1_234_567),
            },
        ),
        event(
            "p1",
            4,
            None,
            EventKind::RunFailed {
                failed: vec!["b".into()],
                skipped: vec![],
            },
        ),
    ];
    {
        let store = SqliteStorage::open(&path).unwrap();
        assert!(path.exists(), "open creates the file and its folders");
        assert_eq!(store.path(), fs::canonicalize(&path).unwrap());
        store.create_run(&parent).await.unwrap();
        store.create_run(&child).await.unwrap();
        store.append_events(&events[..2]).await.unwrap();
        store.append_events(&events[2..]).await.unwrap();
        assert!(store
            .finish_run(&parent.run_id, RunStatus::Failed, at(9), Some("b failed"))
            .await
            .unwrap());
        store.heartbeat(&child.run_id, at(7)).await.unwrap();
        assert!(store
            .claim_tick(&crate::storage::contract::tick("hourly", 60))
            .await
            .unwrap());
        store.set_cursor("files", "offset=3").await.unwrap();
    }
    assert!(!is_open(&path), "the store was closed");

    let store = SqliteStorage::open(&path).unwrap();
    let mut finished = parent.clone();
    finished.status = RunStatus::Failed;
    finished.ended_at = Some(at(9));
    finished.failure = Some("b failed".into());
    assert_eq!(
        store.run(&parent.run_id).await.unwrap(),
        Some(finished.clone())
    );
    let mut beating = child.clone();
    beating.heartbeat_at = at(7);
    assert_eq!(store.runs(10).await.unwrap(), [beating.clone(), finished]);
    assert_eq!(store.running_runs().await.unwrap(), [beating]);
    assert_eq!(store.events(&parent.run_id, None).await.unwrap(), events);
    let latest = store.latest_materializations().await.unwrap();
    assert_eq!(latest.len(), 1);
    assert_eq!(
        (latest[0].asset.as_str(), latest[0].seq, &latest[0].value),
        ("a", 2, &json!({"rows": [1, 2, 3]}))
    );
    assert_eq!(latest[0].timestamp, events[2].timestamp);
    assert!(
        !store
            .claim_tick(&crate::storage::contract::tick("hourly", 60))
            .await
            .unwrap(),
        "a claimed tick stays claimed"
    );
    assert_eq!(
        store.cursor("files").await.unwrap().as_deref(),
        Some("offset=3")
    );
}

#[tokio::test]
async fn events_come_back_in_order_after_reopening() {
    let dir = TempDir::new("order");
    let runs = ["o1", "o2", "o3"];
    {
        let store = SqliteStorage::open(dir.file()).unwrap();
        for (i, id) in runs.iter().enumerate() {
            store.create_run(&run_record(id, i as i64)).await.unwrap();
        }
        // Batches mix runs and arrive out of order: 20..30, then 0..10, then 10..20.
        for range in [20..30, 0..10, 10..20] {
            let batch: Vec<Event> = range
                .rev()
                .flat_map(|seq| {
                    runs.iter()
                        .map(move |id| log(id, seq, &format!("{id}-{seq}")))
                })
                .collect();
            store.append_events(&batch).await.unwrap();
        }
    }
    let store = SqliteStorage::open(dir.file()).unwrap();
    for id in runs {
        let expected: Vec<Event> = (0..30)
            .map(|seq| log(id, seq, &format!("{id}-{seq}")))
            .collect();
        assert_eq!(
            store.events(&RunId::from(id), None).await.unwrap(),
            expected
        );
        assert_eq!(
            store.events(&RunId::from(id), Some(24)).await.unwrap(),
            expected[25..]
        );
    }
}

#[tokio::test]
async fn a_new_store_is_versioned_and_in_wal_mode() {
    let dir = TempDir::new("fresh");
    let store = SqliteStorage::open(dir.file()).unwrap();
    let conn = Connection::open(store.path()).unwrap();
    let pragma = |name: &str| -> String {
        conn.pragma_query_value(None, name, |row| row.get::<_, rusqlite::types::Value>(0))
            .map(|value| match value {
                rusqlite::types::Value::Integer(i) => i.to_string(),
                rusqlite::types::Value::Text(t) => t,
                other => format!("{other:?}"),
            })
            .unwrap()
    };
    assert_eq!(pragma("journal_mode"), "wal");
    assert_eq!(pragma("user_version"), SCHEMA_VERSION.to_string());
    assert_eq!(pragma("application_id"), APPLICATION_ID.to_string());
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    for table in ["cursors", "events", "materializations", "runs", "ticks"] {
        assert!(
            tables.iter().any(|t| t == table),
            "{table} is missing from {tables:?}"
        );
    }
}

#[tokio::test]
async fn a_store_of_a_newer_schema_is_refused_and_left_untouched() {
    let dir = TempDir::new("newer");
    let path = dir.file();
    {
        let store = SqliteStorage::open(&path).unwrap();
        store.create_run(&run_record("r", 0)).await.unwrap();
    }
    {
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
    }
    let before = fs::read(&path).unwrap();
    let files = files_in(dir.0.path());
    let message = open_error(&path);
    let shown = fs::canonicalize(&path).unwrap().display().to_string();
    assert!(message.contains(&shown), "{message}");
    assert!(message.contains("newer version of dagrs"), "{message}");
    assert!(
        message.contains(&format!("schema version is {}", SCHEMA_VERSION + 1)),
        "{message}"
    );
    assert!(
        message.contains(&format!("up to {SCHEMA_VERSION}")),
        "{message}"
    );
    assert!(
        fs::read(&path).unwrap() == before,
        "the file is not modified"
    );
    assert_eq!(files_in(dir.0.path()), files);
}

#[tokio::test]
async fn files_that_are_not_databases_are_refused_and_left_untouched() {
    let mut rng = fastrand::Rng::with_seed(7);
    let random: Vec<u8> = (0..4096).map(|_| rng.u8(..)).collect();
    let mut damaged = SQLITE_HEADER.to_vec();
    damaged.resize(4096, 0xFF);
    let cases: [(&str, Vec<u8>); 4] = [
        ("random bytes", random),
        ("text", b"name,value\nflow,1\npressure,2\n".to_vec()),
        ("zeros", vec![0; 1024]),
        ("a SQLite header over garbage", damaged),
    ];
    for (what, bytes) in cases {
        let dir = TempDir::new("garbage");
        let path = dir.file();
        fs::write(&path, &bytes).unwrap();
        let message = open_error(&path);
        let shown = fs::canonicalize(&path).unwrap().display().to_string();
        assert!(
            message.contains(&format!(
                "{shown} is not a dagrs store: file is not a database"
            )),
            "{what}: {message}"
        );
        assert!(
            message.contains("move it away or set DAGRS_HOME"),
            "{what}: {message}"
        );
        assert!(
            fs::read(&path).unwrap() == bytes,
            "{what}: the file is not modified"
        );
        assert_eq!(
            files_in(dir.0.path()),
            ["dagrs.db"],
            "{what}: no files are added"
        );
    }
}

#[tokio::test]
async fn another_programs_database_is_refused_and_left_untouched() {
    let dir = TempDir::new("foreign");
    let path = dir.file();
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT);
             INSERT INTO customers (name) VALUES ('ada');
             CREATE TABLE runs (id INTEGER);",
        )
        .unwrap();
    }
    let before = fs::read(&path).unwrap();
    let message = open_error(&path);
    assert!(message.contains("not a dagrs store"), "{message}");
    assert!(message.contains("`customers`, `runs`"), "{message}");
    assert!(message.contains("DAGRS_HOME"), "{message}");
    assert!(
        fs::read(&path).unwrap() == before,
        "the file is not modified"
    );
    assert_eq!(files_in(dir.0.path()), ["dagrs.db"]);
}

#[tokio::test]
async fn an_empty_database_becomes_a_store() {
    let dir = TempDir::new("empty");
    let zero_bytes = dir.0.path().join("zero.db");
    fs::write(&zero_bytes, b"").unwrap();
    let emptied = dir.0.path().join("emptied.db");
    {
        let conn = Connection::open(&emptied).unwrap();
        conn.execute_batch("CREATE TABLE t (x); DROP TABLE t;")
            .unwrap();
    }
    assert!(fs::metadata(&emptied).unwrap().len() > 0);
    for path in [zero_bytes, emptied] {
        let store = SqliteStorage::open(&path).unwrap();
        store.create_run(&run_record("r", 0)).await.unwrap();
        assert_eq!(store.runs(10).await.unwrap().len(), 1);
    }
}

#[tokio::test]
async fn a_folder_is_refused() {
    let dir = TempDir::new("folder");
    let message = open_error(dir.0.path());
    assert!(message.contains("is a folder"), "{message}");
}

#[test]
fn the_default_path_follows_dagrs_home() {
    assert_eq!(
        default_path_in(Some(PathBuf::from("/srv/dagrs"))),
        Path::new("/srv/dagrs/dagrs.db")
    );
    assert_eq!(
        default_path_in(Some(PathBuf::new())),
        Path::new(".dagrs/dagrs.db")
    );
    assert_eq!(default_path_in(None), Path::new(".dagrs/dagrs.db"));
}

#[tokio::test]
async fn opens_of_one_file_share_one_writer() {
    let dir = TempDir::new("shared");
    fs::create_dir_all(dir.0.path().join("sub")).unwrap();
    let first = SqliteStorage::open(dir.file()).unwrap();
    let second = SqliteStorage::open(dir.0.path().join("sub").join("..").join("dagrs.db")).unwrap();
    assert!(Arc::ptr_eq(&first.shared, &second.shared));
    assert!(Arc::ptr_eq(&first.shared, &first.clone().shared));
    let other = SqliteStorage::open(dir.0.path().join("other.db")).unwrap();
    assert!(!Arc::ptr_eq(&first.shared, &other.shared));
    first.create_run(&run_record("r", 0)).await.unwrap();
    assert!(second.run(&RunId::from("r")).await.unwrap().is_some());
    drop((first, second));
    assert!(!is_open(&dir.file()));
    assert!(is_open(&dir.0.path().join("other.db")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_through_two_opens_all_land() {
    const TASKS: usize = 16;
    const BATCHES: u64 = 200;
    const PER_BATCH: u64 = 3;
    let dir = TempDir::new("stress");
    let stores = [
        SqliteStorage::open(dir.file()).unwrap(),
        SqliteStorage::open(dir.file()).unwrap(),
    ];
    assert!(Arc::ptr_eq(&stores[0].shared, &stores[1].shared));
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let stores = stores.clone();
        tasks.spawn(async move {
            let id = format!("s{task}");
            let run_id = RunId::from(id.as_str());
            stores[task % 2]
                .create_run(&run_record(&id, task as i64))
                .await
                .unwrap();
            for batch in 0..BATCHES {
                let store = &stores[(task + batch as usize) % 2];
                let events: Vec<Event> = (0..PER_BATCH)
                    .map(|i| {
                        let seq = batch * PER_BATCH + i;
                        if i == PER_BATCH - 1 {
                            materialization(&id, seq, &format!("asset{task}"), json!(batch))
                        } else {
                            log(&id, seq, "working")
                        }
                    })
                    .collect();
                store.append_events(&events).await.unwrap();
                if batch % 10 == 0 {
                    store.heartbeat(&run_id, at(batch as i64)).await.unwrap();
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a writer failed");
    }
    for task in 0..TASKS {
        let events = stores[task % 2]
            .events(&RunId::from(format!("s{task}")), None)
            .await
            .unwrap();
        assert_eq!(events.len() as u64, BATCHES * PER_BATCH);
        assert!(events.iter().enumerate().all(|(i, e)| e.seq == i as u64));
        let asset = AssetKey::from(format!("asset{task}"));
        let latest = stores[0]
            .latest_materialization(&asset)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(latest.value, json!(BATCHES - 1));
        assert_eq!(
            stores[1]
                .materializations(&asset, usize::MAX)
                .await
                .unwrap()
                .len() as u64,
            BATCHES
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_commands_commit_together_and_a_failing_one_fails_alone() {
    let dir = TempDir::new("batch");
    let store = SqliteStorage::open(dir.file()).unwrap();
    store.create_run(&run_record("base", 0)).await.unwrap();
    let stats = Arc::clone(&store.shared.stats);
    let batches_before = stats.batches.load(Ordering::Relaxed);

    // Another connection holds the write lock, as another process would: the writer
    // waits for it (instead of failing with "database is locked") while commands queue.
    let blocker = Connection::open(store.path()).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let store = store.clone();
        tasks.spawn(async move {
            let result = store.create_run(&run_record(&format!("q{i}"), i)).await;
            ("create", result.map(|_| ()))
        });
    }
    let clone = store.clone();
    tasks.spawn(async move { ("duplicate", clone.create_run(&run_record("base", 0)).await) });
    let clone = store.clone();
    tasks.spawn(async move {
        let clash = [
            log("base", 5, "five"),
            log("base", 6, "six"),
            log("base", 5, "again"),
        ];
        ("clash", clone.append_events(&clash).await)
    });
    let clone = store.clone();
    tasks.spawn(async move {
        (
            "append",
            clone.append_events(&[log("base", 1, "one")]).await,
        )
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while stats.queued.load(Ordering::Relaxed) < 23 {
        assert!(Instant::now() < deadline, "the commands were never queued");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    blocker.execute_batch("COMMIT").unwrap();

    let mut failed = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (what, result) = done.unwrap();
        match (what, result) {
            ("create" | "append", result) => result.unwrap(),
            (what, Err(e)) => failed.push((what, e.to_string())),
            (what, Ok(())) => panic!("{what} should have failed"),
        }
    }
    failed.sort();
    assert_eq!(failed.len(), 2);
    assert_eq!(failed[0].0, "clash");
    assert!(
        failed[0].1.contains("run `base` already has event 5"),
        "{}",
        failed[0].1
    );
    assert_eq!(failed[1].0, "duplicate");
    assert!(
        failed[1].1.contains("run `base` already exists"),
        "{}",
        failed[1].1
    );
    let batches = stats.batches.load(Ordering::Relaxed) - batches_before;
    assert!(
        (1..=2).contains(&batches),
        "23 queued commands took {batches} transactions"
    );
    assert_eq!(store.runs(100).await.unwrap().len(), 21);
    let events = store.events(&RunId::from("base"), None).await.unwrap();
    assert_eq!(
        events,
        [log("base", 1, "one")],
        "the failed batch of events left nothing"
    );
}

#[tokio::test]
async fn instants_round_trip_to_the_microsecond_and_sort() {
    let dir = TempDir::new("time");
    let store = SqliteStorage::open(dir.file()).unwrap();
    let before_epoch = Utc.with_ymd_and_hms(1969, 12, 31, 23, 59, 59).unwrap()
        + chrono::Duration::microseconds(999_999);
    let far =
        Utc.with_ymd_and_hms(2400, 2, 29, 12, 0, 0).unwrap() + chrono::Duration::microseconds(1);
    for (id, started) in [("old", before_epoch), ("far", far), ("now", at(0))] {
        let mut run = run_record(id, 0);
        run.started_at = started;
        run.heartbeat_at = started;
        store.create_run(&run).await.unwrap();
        assert_eq!(
            store.run(&run.run_id).await.unwrap().unwrap().started_at,
            started
        );
    }
    let order: Vec<String> = store
        .runs(10)
        .await
        .unwrap()
        .iter()
        .map(|r| r.run_id.to_string())
        .collect();
    assert_eq!(order, ["far", "now", "old"]);
    let mut early = log("old", 0, "early");
    early.timestamp = before_epoch;
    store.append_events(&[early.clone()]).await.unwrap();
    assert_eq!(
        store.events(&RunId::from("old"), None).await.unwrap(),
        [early]
    );
}

#[tokio::test]
async fn a_damaged_store_says_so_and_stops_writing() {
    let dir = TempDir::new("damaged");
    {
        let store = SqliteStorage::open(dir.file()).unwrap();
        store.create_run(&run_record("good", 0)).await.unwrap();
        store.create_run(&run_record("bad", 1)).await.unwrap();
    }
    // Bytes that are not UTF-8 where text belongs, as a failing disk or a foreign writer
    // might leave them.
    let raw = Connection::open(dir.file()).unwrap();
    raw.execute(
        "UPDATE runs SET selection = CAST(x'ff00fe' AS TEXT) WHERE run_id = 'bad'",
        [],
    )
    .unwrap();
    drop(raw);

    let store = SqliteStorage::open(dir.file()).unwrap();
    let good = store.run(&RunId::from("good")).await.unwrap().unwrap();
    assert_eq!(good.selection, "a+", "what is readable stays readable");
    let err = store.runs(10).await.unwrap_err().to_string();
    assert!(err.contains("is damaged"), "{err}");
    assert!(err.contains(".recover"), "says how to recover: {err}");
    let refused = store
        .create_run(&run_record("new", 2))
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("writes nothing more"), "{refused}");
    drop(store);
    let raw = Connection::open(dir.file()).unwrap();
    let count: i64 = raw
        .query_row("SELECT count(*) FROM runs", [], |row| row.get(0))
        .unwrap();
    assert_eq!(count, 2, "nothing was written after the damage was found");
}

#[test]
fn the_partition_and_backfill_checks_allow_every_status() {
    let sql = super::file::MIGRATIONS[3];
    for status in [
        BackfillStatus::Requested,
        BackfillStatus::Canceling,
        BackfillStatus::Completed,
        BackfillStatus::Failed,
        BackfillStatus::Cancelled,
    ] {
        assert!(
            sql.contains(&format!("'{status}'")),
            "backfills allow {status}"
        );
    }
    for outcome in [PartitionOutcome::Materialized, PartitionOutcome::Failed] {
        assert!(
            sql.contains(&format!("'{outcome}'")),
            "ranges allow {outcome}"
        );
    }
}

#[tokio::test]
async fn a_version_3_store_gains_partitions_and_keeps_its_data() {
    let dir = TempDir::new("v3");
    {
        let conn = Connection::open(dir.file()).unwrap();
        for sql in &super::file::MIGRATIONS[..3] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "application_id", APPLICATION_ID)
            .unwrap();
        conn.pragma_update(None, "user_version", 3).unwrap();
        conn.execute(
            "INSERT INTO materializations (asset, run_id, seq, timestamp, metadata, value) \
             VALUES ('a', 'old', 0, 0, '{}', '\"kept\"')",
            [],
        )
        .unwrap();
    }
    let store = SqliteStorage::open(dir.file()).unwrap();
    let kept = store
        .latest_materialization(&"a".into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (kept.value, kept.partition),
        (json!("kept"), None),
        "a materialization of version 3 reads back unpartitioned"
    );
    let version: i64 = Connection::open(dir.file())
        .unwrap()
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    assert_eq!(SCHEMA_VERSION, 7);
    store.create_run(&run_record("new", 0)).await.unwrap();
    let range = minutes("", 0, 60);
    store
        .append_events(&[partition_materialized("new", 0, "a", &range, json!(1))])
        .await
        .unwrap();
    assert_eq!(
        store
            .partition_status(&"a".into())
            .await
            .unwrap()
            .materialized,
        range.to_set()
    );
    assert_eq!(
        store
            .partition_materialization(&"a".into(), &minutes("", 10, 20))
            .await
            .unwrap()
            .map(|m| m.value),
        Some(json!(1))
    );
}

#[test]
fn the_check_record_checks_allow_every_severity() {
    let sql = super::file::MIGRATIONS[5];
    for severity in [CheckSeverity::Warn, CheckSeverity::Error] {
        assert!(
            sql.contains(&format!("'{}'", severity.as_str())),
            "check records allow {severity:?}"
        );
    }
}

#[tokio::test]
async fn a_version_5_store_gains_check_and_automation_records_and_keeps_its_data() {
    let dir = TempDir::new("v5");
    let old_run = run_record("old", 0);
    let old_events = vec![
        materialization("old", 0, "a", json!("kept")),
        log("old", 1, "a line"),
    ];
    {
        // A store written by the previous version: its migrations, then its rows.
        let conn = Connection::open(dir.file()).unwrap();
        for sql in &super::file::MIGRATIONS[..5] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "application_id", APPLICATION_ID)
            .unwrap();
        conn.pragma_update(None, "user_version", 5).unwrap();
        conn.execute(
            &format!(
                "INSERT INTO runs ({RUN_COLUMNS}) VALUES ('old', 'running', 'a+', \
                 '[\"a\",\"b\"]', ?1, '{{\"team\":\"data\"}}', ?2, NULL, 'host-a:4242', ?2, \
                 NULL, NULL)"
            ),
            params![
                to_json(&old_run.config, "test").unwrap(),
                micros(old_run.started_at)
            ],
        )
        .unwrap();
        let mut insert = conn
            .prepare(
                "INSERT INTO events (run_id, seq, timestamp, asset, kind) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .unwrap();
        for e in &old_events {
            insert
                .execute(params![
                    e.run_id.as_str(),
                    e.seq as i64,
                    micros(e.timestamp),
                    e.asset.as_ref().map(AssetKey::as_str),
                    to_json(&e.kind, "test").unwrap()
                ])
                .unwrap();
        }
        let m = MaterializationRecord::of(&old_events[0]).unwrap();
        conn.execute(
            "INSERT INTO materializations (asset, run_id, seq, timestamp, metadata, value, \
             code_version) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                m.asset.as_str(),
                m.run_id.as_str(),
                m.seq as i64,
                micros(m.timestamp),
                to_json(&m.metadata, "test").unwrap(),
                to_json(&m.value, "test").unwrap(),
                m.code_version
            ],
        )
        .unwrap();
    }
    let store = SqliteStorage::open(dir.file()).unwrap();
    let version: i64 = Connection::open(dir.file())
        .unwrap()
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap();
    assert_eq!((version, SCHEMA_VERSION), (7, 7));
    let old = RunId::from("old");
    assert_eq!(store.run(&old).await.unwrap(), Some(old_run));
    assert_eq!(store.events(&old, None).await.unwrap(), old_events);
    let kept = MaterializationRecord::of(&old_events[0]).unwrap();
    assert_eq!(
        store.latest_materialization(&"a".into()).await.unwrap(),
        Some(kept.clone())
    );
    let after = store
        .materializations_after(MaterializationPosition::START, 10)
        .await
        .unwrap();
    assert_eq!(
        after.iter().map(|(_, m)| m.clone()).collect::<Vec<_>>(),
        [kept],
        "a materialization of version 5 is found by position"
    );
    assert_eq!(
        store.materialization_position().await.unwrap(),
        after[0].0,
        "and is the newest position"
    );
    assert!(store
        .check_records(&"a".into(), 10)
        .await
        .unwrap()
        .is_empty());
    let checked = check_evaluated("old", 2, "a", "positive", false, CheckSeverity::Error);
    store
        .append_events(std::slice::from_ref(&checked))
        .await
        .unwrap();
    assert_eq!(
        store.check_records(&"a".into(), 10).await.unwrap(),
        [CheckRecord::of(&checked).unwrap()]
    );
    let record = automation_record("a", 3, true);
    store
        .record_automation(std::slice::from_ref(&record))
        .await
        .unwrap();
    assert_eq!(store.automation_records(None, 10).await.unwrap(), [record]);
}

#[tokio::test]
async fn check_automation_and_position_statements_read_by_index() {
    let dir = TempDir::new("plans");
    let _store = SqliteStorage::open(dir.file()).unwrap();
    let conn = Connection::open(dir.file()).unwrap();
    for (sql, index) in [
        (
            "SELECT id FROM materializations WHERE id > ?1 ORDER BY id LIMIT ?2",
            "INTEGER PRIMARY KEY",
        ),
        (
            "SELECT MAX(id) FROM materializations",
            "SEARCH materializations",
        ),
        (
            "SELECT id FROM check_records WHERE asset = ?1 ORDER BY id DESC LIMIT ?2",
            "check_records_by_asset",
        ),
        (
            "SELECT id FROM automation_records WHERE asset = ?1 \
             ORDER BY evaluated_at DESC, id DESC LIMIT ?2",
            "automation_records_by_asset",
        ),
        (
            "SELECT id FROM automation_records ORDER BY evaluated_at DESC, id DESC LIMIT ?1",
            "automation_records_newest",
        ),
        (
            "DELETE FROM automation_records WHERE evaluated_at < ?1",
            "automation_records_newest",
        ),
        (
            "DELETE FROM check_records WHERE run_id IN (SELECT value FROM json_each(?1))",
            "check_records_by_run",
        ),
    ] {
        let plan = query_plan(&conn, sql);
        assert!(plan.contains(index), "{sql}: {plan}");
        assert!(!plan.contains("TEMP B-TREE"), "{sql} sorts: {plan}");
    }
}

#[tokio::test]
async fn a_backfill_that_cannot_be_read_is_named() {
    let dir = TempDir::new("backfill");
    {
        let store = SqliteStorage::open(dir.file()).unwrap();
        for id in ["bf-good", "bf-bad"] {
            store
                .create_backfill(&backfill_record(id, 0, BackfillStatus::Requested))
                .await
                .unwrap();
        }
    }
    let raw = Connection::open(dir.file()).unwrap();
    raw.execute(
        "UPDATE backfills SET body = '{\"id\": \"bf-bad\", \"status\": ' WHERE id = 'bf-bad'",
        [],
    )
    .unwrap();
    drop(raw);
    let store = SqliteStorage::open(dir.file()).unwrap();
    assert!(store.backfill("bf-good").await.unwrap().is_some());
    for err in [
        store.backfill("bf-bad").await.unwrap_err().to_string(),
        store.backfills(None, 10).await.unwrap_err().to_string(),
    ] {
        assert!(
            err.contains("backfill `bf-bad`"),
            "names the backfill: {err}"
        );
        assert!(err.contains("is damaged"), "{err}");
    }
}

/// The statements behind partition status and partition lookups, as SQLite plans them.
fn query_plan(conn: &Connection, sql: &str) -> String {
    let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
    let nulls = vec![rusqlite::types::Value::Null; stmt.parameter_count()];
    let rows = stmt
        .query_map(params_from_iter(nulls), |row| row.get::<_, String>(3))
        .unwrap()
        .collect::<rusqlite::Result<Vec<_>>>()
        .unwrap();
    rows.join("; ")
}

#[tokio::test]
async fn partition_statements_seek_by_index_and_stay_fast_with_many_ranges() {
    let dir = TempDir::new("ranges");
    let store = SqliteStorage::open(dir.file()).unwrap();
    let conn = Connection::open(dir.file()).unwrap();
    for sql in [
        partitions::TOUCHING.to_owned(),
        partitions::OVERLAPPING.to_owned(),
        partitions::STATUS.to_owned(),
        format!("SELECT id FROM materializations {COVERING} ORDER BY id DESC LIMIT 1"),
    ] {
        let plan = query_plan(&conn, &sql);
        assert!(
            plan.contains("SEARCH") && !plan.contains("SCAN partition_ranges"),
            "{sql}: {plan}"
        );
        assert!(!plan.contains("SCAN materializations"), "{sql}: {plan}");
    }

    // 20,000 stored ranges of one asset: every other minute.
    const N: i64 = 20_000;
    store.create_run(&run_record("many", 0)).await.unwrap();
    for chunk in 0..N / 2_000 {
        let events: Vec<Event> = (chunk * 2_000..(chunk + 1) * 2_000)
            .map(|i| {
                let range = minutes("", 2 * i, 2 * i + 1);
                partition_materialized("many", i as u64, "minutely", &range, json!(i))
            })
            .collect();
        store.append_events(&events).await.unwrap();
    }
    let asset = AssetKey::from("minutely");
    let started = Instant::now();
    let status = store.partition_status(&asset).await.unwrap();
    let read = started.elapsed();
    assert_eq!(status.materialized.range_count(), N as usize);
    // Closing 200 gaps spread over the ranges, one write each.
    let started = Instant::now();
    for k in 0..200 {
        let i = k * (N / 200) + 7;
        let gap = minutes("", 2 * i + 1, 2 * i + 2);
        store
            .append_events(&[partition_materialized(
                "many",
                (N + k) as u64,
                "minutely",
                &gap,
                json!(k),
            )])
            .await
            .unwrap();
    }
    let written = started.elapsed();
    let status = store.partition_status(&asset).await.unwrap();
    assert_eq!(status.materialized.range_count(), N as usize - 200);
    // Generous bounds (debug builds, busy machines): a scan per write would take minutes.
    assert!(read.as_secs() < 5, "reading 20,000 ranges took {read:?}");
    assert!(written.as_secs() < 20, "200 writes took {written:?}");
}

#[tokio::test]
async fn a_version_6_store_keeps_each_assets_history_in_order() {
    let dir = TempDir::new("v6");
    {
        // A store written by the previous version: materializations of two assets,
        // interleaved, found then through the index on `(asset, id)`.
        let conn = Connection::open(dir.file()).unwrap();
        for sql in &super::file::MIGRATIONS[..6] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "application_id", APPLICATION_ID)
            .unwrap();
        conn.pragma_update(None, "user_version", 6).unwrap();
        for (seq, asset) in ["a", "b", "a", "a", "b"].iter().enumerate() {
            conn.execute(
                "INSERT INTO materializations (asset, run_id, seq, timestamp, metadata, value) \
                 VALUES (?1, 'old', ?2, 0, '{}', ?2)",
                params![asset, seq as i64],
            )
            .unwrap();
        }
    }
    let store = SqliteStorage::open(dir.file()).unwrap();
    let seqs = |records: Vec<MaterializationRecord>| -> Vec<u64> {
        records.iter().map(|m| m.seq).collect()
    };
    let a = AssetKey::from("a");
    assert_eq!(
        seqs(store.materializations(&a, 10).await.unwrap()),
        [3, 2, 0]
    );
    assert_eq!(seqs(store.materializations(&a, 2).await.unwrap()), [3, 2]);
    assert!(store.materializations(&a, 0).await.unwrap().is_empty());
    assert_eq!(
        store.latest_materialization(&a).await.unwrap().unwrap().seq,
        3
    );
    assert_eq!(seqs(store.latest_materializations().await.unwrap()), [3, 4]);
    // New materializations continue each asset's chain.
    store.create_run(&run_record("new", 0)).await.unwrap();
    store
        .append_events(&[
            materialization("new", 0, "b", json!(1)),
            materialization("new", 1, "a", json!(2)),
        ])
        .await
        .unwrap();
    let b = AssetKey::from("b");
    assert_eq!(
        seqs(store.materializations(&b, 10).await.unwrap()),
        [0, 4, 1]
    );
    assert_eq!(
        seqs(store.materializations(&a, 10).await.unwrap()),
        [1, 3, 2, 0]
    );
}

#[tokio::test]
async fn materialization_statements_touch_no_index_on_the_asset_and_never_scan() {
    let dir = TempDir::new("chain-plans");
    let _store = SqliteStorage::open(dir.file()).unwrap();
    let conn = Connection::open(dir.file()).unwrap();
    let indexes: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'materializations'",
        )
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    // An index led by the asset would take a page per asset in every run (issue: the cost
    // of a materialization grew with the store).
    assert!(
        !indexes.iter().any(|i| i == "materializations_by_asset"),
        "{indexes:?}"
    );
    for sql in [
        "SELECT id FROM materializations WHERE id = (SELECT id FROM asset_latest WHERE asset = ?1)",
        "SELECT id FROM materializations WHERE id IN (SELECT id FROM asset_latest) ORDER BY asset",
        "INSERT INTO asset_latest (asset, id) VALUES (?1, 1) \
         ON CONFLICT (asset) DO UPDATE SET id = excluded.id",
    ] {
        let plan = query_plan(&conn, sql);
        assert!(!plan.contains("SCAN materializations"), "{sql}: {plan}");
    }
}
