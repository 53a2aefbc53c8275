//! What application code writes: a handler gets a job's payload and a [`JobContext`], and
//! returns `Ok(())` or a [`JobError`] that says what should happen next.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use docket_queue::JobId;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// Any error a handler may return with `?`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a failed attempt asks for. `?` on any error gives [`JobError::Retry`] with the
/// kind's backoff.
///
/// It deliberately does not implement `std::error::Error`, so that the blanket `From`
/// below can exist (as with `anyhow::Error`).
#[derive(Debug)]
pub enum JobError {
    /// Try again later: after `delay`, or after the kind's backoff when `None`. The last
    /// attempt's retry dead-letters the job (`attempts_exhausted`).
    Retry {
        /// What went wrong.
        error: BoxError,
        /// The handler's own delay, overriding the backoff.
        delay: Option<Duration>,
    },
    /// Give up now, whatever attempts remain: `dead_letter` with this reason.
    DeadLetter {
        /// Why (stored as `dead_letter_reason`).
        reason: String,
        /// What went wrong.
        error: BoxError,
    },
    /// Not now: run again after the delay without spending an attempt.
    Snooze(Duration),
}

impl<E: Into<BoxError>> From<E> for JobError {
    fn from(error: E) -> Self {
        JobError::Retry {
            error: error.into(),
            delay: None,
        }
    }
}

impl JobError {
    /// Retry after a delay of the handler's choosing.
    pub fn retry_after(error: impl Into<BoxError>, delay: Duration) -> Self {
        JobError::Retry {
            error: error.into(),
            delay: Some(delay),
        }
    }

    /// A permanent failure: dead-lettered at once with reason `permanent`.
    pub fn permanent(error: impl Into<BoxError>) -> Self {
        JobError::DeadLetter {
            reason: "permanent".to_owned(),
            error: error.into(),
        }
    }
}

/// What a running job knows about itself, and how it hears that it should stop.
#[derive(Clone, Debug)]
pub struct JobContext {
    pub(crate) id: JobId,
    pub(crate) queue: Arc<str>,
    pub(crate) attempt: i32,
    pub(crate) max_attempts: i32,
    pub(crate) run_at: DateTime<Utc>,
    pub(crate) expires_at: Option<DateTime<Utc>>,
    pub(crate) replays: i32,
    pub(crate) cancel: CancellationToken,
    pub(crate) deadline: Arc<Mutex<Instant>>,
    /// The worker and the claim's token: the fence of [`JobContext::complete_in`].
    pub(crate) worker_id: uuid::Uuid,
    pub(crate) token: Option<uuid::Uuid>,
    /// Set once [`JobContext::complete_in`] wrote the completion in the handler's
    /// transaction.
    pub(crate) completed_in_tx: Arc<AtomicBool>,
}

impl JobContext {
    /// Completes this job inside the handler's own transaction (River's `JobCompleteTx`):
    /// the job is `completed` exactly when that transaction commits, together with the
    /// handler's own writes, and not at all if it rolls back. The claim's token fences it:
    /// a run that no longer holds its job (its lease lapsed and it was rescued, perhaps run
    /// elsewhere) gets an error, and must not commit.
    ///
    /// ```no_run
    /// # async fn handler(pool: sqlx::PgPool, ctx: docket_worker::JobContext) -> Result<(), docket_worker::JobError> {
    /// let mut tx = pool.begin().await?;
    /// sqlx::query("update invoices set sent = true where id = 7").execute(&mut *tx).await?;
    /// ctx.complete_in(&mut tx).await?; // fenced: refused when this run lost the job
    /// tx.commit().await?;
    /// Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// A retry when this run no longer holds the job, or when the database fails.
    pub async fn complete_in(&self, tx: &mut sqlx::PgConnection) -> Result<(), JobError> {
        let Some(token) = self.token else {
            return Err(JobError::from("this run holds no claim to complete"));
        };
        let held =
            docket_queue::outcome::complete_on(tx, self.worker_id, self.id, self.attempt, token)
                .await
                .map_err(JobError::from)?;
        if !held {
            return Err(JobError::from(
                "this run no longer holds the job (its lease lapsed, or it was handed back): \
                 roll back",
            ));
        }
        self.completed_in_tx.store(true, Ordering::Release);
        Ok(())
    }

    /// The job's id.
    pub fn id(&self) -> JobId {
        self.id
    }

    /// The queue it runs on.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// This attempt's number, 1 for the first.
    pub fn attempt(&self) -> i32 {
        self.attempt
    }

    /// The attempts the job has in all.
    pub fn max_attempts(&self) -> i32 {
        self.max_attempts
    }

    /// When the job was due: for a schedule's tick, the tick's instant.
    pub fn run_at(&self) -> DateTime<Utc> {
        self.run_at
    }

    /// The job's expiry: work that is worthless after it (a sign-in link) should not
    /// finish past it.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.expires_at
    }

    /// How many times an operator replayed the job before this run: an operator's word
    /// recorded. A handler that must not redo on its own what an earlier run settled (an
    /// email that may have been sent) compares it with the count it recorded then; finding
    /// its own earlier result is no evidence of a replay, since a job also runs again when
    /// handed back, rescued or retried.
    pub fn replays(&self) -> i32 {
        self.replays
    }

    /// Whether the job should stop: an operator cancelled it, its timeout passed, or the
    /// worker is shutting down and the grace period is over.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Completes when the job should stop; `select!` on it in long loops.
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.cancel.cancelled()
    }

    /// Pushes this attempt's timeout back by `by` from now, for a long job that is still
    /// making progress. The worker's heartbeat keeps the lease; this keeps the timeout
    /// from cutting the job off.
    pub fn extend_timeout(&self, by: Duration) {
        let mut deadline = self
            .deadline
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *deadline = (*deadline).max(Instant::now() + by);
    }
}

#[cfg(test)]
impl JobContext {
    /// A context for a run outside the runtime (unit tests of handlers' plumbing).
    pub(crate) fn for_test() -> JobContext {
        JobContext {
            id: JobId::new(),
            queue: Arc::from("default"),
            attempt: 1,
            max_attempts: 1,
            run_at: Utc::now(),
            expires_at: None,
            replays: 0,
            cancel: CancellationToken::new(),
            deadline: Arc::new(Mutex::new(Instant::now() + Duration::from_secs(60))),
            worker_id: uuid::Uuid::now_v7(),
            token: None,
            completed_in_tx: Arc::new(AtomicBool::new(false)),
        }
    }
}
