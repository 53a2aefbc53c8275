//! Health in one home: the one [`Verdict`] type, the [`Finding`] every check describes
//! itself as (name, verdict, what it saw, what to do), the [`Probe`] through which the crate
//! that owns a fact contributes its check (the mail crate the relay, the HTTP crate the
//! host), and the queue's own checks judged from what the database says. `docket check`,
//! the bearer health document and `/ops` all show the same findings in the same words.
//!
//! `down` means one thing: the database does not answer `select 1` within the check
//! timeout. The expensive reads (the snapshot, the worker list, unhandled kinds) are each
//! bounded on their own; one that fails or times out (a huge backlog, a busy server) makes
//! its checks `unknown` and the status `degraded`, never `down`. A worker is live while its
//! own lease holds ([`crate::workers::Worker::live`]): the one liveness rule.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use sqlx::{PgExecutor, PgPool};
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
    /// each expensive read and each contributed probe on its own). Default
    /// [`CHECK_TIMEOUT_DEFAULT`].
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

/// The one verdict type: a check's, and the overall status (which is only ever `ok`,
/// `degraded` or `down`). Worst last, so that `max` is the worst.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
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

impl Verdict {
    /// Its name, as every surface prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Warn => "warn",
            Verdict::Unknown => "unknown",
            Verdict::Degraded => "degraded",
            Verdict::Down => "down",
        }
    }

    /// The overall status of these verdicts: `down` when one is; `degraded` when one is
    /// `unknown` or `degraded`; else `ok` (a `warn` needs a look but degrades nothing).
    pub fn overall(verdicts: impl IntoIterator<Item = Verdict>) -> Verdict {
        match verdicts.into_iter().max() {
            Some(Verdict::Down) => Verdict::Down,
            Some(Verdict::Unknown | Verdict::Degraded) => Verdict::Degraded,
            _ => Verdict::Ok,
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One check, described: what `docket check` prints as a row, the health document lists
/// under `findings`, and `/ops` shows with its advice.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Finding {
    /// The check's name: `database`, `backlog`, `mail`, `disk`, ...
    pub name: &'static str,
    /// Its verdict.
    pub verdict: Verdict,
    /// What it saw, for a person.
    pub detail: String,
    /// What to do about it; absent when the verdict is `ok`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advice: Option<&'static str>,
}

impl Finding {
    /// A finding whose advice is kept only when there is something to do.
    pub fn new(
        name: &'static str,
        verdict: Verdict,
        detail: impl Into<String>,
        advice: &'static str,
    ) -> Finding {
        Finding {
            name,
            verdict,
            detail: detail.into(),
            advice: (verdict != Verdict::Ok).then_some(advice),
        }
    }

    /// A check that could not be evaluated, and why.
    pub fn unknown(name: &'static str, why: impl Into<String>) -> Finding {
        Finding {
            name,
            verdict: Verdict::Unknown,
            detail: why.into(),
            advice: None,
        }
    }
}

/// A boxed future, as a [`Probe`] returns it.
pub type ProbeFuture<'a> = Pin<Box<dyn Future<Output = Finding> + Send + 'a>>;

/// A check contributed by the crate that owns its fact (the mail relay's recorded fault,
/// the host's disk): it reads what it needs and describes it. `db` is `None` when the
/// database could not be reached at all. Each probe is bounded by the check timeout by its
/// caller; one that takes longer is `unknown`.
pub trait Probe: Send + Sync {
    /// The check's name, used when the probe takes too long.
    fn name(&self) -> &'static str;
    /// Reads and describes.
    fn probe<'a>(&'a self, db: Option<&'a PgPool>) -> ProbeFuture<'a>;
}

/// Every check's verdict by name, in the order of the findings (the document's `checks`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Checks(Vec<(&'static str, Verdict)>);

impl Checks {
    /// The verdict of the check called `name`.
    pub fn get(&self, name: &str) -> Option<Verdict> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }
}

impl Serialize for Checks {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, verdict) in &self.0 {
            map.serialize_entry(name, verdict)?;
        }
        map.end()
    }
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
    pub status: Verdict,
    /// Each check's verdict by name.
    #[cfg_attr(feature = "openapi", schema(value_type = std::collections::BTreeMap<String, Verdict>))]
    pub checks: Checks,
    /// Each check described: its verdict, what it saw and what to do.
    pub findings: Vec<Finding>,
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
    pub cron: Vec<crate::cron::ScheduleRow>,
    /// Batches not finished yet; `null` when it could not be read.
    pub batches_open: Option<i64>,
}

impl HealthReport {
    /// The verdict of the check called `name`.
    pub fn verdict(&self, name: &str) -> Option<Verdict> {
        self.checks.get(name)
    }

    /// The finding of the check called `name`.
    pub fn finding(&self, name: &str) -> Option<&Finding> {
        self.findings.iter().find(|f| f.name == name)
    }

    /// The same report with more findings (contributed checks), its status and checks
    /// settled anew.
    pub fn with_findings(mut self, more: impl IntoIterator<Item = Finding>) -> HealthReport {
        self.findings.extend(more);
        self.checks = Checks(self.findings.iter().map(|f| (f.name, f.verdict)).collect());
        self.status = Verdict::overall(self.findings.iter().map(|f| f.verdict));
        self
    }
}

/// How every surface prints an instant for a person (the findings, `/ops`): UTC, to the
/// second, saying so.
pub const TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S UTC";

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
    pub cron: Option<Vec<crate::cron::ScheduleRow>>,
    /// Open batches.
    pub batches_open: Option<i64>,
}

const NOT_READ: &str = "could not be read in time (the log's health_check.database event says why)";

/// `1 schedule`, `2 schedules`.
fn count(n: usize, one: &str, many: &str) -> String {
    crate::counted(n, one, many)
}

/// Judges observations against the thresholds into the queue's own findings. `None` means
/// the database did not answer. Pure: the queue's rules and their words live here and
/// nowhere else.
pub fn judge(observed: Option<Observed>, config: &HealthConfig) -> HealthReport {
    let empty = HealthReport {
        status: Verdict::Ok,
        checks: Checks::default(),
        findings: Vec::new(),
        queue: None,
        snapshot_stale_seconds: None,
        workers: Vec::new(),
        unhandled_kinds: Vec::new(),
        cron: Vec::new(),
        batches_open: None,
    };
    let Some(Observed {
        snapshot,
        workers,
        unhandled,
        cron,
        batches_open,
    }) = observed
    else {
        let database = Finding::new(
            "database",
            Verdict::Down,
            format!(
                "does not answer within {} s",
                config.check_timeout.as_secs_f64()
            ),
            DATABASE_ADVICE,
        );
        let unknown = [
            "workers",
            "backlog",
            "dead_letter",
            "unhandled_kinds",
            "cron",
        ]
        .map(|name| Finding::unknown(name, "the database does not answer"));
        return empty.with_findings(std::iter::once(database).chain(unknown));
    };
    let (snapshot, stale) = match snapshot {
        Some((snapshot, stale)) => (Some(snapshot), stale),
        None => (None, None),
    };
    // A stale snapshot still shows the figures, but cannot vouch for the backlog now.
    let current = snapshot.as_ref().filter(|_| stale.is_none());
    let findings = vec![
        Finding::new("database", Verdict::Ok, "answers", DATABASE_ADVICE),
        workers_finding(workers.as_deref(), current),
        backlog_finding(current, workers.as_deref(), unhandled.as_deref(), config),
        dead_letter_finding(snapshot.as_ref(), config),
        unhandled_finding(unhandled.as_deref()),
        cron_finding(cron.as_deref(), snapshot.as_ref()),
    ];
    HealthReport {
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
        ..empty
    }
    .with_findings(findings)
}

const DATABASE_ADVICE: &str =
    "check that PostgreSQL is up and reachable with DATABASE_URL; `docket check` says more.";

fn workers_finding(workers: Option<&[Worker]>, current: Option<&Snapshot>) -> Finding {
    let Some(workers) = workers else {
        return Finding::unknown("workers", NOT_READ);
    };
    let live = workers.iter().filter(|w| w.live).count();
    let ready = current.map(|s| s.total.oldest_ready_at.is_some());
    let verdict = match ready {
        Some(false) => Verdict::Ok,
        _ if live > 0 => Verdict::Ok,
        Some(true) => Verdict::Degraded,
        None => Verdict::Unknown,
    };
    Finding::new(
        "workers",
        verdict,
        format!("{live} live of {} registered", workers.len()),
        "jobs are ready and no worker has sent a heartbeat: start `docket worker` (or `docket serve`), or read the stopped workers' logs.",
    )
}

/// Why a queue's oldest ready job waits too long: the advice depends on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cause {
    /// No live worker serves the queue, or runs a kind of its ready jobs.
    Unserved,
    /// The queue is paused.
    Paused,
    /// Served, yet behind: more workers or concurrency.
    Slow,
}

const BACKLOG_SLOW_ADVICE: &str = "add workers or concurrency, and look for a busy kind; the runbook's \"Backlog growth\" walks through it.";
const BACKLOG_UNSERVED_ADVICE: &str = "no live worker runs these jobs: serve the queue (the `queues` setting or `--queues`) with a worker that registers their kind, or move them to a served queue (or cancel them if the kind is gone); more workers like the ones running change nothing.";
const BACKLOG_PAUSED_ADVICE: &str =
    "the queue is paused: `docket queues resume NAME` when its jobs should run again.";
const BACKLOG_MIXED_ADVICE: &str = "each queue above says why: serve the queues no live worker serves (or move their jobs), resume the paused ones, add workers or concurrency for the rest; the runbook's \"Backlog growth\" walks through it.";

fn backlog_finding(
    current: Option<&Snapshot>,
    workers: Option<&[Worker]>,
    unhandled: Option<&[UnhandledKind]>,
    config: &HealthConfig,
) -> Finding {
    let Some(snapshot) = current else {
        return Finding::unknown("backlog", format!("the snapshot {NOT_READ}"));
    };
    let threshold = config.backlog_threshold.as_secs_f64();
    let waiting = snapshot.total.pending + snapshot.total.retrying;
    let Some(age) = snapshot.total.oldest_ready_age_seconds else {
        return Finding::new("backlog", Verdict::Ok, "nothing ready", BACKLOG_SLOW_ADVICE);
    };
    let summary = format!(
        "oldest ready job waits {age:.0} s (threshold {threshold:.0} s); {waiting} ready or waiting"
    );
    if age <= threshold {
        return Finding::new("backlog", Verdict::Ok, summary, BACKLOG_SLOW_ADVICE);
    }
    // Each queue behind, with its cause: a parked job is not a reason to add workers.
    let mut causes = Vec::new();
    let mut parts = Vec::new();
    for (name, queue) in &snapshot.queues {
        let Some(queue_age) = queue.oldest_ready_age_seconds.filter(|a| *a > threshold) else {
            continue;
        };
        let jobs = count(
            usize::try_from(queue.pending + queue.retrying).unwrap_or(0),
            "job waits",
            "jobs wait",
        );
        let parked: Vec<&str> = unhandled
            .unwrap_or_default()
            .iter()
            .filter(|u| u.queue == *name)
            .map(|u| u.kind.as_str())
            .collect();
        let served = workers.map(|ws| ws.iter().any(|w| w.live && w.info.queues.contains(name)));
        let (cause, why) = if queue.paused {
            (Cause::Paused, format!("queue {name} is paused"))
        } else if served == Some(false) {
            (
                Cause::Unserved,
                format!("no live worker serves queue {name}"),
            )
        } else if !parked.is_empty() {
            (
                Cause::Unserved,
                format!("no live worker of queue {name} runs {}", parked.join(", ")),
            )
        } else {
            (Cause::Slow, format!("queue {name} is behind"))
        };
        causes.push(cause);
        parts.push(format!(
            "{jobs} on queue {name} (oldest {queue_age:.0} s): {why}"
        ));
    }
    let advice = match causes.first() {
        None => BACKLOG_SLOW_ADVICE,
        Some(first) if causes.iter().any(|c| c != first) => BACKLOG_MIXED_ADVICE,
        Some(Cause::Unserved) => BACKLOG_UNSERVED_ADVICE,
        Some(Cause::Paused) => BACKLOG_PAUSED_ADVICE,
        Some(Cause::Slow) => BACKLOG_SLOW_ADVICE,
    };
    let detail = if parts.is_empty() {
        summary
    } else {
        format!("{summary}: {}", parts.join("; "))
    };
    Finding::new("backlog", Verdict::Degraded, detail, advice)
}

fn dead_letter_finding(snapshot: Option<&Snapshot>, config: &HealthConfig) -> Finding {
    let Some(snapshot) = snapshot else {
        return Finding::unknown("dead_letter", format!("the snapshot {NOT_READ}"));
    };
    let dead = snapshot.total.dead_letter;
    let verdict = match (dead, config.dead_letter_degrades) {
        (0, _) => Verdict::Ok,
        (_, false) => Verdict::Warn,
        (_, true) => Verdict::Degraded,
    };
    Finding::new(
        "dead_letter",
        verdict,
        count(dead as usize, "dead letter", "dead letters"),
        "read each one's last error, fix the cause, then replay it (or discard it if it must never run).",
    )
}

fn unhandled_finding(unhandled: Option<&[UnhandledKind]>) -> Finding {
    let Some(unhandled) = unhandled else {
        return Finding::unknown("unhandled_kinds", NOT_READ);
    };
    let (verdict, detail) = if unhandled.is_empty() {
        (Verdict::Ok, "every ready kind has a live worker".to_owned())
    } else {
        let names: Vec<String> = unhandled
            .iter()
            .map(|u| format!("{}/{}", u.queue, u.kind))
            .collect();
        (
            Verdict::Degraded,
            format!("no live worker runs {}", names.join(", ")),
        )
    };
    Finding::new(
        "unhandled_kinds",
        verdict,
        detail,
        "deploy a worker that registers these kinds, or cancel the jobs if the kind is gone for good.",
    )
}

fn cron_finding(
    schedules: Option<&[crate::cron::ScheduleRow]>,
    snapshot: Option<&Snapshot>,
) -> Finding {
    let Some(schedules) = schedules else {
        return Finding::unknown("cron", NOT_READ);
    };
    // The snapshot's time is the database's; without one, the local clock.
    let now = snapshot.map_or_else(chrono::Utc::now, |s| s.taken_at);
    let late = chrono::Duration::from_std(CRON_LATE_AFTER).unwrap_or_default();
    // A retired schedule (no live process declares it) is nobody's to tick: not late.
    let names = |keep: &dyn Fn(&crate::cron::ScheduleRow) -> bool| -> Vec<&str> {
        schedules
            .iter()
            .filter(|s| keep(s))
            .map(|s| s.def.name.as_str())
            .collect()
    };
    let behind =
        names(&|s| !s.paused && !s.retired && s.next_tick_at.is_some_and(|next| next + late < now));
    let retired = names(&|s| s.retired);
    let conflicting = names(&|s| s.conflicting && !s.retired);
    let n = schedules.len();
    let mut detail = match (n, behind.len()) {
        (0, _) => "no schedules".to_owned(),
        (n, 0) => format!(
            "{} on time",
            count(n - retired.len(), "schedule", "schedules")
        ),
        (n, late) => format!(
            "the due tick of {late} of {} is over a minute late ({})",
            count(n - retired.len(), "schedule", "schedules"),
            behind.join(", ")
        ),
    };
    if !retired.is_empty() {
        detail.push_str(&format!(
            "; {} retired, no live process declares {} ({}): `docket cron remove NAME` deletes a schedule gone for good",
            retired.len(),
            if retired.len() == 1 { "it" } else { "them" },
            retired.join(", ")
        ));
    }
    if !conflicting.is_empty() {
        detail.push_str(&format!(
            "; declared differently by two live processes: {}",
            conflicting.join(", ")
        ));
    }
    let (verdict, advice) = if !behind.is_empty() {
        (
            Verdict::Degraded,
            "a due tick is over a minute late: is a scheduler (`docket serve`, or `docket worker` with cron) running? If one is, its log's background_job_cron.failed events say why it cannot enqueue.",
        )
    } else if !conflicting.is_empty() {
        (
            Verdict::Warn,
            "two live processes declare a schedule of the same name with different definitions (their logs' background_job_cron.conflict events name both): make their configurations agree.",
        )
    } else {
        (Verdict::Ok, "")
    };
    Finding::new("cron", verdict, detail, advice)
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
        tokio::time::timeout(timeout, crate::cron::list(exec)).await,
    );
    let open = tokio::time::timeout(timeout, crate::batch::count_open(exec)).await;
    let batches_open = bounded("batches", open);
    Some(Observed {
        snapshot,
        workers,
        unhandled,
        cron,
        batches_open,
    })
}

/// The findings of contributed probes, each bounded by `timeout`.
pub async fn probe_all(
    probes: &[Arc<dyn Probe>],
    db: Option<&PgPool>,
    timeout: Duration,
) -> Vec<Finding> {
    let mut findings = Vec::with_capacity(probes.len());
    for probe in probes {
        findings.push(
            tokio::time::timeout(timeout, probe.probe(db))
                .await
                .unwrap_or_else(|_| {
                    Finding::unknown(
                        probe.name(),
                        format!("took longer than {} s", timeout.as_secs_f64()),
                    )
                }),
        );
    }
    findings
}

/// Observes, judges and probes at once: the report, uncached.
pub async fn evaluate(
    pool: &PgPool,
    config: &HealthConfig,
    probes: &[Arc<dyn Probe>],
) -> HealthReport {
    let observed = observe(crate::pooled(pool), config.check_timeout).await;
    let db = observed.is_some().then_some(pool);
    let report = judge(observed, config);
    report.with_findings(probe_all(probes, db, config.check_timeout).await)
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
        }
    }

    fn judged(snapshot: Snapshot, workers: Vec<Worker>) -> HealthReport {
        judge(Some(observed(snapshot, workers)), &HealthConfig::default())
    }

    #[test]
    fn an_old_backlog_degrades() {
        assert_eq!(
            judged(snapshot(Some(299.0), 0), vec![worker(true)]).status,
            Verdict::Ok
        );
        let report = judged(snapshot(Some(301.0), 0), vec![worker(true)]);
        assert_eq!(
            (report.status, report.verdict("backlog").unwrap()),
            (Verdict::Degraded, Verdict::Degraded)
        );
    }

    /// One job on a queue nobody serves, one on a paused queue: the backlog names the
    /// queue and the cause, and the advice fits it (not "add workers").
    #[test]
    fn a_parked_or_paused_backlog_says_its_cause_not_add_workers() {
        let behind = |paused: bool| QueueFigures {
            pending: 1,
            oldest_ready_at: Some(Utc::now()),
            oldest_ready_age_seconds: Some(400.0),
            paused,
            ..QueueFigures::default()
        };
        let with = |name: &str, paused: bool| {
            let mut snapshot = snapshot(Some(400.0), 0);
            snapshot.queues.insert(name.to_owned(), behind(paused));
            snapshot
        };

        let report = judged(with("reports", false), vec![worker(true)]);
        let backlog = report.finding("backlog").unwrap();
        assert_eq!(backlog.verdict, Verdict::Degraded);
        assert!(
            backlog.detail.ends_with(
                "1 job waits on queue reports (oldest 400 s): no live worker serves queue reports"
            ),
            "{backlog:?}"
        );
        assert_eq!(backlog.advice, Some(BACKLOG_UNSERVED_ADVICE));
        assert!(!BACKLOG_UNSERVED_ADVICE.starts_with("add workers"));

        // Served, but its kind is run by no live worker: parked all the same.
        let mut observed = observed(with("default", false), vec![worker(true)]);
        observed.unhandled = Some(vec![UnhandledKind {
            queue: "default".into(),
            kind: "app.gone".into(),
        }]);
        let report = judge(Some(observed), &HealthConfig::default());
        let backlog = report.finding("backlog").unwrap();
        assert!(
            backlog
                .detail
                .ends_with("no live worker of queue default runs app.gone"),
            "{backlog:?}"
        );
        assert_eq!(backlog.advice, Some(BACKLOG_UNSERVED_ADVICE));

        let report = judged(with("default", true), vec![worker(true)]);
        let backlog = report.finding("backlog").unwrap();
        assert!(
            backlog.detail.ends_with("queue default is paused"),
            "{backlog:?}"
        );
        assert_eq!(backlog.advice, Some(BACKLOG_PAUSED_ADVICE));

        // A served queue that is simply behind still asks for workers.
        let report = judged(with("default", false), vec![worker(true)]);
        assert_eq!(
            report.finding("backlog").unwrap().advice,
            Some(BACKLOG_SLOW_ADVICE)
        );
    }

    #[test]
    fn ready_jobs_without_a_live_worker_degrade_but_an_idle_queue_does_not() {
        let report = judged(snapshot(Some(1.0), 0), vec![worker(false)]);
        assert_eq!(
            (report.status, report.verdict("workers").unwrap()),
            (Verdict::Degraded, Verdict::Degraded)
        );
        assert_eq!(judged(snapshot(None, 0), vec![]).status, Verdict::Ok);
    }

    #[test]
    fn dead_letters_warn_without_degrading_unless_configured() {
        let report = judged(snapshot(None, 3), vec![]);
        assert_eq!(
            (report.status, report.verdict("dead_letter").unwrap()),
            (Verdict::Ok, Verdict::Warn)
        );
        let strict = HealthConfig {
            dead_letter_degrades: true,
            ..HealthConfig::default()
        };
        let report = judge(Some(observed(snapshot(None, 3), vec![])), &strict);
        assert_eq!(report.status, Verdict::Degraded);
    }

    #[test]
    fn no_database_is_down() {
        let report = judge(None, &HealthConfig::default());
        assert_eq!(
            (
                report.status,
                report.verdict("database").unwrap(),
                report.queue
            ),
            (Verdict::Down, Verdict::Down, None)
        );
    }

    #[test]
    fn a_part_that_cannot_be_read_is_unknown_and_degrades_but_is_never_down() {
        let blind = Observed {
            snapshot: None,
            workers: Some(vec![worker(true)]),
            unhandled: None,
            cron: None,
            batches_open: None,
        };
        let report = judge(Some(blind), &HealthConfig::default());
        assert_eq!(
            (
                report.status,
                report.verdict("database").unwrap(),
                report.verdict("backlog").unwrap()
            ),
            (Verdict::Degraded, Verdict::Ok, Verdict::Unknown)
        );
        assert_eq!(report.verdict("unhandled_kinds").unwrap(), Verdict::Unknown);
        // A stale snapshot is shown, but cannot vouch for the backlog.
        let stale = Observed {
            snapshot: Some((snapshot(Some(1.0), 0), Some(12.0))),
            workers: Some(vec![worker(true)]),
            unhandled: Some(vec![]),
            cron: Some(vec![]),
            batches_open: Some(0),
        };
        let report = judge(Some(stale), &HealthConfig::default());
        assert_eq!(
            (
                report.status,
                report.verdict("backlog").unwrap(),
                report.snapshot_stale_seconds
            ),
            (Verdict::Degraded, Verdict::Unknown, Some(12.0))
        );
        assert!(report.queue.is_some());
    }

    fn schedule(next_tick_at: DateTime<Utc>, paused: bool) -> crate::cron::ScheduleRow {
        crate::cron::ScheduleRow {
            def: crate::cron::Schedule::new("hourly", "0 * * * *", "k"),
            paused,
            last_tick_at: None,
            next_tick_at: Some(next_tick_at),
            registered_at: next_tick_at,
            retired: false,
            conflicting: false,
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
            (on_time.status, on_time.verdict("cron").unwrap()),
            (Verdict::Ok, Verdict::Ok)
        );
        let late = judge(
            Some(with(vec![schedule(
                now - chrono::Duration::seconds(90),
                false,
            )])),
            &HealthConfig::default(),
        );
        assert_eq!(
            (late.status, late.verdict("cron").unwrap()),
            (Verdict::Degraded, Verdict::Degraded)
        );
        assert_eq!(late.cron.len(), 1);
        let paused = judge(
            Some(with(vec![schedule(
                now - chrono::Duration::seconds(90),
                true,
            )])),
            &HealthConfig::default(),
        );
        assert_eq!(paused.verdict("cron").unwrap(), Verdict::Ok);
    }

    /// A schedule no live process declares any more (a renamed `[[schedule]]`, a built-in
    /// one whose feature is off) is retired, not late: the check stays ok and says how to
    /// remove it. One declared differently by two live processes is a warning.
    #[test]
    fn a_retired_schedule_does_not_degrade_cron_and_a_conflicting_one_warns() {
        let now = Utc::now();
        let with = |rows| Observed {
            cron: Some(rows),
            ..observed(snapshot(None, 0), vec![worker(true)])
        };
        let mut retired = schedule(now - chrono::Duration::hours(5), false);
        retired.def.name = "mail-digest".to_owned();
        retired.retired = true;
        let report = judge(
            Some(with(vec![
                retired.clone(),
                schedule(now - chrono::Duration::seconds(10), false),
            ])),
            &HealthConfig::default(),
        );
        let finding = report.finding("cron").unwrap();
        assert_eq!(finding.verdict, Verdict::Ok, "{finding:?}");
        assert!(
            finding.detail.contains("1 schedule on time")
                && finding.detail.contains("1 retired")
                && finding.detail.contains("mail-digest")
                && finding.detail.contains("docket cron remove"),
            "{finding:?}"
        );
        assert!(!finding.detail.contains("late"), "{finding:?}");
        let mut conflicting = schedule(now - chrono::Duration::seconds(10), false);
        conflicting.conflicting = true;
        let report = judge(Some(with(vec![conflicting])), &HealthConfig::default());
        let finding = report.finding("cron").unwrap();
        assert_eq!(finding.verdict, Verdict::Warn, "{finding:?}");
        assert!(
            finding.detail.contains("declared differently") && finding.detail.contains("hourly"),
            "{finding:?}"
        );
        assert!(finding.advice.unwrap().contains("conflict"));
    }
}
