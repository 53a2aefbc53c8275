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

/// What `throughput` runs.
#[derive(clap::Args)]
pub(crate) struct ThroughputArgs {
    /// Jobs queued before the worker starts.
    #[arg(long, default_value_t = 20_000)]
    jobs: usize,
    /// Jobs at once.
    #[arg(long, default_value_t = 10)]
    concurrency: usize,
    /// Most jobs per claim.
    #[arg(long, default_value_t = docket_worker::config::CLAIM_BATCH_DEFAULT)]
    claim_batch: u32,
    /// Queue the jobs as one batch with a callback (timed until the callback ran).
    #[arg(long)]
    batch: bool,
    /// Spread the jobs over this many groups (claimed fairly); 0: no groups.
    #[arg(long, default_value_t = 0)]
    groups: usize,
    /// Hold a REPEATABLE READ transaction open for this many seconds from the start (as a
    /// `pg_dump` or a long report would), so that vacuum can remove nothing; 0: none.
    #[arg(long, default_value_t = 0)]
    hold_snapshot: u64,
    /// Print jobs/s and the table's dead tuples every this many seconds; 0: only the total.
    #[arg(long, default_value_t = 0)]
    sample_every: u64,
    /// Limit the queue's rate (e.g. `1000000/s`, too high to bind: the limiter's own cost).
    #[arg(long)]
    rate: Option<docket_queue::rate_limit::Rate>,
    /// Draw the samples (jobs/s and dead tuples over time) into this SVG file.
    #[arg(long, requires = "sample_every")]
    chart: Option<std::path::PathBuf>,
    /// Jobs claimed ahead of free slots (the queue's `prefetch`): `auto` (the default) or
    /// a number; 0: none.
    #[arg(long, default_value = "auto")]
    prefetch: docket_worker::Prefetch,
    /// Each job sleeps this many milliseconds (0: returns at once).
    #[arg(long, default_value_t = 0)]
    sleep_ms: u64,
}

/// One in-process runtime working queued no-op jobs (as one batch with a callback when
/// `batch`: the clock then stops when the callback has run).
pub(crate) async fn throughput(args: ThroughputArgs) -> anyhow::Result<()> {
    let ThroughputArgs {
        jobs,
        concurrency,
        claim_batch,
        batch: as_batch,
        groups,
        hold_snapshot,
        sample_every,
        chart,
        rate,
        prefetch,
        sleep_ms,
    } = args;
    let db = TestDb::with_pool_size(12).await;
    seed(&db.pool, jobs, as_batch, groups).await?;
    // The no-op jobs count themselves, so the clock waits in process rather than by asking
    // the database every few milliseconds (a query that, with the snapshot held, would
    // itself step over every dead row).
    let ran = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut registry = Registry::new();
    let counter = ran.clone();
    let sleep = Duration::from_millis(sleep_ms);
    registry.register_raw(builtin::NOOP, move |_payload, _ctx| {
        let counter = counter.clone();
        async move {
            if !sleep.is_zero() {
                tokio::time::sleep(sleep).await;
            }
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        }
    });
    let mut queue = QueueConfig::new("default")
        .concurrency(concurrency)
        .prefetch_mode(prefetch);
    if let Some(rate) = rate {
        queue = queue.rate(rate);
    }
    let config = RuntimeConfig {
        queues: vec![queue],
        claim_batch,
        ..RuntimeConfig::default()
    };
    let runtime = Runtime::new(db.pool.clone(), registry, config)?;
    let stop = CancellationToken::new();
    let holder = match hold_snapshot {
        0 => None,
        secs => Some(hold_snapshot_for(&db.url, Duration::from_secs(secs)).await?),
    };
    let started = Instant::now();
    let sampler = (sample_every > 0).then(|| {
        tokio::spawn(sample(
            db.pool.clone(),
            Duration::from_secs(sample_every),
            stop.clone(),
        ))
    });
    let worker = tokio::spawn(runtime.run(stop.clone().cancelled_owned()));
    while ran.load(std::sync::atomic::Ordering::Relaxed) < jobs {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Then the database: the last outcomes are recorded (and a batch's callback has run).
    let elapsed = until_all_done(&db.pool, started).await?;
    stop.cancel();
    worker.await??;
    if let Some(sampler) = sampler {
        let samples = sampler.await??;
        if let Some(path) = chart {
            draw(&path, &samples, hold_snapshot as f64)?;
        }
    }
    if let Some(holder) = holder {
        holder.abort();
    }
    let what = match (as_batch, groups) {
        (true, _) => "jobs in one batch".to_owned(),
        (false, 0) => "jobs".to_owned(),
        (false, n) => format!("jobs in {n} groups"),
    };
    let mut held = match hold_snapshot {
        0 => String::new(),
        secs => format!(", a snapshot held for the first {secs} s"),
    };
    if let Some(rate) = rate {
        held.push_str(&format!(", rate limit {}/s", rate.per_second));
    }
    held.push_str(&format!(", prefetch {prefetch}"));
    let work = match sleep_ms {
        0 => "no-op".to_owned(),
        ms => format!("{ms} ms"),
    };
    // From each job's claim to its outcome: the run, plus the wait for a slot if it was
    // claimed ahead (and the completer's flush).
    let mut held_for: Vec<Duration> = sqlx::query_scalar::<_, f64>(
        "select extract(epoch from finished_at - attempted_at)::float8 from docket.jobs
          where state = 'completed' and attempted_at is not null",
    )
    .fetch_all(&db.pool)
    .await?
    .into_iter()
    .map(|secs| Duration::from_secs_f64(secs.max(0.0)))
    .collect();
    println!(
        "worker throughput: {jobs} {work} {what}, concurrency {concurrency}, claim batch {claim_batch}{held}: \
         {elapsed:.2?} = {:.0} jobs/s; claim to outcome {}",
        jobs as f64 / elapsed.as_secs_f64(),
        percentiles(&mut held_for)
    );
    Ok(())
}

/// Opens a REPEATABLE READ transaction, takes its snapshot, and keeps it for `hold` on a
/// task of its own; the transaction ends when the task does.
async fn hold_snapshot_for(
    url: &str,
    hold: Duration,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await?;
    sqlx::query("begin isolation level repeatable read")
        .execute(&mut conn)
        .await?;
    // The snapshot is taken by the transaction's first query.
    sqlx::query("select count(*) from docket.jobs where false")
        .execute(&mut conn)
        .await?;
    Ok(tokio::spawn(async move {
        tokio::time::sleep(hold).await;
        let _ = sqlx::query("commit").execute(&mut conn).await;
        println!("snapshot released after {hold:?}");
        // Kept open (idle, no snapshot) until the run ends.
        std::future::pending::<()>().await;
    }))
}

/// One sample: seconds since the start, jobs finished a second over the interval, dead
/// tuples in the table.
type Sample = (f64, f64, i64);

/// Every `every` until `stop`: jobs finished in the interval (per second) and the table's
/// dead tuples, printed as rows of a Markdown table and returned.
async fn sample(
    pool: PgPool,
    every: Duration,
    stop: CancellationToken,
) -> anyhow::Result<Vec<Sample>> {
    let mut samples = Vec::new();
    println!("| seconds | jobs/s | dead tuples |\n|---|---|---|");
    let started = Instant::now();
    let mut since: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("select now()").fetch_one(&pool).await?;
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(samples),
            _ = ticks.tick() => {}
        }
        // Only the interval's finished jobs: a count of all of them would cost more as the
        // run goes on (and far more while the snapshot is held).
        let (count, until): (i64, chrono::DateTime<chrono::Utc>) = sqlx::query_as(
            "select count(*), now() from docket.jobs
             where state = 'completed' and finished_at > $1 and finished_at <= now()",
        )
        .bind(since)
        .fetch_one(&pool)
        .await?;
        let dead: i64 = sqlx::query_scalar(
            "select n_dead_tup from pg_stat_user_tables where relid = 'docket.jobs'::regclass",
        )
        .fetch_one(&pool)
        .await?;
        let sample = (
            started.elapsed().as_secs_f64(),
            count as f64 / (until - since).as_seconds_f64(),
            dead,
        );
        println!("| {:.0} | {:.0} | {dead} |", sample.0, sample.1);
        samples.push(sample);
        since = until;
    }
}

/// Jobs/s and dead tuples over time, one above the other; a red line where the snapshot
/// was released (`released_at_s`, 0: none was held).
fn draw(path: &std::path::Path, samples: &[Sample], released_at_s: f64) -> anyhow::Result<()> {
    let end = samples.last().map_or(1.0, |s| s.0);
    let panels = vec![
        (
            "jobs finished per second",
            samples.iter().map(|s| (s.0, s.1)).collect(),
        ),
        (
            "dead tuples in docket.jobs",
            samples.iter().map(|s| (s.0, s.2 as f64)).collect(),
        ),
    ];
    crate::chart::draw(path, (900, 500), end, panels, &[released_at_s])
}

/// How the workers (and, for `latency`, the enqueuer) reach the benchmark's database.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct Route {
    /// Through a PgBouncer in transaction mode listening on 127.0.0.1 at this port, with
    /// [`docket_settings::POOLER`] `transaction` (seeding and the clock stay on direct connections).
    #[arg(long)]
    pooler_port: Option<u16>,
    /// Milliseconds between polls (the runtime's default when unset).
    #[arg(long)]
    poll_ms: Option<u64>,
    /// LISTEN off on a direct connection too (polling only), to tell the pooler's cost
    /// from polling's.
    #[arg(long)]
    no_listen: bool,
}

impl Route {
    /// The URL the workers use for `db`.
    fn url(&self, db: &TestDb) -> String {
        match self.pooler_port {
            Some(port) => format!("postgres://postgres@127.0.0.1:{port}/{}", db.name),
            None => db.url.clone(),
        }
    }

    fn pooler(&self) -> docket_queue::Pooler {
        if self.pooler_port.is_some() {
            docket_queue::Pooler::Transaction
        } else {
            docket_queue::Pooler::Session
        }
    }

    /// `config` as this route runs it.
    fn runtime(&self, mut config: RuntimeConfig) -> RuntimeConfig {
        config.listen = !self.no_listen && self.pooler_port.is_none();
        if let Some(ms) = self.poll_ms {
            config.poll_interval = Duration::from_millis(ms);
        }
        config
    }
}

/// Pickup latency at idle: from the enqueue's commit (and from before the call) to the
/// handler's start, one job at a time.
pub(crate) async fn latency(samples: usize, route: &Route) -> anyhow::Result<()> {
    let db = TestDb::with_pool_size(12).await;
    docket_queue::pooler::set_mode(route.pooler());
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(12)
        .connect(&route.url(&db))
        .await?;
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
    let config = route.runtime(RuntimeConfig::default());
    let (listen, poll) = (config.listen, config.poll_interval);
    let runtime = Runtime::new(pool.clone(), registry, config)?;
    let stop = CancellationToken::new();
    let worker = tokio::spawn(runtime.run(stop.clone().cancelled_owned()));
    let enqueue_pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .test_before_acquire(false)
        .connect(&route.url(&db))
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let job = NewJob::new("bench.ping", json!({}));
    let (mut from_commit, mut from_call) = (Vec::new(), Vec::new());
    for n in 0..samples + 20 {
        let call = Instant::now();
        docket_queue::enqueue(docket_queue::pooled(&enqueue_pool), &job).await?;
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
        // Polling only: the next job comes at a random moment of the poll's period, as an
        // application's would (in step with the polls, each would wait nearly a whole one).
        let phase = if listen {
            Duration::ZERO
        } else {
            poll.mul_f64(random_unit())
        };
        tokio::time::sleep(Duration::from_millis(10) + phase).await;
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

/// A random number in 0..1, without a dependency: the std hasher's keys are random per
/// instance.
fn random_unit() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    random as f64 / u64::MAX as f64
}

fn spawn_worker(
    docket: &str,
    db: &TestDb,
    route: &Route,
    concurrency: usize,
) -> anyhow::Result<Child> {
    let mut command = Command::new(docket);
    if let Some(ms) = route.poll_ms {
        command.env(
            docket_settings::POLL_INTERVAL.var,
            (ms as f64 / 1000.0).to_string(),
        );
    }
    if route.no_listen {
        command.env(docket_settings::LISTEN.var, "false");
    }
    Ok(command
        .arg("worker")
        .env("DATABASE_URL", route.url(db))
        .env(docket_settings::POOLER.var, route.pooler().as_str())
        .env(docket_settings::CONCURRENCY.var, concurrency.to_string())
        .env(docket_settings::LOG_FORMAT.var, "json")
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
    route: &Route,
) -> anyhow::Result<()> {
    let db = TestDb::with_pool_size(4).await;
    seed(&db.pool, jobs, false, 0).await?;
    let started = Instant::now();
    let mut children = Vec::new();
    for _ in 0..processes {
        children.push(spawn_worker(docket, &db, route, concurrency)?);
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
