//! The transport against a real server: STARTTLS with a self-signed certificate, AUTH, and
//! connections the server closes while idle.

use std::time::Duration;

use docket_mail::config::SmtpUrl;
use docket_mail::delivery::Status;
use docket_mail::jobs::{Recovery, RECOVERY_QUEUE};
use docket_queue::health::{Finding, Probe, Verdict};
use docket_queue::{JobState, NewJob};
use docket_testkit::{eventually, SelfSigned, SmtpSink, TestDb};
use sqlx::PgPool;

use crate::{config_for, deliveries, start, templates};

fn hello() -> std::path::PathBuf {
    templates(&[
        ("hello/subject.txt", "Hello"),
        ("hello/body.txt", "Hello {{ who }}"),
    ])
}

async fn enqueue(pool: &PgPool, to: &str) -> docket_queue::JobId {
    let job = Recovery {
        to: to.to_owned(),
        template: "hello".to_owned(),
        vars: serde_json::json!({"who": "you"}),
        locale: None,
        idempotency_key: None,
    };
    docket_queue::enqueue(pool, &NewJob::typed(&job).unwrap().queue(RECOVERY_QUEUE))
        .await
        .unwrap()
}

async fn fault(pool: &PgPool) -> Option<(chrono::DateTime<chrono::Utc>, String)> {
    docket_mail::health::relay_fault(pool)
        .await
        .unwrap()
        .map(|fault| (fault.at, fault.error))
}

#[tokio::test]
async fn starttls_with_a_trusted_self_signed_certificate_and_auth_with_a_wrong_then_the_right_password(
) {
    let db = TestDb::new().await;
    let cert = SelfSigned::generate();
    let sink = SmtpSink::builder()
        .starttls(cert.clone())
        .auth("docket", "right-password")
        .start()
        .await;
    let port = sink.addr().port();
    let with = |password: &str| {
        let mut config = config_for(&sink, hello());
        config.mode = docket_mail::config::Mode::Smtp(
            SmtpUrl::parse(&format!(
                "smtp://docket:{password}@localhost:{port}?tls=required"
            ))
            .unwrap(),
        );
        config.ca_file = Some(cert.cert.clone());
        config.retry_ladder = vec![Duration::from_millis(300)];
        config
    };

    // A wrong password: a configuration fault, retried without spending the attempt.
    let running = start(&db.pool, with("wrong-password"));
    let id = enqueue(&db.pool, "ann@example.com").await;
    eventually(Duration::from_secs(20), "the fault is recorded", || async {
        fault(&db.pool).await.is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    running.shutdown().await;
    let (_, what) = fault(&db.pool).await.unwrap();
    assert!(what.contains("535"), "{what}");
    assert!(
        !what.contains("wrong-password"),
        "credentials never reach a record: {what}"
    );
    let job = docket_queue::admin::show(&db.pool, id).await.unwrap();
    assert!(
        matches!(job.state, JobState::Pending | JobState::Retrying),
        "{job:?}"
    );
    assert_eq!(job.attempt, 0, "the job's attempts are not spent: {job:?}");
    let recorded = deliveries(&db.pool, None).await;
    assert_eq!(
        (recorded[0].status, recorded[0].attempts),
        (Status::Queued, 0)
    );
    assert_eq!(sink.messages().len(), 0);

    // The right one: sent over TLS, and the fault is cleared.
    let running = start(&db.pool, with("right-password"));
    eventually(Duration::from_secs(20), "the job completes", || async {
        docket_queue::admin::show(&db.pool, id).await.unwrap().state == JobState::Completed
    })
    .await;
    running.shutdown().await;
    assert_eq!(sink.count_for("ann@example.com"), 1);
    assert!(
        fault(&db.pool).await.is_none(),
        "the fault is cleared by a message that went through"
    );
}

#[tokio::test]
async fn a_pooled_connection_the_server_closed_while_idle_costs_no_attempt() {
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    let running = start(&db.pool, config_for(&sink, hello()));
    let first = enqueue(&db.pool, "one@example.com").await;
    eventually(Duration::from_secs(20), "the first message", || async {
        sink.messages().len() == 1
    })
    .await;
    sink.close_idle_connections();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = enqueue(&db.pool, "two@example.com").await;
    eventually(Duration::from_secs(20), "the second message", || async {
        sink.messages().len() == 2
    })
    .await;
    running.shutdown().await;
    for id in [first, second] {
        assert_eq!(
            docket_queue::admin::show(&db.pool, id).await.unwrap().state,
            JobState::Completed
        );
    }
    let recorded = deliveries(&db.pool, None).await;
    assert!(
        recorded
            .iter()
            .all(|d| d.status == Status::Sent && d.attempts == 1),
        "{recorded:?}"
    );
    assert!(
        sink.connections() >= 2,
        "a fresh connection replaced the closed one"
    );
}

#[tokio::test]
async fn a_relay_that_stalls_is_cut_off_at_the_timeout_and_the_message_retried() {
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    sink.stall_for(Duration::from_secs(4));
    let mut config = config_for(&sink, hello());
    config.timeout = Duration::from_secs(1);
    config.retry_ladder = vec![Duration::from_secs(1); 5];
    let running = start(&db.pool, config);
    let id = enqueue(&db.pool, "slow@example.com").await;
    eventually(Duration::from_secs(30), "the job completes", || async {
        docket_queue::admin::show(&db.pool, id).await.unwrap().state == JobState::Completed
    })
    .await;
    running.shutdown().await;
    let recorded = deliveries(&db.pool, None).await;
    assert_eq!(recorded[0].status, Status::Sent);
    assert!(
        recorded[0].attempts >= 2,
        "the stalled attempt was cut off: {:?}",
        recorded[0]
    );
    assert!(
        recorded[0]
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("timed out"),
        "{:?}",
        recorded[0]
    );
    assert_eq!(sink.count_for("slow@example.com"), 1);
}

/// The `mail` check as every surface shows it, for mail sent as `config` says.
async fn mail_check(pool: &PgPool, config: &docket_mail::config::MailConfig) -> Finding {
    docket_mail::health::RelayProbe::new(&config.mode)
        .probe(Some(pool))
        .await
}

#[tokio::test]
async fn a_relay_that_refuses_connections_degrades_the_mail_check_until_a_message_goes_through() {
    let db = TestDb::new().await;
    // A port nobody listens on: the relay is down.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let sink = SmtpSink::start().await;
    let mut down = config_for(&sink, hello());
    down.mode = docket_mail::config::Mode::Smtp(
        SmtpUrl::parse(&format!("smtp://127.0.0.1:{port}")).unwrap(),
    );
    down.retry_ladder = vec![Duration::from_millis(300); 20];

    // Nothing sent yet: the check does not claim the relay takes our mail.
    let before = mail_check(&db.pool, &down).await;
    assert_eq!(before.verdict, Verdict::Ok, "{before:?}");
    assert_eq!(
        before.detail, "nothing sent yet: the relay has not been tried",
        "{before:?}"
    );

    let running = start(&db.pool, down.clone());
    let id = enqueue(&db.pool, "ann@example.com").await;
    eventually(
        Duration::from_secs(20),
        "two failed attempts degrade the mail check",
        || async {
            let finding = mail_check(&db.pool, &down).await;
            finding.verdict == Verdict::Degraded && finding.detail.contains("2 attempts failed")
        },
    )
    .await;
    running.shutdown().await;
    let finding = mail_check(&db.pool, &down).await;
    let expected = format!("cannot reach the relay at 127.0.0.1:{port} since ");
    assert!(finding.detail.starts_with(&expected), "{finding:?}");
    assert!(finding.detail.contains("refused"), "{finding:?}");
    assert!(
        finding
            .advice
            .is_some_and(|a| a.contains("does not answer")),
        "{finding:?}"
    );

    // The relay is back: the next message that goes through clears it.
    let up = config_for(&sink, hello());
    let running = start(&db.pool, up.clone());
    eventually(Duration::from_secs(20), "the job completes", || async {
        docket_queue::admin::show(&db.pool, id).await.unwrap().state == JobState::Completed
    })
    .await;
    running.shutdown().await;
    let finding = mail_check(&db.pool, &up).await;
    assert_eq!(finding.verdict, Verdict::Ok, "{finding:?}");
    assert!(
        finding.detail.starts_with("the relay took a message at "),
        "{finding:?}"
    );
}
