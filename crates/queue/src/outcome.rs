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
        /// Why, e.g. `permanent` or `malformed: missing field user_id`.
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

/// The longest delay a retry or snooze is stored with: a century, which is as good as
/// "park forever" and stays inside PostgreSQL's timestamp range (`Duration::MAX` does not).
pub const DELAY_MAX: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// One attempt's outcome, with the claim it is for.
#[derive(Clone, Debug, PartialEq)]
pub struct AttemptOutcome {
    /// The job.
    pub id: JobId,
    /// The attempt this outcome is for (the job's `attempt` after the claim).
    pub attempt: i32,
    /// The token of the claim that handed the job out: the fence.
    pub token: Uuid,
    /// What became of it.
    pub outcome: Outcome,
}

impl AttemptOutcome {
    /// The outcome of the attempt `job` was claimed for.
    ///
    /// # Panics
    ///
    /// When `job` is not a claimed job (it has no claim token): a caller's bug.
    pub fn of(job: &crate::Job, outcome: Outcome) -> AttemptOutcome {
        AttemptOutcome {
            id: job.id,
            attempt: job.attempt,
            token: job.lease_token.expect("only a claimed job has an outcome"),
            outcome,
        }
    }
}

/// What a batch of outcomes did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Applied {
    /// Jobs that changed, with their new state.
    pub changed: Vec<(JobId, JobState)>,
    /// Jobs whose outcome was dropped: the worker no longer held them (they were rescued,
    /// perhaps re-claimed by another worker, or handed back).
    pub fenced: Vec<JobId>,
    /// Jobs whose outcome the database refused (the reason is given); each was recorded as
    /// a failed attempt instead, and is in `changed` with its new state. Empty unless
    /// something slipped past the sanitising below.
    pub refused: Vec<(JobId, String)>,
}

/// Applies many outcomes in one statement. Each applies only while its job is still
/// `processing` under `worker_id` and the same claim token: a worker that lost its lease
/// cannot complete a job another worker now holds (nor one it re-claimed itself), and an
/// outcome can never overwrite a rescue (nor a rescue an outcome).
///
/// # What the database would refuse
///
/// One row PostgreSQL refuses fails its whole statement, so texts are sanitised (a NUL
/// byte, which `text` cannot hold, becomes U+FFFD) and delays clamped to [`DELAY_MAX`]
/// first. If the database still refuses the data of a batch, the batch is split and
/// retried until the offending rows are alone; each of those is recorded as a failed
/// attempt with the database's reason, and the rest land. A batch can therefore never
/// wedge the worker that writes it.
///
/// # Errors
///
/// [`crate::Error::Database`] when the database fails (connection lost, shut down, ...);
/// then nothing was written and the batch may be applied again.
pub async fn apply_outcomes<'c, A>(
    exec: A,
    worker_id: Uuid,
    outcomes: &[AttemptOutcome],
    now: Option<DateTime<Utc>>,
) -> Result<Applied>
where
    A: sqlx::Acquire<'c, Database = sqlx::Postgres>,
{
    let mut applied = Applied::default();
    if outcomes.is_empty() {
        return Ok(applied);
    }
    let mut conn = exec.acquire().await?;
    let mut pending: Vec<&[AttemptOutcome]> = vec![outcomes];
    while let Some(batch) = pending.pop() {
        if batch.is_empty() {
            continue;
        }
        match write(crate::pooled_conn(&mut conn), worker_id, batch, now).await {
            Ok(changed) => applied.changed.extend(changed),
            Err(err) if is_refused_data(&err) && batch.len() > 1 => {
                let (left, right) = batch.split_at(batch.len() / 2);
                pending.push(right);
                pending.push(left);
            }
            Err(err) if is_refused_data(&err) => {
                let item = &batch[0];
                let reason = format!("the outcome could not be recorded: {err}");
                let failed = AttemptOutcome {
                    outcome: Outcome::Retry {
                        error: reason.clone(),
                        delay: crate::Backoff::default().delay(item.id, item.attempt),
                    },
                    ..item.clone()
                };
                applied
                    .changed
                    .extend(write(crate::pooled_conn(&mut conn), worker_id, &[failed], now).await?);
                applied.refused.push((item.id, reason));
            }
            Err(err) => return Err(err.into()),
        }
    }
    let changed_ids: HashSet<JobId> = applied.changed.iter().map(|(id, _)| *id).collect();
    applied.fenced = outcomes
        .iter()
        .map(|item| item.id)
        .filter(|id| !changed_ids.contains(id))
        .collect();
    Ok(applied)
}

/// Completes one job on `conn` (a handler's own transaction), fenced by its claim's token
/// as [`apply_outcomes`] fences: `false`, and nothing written, when `worker_id` no longer
/// holds the job under `token` (it was rescued, perhaps claimed by another worker).
///
/// # Errors
///
/// [`crate::Error::Database`] when the database fails.
pub async fn complete_on(
    conn: &mut sqlx::PgConnection,
    worker_id: Uuid,
    id: JobId,
    attempt: i32,
    token: Uuid,
) -> Result<bool> {
    let outcome = AttemptOutcome {
        id,
        attempt,
        token,
        outcome: Outcome::Complete,
    };
    let changed = write(crate::pooled_conn(conn), worker_id, &[outcome], None).await?;
    Ok(!changed.is_empty())
}

/// Whether the database refused the statement's data (SQLSTATE class 22 data exception,
/// 23 integrity violation, 54 program limit, P0 raised by a trigger), as opposed to
/// failing (a lost connection, a shutdown, a timeout), after which the same batch is
/// simply written again.
fn is_refused_data(err: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = err else {
        return false;
    };
    let code = db.code();
    matches!(
        code.as_deref().map(|c| c.get(..2).unwrap_or(c)),
        Some("22" | "23" | "54" | "P0")
    )
}

/// Text as PostgreSQL's `text` can hold it.
fn sanitise(text: &str) -> String {
    text.replace('\0', "\u{FFFD}")
}

async fn write(
    exec: impl PgExecutor<'_>,
    worker_id: Uuid,
    outcomes: &[AttemptOutcome],
    now: Option<DateTime<Utc>>,
) -> sqlx::Result<Vec<(JobId, JobState)>> {
    let mut columns = db::OutcomeColumns::default();
    for item in outcomes {
        let (name, error, delay, reason) = match &item.outcome {
            Outcome::Complete => ("complete", None, Duration::ZERO, None),
            Outcome::Retry { error, delay } => ("retry", Some(sanitise(error)), *delay, None),
            Outcome::DeadLetter { reason, error } => (
                "dead_letter",
                Some(sanitise(error)),
                Duration::ZERO,
                Some(sanitise(reason)),
            ),
            Outcome::Snooze { delay } => ("snooze", None, *delay, None),
            Outcome::Cancel => ("cancel", None, Duration::ZERO, None),
        };
        columns.ids.push(item.id.0);
        columns.tokens.push(item.token);
        columns.outcomes.push(name);
        columns.errors.push(error);
        columns.delays.push(delay.min(DELAY_MAX).as_secs_f64());
        columns.reasons.push(reason);
    }
    db::job_set_outcome_many(exec, worker_id, &columns, now).await
}
