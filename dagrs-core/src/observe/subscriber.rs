//! The command line's log output (feature `cli`): text or JSON lines on stderr, filtered by
//! `DAGRS_LOG` (or `RUST_LOG`), beside the capture layer.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use super::{CaptureLayer, ObserveError};

/// The variable the command line reads its log filter from, before `RUST_LOG`: directives
/// as `RUST_LOG` takes them (`info`, `dagrs=debug,tokio_postgres=warn`, ...). Without
/// either, warnings and errors are shown.
pub const LOG_ENV: &str = "DAGRS_LOG";

/// How the command line writes its log lines (on stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LogFormat {
    /// Lines for people, with the run's and step's span fields in front.
    #[default]
    Text,
    /// One JSON object per line, for machines: `timestamp`, `level`, `target`, `message`,
    /// the event's fields and those of its spans (`run_id`, `asset`, `attempt`, ...), and
    /// `spans`, the names of its spans from the outermost.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = ObserveError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(ObserveError::Format(
                crate::text::bounded(other, 40).into_owned(),
            )),
        }
    }
}

impl LogFormat {
    /// The format that `--log-format FORMAT` (or `--log-format=FORMAT`) in `args` asks for,
    /// as the command line reads it; text when absent or not understood.
    pub fn from_args<T: AsRef<std::ffi::OsStr>>(args: &[T]) -> LogFormat {
        let mut args = args.iter().map(|a| a.as_ref().to_string_lossy());
        while let Some(arg) = args.next() {
            let value = match arg.strip_prefix("--log-format") {
                Some("") => args.next().map(|v| v.into_owned()),
                Some(rest) => rest.strip_prefix('=').map(str::to_owned),
                None => continue,
            };
            return value.and_then(|v| v.parse().ok()).unwrap_or_default();
        }
        LogFormat::Text
    }
}

/// The command line's log output as a layer of your own subscriber: `format` on stderr,
/// with its own filter from [`LOG_ENV`] or `RUST_LOG` (default `warn`), so it never hides
/// anything from the other layers (such as [`CaptureLayer`]).
pub fn output_layer<S>(format: LogFormat) -> Result<Box<dyn Layer<S> + Send + Sync>, ObserveError>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let (var, directives) = [LOG_ENV, "RUST_LOG"]
        .into_iter()
        .find_map(|var| Some((var, std::env::var(var).ok().filter(|v| !v.is_empty())?)))
        .unwrap_or((LOG_ENV, "warn".to_owned()));
    let filter = EnvFilter::builder()
        .parse(&directives)
        .map_err(|e| ObserveError::Filter {
            var,
            reason: e.to_string(),
        })?;
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false);
    Ok(match format {
        LogFormat::Text => layer.with_filter(filter).boxed(),
        LogFormat::Json => layer
            .event_format(JsonLines)
            .fmt_fields(JsonFields)
            .with_filter(filter)
            .boxed(),
    })
}

/// Installs the command line's subscriber — its output in `format` and the capture layer
/// (levels from [`CAPTURE_ENV`](super::CAPTURE_ENV)), with `log` records bridged — unless
/// the process has a subscriber already (one of its own, or from an earlier call).
pub(crate) fn install(format: LogFormat) -> Result<(), ObserveError> {
    if tracing::dispatcher::has_been_set() {
        return Ok(());
    }
    let capture = CaptureLayer::from_env()?;
    // Fails only when another subscriber (or `log` logger) won the race: that one stays.
    let _ = tracing_subscriber::registry()
        .with(output_layer(format)?)
        .with(capture.filtered())
        .try_init();
    Ok(())
}

/// Writes each event as one JSON object (see [`LogFormat::Json`]).
struct JsonLines;

/// Keeps span fields as a JSON object, for [`JsonLines`] to merge.
struct JsonFields;

impl<'w> FormatFields<'w> for JsonFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = JsonVisitor::default();
        fields.record(&mut visitor);
        write!(writer, "{}", serde_json::Value::Object(visitor.0))
    }

    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let mut visitor = JsonVisitor(parse_object(&current.fields));
        fields.record(&mut visitor);
        current.fields = serde_json::Value::Object(visitor.0).to_string();
        Ok(())
    }
}

fn parse_object(text: &str) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::from_str(text) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    }
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        use serde_json::Value;
        let meta = event.metadata();
        let mut line = serde_json::Map::new();
        let timestamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        line.insert("timestamp".into(), Value::String(timestamp));
        line.insert("level".into(), Value::String(meta.level().to_string()));
        line.insert("target".into(), Value::String(meta.target().to_owned()));
        let mut names = Vec::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                names.push(span.name());
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<N>>() {
                    line.extend(parse_object(&fields.fields));
                }
            }
        }
        if !names.is_empty() {
            line.insert("spans".into(), Value::String(names.join(":")));
        }
        let mut fields = JsonVisitor(line);
        event.record(&mut fields);
        let mut line = fields.0;
        // A `log` record bridged by `tracing-log`: its own target, without the bridge's fields.
        if let Some(target) = line.remove("log.target") {
            line.insert("target".into(), target);
            line.retain(|key, _| !key.starts_with("log."));
        }
        writeln!(writer, "{}", Value::Object(line))
    }
}

/// Collects fields as JSON values: numbers and booleans as such, the rest as strings.
#[derive(Default)]
struct JsonVisitor(serde_json::Map<String, serde_json::Value>);

impl Visit for JsonVisitor {
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_format_from_args() {
        let args = |a: &[&str]| LogFormat::from_args(a);
        assert_eq!(args(&["x", "run", "list"]), LogFormat::Text);
        assert_eq!(args(&["x", "--log-format", "json", "run"]), LogFormat::Json);
        assert_eq!(args(&["x", "--log-format=json"]), LogFormat::Json);
        assert_eq!(args(&["x", "--log-format", "xml"]), LogFormat::Text);
        assert!("xml"
            .parse::<LogFormat>()
            .unwrap_err()
            .to_string()
            .contains("`xml`"));
    }

    #[test]
    fn json_lines_carry_the_fields_of_their_spans() {
        use std::io::Write;
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl Write for Buffer {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                crate::lock(&self.0).extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_writer(move || writer.clone())
                .event_format(JsonLines)
                .fmt_fields(JsonFields),
        );
        tracing::subscriber::with_default(subscriber, || {
            let run = tracing::info_span!("dagrs.run", run_id = "r1");
            let _run = run.enter();
            let step = tracing::info_span!("dagrs.step", asset = "a", attempt = 1u32);
            let _step = step.enter();
            tracing::warn!(target: "lib", rows = 3, "slow query");
        });
        let text = String::from_utf8(crate::lock(&buffer.0).clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["run_id"], "r1", "{text}");
        assert_eq!(line["asset"], "a");
        assert_eq!(line["attempt"], 1);
        assert_eq!(line["rows"], 3);
        assert_eq!(line["message"], "slow query");
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["target"], "lib");
        assert_eq!(line["spans"], "dagrs.run:dagrs.step");
    }
}
