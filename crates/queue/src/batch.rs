//! Batches: jobs enqueued together, in one call on any executor (so in the caller's
//! transaction), whose progress is tracked and which enqueue one callback job, exactly
//! once, when every one of them is final.
//!
//! No counter is kept while a batch runs: a row that every completion updated would
//! serialise the batch's completions. Progress is counted from the jobs; the batch tracker
//! (a worker service) calls [`finish_done`], which finishes each batch that has no live job
//! left, stores its final counts and enqueues its callback, once.
//!
//! A batch takes only jobs of its own: one whose `unique_key` is held by a live job is
//! refused ([`crate::Error::BatchKeyTaken`]) rather than folded into that job, which the
//! batch would count without waiting for it.
//!
//! Replaying a dead-lettered job of a finished batch runs that job again; the batch stays
//! finished (its callback ran) and keeps its final counts.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Acquire, Postgres};
use uuid::Uuid;

use crate::db;
use crate::enqueue::NewJob;
use crate::error::{Error, Result};
use crate::job::JobId;

/// The job a batch enqueues when every one of its jobs is final. Its payload gains
/// `batch_id`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Callback {
    /// Its kind.
    pub kind: String,
    /// Its payload (an object; `batch_id` is added). Default `{}`.
    #[serde(default = "empty_object")]
    pub payload: serde_json::Value,
    /// Its queue. Default `default`.
    #[serde(default = "default_queue")]
    pub queue: String,
}

fn empty_object() -> serde_json::Value {
    serde_json::json!({})
}

fn default_queue() -> String {
    crate::enqueue::DEFAULT_QUEUE.to_owned()
}

/// A batch to create.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NewBatch {
    /// Its jobs: at least one.
    pub jobs: Vec<NewJob>,
    /// The job enqueued once they are all final.
    pub callback: Option<Callback>,
    /// The job that makes this batch. When that is a schedule's tick job, the batch is a
    /// cron batch: linked to its tick (its schedule's progress shows it, and `overlap =
    /// "skip"` waits for it).
    pub parent: Option<JobId>,
}

/// A batch and its progress.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchStatus {
    /// Its id (UUID v7).
    pub id: Uuid,
    /// Its jobs.
    pub total: i32,
    /// Jobs completed.
    pub completed: i32,
    /// Jobs dead-lettered.
    pub dead_letter: i32,
    /// Jobs cancelled.
    pub cancelled: i32,
    /// Jobs not final yet.
    pub remaining: i32,
    /// When its last job became final (and its callback was enqueued).
    pub finished_at: Option<DateTime<Utc>>,
    /// The callback's job, once enqueued.
    pub callback_job_id: Option<Uuid>,
    /// The schedule whose tick made it, for a cron batch.
    pub schedule: Option<String>,
    /// That tick.
    pub tick_at: Option<DateTime<Utc>>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// Creates a batch and enqueues its jobs in one transaction (inside the caller's, when
/// `exec` is one). Returns the batch's id.
///
/// A batch takes only jobs of its own: a job whose `unique_key` another live job holds
/// (enqueued before, or earlier in the same batch) is not folded into that job, as a plain
/// enqueue would; the batch is refused, so that its callback never runs before every job
/// it names is final.
///
/// # Errors
///
/// [`Error::InvalidJob`] for an empty batch, a job or a callback that breaks a rule;
/// [`Error::BatchKeyTaken`] for a job whose unique key is held; [`Error::Database`].
/// Nothing is written then.
pub async fn create<'c, A>(exec: A, batch: &NewBatch) -> Result<Uuid>
where
    A: Acquire<'c, Database = Postgres>,
{
    if batch.jobs.is_empty() {
        return Err(Error::InvalidJob(
            "a batch needs at least one job".to_owned(),
        ));
    }
    let total = i32::try_from(batch.jobs.len())
        .map_err(|_| Error::InvalidJob("a batch holds at most 2^31 jobs".to_owned()))?;
    if let Some(callback) = &batch.callback {
        NewJob::new(callback.kind.clone(), callback.payload.clone())
            .queue(callback.queue.clone())
            .validate()
            .map_err(|err| Error::InvalidJob(format!("callback: {err}")))?;
        if !callback.payload.is_object() {
            return Err(Error::InvalidJob(
                "callback: payload must be an object (it gains batch_id)".to_owned(),
            ));
        }
    }
    let id = Uuid::now_v7();
    let mut tx = exec.begin().await?;
    let empty = empty_object();
    // The caller's span, else the context its jobs continue (an HTTP request's).
    let trace = crate::trace::TraceContext::current()
        .or_else(|| batch.jobs.first().and_then(|job| job.trace_parent.clone()));
    let params = db::BatchParams {
        id,
        total,
        callback_kind: batch.callback.as_ref().map(|c| c.kind.as_str()),
        callback_payload: batch.callback.as_ref().map_or(&empty, |c| &c.payload),
        callback_queue: batch
            .callback
            .as_ref()
            .map_or(crate::enqueue::DEFAULT_QUEUE, |c| c.queue.as_str()),
        parent: batch.parent.map(|id| id.0),
        trace: trace.as_ref(),
    };
    db::batch_insert(crate::pooled_conn(&mut tx), &params).await?;
    let slots =
        crate::enqueue::enqueue_many_in(crate::pooled_conn(&mut tx), &batch.jobs, Some(id)).await?;
    if let Some(taken) = key_taken(&mut tx, id, &batch.jobs, &slots).await? {
        // Dropping the transaction rolls the batch and its jobs back.
        return Err(taken);
    }
    tx.commit().await?;
    tracing::info!(
        event = crate::telemetry::event::BATCH_CREATED, batch.id = %id, total,
        "batch created (visible once the transaction commits)"
    );
    Ok(id)
}

/// The first job of the batch whose unique key another live job holds: a job enqueued
/// before (the slot came back with that job's id, which is not in this batch) or an earlier
/// job of the same batch (two slots came back with one id). Either would make the batch
/// count a job it does not own, and finish without waiting for it. Costs nothing for a
/// batch without keys.
async fn key_taken(
    conn: &mut sqlx::PgConnection,
    batch: Uuid,
    jobs: &[NewJob],
    slots: &[JobId],
) -> Result<Option<Error>> {
    let keyed: Vec<(usize, &str)> = jobs
        .iter()
        .enumerate()
        .filter_map(|(index, job)| job.unique_key.as_deref().map(|key| (index, key)))
        .collect();
    if keyed.is_empty() {
        return Ok(None);
    }
    // `slots` has one id per job, in the jobs' order (`docket.enqueue_many` returns one row
    // per input), so indexing it by a job's position cannot fail.
    let ids: Vec<Uuid> = keyed.iter().map(|&(index, _)| slots[index].0).collect();
    let foreign: std::collections::HashSet<Uuid> =
        db::batch_foreign_jobs(crate::pooled_conn(conn), batch, &ids)
            .await?
            .into_iter()
            .collect();
    let mut seen = std::collections::HashSet::new();
    for (index, key) in keyed {
        let holder = slots[index];
        if foreign.contains(&holder.0) || !seen.insert(holder) {
            return Ok(Some(Error::BatchKeyTaken {
                index,
                key: key.to_owned(),
                holder,
            }));
        }
    }
    Ok(None)
}

/// One batch and its progress.
///
/// # Errors
///
/// [`Error::InvalidArgument`] when there is no such batch; [`Error::Database`].
pub async fn show(exec: impl sqlx::PgExecutor<'_>, id: Uuid) -> Result<BatchStatus> {
    db::batch_list(exec, Some(id), 1)
        .await?
        .pop()
        .ok_or_else(|| Error::InvalidArgument(format!("no batch has id {id}")))
}

/// The most recent batches, newest first, with their progress.
///
/// # Errors
///
/// [`Error::Database`] when the database fails.
pub async fn list(exec: impl sqlx::PgExecutor<'_>, limit: u32) -> Result<Vec<BatchStatus>> {
    Ok(db::batch_list(exec, None, i64::from(limit)).await?)
}

/// How many batches are open.
///
/// # Errors
///
/// [`Error::Database`] when the database fails.
pub async fn count_open(exec: impl sqlx::PgExecutor<'_>) -> Result<i64> {
    Ok(db::batch_count_open(exec).await?)
}

/// Finishes up to `limit` open batches whose jobs are all final: stores their counts and
/// enqueues each one's callback, exactly once however many trackers run. Returns them.
///
/// # Errors
///
/// [`Error::Database`] when the database fails.
pub async fn finish_done(exec: impl sqlx::PgExecutor<'_>, limit: u32) -> Result<Vec<BatchStatus>> {
    Ok(db::batch_finish_done(exec, i64::from(limit)).await?)
}
