//! Benchmarks of the worker runtime: throughput, pickup latency, and `docket worker`
//! processes (scaling and memory).

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use docket_queue::NewJob;
use docket_testkit::TestDb;
use docket_worker::{builtin, QueueConfig, Registry, Runtime, RuntimeConfig};
use serde_json::json;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::stats::percentiles;

async fn seed(pool: &PgPool, jobs: usize, as_batch: bool, groups: usize) -> anyhow::Result<()> {
    if as_batch {
        // One batch of every job, with a callback: the tracker finishes it at the end.
        let jobs: Vec<NewJob> = (0..jobs)
            .map(|n| NewJob::new(builtin::NOOP, json!({ "n": n })))
            .collect();
        let callback = docket_queue::batch::Callback {
            kind: builtin::NOOP.to_owned(),
            payload: json!({}),
            queue: "default".to_owned(),
        };
        let batch = docket_queue::batch::NewBatch {
            jobs,
            callback: Some(callback),
            parent: None,
        };
        docket_queue::batch::create(pool, &batch).await?;
        sqlx::query("vacuum analyze docket.jobs")
            .execute(pool)
            .await?;
        return Ok(());
    }
    // With groups, jobs go round them (tenants of one queue, claimed fairly).
    let batch: Vec<NewJob> = (0..10_000)
        .map(|n| {
            let job = NewJob::new(builtin::NOOP, json!({ "n": n }));
            match groups {
                0 => job,
                _ => job.group(format!("tenant-{}", n % groups)),
            }
        })
        .collect();
    let mut left = jobs;
    while left > 0 {
        let take = left.min(batch.len());
        docket_queue::enqueue_many(pool, &batch[..take]).await?;
        left -= take;
    }
    sqlx::query("vacuum analyze docket.jobs")
        .execute(pool)
        .await?;
    Ok(())
}

async fn unfinished(pool: &PgPool) -> anyhow::Result<bool> {
    // An open batch counts: its callback is still to come.
    Ok(sqlx::query_scalar(
        "select exists (select 1 from docket.jobs where state in ('pending', 'retrying', 'processing'))
             or exists (select 1 from docket.batches where finished_at is null)",
    )
    .fetch_one(pool)
    .await?)
}

/// Waits until no job is left unfinished; returns how long that took from `started`.
async fn until_all_done(pool: &PgPool, started: Instant) -> anyhow::Result<Duration> {
    while unfinished(pool).await? {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(started.elapsed())
}

/// One in-process runtime working `jobs` queued no-op jobs at `concurrency` (as one batch
/// with a callback when `as_batch`: the clock then stops when the callback has run).
pub(crate) async fn throughput(
    jobs: usize,
    concurrency: usize,
    claim_batch: u32,
    as_batch: bool,
    groups: usize,
) -> anyhow::Result<()> {
    let db = TestDb::with_pool_size(12).await;
    seed(&db.pool, jobs, as_batch, groups).await?;
    let mut registry = Registry::new();
    builtin::register(&mut registry);
    let config = RuntimeConfig {
        queues: vec![QueueConfig::new("default").concurrency(concurrency)],
        claim_batch,
        ..RuntimeConfig::default()
    };
    let runtime = Runtime::new(db.pool.clone(), registry, config)?;
    let stop = CancellationToken::new();
    let started = Instant::now();
    let worker = tokio::spawn(runtime.run(stop.clone().cancelled_owned()));
    let elapsed = until_all_done(&db.pool, started).await?;
    stop.cancel();
    worker.await??;
    let what = match (as_batch, groups) {
        (true, _) => "jobs in one batch".to_owned(),
        (false, 0) => "jobs".to_owned(),
        (false, n) => format!("jobs in {n} groups"),
    };
    println!(
        "worker throughput: {jobs} no-op {what}, concurrency {concurrency}, claim batch {claim_batch}: \
         {elapsed:.2?} = {:.0} jobs/s",
        jobs as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}

/// Pickup latency at idle: from the enqueue's commit (and from before the call) to the
/// handler's start, one job at a time.
pub(crate) async fn latency(samples: usize) -> anyhow::Result<()> {
    let db = TestDb::with_pool_size(12).await;
    let (started_tx, mut started_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let started_tx = Arc::new(started_tx);
    let mut registry = Registry::new();
    registry.register_raw("bench.ping", move |_payload, _ctx| {
        let at = Instant::now();
        let tx = started_tx.clone();
        async move {
            let _ = tx.send(at);
            Ok(())
        }
    });
    let runtime = Runtime::new(db.pool.clone(), registry, RuntimeConfig::default())?;
    let stop = CancellationToken::new();
    let worker = tokio::spawn(runtime.run(stop.clone().cancelled_owned()));
    let enqueue_pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .test_before_acquire(false)
        .connect(&db.url)
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let job = NewJob::new("bench.ping", json!({}));
    let (mut from_commit, mut from_call) = (Vec::new(), Vec::new());
    for n in 0..samples + 20 {
        let call = Instant::now();
        docket_queue::enqueue(&enqueue_pool, &job).await?;
        let committed = Instant::now();
        let started = started_rx
            .recv()
            .await
            .ok_or_else(|| anyhow::anyhow!("worker stopped"))?;
        if n >= 20 {
            // The first 20 warm connections and statement caches.
            from_commit.push(started.saturating_duration_since(committed));
            from_call.push(started.saturating_duration_since(call));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    worker.await??;
    println!(
        "pickup latency, commit -> handler start ({samples} jobs): {}",
        percentiles(&mut from_commit)
    );
    println!(
        "pickup latency, call -> handler start ({samples} jobs): {}",
        percentiles(&mut from_call)
    );
    Ok(())
}

fn spawn_worker(docket: &str, url: &str, concurrency: usize) -> anyhow::Result<Child> {
    Ok(Command::new(docket)
        .arg("worker")
        .env("DATABASE_URL", url)
        .env("DOCKET_CONCURRENCY", concurrency.to_string())
        .env("DOCKET_LOG_FORMAT", "json")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `processes` × `docket worker` on one database: time to work `jobs` queued no-ops, and
/// the first process's resident memory under load and at idle.
pub(crate) async fn scale(
    docket: &str,
    processes: usize,
    jobs: usize,
    concurrency: usize,
) -> anyhow::Result<()> {
    let db = TestDb::with_pool_size(4).await;
    seed(&db.pool, jobs, false, 0).await?;
    let started = Instant::now();
    let mut children = Vec::new();
    for _ in 0..processes {
        children.push(spawn_worker(docket, &db.url, concurrency)?);
    }
    let first = children[0].id();
    let mut peak = 0;
    while unfinished(&db.pool).await? {
        peak = peak.max(rss_kib(first).unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = rss_kib(first).unwrap_or(0);
    for child in &mut children {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
    }
    for mut child in children {
        child.wait()?;
    }
    println!(
        "{processes} worker process(es), concurrency {concurrency} each, {jobs} no-op jobs: {elapsed:.2?} = {:.0} jobs/s; \
         first process RSS peak {:.1} MiB under load, {:.1} MiB idle after",
        jobs as f64 / elapsed.as_secs_f64(),
        peak as f64 / 1024.0,
        idle as f64 / 1024.0
    );
    Ok(())
}
