//! The health evaluation: database, workers, backlog, dead letters and unhandled kinds,
//! judged against configurable thresholds. It runs on a small pool of its own with a short
//! timeout (busy workers never starve it) and is cached briefly, so that probes cost the
//! database at most one evaluation a second.
//!
//! `down` means one thing: the database does not answer `select 1` within the check
//! timeout. The expensive parts (the snapshot, the worker list, unhandled kinds) are each
//! bounded on their own; one that fails or times out (a huge backlog, a busy server) makes
//! its checks `unknown` and the status `degraded`, and the last good snapshot is served,
//! marked stale, never `down`.

use std::time::Duration;

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
/// How long the database check may take before it counts as down.
pub const CHECK_TIMEOUT_DEFAULT: Duration = Duration::from_secs(2);
/// How long an evaluation is reused.
pub const CACHE_TTL_DEFAULT: Duration = Duration::from_secs(1);

/// Thresholds and timings of the health evaluation.
#[derive(Clone, Debug)]
pub struct HealthConfig {
    /// Backlog degraded above this oldest ready age. Default [`BACKLOG_THRESHOLD_DEFAULT`].
    pub backlog_threshold: Duration,
    /// How long each part of the evaluation may take (the `select 1` that decides `down`,
    /// and each expensive read on its own). Default [`CHECK_TIMEOUT_DEFAULT`].
    pub check_timeout: Duration,
    /// Evaluation reuse. Default [`CACHE_TTL_DEFAULT`].
    pub cache_ttl: Duration,
    /// Whether dead letters degrade the status (otherwise they are a `warn` check only).
    /// Default `false`.
    pub dead_letter_degrades: bool,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            backlog_threshold: BACKLOG_THRESHOLD_DEFAULT,
            check_timeout: CHECK_TIMEOUT_DEFAULT,
            cache_ttl: CACHE_TTL_DEFAULT,
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
    /// Could not be evaluated (its read failed or timed out): makes the status `degraded`.
    Unknown,
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
    /// Whether its lease holds: the worker's own lease timeout has not passed since its
    /// last heartbeat.
    pub live: bool,
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
    /// The queue snapshot; `null` when the database is down or none could be taken yet.
    pub queue: Option<Snapshot>,
    /// Seconds since the snapshot was taken, when it is an earlier one because taking a
    /// fresh one failed; absent when it is fresh.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_stale_seconds: Option<f64>,
    /// Registered workers, freshest first.
    pub workers: Vec<WorkerSummary>,
    /// Queues and kinds with ready jobs no live worker runs.
    pub unhandled_kinds: Vec<UnhandledKind>,
}

/// What the database told us, before judgement. A part that could not be read is `None`.
pub struct Observed {
    /// The snapshot, and how stale it is when it is an earlier one (`None`: fresh).
    pub snapshot: Option<(Snapshot, Option<f64>)>,
    /// The registered workers.
    pub workers: Option<Vec<Worker>>,
    /// Unhandled queues and kinds.
    pub unhandled: Option<Vec<UnhandledKind>>,
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
                workers: Check::Unknown,
                backlog: Check::Unknown,
                dead_letter: Check::Unknown,
                unhandled_kinds: Check::Unknown,
            },
            queue: None,
            snapshot_stale_seconds: None,
            workers: Vec::new(),
            unhandled_kinds: Vec::new(),
        };
    };
    let (snapshot, stale) = match snapshot {
        Some((snapshot, stale)) => (Some(snapshot), stale),
        None => (None, None),
    };
    // A stale snapshot still shows the figures, but cannot vouch for the backlog now.
    let current = snapshot.as_ref().filter(|_| stale.is_none());
    let live = workers
        .as_ref()
        .map(|workers| workers.iter().any(|w| w.live));
    let ready = current.map(|s| s.total.oldest_ready_at.is_some());
    let checks = Checks {
        database: Check::Ok,
        workers: match (ready, live) {
            (Some(false), _) | (_, Some(true)) => Check::Ok,
            (Some(true), Some(false)) => Check::Degraded,
            _ => Check::Unknown,
        },
        backlog: match current {
            None => Check::Unknown,
            Some(s)
                if s.total.oldest_ready_age_seconds.unwrap_or(0.0)
                    > config.backlog_threshold.as_secs_f64() =>
            {
                Check::Degraded
            }
            Some(_) => Check::Ok,
        },
        dead_letter: match (snapshot.as_ref(), config.dead_letter_degrades) {
            (None, _) => Check::Unknown,
            (Some(s), _) if s.total.dead_letter == 0 => Check::Ok,
            (Some(_), false) => Check::Warn,
            (Some(_), true) => Check::Degraded,
        },
        unhandled_kinds: match &unhandled {
            None => Check::Unknown,
            Some(kinds) if kinds.is_empty() => Check::Ok,
            Some(_) => Check::Degraded,
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
    let status = if worst >= Check::Unknown {
        Status::Degraded
    } else {
        Status::Ok
    };
    HealthReport {
        status,
        checks,
        queue: snapshot,
        snapshot_stale_seconds: stale,
        workers: workers
            .unwrap_or_default()
            .into_iter()
            .map(|w| WorkerSummary {
                id: w.info.id,
                host: w.info.host,
                heartbeat_age_seconds: w.heartbeat_age_seconds,
                live: w.live,
                queues: w.info.queues,
            })
            .collect(),
        unhandled_kinds: unhandled.unwrap_or_default(),
    }
}

type Cached<T> = std::sync::Mutex<Option<(Instant, T)>>;

/// A bounded read's value, or `None` (logged) when it failed or timed out.
fn bounded<T>(
    part: &'static str,
    result: Result<docket_queue::Result<T>, tokio::time::error::Elapsed>,
) -> Option<T> {
    match result {
        Ok(Ok(value)) => Some(value),
        Ok(Err(err)) => {
            tracing::warn!(event = docket_queue::telemetry::event::HEALTH_DATABASE, part, error.message = %err, "health read failed");
            None
        }
        Err(_) => {
            tracing::warn!(
                event = docket_queue::telemetry::event::HEALTH_DATABASE,
                part,
                "health read timed out"
            );
            None
        }
    }
}

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

    /// Reads what the judgement needs. `None` only when the database does not answer.
    async fn observe(&self) -> Option<Observed> {
        let timeout = self.config.check_timeout;
        let ping = tokio::time::timeout(timeout, docket_queue::workers::ping(&self.pool)).await;
        bounded("database", ping)?;
        // Ages by the database's clock, the one that wrote the timestamps.
        let now = None;
        let snapshot = tokio::time::timeout(timeout, docket_queue::snapshot(&self.pool, now)).await;
        let snapshot = match bounded("snapshot", snapshot) {
            Some(snapshot) => {
                store(&self.last_snapshot, snapshot.clone());
                Some((snapshot, None))
            }
            None => self.last_snapshot_with_age(),
        };
        let workers = tokio::time::timeout(timeout, workers::list(&self.pool, now)).await;
        let workers = bounded("workers", workers);
        // Parked jobs (the parker's verdict): one index probe per queue and kind.
        let unhandled = tokio::time::timeout(timeout, workers::unhandled_kinds(&self.pool)).await;
        let unhandled = bounded("unhandled_kinds", unhandled);
        Some(Observed {
            snapshot,
            workers,
            unhandled,
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
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

    fn worker(live: bool) -> Worker {
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
            lease_expires_at: Utc::now(),
            heartbeat_age_seconds: 1.0,
            live,
        }
    }

    fn observed(snapshot: Snapshot, workers: Vec<Worker>) -> Observed {
        Observed {
            snapshot: Some((snapshot, None)),
            workers: Some(workers),
            unhandled: Some(vec![]),
        }
    }

    fn judged(snapshot: Snapshot, workers: Vec<Worker>) -> HealthReport {
        judge(Some(observed(snapshot, workers)), &HealthConfig::default())
    }

    #[test]
    fn an_old_backlog_degrades() {
        assert_eq!(
            judged(snapshot(Some(299.0), 0), vec![worker(true)]).status,
            Status::Ok
        );
        let report = judged(snapshot(Some(301.0), 0), vec![worker(true)]);
        assert_eq!(
            (report.status, report.checks.backlog),
            (Status::Degraded, Check::Degraded)
        );
    }

    #[test]
    fn ready_jobs_without_a_live_worker_degrade_but_an_idle_queue_does_not() {
        let report = judged(snapshot(Some(1.0), 0), vec![worker(false)]);
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
        let report = judge(Some(observed(snapshot(None, 3), vec![])), &strict);
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

    #[test]
    fn a_part_that_cannot_be_read_is_unknown_and_degrades_but_is_never_down() {
        let blind = Observed {
            snapshot: None,
            workers: Some(vec![worker(true)]),
            unhandled: None,
        };
        let report = judge(Some(blind), &HealthConfig::default());
        assert_eq!(
            (report.status, report.checks.database, report.checks.backlog),
            (Status::Degraded, Check::Ok, Check::Unknown)
        );
        assert_eq!(report.checks.unhandled_kinds, Check::Unknown);
        // A stale snapshot is shown, but cannot vouch for the backlog.
        let stale = Observed {
            snapshot: Some((snapshot(Some(1.0), 0), Some(12.0))),
            workers: Some(vec![worker(true)]),
            unhandled: Some(vec![]),
        };
        let report = judge(Some(stale), &HealthConfig::default());
        assert_eq!(
            (
                report.status,
                report.checks.backlog,
                report.snapshot_stale_seconds
            ),
            (Status::Degraded, Check::Unknown, Some(12.0))
        );
        assert!(report.queue.is_some());
    }
}
