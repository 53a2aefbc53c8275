//! `HEAD /api/health` and `GET /api/health`: public status for anyone, the full document
//! for holders of the secret.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::auth::Caller;
use crate::health::{HealthReport, Verdict};
use crate::state::AppState;

fn code(status: Verdict) -> StatusCode {
    match status {
        Verdict::Down => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::OK,
    }
}

/// 200 when the database answers, 503 when not; no body.
#[utoipa::path(head, path = "/api/health", responses((status = 200, description = "the database answers"), (status = 503, description = "it does not")))]
pub(crate) async fn head(State(state): State<AppState>) -> StatusCode {
    code(state.health.report().await.status)
}

/// Anyone: `{"status": ...}` and nothing more. With the secret: status, checks, snapshot,
/// workers and unhandled kinds.
#[utoipa::path(get, path = "/api/health", security((), ("bearer" = [])),
    responses((status = 200, description = "`{\"status\": \"ok\"|\"degraded\"}` for anyone; the full document with the bearer", body = HealthReport),
        (status = 401, body = crate::error::ErrorBody), (status = 503, description = "the database is down")))]
pub(crate) async fn get(State(state): State<AppState>, caller: Caller) -> Response {
    let report = state.health.report().await;
    let status = code(report.status);
    match caller {
        Caller::Anonymous => (status, Json(json!({ "status": report.status }))).into_response(),
        Caller::Authorized => (status, Json(report.as_ref().clone())).into_response(),
    }
}
