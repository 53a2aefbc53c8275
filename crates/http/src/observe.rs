//! Request logs and metrics, and the gauges that mirror the health document: every figure
//! of the snapshot is also a metric.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

use docket_queue::health::HealthReport;
use docket_queue::telemetry::metric::BoundedLabel;

pub use docket_queue::telemetry::metric::{
    AUTH_FAILURES, BATCHES_OPEN, CRON_LAST_TICK_AGE, HEALTH_STATUS, HTTP_DURATION, HTTP_REQUESTS,
    QUEUE_JOBS, QUEUE_OLDEST_READY_AGE, WORKERS_LIVE,
};

/// The method as a label: one of the methods HTTP defines, else `other`. A client can send
/// any token as its method; it never becomes a label value or a log field of its own.
pub(crate) fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// The route of a request as a label: its pattern, or `unmatched`.
pub(crate) fn route_label(parts: &axum::http::request::Parts) -> String {
    parts
        .extensions
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned())
}

/// Logs each request (method, route, status, latency) and counts it. Every label takes a
/// fixed set of values: the method as [`method_label`] names it, the route as its pattern
/// (`/api/jobs/{id}`, never the raw path), `unmatched` for a path no route has.
pub(crate) async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let response = next.run(request).await;
    let latency = started.elapsed();
    let status = response.status().as_u16();
    tracing::info!(
        event = docket_queue::telemetry::event::HTTP_REQUEST, http.method = %method, http.route = %route, http.status = status,
        latency_ms = latency.as_secs_f64() * 1000.0, "request"
    );
    metrics::counter!(HTTP_REQUESTS, "method" => method, "route" => route.clone(), "status" => status.to_string())
        .increment(1);
    metrics::histogram!(HTTP_DURATION, "method" => method, "route" => route)
        .record(latency.as_secs_f64());
    response
}

/// Whether `queue` gets gauges of its own. Queue names come from callers: the first
/// [`docket_queue::telemetry::metric::LABEL_VALUES`] queues `seen` saw do, the rest
/// count only in the totals (one gauge for all of them would be overwritten by each).
fn gauged(seen: &BoundedLabel, queue: &str) -> bool {
    seen.value(queue) != "other" || queue == "other"
}

/// Sets the gauges from a fresh health report; a worker whose heartbeat is younger than
/// `stale_after` counts as live.
pub(crate) fn record_health(report: &HealthReport, queues: &BoundedLabel) {
    for status in ["ok", "degraded", "down"] {
        let value = if report.status.as_str() == status {
            1.0
        } else {
            0.0
        };
        metrics::gauge!(HEALTH_STATUS, "status" => status).set(value);
    }
    let now = chrono::Utc::now();
    for schedule in &report.cron {
        if let Some(last) = schedule.last_tick_at {
            let age = (now - last).num_milliseconds().max(0) as f64 / 1000.0;
            metrics::gauge!(CRON_LAST_TICK_AGE, "schedule" => schedule.def.name.clone()).set(age);
        }
    }
    if let Some(open) = report.batches_open {
        metrics::gauge!(BATCHES_OPEN).set(open as f64);
    }
    let Some(snapshot) = &report.queue else {
        return;
    };
    for (queue, figures) in &snapshot.queues {
        if !gauged(queues, queue) {
            continue;
        }
        for (state, count) in [
            ("pending", figures.pending),
            ("retrying", figures.retrying),
            ("processing", figures.processing),
            ("dead_letter", figures.dead_letter),
        ] {
            metrics::gauge!(QUEUE_JOBS, "queue" => queue.clone(), "state" => state)
                .set(count as f64);
        }
        metrics::gauge!(QUEUE_OLDEST_READY_AGE, "queue" => queue.clone())
            .set(figures.oldest_ready_age_seconds.unwrap_or(0.0));
    }
    let live = report.workers.iter().filter(|w| w.live).count();
    metrics::gauge!(WORKERS_LIVE).set(live as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_bounded_number_of_queues_get_gauges_of_their_own() {
        let seen = BoundedLabel::new();
        let limit = docket_queue::telemetry::metric::LABEL_VALUES;
        let gauged = (0..limit + 50)
            .filter(|n| gauged(&seen, &format!("queue-{n}")))
            .count();
        assert_eq!(gauged, limit);
        assert!(
            super::gauged(&seen, "queue-0"),
            "a queue seen before keeps its gauges"
        );
    }
}
