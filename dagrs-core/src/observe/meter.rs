//! The metrics dagrs records, through the [`metrics`] facade: nothing is recorded until the
//! process installs a recorder (its own exporter, or [`PrometheusRecorder`]).
//!
//! [`PrometheusRecorder`]: super::PrometheusRecorder

use std::time::Duration;

use crate::event::RunStatus;
use crate::key::AssetKey;

/// The names of dagrs' metrics.
pub mod names {
    /// Counter: runs started.
    pub const RUNS_STARTED: &str = "dagrs_runs_started_total";
    /// Counter: runs that succeeded.
    pub const RUNS_SUCCEEDED: &str = "dagrs_runs_succeeded_total";
    /// Counter: runs that failed.
    pub const RUNS_FAILED: &str = "dagrs_runs_failed_total";
    /// Counter: runs that were cancelled.
    pub const RUNS_CANCELLED: &str = "dagrs_runs_cancelled_total";
    /// Histogram, seconds: how long step attempts ran, by `asset` and `status`
    /// (`succeeded`, `failed`).
    pub const STEP_DURATION: &str = "dagrs_step_duration_seconds";
    /// Counter: retries scheduled, by `asset`.
    pub const STEP_RETRIES: &str = "dagrs_step_retries_total";
    /// Gauge: runs waiting in the run queue, as last seen by this process.
    pub const QUEUE_DEPTH: &str = "dagrs_queue_depth";
    /// Histogram, seconds: how long runs waited in the queue before they started.
    pub const QUEUE_WAIT: &str = "dagrs_queue_wait_seconds";
    /// Histogram, seconds: how long writing a batch of a run's events to the store took.
    pub const STORE_WRITE: &str = "dagrs_store_write_seconds";
}

/// Describes every metric to the installed recorder (units and help texts).
pub(crate) fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(names::RUNS_STARTED, "Runs started.");
    describe_counter!(names::RUNS_SUCCEEDED, "Runs that succeeded.");
    describe_counter!(names::RUNS_FAILED, "Runs that failed.");
    describe_counter!(names::RUNS_CANCELLED, "Runs that were cancelled.");
    describe_histogram!(
        names::STEP_DURATION,
        Unit::Seconds,
        "How long step attempts ran, by asset and status."
    );
    describe_counter!(names::STEP_RETRIES, "Retries scheduled, by asset.");
    describe_gauge!(names::QUEUE_DEPTH, "Runs waiting in the run queue.");
    describe_histogram!(
        names::QUEUE_WAIT,
        Unit::Seconds,
        "How long runs waited in the queue before they started."
    );
    describe_histogram!(
        names::STORE_WRITE,
        Unit::Seconds,
        "How long writing a batch of events to the run store took."
    );
}

pub(crate) fn run_started() {
    metrics::counter!(names::RUNS_STARTED).increment(1);
}

pub(crate) fn run_ended(status: RunStatus) {
    let name = match status {
        RunStatus::Succeeded => names::RUNS_SUCCEEDED,
        RunStatus::Failed => names::RUNS_FAILED,
        RunStatus::Cancelled => names::RUNS_CANCELLED,
        _ => return,
    };
    metrics::counter!(name).increment(1);
}

pub(crate) fn step_attempt(asset: &AssetKey, succeeded: bool, duration: Duration) {
    let status = if succeeded { "succeeded" } else { "failed" };
    metrics::histogram!(names::STEP_DURATION, "asset" => asset.shared(), "status" => status)
        .record(duration.as_secs_f64());
}

pub(crate) fn step_retry(asset: &AssetKey) {
    metrics::counter!(names::STEP_RETRIES, "asset" => asset.shared()).increment(1);
}

pub(crate) fn queue_depth(queued: usize) {
    metrics::gauge!(names::QUEUE_DEPTH).set(queued as f64);
}

pub(crate) fn queue_wait(waited: Duration) {
    metrics::histogram!(names::QUEUE_WAIT).record(waited.as_secs_f64());
}

pub(crate) fn store_write(took: Duration) {
    metrics::histogram!(names::STORE_WRITE).record(took.as_secs_f64());
}
