//! # docket-http
//!
//! Docket's HTTP layer on axum: a public health probe, the bearer-guarded health document
//! with the queue snapshot, the job admin API and Prometheus metrics.
//!
//! | route | who |
//! |---|---|
//! | `HEAD /api/health` | anyone: 200 when the database answers, 503 when not |
//! | `GET /api/health` | anyone: `{"status": ...}`; with the bearer: the full document |
//! | `GET /metrics` | bearer |
//! | `GET /api/jobs`, `GET /api/jobs/{id}` | bearer |
//! | `POST /api/jobs`, `POST /api/jobs/{id}/replay|cancel|discard`, `POST /api/jobs/replay-dead-letters` | bearer |
//! | `GET /api/cron`, `POST /api/cron/{name}/pause|resume`, `DELETE /api/cron/{name}`, `POST /api/queues/{name}/pause|resume` | bearer |
//! | `POST /api/mail/bounces` | bearer: one message sent to a bounce address, raw |
//! | `GET /api/mail/deliveries`, `POST /api/campaigns`, `GET /api/campaigns/{id}`, `POST /api/campaigns/{id}/pause|resume|cancel` | bearer |
//! | `GET`, `POST /unsubscribe/{token}` | anyone holding a campaign email's signed link: the confirmation page; one-click unsubscribe |
//! | `GET /ops` and its forms | a session signed in at `/ops/login`, or the bearer |
//! | `GET /api/openapi.json` | anyone: the generated document; with the bearer, also this server's template and schedule names |
//!
//! # Layout
//!
//! - [`router`]: the `Router`, testable without a socket; [`serve`] runs it within
//!   [`Limits`] (`server`: header and idle timeouts, a connection cap).
//! - [`state`]: `AppState`, what every handler shares.
//! - [`auth`]: the bearer extractors (constant-time compare) and `Secret`.
//! - [`health`]: checks, thresholds, the cached evaluation, transition logs.
//! - `routes`: one module per route family.
//! - [`error`]: `ApiError` → JSON with a stable code.
//! - [`observe`]: request logs, HTTP metrics, snapshot gauges.
//! - [`ops`]: the operations page, its sign-in and its forms.
//! - [`host`]: the host's checks (disk, services), shared with `docket check`.
//! - [`backup`]: the backup directory's layout, and the backup and restore checks.
//! - `mount`: where the router is mounted (at the root, or nested under a prefix in an
//!   application's router) and the one way to make a URL under it.
//!
//! It does not run jobs (that is `docket-worker`): worker liveness comes from the
//! heartbeat table.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod auth;
pub mod backup;
pub mod error;
pub mod health;
pub mod host;
mod mount;
pub mod observe;
pub mod ops;
mod params;
pub mod relay_queue;
mod routes;
mod server;
pub mod state;

use std::future::Future;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use axum::Router;
use tokio::net::TcpListener;

pub use auth::Secret;
pub use health::HealthConfig;
pub use server::Limits;
pub use state::AppState;

/// `docs/embedding.md`, whose Rust blocks compile as this crate's doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/embedding.md")]
pub struct EmbeddingGuide;

/// The largest request body accepted, in bytes.
pub const BODY_LIMIT: usize = 64 * 1024;

/// The whole API. Serve it at the root (as `docket serve` does), merge it into an
/// application's router, or nest it under a fixed prefix there (`Router::nest("/docket",
/// …)`): every URL it hands out (the operations page's links, forms, redirects, stylesheet
/// and cookie paths, the OpenAPI document's server) follows where it is mounted.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/api/health",
            get(routes::health::get).head(routes::health::head),
        )
        .route("/metrics", get(routes::metrics::get))
        .route("/api/openapi.json", get(routes::openapi::get))
        .route(
            "/api/jobs",
            get(routes::jobs::list).post(routes::jobs::enqueue),
        )
        .route(
            "/api/jobs/replay-dead-letters",
            post(routes::jobs::replay_dead_letters),
        )
        .route("/api/jobs/{id}", get(routes::jobs::show))
        .route("/api/batches", post(routes::batches::create))
        .route("/api/batches/{id}", get(routes::batches::show))
        .route("/api/queues/{name}/pause", post(routes::queues::pause))
        .route("/api/queues/{name}/resume", post(routes::queues::resume))
        .route("/api/mail/deliveries", get(routes::mail::deliveries))
        .route(
            "/api/mail/bounces",
            post(routes::mail::bounce)
                .layer(DefaultBodyLimit::max(routes::mail::BOUNCE_BODY_LIMIT)),
        )
        .route("/api/campaigns", post(routes::mail::create_campaign))
        .route("/api/campaigns/{id}", get(routes::mail::show_campaign))
        .route(
            "/api/campaigns/{id}/pause",
            post(routes::mail::pause_campaign),
        )
        .route(
            "/api/campaigns/{id}/resume",
            post(routes::mail::resume_campaign),
        )
        .route(
            "/api/campaigns/{id}/cancel",
            post(routes::mail::cancel_campaign),
        )
        .route("/api/jobs/{id}/replay", post(routes::jobs::replay))
        .route("/api/jobs/{id}/cancel", post(routes::jobs::cancel))
        .route("/api/jobs/{id}/discard", post(routes::jobs::discard))
        .route(
            docket_mail::unsubscribe::ROUTE,
            get(routes::unsubscribe::get).post(routes::unsubscribe::post),
        )
        .route("/api/cron", get(routes::cron::list))
        .route("/api/cron/{name}/pause", post(routes::cron::pause))
        .route("/api/cron/{name}/resume", post(routes::cron::resume))
        .route("/api/cron/{name}", delete(routes::cron::remove))
        .merge(ops::router())
        .fallback(|| async { error::ApiError::NotFound("no such route".into()) })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .route_layer(axum::middleware::from_fn(observe::track))
        .with_state(state)
}

/// Serves the API on `listener` within `limits` (header and idle timeouts, a connection
/// cap) until `shutdown` completes, then stops accepting and finishes the requests in
/// flight.
///
/// # Errors
///
/// When the listener fails.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if state.cron_secret.is_none() {
        tracing::warn!(
            event = docket_queue::telemetry::event::HEALTH_NO_SECRET,
            "CRON_SECRET is not set: the snapshot, metrics and job API answer 401 to everyone"
        );
    }
    server::run(listener, router(state), limits, shutdown).await
}
