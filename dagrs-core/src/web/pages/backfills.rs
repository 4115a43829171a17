//! Backfills: the newest ones with their progress, a form to launch one (checked as
//! `Instance::launch_backfill` checks it), and one backfill with its partitions by status,
//! its runs in flight, and the cancel and resume buttons.

use std::collections::HashMap;

use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use maud::html;
use serde::Deserialize;

use crate::backfill::{
    backfill_definition, BackfillPolicy, BackfillRecord, BackfillRequest, BackfillStatus,
};
use crate::error::Error;
use crate::partition::{PartitionSet, PartitionsDefinition};
use crate::web::app::{ok, App, PageError, PageResult, State};
use crate::web::page::{self, badge, csrf_field, layout};
use crate::web::pages::runs::encode;
use crate::web::partition_bar::{self, Layer, RANGES_SHOWN};

/// The backfills page lists this many, newest first.
const MAX_BACKFILL_ROWS: usize = 100;
/// How often a page of an active backfill reloads itself, in milliseconds.
const REFRESH_MS: u32 = 3_000;

/// Counts partitions of a backfill with its definition; without one (the definitions
/// changed since it was launched), counts ranges, as the command line does.
struct Counter(Option<PartitionsDefinition>);

impl Counter {
    fn of(app: &App, b: &BackfillRecord) -> Self {
        Counter(backfill_definition(&app.defs, &b.selection).ok())
    }

    fn count(&self, set: &PartitionSet) -> u64 {
        match &self.0 {
            Some(def) => def.count(set),
            None => set.range_count() as u64,
        }
    }

    fn text(&self, set: &PartitionSet) -> String {
        match &self.0 {
            Some(def) => def.count(set).to_string(),
            None => format!("{} ranges", set.range_count()),
        }
    }
}

/// The partitions of a backfill's runs in flight.
fn in_flight(b: &BackfillRecord) -> PartitionSet {
    b.in_flight.iter().fold(PartitionSet::new(), |set, run| {
        set.union(&run.range.to_set())
    })
}

/// Succeeded, failed, in flight and not launched, with counts.
fn progress_counts(
    counter: &Counter,
    b: &BackfillRecord,
    flying: &PartitionSet,
) -> [(&'static str, &'static str, u64); 4] {
    [
        ("succeeded", "succeeded", counter.count(&b.succeeded)),
        ("failed", "failed", counter.count(&b.failed)),
        ("progress", "in flight", counter.count(flying)),
        ("missing", "not launched", counter.count(&b.remaining())),
    ]
}

/// The launch form (also the list page's query string, to prefill it).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct LaunchForm {
    #[serde(default)]
    selection: String,
    /// Keys and ranges (`START...END`), separated by commas.
    #[serde(default)]
    partitions: String,
    /// `on` for every partition that exists.
    #[serde(default)]
    all: Option<String>,
    /// `default`, `per_partition`, `single_run` or `max`.
    #[serde(default)]
    policy: String,
    /// With `policy=max`: the most partitions per run.
    #[serde(default)]
    per_run: String,
    #[serde(default)]
    max_in_flight: String,
}

/// `GET /backfills`.
pub(crate) async fn list(state: State, Query(form): Query<LaunchForm>) -> Response {
    render_list(&state.0, &form, None, StatusCode::OK).await
}

/// `POST /backfills`: launches a backfill (the daemon runs it) and goes to its page.
pub(crate) async fn launch(state: State, Form(form): Form<LaunchForm>) -> Response {
    let app = &*state.0;
    let request = match request_of(&form) {
        Ok(request) => request,
        Err(message) => {
            return render_list(app, &form, Some(message), StatusCode::BAD_REQUEST).await
        }
    };
    match app.instance.launch_backfill(&app.defs, request).await {
        Ok(b) => Redirect::to(&format!("/backfills/{}", encode(&b.id))).into_response(),
        Err(e) => render_list(app, &form, Some(e.to_string()), StatusCode::BAD_REQUEST).await,
    }
}

/// The request a launch form stands for, or what is wrong with it.
fn request_of(form: &LaunchForm) -> Result<BackfillRequest, String> {
    let selection = form.selection.trim();
    if selection.is_empty() {
        return Err(
            "name what to backfill: partitioned assets of one partitions definition".into(),
        );
    }
    let mut request = BackfillRequest::new(selection).tag("dagrs/source", "web");
    for target in form.partitions.split(',').map(str::trim) {
        if !target.is_empty() {
            request = request.partition(target);
        }
    }
    if form.all.is_some() {
        request = request.all();
    }
    let number = |text: &str, what: &str| -> Result<Option<u64>, String> {
        match text.trim() {
            "" => Ok(None),
            text => match text.parse::<u64>() {
                Ok(n) if n >= 1 => Ok(Some(n)),
                _ => Err(format!(
                    "{what} `{}` is not a whole number of at least 1",
                    crate::bounded(text, 40)
                )),
            },
        }
    };
    request = match form.policy.as_str() {
        "" | "default" => request,
        "per_partition" => request.policy(BackfillPolicy::RunPerPartition),
        "single_run" => request.policy(BackfillPolicy::SingleRun),
        "max" => match number(&form.per_run, "partitions per run")? {
            Some(n) => request.policy(BackfillPolicy::MaxPartitionsPerRun(n)),
            None => return Err("give the most partitions per run".into()),
        },
        other => {
            return Err(format!(
                "unknown policy `{}`: use default, per_partition, single_run or max",
                crate::bounded(other, 40)
            ))
        }
    };
    if let Some(n) = number(&form.max_in_flight, "runs in flight")? {
        request = request.max_in_flight(usize::try_from(n).unwrap_or(usize::MAX));
    }
    Ok(request)
}

async fn render_list(
    app: &App,
    form: &LaunchForm,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    let backfills = match app.instance.backfills(MAX_BACKFILL_ROWS).await {
        Ok(b) => b,
        Err(e) => return app.fail(e).into_response(),
    };
    // One definition per selection, not per backfill.
    let mut counters: HashMap<&str, Counter> = HashMap::new();
    for b in &backfills {
        if !counters.contains_key(b.selection.as_str()) {
            counters.insert(&b.selection, Counter::of(app, b));
        }
    }
    let partitioned: Vec<&str> = app
        .defs
        .assets()
        .filter(|a| a.partitions.is_some())
        .map(|a| a.key().as_str())
        .collect();
    let policy = if form.policy.is_empty() {
        "default"
    } else {
        form.policy.as_str()
    };
    let markup = html! {
        h1 { "Backfills" }
        table #backfills {
            thead { tr {
                th { "Backfill" } th { "Status" } th { "Selection" } th { "Partitions" }
                th { "Succeeded" } th { "Failed" } th { "In flight" } th { "Progress" } th { "Created" }
            } }
            tbody {
                @for b in &backfills {
                    @let counter = &counters[b.selection.as_str()];
                    @let flying = in_flight(b);
                    tr data-id=(b.id) {
                        td { a.mono href={ "/backfills/" (encode(&b.id)) } { (b.id) } }
                        td { (badge(b.status.as_str())) }
                        td.mono { (crate::bounded(&b.selection, 200)) }
                        td { (counter.text(&b.target)) }
                        td { (counter.text(&b.succeeded)) }
                        td { (counter.text(&b.failed)) }
                        td { (counter.text(&flying)) " " span.muted { "(" (b.in_flight.len()) " runs)" } }
                        td { (partition_bar::progress(&progress_counts(counter, b, &flying))) }
                        td { (page::time(b.created_at)) }
                    }
                }
            }
        }
        @if backfills.is_empty() { p.muted { "No backfill yet." } }
        @if backfills.len() == MAX_BACKFILL_ROWS {
            p.muted { "The newest " (MAX_BACKFILL_ROWS) " backfills; `backfill list --limit N` lists more." }
        }
        h2 { "Launch a backfill" }
        p.muted {
            "Partitioned assets of one partitions definition (" code { "name" } ", " code { "name+" } ", "
            code { "group:x" } ", …), and partitions: keys or ranges " code { "START...END" }
            " (END excluded), separated by commas. The daemon (" code { "dev" } " or " code { "daemon" }
            ") runs it, a few runs at a time."
        }
        @if let Some(message) = &error { div #backfill-result.error { (message) } }
        form #backfill-launch method="post" action="/backfills" {
            (csrf_field(&app.csrf))
            p { label { "Selection" br;
                input #selection type="text" name="selection" size="60" list="partitioned-assets" value=(form.selection);
            } }
            datalist #partitioned-assets { @for a in &partitioned { option value=(a) {} } }
            p { label { "Partitions" br;
                input #partitions type="text" name="partitions" size="60" value=(form.partitions)
                    placeholder="2026-11-01-00:00...2026-11-02-00:00, 2026-11-05-03:00";
            } }
            p { label { input type="checkbox" name="all" value="on" checked[form.all.is_some()]; " every partition that exists" } }
            p.row {
                label { "Runs" br; select name="policy" {
                    @for (value, text) in [
                        ("default", "the assets' own policy"),
                        ("per_partition", "one per partition"),
                        ("single_run", "one per range"),
                        ("max", "at most N partitions each"),
                    ] {
                        option value=(value) selected[value == policy] { (text) }
                    }
                } }
                " "
                label { "N" br; input type="number" name="per_run" min="1" size="6" value=(form.per_run); }
                " "
                label { "Runs in flight at most" br; input type="number" name="max_in_flight" min="1" size="6" value=(form.max_in_flight); }
            }
            div.actions { button #launch-backfill type="submit" { "Launch backfill" } }
        }
    };
    (
        status,
        Html(layout("Backfills", "/backfills", &app.csrf, markup).into_string()),
    )
        .into_response()
}

/// Backfill `id`, or the 404 page.
async fn find(app: &App, id: &str) -> Result<BackfillRecord, PageError> {
    match app.instance.storage().backfill(id).await {
        Ok(Some(b)) => Ok(b),
        Ok(None) => Err(app.fail(PageError::NotFound(format!(
            "no backfill has the id `{}`",
            crate::bounded(id, 120)
        )))),
        Err(e) => Err(app.fail(e)),
    }
}

/// `GET /backfills/{id}`.
pub(crate) async fn detail(state: State, Path(id): Path<String>) -> PageResult {
    let app = &*state.0;
    let b = find(app, &id).await?;
    let definition = backfill_definition(&app.defs, &b.selection);
    let counter = Counter(definition.as_ref().ok().cloned());
    let flying = in_flight(&b);
    let remaining = b.remaining();
    let counts = progress_counts(&counter, &b, &flying);
    let path = format!("/backfills/{}", encode(&b.id));
    let markup = html! {
        h1 { "Backfill " span.mono { (b.id) } " " span #backfill-status class={ "badge s-" (b.status.as_str()) } { (b.status.as_str()) } }
        dl.facts {
            dt { "Selection" } dd.mono { (b.selection) }
            dt { "Partitions" } dd { (counter.text(&b.target)) }
            dt { "Runs" } dd { (b.policy) ", at most " (b.max_in_flight) " in flight" }
            dt { "Created" } dd { (page::time(b.created_at)) }
            dt { "Updated" } dd { (page::time(b.updated_at)) }
            @if let Some(reason) = &b.reason { dt { "Reason" } dd { (reason) } }
            @if !b.tags.is_empty() { dt { "Tags" } dd.tags { @for (k, v) in &b.tags { span { (k) "=" (v) } } } }
            @if b.config != crate::config::RunConfig::default() {
                dt { "Config" } dd { pre { (serde_yaml_ng::to_string(&b.config).unwrap_or_default()) } }
            }
        }
        div.actions {
            @if b.status == BackfillStatus::Requested {
                form.inline method="post" action={ (path) "/cancel" } {
                    (csrf_field(&app.csrf))
                    button.danger #cancel-backfill type="submit" data-confirm="Cancel this backfill?" { "Cancel" }
                }
            }
            @if matches!(b.status, BackfillStatus::Failed | BackfillStatus::Cancelled) {
                form.inline method="post" action={ (path) "/resume" } {
                    (csrf_field(&app.csrf))
                    button #resume-backfill type="submit" { "Resume" }
                }
            }
            a href={ "/runs?tag=" (encode(&format!("{}={}", crate::backfill::BACKFILL_TAG, b.id))) } { "Its runs" }
            a href="/backfills" { "All backfills" }
        }
        h2 { "Progress" }
        p #backfill-summary {
            (counts[0].2) " of " (counter.count(&b.target)) " partitions succeeded, "
            (counts[1].2) " failed, " (counts[2].2) " in flight, " (counts[3].2) " not launched"
        }
        (partition_bar::legend(&counts))
        @match &definition {
            Ok(def) => {
                (partition_bar::bars(
                    def,
                    &b.target,
                    Layer::new("missing", "not launched", &remaining),
                    &[
                        Layer::new("succeeded", "succeeded", &b.succeeded),
                        Layer::new("failed", "failed", &b.failed),
                        Layer::new("progress", "in flight", &flying),
                    ],
                ))
                details.ranges open {
                    summary { "Ranges by status" }
                    (partition_bar::ranges_table(def, &[
                        ("succeeded", &b.succeeded),
                        ("failed", &b.failed),
                        ("in flight", &flying),
                        ("not launched", &remaining),
                    ]))
                }
            }
            Err(e) => p.error { "Its partitions cannot be drawn: " (e.to_string()) },
        }
        h2 { "Runs in flight " span.muted { "(" (b.in_flight.len()) ")" } }
        @if b.in_flight.is_empty() {
            p.muted { "None." }
        } @else {
            table #in-flight {
                thead { tr { th { "Run" } th { "Partitions" } } }
                tbody {
                    @for run in b.in_flight.iter().take(RANGES_SHOWN) {
                        tr { td { (page::run_link(run.run_id.as_str())) } td.mono { (run.range.key) } }
                    }
                }
            }
            @if b.in_flight.len() > RANGES_SHOWN {
                p.muted { "… and " (b.in_flight.len() - RANGES_SHOWN) " more runs." }
            }
        }
        @if b.status.is_active() { div hidden data-refresh=(REFRESH_MS) {} }
    };
    ok(layout(
        &format!("Backfill {}", b.id),
        "/backfills",
        &app.csrf,
        markup,
    ))
}

/// A state change refused because of the backfill's status is a conflict.
fn refused(app: &App, e: Error) -> PageError {
    match e {
        Error::Backfill { .. } => app.fail(PageError::Conflict(e.to_string())),
        e => app.fail(e),
    }
}

/// `POST /backfills/{id}/cancel`: it launches nothing more; its runs are cancelled.
pub(crate) async fn cancel(state: State, Path(id): Path<String>) -> Result<Response, PageError> {
    let app = &*state.0;
    let b = find(app, &id).await?;
    app.instance
        .cancel_backfill(&b.id, "cancelled from the web UI")
        .await
        .map_err(|e| refused(app, e))?;
    Ok(Redirect::to(&format!("/backfills/{}", encode(&b.id))).into_response())
}

/// `POST /backfills/{id}/resume`: launches its failed and unlaunched partitions again.
pub(crate) async fn resume(state: State, Path(id): Path<String>) -> Result<Response, PageError> {
    let app = &*state.0;
    let b = find(app, &id).await?;
    app.instance
        .resume_backfill(&b.id)
        .await
        .map_err(|e| refused(app, e))?;
    Ok(Redirect::to(&format!("/backfills/{}", encode(&b.id))).into_response())
}
