//! The web UI (feature `web`): server-rendered pages over an [`Instance`] and its
//! [`Definitions`], as an [`axum::Router`] to mount in your own service, or served by the
//! command line's `ui` and `dev` verbs.
//!
//! ```no_run
//! # async fn demo(defs: dagrs_core::Definitions) -> Result<(), Box<dyn std::error::Error>> {
//! use dagrs_core::{web, Instance};
//!
//! let instance = Instance::sqlite_default()?;
//! let app = web::router(instance, defs);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! Pages: the asset catalog (`/`, with partition health), an asset (`/assets/<key>`, with
//! a partition status bar when it is partitioned), the lineage graph (`/lineage`), runs
//! (`/runs`) and a run with its live event log (`/runs/<id>`), backfills with their progress
//! (`/backfills`, `/backfills/<id>`), the launchpad (`/launchpad`), schedules and sensors
//! with their ticks (`/schedules`, `/sensors`), and the process's metrics in Prometheus' text
//! format (`/metrics`, see [`UiOptions::metrics`]). HTML is rendered with maud, which escapes every value it writes; the
//! script (`/static/dagrs.js`, a few hundred lines) and the style sheet are compiled in.
//!
//! Security: [`router`] serves anyone who can reach it, so bind it to `127.0.0.1`, or give a
//! token ([`UiOptions::token`]) that every request must carry (an `Authorization: Bearer`
//! header, or the cookie set by opening any page with `?token=...`). Requests that change
//! something are `POST`s that must carry the form field `csrf` (the router's own secret,
//! written into its forms) and must not come from another site (`Origin`,
//! `Sec-Fetch-Site`). Responses carry a content security policy that allows no inline
//! script.

mod app;
mod auth;
mod chart;
mod graph;
mod live;
mod page;
mod pages;
mod partition_bar;
mod static_files;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::definitions::Definitions;
use crate::instance::Instance;

pub use self::app::{MAX_CATALOG_ROWS, MAX_LOG_ROWS, RUNS_PER_PAGE};

/// How [`router_with`] serves: who may use it, and how often live pages look for news.
#[derive(Clone, Debug)]
pub struct UiOptions {
    /// The token every request must carry; `None` serves anyone who can connect.
    pub token: Option<String>,
    /// How often an open run page looks for new events (default 100 ms).
    pub poll: Duration,
    /// What `/metrics` serves, in Prometheus' text format; by default the recorder installed
    /// by [`PrometheusRecorder::install`](crate::observe::PrometheusRecorder::install), if
    /// any (`/metrics` answers 404 without one).
    pub metrics: Option<crate::observe::PrometheusHandle>,
}

impl Default for UiOptions {
    fn default() -> Self {
        UiOptions {
            token: None,
            poll: Duration::from_millis(100),
            metrics: crate::observe::PrometheusHandle::installed(),
        }
    }
}

impl UiOptions {
    /// Options that require `token` on every request.
    pub fn with_token(token: impl Into<String>) -> Self {
        UiOptions {
            token: Some(token.into()),
            ..UiOptions::default()
        }
    }
}

/// The UI of `instance` and `defs`, open to anyone who can reach it: mount it on a
/// loopback address, or use [`router_with`] and a token.
pub fn router(instance: Instance, defs: Definitions) -> Router {
    router_with(instance, defs, UiOptions::default())
}

/// The UI of `instance` and `defs`, served as `options` say.
pub fn router_with(instance: Instance, defs: Definitions, options: UiOptions) -> Router {
    app::routes(Arc::new(app::App::new(instance, defs, options)))
}

/// Why the UI could not be served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebError {
    /// The address is not a loopback address and no token was given.
    #[error(
        "refusing to serve the UI on {addr} without a token: anyone who can reach it could \
         launch and cancel runs; give --token (or DAGRS_UI_TOKEN), bind 127.0.0.1, or pass \
         --no-auth to serve it open anyway"
    )]
    NeedsToken {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}; is another program using the port?")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The server failed while serving.
    #[error("the UI server on {addr} failed: {source}")]
    Serve {
        /// The address it served on.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Whether serving on `addr` with `token` is allowed: always on a loopback address; on any
/// other address only with a token, or with `open` (the `--no-auth` flag) set.
pub fn check_bind(addr: SocketAddr, token: Option<&str>, open: bool) -> Result<(), WebError> {
    if addr.ip().is_loopback() || token.is_some_and(|t| !t.is_empty()) || open {
        Ok(())
    } else {
        Err(WebError::NeedsToken { addr })
    }
}

/// A UI being served: its address, and a token that stops it.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<Result<(), WebError>>,
}

impl Server {
    /// The address it listens on (the port chosen, when asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits until it stops (after its shutdown token is cancelled).
    pub async fn wait(self) -> Result<(), WebError> {
        let addr = self.addr;
        self.task.await.unwrap_or_else(|e| {
            Err(WebError::Serve {
                addr,
                source: std::io::Error::other(e),
            })
        })
    }
}

/// Binds `addr` and serves `app` on the current tokio runtime until `shutdown` is
/// cancelled; returns once it listens. Does not check the address: see [`check_bind`].
pub async fn serve(
    addr: SocketAddr,
    app: Router,
    shutdown: CancellationToken,
) -> Result<Server, WebError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| WebError::Bind { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| WebError::Bind { addr, source })?;
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
            .map_err(|source| WebError::Serve { addr, source })
    });
    Ok(Server { addr, task })
}
