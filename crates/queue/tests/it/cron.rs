//! Ticks with `overlap = "skip"`: a tick waits for the earlier tick's work, whether that
//! work is already a batch or still the tick's own job.

use chrono::{Duration, TimeZone, Utc};
use docket_queue::cron::{self, Overlap, Schedule, Tick};
use docket_testkit::TestDb;

fn fan_out() -> Schedule {
    Schedule {
        overlap: Overlap::Skip,
        ..Schedule::new("fan-out", "* * * * * *", "test.fanout")
    }
}

#[tokio::test]
async fn a_tick_is_skipped_while_the_last_ticks_job_has_not_yet_made_its_batch() {
    let db = TestDb::new().await;
    cron::register(&db.pool, &fan_out(), None).await.unwrap();
    let t0 = Utc.with_ymd_and_hms(2026, 12, 6, 9, 0, 0).unwrap();
    let first = cron::enqueue_tick(&db.pool, "fan-out", t0).await.unwrap();
    assert!(matches!(first, Tick::Enqueued(_)), "{first:?}");
    // The first tick's job has not run yet (no batch exists): the next tick must wait.
    let second = cron::enqueue_tick(&db.pool, "fan-out", t0 + Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(second, Tick::Skipped);
    // Once that job is final, ticks run again.
    let Tick::Enqueued(job) = first else {
        unreachable!()
    };
    sqlx::query("update docket.jobs set state = 'completed', finished_at = now() where id = $1")
        .bind(job.0)
        .execute(&db.pool)
        .await
        .unwrap();
    let third = cron::enqueue_tick(&db.pool, "fan-out", t0 + Duration::seconds(2))
        .await
        .unwrap();
    assert!(matches!(third, Tick::Enqueued(_)), "{third:?}");
}
