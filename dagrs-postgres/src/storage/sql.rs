//! The store's statements, with the schema's quoted name filled in once.

use crate::ident::Ident;

use super::VERSION_TABLE;

/// The columns of `runs`, in the order `run_from_row` reads them.
pub(super) const RUN_COLUMNS: &str =
    "run_id, status, selection, assets, config, tags, started_at, \
                           ended_at, owner, heartbeat_at, parent_run_id, failure";

/// The columns of `ticks`, in the order `tick_from_row` reads them.
pub(super) const TICK_COLUMNS: &str = "name, tick, kind, status, run_ids, reason";

/// The columns of `materializations`, in the order `materialization_from_row` reads them.
pub(super) const MATERIALIZATION_COLUMNS: &str =
    "asset, run_id, seq, ts, metadata, value, code_version, \
     partition_key, partition_dims, partition_start, partition_end";

/// The columns of `check_records`, in the order `check_from_row` reads them.
pub(super) const CHECK_COLUMNS: &str =
    "asset, check_name, run_id, seq, ts, passed, severity, blocking, description, metadata";

/// The columns of `automation_records`, in the order `automation_from_row` reads them.
pub(super) const AUTOMATION_COLUMNS: &str = "asset, evaluated_at, requested, reason, run_ids";

/// The columns of `backfills`, in the order `backfill_from_row` reads them.
pub(super) const BACKFILL_COLUMNS: &str = "id, version, body";
/// The statements of the store, with the schema's quoted name filled in once.
pub(super) struct Statements {
    pub(super) create_run: String,
    pub(super) append_events: String,
    pub(super) finish_run: String,
    pub(super) request_cancel: String,
    pub(super) unknown_runs: String,
    pub(super) events_present: String,
    pub(super) heartbeat: String,
    pub(super) run: String,
    pub(super) runs: String,
    pub(super) running_runs: String,
    pub(super) events: String,
    pub(super) latest_materialization: String,
    pub(super) latest_materializations: String,
    pub(super) materializations: String,
    pub(super) materialization_position: String,
    pub(super) materializations_after: String,
    pub(super) check_records: String,
    pub(super) record_automation: String,
    pub(super) automation_records: String,
    pub(super) automation_records_of: String,
    pub(super) delete_check_records: String,
    pub(super) delete_automation: String,
    pub(super) finished_runs: String,
    pub(super) delete_events: String,
    pub(super) delete_materializations: String,
    pub(super) delete_runs: String,
    pub(super) delete_ticks: String,
    pub(super) claim_ticks: String,
    pub(super) update_ticks: String,
    pub(super) ticks: String,
    pub(super) claim_run_key: String,
    pub(super) instigator_states: String,
    pub(super) set_instigator_state: String,
    pub(super) start_run: String,
    pub(super) queued_runs: String,
    pub(super) cursor: String,
    pub(super) cursors: String,
    pub(super) set_cursor: String,
    pub(super) version: String,
    pub(super) lock_partitions: String,
    pub(super) take_touching: String,
    pub(super) take_overlapping: String,
    pub(super) insert_ranges: String,
    pub(super) partition_status: String,
    pub(super) partition_materialization: String,
    pub(super) dynamic_partitions: String,
    pub(super) add_dynamic_partitions: String,
    pub(super) delete_dynamic_partition: String,
    pub(super) create_backfill: String,
    pub(super) backfill: String,
    pub(super) backfills: String,
    pub(super) update_backfill: String,
}

impl Statements {
    pub(super) fn new(schema: &Ident) -> Self {
        let runs = format!("{schema}.runs");
        let events = format!("{schema}.events");
        let materializations = format!("{schema}.materializations");
        let checks = format!("{schema}.check_records");
        let automation = format!("{schema}.automation_records");
        let ticks = format!("{schema}.ticks");
        let cursors = format!("{schema}.cursors");
        let run_keys = format!("{schema}.run_keys");
        let instigators = format!("{schema}.instigators");
        let version_table = format!("{schema}.{}", Ident::known(VERSION_TABLE));
        let ranges = format!("{schema}.partition_ranges");
        let dynamic = format!("{schema}.dynamic_partitions");
        let backfills = format!("{schema}.backfills");
        // The stored range of one (asset $1, status $2, dims $3) that starts last before $4,
        // when it reaches $4 (`>=`: touching) or past it (`>`: overlapping). Ranges of one
        // (asset, status, dims) are disjoint and sorted, so no earlier range can: one
        // backward index seek, however many ranges are stored.
        let before = |reaches: &str| {
            format!(
                "(SELECT b.start_at FROM ( \
                     SELECT start_at, end_at FROM {ranges} \
                     WHERE asset = $1 AND status = $2 AND dims = $3 AND start_at < $4 \
                     ORDER BY start_at DESC LIMIT 1 \
                 ) AS b WHERE b.end_at {reaches} $4)"
            )
        };
        Self {
            create_run: format!(
                "INSERT INTO {runs} ({RUN_COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
            ),
            // One statement, so one transaction and one round trip for the whole batch: the
            // events go in from arrays (one row per element) in a data-modifying CTE, the
            // materializations and check records among them (split out in Rust, so the
            // server never parses the JSON) from arrays of their own, in batch order. A
            // duplicate (run_id, seq) fails the statement as a whole, and nothing of it stays.
            append_events: format!(
                "WITH logged AS ( \
                     INSERT INTO {events} (run_id, seq, ts, asset, kind) \
                     SELECT * FROM unnest($1::text[], $2::bigint[], $3::timestamptz[], \
                                          $4::text[], $5::json[]) \
                 ), checked AS ( \
                     INSERT INTO {checks} ({CHECK_COLUMNS}) \
                     SELECT asset, check_name, run_id, seq, ts, passed, severity, blocking, \
                            description, metadata \
                     FROM unnest($17::text[], $18::text[], $19::text[], $20::bigint[], \
                                 $21::timestamptz[], $22::boolean[], $23::text[], \
                                 $24::boolean[], $25::text[], $26::json[]) WITH ORDINALITY \
                         AS c(asset, check_name, run_id, seq, ts, passed, severity, blocking, \
                              description, metadata, n) \
                     ORDER BY n \
                 ) \
                 INSERT INTO {materializations} ({MATERIALIZATION_COLUMNS}) \
                 SELECT asset, run_id, seq, ts, metadata, value, code_version, \
                        partition_key, partition_dims, partition_start, partition_end \
                 FROM unnest($6::text[], $7::text[], $8::bigint[], $9::timestamptz[], \
                             $10::json[], $11::json[], $12::text[], $13::text[], $14::text[], \
                             $15::bigint[], $16::bigint[]) WITH ORDINALITY \
                     AS m(asset, run_id, seq, ts, metadata, value, code_version, \
                          partition_key, partition_dims, partition_start, partition_end, n) \
                 ORDER BY n"
            ),
            // Whether the compare-and-set changed the run, and whether the run exists.
            finish_run: format!(
                "WITH finished AS ( \
                     UPDATE {runs} SET status = $2, ended_at = $3, \
                                      failure = coalesce($4, failure) \
                     WHERE run_id = $1 AND status IN ('running', 'canceling') RETURNING 1 \
                 ) \
                 SELECT EXISTS (SELECT 1 FROM finished), \
                        EXISTS (SELECT 1 FROM {runs} WHERE run_id = $1)"
            ),
            request_cancel: format!(
                "WITH asked AS ( \
                     UPDATE {runs} SET failure = $2, \
                         status = CASE status WHEN 'queued' THEN 'cancelled' ELSE 'canceling' END, \
                         ended_at = CASE status WHEN 'queued' THEN $3 ELSE ended_at END \
                     WHERE run_id = $1 AND status IN ('running', 'queued') RETURNING 1 \
                 ) \
                 SELECT EXISTS (SELECT 1 FROM asked), \
                        EXISTS (SELECT 1 FROM {runs} WHERE run_id = $1)"
            ),
            events_present: format!(
                "SELECT count(*) FROM unnest($1::text[], $2::bigint[]) AS b(run_id, seq) \
                 WHERE EXISTS (SELECT 1 FROM {events} AS e \
                               WHERE e.run_id = b.run_id AND e.seq = b.seq)"
            ),
            unknown_runs: format!(
                "SELECT id FROM unnest($1::text[]) AS id \
                 WHERE NOT EXISTS (SELECT 1 FROM {runs} WHERE run_id = id) LIMIT 1"
            ),
            heartbeat: format!("UPDATE {runs} SET heartbeat_at = $2 WHERE run_id = $1"),
            run: format!("SELECT {RUN_COLUMNS} FROM {runs} WHERE run_id = $1"),
            runs: format!(
                "SELECT {RUN_COLUMNS} FROM {runs} ORDER BY started_at DESC, created DESC LIMIT $1"
            ),
            running_runs: format!(
                "SELECT {RUN_COLUMNS} FROM {runs} WHERE status IN ('running', 'canceling') \
                 ORDER BY created"
            ),
            events: format!(
                "SELECT seq, ts, asset, kind FROM {events} \
                 WHERE run_id = $1 AND seq > $2 ORDER BY seq"
            ),
            latest_materialization: format!(
                "SELECT {MATERIALIZATION_COLUMNS} FROM {materializations} \
                 WHERE asset = $1 ORDER BY id DESC LIMIT 1"
            ),
            latest_materializations: format!(
                "SELECT DISTINCT ON (asset) {MATERIALIZATION_COLUMNS} FROM {materializations} \
                 ORDER BY asset, id DESC"
            ),
            materializations: format!(
                "SELECT {MATERIALIZATION_COLUMNS} FROM {materializations} \
                 WHERE asset = $1 ORDER BY id DESC LIMIT $2"
            ),
            // Positions are `(tx, id)`, final below the oldest transaction still running:
            // rows of running transactions wait until every older transaction has ended.
            // (`m.tx`: the output column `tx::text::bigint` is named `tx` too, and sorting by
            // it would not read the index in order.)
            materialization_position: format!(
                "SELECT m.tx::text::bigint, m.id FROM {materializations} AS m \
                 WHERE m.tx < pg_snapshot_xmin(pg_current_snapshot()) \
                 ORDER BY m.tx DESC, m.id DESC LIMIT 1"
            ),
            materializations_after: format!(
                "SELECT {MATERIALIZATION_COLUMNS}, m.tx::text::bigint, m.id \
                 FROM {materializations} AS m \
                 WHERE (m.tx, m.id) > ($1::text::xid8, $2) \
                   AND m.tx < pg_snapshot_xmin(pg_current_snapshot()) \
                 ORDER BY m.tx, m.id LIMIT $3"
            ),
            check_records: format!(
                "SELECT {CHECK_COLUMNS} FROM {checks} WHERE asset = $1 ORDER BY id DESC LIMIT $2"
            ),
            // In the order given, so later records get later ids (they are newer on ties).
            record_automation: format!(
                "INSERT INTO {automation} ({AUTOMATION_COLUMNS}) \
                 SELECT asset, evaluated_at, requested, reason, run_ids \
                 FROM unnest($1::text[], $2::timestamptz[], $3::boolean[], $4::text[], \
                             $5::jsonb[]) WITH ORDINALITY \
                     AS a(asset, evaluated_at, requested, reason, run_ids, n) \
                 ORDER BY n"
            ),
            automation_records: format!(
                "SELECT {AUTOMATION_COLUMNS} FROM {automation} \
                 ORDER BY evaluated_at DESC, id DESC LIMIT $1"
            ),
            automation_records_of: format!(
                "SELECT {AUTOMATION_COLUMNS} FROM {automation} WHERE asset = $1 \
                 ORDER BY evaluated_at DESC, id DESC LIMIT $2"
            ),
            delete_check_records: format!("DELETE FROM {checks} WHERE run_id = ANY ($1)"),
            delete_automation: format!("DELETE FROM {automation} WHERE evaluated_at < $1"),
            // Active runs never count for retention, so they are not even read.
            finished_runs: format!(
                "SELECT {RUN_COLUMNS} FROM {runs} \
                 WHERE status IN ('succeeded', 'failed', 'cancelled')"
            ),
            delete_events: format!("DELETE FROM {events} WHERE run_id = ANY ($1)"),
            delete_materializations: format!(
                "DELETE FROM {materializations} AS m WHERE m.run_id = ANY ($1) \
                 AND m.id <> (SELECT max(latest.id) FROM {materializations} AS latest \
                              WHERE latest.asset = m.asset)"
            ),
            delete_runs: format!("DELETE FROM {runs} WHERE run_id = ANY ($1)"),
            delete_ticks: format!("DELETE FROM {ticks} WHERE tick < $1"),
            // The 1-based positions of the ticks this statement claimed.
            claim_ticks: format!(
                "WITH given AS ( \
                     SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], \
                                          $4::text[], $5::jsonb[], $6::text[]) \
                         WITH ORDINALITY AS g(name, tick, kind, status, run_ids, reason, n) \
                 ), claimed AS ( \
                     INSERT INTO {ticks} ({TICK_COLUMNS}) \
                     SELECT name, tick, kind, status, run_ids, reason FROM given ORDER BY n \
                     ON CONFLICT DO NOTHING RETURNING name, tick \
                 ) \
                 SELECT given.n FROM given JOIN claimed USING (name, tick)"
            ),
            update_ticks: format!(
                "UPDATE {ticks} AS t SET kind = u.kind, status = u.status, \
                     run_ids = u.run_ids, reason = u.reason \
                 FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], \
                             $5::jsonb[], $6::text[]) AS u(name, tick, kind, status, run_ids, reason) \
                 WHERE t.name = u.name AND t.tick = u.tick"
            ),
            ticks: format!(
                "SELECT {TICK_COLUMNS} FROM {ticks} WHERE $1::text IS NULL OR name = $1 \
                 ORDER BY tick DESC, name LIMIT $2"
            ),
            // The holder of the key, and whether this call claimed it: one statement, so
            // two claims at once cannot both miss the row.
            claim_run_key: format!(
                "WITH claimed AS ( \
                     INSERT INTO {run_keys} (instigator, run_key, run_id) VALUES ($1, $2, $3) \
                     ON CONFLICT DO NOTHING RETURNING run_id \
                 ) \
                 SELECT run_id, true FROM claimed \
                 UNION ALL \
                 SELECT run_id, false FROM {run_keys} \
                 WHERE instigator = $1 AND run_key = $2 AND NOT EXISTS (SELECT 1 FROM claimed)"
            ),
            instigator_states: format!("SELECT name, status FROM {instigators}"),
            set_instigator_state: format!(
                "INSERT INTO {instigators} (name, status) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET status = EXCLUDED.status, updated_at = now()"
            ),
            start_run: format!(
                "WITH started AS ( \
                     UPDATE {runs} SET status = 'running', owner = $2, started_at = $3, \
                                      heartbeat_at = $3 \
                     WHERE run_id = $1 AND status = 'queued' RETURNING 1 \
                 ) \
                 SELECT EXISTS (SELECT 1 FROM started), \
                        EXISTS (SELECT 1 FROM {runs} WHERE run_id = $1)"
            ),
            queued_runs: format!(
                "SELECT {RUN_COLUMNS} FROM {runs} WHERE status = 'queued' \
                 ORDER BY started_at, created"
            ),
            cursor: format!("SELECT value FROM {cursors} WHERE name = $1"),
            cursors: format!(
                "SELECT name, value FROM {cursors} WHERE starts_with(name, $1) ORDER BY name"
            ),
            set_cursor: format!(
                "INSERT INTO {cursors} (name, value) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, updated_at = now()"
            ),
            version: format!("SELECT max(version) FROM {version_table}"),
            // Taken in the order given (sorted by the caller), so writers of the same assets
            // queue up instead of deadlocking.
            lock_partitions: "SELECT pg_advisory_xact_lock(k) \
                              FROM unnest($1::bigint[]) WITH ORDINALITY AS l(k, n)"
                .to_owned(),
            // Removes and returns the stored ranges touching [$4, $5]: the one before it
            // that reaches $4, and those starting inside it (consecutive: one index range).
            take_touching: format!(
                "DELETE FROM {ranges} \
                 WHERE asset = $1 AND status = $2 AND dims = $3 \
                   AND start_at BETWEEN coalesce({}, $4) AND $5 \
                 RETURNING start_at, end_at",
                before(">=")
            ),
            // Removes and returns the stored ranges overlapping [$4, $5).
            take_overlapping: format!(
                "DELETE FROM {ranges} \
                 WHERE asset = $1 AND status = $2 AND dims = $3 \
                   AND start_at >= coalesce({}, $4) AND start_at < $5 \
                 RETURNING start_at, end_at",
                before(">")
            ),
            insert_ranges: format!(
                "INSERT INTO {ranges} (asset, status, dims, start_at, end_at) \
                 SELECT $1, $2, $3, s, e FROM unnest($4::bigint[], $5::bigint[]) AS r(s, e)"
            ),
            partition_status: format!(
                "SELECT status, dims, start_at, end_at FROM {ranges} WHERE asset = $1 \
                 ORDER BY status, dims, start_at"
            ),
            partition_materialization: format!(
                "SELECT {MATERIALIZATION_COLUMNS} FROM {materializations} \
                 WHERE asset = $1 AND partition_dims = $2 AND partition_start <= $3 \
                   AND partition_end >= $4 \
                 ORDER BY id DESC LIMIT 1"
            ),
            dynamic_partitions: format!(
                "SELECT key FROM {dynamic} WHERE name = $1 ORDER BY position"
            ),
            // The first of each key given, in the order given: positions follow that order.
            add_dynamic_partitions: format!(
                "WITH given AS ( \
                     SELECT DISTINCT ON (key) key, n \
                     FROM unnest($2::text[]) WITH ORDINALITY AS g(key, n) ORDER BY key, n \
                 ) \
                 INSERT INTO {dynamic} (name, key) SELECT $1, key FROM given ORDER BY n \
                 ON CONFLICT DO NOTHING RETURNING key, position"
            ),
            delete_dynamic_partition: format!(
                "DELETE FROM {dynamic} WHERE name = $1 AND key = $2"
            ),
            create_backfill: format!(
                "INSERT INTO {backfills} (id, status, created_at, version, body) \
                 VALUES ($1, $2, $3, $4, $5)"
            ),
            backfill: format!("SELECT {BACKFILL_COLUMNS} FROM {backfills} WHERE id = $1"),
            backfills: format!(
                "SELECT {BACKFILL_COLUMNS} FROM {backfills} \
                 WHERE $1::text[] IS NULL OR status = ANY ($1) \
                 ORDER BY created_at DESC, id DESC LIMIT $2"
            ),
            // Whether the compare-and-set stored the backfill, and whether it exists.
            update_backfill: format!(
                "WITH updated AS ( \
                     UPDATE {backfills} SET status = $2, created_at = $3, version = $4, \
                                           body = $5, updated_at = now() \
                     WHERE id = $1 AND version = $6 RETURNING 1 \
                 ) \
                 SELECT EXISTS (SELECT 1 FROM updated), \
                        EXISTS (SELECT 1 FROM {backfills} WHERE id = $1)"
            ),
        }
    }
}
