use chrono::{Duration, Utc};
use docket_queue::{snapshot, JobState, QueueFigures};
use docket_testkit::{insert_job, JobOpts, TestDb};

#[tokio::test]
async fn snapshot_figures_are_exact_on_a_prepared_data_set() {
    let db = TestDb::new().await;
    let now = Utc::now();
    let job = |state: JobState, queue: &str, run_at_ago: i64| JobOpts {
        state: Some(state),
        queue: Some(queue.into()),
        run_at: Some(now - Duration::seconds(run_at_ago)),
        ..Default::default()
    };
    // default: 2 ready pending (oldest 120 s), 1 scheduled pending, 1 retrying ready (30 s),
    // 1 processing with an old run_at that must not count as ready, 1 dead letter.
    insert_job(&db.pool, job(JobState::Pending, "default", 120)).await;
    insert_job(&db.pool, job(JobState::Pending, "default", 10)).await;
    insert_job(&db.pool, job(JobState::Pending, "default", -3600)).await;
    insert_job(&db.pool, job(JobState::Retrying, "default", 30)).await;
    insert_job(&db.pool, job(JobState::Processing, "default", 9999)).await;
    insert_job(&db.pool, job(JobState::DeadLetter, "default", 9999)).await;
    // mail: only a scheduled retry and finished jobs: nothing ready.
    insert_job(&db.pool, job(JobState::Retrying, "mail", -60)).await;
    insert_job(&db.pool, job(JobState::Completed, "mail", 9999)).await;
    insert_job(&db.pool, job(JobState::Cancelled, "mail", 9999)).await;

    let snap = snapshot(&db.pool, Some(now)).await.unwrap();
    let default = &snap.queues["default"];
    assert_eq!(
        (
            default.pending,
            default.retrying,
            default.processing,
            default.dead_letter
        ),
        (3, 1, 1, 1)
    );
    assert_eq!(
        default.oldest_ready_at.unwrap().timestamp_micros(),
        (now - Duration::seconds(120)).timestamp_micros()
    );
    assert_eq!(default.oldest_ready_age_seconds, Some(120.0));
    let mail = &snap.queues["mail"];
    assert_eq!(
        mail,
        &QueueFigures {
            retrying: 1,
            ..QueueFigures::default()
        },
        "a scheduled job is not ready; finished ones are not counted"
    );
    assert_eq!(
        (
            snap.total.pending,
            snap.total.retrying,
            snap.total.processing,
            snap.total.dead_letter
        ),
        (3, 2, 1, 1)
    );
    assert_eq!(snap.total.oldest_ready_age_seconds, Some(120.0));

    let json = serde_json::to_value(&snap).unwrap();
    for field in [
        "pending",
        "retrying",
        "processing",
        "dead_letter",
        "oldest_ready_at",
        "oldest_ready_age_seconds",
        "queues",
    ] {
        assert!(
            json.get(field).is_some(),
            "snapshot JSON lacks {field}: {json}"
        );
    }
    assert!(json["queues"]["mail"]["oldest_ready_at"].is_null());
    assert!(json["queues"]["mail"]["oldest_ready_age_seconds"].is_null());
}

#[tokio::test]
async fn empty_queue_snapshot_has_nulls_not_zero_ages() {
    let db = TestDb::new().await;
    let snap = snapshot(&db.pool, None).await.unwrap();
    let json = serde_json::to_value(&snap).unwrap();
    assert_eq!(json["pending"], 0);
    assert!(json["oldest_ready_at"].is_null());
    assert!(json["oldest_ready_age_seconds"].is_null());
    assert_eq!(json["queues"], serde_json::json!({}));
}
