//! Pages of runs and of event logs, as SQL over the indexes of schema version 5.

use rusqlite::types::Value as SqlValue;
use rusqlite::{params_from_iter, Connection};

use super::rows::{
    from_json, instant, limit_to_sql, micros, query_runs, seq_from_sql, OrStorage, RUN_COLUMNS,
};
use crate::error::Error;
use crate::event::{Event, EventKind};
use crate::key::{AssetKey, RunId};
use crate::storage::{EventFilter, RunFilter, RunRecord};

/// A `WHERE` clause built term by term, with its parameters.
#[derive(Default)]
struct Where {
    terms: Vec<String>,
    params: Vec<SqlValue>,
}

impl Where {
    /// Adds `term`, whose `?`s take `params` in order (numbered as they are added).
    fn and(&mut self, term: &str, params: impl IntoIterator<Item = SqlValue>) {
        let mut params = params.into_iter();
        let mut numbered = String::new();
        for (i, part) in term.split('?').enumerate() {
            if i > 0 {
                self.params.push(params.next().unwrap_or(SqlValue::Null));
                numbered.push_str(&format!("?{}", self.params.len()));
            }
            numbered.push_str(part);
        }
        self.terms.push(numbered);
    }

    fn sql(&self) -> String {
        if self.terms.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.terms.join(" AND "))
        }
    }
}

/// The runs of a page (see `Storage::runs_page`). The job filter uses the expression of
/// index `runs_page_by_job`, word for word, so SQLite reads that index.
pub(super) fn runs(
    conn: &Connection,
    filter: &RunFilter,
    limit: usize,
    op: &'static str,
) -> Result<Vec<RunRecord>, Error> {
    let mut w = Where::default();
    if let Some(status) = filter.status {
        w.and("status = ?", [status.as_str().to_owned().into()]);
    }
    if let Some(job) = &filter.job {
        w.and(
            r#"(CASE WHEN json_valid(tags) THEN json_extract(tags, '$."dagrs/job"') END) = ?"#,
            [job.clone().into()],
        );
    }
    if let Some((key, value)) = &filter.tag {
        w.and(
            "EXISTS (SELECT 1 FROM json_each(runs.tags) AS t WHERE t.key = ? AND t.value = ?)",
            [key.clone().into(), value.clone().into()],
        );
    }
    if let Some(after) = filter.started_after {
        w.and("started_at >= ?", [micros(after).into()]);
    }
    if let Some(before) = filter.started_before {
        w.and("started_at < ?", [micros(before).into()]);
    }
    if let Some(cursor) = &filter.after {
        w.and(
            "(started_at, run_id) < (?, ?)",
            [
                micros(cursor.started_at).into(),
                cursor.run_id.to_string().into(),
            ],
        );
    }
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM runs {} ORDER BY started_at DESC, run_id DESC LIMIT {}",
        w.sql(),
        limit_to_sql(limit)
    );
    query_runs(conn, op, &sql, params_from_iter(w.params))
}

/// The events of a page (see `Storage::events_page`). Without log lines, the term is the
/// predicate of the partial index `events_without_logs`, word for word.
pub(super) fn events(
    conn: &Connection,
    run_id: &RunId,
    filter: &EventFilter,
    limit: usize,
    op: &'static str,
) -> Result<Vec<Event>, Error> {
    let mut w = Where::default();
    w.and("run_id = ?", [run_id.to_string().into()]);
    if let Some(after) = filter.after {
        w.and("seq > ?", [i64::try_from(after).unwrap_or(i64::MAX).into()]);
    }
    if let Some(before) = filter.before {
        w.and(
            "seq < ?",
            [i64::try_from(before).unwrap_or(i64::MAX).into()],
        );
    }
    if let Some(asset) = &filter.asset {
        w.and("asset = ?", [asset.to_string().into()]);
    }
    // On the kind's text (serde_json writes the tag first, then a log line's level).
    const NOT_LOG: &str = r#"substr(kind, 1, 14) <> '{"type":"log",'"#;
    if filter.skip_logs {
        w.and(NOT_LOG, []);
    } else if filter.min_level.is_some() {
        let levels = filter
            .levels()
            .iter()
            .map(|l| {
                format!(
                    r#"substr(kind, 1, {}) = '{{"type":"log","level":"{}"'"#,
                    24 + l.as_str().len(),
                    l.as_str()
                )
            })
            .collect::<Vec<_>>()
            .join(" OR ");
        w.and(&format!("({NOT_LOG} OR {levels})"), []);
    }
    let order = if filter.newest { "DESC" } else { "ASC" };
    let sql = format!(
        "SELECT seq, timestamp, asset, kind FROM events {} ORDER BY seq {order} LIMIT {}",
        w.sql(),
        limit_to_sql(limit)
    );
    let mut stmt = conn.prepare_cached(&sql).or_storage(op)?;
    let rows = stmt
        .query_map(params_from_iter(w.params), |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, Option<String>>(2)?,
                row.get::<_, String>(3)?,
            ))
        })
        .or_storage(op)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .or_storage(op)?;
    let mut events = rows
        .into_iter()
        .map(|(seq, timestamp, asset, kind)| {
            let seq = seq_from_sql(seq, op)?;
            let what = || format!("event {seq} of run `{run_id}`");
            Ok(Event {
                run_id: run_id.clone(),
                seq,
                timestamp: instant(timestamp, op, &what())?,
                asset: asset.map(AssetKey::from),
                kind: from_json::<EventKind>(&kind, op, what)?,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    if filter.newest {
        events.reverse();
    }
    Ok(events)
}
