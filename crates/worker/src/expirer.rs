//! The expiry sweep: dead-letters ready jobs past their `expires_at`, so that they are
//! seen (and counted) as expired as soon as they expire. Claims never hand them out either
//! way; the sweep keeps them from piling up in front of the claim. Runs in every worker,
//! under an advisory lock so that one works at a time.

use chrono::{DateTime, Utc};
use docket_queue::maintenance::{self, Exclusive};
use sqlx::PgPool;
use tracing::warn;

use crate::events;
use crate::metrics;
use crate::service::{exclusively, RunReport, Service};

pub(crate) struct Expirer {
    pub(crate) pool: PgPool,
    pub(crate) batch: u32,
}

impl Service for Expirer {
    const NAME: &'static str = "expirer";

    async fn run_once(&self, now: Option<DateTime<Utc>>) -> docket_queue::Result<RunReport> {
        let batch = self.batch;
        let total = exclusively(&self.pool, Exclusive::Expire, move |conn| {
            Box::pin(async move {
                let mut total = 0;
                loop {
                    let expired =
                        maintenance::expire(docket_queue::pooled_conn(conn), batch, now).await?;
                    for job in &expired {
                        warn!(
                            event = events::JOB_EXPIRED, job.id = %job.id, job.kind = %job.kind,
                            job.queue = %job.queue, job.attempt = job.attempt, reason = "expired",
                            "job expired before it could start; dead-lettered"
                        );
                        metrics::job_reached(&job.queue, &job.kind, job.state.as_str());
                    }
                    total += expired.len();
                    if expired.len() < batch as usize {
                        return Ok(total);
                    }
                }
            })
        })
        .await?;
        Ok(RunReport::default().count("expired", total.unwrap_or(0) as u64))
    }
}
