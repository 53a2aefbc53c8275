use std::collections::HashSet;

use chrono::{Duration, Utc};
use docket_queue::{admin, claim, enqueue, enqueue_many, ClaimRequest, JobState, NewJob};
use docket_testkit::{insert_job, JobOpts, TestDb};
use serde_json::json;
use uuid::Uuid;

use crate::claim_default;

#[tokio::test]
async fn eight_concurrent_claimers_claim_each_of_ten_thousand_jobs_exactly_once() {
    let db = TestDb::with_pool_size(12).await;
    let jobs: Vec<_> = (0..10_000)
        .map(|n| NewJob::new("k", json!({"n": n})))
        .collect();
    let enqueued = enqueue_many(&db.pool, &jobs).await.unwrap();
    let mut claimers = Vec::new();
    for _ in 0..8 {
        let pool = db.pool.clone();
        claimers.push(tokio::spawn(async move {
            let worker = Uuid::now_v7();
            let mut mine = Vec::new();
            loop {
                let batch = claim_default(&pool, worker, 37, None).await;
                if batch.is_empty() {
                    return mine;
                }
                mine.extend(batch.into_iter().map(|job| job.id));
            }
        }));
    }
    let mut all = Vec::new();
    for claimer in claimers {
        all.extend(claimer.await.unwrap());
    }
    assert_eq!(all.len(), 10_000, "no job claimed twice, none missed");
    let unique: HashSet<_> = all.into_iter().collect();
    assert_eq!(unique, enqueued.into_iter().collect::<HashSet<_>>());
    let processing: i64 = sqlx::query_scalar(
        "select count(*) from docket.jobs where state = 'processing' and attempt = 1",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(processing, 10_000);
}

#[tokio::test]
async fn claim_orders_by_priority_then_run_at_and_skips_future_jobs() {
    let db = TestDb::new().await;
    let now = Utc::now();
    let late = insert_job(
        &db.pool,
        JobOpts {
            run_at: Some(now - Duration::seconds(10)),
            ..Default::default()
        },
    )
    .await;
    let early = insert_job(
        &db.pool,
        JobOpts {
            run_at: Some(now - Duration::seconds(60)),
            ..Default::default()
        },
    )
    .await;
    let urgent = insert_job(
        &db.pool,
        JobOpts {
            priority: Some(-1),
            run_at: Some(now - Duration::seconds(1)),
            ..Default::default()
        },
    )
    .await;
    let future = insert_job(
        &db.pool,
        JobOpts {
            run_at: Some(now + Duration::hours(1)),
            ..Default::default()
        },
    )
    .await;
    let retrying = insert_job(
        &db.pool,
        JobOpts {
            state: Some(JobState::Retrying),
            priority: Some(5),
            run_at: Some(now - Duration::seconds(5)),
            ..Default::default()
        },
    )
    .await;
    let worker = Uuid::now_v7();
    let claimed: Vec<_> = claim_default(&db.pool, worker, 10, Some(now))
        .await
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(claimed, [urgent.id, early.id, late.id, retrying.id]);
    let after = admin::show(&db.pool, retrying.id).await.unwrap();
    assert_eq!(
        (after.state, after.attempt, after.locked_by),
        (JobState::Processing, 2, Some(worker))
    );
    assert_eq!(
        admin::show(&db.pool, future.id).await.unwrap().state,
        JobState::Pending
    );
    // The scheduled job becomes claimable once its time comes.
    let later = claim_default(&db.pool, worker, 10, Some(now + Duration::hours(2))).await;
    assert_eq!(later.iter().map(|j| j.id).collect::<Vec<_>>(), [future.id]);
}

#[tokio::test]
async fn claim_takes_only_its_queue_and_the_kinds_it_knows() {
    let db = TestDb::new().await;
    let known = enqueue(&db.pool, &NewJob::new("known", json!({})))
        .await
        .unwrap();
    let unknown = enqueue(&db.pool, &NewJob::new("unknown", json!({})))
        .await
        .unwrap();
    enqueue(&db.pool, &NewJob::new("known", json!({})).queue("other"))
        .await
        .unwrap();
    let kinds = vec!["known".to_owned()];
    let claimed = claim(
        &db.pool,
        &ClaimRequest {
            queue: "default",
            kinds: Some(&kinds),
            worker_id: Uuid::now_v7(),
            token: ClaimRequest::new_token(),
            limit: 10,
            now: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        claimed.jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
        [known]
    );
    assert_eq!(
        admin::show(&db.pool, unknown).await.unwrap().state,
        JobState::Pending
    );
}

#[tokio::test]
async fn claim_skips_rows_locked_by_another_transaction() {
    let db = TestDb::new().await;
    let first = enqueue(&db.pool, &NewJob::new("k", json!({})).priority(-1))
        .await
        .unwrap();
    let second = enqueue(&db.pool, &NewJob::new("k", json!({})))
        .await
        .unwrap();
    let mut tx = db.pool.begin().await.unwrap();
    let held = claim_default_in(&mut tx, 1).await;
    assert_eq!(held, [first]);
    // The other claimer neither waits nor gets the held row.
    let other = claim_default(&db.pool, Uuid::now_v7(), 10, None).await;
    assert_eq!(other.iter().map(|j| j.id).collect::<Vec<_>>(), [second]);
    tx.rollback().await.unwrap();
}

async fn claim_default_in(tx: &mut sqlx::PgConnection, limit: u32) -> Vec<docket_queue::JobId> {
    claim(
        &mut *tx,
        &ClaimRequest {
            queue: "default",
            kinds: None,
            worker_id: Uuid::now_v7(),
            token: ClaimRequest::new_token(),
            limit,
            now: None,
        },
    )
    .await
    .unwrap()
    .jobs
    .into_iter()
    .map(|j| j.id)
    .collect()
}

#[tokio::test]
async fn expired_jobs_are_never_handed_out_and_the_sweep_dead_letters_them_as_expired() {
    let db = TestDb::new().await;
    let now = Utc::now();
    let expired = enqueue(
        &db.pool,
        &NewJob::new("recovery", json!({}))
            .priority(-1)
            .expires_at(now - Duration::seconds(1)),
    )
    .await
    .unwrap();
    let fresh = enqueue(
        &db.pool,
        &NewJob::new("recovery", json!({})).expires_at(now + Duration::hours(1)),
    )
    .await
    .unwrap();
    let result = claim_default(&db.pool, Uuid::now_v7(), 10, None).await;
    assert_eq!(result.iter().map(|j| j.id).collect::<Vec<_>>(), [fresh]);
    assert_eq!(
        admin::show(&db.pool, expired).await.unwrap().state,
        JobState::Pending,
        "the claim passes it over without touching it"
    );
    let swept = docket_queue::maintenance::expire(&db.pool, 100, None)
        .await
        .unwrap();
    assert_eq!(swept.iter().map(|j| j.id).collect::<Vec<_>>(), [expired]);
    let job = admin::show(&db.pool, expired).await.unwrap();
    assert_eq!(job.state, JobState::DeadLetter);
    assert_eq!(job.dead_letter_reason.as_deref(), Some("expired"));
    assert_eq!(job.attempt, 0, "an expired job was never attempted");
    assert!(job.finished_at.is_some());
    assert!(claim_default(&db.pool, Uuid::now_v7(), 10, None)
        .await
        .is_empty());
}

/// Issue #9: expired rows at the head of a queue used up the claim's LIMIT, so a claim
/// with ten free slots came back with nothing while fresh jobs waited behind them.
#[tokio::test]
async fn expired_jobs_at_the_head_of_a_queue_do_not_use_up_the_claim() {
    let db = TestDb::new().await;
    let past = Utc::now() - Duration::seconds(1);
    let stale: Vec<NewJob> = (0..50)
        .map(|_| {
            NewJob::new("recovery", json!({}))
                .priority(-5)
                .expires_at(past)
        })
        .collect();
    docket_queue::enqueue_many(&db.pool, &stale).await.unwrap();
    let fresh = enqueue(&db.pool, &NewJob::new("recovery", json!({})))
        .await
        .unwrap();
    let claimed = claim_default(&db.pool, Uuid::now_v7(), 10, None).await;
    assert_eq!(claimed.iter().map(|j| j.id).collect::<Vec<_>>(), [fresh]);
}
