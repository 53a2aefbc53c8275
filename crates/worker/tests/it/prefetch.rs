//! A queue's prefetch: jobs claimed ahead of free slots wait in the worker for one. They
//! never run beyond the queue's concurrency, and a prefetched job that an operator cancels,
//! whose queue is paused, or whose worker shuts down is finished without being started.
//!
//! The tests with a fixed prefetch hold jobs ahead behind handlers that wait for a gate.
//! An auto prefetch (the default, and so every other test of this crate) holds nothing
//! ahead of such long jobs: its own tests are at the end.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use docket_queue::{admin, enqueue_many, JobId, JobState, NewJob};
use docket_testkit::eventually;
use docket_testkit::TestDb;
use docket_worker::{JobError, Prefetch, QueueConfig, Registry, RuntimeConfig};
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::Semaphore;

use crate::{count_in, quick_config, start, state_of};

const WAIT: Duration = Duration::from_secs(20);
const HELD: &str = "test.held";
const QUICK: &str = "test.quick";

/// Jobs of kind [`HELD`] record that they started, then wait for a permit of `gate` (or
/// for being stopped). Jobs of kind [`QUICK`] count themselves and return at once.
struct Gate {
    gate: Arc<Semaphore>,
    started: Arc<Mutex<Vec<JobId>>>,
    running: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    quick: Arc<AtomicUsize>,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            gate: Arc::new(Semaphore::new(0)),
            started: Arc::default(),
            running: Arc::default(),
            peak: Arc::default(),
            quick: Arc::default(),
        }
    }
}

impl Gate {
    fn registry(&self) -> Registry {
        let mut registry = Registry::new();
        let (gate, started) = (self.gate.clone(), self.started.clone());
        let (running, peak) = (self.running.clone(), self.peak.clone());
        registry.register_raw(HELD, move |_payload, ctx| {
            let (gate, started) = (gate.clone(), started.clone());
            let (running, peak) = (running.clone(), peak.clone());
            async move {
                started.lock().unwrap().push(ctx.id());
                peak.fetch_max(running.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                let result = tokio::select! {
                    permit = gate.acquire() => {
                        permit.expect("gate open").forget();
                        Ok(())
                    }
                    () = ctx.cancelled() => Err(JobError::from("stopped")),
                };
                running.fetch_sub(1, Ordering::SeqCst);
                result
            }
        });
        let (running, peak) = (self.running.clone(), self.peak.clone());
        let quick = self.quick.clone();
        registry.register_raw(QUICK, move |_payload, _ctx| {
            peak.fetch_max(running.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
            quick.fetch_add(1, Ordering::SeqCst);
            running.fetch_sub(1, Ordering::SeqCst);
            async { Ok::<(), JobError>(()) }
        });
        registry
    }

    fn started(&self) -> Vec<JobId> {
        self.started.lock().unwrap().clone()
    }
}

fn prefetching(concurrency: usize, prefetch: usize) -> RuntimeConfig {
    RuntimeConfig {
        queues: vec![QueueConfig::new("default")
            .concurrency(concurrency)
            .prefetch(prefetch)],
        ..quick_config()
    }
}

async fn enqueue_held(pool: &PgPool, count: usize) -> Vec<JobId> {
    enqueue_of(pool, HELD, count).await
}

async fn enqueue_of(pool: &PgPool, kind: &str, count: usize) -> Vec<JobId> {
    let jobs: Vec<_> = (0..count)
        .map(|n| NewJob::new(kind, json!({ "n": n })))
        .collect();
    enqueue_many(pool, &jobs).await.unwrap()
}

/// Jobs in `state`, and jobs of `kind` in `state`.
async fn count_of(pool: &PgPool, kind: &str, state: JobState) -> i64 {
    sqlx::query_scalar("select count(*) from docket.jobs where kind = $1 and state = $2")
        .bind(kind)
        .bind(state)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Ready jobs that were claimed and handed back unstarted: their attempt is given back,
/// their `attempted_at` stays.
async fn handed_back(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "select count(*) from docket.jobs
          where state = 'pending' and attempt = 0 and attempted_at is not null",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// The most jobs one claim took: a claim's jobs share their `attempted_at` (the claim
/// transaction's time).
async fn largest_claim(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "select coalesce(max(n), 0) from
           (select count(*) as n from docket.jobs where attempted_at is not null
             group by attempted_at) claims",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

fn auto(concurrency: usize) -> RuntimeConfig {
    RuntimeConfig {
        queues: vec![QueueConfig::new("default").concurrency(concurrency)],
        ..quick_config()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefetching_queue_claims_ahead_but_runs_no_more_than_its_concurrency() {
    let db = TestDb::new().await;
    let gate = Gate::default();
    let worker = start(&db.pool, gate.registry(), prefetching(2, 3));
    let ids = enqueue_held(&db.pool, 10).await;
    eventually(WAIT, "two running and three prefetched", || async {
        count_in(&db.pool, JobState::Processing).await == 5 && gate.started().len() == 2
    })
    .await;
    // Several poll intervals later nothing more is claimed or started.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(count_in(&db.pool, JobState::Processing).await, 5);
    assert_eq!(gate.started().len(), 2);

    gate.gate.add_permits(ids.len());
    eventually(WAIT, "every job completed", || async {
        count_in(&db.pool, JobState::Completed).await == 10
    })
    .await;
    worker.shutdown().await;
    assert_eq!(gate.peak.load(Ordering::SeqCst), 2, "two at once at most");
    for id in ids {
        let job = admin::show(&db.pool, id).await.unwrap();
        assert_eq!(job.attempt, 1, "one attempt each");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefetched_job_is_cancelled_unstarted_and_a_pause_hands_the_rest_back() {
    let db = TestDb::new().await;
    let gate = Gate::default();
    let worker = start(&db.pool, gate.registry(), prefetching(1, 2));
    let ids = enqueue_held(&db.pool, 3).await;
    eventually(WAIT, "one running and two prefetched", || async {
        count_in(&db.pool, JobState::Processing).await == 3 && gate.started().len() == 1
    })
    .await;
    let running = gate.started()[0];
    let waiting: Vec<JobId> = ids.into_iter().filter(|id| *id != running).collect();

    admin::cancel(&db.pool, waiting[0]).await.unwrap();
    eventually(WAIT, "the prefetched job is cancelled", || async {
        state_of(&db.pool, waiting[0]).await == JobState::Cancelled
    })
    .await;

    docket_queue::queues::pause(&db.pool, "default")
        .await
        .unwrap();
    eventually(WAIT, "the other prefetched job is handed back", || async {
        state_of(&db.pool, waiting[1]).await == JobState::Pending
    })
    .await;
    let handed_back = admin::show(&db.pool, waiting[1]).await.unwrap();
    assert_eq!(
        (handed_back.attempt, handed_back.locked_by),
        (0, None),
        "its attempt is not spent"
    );
    // Several poll intervals: the paused queue is not claimed from again.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let later = admin::show(&db.pool, waiting[1]).await.unwrap();
    assert_eq!(
        (later.state, later.attempted_at),
        (JobState::Pending, handed_back.attempted_at),
        "not claimed again while the queue is paused"
    );
    assert_eq!(
        state_of(&db.pool, running).await,
        JobState::Processing,
        "the running job runs on"
    );
    assert_eq!(gate.started(), vec![running], "neither waiting job started");

    gate.gate.add_permits(1);
    eventually(WAIT, "the running job completes", || async {
        state_of(&db.pool, running).await == JobState::Completed
    })
    .await;
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_hands_prefetched_jobs_back_at_once_while_the_running_one_finishes() {
    let db = TestDb::new().await;
    let gate = Gate::default();
    let config = RuntimeConfig {
        shutdown_timeout: Duration::from_secs(30),
        ..prefetching(1, 2)
    };
    let worker = start(&db.pool, gate.registry(), config);
    let ids = enqueue_held(&db.pool, 3).await;
    eventually(WAIT, "one running and two prefetched", || async {
        count_in(&db.pool, JobState::Processing).await == 3 && gate.started().len() == 1
    })
    .await;
    let running = gate.started()[0];

    let shutdown = tokio::spawn(worker.shutdown());
    eventually(WAIT, "the prefetched jobs are ready again", || async {
        count_in(&db.pool, JobState::Pending).await == 2
    })
    .await;
    assert_eq!(state_of(&db.pool, running).await, JobState::Processing);
    gate.gate.add_permits(1);
    shutdown.await.unwrap();
    assert_eq!(state_of(&db.pool, running).await, JobState::Completed);
    for id in ids.into_iter().filter(|id| *id != running) {
        let job = admin::show(&db.pool, id).await.unwrap();
        assert_eq!((job.state, job.attempt), (JobState::Pending, 0));
    }
    assert_eq!(gate.started(), vec![running]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefetched_job_that_expires_while_it_waits_is_dead_lettered_unstarted() {
    let db = TestDb::new().await;
    let gate = Gate::default();
    let worker = start(&db.pool, gate.registry(), prefetching(1, 1));
    let first = enqueue_held(&db.pool, 1).await[0];
    eventually(WAIT, "the first job runs", || async {
        gate.started() == vec![first]
    })
    .await;
    let expiring = docket_queue::enqueue(
        &db.pool,
        &NewJob::new(HELD, json!({}))
            .expires_at(chrono::Utc::now() + chrono::Duration::milliseconds(1500)),
    )
    .await
    .unwrap();
    eventually(WAIT, "the expiring job is prefetched", || async {
        state_of(&db.pool, expiring).await == JobState::Processing
    })
    .await;
    eventually(WAIT, "the expiring job is dead-lettered", || async {
        state_of(&db.pool, expiring).await == JobState::DeadLetter
    })
    .await;
    let job = admin::show(&db.pool, expiring).await.unwrap();
    assert_eq!(job.dead_letter_reason.as_deref(), Some("expired"));
    assert_eq!(gate.started(), vec![first], "it never started");
    gate.gate.add_permits(1);
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_loses_its_lease_starts_no_prefetched_job_and_hands_it_back() {
    let db = TestDb::new().await;
    let gate = Gate::default();
    let config = RuntimeConfig {
        heartbeat_interval: Duration::from_millis(200),
        lease_timeout: Duration::from_secs(1),
        rescuer_interval: Duration::from_secs(3600),
        ..prefetching(1, 1)
    };
    let worker = start(&db.pool, gate.registry(), config);
    let ids = enqueue_held(&db.pool, 2).await;
    eventually(WAIT, "one running and one prefetched", || async {
        count_in(&db.pool, JobState::Processing).await == 2 && gate.started().len() == 1
    })
    .await;

    // Heartbeats now hang on the lock: the lease cannot be renewed.
    let mut blocker = db.pool.begin().await.unwrap();
    sqlx::query("lock table docket.workers in access exclusive mode")
        .execute(&mut *blocker)
        .await
        .unwrap();
    eventually(WAIT, "the running job is stopped", || async {
        gate.running.load(Ordering::SeqCst) == 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        gate.started().len(),
        1,
        "the prefetched job did not start without a lease"
    );

    blocker.rollback().await.unwrap();
    gate.gate.add_permits(ids.len());
    eventually(
        WAIT,
        "both jobs complete once the lease is renewed",
        || async { count_in(&db.pool, JobState::Completed).await == 2 },
    )
    .await;
    for id in ids {
        let job = admin::show(&db.pool, id).await.unwrap();
        assert_eq!(job.attempt, 1, "handed back, its attempt not spent");
    }
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_prefetch_claims_ahead_of_short_jobs_yet_runs_no_more_than_its_concurrency() {
    let db = TestDb::new().await;
    let gate = Gate::default();
    assert_eq!(auto(2).queues[0].prefetch, Prefetch::Auto, "the default");
    let worker = start(&db.pool, gate.registry(), auto(2));
    enqueue_of(&db.pool, QUICK, 1000).await;
    eventually(WAIT, "every job completed", || async {
        count_in(&db.pool, JobState::Completed).await == 1000
    })
    .await;
    worker.shutdown().await;
    assert_eq!(gate.quick.load(Ordering::SeqCst), 1000, "each ran once");
    assert!(gate.peak.load(Ordering::SeqCst) <= 2, "two at once at most");
    let largest = largest_claim(&db.pool).await;
    assert!(
        largest > 2,
        "some claim took jobs ahead of the two slots (largest claim: {largest})"
    );

    // With the prefetch off, a claim takes the free slots only.
    let db = TestDb::new().await;
    let gate = Gate::default();
    let off = prefetching(2, 0);
    let worker = start(&db.pool, gate.registry(), off);
    enqueue_of(&db.pool, QUICK, 300).await;
    eventually(WAIT, "every job completed", || async {
        count_in(&db.pool, JobState::Completed).await == 300
    })
    .await;
    worker.shutdown().await;
    assert!(largest_claim(&db.pool).await <= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_prefetch_holds_nothing_ahead_of_jobs_it_has_seen_run_long() {
    let db = TestDb::new().await;
    let gate = Gate::default();
    let worker = start(&db.pool, gate.registry(), auto(2));
    // Two jobs that take as long as this test takes to let them go.
    enqueue_held(&db.pool, 2).await;
    eventually(WAIT, "both run", || async { gate.started().len() == 2 }).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    gate.gate.add_permits(2);
    eventually(WAIT, "both completed", || async {
        count_in(&db.pool, JobState::Completed).await == 2
    })
    .await;

    enqueue_held(&db.pool, 10).await;
    eventually(WAIT, "two more run", || async { gate.started().len() == 4 }).await;
    // Several poll intervals later: nothing claimed beyond the two busy slots.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(count_in(&db.pool, JobState::Processing).await, 2);
    assert_eq!(count_in(&db.pool, JobState::Pending).await, 8);
    assert_eq!(handed_back(&db.pool).await, 0, "none was claimed ahead");

    gate.gate.add_permits(10);
    eventually(WAIT, "every job completed", || async {
        count_in(&db.pool, JobState::Completed).await == 12
    })
    .await;
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_prefetch_hands_back_what_it_holds_ahead_once_jobs_run_long_so_another_worker_runs_them(
) {
    let db = TestDb::new().await;
    let (gate_a, gate_b) = (Gate::default(), Gate::default());
    let a = start(&db.pool, gate_a.registry(), auto(2));
    // A learns that this queue's jobs are short: it claims far ahead of its two slots.
    enqueue_of(&db.pool, QUICK, 500).await;
    eventually(WAIT, "the short jobs completed", || async {
        count_in(&db.pool, JobState::Completed).await == 500
    })
    .await;
    assert!(largest_claim(&db.pool).await > 2, "A claimed ahead");

    // Then long jobs: A runs two, and holds none of the rest for long.
    let ids = enqueue_held(&db.pool, 10).await;
    eventually(WAIT, "A runs two", || async { gate_a.started().len() == 2 }).await;
    eventually(WAIT, "the other eight are ready again", || async {
        count_of(&db.pool, HELD, JobState::Pending).await == 8
    })
    .await;
    // As many as A claimed ahead (what its slots drained in 5 ms, at most eight).
    let back = handed_back(&db.pool).await;
    assert!(
        back >= 1,
        "A had claimed some ahead, and handed them back unstarted ({back})"
    );
    // A second worker with eight free slots gets them.
    let b = start(&db.pool, gate_b.registry(), auto(8));
    eventually(WAIT, "B runs the other eight", || async {
        gate_b.started().len() == 8
    })
    .await;
    assert_eq!(gate_a.started().len(), 2, "A started no more");

    gate_a.gate.add_permits(ids.len());
    gate_b.gate.add_permits(ids.len());
    eventually(WAIT, "every long job completed", || async {
        count_of(&db.pool, HELD, JobState::Completed).await == 10
    })
    .await;
    for id in ids {
        let job = admin::show(&db.pool, id).await.unwrap();
        assert_eq!(job.attempt, 1, "handed back, its attempt not spent");
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_with_auto_prefetch_share_a_queue_of_short_jobs() {
    let db = TestDb::new().await;
    let (gate_a, gate_b) = (Gate::default(), Gate::default());
    let a = start(&db.pool, gate_a.registry(), auto(2));
    let b = start(&db.pool, gate_b.registry(), auto(2));
    for _ in 0..4 {
        enqueue_of(&db.pool, QUICK, 1000).await;
    }
    eventually(WAIT, "every job completed", || async {
        count_in(&db.pool, JobState::Completed).await == 4000
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
    let (ran_a, ran_b) = (
        gate_a.quick.load(Ordering::SeqCst),
        gate_b.quick.load(Ordering::SeqCst),
    );
    assert_eq!(ran_a + ran_b, 4000);
    assert!(
        ran_a >= 400 && ran_b >= 400,
        "each worker ran a fair part: {ran_a} and {ran_b}"
    );
}
