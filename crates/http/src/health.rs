//! The health evaluation: database, workers, backlog, dead letters and unhandled kinds,
//! judged against configurable thresholds. It runs on a small pool of its own with a short
//! timeout (a hung database gives `down`, never a hung probe; busy workers never starve it)
//! and is cached briefly, so that probes cost the database at most one evaluation a second.

use std::time::Duration;

use chrono::Utc;
use docket_queue::workers::{self, UnhandledKind, Worker};
use docket_queue::Snapshot;
use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use tokio::sync::Mutex;
use tokio::time::Instant;
use uuid::Uuid;

use crate::observe;

/// Oldest ready age above which the backlog is degraded (the monitors' alert value).
pub const BACKLOG_THRESHOLD_DEFAULT: Duration = Duration::from_secs(300);
/// A worker whose heartbeat is older than this does not count as live.
pub const WORKER_STALE_AFTER_DEFAULT: Duration = Duration::from_secs(30);
/// How long the database check may take before it counts as down.
pub const CHECK_TIMEOUT_DEFAULT: Duration = Duration::from_secs(2);
/// How long an evaluation is reused.
pub const CACHE_TTL_DEFAULT: Duration = Duration::from_secs(1);
/// How long a job must have been ready before its kind counts as unhandled.
pub const UNHANDLED_AFTER_DEFAULT: Duration = Duration::from_secs(60);

/// Thresholds and timings of the health evaluation.
#[derive(Clone, Debug)]
pub struct HealthConfig {
    /// Backlog degraded above this oldest ready age. Default [`BACKLOG_THRESHOLD_DEFAULT`].
    pub backlog_threshold: Duration,
    /// Workers degraded when jobs are ready and no heartbeat is younger than this. Default
    /// [`WORKER_STALE_AFTER_DEFAULT`].
    pub worker_stale_after: Duration,
    /// Database check timeout. Default [`CHECK_TIMEOUT_DEFAULT`].
    pub check_timeout: Duration,
    /// Evaluation reuse. Default [`CACHE_TTL_DEFAULT`].
    pub cache_ttl: Duration,
    /// Ready this long with no live worker for the kind: unhandled. Default
    /// [`UNHANDLED_AFTER_DEFAULT`].
    pub unhandled_after: Duration,
    /// Whether dead letters degrade the status (otherwise they are a `warn` check only).
    /// Default `false`.
    pub dead_letter_degrades: bool,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            backlog_threshold: BACKLOG_THRESHOLD_DEFAULT,
            worker_stale_after: WORKER_STALE_AFTER_DEFAULT,
            check_timeout: CHECK_TIMEOUT_DEFAULT,
            cache_ttl: CACHE_TTL_DEFAULT,
            unhandled_after: UNHANDLED_AFTER_DEFAULT,
            dead_letter_degrades: false,
        }
    }
}

/// The overall status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Everything within thresholds.
    Ok,
    /// Serving, but something needs attention.
    Degraded,
    /// The database does not answer.
    Down,
}

/// One check's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// Fine.
    Ok,
    /// Worth a look; does not change the status.
    Warn,
    /// Makes the status `degraded`.
    Degraded,
    /// Makes the status `down`.
    Down,
}

/// Every check, by DESIGN.md's names.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Checks {
    /// The database answered within the timeout.
    pub database: Check,
    /// A live worker exists while jobs are ready.
    pub workers: Check,
    /// The oldest ready job is within the backlog threshold.
    pub backlog: Check,
    /// Dead letters: `warn` above zero.
    pub dead_letter: Check,
    /// Ready jobs whose kind no live worker runs.
    pub unhandled_kinds: Check,
}

/// A worker as the health document shows it.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct WorkerSummary {
    /// Its id.
    pub id: Uuid,
    /// Its host.
    pub host: String,
    /// Seconds since its heartbeat.
    pub heartbeat_age_seconds: f64,
    /// The queues it serves.
    pub queues: Vec<String>,
}

/// The full health document served to holders of the secret.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct HealthReport {
    /// `ok`, `degraded` or `down`.
    pub status: Status,
    /// Each check's verdict.
    pub checks: Checks,
    /// The queue snapshot; `null` when the database is down.
    pub queue: Option<Snapshot>,
    /// Registered workers, freshest first.
    pub workers: Vec<WorkerSummary>,
    /// Queues and kinds with ready jobs no live worker runs.
    pub unhandled_kinds: Vec<UnhandledKind>,
}

/// What the database told us, before judgement.
pub struct Observed {
    /// The snapshot.
    pub snapshot: Snapshot,
    /// The registered workers.
    pub workers: Vec<Worker>,
    /// Unhandled queues and kinds.
    pub unhandled: Vec<UnhandledKind>,
}

/// Judges observations against the thresholds. `None` means the database did not answer.
pub fn judge(observed: Option<Observed>, config: &HealthConfig) -> HealthReport {
    let Some(Observed {
        snapshot,
        workers,
        unhandled,
    }) = observed
    else {
        return HealthReport {
            status: Status::Down,
            checks: Checks {
                database: Check::Down,
                workers: Check::Ok,
                backlog: Check::Ok,
                dead_letter: Check::Ok,
                unhandled_kinds: Check::Ok,
            },
            queue: None,
            workers: Vec::new(),
            unhandled_kinds: Vec::new(),
        };
    };
    let stale = config.worker_stale_after.as_secs_f64();
    let live = workers.iter().any(|w| w.heartbeat_age_seconds < stale);
    let ready = snapshot.total.oldest_ready_at.is_some();
    let backlog_age = snapshot.total.oldest_ready_age_seconds.unwrap_or(0.0);
    let checks = Checks {
        database: Check::Ok,
        workers: if ready && !live {
            Check::Degraded
        } else {
            Check::Ok
        },
        backlog: if backlog_age > config.backlog_threshold.as_secs_f64() {
            Check::Degraded
        } else {
            Check::Ok
        },
        dead_letter: match (snapshot.total.dead_letter > 0, config.dead_letter_degrades) {
            (false, _) => Check::Ok,
            (true, false) => Check::Warn,
            (true, true) => Check::Degraded,
        },
        unhandled_kinds: if unhandled.is_empty() {
            Check::Ok
        } else {
            Check::Degraded
        },
    };
    let worst = [
        checks.workers,
        checks.backlog,
        checks.dead_letter,
        checks.unhandled_kinds,
    ]
    .into_iter()
    .max()
    .unwrap_or(Check::Ok);
    let status = if worst >= Check::Degraded {
        Status::Degraded
    } else {
        Status::Ok
    };
    HealthReport {
        status,
        checks,
        queue: Some(snapshot),
        workers: workers
            .into_iter()
            .map(|w| WorkerSummary {
                id: w.info.id,
                host: w.info.host,
                heartbeat_age_seconds: w.heartbeat_age_seconds,
                queues: w.info.queues,
            })
            .collect(),
        unhandled_kinds: unhandled,
    }
}

/// How often the unhandled-kinds query runs: it reads every long-ready job, so it runs on
/// a slower cadence than the rest of the evaluation.
pub const UNHANDLED_REFRESH: Duration = Duration::from_secs(30);

type Cached<T> = std::sync::Mutex<Option<(Instant, T)>>;

/// Evaluates health on its own pool, caches it, and logs status transitions once.
pub struct HealthMonitor {
    pool: PgPool,
    config: HealthConfig,
    /// The latest report and when it was made.
    cache: Cached<std::sync::Arc<HealthReport>>,
    /// The latest unhandled kinds and when they were read.
    unhandled: Cached<Vec<UnhandledKind>>,
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
            unhandled: std::sync::Mutex::new(None),
            refreshing: Mutex::new(()),
            last_status: std::sync::Mutex::new(None),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &HealthConfig {
        &self.config
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
        let observed = tokio::time::timeout(self.config.check_timeout, self.observe()).await;
        let observed = match observed {
            Ok(Ok(observed)) => Some(observed),
            Ok(Err(err)) => {
                tracing::warn!(event = "health_check.database", error.message = %err, "database check failed");
                None
            }
            Err(_) => {
                tracing::warn!(event = "health_check.database", "database check timed out");
                None
            }
        };
        let report = std::sync::Arc::new(judge(observed, &self.config));
        observe::record_health(&report, self.config.worker_stale_after);
        self.log_transition(&report);
        store(&self.cache, report.clone());
        report
    }

    async fn observe(&self) -> docket_queue::Result<Observed> {
        let now = Some(Utc::now());
        let snapshot = docket_queue::snapshot(&self.pool, now).await?;
        let workers = workers::list(&self.pool, now).await?;
        // With caching off, every evaluation reads them afresh.
        let reuse = !self.config.cache_ttl.is_zero();
        let unhandled = match read(&self.unhandled, UNHANDLED_REFRESH) {
            (Some(kinds), true) if reuse => kinds,
            _ => {
                let kinds = workers::unhandled_kinds(
                    &self.pool,
                    self.config.worker_stale_after,
                    self.config.unhandled_after,
                    now,
                )
                .await?;
                store(&self.unhandled, kinds.clone());
                kinds
            }
        };
        Ok(Observed {
            snapshot,
            workers,
            unhandled,
        })
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
                tracing::info!(event = "health_check.recovered", from, "health is ok again");
            }
            Status::Ok => {}
            status => tracing::warn!(
                event = "health_check.degraded",
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

#[cfg(test)]
mod tests {
    use super::*;
    use docket_queue::QueueFigures;

    fn snapshot(oldest_age: Option<f64>, dead: i64) -> Snapshot {
        let total = QueueFigures {
            pending: 1,
            dead_letter: dead,
            oldest_ready_at: oldest_age.map(|_| Utc::now()),
            oldest_ready_age_seconds: oldest_age,
            ..QueueFigures::default()
        };
        Snapshot {
            total,
            ..Snapshot::default()
        }
    }

    fn worker(age: f64) -> Worker {
        Worker {
            info: docket_queue::WorkerInfo {
                id: Uuid::nil(),
                host: "h".into(),
                pid: 1,
                queues: vec!["default".into()],
                kinds: vec![],
                version: "v".into(),
            },
            started_at: Utc::now(),
            heartbeat_at: Utc::now(),
            heartbeat_age_seconds: age,
        }
    }

    fn judged(snapshot: Snapshot, workers: Vec<Worker>) -> HealthReport {
        judge(
            Some(Observed {
                snapshot,
                workers,
                unhandled: vec![],
            }),
            &HealthConfig::default(),
        )
    }

    #[test]
    fn an_old_backlog_degrades() {
        assert_eq!(
            judged(snapshot(Some(299.0), 0), vec![worker(1.0)]).status,
            Status::Ok
        );
        let report = judged(snapshot(Some(301.0), 0), vec![worker(1.0)]);
        assert_eq!(
            (report.status, report.checks.backlog),
            (Status::Degraded, Check::Degraded)
        );
    }

    #[test]
    fn ready_jobs_without_a_live_worker_degrade_but_an_idle_queue_does_not() {
        let report = judged(snapshot(Some(1.0), 0), vec![worker(31.0)]);
        assert_eq!(
            (report.status, report.checks.workers),
            (Status::Degraded, Check::Degraded)
        );
        assert_eq!(judged(snapshot(None, 0), vec![]).status, Status::Ok);
    }

    #[test]
    fn dead_letters_warn_without_degrading_unless_configured() {
        let report = judged(snapshot(None, 3), vec![]);
        assert_eq!(
            (report.status, report.checks.dead_letter),
            (Status::Ok, Check::Warn)
        );
        let strict = HealthConfig {
            dead_letter_degrades: true,
            ..HealthConfig::default()
        };
        let report = judge(
            Some(Observed {
                snapshot: snapshot(None, 3),
                workers: vec![],
                unhandled: vec![],
            }),
            &strict,
        );
        assert_eq!(report.status, Status::Degraded);
    }

    #[test]
    fn no_database_is_down() {
        let report = judge(None, &HealthConfig::default());
        assert_eq!(
            (report.status, report.checks.database, report.queue),
            (Status::Down, Check::Down, None)
        );
    }
}
