//! The capture layer: `tracing` events emitted inside a step — by the asset, or by any
//! library it calls — recorded in the run's event log as log lines of that step.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::filter::Filtered;
use tracing_subscriber::layer::{Context, Filter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use super::trace::{pending_step, StepLog, ASSET_LOG_TARGET, STEP_SPAN};
use super::ObserveError;
use crate::event::{EventKind, LogLevel};
use crate::text::{bounded, mask_secrets};

/// The default number of lines captured per step attempt.
pub const DEFAULT_MAX_LINES: u32 = 1000;

/// The default number of bytes captured per step attempt.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 20;

/// The longest line kept, in characters; longer ones are cut.
pub const MAX_LINE_CHARS: usize = 4096;

/// The environment variable the command line reads the capture levels from
/// (see [`CaptureLayer::parse_levels`]), e.g. `warn,influx_data=debug`.
pub const CAPTURE_ENV: &str = "DAGRS_CAPTURE";

/// A [`tracing_subscriber::Layer`] that records the `tracing` events emitted inside a step
/// (by the asset, a library it calls, or a task it instruments) in the run's event log, as
/// log lines of that step, with their target and fields: what `run show --logs` and the web
/// UI show. Dagster calls these managed loggers.
///
/// Add it to the subscriber of your service; the command line installs it by itself:
///
/// ```
/// use dagrs_core::observe::CaptureLayer;
/// use tracing_subscriber::layer::SubscriberExt;
///
/// let capture = CaptureLayer::new()            // info and above, by default
///     .asset_level("influx_data", tracing::level_filters::LevelFilter::DEBUG)
///     .max_lines(500);
/// let subscriber = tracing_subscriber::registry().with(capture.filtered());
/// # drop(subscriber);
/// ```
///
/// Events at or above the level (default `INFO`, per asset overridable) are kept, up to a
/// limit per step attempt ([`max_lines`](Self::max_lines), [`max_bytes`](Self::max_bytes));
/// beyond it lines are dropped and counted, and one warning says how many. `ctx.log` lines
/// (target `dagrs::asset`) are in the event log already and are left out. The layer sees
/// only what the subscriber's global filter lets through: filter your own output with a
/// per-layer filter (`fmt::layer().with_filter(...)`) rather than a global one. Work that
/// the asset spawns on tasks of its own is attributed to the step when the task is
/// instrumented (`tracing::Instrument::in_current_span`).
#[derive(Clone, Debug)]
pub struct CaptureLayer {
    default: LevelFilter,
    per_asset: Arc<HashMap<String, LevelFilter>>,
    max_lines: u32,
    max_bytes: u64,
}

impl Default for CaptureLayer {
    fn default() -> Self {
        CaptureLayer {
            default: LevelFilter::INFO,
            per_asset: Arc::default(),
            max_lines: DEFAULT_MAX_LINES,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

impl CaptureLayer {
    /// Captures `INFO` and above, up to [`DEFAULT_MAX_LINES`] lines and
    /// [`DEFAULT_MAX_BYTES`] bytes per step attempt.
    pub fn new() -> Self {
        Self::default()
    }

    /// Captures events at `level` and above (`LevelFilter::OFF` captures nothing).
    pub fn level(mut self, level: LevelFilter) -> Self {
        self.default = level;
        self
    }

    /// Captures events of asset `asset` at `level` and above, overriding [`level`](Self::level).
    pub fn asset_level(mut self, asset: impl Into<String>, level: LevelFilter) -> Self {
        Arc::make_mut(&mut self.per_asset).insert(asset.into(), level);
        self
    }

    /// Keeps at most `lines` lines per step attempt.
    pub fn max_lines(mut self, lines: u32) -> Self {
        self.max_lines = lines;
        self
    }

    /// Keeps at most `bytes` bytes of text per step attempt.
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// Sets the levels from `directives`: a default level and `asset=level` overrides,
    /// separated by commas, e.g. `warn,influx_data=debug`. Levels: `off`, `error`, `warn`,
    /// `info`, `debug`, `trace`.
    pub fn parse_levels(mut self, directives: &str) -> Result<Self, ObserveError> {
        for directive in directives
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
        {
            let (asset, level) = match directive.split_once('=') {
                Some((asset, level)) => (Some(asset.trim()), level.trim()),
                None => (None, directive),
            };
            let level: LevelFilter = level.parse().map_err(|_| ObserveError::Level {
                directive: bounded(directive, 80).into_owned(),
            })?;
            match asset {
                Some(asset) => self = self.asset_level(asset, level),
                None => self.default = level,
            }
        }
        Ok(self)
    }

    /// The layer with the levels of [`CAPTURE_ENV`] when it is set.
    pub fn from_env() -> Result<Self, ObserveError> {
        match std::env::var(CAPTURE_ENV) {
            Ok(directives) => Self::new().parse_levels(&directives),
            Err(_) => Ok(Self::new()),
        }
    }

    /// The layer filtered by itself, so that it asks the subscriber for nothing it does not
    /// capture (the other layers' filters still decide what they see): what to add to a
    /// subscriber.
    pub fn filtered<S>(self) -> Filtered<Self, Self, S>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let filter = self.clone();
        self.with_filter(filter)
    }

    fn wants(&self, meta: &Metadata<'_>) -> bool {
        if meta.is_span() {
            meta.name() == STEP_SPAN
        } else {
            *meta.level() <= self.most_verbose() && meta.target() != ASSET_LOG_TARGET
        }
    }

    fn level_of(&self, asset: &str) -> LevelFilter {
        if self.per_asset.is_empty() {
            return self.default;
        }
        self.per_asset.get(asset).copied().unwrap_or(self.default)
    }

    fn most_verbose(&self) -> LevelFilter {
        self.per_asset
            .values()
            .copied()
            .fold(self.default, std::cmp::max)
    }
}

/// What a step span carries for the layer.
struct Captured {
    log: Arc<StepLog>,
    level: LevelFilter,
}

/// As its own per-layer filter (see [`CaptureLayer::filtered`]): the spans of dagrs, and the
/// events at the most verbose capture level, leaving everything else to the other layers.
impl<S> Filter<S> for CaptureLayer {
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        self.wants(meta)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        if self.wants(meta) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(std::cmp::max(self.most_verbose(), LevelFilter::INFO))
    }
}

impl<S> Layer<S> for CaptureLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != STEP_SPAN {
            return;
        }
        let (Some(log), Some(span)) = (pending_step(), ctx.span(id)) else {
            return;
        };
        let level = self.level_of(log.asset.as_str());
        span.extensions_mut().insert(Captured { log, level });
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() > self.most_verbose() || meta.target() == ASSET_LOG_TARGET {
            return;
        }
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        for span in scope {
            let extensions = span.extensions();
            let Some(captured) = extensions.get::<Captured>() else {
                continue;
            };
            if *meta.level() <= captured.level {
                self.record(&captured.log, event);
            }
            return;
        }
    }
}

impl CaptureLayer {
    fn record(&self, log: &StepLog, event: &Event<'_>) {
        let meta = event.metadata();
        let mut line = Line::default();
        event.record(&mut line);
        let target = line.log_target.as_deref().unwrap_or(meta.target());
        let mut message = format!("[{target}] {}", line.message);
        message.push_str(&line.fields);
        let message = mask_secrets(bounded(&message, MAX_LINE_CHARS).as_ref());
        let lines = log.lines.fetch_add(1, Ordering::Relaxed);
        let bytes = log.bytes.fetch_add(message.len() as u64, Ordering::Relaxed);
        if lines >= self.max_lines || bytes + message.len() as u64 > self.max_bytes {
            log.limit.store(self.max_lines, Ordering::Relaxed);
            log.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let level = match *meta.level() {
            Level::ERROR => LogLevel::Error,
            Level::WARN => LogLevel::Warn,
            Level::INFO => LogLevel::Info,
            _ => LogLevel::Debug,
        };
        log.sink
            .send(Some(&log.asset), EventKind::Log { level, message });
    }
}

/// An event's message and its other fields as ` key=value` pairs; for a `log` record
/// bridged by `tracing-log`, its own target.
#[derive(Default)]
struct Line {
    message: String,
    fields: String,
    log_target: Option<String>,
}

impl Visit for Line {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message.push_str(value),
            "log.target" => self.log_target = Some(value.to_owned()),
            name if name.starts_with("log.") => {}
            name => {
                let _ = write!(self.fields, " {name}={value:?}");
            }
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match field.name() {
            "message" => {
                let _ = write!(self.message, "{value:?}");
            }
            name if name.starts_with("log.") => {}
            name => {
                let _ = write!(self.fields, " {name}={value:?}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_with_per_asset_overrides() {
        let layer = CaptureLayer::new()
            .parse_levels("warn, noisy=error,chatty=debug")
            .unwrap();
        assert_eq!(layer.level_of("other"), LevelFilter::WARN);
        assert_eq!(layer.level_of("noisy"), LevelFilter::ERROR);
        assert_eq!(layer.level_of("chatty"), LevelFilter::DEBUG);
        assert_eq!(layer.most_verbose(), LevelFilter::DEBUG);
        let err = CaptureLayer::new().parse_levels("a=loud").unwrap_err();
        assert!(err.to_string().contains("`a=loud`"), "{err}");
    }
}
