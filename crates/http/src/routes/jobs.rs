//! The job admin API (bearer): list, show, enqueue, replay, cancel, discard, bulk replay.

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

fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query
        .map(|Query(q)| q)
        .map_err(|err| ApiError::BadRequest(err.body_text()))
}

/// `GET /api/jobs` query.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Only jobs in this state: pending, retrying, processing, completed, dead_letter, cancelled.
    #[param(value_type = Option<JobState>)]
    state: Option<String>,
    /// Only jobs on this queue (1 to 127 characters, not all blank, no NUL).
    #[param(
        min_length = 1,
        max_length = 127,
        pattern = r"^[^\x00]*[^\s\x00][^\x00]*$"
    )]
    queue: Option<String>,
    /// Only jobs of this kind (1 to 127 characters, not all blank, no NUL).
    #[param(
        min_length = 1,
        max_length = 127,
        pattern = r"^[^\x00]*[^\s\x00][^\x00]*$"
    )]
    kind: Option<String>,
    /// Page size, 1 to 1000; default 50.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The cursor: the previous page's `next`.
    #[param(value_type = Option<uuid::Uuid>)]
    before: Option<String>,
}

/// A page of jobs, newest first.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct JobPage {
    jobs: Vec<Job>,
    /// The cursor for the next page; `null` on the last one.
    next: Option<JobId>,
}

#[utoipa::path(get, path = "/api/jobs", params(ListQuery), security(("bearer" = [])),
    responses((status = 200, body = JobPage), (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    _: Authorized,
    params: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<JobPage>, ApiError> {
    let params = query(params)?;
    for (name, value) in [("queue", &params.queue), ("kind", &params.kind)] {
        if let Some(value) = value {
            docket_queue::job::Name::check(name, value).map_err(ApiError::BadRequest)?;
        }
    }
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
    let page = admin::list(docket_queue::pooled(&state.pool), &filter).await?;
    Ok(Json(JobPage {
        jobs: page.jobs,
        next: page.next,
    }))
}

#[utoipa::path(get, path = "/api/jobs/{id}", params(("id" = uuid::Uuid, Path, description = "The job's id")), security(("bearer" = [])),
    responses((status = 200, body = Job), (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody)))]
pub(crate) async fn show(
    State(state): State<AppState>,
    _: Authorized,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    Ok(Json(
        admin::show(
            docket_queue::pooled(&state.pool),
            crate::params::parse_id(&id)?,
        )
        .await?,
    ))
}

/// `POST /api/jobs` body: the options of the Rust API.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EnqueueRequest {
    /// The kind, which names the handler (1 to 127 characters, not all blank, no NUL).
    #[schema(
        min_length = 1,
        max_length = 127,
        pattern = r"^[^\x00]*[^\s\x00][^\x00]*$"
    )]
    kind: String,
    /// The handler's input; default `{}`. No string in it may hold a NUL character
    /// (`\u0000`): PostgreSQL's `jsonb` cannot store one (422).
    #[serde(default = "empty_object")]
    payload: Value,
    /// Default `default` (1 to 127 characters, not all blank, no NUL).
    #[schema(
        min_length = 1,
        max_length = 127,
        pattern = r"^[^\x00]*[^\s\x00][^\x00]*$"
    )]
    queue: Option<String>,
    /// Lower runs first; default 0.
    #[schema(minimum = -32768, maximum = 32767)]
    #[serde(default, deserialize_with = "integral")]
    priority: Option<i16>,
    /// Not before this time; default now. Years 1 to 9999 UTC.
    run_at: Option<DateTime<Utc>>,
    /// Default 25; at least 1.
    #[schema(minimum = 1, maximum = 2147483647)]
    #[serde(default, deserialize_with = "integral")]
    max_attempts: Option<i32>,
    /// At most one live job per key: a duplicate returns the live job's id. 1 to 256
    /// characters, no NUL.
    #[schema(min_length = 1, max_length = 256, pattern = r"^[^\x00]+$")]
    unique_key: Option<String>,
    /// Dead-lettered as `expired` rather than started after this time. Years 1 to 9999 UTC.
    expires_at: Option<DateTime<Utc>>,
    /// Its fair-share group in the queue (a tenant, a customer): the queue's slots are
    /// shared between the groups with ready work. 1 to 256 characters, no NUL.
    #[schema(min_length = 1, max_length = 256, pattern = r"^[^\x00]+$")]
    group_key: Option<String>,
}

impl EnqueueRequest {
    /// The job this request asks for.
    pub(crate) fn into_job(self) -> NewJob {
        let mut job = NewJob::new(self.kind, self.payload);
        if let Some(queue) = self.queue {
            job = job.queue(queue);
        }
        if let Some(priority) = self.priority {
            job = job.priority(priority);
        }
        if let Some(max_attempts) = self.max_attempts {
            job = job.max_attempts(max_attempts);
        }
        job.run_at = self.run_at;
        job.unique_key = self.unique_key;
        job.expires_at = self.expires_at;
        job.group_key = self.group_key;
        job
    }
}

/// `POST /api/jobs` answer.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Enqueued {
    /// The job's id (the live job's, for a duplicate unique key).
    id: JobId,
    /// `true` when a live job already held the unique key and nothing was inserted (the
    /// answer is then 200, not 201).
    existing: bool,
}

/// The W3C trace context of a request (`traceparent`, `tracestate`); `None` when absent or
/// malformed (ignored, as the W3C recommendation asks).
pub(crate) fn trace_parent(
    headers: &axum::http::HeaderMap,
) -> Option<docket_queue::trace::TraceContext> {
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    docket_queue::trace::TraceContext::parse(header("traceparent")?, header("tracestate"))
}

fn empty_object() -> Value {
    json!({})
}

/// An optional integer that may be written as a whole float (`3.0`): JSON Schema counts
/// that as an integer, so a client generated from the document may send it.
pub(crate) fn integral<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i64>,
{
    use serde::de::Error;
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    let whole = match (number.as_i64(), number.as_f64()) {
        (Some(n), _) => n,
        (None, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => f as i64,
        _ => return Err(D::Error::custom(format!("{number} is not a whole number"))),
    };
    T::try_from(whole)
        .map(Some)
        .map_err(|_| D::Error::custom(format!("{whole} is out of range")))
}

#[utoipa::path(post, path = "/api/jobs", request_body = EnqueueRequest, security(("bearer" = [])),
    params(
        ("traceparent" = Option<String>, Header, description = "W3C trace context (`00-<trace id>-<span id>-<flags>`): the job's enqueue continues this trace and its first attempt is the enqueue's child. A malformed value is ignored."),
        ("tracestate" = Option<String>, Header, description = "W3C trace state that travels with `traceparent`."),
    ),
    responses((status = 201, description = "A new job", body = Enqueued), (status = 200, description = "A live job already holds the unique key: its id, nothing inserted", body = Enqueued), (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody), (status = 413, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody)))]
pub(crate) async fn enqueue(
    State(state): State<AppState>,
    _: Authorized,
    headers: axum::http::HeaderMap,
    ApiJson(body): ApiJson<EnqueueRequest>,
) -> Result<(StatusCode, Json<Enqueued>), ApiError> {
    let mut job = body.into_job();
    job.trace_parent = trace_parent(&headers);
    let enqueued = docket_queue::enqueue_or_find(docket_queue::pooled(&state.pool), &job).await?;
    let status = if enqueued.existing {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        Json(Enqueued {
            id: enqueued.id,
            existing: enqueued.existing,
        }),
    ))
}

#[utoipa::path(post, path = "/api/jobs/{id}/replay", params(("id" = uuid::Uuid, Path, description = "The job's id")), security(("bearer" = [])),
    responses((status = 200, body = Job), (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody)))]
pub(crate) async fn replay(
    State(state): State<AppState>,
    _: Authorized,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    Ok(Json(
        admin::replay(
            docket_queue::pooled(&state.pool),
            crate::params::parse_id(&id)?,
        )
        .await?,
    ))
}

#[utoipa::path(post, path = "/api/jobs/{id}/cancel", params(("id" = uuid::Uuid, Path, description = "The job's id")), security(("bearer" = [])),
    responses((status = 200, body = Job), (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody)))]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    _: Authorized,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    Ok(Json(
        admin::cancel(
            docket_queue::pooled(&state.pool),
            crate::params::parse_id(&id)?,
        )
        .await?,
    ))
}

#[utoipa::path(post, path = "/api/jobs/{id}/discard", params(("id" = uuid::Uuid, Path, description = "The job's id")), security(("bearer" = [])),
    responses((status = 200, body = Job), (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody)))]
pub(crate) async fn discard(
    State(state): State<AppState>,
    _: Authorized,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    Ok(Json(
        admin::discard(
            docket_queue::pooled(&state.pool),
            crate::params::parse_id(&id)?,
        )
        .await?,
    ))
}

/// `POST /api/jobs/replay-dead-letters` body: every field narrows the set.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReplayRequest {
    /// Only this queue (1 to 127 characters, not all blank, no NUL).
    #[schema(
        min_length = 1,
        max_length = 127,
        pattern = r"^[^\x00]*[^\s\x00][^\x00]*$"
    )]
    queue: Option<String>,
    /// Only this kind (1 to 127 characters, not all blank, no NUL).
    #[schema(
        min_length = 1,
        max_length = 127,
        pattern = r"^[^\x00]*[^\s\x00][^\x00]*$"
    )]
    kind: Option<String>,
    /// Only those dead-lettered at or after this time (years 1 to 9999 UTC).
    since: Option<DateTime<Utc>>,
    /// Only those dead-lettered before this time (years 1 to 9999 UTC).
    until: Option<DateTime<Utc>>,
}

/// `POST /api/jobs/replay-dead-letters` answer.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Replayed {
    /// How many dead letters went back to pending.
    replayed: u64,
}

#[utoipa::path(post, path = "/api/jobs/replay-dead-letters", request_body = ReplayRequest, security(("bearer" = [])),
    responses((status = 200, body = Replayed), (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody), (status = 413, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody)))]
pub(crate) async fn replay_dead_letters(
    State(state): State<AppState>,
    _: Authorized,
    ApiJson(body): ApiJson<ReplayRequest>,
) -> Result<Json<Replayed>, ApiError> {
    let filter = DeadLetterFilter {
        queue: body.queue,
        kind: body.kind,
        finished_after: body.since,
        finished_before: body.until,
    };
    let replayed = admin::replay_dead_letters(docket_queue::pooled(&state.pool), &filter).await?;
    Ok(Json(Replayed { replayed }))
}
