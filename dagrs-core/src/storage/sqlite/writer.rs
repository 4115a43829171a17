//! The writer shared by every `SqliteStorage` of one file in a process: the registry of open
//! stores, the write thread and its batches, and the pool of read connections.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock, Weak};

pub(super) use crate::lock;
use std::thread::JoinHandle;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use super::file::{
    check_header, inspect, is_not_a_database, migrate, not_a_store, retry_busy, OPEN,
    SCHEMA_VERSION,
};
use super::rows::Damage;
use super::SqliteStorage;
use crate::error::Error;

/// The most commands the writer commits in one transaction.
const MAX_BATCH: usize = 256;

/// The page cache of the writer connection, in KiB.
const WRITER_CACHE_KIB: i64 = 32 * 1024;

/// Idle read connections kept open per store.
const MAX_IDLE_READERS: usize = 4;

impl SqliteStorage {
    /// Runs `work` on the writer thread inside its own savepoint of the current batch, and
    /// returns its result once the batch is committed.
    pub(super) async fn write<T, F>(&self, op: &'static str, work: F) -> Result<T, Error>
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
        if let Some(damage) = lock(&shared.damaged).clone() {
            return Err(shared.damaged_error(op, &damage));
        }
        if shared.read_only {
            return Err(Error::storage(
                op,
                format!(
                    "the SQLite store {} was opened read-only; open it with \
                     `SqliteStorage::open` (where it may be written) to {op}",
                    shared.path.display()
                ),
            ));
        }
        let sender = shared
            .sender
            .as_ref()
            .ok_or_else(|| writer_stopped(op, &shared.path))?;
        shared.stats.queued.fetch_add(1, Ordering::Relaxed);
        if sender.send(command).is_err() {
            shared.stats.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(writer_stopped(op, &shared.path));
        }
        let result = answer.await.map_err(|_| writer_stopped(op, &shared.path))?;
        shared.checked(op, result)
    }

    /// Runs `work` on a read connection, on tokio's blocking pool.
    pub(super) async fn read<T, F>(&self, op: &'static str, work: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, Error> + Send + 'static,
    {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || {
            let conn = shared.reader(op)?;
            let result = work(&conn);
            shared.give_back(conn);
            shared.checked(op, result)
        })
        .await
        .map_err(|e| Error::storage(op, e))?
    }
}

/// The stores open in this process, by canonical path, so that one file gets one writer.
pub(super) fn registry() -> &'static Mutex<HashMap<PathBuf, Weak<Shared>>> {
    static STORES: OnceLock<Mutex<HashMap<PathBuf, Weak<Shared>>>> = OnceLock::new();
    STORES.get_or_init(Default::default)
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

/// What the writer has done, for `Debug` and tests.
#[derive(Debug, Default)]
pub(super) struct Stats {
    /// Commands sent and not yet answered.
    pub(super) queued: AtomicUsize,
    /// Transactions the writer has run.
    pub(super) batches: AtomicU64,
}

/// One open store, shared by every `SqliteStorage` of its file in this process.
pub(super) struct Shared {
    pub(super) path: PathBuf,
    /// `None` only while dropping.
    sender: Option<mpsc::Sender<Box<dyn Job>>>,
    writer: Option<JoinHandle<()>>,
    readers: Mutex<Vec<Connection>>,
    pub(super) stats: Arc<Stats>,
    /// What was found damaged, once something was: the store then refuses every write.
    damaged: Mutex<Option<String>>,
    /// Opened for reading only: no writer, read connections that never create files.
    read_only: bool,
}

impl Shared {
    pub(super) fn open(path: PathBuf) -> Result<Shared, Error> {
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
        let mode: String = retry_busy(|| {
            conn.pragma_update_and_check(None, "journal_mode", "wal", |row| row.get(0))
        })
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
            .map_err(sqlite)?;
        // The writer keeps the upper levels of every index in its page cache (the default of
        // 2 MiB is outgrown by a store of a few hundred thousand materializations, and then
        // every insert reads pages back from the file).
        conn.pragma_update(None, "cache_size", WRITER_CACHE_KIB.wrapping_neg())
            .map_err(sqlite)?;
        // Foreign keys stay off while migrations rebuild tables, so no row cascades away.
        if version != Some(SCHEMA_VERSION) {
            migrate(&conn, &path)?;
        }
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(sqlite)?;

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
            damaged: Mutex::new(None),
            read_only: false,
        })
    }

    /// Opens the existing store at `path` for reading only: nothing is created, migrated or
    /// written, so a store in a read-only folder (a backup, another user's home) can be
    /// inspected. Its schema must be this version's.
    pub(super) fn open_read_only(path: PathBuf) -> Result<Shared, Error> {
        check_header(&path)?;
        let shared = Shared {
            path,
            sender: None,
            writer: None,
            readers: Mutex::new(Vec::new()),
            stats: Arc::default(),
            damaged: Mutex::new(None),
            read_only: true,
        };
        let conn = shared.reader(OPEN)?;
        let version = inspect(&conn, &shared.path)?;
        shared.give_back(conn);
        match version {
            Some(SCHEMA_VERSION) => Ok(shared),
            found => Err(Error::storage(
                OPEN,
                format!(
                    "the SQLite store {} is at schema version {} and can only be read at \
                     version {SCHEMA_VERSION}; run a command that writes (or open it with \
                     `SqliteStorage::open`) once to bring it up to date",
                    shared.path.display(),
                    found.unwrap_or(0)
                ),
            )),
        }
    }

    /// An idle read connection, or a new one.
    fn reader(&self, op: &'static str) -> Result<Connection, Error> {
        if let Some(conn) = lock(&self.readers).pop() {
            return Ok(conn);
        }
        let open = |path: &Path, flags: OpenFlags| -> rusqlite::Result<Connection> {
            let conn = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
            conn.busy_timeout(SqliteStorage::BUSY_TIMEOUT)?;
            conn.pragma_update(None, "query_only", true)?;
            // The first read makes SQLite open the WAL index, which may fail in a folder this
            // process cannot write.
            conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))?;
            Ok(conn)
        };
        let opened = if self.read_only {
            open(&self.path, OpenFlags::SQLITE_OPEN_READ_ONLY).or_else(|_| {
                // A WAL store whose folder is read-only: read the file as it is, with no
                // WAL index (nobody can be writing it without write access to the folder).
                let uri = format!("file:{}?immutable=1", self.path.display());
                open(
                    Path::new(&uri),
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
                )
            })
        } else {
            open(&self.path, OpenFlags::SQLITE_OPEN_READ_WRITE)
        };
        opened.map_err(|e| {
            Error::storage(
                op,
                format!(
                    "cannot open a read connection to the SQLite store {}: {e}",
                    self.path.display()
                ),
            )
        })
    }

    /// Passes `result` on; when it says the file is damaged, remembers that (so every later
    /// write is refused, and nothing more is written into a damaged file) and says how to
    /// recover.
    fn checked<T>(&self, op: &'static str, result: Result<T, Error>) -> Result<T, Error> {
        match result {
            Err(Error::Storage { source, .. }) if source.downcast_ref::<Damage>().is_some() => {
                let detail = source.to_string();
                lock(&self.damaged).get_or_insert_with(|| detail.clone());
                tracing::error!(path = %self.path.display(), "the SQLite store is damaged: {detail}");
                Err(self.damaged_error(op, &detail))
            }
            other => other,
        }
    }

    fn damaged_error(&self, op: &'static str, detail: &str) -> Error {
        let path = self.path.display();
        Error::storage(
            op,
            format!(
                "the SQLite store {path} is damaged ({detail}); dagrs writes nothing more into \
                 it. Keep a copy, then recover what is readable with `sqlite3 {path} .recover \
                 | sqlite3 recovered.db` and use that file, or move {path} away (or set \
                 DAGRS_HOME) to start a new store"
            ),
        )
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
