//! The PostgreSQL run store against a real server: the storage contract, migrations,
//! schemas side by side, several writers at once, and a run through the executor.

mod common;

use std::collections::BTreeMap;

use common::TestDb;
use dagrs_core::storage::contract::{
    at, automation_record, backfill_record, check_evaluated, event, final_materializations_after,
    minutes, partition_failed, partition_materialized, run_record, tick,
};
use dagrs_core::storage::{
    CheckRecord, MaterializationPosition, MaterializationRecord, PruneReport, Retention, Storage,
};
use dagrs_core::{BackfillStatus, CheckSeverity, Event, EventKind, LogLevel, RunId, RunStatus};
use dagrs_postgres::{Error, Ident, PgStorage, PostgresResource, DEFAULT_SCHEMA, SCHEMA_VERSION};
use serde_json::json;
use tokio_postgres::Config;

/// A migrated store in a database of its own, dropped with it.
struct Fresh {
    storage: PgStorage,
    db: TestDb,
}

impl Fresh {
    async fn new() -> Self {
        let db = TestDb::create().await;
        let storage = PgStorage::connect(db.pg.clone(), DEFAULT_SCHEMA)
            .await
            .unwrap_or_else(|e| panic!("cannot create the store in {}: {e}", db.name));
        Self { storage, db }
    }
}

impl std::ops::Deref for Fresh {
    type Target = PgStorage;
    fn deref(&self) -> &PgStorage {
        &self.storage
    }
}

dagrs_core::storage_contract_tests!(Fresh::new());

fn materialization(value: serde_json::Value) -> EventKind {
    EventKind::Materialization {
        metadata: BTreeMap::from([("rows".to_owned(), json!(1))]),
        value,
        code_version: None,
        partition: None,
    }
}

fn log(message: &str) -> EventKind {
    EventKind::Log {
        level: LogLevel::Info,
        message: message.into(),
    }
}

/// A pool on the test database that carries a password (ignored by trust auth), to check
/// that it never shows.
fn resource_with_password(db: &TestDb) -> PostgresResource {
    let mut config: Config = db.url.parse().unwrap();
    config.password("s3cret-pw");
    PostgresResource::from_pg_config(config, Default::default()).unwrap()
}

/// The tables of `schema` and the rows of its version table, to compare before and after.
async fn snapshot(db: &TestDb, schema: &str) -> (Vec<String>, Vec<(i32, String)>) {
    let client = db.client().await;
    let tables = client
        .query(
            "SELECT tablename::text FROM pg_catalog.pg_tables WHERE schemaname = $1 ORDER BY 1",
            &[&schema],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let versions = client
        .query(
            &format!(
                "SELECT version, name FROM {}.dagrs_schema_version ORDER BY 1",
                Ident::new(schema).unwrap()
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    (tables, versions)
}

#[tokio::test]
async fn migrations_are_recorded_and_idempotent() {
    let db = TestDb::create().await;
    let storage = PgStorage::new(db.pg.clone(), DEFAULT_SCHEMA).unwrap();
    assert_eq!(
        storage.schema_version().await.unwrap(),
        None,
        "nothing exists yet"
    );
    assert_eq!(
        storage.migrate().await.unwrap(),
        SCHEMA_VERSION,
        "every migration applies"
    );
    assert_eq!(
        storage.schema_version().await.unwrap(),
        Some(SCHEMA_VERSION)
    );
    storage.create_run(&run_record("kept", 0)).await.unwrap();
    let before = snapshot(&db, DEFAULT_SCHEMA).await;
    assert_eq!(
        before.0,
        [
            "automation_records",
            "backfills",
            "check_records",
            "cursors",
            "dagrs_schema_version",
            "dynamic_partitions",
            "events",
            "instigators",
            "materializations",
            "partition_ranges",
            "pools",
            "run_keys",
            "runs",
            "step_outputs",
            "steps",
            "ticks",
            "workers"
        ]
    );
    assert_eq!(
        before.1.iter().map(|(v, _)| *v as u32).collect::<Vec<_>>(),
        (1..=SCHEMA_VERSION).collect::<Vec<_>>(),
        "one row per migration"
    );

    assert_eq!(
        storage.migrate().await.unwrap(),
        0,
        "a second migrate does nothing"
    );
    let again = PgStorage::connect(db.pg.clone(), DEFAULT_SCHEMA)
        .await
        .unwrap();
    assert_eq!(snapshot(&db, DEFAULT_SCHEMA).await, before);
    assert!(
        again.run(&RunId::from("kept")).await.unwrap().is_some(),
        "data survives reconnecting"
    );
}

#[tokio::test]
async fn processes_starting_together_migrate_once() {
    let db = TestDb::create().await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        // A pool of its own per "process".
        let pg = PostgresResource::from_url(&db.url).unwrap();
        tasks.spawn(async move { PgStorage::new(pg, DEFAULT_SCHEMA).unwrap().migrate().await });
    }
    let mut applied = Vec::new();
    while let Some(done) = tasks.join_next().await {
        applied.push(done.unwrap().expect("a concurrent migrate failed"));
    }
    applied.sort_unstable();
    let mut expected = vec![0; 7];
    expected.push(SCHEMA_VERSION);
    assert_eq!(
        applied, expected,
        "exactly one process applies the migrations"
    );
    assert_eq!(
        snapshot(&db, DEFAULT_SCHEMA).await.1.len(),
        SCHEMA_VERSION as usize
    );
}

#[tokio::test]
async fn two_schemas_in_one_database_stay_independent() {
    let db = TestDb::create().await;
    let odd = r#"Team "B" runs"#;
    let a = PgStorage::connect(db.pg.clone(), DEFAULT_SCHEMA)
        .await
        .unwrap();
    let b = PgStorage::connect(db.pg.clone(), odd).await.unwrap();
    assert_eq!(b.schema().as_str(), odd);

    a.create_run(&run_record("r1", 0)).await.unwrap();
    a.append_events(&[
        event("r1", 0, Some("x"), materialization(json!("from a"))),
        event("r1", 1, None, log("only in a")),
    ])
    .await
    .unwrap();
    a.set_cursor("sensor", "a-position").await.unwrap();
    assert!(a.claim_tick(&tick("hourly", 60)).await.unwrap());

    assert_eq!(b.run(&RunId::from("r1")).await.unwrap(), None);
    assert!(b.events(&RunId::from("r1"), None).await.unwrap().is_empty());
    assert_eq!(b.latest_materialization(&"x".into()).await.unwrap(), None);
    assert_eq!(b.cursor("sensor").await.unwrap(), None);
    assert!(
        b.claim_tick(&tick("hourly", 60)).await.unwrap(),
        "each store claims its own ticks"
    );
    b.create_run(&run_record("r1", 5))
        .await
        .expect("the same run id in another schema");
    b.finish_run(&RunId::from("r1"), RunStatus::Succeeded, at(6), None)
        .await
        .unwrap();
    let pruned = b
        .prune(
            Retention {
                max_age: None,
                max_runs: Some(0),
            },
            at(10),
        )
        .await
        .unwrap();
    assert_eq!(pruned.runs, 1);

    let r1 = a
        .run(&RunId::from("r1"))
        .await
        .unwrap()
        .expect("a keeps its run");
    assert_eq!((r1.status, r1.started_at), (RunStatus::Running, at(0)));
    assert_eq!(a.events(&RunId::from("r1"), None).await.unwrap().len(), 2);
    assert_eq!(
        a.cursor("sensor").await.unwrap().as_deref(),
        Some("a-position")
    );
    let (tables, _) = snapshot(&db, odd).await;
    assert!(tables.contains(&"runs".to_owned()), "{tables:?}");
}

#[tokio::test]
async fn a_newer_store_is_refused_and_left_untouched() {
    let db = TestDb::create().await;
    let pg = resource_with_password(&db);
    let current = PgStorage::connect(pg.clone(), DEFAULT_SCHEMA)
        .await
        .unwrap();
    current.create_run(&run_record("old", 0)).await.unwrap();
    let newer = SCHEMA_VERSION + 1;
    db.client()
        .await
        .execute(
            "INSERT INTO dagrs.dagrs_schema_version (version, name) VALUES ($1, 'from the future')",
            &[&(newer as i32)],
        )
        .await
        .unwrap();
    let before = snapshot(&db, DEFAULT_SCHEMA).await;

    let err = PgStorage::connect(pg.clone(), DEFAULT_SCHEMA)
        .await
        .unwrap_err();
    match &err {
        Error::SchemaTooNew {
            url,
            schema,
            found,
            supported,
        } => {
            assert_eq!(url, pg.masked_url());
            assert_eq!(schema, "\"dagrs\"");
            assert_eq!((*found, *supported), (newer, SCHEMA_VERSION));
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    let message = err.to_string();
    for part in [
        pg.masked_url(),
        "\"dagrs\"",
        &format!("version {newer}"),
        &format!("up to {SCHEMA_VERSION}"),
        "nothing was changed",
    ] {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }
    assert!(pg.masked_url().contains(":***@"), "{}", pg.masked_url());
    assert!(!message.contains("s3cret"), "{message}");
    assert!(matches!(
        current.migrate().await,
        Err(Error::SchemaTooNew { .. })
    ));
    assert_eq!(current.schema_version().await.unwrap(), Some(newer));
    assert_eq!(
        snapshot(&db, DEFAULT_SCHEMA).await,
        before,
        "nothing was modified"
    );
    assert!(current.run(&RunId::from("old")).await.unwrap().is_some());
}

#[tokio::test]
async fn schema_names_are_validated() {
    let db = TestDb::reserve();
    for bad in ["", "a\0b", &"s".repeat(64)] {
        assert!(
            matches!(
                PgStorage::new(db.pg.clone(), bad),
                Err(Error::InvalidIdent { .. })
            ),
            "{bad:?} should be rejected"
        );
    }
}

#[tokio::test]
async fn a_store_that_was_never_migrated_says_what_to_do() {
    let db = TestDb::create().await;
    let storage = PgStorage::new(db.pg.clone(), DEFAULT_SCHEMA).unwrap();
    let err = storage.create_run(&run_record("r", 0)).await.unwrap_err();
    let message = err.to_string();
    assert!(matches!(
        err,
        dagrs_core::Error::Storage {
            operation: "create a run",
            ..
        }
    ));
    assert!(message.contains("PgStorage::migrate"), "{message}");
    assert!(message.contains(db.pg.masked_url()), "{message}");
}

#[tokio::test]
async fn statuses_are_stored_as_their_serde_names() {
    let fresh = Fresh::new().await;
    for (id, status) in [
        ("s", RunStatus::Succeeded),
        ("f", RunStatus::Failed),
        ("c", RunStatus::Cancelled),
        ("r", RunStatus::Running),
    ] {
        fresh.create_run(&run_record(id, 0)).await.unwrap();
        if status != RunStatus::Running {
            assert!(fresh
                .finish_run(&RunId::from(id), status, at(1), None)
                .await
                .unwrap());
        }
        assert_eq!(
            fresh.run(&RunId::from(id)).await.unwrap().unwrap().status,
            status
        );
    }
    let stored: Vec<(String, String)> = fresh
        .db
        .client()
        .await
        .query("SELECT run_id, status FROM dagrs.runs ORDER BY run_id", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let expected = [
        ("c", "cancelled"),
        ("f", "failed"),
        ("r", "running"),
        ("s", "succeeded"),
    ]
    .map(|(a, b)| (a.to_owned(), b.to_owned()));
    assert_eq!(stored, expected);
}

#[tokio::test]
async fn big_batches_and_odd_text_round_trip() {
    let fresh = Fresh::new().await;
    fresh.create_run(&run_record("big", 0)).await.unwrap();
    let odd = "NUL \0 inside, ünïcode, 'quotes' \"and\" \\ backslashes";
    let events: Vec<Event> = (0..5_000u64)
        .map(|seq| match seq % 50 {
            0 => event(
                "big",
                seq,
                Some(["a", "b"][(seq / 50 % 2) as usize]),
                EventKind::Materialization {
                    metadata: BTreeMap::from([("note".to_owned(), json!(odd))]),
                    value: json!({ "seq": seq, "text": odd, "big": u64::MAX, "x": 1.5e-7 }),
                    code_version: Some(format!("v{seq}")),
                    partition: None,
                },
            ),
            1 => event("big", seq, None, log(odd)),
            _ => event(
                "big",
                seq,
                Some("a"),
                EventKind::StepStarted {
                    attempt: 1,
                    worker: None,
                },
            ),
        })
        .collect();
    fresh.append_events(&events).await.unwrap();
    assert_eq!(
        fresh.events(&RunId::from("big"), None).await.unwrap(),
        events
    );
    assert_eq!(
        fresh
            .events(&RunId::from("big"), Some(4_997))
            .await
            .unwrap(),
        events[4_998..]
    );
    assert!(fresh
        .events(&RunId::from("big"), Some(u64::MAX))
        .await
        .unwrap()
        .is_empty());
    let a = fresh.materializations(&"a".into(), 1_000).await.unwrap();
    assert_eq!(a.len(), 50);
    let newest = &a[0];
    assert_eq!(
        (newest.seq, newest.code_version.as_deref()),
        (4_900, Some("v4900"))
    );
    assert_eq!(newest.value["text"], json!(odd));
    assert_eq!(newest.metadata["note"], json!(odd));
    assert_eq!(newest.value["big"], json!(u64::MAX));
    assert_eq!(newest.value["x"], json!(1.5e-7));
    let latest: Vec<(String, u64)> = fresh
        .latest_materializations()
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.asset.to_string(), m.seq))
        .collect();
    assert_eq!(latest, [("a".to_owned(), 4_900), ("b".to_owned(), 4_950)]);
}

#[tokio::test]
async fn seqs_beyond_bigint_are_refused_and_nothing_is_written() {
    let fresh = Fresh::new().await;
    fresh.create_run(&run_record("s", 0)).await.unwrap();
    let err = fresh
        .append_events(&[
            event("s", 0, None, log("ok")),
            event("s", u64::MAX, None, log("no")),
        ])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("beyond the largest seq"), "{err}");
    assert!(fresh
        .events(&RunId::from("s"), None)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn several_daemons_claim_a_tick_once() {
    let fresh = Fresh::new().await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        // A store of its own per daemon, on a pool of its own.
        let pg = PostgresResource::from_url(&fresh.db.url).unwrap();
        tasks.spawn(async move {
            let storage = PgStorage::connect(pg, DEFAULT_SCHEMA).await.unwrap();
            storage.claim_tick(&tick("nightly", 24 * 60)).await.unwrap()
        });
    }
    let mut claims = 0;
    while let Some(done) = tasks.join_next().await {
        claims += usize::from(done.unwrap());
    }
    assert_eq!(claims, 1);
}

#[tokio::test]
async fn concurrent_pruners_agree() {
    let fresh = Fresh::new().await;
    for i in 0..20 {
        let id = format!("p{i}");
        fresh.create_run(&run_record(&id, i)).await.unwrap();
        fresh
            .append_events(&[
                event(&id, 0, Some("a"), materialization(json!(i))),
                event(&id, 1, None, EventKind::RunSucceeded),
            ])
            .await
            .unwrap();
        fresh
            .finish_run(
                &RunId::from(id.as_str()),
                RunStatus::Succeeded,
                at(i + 1),
                None,
            )
            .await
            .unwrap();
    }
    fresh.create_run(&run_record("live", 30)).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let storage = fresh.storage.clone();
        tasks.spawn(async move {
            storage
                .prune(
                    Retention {
                        max_age: None,
                        max_runs: Some(5),
                    },
                    at(60),
                )
                .await
        });
    }
    let mut total = PruneReport::default();
    while let Some(done) = tasks.join_next().await {
        let report = done.unwrap().expect("a concurrent prune failed");
        total.runs += report.runs;
        total.events += report.events;
        total.materializations += report.materializations;
    }
    assert_eq!(
        total,
        PruneReport {
            runs: 15,
            events: 30,
            materializations: 15,
            ticks: 0
        },
        "the runs are pruned once between all pruners"
    );
    let left: Vec<String> = fresh
        .runs(100)
        .await
        .unwrap()
        .iter()
        .map(|r| r.run_id.to_string())
        .collect();
    assert_eq!(left, ["live", "p19", "p18", "p17", "p16", "p15"]);
    assert_eq!(
        fresh
            .latest_materialization(&"a".into())
            .await
            .unwrap()
            .unwrap()
            .value,
        json!(19)
    );
}

#[tokio::test]
async fn runs_through_the_executor_are_stored_end_to_end() {
    let fresh = Fresh::new().await;
    let defs = dagrs_core::Definitions::builder()
        .specs([
            dagrs_core::AssetSpec::new("a", |_| async { Ok(1) }),
            dagrs_core::AssetSpec::new("b", |_| async { Ok(vec!["x".to_owned(), "y".to_owned()]) })
                .dep("a"),
            dagrs_core::AssetSpec::new("c", |_| async {
                Err::<u32, _>(std::io::Error::other("the source is down").into())
            }),
        ])
        .build()
        .unwrap();
    let instance = dagrs_core::Instance::new(fresh.storage.clone());
    let result = instance
        .materialize(&defs, "a b", dagrs_core::RunConfig::new())
        .await
        .unwrap();
    assert!(result.success());

    // Another process on the same database sees the same history.
    let other = PgStorage::connect(
        PostgresResource::from_url(&fresh.db.url).unwrap(),
        DEFAULT_SCHEMA,
    )
    .await
    .unwrap();
    let run = other
        .run(result.run_id())
        .await
        .unwrap()
        .expect("the run is stored");
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(run.selection, "a b");
    assert!(run.ended_at.is_some_and(|end| end >= run.started_at));
    let events = other.events(result.run_id(), None).await.unwrap();
    assert_eq!(
        events,
        result.events().await.unwrap(),
        "the stored log is the run's log"
    );
    assert!(matches!(
        events.first().map(|e| &e.kind),
        Some(EventKind::RunStarted { .. })
    ));
    assert!(matches!(
        events.last().map(|e| &e.kind),
        Some(EventKind::RunSucceeded)
    ));
    assert_eq!(
        other
            .latest_materialization(&"a".into())
            .await
            .unwrap()
            .unwrap()
            .value,
        json!(1)
    );
    let b = other
        .latest_materialization(&"b".into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (b.run_id, b.value),
        (result.run_id().clone(), json!(["x", "y"]))
    );

    let failed = instance
        .materialize(&defs, "c", dagrs_core::RunConfig::new())
        .await
        .unwrap();
    assert!(!failed.success());
    let run = other.run(failed.run_id()).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    let events = other.events(failed.run_id(), None).await.unwrap();
    assert!(events
        .iter()
        .any(|e| matches!(&e.kind, EventKind::StepFailed { error, .. }
        if error.message.contains("the source is down"))));
    let listed: Vec<RunId> = other
        .runs(10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.run_id)
        .collect();
    assert_eq!(listed, [failed.run_id().clone(), result.run_id().clone()]);
    assert!(other.running_runs().await.unwrap().is_empty());
}

// PgStorage is a `Storage` that clones cheaply and moves between tasks and threads.
const _: fn() = || {
    fn shareable<T: Storage + Clone + Send + Sync + 'static>() {}
    shareable::<PgStorage>();
};

#[tokio::test]
async fn a_version_3_store_gains_partitions_and_keeps_its_data() {
    let db = TestDb::create().await;
    let client = db.client().await;
    client
        .batch_execute(&format!(
            "BEGIN; CREATE SCHEMA dagrs; SET LOCAL search_path TO dagrs; \
             CREATE TABLE dagrs_schema_version ( \
                 version integer PRIMARY KEY CHECK (version > 0), name text NOT NULL, \
                 applied_at timestamptz NOT NULL DEFAULT now()); \
             {} {} {} \
             INSERT INTO dagrs_schema_version (version, name) \
                 VALUES (1, 'one'), (2, 'two'), (3, 'three'); \
             INSERT INTO materializations (asset, run_id, seq, ts, metadata, value) \
                 VALUES ('a', 'old', 0, now(), '{{}}', '\"kept\"'); \
             COMMIT;",
            include_str!("../src/storage/migrations/0001_initial.sql"),
            include_str!("../src/storage/migrations/0002_queued_canceling.sql"),
            include_str!("../src/storage/migrations/0003_ticks_run_keys_instigators.sql"),
        ))
        .await
        .unwrap();
    drop(client);
    let storage = PgStorage::new(db.pg.clone(), DEFAULT_SCHEMA).unwrap();
    assert_eq!(storage.schema_version().await.unwrap(), Some(3));
    assert_eq!(
        storage.migrate().await.unwrap(),
        SCHEMA_VERSION - 3,
        "only the migrations after 3 apply"
    );
    assert_eq!(
        storage.schema_version().await.unwrap(),
        Some(SCHEMA_VERSION)
    );
    let kept = storage
        .latest_materialization(&"a".into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (kept.value, kept.partition),
        (json!("kept"), None),
        "a materialization of version 3 reads back unpartitioned"
    );
    storage.create_run(&run_record("new", 0)).await.unwrap();
    let range = minutes("", 0, 60);
    storage
        .append_events(&[partition_materialized("new", 0, "a", &range, json!(1))])
        .await
        .unwrap();
    assert_eq!(
        storage
            .partition_status(&"a".into())
            .await
            .unwrap()
            .materialized,
        range.to_set()
    );
    assert_eq!(
        storage
            .partition_materialization(&"a".into(), &minutes("", 10, 20))
            .await
            .unwrap()
            .map(|m| m.value),
        Some(json!(1))
    );
}

#[tokio::test]
async fn a_version_5_store_gains_check_and_automation_records_and_keeps_its_data() {
    let db = TestDb::create().await;
    let client = db.client().await;
    client
        .batch_execute(&format!(
            "BEGIN; CREATE SCHEMA dagrs; SET LOCAL search_path TO dagrs; \
             CREATE TABLE dagrs_schema_version ( \
                 version integer PRIMARY KEY CHECK (version > 0), name text NOT NULL, \
                 applied_at timestamptz NOT NULL DEFAULT now()); \
             {} {} {} {} {} \
             INSERT INTO dagrs_schema_version (version, name) \
                 VALUES (1, 'one'), (2, 'two'), (3, 'three'), (4, 'four'), (5, 'five'); \
             INSERT INTO runs (run_id, status, selection, assets, config, tags, started_at, \
                               owner, heartbeat_at) \
                 VALUES ('old', 'succeeded', 'a', '[\"a\"]', '{{}}', '{{}}', \
                         '2026-01-01T00:00:00Z', 'h:1', '2026-01-01T00:00:00Z'); \
             INSERT INTO events (run_id, seq, ts, asset, kind) \
                 VALUES ('old', 0, '2026-01-01T00:01:00Z', NULL, '{{\"type\":\"run_succeeded\"}}'); \
             INSERT INTO materializations (asset, run_id, seq, ts, metadata, value) \
                 VALUES ('a', 'old', 1, '2026-01-01T00:02:00Z', '{{}}', '\"kept\"'); \
             COMMIT;",
            include_str!("../src/storage/migrations/0001_initial.sql"),
            include_str!("../src/storage/migrations/0002_queued_canceling.sql"),
            include_str!("../src/storage/migrations/0003_ticks_run_keys_instigators.sql"),
            include_str!("../src/storage/migrations/0004_partitions_backfills.sql"),
            include_str!("../src/storage/migrations/0005_pages.sql"),
        ))
        .await
        .unwrap();
    drop(client);
    let storage = PgStorage::new(db.pg.clone(), DEFAULT_SCHEMA).unwrap();
    assert_eq!(storage.schema_version().await.unwrap(), Some(5));
    assert_eq!(
        storage.migrate().await.unwrap(),
        SCHEMA_VERSION - 5,
        "only the migrations after 5 apply"
    );
    assert_eq!(
        storage.schema_version().await.unwrap(),
        Some(SCHEMA_VERSION)
    );
    let old = RunId::from("old");
    assert_eq!(storage.events(&old, None).await.unwrap().len(), 1);
    let after = final_materializations_after(&storage, MaterializationPosition::START, 1).await;
    assert_eq!(
        after
            .iter()
            .map(|(_, m)| (m.run_id.as_str(), &m.value))
            .collect::<Vec<_>>(),
        [("old", &json!("kept"))],
        "a materialization of version 5 is found by position"
    );
    assert_eq!(
        storage.materialization_position().await.unwrap(),
        after[0].0
    );
    storage.create_run(&run_record("new", 0)).await.unwrap();
    let checked = check_evaluated("new", 0, "a", "positive", false, CheckSeverity::Warn);
    storage
        .append_events(std::slice::from_ref(&checked))
        .await
        .unwrap();
    assert_eq!(
        storage.check_records(&"a".into(), 10).await.unwrap(),
        [CheckRecord::of(&checked).unwrap()]
    );
    let record = automation_record("a", 5, true);
    storage
        .record_automation(std::slice::from_ref(&record))
        .await
        .unwrap();
    assert_eq!(
        storage.automation_records(None, 10).await.unwrap(),
        [record]
    );
}

#[tokio::test]
async fn a_backfill_that_cannot_be_read_is_named() {
    let fresh = Fresh::new().await;
    for id in ["bf-good", "bf-bad"] {
        fresh
            .create_backfill(&backfill_record(id, 0, BackfillStatus::Requested))
            .await
            .unwrap();
    }
    fresh
        .db
        .client()
        .await
        .execute(
            "UPDATE dagrs.backfills SET body = '{\"id\": \"bf-bad\", \"status\": 7}' \
             WHERE id = 'bf-bad'",
            &[],
        )
        .await
        .unwrap();
    assert!(fresh.backfill("bf-good").await.unwrap().is_some());
    for err in [
        fresh.backfill("bf-bad").await.unwrap_err().to_string(),
        fresh.backfills(None, 10).await.unwrap_err().to_string(),
    ] {
        assert!(
            err.contains("the stored backfill `bf-bad` cannot be read"),
            "names the backfill: {err}"
        );
    }
}

/// Several processes (each with its own pool) materializing partitions of one asset at once:
/// their ranges still merge into one stored range.
#[tokio::test]
async fn writers_in_several_processes_merge_one_assets_ranges() {
    const WRITERS: i64 = 6;
    const EACH: i64 = 40;
    let fresh = Fresh::new().await;
    let mut tasks = tokio::task::JoinSet::new();
    for writer in 0..WRITERS {
        let pg = PostgresResource::from_url(&fresh.db.url).unwrap();
        let storage = PgStorage::connect(pg, DEFAULT_SCHEMA).await.unwrap();
        tasks.spawn(async move {
            let id = format!("w{writer}");
            storage.create_run(&run_record(&id, 0)).await.unwrap();
            for k in 0..EACH {
                // Minute `k * WRITERS + writer`: neighbours belong to other writers.
                let minute = k * WRITERS + writer;
                let range = minutes("", minute, minute + 1);
                storage
                    .append_events(&[
                        partition_failed(&id, 2 * k as u64, "shared", &range, false),
                        partition_materialized(&id, 2 * k as u64 + 1, "shared", &range, json!(k)),
                    ])
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let status = fresh.partition_status(&"shared".into()).await.unwrap();
    assert_eq!(
        status.materialized,
        minutes("", 0, WRITERS * EACH).to_set(),
        "every partition is materialized"
    );
    assert_eq!(
        status.materialized.range_count(),
        1,
        "concurrent writers still leave one range"
    );
    assert!(
        status.failed.is_empty(),
        "every failure was cleared: {:?}",
        status.failed
    );
}

#[tokio::test]
async fn partition_status_stays_fast_with_many_ranges() {
    const N: i64 = 50_000;
    let fresh = Fresh::new().await;
    // 50,000 stored ranges of one asset (every other minute), written directly.
    fresh
        .db
        .client()
        .await
        .batch_execute(&format!(
            "INSERT INTO dagrs.partition_ranges (asset, status, dims, start_at, end_at) \
             SELECT 'minutely', 'materialized', '', {base} + m * 60, {base} + m * 60 + 60 \
             FROM generate_series(0, {last}, 2) AS m; \
             ANALYZE dagrs.partition_ranges;",
            base = at(0).timestamp(),
            last = 2 * N - 2,
        ))
        .await
        .unwrap();
    let asset = "minutely".into();
    let started = std::time::Instant::now();
    let status = fresh.partition_status(&asset).await.unwrap();
    let read = started.elapsed();
    assert_eq!(status.materialized.range_count(), N as usize);
    fresh.create_run(&run_record("gaps", 0)).await.unwrap();
    let started = std::time::Instant::now();
    for k in 0..200 {
        let minute = 2 * (k * (N / 200) + 7) + 1;
        fresh
            .append_events(&[partition_materialized(
                "gaps",
                k as u64,
                "minutely",
                &minutes("", minute, minute + 1),
                json!(k),
            )])
            .await
            .unwrap();
    }
    let written = started.elapsed();
    let status = fresh.partition_status(&asset).await.unwrap();
    assert_eq!(status.materialized.range_count(), N as usize - 200);
    // Generous bounds for debug builds on busy machines.
    assert!(read.as_secs() < 10, "reading 50,000 ranges took {read:?}");
    assert!(written.as_secs() < 30, "200 writes took {written:?}");
}

/// Partitioned writes in flight while the server restarts are tried again as whole
/// transactions: every event is stored once and the partition status is whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_writes_survive_a_server_restart() {
    const BATCHES: i64 = 150;
    let server = dagrs_postgres::testing::TestServer::start();
    let pg = PostgresResource::from_url(&server.url("postgres")).unwrap();
    let storage = PgStorage::connect(pg, DEFAULT_SCHEMA).await.unwrap();
    storage.create_run(&run_record("r", 0)).await.unwrap();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let writer = {
        let storage = storage.clone();
        let done = done.clone();
        tokio::spawn(async move {
            for k in 0..BATCHES {
                let range = minutes("", k, k + 1);
                storage
                    .append_events(&[
                        partition_failed("r", 2 * k as u64, "a", &range, false),
                        partition_materialized("r", 2 * k as u64 + 1, "a", &range, json!(k)),
                    ])
                    .await
                    .unwrap_or_else(|e| panic!("batch {k}: {e}"));
                done.store(k + 1, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    let before = done.load(std::sync::atomic::Ordering::SeqCst);
    let restarted = tokio::task::spawn_blocking(move || {
        server.restart();
        server
    })
    .await
    .unwrap();
    let after = done.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        before > 0 && after < BATCHES,
        "the restart came while batches were written ({before}, then {after} of {BATCHES})"
    );
    writer.await.unwrap();
    let events = storage.events(&RunId::from("r"), None).await.unwrap();
    assert_eq!(
        events.len() as i64,
        2 * BATCHES,
        "every event is stored once"
    );
    let status = storage.partition_status(&"a".into()).await.unwrap();
    assert_eq!(status.materialized, minutes("", 0, BATCHES).to_set());
    assert_eq!(status.materialized.range_count(), 1);
    assert!(status.failed.is_empty());
    assert_eq!(
        storage
            .materializations(&"a".into(), 1_000)
            .await
            .unwrap()
            .len() as i64,
        BATCHES
    );
    drop(restarted);
}

/// Identity ids can commit out of order: a materialization whose transaction is still running
/// holds back every later one, so a cursor never skips it, and each comes back once.
#[tokio::test]
async fn materializations_after_waits_for_a_transaction_still_running() {
    let fresh = Fresh::new().await;
    let start = MaterializationPosition::START;
    fresh.create_run(&run_record("quick", 0)).await.unwrap();
    // The first writer takes its id (and its transaction id) first, and commits last.
    let mut slow = fresh.db.client().await;
    let slow = slow.transaction().await.unwrap();
    slow.batch_execute(
        "INSERT INTO dagrs.materializations (asset, run_id, seq, ts, metadata, value) \
         VALUES ('a', 'slow', 0, '2026-01-01T00:00:00Z', '{}', '\"slow\"')",
    )
    .await
    .unwrap();
    let quick = event("quick", 0, Some("b"), materialization(json!("quick")));
    fresh
        .append_events(std::slice::from_ref(&quick))
        .await
        .unwrap();
    assert_eq!(
        fresh.latest_materialization(&"b".into()).await.unwrap(),
        MaterializationRecord::of(&quick),
        "the second writer's materialization is committed"
    );
    assert!(
        fresh
            .materializations_after(start, 10)
            .await
            .unwrap()
            .is_empty(),
        "held back while an older transaction runs"
    );
    assert_eq!(fresh.materialization_position().await.unwrap(), start);
    slow.commit().await.unwrap();

    let all = final_materializations_after(&*fresh, start, 2).await;
    assert_eq!(
        all.iter()
            .map(|(_, m)| (m.run_id.as_str(), m.value.clone()))
            .collect::<Vec<_>>(),
        [("slow", json!("slow")), ("quick", json!("quick"))],
        "both, in the order their transactions began"
    );
    assert!(all[0].0 < all[1].0);
    assert_eq!(fresh.materialization_position().await.unwrap(), all[1].0);
    assert!(fresh
        .materializations_after(all[1].0, 10)
        .await
        .unwrap()
        .is_empty());
    // Read one at a time, from the start: each once.
    let first = fresh.materializations_after(start, 1).await.unwrap();
    assert_eq!(first, all[..1]);
    assert_eq!(
        fresh.materializations_after(first[0].0, 1).await.unwrap(),
        all[1..]
    );

    // A cursor that read up to here while another transaction is open still gets what that
    // transaction commits, and nothing newer before it.
    let cursor = all[1].0;
    let mut slow = fresh.db.client().await;
    let slow = slow.transaction().await.unwrap();
    slow.batch_execute(
        "INSERT INTO dagrs.materializations (asset, run_id, seq, ts, metadata, value) \
         VALUES ('a', 'slow', 1, '2026-01-01T00:00:00Z', '{}', '\"late\"')",
    )
    .await
    .unwrap();
    let next = event("quick", 1, Some("b"), materialization(json!("next")));
    fresh
        .append_events(std::slice::from_ref(&next))
        .await
        .unwrap();
    assert!(fresh
        .materializations_after(cursor, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(fresh.materialization_position().await.unwrap(), cursor);
    slow.commit().await.unwrap();
    let rest = final_materializations_after(&*fresh, cursor, 2).await;
    assert_eq!(
        rest.iter()
            .map(|(_, m)| m.value.clone())
            .collect::<Vec<_>>(),
        [json!("late"), json!("next")]
    );
}
