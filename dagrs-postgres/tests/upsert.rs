//! Bulk writes against a real server: upserts, chunking, rollback, direct COPY.

mod common;

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use common::TestDb;
use dagrs_postgres::readings_table_sql;
use dagrs_postgres::tokio_postgres::Client;
use dagrs_postgres::{
    upsert, CopyRow, Error, QualifiedName, RowWriter, Upsert, UpsertStats, WriteMode, WritePath,
};
use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq)]
struct Reading {
    ts: DateTime<Utc>,
    tag_name: String,
    value: f64,
    qc: Option<i32>,
    meta: Value,
}

impl CopyRow for Reading {
    const COLUMNS: &'static [&'static str] = &["ts", "tag_name", "value", "qc", "meta"];

    fn write_row(&self, row: &mut RowWriter<'_>) {
        row.push(self.ts)
            .push(&self.tag_name)
            .push(self.value)
            .push(self.qc)
            .push(&self.meta);
    }
}

/// Reading number `i`, with `version` folded into its value.
fn reading(i: i64, version: u32) -> Reading {
    Reading {
        ts: Utc.with_ymd_and_hms(2024, 5, 1, 0, 0, 0).unwrap() + Duration::seconds(i / 9),
        tag_name: format!("D{}", 100 + i % 9),
        value: i as f64 * 0.5 + f64::from(version) * 1000.0,
        qc: (i % 7 != 0).then_some(1),
        meta: json!({ "source": "simulated", "i": i }),
    }
}

fn readings(range: std::ops::Range<i64>, version: u32) -> Vec<Reading> {
    range.map(|i| reading(i, version)).collect()
}

type Key = (DateTime<Utc>, String);

/// The table's rows by key, with `updated_at`.
async fn contents(client: &Client) -> BTreeMap<Key, (Reading, DateTime<Utc>)> {
    client
        .query(
            "SELECT ts, tag_name, value, qc, meta, updated_at FROM influx_hist",
            &[],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|row| {
            let reading = Reading {
                ts: row.get(0),
                tag_name: row.get(1),
                value: row.get(2),
                qc: row.get(3),
                meta: row.get(4),
            };
            (
                (reading.ts, reading.tag_name.clone()),
                (reading, row.get(5)),
            )
        })
        .collect()
}

/// What the table should hold: the last reading per key.
fn expected(batches: &[&[Reading]]) -> BTreeMap<Key, Reading> {
    batches
        .iter()
        .flat_map(|batch| batch.iter())
        .map(|r| ((r.ts, r.tag_name.clone()), r.clone()))
        .collect()
}

fn without_updated_at(rows: BTreeMap<Key, (Reading, DateTime<Utc>)>) -> BTreeMap<Key, Reading> {
    rows.into_iter()
        .map(|(key, (reading, _))| (key, reading))
        .collect()
}

fn table() -> QualifiedName {
    QualifiedName::parse("influx_hist").unwrap()
}

fn stats(
    inserted: u64,
    updated: u64,
    unchanged: u64,
    path: WritePath,
) -> (u64, u64, u64, WritePath) {
    (inserted, updated, unchanged, path)
}

fn tuple(s: UpsertStats) -> (u64, u64, u64, WritePath) {
    (s.inserted, s.updated, s.unchanged, s.path)
}

async fn setup() -> (TestDb, deadpool_postgres::Client) {
    let db = TestDb::create().await;
    let client = db.client().await;
    client
        .batch_execute(&readings_table_sql(&table()))
        .await
        .unwrap();
    (db, client)
}

#[tokio::test]
async fn upsert_inserts_updates_and_counts() {
    let (_db, mut client) = setup().await;
    let first = readings(0..1000, 1);
    let s = upsert(&mut client, &table(), &["ts", "tag_name"], &first)
        .await
        .unwrap();
    assert_eq!(tuple(s), stats(1000, 0, 0, WritePath::Staged));
    let before = contents(&client).await;
    assert_eq!(without_updated_at(before.clone()), expected(&[&first]));

    // 500..800 change, 800..1000 are resent unchanged, 1000..1200 are new.
    let mut second = readings(500..800, 2);
    second.extend(readings(800..1200, 1));
    let s = upsert(&mut client, &table(), &["ts", "tag_name"], &second)
        .await
        .unwrap();
    assert_eq!(tuple(s), stats(200, 300, 200, WritePath::Staged));
    assert_eq!(s.rows(), 700);
    let after = contents(&client).await;
    assert_eq!(
        without_updated_at(after.clone()),
        expected(&[&first, &second])
    );
    for (key, (_, updated_at)) in &before {
        let now = after[key].1;
        let changed = second[..300]
            .iter()
            .any(|r| (r.ts, &r.tag_name) == (key.0, &key.1));
        assert_eq!(now > *updated_at, changed, "updated_at of {key:?}");
    }
}

#[tokio::test]
async fn rerunning_the_same_rows_changes_nothing() {
    let (_db, mut client) = setup().await;
    let rows = readings(0..2000, 1);
    let writer = Upsert::new(table(), &["ts", "tag_name"]).unwrap();
    assert_eq!(
        tuple(writer.execute(&mut client, &rows).await.unwrap()),
        stats(2000, 0, 0, WritePath::Staged)
    );
    let before = contents(&client).await;
    let xmins: i64 = client
        .query_one(
            "SELECT sum(xmin::text::bigint)::bigint FROM influx_hist",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        tuple(writer.execute(&mut client, &rows).await.unwrap()),
        stats(0, 0, 2000, WritePath::Staged)
    );
    assert_eq!(contents(&client).await, before);
    let xmins_after: i64 = client
        .query_one(
            "SELECT sum(xmin::text::bigint)::bigint FROM influx_hist",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(xmins, xmins_after, "no row was rewritten");
}

#[tokio::test]
async fn batches_span_chunks_and_the_last_duplicate_wins() {
    let (_db, mut client) = setup().await;
    let existing = readings(0..500, 1);
    upsert(&mut client, &table(), &["ts", "tag_name"], &existing)
        .await
        .unwrap();
    // 3,500 rows in chunks of 1,000: keys 0..3000 once (250..500 changed),
    // then keys 2500..3000 again with new values, across a chunk boundary
    // and inside the last chunk.
    let mut batch = readings(250..3000, 2);
    batch.extend(readings(2500..2750, 3));
    batch.extend(readings(2600..2700, 4));
    let s = Upsert::new(table(), &["ts", "tag_name"])
        .unwrap()
        .chunk_size(1000)
        .execute(&mut client, &batch)
        .await
        .unwrap();
    assert_eq!(batch.len(), 3100);
    // Chunk 4 (rows 3000..3100) re-updates keys first written by chunk 3.
    assert_eq!(s.inserted, 2500);
    assert_eq!(s.rows(), 3100);
    assert_eq!(
        without_updated_at(contents(&client).await),
        expected(&[&existing, &batch])
    );
}

#[tokio::test]
async fn a_failure_in_the_last_chunk_leaves_the_table_as_it_was() {
    let (_db, mut client) = setup().await;
    client
        .batch_execute("ALTER TABLE influx_hist ADD CONSTRAINT qc_not_negative CHECK (qc >= 0)")
        .await
        .unwrap();
    upsert(
        &mut client,
        &table(),
        &["ts", "tag_name"],
        &readings(0..300, 1),
    )
    .await
    .unwrap();
    let before = contents(&client).await;

    let mut batch = readings(100..2600, 2);
    batch[2450].qc = Some(-1);
    let writer = Upsert::new(table(), &["ts", "tag_name"])
        .unwrap()
        .chunk_size(1000);
    let err = writer.execute(&mut client, &batch).await.unwrap_err();
    assert!(matches!(err, Error::Query { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.starts_with("upserting rows 2000..2500 into \"influx_hist\" failed: new row for relation \"influx_hist\" violates check constraint \"qc_not_negative\""),
        "{message}"
    );
    assert_eq!(contents(&client).await, before);

    // A value the column cannot take fails while encoding, naming column and row.
    struct BadQc(i64);
    impl CopyRow for BadQc {
        const COLUMNS: &'static [&'static str] = &["ts", "tag_name", "qc"];
        fn write_row(&self, row: &mut RowWriter<'_>) {
            row.push(Utc::now())
                .push(format!("T{}", self.0))
                .push(self.0);
        }
    }
    let err = writer
        .execute(&mut client, (0..1500).map(BadQc))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Encode { column, row: 0, .. } if column == "qc"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "cannot encode column \"qc\" of row 0 for \"influx_hist\": cannot convert between the \
         Rust type `i64` and the Postgres type `int4`; make the Rust value's type match the \
         column's PostgreSQL type"
    );
    assert_eq!(contents(&client).await, before);
    // The connection is still usable after the aborted COPY.
    assert_eq!(
        tuple(
            writer
                .execute(&mut client, &readings(0..10, 1))
                .await
                .unwrap()
        ),
        stats(0, 0, 10, WritePath::Staged)
    );
}

#[tokio::test]
async fn direct_mode_copies_straight_into_the_table() {
    let (_db, mut client) = setup().await;
    let rows = readings(0..5000, 1);
    let direct = Upsert::new(table(), &["ts", "tag_name"])
        .unwrap()
        .mode(WriteMode::Direct);
    assert_eq!(
        tuple(direct.execute(&mut client, &rows).await.unwrap()),
        stats(5000, 0, 0, WritePath::Direct)
    );
    let before = contents(&client).await;
    assert_eq!(without_updated_at(before.clone()), expected(&[&rows]));

    // One taken key fails the whole COPY.
    let err = direct
        .execute(&mut client, &readings(4990..6000, 2))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    assert!(
        err.to_string().starts_with("direct COPY into \"influx_hist\" met a key that already exists: duplicate key value violates unique constraint \"influx_hist_pkey\""),
        "{err}"
    );
    assert_eq!(contents(&client).await, before);
}

#[tokio::test]
async fn auto_mode_copies_directly_only_into_an_empty_table() {
    let (_db, mut client) = setup().await;
    let auto = Upsert::new(table(), &["ts", "tag_name"])
        .unwrap()
        .mode(WriteMode::Auto);

    let mut duplicated = readings(0..100, 1);
    duplicated.push(reading(5, 2));
    let err = auto.execute(&mut client, &duplicated).await.unwrap_err();
    assert!(matches!(err, Error::DuplicateKey { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "the rows written to \"influx_hist\" contain the same key (ts, tag_name) more than once; \
         nothing was written; keep one row per key before writing"
    );
    assert!(contents(&client).await.is_empty());

    let first = readings(0..1000, 1);
    assert_eq!(
        tuple(auto.execute(&mut client, &first).await.unwrap()),
        stats(1000, 0, 0, WritePath::Direct)
    );
    let second = readings(900..1100, 2);
    assert_eq!(
        tuple(auto.execute(&mut client, &second).await.unwrap()),
        stats(100, 100, 0, WritePath::Staged)
    );
    assert_eq!(
        without_updated_at(contents(&client).await),
        expected(&[&first, &second])
    );
}

#[tokio::test]
async fn execute_in_commits_or_rolls_back_with_the_callers_transaction() {
    let (_db, mut client) = setup().await;
    client
        .batch_execute("CREATE TABLE runs (id int)")
        .await
        .unwrap();
    let writer = Upsert::new(table(), &["ts", "tag_name"])
        .unwrap()
        .mode(WriteMode::Auto);
    let rows = readings(0..50, 1);

    let tx = client.transaction().await.unwrap();
    tx.batch_execute("INSERT INTO runs VALUES (1)")
        .await
        .unwrap();
    writer.execute_in(&tx, &rows).await.unwrap();
    tx.rollback().await.unwrap();
    assert!(contents(&client).await.is_empty());

    let tx = client.transaction().await.unwrap();
    tx.batch_execute("INSERT INTO runs VALUES (2)")
        .await
        .unwrap();
    writer.execute_in(&tx, &rows).await.unwrap();
    // Two calls in one transaction use two staging tables.
    let s = writer.execute_in(&tx, &readings(25..75, 2)).await.unwrap();
    assert_eq!(tuple(s), stats(25, 25, 0, WritePath::Staged));
    tx.commit().await.unwrap();
    assert_eq!(contents(&client).await.len(), 75);
    let runs: i64 = client
        .query_one("SELECT count(*) FROM runs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(runs, 1);
}

#[tokio::test]
async fn bad_columns_keys_and_settings_are_reported_before_writing() {
    let (_db, mut client) = setup().await;
    let rows = readings(0..10, 1);

    let err = upsert(&mut client, &table(), &["ts", "tag"], &rows)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "key column \"tag\" is not one of the columns [\"ts\", \"tag_name\", \"value\", \"qc\", \
         \"meta\"] written into \"influx_hist\"; add it to CopyRow::COLUMNS or fix the key list"
    );

    let missing = QualifiedName::parse("no_such_table").unwrap();
    let err = upsert(&mut client, &missing, &["ts", "tag_name"], &rows)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "reading the column types of \"no_such_table\" failed: relation \"no_such_table\" does not exist"
    );

    let err = Upsert::new(table(), &["ts", "tag_name"])
        .unwrap()
        .chunk_size(0)
        .execute(&mut client, &rows)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid setting `chunk_size` = 0: a chunk must hold at least 1 row"
    );

    let err = Upsert::new(table(), &[]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidSetting {
                setting: "key_columns",
                ..
            }
        ),
        "{err:?}"
    );

    struct Short;
    impl CopyRow for Short {
        const COLUMNS: &'static [&'static str] = &["ts", "tag_name", "value"];
        fn write_row(&self, row: &mut RowWriter<'_>) {
            row.push(Utc::now()).push("x");
        }
    }
    let err = upsert(&mut client, &table(), &["ts", "tag_name"], [Short])
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "row 0 for \"influx_hist\" has 2 values but the row type declares 3 columns; \
         CopyRow::write_row must push exactly one value per name in CopyRow::COLUMNS"
    );

    struct BadName;
    impl CopyRow for BadName {
        const COLUMNS: &'static [&'static str] = &["ts", ""];
        fn write_row(&self, _: &mut RowWriter<'_>) {}
    }
    let err = upsert(&mut client, &table(), &["ts"], [BadName])
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid SQL identifier \"\": must not be empty"
    );

    assert!(contents(&client).await.is_empty());
}

#[tokio::test]
async fn rows_with_only_key_columns_are_inserted_once() {
    let (_db, mut client) = setup().await;
    struct Key(i64);
    impl CopyRow for Key {
        const COLUMNS: &'static [&'static str] = &["ts", "tag_name"];
        fn write_row(&self, row: &mut RowWriter<'_>) {
            let r = reading(self.0, 0);
            row.push(r.ts).push(&r.tag_name);
        }
    }
    let s = upsert(
        &mut client,
        &table(),
        &["ts", "tag_name"],
        (0..100).map(Key),
    )
    .await
    .unwrap();
    assert_eq!(tuple(s), stats(100, 0, 0, WritePath::Staged));
    let s = upsert(
        &mut client,
        &table(),
        &["ts", "tag_name"],
        (50..150).map(Key),
    )
    .await
    .unwrap();
    assert_eq!(tuple(s), stats(50, 0, 50, WritePath::Staged));
}

/// The instant of [`reading`] number `i`: 9 readings a second.
fn at(i: i64) -> DateTime<Utc> {
    reading(i, 0).ts
}

/// The table's `xmin` per key: which rows a write touched.
async fn xmins(client: &Client) -> BTreeMap<Key, String> {
    client
        .query("SELECT ts, tag_name, xmin::text FROM influx_hist", &[])
        .await
        .unwrap()
        .into_iter()
        .map(|row| ((row.get(0), row.get(1)), row.get(2)))
        .collect()
}

#[tokio::test]
async fn replace_window_replaces_exactly_the_window() {
    let (_db, mut client) = setup().await;
    let stored = readings(0..3000, 1);
    upsert(&mut client, &table(), &["ts", "tag_name"], &stored)
        .await
        .unwrap();
    let before = xmins(&client).await;

    // The window holds readings 900..1800; the input has new values for 900..1500 only,
    // so 1500..1800 go, and everything before 900 and from 1800 on stays as it was.
    let input = readings(900..1500, 2);
    let s = Upsert::new(table(), &["ts", "tag_name"])
        .unwrap()
        .replace_window("ts", at(900), at(1800))
        .unwrap()
        .execute(&mut client, &input)
        .await
        .unwrap();
    assert_eq!(tuple(s), stats(600, 0, 0, WritePath::ReplaceWindow));
    assert_eq!((s.deleted, s.rows()), (900, 600));

    let kept_before = readings(0..900, 1);
    let kept_after = readings(1800..3000, 1);
    assert_eq!(
        without_updated_at(contents(&client).await),
        expected(&[&kept_before, &input, &kept_after])
    );
    let after = xmins(&client).await;
    for r in kept_before.iter().chain(&kept_after) {
        let key = (r.ts, r.tag_name.clone());
        assert_eq!(after[&key], before[&key], "{key:?} was rewritten");
    }

    // Replacing a window with the same rows again deletes and copies them again.
    let s = Upsert::new(table(), &["ts", "tag_name"])
        .unwrap()
        .replace_window("ts", at(900), at(1800))
        .unwrap()
        .execute(&mut client, &input)
        .await
        .unwrap();
    assert_eq!((s.deleted, s.inserted), (600, 600));
    assert_eq!(contents(&client).await.len(), 900 + 600 + 1200);
}

#[tokio::test]
async fn a_row_outside_the_window_fails_and_leaves_the_table_unchanged() {
    let (_db, mut client) = setup().await;
    upsert(
        &mut client,
        &table(),
        &["ts", "tag_name"],
        &readings(0..2000, 1),
    )
    .await
    .unwrap();
    let before = contents(&client).await;
    let writer = Upsert::new(table(), &["ts", "tag_name"])
        .unwrap()
        .replace_window("ts", at(900), at(1800))
        .unwrap();

    // The window's end is exclusive: readings 1800..1809 fall at its end.
    for input in [readings(900..1801, 2), readings(899..1800, 2)] {
        let err = writer.execute(&mut client, &input).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::OutsideWindow {
                    outside: 1,
                    rows: 901,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(contents(&client).await, before);
    }
    let err = writer
        .execute(&mut client, &readings(0..1000, 2))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "900 of the 1000 rows written to \"influx_hist\" have \"ts\" outside the window being \
         replaced (2024-05-01 00:01:40 UTC <= \"ts\" < 2024-05-01 00:03:20 UTC), or NULL; \
         nothing was written; pass only rows inside the window, or widen the window"
    );
    assert_eq!(contents(&client).await, before);

    // In a caller's transaction, the failed call leaves the transaction as it was: usable,
    // with the caller's own writes.
    client
        .batch_execute("CREATE TABLE runs (id int)")
        .await
        .unwrap();
    let tx = client.transaction().await.unwrap();
    tx.batch_execute("INSERT INTO runs VALUES (1)")
        .await
        .unwrap();
    let err = writer
        .execute_in(&tx, &readings(900..1801, 2))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::OutsideWindow { .. }), "{err:?}");
    tx.commit().await.unwrap();
    assert_eq!(contents(&client).await, before);
    let runs: i64 = client
        .query_one("SELECT count(*) FROM runs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(runs, 1);
}

#[tokio::test]
async fn replace_window_commits_or_rolls_back_with_the_callers_transaction() {
    let (_db, mut client) = setup().await;
    let stored = readings(0..1000, 1);
    upsert(&mut client, &table(), &["ts", "tag_name"], &stored)
        .await
        .unwrap();
    let before = contents(&client).await;
    let writer = Upsert::new(table(), &["ts", "tag_name"])
        .unwrap()
        .replace_window("ts", at(0), at(450))
        .unwrap();
    let input = readings(0..450, 2);

    let tx = client.transaction().await.unwrap();
    let s = writer.execute_in(&tx, &input).await.unwrap();
    assert_eq!((s.deleted, s.inserted), (450, 450));
    tx.rollback().await.unwrap();
    assert_eq!(contents(&client).await, before);

    let tx = client.transaction().await.unwrap();
    writer.execute_in(&tx, &input).await.unwrap();
    // A second window in the same transaction.
    let later = Upsert::new(table(), &["ts", "tag_name"])
        .unwrap()
        .replace_window("ts", at(900), at(1800))
        .unwrap();
    let s = later
        .execute_in(&tx, &readings(900..1800, 3))
        .await
        .unwrap();
    assert_eq!((s.deleted, s.inserted), (100, 900));
    tx.commit().await.unwrap();
    assert_eq!(
        without_updated_at(contents(&client).await),
        expected(&[&stored, &input, &readings(900..1800, 3)])
    );
}

#[tokio::test]
async fn concurrent_readers_see_the_old_window_or_the_new_never_half() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let (db, mut client) = setup().await;
    // Readings 0..9000 are the window; each version replaces it with a different number
    // of rows, so a reader can tell the versions (and any mix of them) apart.
    let versions: Vec<Vec<Reading>> = (1..=4)
        .map(|v| readings(0..9000 - 1000 * i64::from(v), v))
        .collect();
    let state = |rows: &[Reading]| (rows.len() as i64, rows.iter().map(|r| r.value).sum::<f64>());
    let states: Vec<(i64, f64)> = versions.iter().map(|rows| state(rows)).collect();
    upsert(&mut client, &table(), &["ts", "tag_name"], &versions[0])
        .await
        .unwrap();

    let reader = db.client().await;
    let done = Arc::new(AtomicBool::new(false));
    let reading = {
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while !done.load(Ordering::Relaxed) {
                let row = reader
                    .query_one(
                        "SELECT count(*), coalesce(sum(value), 0) FROM influx_hist \
                         WHERE ts >= $1 AND ts < $2",
                        &[&at(0), &at(9000)],
                    )
                    .await
                    .unwrap();
                seen.push((row.get::<_, i64>(0), row.get::<_, f64>(1)));
            }
            seen
        })
    };
    for round in 0..12 {
        let rows = &versions[round % versions.len()];
        Upsert::new(table(), &["ts", "tag_name"])
            .unwrap()
            .replace_window("ts", at(0), at(9000))
            .unwrap()
            .execute(&mut client, rows)
            .await
            .unwrap();
        tokio::task::yield_now().await;
    }
    done.store(true, Ordering::Relaxed);
    let seen = reading.await.unwrap();
    assert!(!seen.is_empty());
    for (count, sum) in seen {
        assert!(
            states
                .iter()
                .any(|&(c, s)| c == count && (s - sum).abs() < 1e-6 * s.abs().max(1.0)),
            "a reader saw {count} rows summing to {sum}: no version of the window"
        );
    }
}

#[tokio::test]
async fn bad_windows_are_reported_before_writing() {
    let (_db, mut client) = setup().await;
    let writer = Upsert::new(table(), &["ts", "tag_name"]).unwrap();
    let err = writer
        .clone()
        .replace_window("ts", at(900), at(900))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid setting `replace_window` = 2024-05-01 00:01:40 UTC to 2024-05-01 00:01:40 UTC: \
         the window must end after it starts (start inclusive, end exclusive)"
    );
    assert!(matches!(
        writer.clone().replace_window("", at(0), at(9)),
        Err(Error::InvalidIdent { .. })
    ));

    let err = writer
        .clone()
        .replace_window("updated_at", at(0), at(900))
        .unwrap()
        .execute(&mut client, &readings(0..10, 1))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid setting `replace_window` = \"updated_at\": the window's column must be one of \
         CopyRow::COLUMNS, so that every row says where it falls"
    );

    // A later `mode` drops the window: this is a plain upsert again.
    let s = writer
        .replace_window("ts", at(0), at(9))
        .unwrap()
        .mode(WriteMode::Upsert)
        .execute(&mut client, &readings(0..100, 1))
        .await
        .unwrap();
    assert_eq!(tuple(s), stats(100, 0, 0, WritePath::Staged));
}

#[tokio::test]
async fn chunks_of_changed_and_unchanged_rows_are_counted_and_merged() {
    let (_db, mut client) = setup().await;
    let stored = readings(0..1000, 1);
    upsert(&mut client, &table(), &["ts", "tag_name"], &stored)
        .await
        .unwrap();
    let before = xmins(&client).await;
    // Chunks of 100: three of changed rows, then seven unchanged, then one changed.
    let mut input = readings(0..300, 2);
    input.extend(readings(300..1000, 1));
    input.extend(readings(0..100, 3));
    let s = Upsert::new(table(), &["ts", "tag_name"])
        .unwrap()
        .chunk_size(100)
        .execute(&mut client, &input)
        .await
        .unwrap();
    assert_eq!(tuple(s), stats(0, 400, 700, WritePath::Staged));
    assert_eq!(
        without_updated_at(contents(&client).await),
        expected(&[&stored, &input])
    );
    let after = xmins(&client).await;
    for r in &input[300..1000] {
        let key = (r.ts, r.tag_name.clone());
        assert_eq!(after[&key], before[&key], "{key:?} was rewritten");
    }
}
