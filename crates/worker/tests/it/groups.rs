//! Fair groups through the runtime: what a worker with concurrency 1 (one-job claims) runs.

use docket_queue::{enqueue, enqueue_many, JobId, JobState, NewJob};
use docket_testkit::{eventually, TestDb};
use docket_worker::{builtin, QueueConfig, Registry, RuntimeConfig};
use serde_json::json;

use crate::{quick_config, start, state_of};

const WAIT: std::time::Duration = std::time::Duration::from_secs(20);

fn concurrency_one() -> (Registry, RuntimeConfig) {
    let mut registry = Registry::new();
    builtin::register(&mut registry);
    let config = RuntimeConfig {
        queues: vec![QueueConfig::new("fair").concurrency(1)],
        ..quick_config()
    };
    (registry, config)
}

fn quick_job() -> NewJob {
    NewJob::new("docket.sleep", json!({ "ms": 1 })).queue("fair")
}

async fn all_completed(db: &TestDb, ids: &[JobId]) -> bool {
    for id in ids {
        if state_of(&db.pool, *id).await != JobState::Completed {
            return false;
        }
    }
    true
}

/// Issue 21's recipe: one job of group `zz` ten minutes ahead and five ready jobs of group
/// `aa`; the five stayed pending (every claim offered `zz` a turn) until `zz`'s job was
/// cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_with_nothing_due_does_not_hold_up_the_others() {
    let db = TestDb::new().await;
    let later = chrono::Utc::now() + chrono::Duration::seconds(600);
    enqueue(&db.pool, &quick_job().group("zz").run_at(later))
        .await
        .unwrap();
    let ready: Vec<NewJob> = (0..5).map(|_| quick_job().group("aa")).collect();
    let ready = enqueue_many(&db.pool, &ready).await.unwrap();

    let (registry, config) = concurrency_one();
    let worker = start(&db.pool, registry, config);
    eventually(WAIT, "aa's five jobs completed", || {
        all_completed(&db, &ready)
    })
    .await;
    worker.shutdown().await;
}

/// With one-job claims the jobs without a group were served first every time: a group's
/// three jobs waited behind all fifty of them. They take turns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_groups_jobs_take_turns_with_the_jobs_without_a_group() {
    let db = TestDb::new().await;
    let plain: Vec<NewJob> = (0..50).map(|_| quick_job()).collect();
    enqueue_many(&db.pool, &plain).await.unwrap();
    let grouped: Vec<NewJob> = (0..3).map(|_| quick_job().group("acme")).collect();
    let grouped = enqueue_many(&db.pool, &grouped).await.unwrap();

    let (registry, config) = concurrency_one();
    let worker = start(&db.pool, registry, config);
    eventually(WAIT, "the group's three jobs completed", || {
        all_completed(&db, &grouped)
    })
    .await;
    let plain_done: i64 = sqlx::query_scalar(
        "select count(*) from docket.jobs where group_key is null and state = 'completed'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    worker.shutdown().await;
    // Taking turns, the third of acme's jobs runs about sixth; the first claims may come
    // before the worker learns the queue has groups, so leave room.
    assert!(
        plain_done < 25,
        "{plain_done} jobs without a group ran before the group's three"
    );
}
