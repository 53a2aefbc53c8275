//! The heartbeat: renews this worker's registration (its lease on every job it holds) and
//! picks up operators' cancel requests for its running jobs.

use std::sync::Arc;

use docket_queue::maintenance::{self, WorkerInfo};
use sqlx::PgPool;
use tracing::info;

use crate::events;
use crate::executor::Running;
use crate::service::Service;

pub(crate) struct Heartbeat {
    pub(crate) pool: PgPool,
    pub(crate) worker: WorkerInfo,
    pub(crate) running: Arc<Running>,
}

impl Service for Heartbeat {
    const NAME: &'static str = "heartbeat";

    async fn run_once(&self) -> docket_queue::Result<String> {
        maintenance::heartbeat(&self.pool, &self.worker, None).await?;
        let requested = maintenance::cancel_requested(&self.pool, self.worker.id).await?;
        if !requested.is_empty() {
            let stopped = self.running.cancel(&requested);
            info!(
                event = events::JOB_CANCELLED,
                count = stopped,
                "stopping jobs an operator cancelled"
            );
        }
        Ok(String::new())
    }
}
