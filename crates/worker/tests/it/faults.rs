//! The runtime under the faults that once broke its guarantees: each test names the case
//! it covers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use docket_queue::{admin, enqueue, enqueue_many, JobArgs, JobState, NewJob};
use docket_testkit::{eventually, insert_job, JobOpts, TestDb};
use docket_worker::{builtin, JobContext, JobError, QueueConfig, Registry, RuntimeConfig};
use serde::Deserialize;
use serde_json::json;

use crate::{count_in, quick_config, start, state_of};

const WAIT: Duration = Duration::from_secs(20);

fn builtins() -> Registry {
    let mut registry = Registry::new();
    builtin::register(&mut registry);
    registry
}

/// Issue #1: one outcome PostgreSQL refused wedged the completer, and with it the worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_the_database_would_refuse_do_not_wedge_the_worker() {
    let db = TestDb::new().await;
    let mut registry = builtins();
    registry.register_raw("test.nul_error", |_payload, _ctx: JobContext| async {
        Err(JobError::from("a NUL \0 in the message"))
    });
    registry.register_raw("test.park_forever", |_payload, _ctx: JobContext| async {
        Err(JobError::Snooze(Duration::MAX))
    });
    let worker = start(&db.pool, registry, quick_config());
    let nul = enqueue(&db.pool, &NewJob::new("test.nul_error", json!({})))
        .await
        .unwrap();
    let parked = enqueue(&db.pool, &NewJob::new("test.park_forever", json!({})))
        .await
        .unwrap();
    eventually(WAIT, "both outcomes written", || async {
        state_of(&db.pool, nul).await == JobState::Retrying
            && state_of(&db.pool, parked).await == JobState::Pending
    })
    .await;
    // The worker goes on working.
    let jobs: Vec<_> = (0..50)
        .map(|_| NewJob::new(builtin::NOOP, json!({})))
        .collect();
    enqueue_many(&db.pool, &jobs).await.unwrap();
    eventually(WAIT, "later jobs completed", || async {
        count_in(&db.pool, JobState::Completed).await == 50
    })
    .await;
    worker.shutdown().await;
}

/// Issue #2: a claim whose reply was lost (the connection dropped after the commit) left
/// its jobs `processing` under a live worker forever. The end state of such a claim is a
/// job the database gives this worker under a token it never learnt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_held_in_the_database_but_unknown_to_its_live_worker_is_handed_back_and_run() {
    let db = TestDb::new().await;
    let config = RuntimeConfig {
        heartbeat_interval: Duration::from_millis(300),
        lease_timeout: Duration::from_secs(3),
        ..quick_config()
    };
    let worker = start(&db.pool, builtins(), config);
    eventually(WAIT, "the worker registered", || async {
        count_workers(&db).await == 1
    })
    .await;
    let worker_id: uuid::Uuid = sqlx::query_scalar("select id from docket.workers")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let lost = insert_job(
        &db.pool,
        JobOpts {
            state: Some(JobState::Processing),
            kind: Some(builtin::NOOP.into()),
            locked_by: Some(worker_id),
            ..Default::default()
        },
    )
    .await;
    eventually(WAIT, "the lost job ran", || async {
        state_of(&db.pool, lost.id).await == JobState::Completed
    })
    .await;
    let job = admin::show(&db.pool, lost.id).await.unwrap();
    assert_eq!(job.attempt, 1, "the lost claim's attempt was given back");
    assert!(job.errors.is_empty(), "not a rescue: {:?}", job.errors);
    worker.shutdown().await;
}

#[derive(Debug)]
struct Explosive;

impl<'de> Deserialize<'de> for Explosive {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        panic!("a Deserialize that panics")
    }
}

impl JobArgs for Explosive {
    const KIND: &'static str = "test.explosive";
}

impl serde::Serialize for Explosive {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_unit()
    }
}

/// Issue #3: a handler that panicked before returning its future killed the executor
/// task; the job stayed `processing` under a live worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_before_the_handler_returns_its_future_is_a_failed_attempt() {
    let db = TestDb::new().await;
    let mut registry = builtins();
    #[allow(unreachable_code)]
    registry.register_raw("test.sync_panic", |_payload, _ctx: JobContext| {
        panic!("panicked before returning a future");
        async { Ok::<(), JobError>(()) }
    });
    registry.register(|_args: Explosive, _ctx: JobContext| async { Ok::<(), JobError>(()) });
    let worker = start(&db.pool, registry, quick_config());
    let sync_panic = enqueue(
        &db.pool,
        &NewJob::new("test.sync_panic", json!({})).max_attempts(1),
    )
    .await
    .unwrap();
    let bad_decode = enqueue(
        &db.pool,
        &NewJob::new(Explosive::KIND, json!({})).max_attempts(1),
    )
    .await
    .unwrap();
    eventually(WAIT, "both dead-lettered", || async {
        state_of(&db.pool, sync_panic).await == JobState::DeadLetter
            && state_of(&db.pool, bad_decode).await == JobState::DeadLetter
    })
    .await;
    let job = admin::show(&db.pool, sync_panic).await.unwrap();
    assert_eq!(
        job.last_error.as_deref(),
        Some("panicked: panicked before returning a future")
    );
    let job = admin::show(&db.pool, bad_decode).await.unwrap();
    assert_eq!(
        job.last_error.as_deref(),
        Some("panicked: a Deserialize that panics")
    );
    worker.shutdown().await;
}

/// Issue #4: with a global cap below the queues' sum, producers claimed jobs that then
/// waited `processing` for a global slot (where they could not be cancelled or released,
/// and could start after their expiry). Every claimed job must start at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_more_jobs_are_claimed_than_can_start() {
    let db = TestDb::new().await;
    let started = Arc::new(Mutex::new(HashMap::new()));
    let mut registry = builtins();
    let seen = started.clone();
    registry.register_raw("test.stamp", move |_payload, ctx: JobContext| {
        seen.lock().unwrap().insert(ctx.id(), chrono::Utc::now());
        async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok::<(), JobError>(())
        }
    });
    let queues = ["a", "b", "c", "d"];
    let jobs: Vec<_> = queues
        .iter()
        .flat_map(|queue| (0..3).map(|_| NewJob::new("test.stamp", json!({})).queue(*queue)))
        .collect();
    enqueue_many(&db.pool, &jobs).await.unwrap();
    let config = RuntimeConfig {
        queues: queues
            .iter()
            .map(|q| QueueConfig::new(*q).concurrency(5))
            .collect(),
        global_concurrency: Some(1),
        poll_interval: Duration::from_millis(50),
        ..quick_config()
    };
    let worker = start(&db.pool, registry, config);
    eventually(Duration::from_secs(30), "every job completed", || async {
        count_in(&db.pool, JobState::Completed).await == 12
    })
    .await;
    worker.shutdown().await;
    let claimed: Vec<(docket_queue::JobId, chrono::DateTime<chrono::Utc>)> =
        sqlx::query_as("select id, attempted_at from docket.jobs")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let started = started.lock().unwrap();
    for (id, claimed_at) in claimed {
        let waited = started[&id] - claimed_at;
        // A job left waiting for a slot would wait out a 300 ms sleep at least.
        assert!(
            waited < chrono::Duration::milliseconds(250),
            "job {id} waited {waited} between its claim and its start"
        );
    }
}

/// Issue #5: the completer's give-up time was set when shutdown began, so the hand-back
/// of a job stopped at the shutdown deadline (which comes later, after the handler's wind
/// down) was dropped under load; the rescuer then spent the job's last attempt and
/// dead-lettered it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_stopped_at_shutdown_under_load_is_handed_back_with_its_attempt() {
    let db = TestDb::with_pool_size(20).await;
    let mut registry = builtins();
    // Takes half a second to wind down once told to stop, as real handlers do.
    registry.register_raw(
        "test.slow_to_stop",
        |_payload, ctx: JobContext| async move {
            ctx.cancelled().await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            Err(JobError::from("stopped"))
        },
    );
    let config = RuntimeConfig {
        shutdown_timeout: Duration::from_secs(1),
        ..quick_config()
    };
    let long = enqueue(
        &db.pool,
        &NewJob::new("test.slow_to_stop", json!({})).max_attempts(1),
    )
    .await
    .unwrap();
    let worker = start(&db.pool, registry, config);
    eventually(WAIT, "the long job runs", || async {
        state_of(&db.pool, long).await == JobState::Processing
    })
    .await;
    // Keep outcomes flowing when shutdown begins.
    let noops: Vec<_> = (0..20_000)
        .map(|_| NewJob::new(builtin::NOOP, json!({})))
        .collect();
    enqueue_many(&db.pool, &noops).await.unwrap();
    eventually(WAIT, "no-ops flowing", || async {
        count_in(&db.pool, JobState::Completed).await > 100
    })
    .await;
    worker.shutdown().await;
    let job = admin::show(&db.pool, long).await.unwrap();
    assert_eq!(
        (job.state, job.attempt, job.locked_by),
        (JobState::Pending, 0, None),
        "{:?}",
        job.errors
    );
}

/// Issue #12: the rescuer judged every worker by its own lease timeout, so a worker with
/// a longer lease lost its running jobs to one with a shorter setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_a_long_lease_keeps_its_job_from_a_worker_with_a_short_one() {
    let db = TestDb::new().await;
    let patient = RuntimeConfig {
        heartbeat_interval: Duration::from_secs(3),
        lease_timeout: Duration::from_secs(20),
        ..quick_config()
    };
    let hasty = RuntimeConfig {
        queues: vec![QueueConfig::new("elsewhere")],
        heartbeat_interval: Duration::from_millis(300),
        lease_timeout: Duration::from_secs(1),
        rescuer_interval: Duration::from_millis(200),
        ..quick_config()
    };
    let id = enqueue(
        &db.pool,
        &NewJob::typed(&builtin::Sleep { ms: 4_000 }).unwrap(),
    )
    .await
    .unwrap();
    let patient = start(&db.pool, builtins(), patient);
    eventually(WAIT, "the job runs", || async {
        state_of(&db.pool, id).await == JobState::Processing
    })
    .await;
    let hasty = start(&db.pool, builtins(), hasty);
    eventually(WAIT, "the job completed", || async {
        state_of(&db.pool, id).await == JobState::Completed
    })
    .await;
    let job = admin::show(&db.pool, id).await.unwrap();
    assert_eq!((job.attempt, job.errors.len()), (1, 0), "{:?}", job.errors);
    hasty.shutdown().await;
    patient.shutdown().await;
}

async fn count_workers(db: &TestDb) -> i64 {
    sqlx::query_scalar("select count(*) from docket.workers")
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

/// Issue #15: ready jobs of a kind no live worker runs are parked out of the claim's way,
/// and run as soon as a worker that knows the kind starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_no_live_worker_runs_are_parked_and_run_once_a_worker_knows_their_kind() {
    let db = TestDb::new().await;
    let config = || RuntimeConfig {
        park_after: Duration::from_millis(200),
        parker_interval: Duration::from_millis(100),
        ..quick_config()
    };
    let orphan = enqueue(&db.pool, &NewJob::new("test.later", json!({})))
        .await
        .unwrap();
    let first = start(&db.pool, builtins(), config());
    eventually(WAIT, "the job is parked", || async {
        admin::show(&db.pool, orphan)
            .await
            .unwrap()
            .parked_at
            .is_some()
    })
    .await;
    let unhandled = docket_queue::workers::unhandled_kinds(&db.pool)
        .await
        .unwrap();
    assert_eq!(unhandled.len(), 1);
    assert_eq!(unhandled[0].kind, "test.later");
    let mut registry = builtins();
    registry.register_raw("test.later", |_payload, _ctx: JobContext| async {
        Ok::<(), JobError>(())
    });
    let second = start(&db.pool, registry, config());
    eventually(WAIT, "the job ran", || async {
        state_of(&db.pool, orphan).await == JobState::Completed
    })
    .await;
    second.shutdown().await;
    first.shutdown().await;
}

/// The stress drill: after every worker connection was terminated under load, a worker
/// stopped for about 12 s. Its pool handed out the dead connections one failed query at a
/// time, and the producer backed off longer after each (0.2 s, 0.4 s, 0.8 s, ...), as if the
/// database were down. A dropped connection is now retried at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_connections_were_all_terminated_resumes_at_once() {
    use sqlx::Connection;
    let db = TestDb::new().await;
    // The worker's pool as `docket worker` makes it, warmed to ten connections.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(10)
        .test_before_acquire(false)
        .connect(&db.url)
        .await
        .unwrap();
    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(pool.acquire().await.unwrap());
    }
    drop(held);
    let worker = start(&pool, builtins(), quick_config());
    let first: Vec<_> = (0..5)
        .map(|n| NewJob::new(builtin::NOOP, json!({ "n": n })))
        .collect();
    enqueue_many(&db.pool, &first).await.unwrap();
    eventually(WAIT, "the first jobs complete", || async {
        count_in(&db.pool, JobState::Completed).await == 5
    })
    .await;

    // From a connection of its own: every other backend of the database is cut.
    let mut admin = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let cut: i64 = sqlx::query_scalar(
        "select count(*) from (select pg_terminate_backend(pid) from pg_stat_activity
         where datname = current_database() and pid <> pg_backend_pid()) t",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(cut >= 10, "{cut} connections cut");
    let then: Vec<_> = (0..5)
        .map(|n| NewJob::new(builtin::NOOP, json!({ "n": n })))
        .collect();
    enqueue_many(&mut admin, &then).await.unwrap();
    let enqueued = std::time::Instant::now();
    loop {
        let done: i64 =
            sqlx::query_scalar("select count(*) from docket.jobs where state = 'completed'")
                .fetch_one(&mut admin)
                .await
                .unwrap();
        if done == 10 {
            break;
        }
        assert!(
            enqueued.elapsed() < Duration::from_secs(5),
            "{} of the 5 jobs enqueued after the cut completed within 5 s",
            done - 5
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.shutdown().await;
}

/// Issue #21, case 1: a run whose job the database no longer gives this worker under the
/// run's claim (rescued while the worker stalled, then claimed again) kept running, and its
/// end erased the entry of the job's newer run on the same worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_claim_the_database_gave_away_is_stopped_and_the_jobs_next_run_completes() {
    let db = TestDb::new().await;
    let stopped = Arc::new(Mutex::new(0));
    let mut registry = builtins();
    let seen = stopped.clone();
    registry.register_raw("test.watch", move |_payload, ctx: JobContext| {
        let seen = seen.clone();
        async move {
            if ctx.attempt() > 1 {
                return Ok(());
            }
            ctx.cancelled().await;
            *seen.lock().unwrap() += 1;
            Err(JobError::from("stopped"))
        }
    });
    let config = RuntimeConfig {
        heartbeat_interval: Duration::from_millis(300),
        lease_timeout: Duration::from_secs(3),
        rescuer_interval: Duration::from_millis(300),
        ..quick_config()
    };
    let worker = start(&db.pool, registry, config);
    let id = crate::enqueue_running(&db.pool, &NewJob::new("test.watch", json!({}))).await;
    // What a rescue and another worker's claim leave behind: the job held under a claim
    // that is not this run's (by a worker that is gone, so the rescuer frees it again and
    // this worker claims it anew).
    sqlx::query("update docket.jobs set locked_by = $2, lease_token = $3 where id = $1")
        .bind(id.0)
        .bind(uuid::Uuid::now_v7())
        .bind(uuid::Uuid::now_v7())
        .execute(&db.pool)
        .await
        .unwrap();
    eventually(WAIT, "the first run is stopped", || async {
        *stopped.lock().unwrap() == 1
    })
    .await;
    eventually(WAIT, "the job completes", || async {
        state_of(&db.pool, id).await == JobState::Completed
    })
    .await;
    worker.shutdown().await;
}
