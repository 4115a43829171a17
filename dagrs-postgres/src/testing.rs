//! Throwaway databases for tests: one fresh database per test, dropped when the test ends,
//! pass or fail, so tests run in parallel and leave nothing behind.
//!
//! ```no_run
//! # async fn demo() {
//! use dagrs_postgres::testing::TestDatabase;
//! let db = TestDatabase::create().await;
//! let client = db.client().await;
//! client.batch_execute("CREATE TABLE t (x int)").await.unwrap();
//! // `db` is dropped at the end of the test, and its database with it.
//! # }
//! ```
//!
//! [`readings_table_sql`] is the one definition of a readings table (`influx_hist` in the
//! EcoAnP example), shared by this crate's tests, the example and the ingest bench.
//!
//! The server is `DAGRS_TEST_PG` (a URL to any database on it, used for
//! `CREATE DATABASE` / `DROP DATABASE`), default
//! `postgres://postgres@127.0.0.1:5432/postgres`. When it is unreachable the
//! test panics saying so: tests never pass without a server.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::{PostgresResource, QualifiedName};
use tokio_postgres::{Client, Config, NoTls};

const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
static NEXT: AtomicU32 = AtomicU32::new(0);

/// A database of its own for one test.
pub struct TestDatabase {
    /// The database's name.
    pub name: String,
    /// A URL that reaches it.
    pub url: String,
    /// A pool on it.
    pub pg: PostgresResource,
}

impl TestDatabase {
    /// Creates an empty database with a unique name.
    pub async fn create() -> Self {
        let db = Self::reserve();
        admin_client()
            .await
            .batch_execute(&format!("CREATE DATABASE \"{}\"", db.name))
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {}: {e}", db.name));
        db
    }

    /// A unique name, not created yet, that is still dropped at the end
    /// (for tests that create the database themselves).
    pub fn reserve() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let name = format!(
            "dagrs_test_{}_{}_{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut config: Config = admin_url().parse().expect("DAGRS_TEST_PG is a valid URL");
        config.dbname(&name);
        let url = url_of(&config);
        let pg = PostgresResource::from_pg_config(config, Default::default())
            .expect("a pool on the test database");
        Self { name, url, pg }
    }

    /// A pooled client on the database.
    pub async fn client(&self) -> deadpool_postgres::Client {
        self.pg
            .get()
            .await
            .unwrap_or_else(|e| panic!("cannot connect to test database {}: {e}", self.name))
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop is not async: drop the database from a thread with a runtime of its own.
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime to drop the test database")
                .block_on(async {
                    admin_client()
                        .await
                        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                        .await
                })
        })
        .join();
        let failure = match dropped {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(_) => "the cleanup thread panicked".to_owned(),
        };
        let message = format!("cannot drop test database {}: {failure}", self.name);
        if std::thread::panicking() {
            eprintln!("{message}");
        } else {
            panic!("{message}");
        }
    }
}

/// `CREATE TABLE IF NOT EXISTS` for a table of time-series readings in the shape the
/// [`BucketAggregate`](crate::BucketAggregate) defaults expect (the EcoAnP `influx_hist`):
/// one row per `(ts, tag_name)`, a nullable `value`, `qc` and `meta`, and an `updated_at`
/// that upserts refresh.
///
/// ```
/// use dagrs_postgres::{testing::readings_table_sql, QualifiedName};
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

fn admin_url() -> String {
    std::env::var("DAGRS_TEST_PG").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned())
}

/// A connection for creating and dropping databases; panics when the server is unreachable.
async fn admin_client() -> Client {
    let url = admin_url();
    let (client, connection) = tokio_postgres::connect(&url, NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is unreachable at {url} ({e}); these tests need a running server: \
             start it (e.g. `pg_ctlcluster 15 main start`) or point DAGRS_TEST_PG at one"
            )
        });
    tokio::spawn(connection);
    client
}

fn url_of(config: &Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("postgres");
    let dbname = config.get_dbname().unwrap_or(user);
    format!("postgres://{user}@{host}:{port}/{dbname}")
}
