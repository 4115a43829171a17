//! The pooled connection resource and its configuration.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{
    Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime, TimeoutType,
};
use serde::{Deserialize, Deserializer};
use tokio_postgres::config::Host;
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

use crate::error::{describe, query_error, Error, Result};
use crate::ident::Ident;

/// The environment variable [`PostgresResource::from_env`] reads.
pub const DATABASE_URL: &str = "DATABASE_URL";

const DEFAULT_HOST: &str = "127.0.0.1";
const DEFAULT_PORT: u16 = 5432;
const DEFAULT_USER: &str = "postgres";
const DEFAULT_POOL_SIZE: usize = 8;
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);
/// Databases tried, in order, when [`PostgresResource::ensure_database`] needs
/// a connection that does not depend on the missing database.
const MAINTENANCE_DATABASES: [&str; 2] = ["postgres", "template1"];

/// How the connection pool behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolOptions {
    /// Most connections open at once (at least 1). Default 8.
    pub size: usize,
    /// How long [`PostgresResource::get`] waits for a free connection when all
    /// of them are in use. Default 30 s.
    pub acquire_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            size: DEFAULT_POOL_SIZE,
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
        }
    }
}

/// Connection settings by field, for config files (serde) or code.
///
/// Every field has a default: host `127.0.0.1`, port `5432`, database
/// `postgres`, user `postgres`, no password, a pool of 8 connections, a 5 s
/// connect timeout and a 30 s wait for a free pooled connection. Durations are
/// written in whole seconds in config files. `Debug` masks the password.
///
/// ```
/// use dagrs_postgres::PostgresConfig;
/// let config: PostgresConfig = serde_json::from_str(
///     r#"{ "dbname": "ecoanp", "password": "secret", "pool_size": 4, "connect_timeout": 3 }"#,
/// )?;
/// assert_eq!(config.port, 5432);
/// assert!(!format!("{config:?}").contains("secret"));
/// let pg = config.build()?;
/// assert_eq!(pg.masked_url(), "postgres://postgres:***@127.0.0.1:5432/ecoanp");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresConfig {
    /// Host name, IP address, or a directory holding the server's Unix socket
    /// (a path starting with `/`).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Database name.
    pub dbname: String,
    /// User name.
    pub user: String,
    /// Password, if the server asks for one.
    pub password: Option<String>,
    /// Most connections open at once (at least 1).
    pub pool_size: usize,
    /// How long opening one connection may take (seconds in config files).
    #[serde(deserialize_with = "seconds")]
    pub connect_timeout: Duration,
    /// How long [`PostgresResource::get`] waits for a free connection when all
    /// are in use (seconds in config files).
    #[serde(deserialize_with = "seconds")]
    pub acquire_timeout: Duration,
}

fn seconds<'de, D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Duration, D::Error> {
    u64::deserialize(deserializer).map(Duration::from_secs)
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            host: DEFAULT_HOST.to_owned(),
            port: DEFAULT_PORT,
            dbname: DEFAULT_USER.to_owned(),
            user: DEFAULT_USER.to_owned(),
            password: None,
            pool_size: DEFAULT_POOL_SIZE,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
        }
    }
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("dbname", &self.dbname)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("acquire_timeout", &self.acquire_timeout)
            .finish()
    }
}

impl PostgresConfig {
    /// Builds the resource. No connection is opened until the first
    /// [`PostgresResource::get`].
    pub fn build(&self) -> Result<PostgresResource> {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.host)
            .port(self.port)
            .dbname(&self.dbname)
            .user(&self.user)
            .connect_timeout(self.connect_timeout);
        if let Some(password) = &self.password {
            config.password(password);
        }
        PostgresResource::from_pg_config(
            config,
            PoolOptions {
                size: self.pool_size,
                acquire_timeout: self.acquire_timeout,
            },
        )
    }
}

/// A pooled PostgreSQL connection resource (deadpool-postgres, no TLS).
///
/// Cheap to clone (one `Arc`), `Send + Sync + 'static`, so dagrs can hand it
/// to assets as `Res<PostgresResource>`. Connections open lazily on
/// [`get`](Self::get); an unreachable server fails within the connect
/// timeout (5 s unless set), never hangs. `Debug`, [`masked_url`](Self::masked_url)
/// and every error show the connection as `postgres://user:***@host:port/db`.
///
/// ```no_run
/// # async fn demo() -> Result<(), dagrs_postgres::Error> {
/// use dagrs_postgres::PostgresResource;
/// let pg = PostgresResource::from_env()?; // DATABASE_URL
/// pg.ensure_database().await?;
/// let client = pg.get().await?;
/// let one: i32 = client.query_one("SELECT 1", &[]).await.map(|row| row.get(0)).unwrap();
/// # let _ = one; Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresResource {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    config: tokio_postgres::Config,
    options: PoolOptions,
    connect_timeout: Duration,
    target: Target,
}

/// Where a connection goes, for messages: never holds the password.
struct Target {
    /// `postgres://user:***@host:port/db`.
    url: String,
    /// `host:port/db`.
    server: String,
    user: String,
    dbname: String,
}

impl Target {
    fn of(config: &tokio_postgres::Config) -> Self {
        let user = config.get_user().unwrap_or(DEFAULT_USER).to_owned();
        let dbname = config.get_dbname().unwrap_or(&user).to_owned();
        let ports = config.get_ports();
        let port_at = |i: usize| {
            ports
                .get(i)
                .or_else(|| ports.first())
                .copied()
                .unwrap_or(DEFAULT_PORT)
        };
        let hosts: Vec<String> = if config.get_hosts().is_empty() {
            config
                .get_hostaddrs()
                .iter()
                .enumerate()
                .map(|(i, addr)| match addr {
                    std::net::IpAddr::V6(v6) => format!("[{v6}]:{}", port_at(i)),
                    std::net::IpAddr::V4(v4) => format!("{v4}:{}", port_at(i)),
                })
                .collect()
        } else {
            config
                .get_hosts()
                .iter()
                .enumerate()
                .map(|(i, host)| {
                    let name = match host {
                        Host::Tcp(name) if name.contains(':') => format!("[{name}]"),
                        Host::Tcp(name) => name.clone(),
                        Host::Unix(path) => path.display().to_string(),
                    };
                    format!("{name}:{}", port_at(i))
                })
                .collect()
        };
        let hosts = hosts.join(",");
        let password = if config.get_password().is_some() {
            ":***"
        } else {
            ""
        };
        Self {
            url: format!("postgres://{user}{password}@{hosts}/{dbname}"),
            server: format!("{hosts}/{dbname}"),
            user,
            dbname,
        }
    }
}

impl PostgresResource {
    /// A resource for a libpq-style URL (`postgres://user:password@host:port/db?…`)
    /// or key-value string (`host=… user=…`), with a pool of 8.
    ///
    /// Missing parts default to host `127.0.0.1`, port 5432, user `postgres`,
    /// a database named like the user, and a 5 s connect timeout.
    pub fn from_url(url: &str) -> Result<Self> {
        Self::from_url_with(url, PoolOptions::default())
    }

    /// Like [`from_url`](Self::from_url), with pool options.
    pub fn from_url_with(url: &str, options: PoolOptions) -> Result<Self> {
        if url.trim().is_empty() {
            return Err(Error::InvalidUrl {
                url: "\"\"".to_owned(),
                reason: "the connection string is empty".to_owned(),
            });
        }
        let config = tokio_postgres::Config::from_str(url).map_err(|source| Error::InvalidUrl {
            url: unparsed(url),
            reason: describe(&source),
        })?;
        Self::from_pg_config(config, options)
    }

    /// A resource for the URL in the `DATABASE_URL` environment variable.
    pub fn from_env() -> Result<Self> {
        match std::env::var(DATABASE_URL) {
            Ok(url) if url.trim().is_empty() => Err(Error::InvalidUrl {
                url: format!("${DATABASE_URL}"),
                reason: "the variable is set but empty".to_owned(),
            }),
            Ok(url) => Self::from_url(&url),
            Err(std::env::VarError::NotPresent) => Err(Error::MissingEnv { var: DATABASE_URL }),
            Err(std::env::VarError::NotUnicode(_)) => Err(Error::InvalidUrl {
                url: format!("${DATABASE_URL}"),
                reason: "the variable is not valid UTF-8".to_owned(),
            }),
        }
    }

    /// A resource for a `tokio_postgres` configuration, for settings the URL
    /// and [`PostgresConfig`] forms do not cover. Missing parts get the same
    /// defaults as [`from_url`](Self::from_url).
    pub fn from_pg_config(
        mut config: tokio_postgres::Config,
        options: PoolOptions,
    ) -> Result<Self> {
        if options.size == 0 {
            return Err(Error::InvalidSetting {
                setting: "pool_size",
                value: "0".to_owned(),
                reason: "the pool needs room for at least 1 connection",
            });
        }
        if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
            config.host(DEFAULT_HOST);
        }
        if config.get_user().is_none() {
            config.user(DEFAULT_USER);
        }
        let connect_timeout = match config.get_connect_timeout() {
            Some(timeout) if !timeout.is_zero() => *timeout,
            _ => DEFAULT_CONNECT_TIMEOUT,
        };
        config.connect_timeout(connect_timeout);
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let target = Target::of(&config);
        let pool = Pool::builder(manager)
            .max_size(options.size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.acquire_timeout))
            .create_timeout(Some(connect_timeout))
            .recycle_timeout(Some(connect_timeout))
            .build()
            .map_err(|err| Error::InvalidSetting {
                setting: "pool",
                value: target.url.clone(),
                reason: match err {
                    deadpool_postgres::BuildError::NoRuntimeSpecified => {
                        "timeouts need the tokio runtime"
                    }
                },
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                config,
                options,
                connect_timeout,
                target,
            }),
        })
    }

    /// A pooled client; it goes back to the pool when dropped. It derefs to
    /// [`tokio_postgres::Client`], so it works with [`upsert`](crate::upsert)
    /// and the other helpers of this crate.
    pub async fn get(&self) -> Result<deadpool_postgres::Client> {
        self.inner
            .pool
            .get()
            .await
            .map_err(|err| self.inner.pool_error(err))
    }

    /// Creates the configured database when it does not exist, and tells
    /// whether it did. The database name is quoted as an [`Ident`]; the
    /// connection for `CREATE DATABASE` goes to the `postgres` maintenance
    /// database on the same server (or `template1` when that is missing).
    pub async fn ensure_database(&self) -> Result<bool> {
        match self.get().await {
            Ok(_) => return Ok(false),
            Err(Error::DatabaseNotFound { .. }) => {}
            Err(other) => return Err(other),
        }
        let dbname = Ident::new(self.inner.target.dbname.clone())?;
        let client = self.maintenance_client().await?;
        let created = client
            .batch_execute(&format!("CREATE DATABASE {dbname}"))
            .await;
        match created {
            Ok(()) => {
                tracing::info!(database = %dbname, server = %self.inner.target.server, "created database");
                Ok(true)
            }
            // Someone else created it in the meantime (two CREATE DATABASE racing may also
            // meet on the catalog's unique index).
            Err(err)
                if err.code() == Some(&SqlState::DUPLICATE_DATABASE)
                    || err.code() == Some(&SqlState::UNIQUE_VIOLATION) =>
            {
                Ok(false)
            }
            Err(err) => Err(query_error(format!(
                "creating database {dbname} on {}",
                self.inner.target.server
            ))(err)),
        }
    }

    /// A connection to the `postgres` maintenance database, or to `template1`
    /// when `postgres` does not exist.
    async fn maintenance_client(&self) -> Result<tokio_postgres::Client> {
        match self.connect_directly(MAINTENANCE_DATABASES[0]).await {
            Err(Error::DatabaseNotFound { .. }) => {
                self.connect_directly(MAINTENANCE_DATABASES[1]).await
            }
            other => other,
        }
    }

    /// One connection outside the pool, to `dbname` on the same server.
    async fn connect_directly(&self, dbname: &str) -> Result<tokio_postgres::Client> {
        let mut config = self.inner.config.clone();
        config.dbname(dbname);
        let target = Target::of(&config);
        match tokio::time::timeout(self.inner.connect_timeout, config.connect(NoTls)).await {
            Ok(Ok((client, connection))) => {
                tokio::spawn(async move {
                    if let Err(err) = connection.await {
                        tracing::debug!(error = %err, "maintenance connection ended");
                    }
                });
                Ok(client)
            }
            Ok(Err(err)) => Err(backend_error(&target, err)),
            Err(_elapsed) => Err(Error::Connect {
                server: target.server,
                url: target.url,
                reason: format!("no answer within {:?}", self.inner.connect_timeout),
                source: None,
            }),
        }
    }

    /// The connection URL with the password masked: `postgres://user:***@host:port/db`.
    pub fn masked_url(&self) -> &str {
        &self.inner.target.url
    }

    /// The database this resource connects to.
    pub fn dbname(&self) -> &str {
        &self.inner.target.dbname
    }

    /// The underlying deadpool pool, e.g. for [`status`](deadpool_postgres::Pool::status).
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// The connection settings, for connections outside the pool (a `LISTEN`er).
    pub(crate) fn pg_config(&self) -> &tokio_postgres::Config {
        &self.inner.config
    }
}

impl fmt::Debug for PostgresResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self.inner.pool.status();
        f.debug_struct("PostgresResource")
            .field("url", &self.inner.target.url)
            .field("pool_size", &self.inner.options.size)
            .field("open", &status.size)
            .field("idle", &status.available)
            .finish()
    }
}

impl Inner {
    fn pool_error(&self, err: PoolError) -> Error {
        let target = &self.target;
        let connect = |reason: String| Error::Connect {
            server: target.server.clone(),
            url: target.url.clone(),
            reason,
            source: None,
        };
        match err {
            PoolError::Backend(err) => backend_error(target, err),
            PoolError::Timeout(TimeoutType::Wait) => Error::PoolExhausted {
                server: target.server.clone(),
                url: target.url.clone(),
                pool_size: self.options.size,
                waited: self.options.acquire_timeout,
            },
            PoolError::Timeout(TimeoutType::Create) => {
                connect(format!("no answer within {:?}", self.connect_timeout))
            }
            PoolError::Timeout(TimeoutType::Recycle) => connect(format!(
                "a pooled connection gave no answer within {:?}",
                self.connect_timeout
            )),
            other => connect(other.to_string().to_lowercase()),
        }
    }
}

/// Sorts a driver error from connecting into the matching variant.
fn backend_error(target: &Target, err: tokio_postgres::Error) -> Error {
    let server = target.server.clone();
    let url = target.url.clone();
    let code = err.code().cloned();
    if code == Some(SqlState::INVALID_PASSWORD)
        || code == Some(SqlState::INVALID_AUTHORIZATION_SPECIFICATION)
        // The client's own authentication errors (e.g. the server asks for a
        // password and none is configured) carry no SQLSTATE.
        || (code.is_none() && err.to_string() == "authentication error")
    {
        return Error::Authentication {
            server,
            url,
            user: target.user.clone(),
            reason: describe(&err),
            source: err,
        };
    }
    if code == Some(SqlState::INVALID_CATALOG_NAME) {
        return Error::DatabaseNotFound {
            server,
            url,
            dbname: target.dbname.clone(),
            source: err,
        };
    }
    Error::Connect {
        server,
        url,
        reason: connect_reason(&err),
        source: Some(err),
    }
}

/// A short reason for a failed connection: the I/O error when there is one
/// (`connection refused`), else the server's or driver's message.
fn connect_reason(err: &tokio_postgres::Error) -> String {
    let mut source = StdError::source(err);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<io::Error>() {
            return match io.kind() {
                io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
                io::ErrorKind::TimedOut => "connection timed out".to_owned(),
                _ => io.to_string().to_lowercase(),
            };
        }
        source = cause.source();
    }
    describe(err)
}

/// What may be shown of a connection string that does not parse: its form and length,
/// never its text — where the password sits in a malformed string cannot be known.
fn unparsed(text: &str) -> String {
    let form = match text.split_once("://") {
        Some((scheme, _))
            if !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')) =>
        {
            format!("a {scheme}:// URL")
        }
        _ if text.contains('=') => "a key-value connection string".to_owned(),
        _ => "a connection string".to_owned(),
    };
    format!("({form} of {} characters, not shown)", text.chars().count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_is_send_sync_static_and_cheap_to_clone() {
        fn assert_traits<T: Send + Sync + Clone + 'static>() {}
        assert_traits::<PostgresResource>();
        let pg = PostgresResource::from_url("postgres://u:pw@h:1/d").unwrap();
        let copy = pg.clone();
        assert!(Arc::ptr_eq(&pg.inner, &copy.inner));
    }

    #[test]
    fn masked_urls_never_show_the_password() {
        let cases = [
            (
                "postgres://u:s3cret@db.example:6543/app",
                "postgres://u:***@db.example:6543/app",
            ),
            ("postgresql://u@h/app", "postgres://u@h:5432/app"),
            ("postgres://h/app", "postgres://postgres@h:5432/app"),
            ("postgres:///app", "postgres://postgres@127.0.0.1:5432/app"),
            (
                "host=h user=u password=s3cret dbname=d",
                "postgres://u:***@h:5432/d",
            ),
            (
                "postgres://u:s3cret@[::1]:5433/d",
                "postgres://u:***@[::1]:5433/d",
            ),
            (
                "postgres://u:s3cret@a:1,b:2/d",
                "postgres://u:***@a:1,b:2/d",
            ),
            ("postgres://u@h", "postgres://u@h:5432/u"),
        ];
        for (url, masked) in cases {
            let pg = PostgresResource::from_url(url).unwrap();
            assert_eq!(pg.masked_url(), masked, "{url}");
            let debug = format!("{pg:?}");
            assert!(
                debug.contains(masked) && !debug.contains("s3cret"),
                "{debug}"
            );
        }
    }

    #[test]
    fn unparseable_urls_are_never_echoed() {
        let cases = [
            ("postgres://u:s3cret@h:notaport/d", "a postgres:// URL"),
            ("postgres://u:s3/cr?et@h:notaport/d", "a postgres:// URL"),
            (
                "host=h password=s3cret port=x",
                "a key-value connection string",
            ),
            (
                "host=h password = 's3 cret' port=x",
                "a key-value connection string",
            ),
            (
                "host=h port=x password=s3cret",
                "a key-value connection string",
            ),
            (
                "postgres://h/d?password=s3cret&sslmode=bogus",
                "a postgres:// URL",
            ),
        ];
        for (url, form) in cases {
            let err = PostgresResource::from_url(url).unwrap_err();
            let message = err.to_string();
            assert!(matches!(err, Error::InvalidUrl { .. }), "{err:?}");
            assert!(message.contains(form), "{message}");
            assert!(!message.contains("s3"), "{message}");
        }
    }

    #[test]
    fn config_defaults_debug_and_validation() {
        let config = PostgresConfig::default();
        assert_eq!(
            (
                config.host.as_str(),
                config.port,
                config.user.as_str(),
                config.pool_size
            ),
            ("127.0.0.1", 5432, "postgres", 8)
        );
        let config: PostgresConfig = serde_json::from_str(
            r#"{"host":"db","dbname":"ecoanp","password":"s3cret","connect_timeout":2}"#,
        )
        .unwrap();
        assert_eq!(config.connect_timeout, Duration::from_secs(2));
        let debug = format!("{config:?}");
        assert!(
            debug.contains("\"***\"") && !debug.contains("s3cret"),
            "{debug}"
        );
        assert_eq!(
            config.build().unwrap().masked_url(),
            "postgres://postgres:***@db:5432/ecoanp"
        );
        let unknown = serde_json::from_str::<PostgresConfig>(r#"{"hots":"db"}"#).unwrap_err();
        assert!(
            unknown.to_string().contains("unknown field `hots`"),
            "{unknown}"
        );
        let empty_pool = PostgresConfig {
            pool_size: 0,
            ..PostgresConfig::default()
        };
        let err = empty_pool.build().unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid setting `pool_size` = 0: the pool needs room for at least 1 connection"
        );
    }
}
