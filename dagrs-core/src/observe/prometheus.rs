//! A small metrics recorder that renders Prometheus' text format, for the command line's
//! `/metrics`.
//!
//! Why not `metrics-exporter-prometheus`: even without its HTTP listener it brings
//! `metrics-util` with its registry, quantile sketches, `quanta` and `indexmap`, to render
//! the handful of counters, gauges and fixed-bucket histograms dagrs records; this file is
//! the whole of what the command line needs. A service with an exporter of its own installs
//! that instead, and gets the same metrics.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use metrics::{
    Counter, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};

use super::ObserveError;
use crate::lock;

/// The upper bounds of histogram buckets, in seconds: from 100 µs to an hour.
const BUCKETS: [f64; 19] = [
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0, 900.0, 3600.0,
];

/// A [`metrics::Recorder`] that keeps counters, gauges and histograms (with fixed buckets
/// from 100 µs to an hour) in memory and renders them in Prometheus' text format.
///
/// ```
/// use dagrs_core::observe::PrometheusRecorder;
///
/// let recorder = PrometheusRecorder::new();
/// let handle = recorder.handle();
/// metrics::with_local_recorder(&recorder, || metrics::counter!("jobs_total").increment(2));
/// assert!(handle.render().contains("jobs_total 2"));
/// ```
#[derive(Debug, Default)]
pub struct PrometheusRecorder {
    registry: Arc<Registry>,
}

/// Renders what a [`PrometheusRecorder`] recorded; cheap to clone.
#[derive(Debug, Clone)]
pub struct PrometheusHandle {
    registry: Arc<Registry>,
}

static INSTALLED: OnceLock<PrometheusHandle> = OnceLock::new();

impl PrometheusRecorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// A handle that renders this recorder's metrics.
    pub fn handle(&self) -> PrometheusHandle {
        PrometheusHandle {
            registry: Arc::clone(&self.registry),
        }
    }

    /// Installs a recorder as the process's global one and returns its handle; the same
    /// handle when it was installed already, and an error when another recorder was.
    pub fn install() -> Result<PrometheusHandle, ObserveError> {
        static INSTALL: Mutex<()> = Mutex::new(());
        let _once = lock(&INSTALL);
        if let Some(handle) = INSTALLED.get() {
            return Ok(handle.clone());
        }
        let recorder = PrometheusRecorder::new();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).map_err(|_| ObserveError::RecorderInstalled)?;
        super::meter::describe();
        Ok(INSTALLED.get_or_init(|| handle).clone())
    }
}

impl PrometheusHandle {
    /// The handle of the recorder [`PrometheusRecorder::install`] installed, if it did.
    pub fn installed() -> Option<PrometheusHandle> {
        INSTALLED.get().cloned()
    }

    /// Every metric in Prometheus' text exposition format (version 0.0.4), sorted by name.
    pub fn render(&self) -> String {
        self.registry.render()
    }
}

#[derive(Debug, Default)]
struct Registry {
    metrics: Mutex<HashMap<Key, Metric>>,
    help: Mutex<HashMap<String, String>>,
}

#[derive(Debug, Clone)]
enum Metric {
    Counter(Arc<AtomicU64>),
    /// The bits of an `f64`.
    Gauge(Arc<FloatCell>),
    Histogram(Arc<Buckets>),
}

/// An `f64` updated atomically.
#[derive(Debug, Default)]
struct FloatCell(AtomicU64);

impl FloatCell {
    fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }

    fn update(&self, f: impl Fn(f64) -> f64) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some(f(f64::from_bits(bits)).to_bits())
            });
    }
}

impl GaugeFn for FloatCell {
    fn increment(&self, value: f64) {
        self.update(|v| v + value);
    }

    fn decrement(&self, value: f64) {
        self.update(|v| v - value);
    }

    fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
struct Buckets {
    /// Observations per bucket (not cumulative); the last counts those above every bound.
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum: FloatCell,
}

impl HistogramFn for Buckets {
    fn record(&self, value: f64) {
        let bucket = BUCKETS
            .iter()
            .position(|&bound| value <= bound)
            .unwrap_or(BUCKETS.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum.update(|sum| sum + value);
    }
}

impl Registry {
    fn get(&self, key: &Key, make: impl FnOnce() -> Metric) -> Metric {
        lock(&self.metrics)
            .entry(key.clone())
            .or_insert_with(make)
            .clone()
    }

    fn describe(&self, name: KeyName, unit: Option<Unit>, help: SharedString) {
        let help = match unit {
            Some(unit) => format!("{help} ({})", unit.as_str()),
            None => help.into_owned(),
        };
        lock(&self.help).insert(sanitize(name.as_str()), help);
    }

    fn render(&self) -> String {
        let mut families: BTreeMap<String, Vec<(String, Metric)>> = BTreeMap::new();
        for (key, metric) in lock(&self.metrics).iter() {
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}=\"{}\"", sanitize(l.key()), escape(l.value())))
                .collect();
            families
                .entry(sanitize(key.name()))
                .or_default()
                .push((labels.join(","), metric.clone()));
        }
        let help = lock(&self.help).clone();
        let mut out = String::new();
        for (name, mut series) in families {
            series.sort_by(|a, b| a.0.cmp(&b.0));
            if let Some(help) = help.get(&name) {
                let _ = writeln!(out, "# HELP {name} {}", help.replace('\n', " "));
            }
            let kind = match series[0].1 {
                Metric::Counter(_) => "counter",
                Metric::Gauge(_) => "gauge",
                Metric::Histogram(_) => "histogram",
            };
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, metric) in series {
                let braces = |labels: &str| {
                    if labels.is_empty() {
                        String::new()
                    } else {
                        format!("{{{labels}}}")
                    }
                };
                match metric {
                    Metric::Counter(value) => {
                        let _ = writeln!(
                            out,
                            "{name}{} {}",
                            braces(&labels),
                            value.load(Ordering::Relaxed)
                        );
                    }
                    Metric::Gauge(value) => {
                        let _ = writeln!(out, "{name}{} {}", braces(&labels), value.get());
                    }
                    Metric::Histogram(buckets) => {
                        let sep = if labels.is_empty() { "" } else { "," };
                        let mut total = 0;
                        for (i, count) in buckets.counts.iter().enumerate() {
                            total += count.load(Ordering::Relaxed);
                            let le = BUCKETS.get(i).map_or("+Inf".to_owned(), f64::to_string);
                            let _ =
                                writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {total}");
                        }
                        let _ =
                            writeln!(out, "{name}_sum{} {}", braces(&labels), buckets.sum.get());
                        let _ = writeln!(out, "{name}_count{} {total}", braces(&labels));
                    }
                }
            }
        }
        out
    }
}

impl Recorder for PrometheusRecorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.registry.describe(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.registry.describe(key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.registry.describe(key, unit, description);
    }

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        match self.registry.get(key, || Metric::Counter(Arc::default())) {
            Metric::Counter(counter) => Counter::from_arc(counter),
            _ => Counter::noop(),
        }
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        match self.registry.get(key, || Metric::Gauge(Arc::default())) {
            Metric::Gauge(gauge) => Gauge::from_arc(gauge),
            _ => Gauge::noop(),
        }
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        match self.registry.get(key, || Metric::Histogram(Arc::default())) {
            Metric::Histogram(histogram) => Histogram::from_arc(histogram),
            _ => Histogram::noop(),
        }
    }
}

/// A metric or label name as Prometheus allows it: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
fn sanitize(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// A label value with `\`, `"` and line feeds escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_cumulative_histograms() {
        let recorder = PrometheusRecorder::new();
        metrics::with_local_recorder(&recorder, || {
            metrics::describe_counter!("runs_total", "Runs.");
            metrics::counter!("runs_total", "status" => "ok").increment(3);
            metrics::counter!("runs_total", "status" => "a\"b").increment(1);
            metrics::gauge!("queue.depth").set(4.0);
            metrics::histogram!("took_seconds").record(0.003);
            metrics::histogram!("took_seconds").record(7200.0);
        });
        let text = recorder.handle().render();
        assert!(
            text.contains("# HELP runs_total Runs.\n# TYPE runs_total counter\n"),
            "{text}"
        );
        assert!(text.contains("runs_total{status=\"ok\"} 3\n"), "{text}");
        assert!(text.contains("runs_total{status=\"a\\\"b\"} 1\n"), "{text}");
        assert!(
            text.contains("# TYPE queue_depth gauge\nqueue_depth 4\n"),
            "{text}"
        );
        assert!(
            text.contains("took_seconds_bucket{le=\"0.001\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("took_seconds_bucket{le=\"0.005\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("took_seconds_bucket{le=\"3600\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("took_seconds_bucket{le=\"+Inf\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("took_seconds_count 2\n"), "{text}");
    }
}
