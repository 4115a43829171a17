//! Schedules and sensors: their state with an on/off toggle, the next ticks of schedules,
//! and each one's tick history.

use std::collections::BTreeMap;

use axum::extract::Path;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use chrono::Utc;
use maud::{html, Markup};
use serde::Deserialize;

use crate::storage::{InstigatorStatus, TickRecord};
use crate::web::app::{ok, App, PageError, PageResult, State};
use crate::web::page::{self, badge, csrf_field, layout};

/// Ticks shown per schedule or sensor.
const TICKS: usize = 10;

fn status_of(
    states: &BTreeMap<String, InstigatorStatus>,
    name: &str,
    default: InstigatorStatus,
) -> InstigatorStatus {
    states.get(name).copied().unwrap_or(default)
}

/// The on/off toggle of `name`.
fn toggle_form(app: &App, name: &str, status: InstigatorStatus) -> Markup {
    let (next, label) = match status {
        InstigatorStatus::Running => ("stopped", "Turn off"),
        InstigatorStatus::Stopped => ("running", "Turn on"),
    };
    html! {
        form.inline method="post" action={ "/instigators/" (name) } {
            (csrf_field(&app.csrf))
            input type="hidden" name="status" value=(next);
            span class={ "badge instigator s-" (status.as_str()) } data-status-of=(name) { (status.as_str()) }
            " "
            button.secondary.toggle type="submit" data-name=(name) { (label) }
        }
    }
}

fn ticks_table(ticks: &[TickRecord]) -> Markup {
    html! {
        @if ticks.is_empty() { span.muted { "no ticks yet" } }
        @else {
            table.ticks {
                @for t in ticks {
                    tr {
                        td { (page::time(t.tick)) }
                        td { (badge(t.status.as_str())) }
                        td { @for r in &t.run_ids { (page::run_link(r.as_str())) " " } }
                        td.muted { (t.reason.as_deref().unwrap_or("")) }
                    }
                }
            }
        }
    }
}

/// `GET /schedules`.
pub(crate) async fn schedules(state: State) -> PageResult {
    let app = &*state.0;
    let storage = app.instance.storage();
    let states = storage.instigator_states().await.map_err(|e| app.fail(e))?;
    let mut rows = Vec::new();
    for s in app.defs.schedules() {
        let ticks = storage
            .ticks(Some(s.name()), TICKS)
            .await
            .map_err(|e| app.fail(e))?;
        rows.push((s, status_of(&states, s.name(), s.default_status()), ticks));
    }
    let now = Utc::now();
    let markup = html! {
        h1 { "Schedules" }
        p.muted { "A schedule ticks while it is on and a daemon runs (" code { "daemon" } " or " code { "dev" } ")." }
        @if rows.is_empty() { p.muted { "No schedules in these definitions." } }
        table #schedules {
            thead { tr { th { "Schedule" } th { "Job" } th { "Cron" } th { "Next ticks" } th { "State" } th { "Recent ticks" } } }
            tbody {
                @for (s, status, ticks) in &rows {
                    tr data-name=(s.name()) {
                        td { strong { (s.name()) } @if let Some(d) = s.description_text() { div.muted { (d) } } }
                        td { (s.job()) }
                        td.mono { (s.cron()) " " span.muted { (s.timezone_name()) } }
                        td.mono {
                            @if let Some(next) = s.ticks_after(now) {
                                @for t in next.take(3) { div { (s.local_time(t)) } }
                            }
                        }
                        td { (toggle_form(app, s.name(), *status)) }
                        td { (ticks_table(ticks)) }
                    }
                }
            }
        }
    };
    ok(layout("Schedules", "/schedules", &app.csrf, markup))
}

/// `GET /sensors`.
pub(crate) async fn sensors(state: State) -> PageResult {
    let app = &*state.0;
    let storage = app.instance.storage();
    let states = storage.instigator_states().await.map_err(|e| app.fail(e))?;
    let mut rows = Vec::new();
    for s in app.defs.sensors() {
        let ticks = storage
            .ticks(Some(s.name()), TICKS)
            .await
            .map_err(|e| app.fail(e))?;
        rows.push((s, status_of(&states, s.name(), s.default_status()), ticks));
    }
    let markup = html! {
        h1 { "Sensors" }
        p.muted { "A sensor is evaluated while it is on and a daemon runs (" code { "daemon" } " or " code { "dev" } ")." }
        @if rows.is_empty() { p.muted { "No sensors in these definitions." } }
        table #sensors {
            thead { tr { th { "Sensor" } th { "Kind" } th { "Job" } th { "Every" } th { "State" } th { "Recent ticks" } } }
            tbody {
                @for (s, status, ticks) in &rows {
                    tr data-name=(s.name()) {
                        td { strong { (s.name()) } @if let Some(d) = s.description_text() { div.muted { (d) } } }
                        td { (s.kind_name()) }
                        td { (s.job_name().unwrap_or("—")) }
                        td { (page::duration(s.interval())) }
                        td { (toggle_form(app, s.name(), *status)) }
                        td { (ticks_table(ticks)) }
                    }
                }
            }
        }
    };
    ok(layout("Sensors", "/sensors", &app.csrf, markup))
}

/// The toggle form.
#[derive(Debug, Deserialize)]
pub(crate) struct Toggle {
    status: String,
}

/// `POST /instigators/{name}`: turns a schedule or sensor on or off, then goes back to its
/// list.
pub(crate) async fn toggle(
    state: State,
    Path(name): Path<String>,
    Form(form): Form<Toggle>,
) -> Result<Response, PageError> {
    let app = &*state.0;
    let back = if app.defs.schedule(&name).is_some() {
        "/schedules"
    } else if app.defs.sensor(&name).is_some() {
        "/sensors"
    } else {
        return Err(app.fail(PageError::NotFound(format!(
            "no schedule or sensor `{}` in these definitions",
            crate::bounded(&name, 120)
        ))));
    };
    let status = form
        .status
        .parse::<InstigatorStatus>()
        .map_err(|e| app.fail(PageError::BadRequest(e)))?;
    app.instance
        .set_instigator_status(&name, status)
        .await
        .map_err(|e| app.fail(e))?;
    Ok(Redirect::to(back).into_response())
}
