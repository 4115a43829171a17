//! Time-bucketed aggregates: TimescaleDB continuous aggregates, or plain
//! materialized views over `date_bin` when TimescaleDB is missing.

use tokio_postgres::Client;

use crate::error::{query_error, Error, Result};
use crate::ident::{string_literal, Ident, QualifiedName};
use crate::interval::PgInterval;
use crate::timescale::timescaledb_available;

/// Buckets start at this instant plus whole multiples of the bucket size: the
/// origin TimescaleDB's `time_bucket` uses for fixed-length buckets (a Monday,
/// midnight UTC), so both paths cut the same buckets.
const BUCKET_ORIGIN: &str = "'2000-01-03 00:00:00+00'";

/// Which kind of aggregate a view is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AggregateKind {
    /// A TimescaleDB continuous aggregate (`time_bucket`, refreshed by a policy).
    Continuous,
    /// A plain PostgreSQL materialized view (`date_bin`), refreshed by
    /// [`refresh_aggregate`].
    Materialized,
}

/// Refresh and compression policies of a continuous aggregate. The defaults
/// are the EcoAnP pipeline's: refresh every 5 minutes the window from 1 hour
/// to 1 minute ago, compress after 7 days.
///
/// TimescaleDB rejects a refresh window shorter than two buckets, and before
/// 2.18.1 a `compress_after` not beyond the refresh window, so
/// [`BucketAggregate::create`] widens them when needed (a 1-hour bucket
/// refreshes from 2 hours 1 minute ago); the report shows the values used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimescalePolicy {
    /// Start of the refresh window, before now.
    pub refresh_start_offset: PgInterval,
    /// End of the refresh window, before now.
    pub refresh_end_offset: PgInterval,
    /// How often the refresh runs.
    pub refresh_schedule: PgInterval,
    /// Compress buckets older than this; `None` leaves the aggregate uncompressed.
    pub compress_after: Option<PgInterval>,
}

impl Default for TimescalePolicy {
    fn default() -> Self {
        let interval = |seconds| PgInterval::from_secs(seconds).expect("valid default interval");
        Self {
            refresh_start_offset: interval(3600),
            refresh_end_offset: interval(60),
            refresh_schedule: interval(300),
            compress_after: Some(interval(7 * 86_400)),
        }
    }
}

impl TimescalePolicy {
    /// The policy TimescaleDB accepts for `bucket`: the refresh window covers
    /// at least two buckets, and compression starts after the window.
    fn fitted_to(self, bucket: PgInterval) -> Self {
        let shortest_start = self
            .refresh_end_offset
            .saturating_add(bucket.saturating_mul(2));
        let refresh_start_offset = self.refresh_start_offset.max(shortest_start);
        let compress_after = self.compress_after.map(|after| {
            if after > refresh_start_offset {
                after
            } else {
                refresh_start_offset.saturating_add(bucket)
            }
        });
        Self {
            refresh_start_offset,
            compress_after,
            ..self
        }
    }
}

/// What [`BucketAggregate::create`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AggregateReport {
    /// The view, as quoted SQL.
    pub view: String,
    /// The kind of aggregate the view is.
    pub kind: AggregateKind,
    /// `false` when the view already existed and was left as it was.
    pub created: bool,
    /// The policies set on a newly created continuous aggregate.
    pub policy: Option<TimescalePolicy>,
}

/// An aggregate, listed by [`list_aggregates`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AggregateInfo {
    /// The view's schema.
    pub schema: String,
    /// The view's name.
    pub name: String,
    /// Continuous aggregate or materialized view.
    pub kind: AggregateKind,
}

/// Per-bucket `avg`, `min`, `max` and `count(*)` of a value column, grouped
/// by time bucket and by some columns.
///
/// The view has the columns `bucket`, the group columns, `avg_value`,
/// `min_value`, `max_value` and `record_count`. With TimescaleDB, and a
/// source that is a hypertable, it is a continuous aggregate with a refresh
/// policy and a compression policy ([`TimescalePolicy`]). Otherwise it is a
/// materialized view over `date_bin` with a unique index on the bucket and
/// group columns, kept current with [`refresh`](Self::refresh) (which
/// refreshes `CONCURRENTLY`, so readers are never blocked). Buckets are
/// aligned the same way on both paths, to 2000-01-03 00:00 UTC.
///
/// All names are [`Ident`]s and the bucket is a [`PgInterval`], so the SQL
/// holds nothing from configuration that was not validated and quoted.
/// Defaults follow the EcoAnP `influx_hist` table: time column `ts`, value
/// column `value`, grouped by `tag_name`.
///
/// ```no_run
/// # async fn demo(client: &tokio_postgres::Client) -> Result<(), dagrs_postgres::Error> {
/// use dagrs_postgres::{BucketAggregate, PgInterval, QualifiedName};
/// let source = QualifiedName::parse("influx_hist")?;
/// for bucket in ["1 minute", "5 minutes", "1 hour"] {
///     let aggregate =
///         BucketAggregate::with_prefix("influx_agg_", source.clone(), PgInterval::parse(bucket)?)?;
///     let report = aggregate.create(client).await?; // e.g. "influx_agg_5_minutes"
///     println!("{} ({:?}, created: {})", report.view, report.kind, report.created);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct BucketAggregate {
    view: QualifiedName,
    source: QualifiedName,
    bucket: PgInterval,
    time_column: Ident,
    value_column: Ident,
    group_by: Vec<Ident>,
    policy: TimescalePolicy,
}

impl BucketAggregate {
    /// An aggregate of `source` into the view `view`, one row per `bucket`
    /// and `tag_name`.
    pub fn new(view: QualifiedName, source: QualifiedName, bucket: PgInterval) -> Self {
        Self {
            view,
            source,
            bucket,
            time_column: Ident::known("ts"),
            value_column: Ident::known("value"),
            group_by: vec![Ident::known("tag_name")],
            policy: TimescalePolicy::default(),
        }
    }

    /// An aggregate whose view is named `prefix` + the bucket's suffix, e.g.
    /// `influx_agg_` + `5 minutes` → `influx_agg_5_minutes`, in the source's
    /// schema. The name must be a plain identifier ([`Ident::plain`]).
    pub fn with_prefix(prefix: &str, source: QualifiedName, bucket: PgInterval) -> Result<Self> {
        let name = Ident::plain(format!("{prefix}{}", bucket.suffix()))?;
        let view = match source.schema() {
            Some(schema) => QualifiedName::with_schema(schema.clone(), name),
            None => QualifiedName::new(name),
        };
        Ok(Self::new(view, source, bucket))
    }

    /// The timestamp column to bucket by (default `ts`).
    pub fn time_column(mut self, column: Ident) -> Self {
        self.time_column = column;
        self
    }

    /// The column to aggregate (default `value`).
    pub fn value_column(mut self, column: Ident) -> Self {
        self.value_column = column;
        self
    }

    /// The columns to group by besides the bucket (default `tag_name`); may be empty.
    pub fn group_by(mut self, columns: impl IntoIterator<Item = Ident>) -> Self {
        self.group_by = columns.into_iter().collect();
        self
    }

    /// The TimescaleDB policies (default [`TimescalePolicy::default`]).
    pub fn policy(mut self, policy: TimescalePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The view's name.
    pub fn view(&self) -> &QualifiedName {
        &self.view
    }

    /// The bucket size.
    pub fn bucket(&self) -> PgInterval {
        self.bucket
    }

    /// Creates the aggregate unless a view of that name exists (then it is
    /// left as it is), choosing a continuous aggregate when TimescaleDB is
    /// installed and the source is a hypertable, a materialized view otherwise.
    ///
    /// The materialized view is created and filled in one transaction. The
    /// continuous aggregate takes several statements, since its refresh cannot
    /// run inside a transaction; if one fails, what came before stays.
    pub async fn create(&self, client: &Client) -> Result<AggregateReport> {
        let view = self.view.to_string();
        if let Some(kind) = aggregate_kind(client, &self.view).await? {
            return Ok(AggregateReport {
                view,
                kind,
                created: false,
                policy: None,
            });
        }
        if timescaledb_available(client).await? && self.source_is_hypertable(client).await? {
            let policy = self.policy.fitted_to(self.bucket);
            if policy != self.policy {
                tracing::info!(view = %view, ?policy, "widened the policy to fit the bucket size");
            }
            for statement in self.continuous_statements(&policy) {
                client
                    .batch_execute(&statement)
                    .await
                    .map_err(query_error(format!("creating continuous aggregate {view}")))?;
            }
            tracing::info!(view = %view, "created continuous aggregate");
            Ok(AggregateReport {
                view,
                kind: AggregateKind::Continuous,
                created: true,
                policy: Some(policy),
            })
        } else {
            client
                .batch_execute(&self.materialized_statements().join(";\n"))
                .await
                .map_err(query_error(format!("creating materialized view {view}")))?;
            tracing::info!(view = %view, "created materialized view (TimescaleDB not used)");
            Ok(AggregateReport {
                view,
                kind: AggregateKind::Materialized,
                created: true,
                policy: None,
            })
        }
    }

    /// Brings the aggregate up to date with its source; see [`refresh_aggregate`].
    pub async fn refresh(&self, client: &Client) -> Result<AggregateKind> {
        refresh_aggregate(client, &self.view).await
    }

    async fn source_is_hypertable(&self, client: &Client) -> Result<bool> {
        client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM timescaledb_information.hypertables h \
                 WHERE format('%I.%I', h.hypertable_schema, h.hypertable_name)::regclass \
                 = to_regclass($1))",
                &[&self.source.to_string()],
            )
            .await
            .map(|row| row.get(0))
            .map_err(query_error(format!(
                "checking whether {} is a hypertable",
                self.source
            )))
    }

    /// `tag_name, …` with a leading `, ` when there are group columns.
    fn group_list(&self) -> String {
        self.group_by.iter().map(|c| format!(", {c}")).collect()
    }

    fn aggregates(&self) -> String {
        let value = &self.value_column;
        format!(
            "avg({value}) AS avg_value, min({value}) AS min_value, \
             max({value}) AS max_value, count(*) AS record_count"
        )
    }

    /// The statements of the TimescaleDB path, run one by one outside a transaction.
    fn continuous_statements(&self, policy: &TimescalePolicy) -> Vec<String> {
        let (view, source, time) = (&self.view, &self.source, &self.time_column);
        let groups = self.group_list();
        let regclass = string_literal(&view.to_string());
        let mut statements = vec![
            format!(
                "CREATE MATERIALIZED VIEW {view} WITH (timescaledb.continuous) AS \
                 SELECT time_bucket({bucket}, {time}) AS bucket{groups}, {aggregates} \
                 FROM {source} GROUP BY bucket{groups} WITH NO DATA",
                bucket = self.bucket.to_sql(),
                aggregates = self.aggregates(),
            ),
            format!(
                "SELECT add_continuous_aggregate_policy({regclass}, start_offset => {}, \
                 end_offset => {}, schedule_interval => {}, if_not_exists => TRUE)",
                policy.refresh_start_offset.to_sql(),
                policy.refresh_end_offset.to_sql(),
                policy.refresh_schedule.to_sql(),
            ),
        ];
        if let Some(after) = policy.compress_after {
            statements.push(format!(
                "ALTER MATERIALIZED VIEW {view} SET (timescaledb.compress = TRUE)"
            ));
            statements.push(format!(
                "SELECT add_compression_policy({regclass}, compress_after => {}, \
                 if_not_exists => TRUE)",
                after.to_sql()
            ));
        }
        statements.push(format!(
            "CALL refresh_continuous_aggregate({regclass}, NULL, NULL)"
        ));
        statements
    }

    /// The statements of the plain PostgreSQL path, run as one transaction.
    fn materialized_statements(&self) -> Vec<String> {
        let (view, source, time) = (&self.view, &self.source, &self.time_column);
        let groups = self.group_list();
        vec![
            format!(
                "CREATE MATERIALIZED VIEW {view} AS \
                 SELECT date_bin({bucket}, {time}, {BUCKET_ORIGIN}) AS bucket{groups}, \
                 {aggregates} FROM {source} GROUP BY 1{groups} WITH DATA",
                bucket = self.bucket.to_sql(),
                aggregates = self.aggregates(),
            ),
            // REFRESH … CONCURRENTLY needs a unique index over plain columns.
            format!("CREATE UNIQUE INDEX ON {view} (bucket{groups})"),
        ]
    }
}

/// Which kind of aggregate `view` is, or `None` when nothing has that name.
async fn aggregate_kind(client: &Client, view: &QualifiedName) -> Result<Option<AggregateKind>> {
    let name = view.to_string();
    let relkind = client
        .query_opt(
            "SELECT relkind::text FROM pg_class WHERE oid = to_regclass($1)",
            &[&name],
        )
        .await
        .map_err(query_error(format!("looking up {name}")))?
        .map(|row| row.get::<_, String>(0));
    match relkind.as_deref() {
        None => Ok(None),
        Some("m") => Ok(Some(AggregateKind::Materialized)),
        Some("v") if timescaledb_available(client).await? => {
            let continuous: bool = client
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM timescaledb_information.continuous_aggregates c \
                     WHERE format('%I.%I', c.view_schema, c.view_name)::regclass = to_regclass($1))",
                    &[&name],
                )
                .await
                .map(|row| row.get(0))
                .map_err(query_error(format!("looking up continuous aggregate {name}")))?;
            if continuous {
                Ok(Some(AggregateKind::Continuous))
            } else {
                Err(not_an_aggregate(view, "it is a plain view"))
            }
        }
        Some("v") => Err(not_an_aggregate(view, "it is a plain view")),
        Some("r" | "p") => Err(not_an_aggregate(view, "it is a table")),
        Some(_) => Err(not_an_aggregate(view, "it is neither a table nor a view")),
    }
}

fn not_an_aggregate(view: &QualifiedName, found: &'static str) -> Error {
    Error::NotAnAggregate {
        view: view.to_string(),
        found,
    }
}

/// Brings an aggregate up to date with its source, and tells which kind it is.
///
/// A materialized view is refreshed with `REFRESH MATERIALIZED VIEW
/// CONCURRENTLY` (readers keep reading the old rows meanwhile). A continuous
/// aggregate is refreshed over its whole range with
/// `CALL refresh_continuous_aggregate(view, NULL, NULL)`, which cannot run
/// inside a transaction. Anything else is an [`Error::NotAnAggregate`].
pub async fn refresh_aggregate(client: &Client, view: &QualifiedName) -> Result<AggregateKind> {
    let kind = aggregate_kind(client, view)
        .await?
        .ok_or_else(|| not_an_aggregate(view, "it does not exist"))?;
    let statement = match kind {
        AggregateKind::Materialized => format!("REFRESH MATERIALIZED VIEW CONCURRENTLY {view}"),
        AggregateKind::Continuous => format!(
            "CALL refresh_continuous_aggregate({}, NULL, NULL)",
            string_literal(&view.to_string())
        ),
    };
    client
        .batch_execute(&statement)
        .await
        .map_err(query_error(format!("refreshing {view}")))?;
    Ok(kind)
}

/// The aggregates whose names start with `name_prefix` (`""` for all):
/// materialized views, and continuous aggregates when TimescaleDB is installed,
/// sorted by schema and name.
pub async fn list_aggregates(client: &Client, name_prefix: &str) -> Result<Vec<AggregateInfo>> {
    let mut found = Vec::new();
    let mut collect = |rows: Vec<tokio_postgres::Row>, kind| {
        found.extend(rows.into_iter().map(|row| AggregateInfo {
            schema: row.get(0),
            name: row.get(1),
            kind,
        }));
    };
    let materialized = client
        .query(
            "SELECT schemaname::text, matviewname::text FROM pg_matviews \
             WHERE starts_with(matviewname::text, $1)",
            &[&name_prefix],
        )
        .await
        .map_err(query_error("listing materialized views"))?;
    collect(materialized, AggregateKind::Materialized);
    if timescaledb_available(client).await? {
        let continuous = client
            .query(
                "SELECT view_schema::text, view_name::text \
                 FROM timescaledb_information.continuous_aggregates \
                 WHERE starts_with(view_name::text, $1)",
                &[&name_prefix],
            )
            .await
            .map_err(query_error("listing continuous aggregates"))?;
        collect(continuous, AggregateKind::Continuous);
    }
    found.sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));
    Ok(found)
}

/// `CREATE TABLE IF NOT EXISTS` for a table of time-series readings in the shape the
/// [`BucketAggregate`](crate::BucketAggregate) defaults expect (the EcoAnP `influx_hist`):
/// one row per `(ts, tag_name)`, a nullable `value`, `qc` and `meta`, and an `updated_at`
/// that upserts refresh.
///
/// ```
/// use dagrs_postgres::{readings_table_sql, QualifiedName};
/// let sql = readings_table_sql(&QualifiedName::parse("influx_hist")?);
/// assert!(sql.starts_with(r#"CREATE TABLE IF NOT EXISTS "influx_hist" ("#));
/// # Ok::<(), dagrs_postgres::Error>(())
/// ```
pub fn readings_table_sql(table: &QualifiedName) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {table} (
             ts         timestamptz NOT NULL,
             tag_name   text NOT NULL,
             value      double precision,
             qc         integer,
             meta       jsonb,
             updated_at timestamptz NOT NULL DEFAULT now(),
             PRIMARY KEY (ts, tag_name)
         )"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interval(text: &str) -> PgInterval {
        PgInterval::parse(text).unwrap()
    }

    fn seed_aggregate(bucket: &str) -> BucketAggregate {
        BucketAggregate::with_prefix(
            "influx_agg_",
            QualifiedName::parse("influx_hist").unwrap(),
            interval(bucket),
        )
        .unwrap()
    }

    #[test]
    fn view_names_come_from_prefix_and_bucket() {
        assert_eq!(
            seed_aggregate("5m").view().to_string(),
            r#""influx_agg_5_minutes""#
        );
        let in_schema = BucketAggregate::with_prefix(
            "agg_",
            QualifiedName::parse("ecoanp.influx_hist").unwrap(),
            interval("1 hour"),
        )
        .unwrap();
        assert_eq!(in_schema.view().to_string(), r#""ecoanp"."agg_1_hour""#);
        let bad = BucketAggregate::with_prefix(
            "Influx-Agg ",
            QualifiedName::parse("influx_hist").unwrap(),
            interval("1 hour"),
        );
        assert!(matches!(bad, Err(Error::InvalidIdent { .. })), "{bad:?}");
    }

    #[test]
    fn continuous_statements_follow_timescaledb_docs() {
        let aggregate = seed_aggregate("5 minutes");
        let policy = TimescalePolicy::default().fitted_to(aggregate.bucket());
        assert_eq!(
            policy,
            TimescalePolicy::default(),
            "the seed's policy fits 5-minute buckets"
        );
        let statements = aggregate.continuous_statements(&policy);
        assert_eq!(
            statements,
            [
                "CREATE MATERIALIZED VIEW \"influx_agg_5_minutes\" WITH (timescaledb.continuous) AS \
                 SELECT time_bucket(INTERVAL '5 minutes', \"ts\") AS bucket, \"tag_name\", \
                 avg(\"value\") AS avg_value, min(\"value\") AS min_value, \
                 max(\"value\") AS max_value, count(*) AS record_count \
                 FROM \"influx_hist\" GROUP BY bucket, \"tag_name\" WITH NO DATA",
                "SELECT add_continuous_aggregate_policy('\"influx_agg_5_minutes\"', \
                 start_offset => INTERVAL '1 hour', end_offset => INTERVAL '1 minute', \
                 schedule_interval => INTERVAL '5 minutes', if_not_exists => TRUE)",
                "ALTER MATERIALIZED VIEW \"influx_agg_5_minutes\" SET (timescaledb.compress = TRUE)",
                "SELECT add_compression_policy('\"influx_agg_5_minutes\"', \
                 compress_after => INTERVAL '1 week', if_not_exists => TRUE)",
                "CALL refresh_continuous_aggregate('\"influx_agg_5_minutes\"', NULL, NULL)",
            ]
        );
        let uncompressed = TimescalePolicy {
            compress_after: None,
            ..policy
        };
        assert_eq!(aggregate.continuous_statements(&uncompressed).len(), 3);
    }

    #[test]
    fn policies_widen_to_fit_large_buckets() {
        let hourly = TimescalePolicy::default().fitted_to(interval("1 hour"));
        assert_eq!(hourly.refresh_start_offset.as_secs(), 2 * 3600 + 60);
        assert_eq!(hourly.refresh_end_offset, interval("1 minute"));
        assert_eq!(hourly.compress_after, Some(interval("7 days")));
        let weekly = TimescalePolicy::default().fitted_to(interval("2 weeks"));
        assert_eq!(weekly.refresh_start_offset.as_secs(), 28 * 86_400 + 60);
        assert_eq!(weekly.compress_after.unwrap().as_secs(), 42 * 86_400 + 60);
    }

    #[test]
    fn materialized_statements_use_date_bin_and_a_unique_index() {
        let aggregate = seed_aggregate("1 minute")
            .time_column(Ident::new("Time").unwrap())
            .value_column(Ident::new("v").unwrap())
            .group_by([Ident::new("site").unwrap(), Ident::new("tag").unwrap()]);
        assert_eq!(
            aggregate.materialized_statements(),
            [
                "CREATE MATERIALIZED VIEW \"influx_agg_1_minute\" AS \
                 SELECT date_bin(INTERVAL '1 minute', \"Time\", '2000-01-03 00:00:00+00') AS bucket, \
                 \"site\", \"tag\", avg(\"v\") AS avg_value, min(\"v\") AS min_value, \
                 max(\"v\") AS max_value, count(*) AS record_count \
                 FROM \"influx_hist\" GROUP BY 1, \"site\", \"tag\" WITH DATA",
                "CREATE UNIQUE INDEX ON \"influx_agg_1_minute\" (bucket, \"site\", \"tag\")",
            ]
        );
        let ungrouped = seed_aggregate("1 hour").group_by([]);
        assert!(ungrouped.materialized_statements()[0].contains("GROUP BY 1 WITH DATA"));
        assert!(ungrouped.materialized_statements()[1].ends_with("(bucket)"));
    }
}
