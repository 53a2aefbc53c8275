//! The rescuer: frees jobs held by workers whose heartbeat lapsed. Runs in every worker,
//! under an advisory lock so that one works at a time.

use docket_queue::maintenance::{self, Exclusive};
use sqlx::PgPool;
use tracing::warn;

use crate::events;
use crate::metrics;
use crate::service::Service;

pub(crate) struct Rescuer {
    pub(crate) pool: PgPool,
    pub(crate) batch: u32,
}

impl Service for Rescuer {
    const NAME: &'static str = "rescuer";

    async fn run_once(&self) -> docket_queue::Result<String> {
        let mut conn = self.pool.acquire().await?;
        if !maintenance::try_take(&mut conn, Exclusive::Rescue).await? {
            return Ok(String::new()); // another worker is rescuing
        }
        let mut total = 0;
        let result: docket_queue::Result<()> = async {
            loop {
                let rescued = maintenance::rescue_lapsed(&mut *conn, self.batch, None).await?;
                for job in &rescued {
                    warn!(
                        event = events::JOB_RESCUED, job.id = %job.id, job.kind = %job.kind,
                        job.queue = %job.queue, job.attempt = job.attempt, state = %job.state,
                        "worker lease lapsed; job freed"
                    );
                    metrics::job_rescued(&job.queue, &job.kind);
                }
                total += rescued.len();
                if rescued.len() < self.batch as usize {
                    return Ok(());
                }
            }
        }
        .await;
        maintenance::release(&mut conn, Exclusive::Rescue).await?;
        result?;
        Ok(if total > 0 {
            format!("rescued {total} jobs")
        } else {
            String::new()
        })
    }
}
