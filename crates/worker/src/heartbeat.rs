//! The heartbeat: renews this worker's registration, and with it the worker's lease on every
//! job it holds (stored as `lease_expires_at`, this worker's own lease timeout from
//! now). A worker runs jobs only while it can prove its lease held without a gap: when it
//! cannot renew the lease for almost as long as the lease lasts, or finds that the lease
//! may have lapsed meanwhile (the process was stopped or starved for longer than the
//! lease, or the database says so), it stops and hands back every run, since another
//! worker may have rescued them, and claims again only once nothing from before is held: a
//! job never runs on two workers at once.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use docket_queue::maintenance::{self, WorkerInfo};
use sqlx::PgPool;
use tokio::time::Instant;
use tracing::{error, info};

use crate::events;
use crate::lease::{lease_had_gap, must_release, Holdings, Lease};
use crate::service::{RunReport, Service};

pub(crate) struct Heartbeat {
    pub(crate) pool: PgPool,
    /// The lease, with when the last heartbeat that renewed it without a gap was sent.
    pub(crate) lease: Arc<Lease>,
    pub(crate) worker: WorkerInfo,
    pub(crate) holdings: Arc<Holdings>,
    /// How often it runs: one run may take no longer.
    pub(crate) interval: Duration,
    /// The lease each heartbeat stores.
    pub(crate) lease_timeout: Duration,
}

impl Heartbeat {
    /// Stops and hands back every run, and gives the lease up until a heartbeat renews it
    /// with nothing from before still held.
    fn release(&self, why: &'static str) {
        self.lease.lose();
        let released = self.holdings.release_all();
        if released > 0 {
            error!(
                event = events::LEASE_LOST,
                jobs = released,
                "{why}; stopping and handing back its running jobs"
            );
        }
    }
}

impl Service for Heartbeat {
    const NAME: &'static str = "heartbeat";

    async fn run_once(&self, now: Option<DateTime<Utc>>) -> docket_queue::Result<RunReport> {
        let sent_at = Instant::now();
        let confirmed = self.lease.confirmed_sent_at();
        if lease_had_gap(sent_at - confirmed, self.lease_timeout) {
            // This process was stopped or starved for longer than the lease: it may have
            // lapsed already. Stop before anything else (the beat's round trip included).
            self.release("this worker's lease may have lapsed while it was stalled");
        }
        // A heartbeat slower than its interval counts as failed: a hung database must not
        // keep us running jobs on a lease that is running out.
        let beat = async {
            // The maintenance pool's other connections may be dead too (a terminated
            // backend, a restart): try each, within the interval, before the beat fails.
            loop {
                match maintenance::heartbeat(
                    docket_queue::pooled(&self.pool),
                    &self.worker,
                    self.lease_timeout,
                    now,
                )
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
        match result {
            Ok(renewal) => {
                // The new lease was stamped no later than now; the old one lasted at least
                // the lease timeout from `confirmed`. Either clock may show the gap: this
                // process's (a stop longer than the lease), or the database's.
                if lease_had_gap(confirmed.elapsed(), self.lease_timeout) || renewal.lapsed {
                    self.release("this worker's lease lapsed before it was renewed");
                }
                // Claims resume once every run from before has been handed back.
                let renew = self.holdings.len() == 0;
                if self.lease.confirm(sent_at, renew) {
                    info!(
                        event = events::LEASE_RENEWED,
                        "lease renewed; claiming again"
                    );
                }
                Ok(RunReport::default())
            }
            Err(err) => {
                if must_release(confirmed.elapsed(), self.interval, self.lease_timeout) {
                    self.release("cannot renew this worker's lease");
                }
                Err(err)
            }
        }
    }
}
