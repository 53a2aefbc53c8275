//! `ApiError`: every error the API answers with, as JSON `{"error": code, "message": ...}`
//! with a stable code. Client errors say what is wrong; server errors are logged once with
//! their cause chain and say nothing internal.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use docket_queue::ErrorChain;
use serde_json::json;

/// The body of every error answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A stable code: bad_request, unauthorized, not_found, conflict, too_large,
    /// too_many_attempts, invalid, unavailable, internal.
    pub error: String,
    /// What is wrong, for client errors.
    pub message: Option<String>,
}

/// An error answer.
#[derive(Debug)]
pub enum ApiError {
    /// 400: the request is malformed (bad JSON, a bad id, a bad cursor, a bad query value).
    BadRequest(String),
    /// 401: no valid bearer token.
    Unauthorized,
    /// 404: no such job.
    NotFound(String),
    /// 409: the job's state does not allow the action.
    Conflict(String),
    /// 429: too many wrong secrets are waiting their turn; nothing was compared. The answer
    /// says to retry after a second.
    TooManyAttempts,
    /// 413: the body is larger than the limit.
    TooLarge(String),
    /// 422: well-formed, but breaks a rule (unknown field, empty kind, ...).
    Invalid(String),
    /// 503: the database does not answer.
    Unavailable,
    /// 500: anything else; logged, never described to the client.
    Internal(docket_queue::Error),
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, Option<&str>) {
        match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, "bad_request", Some(m)),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized", None),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", Some(m)),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, "conflict", Some(m)),
            ApiError::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large", Some(m)),
            ApiError::TooManyAttempts => (
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_attempts",
                Some("too many wrong secrets are waiting; try again shortly"),
            ),
            ApiError::Invalid(m) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid", Some(m)),
            ApiError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", None),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", None),
        }
    }
}

impl ApiError {
    /// The status and what a person is told, for answers that are not JSON.
    pub(crate) fn status_and_message(&self) -> (StatusCode, String) {
        let (status, code, message) = self.parts();
        let message = match (self, message) {
            (ApiError::Internal(_), _) => "something went wrong; the server's log says what".into(),
            (ApiError::Unavailable, _) => "the database does not answer; try again shortly".into(),
            (_, Some(message)) => message.to_owned(),
            (_, None) => code.to_owned(),
        };
        if let ApiError::Internal(err) = self {
            tracing::error!(event = docket_queue::telemetry::event::HTTP_ERROR, error.message = %err, error.cause_chain = %ErrorChain(err), "request failed");
        }
        (status, message)
    }
}

impl From<docket_queue::Error> for ApiError {
    fn from(err: docket_queue::Error) -> Self {
        use docket_queue::Error;
        match err {
            Error::JobNotFound(_) => ApiError::NotFound(err.to_string()),
            Error::InvalidState { .. }
            | Error::UniqueKeyTaken { .. }
            | Error::BatchKeyTaken { .. }
            | Error::Expired { .. }
            | Error::ScheduleDeclared { .. } => ApiError::Conflict(err.to_string()),
            Error::InvalidJob(_) | Error::Payload { .. } => ApiError::Invalid(err.to_string()),
            Error::InvalidArgument(message) => ApiError::BadRequest(message),
            Error::TimedOut { .. } => ApiError::Unavailable,
            Error::Database(ref db) if is_unavailable(db) => ApiError::Unavailable,
            Error::Database(ref db) if is_bad_value(db) => ApiError::BadRequest(format!(
                "a value the database cannot hold: {}",
                db.as_database_error().map_or("", |e| e.message())
            )),
            other => ApiError::Internal(other),
        }
    }
}

impl From<docket_mail::MailError> for ApiError {
    fn from(err: docket_mail::MailError) -> Self {
        use docket_mail::MailError;
        match err {
            MailError::Invalid(message) => ApiError::Invalid(message),
            MailError::CampaignNotFound(_) => ApiError::NotFound(err.to_string()),
            // The request is well formed; the catalog's template, as the server has it now,
            // reads variables it does not give (like an unknown template's 404).
            MailError::CampaignState(message) | MailError::TemplateVariables(message) => {
                ApiError::Conflict(message)
            }
            MailError::Template(_) => ApiError::Invalid(err.to_string()),
            MailError::Queue(err) => err.into(),
            MailError::Database(err) => docket_queue::Error::Database(err).into(),
        }
    }
}

fn is_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => true,
        // 57014: the statement timeout cut it short (the server is busy, or the filter is
        // served by no index); the request may be tried again, or narrowed.
        sqlx::Error::Database(db) => db.code().as_deref() == Some("57014"),
        _ => false,
    }
}

/// A value only the caller can have sent, refused while PostgreSQL read it: a NUL in text
/// (22021) or a time outside `timestamptz` (22008). Every input is checked before it reaches
/// SQL, naming its field; this keeps one that a check misses a 4xx rather than a 500.
fn is_bad_value(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .and_then(|db| db.code())
        .is_some_and(|code| code == "22021" || code == "22008")
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = self.parts();
        if let ApiError::Internal(err) = &self {
            tracing::error!(event = docket_queue::telemetry::event::HTTP_ERROR, error.message = %err, error.cause_chain = %ErrorChain(err), "request failed");
        }
        let body = match message {
            Some(message) => json!({ "error": code, "message": message }),
            None => json!({ "error": code }),
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::TOO_MANY_REQUESTS {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}
