//! The drill worker: Docket's runtime embedded in this binary (as an application would)
//! with one kind, `drill.ledger`, that records each execution in a ledger table. The
//! ledger lets a drill check what no log can: that every job ran, and that no two runs of
//! one job overlapped in time.

use std::time::Duration;

use docket_queue::JobArgs;
use docket_worker::{JobContext, JobError, QueueConfig, Registry, Runtime, RuntimeConfig};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

/// A drill job: sleep `ms`, recording start and end in `drill_ledger`.
#[derive(Serialize, Deserialize)]
pub(crate) struct Ledger {
    pub(crate) ms: u64,
}

impl JobArgs for Ledger {
    const KIND: &'static str = "drill.ledger";
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
            finished_at timestamptz)",
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// How the drill worker runs.
pub(crate) struct DrillWorker {
    pub(crate) concurrency: usize,
    pub(crate) heartbeat: Duration,
    pub(crate) lease: Duration,
}

/// Runs the drill worker until SIGTERM or SIGINT.
pub(crate) async fn run(url: &str, options: DrillWorker) -> anyhow::Result<()> {
    let pool = PgPoolOptions::new()
        .max_connections(u32::try_from(options.concurrency * 2 + 2)?)
        .test_before_acquire(false)
        .connect(url)
        .await?;
    create_ledger(&pool).await?;
    let config = RuntimeConfig {
        queues: vec![QueueConfig::new("default").concurrency(options.concurrency)],
        heartbeat_interval: options.heartbeat,
        lease_timeout: options.lease,
        rescuer_interval: options.heartbeat,
        poll_interval: Duration::from_millis(200),
        ..RuntimeConfig::default()
    };
    let mut registry = Registry::new();
    let ledger_pool = pool.clone();
    let runtime_slot: std::sync::Arc<std::sync::OnceLock<uuid::Uuid>> = Default::default();
    let worker_id = runtime_slot.clone();
    registry.register(move |job: Ledger, ctx: JobContext| {
        let pool = ledger_pool.clone();
        let worker_id = worker_id.get().copied().unwrap_or_default();
        async move {
            let row: i64 = sqlx::query_scalar(
                "insert into drill_ledger (job_id, attempt, worker_id) values ($1, $2, $3) returning id",
            )
            .bind(ctx.id())
            .bind(ctx.attempt())
            .bind(worker_id)
            .fetch_one(&pool)
            .await?;
            tokio::time::sleep(Duration::from_millis(job.ms)).await;
            sqlx::query("update drill_ledger set finished_at = clock_timestamp() where id = $1")
                .bind(row)
                .execute(&pool)
                .await?;
            Ok::<(), JobError>(())
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
