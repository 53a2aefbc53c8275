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

/// A worker process as it announces itself with each heartbeat.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize, sqlx::FromRow)]
pub struct WorkerInfo {
    /// Fresh per process start: a restarted process never inherits a dead one's jobs.
    pub id: Uuid,
    /// The host it runs on.
    pub host: String,
    /// Its process id.
    pub pid: i32,
    /// The queues it serves.
    pub queues: Vec<String>,
    /// The kinds it runs.
    pub kinds: Vec<String>,
    /// Its version.
    pub version: String,
}

/// Registers the worker, or renews its heartbeat. While the heartbeat is younger than the
/// lease timeout, the jobs the worker holds are its own.
///
/// # Errors
///
/// [`Error::Database`] when the database fails.
pub async fn heartbeat(
    exec: impl PgExecutor<'_>,
    worker: &WorkerInfo,
    now: Option<DateTime<Utc>>,
) -> Result<()> {
    let params = db::WorkerParams {
        id: worker.id,
        host: &worker.host,
        pid: worker.pid,
        queues: &worker.queues,
        kinds: &worker.kinds,
        version: &worker.version,
        now,
    };
    Ok(db::worker_heartbeat(exec, &params).await?)
}

/// Removes the worker's registration (at shutdown, after its jobs were handed back).
///
/// # Errors
///
/// [`Error::Database`] when the database fails.
pub async fn deregister(exec: impl PgExecutor<'_>, worker_id: Uuid) -> Result<()> {
    Ok(db::worker_delete(exec, worker_id).await?)
}

/// Rescues up to `limit` processing jobs whose worker has not sent a heartbeat within
/// `lease_timeout` (or is not registered): each goes back to `retrying`, ready now, or to
/// `dead_letter` when its attempts are spent. Returns the rescued jobs as they are now.
/// Safe to run from several workers at once: locked rows are skipped, never fought over.
///
/// # Errors
///
/// [`Error::Database`] when the database fails.
pub async fn rescue_lapsed(
    exec: impl PgExecutor<'_>,
    lease_timeout: Duration,
    limit: u32,
    now: Option<DateTime<Utc>>,
) -> Result<Vec<Job>> {
    Ok(db::job_rescue_lapsed(exec, lease_timeout.as_secs_f64(), i64::from(limit), now).await?)
}

/// Deletes up to `limit` jobs in the finished `state` whose `finished_at` is older than
/// `retention` before `now`. Returns how many were deleted; call again while it returns
/// `limit`. Small batches keep every lock short.
///
/// # Errors
///
/// [`Error::InvalidState`]-like [`Error::InvalidJob`] for a state that is not final;
/// [`Error::Database`] when the database fails.
pub async fn prune(
    exec: impl PgExecutor<'_>,
    state: JobState,
    retention: Duration,
    limit: u32,
    now: DateTime<Utc>,
) -> Result<u64> {
    if !state.is_final() {
        return Err(Error::InvalidJob(format!(
            "only finished jobs are pruned, not {state}"
        )));
    }
    let retention = chrono::Duration::from_std(retention)
        .map_err(|_| Error::InvalidJob("retention is too long".to_owned()))?;
    Ok(db::job_delete_finished_before(exec, state, now - retention, i64::from(limit)).await?)
}

/// The jobs `worker_id` holds whose cancel an operator asked for; the worker stops them.
///
/// # Errors
///
/// [`Error::Database`] when the database fails.
pub async fn cancel_requested(exec: impl PgExecutor<'_>, worker_id: Uuid) -> Result<Vec<JobId>> {
    Ok(db::job_cancel_requested(exec, worker_id).await?)
}

/// The maintenance tasks that run on one worker at a time, each under its own advisory lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exclusive {
    /// The rescuer.
    Rescue,
    /// The pruner.
    Prune,
}

impl Exclusive {
    /// The advisory lock key: fixed, so every worker of every version agrees.
    fn key(self) -> i64 {
        // "docket" in ASCII, then the task's number.
        const BASE: i64 = 0x646f_636b_6574_0000;
        match self {
            Exclusive::Rescue => BASE + 1,
            Exclusive::Prune => BASE + 2,
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

/// Releases a lock taken with [`try_take`] on the same connection.
///
/// # Errors
///
/// [`Error::Database`] when the database fails.
pub async fn release(conn: &mut sqlx::PgConnection, task: Exclusive) -> Result<()> {
    Ok(db::advisory_unlock(conn, task.key()).await?)
}
