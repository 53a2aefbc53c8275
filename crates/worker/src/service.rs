//! Periodic maintenance services: each is a `run_once` plus a ticker that logs a
//! non-empty report and goes on after an error. Only the loop knows about time.

use std::future::Future;
use std::time::Duration;

use std::pin::Pin;

use docket_queue::maintenance::{self, Exclusive};
use docket_queue::ErrorChain;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::events;

/// A periodic service.
pub(crate) trait Service: Send + Sync + 'static {
    /// The name used in logs.
    const NAME: &'static str;

    /// One run. Returns a report for the log, empty when there was nothing to do.
    fn run_once(&self) -> impl Future<Output = docket_queue::Result<String>> + Send;
}

/// The future of a piece of work on one borrowed connection.
pub(crate) type ConnFuture<'c, T> =
    Pin<Box<dyn Future<Output = docket_queue::Result<T>> + Send + 'c>>;

/// Runs `work` on one connection while holding `task`'s advisory lock, so that however many
/// workers run the service, one works at a time. `Ok(None)` when another worker holds the
/// lock (it is doing this work). The lock is released whether the work succeeds or not;
/// should the connection die first, the lock dies with it.
pub(crate) async fn exclusively<T>(
    pool: &PgPool,
    task: Exclusive,
    work: impl for<'c> FnOnce(&'c mut PgConnection) -> ConnFuture<'c, T>,
) -> docket_queue::Result<Option<T>> {
    let mut conn = pool.acquire().await?;
    if !maintenance::try_take(&mut conn, task).await? {
        return Ok(None);
    }
    let result = work(&mut conn).await;
    maintenance::release(&mut conn, task).await?;
    result.map(Some)
}

impl<S: Service> Service for std::sync::Arc<S> {
    const NAME: &'static str = S::NAME;

    fn run_once(&self) -> impl Future<Output = docket_queue::Result<String>> + Send {
        S::run_once(self)
    }
}

/// Runs `service` every `interval` (first run at once) until `stop` is cancelled.
pub(crate) async fn run_periodic<S: Service>(
    service: S,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        // A run stuck on the database must not hold up shutdown.
        let result = tokio::select! {
            () = stop.cancelled() => return,
            result = service.run_once() => result,
        };
        match result {
            Ok(report) if report.is_empty() => {}
            Ok(report) => info!(
                event = events::MAINTENANCE_RUN,
                service = S::NAME,
                "{report}"
            ),
            Err(err) => error!(
                event = events::WORKER_ERROR, service = S::NAME,
                error.message = %err, error.cause_chain = %ErrorChain(&err), "maintenance run failed"
            ),
        }
    }
}
