//! `POST /api/queues/{name}/pause`, `POST /api/queues/{name}/resume`: queue controls, for
//! every process.

use axum::extract::{Path, State};
use axum::Json;
use docket_queue::queues::{self, QueueControl};

use crate::auth::Authorized;
use crate::error::ApiError;
use crate::state::AppState;

#[utoipa::path(post, path = "/api/queues/{name}/pause",
    params(("name" = String, Path, description = "The queue (1 to 127 characters, not all blank, no NUL)",
        min_length = 1, max_length = 127, pattern = r"^[^\x00]*[^\s\x00][^\x00]*$")),
    security(("bearer" = [])),
    responses((status = 200, body = QueueControl), (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
        (status = 503, body = crate::error::ErrorBody)))]
pub(crate) async fn pause(
    State(state): State<AppState>,
    _: Authorized,
    Path(name): Path<String>,
) -> Result<Json<QueueControl>, ApiError> {
    Ok(Json(
        queues::pause(docket_queue::pooled(&state.pool), &name).await?,
    ))
}

#[utoipa::path(post, path = "/api/queues/{name}/resume",
    params(("name" = String, Path, description = "The queue (1 to 127 characters, not all blank, no NUL)",
        min_length = 1, max_length = 127, pattern = r"^[^\x00]*[^\s\x00][^\x00]*$")),
    security(("bearer" = [])),
    responses((status = 200, body = QueueControl), (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
        (status = 503, body = crate::error::ErrorBody)))]
pub(crate) async fn resume(
    State(state): State<AppState>,
    _: Authorized,
    Path(name): Path<String>,
) -> Result<Json<QueueControl>, ApiError> {
    Ok(Json(
        queues::resume(docket_queue::pooled(&state.pool), &name).await?,
    ))
}
