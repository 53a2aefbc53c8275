//! The batch tracker: finishes batches whose jobs are all final and enqueues each one's
//! callback, exactly once (see `docket_queue::batch`). Runs in every worker, under an
//! advisory lock so that one works at a time; outcome writes pay nothing for batches.

use chrono::{DateTime, Utc};
use docket_queue::maintenance::Exclusive;
use sqlx::PgPool;
use tracing::info;

use crate::events;
use crate::service::{exclusively, RunReport, Service};

pub(crate) struct BatchTracker {
    pub(crate) pool: PgPool,
    pub(crate) batch: u32,
}

impl Service for BatchTracker {
    const NAME: &'static str = "batch_tracker";

    async fn run_once(&self, _now: Option<DateTime<Utc>>) -> docket_queue::Result<RunReport> {
        let limit = self.batch;
        let finished = exclusively(&self.pool, Exclusive::Batch, move |conn| {
            Box::pin(async move { docket_queue::batch::finish_done(&mut *conn, limit).await })
        })
        .await?
        .unwrap_or_default();
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
        Ok(RunReport::default().count("batches finished", finished.len() as u64))
    }
}
