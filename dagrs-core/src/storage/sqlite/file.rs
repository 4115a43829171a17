//! The file of a store: where it is, what it holds, and its schema.

use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, ErrorCode};

use crate::error::Error;

/// `PRAGMA application_id` of a dagrs store: `dagr` in ASCII.
pub(super) const APPLICATION_ID: i32 = 0x6461_6772;

/// The schema, one migration per version: `MIGRATIONS[n]` takes a store from version `n` to
/// `n + 1`. Never edit a released migration; append a new one.
pub(super) const MIGRATIONS: &[&str] = &[
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
    // Version 2: runs may be queued (waiting for a slot) or canceling (asked to stop by
    // another process). SQLite cannot change a CHECK constraint in place: the table is
    // rebuilt (foreign keys are off while migrations run, so events stay).
    "
    CREATE TABLE runs_v2 (
        run_id        TEXT PRIMARY KEY NOT NULL,
        status        TEXT NOT NULL
                      CHECK (status IN ('queued', 'running', 'canceling', 'succeeded', 'failed',
                                        'cancelled')),
        selection     TEXT NOT NULL,
        assets        TEXT NOT NULL,
        config        TEXT NOT NULL,
        tags          TEXT NOT NULL,
        started_at    INTEGER NOT NULL,
        ended_at      INTEGER,
        owner         TEXT NOT NULL,
        heartbeat_at  INTEGER NOT NULL,
        parent_run_id TEXT,
        failure       TEXT
    );
    INSERT INTO runs_v2 SELECT * FROM runs;
    DROP TABLE runs;
    ALTER TABLE runs_v2 RENAME TO runs;
    CREATE INDEX runs_by_start ON runs (started_at);
    CREATE INDEX runs_active ON runs (status) WHERE status IN ('running', 'canceling');
    ",
    // Version 3: ticks record what they did; run keys of sensors; the on/off state of
    // schedules and sensors; queued runs found by an index.
    "
    ALTER TABLE ticks ADD COLUMN kind TEXT NOT NULL DEFAULT 'schedule'
        CHECK (kind IN ('schedule', 'sensor'));
    ALTER TABLE ticks ADD COLUMN status TEXT NOT NULL DEFAULT 'fired'
        CHECK (status IN ('started', 'fired', 'skipped', 'failed'));
    ALTER TABLE ticks ADD COLUMN run_ids TEXT NOT NULL DEFAULT '[]';  -- JSON array
    ALTER TABLE ticks ADD COLUMN reason TEXT;
    CREATE INDEX ticks_newest ON ticks (tick);

    CREATE TABLE run_keys (
        instigator TEXT NOT NULL,
        run_key    TEXT NOT NULL,
        run_id     TEXT NOT NULL,
        PRIMARY KEY (instigator, run_key)
    );

    CREATE TABLE instigators (
        name   TEXT PRIMARY KEY NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('running', 'stopped'))
    );

    CREATE INDEX runs_queued ON runs (started_at) WHERE status = 'queued';
    ",
    // Version 4: partitions. A materialization records the partitions it covers (NULL for an
    // unpartitioned asset); an asset's partition status is kept as one row per range (the
    // ranges of one asset, status and discrete keys are disjoint and never adjacent); the
    // keys of dynamic partitions definitions, in the order they were added; backfills, each
    // one JSON record updated by compare-and-set on `version`.
    "
    ALTER TABLE materializations ADD COLUMN partition_key TEXT;
    ALTER TABLE materializations ADD COLUMN partition_dims TEXT;
    ALTER TABLE materializations ADD COLUMN partition_start INTEGER;
    ALTER TABLE materializations ADD COLUMN partition_end INTEGER;
    CREATE INDEX materializations_by_partition
        ON materializations (asset, partition_dims, partition_start, partition_end)
        WHERE partition_dims IS NOT NULL;

    CREATE TABLE partition_ranges (
        asset    TEXT NOT NULL,
        status   TEXT NOT NULL CHECK (status IN ('materialized', 'failed')),
        dims     TEXT NOT NULL,    -- discrete keys joined by '|', '' when there are none
        start_at INTEGER NOT NULL, -- seconds since the Unix epoch (0 without time)
        end_at   INTEGER NOT NULL CHECK (end_at > start_at),
        PRIMARY KEY (asset, status, dims, start_at)
    ) WITHOUT ROWID;

    CREATE TABLE dynamic_partitions (
        name     TEXT NOT NULL,
        key      TEXT NOT NULL,
        position INTEGER NOT NULL,  -- order of adding
        PRIMARY KEY (name, key)
    );
    CREATE INDEX dynamic_partitions_in_order ON dynamic_partitions (name, position);

    CREATE TABLE backfills (
        id         TEXT PRIMARY KEY NOT NULL,
        status     TEXT NOT NULL
                   CHECK (status IN ('requested', 'canceling', 'completed', 'failed',
                                     'cancelled')),
        created_at INTEGER NOT NULL, -- microseconds since the Unix epoch, UTC
        version    INTEGER NOT NULL CHECK (version >= 0),
        body       TEXT NOT NULL     -- JSON BackfillRecord
    );
    CREATE INDEX backfills_newest ON backfills (created_at, id);
    ",
    // Version 5: pages of runs (newest first, by status, by job) and of event logs (by step,
    // and without log lines) read from indexes, for the web UI. The expressions never fail,
    // whatever a row holds (`json_valid` first; a text prefix for event kinds, whose tag
    // serde_json writes first), so a damaged row can still be written and found.
    r#"
    CREATE INDEX runs_page ON runs (started_at, run_id);
    CREATE INDEX runs_page_by_status ON runs (status, started_at, run_id);
    CREATE INDEX runs_page_by_job ON runs (
        (CASE WHEN json_valid(tags) THEN json_extract(tags, '$."dagrs/job"') END),
        started_at, run_id);
    CREATE INDEX events_by_asset ON events (run_id, asset, seq);
    CREATE INDEX events_without_logs ON events (run_id, seq)
        WHERE substr(kind, 1, 14) <> '{"type":"log",';
    "#,
    // Version 6: asset checks and automation. Every check evaluation event gets a row (the
    // row goes when its run is pruned; `id` is the order of appending, newest last); the
    // daemon's automation evaluations (pruned by age, like ticks). The daemon follows new
    // materializations by `id` (the primary key; writes are serialized, so ids become visible
    // in order): no index is needed for it.
    "
    CREATE TABLE check_records (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        asset       TEXT NOT NULL,
        check_name  TEXT NOT NULL,
        run_id      TEXT NOT NULL,
        seq         INTEGER NOT NULL,
        timestamp   INTEGER NOT NULL,  -- microseconds since the Unix epoch, UTC
        passed      INTEGER NOT NULL CHECK (passed IN (0, 1)),
        severity    TEXT NOT NULL CHECK (severity IN ('warn', 'error')),
        blocking    INTEGER NOT NULL CHECK (blocking IN (0, 1)),
        description TEXT,
        metadata    TEXT NOT NULL      -- JSON object
    );
    CREATE INDEX check_records_by_asset ON check_records (asset, id);
    CREATE INDEX check_records_by_run ON check_records (run_id);

    -- `id` is the order of writing: it breaks ties between records of one instant.
    CREATE TABLE automation_records (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        asset        TEXT NOT NULL,
        evaluated_at INTEGER NOT NULL,  -- microseconds since the Unix epoch, UTC
        requested    INTEGER NOT NULL CHECK (requested IN (0, 1)),
        reason       TEXT NOT NULL,
        run_ids      TEXT NOT NULL      -- JSON array
    );
    CREATE INDEX automation_records_by_asset ON automation_records (asset, evaluated_at);
    CREATE INDEX automation_records_newest ON automation_records (evaluated_at);
    ",
    // Version 7: a flat cost per materialization however large the store grows. The index on
    // `(asset, id)` took one leaf page per asset in every run (a run of 1,000 assets rewrote
    // 1,000 scattered pages once the index outgrew them); instead, each asset's latest
    // materialization is one row of the small `asset_latest`, and each materialization names
    // the one before it (`previous`), so an asset's history is a walk back along that chain.
    "
    ALTER TABLE materializations ADD COLUMN previous INTEGER;
    UPDATE materializations SET previous = (
        SELECT MAX(p.id) FROM materializations AS p
        WHERE p.asset = materializations.asset AND p.id < materializations.id);
    CREATE TABLE asset_latest (
        asset TEXT PRIMARY KEY NOT NULL,
        id    INTEGER NOT NULL   -- the asset's newest row of `materializations`
    ) WITHOUT ROWID;
    INSERT INTO asset_latest (asset, id) SELECT asset, MAX(id) FROM materializations GROUP BY asset;
    DROP INDEX materializations_by_asset;
    ",
];

/// The schema version this code writes and understands.
pub(super) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The first 16 bytes of every SQLite database file.
pub(super) const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

pub(super) const OPEN: &str = "open the SQLite store";

/// Creates the parent folders of `path` and returns its canonical form (of the folder, joined
/// with the file name, when the file does not exist yet).
pub(super) fn resolve(path: &Path) -> Result<PathBuf, Error> {
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

/// The canonical form of an existing `path`, creating nothing.
pub(super) fn resolve_existing(path: &Path) -> Result<PathBuf, Error> {
    fs::canonicalize(path).map_err(|e| {
        Error::storage(
            OPEN,
            format!("cannot resolve the path {}: {e}", path.display()),
        )
    })
}

pub(super) fn not_a_store(path: &Path, reason: impl fmt::Display) -> Error {
    Error::storage(
        OPEN,
        format!(
            "{} is not a dagrs store: {reason}; move it away or set DAGRS_HOME to use \
             another folder",
            path.display()
        ),
    )
}

/// Refuses, without opening it with SQLite, a file that does not start like a database.
pub(super) fn check_header(path: &Path) -> Result<(), Error> {
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
pub(super) fn is_not_a_database(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt)
    )
}

/// The application id, schema version and object names of the file.
fn read_header(conn: &Connection) -> rusqlite::Result<(i32, i64, Vec<String>)> {
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
}

/// Runs `work` again while SQLite says the file is busy or locked (another process opening
/// or migrating it), up to [`SqliteStorage::BUSY_TIMEOUT`](super::SqliteStorage::BUSY_TIMEOUT):
/// some lock upgrades fail at once instead of waiting for the busy timeout.
pub(super) fn retry_busy<T>(mut work: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let deadline = std::time::Instant::now() + super::SqliteStorage::BUSY_TIMEOUT;
    let mut pause = std::time::Duration::from_millis(2);
    loop {
        match work() {
            Err(e)
                if matches!(
                    e.sqlite_error_code(),
                    Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
                ) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

/// What an opened file holds: `None` for an empty database, `Some(version)` for a dagrs
/// store this code can use; an error for anything else. Only reads.
pub(super) fn inspect(conn: &Connection, path: &Path) -> Result<Option<i64>, Error> {
    // One snapshot: another process may commit its migration between separate reads.
    let read = || -> rusqlite::Result<(i32, i64, Vec<String>)> {
        conn.execute_batch("SAVEPOINT inspect")?;
        let header = read_header(conn);
        conn.execute_batch("RELEASE inspect")?;
        header
    };
    let (application_id, version, names) = retry_busy(read).map_err(|e| {
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
pub(super) fn migrate(conn: &Connection, path: &Path) -> Result<(), Error> {
    retry_busy(|| conn.execute_batch("BEGIN IMMEDIATE")).map_err(|e| {
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
