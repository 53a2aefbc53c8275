//! Token buckets in PostgreSQL: one bucket over every connection (every process), a
//! borrower that goes first, and a hold that makes everyone wait.

use std::time::Duration;

use docket_queue::rate_limit::{Rate, RateLimit, Take};
use docket_testkit::TestDb;

/// A bucket so slow (one a minute) that nothing refills during a test: only its burst can
/// be taken.
fn slow(name: &str, burst: f64) -> RateLimit {
    RateLimit {
        burst,
        ..RateLimit::new(name, "1/m".parse::<Rate>().unwrap())
    }
}

#[tokio::test]
async fn a_bucket_lets_its_burst_through_over_all_connections_then_says_how_long_to_wait() {
    let db = TestDb::new().await;
    let bucket = slow("relay", 3.0);
    // Separate pools stand for separate processes: the bucket is in the database.
    let other = sqlx::PgPool::connect(&db.url).await.unwrap();
    let mut taken = 0;
    for i in 0..6 {
        let pool = if i % 2 == 0 { &db.pool } else { &other };
        if bucket.take(pool, 0.0).await.unwrap() == Take::Taken(1) {
            taken += 1;
        }
    }
    assert_eq!(taken, 3);
    match bucket.take(&db.pool, 0.0).await.unwrap() {
        Take::Wait(wait) => assert!(
            wait > Duration::from_secs(55),
            "about a minute for one token: {wait:?}"
        ),
        Take::Taken(_) => panic!("an empty bucket gave a token"),
    }
}

#[tokio::test]
async fn a_borrower_goes_ahead_of_an_empty_bucket_and_others_wait_off_the_debt() {
    let db = TestDb::new().await;
    let bucket = slow("relay", 1.0);
    assert_eq!(bucket.take(&db.pool, 0.0).await.unwrap(), Take::Taken(1));
    assert!(matches!(
        bucket.take(&db.pool, 0.0).await.unwrap(),
        Take::Wait(_)
    ));
    for _ in 0..2 {
        assert_eq!(
            bucket.take(&db.pool, 2.0).await.unwrap(),
            Take::Taken(1),
            "a borrower takes from an empty bucket"
        );
    }
    assert!(
        matches!(bucket.take(&db.pool, 2.0).await.unwrap(), Take::Wait(_)),
        "up to its limit"
    );
    let Take::Wait(wait) = bucket.take(&db.pool, 0.0).await.unwrap() else {
        panic!("the bucket is in debt");
    };
    assert!(
        wait > Duration::from_secs(3 * 55),
        "two tokens of debt and one to take, at one a minute: {wait:?}"
    );
}

#[tokio::test]
async fn a_hold_empties_the_bucket_for_everyone() {
    let db = TestDb::new().await;
    let bucket = RateLimit::new("relay", "100/s".parse().unwrap());
    assert_eq!(bucket.take(&db.pool, 0.0).await.unwrap(), Take::Taken(1));
    bucket
        .hold(&db.pool, Duration::from_secs(30))
        .await
        .unwrap();
    let Take::Wait(wait) = bucket.take(&db.pool, 0.0).await.unwrap() else {
        panic!("a held bucket gave a token");
    };
    assert!(wait > Duration::from_secs(29), "{wait:?}");
}

#[tokio::test]
async fn a_claim_takes_what_is_there_up_to_what_it_wants_and_gives_back_what_it_did_not_use() {
    let db = TestDb::new().await;
    let bucket = slow("queue:reports", 5.0);
    assert_eq!(
        bucket.take_up_to(&db.pool, 3, 0.0).await.unwrap(),
        Take::Taken(3)
    );
    assert_eq!(
        bucket.take_up_to(&db.pool, 10, 0.0).await.unwrap(),
        Take::Taken(2)
    );
    assert!(matches!(
        bucket.take_up_to(&db.pool, 10, 0.0).await.unwrap(),
        Take::Wait(_)
    ));
    bucket.give_back(&db.pool, 2).await.unwrap();
    assert_eq!(
        bucket.take_up_to(&db.pool, 10, 0.0).await.unwrap(),
        Take::Taken(2)
    );
}

#[tokio::test]
async fn holds_do_not_add_up() {
    let db = TestDb::new().await;
    let bucket = RateLimit::new("relay", "100/s".parse().unwrap());
    assert_eq!(bucket.take(&db.pool, 0.0).await.unwrap(), Take::Taken(1));
    for _ in 0..5 {
        bucket.hold(&db.pool, Duration::from_secs(2)).await.unwrap();
    }
    let Take::Wait(wait) = bucket.take(&db.pool, 0.0).await.unwrap() else {
        panic!("a held bucket gave a token");
    };
    assert!(
        wait > Duration::from_millis(1500) && wait <= Duration::from_secs(3),
        "five holds of 2 s hold for 2 s: {wait:?}"
    );
}
