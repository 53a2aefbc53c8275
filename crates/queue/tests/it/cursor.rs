//! Resuming claims: a claimer's claims start where its last one ended, so they do not step
//! over the dead index entries earlier claims left, and still find what became ready
//! behind them.

use std::time::Duration;

use docket_queue::{claim, claim_resuming, enqueue, enqueue_many, ClaimCursor, Job, NewJob};
use docket_testkit::TestDb;

use crate::claim_request as request;
use crate::{hold_snapshot, index_entries_read};
use serde_json::json;
use sqlx::PgPool;

async fn backlog(pool: &PgPool, n: usize) -> Vec<docket_queue::JobId> {
    let jobs: Vec<NewJob> = (0..n)
        .map(|i| NewJob::new("k", json!({ "n": i })).priority(1))
        .collect();
    enqueue_many(pool, &jobs).await.unwrap()
}

fn ids(jobs: &[Job]) -> Vec<docket_queue::JobId> {
    jobs.iter().map(|job| job.id).collect()
}

#[tokio::test]
async fn resuming_claims_take_the_queue_in_order_and_look_behind_the_cursor_once_it_runs_dry() {
    let db = TestDb::new().await;
    let queued = backlog(&db.pool, 30).await;
    // No periodic return to the head during the test, and no spacing out of the returns
    // once the queue past the cursor has run dry.
    let mut cursor = ClaimCursor::new(Duration::from_secs(3600), None);

    let first = claim_resuming(&db.pool, &request(10), &mut cursor)
        .await
        .unwrap();
    assert_eq!(ids(&first.jobs), queued[..10]);

    // Ahead of every queued job in the order, but behind the cursor.
    let urgent = enqueue(&db.pool, &NewJob::new("k", json!({})).priority(0))
        .await
        .unwrap();
    let second = claim_resuming(&db.pool, &request(10), &mut cursor)
        .await
        .unwrap();
    assert_eq!(
        ids(&second.jobs),
        queued[10..20],
        "resumed after the cursor"
    );

    // Ten are left past the cursor: the claim takes them and returns at once (they start
    // without waiting for a second statement)...
    let third = claim_resuming(&db.pool, &request(20), &mut cursor)
        .await
        .unwrap();
    assert_eq!(ids(&third.jobs), queued[20..]);
    // ...and the next claim looks behind the cursor.
    let fourth = claim_resuming(&db.pool, &request(20), &mut cursor)
        .await
        .unwrap();
    assert_eq!(ids(&fourth.jobs), [urgent]);

    let drained = claim_resuming(&db.pool, &request(10), &mut cursor)
        .await
        .unwrap();
    assert!(drained.jobs.is_empty());
}

#[tokio::test]
async fn a_busy_queue_is_scanned_from_the_head_again_within_the_head_scan_period() {
    let db = TestDb::new().await;
    let queued = backlog(&db.pool, 30).await;
    let mut cursor = ClaimCursor::new(Duration::from_millis(50), None);
    let first = claim_resuming(&db.pool, &request(10), &mut cursor)
        .await
        .unwrap();
    assert_eq!(ids(&first.jobs), queued[..10]);
    let urgent = enqueue(&db.pool, &NewJob::new("k", json!({})).priority(0))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;
    let next = claim_resuming(&db.pool, &request(10), &mut cursor)
        .await
        .unwrap();
    let mut expected = vec![urgent];
    expected.extend_from_slice(&queued[10..19]);
    assert_eq!(
        ids(&next.jobs),
        expected,
        "the urgent job first, then in order"
    );
}

/// While a snapshot older than the claims is held, vacuum can remove nothing and
/// PostgreSQL cannot even mark the claimed jobs' old index entries dead: a claim from the
/// head reads every one of them again. A resuming claim starts past them.
#[tokio::test]
async fn a_resuming_claim_does_not_read_the_entries_earlier_claims_left_while_a_snapshot_is_held() {
    // One connection, so that a raw `begin` holds the measured claim in one transaction.
    let db = TestDb::with_pool_size(1).await;
    backlog(&db.pool, 1_100).await;
    let mut holder = hold_snapshot(&db.url).await;

    let mut cursor = ClaimCursor::new(Duration::from_secs(3600), None);
    for _ in 0..10 {
        let claimed = claim_resuming(&db.pool, &request(100), &mut cursor)
            .await
            .unwrap();
        assert_eq!(claimed.jobs.len(), 100);
    }

    sqlx::query("begin").execute(&db.pool).await.unwrap();
    let before = index_entries_read(&db.pool, "docket.jobs_claim").await;
    let resumed = claim_resuming(&db.pool, &request(50), &mut cursor)
        .await
        .unwrap();
    let read_resuming = index_entries_read(&db.pool, "docket.jobs_claim").await - before;
    sqlx::query("rollback").execute(&db.pool).await.unwrap();
    assert_eq!(resumed.jobs.len(), 50);

    sqlx::query("begin").execute(&db.pool).await.unwrap();
    let before = index_entries_read(&db.pool, "docket.jobs_claim").await;
    let from_head = claim(&db.pool, &request(50)).await.unwrap();
    let read_from_head = index_entries_read(&db.pool, "docket.jobs_claim").await - before;
    sqlx::query("rollback").execute(&db.pool).await.unwrap();
    assert_eq!(ids(&from_head.jobs), ids(&resumed.jobs), "the same jobs");

    assert!(
        read_from_head >= 1_000,
        "from the head, the claim reads the 1,000 claimed jobs' entries ({read_from_head})"
    );
    assert!(
        read_resuming <= 60,
        "the resuming claim read {read_resuming} index entries to take 50"
    );
    sqlx::query("rollback").execute(&mut holder).await.unwrap();
}

#[tokio::test]
async fn a_claim_that_finds_nothing_past_the_cursor_claims_from_the_head_in_the_same_call() {
    let db = TestDb::new().await;
    let queued = backlog(&db.pool, 10).await;
    let mut cursor = ClaimCursor::new(Duration::from_secs(3600), None);
    let all = claim_resuming(&db.pool, &request(10), &mut cursor)
        .await
        .unwrap();
    assert_eq!(ids(&all.jobs), queued);
    let urgent = enqueue(&db.pool, &NewJob::new("k", json!({})).priority(0))
        .await
        .unwrap();
    let next = claim_resuming(&db.pool, &request(10), &mut cursor)
        .await
        .unwrap();
    assert_eq!(
        ids(&next.jobs),
        [urgent],
        "nothing past the cursor, so from the head"
    );
}

/// Pause, rate limits and groups cost a plain claim nothing: beside a paused queue, a
/// rate-limited one and a grouped one, a claim of ten reads ten entries of `jobs_claim`.
#[tokio::test]
async fn a_plain_claim_reads_only_what_it_takes_beside_paused_limited_and_grouped_queues() {
    let db = TestDb::with_pool_size(1).await;
    backlog(&db.pool, 200).await;
    let beside: Vec<NewJob> = (0..200)
        .flat_map(|i| {
            [
                NewJob::new("k", json!({ "n": i })).queue("paused"),
                NewJob::new("k", json!({ "n": i })).queue("limited"),
                NewJob::new("k", json!({ "n": i }))
                    .queue("default")
                    .group(format!("g{}", i % 10)),
            ]
        })
        .collect();
    enqueue_many(&db.pool, &beside).await.unwrap();
    docket_queue::queues::pause(&db.pool, "paused")
        .await
        .unwrap();
    let limit = docket_queue::rate_limit::RateLimit::new("limited", "5/s".parse().unwrap());
    limit.take_up_to(&db.pool, 5, 0.0).await.unwrap();

    sqlx::query("begin").execute(&db.pool).await.unwrap();
    let before = index_entries_read(&db.pool, "docket.jobs_claim").await;
    let claimed = claim(&db.pool, &request(10)).await.unwrap();
    let read = index_entries_read(&db.pool, "docket.jobs_claim").await - before;
    sqlx::query("rollback").execute(&db.pool).await.unwrap();
    assert_eq!(claimed.jobs.len(), 10);
    assert!(claimed.jobs.iter().all(|job| job.group_key.is_none()));
    assert!(read <= 10, "the claim read {read} index entries to take 10");
}
