//! The heartbeat: renews this worker's registration, and with it the worker's lease on
//! every job it holds (stored as `lease_expires_at`, this worker's own lease timeout from
//! now). When it cannot renew the lease for almost as long as the lease lasts, it stops and
//! hands back every held job, since another worker may be about to rescue them: a job
//! never runs on two workers at once.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use docket_queue::maintenance::{self, WorkerInfo};
use sqlx::PgPool;
use tokio::time::Instant;
use tracing::{error, info};

use crate::events;
use crate::lease::{must_release, Holdings, Lease};
use crate::service::{RunReport, Service};

pub(crate) struct Heartbeat {
    pub(crate) pool: PgPool,
    pub(crate) lease: Arc<Lease>,
    pub(crate) worker: WorkerInfo,
    pub(crate) holdings: Arc<Holdings>,
    /// How often it runs: one run may take no longer.
    pub(crate) interval: Duration,
    /// The lease each heartbeat stores.
    pub(crate) lease_timeout: Duration,
    /// When the last heartbeat that succeeded was sent: the database stamped the lease no
    /// earlier than that, so the lease surely lasts until then plus `lease_timeout`.
    pub(crate) renewed_sent_at: Mutex<Instant>,
}

impl Heartbeat {
    /// A heartbeat whose lease was just renewed (by the registration at start).
    pub(crate) fn new(
        pool: PgPool,
        lease: Arc<Lease>,
        worker: WorkerInfo,
        holdings: Arc<Holdings>,
        interval: Duration,
        lease_timeout: Duration,
        registered_at: Instant,
    ) -> Self {
        Heartbeat {
            pool,
            lease,
            worker,
            holdings,
            interval,
            lease_timeout,
            renewed_sent_at: Mutex::new(registered_at),
        }
    }
}

impl Service for Heartbeat {
    const NAME: &'static str = "heartbeat";

    async fn run_once(&self, now: Option<DateTime<Utc>>) -> docket_queue::Result<RunReport> {
        let sent_at = Instant::now();
        // A heartbeat slower than its interval counts as failed: a hung database must not
        // keep us running jobs on a lease that is running out.
        let beat = async {
            // The maintenance pool's other connections may be dead too (a terminated
            // backend, a restart): try each, within the interval, before the beat fails.
            loop {
                match maintenance::heartbeat(&self.pool, &self.worker, self.lease_timeout, now)
                    .await
                {
                    Err(err) if err.is_lost_connection() => {
                        tokio::time::sleep(crate::retry::LOST_CONNECTION_RETRY).await;
                    }
                    result => return result,
                }
            }
        };
        let result = match tokio::time::timeout(self.interval, beat).await {
            Ok(result) => result,
            Err(_) => Err(docket_queue::Error::TimedOut {
                what: "heartbeat",
                after: self.interval,
            }),
        };
        let mut renewed = self
            .renewed_sent_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if result.is_ok() {
            *renewed = sent_at;
            drop(renewed);
            if self.lease.renew() {
                info!(
                    event = events::LEASE_RENEWED,
                    "lease renewed; claiming again"
                );
            }
        } else if must_release(renewed.elapsed(), self.interval, self.lease_timeout) {
            drop(renewed);
            self.lease.lose();
            let released = self.holdings.release_all();
            if released > 0 {
                error!(
                    event = events::LEASE_LOST,
                    jobs = released,
                    "cannot renew this worker's lease; stopping and handing back its running jobs"
                );
            }
        }
        result.map(|()| RunReport::default())
    }
}
