//! The batch tracker: finishes batches whose jobs are all final and enqueues each one's
//! callback, exactly once (see `docket_queue::batch`). Runs in every worker, under an
//! advisory lock so that one works at a time; outcome writes pay nothing for batches.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use docket_queue::maintenance::Exclusive;
use sqlx::PgPool;
use tracing::info;

use crate::events;
use crate::service::{exclusively, RunReport, Service};

/// How often the progress of open batches is logged (counting a big batch's jobs is not
/// free, so not every run).
const PROGRESS_EVERY: Duration = Duration::from_secs(15);

/// How many open batches a progress report covers, newest first.
const PROGRESS_BATCHES: u32 = 20;

pub(crate) struct BatchTracker {
    pub(crate) pool: PgPool,
    pub(crate) batch: u32,
    /// When progress was last logged.
    pub(crate) progress_logged: Mutex<Option<Instant>>,
}

impl BatchTracker {
    /// Logs the progress of open batches, at most every [`PROGRESS_EVERY`].
    async fn log_progress(&self) -> docket_queue::Result<()> {
        {
            let mut last = self
                .progress_logged
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.is_some_and(|at| at.elapsed() < PROGRESS_EVERY) {
                return Ok(());
            }
            *last = Some(Instant::now());
        }
        let open =
            docket_queue::batch::list(docket_queue::pooled(&self.pool), PROGRESS_BATCHES).await?;
        for batch in open.iter().filter(|b| b.finished_at.is_none()) {
            info!(
                event = events::BATCH_PROGRESS, batch.id = %batch.id, total = batch.total,
                completed = batch.completed, dead_letter = batch.dead_letter,
                cancelled = batch.cancelled, remaining = batch.remaining, "batch progress"
            );
        }
        Ok(())
    }
}

impl Service for BatchTracker {
    const NAME: &'static str = "batch_tracker";

    async fn run_once(&self, _now: Option<DateTime<Utc>>) -> docket_queue::Result<RunReport> {
        let limit = self.batch;
        let finished = exclusively(&self.pool, Exclusive::Batch, move |conn| {
            Box::pin(async move {
                docket_queue::batch::finish_done(docket_queue::pooled_conn(conn), limit).await
            })
        })
        .await?;
        let Some(finished) = finished else {
            return Ok(RunReport::default()); // another worker is tracking
        };
        for batch in &finished {
            info!(
                event = events::BATCH_COMPLETED, batch.id = %batch.id, total = batch.total,
                completed = batch.completed, dead_letter = batch.dead_letter,
                cancelled = batch.cancelled, "batch finished"
            );
            if let Some(job) = batch.callback_job_id {
                info!(
                    event = events::BATCH_CALLBACK_ENQUEUED, batch.id = %batch.id, job.id = %job,
                    "batch callback enqueued"
                );
            }
        }
        // Only the worker holding the lock reports progress, so it is logged once.
        self.log_progress().await?;
        Ok(RunReport::default().count("batches finished", finished.len() as u64))
    }
}
