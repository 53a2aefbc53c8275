//! The rescuer: frees jobs held by workers whose heartbeat lapsed. Runs in every worker,
//! under an advisory lock so that one works at a time.

use chrono::{DateTime, Utc};
use docket_queue::maintenance::{self, Exclusive};
use sqlx::PgPool;
use tracing::warn;

use crate::events;
use crate::metrics;
use crate::service::{exclusively, RunReport, Service};

pub(crate) struct Rescuer {
    pub(crate) pool: PgPool,
    pub(crate) batch: u32,
}

impl Service for Rescuer {
    const NAME: &'static str = "rescuer";

    async fn run_once(&self, now: Option<DateTime<Utc>>) -> docket_queue::Result<RunReport> {
        let batch = self.batch;
        let total = exclusively(&self.pool, Exclusive::Rescue, move |conn| {
            Box::pin(async move {
                let mut total = 0;
                loop {
                    let rescued =
                        maintenance::rescue_lapsed(docket_queue::pooled_conn(conn), batch, now)
                            .await?;
                    for job in &rescued {
                        warn!(
                            event = events::JOB_RESCUED, job.id = %job.id, job.kind = %job.kind,
                            job.queue = %job.queue, job.attempt = job.attempt, state = %job.state,
                            "worker lease lapsed; job freed"
                        );
                        metrics::job_rescued(&job.queue, &job.kind);
                        if job.state.is_final() {
                            metrics::job_reached(&job.queue, &job.kind, job.state.as_str());
                        }
                    }
                    total += rescued.len();
                    if rescued.len() < batch as usize {
                        return Ok(total);
                    }
                }
            })
        })
        .await?;
        Ok(RunReport::default().count("rescued", total.unwrap_or(0) as u64))
    }
}
