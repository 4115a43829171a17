//! The runs: newest first, filtered by status, job, tag and start time, a page at a time
//! (`Storage::runs_page`, read from indexes).

use axum::extract::Query;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use maud::html;
use serde::Deserialize;

use crate::event::RunStatus;
use crate::job::JOB_TAG;
use crate::storage::{RunCursor, RunFilter};
use crate::web::app::{ok, PageError, PageResult, State, RUNS_PER_PAGE};
use crate::web::page::{self, layout, run_badge};

/// The filters of the runs page, from the query string.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Filters {
    #[serde(default)]
    status: String,
    #[serde(default)]
    job: String,
    #[serde(default)]
    tag: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    after: String,
}

impl Filters {
    /// The storage filter these stand for, or what is wrong with them.
    fn to_filter(&self) -> Result<RunFilter, String> {
        let mut filter = RunFilter::default();
        if !self.status.is_empty() {
            filter.status = Some(self.status.parse::<RunStatus>()?);
        }
        if !self.job.is_empty() {
            filter.job = Some(self.job.clone());
        }
        if !self.tag.trim().is_empty() {
            let (k, v) = self.tag.trim().split_once('=').ok_or_else(|| {
                format!(
                    "tag filter `{}`: write it as key=value",
                    crate::bounded(&self.tag, 80)
                )
            })?;
            filter.tag = Some((k.trim().to_owned(), v.trim().to_owned()));
        }
        filter.started_after = instant(&self.since, "since")?;
        filter.started_before = instant(&self.until, "until")?;
        if !self.after.is_empty() {
            filter.after = Some(self.after.parse::<RunCursor>()?);
        }
        Ok(filter)
    }

    /// The query string of these filters, with the page position `after`.
    fn query(&self, after: Option<&RunCursor>) -> String {
        let mut pairs = Vec::new();
        for (name, value) in [
            ("status", &self.status),
            ("job", &self.job),
            ("tag", &self.tag),
            ("since", &self.since),
            ("until", &self.until),
        ] {
            if !value.is_empty() {
                pairs.push(format!("{name}={}", encode(value)));
            }
        }
        if let Some(after) = after {
            pairs.push(format!("after={}", encode(&after.to_string())));
        }
        pairs.join("&")
    }
}

/// A time from a filter: `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM[:SS]` (UTC) or RFC 3339.
fn instant(text: &str, what: &str) -> Result<Option<DateTime<Utc>>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(Some(at.with_timezone(&Utc)));
    }
    for format in ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"] {
        if let Ok(at) = NaiveDateTime::parse_from_str(text, format) {
            return Ok(Some(at.and_utc()));
        }
    }
    if let Ok(day) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(day.and_hms_opt(0, 0, 0).map(|t| t.and_utc()));
    }
    Err(format!(
        "{what} `{}`: write a UTC time as 2026-01-31 or 2026-01-31T14:00",
        crate::bounded(text, 80)
    ))
}

/// Percent-encodes a query value.
pub(crate) fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `GET /runs`.
pub(crate) async fn page(state: State, Query(filters): Query<Filters>) -> PageResult {
    let app = &*state.0;
    let filter = filters
        .to_filter()
        .map_err(|e| app.fail(PageError::BadRequest(e)))?;
    let runs = app
        .instance
        .storage()
        .runs_page(&filter, RUNS_PER_PAGE)
        .await
        .map_err(|e| app.fail(e))?;
    let next = (runs.len() == RUNS_PER_PAGE)
        .then(|| runs.last().map(RunCursor::of))
        .flatten();
    let jobs: Vec<&str> = app.defs.jobs().iter().map(|j| j.name.as_str()).collect();
    let markup = html! {
        h1 { "Runs" }
        form.filters method="get" action="/runs" {
            label { "Status" select name="status" {
                option value="" { "any" }
                @for s in ["queued", "running", "canceling", "succeeded", "failed", "cancelled"] {
                    option value=(s) selected[s == filters.status] { (s) }
                }
            } }
            label { "Job" select name="job" {
                option value="" { "any" }
                @for j in &jobs { option value=(j) selected[*j == filters.job] { (j) } }
            } }
            label { "Tag" input type="text" name="tag" value=(filters.tag) placeholder="key=value"; }
            label { "Started since (UTC)" input type="datetime-local" name="since" value=(filters.since); }
            label { "until" input type="datetime-local" name="until" value=(filters.until); }
            button type="submit" { "Filter" }
            a href="/runs" { "Clear" }
        }
        table #runs {
            thead { tr {
                th { "Run" } th { "Status" } th { "Job" } th { "Selection" } th { "Tags" }
                th { "Started" } th { "Took" }
            } }
            tbody {
                @for run in &runs {
                    tr {
                        td { (page::run_link(run.run_id.as_str())) }
                        td { (run_badge(run.status)) }
                        td { (run.tags.get(JOB_TAG).map(String::as_str).unwrap_or("")) }
                        td.mono { (crate::bounded(&run.selection, 120)) }
                        td.tags {
                            @for (k, v) in run.tags.iter().filter(|(k, _)| !k.starts_with("dagrs/")) {
                                span { (k) "=" (v) }
                            }
                        }
                        td { (page::time(run.started_at)) }
                        td { @if let Some(end) = run.ended_at { (page::between(run.started_at, end)) } }
                    }
                }
            }
        }
        @if runs.is_empty() { p.muted { "No runs match." } }
        div.pager {
            @if !filters.after.is_empty() { a href={ "/runs?" (filters.query(None)) } { "← Newest" } }
            @if let Some(next) = &next { a #older href={ "/runs?" (filters.query(Some(next))) } { "Older →" } }
        }
    };
    ok(layout("Runs", "/runs", &app.csrf, markup))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_or_say_what_is_wrong() {
        let filters = Filters {
            status: "failed".into(),
            tag: "team = data".into(),
            since: "2026-01-31".into(),
            until: "2026-02-01T10:30".into(),
            ..Filters::default()
        };
        let filter = filters.to_filter().unwrap();
        assert_eq!(filter.status, Some(RunStatus::Failed));
        assert_eq!(filter.tag, Some(("team".into(), "data".into())));
        assert_eq!(
            filter.started_after.unwrap().to_rfc3339(),
            "2026-01-31T00:00:00+00:00"
        );
        assert_eq!(
            filter.started_before.unwrap().to_rfc3339(),
            "2026-02-01T10:30:00+00:00"
        );
        let bad = Filters {
            since: "yesterday".into(),
            ..Filters::default()
        };
        assert!(bad.to_filter().unwrap_err().contains("since `yesterday`"));
        assert_eq!(encode("a b/c=d"), "a%20b%2Fc%3Dd");
    }
}
