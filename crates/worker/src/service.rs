//! Periodic maintenance services: each is a `run_once` plus a ticker that logs a
//! non-empty report and goes on after an error. Only the loop knows about time.

use std::future::Future;
use std::time::Duration;

use docket_queue::ErrorChain;
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
