//! Pages of runs and of event logs (`Storage::runs_page`, `Storage::events_page`): SQL built
//! term by term over the indexes of schema version 5. The statements vary only with which
//! filters are set, so the prepared-statement cache holds a few of them.

use chrono::{DateTime, Utc};
use dagrs_core::storage::{EventFilter, RunFilter};
use dagrs_core::RunId;
use tokio_postgres::types::ToSql;

use crate::ident::Ident;
use crate::storage::sql::RUN_COLUMNS;

/// A parameter of a page's statement.
pub(super) type Param = Box<dyn ToSql + Sync + Send>;

/// A `WHERE` clause built term by term, with its parameters.
#[derive(Default)]
struct Where {
    terms: Vec<String>,
    params: Vec<Param>,
}

impl Where {
    /// Adds `term`, whose `$`s take `params` in order (numbered as they are added).
    fn and(&mut self, term: &str, params: Vec<Param>) {
        let mut params = params.into_iter();
        let mut numbered = String::new();
        for (i, part) in term.split('$').enumerate() {
            if i > 0 {
                if let Some(param) = params.next() {
                    self.params.push(param);
                }
                numbered.push_str(&format!("${}", self.params.len()));
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

fn limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// The statement and parameters of a page of runs.
pub(super) fn runs(schema: &Ident, filter: &RunFilter, size: usize) -> (String, Vec<Param>) {
    let mut w = Where::default();
    if let Some(status) = filter.status {
        w.and("status = $", vec![Box::new(status.as_str().to_owned())]);
    }
    if let Some(job) = &filter.job {
        w.and("(tags ->> 'dagrs/job') = $", vec![Box::new(job.clone())]);
    }
    if let Some((key, value)) = &filter.tag {
        let tag = serde_json::json!({ key: value });
        w.and("tags @> $", vec![Box::new(tag)]);
    }
    if let Some(after) = filter.started_after {
        w.and("started_at >= $", vec![Box::new(after)]);
    }
    if let Some(before) = filter.started_before {
        w.and("started_at < $", vec![Box::new(before)]);
    }
    if let Some(cursor) = &filter.after {
        let at: DateTime<Utc> = cursor.started_at;
        w.and(
            "(started_at, run_id) < ($, $)",
            vec![Box::new(at), Box::new(cursor.run_id.to_string())],
        );
    }
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM {schema}.runs {} \
         ORDER BY started_at DESC, run_id DESC LIMIT {}",
        w.sql(),
        limit(size)
    );
    (sql, w.params)
}

/// The statement and parameters of a page of run `run_id`'s events (newest first when
/// `filter.newest`: the caller puts them back in order). Without log lines, the term is the
/// predicate of the partial index `events_without_logs`, word for word.
pub(super) fn events(
    schema: &Ident,
    run_id: &RunId,
    filter: &EventFilter,
    size: usize,
) -> (String, Vec<Param>) {
    let mut w = Where::default();
    w.and("run_id = $", vec![Box::new(run_id.to_string())]);
    let seq = |seq: u64| -> Param { Box::new(i64::try_from(seq).unwrap_or(i64::MAX)) };
    if let Some(after) = filter.after {
        w.and("seq > $", vec![seq(after)]);
    }
    if let Some(before) = filter.before {
        w.and("seq < $", vec![seq(before)]);
    }
    if let Some(asset) = &filter.asset {
        w.and("asset = $", vec![Box::new(asset.to_string())]);
    }
    // On the kind's text (serde_json writes the tag first, then a log line's level), never
    // its parsed JSON: `->>` fails on a log line that holds "\u0000".
    const NOT_LOG: &str = r#"NOT starts_with(kind::text, '{"type":"log",')"#;
    if filter.skip_logs {
        w.and(NOT_LOG, vec![]);
    } else if filter.min_level.is_some() {
        let levels: Vec<String> = filter
            .levels()
            .iter()
            .map(|l| l.as_str().to_owned())
            .collect();
        w.and(
            &format!(
                r#"({NOT_LOG} OR split_part(split_part(kind::text, '"level":"', 2), '"', 1) = ANY ($))"#
            ),
            vec![Box::new(levels)],
        );
    }
    let order = if filter.newest { "DESC" } else { "ASC" };
    let sql = format!(
        "SELECT seq, ts, asset, kind FROM {schema}.events {} ORDER BY seq {order} LIMIT {}",
        w.sql(),
        limit(size)
    );
    (sql, w.params)
}
