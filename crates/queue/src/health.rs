//! The health judgement: what the database says (the snapshot, the workers, unhandled
//! kinds), judged against thresholds into the report that `GET /api/health` serves and
//! `docket check` prints. Both call it; the HTTP layer adds only its cache.
//!
//! `down` means one thing: the database does not answer `select 1` within the check
//! timeout. The expensive reads (the snapshot, the worker list, unhandled kinds) are each
//! bounded on their own; one that fails or times out (a huge backlog, a busy server) makes
//! its checks `unknown` and the status `degraded`, never `down`. A worker is live while its
//! own lease holds ([`crate::workers::Worker::live`]): the one liveness rule.

use std::time::Duration;

use serde::Serialize;
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::snapshot::Snapshot;
use crate::workers::{self, UnhandledKind, Worker};

/// Oldest ready age above which the backlog is degraded (the monitors' alert value).
pub const BACKLOG_THRESHOLD_DEFAULT: Duration = Duration::from_secs(300);
/// How long the database check may take before it counts as down.
pub const CHECK_TIMEOUT_DEFAULT: Duration = Duration::from_secs(2);
/// How long an evaluation is reused (by the HTTP layer's cache).
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// A schedule's due tick has not been enqueued within a minute of its time.
    pub cron: Check,
    /// `degraded` while the mail relay refuses our settings (authentication, TLS) and no
    /// message has gone through since.
    pub mail: Check,
}

/// The mail relay's outstanding configuration fault.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MailFault {
    /// When it was last seen.
    pub at: chrono::DateTime<chrono::Utc>,
    /// What the relay said (never a credential).
    pub error: String,
}

/// A worker as the health document shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// The cron schedules, with their last and next tick and their last tick's batch.
    pub cron: Vec<crate::schedule::ScheduleRow>,
    /// Batches not finished yet; `null` when it could not be read.
    pub batches_open: Option<i64>,
    /// The mail relay's outstanding configuration fault; `null` when there is none.
    pub mail_fault: Option<MailFault>,
}

/// How late a schedule's due tick may be before `checks.cron` is degraded.
pub const CRON_LATE_AFTER: Duration = Duration::from_secs(60);

/// What the database told us, before judgement. A part that could not be read is `None`.
pub struct Observed {
    /// The snapshot, and how stale it is when it is an earlier one (`None`: fresh).
    pub snapshot: Option<(Snapshot, Option<f64>)>,
    /// The registered workers.
    pub workers: Option<Vec<Worker>>,
    /// Unhandled queues and kinds.
    pub unhandled: Option<Vec<UnhandledKind>>,
    /// The cron schedules.
    pub cron: Option<Vec<crate::schedule::ScheduleRow>>,
    /// Open batches.
    pub batches_open: Option<i64>,
    /// The mail relay's fault: `Some(None)` when there is none.
    pub mail_fault: Option<Option<MailFault>>,
}

/// The mail relay's outstanding configuration fault (authentication, TLS), recorded by the
/// mail jobs and cleared by the next message the relay accepts.
///
/// # Errors
///
/// [`crate::Error::Database`] when the database fails.
pub async fn mail_fault(exec: impl PgExecutor<'_>) -> crate::Result<Option<MailFault>> {
    Ok(crate::db::mail_status_fault(exec)
        .await?
        .map(|(at, error)| MailFault { at, error }))
}

/// Judges observations against the thresholds. `None` means the database did not answer.
/// Pure: the rules live here and nowhere else.
pub fn judge(observed: Option<Observed>, config: &HealthConfig) -> HealthReport {
    let Some(Observed {
        snapshot,
        workers,
        unhandled,
        cron,
        batches_open,
        mail_fault,
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
                cron: Check::Unknown,
                mail: Check::Unknown,
            },
            queue: None,
            snapshot_stale_seconds: None,
            workers: Vec::new(),
            unhandled_kinds: Vec::new(),
            cron: Vec::new(),
            batches_open: None,
            mail_fault: None,
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
        cron: match &cron {
            None => Check::Unknown,
            Some(schedules) => {
                // The snapshot's time is the database's; without one, the local clock.
                let now = snapshot
                    .as_ref()
                    .map_or_else(chrono::Utc::now, |s| s.taken_at);
                let late = chrono::Duration::from_std(CRON_LATE_AFTER).unwrap_or_default();
                let behind = schedules
                    .iter()
                    .any(|s| !s.paused && s.next_tick_at.is_some_and(|next| next + late < now));
                if behind {
                    Check::Degraded
                } else {
                    Check::Ok
                }
            }
        },
        mail: match &mail_fault {
            None => Check::Unknown,
            Some(Some(_)) => Check::Degraded,
            Some(None) => Check::Ok,
        },
    };
    let worst = [
        checks.workers,
        checks.backlog,
        checks.dead_letter,
        checks.unhandled_kinds,
        checks.cron,
        checks.mail,
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
        cron: cron.unwrap_or_default(),
        batches_open,
        mail_fault: mail_fault.flatten(),
    }
}

/// A bounded read's value, or `None` (logged) when it failed or timed out.
pub(crate) fn bounded<T>(
    part: &'static str,
    result: Result<crate::Result<T>, tokio::time::error::Elapsed>,
) -> Option<T> {
    match result {
        Ok(Ok(value)) => Some(value),
        Ok(Err(err)) => {
            tracing::warn!(event = crate::telemetry::event::HEALTH_DATABASE, part, error.message = %err, "health read failed");
            None
        }
        Err(_) => {
            tracing::warn!(
                event = crate::telemetry::event::HEALTH_DATABASE,
                part,
                "health read timed out"
            );
            None
        }
    }
}

/// Reads what the judgement needs, each read bounded by `timeout`; `None` only when the
/// database does not answer. The snapshot is fresh or absent (`snapshot.1` is `None`): a
/// caller that keeps an earlier one may put it in, with its age. Ages are measured by the
/// database's clock, the one that wrote the timestamps.
pub async fn observe<'c, E>(exec: E, timeout: Duration) -> Option<Observed>
where
    E: PgExecutor<'c> + Copy,
{
    bounded(
        "database",
        tokio::time::timeout(timeout, workers::ping(exec)).await,
    )?;
    let snapshot = tokio::time::timeout(timeout, crate::snapshot(exec, None)).await;
    let snapshot = bounded("snapshot", snapshot).map(|snapshot| (snapshot, None));
    let workers = bounded(
        "workers",
        tokio::time::timeout(timeout, workers::list(exec, None)).await,
    );
    // Parked jobs (the parker's verdict): one index probe per queue and kind.
    let unhandled = tokio::time::timeout(timeout, workers::unhandled_kinds(exec)).await;
    let unhandled = bounded("unhandled_kinds", unhandled);
    let cron = bounded(
        "cron",
        tokio::time::timeout(timeout, crate::schedule::list(exec)).await,
    );
    let open = tokio::time::timeout(timeout, crate::batch::count_open(exec)).await;
    let batches_open = bounded("batches", open);
    let fault = tokio::time::timeout(timeout, mail_fault(exec)).await;
    let mail_fault = bounded("mail", fault);
    Some(Observed {
        snapshot,
        workers,
        unhandled,
        cron,
        batches_open,
        mail_fault,
    })
}

/// Observes and judges at once: the report, uncached.
pub async fn evaluate<'c, E>(exec: E, config: &HealthConfig) -> HealthReport
where
    E: PgExecutor<'c> + Copy,
{
    judge(observe(exec, config.check_timeout).await, config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::QueueFigures;
    use chrono::{DateTime, Utc};

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
            taken_at: Utc::now(),
            ..Snapshot::default()
        }
    }

    fn worker(live: bool) -> Worker {
        Worker {
            info: crate::WorkerInfo {
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
            cron: Some(vec![]),
            batches_open: Some(0),
            mail_fault: Some(None),
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
    fn an_outstanding_mail_fault_degrades_checks_mail() {
        let mut faulty = observed(snapshot(None, 0), vec![]);
        faulty.mail_fault = Some(Some(MailFault {
            at: Utc::now(),
            error: "535 5.7.8 authentication credentials invalid".into(),
        }));
        let report = judge(Some(faulty), &HealthConfig::default());
        assert_eq!(
            (report.status, report.checks.mail),
            (Status::Degraded, Check::Degraded)
        );
        assert!(report.mail_fault.is_some());
    }

    #[test]
    fn a_part_that_cannot_be_read_is_unknown_and_degrades_but_is_never_down() {
        let blind = Observed {
            snapshot: None,
            workers: Some(vec![worker(true)]),
            unhandled: None,
            cron: None,
            batches_open: None,
            mail_fault: None,
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
            cron: Some(vec![]),
            batches_open: Some(0),
            mail_fault: Some(None),
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

    fn schedule(next_tick_at: DateTime<Utc>, paused: bool) -> crate::schedule::ScheduleRow {
        crate::schedule::ScheduleRow {
            def: crate::schedule::ScheduleDef {
                name: "hourly".into(),
                cron: "0 * * * *".into(),
                kind: "k".into(),
                payload: serde_json::json!({}),
                queue: "default".into(),
                priority: 0,
                max_attempts: 25,
                timezone: "UTC".into(),
                catch_up: "latest".into(),
                overlap: "allow".into(),
            },
            paused,
            last_tick_at: None,
            next_tick_at: Some(next_tick_at),
            registered_at: next_tick_at,
            last_batch_id: None,
            last_batch_total: None,
            last_batch_remaining: None,
            last_batch_finished_at: None,
        }
    }

    #[test]
    fn a_due_tick_not_enqueued_within_a_minute_degrades_cron_unless_paused() {
        let now = Utc::now();
        let with = |rows| Observed {
            cron: Some(rows),
            ..observed(snapshot(None, 0), vec![worker(true)])
        };
        let on_time = judge(
            Some(with(vec![schedule(
                now - chrono::Duration::seconds(30),
                false,
            )])),
            &HealthConfig::default(),
        );
        assert_eq!(
            (on_time.status, on_time.checks.cron),
            (Status::Ok, Check::Ok)
        );
        let late = judge(
            Some(with(vec![schedule(
                now - chrono::Duration::seconds(90),
                false,
            )])),
            &HealthConfig::default(),
        );
        assert_eq!(
            (late.status, late.checks.cron),
            (Status::Degraded, Check::Degraded)
        );
        assert_eq!(late.cron.len(), 1);
        let paused = judge(
            Some(with(vec![schedule(
                now - chrono::Duration::seconds(90),
                true,
            )])),
            &HealthConfig::default(),
        );
        assert_eq!(paused.checks.cron, Check::Ok);
    }
}
