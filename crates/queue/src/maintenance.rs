//! Maintenance primitives: worker heartbeats (the lease), rescue of jobs whose lease
//! lapsed, and pruning of finished jobs. Each is one bounded batch; the services that
//! call them on a timer own the timing.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::db;
use crate::error::{Error, Result};
use crate::job::{Job, JobId, JobState};
pub use crate::workers::WorkerInfo;

/// Registers the worker, or renews its heartbeat, and with it the worker's lease on every
/// job it holds until `now + lease` (the worker's own setting: the rescuer reads the
/// stored expiry, so workers with different settings never judge each other).
///
/// # Errors
///
/// [`Error::Database`] when the database fails.
pub async fn heartbeat(
    exec: impl PgExecutor<'_>,
    worker: &WorkerInfo,
    lease: Duration,
    now: Option<DateTime<Utc>>,
) -> Result<Renewal> {
    let params = db::WorkerParams {
        id: worker.id,
        host: &worker.host,
        pid: worker.pid,
        queues: &worker.queues,
        kinds: &worker.kinds,
        version: &worker.version,
        lease_secs: lease.as_secs_f64(),
        now,
    };
    let lapsed = db::worker_heartbeat(exec, &params).await?;
    Ok(Renewal { lapsed })
}

/// What a heartbeat found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Renewal {
    /// The lease had lapsed before this heartbeat renewed it (or the worker was not
    /// registered: true at the first registration too). A rescuer may have freed the
    /// worker's jobs meanwhile: a worker that finds its lease lapsed must stop what it runs.
    pub lapsed: bool,
}

/// Removes the worker's registration (at shutdown, after its jobs were handed back).
///
/// # Errors
///
/// [`Error::Database`] when the database fails.
pub async fn deregister(exec: impl PgExecutor<'_>, worker_id: Uuid) -> Result<()> {
    Ok(db::worker_delete(exec, worker_id).await?)
}

/// Rescues up to `limit` processing jobs whose worker's lease has lapsed (its stored
/// `lease_expires_at` is past, or it is not registered): each goes back to `retrying`,
/// ready now, to `dead_letter` when its attempts are spent, or to `cancelled` when an
/// operator asked for that. Returns the rescued jobs as they are now. Safe to run from
/// several workers at once: locked rows are skipped, never fought over.
///
/// # Errors
///
/// [`Error::Database`] when the database fails.
pub async fn rescue_lapsed(
    exec: impl PgExecutor<'_>,
    limit: u32,
    now: Option<DateTime<Utc>>,
) -> Result<Vec<Job>> {
    Ok(db::job_rescue_lapsed(exec, i64::from(limit), now).await?)
}

/// Dead-letters up to `limit` ready jobs whose `expires_at` has passed (reason
/// `expired`) and returns them. Claims never hand such jobs out; this sweep moves them
/// where operators see them, soonest expiry first.
///
/// # Errors
///
/// [`Error::Database`] when the database fails.
pub async fn expire(
    exec: impl PgExecutor<'_>,
    limit: u32,
    now: Option<DateTime<Utc>>,
) -> Result<Vec<Job>> {
    Ok(db::job_expire_ready(exec, i64::from(limit), now).await?)
}

/// Deletes up to `limit` jobs in the finished `state` whose `finished_at` is older than
/// `retention` before `now` (`None`: the database's clock, the one `finished_at` was
/// written with). Returns how many were deleted; call again while it returns `limit`.
/// Small batches keep every lock short.
///
/// # Errors
///
/// [`Error::InvalidArgument`] for a state that is not final; [`Error::Database`] when the
/// database fails.
pub async fn prune(
    exec: impl PgExecutor<'_>,
    state: JobState,
    retention: Duration,
    limit: u32,
    now: Option<DateTime<Utc>>,
) -> Result<u64> {
    if !state.is_final() {
        return Err(Error::InvalidArgument(format!(
            "only finished jobs are pruned, not {state}"
        )));
    }
    Ok(
        db::job_delete_finished_before(exec, state, retention.as_secs_f64(), i64::from(limit), now)
            .await?,
    )
}

/// Deletes the registrations of workers whose lease lapsed more than `after` ago and that
/// hold no job any more. Returns how many.
///
/// # Errors
///
/// [`Error::Database`] when the database fails.
pub async fn prune_workers(
    exec: impl PgExecutor<'_>,
    after: Duration,
    now: Option<DateTime<Utc>>,
) -> Result<u64> {
    Ok(db::worker_delete_stale(exec, after.as_secs_f64(), now).await?)
}

/// Parks ready jobs that have been ready for `after` while no live worker serves their
/// queue and runs their kind: claims pass parked jobs by without reading them. Looks at the
/// `scan` oldest ready jobs of each queue, parks at most `limit`; returns the queue and
/// kind of each parked job.
///
/// # Errors
///
/// [`Error::Database`] when the database fails.
pub async fn park_unhandled(
    exec: impl PgExecutor<'_>,
    after: Duration,
    scan: u32,
    limit: u32,
    now: Option<DateTime<Utc>>,
) -> Result<Vec<(String, String)>> {
    Ok(db::job_park_unhandled(
        exec,
        after.as_secs_f64(),
        i64::from(scan),
        i64::from(limit),
        now,
    )
    .await?)
}

/// Unparks up to `limit` parked jobs whose queue and kind a live worker now runs (call it
/// after registering). Returns how many; call again while it returns `limit`.
///
/// # Errors
///
/// [`Error::Database`] when the database fails.
pub async fn unpark_handled(
    exec: impl PgExecutor<'_>,
    limit: u32,
    now: Option<DateTime<Utc>>,
) -> Result<u64> {
    Ok(db::job_unpark_handled(exec, i64::from(limit), now).await?)
}

/// One job the database says a worker holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    /// The job.
    pub id: JobId,
    /// The attempt it was claimed for.
    pub attempt: i32,
    /// The token of the claim that holds it.
    pub token: Uuid,
    /// Whether an operator asked to cancel it.
    pub cancel_requested: bool,
}

/// Every job `worker_id` holds according to the database. The worker compares it with
/// what it runs: it stops the ones an operator cancelled, and hands back the ones it holds
/// without running them (a claim whose reply was lost, an executor that died).
///
/// # Errors
///
/// [`Error::Database`] when the database fails.
pub async fn held_by(exec: impl PgExecutor<'_>, worker_id: Uuid) -> Result<Vec<Held>> {
    let rows = db::job_held_by(exec, worker_id).await?;
    Ok(rows
        .into_iter()
        .map(|row| Held {
            id: row.id,
            attempt: row.attempt,
            token: row.lease_token,
            cancel_requested: row.cancel_requested,
        })
        .collect())
}

/// The maintenance tasks that run on one worker at a time, each under its own advisory lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exclusive {
    /// The rescuer.
    Rescue,
    /// The pruner.
    Prune,
    /// The expiry sweep.
    Expire,
    /// The parker.
    Park,
    /// The batch tracker.
    Batch,
}

impl Exclusive {
    /// The advisory lock key: fixed, so every worker of every version agrees.
    fn key(self) -> i64 {
        // "docket" in ASCII, then the task's number.
        const BASE: i64 = 0x646f_636b_6574_0000;
        match self {
            Exclusive::Rescue => BASE + 1,
            Exclusive::Prune => BASE + 2,
            Exclusive::Expire => BASE + 3,
            Exclusive::Park => BASE + 4,
            Exclusive::Batch => BASE + 5,
        }
    }
}

/// Takes the task's lock on this connection if no other session holds it. The lock lasts
/// until [`release`] or until the connection closes (so a crashed worker frees it).
///
/// # Errors
///
/// [`Error::Database`] when the database fails.
pub async fn try_take(conn: &mut sqlx::PgConnection, task: Exclusive) -> Result<bool> {
    Ok(db::advisory_try_lock(conn, task.key()).await?)
}

/// Takes the task's lock for the transaction open on `conn` if no other session holds it.
/// The lock lasts until that transaction ends: no session state, so it is what a worker
/// behind a transaction-mode pooler takes.
///
/// # Errors
///
/// [`Error::Database`] when the database fails.
pub async fn try_take_in_transaction(
    conn: &mut sqlx::PgConnection,
    task: Exclusive,
) -> Result<bool> {
    Ok(db::advisory_try_xact_lock(crate::pooled_conn(conn), task.key()).await?)
}

/// Releases a lock taken with [`try_take`] on the same connection.
///
/// # Errors
///
/// [`Error::Database`] when the database fails.
pub async fn release(conn: &mut sqlx::PgConnection, task: Exclusive) -> Result<()> {
    Ok(db::advisory_unlock(conn, task.key()).await?)
}
