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
//! The server is `DAGRS_TEST_PG` (a URL to any database on it, used for
//! `CREATE DATABASE` / `DROP DATABASE`), default
//! `postgres://postgres@127.0.0.1:5432/postgres`, or the one given to
//! [`TestDatabase::create_on`]. When it is unreachable the test panics saying
//! so: tests never pass without a server.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::PostgresResource;
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
    /// A URL to another database of the same server, to create and drop it from.
    admin_url: String,
}

impl TestDatabase {
    /// Creates an empty database with a unique name on the `DAGRS_TEST_PG` server.
    pub async fn create() -> Self {
        Self::create_on(&admin_url()).await
    }

    /// Creates an empty database with a unique name on the server of `admin_url`
    /// (a URL to any database there, e.g. a [`TestServer`]'s `url("postgres")`).
    pub async fn create_on(admin_url: &str) -> Self {
        let db = Self::reserve_on(admin_url);
        admin_client(&db.admin_url)
            .await
            .batch_execute(&format!("CREATE DATABASE \"{}\"", db.name))
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {}: {e}", db.name));
        db
    }

    /// A unique name, not created yet, that is still dropped at the end
    /// (for tests that create the database themselves).
    pub fn reserve() -> Self {
        Self::reserve_on(&admin_url())
    }

    fn reserve_on(admin_url: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let name = format!(
            "dagrs_test_{}_{}_{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut config: Config = admin_url
            .parse()
            .unwrap_or_else(|e| panic!("the test server's URL {admin_url}: {e}"));
        config.dbname(&name);
        let url = url_of(&config);
        let pg = PostgresResource::from_pg_config(config, Default::default())
            .expect("a pool on the test database");
        Self {
            name,
            url,
            pg,
            admin_url: admin_url.to_owned(),
        }
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
        let (name, admin_url) = (self.name.clone(), self.admin_url.clone());
        // Drop is not async: drop the database from a thread with a runtime of its own.
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime to drop the test database")
                .block_on(async {
                    admin_client(&admin_url)
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

fn admin_url() -> String {
    std::env::var("DAGRS_TEST_PG").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned())
}

/// A connection for creating and dropping databases; panics when the server is unreachable.
async fn admin_client(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
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

/// A PostgreSQL server of a test's own — `initdb` into a temp dir, its own port, `pg_ctl` to
/// start, stop and restart it — for tests that stop, restart or break the server, which must
/// never touch the shared one other tests use in parallel. Stopped and removed when dropped.
///
/// The server's programs come from `DAGRS_PG_BIN`, else `pg_config --bindir`, else the
/// newest `/usr/lib/postgresql/*/bin`. Run as root, they run as the `postgres` user (initdb
/// refuses root). A machine without them fails the test, saying so.
pub struct TestServer {
    dir: tempfile::TempDir,
    port: u16,
    bin: std::path::PathBuf,
    run_as: Option<String>,
}

impl TestServer {
    /// Creates and starts a server with default settings.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Creates and starts a server with extra `postgresql.conf` settings, e.g.
    /// `[("shared_preload_libraries", "timescaledb")]`.
    pub fn start_with(settings: &[(&str, &str)]) -> Self {
        let bin = server_bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("dagrs-pg-")
            .tempdir()
            .expect("a temp dir for the test server");
        let run_as = running_as_root().then(|| "postgres".to_owned());
        if let Some(user) = &run_as {
            let uid = command_output("id", &["-u", user])
                .trim()
                .parse()
                .unwrap_or_else(|e| panic!("the uid of user {user}: {e}"));
            std::os::unix::fs::chown(dir.path(), Some(uid), None)
                .unwrap_or_else(|e| panic!("cannot give {} to {user}: {e}", dir.path().display()));
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .expect("a free port for the test server");
        let server = TestServer {
            dir,
            port,
            bin,
            run_as,
        };
        let data = server.data_dir();
        server.run(
            "initdb",
            &[
                "-D",
                &data,
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        let mut conf = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n\
             fsync = off\nfull_page_writes = off\n",
            server.dir.path().display()
        );
        for (key, value) in settings {
            conf.push_str(&format!("{key} = '{value}'\n"));
        }
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(format!("{data}/postgresql.conf"))
            .and_then(|mut file| file.write_all(conf.as_bytes()))
            .expect("the test server's postgresql.conf");
        server.start_again();
        server
    }

    /// Creates and starts a server that loads TimescaleDB
    /// (`shared_preload_libraries = 'timescaledb'`, telemetry off); panics, with the
    /// server's log, when TimescaleDB is not installed for this PostgreSQL.
    pub fn start_timescaledb() -> Self {
        Self::start_with(&[
            ("shared_preload_libraries", "timescaledb"),
            ("timescaledb.telemetry_level", "off"),
        ])
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL to database `dbname` on it.
    pub fn url(&self, dbname: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{dbname}", self.port)
    }

    /// Starts it (again), waiting until it accepts connections; panics with the end of
    /// the server's log when it does not start.
    pub fn start_again(&self) {
        let log = format!("{}/server.log", self.dir.path().display());
        let data = self.data_dir();
        let args = ["-D", &data, "-l", &log, "-w", "-t", "60", "start"];
        if let Err(failure) = self.try_run("pg_ctl", &args) {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(15)..].join("\n");
            panic!("{failure}\nthe end of the server's log:\n{tail}");
        }
    }

    /// Stops it at once, as a crash would (`pg_ctl stop -m immediate`).
    pub fn stop(&self) {
        self.run(
            "pg_ctl",
            &["-D", &self.data_dir(), "-m", "immediate", "-w", "stop"],
        );
    }

    /// Stops it at once and starts it again.
    pub fn restart(&self) {
        self.stop();
        self.start_again();
    }

    fn data_dir(&self) -> String {
        format!("{}/data", self.dir.path().display())
    }

    fn run(&self, program: &str, args: &[&str]) {
        if let Err(failure) = self.try_run(program, args) {
            panic!("{failure}");
        }
    }

    fn try_run(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let path = self.bin.join(program);
        let mut command = match &self.run_as {
            Some(user) => {
                let mut command = std::process::Command::new("runuser");
                command.args(["-u", user, "--"]).arg(&path);
                command
            }
            None => std::process::Command::new(&path),
        };
        let output = command
            .args(args)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
        if output.status.success() {
            return Ok(());
        }
        Err(format!(
            "{} {} failed: {}{}",
            path.display(),
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let data = self.data_dir();
        let path = self.bin.join("pg_ctl");
        let mut command = match &self.run_as {
            Some(user) => {
                let mut command = std::process::Command::new("runuser");
                command.args(["-u", user, "--"]).arg(&path);
                command
            }
            None => std::process::Command::new(&path),
        };
        // Already stopped is fine; the temp dir goes either way.
        let _ = command
            .args(["-D", &data, "-m", "immediate", "-w", "stop"])
            .output();
    }
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn command_output(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
        .unwrap_or_default()
}

fn server_bin_dir() -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os("DAGRS_PG_BIN") {
        return dir.into();
    }
    let from_pg_config = command_output("pg_config", &["--bindir"]);
    let candidates = std::iter::once(std::path::PathBuf::from(from_pg_config.trim())).chain(
        std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path().join("bin")),
    );
    let mut found: Vec<std::path::PathBuf> = candidates
        .filter(|dir| dir.join("initdb").exists() && dir.join("pg_ctl").exists())
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!(
            "this test runs a PostgreSQL server of its own and needs initdb and pg_ctl: none \
             found (set DAGRS_PG_BIN to their folder, e.g. /usr/lib/postgresql/15/bin)"
        )
    })
}
