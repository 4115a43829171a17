//! Detecting and enabling TimescaleDB, turning tables into hypertables, and
//! compressing their old chunks by a policy.

use std::fmt;

use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::error::{query_error, Error, Result};
use crate::ident::{string_literal, Ident, QualifiedName};
use crate::interval::PgInterval;

/// The oldest TimescaleDB this crate uses: compression of continuous aggregates
/// came in 2.6, and `INSERT … ON CONFLICT` into compressed chunks (what an
/// [`Upsert`](crate::Upsert) into old data does) in 2.11. Tested with 2.28.3.
pub const TIMESCALEDB_MIN_VERSION: &str = "2.11.0";

/// What needs [`TIMESCALEDB_MIN_VERSION`], for messages.
const MIN_VERSION_NEEDED_FOR: &str =
    "compressed continuous aggregates (2.6) and upserts into compressed chunks (2.11)";

/// A setting only a server that loaded TimescaleDB at start has: its loader defines it,
/// and unlike `shared_preload_libraries` itself, every user may read it in `pg_settings`.
const LOADER_SETTING: &str = "timescaledb.max_background_workers";

/// What a table is after [`create_hypertable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    /// A TimescaleDB hypertable, partitioned by time.
    Hypertable,
    /// A plain PostgreSQL table: TimescaleDB is not installed in this database.
    Plain,
}

/// What [`enable_timescaledb`] found: TimescaleDB in use, or why plain PostgreSQL is
/// used instead. `Display` says it in one line, with how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimescaleStatus {
    /// The extension is installed in the database (by this call or before).
    Enabled {
        /// Its version, e.g. `2.28.3`.
        version: String,
    },
    /// The server does not offer TimescaleDB: it is not installed where the server runs.
    NotOffered,
    /// The server offers TimescaleDB but did not load it at start
    /// (`shared_preload_libraries`); creating the extension would fail, so it was not tried.
    NotPreloaded,
    /// The user may not create extensions in this database.
    NotPermitted {
        /// The user connected.
        user: String,
        /// The database.
        database: String,
    },
    /// The server offers only a TimescaleDB older than [`TIMESCALEDB_MIN_VERSION`]; it
    /// was not installed.
    TooOld {
        /// The version offered.
        offered: String,
    },
}

impl TimescaleStatus {
    /// Whether TimescaleDB is installed in the database and recent enough.
    pub fn is_enabled(&self) -> bool {
        matches!(self, Self::Enabled { .. })
    }
}

impl fmt::Display for TimescaleStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const FALLBACK: &str = "using plain PostgreSQL (materialized views, no compression)";
        match self {
            Self::Enabled { version } => write!(f, "TimescaleDB {version} is installed"),
            Self::NotOffered => write!(
                f,
                "this PostgreSQL server does not offer TimescaleDB (it is not installed where \
                 the server runs); {FALLBACK}"
            ),
            Self::NotPreloaded => write!(
                f,
                "TimescaleDB is installed on this server but not loaded: add timescaledb to \
                 shared_preload_libraries in postgresql.conf and restart the server; \
                 {FALLBACK} until then"
            ),
            Self::NotPermitted { user, database } => write!(
                f,
                "user {user:?} may not create the timescaledb extension in database \
                 {database:?}: have a superuser run CREATE EXTENSION timescaledb there, or \
                 grant the user CREATE on the database; {FALLBACK} until then"
            ),
            Self::TooOld { offered } => write!(
                f,
                "this server offers TimescaleDB {offered}, older than \
                 {TIMESCALEDB_MIN_VERSION} (needed for {MIN_VERSION_NEEDED_FOR}), so it was \
                 not installed: install a newer TimescaleDB on the server; {FALLBACK} until then"
            ),
        }
    }
}

/// Whether the `timescaledb` extension is installed in the connected database
/// (whatever its version).
pub async fn timescaledb_available(client: &Client) -> Result<bool> {
    client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')",
            &[],
        )
        .await
        .map(|row| row.get(0))
        .map_err(query_error("checking for the timescaledb extension"))
}

/// The version of TimescaleDB installed in the database, `None` when it is not
/// installed, and [`Error::TimescaleTooOld`] when it is older than
/// [`TIMESCALEDB_MIN_VERSION`]: what every helper that would use it checks first,
/// so an old version stops them before they change anything.
pub(crate) async fn timescaledb_in_use(client: &Client) -> Result<Option<String>> {
    let row = client
        .query_opt(
            "SELECT extversion::text, current_database()::text FROM pg_extension \
             WHERE extname = 'timescaledb'",
            &[],
        )
        .await
        .map_err(query_error("checking for the timescaledb extension"))?;
    match row {
        None => Ok(None),
        Some(row) => {
            let (version, database): (String, String) = (row.get(0), row.get(1));
            if is_recent(&version) {
                Ok(Some(version))
            } else {
                Err(Error::TimescaleTooOld {
                    version,
                    database,
                    required: TIMESCALEDB_MIN_VERSION,
                    needed_for: MIN_VERSION_NEEDED_FOR,
                })
            }
        }
    }
}

/// Installs TimescaleDB in the connected database when the server can load it,
/// and tells what it found.
///
/// - Already installed: [`TimescaleStatus::Enabled`]; but a version older than
///   [`TIMESCALEDB_MIN_VERSION`] is an [`Error::TimescaleTooOld`], since the
///   database already holds TimescaleDB objects that plain PostgreSQL cannot
///   stand in for.
/// - Otherwise `CREATE EXTENSION timescaledb` runs only when the server offers
///   a recent enough version and has loaded it at start; then `Enabled`.
/// - Else the reason: [`NotOffered`](TimescaleStatus::NotOffered),
///   [`TooOld`](TimescaleStatus::TooOld),
///   [`NotPreloaded`](TimescaleStatus::NotPreloaded) (creating the extension
///   would have failed and closed the connection, so it is not tried), or
///   [`NotPermitted`](TimescaleStatus::NotPermitted) (the user lacks the right
///   to create it; TimescaleDB is a trusted extension, so `CREATE` on the
///   database is enough). Nothing was changed, and the other helpers of this
///   crate take the plain PostgreSQL path. The reason is logged (`info` when
///   the server does not offer TimescaleDB, `warn` otherwise).
///
/// Any other failure is an error.
pub async fn enable_timescaledb(client: &Client) -> Result<TimescaleStatus> {
    if let Some(version) = timescaledb_in_use(client).await? {
        return Ok(TimescaleStatus::Enabled { version });
    }
    let row = client
        .query_one(
            "SELECT (SELECT default_version::text FROM pg_available_extensions \
                     WHERE name = 'timescaledb'), \
                    EXISTS (SELECT 1 FROM pg_settings WHERE name = $1), \
                    current_user::text, current_database()::text",
            &[&LOADER_SETTING],
        )
        .await
        .map_err(query_error("looking for timescaledb on the server"))?;
    let offered: Option<String> = row.get(0);
    let preloaded: bool = row.get(1);
    let status = match offered {
        None => TimescaleStatus::NotOffered,
        Some(offered) if !is_recent(&offered) => TimescaleStatus::TooOld { offered },
        Some(_) if !preloaded => TimescaleStatus::NotPreloaded,
        Some(_) => match client
            .batch_execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            .await
        {
            Ok(()) => {
                let version = timescaledb_in_use(client).await?.unwrap_or_default();
                tracing::info!(%version, "created the timescaledb extension");
                return Ok(TimescaleStatus::Enabled { version });
            }
            Err(err) if err.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {
                TimescaleStatus::NotPermitted {
                    user: row.get(2),
                    database: row.get(3),
                }
            }
            Err(err) => return Err(query_error("creating the timescaledb extension")(err)),
        },
    };
    if status == TimescaleStatus::NotOffered {
        tracing::info!("{status}");
    } else {
        tracing::warn!("{status}");
    }
    Ok(status)
}

/// Whether `version` (`2.28.3`, `2.11.0-dev`) is at least [`TIMESCALEDB_MIN_VERSION`].
/// A version that does not parse counts as too old.
fn is_recent(version: &str) -> bool {
    match (
        parse_version(version),
        parse_version(TIMESCALEDB_MIN_VERSION),
    ) {
        (Some(found), Some(required)) => found >= required,
        _ => false,
    }
}

/// `major.minor[.patch]`, ignoring anything after the digits of each part.
fn parse_version(version: &str) -> Option<(u32, u32, u32)> {
    let mut parts = version.trim().split('.').map(|part| {
        let digits = part
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(part.len());
        part[..digits].parse::<u32>().ok()
    });
    let major = parts.next()??;
    let minor = parts.next()??;
    let patch = parts.next().flatten().unwrap_or(0);
    Some((major, minor, patch))
}

/// Turns `table` into a hypertable partitioned on `time_column` when
/// TimescaleDB is installed (existing rows are migrated; a table that already
/// is one is left alone), and leaves it a plain table otherwise, saying so in
/// the result and in an `info` log. An installed TimescaleDB older than
/// [`TIMESCALEDB_MIN_VERSION`] is an [`Error::TimescaleTooOld`].
pub async fn create_hypertable(
    client: &Client,
    table: &QualifiedName,
    time_column: &Ident,
) -> Result<TableKind> {
    if timescaledb_in_use(client).await?.is_none() {
        tracing::info!(table = %table, "TimescaleDB is not installed; the table stays a plain table");
        return Ok(TableKind::Plain);
    }
    client
        .execute(
            "SELECT create_hypertable($1::text::regclass, $2::text::name, \
             if_not_exists => TRUE, migrate_data => TRUE)",
            &[&table.to_string(), &time_column.as_str()],
        )
        .await
        .map_err(query_error(format!("turning {table} into a hypertable")))?;
    Ok(TableKind::Hypertable)
}

/// Compression of a hypertable's (or a continuous aggregate's) old chunks: a policy
/// compresses every chunk whose data is older than [`after`](Self::after), storing
/// rows with equal [`segment_by`](Self::segment_by) values together, ordered by
/// time (newest first) within them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compression {
    /// Compress chunks older than this.
    pub after: PgInterval,
    /// `timescaledb.compress_segmentby`: columns whose values are stored once per
    /// group of rows, such as a sensor's tag; may be empty.
    pub segment_by: Vec<Ident>,
}

impl Compression {
    /// Compress after `after`, segmented by nothing.
    pub fn after(after: PgInterval) -> Self {
        Self {
            after,
            segment_by: Vec::new(),
        }
    }

    /// The same, segmented by `columns`.
    pub fn segment_by(mut self, columns: impl IntoIterator<Item = Ident>) -> Self {
        self.segment_by = columns.into_iter().collect();
        self
    }
}

/// Sets compression and its policy on the hypertable `table` as `compression`
/// says, or removes the policy when it is `None`, and returns what changed (one
/// line each; empty when everything already was as asked, so a second call
/// changes nothing).
///
/// - Compression is turned on with `ALTER TABLE … SET (timescaledb.compress,
///   timescaledb.compress_segmentby = …, timescaledb.compress_orderby = '<time> DESC')`;
///   different segment-by columns are set the same way (TimescaleDB applies them
///   to chunks compressed from then on).
/// - The policy is added with `add_compression_policy`; one with another age is
///   removed and added again.
/// - `None` removes the policy; chunks compressed so far stay compressed, and
///   compression stays on for them.
///
/// All changes run in one transaction. Without TimescaleDB this does nothing and
/// says so in an `info` log; with TimescaleDB, a `table` that is not a hypertable
/// is an [`Error::NotAHypertable`].
pub async fn compress_hypertable(
    client: &Client,
    table: &QualifiedName,
    compression: Option<&Compression>,
) -> Result<Vec<String>> {
    if timescaledb_in_use(client).await?.is_none() {
        tracing::info!(table = %table, "TimescaleDB is not installed; the table is not compressed");
        return Ok(Vec::new());
    }
    let row = client
        .query_opt(
            "SELECT h.hypertable_schema::text, h.hypertable_name::text, h.compression_enabled, \
                    d.column_name::text \
             FROM timescaledb_information.hypertables h \
             JOIN timescaledb_information.dimensions d \
               ON d.hypertable_schema = h.hypertable_schema \
              AND d.hypertable_name = h.hypertable_name AND d.dimension_number = 1 \
             WHERE format('%I.%I', h.hypertable_schema, h.hypertable_name)::regclass \
                   = to_regclass($1)",
            &[&table.to_string()],
        )
        .await
        .map_err(query_error(format!("looking up hypertable {table}")))?
        .ok_or_else(|| Error::NotAHypertable {
            table: table.to_string(),
        })?;
    let (schema, name): (String, String) = (row.get(0), row.get(1));
    let target = Compressible {
        alter: format!("ALTER TABLE {table}"),
        relation: table.to_string(),
        time_column: Ident::new(row.get::<_, String>(3))?,
    };
    let names = [(schema.clone(), name.clone()), (schema, name)];
    let state = target.state(client, &names, row.get(2)).await?;
    let plan = target.plan(&state, compression);
    plan.apply(client, &format!("setting compression on {table}"))
        .await
}

/// Statements to run in one transaction, and what they change, one line each.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) statements: Vec<String>,
    pub(crate) changes: Vec<String>,
}

impl Plan {
    pub(crate) fn extend(&mut self, other: Plan) {
        self.statements.extend(other.statements);
        self.changes.extend(other.changes);
    }

    /// Runs the statements in one transaction (one simple-query batch) and
    /// returns the changes.
    pub(crate) async fn apply(self, client: &Client, action: &str) -> Result<Vec<String>> {
        if !self.statements.is_empty() {
            client
                .batch_execute(&self.statements.join(";\n"))
                .await
                .map_err(query_error(action))?;
        }
        Ok(self.changes)
    }
}

/// A hypertable or a continuous aggregate, as far as compressing it goes.
#[derive(Debug)]
pub(crate) struct Compressible {
    /// `ALTER TABLE "t"` or `ALTER MATERIALIZED VIEW "v"`.
    pub(crate) alter: String,
    /// The relation as SQL, for messages and, as a string literal, for the policy functions.
    pub(crate) relation: String,
    /// Its time column: what the compressed rows are ordered by.
    pub(crate) time_column: Ident,
}

/// How a relation's compression is set up now.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct CompressionState {
    pub(crate) enabled: bool,
    pub(crate) segment_by: Vec<String>,
    /// The policy's age in seconds; `Some(None)` for a policy this crate cannot read.
    pub(crate) policy: Option<Option<i64>>,
}

impl Compressible {
    /// Reads the segment-by columns and the policy. `names` are (schema, name) of the
    /// relation, then of the hypertable that holds its chunks (the same for a
    /// hypertable; a continuous aggregate's materialization hypertable):
    /// `timescaledb_information.jobs` lists a continuous aggregate's jobs under one or
    /// the other depending on the TimescaleDB version. `enabled` comes from the
    /// relation's row in `timescaledb_information`.
    pub(crate) async fn state(
        &self,
        client: &Client,
        names: &[(String, String); 2],
        enabled: bool,
    ) -> Result<CompressionState> {
        let relation = &self.relation;
        let [(schema, name), (ht_schema, ht_name)] = names;
        let segment_by = client
            .query(
                "SELECT attname::text FROM timescaledb_information.compression_settings \
                 WHERE hypertable_schema::text = $1 AND hypertable_name::text = $2 \
                   AND segmentby_column_index IS NOT NULL \
                 ORDER BY segmentby_column_index",
                &[ht_schema, ht_name],
            )
            .await
            .map_err(query_error(format!(
                "reading the compression settings of {relation}"
            )))?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let policy = client
            .query_opt(
                "SELECT CASE WHEN jsonb_typeof(config->'compress_after') = 'string' \
                        THEN extract(epoch FROM (config->>'compress_after')::interval)::bigint END \
                 FROM timescaledb_information.jobs \
                 WHERE proc_name = 'policy_compression' \
                   AND ((hypertable_schema::text = $1 AND hypertable_name::text = $2) \
                     OR (hypertable_schema::text = $3 AND hypertable_name::text = $4)) \
                 ORDER BY job_id LIMIT 1",
                &[schema, name, ht_schema, ht_name],
            )
            .await
            .map_err(query_error(format!(
                "reading the compression policy of {relation}"
            )))?
            .map(|row| row.get(0));
        Ok(CompressionState {
            enabled,
            segment_by,
            policy,
        })
    }

    /// What brings `state` to `desired`.
    pub(crate) fn plan(&self, state: &CompressionState, desired: Option<&Compression>) -> Plan {
        let mut plan = Plan::default();
        let regclass = string_literal(&self.relation);
        let Some(desired) = desired else {
            if state.policy.is_some() {
                plan.statements.push(format!(
                    "SELECT remove_compression_policy({regclass}, if_exists => TRUE)"
                ));
                plan.changes.push(format!(
                    "removed the compression policy of {} (chunks compressed so far stay \
                     compressed)",
                    self.relation
                ));
            }
            return plan;
        };
        let wanted: Vec<&str> = desired.segment_by.iter().map(Ident::as_str).collect();
        let segmented = if wanted.is_empty() {
            "nothing".to_owned()
        } else {
            wanted.join(", ")
        };
        if !state.enabled || state.segment_by != wanted {
            let columns = desired
                .segment_by
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            plan.statements.push(format!(
                "{} SET (timescaledb.compress = TRUE, timescaledb.compress_segmentby = {}, \
                 timescaledb.compress_orderby = {})",
                self.alter,
                string_literal(&columns),
                string_literal(&format!("{} DESC", self.time_column)),
            ));
            plan.changes.push(if state.enabled {
                format!(
                    "{} is now segmented by {segmented} (was {}) for chunks compressed from now on",
                    self.relation,
                    if state.segment_by.is_empty() {
                        "nothing".to_owned()
                    } else {
                        state.segment_by.join(", ")
                    }
                )
            } else {
                format!(
                    "turned on compression of {}, segmented by {segmented}",
                    self.relation
                )
            });
        }
        let after = desired.after;
        let wanted_age = i64::try_from(after.as_secs()).ok();
        if state.policy != Some(wanted_age) {
            if state.policy.is_some() {
                plan.statements.push(format!(
                    "SELECT remove_compression_policy({regclass}, if_exists => TRUE)"
                ));
            }
            plan.statements.push(format!(
                "SELECT add_compression_policy({regclass}, compress_after => {}, \
                 if_not_exists => TRUE)",
                after.to_sql()
            ));
            plan.changes.push(format!(
                "{} the compression policy of {}: compress after {after}",
                if state.policy.is_some() {
                    "replaced"
                } else {
                    "added"
                },
                self.relation
            ));
        }
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist() -> Compressible {
        Compressible {
            alter: "ALTER TABLE \"influx_hist\"".into(),
            relation: "\"influx_hist\"".into(),
            time_column: Ident::known("ts"),
        }
    }

    fn week_by_tag() -> Compression {
        Compression::after(PgInterval::parse("7 days").unwrap())
            .segment_by([Ident::known("tag_name")])
    }

    #[test]
    fn versions_compare_by_number() {
        assert_eq!(parse_version("2.28.3"), Some((2, 28, 3)));
        assert_eq!(parse_version("2.11.0-dev"), Some((2, 11, 0)));
        assert_eq!(parse_version("2.9"), Some((2, 9, 0)));
        assert_eq!(parse_version("x.1"), None);
        assert!(is_recent("2.28.3"));
        assert!(is_recent("2.11.0"));
        assert!(is_recent("3.0.0"));
        assert!(!is_recent("2.10.3"));
        assert!(!is_recent("2.9.1"));
        assert!(!is_recent("1.7.5"));
        assert!(!is_recent("unknown"));
    }

    #[test]
    fn statuses_say_what_to_do() {
        let too_old = TimescaleStatus::TooOld {
            offered: "2.9.1".into(),
        }
        .to_string();
        assert!(
            too_old.contains("2.9.1") && too_old.contains("2.11.0"),
            "{too_old}"
        );
        let not_loaded = TimescaleStatus::NotPreloaded.to_string();
        assert!(
            not_loaded.contains("shared_preload_libraries"),
            "{not_loaded}"
        );
        let denied = TimescaleStatus::NotPermitted {
            user: "app".into(),
            database: "ecoanp".into(),
        }
        .to_string();
        assert!(
            denied.contains("\"app\"") && denied.contains("grant the user CREATE"),
            "{denied}"
        );
        let err = Error::TimescaleTooOld {
            version: "2.9.1".into(),
            database: "ecoanp".into(),
            required: TIMESCALEDB_MIN_VERSION,
            needed_for: MIN_VERSION_NEEDED_FOR,
        }
        .to_string();
        assert!(err.contains("ALTER EXTENSION timescaledb UPDATE"), "{err}");
    }

    #[test]
    fn compression_is_turned_on_with_its_policy() {
        let plan = hist().plan(&CompressionState::default(), Some(&week_by_tag()));
        assert_eq!(
            plan.statements,
            [
                "ALTER TABLE \"influx_hist\" SET (timescaledb.compress = TRUE, \
                 timescaledb.compress_segmentby = '\"tag_name\"', \
                 timescaledb.compress_orderby = '\"ts\" DESC')",
                "SELECT add_compression_policy('\"influx_hist\"', \
                 compress_after => INTERVAL '1 week', if_not_exists => TRUE)",
            ]
        );
        assert_eq!(plan.changes.len(), 2);
    }

    #[test]
    fn what_is_already_set_is_left_alone_and_differences_are_mended() {
        let set = CompressionState {
            enabled: true,
            segment_by: vec!["tag_name".into()],
            policy: Some(Some(7 * 86_400)),
        };
        assert_eq!(hist().plan(&set, Some(&week_by_tag())), Plan::default());

        let older = Compression::after(PgInterval::parse("14 days").unwrap());
        let plan = hist().plan(&set, Some(&older));
        assert_eq!(
            plan.statements,
            [
                "ALTER TABLE \"influx_hist\" SET (timescaledb.compress = TRUE, \
                 timescaledb.compress_segmentby = '', timescaledb.compress_orderby = '\"ts\" DESC')",
                "SELECT remove_compression_policy('\"influx_hist\"', if_exists => TRUE)",
                "SELECT add_compression_policy('\"influx_hist\"', \
                 compress_after => INTERVAL '2 weeks', if_not_exists => TRUE)",
            ]
        );
        assert_eq!(
            plan.changes[0],
            "\"influx_hist\" is now segmented by nothing (was tag_name) for chunks compressed \
             from now on"
        );

        let off = hist().plan(&set, None);
        assert_eq!(
            off.statements,
            ["SELECT remove_compression_policy('\"influx_hist\"', if_exists => TRUE)"]
        );
        assert_eq!(
            hist().plan(&CompressionState::default(), None),
            Plan::default()
        );
    }
}
