//! Metric names and recorders: the only place names are spelled. Recorded through the
//! `metrics` facade; the binary installs the exporter (without one, recording is a no-op).

use std::time::Duration;

/// Jobs enqueued, by queue and kind (recorded by `docket-queue`).
pub const JOBS_ENQUEUED: &str = docket_queue::enqueue::METRIC_ENQUEUED;
/// Jobs whose outcome was written, by queue, kind and resulting state.
pub const JOBS_FINISHED: &str = "docket_jobs_outcomes_total";
/// Handler run time in seconds, by queue and kind.
pub const JOB_DURATION: &str = "docket_job_duration_seconds";
/// Jobs started, by queue and kind.
pub const JOBS_STARTED: &str = "docket_jobs_started_total";
/// Outcomes dropped because the worker no longer held the job.
pub const JOBS_FENCED: &str = "docket_jobs_fenced_total";
/// Jobs freed by the rescuer, by queue and kind.
pub const JOBS_RESCUED: &str = "docket_jobs_rescued_total";
/// Jobs deleted by the pruner, by state.
pub const JOBS_PRUNED: &str = "docket_jobs_pruned_total";

pub(crate) fn job_started(queue: &str, kind: &str) {
    metrics::counter!(JOBS_STARTED, "queue" => queue.to_owned(), "kind" => kind.to_owned())
        .increment(1);
}

pub(crate) fn job_finished(queue: &str, kind: &str, state: &'static str, duration: Duration) {
    metrics::counter!(JOBS_FINISHED, "queue" => queue.to_owned(), "kind" => kind.to_owned(), "state" => state)
        .increment(1);
    metrics::histogram!(JOB_DURATION, "queue" => queue.to_owned(), "kind" => kind.to_owned())
        .record(duration.as_secs_f64());
}

pub(crate) fn jobs_fenced(count: usize) {
    metrics::counter!(JOBS_FENCED).increment(count as u64);
}

pub(crate) fn job_rescued(queue: &str, kind: &str) {
    metrics::counter!(JOBS_RESCUED, "queue" => queue.to_owned(), "kind" => kind.to_owned())
        .increment(1);
}

pub(crate) fn jobs_pruned(state: &'static str, count: u64) {
    metrics::counter!(JOBS_PRUNED, "state" => state).increment(count);
}
