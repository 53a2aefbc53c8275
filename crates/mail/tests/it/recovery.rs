//! Recovery and admin emails: expiry, templates, idempotency, encoding, stub mode.

use std::time::Duration;

use chrono::Utc;
use docket_mail::config::Mode;
use docket_mail::delivery::{self, Status};
use docket_mail::jobs::{Recovery, RECOVERY_PRIORITY, RECOVERY_QUEUE};
use docket_queue::{JobId, JobState, NewJob};
use docket_testkit::{eventually, SmtpSink, TestDb};
use sqlx::PgPool;

use crate::{config_for, deliveries, parse, start, templates};

fn reset_templates() -> std::path::PathBuf {
    templates(&[
        ("password_reset/subject.txt", "Reset your password"),
        (
            "password_reset/body.txt",
            "Follow {{ link }} within 15 minutes.",
        ),
        (
            "password_reset/ru/subject.txt",
            "Восстановление пароля для {{ name }}",
        ),
        (
            "password_reset/ru/body.txt",
            "Здравствуйте, {{ name }}! Ссылка: {{ link }}. Ёлка, щука, «кавычки».",
        ),
        (
            "password_reset/ru/body.html",
            "<p>Здравствуйте, <b>{{ name }}</b>! <a href=\"{{ link }}\">Сменить пароль</a></p>",
        ),
    ])
}

fn recovery(to: &str, vars: serde_json::Value) -> Recovery {
    Recovery {
        to: to.to_owned(),
        template: "password_reset".to_owned(),
        vars,
        locale: None,
        idempotency_key: None,
    }
}

async fn enqueue(pool: &PgPool, job: &Recovery, expires_in: Option<Duration>) -> JobId {
    let mut new = NewJob::typed(job)
        .unwrap()
        .queue(RECOVERY_QUEUE)
        .priority(RECOVERY_PRIORITY);
    if let Some(expires_in) = expires_in {
        new = new.expires_at(Utc::now() + chrono::Duration::from_std(expires_in).unwrap());
    }
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
async fn a_recovery_email_whose_expiry_passes_while_the_relay_stalls_is_expired_and_never_arrives()
{
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    sink.stall_for(Duration::from_secs(6));
    let mut config = config_for(&sink, reset_templates());
    config.timeout = Duration::from_secs(30);
    let running = start(&db.pool, config);
    let id = enqueue(
        &db.pool,
        &recovery(
            "ann@example.com",
            serde_json::json!({"link": "https://x/r/1"}),
        ),
        Some(Duration::from_secs(2)),
    )
    .await;
    let job = wait_state(&db.pool, id, JobState::DeadLetter).await;
    assert_eq!(job.dead_letter_reason.as_deref(), Some("expired"));
    let recorded = deliveries(&db.pool, None).await;
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].status, Status::Expired);
    // Past the stall, the relay answers again: nothing may arrive late.
    tokio::time::sleep(Duration::from_secs(5)).await;
    running.shutdown().await;
    assert_eq!(
        sink.messages().len(),
        0,
        "an expired recovery email never arrives"
    );
}

#[tokio::test]
async fn cyrillic_subject_name_and_bodies_arrive_intact() {
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    let running = start(&db.pool, config_for(&sink, reset_templates()));
    let job = Recovery {
        locale: Some("ru-RU".to_owned()),
        ..recovery(
            "Анна Каренина <anna@example.com>",
            serde_json::json!({"name": "Анна", "link": "https://x/r/2"}),
        )
    };
    let id = enqueue(&db.pool, &job, Some(Duration::from_secs(60))).await;
    wait_state(&db.pool, id, JobState::Completed).await;
    running.shutdown().await;
    let messages = sink.messages();
    assert_eq!(messages.len(), 1);
    let message = parse(&messages[0].data);
    assert_eq!(message.subject(), Some("Восстановление пароля для Анна"));
    // Transactional: no unsubscribe headers.
    assert!(message.header_raw("List-Unsubscribe").is_none());
    assert!(message.header_raw("List-Unsubscribe-Post").is_none());
    let to = message.to().unwrap().first().unwrap();
    assert_eq!(to.name(), Some("Анна Каренина"));
    assert_eq!(to.address(), Some("anna@example.com"));
    assert_eq!(
        message.body_text(0).unwrap().trim(),
        "Здравствуйте, Анна! Ссылка: https://x/r/2. Ёлка, щука, «кавычки»."
    );
    assert!(message.body_html(0).unwrap().contains("<b>Анна</b>"));
    let recorded = deliveries(&db.pool, None).await;
    assert_eq!(recorded[0].locale.as_deref(), Some("ru-RU"));
    assert_eq!(
        message.message_id(),
        Some(recorded[0].message_id.trim_matches(['<', '>']))
    );
}

#[tokio::test]
async fn a_missing_variable_dead_letters_the_delivery_with_reason_template_and_sends_nothing() {
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    let running = start(&db.pool, config_for(&sink, reset_templates()));
    let id = enqueue(
        &db.pool,
        &recovery("ann@example.com", serde_json::json!({})),
        None,
    )
    .await;
    let job = wait_state(&db.pool, id, JobState::DeadLetter).await;
    running.shutdown().await;
    assert_eq!(job.dead_letter_reason.as_deref(), Some("template"));
    // The job's own error says what the delivery says: which variable, in which file.
    let error = job.last_error.as_deref().unwrap();
    assert!(
        error.starts_with("template: ") && error.contains("missing variables: link"),
        "{error}"
    );
    assert_eq!(job.attempt, 1, "never retried");
    let recorded = deliveries(&db.pool, None).await;
    assert_eq!(recorded[0].status, Status::DeadLetter);
    assert!(
        recorded[0].last_error.as_deref().unwrap().contains("link"),
        "{:?}",
        recorded[0].last_error
    );
    assert_eq!(sink.messages().len(), 0);
}

#[tokio::test]
async fn a_second_job_with_the_same_idempotency_key_sends_nothing() {
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    let running = start(&db.pool, config_for(&sink, reset_templates()));
    let job = Recovery {
        idempotency_key: Some("reset:42".to_owned()),
        ..recovery("ann@example.com", serde_json::json!({"link": "l"}))
    };
    let first = enqueue(&db.pool, &job, None).await;
    wait_state(&db.pool, first, JobState::Completed).await;
    let second = enqueue(&db.pool, &job, None).await;
    wait_state(&db.pool, second, JobState::Completed).await;
    running.shutdown().await;
    assert_eq!(sink.messages().len(), 1);
    assert_eq!(deliveries(&db.pool, None).await.len(), 1);
}

/// A key whose delivery the relay refused for good (550): the second job sends nothing
/// and says so, naming the delivery, its job and its status, instead of completing as if
/// its email had gone.
#[tokio::test]
async fn a_second_job_with_the_key_of_a_refused_email_is_dead_lettered_naming_the_first() {
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    sink.reply_to("bob@example.com", Some("550 5.1.1 no such user"));
    let running = start(&db.pool, config_for(&sink, reset_templates()));
    let job = Recovery {
        idempotency_key: Some("reset:bob".to_owned()),
        ..recovery("bob@example.com", serde_json::json!({"link": "l"}))
    };
    let first = enqueue(&db.pool, &job, None).await;
    eventually(
        Duration::from_secs(30),
        "the first delivery is failed",
        || async {
            deliveries(&db.pool, None)
                .await
                .first()
                .is_some_and(|d| d.status == Status::Failed)
        },
    )
    .await;
    let held = deliveries(&db.pool, None).await.remove(0);
    // The first job does not complete as if its email had gone.
    let refused = wait_state(&db.pool, first, JobState::DeadLetter).await;
    assert_eq!(
        refused.dead_letter_reason.as_deref(),
        Some("smtp_permanent")
    );
    assert!(
        refused
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("550 5.1.1 no such user"),
        "{:?}",
        refused.last_error
    );
    let second = enqueue(&db.pool, &job, None).await;
    let dead = wait_state(&db.pool, second, JobState::DeadLetter).await;
    running.shutdown().await;
    assert_eq!(
        dead.dead_letter_reason.as_deref(),
        Some("duplicate_of_failed")
    );
    let error = dead.last_error.unwrap_or_default();
    for part in [
        held.id.to_string(),
        first.to_string(),
        "failed".to_owned(),
        "550".to_owned(),
    ] {
        assert!(error.contains(&part), "{part:?} missing from {error:?}");
    }
    assert_eq!(sink.messages().len(), 0);
    assert_eq!(deliveries(&db.pool, None).await.len(), 1);
}

/// A key whose delivery ran out of ladder (the relay deferred it every time): the second
/// job is dead-lettered and says which job to replay; that replay sends the email, and the
/// second job replayed after it completes without sending it again.
#[tokio::test]
async fn a_second_job_with_the_key_of_a_dead_lettered_email_points_at_the_replay_that_sends_it() {
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    sink.reply_to("cy@example.com", Some("451 4.3.0 try again later"));
    let running = start(&db.pool, config_for(&sink, reset_templates()));
    let job = Recovery {
        idempotency_key: Some("reset:cy".to_owned()),
        ..recovery("cy@example.com", serde_json::json!({"link": "l"}))
    };
    let first = enqueue(&db.pool, &job, None).await;
    let first_dead = wait_state(&db.pool, first, JobState::DeadLetter).await;
    assert_eq!(
        first_dead.dead_letter_reason.as_deref(),
        Some("smtp_temporary")
    );
    let held = deliveries(&db.pool, None).await.remove(0);
    assert_eq!(held.status, Status::DeadLetter);

    let second = enqueue(&db.pool, &job, None).await;
    let dead = wait_state(&db.pool, second, JobState::DeadLetter).await;
    assert_eq!(
        dead.dead_letter_reason.as_deref(),
        Some("duplicate_of_failed")
    );
    let error = dead.last_error.unwrap_or_default();
    for part in [
        held.id.to_string(),
        first.to_string(),
        "dead_letter".to_owned(),
        format!("replay job {first}"),
    ] {
        assert!(error.contains(&part), "{part:?} missing from {error:?}");
    }
    assert_eq!(sink.messages().len(), 0);

    // What the error says to do: replay the job that holds the key.
    sink.reply_to("cy@example.com", None);
    docket_queue::admin::replay(&db.pool, first).await.unwrap();
    wait_state(&db.pool, first, JobState::Completed).await;
    docket_queue::admin::replay(&db.pool, second).await.unwrap();
    wait_state(&db.pool, second, JobState::Completed).await;
    running.shutdown().await;
    assert_eq!(sink.count_for("cy@example.com"), 1);
    assert_eq!(deliveries(&db.pool, None).await.len(), 1);
}

/// A key whose delivery waits for a retry its job will never make (the job was cancelled):
/// the second job does not complete on the promise that the other job sends it.
#[tokio::test]
async fn a_second_job_with_the_key_of_an_email_whose_job_was_cancelled_is_dead_lettered() {
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    sink.reply_to("dee@example.com", Some("451 4.3.0 try again later"));
    let running = start(&db.pool, config_for(&sink, reset_templates()));
    let job = Recovery {
        idempotency_key: Some("reset:dee".to_owned()),
        ..recovery("dee@example.com", serde_json::json!({"link": "l"}))
    };
    let first = enqueue(&db.pool, &job, None).await;
    eventually(
        Duration::from_secs(30),
        "the relay deferred it once",
        || async { sink.attempts_for("dee@example.com") >= 1 },
    )
    .await;
    docket_queue::admin::cancel(&db.pool, first).await.unwrap();
    wait_state(&db.pool, first, JobState::Cancelled).await;
    // Its exchange over, the delivery waits for a retry nobody will make.
    eventually(
        Duration::from_secs(30),
        "the delivery is queued",
        || async { deliveries(&db.pool, None).await[0].status == Status::Queued },
    )
    .await;
    let held = deliveries(&db.pool, None).await.remove(0);

    let second = enqueue(&db.pool, &job, None).await;
    let dead = wait_state(&db.pool, second, JobState::DeadLetter).await;
    running.shutdown().await;
    assert_eq!(
        dead.dead_letter_reason.as_deref(),
        Some("duplicate_of_failed")
    );
    let error = dead.last_error.unwrap_or_default();
    for part in [
        held.id.to_string(),
        "queued".to_owned(),
        format!("replay job {first}"),
    ] {
        assert!(error.contains(&part), "{part:?} missing from {error:?}");
    }
    assert_eq!(sink.messages().len(), 0);
}

#[tokio::test]
async fn stub_mode_renders_records_suppressed_and_completes() {
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    let mut config = config_for(&sink, reset_templates());
    config.mode = Mode::Stub;
    let running = start(&db.pool, config);
    let id = enqueue(
        &db.pool,
        &recovery("ann@example.com", serde_json::json!({"link": "l"})),
        None,
    )
    .await;
    wait_state(&db.pool, id, JobState::Completed).await;
    running.shutdown().await;
    let recorded = deliveries(&db.pool, None).await;
    assert_eq!(
        (recorded[0].status, recorded[0].suppressed_reason.as_deref()),
        (Status::Suppressed, Some("stub"))
    );
    assert_eq!(sink.connections(), 0, "nothing leaves in stub mode");
}

#[tokio::test]
async fn a_suppressed_address_is_never_sent_to() {
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    delivery::suppress(&db.pool, "Ann <ANN@example.com>", "manual")
        .await
        .unwrap();
    let running = start(&db.pool, config_for(&sink, reset_templates()));
    let id = enqueue(
        &db.pool,
        &recovery("ann@example.com", serde_json::json!({"link": "l"})),
        None,
    )
    .await;
    wait_state(&db.pool, id, JobState::Completed).await;
    running.shutdown().await;
    assert_eq!(sink.attempts_for("ann@example.com"), 0);
    let recorded = deliveries(&db.pool, None).await;
    assert_eq!(
        (recorded[0].status, recorded[0].suppressed_reason.as_deref()),
        (Status::Suppressed, Some("list"))
    );
}

/// An unsubscribe is from campaigns: the address still gets its password reset (a reset the
/// user asked for, never marketing). A refusal recorded later (the relay's 5.1.1) widens
/// the entry, and then nothing more is sent to it.
#[tokio::test]
async fn an_address_unsubscribed_from_campaigns_still_gets_its_password_reset() {
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    // What the one-click unsubscribe route records.
    delivery::suppress(&db.pool, "ann@example.com", "unsubscribed")
        .await
        .unwrap();
    let running = start(&db.pool, config_for(&sink, reset_templates()));
    let first = enqueue(
        &db.pool,
        &recovery("ann@example.com", serde_json::json!({"link": "l"})),
        None,
    )
    .await;
    wait_state(&db.pool, first, JobState::Completed).await;
    assert_eq!(
        sink.attempts_for("ann@example.com"),
        1,
        "the reset was sent"
    );

    delivery::suppress(&db.pool, "ann@example.com", "smtp: 550 5.1.1 no such user")
        .await
        .unwrap();
    let second = enqueue(
        &db.pool,
        &recovery("ann@example.com", serde_json::json!({"link": "m"})),
        None,
    )
    .await;
    wait_state(&db.pool, second, JobState::Completed).await;
    running.shutdown().await;
    assert_eq!(
        sink.attempts_for("ann@example.com"),
        1,
        "nothing more is sent to a refused address"
    );
    let listed = delivery::suppressions(&db.pool, None).await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|s| (s.address.as_str(), s.source.as_str()))
            .collect::<Vec<_>>(),
        [("ann@example.com", "smtp")]
    );
}

/// Issue 21, case 6: a recovery email held past its job's expiry (here by a configuration
/// fault: the relay wants authentication, which holds every email without spending its
/// attempt) is dead-lettered `expired` by the expiry sweep, since no claim hands out an
/// expired job; its delivery used to stay `queued` with 0 attempts forever. It is
/// `expired` now, in the sweep's own transaction, and nothing is sent late.
#[tokio::test]
async fn a_recovery_email_whose_job_expires_while_held_has_its_delivery_expired() {
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    sink.reply_to_all(Some("530 5.7.0 authentication required"));
    let mut config = config_for(&sink, reset_templates());
    // The hold lasts the ladder's first step: far past the link's lifetime.
    config.retry_ladder = vec![Duration::from_secs(30)];
    let running = start(&db.pool, config);
    let id = enqueue(
        &db.pool,
        &recovery(
            "ann@example.com",
            serde_json::json!({"link": "https://x/r/9"}),
        ),
        Some(Duration::from_secs(3)),
    )
    .await;
    let job = wait_state(&db.pool, id, JobState::DeadLetter).await;
    sink.reply_to_all(None);
    running.shutdown().await;
    assert_eq!(job.dead_letter_reason.as_deref(), Some("expired"));
    let recorded = deliveries(&db.pool, None).await;
    assert_eq!(
        recorded.len(),
        1,
        "the job ran once and recorded its delivery"
    );
    assert_eq!(
        (recorded[0].status, recorded[0].attempts),
        (Status::Expired, 0),
        "{:?}",
        recorded[0]
    );
    assert_eq!(sink.messages().len(), 0, "never sent late");
}
