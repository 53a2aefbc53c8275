//! Claim: the ready → processing step.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::db;
use crate::error::Result;
use crate::job::Job;

/// What to claim.
#[derive(Clone, Debug)]
pub struct ClaimRequest<'a> {
    /// The queue to claim from.
    pub queue: &'a str,
    /// Only these kinds (a worker claims only what it can run); `None` for any kind.
    pub kinds: Option<&'a [String]>,
    /// The worker that will hold the jobs. Its heartbeat is its lease: register it with
    /// [`crate::maintenance::heartbeat`] first, or the rescuer frees the jobs at once.
    pub worker_id: Uuid,
    /// This claim's fencing token: make a fresh one for every claim
    /// ([`ClaimRequest::new_token`]). Every job the claim takes carries it, and each
    /// outcome must name it. Knowing it before the claim is sent lets a worker whose claim
    /// reply was lost find (and hand back) exactly the jobs that claim took.
    pub token: Uuid,
    /// At most this many jobs.
    pub limit: u32,
    /// The time to claim at; `None` for the database's clock.
    pub now: Option<DateTime<Utc>>,
}

impl ClaimRequest<'_> {
    /// A fresh claim token: a UUID v7, never repeated.
    pub fn new_token() -> Uuid {
        Uuid::now_v7()
    }
}

/// The result of one claim.
#[derive(Clone, Debug, Default)]
pub struct Claimed {
    /// Jobs now `processing` under the worker, in priority, run_at, id order.
    pub jobs: Vec<Job>,
}

/// Claims up to `limit` ready jobs of one queue in one statement with
/// `FOR UPDATE SKIP LOCKED`: concurrent claimers never get the same job and never wait on
/// each other. Each claimed job is `processing`, its `attempt` incremented, its
/// `locked_by` the worker.
///
/// # Transactions, locks, and timeouts
///
/// The row locks are held only for the statement's transaction. Run it on a pool (auto-
/// commit) or commit right after: the job's lease is its `locked_by` plus the worker's
/// heartbeat, not a row lock, so nothing is locked while the job runs.
///
/// # Expired jobs
///
/// A ready job past its `expires_at` is never claimed and does not count against
/// `limit`: however many expired jobs sit at the head of a queue, a claim still takes the
/// fresh ones behind them. [`crate::maintenance::expire`] dead-letters them.
///
/// # Errors
///
/// [`crate::Error::Database`] when the database fails.
pub async fn claim(exec: impl PgExecutor<'_>, request: &ClaimRequest<'_>) -> Result<Claimed> {
    let params = db::ClaimParams {
        queue: request.queue,
        kinds: request.kinds,
        worker_id: request.worker_id,
        token: request.token,
        limit: i64::from(request.limit),
        now: request.now,
    };
    let mut jobs = db::job_claim(exec, &params).await?;
    jobs.sort_by_key(|job| (job.priority, job.run_at, job.id));
    Ok(Claimed { jobs })
}

/// Says that workers are waiting for work on these queues, so that the next enqueue on
/// each notifies (`LISTEN docket_jobs`). Call it once when producers start; after that,
/// every claim that comes back short says it again.
///
/// Enqueues notify only while a worker waits: PostgreSQL serialises the commits of
/// notifying transactions, and under load, when every worker is busy, nobody needs a
/// wake-up. The flag is taken with `SKIP LOCKED`, so concurrent enqueuers never wait on one
/// another; a wake-up lost to a rolled-back enqueue, or to an enqueue that commits just
/// after a claim looked, costs at most one poll interval.
///
/// # Errors
///
/// [`crate::Error::Database`] when the database fails.
pub async fn want_wakeups(exec: impl PgExecutor<'_>, queues: &[String]) -> Result<()> {
    Ok(db::queue_wakeup_want(exec, queues).await?)
}
