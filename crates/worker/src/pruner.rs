//! The pruner: deletes finished jobs past their retention, in small batches. Runs in every
//! worker, under an advisory lock so that one works at a time.

use std::time::Duration;

use chrono::{DateTime, Utc};
use docket_queue::maintenance::{self, Exclusive};
use docket_queue::JobState;
use sqlx::PgPool;

use crate::metrics;
use crate::service::{exclusively, RunReport, Service};

/// How long after its lease lapsed a worker's registration is removed (once the rescuer
/// has freed its jobs): long enough for operators to see that it died.
const STALE_WORKER_AFTER: Duration = Duration::from_secs(3600);

pub(crate) struct Pruner {
    pub(crate) pool: PgPool,
    /// Per finished state, how long its jobs are kept.
    pub(crate) retention: [(JobState, Duration); 3],
    pub(crate) batch: u32,
}

impl Service for Pruner {
    const NAME: &'static str = "pruner";

    async fn run_once(&self, now: Option<DateTime<Utc>>) -> docket_queue::Result<RunReport> {
        let (retention, batch) = (self.retention, self.batch);
        let report = exclusively(&self.pool, Exclusive::Prune, move |conn| {
            Box::pin(async move {
                let mut report = RunReport::default();
                for (state, retention) in retention {
                    let mut deleted = 0;
                    loop {
                        let pruned = maintenance::prune(
                            docket_queue::pooled_conn(conn),
                            state,
                            retention,
                            batch,
                            now,
                        )
                        .await?;
                        deleted += pruned;
                        if pruned < u64::from(batch) {
                            break;
                        }
                        // Let the hot path breathe between batches.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    if deleted > 0 {
                        metrics::jobs_pruned(state.as_str(), deleted);
                        report = report.count(pruned_what(state), deleted);
                    }
                }
                let workers = maintenance::prune_workers(
                    docket_queue::pooled_conn(conn),
                    STALE_WORKER_AFTER,
                    now,
                )
                .await?;
                // A week of tick records is plenty to look back on; last_tick_at alone
                // keeps older ticks from being enqueued again.
                let week_ago = now.unwrap_or_else(chrono::Utc::now) - chrono::Duration::days(7);
                let ticks =
                    docket_queue::cron::prune_ticks(docket_queue::pooled_conn(conn), week_ago)
                        .await?;
                Ok(report
                    .count("pruned stale worker registrations", workers)
                    .count("pruned schedule ticks", ticks))
            })
        })
        .await?
        .unwrap_or_default();
        Ok(report)
    }
}

/// How a prune count reads in the report.
fn pruned_what(state: JobState) -> &'static str {
    match state {
        JobState::Completed => "pruned completed",
        JobState::Cancelled => "pruned cancelled",
        _ => "pruned dead letters",
    }
}
