//! Bucketed aggregates on plain PostgreSQL (TimescaleDB is not installed on
//! the test server), checked against aggregates computed here in Rust.

mod common;

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use common::TestDb;
use dagrs_postgres::readings_table_sql;
use dagrs_postgres::tokio_postgres::Client;
use dagrs_postgres::{
    create_hypertable, enable_timescaledb, list_aggregates, refresh_aggregate,
    timescaledb_available, upsert, AggregateInfo, AggregateKind, BucketAggregate, CopyRow, Error,
    Ident, PgInterval, QualifiedName, RowWriter, TableKind,
};

const BUCKETS: [&str; 3] = ["1 minute", "5 minutes", "1 hour"];

struct Reading {
    ts: DateTime<Utc>,
    tag_name: String,
    value: f64,
}

impl CopyRow for Reading {
    const COLUMNS: &'static [&'static str] = &["ts", "tag_name", "value"];

    fn write_row(&self, row: &mut RowWriter<'_>) {
        row.push(self.ts).push(&self.tag_name).push(self.value);
    }
}

/// Readings every 7.3 seconds over about 3 hours for three tags, starting
/// off any bucket boundary; values scattered by a fixed formula.
fn readings(range: std::ops::Range<i64>) -> Vec<Reading> {
    let start = Utc.with_ymd_and_hms(2024, 5, 1, 9, 58, 31).unwrap();
    range
        .map(|i| Reading {
            ts: start + Duration::milliseconds(i * 7_300),
            tag_name: format!("D{}", 100 + i % 3),
            value: ((i * 7919) % 1000) as f64 / 10.0 - 20.0,
        })
        .collect()
}

#[derive(Debug, Default, PartialEq)]
struct Stats {
    sum: f64,
    min: f64,
    max: f64,
    count: i64,
}

type Bucketed = BTreeMap<(DateTime<Utc>, String), Stats>;

/// avg/min/max/count per bucket and tag, buckets aligned to 2000-01-03 UTC.
fn aggregate_in_rust(rows: &[Reading], bucket: PgInterval) -> Bucketed {
    let origin = Utc.with_ymd_and_hms(2000, 1, 3, 0, 0, 0).unwrap();
    let width = i64::try_from(bucket.as_secs()).unwrap() * 1_000_000;
    let mut out = Bucketed::new();
    for r in rows {
        let offset = (r.ts - origin).num_microseconds().unwrap();
        let start = origin + Duration::microseconds(offset.div_euclid(width) * width);
        let s = out.entry((start, r.tag_name.clone())).or_insert(Stats {
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            count: 0,
        });
        s.sum += r.value;
        s.min = s.min.min(r.value);
        s.max = s.max.max(r.value);
        s.count += 1;
    }
    out
}

async fn assert_view_matches(client: &Client, view: &QualifiedName, expected: &Bucketed) {
    let rows = client
        .query(
            &format!("SELECT bucket, tag_name, avg_value, min_value, max_value, record_count FROM {view}"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), expected.len(), "buckets in {view}");
    for row in rows {
        let key: (DateTime<Utc>, String) = (row.get(0), row.get(1));
        let want = expected
            .get(&key)
            .unwrap_or_else(|| panic!("{view} has an unexpected bucket {key:?}"));
        let (avg, min, max, count): (f64, f64, f64, i64) =
            (row.get(2), row.get(3), row.get(4), row.get(5));
        let want_avg = want.sum / want.count as f64;
        assert!(
            (avg - want_avg).abs() <= 1e-9 * want_avg.abs().max(1.0),
            "avg of {key:?} in {view}: {avg} vs {want_avg}"
        );
        assert_eq!(
            (min, max, count),
            (want.min, want.max, want.count),
            "{key:?} in {view}"
        );
    }
}

fn source() -> QualifiedName {
    QualifiedName::parse("influx_hist").unwrap()
}

fn aggregates() -> Vec<BucketAggregate> {
    BUCKETS
        .iter()
        .map(|b| {
            BucketAggregate::with_prefix("influx_agg_", source(), PgInterval::parse(b).unwrap())
                .unwrap()
        })
        .collect()
}

async fn setup(rows: &[Reading]) -> (TestDb, deadpool_postgres::Client) {
    let db = TestDb::create().await;
    let mut client = db.client().await;
    client
        .batch_execute(&readings_table_sql(&source()))
        .await
        .unwrap();
    upsert(&mut client, &source(), &["ts", "tag_name"], rows)
        .await
        .unwrap();
    (db, client)
}

#[tokio::test]
async fn timescale_helpers_fall_back_to_plain_postgresql() {
    let (_db, client) = setup(&[]).await;
    // The shared test server has no TimescaleDB, or does not load it: enabling it changes nothing.
    let status = enable_timescaledb(&client).await.unwrap();
    assert!(!status.is_enabled(), "{status}");
    assert!(!timescaledb_available(&client).await.unwrap());
    let kind = create_hypertable(&client, &source(), &Ident::new("ts").unwrap())
        .await
        .unwrap();
    assert_eq!(kind, TableKind::Plain);
    let relkind: i8 = client
        .query_one(
            "SELECT relkind FROM pg_class WHERE oid = 'influx_hist'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(relkind as u8, b'r', "still an ordinary table");
}

#[tokio::test]
async fn materialized_views_match_aggregates_computed_independently() {
    let rows = readings(0..1500);
    let (_db, client) = setup(&rows).await;
    for aggregate in aggregates() {
        let report = aggregate.create(&client).await.unwrap();
        assert_eq!(report.kind, AggregateKind::Materialized);
        assert!(report.created);
        assert_eq!(report.policy, None);
        assert_eq!(report.view, aggregate.view().to_string());
        assert_view_matches(
            &client,
            aggregate.view(),
            &aggregate_in_rust(&rows, aggregate.bucket()),
        )
        .await;
    }
}

#[tokio::test]
async fn refresh_picks_up_new_and_changed_rows() {
    let rows = readings(0..600);
    let (_db, mut client) = setup(&rows).await;
    let all = aggregates();
    for aggregate in &all {
        aggregate.create(&client).await.unwrap();
    }
    // New rows in new and existing buckets, and changed values.
    let mut changed = readings(0..1200);
    for r in &mut changed[400..] {
        r.value = -r.value;
    }
    upsert(&mut client, &source(), &["ts", "tag_name"], &changed[400..])
        .await
        .unwrap();
    for aggregate in &all {
        // Not refreshed yet: still the old rows.
        assert_view_matches(
            &client,
            aggregate.view(),
            &aggregate_in_rust(&rows, aggregate.bucket()),
        )
        .await;
        assert_eq!(
            aggregate.refresh(&client).await.unwrap(),
            AggregateKind::Materialized
        );
        assert_view_matches(
            &client,
            aggregate.view(),
            &aggregate_in_rust(&changed, aggregate.bucket()),
        )
        .await;
    }
    assert_eq!(
        refresh_aggregate(&client, all[0].view()).await.unwrap(),
        AggregateKind::Materialized
    );
}

#[tokio::test]
async fn create_is_idempotent_and_aggregates_are_listed() {
    let (_db, client) = setup(&readings(0..100)).await;
    for aggregate in aggregates() {
        assert!(aggregate.create(&client).await.unwrap().created);
    }
    client
        .batch_execute("CREATE MATERIALIZED VIEW other_view AS SELECT 1 AS one")
        .await
        .unwrap();
    for aggregate in aggregates() {
        let again = aggregate.create(&client).await.unwrap();
        assert!(!again.created);
        assert_eq!(again.kind, AggregateKind::Materialized);
    }
    let listed = list_aggregates(&client, "influx_agg_").await.unwrap();
    let names: Vec<&str> = listed.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "influx_agg_1_hour",
            "influx_agg_1_minute",
            "influx_agg_5_minutes"
        ]
    );
    assert!(listed
        .iter()
        .all(|a| a.schema == "public" && a.kind == AggregateKind::Materialized));
    let everything = list_aggregates(&client, "").await.unwrap();
    assert_eq!(everything.len(), 4);
    assert!(everything.contains(&AggregateInfo {
        schema: "public".into(),
        name: "other_view".into(),
        kind: AggregateKind::Materialized,
    }));
}

#[tokio::test]
async fn custom_columns_and_no_grouping() {
    let (_db, client) = setup(&[]).await;
    client
        .batch_execute(
            "CREATE SCHEMA plant; \
             CREATE TABLE plant.\"Readings\" (\"Taken At\" timestamptz, \"Reading\" float8, site text); \
             INSERT INTO plant.\"Readings\" VALUES \
               ('2024-05-01 10:00:10+00', 1, 'a'), ('2024-05-01 10:00:50+00', 3, 'b'), \
               ('2024-05-01 10:01:00+00', 10, 'a')",
        )
        .await
        .unwrap();
    let source = QualifiedName::with_schema(
        Ident::new("plant").unwrap(),
        Ident::new("Readings").unwrap(),
    );
    let aggregate = BucketAggregate::with_prefix("per_", source, PgInterval::parse("1m").unwrap())
        .unwrap()
        .time_column(Ident::new("Taken At").unwrap())
        .value_column(Ident::new("Reading").unwrap())
        .group_by([]);
    assert_eq!(aggregate.view().to_string(), "\"plant\".\"per_1_minute\"");
    aggregate.create(&client).await.unwrap();
    let rows: Vec<(DateTime<Utc>, f64, i64)> = client
        .query(
            "SELECT bucket, avg_value, record_count FROM plant.per_1_minute ORDER BY bucket",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let minute = |m| Utc.with_ymd_and_hms(2024, 5, 1, 10, m, 0).unwrap();
    assert_eq!(rows, [(minute(0), 2.0, 2), (minute(1), 10.0, 1)]);
    assert_eq!(
        aggregate.refresh(&client).await.unwrap(),
        AggregateKind::Materialized
    );
}

#[tokio::test]
async fn invalid_buckets_and_view_names_are_rejected_before_any_sql() {
    let (_db, client) = setup(&readings(0..10)).await;
    let err = PgInterval::parse("1 minute; DROP TABLE influx_hist").unwrap_err();
    assert!(matches!(err, Error::InvalidInterval { .. }), "{err:?}");
    let err = PgInterval::parse("1 month").unwrap_err();
    assert!(
        err.to_string()
            .contains("months and years have no fixed length"),
        "{err}"
    );
    let hour = PgInterval::parse("1 hour").unwrap();
    let err =
        BucketAggregate::with_prefix("influx_agg_\"; DROP TABLE influx_hist; --", source(), hour)
            .unwrap_err();
    assert!(matches!(err, Error::InvalidIdent { .. }), "{err:?}");
    assert!(err.to_string().starts_with("invalid SQL identifier \"influx_agg_\\\"; DROP TABLE influx_hist; --1_hour\": must match [a-z_][a-z0-9_]*"), "{err}");
    // Nothing reached the server: the table is intact and no view exists.
    let count: i64 = client
        .query_one("SELECT count(*) FROM influx_hist", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 10);
    assert!(list_aggregates(&client, "").await.unwrap().is_empty());
}

#[tokio::test]
async fn only_aggregates_can_be_refreshed() {
    let (_db, client) = setup(&[]).await;
    client
        .batch_execute("CREATE VIEW plain_view AS SELECT 1 AS one")
        .await
        .unwrap();
    let cases = [
        ("influx_hist", "it is a table"),
        ("plain_view", "it is a plain view"),
        ("influx_agg_1_minute", "it does not exist"),
    ];
    for (name, found) in cases {
        let err = refresh_aggregate(&client, &QualifiedName::parse(name).unwrap())
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "\"{name}\" is not a materialized view or continuous aggregate: {found}; create it \
                 with BucketAggregate::create, or pick another name"
            )
        );
        let view = QualifiedName::parse(name).unwrap();
        let aggregate =
            BucketAggregate::new(view, source(), PgInterval::parse("1 minute").unwrap());
        if found != "it does not exist" {
            assert!(matches!(
                aggregate.create(&client).await,
                Err(Error::NotAnAggregate { .. })
            ));
        }
    }
}
