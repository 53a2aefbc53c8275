//! Periodic maintenance services: each is a `run_once` plus a ticker that logs a
//! non-empty report and goes on after an error. Only the loop knows about time: it
//! passes `now` (`None` in production: the database's clock), and spreads its ticks by a
//! little jitter so that many workers started together do not fire together.

use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::time::Duration;

use chrono::{DateTime, Utc};
use docket_queue::maintenance::{self, Exclusive};
use docket_queue::{ErrorChain, Pooler};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::events;

/// What one run did, as counts by what (`rescued 3, parked 2`); empty when it did nothing,
/// and then nothing is logged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RunReport(Vec<(&'static str, u64)>);

impl RunReport {
    /// Adds a count; zero counts are left out.
    pub(crate) fn count(mut self, what: &'static str, n: u64) -> Self {
        if n > 0 {
            self.0.push((what, n));
        }
        self
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, (what, n)) in self.0.iter().enumerate() {
            let sep = if index == 0 { "" } else { ", " };
            write!(f, "{sep}{what} {n}")?;
        }
        Ok(())
    }
}

/// A periodic service.
pub(crate) trait Service: Send + Sync + 'static {
    /// The name used in logs.
    const NAME: &'static str;

    /// One run at `now` (`None`: the database's clock; tests fix it).
    fn run_once(
        &self,
        now: Option<DateTime<Utc>>,
    ) -> impl Future<Output = docket_queue::Result<RunReport>> + Send;
}

/// The future of a piece of work on one borrowed connection.
pub(crate) type ConnFuture<'c, T> =
    Pin<Box<dyn Future<Output = docket_queue::Result<T>> + Send + 'c>>;

/// Runs `work` on one connection while holding `task`'s advisory lock, so that however many
/// workers run the service, one works at a time. `Ok(None)` when another worker holds the
/// lock (it is doing this work). The lock is released whether the work succeeds or not;
/// should the connection die first, the lock dies with it.
///
/// Behind a transaction-mode pooler a session's lock would stay on a server connection other
/// clients go on to use, so there the lock is the transaction's and the work runs inside
/// that transaction (all of it, or nothing of it, is written).
pub(crate) async fn exclusively<T>(
    pool: &PgPool,
    task: Exclusive,
    work: impl for<'c> FnOnce(&'c mut PgConnection) -> ConnFuture<'c, T>,
) -> docket_queue::Result<Option<T>> {
    let mut conn = pool.acquire().await?;
    if docket_queue::pooler::mode() == Pooler::Transaction {
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        if !maintenance::try_take_in_transaction(&mut tx, task).await? {
            return Ok(None);
        }
        let result = work(&mut tx).await?;
        tx.commit().await?;
        return Ok(Some(result));
    }
    if !maintenance::try_take(&mut conn, task).await? {
        return Ok(None);
    }
    let result = work(&mut conn).await;
    maintenance::release(&mut conn, task).await?;
    result.map(Some)
}

impl<S: Service> Service for std::sync::Arc<S> {
    const NAME: &'static str = S::NAME;

    fn run_once(
        &self,
        now: Option<DateTime<Utc>>,
    ) -> impl Future<Output = docket_queue::Result<RunReport>> + Send {
        S::run_once(self, now)
    }
}

/// How much a tick may move either way: a tenth of the interval.
pub(crate) const JITTER: f64 = 0.1;

/// `interval` moved by up to ±10%, at random.
fn jittered(interval: Duration) -> Duration {
    // A random u64 without a dependency: the std hasher's keys are random per process,
    // and a fresh state per call gives a fresh value.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let unit = (random as f64 / u64::MAX as f64) * 2.0 - 1.0; // -1.0 ..= 1.0
    interval.mul_f64(1.0 + JITTER * unit)
}

/// Runs `service` at once, then every `interval` (±10%) after each run's start, until
/// `stop` is cancelled. A run longer than the interval is followed by the next at once.
pub(crate) async fn run_periodic<S: Service>(
    service: S,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut next = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep_until(next) => {}
        }
        next += jittered(interval);
        // A run stuck on the database must not hold up shutdown.
        let result = tokio::select! {
            () = stop.cancelled() => return,
            result = service.run_once(None) => result,
        };
        next = next.max(tokio::time::Instant::now());
        match result {
            Ok(report) if report.is_empty() => {}
            Ok(report) => info!(
                event = events::MAINTENANCE_RUN,
                service = S::NAME,
                %report,
                "maintenance run"
            ),
            Err(err) => error!(
                event = events::WORKER_ERROR, service = S::NAME,
                error.message = %err, error.cause_chain = %ErrorChain(&err), "maintenance run failed"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_lists_its_nonzero_counts_in_order() {
        let report = RunReport::default()
            .count("rescued", 3)
            .count("expired", 0)
            .count("parked", 2);
        assert_eq!(report.to_string(), "rescued 3, parked 2");
        assert!(RunReport::default().count("pruned", 0).is_empty());
    }

    #[test]
    fn jitter_stays_within_a_tenth_of_the_interval_and_varies() {
        let interval = Duration::from_secs(10);
        let ticks: Vec<Duration> = (0..200).map(|_| jittered(interval)).collect();
        assert!(ticks
            .iter()
            .all(|t| *t >= Duration::from_secs(9) && *t <= Duration::from_secs(11)));
        assert!(ticks.iter().any(|t| *t != ticks[0]), "the ticks vary");
    }
}
