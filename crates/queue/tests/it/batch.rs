//! Batches: a batch names only jobs of its own, so that its callback waits for each.

use docket_queue::batch::{self, Callback, NewBatch};
use docket_queue::{enqueue, JobState, NewJob};
use docket_testkit::TestDb;
use serde_json::json;

use crate::claim_default;

fn with_callback(jobs: Vec<NewJob>) -> NewBatch {
    NewBatch {
        jobs,
        callback: Some(Callback {
            kind: "report.done".into(),
            payload: json!({}),
            queue: "default".into(),
        }),
        parent: None,
    }
}

/// Issue 21, case 7: a batch job whose unique key already had a live job (here one that is
/// running) was folded into that job, which is not the batch's: the batch had no live job
/// of its own, finished at once and enqueued its callback while the work still ran. Such a
/// batch is refused now, naming the job and the key, and nothing of it is written.
#[tokio::test]
async fn a_batch_whose_job_would_be_deduplicated_into_a_live_job_is_refused() {
    let db = TestDb::new().await;
    let running = enqueue(
        &db.pool,
        &NewJob::new("report", json!({})).unique_key("nightly"),
    )
    .await
    .unwrap();
    let claimed = claim_default(&db.pool, uuid::Uuid::now_v7(), 1, None).await;
    assert_eq!(claimed[0].id, running);
    let refused = batch::create(
        &db.pool,
        &with_callback(vec![
            NewJob::new("report", json!({"part": 1})),
            NewJob::new("report", json!({})).unique_key("nightly"),
        ]),
    )
    .await;
    let err = refused.expect_err("a batch job that would be deduplicated is refused");
    let message = err.to_string();
    assert!(
        message.contains("job 1")
            && message.contains("\"nightly\"")
            && message.contains(&running.to_string()),
        "{message}"
    );
    assert!(
        matches!(err, docket_queue::Error::BatchKeyTaken { index: 1, .. }),
        "{err:?}"
    );
    assert!(
        batch::list(&db.pool, 10).await.unwrap().is_empty(),
        "no batch is written"
    );
    assert!(batch::finish_done(&db.pool, 10).await.unwrap().is_empty());
    let jobs: i64 = sqlx::query_scalar("select count(*) from docket.jobs")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(jobs, 1, "none of the batch's jobs is written");
    let job = docket_queue::admin::show(&db.pool, running).await.unwrap();
    assert_eq!((job.state, job.batch_id), (JobState::Processing, None));
}

/// Two jobs of one batch with the same key would be one job counted twice: refused too.
/// Keys that are free are taken as usual, and hold against later enqueues.
#[tokio::test]
async fn a_batch_with_one_key_twice_is_refused_and_free_keys_are_kept() {
    let db = TestDb::new().await;
    let twice = batch::create(
        &db.pool,
        &with_callback(vec![
            NewJob::new("report", json!({})).unique_key("k"),
            NewJob::new("report", json!({})).unique_key("k"),
        ]),
    )
    .await;
    let err = twice.expect_err("one key twice in a batch is refused");
    assert!(
        matches!(err, docket_queue::Error::BatchKeyTaken { index: 1, .. }),
        "{err:?}"
    );
    let id = batch::create(
        &db.pool,
        &with_callback(vec![
            NewJob::new("report", json!({})).unique_key("a"),
            NewJob::new("report", json!({})).unique_key("b"),
        ]),
    )
    .await
    .unwrap();
    let status = batch::show(&db.pool, id).await.unwrap();
    assert_eq!((status.total, status.remaining), (2, 2));
    let later = enqueue(&db.pool, &NewJob::new("report", json!({})).unique_key("a"))
        .await
        .unwrap();
    let job = docket_queue::admin::show(&db.pool, later).await.unwrap();
    assert_eq!(
        job.batch_id,
        Some(id),
        "a later enqueue with the key finds the batch's job"
    );
}
