//! The drill worker: Docket's runtime embedded in this binary (as an application embeds
//! it) with the drill's kinds, each recording every execution in `drill_ledger`. The
//! ledger lets a drill check what no log can: that every job ran, and that no two runs of
//! one job overlapped in time.
//!
//! - `drill.ledger` `{ms}`: sleeps, records (the crash drill's kind).
//! - `drill.work` `{ms, fail, permanent}`: sleeps, records, then fails its first `fail`
//!   attempts (retried 50 ms later) or, with `permanent`, fails for good.

use std::time::Duration;

use docket_queue::JobArgs;
use docket_worker::{JobContext, JobError, QueueConfig, Registry, Runtime, RuntimeConfig};
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

/// The application name of the drill workers' connections: what `terminate` chaos cuts.
pub(crate) const APPLICATION_NAME: &str = "docket-drill-worker";

/// The rate-limited queue of the drill's workload.
pub(crate) const LIMITED_QUEUE: &str = "drill-limited";

/// A drill job: sleep `ms`, recording start and end in `drill_ledger`.
#[derive(Serialize, Deserialize)]
pub(crate) struct Ledger {
    pub(crate) ms: u64,
}

impl JobArgs for Ledger {
    const KIND: &'static str = "drill.ledger";
}

/// The stress drill's job.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Work {
    /// How long it runs.
    pub(crate) ms: u64,
    /// Attempts that fail before one succeeds.
    #[serde(default)]
    pub(crate) fail: i32,
    /// Fails for good (dead letter `permanent`).
    #[serde(default)]
    pub(crate) permanent: bool,
}

impl JobArgs for Work {
    const KIND: &'static str = "drill.work";
}

/// Creates the ledger table if it is missing.
pub(crate) async fn create_ledger(pool: &PgPool) -> sqlx::Result<()> {
    sqlx::query(
        "create table if not exists drill_ledger (
            id bigserial primary key,
            job_id uuid not null,
            attempt integer not null,
            worker_id uuid not null,
            started_at timestamptz not null default clock_timestamp(),
            finished_at timestamptz,
            lease_held boolean)",
    )
    .execute(pool)
    .await?;
    // A ledger made before `lease_held` existed (a drill's database kept for a look, the
    // crash drill's own) gains it.
    sqlx::query("alter table drill_ledger add column if not exists lease_held boolean")
        .execute(pool)
        .await?;
    Ok(())
}

/// How the drill worker runs.
pub(crate) struct DrillWorker {
    pub(crate) concurrency: usize,
    pub(crate) heartbeat: Duration,
    pub(crate) lease: Duration,
    /// The rate of [`LIMITED_QUEUE`], over every drill worker together.
    pub(crate) limited_rate: Option<docket_queue::rate_limit::Rate>,
}

/// Records the start of a run; returns its ledger row.
async fn record_start(pool: &PgPool, ctx: &JobContext, worker_id: uuid::Uuid) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "insert into drill_ledger (job_id, attempt, worker_id) values ($1, $2, $3) returning id",
    )
    .bind(ctx.id())
    .bind(ctx.attempt())
    .bind(worker_id)
    .fetch_one(pool)
    .await
}

/// Records the end of a run, and whether the run still held its job then: the job is
/// `processing` under this worker and this attempt, and the worker's stored lease has not
/// passed. A run that ends without it went on after its lease lapsed (a stalled worker
/// that carried on, a prefetched job started after the lease was lost): the checker counts
/// it as a violation, whether or not another run overlapped it.
async fn record_end(pool: &PgPool, row: i64) -> sqlx::Result<()> {
    sqlx::query(
        "update drill_ledger l set finished_at = clock_timestamp(),
             lease_held = exists (
                 select 1 from docket.jobs j join docket.workers w on w.id = j.locked_by
                 where j.id = l.job_id and j.state = 'processing' and j.locked_by = l.worker_id
                   and j.attempt = l.attempt and w.lease_expires_at > clock_timestamp())
         where l.id = $1",
    )
    .bind(row)
    .execute(pool)
    .await?;
    Ok(())
}

/// Runs the drill worker until SIGTERM or SIGINT.
pub(crate) async fn run(url: &str, options: DrillWorker) -> anyhow::Result<()> {
    let connect: PgConnectOptions = url.parse()?;
    let pool = PgPoolOptions::new()
        .max_connections(u32::try_from(options.concurrency * 2 + 4)?)
        .test_before_acquire(false)
        .connect_with(connect.application_name(APPLICATION_NAME))
        .await?;
    create_ledger(&pool).await?;
    let mut limited = QueueConfig::new(LIMITED_QUEUE).concurrency(options.concurrency);
    if let Some(rate) = options.limited_rate {
        limited = limited.rate(rate);
    }
    let config = RuntimeConfig {
        queues: vec![
            // Prefetching, so that the faults reach jobs waiting for a slot too.
            QueueConfig::new("default")
                .concurrency(options.concurrency)
                .prefetch(options.concurrency),
            limited,
        ],
        heartbeat_interval: options.heartbeat,
        lease_timeout: options.lease,
        rescuer_interval: options.heartbeat,
        poll_interval: Duration::from_millis(200),
        ..RuntimeConfig::default()
    };
    let mut registry = Registry::new();
    let runtime_slot: std::sync::Arc<std::sync::OnceLock<uuid::Uuid>> = Default::default();
    let (ledger_pool, worker_id) = (pool.clone(), runtime_slot.clone());
    registry.register(move |job: Ledger, ctx: JobContext| {
        let pool = ledger_pool.clone();
        let worker_id = worker_id.get().copied().unwrap_or_default();
        async move {
            let row = record_start(&pool, &ctx, worker_id).await?;
            tokio::time::sleep(Duration::from_millis(job.ms)).await;
            record_end(&pool, row).await?;
            Ok::<(), JobError>(())
        }
    });
    let (ledger_pool, worker_id) = (pool.clone(), runtime_slot.clone());
    registry.register(move |job: Work, ctx: JobContext| {
        let pool = ledger_pool.clone();
        let worker_id = worker_id.get().copied().unwrap_or_default();
        async move {
            let row = record_start(&pool, &ctx, worker_id).await?;
            tokio::time::sleep(Duration::from_millis(job.ms)).await;
            record_end(&pool, row).await?;
            if job.permanent {
                return Err(JobError::permanent("drill: fails for good, on purpose"));
            }
            if ctx.attempt() <= job.fail {
                return Err(JobError::retry_after(
                    "drill: fails this attempt, on purpose",
                    Duration::from_millis(50),
                ));
            }
            Ok(())
        }
    });
    let runtime = Runtime::new(pool.clone(), registry, config)?;
    let _ = runtime_slot.set(runtime.worker_id());
    runtime.run(shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
