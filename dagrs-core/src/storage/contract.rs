//! The contract every [`Storage`] backend must meet, as a test suite that backends run.
//!
//! In a backend's tests, generate one test per part of the contract with
//! [`storage_contract_tests!`](crate::storage_contract_tests), giving an expression that
//! makes a fresh, empty store behind a pointer: a `Box`, or a guard of your own that derefs
//! to the store and cleans up (a temp dir, a test database) when dropped.
//!
//! ```no_run
//! # mod tests {
//! // In a backend's tests (`MyStorage` here is the in-memory store):
//! use dagrs_core::storage::InMemoryStorage as MyStorage;
//! dagrs_core::storage_contract_tests!(async { Box::new(MyStorage::new()) });
//! # }
//! # fn main() {}
//! ```
//!
//! Each check panics with a message naming the broken rule. (Long because it is the whole
//! contract in one place: one function per part, each reading top to bottom.)

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;

use super::{
    EventFilter, InstigatorKind, InstigatorStatus, Retention, RunCursor, RunFilter, RunRecord,
    Storage, TickRecord, TickStatus,
};
use crate::config::RunConfig;
use crate::event::{ErrorInfo, Event, EventKind, LogLevel, RunStatus};
use crate::key::{AssetKey, RunId};

/// Generates one `#[tokio::test]` per part of the storage contract; `$make` is an
/// expression that evaluates to a future of a fresh, empty store behind a pointer (anything
/// that derefs to the store: a `Box`, or a guard that also owns the store's temp dir or test
/// database, which lives as long as the test).
#[macro_export]
macro_rules! storage_contract_tests {
    ($make:expr) => {
        $crate::storage_contract_tests!(@each $make;
            runs, events, every_event_kind_round_trips, materializations,
            finishing_and_heartbeats, retention, ticks_and_cursors, run_queue, concurrent_writers,
            run_pages, event_pages);
    };
    (@each $make:expr; $($part:ident),*) => {
        $(
            #[::tokio::test]
            async fn $part() {
                let fresh = $make.await;
                $crate::storage::contract::$part(&*fresh).await;
            }
        )*
    };
}

/// A fixed instant, `minutes` after 2026-01-01 00:00 UTC (whole microseconds, which every
/// backend keeps exactly).
pub fn at(minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::minutes(minutes)
}

/// A running run started at `at(minutes)`.
pub fn run_record(id: &str, minutes: i64) -> RunRecord {
    RunRecord {
        run_id: RunId::from(id),
        status: RunStatus::Running,
        selection: "a+".into(),
        assets: vec![AssetKey::from("a"), AssetKey::from("b")],
        config: RunConfig::new().asset("a", json!({"batch_size": 10, "name": "x'\"y"})),
        tags: BTreeMap::from([("team".to_owned(), "data".to_owned())]),
        started_at: at(minutes),
        ended_at: None,
        owner: "host-a:4242".into(),
        heartbeat_at: at(minutes),
        parent_run_id: None,
        failure: None,
    }
}

/// A schedule's tick at `at(minutes)`, just claimed.
pub fn tick(name: &str, minutes: i64) -> TickRecord {
    TickRecord {
        name: name.into(),
        kind: InstigatorKind::Schedule,
        tick: at(minutes),
        status: TickStatus::Started,
        run_ids: vec![],
        reason: None,
    }
}

/// An event of run `id`.
pub fn event(id: &str, seq: u64, asset: Option<&str>, kind: EventKind) -> Event {
    Event {
        run_id: RunId::from(id),
        seq,
        timestamp: at(seq as i64) + chrono::Duration::microseconds(123_456),
        asset: asset.map(AssetKey::from),
        kind,
    }
}

fn materialization(value: serde_json::Value, code_version: Option<&str>) -> EventKind {
    EventKind::Materialization {
        metadata: BTreeMap::from([("rows".to_owned(), json!(3))]),
        value,
        code_version: code_version.map(str::to_owned),
    }
}

/// Runs are stored as given, ids are unique, and `runs` lists newest first.
pub async fn runs(storage: &dyn Storage) {
    let mut parent = run_record("r1", 0);
    parent.parent_run_id = None;
    storage.create_run(&parent).await.expect("create_run");
    assert_eq!(
        storage.run(&parent.run_id).await.unwrap().as_ref(),
        Some(&parent),
        "a run comes back as it was stored"
    );
    assert!(
        storage.create_run(&parent).await.is_err(),
        "a second run with the same id is rejected"
    );
    let mut child = run_record("r2", 10);
    child.parent_run_id = Some(parent.run_id.clone());
    storage.create_run(&child).await.unwrap();
    storage.create_run(&run_record("r3", 5)).await.unwrap();
    let ids: Vec<String> = storage
        .runs(10)
        .await
        .unwrap()
        .iter()
        .map(|r| r.run_id.to_string())
        .collect();
    assert_eq!(ids, ["r2", "r3", "r1"], "runs are listed newest first");
    assert_eq!(
        storage.runs(2).await.unwrap().len(),
        2,
        "runs respects its limit"
    );
    assert_eq!(
        storage
            .run(&RunId::from("r2"))
            .await
            .unwrap()
            .unwrap()
            .parent_run_id,
        Some(RunId::from("r1"))
    );
    assert_eq!(storage.run(&RunId::from("nope")).await.unwrap(), None);
}

/// Events come back in order, after a given seq, and a batch is all or nothing.
pub async fn events(storage: &dyn Storage) {
    storage.create_run(&run_record("e1", 0)).await.unwrap();
    storage.create_run(&run_record("e2", 1)).await.unwrap();
    let log = |seq, text: &str| {
        event(
            "e1",
            seq,
            Some("a"),
            EventKind::Log {
                level: LogLevel::Info,
                message: text.into(),
            },
        )
    };
    storage
        .append_events(&[
            log(0, "zero"),
            log(1, "one"),
            event("e2", 0, None, EventKind::RunSucceeded),
        ])
        .await
        .unwrap();
    storage
        .append_events(&[log(2, "two"), log(3, "three")])
        .await
        .unwrap();
    let all = storage.events(&RunId::from("e1"), None).await.unwrap();
    assert_eq!(all.len(), 4);
    assert!(
        all.iter().enumerate().all(|(i, e)| e.seq == i as u64),
        "events come back in seq order"
    );
    assert_eq!(
        all[2],
        log(2, "two"),
        "an event comes back as it was stored"
    );
    let after = storage.events(&RunId::from("e1"), Some(1)).await.unwrap();
    assert_eq!(after.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 3]);
    assert_eq!(
        storage
            .events(&RunId::from("e2"), None)
            .await
            .unwrap()
            .len(),
        1
    );

    let clash = storage
        .append_events(&[
            event("e1", 4, Some("a"), materialization(json!(4), None)),
            log(2, "again"),
        ])
        .await;
    assert!(
        clash.is_err(),
        "appending an event with a seq the run already has fails"
    );
    assert_eq!(
        storage
            .events(&RunId::from("e1"), None)
            .await
            .unwrap()
            .len(),
        4,
        "a failed batch leaves nothing behind"
    );
    assert!(
        storage
            .materializations(&"a".into(), 10)
            .await
            .unwrap()
            .is_empty(),
        "no materialization of a failed batch is kept"
    );
    let twice = storage
        .append_events(&[log(4, "four"), log(4, "four")])
        .await;
    assert!(
        twice.is_err(),
        "a seq repeated inside one batch fails the batch"
    );
    assert!(storage
        .events(&RunId::from("unknown"), None)
        .await
        .unwrap()
        .is_empty());
    let orphan = storage
        .append_events(&[
            log(4, "four"),
            event("ghost", 0, None, EventKind::RunSucceeded),
        ])
        .await;
    assert!(
        matches!(&orphan, Err(crate::Error::RunNotFound(id)) if id == "ghost"),
        "events of an unknown run are rejected: {orphan:?}"
    );
    assert_eq!(
        storage
            .events(&RunId::from("e1"), None)
            .await
            .unwrap()
            .len(),
        4,
        "a rejected batch leaves nothing behind"
    );
}

/// Every kind of event survives storage unchanged.
pub async fn every_event_kind_round_trips(storage: &dyn Storage) {
    storage.create_run(&run_record("k", 0)).await.unwrap();
    let kinds = vec![
        EventKind::RunStarted {
            selection: vec!["a".into(), "b".into()],
        },
        EventKind::StepStarted { attempt: 1 },
        EventKind::Log {
            level: LogLevel::Warn,
            message: "ünïcode, 'quotes' \"and\" \\ backslashes\nnew line".into(),
        },
        EventKind::StepFailed {
            attempt: 1,
            error: ErrorInfo {
                message: "cannot connect".into(),
                causes: vec!["connection refused".into()],
            },
            will_retry: true,
        },
        EventKind::StepRetrying {
            next_attempt: 2,
            delay: Duration::from_millis(1500),
        },
        materialization(json!({"rows": 3, "nested": [1.5, null, "x"]}), Some("v2")),
        EventKind::StepSucceeded {
            attempt: 2,
            duration: Duration::from_micros(2_500),
        },
        EventKind::StepSkipped {
            reason: "upstream `a` failed".into(),
        },
        EventKind::StepCancelled { attempt: 1 },
        EventKind::RunFailed {
            failed: vec!["a".into()],
            skipped: vec!["b".into()],
        },
        EventKind::RunCancelled,
        EventKind::RunAbandoned {
            reason: "its process is gone".into(),
        },
        EventKind::RunSucceeded,
    ];
    let events: Vec<Event> = kinds
        .into_iter()
        .enumerate()
        .map(|(i, kind)| event("k", i as u64, (i % 2 == 1).then_some("a"), kind))
        .collect();
    storage.append_events(&events).await.unwrap();
    assert_eq!(
        storage.events(&RunId::from("k"), None).await.unwrap(),
        events
    );
}

/// Materialization events become records: latest per asset, and history newest first.
pub async fn materializations(storage: &dyn Storage) {
    storage.create_run(&run_record("m1", 0)).await.unwrap();
    storage.create_run(&run_record("m2", 10)).await.unwrap();
    assert_eq!(
        storage.latest_materialization(&"a".into()).await.unwrap(),
        None
    );
    storage
        .append_events(&[
            event("m1", 0, Some("a"), materialization(json!(1), Some("v1"))),
            event("m1", 1, Some("b"), materialization(json!([1, 2]), None)),
        ])
        .await
        .unwrap();
    storage
        .append_events(&[event(
            "m2",
            20,
            Some("a"),
            materialization(json!(2), Some("v2")),
        )])
        .await
        .unwrap();
    let latest = storage
        .latest_materialization(&"a".into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            latest.run_id.as_str(),
            latest.seq,
            &latest.value,
            latest.code_version.as_deref()
        ),
        ("m2", 20, &json!(2), Some("v2")),
        "the latest materialization is the newest"
    );
    assert_eq!(latest.metadata["rows"], json!(3));
    assert_eq!(
        latest.timestamp,
        at(20) + chrono::Duration::microseconds(123_456)
    );
    let history: Vec<serde_json::Value> = storage
        .materializations(&"a".into(), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.value)
        .collect();
    assert_eq!(history, [json!(2), json!(1)], "history is newest first");
    assert_eq!(
        storage
            .materializations(&"a".into(), 1)
            .await
            .unwrap()
            .len(),
        1
    );
    let mut all: Vec<(String, serde_json::Value)> = storage
        .latest_materializations()
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.asset.to_string(), m.value))
        .collect();
    all.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(all, [("a".into(), json!(2)), ("b".into(), json!([1, 2]))]);
}

/// `finish_run` only ends active runs, once; heartbeats move; `running_runs` lists the
/// active ones; cancellation requests move running runs to canceling.
pub async fn finishing_and_heartbeats(storage: &dyn Storage) {
    storage.create_run(&run_record("f1", 0)).await.unwrap();
    storage.create_run(&run_record("f2", 1)).await.unwrap();
    storage.heartbeat(&RunId::from("f1"), at(7)).await.unwrap();
    assert_eq!(
        storage
            .run(&RunId::from("f1"))
            .await
            .unwrap()
            .unwrap()
            .heartbeat_at,
        at(7)
    );
    let changed = storage
        .finish_run(
            &RunId::from("f1"),
            RunStatus::Failed,
            at(8),
            Some("its process is gone"),
        )
        .await
        .unwrap();
    assert!(changed, "finishing a running run changes it");
    let again = storage
        .finish_run(&RunId::from("f1"), RunStatus::Succeeded, at(9), None)
        .await
        .unwrap();
    assert!(!again, "a finished run cannot be finished again");
    let f1 = storage.run(&RunId::from("f1")).await.unwrap().unwrap();
    assert_eq!(
        (f1.status, f1.ended_at, f1.failure.as_deref()),
        (RunStatus::Failed, Some(at(8)), Some("its process is gone"))
    );
    let running: Vec<String> = storage
        .running_runs()
        .await
        .unwrap()
        .iter()
        .map(|r| r.run_id.to_string())
        .collect();
    assert_eq!(running, ["f2"]);
    assert!(storage
        .finish_run(&RunId::from("missing"), RunStatus::Failed, at(1), None)
        .await
        .is_err());

    // A cancellation request moves a running run to canceling, once; its process then
    // records how the run ended, keeping the request's reason.
    let f2 = RunId::from("f2");
    assert!(storage
        .request_cancel(&f2, "asked by ops", at(9))
        .await
        .unwrap());
    assert!(
        !storage.request_cancel(&f2, "again", at(9)).await.unwrap(),
        "only a running run can be asked to cancel"
    );
    let asked = storage.run(&f2).await.unwrap().unwrap();
    assert_eq!(
        (asked.status, asked.failure.as_deref()),
        (RunStatus::Canceling, Some("asked by ops"))
    );
    assert_eq!(
        storage.running_runs().await.unwrap().len(),
        1,
        "a canceling run is still active"
    );
    assert!(storage
        .finish_run(&f2, RunStatus::Cancelled, at(10), None)
        .await
        .unwrap());
    let ended = storage.run(&f2).await.unwrap().unwrap();
    assert_eq!(
        (ended.status, ended.failure.as_deref()),
        (RunStatus::Cancelled, Some("asked by ops"))
    );
    assert!(
        !storage.request_cancel(&f2, "late", at(11)).await.unwrap(),
        "an ended run stays as it ended"
    );
    let ghost = RunId::from("missing");
    assert!(matches!(
        storage.request_cancel(&ghost, "x", at(1)).await,
        Err(crate::Error::RunNotFound(id)) if id == "missing"
    ));
    assert!(matches!(
        storage.heartbeat(&ghost, at(1)).await,
        Err(crate::Error::RunNotFound(id)) if id == "missing"
    ));
}

/// Pruning removes old finished runs with their events, keeps running runs and every
/// asset's latest materialization.
pub async fn retention(storage: &dyn Storage) {
    // old1 (finished, day 0), old2 (finished, day 1, holds the latest of `b`),
    // stuck (running, day 0), new (finished, day 9).
    let day = 24 * 60;
    for (id, start) in [("old1", 0), ("old2", day), ("stuck", 0), ("new", 9 * day)] {
        storage.create_run(&run_record(id, start)).await.unwrap();
    }
    for id in ["old1", "old2", "new"] {
        storage
            .finish_run(
                &RunId::from(id),
                RunStatus::Succeeded,
                at(9 * day + 1),
                None,
            )
            .await
            .unwrap();
    }
    storage
        .append_events(&[
            event("old1", 0, Some("a"), materialization(json!("a-old"), None)),
            event("old1", 1, Some("b"), materialization(json!("b-old"), None)),
            event(
                "old2",
                0,
                Some("b"),
                materialization(json!("b-latest"), None),
            ),
            event(
                "stuck",
                0,
                None,
                EventKind::RunStarted { selection: vec![] },
            ),
            event(
                "new",
                0,
                Some("a"),
                materialization(json!("a-latest"), None),
            ),
            event("new", 1, None, EventKind::RunSucceeded),
        ])
        .await
        .unwrap();
    let now = at(10 * day);
    let report = storage
        .prune(
            Retention {
                max_age: Some(Duration::from_secs(5 * 86_400)),
                max_runs: None,
            },
            now,
        )
        .await
        .unwrap();
    assert_eq!(
        (report.runs, report.events),
        (2, 3),
        "old finished runs and their events go"
    );
    assert_eq!(
        report.materializations, 2,
        "a-old and b-old go; b-latest stays"
    );
    let left: Vec<String> = storage
        .runs(10)
        .await
        .unwrap()
        .iter()
        .map(|r| r.run_id.to_string())
        .collect();
    assert_eq!(left, ["new", "stuck"], "a running run is never pruned");
    assert!(storage
        .events(&RunId::from("old1"), None)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        storage
            .events(&RunId::from("new"), None)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        storage
            .events(&RunId::from("stuck"), None)
            .await
            .unwrap()
            .len(),
        1
    );
    let b = storage
        .latest_materialization(&"b".into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        b.value,
        json!("b-latest"),
        "an asset's latest materialization survives"
    );
    assert_eq!(
        storage
            .materializations(&"a".into(), 10)
            .await
            .unwrap()
            .len(),
        1
    );

    let report = storage
        .prune(
            Retention {
                max_age: None,
                max_runs: Some(0),
            },
            now,
        )
        .await
        .unwrap();
    assert_eq!(report.runs, 1, "max_runs = 0 removes every finished run");
    assert_eq!(storage.runs(10).await.unwrap().len(), 1);
    assert_eq!(
        storage
            .latest_materialization(&"a".into())
            .await
            .unwrap()
            .unwrap()
            .value,
        json!("a-latest")
    );
    let nothing = storage.prune(Retention::default(), now).await.unwrap();
    assert_eq!(
        nothing,
        Default::default(),
        "an empty retention keeps everything"
    );
}

/// A tick is claimed once and records what it did; run keys are claimed once; cursors and
/// schedule/sensor states are stored and replaced.
pub async fn ticks_and_cursors(storage: &dyn Storage) {
    assert!(storage.claim_tick(&tick("hourly", 60)).await.unwrap());
    assert!(
        !storage.claim_tick(&tick("hourly", 60)).await.unwrap(),
        "a tick is claimed once"
    );
    assert!(storage.claim_tick(&tick("hourly", 120)).await.unwrap());
    let mut sensed = tick("new_files", 90);
    sensed.kind = InstigatorKind::Sensor;
    assert!(storage.claim_tick(&sensed).await.unwrap());
    let mut fired = tick("hourly", 60);
    fired.status = TickStatus::Fired;
    fired.run_ids = vec![RunId::from("r1"), RunId::from("r2")];
    storage.update_tick(&fired).await.unwrap();
    sensed.status = TickStatus::Skipped;
    sensed.reason = Some("no new files".into());
    storage.update_tick(&sensed).await.unwrap();
    assert!(
        storage.update_tick(&tick("never", 1)).await.is_err(),
        "only a claimed tick can be updated"
    );
    let hourly = storage.ticks(Some("hourly"), 10).await.unwrap();
    assert_eq!(
        hourly,
        [tick("hourly", 120), fired],
        "newest first, as updated"
    );
    let all = storage.ticks(None, 10).await.unwrap();
    let names: Vec<&str> = all.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["hourly", "new_files", "hourly"]);
    assert_eq!(all[1], sensed);
    assert_eq!(storage.ticks(None, 1).await.unwrap().len(), 1);
    let report = storage
        .prune(
            Retention {
                max_age: Some(Duration::from_secs(100 * 60)),
                max_runs: None,
            },
            at(200),
        )
        .await
        .unwrap();
    assert_eq!(report.ticks, 2, "ticks older than the age kept go");
    assert_eq!(
        storage.ticks(None, 10).await.unwrap(),
        [tick("hourly", 120)]
    );

    assert_eq!(
        storage
            .claim_run_key("new_files", "file-1", &RunId::from("r7"))
            .await
            .unwrap(),
        None,
        "a new run key is claimed"
    );
    assert_eq!(
        storage
            .claim_run_key("new_files", "file-1", &RunId::from("r8"))
            .await
            .unwrap(),
        Some(RunId::from("r7")),
        "a used run key names its run"
    );
    assert_eq!(
        storage
            .claim_run_key("other_sensor", "file-1", &RunId::from("r9"))
            .await
            .unwrap(),
        None,
        "run keys are per sensor"
    );

    assert!(storage.instigator_states().await.unwrap().is_empty());
    storage
        .set_instigator_state("hourly", InstigatorStatus::Stopped)
        .await
        .unwrap();
    storage
        .set_instigator_state("new_files", InstigatorStatus::Running)
        .await
        .unwrap();
    storage
        .set_instigator_state("hourly", InstigatorStatus::Running)
        .await
        .unwrap();
    let states = storage.instigator_states().await.unwrap();
    assert_eq!(
        states.into_iter().collect::<Vec<_>>(),
        [
            ("hourly".to_owned(), InstigatorStatus::Running),
            ("new_files".to_owned(), InstigatorStatus::Running)
        ]
    );

    assert_eq!(storage.cursor("new_files").await.unwrap(), None);
    storage.set_cursor("new_files", "offset=10").await.unwrap();
    storage.set_cursor("new_files", "offset=20").await.unwrap();
    assert_eq!(
        storage.cursor("new_files").await.unwrap().as_deref(),
        Some("offset=20")
    );
    storage.set_cursor("sensor/a", "1").await.unwrap();
    storage.set_cursor("sensor/b", "2").await.unwrap();
    storage.set_cursor("sensorless", "3").await.unwrap();
    assert_eq!(
        storage
            .cursors("sensor/")
            .await
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        [
            ("sensor/a".into(), "1".into()),
            ("sensor/b".into(), "2".into())
        ],
        "cursors by prefix"
    );
}

/// Queued runs wait in order; one starter takes each; a queued run is cancelled at once.
pub async fn run_queue(storage: &dyn Storage) {
    let queued = |id: &str, minutes: i64| {
        let mut run = run_record(id, minutes);
        run.status = RunStatus::Queued;
        run.owner = String::new();
        run
    };
    storage.create_run(&queued("q2", 2)).await.unwrap();
    storage.create_run(&queued("q1", 1)).await.unwrap();
    storage.create_run(&queued("q3", 3)).await.unwrap();
    storage.create_run(&run_record("live", 0)).await.unwrap();
    let ids = |runs: Vec<RunRecord>| -> Vec<String> {
        runs.iter().map(|r| r.run_id.to_string()).collect()
    };
    assert_eq!(
        ids(storage.queued_runs().await.unwrap()),
        ["q1", "q2", "q3"],
        "queued runs come oldest first"
    );
    assert_eq!(
        ids(storage.running_runs().await.unwrap()),
        ["live"],
        "a queued run is not active"
    );
    let q1 = RunId::from("q1");
    let (a, b) = tokio::join!(
        storage.start_run(&q1, "host:1", at(10)),
        storage.start_run(&q1, "host:2", at(10))
    );
    assert!(
        a.unwrap() ^ b.unwrap(),
        "of two starters of a queued run, exactly one starts it"
    );
    let started = storage.run(&RunId::from("q1")).await.unwrap().unwrap();
    assert_eq!(
        (started.status, started.started_at, started.heartbeat_at),
        (RunStatus::Running, at(10), at(10))
    );
    assert!(started.owner.starts_with("host:"));
    assert!(storage
        .request_cancel(&RunId::from("q2"), "not needed", at(11))
        .await
        .unwrap());
    let cancelled = storage.run(&RunId::from("q2")).await.unwrap().unwrap();
    assert_eq!(
        (
            cancelled.status,
            cancelled.ended_at,
            cancelled.failure.as_deref()
        ),
        (RunStatus::Cancelled, Some(at(11)), Some("not needed")),
        "a queued run is cancelled at once"
    );
    assert!(!storage
        .start_run(&RunId::from("q2"), "host:1", at(12))
        .await
        .unwrap());
    assert_eq!(ids(storage.queued_runs().await.unwrap()), ["q3"]);
    assert!(matches!(
        storage.start_run(&RunId::from("ghost"), "h", at(1)).await,
        Err(crate::Error::RunNotFound(_))
    ));
    let report = storage
        .prune(
            Retention {
                max_age: None,
                max_runs: Some(0),
            },
            at(100),
        )
        .await
        .unwrap();
    assert_eq!(report.runs, 1, "only the cancelled run goes");
    assert_eq!(ids(storage.queued_runs().await.unwrap()), ["q3"]);
}

/// Many writers at once (as concurrent runs in one process) all succeed and nothing is
/// lost; racing for one seq, or to finish one run, exactly one wins.
pub async fn concurrent_writers(storage: &dyn Storage) {
    storage
        .create_run(&run_record("contested", 0))
        .await
        .unwrap();
    let writer = |writer: u64| async move {
        let id = format!("c{writer}");
        storage
            .create_run(&run_record(&id, writer as i64))
            .await
            .unwrap();
        for batch in 0..10u64 {
            let mut events: Vec<Event> = (0..4)
                .map(|i| {
                    event(
                        &id,
                        batch * 5 + i,
                        Some("a"),
                        EventKind::StepStarted { attempt: 1 },
                    )
                })
                .collect();
            events.push(event(
                &id,
                batch * 5 + 4,
                Some("shared"),
                materialization(json!(writer), None),
            ));
            storage.append_events(&events).await.unwrap();
            storage
                .heartbeat(&RunId::from(id.as_str()), at(batch as i64))
                .await
                .unwrap();
        }
        let got_seq = storage
            .append_events(&[event("contested", 0, None, EventKind::RunSucceeded)])
            .await
            .is_ok();
        let finished = storage
            .finish_run(
                &RunId::from("contested"),
                RunStatus::Failed,
                at(writer as i64),
                None,
            )
            .await
            .unwrap();
        (usize::from(got_seq), usize::from(finished))
    };
    let all = tokio::join!(
        writer(0),
        writer(1),
        writer(2),
        writer(3),
        writer(4),
        writer(5),
        writer(6),
        writer(7)
    );
    let all = [all.0, all.1, all.2, all.3, all.4, all.5, all.6, all.7];
    let sum = |pick: fn(&(usize, usize)) -> usize| all.iter().map(pick).sum::<usize>();
    assert_eq!(sum(|r| r.0), 1, "exactly one writer stores (contested, 0)");
    assert_eq!(
        sum(|r| r.1),
        1,
        "exactly one finisher ends the contested run"
    );
    for writer in 0..8 {
        let events = storage
            .events(&RunId::from(format!("c{writer}")), None)
            .await
            .unwrap();
        assert_eq!(events.len(), 50, "every event of every writer is stored");
        assert!(events.iter().enumerate().all(|(i, e)| e.seq == i as u64));
    }
    assert_eq!(
        storage
            .materializations(&"shared".into(), 1_000)
            .await
            .unwrap()
            .len(),
        80,
        "every materialization of every writer is recorded"
    );
}

/// Pages of runs: newest first by start time then run id, every filter (status, job, tag,
/// time window) and the cursor of the previous page, as [`RunFilter::matches`] says.
pub async fn run_pages(storage: &dyn Storage) {
    // Twelve runs; two start at the same instant, so the run id breaks the tie.
    let mut all = Vec::new();
    for i in 0..12 {
        let mut run = run_record(&format!("p{i:02}"), i64::from(i / 2 * 2) + 100);
        run.status = if i % 3 == 0 {
            RunStatus::Failed
        } else {
            RunStatus::Succeeded
        };
        run.tags = BTreeMap::from([("team".to_owned(), format!("t{}", i % 2))]);
        if i % 4 == 0 {
            run.tags
                .insert(crate::job::JOB_TAG.to_owned(), "nightly".to_owned());
        }
        storage.create_run(&run).await.unwrap();
        all.push(run);
    }
    let ids = |runs: &[RunRecord]| {
        runs.iter()
            .map(|r| r.run_id.to_string())
            .collect::<Vec<_>>()
    };
    let expect = |filter: &RunFilter| {
        let mut runs: Vec<RunRecord> = all.iter().filter(|r| filter.matches(r)).cloned().collect();
        RunFilter::sort(&mut runs);
        ids(&runs)
    };
    let page = storage.runs_page(&RunFilter::default(), 100).await.unwrap();
    assert_eq!(
        ids(&page),
        ["p11", "p10", "p09", "p08", "p07", "p06", "p05", "p04", "p03", "p02", "p01", "p00"],
        "a page lists runs newest first, the larger id first among runs started together"
    );
    assert_eq!(page[0], all[11], "a run in a page comes back as stored");
    // Walking the pages three by three visits every run once, in order.
    let mut walked = Vec::new();
    let mut filter = RunFilter::default();
    loop {
        let page = storage.runs_page(&filter, 3).await.unwrap();
        assert!(page.len() <= 3, "a page respects its limit");
        let Some(last) = page.last() else { break };
        filter.after = Some(RunCursor::of(last));
        walked.extend(ids(&page));
    }
    assert_eq!(
        walked,
        ids(&page),
        "pages follow one another without gaps or repeats"
    );
    let filters = [
        RunFilter {
            status: Some(RunStatus::Failed),
            ..RunFilter::default()
        },
        RunFilter {
            job: Some("nightly".into()),
            ..RunFilter::default()
        },
        RunFilter {
            tag: Some(("team".into(), "t1".into())),
            ..RunFilter::default()
        },
        RunFilter {
            tag: Some(("team".into(), "nobody".into())),
            ..RunFilter::default()
        },
        RunFilter {
            started_after: Some(at(104)),
            started_before: Some(at(108)),
            ..RunFilter::default()
        },
        RunFilter {
            status: Some(RunStatus::Succeeded),
            tag: Some(("team".into(), "t0".into())),
            after: Some(RunCursor::of(&all[8])),
            ..RunFilter::default()
        },
    ];
    for filter in filters {
        let page = storage.runs_page(&filter, 100).await.unwrap();
        assert_eq!(ids(&page), expect(&filter), "the page of {filter:?}");
    }
}

/// Pages of a run's events: after and before a seq, of one step, above a log level, without
/// log lines, and the newest ones, always in seq order.
pub async fn event_pages(storage: &dyn Storage) {
    storage.create_run(&run_record("ev", 0)).await.unwrap();
    storage.create_run(&run_record("other", 0)).await.unwrap();
    let levels = [
        LogLevel::Debug,
        LogLevel::Info,
        LogLevel::Warn,
        LogLevel::Error,
    ];
    let mut events = Vec::new();
    for seq in 0..40u64 {
        let asset = ["a", "b"][(seq % 2) as usize];
        let kind = match seq % 5 {
            0 => EventKind::StepStarted { attempt: 1 },
            1 => EventKind::StepSucceeded {
                attempt: 1,
                duration: Duration::from_millis(seq),
            },
            _ => EventKind::Log {
                level: levels[(seq % 4) as usize],
                // A NUL, which PostgreSQL's jsonb and `->>` refuse: filters must not trip.
                message: format!("line {seq} \0 \"level\":\"error\""),
            },
        };
        events.push(event("ev", seq, Some(asset), kind));
    }
    storage.append_events(&events).await.unwrap();
    storage
        .append_events(&[event("other", 0, Some("a"), EventKind::RunSucceeded)])
        .await
        .unwrap();
    let seqs = |events: &[Event]| events.iter().map(|e| e.seq).collect::<Vec<_>>();
    let run = RunId::from("ev");
    let filters = [
        EventFilter::default(),
        EventFilter {
            after: Some(7),
            ..EventFilter::default()
        },
        EventFilter {
            after: Some(3),
            before: Some(20),
            ..EventFilter::default()
        },
        EventFilter {
            asset: Some(AssetKey::from("b")),
            ..EventFilter::default()
        },
        EventFilter {
            min_level: Some(LogLevel::Warn),
            ..EventFilter::default()
        },
        EventFilter {
            skip_logs: true,
            ..EventFilter::default()
        },
        EventFilter {
            skip_logs: true,
            asset: Some(AssetKey::from("a")),
            after: Some(4),
            ..EventFilter::default()
        },
    ];
    for filter in filters {
        let expected: Vec<u64> = events
            .iter()
            .filter(|e| filter.matches(e))
            .map(|e| e.seq)
            .collect();
        let page = storage.events_page(&run, &filter, 1000).await.unwrap();
        assert_eq!(seqs(&page), expected, "the events of {filter:?}");
        let first = storage.events_page(&run, &filter, 3).await.unwrap();
        assert_eq!(
            seqs(&first),
            expected[..expected.len().min(3)],
            "the first 3 of {filter:?}"
        );
        let newest = EventFilter {
            newest: true,
            ..filter.clone()
        };
        let tail = storage.events_page(&run, &newest, 3).await.unwrap();
        assert_eq!(
            seqs(&tail),
            expected[expected.len().saturating_sub(3)..],
            "the last 3 of {filter:?}, in seq order"
        );
    }
    let page = storage
        .events_page(&run, &EventFilter::default(), 1000)
        .await
        .unwrap();
    assert_eq!(page, events, "events in a page come back as stored");
    assert!(storage
        .events_page(&RunId::from("nope"), &EventFilter::default(), 10)
        .await
        .unwrap()
        .is_empty());
}
