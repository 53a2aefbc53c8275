//! `GET /metrics` (bearer): Prometheus text format, with the queue gauges refreshed first.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;

use crate::auth::Authorized;
use crate::error::ApiError;
use crate::state::AppState;

#[utoipa::path(get, path = "/metrics", security(("bearer" = [])),
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain"), (status = 401, body = crate::error::ErrorBody)))]
pub(crate) async fn get(
    State(state): State<AppState>,
    _: Authorized,
) -> Result<impl IntoResponse, ApiError> {
    // Refresh (or reuse, within the cache's second) the figures behind the gauges.
    state.health.report().await;
    let Some(handle) = &state.metrics else {
        return Err(ApiError::NotFound(
            "no metrics recorder is installed".into(),
        ));
    };
    Ok((
        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    ))
}
