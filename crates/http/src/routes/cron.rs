//! `GET /api/cron`, `POST /api/cron/{name}/pause`, `POST /api/cron/{name}/resume`,
//! `DELETE /api/cron/{name}`: the cron schedules every scheduler registered, their pause
//! switch for every process, and the removal of a retired one.

use axum::extract::{Path, State};
use axum::Json;
use docket_queue::cron::{self, ScheduleRow};
use serde::Serialize;

use crate::auth::Authorized;
use crate::error::ApiError;
use crate::state::AppState;

/// A schedule's pause switch as it is now.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct CronControl {
    /// The schedule.
    name: String,
    /// Paused: no process enqueues its ticks.
    paused: bool,
}

#[utoipa::path(get, path = "/api/cron", security(("bearer" = [])),
    responses((status = 200, body = Vec<ScheduleRow>), (status = 401, body = crate::error::ErrorBody),
        (status = 503, body = crate::error::ErrorBody)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    _: Authorized,
) -> Result<Json<Vec<ScheduleRow>>, ApiError> {
    Ok(Json(cron::list(docket_queue::pooled(&state.pool)).await?))
}

async fn set_paused(
    state: &AppState,
    name: String,
    paused: bool,
) -> Result<Json<CronControl>, ApiError> {
    cron::set_paused(docket_queue::pooled(&state.pool), &name, paused)
        .await
        .map_err(|err| match err {
            docket_queue::Error::InvalidArgument(message) => ApiError::NotFound(message),
            other => other.into(),
        })?;
    Ok(Json(CronControl { name, paused }))
}

#[utoipa::path(post, path = "/api/cron/{name}/pause",
    params(("name" = String, Path, description = "The schedule")),
    security(("bearer" = [])),
    responses((status = 200, body = CronControl), (status = 401, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody)))]
pub(crate) async fn pause(
    State(state): State<AppState>,
    _: Authorized,
    Path(name): Path<String>,
) -> Result<Json<CronControl>, ApiError> {
    set_paused(&state, name, true).await
}

#[utoipa::path(post, path = "/api/cron/{name}/resume",
    params(("name" = String, Path, description = "The schedule")),
    security(("bearer" = [])),
    responses((status = 200, body = CronControl), (status = 401, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody)))]
pub(crate) async fn resume(
    State(state): State<AppState>,
    _: Authorized,
    Path(name): Path<String>,
) -> Result<Json<CronControl>, ApiError> {
    set_paused(&state, name, false).await
}

/// A removed schedule.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct CronRemoved {
    /// The schedule.
    name: String,
    /// Always true.
    removed: bool,
}

/// Removes a retired schedule (no live process declares it); 409 when one does.
#[utoipa::path(delete, path = "/api/cron/{name}",
    params(("name" = String, Path, description = "The schedule")),
    security(("bearer" = [])),
    responses((status = 200, body = CronRemoved), (status = 401, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody),
        (status = 503, body = crate::error::ErrorBody)))]
pub(crate) async fn remove(
    State(state): State<AppState>,
    _: Authorized,
    Path(name): Path<String>,
) -> Result<Json<CronRemoved>, ApiError> {
    cron::remove(docket_queue::pooled(&state.pool), &name)
        .await
        .map_err(|err| match err {
            docket_queue::Error::InvalidArgument(message) => ApiError::NotFound(message),
            other => other.into(),
        })?;
    tracing::info!(
        event = docket_queue::telemetry::event::CRON_REMOVED,
        schedule = %name,
        "schedule removed"
    );
    Ok(Json(CronRemoved {
        name,
        removed: true,
    }))
}
