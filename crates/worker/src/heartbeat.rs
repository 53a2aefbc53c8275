//! The heartbeat: renews this worker's registration (its lease on every job it holds) and
//! picks up operators' cancel requests for its running jobs. When it cannot renew the lease
//! for almost as long as the lease lasts, it stops and hands back every running job, since
//! another worker may be about to rescue them: a job never runs on two workers at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use docket_queue::maintenance::{self, WorkerInfo};
use sqlx::PgPool;
use tokio::time::Instant;
use tracing::{error, info};

use crate::events;
use crate::executor::Running;
use crate::service::Service;

/// Whether this worker's lease is held: producers claim only while it is.
#[derive(Debug)]
pub(crate) struct Lease {
    held: AtomicBool,
}

impl Default for Lease {
    fn default() -> Self {
        // Registration at start is the first heartbeat.
        Lease {
            held: AtomicBool::new(true),
        }
    }
}

impl Lease {
    pub(crate) fn is_held(&self) -> bool {
        self.held.load(Ordering::Relaxed)
    }
}

pub(crate) struct Heartbeat {
    pub(crate) pool: PgPool,
    pub(crate) lease: Arc<Lease>,
    pub(crate) worker: WorkerInfo,
    pub(crate) running: Arc<Running>,
    /// How often it runs: one run may take no longer.
    pub(crate) interval: Duration,
    /// The lease it renews.
    pub(crate) lease_timeout: Duration,
    /// When the lease was last renewed.
    pub(crate) renewed_at: Mutex<Instant>,
}

impl Heartbeat {
    pub(crate) fn new(
        pool: PgPool,
        lease: Arc<Lease>,
        worker: WorkerInfo,
        running: Arc<Running>,
        interval: Duration,
        lease_timeout: Duration,
    ) -> Self {
        Heartbeat {
            pool,
            lease,
            worker,
            running,
            interval,
            lease_timeout,
            renewed_at: Mutex::new(Instant::now()),
        }
    }

    async fn beat(&self) -> docket_queue::Result<()> {
        maintenance::heartbeat(&self.pool, &self.worker, None).await?;
        *self
            .renewed_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Instant::now();
        if !self.lease.held.swap(true, Ordering::Relaxed) {
            info!(
                event = events::LEASE_RENEWED,
                "lease renewed; claiming again"
            );
        }
        let requested = maintenance::cancel_requested(&self.pool, self.worker.id).await?;
        if !requested.is_empty() {
            let stopped = self.running.cancel(&requested);
            info!(
                event = events::JOB_CANCELLED,
                count = stopped,
                "stopping jobs an operator cancelled"
            );
        }
        Ok(())
    }
}

impl Service for Heartbeat {
    const NAME: &'static str = "heartbeat";

    async fn run_once(&self) -> docket_queue::Result<String> {
        // A heartbeat slower than its interval counts as failed: a hung database must not
        // keep us running jobs on a lease that is running out.
        let result = match tokio::time::timeout(self.interval, self.beat()).await {
            Ok(result) => result,
            Err(_) => Err(docket_queue::Error::Database(sqlx::Error::PoolTimedOut)),
        };
        if result.is_err() {
            let renewed_at = *self
                .renewed_at
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // Release one interval early, so the jobs are stopped before any rescuer sees
            // the lease lapse.
            if renewed_at.elapsed() + self.interval >= self.lease_timeout {
                self.lease.held.store(false, Ordering::Relaxed);
                let released = self.running.release_all();
                if released > 0 {
                    error!(
                        event = events::LEASE_LOST, jobs = released,
                        "cannot renew this worker's lease; stopping and handing back its running jobs"
                    );
                }
            }
        }
        result.map(|()| String::new())
    }
}
