//! Job fixtures in any state, with consistent defaults (River's test factory).

use chrono::{DateTime, Utc};
use docket_queue::{Job, JobState};
use sqlx::PgExecutor;
use uuid::Uuid;

/// Options for [`insert_job`]; every field has a default consistent with the state.
#[derive(Clone, Debug, Default)]
pub struct JobOpts {
    /// Default `pending`.
    pub state: Option<JobState>,
    /// Default `default`.
    pub queue: Option<String>,
    /// Default `test.job`.
    pub kind: Option<String>,
    /// Default `{}`.
    pub payload: Option<serde_json::Value>,
    /// Default 0.
    pub priority: Option<i16>,
    /// Default now.
    pub run_at: Option<DateTime<Utc>>,
    /// Default 1 for processing and finished states, else 0.
    pub attempt: Option<i32>,
    /// Default 25.
    pub max_attempts: Option<i32>,
    /// Default none.
    pub unique_key: Option<String>,
    /// Default none.
    pub expires_at: Option<DateTime<Utc>>,
    /// For `processing`: the worker holding it. Default a random id (no such worker).
    pub locked_by: Option<Uuid>,
    /// For `processing`: the claim token. Default a fresh one.
    pub lease_token: Option<Uuid>,
    /// For finished states. Default now.
    pub finished_at: Option<DateTime<Utc>>,
    /// Default now.
    pub created_at: Option<DateTime<Utc>>,
}

/// Inserts one job as `opts` says and returns it.
///
/// # Panics
///
/// When the insert fails: a fixture that cannot be made is a broken test.
pub async fn insert_job(exec: impl PgExecutor<'_>, opts: JobOpts) -> Job {
    let state = opts.state.unwrap_or(JobState::Pending);
    let started = !matches!(state, JobState::Pending);
    let now = Utc::now();
    let attempt = opts.attempt.unwrap_or(if started { 1 } else { 0 });
    let locked_by =
        (state == JobState::Processing).then(|| opts.locked_by.unwrap_or_else(Uuid::new_v4));
    let lease_token =
        (state == JobState::Processing).then(|| opts.lease_token.unwrap_or_else(Uuid::now_v7));
    let finished_at = state.is_final().then(|| opts.finished_at.unwrap_or(now));
    let dead_letter_reason = (state == JobState::DeadLetter).then_some("permanent");
    sqlx::query_as(
        r#"
        insert into docket.jobs (queue, kind, payload, state, priority, run_at, attempt,
            max_attempts, unique_key, expires_at, locked_by, attempted_at, finished_at,
            dead_letter_reason, created_at, lease_token)
        values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
        returning *
        "#,
    )
    .bind(opts.queue.as_deref().unwrap_or("default"))
    .bind(opts.kind.as_deref().unwrap_or("test.job"))
    .bind(opts.payload.unwrap_or_else(|| serde_json::json!({})))
    .bind(state)
    .bind(opts.priority.unwrap_or(0))
    .bind(opts.run_at.unwrap_or(now))
    .bind(attempt)
    .bind(opts.max_attempts.unwrap_or(25))
    .bind(opts.unique_key)
    .bind(opts.expires_at)
    .bind(locked_by)
    .bind(started.then_some(now))
    .bind(finished_at)
    .bind(dead_letter_reason)
    .bind(opts.created_at.unwrap_or(now))
    .bind(lease_token)
    .fetch_one(exec)
    .await
    .unwrap_or_else(|err| panic!("cannot insert fixture job: {err}"))
}

/// The fields DESIGN.md says a job's JSON has at least (HTTP API and `--json`).
pub const JOB_JSON_FIELDS: [&str; 16] = [
    "batch_id",
    "id",
    "queue",
    "kind",
    "payload",
    "state",
    "priority",
    "attempt",
    "max_attempts",
    "run_at",
    "unique_key",
    "last_error",
    "errors",
    "created_at",
    "attempted_at",
    "finished_at",
];
