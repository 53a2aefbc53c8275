//! An email in flight: a run stopped mid-exchange lets the exchange finish and record its
//! outcome; a delivery a crash left `sending` is `unknown`, never sent again unasked.

use std::time::Duration;

use docket_mail::campaign::{self, NewCampaign, Recipient};
use docket_mail::delivery::Status;
use docket_mail::jobs::{Recovery, RECOVERY_QUEUE};
use docket_mail::template::Catalog;
use docket_queue::{JobId, JobState, NewJob};
use docket_testkit::{eventually, SmtpSink, TestDb, ThrowawayCluster};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use crate::{config_for, deliveries, start, templates};

fn reset() -> std::path::PathBuf {
    templates(&[
        ("reset/subject.txt", "Reset"),
        ("reset/body.txt", "Reset."),
        ("news/subject.txt", "News"),
        ("news/body.txt", "News."),
    ])
}

async fn enqueue_recovery(pool: &PgPool, to: &str) -> JobId {
    let job = Recovery {
        to: to.to_owned(),
        template: "reset".to_owned(),
        vars: serde_json::json!({}),
        locale: None,
        idempotency_key: None,
    };
    let new = NewJob::typed(&job).unwrap().queue(RECOVERY_QUEUE);
    docket_queue::enqueue(pool, &new).await.unwrap()
}

async fn wait_state(pool: &PgPool, id: JobId, state: JobState) -> docket_queue::Job {
    eventually(
        Duration::from_secs(30),
        &format!("job {id} is {state:?}"),
        || async { docket_queue::admin::show(pool, id).await.unwrap().state == state },
    )
    .await;
    docket_queue::admin::show(pool, id).await.unwrap()
}

#[tokio::test]
async fn a_run_cancelled_after_data_finishes_its_exchange_and_the_replay_sends_nothing_more() {
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    sink.slow_data(Some(Duration::from_secs(8)));
    let mut config = config_for(&sink, reset());
    config.timeout = Duration::from_secs(20);
    let running = start(&db.pool, config);
    let id = enqueue_recovery(&db.pool, "ann@example.com").await;
    eventually(
        Duration::from_secs(10),
        "the relay took the message and has not answered yet",
        || async { sink.count_for("ann@example.com") == 1 },
    )
    .await;
    docket_queue::admin::cancel(&db.pool, id).await.unwrap();
    wait_state(&db.pool, id, JobState::Cancelled).await;
    sink.slow_data(None);
    docket_queue::admin::replay(&db.pool, id).await.unwrap();
    wait_state(&db.pool, id, JobState::Completed).await;
    running.shutdown().await;
    assert_eq!(
        sink.count_for("ann@example.com"),
        1,
        "the replay sent the message again"
    );
    let recorded = deliveries(&db.pool, None).await;
    assert_eq!(
        (recorded[0].status, recorded[0].attempts),
        (Status::Sent, 1),
        "{recorded:?}"
    );
}

#[tokio::test]
async fn a_campaign_delivery_a_crash_left_sending_is_unknown_and_never_sent_again() {
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    let dir = reset();
    let rows = (0..3)
        .map(|i| Recipient {
            to: format!("user{i}@example.com"),
            name: None,
            locale: None,
            vars: serde_json::json!({}),
        })
        .collect();
    let catalog = Catalog::load(&dir).unwrap();
    let from = "Docket <docket@example.com>".parse().unwrap();
    let id = campaign::create(
        &db.pool,
        &catalog,
        &from,
        &NewCampaign::new("crash", "news", rows),
    )
    .await
    .unwrap();
    // What a worker killed between the reservation and the record leaves behind.
    sqlx::query(
        "update docket.mail_deliveries set status = 'sending', attempts = 1
         where recipient = 'user1@example.com'",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let running = start(&db.pool, config_for(&sink, dir));
    eventually(Duration::from_secs(30), "the campaign finishes", || async {
        campaign::show(&db.pool, id).await.unwrap().state == "finished"
    })
    .await;
    running.shutdown().await;
    assert_eq!(sink.count_for("user1@example.com"), 0, "sent again");
    assert_eq!(sink.count_for("user0@example.com"), 1);
    assert_eq!(sink.count_for("user2@example.com"), 1);
    let recorded = deliveries(&db.pool, Some(id)).await;
    let left = recorded
        .iter()
        .find(|d| d.recipient == "user1@example.com")
        .unwrap();
    assert_eq!((left.status, left.attempts), (Status::Unknown, 1));
    let status = campaign::show(&db.pool, id).await.unwrap();
    assert_eq!((status.sent, status.unknown), (2, 1), "{status:?}");
}

#[tokio::test]
async fn a_recovery_delivery_left_sending_dead_letters_its_job_and_a_replay_sends_it() {
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    let dir = reset();
    let id = enqueue_recovery(&db.pool, "ann@example.com").await;
    // A first run reserved the delivery and its worker died before the record.
    sqlx::query(
        "insert into docket.mail_deliveries
             (source, idempotency_key, recipient, template, message_id, job_id, status, attempts)
         values ('recovery', $1, 'ann@example.com', 'reset', '<m@docket>', $2, 'sending', 1)",
    )
    .bind(format!("job:{id}"))
    .bind(id.0)
    .execute(&db.pool)
    .await
    .unwrap();
    let running = start(&db.pool, config_for(&sink, dir));
    let job = wait_state(&db.pool, id, JobState::DeadLetter).await;
    assert_eq!(job.dead_letter_reason.as_deref(), Some("unknown"));
    assert_eq!(sink.count_for("ann@example.com"), 0, "sent again unasked");
    assert_eq!(deliveries(&db.pool, None).await[0].status, Status::Unknown);
    // The operator's word: replaying the job sends it.
    docket_queue::admin::replay(&db.pool, id).await.unwrap();
    wait_state(&db.pool, id, JobState::Completed).await;
    running.shutdown().await;
    assert_eq!(sink.count_for("ann@example.com"), 1);
    assert_eq!(deliveries(&db.pool, None).await[0].status, Status::Sent);
}

/// PostgreSQL restarted (every connection cut, `-m immediate`) while the relay holds a
/// message: the reservation the database acknowledged before the exchange must still be
/// there afterwards, also on a server that runs `synchronous_commit = off` (the throwaway
/// cluster does). Lost, the delivery would be `queued` again and the message sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_right_after_the_reservation_never_sends_the_message_twice() {
    let cluster = tokio::task::spawn_blocking(ThrowawayCluster::start)
        .await
        .unwrap()
        .expect("a throwaway PostgreSQL cluster");
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect(&cluster.url("postgres"))
        .await
        .unwrap();
    // With `synchronous_commit = off` a commit is acknowledged before its WAL is written;
    // the WAL writer writes it within `wal_writer_delay`. Its longest makes the window the
    // restart falls in seconds wide instead of a fraction of one.
    sqlx::query("alter system set wal_writer_delay = '10s'")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("select pg_reload_conf()")
        .execute(&pool)
        .await
        .unwrap();
    docket_queue::migrate(&pool).await.unwrap();
    let sink = SmtpSink::start().await;
    // The relay takes the message and answers it only after the restart.
    sink.slow_data(Some(Duration::from_secs(8)));
    let dir = reset();
    let catalog = Catalog::load(&dir).unwrap();
    let from = "Docket <docket@example.com>".parse().unwrap();
    let rows = vec![Recipient {
        to: "ann@example.com".to_owned(),
        name: None,
        locale: None,
        vars: serde_json::json!({}),
    }];
    let id = campaign::create(
        &pool,
        &catalog,
        &from,
        &NewCampaign::new("restart", "news", rows),
    )
    .await
    .unwrap();
    // The campaign is on disk; from here on only what is flushed survives the restart.
    sqlx::query("checkpoint").execute(&pool).await.unwrap();
    let mut config = config_for(&sink, dir);
    config.timeout = Duration::from_secs(20);
    let running = start(&pool, config);
    eventually(
        Duration::from_secs(10),
        "the relay took the message and has not answered yet",
        || async { sink.count_for("ann@example.com") == 1 },
    )
    .await;
    let restarted = std::sync::Arc::new(cluster);
    let restarting = restarted.clone();
    tokio::task::spawn_blocking(move || restarting.restart())
        .await
        .unwrap()
        .expect("PostgreSQL restarts");
    eventually(Duration::from_secs(60), "the campaign finishes", || async {
        campaign::show(&pool, id)
            .await
            .is_ok_and(|status| status.state == "finished")
    })
    .await;
    running.shutdown().await;
    assert_eq!(
        sink.count_for("ann@example.com"),
        1,
        "the message was sent again after the restart"
    );
    let recorded = deliveries(&pool, Some(id)).await;
    assert!(
        matches!(recorded[0].status, Status::Sent | Status::Unknown),
        "{recorded:?}"
    );
    assert_eq!(recorded[0].attempts, 1, "{recorded:?}");
}
