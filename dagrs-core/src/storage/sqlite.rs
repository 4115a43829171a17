//! The embedded store: one SQLite file, written by one thread per process, in batches.
//!
//! The file carries `PRAGMA application_id` [`APPLICATION_ID`] (so dagrs recognises its own
//! stores and never writes into another program's database) and `PRAGMA user_version`, the
//! schema version; [`MIGRATIONS`] holds the schema. See [`SqliteStorage`] for the rest.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension};
use tokio::sync::oneshot;

use super::memory::materialization_of;
use super::{runs_to_prune, MaterializationRecord, PruneReport, Retention, RunRecord, Storage};
use crate::error::Error;
use crate::event::{Event, EventKind, RunStatus};
use crate::key::{AssetKey, RunId};

/// `PRAGMA application_id` of a dagrs store: `dagr` in ASCII.
const APPLICATION_ID: i32 = 0x6461_6772;

/// The schema, one migration per version: `MIGRATIONS[n]` takes a store from version `n` to
/// `n + 1`. Never edit a released migration; append a new one.
const MIGRATIONS: &[&str] = &[
    // Version 1.
    "
    CREATE TABLE runs (
        run_id        TEXT PRIMARY KEY NOT NULL,
        status        TEXT NOT NULL
                      CHECK (status IN ('running', 'succeeded', 'failed', 'cancelled')),
        selection     TEXT NOT NULL,
        assets        TEXT NOT NULL,   -- JSON array of asset keys
        config        TEXT NOT NULL,   -- JSON run config
        tags          TEXT NOT NULL,   -- JSON object
        started_at    INTEGER NOT NULL, -- microseconds since the Unix epoch, UTC
        ended_at      INTEGER,
        owner         TEXT NOT NULL,
        heartbeat_at  INTEGER NOT NULL,
        parent_run_id TEXT,
        failure       TEXT
    );
    CREATE INDEX runs_by_start ON runs (started_at);
    CREATE INDEX runs_running ON runs (status) WHERE status = 'running';

    CREATE TABLE events (
        run_id    TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
        seq       INTEGER NOT NULL,
        timestamp INTEGER NOT NULL,
        asset     TEXT,
        kind      TEXT NOT NULL,        -- JSON event kind
        PRIMARY KEY (run_id, seq)
    );

    -- No foreign key to runs: an asset's latest materialization outlives its pruned run.
    -- `id` is the order of appending, which decides which materialization is the latest.
    CREATE TABLE materializations (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        asset        TEXT NOT NULL,
        run_id       TEXT NOT NULL,
        seq          INTEGER NOT NULL,
        timestamp    INTEGER NOT NULL,
        metadata     TEXT NOT NULL,     -- JSON object
        value        TEXT NOT NULL,     -- JSON
        code_version TEXT
    );
    CREATE INDEX materializations_by_asset ON materializations (asset, id);
    CREATE INDEX materializations_by_run ON materializations (run_id);

    CREATE TABLE ticks (
        name TEXT NOT NULL,
        tick INTEGER NOT NULL,
        PRIMARY KEY (name, tick)
    );

    CREATE TABLE cursors (
        name  TEXT PRIMARY KEY NOT NULL,
        value TEXT NOT NULL
    );
    ",
];

/// The schema version this code writes and understands.
const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The most commands the writer commits in one transaction.
const MAX_BATCH: usize = 256;

/// Idle read connections kept open per store.
const MAX_IDLE_READERS: usize = 4;

/// The first 16 bytes of every SQLite database file.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

const OPEN: &str = "open the SQLite store";

/// The embedded store: runs, event logs, materializations, ticks and cursors in one SQLite
/// file (by default [`default_path`](Self::default_path)).
///
/// # Writes: one writer per file and process, batched
///
/// Every `SqliteStorage` of one file in a process (clones, and separate [`open`](Self::open)s
/// of the same path) shares one writer: a thread that owns the process's only write
/// connection and takes commands from a channel. It drains what is queued (up to 256
/// commands), runs each command in its own savepoint of one `BEGIN IMMEDIATE` transaction,
/// commits once, then answers every caller. A command that fails is rolled back to its
/// savepoint and only its caller gets the error; the rest of the batch commits. Callers are
/// answered after the commit, so `Ok` means written: a crash of the process loses nothing
/// that was acknowledged (with `synchronous = NORMAL`, a power cut may lose the last commits).
///
/// As a process never has two writers, concurrent runs never fail with "database is locked";
/// another process using the same file (a CLI beside a daemon) waits for the lock, up to
/// [`BUSY_TIMEOUT`](Self::BUSY_TIMEOUT).
///
/// # Reads
///
/// Reads run on tokio's blocking pool, never on the async runtime's threads, on a small pool
/// of read-only connections; WAL mode lets them run beside the writer.
///
/// # The file
///
/// A schema version is checked on open, and missing migrations are applied in one
/// transaction. Opening refuses, without changing the file, anything that is not a dagrs
/// store: a file that is not a SQLite database, another program's database, or a store
/// written by a newer version of dagrs. Instants are kept as integer microseconds since the
/// Unix epoch (UTC), so they come back exactly to the microsecond and sort correctly;
/// finer fractions are truncated.
///
/// Cheap to clone. Dropping the last handle of a file stops its writer and closes the file;
/// the drop waits until the writer has answered every queued command.
#[derive(Clone)]
pub struct SqliteStorage {
    shared: Arc<Shared>,
}

impl SqliteStorage {
    /// How long a connection waits for a lock held by another process before it fails.
    pub const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

    /// Opens the store at `path`, creating the file and its parent folders when missing and
    /// bringing its schema up to date.
    ///
    /// Fails, without changing the file, when it is not a SQLite database, when it is a
    /// SQLite database of some other program (one that holds tables but is not a dagrs store),
    /// or when it was written by a newer version of dagrs. Opening blocks the calling thread
    /// for as long as the file takes to check (up to [`BUSY_TIMEOUT`](Self::BUSY_TIMEOUT)
    /// when another process holds a lock on it).
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStorage, Error> {
        let path = resolve(path.as_ref())?;
        let mut stores = lock(registry());
        stores.retain(|_, store| store.strong_count() > 0);
        if let Some(shared) = stores.get(&path).and_then(Weak::upgrade) {
            return Ok(SqliteStorage { shared });
        }
        let shared = Arc::new(Shared::open(path.clone())?);
        stores.insert(path, Arc::downgrade(&shared));
        Ok(SqliteStorage { shared })
    }

    /// Opens the store at [`default_path`](Self::default_path).
    pub fn open_default() -> Result<SqliteStorage, Error> {
        Self::open(Self::default_path())
    }

    /// Where the embedded store lives by default: `$DAGRS_HOME/dagrs.db` when `DAGRS_HOME`
    /// is set (and not empty), otherwise `./.dagrs/dagrs.db`.
    pub fn default_path() -> PathBuf {
        default_path_in(std::env::var_os("DAGRS_HOME").map(PathBuf::from))
    }

    /// The file of this store, as an absolute path with symbolic links resolved.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Runs `work` on the writer thread inside its own savepoint of the current batch, and
    /// returns its result once the batch is committed.
    async fn write<T, F>(&self, op: &'static str, work: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, Error> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let command = Box::new(Command {
            op,
            work: Some(work),
            result: None,
            reply,
        });
        let shared = &self.shared;
        let sender = shared
            .sender
            .as_ref()
            .ok_or_else(|| writer_stopped(op, &shared.path))?;
        shared.stats.queued.fetch_add(1, Ordering::Relaxed);
        if sender.send(command).is_err() {
            shared.stats.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(writer_stopped(op, &shared.path));
        }
        answer.await.map_err(|_| writer_stopped(op, &shared.path))?
    }

    /// Runs `work` on a read connection, on tokio's blocking pool.
    async fn read<T, F>(&self, op: &'static str, work: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, Error> + Send + 'static,
    {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || {
            let conn = shared.reader(op)?;
            let result = work(&conn);
            shared.give_back(conn);
            result
        })
        .await
        .map_err(|e| Error::storage(op, e))?
    }
}

impl fmt::Debug for SqliteStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stats = &self.shared.stats;
        f.debug_struct("SqliteStorage")
            .field("path", &self.shared.path)
            .field("queued_writes", &stats.queued.load(Ordering::Relaxed))
            .field("write_batches", &stats.batches.load(Ordering::Relaxed))
            .finish()
    }
}

fn default_path_in(home: Option<PathBuf>) -> PathBuf {
    match home {
        Some(home) if !home.as_os_str().is_empty() => home.join("dagrs.db"),
        _ => Path::new(".dagrs").join("dagrs.db"),
    }
}

/// The stores open in this process, by canonical path, so that one file gets one writer.
fn registry() -> &'static Mutex<HashMap<PathBuf, Weak<Shared>>> {
    static STORES: OnceLock<Mutex<HashMap<PathBuf, Weak<Shared>>>> = OnceLock::new();
    STORES.get_or_init(Default::default)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Creates the parent folders of `path` and returns its canonical form (of the folder, joined
/// with the file name, when the file does not exist yet).
fn resolve(path: &Path) -> Result<PathBuf, Error> {
    let file_name = path.file_name().ok_or_else(|| {
        Error::storage(
            OPEN,
            format!(
                "`{}` does not name a file; give the path of the store's file, \
                 e.g. `.dagrs/dagrs.db`",
                path.display()
            ),
        )
    })?;
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    fs::create_dir_all(parent).map_err(|e| {
        Error::storage(
            OPEN,
            format!(
                "cannot create the folder {} for the SQLite store: {e}",
                parent.display()
            ),
        )
    })?;
    let canonical = match fs::canonicalize(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::canonicalize(parent).map(|parent| parent.join(file_name))
        }
        other => other,
    };
    canonical.map_err(|e| {
        Error::storage(
            OPEN,
            format!("cannot resolve the path {}: {e}", path.display()),
        )
    })
}

fn not_a_store(path: &Path, reason: impl fmt::Display) -> Error {
    Error::storage(
        OPEN,
        format!(
            "{} is not a dagrs store: {reason}; move it away or set DAGRS_HOME to use \
             another folder",
            path.display()
        ),
    )
}

fn writer_stopped(op: &'static str, path: &Path) -> Error {
    Error::storage(
        op,
        format!(
            "the writer thread of the SQLite store {} has stopped; open the store again",
            path.display()
        ),
    )
}

/// Refuses, without opening it with SQLite, a file that does not start like a database.
fn check_header(path: &Path) -> Result<(), Error> {
    let unreadable = |e: io::Error| {
        Error::storage(
            OPEN,
            format!("cannot read the SQLite store {}: {e}", path.display()),
        )
    };
    let mut file = match fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(unreadable(e)),
    };
    let metadata = file.metadata().map_err(unreadable)?;
    if metadata.is_dir() {
        return Err(Error::storage(
            OPEN,
            format!(
                "{} is a folder, not a dagrs store; give the path of a file, e.g. {}",
                path.display(),
                path.join("dagrs.db").display()
            ),
        ));
    }
    if metadata.len() == 0 {
        return Ok(());
    }
    let mut header = [0; 16];
    // A database is at least one page long; its 100-byte header starts with SQLITE_HEADER.
    if metadata.len() < 100 || file.read_exact(&mut header).is_err() || &header != SQLITE_HEADER {
        return Err(not_a_store(path, "file is not a database"));
    }
    Ok(())
}

/// Whether SQLite says the file is no database or a damaged one.
fn is_not_a_database(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt)
    )
}

/// What an opened file holds: `None` for an empty database, `Some(version)` for a dagrs
/// store this code can use; an error for anything else. Only reads.
fn inspect(conn: &Connection, path: &Path) -> Result<Option<i64>, Error> {
    let read = || -> rusqlite::Result<(i32, i64, Vec<String>)> {
        let application_id = conn.pragma_query_value(None, "application_id", |row| row.get(0))?;
        let version = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
        let mut stmt = conn.prepare(
            "SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
             ORDER BY name",
        )?;
        let names = stmt
            .query_map([], |row| row.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        Ok((application_id, version, names))
    };
    let (application_id, version, names) = read().map_err(|e| {
        if is_not_a_database(&e) {
            not_a_store(path, e)
        } else {
            Error::storage(
                OPEN,
                format!("cannot read the SQLite store {}: {e}", path.display()),
            )
        }
    })?;
    if application_id == APPLICATION_ID {
        if version < 0 {
            return Err(Error::storage(
                OPEN,
                format!(
                    "{} has an invalid schema version {version}; it was not written by dagrs: \
                     move it away or set DAGRS_HOME to use another folder",
                    path.display()
                ),
            ));
        }
        if version > SCHEMA_VERSION {
            return Err(Error::storage(
                OPEN,
                format!(
                    "{} was written by a newer version of dagrs: its schema version is {version}, \
                     but this dagrs-core ({}) knows versions up to {SCHEMA_VERSION}; upgrade \
                     dagrs-core, or set DAGRS_HOME to use another store (the file was not changed)",
                    path.display(),
                    env!("CARGO_PKG_VERSION"),
                ),
            ));
        }
        return Ok(Some(version));
    }
    if application_id == 0 && names.is_empty() {
        return Ok(None);
    }
    let holds = if names.is_empty() {
        format!("its application id is {application_id:#x}")
    } else {
        const SHOWN: usize = 5;
        let mut listed: Vec<String> = names.iter().take(SHOWN).map(|n| format!("`{n}`")).collect();
        if names.len() > SHOWN {
            listed.push(format!("and {} more", names.len() - SHOWN));
        }
        format!("it holds {}", listed.join(", "))
    };
    Err(Error::storage(
        OPEN,
        format!(
            "{} is a SQLite database of another program, not a dagrs store ({holds}); dagrs does \
             not write into it: move it away, or set DAGRS_HOME to use another folder",
            path.display()
        ),
    ))
}

/// Brings the schema up to date in one transaction (re-checking inside it, so two processes
/// opening the same new file do not both migrate it).
fn migrate(conn: &Connection, path: &Path) -> Result<(), Error> {
    conn.execute_batch("BEGIN IMMEDIATE").map_err(|e| {
        Error::storage(
            OPEN,
            format!(
                "cannot lock the SQLite store {} to check its schema: {e}",
                path.display()
            ),
        )
    })?;
    let committed = apply_migrations(conn, path).and_then(|()| {
        conn.execute_batch("COMMIT").map_err(|e| {
            Error::storage(
                OPEN,
                format!(
                    "cannot commit the schema of the SQLite store {}: {e}",
                    path.display()
                ),
            )
        })
    });
    if committed.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    committed
}

/// Applies the migrations the store lacks; runs inside `migrate`'s transaction.
fn apply_migrations(conn: &Connection, path: &Path) -> Result<(), Error> {
    let from = inspect(conn, path)?.unwrap_or(0);
    let missing = usize::try_from(from)
        .ok()
        .and_then(|from| MIGRATIONS.get(from..))
        .unwrap_or_default();
    if missing.is_empty() {
        return Ok(());
    }
    let failed = |e: rusqlite::Error| {
        Error::storage(
            OPEN,
            format!(
                "cannot bring the SQLite store {} from schema version {from} to \
                 {SCHEMA_VERSION}: {e}; nothing was changed",
                path.display()
            ),
        )
    };
    for sql in missing {
        conn.execute_batch(sql).map_err(failed)?;
    }
    conn.pragma_update(None, "application_id", APPLICATION_ID)
        .and_then(|()| conn.pragma_update(None, "user_version", SCHEMA_VERSION))
        .map_err(failed)
}

/// What the writer has done, for `Debug` and tests.
#[derive(Debug, Default)]
struct Stats {
    /// Commands sent and not yet answered.
    queued: AtomicUsize,
    /// Transactions the writer has run.
    batches: AtomicU64,
}

/// One open store, shared by every `SqliteStorage` of its file in this process.
struct Shared {
    path: PathBuf,
    /// `None` only while dropping.
    sender: Option<mpsc::Sender<Box<dyn Job>>>,
    writer: Option<JoinHandle<()>>,
    readers: Mutex<Vec<Connection>>,
    stats: Arc<Stats>,
}

impl Shared {
    fn open(path: PathBuf) -> Result<Shared, Error> {
        check_header(&path)?;
        let sqlite = |e: rusqlite::Error| {
            if is_not_a_database(&e) {
                not_a_store(&path, e)
            } else {
                Error::storage(
                    OPEN,
                    format!("cannot open the SQLite store {}: {e}", path.display()),
                )
            }
        };
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sqlite)?;
        conn.busy_timeout(SqliteStorage::BUSY_TIMEOUT)
            .map_err(sqlite)?;
        // Everything before this point only reads, so a file that is refused stays as it was.
        let version = inspect(&conn, &path)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "wal", |row| row.get(0))
            .map_err(sqlite)?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(
                path = %path.display(),
                journal_mode = %mode,
                "SQLite could not switch the store to WAL mode (is it on a network file system?); \
                 readers will wait for the writer"
            );
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .and_then(|()| conn.pragma_update(None, "foreign_keys", true))
            .map_err(sqlite)?;
        if version != Some(SCHEMA_VERSION) {
            migrate(&conn, &path)?;
        }

        let stats = Arc::new(Stats::default());
        let (sender, commands) = mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("dagrs-sqlite-writer".into())
            .spawn({
                let stats = Arc::clone(&stats);
                move || write_loop(&conn, &commands, &stats)
            })
            .map_err(|e| {
                Error::storage(
                    OPEN,
                    format!(
                        "cannot start the writer thread of the SQLite store {}: {e}",
                        path.display()
                    ),
                )
            })?;
        Ok(Shared {
            path,
            sender: Some(sender),
            writer: Some(writer),
            readers: Mutex::new(Vec::new()),
            stats,
        })
    }

    /// An idle read connection, or a new one.
    fn reader(&self, op: &'static str) -> Result<Connection, Error> {
        if let Some(conn) = lock(&self.readers).pop() {
            return Ok(conn);
        }
        let open = || -> rusqlite::Result<Connection> {
            let conn = Connection::open_with_flags(
                &self.path,
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            conn.busy_timeout(SqliteStorage::BUSY_TIMEOUT)?;
            conn.pragma_update(None, "query_only", true)?;
            Ok(conn)
        };
        open().map_err(|e| {
            Error::storage(
                op,
                format!(
                    "cannot open a read connection to the SQLite store {}: {e}",
                    self.path.display()
                ),
            )
        })
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = lock(&self.readers);
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Closing the channel ends the writer once it has answered what is queued.
        drop(self.sender.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// A command for the writer thread.
trait Job: Send {
    /// Runs the command (the writer has opened a savepoint for it); `false` when it failed.
    fn run(&mut self, conn: &Connection) -> bool;

    /// Answers the caller once the batch has ended; `failure` says why the batch as a whole
    /// did not commit.
    fn answer(self: Box<Self>, failure: Option<&str>);
}

struct Command<T, F> {
    op: &'static str,
    work: Option<F>,
    result: Option<Result<T, Error>>,
    reply: oneshot::Sender<Result<T, Error>>,
}

impl<T, F> Job for Command<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, Error> + Send + 'static,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(work) = self.work.take() else {
            return false;
        };
        let result = catch_unwind(AssertUnwindSafe(|| work(conn))).unwrap_or_else(|panic| {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(Error::storage(
                self.op,
                format!("the SQLite writer panicked: {message}"),
            ))
        });
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn answer(self: Box<Self>, failure: Option<&str>) {
        let result = match (self.result, failure) {
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(value)), None) => Ok(value),
            (_, Some(failure)) => Err(Error::storage(
                self.op,
                format!("nothing was written: {failure}"),
            )),
            (None, None) => Err(Error::storage(self.op, "the write was never run")),
        };
        // The caller may have stopped waiting; the write stands either way.
        let _ = self.reply.send(result);
    }
}

/// The writer thread: batches of queued commands, one transaction each, until every
/// `SqliteStorage` of the file is gone.
fn write_loop(conn: &Connection, commands: &mpsc::Receiver<Box<dyn Job>>, stats: &Stats) {
    while let Ok(first) = commands.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match commands.try_recv() {
                Ok(command) => batch.push(command),
                Err(_) => break,
            }
        }
        run_batch(conn, batch, stats);
    }
}

fn run_batch(conn: &Connection, mut batch: Vec<Box<dyn Job>>, stats: &Stats) {
    let outcome = conn
        .execute_batch("BEGIN IMMEDIATE")
        .map_err(|e| format!("cannot start a write transaction: {e}"))
        .and_then(|()| {
            batch
                .iter_mut()
                .try_for_each(|command| run_in_savepoint(conn, command.as_mut()))
        })
        .and_then(|()| {
            conn.execute_batch("COMMIT")
                .map_err(|e| format!("cannot commit: {e}"))
        });
    if outcome.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    // Counted before answering, so that whoever gets an answer sees the batch counted.
    stats.batches.fetch_add(1, Ordering::Relaxed);
    stats.queued.fetch_sub(batch.len(), Ordering::Relaxed);
    let failure = outcome.err();
    for command in batch {
        command.answer(failure.as_deref());
    }
}

fn run_in_savepoint(conn: &Connection, command: &mut dyn Job) -> Result<(), String> {
    let sql = |sql: &str| {
        conn.execute_batch(sql)
            .map_err(|e| format!("cannot run `{sql}`: {e}"))
    };
    sql("SAVEPOINT command")?;
    if command.run(conn) {
        sql("RELEASE command")
    } else {
        sql("ROLLBACK TO command")?;
        sql("RELEASE command")
    }
}

/// `.or_storage(op)`: a SQLite error as an [`Error::Storage`].
trait OrStorage<T> {
    fn or_storage(self, op: &'static str) -> Result<T, Error>;
}

impl<T> OrStorage<T> for rusqlite::Result<T> {
    fn or_storage(self, op: &'static str) -> Result<T, Error> {
        self.map_err(|e| Error::storage(op, e))
    }
}

fn is_primary_key_clash(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error(),
        Some(e) if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
    )
}

fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

fn instant(micros: i64, op: &'static str, what: &str) -> Result<DateTime<Utc>, Error> {
    DateTime::from_timestamp_micros(micros).ok_or_else(|| {
        Error::storage(
            op,
            format!("the stored {what} ({micros} µs since 1970) is out of range"),
        )
    })
}

fn seq_to_sql(seq: u64, run_id: &RunId, op: &'static str) -> Result<i64, Error> {
    i64::try_from(seq).map_err(|_| {
        Error::storage(
            op,
            format!(
                "event {seq} of run `{run_id}`: SQLite stores sequence numbers up to {}",
                i64::MAX
            ),
        )
    })
}

fn seq_from_sql(seq: i64, op: &'static str) -> Result<u64, Error> {
    u64::try_from(seq).map_err(|_| {
        Error::storage(
            op,
            format!("the stored event sequence number {seq} is negative"),
        )
    })
}

fn limit_to_sql(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn to_json<T: serde::Serialize + ?Sized>(value: &T, op: &'static str) -> Result<String, Error> {
    serde_json::to_string(value).map_err(|e| Error::storage(op, e))
}

fn from_json<T: serde::de::DeserializeOwned>(
    text: &str,
    op: &'static str,
    what: impl FnOnce() -> String,
) -> Result<T, Error> {
    serde_json::from_str(text)
        .map_err(|e| Error::storage(op, format!("{} cannot be read: {e}", what())))
}

fn status_name(status: RunStatus) -> &'static str {
    match status {
        RunStatus::Running => "running",
        RunStatus::Succeeded => "succeeded",
        RunStatus::Failed => "failed",
        RunStatus::Cancelled => "cancelled",
    }
}

fn parse_status(name: &str) -> Option<RunStatus> {
    Some(match name {
        "running" => RunStatus::Running,
        "succeeded" => RunStatus::Succeeded,
        "failed" => RunStatus::Failed,
        "cancelled" => RunStatus::Cancelled,
        _ => return None,
    })
}

const RUN_COLUMNS: &str = "run_id, status, selection, assets, config, tags, started_at, \
                           ended_at, owner, heartbeat_at, parent_run_id, failure";

/// A `runs` row as SQLite returns it.
struct RunRow {
    run_id: String,
    status: String,
    selection: String,
    assets: String,
    config: String,
    tags: String,
    started_at: i64,
    ended_at: Option<i64>,
    owner: String,
    heartbeat_at: i64,
    parent_run_id: Option<String>,
    failure: Option<String>,
}

impl RunRow {
    fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RunRow> {
        Ok(RunRow {
            run_id: row.get(0)?,
            status: row.get(1)?,
            selection: row.get(2)?,
            assets: row.get(3)?,
            config: row.get(4)?,
            tags: row.get(5)?,
            started_at: row.get(6)?,
            ended_at: row.get(7)?,
            owner: row.get(8)?,
            heartbeat_at: row.get(9)?,
            parent_run_id: row.get(10)?,
            failure: row.get(11)?,
        })
    }

    fn into_record(self, op: &'static str) -> Result<RunRecord, Error> {
        let id = &self.run_id;
        let column = |name: &str| format!("the `{name}` of stored run `{id}`");
        Ok(RunRecord {
            status: parse_status(&self.status).ok_or_else(|| {
                Error::storage(
                    op,
                    format!("stored run `{id}` has an unknown status `{}`", self.status),
                )
            })?,
            selection: self.selection,
            assets: from_json(&self.assets, op, || column("assets"))?,
            config: from_json(&self.config, op, || column("config"))?,
            tags: from_json(&self.tags, op, || column("tags"))?,
            started_at: instant(self.started_at, op, &column("started_at"))?,
            ended_at: self
                .ended_at
                .map(|at| instant(at, op, &column("ended_at")))
                .transpose()?,
            owner: self.owner,
            heartbeat_at: instant(self.heartbeat_at, op, &column("heartbeat_at"))?,
            parent_run_id: self.parent_run_id.map(RunId::from),
            failure: self.failure,
            run_id: RunId::from(self.run_id),
        })
    }
}

/// Runs `sql` and turns each row into a record: `from_row` reads the columns, `into` checks
/// and decodes them.
fn query_records<R, T>(
    conn: &Connection,
    op: &'static str,
    sql: &str,
    params: impl rusqlite::Params,
    from_row: fn(&rusqlite::Row<'_>) -> rusqlite::Result<R>,
    into: fn(R, &'static str) -> Result<T, Error>,
) -> Result<Vec<T>, Error> {
    let mut stmt = conn.prepare_cached(sql).or_storage(op)?;
    let rows = stmt
        .query_map(params, from_row)
        .or_storage(op)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .or_storage(op)?;
    rows.into_iter().map(|row| into(row, op)).collect()
}

fn query_runs(
    conn: &Connection,
    op: &'static str,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<RunRecord>, Error> {
    query_records(conn, op, sql, params, RunRow::from_row, RunRow::into_record)
}

const MATERIALIZATION_COLUMNS: &str =
    "asset, run_id, seq, timestamp, metadata, value, code_version";

/// A `materializations` row as SQLite returns it.
struct MaterializationRow {
    asset: String,
    run_id: String,
    seq: i64,
    timestamp: i64,
    metadata: String,
    value: String,
    code_version: Option<String>,
}

impl MaterializationRow {
    fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<MaterializationRow> {
        Ok(MaterializationRow {
            asset: row.get(0)?,
            run_id: row.get(1)?,
            seq: row.get(2)?,
            timestamp: row.get(3)?,
            metadata: row.get(4)?,
            value: row.get(5)?,
            code_version: row.get(6)?,
        })
    }

    fn into_record(self, op: &'static str) -> Result<MaterializationRecord, Error> {
        let column = |name: &str| {
            format!(
                "the `{name}` of the stored materialization of `{}` by run `{}`",
                self.asset, self.run_id
            )
        };
        Ok(MaterializationRecord {
            seq: seq_from_sql(self.seq, op)?,
            timestamp: instant(self.timestamp, op, &column("timestamp"))?,
            metadata: from_json(&self.metadata, op, || column("metadata"))?,
            value: from_json(&self.value, op, || column("value"))?,
            code_version: self.code_version,
            asset: AssetKey::from(self.asset),
            run_id: RunId::from(self.run_id),
        })
    }
}

fn query_materializations(
    conn: &Connection,
    op: &'static str,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<MaterializationRecord>, Error> {
    query_records(
        conn,
        op,
        sql,
        params,
        MaterializationRow::from_row,
        MaterializationRow::into_record,
    )
}

/// An event ready for `INSERT` (serialized by the caller, off the writer thread).
struct EventInsert {
    run_id: RunId,
    seq: i64,
    timestamp: i64,
    asset: Option<String>,
    kind: String,
    materialization: Option<MaterializationInsert>,
}

struct MaterializationInsert {
    asset: String,
    metadata: String,
    value: String,
    code_version: Option<String>,
}

impl EventInsert {
    fn new(event: &Event, op: &'static str) -> Result<EventInsert, Error> {
        let materialization = materialization_of(event)
            .map(|record| -> Result<_, Error> {
                Ok(MaterializationInsert {
                    asset: record.asset.to_string(),
                    metadata: to_json(&record.metadata, op)?,
                    value: to_json(&record.value, op)?,
                    code_version: record.code_version,
                })
            })
            .transpose()?;
        Ok(EventInsert {
            seq: seq_to_sql(event.seq, &event.run_id, op)?,
            run_id: event.run_id.clone(),
            timestamp: micros(event.timestamp),
            asset: event.asset.as_ref().map(AssetKey::to_string),
            kind: to_json(&event.kind, op)?,
            materialization,
        })
    }
}

fn append(conn: &Connection, events: &[EventInsert], op: &'static str) -> Result<(), Error> {
    let mut run_exists = conn
        .prepare_cached("SELECT 1 FROM runs WHERE run_id = ?1")
        .or_storage(op)?;
    let mut insert_event = conn
        .prepare_cached(
            "INSERT INTO events (run_id, seq, timestamp, asset, kind) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .or_storage(op)?;
    let mut insert_materialization = conn
        .prepare_cached(
            "INSERT INTO materializations \
             (asset, run_id, seq, timestamp, metadata, value, code_version) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .or_storage(op)?;
    let mut known: HashSet<&str> = HashSet::new();
    for event in events {
        let run_id = event.run_id.as_str();
        if known.insert(run_id) && !run_exists.exists([run_id]).or_storage(op)? {
            return Err(Error::RunNotFound(run_id.to_owned()));
        }
        insert_event
            .execute(params![
                run_id,
                event.seq,
                event.timestamp,
                event.asset,
                event.kind
            ])
            .map_err(|e| {
                if is_primary_key_clash(&e) {
                    Error::storage(
                        op,
                        format!("run `{run_id}` already has event {}", event.seq),
                    )
                } else {
                    Error::storage(op, e)
                }
            })?;
        if let Some(m) = &event.materialization {
            insert_materialization
                .execute(params![
                    m.asset,
                    run_id,
                    event.seq,
                    event.timestamp,
                    m.metadata,
                    m.value,
                    m.code_version
                ])
                .or_storage(op)?;
        }
    }
    Ok(())
}

fn run_exists(conn: &Connection, run_id: &str, op: &'static str) -> Result<bool, Error> {
    conn.prepare_cached("SELECT 1 FROM runs WHERE run_id = ?1")
        .and_then(|mut stmt| stmt.exists([run_id]))
        .or_storage(op)
}

fn prune(
    conn: &Connection,
    keep: Retention,
    now: DateTime<Utc>,
    op: &'static str,
) -> Result<PruneReport, Error> {
    let runs = query_runs(conn, op, &format!("SELECT {RUN_COLUMNS} FROM runs"), [])?;
    let doomed = runs_to_prune(&runs, keep, now);
    if doomed.is_empty() {
        return Ok(PruneReport::default());
    }
    let doomed = to_json(&doomed, op)?;
    let delete = |sql: &str| -> Result<u64, Error> {
        let removed = conn.execute(sql, [&doomed]).or_storage(op)?;
        Ok(removed as u64)
    };
    // Events first: deleting the runs would cascade to them uncounted.
    let events = delete("DELETE FROM events WHERE run_id IN (SELECT value FROM json_each(?1))")?;
    let materializations = delete(
        "DELETE FROM materializations WHERE run_id IN (SELECT value FROM json_each(?1)) \
         AND id NOT IN (SELECT MAX(id) FROM materializations GROUP BY asset)",
    )?;
    let runs = delete("DELETE FROM runs WHERE run_id IN (SELECT value FROM json_each(?1))")?;
    Ok(PruneReport {
        runs,
        events,
        materializations,
    })
}

#[async_trait]
impl Storage for SqliteStorage {
    async fn create_run(&self, run: &RunRecord) -> Result<(), Error> {
        const OP: &str = "create a run";
        let run_id = run.run_id.clone();
        let values = (
            status_name(run.status),
            run.selection.clone(),
            to_json(&run.assets, OP)?,
            to_json(&run.config, OP)?,
            to_json(&run.tags, OP)?,
            micros(run.started_at),
            run.ended_at.map(micros),
            run.owner.clone(),
            micros(run.heartbeat_at),
            run.parent_run_id.as_ref().map(RunId::to_string),
            run.failure.clone(),
        );
        self.write(OP, move |conn| {
            let (
                status,
                selection,
                assets,
                config,
                tags,
                started,
                ended,
                owner,
                beat,
                parent,
                failure,
            ) = values;
            conn.prepare_cached(&format!(
                "INSERT INTO runs ({RUN_COLUMNS}) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
            ))
            .and_then(|mut stmt| {
                stmt.execute(params![
                    run_id.as_str(),
                    status,
                    selection,
                    assets,
                    config,
                    tags,
                    started,
                    ended,
                    owner,
                    beat,
                    parent,
                    failure
                ])
            })
            .map_err(|e| {
                if is_primary_key_clash(&e) {
                    Error::storage(OP, format!("run `{run_id}` already exists"))
                } else {
                    Error::storage(OP, e)
                }
            })?;
            Ok(())
        })
        .await
    }

    async fn append_events(&self, events: &[Event]) -> Result<(), Error> {
        const OP: &str = "append events";
        if events.is_empty() {
            return Ok(());
        }
        let rows = events
            .iter()
            .map(|event| EventInsert::new(event, OP))
            .collect::<Result<Vec<_>, _>>()?;
        self.write(OP, move |conn| append(conn, &rows, OP)).await
    }

    async fn finish_run(
        &self,
        run_id: &RunId,
        status: RunStatus,
        ended_at: DateTime<Utc>,
        failure: Option<&str>,
    ) -> Result<bool, Error> {
        const OP: &str = "finish a run";
        let run_id = run_id.clone();
        let failure = failure.map(str::to_owned);
        self.write(OP, move |conn| {
            let changed = conn
                .prepare_cached(
                    "UPDATE runs SET status = ?2, ended_at = ?3, failure = ?4 \
                     WHERE run_id = ?1 AND status = 'running'",
                )
                .and_then(|mut stmt| {
                    stmt.execute(params![
                        run_id.as_str(),
                        status_name(status),
                        micros(ended_at),
                        failure
                    ])
                })
                .or_storage(OP)?;
            if changed == 0 && !run_exists(conn, run_id.as_str(), OP)? {
                return Err(Error::RunNotFound(run_id.to_string()));
            }
            Ok(changed > 0)
        })
        .await
    }

    async fn heartbeat(&self, run_id: &RunId, at: DateTime<Utc>) -> Result<(), Error> {
        const OP: &str = "record a heartbeat";
        let run_id = run_id.clone();
        self.write(OP, move |conn| {
            let changed = conn
                .prepare_cached("UPDATE runs SET heartbeat_at = ?2 WHERE run_id = ?1")
                .and_then(|mut stmt| stmt.execute(params![run_id.as_str(), micros(at)]))
                .or_storage(OP)?;
            if changed == 0 {
                return Err(Error::RunNotFound(run_id.to_string()));
            }
            Ok(())
        })
        .await
    }

    async fn run(&self, run_id: &RunId) -> Result<Option<RunRecord>, Error> {
        const OP: &str = "read a run";
        let run_id = run_id.clone();
        self.read(OP, move |conn| {
            conn.prepare_cached(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?1"))
                .and_then(|mut stmt| {
                    stmt.query_row([run_id.as_str()], RunRow::from_row)
                        .optional()
                })
                .or_storage(OP)?
                .map(|row| row.into_record(OP))
                .transpose()
        })
        .await
    }

    async fn runs(&self, limit: usize) -> Result<Vec<RunRecord>, Error> {
        const OP: &str = "list runs";
        self.read(OP, move |conn| {
            // `rowid` breaks ties between runs started at the same instant: last created first.
            query_runs(
                conn,
                OP,
                &format!(
                    "SELECT {RUN_COLUMNS} FROM runs ORDER BY started_at DESC, rowid DESC LIMIT ?1"
                ),
                [limit_to_sql(limit)],
            )
        })
        .await
    }

    async fn running_runs(&self) -> Result<Vec<RunRecord>, Error> {
        const OP: &str = "list running runs";
        self.read(OP, move |conn| {
            query_runs(
                conn,
                OP,
                &format!("SELECT {RUN_COLUMNS} FROM runs WHERE status = 'running' ORDER BY rowid"),
                [],
            )
        })
        .await
    }

    async fn events(&self, run_id: &RunId, after: Option<u64>) -> Result<Vec<Event>, Error> {
        const OP: &str = "read events";
        let run_id = run_id.clone();
        let after = after.map_or(-1, |seq| i64::try_from(seq).unwrap_or(i64::MAX));
        self.read(OP, move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT seq, timestamp, asset, kind FROM events \
                     WHERE run_id = ?1 AND seq > ?2 ORDER BY seq",
                )
                .or_storage(OP)?;
            let rows = stmt
                .query_map(params![run_id.as_str(), after], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, Option<String>>(2)?,
                        row.get::<_, String>(3)?,
                    ))
                })
                .or_storage(OP)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .or_storage(OP)?;
            rows.into_iter()
                .map(|(seq, timestamp, asset, kind)| {
                    let seq = seq_from_sql(seq, OP)?;
                    let what = || format!("event {seq} of run `{run_id}`");
                    Ok(Event {
                        run_id: run_id.clone(),
                        seq,
                        timestamp: instant(timestamp, OP, &what())?,
                        asset: asset.map(AssetKey::from),
                        kind: from_json::<EventKind>(&kind, OP, what)?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn latest_materialization(
        &self,
        asset: &AssetKey,
    ) -> Result<Option<MaterializationRecord>, Error> {
        const OP: &str = "read the latest materialization";
        let asset = asset.clone();
        self.read(OP, move |conn| {
            let mut latest = query_materializations(
                conn,
                OP,
                &format!(
                    "SELECT {MATERIALIZATION_COLUMNS} FROM materializations \
                     WHERE asset = ?1 ORDER BY id DESC LIMIT 1"
                ),
                [asset.as_str()],
            )?;
            Ok(latest.pop())
        })
        .await
    }

    async fn latest_materializations(&self) -> Result<Vec<MaterializationRecord>, Error> {
        const OP: &str = "read the latest materializations";
        self.read(OP, move |conn| {
            query_materializations(
                conn,
                OP,
                &format!(
                    "SELECT {MATERIALIZATION_COLUMNS} FROM materializations \
                     WHERE id IN (SELECT MAX(id) FROM materializations GROUP BY asset) \
                     ORDER BY asset"
                ),
                [],
            )
        })
        .await
    }

    async fn materializations(
        &self,
        asset: &AssetKey,
        limit: usize,
    ) -> Result<Vec<MaterializationRecord>, Error> {
        const OP: &str = "read materializations";
        let asset = asset.clone();
        self.read(OP, move |conn| {
            query_materializations(
                conn,
                OP,
                &format!(
                    "SELECT {MATERIALIZATION_COLUMNS} FROM materializations \
                     WHERE asset = ?1 ORDER BY id DESC LIMIT ?2"
                ),
                params![asset.as_str(), limit_to_sql(limit)],
            )
        })
        .await
    }

    async fn prune(&self, keep: Retention, now: DateTime<Utc>) -> Result<PruneReport, Error> {
        const OP: &str = "prune the event log";
        self.write(OP, move |conn| prune(conn, keep, now, OP)).await
    }

    async fn claim_tick(&self, name: &str, tick: DateTime<Utc>) -> Result<bool, Error> {
        const OP: &str = "claim a tick";
        let name = name.to_owned();
        self.write(OP, move |conn| {
            let inserted = conn
                .prepare_cached(
                    "INSERT INTO ticks (name, tick) VALUES (?1, ?2) \
                     ON CONFLICT (name, tick) DO NOTHING",
                )
                .and_then(|mut stmt| stmt.execute(params![name, micros(tick)]))
                .or_storage(OP)?;
            Ok(inserted == 1)
        })
        .await
    }

    async fn cursor(&self, name: &str) -> Result<Option<String>, Error> {
        const OP: &str = "read a cursor";
        let name = name.to_owned();
        self.read(OP, move |conn| {
            conn.prepare_cached("SELECT value FROM cursors WHERE name = ?1")
                .and_then(|mut stmt| stmt.query_row([&name], |row| row.get(0)).optional())
                .or_storage(OP)
        })
        .await
    }

    async fn set_cursor(&self, name: &str, value: &str) -> Result<(), Error> {
        const OP: &str = "store a cursor";
        let (name, value) = (name.to_owned(), value.to_owned());
        self.write(OP, move |conn| {
            conn.prepare_cached(
                "INSERT INTO cursors (name, value) VALUES (?1, ?2) \
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            )
            .and_then(|mut stmt| stmt.execute(params![name, value]))
            .or_storage(OP)?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::AtomicUsize;
    use std::time::Instant;

    use chrono::TimeZone;
    use serde_json::json;

    use super::*;
    use crate::event::LogLevel;
    use crate::storage::contract::{at, event, run_record};

    /// A fresh folder under the system's temp folder, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "dagrs-sqlite-{name}-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn file(&self) -> PathBuf {
            self.0.join("dagrs.db")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// A store in its own temp folder, which goes when the store does.
    struct TestStore {
        storage: SqliteStorage,
        _dir: TempDir,
    }

    impl TestStore {
        fn fresh() -> TestStore {
            let dir = TempDir::new("contract");
            let storage = SqliteStorage::open(dir.file()).unwrap();
            TestStore { storage, _dir: dir }
        }
    }

    #[async_trait]
    impl Storage for TestStore {
        async fn create_run(&self, run: &RunRecord) -> Result<(), Error> {
            self.storage.create_run(run).await
        }
        async fn append_events(&self, events: &[Event]) -> Result<(), Error> {
            self.storage.append_events(events).await
        }
        async fn finish_run(
            &self,
            run_id: &RunId,
            status: RunStatus,
            ended_at: DateTime<Utc>,
            failure: Option<&str>,
        ) -> Result<bool, Error> {
            self.storage
                .finish_run(run_id, status, ended_at, failure)
                .await
        }
        async fn heartbeat(&self, run_id: &RunId, at: DateTime<Utc>) -> Result<(), Error> {
            self.storage.heartbeat(run_id, at).await
        }
        async fn run(&self, run_id: &RunId) -> Result<Option<RunRecord>, Error> {
            self.storage.run(run_id).await
        }
        async fn runs(&self, limit: usize) -> Result<Vec<RunRecord>, Error> {
            self.storage.runs(limit).await
        }
        async fn running_runs(&self) -> Result<Vec<RunRecord>, Error> {
            self.storage.running_runs().await
        }
        async fn events(&self, run_id: &RunId, after: Option<u64>) -> Result<Vec<Event>, Error> {
            self.storage.events(run_id, after).await
        }
        async fn latest_materialization(
            &self,
            asset: &AssetKey,
        ) -> Result<Option<MaterializationRecord>, Error> {
            self.storage.latest_materialization(asset).await
        }
        async fn latest_materializations(&self) -> Result<Vec<MaterializationRecord>, Error> {
            self.storage.latest_materializations().await
        }
        async fn materializations(
            &self,
            asset: &AssetKey,
            limit: usize,
        ) -> Result<Vec<MaterializationRecord>, Error> {
            self.storage.materializations(asset, limit).await
        }
        async fn prune(&self, keep: Retention, now: DateTime<Utc>) -> Result<PruneReport, Error> {
            self.storage.prune(keep, now).await
        }
        async fn claim_tick(&self, name: &str, tick: DateTime<Utc>) -> Result<bool, Error> {
            self.storage.claim_tick(name, tick).await
        }
        async fn cursor(&self, name: &str) -> Result<Option<String>, Error> {
            self.storage.cursor(name).await
        }
        async fn set_cursor(&self, name: &str, value: &str) -> Result<(), Error> {
            self.storage.set_cursor(name, value).await
        }
    }

    crate::storage_contract_tests!(async { TestStore::fresh() });

    fn log(id: &str, seq: u64, message: &str) -> Event {
        event(
            id,
            seq,
            Some("a"),
            EventKind::Log {
                level: LogLevel::Info,
                message: message.into(),
            },
        )
    }

    fn materialization(id: &str, seq: u64, asset: &str, value: serde_json::Value) -> Event {
        event(
            id,
            seq,
            Some(asset),
            EventKind::Materialization {
                metadata: BTreeMap::from([("rows".to_owned(), json!(seq))]),
                value,
                code_version: Some("v1".into()),
            },
        )
    }

    /// Whether a store of `path` is open in this process.
    fn is_open(path: &Path) -> bool {
        let path = fs::canonicalize(path).unwrap();
        lock(registry())
            .get(&path)
            .and_then(Weak::upgrade)
            .is_some()
    }

    fn open_error(path: &Path) -> String {
        SqliteStorage::open(path)
            .expect_err("the file must be refused")
            .to_string()
    }

    /// The files in `dir`, by name.
    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn reopening_keeps_everything() {
        let dir = TempDir::new("reopen");
        let path = dir.0.join("nested").join("folders").join("dagrs.db");
        let mut parent = run_record("p1", 0);
        parent.tags.insert("owner".into(), "ops".into());
        let mut child = run_record("p2", 5);
        child.parent_run_id = Some(parent.run_id.clone());
        let events = vec![
            event(
                "p1",
                0,
                None,
                EventKind::RunStarted {
                    selection: vec!["a".into()],
                },
            ),
            event("p1", 1, Some("a"), EventKind::StepStarted { attempt: 1 }),
            materialization("p1", 2, "a", json!({"rows": [1, 2, 3]})),
            event(
                "p1",
                3,
                Some("a"),
                EventKind::StepSucceeded {
                    attempt: 1,
                    duration: Duration::from_micros(1_234_567),
                },
            ),
            event(
                "p1",
                4,
                None,
                EventKind::RunFailed {
                    failed: vec!["b".into()],
                    skipped: vec![],
                },
            ),
        ];
        {
            let store = SqliteStorage::open(&path).unwrap();
            assert!(path.exists(), "open creates the file and its folders");
            assert_eq!(store.path(), fs::canonicalize(&path).unwrap());
            store.create_run(&parent).await.unwrap();
            store.create_run(&child).await.unwrap();
            store.append_events(&events[..2]).await.unwrap();
            store.append_events(&events[2..]).await.unwrap();
            assert!(store
                .finish_run(&parent.run_id, RunStatus::Failed, at(9), Some("b failed"))
                .await
                .unwrap());
            store.heartbeat(&child.run_id, at(7)).await.unwrap();
            assert!(store.claim_tick("hourly", at(60)).await.unwrap());
            store.set_cursor("files", "offset=3").await.unwrap();
        }
        assert!(!is_open(&path), "the store was closed");

        let store = SqliteStorage::open(&path).unwrap();
        let mut finished = parent.clone();
        finished.status = RunStatus::Failed;
        finished.ended_at = Some(at(9));
        finished.failure = Some("b failed".into());
        assert_eq!(
            store.run(&parent.run_id).await.unwrap(),
            Some(finished.clone())
        );
        let mut beating = child.clone();
        beating.heartbeat_at = at(7);
        assert_eq!(store.runs(10).await.unwrap(), [beating.clone(), finished]);
        assert_eq!(store.running_runs().await.unwrap(), [beating]);
        assert_eq!(store.events(&parent.run_id, None).await.unwrap(), events);
        let latest = store.latest_materializations().await.unwrap();
        assert_eq!(latest.len(), 1);
        assert_eq!(
            (latest[0].asset.as_str(), latest[0].seq, &latest[0].value),
            ("a", 2, &json!({"rows": [1, 2, 3]}))
        );
        assert_eq!(latest[0].timestamp, events[2].timestamp);
        assert!(
            !store.claim_tick("hourly", at(60)).await.unwrap(),
            "a claimed tick stays claimed"
        );
        assert_eq!(
            store.cursor("files").await.unwrap().as_deref(),
            Some("offset=3")
        );
    }

    #[tokio::test]
    async fn events_come_back_in_order_after_reopening() {
        let dir = TempDir::new("order");
        let runs = ["o1", "o2", "o3"];
        {
            let store = SqliteStorage::open(dir.file()).unwrap();
            for (i, id) in runs.iter().enumerate() {
                store.create_run(&run_record(id, i as i64)).await.unwrap();
            }
            // Batches mix runs and arrive out of order: 20..30, then 0..10, then 10..20.
            for range in [20..30, 0..10, 10..20] {
                let batch: Vec<Event> = range
                    .rev()
                    .flat_map(|seq| {
                        runs.iter()
                            .map(move |id| log(id, seq, &format!("{id}-{seq}")))
                    })
                    .collect();
                store.append_events(&batch).await.unwrap();
            }
        }
        let store = SqliteStorage::open(dir.file()).unwrap();
        for id in runs {
            let expected: Vec<Event> = (0..30)
                .map(|seq| log(id, seq, &format!("{id}-{seq}")))
                .collect();
            assert_eq!(
                store.events(&RunId::from(id), None).await.unwrap(),
                expected
            );
            assert_eq!(
                store.events(&RunId::from(id), Some(24)).await.unwrap(),
                expected[25..]
            );
        }
    }

    #[tokio::test]
    async fn a_new_store_is_versioned_and_in_wal_mode() {
        let dir = TempDir::new("fresh");
        let store = SqliteStorage::open(dir.file()).unwrap();
        let conn = Connection::open(store.path()).unwrap();
        let pragma = |name: &str| -> String {
            conn.pragma_query_value(None, name, |row| row.get::<_, rusqlite::types::Value>(0))
                .map(|value| match value {
                    rusqlite::types::Value::Integer(i) => i.to_string(),
                    rusqlite::types::Value::Text(t) => t,
                    other => format!("{other:?}"),
                })
                .unwrap()
        };
        assert_eq!(pragma("journal_mode"), "wal");
        assert_eq!(pragma("user_version"), SCHEMA_VERSION.to_string());
        assert_eq!(pragma("application_id"), APPLICATION_ID.to_string());
        let tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        for table in ["cursors", "events", "materializations", "runs", "ticks"] {
            assert!(
                tables.iter().any(|t| t == table),
                "{table} is missing from {tables:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_store_of_a_newer_schema_is_refused_and_left_untouched() {
        let dir = TempDir::new("newer");
        let path = dir.file();
        {
            let store = SqliteStorage::open(&path).unwrap();
            store.create_run(&run_record("r", 0)).await.unwrap();
        }
        {
            let conn = Connection::open(&path).unwrap();
            conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
                .unwrap();
        }
        let before = fs::read(&path).unwrap();
        let files = files_in(&dir.0);
        let message = open_error(&path);
        let shown = fs::canonicalize(&path).unwrap().display().to_string();
        assert!(message.contains(&shown), "{message}");
        assert!(message.contains("newer version of dagrs"), "{message}");
        assert!(
            message.contains(&format!("schema version is {}", SCHEMA_VERSION + 1)),
            "{message}"
        );
        assert!(
            message.contains(&format!("up to {SCHEMA_VERSION}")),
            "{message}"
        );
        assert!(
            fs::read(&path).unwrap() == before,
            "the file is not modified"
        );
        assert_eq!(files_in(&dir.0), files);
    }

    #[tokio::test]
    async fn files_that_are_not_databases_are_refused_and_left_untouched() {
        let mut rng = fastrand::Rng::with_seed(7);
        let random: Vec<u8> = (0..4096).map(|_| rng.u8(..)).collect();
        let mut damaged = SQLITE_HEADER.to_vec();
        damaged.resize(4096, 0xFF);
        let cases: [(&str, Vec<u8>); 4] = [
            ("random bytes", random),
            ("text", b"name,value\nflow,1\npressure,2\n".to_vec()),
            ("zeros", vec![0; 1024]),
            ("a SQLite header over garbage", damaged),
        ];
        for (what, bytes) in cases {
            let dir = TempDir::new("garbage");
            let path = dir.file();
            fs::write(&path, &bytes).unwrap();
            let message = open_error(&path);
            let shown = fs::canonicalize(&path).unwrap().display().to_string();
            assert!(
                message.contains(&format!(
                    "{shown} is not a dagrs store: file is not a database"
                )),
                "{what}: {message}"
            );
            assert!(
                message.contains("move it away or set DAGRS_HOME"),
                "{what}: {message}"
            );
            assert!(
                fs::read(&path).unwrap() == bytes,
                "{what}: the file is not modified"
            );
            assert_eq!(files_in(&dir.0), ["dagrs.db"], "{what}: no files are added");
        }
    }

    #[tokio::test]
    async fn another_programs_database_is_refused_and_left_untouched() {
        let dir = TempDir::new("foreign");
        let path = dir.file();
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT);
                 INSERT INTO customers (name) VALUES ('ada');
                 CREATE TABLE runs (id INTEGER);",
            )
            .unwrap();
        }
        let before = fs::read(&path).unwrap();
        let message = open_error(&path);
        assert!(message.contains("not a dagrs store"), "{message}");
        assert!(message.contains("`customers`, `runs`"), "{message}");
        assert!(message.contains("DAGRS_HOME"), "{message}");
        assert!(
            fs::read(&path).unwrap() == before,
            "the file is not modified"
        );
        assert_eq!(files_in(&dir.0), ["dagrs.db"]);
    }

    #[tokio::test]
    async fn an_empty_database_becomes_a_store() {
        let dir = TempDir::new("empty");
        let zero_bytes = dir.0.join("zero.db");
        fs::write(&zero_bytes, b"").unwrap();
        let emptied = dir.0.join("emptied.db");
        {
            let conn = Connection::open(&emptied).unwrap();
            conn.execute_batch("CREATE TABLE t (x); DROP TABLE t;")
                .unwrap();
        }
        assert!(fs::metadata(&emptied).unwrap().len() > 0);
        for path in [zero_bytes, emptied] {
            let store = SqliteStorage::open(&path).unwrap();
            store.create_run(&run_record("r", 0)).await.unwrap();
            assert_eq!(store.runs(10).await.unwrap().len(), 1);
        }
    }

    #[tokio::test]
    async fn a_folder_is_refused() {
        let dir = TempDir::new("folder");
        let message = open_error(&dir.0);
        assert!(message.contains("is a folder"), "{message}");
    }

    #[test]
    fn the_default_path_follows_dagrs_home() {
        assert_eq!(
            default_path_in(Some(PathBuf::from("/srv/dagrs"))),
            Path::new("/srv/dagrs/dagrs.db")
        );
        assert_eq!(
            default_path_in(Some(PathBuf::new())),
            Path::new(".dagrs/dagrs.db")
        );
        assert_eq!(default_path_in(None), Path::new(".dagrs/dagrs.db"));
    }

    #[tokio::test]
    async fn opens_of_one_file_share_one_writer() {
        let dir = TempDir::new("shared");
        fs::create_dir_all(dir.0.join("sub")).unwrap();
        let first = SqliteStorage::open(dir.file()).unwrap();
        let second = SqliteStorage::open(dir.0.join("sub").join("..").join("dagrs.db")).unwrap();
        assert!(Arc::ptr_eq(&first.shared, &second.shared));
        assert!(Arc::ptr_eq(&first.shared, &first.clone().shared));
        let other = SqliteStorage::open(dir.0.join("other.db")).unwrap();
        assert!(!Arc::ptr_eq(&first.shared, &other.shared));
        first.create_run(&run_record("r", 0)).await.unwrap();
        assert!(second.run(&RunId::from("r")).await.unwrap().is_some());
        drop((first, second));
        assert!(!is_open(&dir.file()));
        assert!(is_open(&dir.0.join("other.db")));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_through_two_opens_all_land() {
        const TASKS: usize = 16;
        const BATCHES: u64 = 200;
        const PER_BATCH: u64 = 3;
        let dir = TempDir::new("stress");
        let stores = [
            SqliteStorage::open(dir.file()).unwrap(),
            SqliteStorage::open(dir.file()).unwrap(),
        ];
        assert!(Arc::ptr_eq(&stores[0].shared, &stores[1].shared));
        let mut tasks = tokio::task::JoinSet::new();
        for task in 0..TASKS {
            let stores = stores.clone();
            tasks.spawn(async move {
                let id = format!("s{task}");
                let run_id = RunId::from(id.as_str());
                stores[task % 2]
                    .create_run(&run_record(&id, task as i64))
                    .await
                    .unwrap();
                for batch in 0..BATCHES {
                    let store = &stores[(task + batch as usize) % 2];
                    let events: Vec<Event> = (0..PER_BATCH)
                        .map(|i| {
                            let seq = batch * PER_BATCH + i;
                            if i == PER_BATCH - 1 {
                                materialization(&id, seq, &format!("asset{task}"), json!(batch))
                            } else {
                                log(&id, seq, "working")
                            }
                        })
                        .collect();
                    store.append_events(&events).await.unwrap();
                    if batch % 10 == 0 {
                        store.heartbeat(&run_id, at(batch as i64)).await.unwrap();
                    }
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("a writer failed");
        }
        for task in 0..TASKS {
            let events = stores[task % 2]
                .events(&RunId::from(format!("s{task}")), None)
                .await
                .unwrap();
            assert_eq!(events.len() as u64, BATCHES * PER_BATCH);
            assert!(events.iter().enumerate().all(|(i, e)| e.seq == i as u64));
            let asset = AssetKey::from(format!("asset{task}"));
            let latest = stores[0]
                .latest_materialization(&asset)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(latest.value, json!(BATCHES - 1));
            assert_eq!(
                stores[1]
                    .materializations(&asset, usize::MAX)
                    .await
                    .unwrap()
                    .len() as u64,
                BATCHES
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_commands_commit_together_and_a_failing_one_fails_alone() {
        let dir = TempDir::new("batch");
        let store = SqliteStorage::open(dir.file()).unwrap();
        store.create_run(&run_record("base", 0)).await.unwrap();
        let stats = Arc::clone(&store.shared.stats);
        let batches_before = stats.batches.load(Ordering::Relaxed);

        // Another connection holds the write lock, as another process would: the writer
        // waits for it (instead of failing with "database is locked") while commands queue.
        let blocker = Connection::open(store.path()).unwrap();
        blocker.execute_batch("BEGIN IMMEDIATE").unwrap();

        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..20 {
            let store = store.clone();
            tasks.spawn(async move {
                let result = store.create_run(&run_record(&format!("q{i}"), i)).await;
                ("create", result.map(|_| ()))
            });
        }
        let clone = store.clone();
        tasks.spawn(async move { ("duplicate", clone.create_run(&run_record("base", 0)).await) });
        let clone = store.clone();
        tasks.spawn(async move {
            let clash = [
                log("base", 5, "five"),
                log("base", 6, "six"),
                log("base", 5, "again"),
            ];
            ("clash", clone.append_events(&clash).await)
        });
        let clone = store.clone();
        tasks.spawn(async move {
            (
                "append",
                clone.append_events(&[log("base", 1, "one")]).await,
            )
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        while stats.queued.load(Ordering::Relaxed) < 23 {
            assert!(Instant::now() < deadline, "the commands were never queued");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        blocker.execute_batch("COMMIT").unwrap();

        let mut failed = Vec::new();
        while let Some(done) = tasks.join_next().await {
            let (what, result) = done.unwrap();
            match (what, result) {
                ("create" | "append", result) => result.unwrap(),
                (what, Err(e)) => failed.push((what, e.to_string())),
                (what, Ok(())) => panic!("{what} should have failed"),
            }
        }
        failed.sort();
        assert_eq!(failed.len(), 2);
        assert_eq!(failed[0].0, "clash");
        assert!(
            failed[0].1.contains("run `base` already has event 5"),
            "{}",
            failed[0].1
        );
        assert_eq!(failed[1].0, "duplicate");
        assert!(
            failed[1].1.contains("run `base` already exists"),
            "{}",
            failed[1].1
        );
        let batches = stats.batches.load(Ordering::Relaxed) - batches_before;
        assert!(
            (1..=2).contains(&batches),
            "23 queued commands took {batches} transactions"
        );
        assert_eq!(store.runs(100).await.unwrap().len(), 21);
        let events = store.events(&RunId::from("base"), None).await.unwrap();
        assert_eq!(
            events,
            [log("base", 1, "one")],
            "the failed batch of events left nothing"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn finishing_is_a_compare_and_set() {
        let dir = TempDir::new("cas");
        let store = SqliteStorage::open(dir.file()).unwrap();
        store.create_run(&run_record("r", 0)).await.unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..8 {
            let store = store.clone();
            tasks.spawn(async move {
                store
                    .finish_run(&RunId::from("r"), RunStatus::Failed, at(i), Some("stop"))
                    .await
                    .unwrap()
            });
        }
        let mut won = 0;
        while let Some(done) = tasks.join_next().await {
            won += usize::from(done.unwrap());
        }
        assert_eq!(won, 1, "exactly one finisher changes the run");
    }

    #[tokio::test]
    async fn unknown_runs_are_reported_as_such() {
        let dir = TempDir::new("unknown");
        let store = SqliteStorage::open(dir.file()).unwrap();
        let ghost = RunId::from("ghost");
        assert!(matches!(
            store.finish_run(&ghost, RunStatus::Failed, at(1), None).await,
            Err(Error::RunNotFound(id)) if id == "ghost"
        ));
        assert!(matches!(
            store.heartbeat(&ghost, at(1)).await,
            Err(Error::RunNotFound(id)) if id == "ghost"
        ));
        store.create_run(&run_record("real", 0)).await.unwrap();
        assert!(matches!(
            store.append_events(&[log("real", 0, "ok"), log("ghost", 0, "lost")]).await,
            Err(Error::RunNotFound(id)) if id == "ghost"
        ));
        assert!(
            store
                .events(&RunId::from("real"), None)
                .await
                .unwrap()
                .is_empty(),
            "a batch naming an unknown run is not written"
        );
    }

    #[tokio::test]
    async fn instants_round_trip_to_the_microsecond_and_sort() {
        let dir = TempDir::new("time");
        let store = SqliteStorage::open(dir.file()).unwrap();
        let before_epoch = Utc.with_ymd_and_hms(1969, 12, 31, 23, 59, 59).unwrap()
            + chrono::Duration::microseconds(999_999);
        let far = Utc.with_ymd_and_hms(2400, 2, 29, 12, 0, 0).unwrap()
            + chrono::Duration::microseconds(1);
        for (id, started) in [("old", before_epoch), ("far", far), ("now", at(0))] {
            let mut run = run_record(id, 0);
            run.started_at = started;
            run.heartbeat_at = started;
            store.create_run(&run).await.unwrap();
            assert_eq!(
                store.run(&run.run_id).await.unwrap().unwrap().started_at,
                started
            );
        }
        let order: Vec<String> = store
            .runs(10)
            .await
            .unwrap()
            .iter()
            .map(|r| r.run_id.to_string())
            .collect();
        assert_eq!(order, ["far", "now", "old"]);
        let mut early = log("old", 0, "early");
        early.timestamp = before_epoch;
        store.append_events(&[early.clone()]).await.unwrap();
        assert_eq!(
            store.events(&RunId::from("old"), None).await.unwrap(),
            [early]
        );
    }
}
