//! The job model: ids, states, and a job row as callers see it.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A job's id: a UUID v7, so ids sort by creation time.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, sqlx::Type,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String, format = Uuid))]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct JobId(pub Uuid);

impl JobId {
    /// A fresh id (UUID v7), for a job the caller enqueues with [`crate::NewJob::id`].
    pub fn new() -> JobId {
        JobId(Uuid::now_v7())
    }
}

impl Default for JobId {
    fn default() -> Self {
        JobId::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for JobId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(JobId)
    }
}

/// Where a job is in its life. See `docs/state-machine.md`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, sqlx::Type,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "docket.job_state", rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for its first attempt; ready when `run_at <= now()`.
    Pending,
    /// Failed at least once; ready again when `run_at <= now()`.
    Retrying,
    /// Claimed by a worker that holds its lease.
    Processing,
    /// Its handler returned success.
    Completed,
    /// Attempts exhausted, a permanent error, a malformed payload, or expired.
    DeadLetter,
    /// Cancelled by an operator or by application code.
    Cancelled,
}

impl JobState {
    /// Every state, in life order.
    pub const ALL: [JobState; 6] = [
        JobState::Pending,
        JobState::Retrying,
        JobState::Processing,
        JobState::Completed,
        JobState::DeadLetter,
        JobState::Cancelled,
    ];

    /// The state's name as DESIGN.md and the database spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Retrying => "retrying",
            JobState::Processing => "processing",
            JobState::Completed => "completed",
            JobState::DeadLetter => "dead_letter",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Whether the job is finished: it will not run again unless replayed.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::DeadLetter | JobState::Cancelled
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = JobState::ALL.iter().map(|s| s.as_str()).collect();
                format!(
                    "unknown job state {s:?}; expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// One failed attempt in a job's error history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AttemptError {
    /// The attempt that failed (1 for the first).
    pub attempt: i32,
    /// When the failure was recorded.
    pub at: DateTime<Utc>,
    /// What went wrong.
    pub error: String,
}

/// A job as stored, with every field of DESIGN.md's job JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Job {
    /// The job's id (UUID v7).
    pub id: JobId,
    /// The queue it runs on.
    pub queue: String,
    /// The kind, which names the handler that runs it.
    pub kind: String,
    /// The handler's input.
    pub payload: serde_json::Value,
    /// Where the job is in its life.
    pub state: JobState,
    /// Lower runs first.
    pub priority: i16,
    /// When the job is next ready to run.
    pub run_at: DateTime<Utc>,
    /// Attempts started so far.
    pub attempt: i32,
    /// Attempts allowed before the job is dead-lettered.
    pub max_attempts: i32,
    /// At most one live job has a given key.
    pub unique_key: Option<String>,
    /// The job is dead-lettered as `expired` rather than started after this.
    pub expires_at: Option<DateTime<Utc>>,
    /// The most recent failure's message.
    pub last_error: Option<String>,
    /// Failures, oldest first, bounded to the most recent [`ERROR_HISTORY_LIMIT`].
    #[sqlx(json)]
    pub errors: Vec<AttemptError>,
    /// Why the job is in `dead_letter`.
    pub dead_letter_reason: Option<String>,
    /// The worker holding the job while it is processing.
    pub locked_by: Option<Uuid>,
    /// The token of the claim that holds it while it is processing (the outcome's fence).
    #[serde(skip)]
    pub lease_token: Option<Uuid>,
    /// The batch the job belongs to, if any.
    pub batch_id: Option<Uuid>,
    /// Its fair-share group within its queue (a tenant, a customer), if any.
    pub group_key: Option<String>,
    /// When the job was parked: ready, but no live worker runs its queue and kind, so
    /// claims pass it by until one does. `None` for claimable jobs.
    pub parked_at: Option<DateTime<Utc>>,
    /// When a cancel was asked for while the job was processing.
    pub cancel_requested_at: Option<DateTime<Utc>>,
    /// How many times an operator replayed it ([`crate::admin::replay`], one or in bulk):
    /// the record a handler compares with its own, to tell a replay from a run that came
    /// back by itself (handed back, rescued, retried).
    pub replays: i32,
    /// When the job was enqueued.
    pub created_at: DateTime<Utc>,
    /// When its latest attempt started.
    pub attempted_at: Option<DateTime<Utc>>,
    /// When it reached a final state.
    pub finished_at: Option<DateTime<Utc>>,
    /// The W3C trace context it was enqueued in (and contexts its attempts link to), when
    /// there was one: see [`crate::trace`].
    #[sqlx(default, json(nullable))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_context: Option<crate::trace::JobTrace>,
}

impl Job {
    /// Whether [`crate::admin::replay`] would take it at `now`: finished, and not past its
    /// expiry (an expired job is refused rather than run late). Surfaces that offer a
    /// Replay button ask this, so that they never offer what the replay refuses.
    pub fn replayable(&self, now: DateTime<Utc>) -> bool {
        self.state.is_final() && self.expires_at.is_none_or(|at| at > now)
    }
}

/// How many failures a job's error history keeps (the most recent ones).
pub const ERROR_HISTORY_LIMIT: i32 = 20;

/// How many characters of one error message are kept.
pub const ERROR_MESSAGE_LIMIT: i32 = 4000;

/// The first year a time given to Docket may fall in (a job's `run_at` or `expires_at`, a
/// filter's bounds): year 1, UTC.
pub const TIME_YEAR_MIN: i32 = 1;

/// The last year a time given to Docket may fall in: year 9999, UTC. PostgreSQL's
/// `timestamptz` reaches from 4713 BC to 294276 AD; Docket takes the narrower range that
/// every client can write (RFC 3339 has four-digit years), and the database holds it too
/// (`docket.time_in_range`, migration `20261207000006`).
pub const TIME_YEAR_MAX: i32 = 9999;

/// Checks a time the caller gives against [`TIME_YEAR_MIN`]..=[`TIME_YEAR_MAX`].
///
/// # Errors
///
/// A message that names `field` and the range.
pub fn check_time(field: &str, at: DateTime<Utc>) -> Result<(), String> {
    use chrono::Datelike;
    if (TIME_YEAR_MIN..=TIME_YEAR_MAX).contains(&at.year()) {
        Ok(())
    } else {
        Err(format!(
            "{field} must fall in the years {TIME_YEAR_MIN} to {TIME_YEAR_MAX} (UTC), not {at}"
        ))
    }
}

/// The rule for a queue's, a kind's or a schedule's name, in one place: 1 to
/// [`Name::MAX_CHARS`] characters, not all blank, without NUL (PostgreSQL's `text` cannot
/// hold one, so no stored name has one).
pub struct Name;

impl Name {
    /// The longest name, in characters.
    pub const MAX_CHARS: usize = 127;

    /// Checks `value` as the name of `what` (`kind`, `queue`, `a schedule name`).
    ///
    /// # Errors
    ///
    /// A message naming `what`, the broken part and the whole rule.
    pub fn check(what: &str, value: &str) -> Result<(), String> {
        let broken = if value.trim().is_empty() {
            "must not be empty"
        } else if value.chars().count() > Name::MAX_CHARS {
            "must be at most 127 characters"
        } else if value.contains('\0') {
            "must not contain a NUL character"
        } else {
            return Ok(());
        };
        Err(format!(
            "{what} {broken} (a name is 1 to 127 characters, not all blank, without NUL)"
        ))
    }
}

/// Checks a name the caller gives that reaches the database as text (a queue, a kind, a
/// schedule): PostgreSQL's `text` cannot hold a NUL character, so no stored name has one.
///
/// # Errors
///
/// A message that names `field`.
pub fn check_text(field: &str, value: &str) -> Result<(), String> {
    if value.contains('\0') {
        Err(format!("{field} must not contain a NUL character"))
    } else {
        Ok(())
    }
}
