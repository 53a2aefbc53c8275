//! Queue controls: pause and resume are stored, listed and shown in the snapshot.

use docket_queue::{enqueue, queues, snapshot, NewJob};
use docket_testkit::TestDb;

#[tokio::test]
async fn a_paused_queue_is_listed_shown_paused_in_the_snapshot_and_still_takes_jobs() {
    let db = TestDb::new().await;
    let control = queues::pause(&db.pool, "reports").await.unwrap();
    assert!(control.paused && control.paused_at.is_some());
    // Pausing again keeps the first time.
    let again = queues::pause(&db.pool, "reports").await.unwrap();
    assert_eq!(again.paused_at, control.paused_at);
    queues::pause(&db.pool, "empty").await.unwrap();
    enqueue(
        &db.pool,
        &NewJob::new("report.build", serde_json::json!({})).queue("reports"),
    )
    .await
    .unwrap();
    assert_eq!(
        queues::paused(&db.pool).await.unwrap(),
        ["empty", "reports"]
    );
    let snap = snapshot(&db.pool, None).await.unwrap();
    assert!(snap.queues["reports"].paused);
    assert_eq!(snap.queues["reports"].pending, 1, "enqueueing goes on");
    assert!(
        snap.queues["empty"].paused,
        "a paused queue is shown even with no job"
    );
    assert!(!snap.total.paused);

    let resumed = queues::resume(&db.pool, "reports").await.unwrap();
    assert!(!resumed.paused && resumed.paused_at.is_none());
    assert_eq!(queues::paused(&db.pool).await.unwrap(), ["empty"]);
    let listed: Vec<(String, bool)> = queues::list(&db.pool)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.queue, c.paused))
        .collect();
    assert_eq!(
        listed,
        [("empty".to_owned(), true), ("reports".to_owned(), false)]
    );
}

#[tokio::test]
async fn names_no_queue_can_have_are_refused() {
    let db = TestDb::new().await;
    for bad in ["", "   ", "a\0b", &"q".repeat(128)] {
        let err = queues::pause(&db.pool, bad).await.unwrap_err();
        assert!(
            err.to_string().contains("1 to 127 characters"),
            "{bad:?}: {err}"
        );
    }
    assert!(queues::list(&db.pool).await.unwrap().is_empty());
}
