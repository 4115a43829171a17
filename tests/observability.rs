//! Observability as an embedding service sees it: runs and steps as nested spans, what
//! assets and their libraries log captured into the right step's events (bounded), and
//! metrics through the `metrics` facade.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use dagrs_core::observe::{names, CaptureLayer};
use dagrs_core::prelude::*;
use dagrs_core::{Event, EventKind, Instance, LogLevel, RunOptions};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::MetricKind;
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// Logs like a library would, from inside an async asset.
#[asset]
async fn fetch(ctx: &AssetContext) -> Result<u32> {
    ctx.log.info("fetching");
    tracing::warn!(target: "some_db::pool", waited_ms = 250, "slow connection");
    tracing::info!(target: "some_db::query", rows = 3, "query done");
    tracing::debug!(target: "some_db::query", "statement text");
    Ok(3)
}

/// Logs from a blocking asset, on tokio's blocking pool.
#[asset]
fn crunch(fetch: Input<fetch>) -> Result<u32> {
    tracing::warn!(target: "cruncher", input = *fetch, "crunching by hand");
    tracing::debug!(target: "cruncher", "detail");
    Ok(*fetch * 2)
}

fn defs() -> Definitions {
    Definitions::builder()
        .specs(assets![fetch, crunch])
        .build()
        .unwrap()
}

/// Serializes the tests of this file: `tracing` caches each callsite's interest across the
/// process, and scoped subscribers set and dropped on several threads at once can leave a
/// callsite cached as unwanted (a race of `tracing` itself, not of dagrs).
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The log lines of `asset` in a run's events.
fn logs(events: &[Event], asset: &str) -> Vec<(LogLevel, String)> {
    events
        .iter()
        .filter(|e| e.asset.as_deref() == Some(asset))
        .filter_map(|e| match &e.kind {
            EventKind::Log { level, message } => Some((*level, message.clone())),
            _ => None,
        })
        .collect()
}

/// A span as the test subscriber saw it.
#[derive(Debug, Clone)]
struct SeenSpan {
    name: &'static str,
    parent: Option<&'static str>,
    fields: BTreeMap<String, String>,
}

/// An event with the spans around it, innermost first.
#[derive(Debug, Clone)]
struct SeenEvent {
    message: String,
    spans: Vec<SeenSpan>,
}

#[derive(Clone, Default)]
struct Recorder {
    spans: Arc<Mutex<Vec<SeenSpan>>>,
    events: Arc<Mutex<Vec<SeenEvent>>>,
}

#[derive(Default)]
struct Fields(BTreeMap<String, String>);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recorder {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let span = ctx.span(id).unwrap();
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let seen = SeenSpan {
            name: attrs.metadata().name(),
            parent: span.parent().map(|p| p.name()),
            fields: fields.0,
        };
        span.extensions_mut().insert(seen.clone());
        self.spans.lock().unwrap().push(seen);
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let spans = ctx
            .event_scope(event)
            .map(|scope| {
                scope
                    .map(|span| span.extensions().get::<SeenSpan>().unwrap().clone())
                    .collect()
            })
            .unwrap_or_default();
        self.events.lock().unwrap().push(SeenEvent {
            message: fields.0.remove("message").unwrap_or_default(),
            spans,
        });
    }
}

#[test]
fn runs_and_step_attempts_are_nested_spans_around_everything_logged_inside() {
    let _serial = serial();
    let recorder = Recorder::default();
    let subscriber = tracing_subscriber::registry().with(recorder.clone());
    let _default = tracing::subscriber::set_default(subscriber);
    let result =
        runtime().block_on(async { materialize(&defs(), "*", RunConfig::new()).await.unwrap() });
    assert!(result.success());
    let run_id = result.run_id().to_string();

    let spans = recorder.spans.lock().unwrap().clone();
    let runs: Vec<_> = spans.iter().filter(|s| s.name == "dagrs.run").collect();
    assert_eq!(runs.len(), 1, "{spans:#?}");
    assert_eq!(runs[0].fields["run_id"], run_id);
    assert_eq!(runs[0].fields["selection"], "*");
    let steps: Vec<_> = spans.iter().filter(|s| s.name == "dagrs.step").collect();
    assert_eq!(steps.len(), 2, "{spans:#?}");
    for step in &steps {
        assert_eq!(step.parent, Some("dagrs.run"), "{step:#?}");
        assert_eq!(step.fields["attempt"], "1");
    }

    let events = recorder.events.lock().unwrap().clone();
    let inside = |message: &str| {
        let event = events
            .iter()
            .find(|e| e.message == message)
            .unwrap_or_else(|| panic!("no event {message:?} in {events:#?}"));
        let names: Vec<_> = event.spans.iter().map(|s| s.name).collect();
        assert_eq!(names, ["dagrs.step", "dagrs.run"], "{event:#?}");
        event.spans[0].fields["asset"].clone()
    };
    assert_eq!(inside("slow connection"), "fetch");
    assert_eq!(inside("fetching"), "fetch", "ctx.log lines too");
    // The blocking pool gets the step's span (and the subscriber) as well.
    assert_eq!(inside("crunching by hand"), "crunch");
}

#[test]
fn what_libraries_log_inside_a_step_lands_in_that_steps_events() {
    let _serial = serial();
    let capture = CaptureLayer::new().asset_level("crunch", LevelFilter::DEBUG);
    let subscriber = tracing_subscriber::registry().with(capture.filtered());
    let _default = tracing::subscriber::set_default(subscriber);
    let result =
        runtime().block_on(async { materialize(&defs(), "*", RunConfig::new()).await.unwrap() });
    assert!(result.success());
    let events = &runtime().block_on(result.events()).unwrap();

    let fetch = logs(events, "fetch");
    assert_eq!(
        fetch,
        [
            (LogLevel::Info, "fetching".to_owned()),
            (
                LogLevel::Warn,
                "[some_db::pool] slow connection waited_ms=250".to_owned()
            ),
            (
                LogLevel::Info,
                "[some_db::query] query done rows=3".to_owned()
            ),
        ],
        "ctx.log once, library lines with target and fields, no debug at the default level"
    );
    let crunch = logs(events, "crunch");
    assert_eq!(
        crunch,
        [
            (
                LogLevel::Warn,
                "[cruncher] crunching by hand input=3".to_owned()
            ),
            (LogLevel::Debug, "[cruncher] detail".to_owned()),
        ],
        "the blocking asset's lines, debug too by its own level"
    );
    // Each line sits between its step's start and end.
    let position = |asset: &str, pred: &dyn Fn(&EventKind) -> bool| {
        events
            .iter()
            .position(|e| e.asset.as_deref() == Some(asset) && pred(&e.kind))
            .unwrap()
    };
    let started = position("crunch", &|k| matches!(k, EventKind::StepStarted { .. }));
    let line = position("crunch", &|k| matches!(k, EventKind::Log { .. }));
    let ended = position("crunch", &|k| matches!(k, EventKind::StepSucceeded { .. }));
    assert!(started < line && line < ended);
}

#[test]
fn nothing_is_captured_outside_a_step_or_without_the_layer() {
    let _serial = serial();
    let result = runtime().block_on(async {
        tracing::warn!(target: "some_db::pool", "before any run");
        materialize(&defs(), "*", RunConfig::new()).await.unwrap()
    });
    // No subscriber: only ctx.log's line is in the log.
    assert_eq!(
        logs(&runtime().block_on(result.events()).unwrap(), "fetch").len(),
        1
    );
    assert!(logs(&runtime().block_on(result.events()).unwrap(), "crunch").is_empty());
}

/// Logs more than the capture limit.
#[asset]
async fn chatty() -> Result<()> {
    for i in 0..10 {
        tracing::info!(target: "chatty_lib", i, "line");
    }
    Ok(())
}

#[test]
fn a_chatty_step_is_cut_at_the_limit_with_one_dropped_event() {
    let _serial = serial();
    let capture = CaptureLayer::new().max_lines(3);
    let subscriber = tracing_subscriber::registry().with(capture.filtered());
    let _default = tracing::subscriber::set_default(subscriber);
    let defs = Definitions::builder()
        .specs(assets![chatty])
        .build()
        .unwrap();
    let result =
        runtime().block_on(async { materialize(&defs, "*", RunConfig::new()).await.unwrap() });
    let lines = logs(&runtime().block_on(result.events()).unwrap(), "chatty");
    assert_eq!(lines.len(), 4, "{lines:#?}");
    assert_eq!(lines[0].1, "[chatty_lib] line i=0");
    assert_eq!(lines[2].1, "[chatty_lib] line i=2");
    assert_eq!(lines[3].0, LogLevel::Warn);
    assert!(
        lines[3].1.starts_with("7 log lines dropped") && lines[3].1.contains("3 lines"),
        "{}",
        lines[3].1
    );
    // The dropped event comes before the step's end.
    let events = runtime().block_on(result.events()).unwrap();
    let kinds: Vec<_> = events
        .iter()
        .filter(|e| e.asset.as_deref() == Some("chatty"))
        .map(|e| &e.kind)
        .collect();
    assert!(
        matches!(kinds[kinds.len() - 3], EventKind::Log { .. }),
        "{kinds:#?}"
    );
    assert!(matches!(
        kinds[kinds.len() - 2],
        EventKind::Materialization { .. }
    ));
    assert!(matches!(
        kinds[kinds.len() - 1],
        EventKind::StepSucceeded { .. }
    ));
}

/// Fails on its first attempt.
#[asset(retry = Retry::fixed(1, Duration::ZERO))]
async fn flaky(ctx: &AssetContext) -> Result<u32> {
    anyhow::ensure!(ctx.attempt() > 1, "first attempt fails");
    Ok(1)
}

#[test]
fn runs_steps_retries_the_queue_and_the_store_are_measured() {
    let _serial = serial();
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let defs = Definitions::builder()
        .specs(assets![fetch, crunch, flaky])
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        runtime().block_on(async {
            let instance = Instance::ephemeral();
            let result = instance
                .materialize(&defs, "*", RunConfig::new())
                .await
                .unwrap();
            assert!(result.success());
            instance
                .submit(&defs, "fetch", RunOptions::new())
                .await
                .unwrap();
            for handle in instance.start_queued_runs(&defs).await.unwrap() {
                assert!(handle.wait().await.unwrap().success());
            }
        })
    });
    let mut counters = BTreeMap::new();
    let mut histograms: BTreeMap<String, usize> = BTreeMap::new();
    let mut gauges = BTreeMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let (kind, key) = key.into_parts();
        let mut name = key.name().to_owned();
        let mut labels: Vec<_> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        labels.sort();
        if !labels.is_empty() {
            name = format!("{name}{{{}}}", labels.join(","));
        }
        match (kind, value) {
            (MetricKind::Counter, DebugValue::Counter(n)) => {
                counters.insert(name, n);
            }
            (MetricKind::Histogram, DebugValue::Histogram(values)) => {
                histograms.insert(name, values.len());
            }
            (MetricKind::Gauge, DebugValue::Gauge(v)) => {
                gauges.insert(name, v.into_inner());
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(counters[names::RUNS_STARTED], 2, "{counters:#?}");
    assert_eq!(counters[names::RUNS_SUCCEEDED], 2);
    assert!(!counters.contains_key(names::RUNS_FAILED));
    assert_eq!(
        counters[&format!("{}{{asset=flaky}}", names::STEP_RETRIES)],
        1
    );
    let step = |asset: &str, status: &str| {
        histograms
            .get(&format!(
                "{}{{asset={asset},status={status}}}",
                names::STEP_DURATION
            ))
            .copied()
    };
    assert_eq!(step("fetch", "succeeded"), Some(2), "{histograms:#?}");
    assert_eq!(step("crunch", "succeeded"), Some(1));
    assert_eq!(step("flaky", "failed"), Some(1));
    assert_eq!(step("flaky", "succeeded"), Some(1));
    assert_eq!(histograms[names::QUEUE_WAIT], 1);
    assert!(histograms[names::STORE_WRITE] >= 2);
    assert_eq!(gauges[names::QUEUE_DEPTH], 0.0);
}

#[test]
fn the_web_ui_serves_prometheus_text_on_metrics() {
    let _serial = serial();
    use axum::body::{to_bytes, Body};
    use axum::http::{header, Request, StatusCode};
    use dagrs_core::observe::PrometheusRecorder;
    use dagrs_core::web::{self, UiOptions};
    use tower::ServiceExt;

    let recorder = PrometheusRecorder::new();
    let instance = Instance::ephemeral();
    let defs = defs();
    let options = UiOptions {
        metrics: Some(recorder.handle()),
        ..UiOptions::with_token("t0ken")
    };
    let app = web::router_with(instance.clone(), defs.clone(), options);
    let get = |app: axum::Router, token: Option<&'static str>| async move {
        let mut request = Request::get("/metrics");
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let response = app
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let kind = response.headers().get(header::CONTENT_TYPE).cloned();
        let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, kind, String::from_utf8(body.to_vec()).unwrap())
    };
    metrics::with_local_recorder(&recorder, || {
        runtime().block_on(async {
            let result = instance.materialize(&defs, "*", RunConfig::new()).await;
            assert!(result.unwrap().success());
            let (status, kind, body) = get(app.clone(), Some("t0ken")).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert!(kind
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("text/plain; version=0.0.4"));
            assert!(
                body.contains("# TYPE dagrs_runs_started_total counter\n"),
                "{body}"
            );
            assert!(body.contains("dagrs_runs_started_total 1\n"), "{body}");
            assert!(
                body.contains(
                    "dagrs_step_duration_seconds_count{asset=\"fetch\",status=\"succeeded\"} 1\n"
                ),
                "{body}"
            );
            let (status, _, _) = get(app.clone(), None).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "behind the UI's token");
            let bare = web::router_with(
                instance.clone(),
                defs.clone(),
                UiOptions {
                    metrics: None,
                    ..UiOptions::default()
                },
            );
            let (status, _, body) = get(bare, None).await;
            assert_eq!(status, StatusCode::NOT_FOUND);
            assert!(body.contains("PrometheusRecorder"), "{body}");
        })
    });
}
