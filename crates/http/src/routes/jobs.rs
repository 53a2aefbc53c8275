//! The job admin API (bearer): list, show, enqueue, replay, cancel, bulk replay.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use docket_queue::admin::{self, DeadLetterFilter, ListFilter};
use docket_queue::{Job, JobId, JobState, NewJob};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::auth::Authorized;
use crate::error::ApiError;
use crate::state::AppState;

/// A JSON body whose every rejection is an [`ApiError`]: 400 for malformed JSON or a wrong
/// content type, 422 for JSON that does not fit (unknown fields, wrong types), 413 when
/// over the body limit.
pub(crate) struct ApiJson<T>(pub(crate) T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(JsonRejection::JsonDataError(err)) => Err(ApiError::Invalid(err.body_text())),
            Err(JsonRejection::JsonSyntaxError(err)) => Err(ApiError::BadRequest(err.body_text())),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::BadRequest(
                "expected `Content-Type: application/json`".into(),
            )),
            Err(JsonRejection::BytesRejection(err))
                if err.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Err(ApiError::TooLarge(format!(
                    "the body is larger than {} bytes",
                    crate::BODY_LIMIT
                )))
            }
            Err(err) => Err(ApiError::BadRequest(err.body_text())),
        }
    }
}

fn parse_id(raw: &str) -> Result<JobId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::BadRequest(format!("{raw:?} is not a job id (a UUID)")))
}

fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query
        .map(|Query(q)| q)
        .map_err(|err| ApiError::BadRequest(err.body_text()))
}

/// `GET /api/jobs` query.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    state: Option<String>,
    queue: Option<String>,
    kind: Option<String>,
    limit: Option<u32>,
    /// The cursor: the previous page's `next`.
    before: Option<String>,
}

/// A page of jobs.
#[derive(Serialize)]
pub(crate) struct JobPage {
    jobs: Vec<Job>,
    /// The cursor for the next page; `null` on the last one.
    next: Option<JobId>,
}

pub(crate) async fn list(
    State(state): State<AppState>,
    _: Authorized,
    params: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<JobPage>, ApiError> {
    let params = query(params)?;
    let job_state = params
        .state
        .as_deref()
        .map(str::parse::<JobState>)
        .transpose()
        .map_err(ApiError::BadRequest)?;
    let before = params
        .before
        .as_deref()
        .map(|cursor| {
            cursor
                .parse()
                .map_err(|_| ApiError::BadRequest(format!("{cursor:?} is not a valid cursor")))
        })
        .transpose()?;
    let filter = ListFilter {
        state: job_state,
        queue: params.queue,
        kind: params.kind,
        before,
        limit: params.limit.unwrap_or(50),
    };
    let page = admin::list(&state.pool, &filter)
        .await
        .map_err(|err| match err {
            docket_queue::Error::InvalidJob(message) => ApiError::BadRequest(message),
            other => other.into(),
        })?;
    Ok(Json(JobPage {
        jobs: page.jobs,
        next: page.next,
    }))
}

pub(crate) async fn show(
    State(state): State<AppState>,
    _: Authorized,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    Ok(Json(admin::show(&state.pool, parse_id(&id)?).await?))
}

/// `POST /api/jobs` body: the options of the Rust API.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EnqueueRequest {
    kind: String,
    #[serde(default = "empty_object")]
    payload: Value,
    queue: Option<String>,
    priority: Option<i16>,
    run_at: Option<DateTime<Utc>>,
    max_attempts: Option<i32>,
    unique_key: Option<String>,
    expires_at: Option<DateTime<Utc>>,
}

fn empty_object() -> Value {
    json!({})
}

pub(crate) async fn enqueue(
    State(state): State<AppState>,
    _: Authorized,
    ApiJson(body): ApiJson<EnqueueRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let mut job = NewJob::new(body.kind, body.payload);
    if let Some(queue) = body.queue {
        job = job.queue(queue);
    }
    if let Some(priority) = body.priority {
        job = job.priority(priority);
    }
    if let Some(max_attempts) = body.max_attempts {
        job = job.max_attempts(max_attempts);
    }
    job.run_at = body.run_at;
    job.unique_key = body.unique_key;
    job.expires_at = body.expires_at;
    let id = docket_queue::enqueue(&state.pool, &job).await?;
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))))
}

pub(crate) async fn replay(
    State(state): State<AppState>,
    _: Authorized,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    Ok(Json(admin::replay(&state.pool, parse_id(&id)?).await?))
}

pub(crate) async fn cancel(
    State(state): State<AppState>,
    _: Authorized,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    Ok(Json(admin::cancel(&state.pool, parse_id(&id)?).await?))
}

/// `POST /api/jobs/replay-dead-letters` body: every field narrows the set.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReplayRequest {
    queue: Option<String>,
    kind: Option<String>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
}

pub(crate) async fn replay_dead_letters(
    State(state): State<AppState>,
    _: Authorized,
    ApiJson(body): ApiJson<ReplayRequest>,
) -> Result<Json<Value>, ApiError> {
    let filter = DeadLetterFilter {
        queue: body.queue,
        kind: body.kind,
        finished_after: body.since,
        finished_before: body.until,
    };
    let replayed = admin::replay_dead_letters(&state.pool, &filter).await?;
    Ok(Json(json!({ "replayed": replayed })))
}
