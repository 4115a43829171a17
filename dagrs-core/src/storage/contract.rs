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
    AutomationRecord, CheckRecord, EventFilter, InstigatorKind, InstigatorStatus,
    MaterializationPosition, MaterializationRecord, PruneReport, Retention, RunCursor, RunFilter,
    RunRecord, Storage, TickRecord, TickStatus,
};
use crate::backfill::{BackfillPolicy, BackfillRecord, BackfillRun, BackfillStatus};
use crate::check::CheckSeverity;
use crate::config::RunConfig;
use crate::event::{ErrorInfo, Event, EventKind, LogLevel, RunStatus};
use crate::key::{AssetKey, RunId};
use crate::partition::{PartitionRange, PartitionSet, PartitionStatus};

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
            partition_status, partition_materializations, many_partition_ranges,
            dynamic_partitions, backfills, run_pages, event_pages, observations,
            materializations_after, check_records, automation_records,
            retention_of_checks_and_automation);
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

/// The materializations after `after`, once at least `count` of them are final. A store may
/// hold back committed materializations while older writes still run (PostgreSQL: any
/// transaction of the server that began writing before them), so a test that writes and
/// reads at once waits a little for them, at most 30 s.
pub async fn final_materializations_after(
    storage: &dyn Storage,
    after: MaterializationPosition,
    count: usize,
) -> Vec<(MaterializationPosition, MaterializationRecord)> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let found = storage.materializations_after(after, 10_000).await.unwrap();
        if found.len() >= count || std::time::Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
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
        partition: None,
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
        EventKind::StepStarted {
            attempt: 1,
            worker: None,
        },
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
            partition: None,
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
        EventKind::CheckEvaluated {
            check: "not_empty".into(),
            passed: false,
            severity: CheckSeverity::Warn,
            blocking: true,
            description: Some("0 rows, 'quotes' \"and\" ünïcode".into()),
            metadata: BTreeMap::from([("rows".to_owned(), json!({"seen": 0, "min": [1, null]}))]),
        },
        EventKind::CheckEvaluated {
            check: "fresh".into(),
            passed: true,
            severity: CheckSeverity::Error,
            blocking: false,
            description: None,
            metadata: BTreeMap::new(),
        },
        EventKind::Observation {
            data_version: json!("2026-01-01T00:00:00Z"),
            metadata: BTreeMap::from([("files".to_owned(), json!(12))]),
            changed: true,
        },
        EventKind::Observation {
            data_version: json!("v1"),
            metadata: BTreeMap::new(),
            changed: false,
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

/// A check evaluation of `asset` by run `id`.
pub fn check_evaluated(
    id: &str,
    seq: u64,
    asset: &str,
    check: &str,
    passed: bool,
    severity: CheckSeverity,
) -> Event {
    event(
        id,
        seq,
        Some(asset),
        EventKind::CheckEvaluated {
            check: check.into(),
            passed,
            severity,
            blocking: !passed,
            description: (!passed).then(|| format!("`{check}` found 'bad' \"rows\" ✗")),
            metadata: if passed {
                BTreeMap::new()
            } else {
                BTreeMap::from([
                    ("bad_rows".to_owned(), json!(2)),
                    ("sample".to_owned(), json!([{"id": 7}, null])),
                ])
            },
        },
    )
}

/// An observation of source asset `asset` by run `id`: data version `version`.
pub fn observed(id: &str, seq: u64, asset: &str, version: &str, changed: bool) -> Event {
    event(
        id,
        seq,
        Some(asset),
        EventKind::Observation {
            data_version: json!(version),
            metadata: BTreeMap::from([("files".to_owned(), json!(seq))]),
            changed,
        },
    )
}

/// An automation evaluation of `asset` at `at(minutes)`.
pub fn automation_record(asset: &str, minutes: i64, requested: bool) -> AutomationRecord {
    AutomationRecord {
        asset: asset.into(),
        evaluated_at: at(minutes) + chrono::Duration::microseconds(654_321),
        requested,
        reason: if requested {
            format!("upstream `{asset}_raw` updated; nothing in progress (ünïcode 'q' \"q\")")
        } else {
            "nothing changed upstream".into()
        },
        run_ids: if requested {
            vec![
                RunId::from(format!("{asset}-{minutes}-1")),
                RunId::from("shared"),
            ]
        } else {
            vec![]
        },
    }
}

/// Observations with a new data version become materializations (valued by the version);
/// those of an unchanged version stay plain events.
pub async fn observations(storage: &dyn Storage) {
    storage.create_run(&run_record("o1", 0)).await.unwrap();
    let events = vec![
        observed("o1", 0, "src", "v1", true),
        observed("o1", 1, "src", "v1", false),
        observed("o1", 2, "other", "x", false),
        observed("o1", 3, "src", "v2", true),
        observed("o1", 4, "src", "v2", false),
    ];
    storage.append_events(&events).await.unwrap();
    assert_eq!(
        storage.events(&RunId::from("o1"), None).await.unwrap(),
        events,
        "observations come back as events"
    );
    let expected: Vec<MaterializationRecord> = [&events[3], &events[0]]
        .into_iter()
        .map(|e| MaterializationRecord::of(e).unwrap())
        .collect();
    assert_eq!(
        (expected[0].value.clone(), expected[0].code_version.clone()),
        (json!("v2"), None)
    );
    assert_eq!(
        storage.materializations(&"src".into(), 10).await.unwrap(),
        expected,
        "only observations of a new data version are materializations"
    );
    assert_eq!(
        storage.latest_materialization(&"src".into()).await.unwrap(),
        Some(expected[0].clone()),
        "the latest observed version is the latest materialization"
    );
    assert_eq!(
        storage
            .latest_materialization(&"other".into())
            .await
            .unwrap(),
        None,
        "an unchanged observation is no materialization"
    );
    assert_eq!(
        storage.latest_materializations().await.unwrap(),
        [expected[0].clone()]
    );
    let after = final_materializations_after(storage, MaterializationPosition::START, 2).await;
    assert_eq!(
        after.into_iter().map(|(_, m)| m).collect::<Vec<_>>(),
        [expected[1].clone(), expected[0].clone()]
    );
}

/// `materializations_after` lists the materializations after a position, in the order they
/// were appended, at most `limit`; continuing from the last position returned gives exactly
/// the rest; `materialization_position` is the newest; pruning keeps the positions of what
/// remains.
pub async fn materializations_after(storage: &dyn Storage) {
    let start = MaterializationPosition::default();
    assert_eq!(start, MaterializationPosition::START);
    assert_eq!(
        storage.materialization_position().await.unwrap(),
        start,
        "an empty store is at the start"
    );
    assert!(
        storage
            .materializations_after(start, 10)
            .await
            .unwrap()
            .is_empty(),
        "nothing before anything was appended"
    );
    storage.create_run(&run_record("s1", 0)).await.unwrap();
    storage.create_run(&run_record("s2", 0)).await.unwrap();
    let stamped = |mut e: Event, minutes: i64| {
        e.timestamp = at(minutes) + chrono::Duration::microseconds(250);
        e
    };
    let first = vec![
        stamped(
            event("s1", 0, Some("a"), materialization(json!(0), Some("v1"))),
            10,
        ),
        stamped(
            event("s1", 1, Some("b"), materialization(json!({"b": 1}), None)),
            20,
        ),
        stamped(
            event("s1", 2, Some("a"), materialization(json!(2), None)),
            20,
        ),
        stamped(
            event(
                "s1",
                3,
                Some("a"),
                EventKind::Log {
                    level: LogLevel::Info,
                    message: "not a materialization".into(),
                },
            ),
            15,
        ),
    ];
    let second = vec![
        stamped(
            event("s2", 0, Some("c"), materialization(json!("c"), None)),
            30,
        ),
        // Appended late: older than what came before it, still after it in position.
        stamped(
            event("s2", 1, Some("b"), materialization(json!("late"), None)),
            5,
        ),
        stamped(observed("s2", 2, "d", "d1", true), 25),
        stamped(observed("s2", 3, "d", "d1", false), 26),
        stamped(
            check_evaluated("s2", 4, "a", "positive", true, CheckSeverity::Error),
            27,
        ),
    ];
    storage.append_events(&first).await.unwrap();
    storage.append_events(&second).await.unwrap();
    let record = |e: &Event| MaterializationRecord::of(e).unwrap();
    let all = final_materializations_after(storage, start, 6).await;
    assert_eq!(
        all.iter().map(|(_, m)| m.clone()).collect::<Vec<_>>(),
        [
            record(&first[0]),
            record(&first[1]),
            record(&first[2]),
            record(&second[0]),
            record(&second[1]),
            record(&second[2]),
        ],
        "in append order, a changed observation included, an unchanged one not, every field kept"
    );
    assert!(all[0].0 > start, "after the start");
    assert!(
        all.windows(2).all(|w| w[0].0 < w[1].0),
        "positions strictly increase: {all:?}"
    );
    assert_eq!(
        storage.materialization_position().await.unwrap(),
        all[5].0,
        "the newest position is the last one read"
    );
    for (i, (position, _)) in all.iter().enumerate() {
        assert_eq!(
            storage
                .materializations_after(*position, 100)
                .await
                .unwrap(),
            all[i + 1..],
            "after a position comes exactly the rest"
        );
    }
    for limit in 1..=7 {
        let mut after = start;
        let mut read = Vec::new();
        loop {
            let page = storage.materializations_after(after, limit).await.unwrap();
            assert!(page.len() <= limit, "at most `limit`");
            let Some(&(last, _)) = page.last() else {
                break;
            };
            after = last;
            read.extend(page);
        }
        assert_eq!(read, all, "pages of {limit} continue exactly");
    }
    assert!(storage
        .materializations_after(start, 0)
        .await
        .unwrap()
        .is_empty());

    // Pruning s1 keeps only its latest materialization of `a`; the rest keep their positions.
    storage
        .finish_run(&RunId::from("s1"), RunStatus::Succeeded, at(40), None)
        .await
        .unwrap();
    let report = storage
        .prune(
            Retention {
                max_age: Some(Duration::from_secs(86_400)),
                max_runs: None,
            },
            at(10 * 24 * 60),
        )
        .await
        .unwrap();
    assert_eq!(report.materializations, 2);
    let kept = all[2..].to_vec();
    assert_eq!(
        storage.materializations_after(start, 100).await.unwrap(),
        kept,
        "pruning keeps the positions of what remains"
    );
    assert_eq!(
        storage.materializations_after(all[0].0, 100).await.unwrap(),
        kept,
        "a pruned position still continues"
    );
    assert_eq!(storage.materialization_position().await.unwrap(), all[5].0);
    let later = event("s2", 5, Some("a"), materialization(json!("later"), None));
    storage
        .append_events(std::slice::from_ref(&later))
        .await
        .unwrap();
    let more = final_materializations_after(storage, all[5].0, 1).await;
    assert_eq!(more.len(), 1);
    assert_eq!(more[0].1, record(&later));
    assert!(more[0].0 > all[5].0, "positions keep growing after a prune");
    assert_eq!(storage.materialization_position().await.unwrap(), more[0].0);
}

/// Check evaluation events become check records, written with the event (a failed batch
/// leaves none), listed per asset newest first.
pub async fn check_records(storage: &dyn Storage) {
    storage.create_run(&run_record("c1", 0)).await.unwrap();
    storage.create_run(&run_record("c2", 10)).await.unwrap();
    assert!(storage
        .check_records(&"a".into(), 10)
        .await
        .unwrap()
        .is_empty());
    let first = vec![
        event("c1", 0, Some("a"), materialization(json!(1), None)),
        check_evaluated("c1", 1, "a", "not_empty", true, CheckSeverity::Error),
        check_evaluated("c1", 2, "a", "fresh", false, CheckSeverity::Warn),
        check_evaluated("c1", 3, "b", "not_empty", false, CheckSeverity::Error),
        // A check result with no asset is no check record.
        event(
            "c1",
            4,
            None,
            EventKind::CheckEvaluated {
                check: "orphan".into(),
                passed: true,
                severity: CheckSeverity::Warn,
                blocking: false,
                description: None,
                metadata: BTreeMap::new(),
            },
        ),
    ];
    storage.append_events(&first).await.unwrap();
    let second = vec![check_evaluated(
        "c2",
        10,
        "a",
        "not_empty",
        false,
        CheckSeverity::Error,
    )];
    storage.append_events(&second).await.unwrap();
    let record = |e: &Event| CheckRecord::of(e).unwrap();
    let of_a = vec![record(&second[0]), record(&first[2]), record(&first[1])];
    assert_eq!(
        storage.check_records(&"a".into(), 10).await.unwrap(),
        of_a,
        "newest first, every field kept"
    );
    assert_eq!(
        storage.check_records(&"a".into(), 2).await.unwrap(),
        of_a[..2],
        "at most `limit`, the newest"
    );
    assert!(storage
        .check_records(&"a".into(), 0)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        storage.check_records(&"b".into(), 10).await.unwrap(),
        [record(&first[3])],
        "records of one asset only"
    );
    assert!(storage
        .check_records(&"nope".into(), 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        storage.events(&RunId::from("c1"), None).await.unwrap(),
        first,
        "check evaluations come back as events"
    );

    let clash = storage
        .append_events(&[
            check_evaluated("c2", 11, "a", "late", true, CheckSeverity::Warn),
            check_evaluated("c2", 10, "a", "again", true, CheckSeverity::Warn),
        ])
        .await;
    assert!(clash.is_err(), "a batch with a seq the run has fails");
    assert_eq!(
        storage.check_records(&"a".into(), 10).await.unwrap(),
        of_a,
        "a failed batch leaves no check record behind"
    );
}

/// Automation evaluations are stored as given, listed newest first (ties: newest written
/// first), of one asset or of all, at most `limit`.
pub async fn automation_records(storage: &dyn Storage) {
    storage.record_automation(&[]).await.unwrap();
    assert!(storage
        .automation_records(None, 10)
        .await
        .unwrap()
        .is_empty());
    let first = vec![
        automation_record("a", 10, true),
        automation_record("b", 10, false),
        automation_record("a", 20, false),
    ];
    let second = vec![
        automation_record("a", 20, true),
        automation_record("b", 5, true),
    ];
    storage.record_automation(&first).await.unwrap();
    storage.record_automation(&second).await.unwrap();
    let all = vec![
        second[0].clone(),
        first[2].clone(),
        first[1].clone(),
        first[0].clone(),
        second[1].clone(),
    ];
    assert_eq!(
        storage.automation_records(None, 10).await.unwrap(),
        all,
        "newest first, ties newest written first, every field kept"
    );
    assert_eq!(
        storage.automation_records(None, 2).await.unwrap(),
        all[..2],
        "at most `limit`, the newest"
    );
    assert!(storage
        .automation_records(None, 0)
        .await
        .unwrap()
        .is_empty());
    let a = AssetKey::from("a");
    assert_eq!(
        storage.automation_records(Some(&a), 10).await.unwrap(),
        [second[0].clone(), first[2].clone(), first[0].clone()],
        "records of one asset only"
    );
    assert_eq!(
        storage.automation_records(Some(&a), 1).await.unwrap(),
        [second[0].clone()]
    );
    assert_eq!(
        storage
            .automation_records(Some(&"b".into()), 10)
            .await
            .unwrap(),
        [first[1].clone(), second[1].clone()]
    );
    assert!(storage
        .automation_records(Some(&"nope".into()), 10)
        .await
        .unwrap()
        .is_empty());
}

/// Pruning removes the check records of the runs it removes, and automation records older
/// than the age kept (as ticks); it keeps the rest.
pub async fn retention_of_checks_and_automation(storage: &dyn Storage) {
    let day = 24 * 60;
    for (id, start) in [("old", 0), ("stuck", 0), ("new", 9 * day)] {
        storage.create_run(&run_record(id, start)).await.unwrap();
    }
    for id in ["old", "new"] {
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
    let old = check_evaluated("old", 0, "a", "not_empty", false, CheckSeverity::Error);
    let stuck = check_evaluated("stuck", 1, "a", "not_empty", true, CheckSeverity::Error);
    let new = check_evaluated("new", 2, "a", "not_empty", true, CheckSeverity::Error);
    storage
        .append_events(&[old.clone(), stuck.clone(), new.clone()])
        .await
        .unwrap();
    let automation = vec![
        automation_record("a", day, true),
        automation_record("b", 3 * day, false),
        // Exactly at the cutoff: kept, as ticks are.
        AutomationRecord {
            evaluated_at: at(5 * day),
            ..automation_record("a", 5 * day, false)
        },
        automation_record("b", 6 * day, true),
        automation_record("a", 9 * day, true),
    ];
    storage.record_automation(&automation).await.unwrap();

    let report = storage
        .prune(
            Retention {
                max_age: Some(Duration::from_secs(5 * 86_400)),
                max_runs: None,
            },
            at(10 * day),
        )
        .await
        .unwrap();
    assert_eq!(
        report,
        PruneReport {
            runs: 1,
            events: 1,
            materializations: 0,
            ticks: 0,
        },
        "the old run goes; automation records are not ticks"
    );
    let record = |e: &Event| CheckRecord::of(e).unwrap();
    assert_eq!(
        storage.check_records(&"a".into(), 10).await.unwrap(),
        [record(&new), record(&stuck)],
        "the check records of a pruned run go with it"
    );
    let kept: Vec<AutomationRecord> = automation[2..].iter().rev().cloned().collect();
    assert_eq!(
        storage.automation_records(None, 10).await.unwrap(),
        kept,
        "automation records older than the age kept go"
    );

    let report = storage
        .prune(
            Retention {
                max_age: None,
                max_runs: Some(0),
            },
            at(10 * day),
        )
        .await
        .unwrap();
    assert_eq!(report.runs, 1);
    assert_eq!(
        storage.check_records(&"a".into(), 10).await.unwrap(),
        [record(&stuck)],
        "an active run's check records stay"
    );
    assert_eq!(
        storage.automation_records(None, 10).await.unwrap(),
        kept,
        "pruning by count keeps automation records"
    );
    assert_eq!(
        storage
            .prune(Retention::default(), at(100 * day))
            .await
            .unwrap(),
        PruneReport::default()
    );
    assert_eq!(storage.automation_records(None, 10).await.unwrap(), kept);
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
                        EventKind::StepStarted {
                            attempt: 1,
                            worker: None,
                        },
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

/// The partitions `[from, to)` minutes after `at(0)`, of discrete keys `dims` (`""` for
/// none), as a time-partitioned asset's step targets them.
pub fn minutes(dims: &str, from: i64, to: i64) -> PartitionRange {
    let second = |m: i64| at(m).timestamp();
    PartitionRange {
        key: format!("{dims}@{from}...{to}"),
        dims: dims.to_owned(),
        start: second(from),
        end: second(to),
    }
}

/// A materialization of `range` by event `seq` of run `id`, with `value` as its output.
pub fn partition_materialized(
    id: &str,
    seq: u64,
    asset: &str,
    range: &PartitionRange,
    value: serde_json::Value,
) -> Event {
    event(
        id,
        seq,
        Some(asset),
        EventKind::Materialization {
            metadata: BTreeMap::from([("rows".to_owned(), json!(seq))]),
            value,
            code_version: None,
            partition: Some(range.clone()),
        },
    )
}

/// A failure of the step materializing `range`, retried or for good.
pub fn partition_failed(
    id: &str,
    seq: u64,
    asset: &str,
    range: &PartitionRange,
    will_retry: bool,
) -> Event {
    event(
        id,
        seq,
        Some(asset),
        EventKind::StepFailed {
            attempt: 1,
            error: ErrorInfo {
                message: "the source timed out".into(),
                causes: vec![],
            },
            will_retry,
            partition: Some(range.clone()),
        },
    )
}

/// The set of the ranges `[from, to)` (in minutes) of discrete keys `dims`.
fn minute_set(dims: &str, ranges: &[(i64, i64)]) -> PartitionSet {
    ranges.iter().fold(PartitionSet::new(), |set, &(from, to)| {
        set.union(&minutes(dims, from, to).to_set())
    })
}

/// Appends `events` to `storage` and to `model`, the status every store must agree on
/// (as [`PartitionStatus::apply`] computes it).
async fn append_tracked(storage: &dyn Storage, model: &mut Vec<Event>, events: Vec<Event>) {
    storage
        .append_events(&events)
        .await
        .expect("append partition events");
    model.extend(events);
}

/// The partition status of `asset` that the events `log` leave, by the rules.
fn expected_status(log: &[Event], asset: &str) -> PartitionStatus {
    let mut status = PartitionStatus::default();
    for (key, range, outcome) in crate::partition::status::outcomes(log) {
        if key.as_str() == asset {
            status.apply(range, outcome);
        }
    }
    status
}

/// Partitioned materializations and final failures update the asset's partition status in
/// the same write, as ranges: adjacent and overlapping ranges merge into one stored range, a
/// success clears failures, a failure keeps the data, retried failures count for nothing,
/// discrete keys and assets are kept apart, a failed batch changes nothing, and pruning
/// never removes partition status.
pub async fn partition_status(storage: &dyn Storage) {
    let asset = AssetKey::from("minutely");
    assert_eq!(
        storage.partition_status(&asset).await.unwrap(),
        PartitionStatus::default(),
        "an asset never materialized has an empty status"
    );
    storage.create_run(&run_record("p1", 0)).await.unwrap();
    let mut log = Vec::new();
    let mut seq = 0..;
    let mut next = || seq.next().unwrap();
    let m = "minutely";
    append_tracked(
        storage,
        &mut log,
        vec![
            partition_materialized("p1", next(), m, &minutes("", 0, 10), json!(1)),
            partition_materialized("p1", next(), m, &minutes("", 20, 30), json!(2)),
        ],
    )
    .await;
    let status = storage.partition_status(&asset).await.unwrap();
    assert_eq!(status.materialized, minute_set("", &[(0, 10), (20, 30)]));
    assert_eq!(
        status.materialized.range_count(),
        2,
        "apart ranges stay apart"
    );
    assert!(status.failed.is_empty() && status.in_progress.is_empty());

    append_tracked(
        storage,
        &mut log,
        vec![partition_materialized(
            "p1",
            next(),
            m,
            &minutes("", 10, 20),
            json!(3),
        )],
    )
    .await;
    let status = storage.partition_status(&asset).await.unwrap();
    assert_eq!(
        status.materialized.range_count(),
        1,
        "the range filling a gap joins both neighbours into one stored range"
    );
    assert_eq!(status.materialized, minutes("", 0, 30).to_set());
    append_tracked(
        storage,
        &mut log,
        vec![
            partition_materialized("p1", next(), m, &minutes("", 25, 40), json!(4)),
            partition_materialized("p1", next(), m, &minutes("", 40, 45), json!(5)),
            // Materialized again: nothing changes.
            partition_materialized("p1", next(), m, &minutes("", 5, 6), json!(6)),
        ],
    )
    .await;
    let status = storage.partition_status(&asset).await.unwrap();
    assert_eq!(
        (status.materialized.range_count(), &status.materialized),
        (1, &minutes("", 0, 45).to_set()),
        "overlapping and adjacent ranges merge"
    );

    // Failures: a retried one is not an outcome; final ones join the failed ranges and keep
    // what was materialized.
    append_tracked(
        storage,
        &mut log,
        vec![partition_failed(
            "p1",
            next(),
            m,
            &minutes("", 50, 60),
            true,
        )],
    )
    .await;
    assert!(
        storage
            .partition_status(&asset)
            .await
            .unwrap()
            .failed
            .is_empty(),
        "a failure that will be retried changes no status"
    );
    append_tracked(
        storage,
        &mut log,
        vec![
            partition_failed("p1", next(), m, &minutes("", 50, 60), false),
            partition_failed("p1", next(), m, &minutes("", 60, 70), false),
            partition_failed("p1", next(), m, &minutes("", 5, 8), false),
        ],
    )
    .await;
    let status = storage.partition_status(&asset).await.unwrap();
    assert_eq!(status.failed, minute_set("", &[(5, 8), (50, 70)]));
    assert_eq!(status.failed.range_count(), 2, "adjacent failures merge");
    assert_eq!(
        status.materialized,
        minutes("", 0, 45).to_set(),
        "a failure keeps what was materialized"
    );

    // A success in the middle of a failed range cuts it in two.
    append_tracked(
        storage,
        &mut log,
        vec![partition_materialized(
            "p1",
            next(),
            m,
            &minutes("", 55, 65),
            json!(7),
        )],
    )
    .await;
    let status = storage.partition_status(&asset).await.unwrap();
    assert_eq!(status.failed, minute_set("", &[(5, 8), (50, 55), (65, 70)]));
    assert_eq!(status.failed.range_count(), 3);
    assert_eq!(status.materialized, minute_set("", &[(0, 45), (55, 65)]));
    // A success covering failed ranges clears them; order inside a batch counts.
    append_tracked(
        storage,
        &mut log,
        vec![
            partition_materialized("p1", next(), m, &minutes("", 0, 10), json!(8)),
            partition_materialized("p1", next(), m, &minutes("", 45, 75), json!(9)),
            partition_failed("p1", next(), m, &minutes("", 80, 90), false),
            partition_materialized("p1", next(), m, &minutes("", 80, 90), json!(10)),
            partition_materialized("p1", next(), m, &minutes("", 100, 110), json!(11)),
            partition_failed("p1", next(), m, &minutes("", 100, 110), false),
        ],
    )
    .await;
    let status = storage.partition_status(&asset).await.unwrap();
    assert_eq!(
        status.failed,
        minute_set("", &[(100, 110)]),
        "successes clear failures, a later failure stands"
    );
    assert_eq!(
        status.materialized,
        minute_set("", &[(0, 75), (80, 90), (100, 110)])
    );
    assert_eq!(status.materialized.range_count(), 3);
    // Joining the end of a range that is not the first one.
    append_tracked(
        storage,
        &mut log,
        vec![partition_materialized(
            "p1",
            next(),
            m,
            &minutes("", 90, 95),
            json!(11),
        )],
    )
    .await;
    let status = storage.partition_status(&asset).await.unwrap();
    assert_eq!(
        (status.materialized.range_count(), &status.materialized),
        (3, &minute_set("", &[(0, 75), (80, 95), (100, 110)])),
        "a range starting where a stored one ends extends it"
    );

    // Discrete keys, partitions without time, another asset, unpartitioned assets.
    let none = PartitionRange {
        key: "eu".into(),
        dims: "eu".into(),
        start: 0,
        end: 1,
    };
    append_tracked(
        storage,
        &mut log,
        vec![
            partition_materialized("p1", next(), m, &minutes("eu|x", 0, 10), json!(12)),
            partition_materialized("p1", next(), m, &minutes("us|x", 5, 15), json!(13)),
            partition_failed("p1", next(), m, &minutes("us|x", 20, 30), false),
            partition_materialized("p1", next(), "regions", &none, json!(14)),
            event(
                "p1",
                next(),
                Some("plain"),
                materialization(json!(15), None),
            ),
        ],
    )
    .await;
    let status = storage.partition_status(&asset).await.unwrap();
    assert_eq!(
        status.materialized.range_count(),
        5,
        "one range per discrete keys"
    );
    assert_eq!(
        status
            .materialized
            .parts()
            .map(|(k, _)| k)
            .collect::<Vec<_>>(),
        ["", "eu|x", "us|x"]
    );
    assert_eq!(
        status.failed,
        minute_set("", &[(100, 110)]).union(&minute_set("us|x", &[(20, 30)]))
    );
    let regions = storage.partition_status(&"regions".into()).await.unwrap();
    assert_eq!(
        regions.materialized,
        none.to_set(),
        "partitions without time are [0, 1)"
    );
    assert!(regions.failed.is_empty());
    assert_eq!(
        storage.partition_status(&"plain".into()).await.unwrap(),
        PartitionStatus::default(),
        "an unpartitioned materialization has no partition status"
    );

    // Every store agrees with the rules, asset by asset.
    for name in [m, "regions", "plain"] {
        assert_eq!(
            storage.partition_status(&name.into()).await.unwrap(),
            expected_status(&log, name),
            "the stored status of `{name}` is the one the rules give"
        );
    }

    // A failed batch leaves the status as it was.
    let before = storage.partition_status(&asset).await.unwrap();
    let clash = storage
        .append_events(&[
            partition_materialized("p1", 1_000, m, &minutes("", 200, 300), json!(0)),
            partition_materialized("p1", 0, m, &minutes("", 300, 400), json!(0)),
        ])
        .await;
    assert!(clash.is_err(), "a seq the run has fails the batch");
    let orphan = storage
        .append_events(&[
            partition_materialized("p1", 1_001, m, &minutes("", 200, 300), json!(0)),
            partition_failed("ghost", 0, m, &minutes("", 0, 10), false),
        ])
        .await;
    assert!(orphan.is_err(), "events of an unknown run fail the batch");
    assert_eq!(
        storage.partition_status(&asset).await.unwrap(),
        before,
        "a batch that fails changes no partition status"
    );

    // Pruning removes runs, events and materializations, never partition status.
    storage
        .finish_run(&RunId::from("p1"), RunStatus::Succeeded, at(1), None)
        .await
        .unwrap();
    let report = storage
        .prune(
            Retention {
                max_age: None,
                max_runs: Some(0),
            },
            at(10),
        )
        .await
        .unwrap();
    assert_eq!(report.runs, 1, "the run is pruned");
    assert_eq!(
        storage.partition_status(&asset).await.unwrap(),
        before,
        "pruning never removes partition status"
    );
    assert_eq!(
        storage.partition_status(&"regions".into()).await.unwrap(),
        regions
    );
}

/// `partition_materialization` finds the latest materialization covering a range (same
/// discrete keys, a span holding it), never one that covers only part of it; records keep
/// their partitions.
pub async fn partition_materializations(storage: &dyn Storage) {
    storage.create_run(&run_record("pm1", 0)).await.unwrap();
    storage.create_run(&run_record("pm2", 1)).await.unwrap();
    let a_key = AssetKey::from("a");
    let a = &a_key;
    assert_eq!(
        storage
            .partition_materialization(a, &minutes("", 0, 1))
            .await
            .unwrap(),
        None
    );
    let wide = minutes("", 0, 60);
    let narrow = minutes("", 30, 40);
    let eu = minutes("eu", 0, 60);
    storage
        .append_events(&[
            partition_materialized("pm1", 0, "a", &wide, json!("wide")),
            partition_materialized("pm1", 1, "a", &narrow, json!("narrow")),
            partition_materialized("pm1", 2, "a", &eu, json!("eu")),
            partition_materialized("pm1", 3, "b", &wide, json!("b")),
        ])
        .await
        .unwrap();
    // The latest materialization of `a` is unpartitioned: it covers no partition.
    storage
        .append_events(&[event(
            "pm2",
            0,
            Some("a"),
            materialization(json!("whole"), None),
        )])
        .await
        .unwrap();
    let value = |found: Option<super::MaterializationRecord>| found.map(|m| m.value);
    let find = |range: PartitionRange| async move {
        value(storage.partition_materialization(a, &range).await.unwrap())
    };
    assert_eq!(
        find(minutes("", 30, 40)).await,
        Some(json!("narrow")),
        "the latest covering materialization"
    );
    assert_eq!(find(minutes("", 32, 33)).await, Some(json!("narrow")));
    assert_eq!(
        find(minutes("", 10, 20)).await,
        Some(json!("wide")),
        "a later materialization that does not cover the range is passed over"
    );
    assert_eq!(
        find(minutes("", 35, 45)).await,
        Some(json!("wide")),
        "a materialization covering part of the range does not count"
    );
    assert_eq!(find(minutes("", 0, 60)).await, Some(json!("wide")));
    assert_eq!(
        find(minutes("", 50, 61)).await,
        None,
        "nothing covers past the end"
    );
    assert_eq!(find(minutes("", 60, 61)).await, None);
    assert_eq!(
        find(minutes("eu", 0, 10)).await,
        Some(json!("eu")),
        "by discrete keys"
    );
    assert_eq!(find(minutes("us", 0, 10)).await, None);
    assert_eq!(
        value(
            storage
                .partition_materialization(&"c".into(), &minutes("", 0, 10))
                .await
                .unwrap()
        ),
        None
    );
    let found = storage
        .partition_materialization(a, &minutes("", 31, 32))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (found.run_id.as_str(), found.seq, found.partition.as_ref()),
        ("pm1", 1, Some(&narrow)),
        "the record names its run, event and partitions"
    );
    assert_eq!(found.metadata["rows"], json!(1));

    // Newer materializations win; records keep their partitions.
    storage
        .append_events(&[partition_materialized(
            "pm2",
            1,
            "a",
            &minutes("", 0, 120),
            json!("newest"),
        )])
        .await
        .unwrap();
    assert_eq!(find(minutes("", 30, 40)).await, Some(json!("newest")));
    let history = storage.materializations(a, 10).await.unwrap();
    let partitions: Vec<Option<PartitionRange>> =
        history.into_iter().map(|m| m.partition).collect();
    assert_eq!(
        partitions,
        [
            Some(minutes("", 0, 120)),
            None,
            Some(eu.clone()),
            Some(narrow),
            Some(wide)
        ],
        "materializations come back with their partitions, newest first"
    );
    let latest = storage.latest_materialization(a).await.unwrap().unwrap();
    assert_eq!(latest.partition, Some(minutes("", 0, 120)));
}

/// A thousand stored ranges of one asset: each kept as one row, found, merged and cut by
/// the same rules as a few.
pub async fn many_partition_ranges(storage: &dyn Storage) {
    const N: i64 = 1_000;
    storage.create_run(&run_record("many", 0)).await.unwrap();
    let asset = AssetKey::from("minutely");
    // Every other minute, in an order that is not sorted.
    let mut log: Vec<Event> = (0..N)
        .map(|i| (i * 7919) % N)
        .enumerate()
        .map(|(seq, i)| {
            let range = minutes("", 2 * i, 2 * i + 1);
            partition_materialized("many", seq as u64, "minutely", &range, json!(i))
        })
        .collect();
    storage.append_events(&log).await.unwrap();
    let status = storage.partition_status(&asset).await.unwrap();
    assert_eq!(status.materialized.range_count(), N as usize);
    assert_eq!(status, expected_status(&log, "minutely"));
    assert_eq!(
        storage
            .partition_materialization(&asset, &minutes("", 1_000, 1_001))
            .await
            .unwrap()
            .map(|m| m.value),
        Some(json!(500))
    );
    // Failures on every gap but the last, then a success over most of them.
    let gaps: Vec<Event> = (0..N - 1)
        .map(|i| {
            let range = minutes("", 2 * i + 1, 2 * i + 2);
            partition_failed("many", (N + i) as u64, "minutely", &range, false)
        })
        .collect();
    storage.append_events(&gaps).await.unwrap();
    log.extend(gaps);
    let status = storage.partition_status(&asset).await.unwrap();
    assert_eq!(status.failed.range_count(), (N - 1) as usize);
    let over = partition_materialized(
        "many",
        2 * N as u64,
        "minutely",
        &minutes("", 1, 1_501),
        json!(0),
    );
    storage
        .append_events(std::slice::from_ref(&over))
        .await
        .unwrap();
    log.push(over);
    let status = storage.partition_status(&asset).await.unwrap();
    assert_eq!(status, expected_status(&log, "minutely"));
    assert_eq!(
        status
            .materialized
            .parts()
            .next()
            .map(|(_, r)| r.ranges()[0]),
        Some((minutes("", 0, 1501).start, minutes("", 0, 1501).end)),
        "the success joined 751 ranges into one"
    );
    assert_eq!(status.materialized.range_count(), 1 + (N as usize - 751));
    assert_eq!(status.failed.range_count(), (N - 1) as usize - 750);
}

/// Dynamic partition keys keep the order they were added in, are added once, and can be
/// deleted; definitions are kept apart.
pub async fn dynamic_partitions(storage: &dyn Storage) {
    let keys = |k: &[&str]| -> Vec<String> { k.iter().map(|&k| k.to_owned()).collect() };
    assert!(storage
        .dynamic_partitions("customers")
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        storage
            .add_dynamic_partitions("customers", &keys(&["zeta", "alpha", "mid"]))
            .await
            .unwrap(),
        keys(&["zeta", "alpha", "mid"]),
        "new keys are returned in the order given"
    );
    assert_eq!(
        storage.dynamic_partitions("customers").await.unwrap(),
        keys(&["zeta", "alpha", "mid"]),
        "keys come back in the order they were added, not sorted"
    );
    assert_eq!(
        storage
            .add_dynamic_partitions(
                "customers",
                &keys(&["alpha", "beta", "beta", "zeta", "gamma"])
            )
            .await
            .unwrap(),
        keys(&["beta", "gamma"]),
        "keys held already, and repeats, are not added again"
    );
    assert_eq!(
        storage.dynamic_partitions("customers").await.unwrap(),
        keys(&["zeta", "alpha", "mid", "beta", "gamma"])
    );
    assert!(storage
        .add_dynamic_partitions("customers", &[])
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        storage
            .add_dynamic_partitions("regions", &keys(&["mid", "eu"]))
            .await
            .unwrap(),
        keys(&["mid", "eu"]),
        "definitions are kept apart"
    );
    assert!(storage
        .delete_dynamic_partition("customers", "alpha")
        .await
        .unwrap());
    assert!(
        !storage
            .delete_dynamic_partition("customers", "alpha")
            .await
            .unwrap(),
        "a key is deleted once"
    );
    assert!(!storage
        .delete_dynamic_partition("nothing", "alpha")
        .await
        .unwrap());
    assert_eq!(
        storage.dynamic_partitions("customers").await.unwrap(),
        keys(&["zeta", "mid", "beta", "gamma"])
    );
    assert_eq!(
        storage
            .add_dynamic_partitions("customers", &keys(&["alpha"]))
            .await
            .unwrap(),
        keys(&["alpha"]),
        "a deleted key can be added again"
    );
    assert_eq!(
        storage.dynamic_partitions("customers").await.unwrap(),
        keys(&["zeta", "mid", "beta", "gamma", "alpha"]),
        "a key added again goes last"
    );
    assert_eq!(
        storage.dynamic_partitions("regions").await.unwrap(),
        keys(&["mid", "eu"])
    );
}

/// A backfill created at `at(minutes)`, in `status`.
pub fn backfill_record(id: &str, minutes_after: i64, status: BackfillStatus) -> BackfillRecord {
    let target = minute_set("", &[(0, 600)]).union(&minute_set("eu", &[(0, 60), (120, 180)]));
    BackfillRecord {
        id: id.into(),
        status,
        selection: "daily_sales+".into(),
        target,
        policy: BackfillPolicy::MaxPartitionsPerRun(30),
        config: RunConfig::new().asset("daily_sales", json!({"source": "s3://x'\"y"})),
        tags: BTreeMap::from([("team".to_owned(), "data".to_owned())]),
        launched: PartitionSet::new(),
        succeeded: PartitionSet::new(),
        failed: PartitionSet::new(),
        in_flight: vec![],
        max_in_flight: 4,
        created_at: at(minutes_after),
        updated_at: at(minutes_after),
        reason: None,
        version: 0,
    }
}

/// Backfills are stored whole, listed newest first (by status when asked), and updated by
/// compare-and-set: an update carrying a stale version is refused and changes nothing.
pub async fn backfills(storage: &dyn Storage) {
    let ids =
        |found: Vec<BackfillRecord>| -> Vec<String> { found.into_iter().map(|b| b.id).collect() };
    assert!(storage.backfills(None, 10).await.unwrap().is_empty());
    assert_eq!(storage.backfill("b1").await.unwrap(), None);
    let b1 = backfill_record("b1", 0, BackfillStatus::Requested);
    let b2 = backfill_record("b2", 5, BackfillStatus::Completed);
    let b3 = backfill_record("b3", 5, BackfillStatus::Requested);
    for b in [&b1, &b2, &b3] {
        storage.create_backfill(b).await.expect("create_backfill");
    }
    assert!(
        storage.create_backfill(&b1).await.is_err(),
        "a second backfill with the same id is rejected"
    );
    assert_eq!(
        storage.backfill("b1").await.unwrap().as_ref(),
        Some(&b1),
        "a backfill comes back as it was stored"
    );
    assert_eq!(
        ids(storage.backfills(None, 10).await.unwrap()),
        ["b3", "b2", "b1"],
        "newest first, then by id, descending"
    );
    assert_eq!(ids(storage.backfills(None, 2).await.unwrap()), ["b3", "b2"]);
    let requested = [BackfillStatus::Requested];
    assert_eq!(
        ids(storage.backfills(Some(&requested), 10).await.unwrap()),
        ["b3", "b1"],
        "filtered by status"
    );
    assert!(storage
        .backfills(Some(&[BackfillStatus::Failed]), 10)
        .await
        .unwrap()
        .is_empty());
    assert!(storage.backfills(Some(&[]), 10).await.unwrap().is_empty());
    let done = [BackfillStatus::Completed, BackfillStatus::Requested];
    assert_eq!(
        ids(storage.backfills(Some(&done), 10).await.unwrap()).len(),
        3
    );

    // Compare-and-set on the version.
    let mut step = storage.backfill("b1").await.unwrap().unwrap();
    let chunk = minutes("", 0, 30);
    step.launched = chunk.to_set();
    step.in_flight = vec![BackfillRun {
        run_id: RunId::from("bf-run-1"),
        range: chunk.clone(),
    }];
    step.updated_at = at(1);
    assert!(
        storage.update_backfill(&step).await.unwrap(),
        "the current version is stored"
    );
    let stored = storage.backfill("b1").await.unwrap().unwrap();
    let mut expected = step.clone();
    expected.version = 1;
    assert_eq!(
        stored, expected,
        "the stored backfill is the update, at the next version"
    );
    let mut stale = step.clone();
    stale.status = BackfillStatus::Cancelled;
    stale.reason = Some("stale writer".into());
    assert!(
        !storage.update_backfill(&stale).await.unwrap(),
        "an update with a stale version is refused"
    );
    assert_eq!(
        storage.backfill("b1").await.unwrap().unwrap(),
        expected,
        "a refused update changes nothing"
    );

    // Two writers of the same version: exactly one wins.
    let mut cancel = stored.clone();
    cancel.status = BackfillStatus::Canceling;
    cancel.reason = Some("asked by ops".into());
    let mut finish = stored.clone();
    finish.status = BackfillStatus::Failed;
    finish.failed = chunk.to_set();
    finish.in_flight.clear();
    let (a, b) = tokio::join!(
        storage.update_backfill(&cancel),
        storage.update_backfill(&finish)
    );
    assert!(
        a.unwrap() ^ b.unwrap(),
        "of two updates of one version, exactly one is stored"
    );
    let winner = storage.backfill("b1").await.unwrap().unwrap();
    assert_eq!(winner.version, 2);
    assert!(
        [BackfillStatus::Canceling, BackfillStatus::Failed].contains(&winner.status),
        "the winner is stored whole: {winner:?}"
    );
    let mut last = winner.clone();
    last.status = BackfillStatus::Completed;
    last.succeeded = last.target.clone();
    last.in_flight.clear();
    assert!(storage.update_backfill(&last).await.unwrap());
    assert_eq!(storage.backfill("b1").await.unwrap().unwrap().version, 3);
    assert_eq!(
        ids(storage.backfills(Some(&requested), 10).await.unwrap()),
        ["b3"],
        "the status filter follows updates"
    );
    let ghost = backfill_record("ghost", 0, BackfillStatus::Requested);
    assert!(
        storage.update_backfill(&ghost).await.is_err(),
        "updating an unknown backfill fails"
    );
    assert_eq!(storage.backfill("ghost").await.unwrap(), None);
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
            0 => EventKind::StepStarted {
                attempt: 1,
                worker: None,
            },
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
