//! The health endpoint's cache around [`docket_queue::health`] (which holds the rules):
//! the evaluation runs on a small pool of its own with a statement timeout (busy workers
//! never starve it), is reused briefly so that probes cost the database at most one
//! evaluation a second, serves the last good snapshot (marked stale) when a fresh one
//! cannot be taken, and logs each change of status once.

use std::time::Duration;

pub use docket_queue::health::{
    judge, Check, Checks, HealthConfig, HealthReport, Observed, Status, WorkerSummary,
    BACKLOG_THRESHOLD_DEFAULT, CACHE_TTL_DEFAULT, CHECK_TIMEOUT_DEFAULT,
};
use docket_queue::Snapshot;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::observe;

type Cached<T> = std::sync::Mutex<Option<(Instant, T)>>;

/// Evaluates health on its own pool, caches it, and logs status transitions once.
pub struct HealthMonitor {
    pool: PgPool,
    config: HealthConfig,
    /// The latest report and when it was made.
    cache: Cached<std::sync::Arc<HealthReport>>,
    /// The last snapshot taken, served (marked stale) when a fresh one cannot be taken.
    last_snapshot: Cached<Snapshot>,
    /// Held by the one request that refreshes; the others get the previous report meanwhile.
    refreshing: Mutex<()>,
    last_status: std::sync::Mutex<Option<Status>>,
}

fn read<T: Clone>(cached: &Cached<T>, ttl: Duration) -> (Option<T>, bool) {
    let guard = cached
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match guard.as_ref() {
        Some((at, value)) => (Some(value.clone()), at.elapsed() < ttl),
        None => (None, false),
    }
}

fn store<T>(cached: &Cached<T>, value: T) {
    *cached
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((Instant::now(), value));
}

impl HealthMonitor {
    /// A monitor on a two-connection pool built from `pool`'s connection options, each
    /// statement bounded by the check timeout.
    pub fn new(pool: &PgPool, config: HealthConfig) -> HealthMonitor {
        let timeout_ms = config.check_timeout.as_millis().to_string();
        let options: PgConnectOptions = (*pool.connect_options())
            .clone()
            .options([("statement_timeout", timeout_ms.as_str())]);
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(config.check_timeout)
            .test_before_acquire(false)
            .connect_lazy_with(options);
        HealthMonitor {
            pool,
            config,
            cache: std::sync::Mutex::new(None),
            last_snapshot: std::sync::Mutex::new(None),
            refreshing: Mutex::new(()),
            last_status: std::sync::Mutex::new(None),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &HealthConfig {
        &self.config
    }

    /// Forgets the cached report, so that the next one is evaluated anew: after an
    /// operator's action, the page shows its effect rather than the state before it.
    pub fn invalidate(&self) {
        *self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    /// The current report: the cached one while fresh; otherwise one request evaluates
    /// anew while the others are answered with the previous report, so a slow evaluation
    /// never holds up every probe.
    pub async fn report(&self) -> std::sync::Arc<HealthReport> {
        let (cached, fresh) = read(&self.cache, self.config.cache_ttl);
        if let (Some(report), true) = (&cached, fresh) {
            return report.clone();
        }
        let _refreshing = match (self.refreshing.try_lock(), cached) {
            (Ok(guard), _) => guard,
            (Err(_), Some(stale)) => return stale,
            (Err(_), None) => {
                let guard = self.refreshing.lock().await;
                if let (Some(report), true) = read(&self.cache, self.config.cache_ttl) {
                    return report;
                }
                guard
            }
        };
        let observed = self.observe().await;
        let report = std::sync::Arc::new(judge(observed, &self.config));
        observe::record_health(&report);
        self.log_transition(&report);
        store(&self.cache, report.clone());
        report
    }

    /// Reads what the judgement needs; a snapshot that cannot be taken now is replaced by
    /// the last one, with its age.
    async fn observe(&self) -> Option<Observed> {
        let mut observed =
            docket_queue::health::observe(&self.pool, self.config.check_timeout).await?;
        match &observed.snapshot {
            Some((snapshot, _)) => store(&self.last_snapshot, snapshot.clone()),
            None => observed.snapshot = self.last_snapshot_with_age(),
        }
        Some(observed)
    }

    fn last_snapshot_with_age(&self) -> Option<(Snapshot, Option<f64>)> {
        let guard = self
            .last_snapshot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        guard
            .as_ref()
            .map(|(at, snapshot)| (snapshot.clone(), Some(at.elapsed().as_secs_f64())))
    }

    fn log_transition(&self, report: &HealthReport) {
        let mut last = self
            .last_status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *last == Some(report.status) {
            return;
        }
        let from = last.map_or("none", |s| status_name(s));
        match report.status {
            Status::Ok if last.is_some() => {
                tracing::info!(
                    event = docket_queue::telemetry::event::HEALTH_RECOVERED,
                    from,
                    "health is ok again"
                );
            }
            Status::Ok => {}
            status => tracing::warn!(
                event = docket_queue::telemetry::event::HEALTH_DEGRADED,
                status = status_name(status),
                from,
                checks = ?report.checks,
                "health changed"
            ),
        }
        *last = Some(report.status);
    }
}

fn status_name(status: Status) -> &'static str {
    match status {
        Status::Ok => "ok",
        Status::Degraded => "degraded",
        Status::Down => "down",
    }
}
