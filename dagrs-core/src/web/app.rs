//! The router's state and routes, and how a page that fails answers.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup};

use super::{auth, live, page, pages, static_files, UiOptions};
use crate::definitions::Definitions;
use crate::error::Error;
use crate::instance::Instance;
use crate::observe::PrometheusHandle;

/// The catalog shows at most this many assets at once (the rest: refine the search).
pub const MAX_CATALOG_ROWS: usize = 1_000;
/// A run page shows at most this many events at once (the rest: earlier pages).
pub const MAX_LOG_ROWS: usize = 500;
/// The runs page lists this many runs per page.
pub const RUNS_PER_PAGE: usize = 50;

/// What every handler shares.
pub(crate) struct App {
    pub(crate) instance: Instance,
    pub(crate) defs: Definitions,
    /// The secret every state-changing form carries (field `csrf`).
    pub(crate) csrf: String,
    /// The token every request must carry, if any.
    pub(crate) token: Option<String>,
    /// How often a live page looks for news.
    pub(crate) poll: Duration,
    /// What `/metrics` renders, if anything.
    pub(crate) metrics: Option<PrometheusHandle>,
}

impl App {
    pub(crate) fn new(instance: Instance, defs: Definitions, options: UiOptions) -> App {
        App {
            instance,
            defs,
            csrf: format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            ),
            token: options.token.filter(|t| !t.is_empty()),
            poll: options.poll,
            metrics: options.metrics,
        }
    }

    /// `e` as an error page, its forms carrying this router's CSRF secret.
    pub(crate) fn fail(&self, e: impl Into<PageError>) -> PageError {
        e.into().with_csrf(&self.csrf)
    }
}

/// Shared state of the handlers.
pub(crate) type State = axum::extract::State<Arc<App>>;

/// Every route.
pub(crate) fn routes(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(pages::catalog::page))
        .route("/assets", get(pages::catalog::page))
        .route("/assets/{*key}", get(pages::asset::page))
        .route("/lineage", get(pages::lineage::page))
        .route("/lineage/status", get(pages::lineage::statuses))
        .route("/runs", get(pages::runs::page))
        .route("/runs/{id}", get(pages::run::page))
        .route("/runs/{id}/stream", get(live::stream))
        .route("/runs/{id}/cancel", post(pages::run::cancel))
        .route("/runs/{id}/reexecute", post(pages::run::reexecute))
        .route(
            "/backfills",
            get(pages::backfills::list).post(pages::backfills::launch),
        )
        .route("/backfills/{id}", get(pages::backfills::detail))
        .route("/backfills/{id}/cancel", post(pages::backfills::cancel))
        .route("/backfills/{id}/resume", post(pages::backfills::resume))
        .route(
            "/launchpad",
            get(pages::launchpad::page).post(pages::launchpad::submit),
        )
        .route("/launch", post(pages::launchpad::launch))
        .route("/schedules", get(pages::automation::schedules))
        .route("/sensors", get(pages::automation::sensors))
        .route("/instigators/{name}", post(pages::automation::toggle))
        .route("/workers", get(pages::workers::page))
        .route("/static/{file}", get(static_files::serve))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&app),
            auth::guard,
        ))
        .with_state(app)
}

/// The process's metrics in Prometheus' text format, when the router has a recorder's handle.
async fn metrics(state: State) -> Response {
    match &state.metrics {
        Some(handle) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            handle.render(),
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "no metrics here: install dagrs_core::observe::PrometheusRecorder (the ui and dev \
             verbs do), or serve your own exporter's metrics\n",
        )
            .into_response(),
    }
}

async fn not_found(state: State) -> PageError {
    PageError::NotFound("no such page".into()).with_csrf(&state.csrf)
}

/// A page that could not be shown: its status and an escaped message, in the page layout.
#[derive(Debug)]
pub(crate) enum PageError {
    /// 404.
    NotFound(String),
    /// 400: the request itself is wrong (bad filter, bad config, unknown asset).
    BadRequest(String),
    /// 409: the request does not fit the state (a run still running).
    Conflict(String),
    /// 500: the store failed.
    Internal(String),
    /// Any of the above, rendered with the CSRF secret for the page's forms.
    Rendered(StatusCode, Markup),
}

impl PageError {
    pub(crate) fn with_csrf(self, csrf: &str) -> PageError {
        let (status, message) = match self {
            PageError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            PageError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            PageError::Conflict(m) => (StatusCode::CONFLICT, m),
            PageError::Internal(m) => (StatusCode::INTERNAL_SERVER_ERROR, m),
            rendered @ PageError::Rendered(..) => return rendered,
        };
        let body = page::layout(
            status.canonical_reason().unwrap_or("error"),
            "",
            csrf,
            html! {
                h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) }
                p.error { (message) }
                p { a href="/" { "Back to the assets" } }
            },
        );
        PageError::Rendered(status, body)
    }
}

impl From<Error> for PageError {
    fn from(e: Error) -> Self {
        let message = e.to_string();
        match e {
            Error::RunNotFound(_) => PageError::NotFound(message),
            Error::RunStillRunning { .. } | Error::NothingToReexecute { .. } => {
                PageError::Conflict(message)
            }
            Error::Storage { .. } | Error::RunInterrupted { .. } => PageError::Internal(message),
            _ => PageError::BadRequest(message),
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self.with_csrf("") {
            PageError::Rendered(status, body) => (status, Html(body.into_string())).into_response(),
            _ => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        }
    }
}

/// A page handler's result.
pub(crate) type PageResult = Result<Html<String>, PageError>;

/// Turns a rendered page into a response.
pub(crate) fn ok(markup: Markup) -> PageResult {
    Ok(Html(markup.into_string()))
}
