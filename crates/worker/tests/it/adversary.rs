//! Attacks on the lease guarantees: real worker processes (this test binary started again as a
//! worker, `adv_worker_process`), SIGSTOP/SIGCONT, a hung heartbeat (the worker's row
//! locked from another session) and terminated connections. The kind `adv.progress` records
//! every run in `adv_runs` and, every 100 ms of its work, a row in `adv_progress`: a run
//! "does work" at each of those moments, so two runs of one job at once show up as work
//! of one run done after another run of the same job started and before that one's last
//! work, whether or not either run finishes.

use std::time::Duration;

use docket_queue::{enqueue, JobId, JobState, NewJob};
use docket_testkit::{eventually, TestDb};
use docket_worker::{JobContext, JobError, QueueConfig, Registry, Runtime, RuntimeConfig};
use serde_json::json;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::time::{sleep, Instant};

use crate::process::WorkerProcess;
use crate::state_of;

const WAIT: Duration = Duration::from_secs(60);
const QUEUE: &str = "adv";
const DB_VAR: &str = "DOCKET_ADV_WORKER_DB";
const SLOTS_VAR: &str = "DOCKET_ADV_WORKER_SLOTS";
/// The worker process's rescuer interval in seconds (1 unless set).
const RESCUER_VAR: &str = "DOCKET_ADV_WORKER_RESCUER_SECS";

/// Not a test: the worker process of these tests. Without [`DB_VAR`] it returns at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a worker process of the adversary tests; they start it"]
async fn adv_worker_process() {
    let Ok(url) = std::env::var(DB_VAR) else {
        return;
    };
    let slots = std::env::var(SLOTS_VAR).unwrap_or_default();
    let (concurrency, prefetch) = slots
        .split_once(',')
        .and_then(|(c, p)| Some((c.parse().ok()?, p.parse().ok()?)))
        .unwrap_or((1, 0));
    // The runtime's connections are named, so that a test can terminate them (and not
    // the ledger's, whose writes are the test's evidence).
    let sep = if url.contains('?') { '&' } else { '?' };
    let pool = PgPool::connect(&format!("{url}{sep}application_name=adv_worker"))
        .await
        .expect("connect");
    let ledger_pool = PgPool::connect(&url).await.expect("connect");
    let mut registry = Registry::new();
    let ledger = ledger_pool.clone();
    registry.register_raw("adv.progress", move |payload, ctx: JobContext| {
        let pool = ledger.clone();
        async move {
            let ms = payload["ms"].as_u64().unwrap_or(0);
            let run: i64 = sqlx::query_scalar(
                "insert into adv_runs (job_id, pid) values ($1, $2) returning id",
            )
            .bind(ctx.id().0)
            .bind(i32::try_from(std::process::id()).unwrap_or(i32::MAX))
            .fetch_one(&pool)
            .await?;
            // Work in steps of 100 ms, each one recorded: it ignores `ctx.cancelled()` on
            // purpose, like a handler in the middle of a side effect.
            for _ in 0..ms / 100 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                sqlx::query("insert into adv_progress (run) values ($1)")
                    .bind(run)
                    .execute(&pool)
                    .await?;
            }
            sqlx::query("update adv_runs set finished_at = clock_timestamp() where id = $1")
                .bind(run)
                .execute(&pool)
                .await?;
            // A run in the process named by `dead_on` ends in a dead letter: its outcome is
            // told apart from another run's.
            if payload["dead_on"].as_u64() == Some(u64::from(std::process::id())) {
                return Err(JobError::permanent("the run in the stalled worker"));
            }
            Ok::<(), JobError>(())
        }
    });
    let config = RuntimeConfig {
        queues: vec![QueueConfig::new(QUEUE)
            .concurrency(concurrency)
            .prefetch(prefetch)],
        heartbeat_interval: Duration::from_secs(1),
        lease_timeout: Duration::from_secs(4),
        rescuer_interval: Duration::from_secs(
            std::env::var(RESCUER_VAR)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(1),
        ),
        poll_interval: Duration::from_millis(200),
        ..RuntimeConfig::default()
    };
    let runtime = Runtime::new(pool, registry, config).expect("valid runtime");
    runtime
        .run(std::future::pending::<()>())
        .await
        .expect("runs");
}

/// An attack's worker process with `concurrency` slots and `prefetch`, its rescuer every
/// `rescuer_secs`.
fn start_worker_with_rescuer(
    db: &TestDb,
    concurrency: usize,
    prefetch: usize,
    rescuer_secs: u64,
) -> WorkerProcess {
    WorkerProcess::start(
        "adversary::adv_worker_process",
        &[
            (DB_VAR, db.url.clone()),
            (SLOTS_VAR, format!("{concurrency},{prefetch}")),
            (RESCUER_VAR, rescuer_secs.to_string()),
        ],
    )
}

fn start_worker(db: &TestDb, concurrency: usize, prefetch: usize) -> WorkerProcess {
    start_worker_with_rescuer(db, concurrency, prefetch, 1)
}

/// Waits for `worker`'s next heartbeat to land, and returns right after it.
async fn just_beat(worker: &WorkerProcess, db: &TestDb) {
    let before = heartbeat_at(&db.pool, worker.pid()).await;
    let until = Instant::now() + Duration::from_secs(10);
    while heartbeat_at(&db.pool, worker.pid()).await == before {
        assert!(Instant::now() < until, "no heartbeat");
        sleep(Duration::from_millis(5)).await;
    }
}

async fn heartbeat_at(pool: &PgPool, pid: i32) -> Option<String> {
    sqlx::query_scalar("select heartbeat_at::text from docket.workers where pid = $1")
        .bind(pid)
        .fetch_optional(pool)
        .await
        .unwrap()
}

async fn create_ledger(pool: &PgPool) {
    sqlx::query(
        "create table adv_runs (
            id bigserial primary key,
            job_id uuid not null,
            pid integer not null,
            started_at timestamptz not null default clock_timestamp(),
            finished_at timestamptz)",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "create table adv_progress (
            run bigint not null,
            at timestamptz not null default clock_timestamp())",
    )
    .execute(pool)
    .await
    .unwrap();
}

async fn runs_by(pool: &PgPool, pid: i32, job: Option<JobId>) -> i64 {
    sqlx::query_scalar(
        "select count(*) from adv_runs where pid = $1 and ($2::uuid is null or job_id = $2)",
    )
    .bind(pid)
    .bind(job.map(|id| id.0))
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Two runs of one job at once: run `a` did work (a progress step, or its end) after run
/// `b` of the same job had started, and `b` did work after that too (so it was going on).
/// As `(a's pid, b's pid, b's start, a's work after it, how many such steps of a)`.
async fn concurrent_work(pool: &PgPool) -> Vec<(i32, i32, String, String, i64)> {
    sqlx::query_as(
        "with work as (
             select run, at from adv_progress
             union all select id, finished_at from adv_runs where finished_at is not null),
         spans as (
             select r.id, r.job_id, r.pid, r.started_at,
                    coalesce((select max(at) from work w where w.run = r.id), r.started_at) as last
             from adv_runs r)
         select a.pid, b.pid, b.started_at::text, min(w.at)::text, count(*)
         from spans a
         join spans b on a.job_id = b.job_id and a.id <> b.id
         join work w on w.run = a.id and w.at > b.started_at and w.at < b.last
         where a.started_at <= b.started_at
         group by a.pid, b.pid, b.started_at
         order by b.started_at",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn completes(db: &TestDb, job: JobId) {
    eventually(WAIT, "the job completes", || async {
        state_of(&db.pool, job).await == JobState::Completed
    })
    .await;
}

async fn enqueue_ms(db: &TestDb, ms: u64) -> JobId {
    enqueue(
        &db.pool,
        &NewJob::new("adv.progress", json!({ "ms": ms })).queue(QUEUE),
    )
    .await
    .unwrap()
}

/// Rule 1, stall longer than the lease. A is stopped while it runs a job, B rescues and
/// runs it, A is woken while B's run goes on. The moment A woke, its handler task was
/// polled again (a task of its own) before any heartbeat had looked at the clock, and once
/// the heartbeat released the run the handler still got `STOP_GRACE`: A worked on beside
/// B. A handler is now polled only while its worker provably holds its lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adv_a_worker_woken_from_a_stall_longer_than_its_lease_does_no_more_work_on_a_rescued_job()
{
    let db = TestDb::new().await;
    create_ledger(&db.pool).await;
    let job = enqueue_ms(&db, 20_000).await;
    let a = start_worker(&db, 1, 0);
    eventually(WAIT, "A runs the job", || async {
        runs_by(&db.pool, a.pid(), Some(job)).await == 1
    })
    .await;
    let b = start_worker(&db, 1, 0);
    b.registered(&db).await;
    a.signal("STOP");
    eventually(WAIT, "B runs the job while A is stopped", || async {
        runs_by(&db.pool, b.pid(), Some(job)).await == 1
    })
    .await;
    sleep(Duration::from_millis(500)).await;
    a.signal("CONT");
    // Let A wake, notice and stop, while B's run goes on.
    sleep(Duration::from_secs(4)).await;
    let overlap = concurrent_work(&db.pool).await;
    a.signal("KILL");
    completes(&db, job).await;
    assert_eq!(
        overlap,
        vec![],
        "A did work on the job after it woke, while B ran it"
    );
}

/// Rule 1, stall just under the lease followed by a hung heartbeat. Right after a
/// heartbeat, A is stopped for 3.3 s (lease 4 s) and its row in docket.workers is locked
/// from another session until long after. On waking, the heartbeat's pre-send check saw
/// 3.3 s < 4 s and sent; the beat hung on the lock until its timeout (1 s), past the lease,
/// and the run went on beside B's. A handler is now not polled once the lease is past.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adv_a_stall_just_under_the_lease_then_a_hung_heartbeat_stops_runs_before_the_lease_lapses()
{
    let db = TestDb::new().await;
    create_ledger(&db.pool).await;
    let job = enqueue_ms(&db, 20_000).await;
    let a = start_worker(&db, 1, 0);
    eventually(WAIT, "A runs the job", || async {
        runs_by(&db.pool, a.pid(), Some(job)).await == 1
    })
    .await;
    let b = start_worker(&db, 1, 0);
    b.registered(&db).await;

    let mut lock = PgConnection::connect(&db.url).await.unwrap();
    just_beat(&a, &db).await;
    a.signal("STOP");
    sqlx::query("begin").execute(&mut lock).await.unwrap();
    sqlx::query("select 1 from docket.workers where pid = $1 for update")
        .bind(a.pid())
        .execute(&mut lock)
        .await
        .unwrap();
    sleep(Duration::from_millis(3300)).await;
    a.signal("CONT");
    sleep(Duration::from_secs(6)).await;
    sqlx::query("commit").execute(&mut lock).await.unwrap();
    completes(&db, job).await;
    assert_eq!(
        concurrent_work(&db.pool).await,
        vec![],
        "A worked on the job while B ran it"
    );
}

/// Guard: a stall just under the lease, right after a heartbeat, is harmless: A keeps its
/// lease and its run, nobody rescues the job, it completes once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adv_a_stall_just_under_the_lease_keeps_the_run() {
    let db = TestDb::new().await;
    create_ledger(&db.pool).await;
    let job = enqueue_ms(&db, 8_000).await;
    let a = start_worker(&db, 1, 0);
    eventually(WAIT, "A runs the job", || async {
        runs_by(&db.pool, a.pid(), Some(job)).await == 1
    })
    .await;
    let b = start_worker(&db, 1, 0);
    b.registered(&db).await;
    just_beat(&a, &db).await;
    a.signal("STOP");
    sleep(Duration::from_millis(2500)).await;
    a.signal("CONT");
    completes(&db, job).await;
    assert_eq!(
        runs_by(&db.pool, b.pid(), Some(job)).await,
        0,
        "B never ran it"
    );
    assert_eq!(concurrent_work(&db.pool).await, vec![]);
}

/// Guard: a hung heartbeat (A's row locked for 8 s) with no stall. A must stop its run
/// before its lease lapses; the job completes, never worked on by two runs at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adv_a_hung_heartbeat_stops_the_run_before_the_lease_lapses() {
    let db = TestDb::new().await;
    create_ledger(&db.pool).await;
    let job = enqueue_ms(&db, 15_000).await;
    let a = start_worker(&db, 1, 0);
    eventually(WAIT, "A runs the job", || async {
        runs_by(&db.pool, a.pid(), Some(job)).await == 1
    })
    .await;
    let b = start_worker(&db, 1, 0);
    b.registered(&db).await;
    let mut lock = PgConnection::connect(&db.url).await.unwrap();
    just_beat(&a, &db).await;
    sqlx::query("begin").execute(&mut lock).await.unwrap();
    sqlx::query("select 1 from docket.workers where pid = $1 for update")
        .bind(a.pid())
        .execute(&mut lock)
        .await
        .unwrap();
    sleep(Duration::from_secs(8)).await;
    sqlx::query("commit").execute(&mut lock).await.unwrap();
    completes(&db, job).await;
    assert_eq!(concurrent_work(&db.pool).await, vec![]);
}

/// Guard: repeated short stops (1.5 s stopped, 0.5 s running, ten times) with a second
/// worker ready: the job completes and never runs twice at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adv_repeated_short_stops_never_run_a_job_twice_at_once() {
    let db = TestDb::new().await;
    create_ledger(&db.pool).await;
    let job = enqueue_ms(&db, 12_000).await;
    let a = start_worker(&db, 1, 0);
    eventually(WAIT, "A runs the job", || async {
        runs_by(&db.pool, a.pid(), Some(job)).await == 1
    })
    .await;
    let b = start_worker(&db, 1, 0);
    b.registered(&db).await;
    for _ in 0..10 {
        a.signal("STOP");
        sleep(Duration::from_millis(1500)).await;
        a.signal("CONT");
        sleep(Duration::from_millis(500)).await;
    }
    completes(&db, job).await;
    assert_eq!(concurrent_work(&db.pool).await, vec![]);
}

/// Rule 4 guard: every runtime connection of both workers terminated
/// (`pg_terminate_backend`) three times while jobs run (the heartbeat's among them): every job completes, none twice at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adv_terminated_connections_lose_no_job() {
    let db = TestDb::new().await;
    create_ledger(&db.pool).await;
    let mut jobs = Vec::new();
    for _ in 0..4 {
        jobs.push(enqueue_ms(&db, 5_000).await);
    }
    let a = start_worker(&db, 2, 1);
    let b = start_worker(&db, 2, 1);
    a.registered(&db).await;
    b.registered(&db).await;
    for _ in 0..3 {
        sleep(Duration::from_millis(1500)).await;
        sqlx::query(
            "select pg_terminate_backend(pid) from pg_stat_activity
             where datname = current_database() and application_name = 'adv_worker'",
        )
        .execute(&db.pool)
        .await
        .unwrap();
    }
    for job in jobs {
        completes(&db, job).await;
    }
    assert_eq!(concurrent_work(&db.pool).await, vec![]);
}

/// Rule 2: an outcome sent after the lease lapsed is fenced. A runs a 6 s job whose run in
/// A ends in a dead letter; A is stopped at once, B rescues and runs it; A is woken when
/// A's work is long due (its outcome is decided at once, within the grace, and sent with
/// its old token) while B's run goes on. The job ends completed by B: A's dead letter never
/// lands, nor does it appear in the job's history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adv_the_outcome_of_a_run_woken_after_its_lease_lapsed_is_fenced() {
    let db = TestDb::new().await;
    create_ledger(&db.pool).await;
    let a = start_worker(&db, 1, 0);
    a.registered(&db).await;
    let job = enqueue(
        &db.pool,
        &NewJob::new("adv.progress", json!({ "ms": 6_000, "dead_on": a.pid() })).queue(QUEUE),
    )
    .await
    .unwrap();
    eventually(WAIT, "A runs the job", || async {
        runs_by(&db.pool, a.pid(), Some(job)).await == 1
    })
    .await;
    a.signal("STOP");
    let b = start_worker(&db, 1, 0);
    eventually(WAIT, "B runs the job while A is stopped", || async {
        runs_by(&db.pool, b.pid(), Some(job)).await == 1
    })
    .await;
    // A's 6 s of work came due while it was stopped.
    sleep(Duration::from_secs(2)).await;
    a.signal("CONT");
    completes(&db, job).await;
    let shown = docket_queue::admin::show(&db.pool, job).await.unwrap();
    assert_eq!(shown.state, JobState::Completed);
    assert!(
        shown
            .errors
            .iter()
            .all(|e| !e.error.contains("stalled worker")),
        "A's fenced outcome left no trace: {:?}",
        shown.errors
    );
    assert_eq!(shown.attempt, 2, "B's run is the second attempt");
}

/// Rule 3: the reconciler alone stops a run whose (job, token) the database gives to
/// another worker that is alive (so no rescue, and no newer claim by this worker, stops
/// it instead: `faults::a_run_whose_claim_the_database_gave_away…` gives the job to a
/// worker that is gone, and this worker's own newer claim stops the run there, so it
/// passes with the reconciler's stop removed). The job stays with the other worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adv_the_reconciler_stops_a_run_the_database_gave_to_another_live_worker() {
    use std::sync::{Arc, Mutex};
    let db = TestDb::new().await;
    let stopped = Arc::new(Mutex::new(0));
    let mut registry = Registry::new();
    let seen = stopped.clone();
    registry.register_raw("adv.watch", move |_payload, ctx: JobContext| {
        let seen = seen.clone();
        async move {
            ctx.cancelled().await;
            *seen.lock().unwrap() += 1;
            Err(JobError::from("stopped"))
        }
    });
    let config = RuntimeConfig {
        heartbeat_interval: Duration::from_millis(300),
        lease_timeout: Duration::from_secs(3),
        rescuer_interval: Duration::from_millis(300),
        ..crate::quick_config()
    };
    let worker = crate::start(&db.pool, registry, config);
    let id = crate::enqueue_running(&db.pool, &NewJob::new("adv.watch", json!({}))).await;
    let other = uuid::Uuid::now_v7();
    let token = uuid::Uuid::now_v7();
    sqlx::query(
        "insert into docket.workers (id, host, pid, queues, kinds, version, lease_expires_at)
         values ($1, 'elsewhere', 1, '{default}', '{adv.watch}', 'test', now() + interval '1 hour')",
    )
    .bind(other)
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("update docket.jobs set locked_by = $2, lease_token = $3 where id = $1")
        .bind(id.0)
        .bind(other)
        .bind(token)
        .execute(&db.pool)
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "the run is stopped", || async {
        *stopped.lock().unwrap() == 1
    })
    .await;
    let (state, locked_by, lease_token): (JobState, Option<uuid::Uuid>, Option<uuid::Uuid>) =
        sqlx::query_as("select state, locked_by, lease_token from docket.jobs where id = $1")
            .bind(id.0)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        (state, locked_by, lease_token),
        (JobState::Processing, Some(other), Some(token)),
        "the stopped run's hand-back is fenced: the job stays the other worker's"
    );
    worker.shutdown().await;
}

/// Rule 1, lease continuity on its own. A single worker, whose rescuer runs only at start
/// (so nobody rescues anything and the reconciler never sees a run given away), is stopped
/// for 6 s (lease 4 s) in the middle of a run. It cannot prove its lease held without a
/// gap, so it must stop and hand back that run on waking, and run the job anew under a
/// new claim: two runs, the first one unfinished. Without this test, turning every gap
/// check of the heartbeat off (`lease_had_gap` before the send and after it, and
/// `Renewal::lapsed`) is caught by no test: in `stall.rs` the job was given to another
/// worker, and the reconciler stops the run instead, one interval later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adv_a_worker_stopped_longer_than_its_lease_hands_back_its_run_even_when_nobody_rescued_it()
{
    let db = TestDb::new().await;
    create_ledger(&db.pool).await;
    let job = enqueue_ms(&db, 8_000).await;
    let a = start_worker_with_rescuer(&db, 1, 0, 3600);
    eventually(WAIT, "A runs the job", || async {
        runs_by(&db.pool, a.pid(), Some(job)).await == 1
    })
    .await;
    sleep(Duration::from_millis(1000)).await;
    a.signal("STOP");
    sleep(Duration::from_secs(6)).await;
    a.signal("CONT");
    completes(&db, job).await;
    let unfinished: i64 = sqlx::query_scalar(
        "select count(*) from adv_runs where job_id = $1 and finished_at is null",
    )
    .bind(job.0)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        (runs_by(&db.pool, a.pid(), Some(job)).await, unfinished),
        (2, 1),
        "the run that outlived the lease was stopped and the job ran again"
    );
}

/// Rule 1, the database's side of lease continuity (`Renewal::lapsed`) on its own: the
/// stored lease of a single worker (rescuer only at start, so nothing is rescued) is made
/// to have lapsed already, as if the database's clock counted a stall this process's did
/// not. The next heartbeat finds the lease lapsed, so the worker must stop and hand back
/// its run, and run the job anew. Turning `renewal.lapsed` off is caught by no other test:
/// every stall a test can make is also seen on the process's own clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adv_a_lease_the_database_says_lapsed_ends_the_run_even_when_the_process_saw_no_gap() {
    let db = TestDb::new().await;
    create_ledger(&db.pool).await;
    let job = enqueue_ms(&db, 6_000).await;
    let a = start_worker_with_rescuer(&db, 1, 0, 3600);
    eventually(WAIT, "A runs the job", || async {
        runs_by(&db.pool, a.pid(), Some(job)).await == 1
    })
    .await;
    sleep(Duration::from_millis(500)).await;
    just_beat(&a, &db).await;
    sqlx::query(
        "update docket.workers set lease_expires_at = now() - interval '1 second' where pid = $1",
    )
    .bind(a.pid())
    .execute(&db.pool)
    .await
    .unwrap();
    completes(&db, job).await;
    let unfinished: i64 = sqlx::query_scalar(
        "select count(*) from adv_runs where job_id = $1 and finished_at is null",
    )
    .bind(job.0)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        (runs_by(&db.pool, a.pid(), Some(job)).await, unfinished),
        (2, 1),
        "the run on a lease the database saw lapse was stopped and the job ran again"
    );
}
