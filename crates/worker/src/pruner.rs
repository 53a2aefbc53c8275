//! The pruner: deletes finished jobs past their retention, in small batches. Runs in every
//! worker, under an advisory lock so that one works at a time.

use std::time::Duration;

use docket_queue::maintenance::{self, Exclusive};
use docket_queue::JobState;
use sqlx::PgPool;

use crate::metrics;
use crate::service::Service;

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

    async fn run_once(&self) -> docket_queue::Result<String> {
        let mut conn = self.pool.acquire().await?;
        if !maintenance::try_take(&mut conn, Exclusive::Prune).await? {
            return Ok(String::new());
        }
        let mut report = Vec::new();
        let result: docket_queue::Result<()> = async {
            for (state, retention) in self.retention {
                let mut deleted = 0;
                loop {
                    let batch =
                        maintenance::prune(&mut *conn, state, retention, self.batch, None).await?;
                    deleted += batch;
                    if batch < u64::from(self.batch) {
                        break;
                    }
                    // Let the hot path breathe between batches.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                if deleted > 0 {
                    metrics::jobs_pruned(state.as_str(), deleted);
                    report.push(format!("{deleted} {state}"));
                }
            }
            let workers = maintenance::prune_workers(&mut *conn, STALE_WORKER_AFTER, None).await?;
            if workers > 0 {
                report.push(format!("{workers} stale worker registrations"));
            }
            Ok(())
        }
        .await;
        maintenance::release(&mut conn, Exclusive::Prune).await?;
        result?;
        Ok(if report.is_empty() {
            String::new()
        } else {
            format!("pruned {}", report.join(", "))
        })
    }
}
