//! An email is sent again only on an operator's word. A run of a recovery or admin job that
//! finds its own delivery `unknown` or `dead_letter` has not been told to send it again:
//! the job may simply be running again (handed back at shutdown, rescued after a stall)
//! after the exchange that settled the delivery outlived the run that started it. Only a
//! replay of the job (one, or in bulk) sends it again, with a fresh ladder.

use std::time::Duration;

use docket_mail::delivery::Status;
use docket_mail::jobs::{Recovery, RECOVERY_QUEUE};
use docket_queue::admin::DeadLetterFilter;
use docket_queue::{JobId, JobState, NewJob};
use docket_testkit::{eventually, SmtpSink, TestDb};
use sqlx::PgPool;

use crate::{config_for, deliveries, start_tuned, templates, Running};

fn reset() -> std::path::PathBuf {
    templates(&[("reset/subject.txt", "Reset"), ("reset/body.txt", "Reset.")])
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

async fn wait_final(pool: &PgPool, id: JobId) -> docket_queue::Job {
    eventually(
        Duration::from_secs(60),
        &format!("job {id} is finished"),
        || async {
            docket_queue::admin::show(pool, id)
                .await
                .unwrap()
                .state
                .is_final()
        },
    )
    .await;
    docket_queue::admin::show(pool, id).await.unwrap()
}

/// A worker whose runs are handed back one second into its shutdown.
fn start_worker(pool: &PgPool, config: docket_mail::MailConfig) -> Running {
    start_tuned(pool, config, |runtime| {
        runtime.shutdown_timeout = Duration::from_secs(1);
    })
}

/// A worker is stopped (a deploy) while the relay holds the message without answering:
/// the run is handed back, its exchange goes on and ends `unknown` (no reply in time).
/// The next worker runs the job again; nobody replayed it, so nothing is sent: the job is
/// dead-lettered `unknown`. The operator's replay then sends it.
#[tokio::test]
async fn an_exchange_that_ends_unknown_after_its_run_was_handed_back_is_not_sent_again_unasked() {
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    sink.slow_data(Some(Duration::from_secs(30)));
    let mut config = config_for(&sink, reset());
    config.timeout = Duration::from_secs(3);
    let first = start_worker(&db.pool, config.clone());
    let id = enqueue_recovery(&db.pool, "ann@example.com").await;
    eventually(
        Duration::from_secs(10),
        "the relay took the message and has not answered",
        || async { sink.count_for("ann@example.com") == 1 },
    )
    .await;
    // The relay answers at once from here on: a second copy would arrive.
    sink.slow_data(None);
    first.shutdown().await;
    let second = start_worker(&db.pool, config);
    let job = wait_final(&db.pool, id).await;
    assert_eq!(
        sink.count_for("ann@example.com"),
        1,
        "sent again with nobody's word"
    );
    assert_eq!(
        (job.state, job.dead_letter_reason.as_deref()),
        (JobState::DeadLetter, Some("unknown"))
    );
    assert_eq!(deliveries(&db.pool, None).await[0].status, Status::Unknown);
    // The operator's word: the replay sends it, once.
    docket_queue::admin::replay(&db.pool, id).await.unwrap();
    let job = wait_final(&db.pool, id).await;
    second.shutdown().await;
    assert_eq!(job.state, JobState::Completed);
    assert_eq!(sink.count_for("ann@example.com"), 2);
    let recorded = deliveries(&db.pool, None).await;
    assert_eq!(
        (recorded[0].status, recorded[0].attempts),
        (Status::Sent, 1),
        "{recorded:?}"
    );
}

/// The same for a ladder: the run of the last attempt is handed back while the relay is
/// slow to refuse the recipient (451), and the exchange then dead-letters the delivery.
/// The next worker does not start the ladder over; the bulk replay of dead letters does.
#[tokio::test]
async fn a_ladder_that_ends_after_its_run_was_handed_back_is_not_started_over_unasked() {
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    let to = "bob@example.com";
    sink.slow_recipient(to, Duration::from_secs(3));
    sink.reply_to(to, Some("451 4.2.0 try again later"));
    let mut config = config_for(&sink, reset());
    config.retry_ladder = vec![Duration::from_secs(1)];
    let first = start_worker(&db.pool, config.clone());
    let id = enqueue_recovery(&db.pool, to).await;
    eventually(
        Duration::from_secs(20),
        "the second attempt is under way",
        || async { sink.attempts_for(to) == 2 },
    )
    .await;
    first.shutdown().await;
    let second = start_worker(&db.pool, config);
    let job = wait_final(&db.pool, id).await;
    assert_eq!(sink.attempts_for(to), 2, "the ladder was started over unasked");
    assert_eq!(
        (job.state, job.dead_letter_reason.as_deref()),
        (JobState::DeadLetter, Some("smtp_temporary")),
        "{:?}",
        job.last_error
    );
    let recorded = deliveries(&db.pool, None).await;
    assert_eq!(
        (recorded[0].status, recorded[0].attempts),
        (Status::DeadLetter, 2),
        "{recorded:?}"
    );
    // The operator's word, in bulk: a fresh ladder, and the relay takes it.
    sink.reply_to(to, None);
    let replayed = docket_queue::admin::replay_dead_letters(&db.pool, &DeadLetterFilter::default())
        .await
        .unwrap();
    assert_eq!(replayed, 1);
    let job = wait_final(&db.pool, id).await;
    second.shutdown().await;
    assert_eq!(job.state, JobState::Completed);
    assert_eq!(sink.count_for(to), 1);
    let recorded = deliveries(&db.pool, None).await;
    assert_eq!(
        (recorded[0].status, recorded[0].attempts),
        (Status::Sent, 1),
        "a fresh ladder: {recorded:?}"
    );
}
