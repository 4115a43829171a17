//! Observability the Rust way: spans, captured logs and metrics, for a service that has its
//! own `tracing` subscriber and metrics exporter, and for the command line.
//!
//! - **Spans**: every run is a span named `dagrs.run` (fields `run_id`, `selection`, `job`)
//!   and every attempt of a step a `dagrs.step` span inside it (`run_id`, `asset`,
//!   `attempt`, `partition`), entered around the asset's future and its blocking closure, so
//!   everything logged inside carries them — from dagrs, the asset or a library. Ends are
//!   recorded as OpenTelemetry's `otel.status_code` (and `error.type` for a failed step).
//! - **Captured logs**: [`CaptureLayer`] records the `tracing` events emitted inside a step in
//!   the run's event log, as log lines of that step, bounded per step attempt.
//! - **Metrics** through the [`metrics`] facade, so the service's own exporter gets them; the
//!   names are in [`names`]. [`PrometheusRecorder`] renders them as Prometheus text, as the
//!   command line's `/metrics` does.
//! - With feature `cli`: [`output_layer`], the command line's log output (text or JSON lines,
//!   filtered by `DAGRS_LOG` or `RUST_LOG`).
//!
//! In a service:
//!
//! ```
//! use dagrs_core::observe::CaptureLayer;
//! use tracing_subscriber::layer::SubscriberExt;
//!
//! let subscriber = tracing_subscriber::registry()
//!     // .with(your fmt or OpenTelemetry layers, each with its own filter)
//!     .with(CaptureLayer::new().filtered());
//! tracing::subscriber::set_global_default(subscriber).expect("no subscriber yet");
//! ```

mod capture;
pub(crate) mod meter;
mod prometheus;
#[cfg(feature = "cli")]
mod subscriber;
pub(crate) mod trace;

pub use self::capture::{
    CaptureLayer, CAPTURE_ENV, DEFAULT_MAX_BYTES, DEFAULT_MAX_LINES, MAX_LINE_CHARS,
};
pub use self::meter::names;
pub use self::prometheus::{PrometheusHandle, PrometheusRecorder};
#[cfg(feature = "cli")]
pub(crate) use self::subscriber::install as install_cli;
#[cfg(feature = "cli")]
pub use self::subscriber::{output_layer, LogFormat, LOG_ENV};
pub use self::trace::{ASSET_LOG_TARGET, RUN_SPAN, STEP_SPAN};

/// What can go wrong setting up logs and metrics.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ObserveError {
    /// A capture level directive is not `LEVEL` or `ASSET=LEVEL`.
    #[error(
        "invalid capture level `{directive}`: write LEVEL or ASSET=LEVEL, with a level among \
         off, error, warn, info, debug, trace"
    )]
    Level {
        /// The directive.
        directive: String,
    },
    /// A log filter (`DAGRS_LOG` or `RUST_LOG`) could not be parsed.
    #[error("invalid log filter in {var}: {reason}")]
    Filter {
        /// The variable it came from.
        var: &'static str,
        /// Why.
        reason: String,
    },
    /// A log format other than `text` or `json`.
    #[error("unknown log format `{0}`: use text or json")]
    Format(String),
    /// The process has a metrics recorder already.
    #[error("a metrics recorder is installed already; dagrs' Prometheus recorder was not")]
    RecorderInstalled,
    /// The metrics address could not be bound.
    #[error("cannot serve metrics on {addr}: {source}; is another program using the port?")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}
