//! One run: its facts, a step timeline (Gantt) from its step events, its event log (the
//! newest page, filterable by level and step, followed live by `live::stream`), and the
//! cancel and re-execute buttons.

use std::collections::BTreeMap;

use axum::extract::{Path, Query};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use chrono::{DateTime, Utc};
use maud::{html, Markup};
use serde::Deserialize;

use crate::event::{Event, EventKind, LogLevel};
use crate::executor::RunOptions;
use crate::instance::Cancellation;
use crate::job::JOB_TAG;
use crate::key::{AssetKey, RunId};
use crate::storage::{EventFilter, RunRecord};
use crate::web::app::{ok, App, PageError, PageResult, State, MAX_LOG_ROWS};
use crate::web::page::{self, csrf_field, layout};
use crate::web::pages::runs::encode;

/// The most step events the timeline reads.
const MAX_STEP_EVENTS: usize = 20_000;

/// The log's filters and position, from the query string.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct LogQuery {
    #[serde(default)]
    pub(crate) level: String,
    #[serde(default)]
    pub(crate) step: String,
    /// Shows the page of events before this seq (an earlier page; not followed live).
    #[serde(default)]
    pub(crate) before: Option<u64>,
    /// For the live stream: events after this seq.
    #[serde(default)]
    pub(crate) after: Option<u64>,
}

impl LogQuery {
    /// The event filter these stand for.
    pub(crate) fn filter(&self) -> Result<EventFilter, String> {
        Ok(EventFilter {
            min_level: match self.level.as_str() {
                "" => None,
                level => Some(level.parse::<LogLevel>()?),
            },
            asset: (!self.step.is_empty()).then(|| AssetKey::from(self.step.as_str())),
            ..EventFilter::default()
        })
    }

    fn query(&self) -> String {
        let mut pairs = Vec::new();
        if !self.level.is_empty() {
            pairs.push(format!("level={}", encode(&self.level)));
        }
        if !self.step.is_empty() {
            pairs.push(format!("step={}", encode(&self.step)));
        }
        pairs.join("&")
    }
}

/// `GET /runs/{id}`.
pub(crate) async fn page(
    state: State,
    Path(id): Path<String>,
    Query(query): Query<LogQuery>,
) -> PageResult {
    let app = &*state.0;
    let run_id = RunId::from(id);
    let run = app.instance.run(&run_id).await.map_err(|e| app.fail(e))?;
    let mut filter = query
        .filter()
        .map_err(|e| app.fail(PageError::BadRequest(e)))?;
    filter.before = query.before;
    filter.newest = true;
    let storage = app.instance.storage();
    let log = storage
        .events_page(&run_id, &filter, MAX_LOG_ROWS)
        .await
        .map_err(|e| app.fail(e))?;
    let steps = step_events(app, &run_id).await.map_err(|e| app.fail(e))?;
    let live = query.before.is_none();
    let stream = {
        let mut url = format!("/runs/{}/stream?{}", encode(run_id.as_str()), query.query());
        if let Some(last) = log.last() {
            url.push_str(&format!("&after={}", last.seq));
        }
        url
    };
    let earlier = log
        .first()
        .filter(|_| log.len() == MAX_LOG_ROWS)
        .map(|first| first.seq);
    let active = !run.status.is_final();
    let markup = html! {
        h1 { "Run " span.mono { (run.run_id) } " " span #run-status class={ "badge s-" (run.status.as_str()) } { (run.status.as_str()) } }
        (facts(&run))
        div.actions {
            form.inline method="post" action={ "/runs/" (run.run_id) "/cancel" } hidden[!active] data-while-active {
                (csrf_field(&app.csrf))
                button.danger type="submit" data-confirm="Cancel this run?" { "Cancel" }
            }
            form.inline method="post" action={ "/runs/" (run.run_id) "/reexecute" } hidden[active] data-when-ended {
                (csrf_field(&app.csrf))
                input type="hidden" name="mode" value="all";
                button type="submit" { "Re-execute all" }
            }
            form.inline method="post" action={ "/runs/" (run.run_id) "/reexecute" } hidden[active] data-when-ended {
                (csrf_field(&app.csrf))
                input type="hidden" name="mode" value="failure";
                button.secondary type="submit" { "Re-execute from failure" }
            }
            a href={ "/launchpad?selection=" (encode(&run.selection)) } { "Open in launchpad" }
        }
        h2 { "Timeline" }
        div #gantt.gantt { (gantt(&run, &steps, Utc::now())) }
        h2 { "Events" }
        form.filters method="get" action={ "/runs/" (run.run_id) } data-auto {
            label { "Level at least" select name="level" {
                option value="" { "debug (all)" }
                @for l in ["info", "warn", "error"] { option value=(l) selected[l == query.level] { (l) } }
            } }
            label { "Step" select name="step" {
                option value="" { "all steps" }
                @for a in &run.assets { option value=(a) selected[a.as_str() == query.step] { (a) } }
            } }
            noscript { button type="submit" { "Filter" } }
        }
        div.pager {
            @if let Some(seq) = earlier {
                a href={ "/runs/" (run.run_id) "?" (query.query()) "&before=" (seq) } { "← Earlier events" }
            }
            @if !live { a href={ "/runs/" (run.run_id) "?" (query.query()) } { "Latest events →" } }
        }
        table #log data-stream=[live.then_some(&stream)] {
            thead { tr { th { "#" } th { "Time" } th { "Step" } th { "Level" } th { "Event" } } }
            tbody { @for event in &log { (log_row(event)) } }
        }
        @if log.is_empty() { p #log-empty.muted { "No events yet." } }
    };
    ok(layout(
        &format!("Run {}", page::short(run.run_id.as_str())),
        "/runs",
        &app.csrf,
        markup,
    ))
}

/// The run's facts (re-sent live when its status changes).
pub(crate) fn facts(run: &RunRecord) -> Markup {
    html! {
        dl #facts.facts {
            dt { "Selection" } dd.mono { (run.selection) }
            dt { "Assets" } dd { @for a in &run.assets { (page::asset_link(a.as_str())) " " } }
            @if let Some(job) = run.tags.get(JOB_TAG) { dt { "Job" } dd { (job) } }
            @if let Some(b) = run.tags.get(crate::backfill::BACKFILL_TAG) {
                dt { "Backfill" } dd { a.mono href={ "/backfills/" (encode(b)) } { (b) } }
            }
            dt { "Tags" } dd.tags { @for (k, v) in &run.tags { span { (k) "=" (v) } } }
            dt { "Started" } dd { (page::time(run.started_at)) }
            dt { "Ended" } dd {
                @if let Some(end) = run.ended_at { (page::time(end)) " (took " (page::between(run.started_at, end)) ")" }
                @else { span.muted { "not yet" } }
            }
            @if let Some(parent) = &run.parent_run_id { dt { "Re-executes" } dd { (page::run_link(parent.as_str())) } }
            @if let Some(failure) = &run.failure { dt { "Failure" } dd { pre.error { (failure) } } }
            @if run.config != crate::config::RunConfig::default() {
                dt { "Config" } dd { pre { (serde_yaml_ng::to_string(&run.config).unwrap_or_default()) } }
            }
        }
    }
}

/// The step and run events of a run (no log lines), for its timeline.
pub(crate) async fn step_events(app: &App, run_id: &RunId) -> Result<Vec<Event>, crate::Error> {
    let filter = EventFilter {
        skip_logs: true,
        ..EventFilter::default()
    };
    app.instance
        .storage()
        .events_page(run_id, &filter, MAX_STEP_EVENTS)
        .await
}

/// One row of the event log.
pub(crate) fn log_row(event: &Event) -> Markup {
    let (class, what) = match &event.kind {
        EventKind::Log { level, message } => (format!("lvl-{}", level.as_str()), message.clone()),
        kind @ (EventKind::StepFailed { .. }
        | EventKind::RunFailed { .. }
        | EventKind::HookFailed { .. }) => ("kind-failed".to_owned(), kind.to_string()),
        kind => (String::new(), kind.to_string()),
    };
    let level = match &event.kind {
        EventKind::Log { level, .. } => level.as_str(),
        _ => "event",
    };
    html! {
        tr class=(class) data-seq=(event.seq) {
            td.mono.muted { (event.seq) }
            td.mono { (event.timestamp.format("%H:%M:%S%.3f")) }
            td { @if let Some(a) = &event.asset { (a) } }
            td.muted { (level) }
            td { pre.msg { (crate::bounded(&what, 8_000)) } }
        }
    }
}

/// A step's span on the timeline.
struct Span {
    start: DateTime<Utc>,
    end: Option<DateTime<Utc>>,
    outcome: &'static str,
}

/// The step timeline as SVG: one row per step, from its first start to its end, coloured
/// by how it ended; running steps reach `now`.
pub(crate) fn gantt(run: &RunRecord, events: &[Event], now: DateTime<Utc>) -> Markup {
    let mut spans: BTreeMap<&AssetKey, Span> = BTreeMap::new();
    for event in events {
        let Some(asset) = &event.asset else { continue };
        let at = event.timestamp;
        let span = spans.entry(asset).or_insert(Span {
            start: at,
            end: None,
            outcome: "running",
        });
        let (end, outcome) = match &event.kind {
            EventKind::StepSucceeded { .. } => (Some(at), "succeeded"),
            EventKind::StepFailed {
                will_retry: false, ..
            } => (Some(at), "failed"),
            EventKind::StepSkipped { .. } => (Some(at), "skipped"),
            EventKind::StepCancelled { .. } => (Some(at), "cancelled"),
            EventKind::StepStarted { .. } => (None, "running"),
            _ => continue,
        };
        span.end = end;
        span.outcome = outcome;
    }
    if spans.is_empty() {
        return html! { p.muted { "No step has started yet." } };
    }
    let order: Vec<&AssetKey> = run
        .assets
        .iter()
        .filter(|a| spans.contains_key(a))
        .collect();
    let start = run.started_at.min(
        spans
            .values()
            .map(|s| s.start)
            .min()
            .unwrap_or(run.started_at),
    );
    let end = run
        .ended_at
        .unwrap_or(now)
        .max(spans.values().filter_map(|s| s.end).max().unwrap_or(start));
    let total = (end - start).num_microseconds().unwrap_or(1).max(1) as f64;
    let (label_w, width, row_h) = (180.0, 900.0, 22.0);
    let x = |t: DateTime<Utc>| {
        label_w
            + ((t - start).num_microseconds().unwrap_or(0) as f64 / total)
                * (width - label_w - 10.0)
    };
    let height = order.len() as f64 * row_h + 24.0;
    let colour = |outcome: &str| match outcome {
        "succeeded" => "#16a34a",
        "failed" => "#dc2626",
        "skipped" | "cancelled" => "#d97706",
        _ => "#2563eb",
    };
    html! {
        svg width=(width) height=(height) viewBox={ "0 0 " (width) " " (height) } role="img" {
            title { "step timeline" }
            @for (row, asset) in order.iter().enumerate() {
                @let span = &spans[asset];
                @let y = row as f64 * row_h + 4.0;
                @let x0 = x(span.start);
                @let x1 = x(span.end.unwrap_or(end)).max(x0 + 2.0);
                text x="4" y=(y + 14.0) { (asset) }
                rect class={ "bar " (span.outcome) } x=(format!("{x0:.1}")) y=(y + 3.0) width=(format!("{:.1}", x1 - x0)) height=(row_h - 8.0) rx="3" fill=(colour(span.outcome)) {
                    title {
                        (asset) ": " (span.outcome) " · "
                        (page::between(span.start, span.end.unwrap_or(end)))
                    }
                }
            }
            text x=(label_w) y=(height - 4.0) { "0" }
            text x=(width - 10.0) y=(height - 4.0) text-anchor="end" { (page::between(start, end)) }
        }
    }
}

/// The re-execute form.
#[derive(Debug, Deserialize)]
pub(crate) struct Reexecute {
    mode: String,
}

/// `POST /runs/{id}/reexecute`: `mode=all` runs the same selection with the same config
/// (and job and tags) again; `mode=failure` only what did not succeed.
pub(crate) async fn reexecute(
    state: State,
    Path(id): Path<String>,
    Form(form): Form<Reexecute>,
) -> Result<Response, PageError> {
    let app = &*state.0;
    let run = app
        .instance
        .run(&RunId::from(id))
        .await
        .map_err(|e| app.fail(e))?;
    let handle = match form.mode.as_str() {
        "failure" => app
            .instance
            .reexecute_from_failure(&app.defs, &run.run_id, RunOptions::new())
            .await
            .map_err(|e| app.fail(e))?,
        "all" => {
            let mut options = RunOptions::new().config(run.config.clone());
            for (k, v) in run.tags.iter().filter(|(k, _)| !k.starts_with("dagrs/")) {
                options = options.tag(k.clone(), v.clone());
            }
            if let Some(job) = run.tags.get(JOB_TAG) {
                options = options.job(job.clone());
            }
            app.instance
                .launch(&app.defs, &run.selection, options)
                .await
                .map_err(|e| app.fail(e))?
        }
        other => {
            return Err(app.fail(PageError::BadRequest(format!(
                "unknown re-execution mode `{}`: use all or failure",
                crate::bounded(other, 40)
            ))))
        }
    };
    Ok(Redirect::to(&format!("/runs/{}", handle.run_id())).into_response())
}

/// `POST /runs/{id}/cancel`: cancels the run (a queued one at once; a running one by asking
/// its process) and goes back to its page.
pub(crate) async fn cancel(state: State, Path(id): Path<String>) -> Result<Response, PageError> {
    let app = &*state.0;
    let run_id = RunId::from(id);
    match app
        .instance
        .cancel_run(&run_id, "cancelled from the web UI")
        .await
        .map_err(|e| app.fail(e))?
    {
        Cancellation::Requested | Cancellation::Cancelled => {
            Ok(Redirect::to(&format!("/runs/{run_id}")).into_response())
        }
        Cancellation::AlreadyEnded(status) => Err(app.fail(PageError::Conflict(format!(
            "run {run_id} has already ended ({status})"
        )))),
    }
}
