//! A worker process that stalls (SIGSTOP) for longer than its lease, with real worker
//! processes: this test binary started again as a worker (`stall_worker_process`), with a
//! kind that records every run's start and end in a ledger table.

use std::time::Duration;

use docket_queue::{enqueue, JobId, JobState, NewJob};
use docket_testkit::{eventually, TestDb};
use docket_worker::{JobContext, JobError, QueueConfig, Registry, Runtime, RuntimeConfig};
use serde_json::json;
use sqlx::PgPool;

use crate::process::WorkerProcess;
use crate::state_of;

const WAIT: Duration = Duration::from_secs(60);

/// The queue the stall tests use.
const QUEUE: &str = "lease";

/// Where the worker process finds its database (set only for the worker process).
const DB_VAR: &str = "DOCKET_STALL_WORKER_DB";

/// The worker process's concurrency and prefetch, as `concurrency,prefetch`.
const SLOTS_VAR: &str = "DOCKET_STALL_WORKER_SLOTS";

/// Not a test: the worker process of the stall tests, which start this binary again with
/// this test's name and [`DB_VAR`] set. Without it, it returns at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a worker process of the stall tests; they start it"]
async fn stall_worker_process() {
    let Ok(url) = std::env::var(DB_VAR) else {
        return;
    };
    let slots = std::env::var(SLOTS_VAR).unwrap_or_default();
    let (concurrency, prefetch) = slots
        .split_once(',')
        .and_then(|(c, p)| Some((c.parse().ok()?, p.parse().ok()?)))
        .unwrap_or((1, 0));
    let pool = PgPool::connect(&url).await.expect("connect");
    let mut registry = Registry::new();
    let ledger = pool.clone();
    registry.register_raw("test.ledger", move |payload, ctx: JobContext| {
        let pool = ledger.clone();
        async move {
            let ms = payload["ms"].as_u64().unwrap_or(0);
            let row: i64 = sqlx::query_scalar(
                "insert into stall_ledger (job_id, pid) values ($1, $2) returning id",
            )
            .bind(ctx.id().0)
            .bind(i32::try_from(std::process::id()).unwrap_or(i32::MAX))
            .fetch_one(&pool)
            .await?;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            sqlx::query("update stall_ledger set finished_at = clock_timestamp() where id = $1")
                .bind(row)
                .execute(&pool)
                .await?;
            Ok::<(), JobError>(())
        }
    });
    let config = RuntimeConfig {
        queues: vec![QueueConfig::new(QUEUE)
            .concurrency(concurrency)
            .prefetch(prefetch)],
        heartbeat_interval: Duration::from_secs(1),
        lease_timeout: Duration::from_secs(4),
        rescuer_interval: Duration::from_secs(1),
        poll_interval: Duration::from_millis(200),
        ..RuntimeConfig::default()
    };
    let runtime = Runtime::new(pool, registry, config).expect("valid runtime");
    // Runs until the test kills the process.
    runtime
        .run(std::future::pending::<()>())
        .await
        .expect("runs");
}

/// A stall-test worker process with `concurrency` slots and `prefetch`.
fn start_worker(db: &TestDb, concurrency: usize, prefetch: usize) -> WorkerProcess {
    WorkerProcess::start(
        "stall::stall_worker_process",
        &[
            (DB_VAR, db.url.clone()),
            (SLOTS_VAR, format!("{concurrency},{prefetch}")),
        ],
    )
}

async fn create_ledger(pool: &PgPool) {
    sqlx::query(
        "create table stall_ledger (
            id bigserial primary key,
            job_id uuid not null,
            pid integer not null,
            started_at timestamptz not null default clock_timestamp(),
            finished_at timestamptz)",
    )
    .execute(pool)
    .await
    .unwrap();
}

/// How many runs `pid` started of `job` (any job when `None`).
async fn runs_by(pool: &PgPool, pid: i32, job: Option<JobId>) -> i64 {
    sqlx::query_scalar(
        "select count(*) from stall_ledger where pid = $1 and ($2::uuid is null or job_id = $2)",
    )
    .bind(pid)
    .bind(job.map(|id| id.0))
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Runs that finished their work although they started before an earlier run of the
/// same job had finished its own: two runs of one job at once. A run that was stopped
/// never records its end, and overlaps nothing. As `(job, started_at, finished_at, pid)`.
async fn overlapping_runs(pool: &PgPool) -> Vec<(uuid::Uuid, String, String, i32)> {
    sqlx::query_as(
        "with finished as (select * from stall_ledger where finished_at is not null)
         select b.job_id, b.started_at::text, b.finished_at::text, b.pid
         from finished b
         where exists (select 1 from finished a
                       where a.job_id = b.job_id and a.id <> b.id
                         and a.started_at <= b.started_at and b.started_at < a.finished_at)
         order by b.started_at",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_longer_than_its_lease_stops_its_run_when_it_wakes_and_no_job_runs_twice_at_once(
) {
    let db = TestDb::new().await;
    create_ledger(&db.pool).await;
    // Long enough to still be running on A when A wakes up: B's start, A's lease (4 s)
    // and B's rescue come first.
    let job = enqueue(
        &db.pool,
        &NewJob::new("test.ledger", json!({"ms": 12_000})).queue(QUEUE),
    )
    .await
    .unwrap();
    let a = start_worker(&db, 1, 0);
    eventually(WAIT, "A runs the job", || async {
        runs_by(&db.pool, a.pid(), Some(job)).await == 1
    })
    .await;
    let b = start_worker(&db, 1, 0);
    b.registered(&db).await;

    a.signal("STOP");
    // A's lease lapses, B's rescuer frees the job and B runs it.
    eventually(WAIT, "B runs the job while A is stopped", || async {
        runs_by(&db.pool, b.pid(), Some(job)).await == 1
    })
    .await;
    a.signal("CONT");

    eventually(WAIT, "the job completes", || async {
        state_of(&db.pool, job).await == JobState::Completed
    })
    .await;
    // A's run would have finished its work 12 s after it started, before B's did.
    assert_eq!(
        overlapping_runs(&db.pool).await,
        vec![],
        "no run of a job finished its work while another run of it was going on"
    );
    assert_eq!(runs_by(&db.pool, a.pid(), Some(job)).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_worker_hands_back_its_prefetched_jobs_and_claims_none_of_them_again_while_they_run_elsewhere(
) {
    let db = TestDb::new().await;
    create_ledger(&db.pool).await;
    let jobs: Vec<JobId> = docket_queue::enqueue_many(
        &db.pool,
        &(0..4)
            .map(|_| NewJob::new("test.ledger", json!({"ms": 12_000})).queue(QUEUE))
            .collect::<Vec<_>>(),
    )
    .await
    .unwrap();
    // A runs one job and holds the other three prefetched.
    let a = start_worker(&db, 1, 3);
    eventually(WAIT, "A runs one job and holds the rest", || async {
        runs_by(&db.pool, a.pid(), None).await == 1
            && crate::count_in(&db.pool, JobState::Processing).await == 4
    })
    .await;
    let b = start_worker(&db, 4, 0);
    b.registered(&db).await;

    a.signal("STOP");
    eventually(WAIT, "B runs every job while A is stopped", || async {
        runs_by(&db.pool, b.pid(), None).await == 4
    })
    .await;
    a.signal("CONT");

    eventually(WAIT, "every job completes", || async {
        for &job in &jobs {
            if state_of(&db.pool, job).await != JobState::Completed {
                return false;
            }
        }
        true
    })
    .await;
    assert_eq!(
        overlapping_runs(&db.pool).await,
        vec![],
        "no run of a job finished its work while another run of it was going on"
    );
    assert_eq!(
        runs_by(&db.pool, a.pid(), None).await,
        1,
        "A started no job again, prefetched or claimed, after it woke up"
    );
}
