//! Request logs and metrics, and the gauges that mirror the health document: every figure
//! of the snapshot is also a metric.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;

use crate::health::HealthReport;

/// HTTP requests, by method, route and status.
pub const HTTP_REQUESTS: &str = "docket_http_requests_total";
/// HTTP request duration in seconds, by method and route.
pub const HTTP_DURATION: &str = "docket_http_request_duration_seconds";
/// Requests refused for a wrong bearer token.
pub const AUTH_FAILURES: &str = "docket_http_auth_failures_total";
/// Jobs per queue and state (pending, retrying, processing, dead_letter).
pub const QUEUE_JOBS: &str = "docket_queue_jobs";
/// Seconds the oldest ready job of a queue has waited (0 when none is ready).
pub const QUEUE_OLDEST_READY_AGE: &str = "docket_queue_oldest_ready_age_seconds";
/// Workers with a fresh heartbeat.
pub const WORKERS_LIVE: &str = "docket_workers_live";
/// 1 when the health status is this one, else 0, by status.
pub const HEALTH_STATUS: &str = "docket_health_status";

/// Logs each request (method, route, status, latency) and counts it. The route is the
/// matched pattern (`/api/jobs/{id}`), never the raw path, so ids do not explode labels.
pub(crate) async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let response = next.run(request).await;
    let latency = started.elapsed();
    let status = response.status().as_u16();
    tracing::info!(
        event = "http.request", http.method = %method, http.route = %route, http.status = status,
        latency_ms = latency.as_secs_f64() * 1000.0, "request"
    );
    metrics::counter!(HTTP_REQUESTS, "method" => method.clone(), "route" => route.clone(), "status" => status.to_string())
        .increment(1);
    metrics::histogram!(HTTP_DURATION, "method" => method, "route" => route)
        .record(latency.as_secs_f64());
    response
}

/// Sets the gauges from a fresh health report; a worker whose heartbeat is younger than
/// `stale_after` counts as live.
pub(crate) fn record_health(report: &HealthReport) {
    for status in ["ok", "degraded", "down"] {
        let current = serde_json::to_value(report.status).ok();
        let value = if current.as_ref().and_then(|v| v.as_str()) == Some(status) {
            1.0
        } else {
            0.0
        };
        metrics::gauge!(HEALTH_STATUS, "status" => status).set(value);
    }
    let Some(snapshot) = &report.queue else {
        return;
    };
    for (queue, figures) in &snapshot.queues {
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
