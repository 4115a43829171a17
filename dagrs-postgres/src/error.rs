//! The crate's one error type.

use std::error::Error as StdError;
use std::time::Duration;

/// Everything that can go wrong in `dagrs-postgres`.
///
/// Messages are lowercase, say what is wrong, where, and how to fix it.
/// Connection strings in messages always have their password masked
/// (`postgres://user:***@host:port/db`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `pg_transaction` was asked of a step that no PostgreSQL worker runs.
    #[error(
        "this step has no PostgreSQL transaction: `pg_transaction` works in steps run by a \
         worker of an instance on PgStorage (`PgStorage::instance`, `--launcher queue`); run \
         the asset there, or write through a `PostgresResource`"
    )]
    NoStepTransaction,

    /// A name meant as an SQL identifier breaks a rule (see [`Ident`](crate::Ident)).
    #[error("invalid SQL identifier {value:?}: {rule}")]
    InvalidIdent {
        /// The rejected name.
        value: String,
        /// The rule it breaks.
        rule: &'static str,
    },

    /// A bucket interval is not one of the accepted forms (see [`PgInterval`](crate::PgInterval)).
    #[error(
        "invalid bucket interval {value:?}: {reason}; use a positive whole number and a unit, \
         e.g. \"30 seconds\", \"5 minutes\", \"1 hour\", \"1 day\", \"2 weeks\" \
         (or 30s, 5m, 1h, 1d, 2w)"
    )]
    InvalidInterval {
        /// The rejected text.
        value: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// An environment variable that names the database is not set.
    #[error(
        "environment variable {var} is not set; set it to a PostgreSQL URL such as \
         postgres://user:password@127.0.0.1:5432/dbname"
    )]
    MissingEnv {
        /// The variable, e.g. `DATABASE_URL`.
        var: &'static str,
    },

    /// A connection URL could not be parsed.
    #[error("invalid PostgreSQL URL {url}: {reason}; expected postgres://user:password@host:port/dbname")]
    InvalidUrl {
        /// The URL as given, password masked.
        url: String,
        /// What the parser rejected.
        reason: String,
    },

    /// A setting has a value that cannot work.
    #[error("invalid setting `{setting}` = {value}: {reason}")]
    InvalidSetting {
        /// The setting's name, e.g. `pool_size` or `chunk_size`.
        setting: &'static str,
        /// The rejected value.
        value: String,
        /// What the setting needs.
        reason: &'static str,
    },

    /// The server could not be reached, or the connection broke while it was set up.
    #[error(
        "cannot connect to PostgreSQL at {server} ({url}): {reason}; \
         check that the server is running and DATABASE_URL is right"
    )]
    Connect {
        /// `host:port/dbname`.
        server: String,
        /// The connection URL, password masked.
        url: String,
        /// What went wrong, e.g. `connection refused`.
        reason: String,
        /// The driver's error, when there is one.
        #[source]
        source: Option<tokio_postgres::Error>,
    },

    /// The server refused the user or the password.
    #[error(
        "PostgreSQL at {server} ({url}) refused to log in user {user:?}: {reason}; \
         check the user name and password in DATABASE_URL"
    )]
    Authentication {
        /// `host:port/dbname`.
        server: String,
        /// The connection URL, password masked.
        url: String,
        /// The user that was refused.
        user: String,
        /// The server's message.
        reason: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },

    /// The configured database does not exist on the server.
    #[error(
        "database {dbname:?} does not exist on PostgreSQL at {server} ({url}); create it \
         (PostgresResource::ensure_database does) or fix the database name in DATABASE_URL"
    )]
    DatabaseNotFound {
        /// `host:port/dbname`.
        server: String,
        /// The connection URL, password masked.
        url: String,
        /// The missing database.
        dbname: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },

    /// Every pooled connection stayed busy for longer than the pool's wait timeout.
    #[error(
        "timed out after {waited:?} waiting for a free connection from the pool of {pool_size} \
         to PostgreSQL at {server} ({url}); raise pool_size or return clients to the pool sooner"
    )]
    PoolExhausted {
        /// `host:port/dbname`.
        server: String,
        /// The connection URL, password masked.
        url: String,
        /// The pool's size.
        pool_size: usize,
        /// How long the caller waited.
        waited: Duration,
    },

    /// A statement failed on the server.
    #[error("{action} failed: {reason}")]
    Query {
        /// What was being done, e.g. `copying rows into "public"."influx_hist"`.
        action: String,
        /// The server's message, with its detail and hint when it gave them.
        reason: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },

    /// A row's value could not be encoded for its column.
    #[error(
        "cannot encode column {column:?} of row {row} for {table}: {source}; \
         make the Rust value's type match the column's PostgreSQL type"
    )]
    Encode {
        /// The target table.
        table: String,
        /// The column whose value failed.
        column: String,
        /// The row's position in the input, counting from 0.
        row: u64,
        /// The encoder's error.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },

    /// A [`CopyRow`](crate::CopyRow) implementation pushed the wrong number of values.
    #[error(
        "row {row} for {table} has {written} values but the row type declares {declared} \
         columns; CopyRow::write_row must push exactly one value per name in CopyRow::COLUMNS"
    )]
    ColumnCount {
        /// The target table.
        table: String,
        /// The row's position in the input, counting from 0.
        row: u64,
        /// Values pushed.
        written: usize,
        /// Columns declared.
        declared: usize,
    },

    /// A key column is not among the columns the row type writes.
    #[error(
        "key column {column:?} is not one of the columns {columns:?} written into {table}; \
         add it to CopyRow::COLUMNS or fix the key list"
    )]
    UnknownKeyColumn {
        /// The target table.
        table: String,
        /// The key column that is missing.
        column: String,
        /// The columns the row type writes.
        columns: Vec<String>,
    },

    /// The input holds two rows with the same key.
    #[error(
        "the rows written to {table} contain the same key ({keys}) more than once; nothing was \
         written; keep one row per key before writing"
    )]
    DuplicateKey {
        /// The target table.
        table: String,
        /// The key columns.
        keys: String,
    },

    /// A direct COPY met a row that already exists.
    #[error(
        "direct COPY into {table} met a key that already exists: {reason}; nothing was written; \
         use WriteMode::Upsert or WriteMode::Auto when the table may hold these keys"
    )]
    Conflict {
        /// The target table.
        table: String,
        /// The server's message.
        reason: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },

    /// Rows given to [`Upsert::replace_window`](crate::Upsert::replace_window) lie outside
    /// the window they replace; nothing was written.
    #[error(
        "{outside} of the {rows} rows written to {table} have {column} outside the window \
         being replaced ({start} <= {column} < {end}), or NULL; nothing was written; pass only \
         rows inside the window, or widen the window"
    )]
    OutsideWindow {
        /// The target table.
        table: String,
        /// The window's column, quoted.
        column: String,
        /// Start of the window (inclusive).
        start: chrono::DateTime<chrono::Utc>,
        /// End of the window (exclusive).
        end: chrono::DateTime<chrono::Utc>,
        /// Input rows outside the window.
        outside: u64,
        /// All input rows.
        rows: u64,
    },

    /// A write into compressed TimescaleDB chunks needed more rows decompressed than
    /// TimescaleDB allows one transaction.
    #[error(
        "writing into {table} stopped at TimescaleDB's limit on rows decompressed per \
         transaction: {reason}; nothing was written; write fewer rows into compressed time \
         ranges per call, or raise the limit for the call with SET LOCAL \
         timescaledb.max_tuples_decompressed_per_dml_transaction = 0 in a transaction \
         passed to Upsert::execute_in"
    )]
    DecompressionLimit {
        /// The target table.
        table: String,
        /// The server's message.
        reason: String,
    },

    /// A name given as an aggregate is something else, or nothing.
    #[error(
        "{view} is not a materialized view or continuous aggregate: {found}; create it with \
         BucketAggregate::create, or pick another name"
    )]
    NotAnAggregate {
        /// The view name as given.
        view: String,
        /// What was found instead.
        found: &'static str,
    },

    /// The database has a TimescaleDB older than the features this crate uses need;
    /// nothing was changed.
    #[error(
        "TimescaleDB {version} is installed in database {database:?}, but dagrs-postgres needs \
         {required} or newer (for {needed_for}); nothing was changed; install a newer \
         TimescaleDB on the server and run ALTER EXTENSION timescaledb UPDATE in the database"
    )]
    TimescaleTooOld {
        /// The installed version.
        version: String,
        /// The database.
        database: String,
        /// The oldest version accepted ([`TIMESCALEDB_MIN_VERSION`](crate::TIMESCALEDB_MIN_VERSION)).
        required: &'static str,
        /// The features that need it.
        needed_for: &'static str,
    },

    /// A table that should be a hypertable is a plain table.
    #[error(
        "{table} is not a TimescaleDB hypertable, so its chunks cannot be compressed; turn it \
         into one first (create_hypertable)"
    )]
    NotAHypertable {
        /// The table as given.
        table: String,
    },

    /// A dagrs store was written by a newer dagrs-postgres than this one; it was left as it is.
    #[error(
        "the dagrs store in schema {schema} of {url} is at schema version {found}, but this \
         dagrs-postgres knows versions up to {supported} only; nothing was changed; upgrade \
         dagrs-postgres in this program, or give it a schema of its own"
    )]
    SchemaTooNew {
        /// The connection URL, password masked.
        url: String,
        /// The store's schema, quoted.
        schema: String,
        /// The version the store is at.
        found: u32,
        /// The newest version this build knows ([`SCHEMA_VERSION`](crate::SCHEMA_VERSION)).
        supported: u32,
    },
}

/// A `Result` whose error is this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The server's message, detail and hint, or the driver's message when the
/// error did not come from the server.
pub(crate) fn describe(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => {
            let mut text = db.message().to_owned();
            if let Some(detail) = db.detail() {
                text.push_str(" (");
                text.push_str(detail);
                text.push(')');
            }
            if let Some(hint) = db.hint() {
                text.push_str("; hint: ");
                text.push_str(hint);
            }
            text
        }
        None => {
            let mut text = err.to_string();
            let mut source = StdError::source(err);
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
            }
            text
        }
    }
}

/// Wraps a driver error from a statement into [`Error::Query`].
pub(crate) fn query_error(
    action: impl Into<String>,
) -> impl FnOnce(tokio_postgres::Error) -> Error {
    let action = action.into();
    move |source| Error::Query {
        action,
        reason: describe(&source),
        source,
    }
}
