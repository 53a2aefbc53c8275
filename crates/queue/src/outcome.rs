//! Outcomes: what became of an attempt, written back in batches and fenced by the lease.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::db;
use crate::error::Result;
use crate::job::{JobId, JobState};

/// What became of one attempt.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The handler succeeded: `completed`.
    Complete,
    /// The attempt failed: `retrying` after `delay`, or `dead_letter` (reason
    /// `attempts_exhausted`) when it was the last attempt. The error joins the history.
    Retry {
        /// What went wrong.
        error: String,
        /// How long until the next attempt (see [`crate::Backoff`]).
        delay: Duration,
    },
    /// A permanent failure: `dead_letter` at once, whatever attempts remain.
    DeadLetter {
        /// Why, e.g. `discarded` or `malformed: missing field user_id`.
        reason: String,
        /// What went wrong.
        error: String,
    },
    /// Run again after `delay` without spending an attempt (also how a worker hands back a
    /// job it could not finish before shutting down, with a zero delay).
    Snooze {
        /// How long until it is ready again.
        delay: Duration,
    },
    /// The job stopped because it was cancelled: `cancelled`.
    Cancel,
}

/// One attempt's outcome, with the lease token it was claimed under.
#[derive(Clone, Debug, PartialEq)]
pub struct AttemptOutcome {
    /// The job.
    pub id: JobId,
    /// The attempt this outcome is for (the job's `attempt` after the claim).
    pub attempt: i32,
    /// What became of it.
    pub outcome: Outcome,
}

/// What a batch of outcomes did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Applied {
    /// Jobs that changed, with their new state.
    pub changed: Vec<(JobId, JobState)>,
    /// Jobs whose outcome was dropped: the worker no longer held them (they were rescued,
    /// perhaps re-claimed by another worker, or handed back).
    pub fenced: Vec<JobId>,
}

/// Applies many outcomes in one statement. Each applies only while its job is still
/// `processing` under `worker_id` and the same attempt: a worker that lost its lease
/// cannot complete a job another worker now holds, and an outcome can never overwrite a
/// rescue (nor a rescue an outcome).
///
/// # Errors
///
/// [`crate::Error::Database`] when the database fails; then nothing was written and the
/// batch may be applied again.
pub async fn apply_outcomes(
    exec: impl PgExecutor<'_>,
    worker_id: Uuid,
    outcomes: &[AttemptOutcome],
    now: Option<DateTime<Utc>>,
) -> Result<Applied> {
    if outcomes.is_empty() {
        return Ok(Applied::default());
    }
    let mut columns = db::OutcomeColumns::default();
    for item in outcomes {
        let (name, error, delay, reason) = match &item.outcome {
            Outcome::Complete => ("complete", None, Duration::ZERO, None),
            Outcome::Retry { error, delay } => ("retry", Some(error.clone()), *delay, None),
            Outcome::DeadLetter { reason, error } => (
                "dead_letter",
                Some(error.clone()),
                Duration::ZERO,
                Some(reason.clone()),
            ),
            Outcome::Snooze { delay } => ("snooze", None, *delay, None),
            Outcome::Cancel => ("cancel", None, Duration::ZERO, None),
        };
        columns.ids.push(item.id.0);
        columns.attempts.push(item.attempt);
        columns.outcomes.push(name);
        columns.errors.push(error);
        columns.delays.push(delay.as_secs_f64());
        columns.reasons.push(reason);
    }
    let changed = db::job_set_outcome_many(exec, worker_id, &columns, now).await?;
    let changed_ids: HashSet<JobId> = changed.iter().map(|(id, _)| *id).collect();
    let fenced = outcomes
        .iter()
        .map(|item| item.id)
        .filter(|id| !changed_ids.contains(id))
        .collect();
    Ok(Applied { changed, fenced })
}
