//! The helpers an application's tests use: what was enqueued, and running it now.

use docket_queue::{enqueue, JobArgs, NewJob};
use docket_testkit::TestDb;
use docket_worker::testing::{self, Drained};
use docket_worker::{JobContext, JobError, Registry};
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Welcome {
    user_id: i64,
}

impl JobArgs for Welcome {
    const KIND: &'static str = "app.welcome";
    const QUEUE: &'static str = "emails";
}

#[tokio::test]
async fn a_test_sees_what_was_enqueued_and_drains_it_through_the_runtime() {
    let db = TestDb::new().await;
    for user_id in [7, 8, 9] {
        enqueue(&db.pool, &NewJob::typed(&Welcome { user_id }).unwrap())
            .await
            .unwrap();
    }
    assert_eq!(
        testing::enqueued::<Welcome>(&db.pool).await.unwrap(),
        [
            Welcome { user_id: 7 },
            Welcome { user_id: 8 },
            Welcome { user_id: 9 }
        ]
    );
    let mut registry = Registry::new();
    registry.register(|job: Welcome, _: JobContext| async move {
        if job.user_id == 9 {
            return Err(JobError::from("the mail service is down"));
        }
        Ok(())
    });
    let drained = testing::drain(&db.pool, registry).await.unwrap();
    assert_eq!(
        drained,
        Drained {
            completed: 2,
            retrying: 1,
            ..Drained::default()
        }
    );
    // The failed one waits out its backoff: enqueued, not run again.
    assert_eq!(
        testing::enqueued::<Welcome>(&db.pool).await.unwrap(),
        [Welcome { user_id: 9 }]
    );
}
