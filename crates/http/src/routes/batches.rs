//! `POST /api/batches`, `GET /api/batches/{id}`: batches of jobs with an exactly-once
//! callback.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use docket_queue::batch::{self, BatchStatus, Callback, NewBatch};
use docket_queue::NewJob;
use serde::{Deserialize, Serialize};

use crate::auth::Authorized;
use crate::error::ApiError;
use crate::routes::jobs::{ApiJson, EnqueueRequest};
use crate::state::AppState;

/// `POST /api/batches` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BatchRequest {
    /// The batch's jobs, as `POST /api/jobs` takes them: at least one. A job whose
    /// `unique_key` a live job already holds (or an earlier job of the batch) is not folded
    /// into it as `POST /api/jobs` would: the batch is refused with 409, since its callback
    /// must wait for every job it names.
    #[schema(min_items = 1)]
    jobs: Vec<EnqueueRequest>,
    /// The job enqueued once, when every job of the batch is final; its payload gains
    /// `batch_id`.
    callback: Option<CallbackRequest>,
}

/// A batch's callback.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CallbackRequest {
    /// Its kind (1 to 127 characters, not all blank, no NUL).
    #[schema(
        min_length = 1,
        max_length = 127,
        pattern = r"^[^\x00]*[^\s\x00][^\x00]*$"
    )]
    kind: String,
    /// Its payload, an object; default `{}`.
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    payload: serde_json::Map<String, serde_json::Value>,
    /// Its queue; default `default` (1 to 127 characters, not all blank, no NUL).
    #[schema(
        min_length = 1,
        max_length = 127,
        pattern = r"^[^\x00]*[^\s\x00][^\x00]*$"
    )]
    queue: Option<String>,
}

fn empty_object() -> serde_json::Map<String, serde_json::Value> {
    serde_json::Map::new()
}

/// `POST /api/batches` answer.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Created {
    /// The batch's id.
    id: uuid::Uuid,
    /// Its jobs.
    total: usize,
}

#[utoipa::path(post, path = "/api/batches", request_body = BatchRequest, security(("bearer" = [])),
    params(
        ("traceparent" = Option<String>, Header, description = "W3C trace context: every job of the batch is enqueued in this trace, and the callback's attempts link to it. A malformed value is ignored."),
        ("tracestate" = Option<String>, Header, description = "W3C trace state that travels with `traceparent`."),
    ),
    responses((status = 201, body = Created), (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody), (status = 413, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody)))]
pub(crate) async fn create(
    State(state): State<AppState>,
    _: Authorized,
    headers: axum::http::HeaderMap,
    ApiJson(body): ApiJson<BatchRequest>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    let total = body.jobs.len();
    let trace_parent = super::jobs::trace_parent(&headers);
    let batch = NewBatch {
        jobs: body
            .jobs
            .into_iter()
            .map(|job| NewJob {
                trace_parent: trace_parent.clone(),
                ..job.into_job()
            })
            .collect(),
        callback: body.callback.map(|c| Callback {
            kind: c.kind,
            payload: serde_json::Value::Object(c.payload),
            queue: c
                .queue
                .unwrap_or_else(|| docket_queue::enqueue::DEFAULT_QUEUE.to_owned()),
        }),
        parent: None,
    };
    let id = batch::create(&state.pool, &batch).await?;
    Ok((StatusCode::CREATED, Json(Created { id, total })))
}

#[utoipa::path(get, path = "/api/batches/{id}", params(("id" = uuid::Uuid, Path, description = "The batch's id")), security(("bearer" = [])),
    responses((status = 200, body = BatchStatus), (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody)))]
pub(crate) async fn show(
    State(state): State<AppState>,
    _: Authorized,
    Path(id): Path<String>,
) -> Result<Json<BatchStatus>, ApiError> {
    let id: uuid::Uuid = id
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("{id:?} is not a batch id (a UUID)")))?;
    match batch::show(docket_queue::pooled(&state.pool), id).await {
        Ok(status) => Ok(Json(status)),
        Err(docket_queue::Error::InvalidArgument(message)) => Err(ApiError::NotFound(message)),
        Err(err) => Err(err.into()),
    }
}
