use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use docket_queue::{admin, enqueue, enqueue_many, JobArgs, JobState, NewJob};
use docket_testkit::{eventually, TestDb};
use docket_worker::{builtin, JobContext, JobError, QueueConfig, Registry, RuntimeConfig};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{count_in, enqueue_running, listening, quick_config, start, state_of};

const WAIT: Duration = Duration::from_secs(20);

fn builtins() -> Registry {
    let mut registry = Registry::new();
    builtin::register(&mut registry);
    registry
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notified_worker_runs_every_job_to_completion() {
    let db = TestDb::new().await;
    let config = RuntimeConfig {
        poll_interval: Duration::from_secs(3600),
        ..quick_config()
    };
    let worker = start(&db.pool, builtins(), config);
    // Polling is an hour: only NOTIFY can bring these in quickly, once the worker listens.
    eventually(WAIT, "the worker listens", || async {
        listening(&db.pool).await
    })
    .await;
    let jobs: Vec<_> = (0..500)
        .map(|n| NewJob::new(builtin::NOOP, json!({ "n": n })))
        .collect();
    enqueue_many(&db.pool, &jobs).await.unwrap();
    eventually(WAIT, "500 jobs completed", || async {
        count_in(&db.pool, JobState::Completed).await == 500
    })
    .await;
    worker.shutdown().await;
    let workers: i64 = sqlx::query_scalar("select count(*) from docket.workers")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(workers, 0, "the worker deregisters at shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_listen_disabled_jobs_are_picked_up_by_polling() {
    let db = TestDb::new().await;
    let config = RuntimeConfig {
        listen: false,
        poll_interval: Duration::from_millis(100),
        ..quick_config()
    };
    let worker = start(&db.pool, builtins(), config);
    let later = chrono::Utc::now() + chrono::Duration::milliseconds(500);
    let scheduled = enqueue(
        &db.pool,
        &NewJob::new(builtin::NOOP, json!({})).run_at(later),
    )
    .await
    .unwrap();
    let now = enqueue(&db.pool, &NewJob::new(builtin::NOOP, json!({})))
        .await
        .unwrap();
    eventually(WAIT, "both jobs completed", || async {
        state_of(&db.pool, now).await == JobState::Completed
            && state_of(&db.pool, scheduled).await == JobState::Completed
    })
    .await;
    let finished = admin::show(&db.pool, scheduled)
        .await
        .unwrap()
        .finished_at
        .unwrap();
    assert!(
        finished >= later,
        "a scheduled job does not run before its time"
    );
    worker.shutdown().await;
}

#[derive(Serialize, Deserialize)]
struct Greeting {
    name: String,
}

impl JobArgs for Greeting {
    const KIND: &'static str = "test.greeting";
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_payload_and_panicking_handler_end_as_expected_and_the_worker_goes_on() {
    let db = TestDb::new().await;
    let mut registry = builtins();
    registry.register(|args: Greeting, _ctx: JobContext| async move {
        if args.name == "panic" {
            panic!("handler blew up for {}", args.name);
        }
        Ok::<(), JobError>(())
    });
    let worker = start(&db.pool, registry, quick_config());
    let malformed = enqueue(&db.pool, &NewJob::new(Greeting::KIND, json!({ "nom": 3 })))
        .await
        .unwrap();
    let panics = enqueue(
        &db.pool,
        &NewJob::new(Greeting::KIND, json!({ "name": "panic" })).max_attempts(1),
    )
    .await
    .unwrap();
    let fine = enqueue(
        &db.pool,
        &NewJob::new(Greeting::KIND, json!({ "name": "ada" })),
    )
    .await
    .unwrap();
    eventually(WAIT, "all three jobs finished", || async {
        state_of(&db.pool, malformed).await == JobState::DeadLetter
            && state_of(&db.pool, panics).await == JobState::DeadLetter
            && state_of(&db.pool, fine).await == JobState::Completed
    })
    .await;
    let malformed = admin::show(&db.pool, malformed).await.unwrap();
    let reason = malformed.dead_letter_reason.unwrap();
    assert!(
        reason.starts_with("malformed: missing field `name`"),
        "{reason}"
    );
    assert_eq!(malformed.attempt, 1);
    let panicked = admin::show(&db.pool, panics).await.unwrap();
    assert_eq!(
        panicked.dead_letter_reason.as_deref(),
        Some("attempts_exhausted")
    );
    assert_eq!(
        panicked.last_error.as_deref(),
        Some("panicked: handler blew up for panic")
    );
    // Still working after both.
    let after = enqueue(&db.pool, &NewJob::new(builtin::NOOP, json!({})))
        .await
        .unwrap();
    eventually(WAIT, "a later job completes", || async {
        state_of(&db.pool, after).await == JobState::Completed
    })
    .await;
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_limited_to_two_never_runs_three_at_once() {
    let db = TestDb::new().await;
    let current = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let mut registry = Registry::new();
    let (c, p) = (current.clone(), peak.clone());
    registry.register_raw("test.slow", move |_payload, _ctx| {
        let (c, p) = (c.clone(), p.clone());
        async move {
            let now = c.fetch_add(1, Ordering::SeqCst) + 1;
            p.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(30)).await;
            c.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        }
    });
    let config = RuntimeConfig {
        queues: vec![QueueConfig::new("default").concurrency(2)],
        ..quick_config()
    };
    let worker = start(&db.pool, registry, config);
    let jobs: Vec<_> = (0..30)
        .map(|n| NewJob::new("test.slow", json!({ "n": n })))
        .collect();
    enqueue_many(&db.pool, &jobs).await.unwrap();
    eventually(WAIT, "30 jobs completed", || async {
        count_in(&db.pool, JobState::Completed).await == 30
    })
    .await;
    worker.shutdown().await;
    assert_eq!(
        peak.load(Ordering::SeqCst),
        2,
        "ran two at once at most, and did reach two"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kind_no_worker_knows_stays_ready() {
    let db = TestDb::new().await;
    let worker = start(&db.pool, builtins(), quick_config());
    let unknown = enqueue(&db.pool, &NewJob::new("nobody.knows", json!({})))
        .await
        .unwrap();
    let known = enqueue(&db.pool, &NewJob::new(builtin::NOOP, json!({})))
        .await
        .unwrap();
    eventually(WAIT, "the known job completed", || async {
        state_of(&db.pool, known).await == JobState::Completed
    })
    .await;
    // The known job was enqueued after the unknown one, so the claim that took it passed
    // the unknown one by.
    let job = admin::show(&db.pool, unknown).await.unwrap();
    assert_eq!((job.state, job.attempt), (JobState::Pending, 0));
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_cancels_the_handler_and_retries_with_a_clear_error() {
    let db = TestDb::new().await;
    let mut registry = builtins();
    registry
        .register_raw("test.hang", |_payload, ctx: JobContext| async move {
            ctx.cancelled().await;
            Err(JobError::from("noticed the cancel"))
        })
        .timeout = Duration::from_millis(200);
    let worker = start(&db.pool, registry, quick_config());
    let id = enqueue(
        &db.pool,
        &NewJob::new("test.hang", json!({})).max_attempts(2),
    )
    .await
    .unwrap();
    eventually(WAIT, "the hanging job is dead-lettered", || async {
        state_of(&db.pool, id).await == JobState::DeadLetter
    })
    .await;
    let job = admin::show(&db.pool, id).await.unwrap();
    let errors: Vec<_> = job.errors.iter().map(|e| e.error.as_str()).collect();
    assert_eq!(errors, ["timed out after 200ms", "timed out after 200ms"]);
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extend_timeout_keeps_a_long_job_alive() {
    let db = TestDb::new().await;
    let mut registry = builtins();
    registry
        .register_raw("test.long", |_payload, ctx: JobContext| async move {
            for _ in 0..6 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                ctx.extend_timeout(Duration::from_millis(300));
            }
            Ok(())
        })
        .timeout = Duration::from_millis(300);
    let worker = start(&db.pool, registry, quick_config());
    let id = enqueue(
        &db.pool,
        &NewJob::new("test.long", json!({})).max_attempts(1),
    )
    .await
    .unwrap();
    eventually(WAIT, "the long job completed", || async {
        state_of(&db.pool, id).await == JobState::Completed
    })
    .await;
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_cancel_stops_a_running_job() {
    let db = TestDb::new().await;
    let config = RuntimeConfig {
        heartbeat_interval: Duration::from_millis(100),
        lease_timeout: Duration::from_secs(5),
        ..quick_config()
    };
    let worker = start(&db.pool, builtins(), config);
    let id = enqueue_running(
        &db.pool,
        &NewJob::typed(&builtin::Sleep { ms: 60_000 }).unwrap(),
    )
    .await;
    admin::cancel(&db.pool, id).await.unwrap();
    eventually(WAIT, "the job is cancelled", || async {
        state_of(&db.pool, id).await == JobState::Cancelled
    })
    .await;
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_hands_back_unfinished_jobs_without_spending_the_attempt() {
    let db = TestDb::new().await;
    let config = RuntimeConfig {
        shutdown_timeout: Duration::from_millis(300),
        ..quick_config()
    };
    let worker = start(&db.pool, builtins(), config);
    let quick = enqueue(
        &db.pool,
        &NewJob::typed(&builtin::Sleep { ms: 50 }).unwrap(),
    )
    .await
    .unwrap();
    let slow = enqueue_running(
        &db.pool,
        &NewJob::typed(&builtin::Sleep { ms: 60_000 }).unwrap(),
    )
    .await;
    let started = std::time::Instant::now();
    worker.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown is bounded by its timeout"
    );
    assert_eq!(state_of(&db.pool, quick).await, JobState::Completed);
    let slow = admin::show(&db.pool, slow).await.unwrap();
    assert_eq!(
        (slow.state, slow.attempt, slow.locked_by),
        (JobState::Pending, 0, None)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_builtin_retries_on_the_handlers_schedule_then_succeeds() {
    let db = TestDb::new().await;
    // The built-in kind's payload with a handler of the test's own (one handler per kind):
    // retry at once, so the test does not wait on the default backoff.
    let mut registry = Registry::new();
    registry.register(|args: builtin::Fail, ctx: JobContext| async move {
        if ctx.attempt() <= args.times {
            return Err(JobError::retry_after(
                format!("attempt {}", ctx.attempt()),
                Duration::ZERO,
            ));
        }
        Ok(())
    });
    let worker = start(&db.pool, registry, quick_config());
    let id = enqueue(
        &db.pool,
        &NewJob::typed(&builtin::Fail {
            times: 2,
            permanent: false,
        })
        .unwrap(),
    )
    .await
    .unwrap();
    let no_failures = enqueue(
        &db.pool,
        &NewJob::typed(&builtin::Fail {
            times: 0,
            permanent: false,
        })
        .unwrap(),
    )
    .await
    .unwrap();
    eventually(WAIT, "the failing job succeeded", || async {
        state_of(&db.pool, id).await == JobState::Completed
    })
    .await;
    let job = admin::show(&db.pool, id).await.unwrap();
    assert_eq!((job.attempt, job.errors.len()), (3, 2));
    eventually(WAIT, "the job without failures completed", || async {
        state_of(&db.pool, no_failures).await == JobState::Completed
    })
    .await;
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_fail_builtin_dead_letters_at_once() {
    let db = TestDb::new().await;
    let worker = start(&db.pool, builtins(), quick_config());
    let id = enqueue(
        &db.pool,
        &NewJob::typed(&builtin::Fail {
            times: 0,
            permanent: true,
        })
        .unwrap(),
    )
    .await
    .unwrap();
    eventually(WAIT, "dead-lettered", || async {
        state_of(&db.pool, id).await == JobState::DeadLetter
    })
    .await;
    let job = admin::show(&db.pool, id).await.unwrap();
    assert_eq!(
        (job.attempt, job.dead_letter_reason.as_deref()),
        (1, Some("permanent"))
    );
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_cannot_renew_its_lease_stops_its_jobs_and_claims_nothing_until_it_can() {
    let db = TestDb::new().await;
    let stopped = Arc::new(AtomicUsize::new(0));
    let mut registry = builtins();
    let seen = stopped.clone();
    registry.register_raw("test.watch", move |_payload, ctx: JobContext| {
        let seen = seen.clone();
        async move {
            if seen.load(Ordering::SeqCst) > 0 {
                return Ok(());
            }
            ctx.cancelled().await;
            seen.fetch_add(1, Ordering::SeqCst);
            Err(JobError::from("stopped"))
        }
    });
    let config = RuntimeConfig {
        heartbeat_interval: Duration::from_millis(200),
        lease_timeout: Duration::from_secs(1),
        rescuer_interval: Duration::from_secs(3600),
        ..quick_config()
    };
    let worker = start(&db.pool, registry, config);
    let first = enqueue_running(&db.pool, &NewJob::new("test.watch", json!({}))).await;

    // Heartbeats now hang on the lock: the lease cannot be renewed.
    let mut blocker = db.pool.begin().await.unwrap();
    sqlx::query("lock table docket.workers in access exclusive mode")
        .execute(&mut *blocker)
        .await
        .unwrap();
    eventually(WAIT, "the running job is stopped", || async {
        stopped.load(Ordering::SeqCst) == 1
    })
    .await;
    let second = enqueue(&db.pool, &NewJob::new(builtin::NOOP, json!({})))
        .await
        .unwrap();
    // Nothing to wait on: a claim that does not happen leaves no trace. Several poll
    // intervals pass instead.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        state_of(&db.pool, second).await,
        JobState::Pending,
        "no claims without a lease"
    );

    blocker.rollback().await.unwrap();
    eventually(
        WAIT,
        "both jobs complete once the lease is renewed",
        || async {
            state_of(&db.pool, first).await == JobState::Completed
                && state_of(&db.pool, second).await == JobState::Completed
        },
    )
    .await;
    let job = admin::show(&db.pool, first).await.unwrap();
    assert_eq!(
        (job.attempt, job.errors.len()),
        (1, 0),
        "the stopped run was handed back, its attempt not spent"
    );
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stays_bounded_when_outcomes_cannot_be_written_and_the_rescuer_frees_those_jobs() {
    let db = TestDb::new().await;
    let config = RuntimeConfig {
        shutdown_timeout: Duration::from_millis(500),
        ..quick_config()
    };
    let worker = start(&db.pool, builtins(), config);
    let id = enqueue_running(
        &db.pool,
        &NewJob::typed(&builtin::Sleep { ms: 60_000 }).unwrap(),
    )
    .await;

    // Every write to the jobs table now waits on this lock: claims, outcomes, everything.
    let mut blocker = db.pool.begin().await.unwrap();
    sqlx::query("lock table docket.jobs in access exclusive mode")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    worker.shutdown().await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "shutdown took {took:?} with a 0.5 s timeout"
    );
    blocker.rollback().await.unwrap();

    // The handed-back outcome did not get through in time. Either the write that was waiting
    // on the lock lands after all (the server runs it once the lock goes), or the job is
    // still held by the worker, which deregistered, and the rescuer frees it. Either way the
    // job is ready again, not lost.
    eventually(WAIT, "the job is ready again", || async {
        docket_queue::maintenance::rescue_lapsed(&db.pool, 10, None)
            .await
            .unwrap();
        matches!(
            state_of(&db.pool, id).await,
            JobState::Pending | JobState::Retrying
        )
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_queue_is_left_alone_by_every_worker_and_runs_once_resumed() {
    let db = TestDb::new().await;
    // Paused before the worker starts: not one job may slip through at start.
    docket_queue::queues::pause(&db.pool, "reports")
        .await
        .unwrap();
    let early = enqueue(
        &db.pool,
        &NewJob::new(builtin::NOOP, json!({})).queue("reports"),
    )
    .await
    .unwrap();
    let config = RuntimeConfig {
        queues: vec![QueueConfig::new("default"), QueueConfig::new("reports")],
        ..quick_config()
    };
    let worker = start(&db.pool, builtins(), config);
    let other = enqueue(&db.pool, &NewJob::new(builtin::NOOP, json!({})))
        .await
        .unwrap();
    eventually(WAIT, "the default queue's job completes", || async {
        state_of(&db.pool, other).await == JobState::Completed
    })
    .await;
    // Several poll intervals: the paused queue's job is still waiting, and so is a new one.
    let late = enqueue(
        &db.pool,
        &NewJob::new(builtin::NOOP, json!({})).queue("reports"),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for id in [early, late] {
        assert_eq!(state_of(&db.pool, id).await, JobState::Pending);
    }
    docket_queue::queues::resume(&db.pool, "reports")
        .await
        .unwrap();
    eventually(WAIT, "the resumed queue's jobs complete", || async {
        state_of(&db.pool, early).await == JobState::Completed
            && state_of(&db.pool, late).await == JobState::Completed
    })
    .await;
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_rate_holds_over_two_workers_together() {
    let db = TestDb::new().await;
    let jobs: Vec<_> = (0..20)
        .map(|n| NewJob::new(builtin::NOOP, json!({ "n": n })).queue("limited"))
        .collect();
    enqueue_many(&db.pool, &jobs).await.unwrap();
    let config = || RuntimeConfig {
        queues: vec![QueueConfig::new("limited").rate("5/s".parse().unwrap())],
        ..quick_config()
    };
    let started = std::time::Instant::now();
    // Two runtimes with pools of their own: two processes sharing one bucket.
    let other_pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let first = start(&db.pool, builtins(), config());
    let second = start(&other_pool, builtins(), config());
    eventually(WAIT, "the 20 jobs complete", || async {
        count_in(&db.pool, JobState::Completed).await == 20
    })
    .await;
    let took = started.elapsed();
    first.shutdown().await;
    second.shutdown().await;
    // A full bucket (5) goes at once; the other 15 at 5 a second.
    assert!(
        took >= Duration::from_millis(2800),
        "20 jobs at 5/s took only {took:?}"
    );
}

/// Three workers (each with a pool of its own, as three processes) share a queue limited
/// to 20/s: no one-second window of the jobs' starts holds more than the rate plus one
/// claim batch (the bucket starts full: a second's worth may go at once), and every job
/// completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_start_no_more_than_the_rate_in_any_second() {
    let db = TestDb::new().await;
    let jobs: Vec<_> = (0..60)
        .map(|n| NewJob::new(builtin::NOOP, json!({ "n": n })).queue("limited"))
        .collect();
    enqueue_many(&db.pool, &jobs).await.unwrap();
    let claim_batch = 20;
    let config = || RuntimeConfig {
        queues: vec![QueueConfig::new("limited")
            .concurrency(50)
            .rate("20/s".parse().unwrap())],
        claim_batch,
        ..quick_config()
    };
    let mut workers = Vec::new();
    for _ in 0..3 {
        let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
        workers.push(start(&pool, builtins(), config()));
    }
    eventually(WAIT, "the 60 jobs complete", || async {
        count_in(&db.pool, JobState::Completed).await == 60
    })
    .await;
    for worker in workers {
        worker.shutdown().await;
    }
    // The most starts in any one-second window beginning at a start.
    let busiest: i64 = sqlx::query_scalar(
        "select max((select count(*) from docket.jobs o
                     where o.attempted_at >= j.attempted_at
                       and o.attempted_at < j.attempted_at + interval '1 second'))
         from docket.jobs j",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(
        busiest <= 20 + i64::from(claim_batch),
        "{busiest} jobs started within one second"
    );
    let span: f64 = sqlx::query_scalar(
        "select extract(epoch from max(attempted_at) - min(attempted_at))::float8 from docket.jobs",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    // 20 at once from the full bucket, then 40 more at 20 a second.
    assert!(span >= 1.8, "60 jobs at 20/s started within {span:.2} s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_tenant_enqueued_behind_a_big_one_finishes_long_before_it() {
    let db = TestDb::new().await;
    let config = RuntimeConfig {
        queues: vec![QueueConfig::new("default").concurrency(4)],
        ..quick_config()
    };
    // The big tenant's jobs have waited a minute: in plain claim order they all come first.
    let a_minute_ago = chrono::Utc::now() - chrono::Duration::seconds(60);
    let big: Vec<_> = (0..400)
        .map(|_| {
            NewJob::new("docket.sleep", json!({ "ms": 5 }))
                .group("big")
                .run_at(a_minute_ago)
        })
        .collect();
    enqueue_many(&db.pool, &big).await.unwrap();
    let small: Vec<_> = (0..8)
        .map(|_| NewJob::new("docket.sleep", json!({ "ms": 5 })).group("small"))
        .collect();
    let small = enqueue_many(&db.pool, &small).await.unwrap();
    let worker = start(&db.pool, builtins(), config);
    eventually(WAIT, "the small tenant's jobs completed", || async {
        let mut done = true;
        for id in &small {
            done &= state_of(&db.pool, *id).await == JobState::Completed;
        }
        done
    })
    .await;
    let big_done: i64 = sqlx::query_scalar(
        "select count(*) from docket.jobs where group_key = 'big' and state = 'completed'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    worker.shutdown().await;
    // In claim order (oldest first) all 400 would have run before them.
    assert!(
        big_done < 100,
        "{big_done} of the big tenant's jobs ran first"
    );
}
