//! Operator actions: show, list, cancel, replay.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use crate::db;
use crate::error::{Error, Result};
use crate::job::{check_time, Job, JobId, JobState, Name};

/// The most jobs one list page holds.
pub const LIST_LIMIT_MAX: u32 = 1000;

/// How many dead letters one replay statement moves; bulk replay loops in batches of this
/// size so that no statement locks too many rows at once.
pub const REPLAY_BATCH: u32 = 1000;

/// Shows one job whole.
///
/// # Errors
///
/// [`Error::JobNotFound`] when no job has this id.
pub async fn show(exec: impl PgExecutor<'_>, id: JobId) -> Result<Job> {
    db::job_get(exec, id).await?.ok_or(Error::JobNotFound(id))
}

/// Which jobs to list.
#[derive(Clone, Debug, Default)]
pub struct ListFilter {
    /// Only jobs in this state.
    pub state: Option<JobState>,
    /// Only jobs on this queue.
    pub queue: Option<String>,
    /// Only jobs of this kind.
    pub kind: Option<String>,
    /// The cursor: only jobs older than this one (the previous page's `next`).
    pub before: Option<JobId>,
    /// Page size, 1 to [`LIST_LIMIT_MAX`].
    pub limit: u32,
}

/// One page of jobs, newest first.
#[derive(Clone, Debug)]
pub struct Page {
    /// The jobs.
    pub jobs: Vec<Job>,
    /// The cursor for the next page, `None` on the last page.
    pub next: Option<JobId>,
}

/// Lists jobs newest first, a page at a time (keyset pagination on the id).
///
/// # Errors
///
/// [`Error::InvalidArgument`] for a page size out of range or a name with a NUL
/// character; [`Error::Database`].
pub async fn list(exec: impl PgExecutor<'_>, filter: &ListFilter) -> Result<Page> {
    if filter.limit == 0 || filter.limit > LIST_LIMIT_MAX {
        return Err(Error::InvalidArgument(format!(
            "limit must be between 1 and {LIST_LIMIT_MAX}"
        )));
    }
    check_names(&filter.queue, &filter.kind)?;
    let params = db::ListParams {
        state: filter.state,
        queue: filter.queue.as_deref(),
        kind: filter.kind.as_deref(),
        before: filter.before,
        // One more than asked tells whether another page follows.
        limit: i64::from(filter.limit) + 1,
    };
    let mut jobs = db::job_list(exec, &params).await?;
    let next = if jobs.len() > filter.limit as usize {
        jobs.truncate(filter.limit as usize);
        jobs.last().map(|job| job.id)
    } else {
        None
    };
    Ok(Page { jobs, next })
}

/// Checks a filter's queue and kind: a name no job can have (empty, too long, with a NUL
/// PostgreSQL refuses as text) is a mistake, not an empty result.
fn check_names(queue: &Option<String>, kind: &Option<String>) -> Result<()> {
    for (field, value) in [("queue", queue), ("kind", kind)] {
        if let Some(value) = value {
            Name::check(field, value).map_err(Error::InvalidArgument)?;
        }
    }
    Ok(())
}

/// Cancels a job. A pending or retrying job is `cancelled` at once; a processing job is
/// marked (`cancel_requested_at`) so that its worker stops it cooperatively. Returns the
/// job as it is now.
///
/// # Errors
///
/// [`Error::JobNotFound`]; [`Error::InvalidState`] for a job that has already finished.
pub async fn cancel<'c, E>(exec: E, id: JobId) -> Result<Job>
where
    E: PgExecutor<'c> + Copy,
{
    if let Some(job) = db::job_cancel(exec, id, None).await? {
        return Ok(job);
    }
    let job = show(exec, id).await?;
    Err(Error::InvalidState {
        id,
        actual: job.state,
        action: "cancel",
    })
}

/// Discards a dead letter that should never run again: it becomes `cancelled` (pruned
/// with the other finished jobs), and its dead-letter reason stays in its error history.
/// Returns the job as it is now.
///
/// # Errors
///
/// [`Error::JobNotFound`]; [`Error::InvalidState`] for a job that is not a dead letter.
pub async fn discard<'c, E>(exec: E, id: JobId) -> Result<Job>
where
    E: PgExecutor<'c> + Copy,
{
    if let Some(job) = db::job_discard(exec, id, None).await? {
        return Ok(job);
    }
    let job = show(exec, id).await?;
    Err(Error::InvalidState {
        id,
        actual: job.state,
        action: "discard",
    })
}

/// Replays a finished job (dead letter, cancelled or completed): back to `pending`, ready
/// now, with a fresh attempt budget. Its error history stays. A job whose `expires_at`
/// has passed is refused rather than replayed: it would only expire again, and a job with
/// an expiry (a sign-in link, say) must never run late.
///
/// # Errors
///
/// [`Error::JobNotFound`]; [`Error::InvalidState`] for a job that has not finished;
/// [`Error::Expired`] for one whose expiry has passed; [`Error::UniqueKeyTaken`] when its
/// unique key already has a live job.
pub async fn replay<'c, E>(exec: E, id: JobId) -> Result<Job>
where
    E: PgExecutor<'c> + Copy,
{
    match db::job_replay(exec, id, None).await {
        Ok(Some(job)) => Ok(job),
        Ok(None) => {
            let job = show(exec, id).await?;
            if let (true, Some(expires_at)) = (job.state.is_final(), job.expires_at) {
                return Err(Error::Expired { id, expires_at });
            }
            Err(Error::InvalidState {
                id,
                actual: job.state,
                action: "replay",
            })
        }
        Err(err) if is_unique_key_violation(&err) => {
            let key = show(exec, id).await?.unique_key.unwrap_or_default();
            Err(Error::UniqueKeyTaken { id, key })
        }
        Err(err) => Err(err.into()),
    }
}

fn is_unique_key_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.constraint() == Some("jobs_unique_key_live"))
}

/// Which dead letters to replay. Every field narrows the set; all `None` is every dead
/// letter.
#[derive(Clone, Debug, Default)]
pub struct DeadLetterFilter {
    /// Only this queue.
    pub queue: Option<String>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only jobs dead-lettered at or after this time.
    pub finished_after: Option<DateTime<Utc>>,
    /// Only jobs dead-lettered before this time.
    pub finished_before: Option<DateTime<Utc>>,
}

/// Replays every dead letter that matches the filter, in batches of [`REPLAY_BATCH`].
/// Dead letters whose unique key has a live job stay (of several sharing a key, the
/// newest is replayed), and so do those whose `expires_at` has passed. Returns how many
/// were replayed.
///
/// A job enqueued with the same unique key while a batch runs makes that batch fail on
/// the unique index; the batch is then tried again, and now passes that key over.
///
/// # Errors
///
/// [`Error::InvalidArgument`] for a name with a NUL character or a time outside
/// [`check_time`]'s range (nothing is replayed); [`Error::Database`]; batches replayed
/// before the failure stay replayed.
pub async fn replay_dead_letters<'c, E>(exec: E, filter: &DeadLetterFilter) -> Result<u64>
where
    E: PgExecutor<'c> + Copy,
{
    check_names(&filter.queue, &filter.kind)?;
    for (field, at) in [
        ("since", filter.finished_after),
        ("until", filter.finished_before),
    ] {
        if let Some(at) = at {
            check_time(field, at).map_err(Error::InvalidArgument)?;
        }
    }
    let params = db::ReplayParams {
        queue: filter.queue.as_deref(),
        kind: filter.kind.as_deref(),
        finished_after: filter.finished_after,
        finished_before: filter.finished_before,
        limit: i64::from(REPLAY_BATCH),
        now: None,
    };
    let mut total = 0;
    let mut key_races = 0;
    loop {
        let replayed = match db::job_replay_dead_letters(exec, &params).await {
            Ok(replayed) => replayed,
            // The racing live job is committed by now, so the next try skips its key.
            Err(err) if is_unique_key_violation(&err) && key_races < 10 => {
                key_races += 1;
                continue;
            }
            Err(err) => return Err(err.into()),
        };
        total += replayed;
        if replayed < u64::from(REPLAY_BATCH) {
            return Ok(total);
        }
    }
}

/// The `limit` newest dead letters, newest first by when they were dead-lettered. Unlike
/// [`list`] (newest first by id), it reads the dead letters alone, however many finished
/// jobs the table keeps: what a page that shows the latest few needs.
///
/// # Errors
///
/// [`Error::Database`] when the database fails.
pub async fn newest_dead_letters(exec: impl PgExecutor<'_>, limit: u32) -> Result<Vec<Job>> {
    Ok(db::job_list_newest_dead_letters(exec, i64::from(limit)).await?)
}

/// Jobs dead-lettered in `(since, until]`: how many, and the newest `limit` of them. What a
/// notification of new dead letters says.
///
/// # Errors
///
/// [`Error::Database`] when the database fails.
pub async fn dead_lettered_between(
    exec: impl PgExecutor<'_>,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    limit: u32,
) -> Result<(i64, Vec<Job>)> {
    let rows = db::job_list_dead_lettered_between(exec, since, until, i64::from(limit)).await?;
    let total = rows.first().map_or(0, |row| row.total);
    Ok((total, rows.into_iter().map(|row| row.job).collect()))
}

/// Jobs that finished in one minute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct FinishedInMinute {
    /// The minute's start.
    pub minute: DateTime<Utc>,
    /// Completed in it.
    pub completed: i64,
    /// Dead-lettered in it.
    pub dead_lettered: i64,
}

/// Jobs completed and dead-lettered per minute, for those that finished in
/// `[since, until)` and are not pruned yet; minutes without any are left out. It reads the
/// `jobs_finished` index over that range only, so a caller that asks for the last few
/// seconds at a time pays for those seconds' jobs, never for the table.
///
/// # Errors
///
/// [`Error::Database`] when the database fails.
pub async fn finished_per_minute(
    exec: impl PgExecutor<'_>,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Vec<FinishedInMinute>> {
    Ok(db::job_finished_per_minute(exec, since, until).await?)
}
