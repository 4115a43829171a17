//! The spans of runs and steps, and the hand-over of a step's log sink to the capture layer.
//!
//! A run is a span named [`RUN_SPAN`] (fields `run_id`, `selection`, `job`), each attempt of a
//! step a span named [`STEP_SPAN`] inside it (fields `asset`, `attempt`, `partition`). How
//! they ended is recorded as OpenTelemetry's conventions name it: `otel.status_code` (`OK`
//! or `ERROR`) and, for a step, `error.type` (`error`, `panic`, `timeout`, `cancelled`).
//! Span names stay fixed (low cardinality, as OpenTelemetry asks); the asset is a field.
//! Both are at `INFO` level under target `dagrs`.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use tracing::Span;

use crate::event::{EventKind, LogLevel};
use crate::key::{AssetKey, RunId};
use crate::log::Sink;

/// The name of a run's span.
pub const RUN_SPAN: &str = "dagrs.run";

/// The name of a step attempt's span.
pub const STEP_SPAN: &str = "dagrs.step";

/// The target of `ctx.log`'s events, which the run's event log has already: the capture
/// layer leaves them out.
pub const ASSET_LOG_TARGET: &str = "dagrs::asset";

/// The span of run `run_id`, a child of the caller's current span.
pub(crate) fn run_span(run_id: &RunId, selection: &str, job: Option<&str>) -> Span {
    tracing::info_span!(
        target: "dagrs",
        "dagrs.run",
        run_id = run_id.as_str(),
        selection,
        job,
        otel.status_code = tracing::field::Empty,
    )
}

/// Records how a run or step ended on its span, as OpenTelemetry's status.
pub(crate) fn record_status(span: &Span, ok: bool, error: Option<&str>) {
    if span.is_disabled() {
        return;
    }
    span.record("otel.status_code", if ok { "OK" } else { "ERROR" });
    if let Some(error) = error {
        span.record("error.type", error);
    }
}

/// What the capture layer needs of a step attempt: where its lines go, and how many it
/// dropped. Handed to the layer when the attempt's span is created.
pub(crate) struct StepLog {
    pub(crate) sink: Sink,
    pub(crate) asset: AssetKey,
    pub(crate) lines: AtomicU32,
    pub(crate) bytes: AtomicU64,
    pub(crate) dropped: AtomicU64,
    /// The line limit of the layer that dropped lines, for the message.
    pub(crate) limit: AtomicU32,
}

impl StepLog {
    pub(crate) fn new(sink: Sink, asset: AssetKey) -> Arc<Self> {
        Arc::new(StepLog {
            sink,
            asset,
            lines: AtomicU32::new(0),
            bytes: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            limit: AtomicU32::new(0),
        })
    }

    /// Records one "N lines dropped" event if the capture layer dropped lines of this attempt.
    pub(crate) fn report_dropped(&self) {
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped == 0 {
            return;
        }
        let limit = self.limit.load(Ordering::Relaxed);
        let message = format!(
            "{dropped} log lines dropped: the step logged more than the capture limit \
             ({limit} lines per step attempt)"
        );
        self.sink.send(
            Some(&self.asset),
            EventKind::Log {
                level: LogLevel::Warn,
                message,
            },
        );
    }
}

thread_local! {
    /// The step whose span is being created on this thread (see [`step_span`]).
    static PENDING: RefCell<Option<Arc<StepLog>>> = const { RefCell::new(None) };
}

/// The step being created on this thread, for the capture layer's `on_new_span`.
pub(crate) fn pending_step() -> Option<Arc<StepLog>> {
    PENDING.with(|pending| pending.borrow().clone())
}

/// The span of one attempt of a step, a child of the current span (the run's); `log` is
/// handed to the capture layer, if one is installed, while the span is created.
pub(crate) fn step_span(log: &Arc<StepLog>, attempt: u32, partition: Option<&str>) -> Span {
    PENDING.with(|pending| *pending.borrow_mut() = Some(Arc::clone(log)));
    let span = tracing::info_span!(
        target: "dagrs",
        "dagrs.step",
        asset = log.asset.as_str(),
        attempt,
        partition,
        otel.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
    );
    PENDING.with(|pending| *pending.borrow_mut() = None);
    span
}
