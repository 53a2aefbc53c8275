//! The parker: moves ready jobs that no live worker can run (their queue and kind are
//! served by nobody) out of the claim's way, and back when a worker that runs them is
//! live. Parked jobs stay ready in every other sense: counted, aged, listed as unhandled.
//! Runs in every worker, under an advisory lock so that one works at a time; the first run
//! comes at start, so a worker's own kinds are unparked at once (unless another worker's
//! parker is running, which unparks them too).

use std::time::Duration;

use chrono::{DateTime, Utc};
use docket_queue::maintenance::{self, Exclusive};
use sqlx::PgPool;
use tracing::warn;

use crate::events;
use crate::service::{exclusively, RunReport, Service};

/// How many of each queue's oldest ready jobs one run looks at.
const SCAN_PER_QUEUE: u32 = 10_000;

pub(crate) struct Parker {
    pub(crate) pool: PgPool,
    /// Ready this long with no live worker for the kind: parked.
    pub(crate) park_after: Duration,
    pub(crate) batch: u32,
}

impl Service for Parker {
    const NAME: &'static str = "parker";

    async fn run_once(&self, now: Option<DateTime<Utc>>) -> docket_queue::Result<RunReport> {
        let (batch, park_after) = (self.batch, self.park_after);
        let done = exclusively(&self.pool, Exclusive::Park, move |conn| {
            Box::pin(async move {
                let mut unparked = 0;
                loop {
                    let freed =
                        maintenance::unpark_handled(docket_queue::pooled_conn(conn), batch, now)
                            .await?;
                    unparked += freed;
                    if freed < u64::from(batch) {
                        break;
                    }
                }
                let parked = maintenance::park_unhandled(
                    docket_queue::pooled_conn(conn),
                    park_after,
                    SCAN_PER_QUEUE,
                    batch,
                    now,
                )
                .await?;
                let mut pairs: Vec<_> = parked.iter().collect();
                pairs.sort();
                pairs.dedup();
                for (queue, kind) in pairs {
                    warn!(
                        event = events::JOBS_PARKED, job.queue = %queue, job.kind = %kind,
                        "ready jobs of a kind no live worker runs on this queue were parked"
                    );
                }
                Ok((unparked, parked.len()))
            })
        })
        .await?;
        let (unparked, parked) = done.unwrap_or_default();
        Ok(RunReport::default()
            .count("parked (no live worker)", parked as u64)
            .count("unparked", unparked))
    }
}
