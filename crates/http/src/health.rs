//! The health endpoint's cache around [`docket_queue::health`] (which holds the rules and
//! the words), and the probes every surface runs ([`probes`]): the evaluation runs on a small pool of its own with a statement timeout (busy workers
//! never starve it), is reused briefly so that probes cost the database at most one
//! evaluation a second, serves the last good snapshot (marked stale) when a fresh one
//! cannot be taken, and logs each change of status once.

use std::time::Duration;

use std::sync::Arc;

pub use docket_queue::health::{
    judge, Finding, HealthConfig, HealthReport, Observed, Probe, Verdict, WorkerSummary,
    BACKLOG_THRESHOLD_DEFAULT, CACHE_TTL_DEFAULT, CHECK_TIMEOUT_DEFAULT,
};
use docket_queue::Snapshot;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use tokio::sync::Mutex;
use tokio::time::Instant;

use docket_mail::health::RelayProbe;

use crate::host::{self, HostConfig};
use crate::observe;

/// The contributed checks every surface shows after the queue's own: the mail relay's (for
/// mail sent in `mail`'s mode, when this process knows it), then the host's (disk, backups,
/// restore checks, services). `docket check`, the health document and `/ops` all run these.
pub fn probes(host: &HostConfig, mail: Option<&docket_mail::config::Mode>) -> Vec<Arc<dyn Probe>> {
    let mut probes = database_probes(mail);
    probes.extend(host::probes(host));
    probes
}

/// The contributed checks that judge what a database holds, not the host it runs on (the
/// mail relay's recorded fault, for mail sent in `mail`'s mode when known): with the
/// queue's own, what `docket restore-check` runs on a restored copy.
pub fn database_probes(mail: Option<&docket_mail::config::Mode>) -> Vec<Arc<dyn Probe>> {
    vec![Arc::new(
        mail.map_or_else(RelayProbe::default, RelayProbe::new),
    )]
}

type Cached<T> = std::sync::Mutex<Option<(Instant, T)>>;

/// Evaluates health on its own pool, caches it, and logs status transitions once.
pub struct HealthMonitor {
    pool: PgPool,
    config: HealthConfig,
    /// The contributed checks, run after the queue's own.
    probes: Vec<Arc<dyn Probe>>,
    /// The latest report and when it was made.
    cache: Cached<std::sync::Arc<HealthReport>>,
    /// The last snapshot taken, served (marked stale) when a fresh one cannot be taken.
    last_snapshot: Cached<Snapshot>,
    /// Held by the one request that refreshes; the others get the previous report meanwhile.
    refreshing: Mutex<()>,
    last_status: std::sync::Mutex<Option<Verdict>>,
    /// The queues that have gauges of their own (a bounded number).
    gauged_queues: docket_queue::telemetry::metric::BoundedLabel,
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
    /// statement bounded by the check timeout, running `probes` after the queue's checks.
    pub fn new(pool: &PgPool, config: HealthConfig, probes: Vec<Arc<dyn Probe>>) -> HealthMonitor {
        let timeout_ms = config.check_timeout.as_millis().to_string();
        let options: PgConnectOptions = (*pool.connect_options())
            .clone()
            .options([("statement_timeout", timeout_ms.as_str())]);
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(config.check_timeout)
            .test_before_acquire(false)
            .connect_lazy_with(options);
        HealthMonitor::new_on(pool, config, probes)
    }

    fn new_on(pool: PgPool, config: HealthConfig, probes: Vec<Arc<dyn Probe>>) -> HealthMonitor {
        HealthMonitor {
            pool,
            config,
            probes,
            cache: std::sync::Mutex::new(None),
            last_snapshot: std::sync::Mutex::new(None),
            refreshing: Mutex::new(()),
            last_status: std::sync::Mutex::new(None),
            gauged_queues: docket_queue::telemetry::metric::BoundedLabel::new(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &HealthConfig {
        &self.config
    }

    /// The same monitor (its pool and configuration) running `probes` instead.
    pub fn with_probes(&self, probes: Vec<Arc<dyn Probe>>) -> HealthMonitor {
        HealthMonitor::new_on(self.pool.clone(), self.config.clone(), probes)
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
        let db = observed.is_some().then_some(&self.pool);
        let findings =
            docket_queue::health::probe_all(&self.probes, db, self.config.check_timeout).await;
        let report = std::sync::Arc::new(judge(observed, &self.config).with_findings(findings));
        observe::record_health(&report, &self.gauged_queues);
        self.log_transition(&report);
        store(&self.cache, report.clone());
        report
    }

    /// Reads what the judgement needs; a snapshot that cannot be taken now is replaced by
    /// the last one, with its age.
    async fn observe(&self) -> Option<Observed> {
        let mut observed = docket_queue::health::observe(
            docket_queue::pooled(&self.pool),
            self.config.check_timeout,
        )
        .await?;
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
        let from = last.map_or("none", Verdict::as_str);
        match report.status {
            Verdict::Ok if last.is_some() => {
                tracing::info!(
                    event = docket_queue::telemetry::event::HEALTH_RECOVERED,
                    from,
                    "health is ok again"
                );
            }
            Verdict::Ok => {}
            status => tracing::warn!(
                event = docket_queue::telemetry::event::HEALTH_DEGRADED,
                status = status.as_str(),
                from,
                checks = ?report.checks,
                "health changed"
            ),
        }
        *last = Some(report.status);
    }
}
