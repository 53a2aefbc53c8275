//! Metric names and recorders: the only place names are spelled. Recorded through the
//! `metrics` facade; the binary installs the exporter (without one, recording is a no-op).

use std::time::Duration;

pub use docket_queue::telemetry::metric::*;

pub(crate) fn job_started(queue: &str, kind: &str) {
    metrics::counter!(JOBS_STARTED, "queue" => queue.to_owned(), "kind" => kind.to_owned())
        .increment(1);
}

/// A job reached `state` by its handler's outcome: counted, and its run time recorded.
pub(crate) fn job_finished(queue: &str, kind: &str, state: &'static str, duration: Duration) {
    job_reached(queue, kind, state);
    metrics::histogram!(JOB_DURATION, "queue" => queue.to_owned(), "kind" => kind.to_owned())
        .record(duration.as_secs_f64());
}

/// A job reached `state` without running (the expiry sweep, a rescue): counted with the
/// outcomes, so that every path to a final state shows.
pub(crate) fn job_reached(queue: &str, kind: &str, state: &'static str) {
    metrics::counter!(JOBS_FINISHED, "queue" => queue.to_owned(), "kind" => kind.to_owned(), "state" => state)
        .increment(1);
}

/// A queue's look-ahead changed to `ahead`.
pub(crate) fn prefetch_ahead(queue: &str, ahead: usize) {
    metrics::gauge!(PREFETCH_AHEAD, "queue" => queue.to_owned()).set(ahead as f64);
}

pub(crate) fn cron_tick(schedule: &str, outcome: &'static str, count: u64) {
    metrics::counter!(CRON_TICKS, "schedule" => schedule.to_owned(), "outcome" => outcome)
        .increment(count);
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
