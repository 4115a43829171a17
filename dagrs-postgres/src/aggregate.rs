//! Time-bucketed aggregates: TimescaleDB continuous aggregates, or plain
//! materialized views over `date_bin` when TimescaleDB is missing.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::error::{query_error, Error, Result};
use crate::ident::{string_literal, Ident, QualifiedName};
use crate::interval::PgInterval;
use crate::timescale::{
    timescaledb_available, timescaledb_in_use, Compressible, Compression, CompressionState, Plan,
};

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
/// to 1 minute ago, compress after 7 days (segmented by nothing).
///
/// TimescaleDB rejects a refresh window shorter than two buckets, and before
/// 2.18.1 a compression age not beyond the refresh window, so
/// [`BucketAggregate::create`] widens them when needed (a 1-hour bucket
/// refreshes from 2 hours 1 minute ago); the report shows the values used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimescalePolicy {
    /// Start of the refresh window, before now.
    pub refresh_start_offset: PgInterval,
    /// End of the refresh window, before now.
    pub refresh_end_offset: PgInterval,
    /// How often the refresh runs.
    pub refresh_schedule: PgInterval,
    /// Compression of old buckets; `None` leaves the aggregate uncompressed. Its
    /// segment-by columns must be among the aggregate's group columns.
    pub compression: Option<Compression>,
}

impl Default for TimescalePolicy {
    fn default() -> Self {
        let interval = |seconds| PgInterval::from_secs(seconds).expect("valid default interval");
        Self {
            refresh_start_offset: interval(3600),
            refresh_end_offset: interval(60),
            refresh_schedule: interval(300),
            compression: Some(Compression::after(interval(7 * 86_400))),
        }
    }
}

impl TimescalePolicy {
    /// The policy TimescaleDB accepts for `bucket`: the refresh window covers
    /// at least two buckets, and compression starts after the window.
    fn fitted_to(&self, bucket: PgInterval) -> Self {
        let shortest_start = self
            .refresh_end_offset
            .saturating_add(bucket.saturating_mul(2));
        let refresh_start_offset = self.refresh_start_offset.max(shortest_start);
        let compression = self.compression.clone().map(|mut compression| {
            if compression.after <= refresh_start_offset {
                compression.after = refresh_start_offset.saturating_add(bucket);
            }
            compression
        });
        Self {
            refresh_start_offset,
            compression,
            ..self.clone()
        }
    }

    /// The refresh window and schedule in seconds: (start offset, end offset, schedule).
    fn refresh_seconds(&self) -> [Option<i64>; 3] {
        [
            self.refresh_start_offset,
            self.refresh_end_offset,
            self.refresh_schedule,
        ]
        .map(|interval| i64::try_from(interval.as_secs()).ok())
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
    /// `false` when the view already existed (then only its policies may have changed).
    pub created: bool,
    /// The policies of a continuous aggregate, as fitted to its bucket size.
    pub policy: Option<TimescalePolicy>,
    /// What this call changed, one line each: empty when the aggregate already was
    /// as asked.
    pub changes: Vec<String>,
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

    /// Creates the aggregate, or brings an existing one in line with its policy:
    /// a continuous aggregate when TimescaleDB is installed and the source is a
    /// hypertable, a materialized view otherwise.
    ///
    /// - Nothing has the view's name: it is created. A materialized view is
    ///   created and filled in one transaction. A continuous aggregate is created
    ///   with its refresh and compression policies in one transaction, then
    ///   refreshed over its whole range (a refresh cannot run inside a
    ///   transaction; should it fail, the view exists with its policies, and the
    ///   refresh policy or [`refresh`](Self::refresh) fills it).
    /// - A continuous aggregate: its policies are compared with
    ///   [`policy`](Self::policy) and mended where they differ; the view's query
    ///   is left as it is. A second call with the same policy changes nothing.
    /// - A materialized view while the continuous path is open (left by a run
    ///   from before TimescaleDB was installed): it is replaced by a continuous
    ///   aggregate in one transaction, so a source never has aggregates of both
    ///   kinds. Views that depend on it make this fail, changing nothing.
    /// - A materialized view otherwise: left as it is.
    ///
    /// Segment-by columns that are not group columns
    /// ([`Error::InvalidSetting`]) and an installed TimescaleDB older than
    /// [`TIMESCALEDB_MIN_VERSION`](crate::TIMESCALEDB_MIN_VERSION)
    /// ([`Error::TimescaleTooOld`]) stop it before anything is changed.
    pub async fn create(&self, client: &Client) -> Result<AggregateReport> {
        self.check_segment_by()?;
        let view = self.view.to_string();
        let continuous = timescaledb_in_use(client).await?.is_some()
            && self.source_is_hypertable(client).await?;
        let existing = aggregate_kind(client, &self.view).await?;
        let (kind, created, policy, changes) = match (existing, continuous) {
            (None, false) => {
                client
                    .batch_execute(&self.materialized_statements().join(";\n"))
                    .await
                    .map_err(query_error(format!("creating materialized view {view}")))?;
                let change = format!("created materialized view {view} (TimescaleDB not used)");
                (AggregateKind::Materialized, true, None, vec![change])
            }
            (Some(AggregateKind::Materialized), false) => {
                (AggregateKind::Materialized, false, None, Vec::new())
            }
            (Some(AggregateKind::Continuous), _) => {
                let policy = self.fitted_policy();
                let changes = self.mend_policies(client, &policy).await?;
                (AggregateKind::Continuous, false, Some(policy), changes)
            }
            (replaced, true) => {
                let policy = self.fitted_policy();
                let mut plan = Plan::default();
                if replaced.is_some() {
                    plan.statements
                        .push(format!("DROP MATERIALIZED VIEW {view}"));
                    plan.changes.push(format!(
                        "replaced materialized view {view}, left by a run without TimescaleDB, \
                         with a continuous aggregate"
                    ));
                }
                plan.extend(self.continuous_plan(&policy));
                let changes = plan
                    .apply(client, &format!("creating continuous aggregate {view}"))
                    .await?;
                refresh_aggregate(client, &self.view).await?;
                (AggregateKind::Continuous, true, Some(policy), changes)
            }
        };
        for change in &changes {
            tracing::info!("{change}");
        }
        Ok(AggregateReport {
            view,
            kind,
            created,
            policy,
            changes,
        })
    }

    /// The policy, widened where TimescaleDB needs it for this bucket size.
    fn fitted_policy(&self) -> TimescalePolicy {
        let policy = self.policy.fitted_to(self.bucket);
        if policy != self.policy {
            tracing::info!(view = %self.view, ?policy, "widened the policy to fit the bucket size");
        }
        policy
    }

    /// Brings the aggregate up to date with its source; see [`refresh_aggregate`].
    pub async fn refresh(&self, client: &Client) -> Result<AggregateKind> {
        refresh_aggregate(client, &self.view).await
    }

    /// Brings the buckets that hold any instant of `[start, end)` up to date
    /// with the source: a continuous aggregate with
    /// `refresh_continuous_aggregate` over that window widened to whole buckets
    /// (TimescaleDB refreshes only buckets wholly inside the window); a
    /// materialized view whole, as [`refresh`](Self::refresh) does. An `end`
    /// not after `start` is an [`Error::InvalidSetting`].
    pub async fn refresh_window(
        &self,
        client: &Client,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<AggregateKind> {
        if end <= start {
            return Err(Error::InvalidSetting {
                setting: "refresh window",
                value: format!("{start} to {end}"),
                reason: "the end must be after the start",
            });
        }
        let kind = aggregate_kind(client, &self.view)
            .await?
            .ok_or_else(|| not_an_aggregate(&self.view, "it does not exist"))?;
        if kind == AggregateKind::Materialized {
            return refresh_aggregate(client, &self.view).await;
        }
        let (start, end) = whole_buckets(self.bucket, start, end);
        let view = &self.view;
        let statement = format!(
            "CALL refresh_continuous_aggregate({}, {}::timestamptz, {}::timestamptz)",
            string_literal(&view.to_string()),
            string_literal(&start.to_rfc3339()),
            string_literal(&end.to_rfc3339()),
        );
        let action = format!("refreshing {view} from {start} to {end}");
        run_refresh(client, &statement, action).await?;
        Ok(kind)
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

    /// Segment-by columns must be group columns: a continuous aggregate has no others
    /// (besides the bucket, which orders the compressed rows).
    fn check_segment_by(&self) -> Result<()> {
        let segment_by = self.policy.compression.iter().flat_map(|c| &c.segment_by);
        match segment_by
            .into_iter()
            .find(|column| !self.group_by.contains(column))
        {
            None => Ok(()),
            Some(column) => Err(Error::InvalidSetting {
                setting: "segment_by",
                value: format!("{column} (for {})", self.view),
                reason: "an aggregate can only be segmented by columns it groups by \
                         (BucketAggregate::group_by)",
            }),
        }
    }

    fn compressible(&self) -> Compressible {
        Compressible {
            alter: format!("ALTER MATERIALIZED VIEW {}", self.view),
            relation: self.view.to_string(),
            time_column: Ident::known("bucket"),
        }
    }

    /// The statements that create the continuous aggregate with its policies, all
    /// of which may run in one transaction (the first refresh may not).
    fn continuous_plan(&self, policy: &TimescalePolicy) -> Plan {
        let (view, source, time) = (&self.view, &self.source, &self.time_column);
        let groups = self.group_list();
        let mut plan = Plan {
            statements: vec![format!(
                "CREATE MATERIALIZED VIEW {view} \
                 WITH (timescaledb.continuous, timescaledb.materialized_only = TRUE) AS \
                 SELECT time_bucket({bucket}, {time}) AS bucket{groups}, {aggregates} \
                 FROM {source} GROUP BY bucket{groups} WITH NO DATA",
                bucket = self.bucket.to_sql(),
                aggregates = self.aggregates(),
            )],
            changes: vec![format!("created continuous aggregate {view}")],
        };
        plan.extend(self.refresh_plan(policy, None));
        plan.extend(
            self.compressible()
                .plan(&CompressionState::default(), policy.compression.as_ref()),
        );
        plan
    }

    /// What brings the refresh policy from `current` (start offset, end offset,
    /// schedule, in seconds; `None` when there is no policy) to `policy`.
    fn refresh_plan(&self, policy: &TimescalePolicy, current: Option<[Option<i64>; 3]>) -> Plan {
        let mut plan = Plan::default();
        if current == Some(policy.refresh_seconds()) {
            return plan;
        }
        let view = &self.view;
        let regclass = string_literal(&view.to_string());
        if current.is_some() {
            plan.statements.push(format!(
                "SELECT remove_continuous_aggregate_policy({regclass}, if_exists => TRUE)"
            ));
        }
        plan.statements.push(format!(
            "SELECT add_continuous_aggregate_policy({regclass}, start_offset => {}, \
             end_offset => {}, schedule_interval => {}, if_not_exists => TRUE)",
            policy.refresh_start_offset.to_sql(),
            policy.refresh_end_offset.to_sql(),
            policy.refresh_schedule.to_sql(),
        ));
        plan.changes.push(format!(
            "{} the refresh policy of {view}: every {}, the window from {} to {} ago",
            if current.is_some() {
                "replaced"
            } else {
                "added"
            },
            policy.refresh_schedule,
            policy.refresh_start_offset,
            policy.refresh_end_offset,
        ));
        plan
    }

    /// Compares the policies of the existing continuous aggregate with `policy`
    /// and mends the differences in one transaction.
    async fn mend_policies(
        &self,
        client: &Client,
        policy: &TimescalePolicy,
    ) -> Result<Vec<String>> {
        let view = self.view.to_string();
        let row = client
            .query_one(
                "SELECT c.view_schema::text, c.view_name::text, \
                        c.materialization_hypertable_schema::text, \
                        c.materialization_hypertable_name::text, c.compression_enabled \
                 FROM timescaledb_information.continuous_aggregates c \
                 WHERE format('%I.%I', c.view_schema, c.view_name)::regclass = to_regclass($1)",
                &[&view],
            )
            .await
            .map_err(query_error(format!(
                "looking up continuous aggregate {view}"
            )))?;
        let names: [(String, String); 2] = [(row.get(0), row.get(1)), (row.get(2), row.get(3))];
        let [(schema, name), (ht_schema, ht_name)] = &names;
        let refresh = client
            .query_opt(
                "SELECT extract(epoch FROM (config->>'start_offset')::interval)::bigint, \
                        extract(epoch FROM (config->>'end_offset')::interval)::bigint, \
                        extract(epoch FROM schedule_interval)::bigint \
                 FROM timescaledb_information.jobs \
                 WHERE proc_name = 'policy_refresh_continuous_aggregate' \
                   AND ((hypertable_schema::text = $1 AND hypertable_name::text = $2) \
                     OR (hypertable_schema::text = $3 AND hypertable_name::text = $4)) \
                 ORDER BY job_id LIMIT 1",
                &[schema, name, ht_schema, ht_name],
            )
            .await
            .map_err(query_error(format!("reading the refresh policy of {view}")))?
            .map(|row| [row.get(0), row.get(1), row.get(2)]);
        let compressible = self.compressible();
        let compression = compressible.state(client, &names, row.get(4)).await?;
        let mut plan = self.refresh_plan(policy, refresh);
        plan.extend(compressible.plan(&compression, policy.compression.as_ref()));
        plan.apply(client, &format!("updating the policies of {view}"))
            .await
    }

    /// The statements [`create`](Self::create) runs, as one transaction, where TimescaleDB
    /// is not used: the materialized view, filled, and the unique index that
    /// `REFRESH … CONCURRENTLY` needs. For scripts and reviews; `create` also checks what
    /// exists first.
    pub fn materialized_statements(&self) -> Vec<String> {
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

/// `[start, end)` widened to the buckets of `bucket` it touches, aligned like
/// [`BUCKET_ORIGIN`].
fn whole_buckets(
    bucket: PgInterval,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> (DateTime<Utc>, DateTime<Utc>) {
    let origin = Utc.with_ymd_and_hms(2000, 1, 3, 0, 0, 0).unwrap();
    let width = i64::try_from(bucket.as_secs())
        .unwrap_or(i64::MAX / 1_000_000)
        .saturating_mul(1_000_000);
    let micros = |t: DateTime<Utc>| (t - origin).num_microseconds().unwrap_or(i64::MAX);
    let floor = |t| micros(t).div_euclid(width).saturating_mul(width);
    let first = floor(start);
    let last = floor(end - TimeDelta::microseconds(1)).saturating_add(width);
    let at = |offset| origin + TimeDelta::microseconds(offset);
    (at(first), at(last))
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
/// inside a transaction; while a concurrent refresh (such as the refresh
/// policy's) holds the same buckets, it waits and tries again, for up to about
/// 30 seconds. Anything else is an [`Error::NotAnAggregate`].
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
    run_refresh(client, &statement, format!("refreshing {view}")).await?;
    Ok(kind)
}

/// Runs a refresh; while TimescaleDB reports a concurrent refresh of the same
/// buckets (its refresh policy, or another run), waits for it and tries again,
/// for up to about 30 seconds.
async fn run_refresh(client: &Client, statement: &str, action: String) -> Result<()> {
    let mut wait = std::time::Duration::from_millis(100);
    let mut waited = std::time::Duration::ZERO;
    loop {
        match client.batch_execute(statement).await {
            Ok(()) => return Ok(()),
            Err(err)
                if err.code() == Some(&SqlState::LOCK_NOT_AVAILABLE)
                    && waited < std::time::Duration::from_secs(30) =>
            {
                tracing::debug!(%action, ?wait, "a concurrent refresh is running; waiting for it");
                tokio::time::sleep(wait).await;
                waited += wait;
                wait = (wait * 2).min(std::time::Duration::from_secs(2));
            }
            Err(err) => return Err(query_error(action)(err)),
        }
    }
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
        let plan = aggregate.continuous_plan(&policy);
        assert_eq!(
            plan.statements,
            [
                "CREATE MATERIALIZED VIEW \"influx_agg_5_minutes\" \
                 WITH (timescaledb.continuous, timescaledb.materialized_only = TRUE) AS \
                 SELECT time_bucket(INTERVAL '5 minutes', \"ts\") AS bucket, \"tag_name\", \
                 avg(\"value\") AS avg_value, min(\"value\") AS min_value, \
                 max(\"value\") AS max_value, count(*) AS record_count \
                 FROM \"influx_hist\" GROUP BY bucket, \"tag_name\" WITH NO DATA",
                "SELECT add_continuous_aggregate_policy('\"influx_agg_5_minutes\"', \
                 start_offset => INTERVAL '1 hour', end_offset => INTERVAL '1 minute', \
                 schedule_interval => INTERVAL '5 minutes', if_not_exists => TRUE)",
                "ALTER MATERIALIZED VIEW \"influx_agg_5_minutes\" SET (timescaledb.compress = TRUE, \
                 timescaledb.compress_segmentby = '', timescaledb.compress_orderby = '\"bucket\" DESC')",
                "SELECT add_compression_policy('\"influx_agg_5_minutes\"', \
                 compress_after => INTERVAL '1 week', if_not_exists => TRUE)",
            ]
        );
        assert_eq!(
            plan.changes,
            [
                "created continuous aggregate \"influx_agg_5_minutes\"",
                "added the refresh policy of \"influx_agg_5_minutes\": every 5 minutes, the \
                 window from 1 hour to 1 minute ago",
                "turned on compression of \"influx_agg_5_minutes\", segmented by nothing",
                "added the compression policy of \"influx_agg_5_minutes\": compress after 1 week",
            ]
        );
        let uncompressed = TimescalePolicy {
            compression: None,
            ..policy.clone()
        };
        assert_eq!(aggregate.continuous_plan(&uncompressed).statements.len(), 2);
    }

    #[test]
    fn refresh_windows_widen_to_whole_buckets() {
        let at = |h, m, s| Utc.with_ymd_and_hms(2024, 5, 1, h, m, s).unwrap();
        let hour = interval("1 hour");
        assert_eq!(
            whole_buckets(hour, at(11, 30, 0), at(12, 10, 0)),
            (at(11, 0, 0), at(13, 0, 0))
        );
        assert_eq!(
            whole_buckets(hour, at(11, 0, 0), at(12, 0, 0)),
            (at(11, 0, 0), at(12, 0, 0)),
            "an aligned window stays as it is"
        );
        // Weeks start on Mondays, like time_bucket's.
        let (monday, _) = whole_buckets(interval("1 week"), at(11, 0, 0), at(12, 0, 0));
        assert_eq!(monday, Utc.with_ymd_and_hms(2024, 4, 29, 0, 0, 0).unwrap());
    }

    #[test]
    fn refresh_policies_are_replaced_only_when_they_differ() {
        let aggregate = seed_aggregate("5 minutes");
        let policy = TimescalePolicy::default();
        let same = Some([Some(3600), Some(60), Some(300)]);
        assert_eq!(aggregate.refresh_plan(&policy, same), Plan::default());
        let other = Some([Some(7200), Some(60), Some(300)]);
        let plan = aggregate.refresh_plan(&policy, other);
        assert_eq!(plan.statements.len(), 2);
        assert_eq!(
            plan.statements[0],
            "SELECT remove_continuous_aggregate_policy('\"influx_agg_5_minutes\"', \
             if_exists => TRUE)"
        );
        assert!(plan.changes[0].starts_with("replaced the refresh policy"));
        let unreadable = Some([None, Some(60), Some(300)]);
        assert_eq!(
            aggregate.refresh_plan(&policy, unreadable).statements.len(),
            2
        );
    }

    #[test]
    fn segment_by_must_be_group_columns() {
        let week = Compression::after(interval("7 days"));
        let by_tag = seed_aggregate("1 hour").policy(TimescalePolicy {
            compression: Some(week.clone().segment_by([Ident::known("tag_name")])),
            ..TimescalePolicy::default()
        });
        assert!(by_tag.check_segment_by().is_ok());
        let by_qc = seed_aggregate("1 hour").policy(TimescalePolicy {
            compression: Some(week.segment_by([Ident::known("qc")])),
            ..TimescalePolicy::default()
        });
        let err = by_qc.check_segment_by().unwrap_err().to_string();
        assert!(err.contains("\"qc\" (for \"influx_agg_1_hour\")"), "{err}");
    }

    #[test]
    fn policies_widen_to_fit_large_buckets() {
        let after = |policy: &TimescalePolicy| policy.compression.as_ref().unwrap().after;
        let hourly = TimescalePolicy::default().fitted_to(interval("1 hour"));
        assert_eq!(hourly.refresh_start_offset.as_secs(), 2 * 3600 + 60);
        assert_eq!(hourly.refresh_end_offset, interval("1 minute"));
        assert_eq!(after(&hourly), interval("7 days"));
        let weekly = TimescalePolicy::default().fitted_to(interval("2 weeks"));
        assert_eq!(weekly.refresh_start_offset.as_secs(), 28 * 86_400 + 60);
        assert_eq!(after(&weekly).as_secs(), 42 * 86_400 + 60);
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
