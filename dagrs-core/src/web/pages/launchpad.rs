//! The launchpad: materialize a selection with run config written as YAML, checked before
//! launch with the command line's errors (`RunConfig::from_yaml`, then the instance's own
//! checks: selection, config of every selected asset, stored inputs).

use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use maud::html;
use serde::Deserialize;

use crate::config::RunConfig;
use crate::executor::RunOptions;
use crate::web::app::{App, PageError, State};
use crate::web::page::{csrf_field, layout};

/// The launchpad's form (also its query string, to prefill it).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct LaunchForm {
    #[serde(default)]
    selection: String,
    #[serde(default)]
    config: Option<String>,
    /// The partition key or range (`START...END`) of partitioned assets; empty for none.
    #[serde(default)]
    partition: String,
    /// `validate` or `launch`.
    #[serde(default)]
    action: String,
}

/// What the form says after a check.
enum Outcome {
    None,
    Valid(Vec<String>),
    Invalid(String),
}

/// `GET /launchpad?selection=...`.
pub(crate) async fn page(state: State, Query(form): Query<LaunchForm>) -> Response {
    render(&state.0, &form, Outcome::None, StatusCode::OK)
}

/// `POST /launchpad`: checks the form; with `action=launch`, launches the run and goes to
/// its page.
pub(crate) async fn submit(state: State, Form(form): Form<LaunchForm>) -> Response {
    let app = &*state.0;
    let selection = selection_of(&form.selection);
    let text = form.config.as_deref().unwrap_or("");
    let parsed = if text.trim().is_empty() {
        Ok(RunConfig::new())
    } else {
        RunConfig::from_yaml(text)
    };
    let config = match parsed {
        Ok(config) => config,
        Err(e) => {
            return render(
                app,
                &form,
                Outcome::Invalid(e.to_string()),
                StatusCode::BAD_REQUEST,
            )
        }
    };
    let mut options = RunOptions::new().config(config).tag("dagrs/source", "web");
    if !form.partition.trim().is_empty() {
        options = options.partition(form.partition.trim());
    }
    if form.action != "launch" {
        return match app
            .instance
            .check_launch(&app.defs, &selection, &options)
            .await
        {
            Ok(keys) => render(
                app,
                &form,
                Outcome::Valid(keys.iter().map(|k| k.to_string()).collect()),
                StatusCode::OK,
            ),
            Err(e) => render(
                app,
                &form,
                Outcome::Invalid(e.to_string()),
                StatusCode::BAD_REQUEST,
            ),
        };
    }
    match app.instance.launch(&app.defs, &selection, options).await {
        Ok(handle) => Redirect::to(&format!("/runs/{}", handle.run_id())).into_response(),
        Err(e) => render(
            app,
            &form,
            Outcome::Invalid(e.to_string()),
            StatusCode::BAD_REQUEST,
        ),
    }
}

/// The quick launch form (asset page, lineage graph): a selection, default config.
#[derive(Debug, Deserialize)]
pub(crate) struct QuickLaunch {
    #[serde(default)]
    selection: String,
}

/// `POST /launch`: materializes `selection` with the default config and goes to the run.
pub(crate) async fn launch(
    state: State,
    Form(form): Form<QuickLaunch>,
) -> Result<Response, PageError> {
    let app = &*state.0;
    let selection = selection_of(&form.selection);
    let options = RunOptions::new().tag("dagrs/source", "web");
    let handle = app
        .instance
        .launch(&app.defs, &selection, options)
        .await
        .map_err(|e| app.fail(e))?;
    Ok(Redirect::to(&format!("/runs/{}", handle.run_id())).into_response())
}

/// A selection from a form: as written, `*` when empty.
fn selection_of(text: &str) -> String {
    match text.trim() {
        "" => "*".to_owned(),
        text => text.to_owned(),
    }
}

fn render(app: &App, form: &LaunchForm, outcome: Outcome, status: StatusCode) -> Response {
    let config = form.config.clone().unwrap_or_else(|| scaffold(app));
    let assets: Vec<&str> = app.defs.assets().map(|a| a.key().as_str()).collect();
    let markup = html! {
        h1 { "Launchpad" }
        p.muted {
            "Materialize a selection (" code { "name" } ", " code { "name+" } ", " code { "+name" } ", "
            code { "group:x" } ", " code { "tag:k=v" } ", " code { "*" } ") with run config in YAML: "
            code { "assets: { <asset>: { <field>: <value> } }" } "."
        }
        @match &outcome {
            Outcome::Valid(keys) => div #launch-result.notice {
                "Valid: would materialize " (keys.len()) " asset(s): " (keys.join(", "))
            },
            Outcome::Invalid(message) => div #launch-result.error { (message) },
            Outcome::None => {},
        }
        form #launchpad method="post" action="/launchpad" {
            (csrf_field(&app.csrf))
            p { label { "Selection" br;
                input #selection type="text" name="selection" size="80" list="asset-keys"
                    value=(if form.selection.is_empty() { "*" } else { &form.selection });
            } }
            datalist #asset-keys { @for a in &assets { option value=(a) {} } }
            p { label { "Partition (partitioned assets: a key, or " code { "START...END" } ", END excluded)" br;
                input #partition type="text" name="partition" size="50" value=(form.partition);
            } }
            p { label { "Run config (YAML)" br; textarea #config name="config" spellcheck="false" { (config) } } }
            div.actions {
                button.secondary type="submit" name="action" value="validate" { "Validate" }
                button #launch type="submit" name="action" value="launch" { "Launch run" }
            }
        }
    };
    (
        status,
        Html(layout("Launchpad", "/launchpad", &app.csrf, markup).into_string()),
    )
        .into_response()
}

/// The config the form starts with: the definitions' defaults, as YAML.
fn scaffold(app: &App) -> String {
    let defaults = app.defs.default_config();
    if *defaults == RunConfig::default() {
        "assets: {}\n".to_owned()
    } else {
        serde_yaml_ng::to_string(defaults).unwrap_or_else(|_| "assets: {}\n".to_owned())
    }
}
