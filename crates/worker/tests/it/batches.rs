//! Batches on real workers: progress, and a callback enqueued exactly once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use docket_queue::batch::{self, Callback, NewBatch};
use docket_queue::{admin, JobState, NewJob};
use docket_testkit::{eventually, TestDb};
use docket_worker::{builtin, JobContext, JobError, Registry};
use serde_json::json;

use crate::{quick_config, start};

/// 1,000 jobs on four workers at once, some dead-lettered, some cancelled: the counts add
/// up and the callback runs once, however the last jobs' finishes fall.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_on_four_workers_calls_back_exactly_once_and_its_counts_add_up() {
    let db = TestDb::with_pool_size(30).await;
    let jobs: Vec<NewJob> = (0..1000)
        .map(|n| match n % 10 {
            0 => NewJob::typed(&builtin::Fail {
                times: 0,
                permanent: true,
            })
            .unwrap(),
            _ => NewJob::new(builtin::NOOP, json!({ "n": n })),
        })
        .collect();
    let callback = Callback {
        kind: "test.callback".into(),
        payload: json!({ "report": "nightly" }),
        queue: "default".into(),
    };
    let id = batch::create(
        &db.pool,
        &NewBatch {
            jobs,
            callback: Some(callback),
            parent: None,
        },
    )
    .await
    .unwrap();
    // Cancel 50 of the no-ops before anything runs.
    let cancelled: Vec<docket_queue::JobId> = sqlx::query_scalar(
        "select id from docket.jobs where batch_id = $1 and kind = 'docket.noop' order by id limit 50",
    )
    .bind(id)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    for job in &cancelled {
        admin::cancel(&db.pool, *job).await.unwrap();
    }
    let calls = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let mut registry = Registry::new();
        builtin::register(&mut registry);
        let seen = calls.clone();
        registry.register_raw("test.callback", move |payload, _ctx: JobContext| {
            let seen = seen.clone();
            async move {
                assert!(payload.get("batch_id").is_some() && payload["report"] == "nightly");
                seen.fetch_add(1, Ordering::SeqCst);
                Ok::<(), JobError>(())
            }
        });
        workers.push(start(&db.pool, registry, quick_config()));
    }
    eventually(Duration::from_secs(60), "the callback ran", || async {
        calls.load(Ordering::SeqCst) >= 1
    })
    .await;
    // Give any second callback every chance to show up.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for worker in workers {
        worker.shutdown().await;
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let callbacks: i64 =
        sqlx::query_scalar("select count(*) from docket.jobs where kind = 'test.callback'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(callbacks, 1);
    let status = batch::show(&db.pool, id).await.unwrap();
    assert_eq!(
        (
            status.total,
            status.completed,
            status.dead_letter,
            status.cancelled,
            status.remaining
        ),
        (1000, 850, 100, 50, 0)
    );
    assert!(status.finished_at.is_some());
    let callback = admin::show(
        &db.pool,
        docket_queue::JobId(status.callback_job_id.unwrap()),
    )
    .await
    .unwrap();
    assert_eq!(callback.state, JobState::Completed);
}

/// A batch is created in the caller's transaction: rolled back, nothing is left.
#[tokio::test]
async fn a_batch_in_a_rolled_back_transaction_leaves_nothing() {
    let db = TestDb::new().await;
    let mut tx = db.pool.begin().await.unwrap();
    let id = batch::create(
        &mut *tx,
        &NewBatch {
            jobs: vec![NewJob::new(builtin::NOOP, json!({}))],
            ..NewBatch::default()
        },
    )
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    assert!(batch::show(&db.pool, id).await.is_err());
    let jobs: i64 = sqlx::query_scalar("select count(*) from docket.jobs")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(jobs, 0);
    let empty = batch::create(&db.pool, &NewBatch::default())
        .await
        .unwrap_err();
    assert!(empty.to_string().contains("at least one job"), "{empty}");
}

/// A cron batch schedule with `overlap = "skip"` whose batch outlasts its interval: the
/// ticks due meanwhile are skipped (recorded, never run on top), and each batch is linked
/// to its tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cron_batch_that_outlasts_its_interval_makes_the_next_ticks_skip() {
    use docket_worker::cron::{Overlap, Schedule};
    let db = TestDb::new().await;
    let mut registry = Registry::new();
    builtin::register(&mut registry);
    let pool = db.pool.clone();
    registry.register_raw("test.fanout", move |_payload, ctx: JobContext| {
        let pool = pool.clone();
        async move {
            let jobs = vec![NewJob::typed(&builtin::Sleep { ms: 2500 }).unwrap()];
            let parent = Some(ctx.id());
            batch::create(
                &pool,
                &NewBatch {
                    jobs,
                    callback: None,
                    parent,
                },
            )
            .await?;
            Ok::<(), JobError>(())
        }
    });
    let mut schedule = Schedule::new("fan-out", "* * * * * *", "test.fanout");
    schedule.overlap = Overlap::Skip;
    let config = docket_worker::RuntimeConfig {
        schedules: vec![schedule],
        ..quick_config()
    };
    let worker = start(&db.pool, registry, config);
    let mut most_open = 0i64;
    let deadline = std::time::Instant::now() + Duration::from_secs(6);
    while std::time::Instant::now() < deadline {
        let open: i64 = sqlx::query_scalar(
            "select count(*) from docket.batches where schedule = 'fan-out' and finished_at is null",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        most_open = most_open.max(open);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.shutdown().await;
    let (batches, skipped): (i64, i64) = sqlx::query_as(
        "select (select count(*) from docket.batches where schedule = 'fan-out'),
                (select count(*) from docket.schedule_ticks where schedule = 'fan-out' and job_id is null)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(
        batches >= 1,
        "the tick's job made a batch linked to its tick"
    );
    assert!(skipped >= 1, "ticks due while the batch ran were skipped");
    assert_eq!(most_open, 1, "a tick never ran on top of an open batch");
}
