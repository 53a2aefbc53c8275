//! Campaigns: exactly one message per recipient, the ladder, bounces and the suppression
//! list.

use std::collections::HashMap;
use std::time::Duration;

use docket_mail::campaign::{self, NewCampaign, Recipient};
use docket_mail::delivery::{self, DeliveryFilter, Status};
use docket_mail::template::Catalog;
use docket_testkit::{eventually, SmtpSink, TestDb};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{config_for, deliveries, parse, start, templates};

fn newsletter() -> std::path::PathBuf {
    templates(&[
        ("news/subject.txt", "News for {{ name }}"),
        (
            "news/body.txt",
            "Hello {{ name }}, your code is {{ code }}.",
        ),
    ])
}

fn recipients(n: usize, domain: &str) -> Vec<Recipient> {
    (0..n)
        .map(|i| Recipient {
            to: format!("user{i}@{domain}"),
            name: Some(format!("User {i}")),
            locale: None,
            vars: serde_json::json!({ "code": format!("C{i}") }),
        })
        .collect()
}

async fn create(
    pool: &PgPool,
    dir: &std::path::Path,
    name: &str,
    rows: Vec<Recipient>,
    batch_size: usize,
) -> Uuid {
    let catalog = Catalog::load(dir).unwrap();
    let from = "Docket <docket@example.com>".parse().unwrap();
    let new = NewCampaign {
        batch_size,
        ..NewCampaign::new(name, "news", rows)
    };
    campaign::create(pool, &catalog, &from, &new).await.unwrap()
}

async fn wait_finished(pool: &PgPool, id: Uuid, timeout: Duration) -> campaign::CampaignStatus {
    eventually(timeout, "the campaign finishes", || async {
        campaign::show(pool, id).await.unwrap().state == "finished"
    })
    .await;
    campaign::show(pool, id).await.unwrap()
}

#[tokio::test]
async fn a_campaign_of_1000_in_batches_of_100_reaches_each_recipient_once_with_its_own_text() {
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    let dir = newsletter();
    let id = create(
        &db.pool,
        &dir,
        "november",
        recipients(1000, "example.com"),
        100,
    )
    .await;
    let batch_jobs: i64 =
        sqlx::query_scalar("select count(*) from docket.jobs where kind = 'mail.campaign_batch'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(batch_jobs, 10);
    let running = start(&db.pool, config_for(&sink, dir));
    let status = wait_finished(&db.pool, id, Duration::from_secs(120)).await;
    running.shutdown().await;

    assert_eq!(
        (status.total, status.sent, status.pending),
        (1000, 1000, 0),
        "{status:?}"
    );
    assert_eq!(
        status.suppressed + status.failed + status.dead_letter + status.expired,
        0
    );
    let messages = sink.messages();
    assert_eq!(messages.len(), 1000);
    let mut per_recipient: HashMap<String, usize> = HashMap::new();
    for message in &messages {
        let to = &message.to[0];
        *per_recipient.entry(to.clone()).or_default() += 1;
        let i: usize = to
            .trim_start_matches("user")
            .split('@')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let parsed = parse(&message.data);
        assert_eq!(
            parsed.subject(),
            Some(format!("News for User {i}").as_str())
        );
        let body = parsed.body_text(0).unwrap();
        assert_eq!(body.trim(), format!("Hello User {i}, your code is C{i}."));
    }
    assert_eq!(per_recipient.len(), 1000);
    assert!(per_recipient.values().all(|n| *n == 1));
}

#[tokio::test]
async fn temporary_failures_are_retried_on_the_ladder_and_delivered_once() {
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    sink.reply_to_all(Some("451 4.3.0 Temporary lookup failure"));
    let dir = newsletter();
    let id = create(
        &db.pool,
        &dir,
        "greylisted",
        recipients(5, "example.net"),
        2,
    )
    .await;
    let running = start(&db.pool, config_for(&sink, dir));
    eventually(
        Duration::from_secs(30),
        "every recipient refused twice",
        || async { (0..5).all(|i| sink.attempts_for(&format!("user{i}@example.net")) >= 2) },
    )
    .await;
    sink.reply_to_all(None);
    let status = wait_finished(&db.pool, id, Duration::from_secs(30)).await;
    running.shutdown().await;

    assert_eq!((status.sent, status.dead_letter), (5, 0), "{status:?}");
    for i in 0..5 {
        assert_eq!(sink.count_for(&format!("user{i}@example.net")), 1);
    }
    let deliveries = deliveries(&db.pool, Some(id)).await;
    for d in deliveries {
        assert_eq!(d.status, Status::Sent);
        assert!(d.attempts >= 3, "two 451s and the success: {d:?}");
        assert_eq!(d.smtp_code, Some(250));
    }
}

#[tokio::test]
async fn temporary_failures_past_the_ladder_are_dead_lettered() {
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    sink.reply_to("user0@example.org", Some("451 4.3.0 try again later"));
    let dir = newsletter();
    let id = create(
        &db.pool,
        &dir,
        "exhausted",
        recipients(2, "example.org"),
        10,
    )
    .await;
    let mut config = config_for(&sink, dir);
    config.retry_ladder = vec![Duration::from_millis(200); 2];
    let running = start(&db.pool, config);
    let status = wait_finished(&db.pool, id, Duration::from_secs(30)).await;
    running.shutdown().await;
    assert_eq!((status.sent, status.dead_letter), (1, 1), "{status:?}");
    assert_eq!(
        sink.attempts_for("user0@example.org"),
        3,
        "one attempt and one per ladder step"
    );
}

#[tokio::test]
async fn no_such_user_fails_the_recipient_suppresses_it_and_a_later_campaign_skips_it() {
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    sink.reply_to(
        "user1@example.com",
        Some("550 5.1.1 The email account that you tried to reach does not exist"),
    );
    let dir = newsletter();
    let first = create(&db.pool, &dir, "first", recipients(3, "example.com"), 100).await;
    let running = start(&db.pool, config_for(&sink, dir.clone()));
    let status = wait_finished(&db.pool, first, Duration::from_secs(30)).await;
    assert_eq!((status.sent, status.failed), (2, 1), "{status:?}");
    let suppressed = delivery::suppressions(&db.pool, None).await.unwrap();
    assert_eq!(suppressed.len(), 1);
    assert_eq!(suppressed[0].address, "user1@example.com");
    assert!(
        suppressed[0].reason.contains("5.1.1"),
        "{:?}",
        suppressed[0]
    );

    let second = create(&db.pool, &dir, "second", recipients(3, "example.com"), 100).await;
    let status = wait_finished(&db.pool, second, Duration::from_secs(30)).await;
    running.shutdown().await;
    assert_eq!(
        (status.sent, status.suppressed, status.failed),
        (2, 1, 0),
        "{status:?}"
    );
    assert_eq!(
        sink.attempts_for("user1@example.com"),
        1,
        "never tried again"
    );
    let skipped = delivery::list(
        &db.pool,
        &DeliveryFilter {
            campaign_id: Some(second),
            status: Some(Status::Suppressed),
            limit: 10,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(skipped[0].suppressed_reason.as_deref(), Some("list"));
}

#[tokio::test]
async fn a_paused_campaign_sends_nothing_until_resumed() {
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    let dir = newsletter();
    let id = create(&db.pool, &dir, "paused", recipients(3, "example.com"), 1).await;
    campaign::pause(&db.pool, id).await.unwrap();
    assert_eq!(campaign::show(&db.pool, id).await.unwrap().state, "paused");
    let running = start(&db.pool, config_for(&sink, dir));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sink.messages().len(), 0, "nothing leaves while paused");
    campaign::resume(&db.pool, id).await.unwrap();
    let status = wait_finished(&db.pool, id, Duration::from_secs(30)).await;
    running.shutdown().await;
    assert_eq!(status.sent, 3);
}

/// Cancelling makes the unsent recipients `cancelled` (final, not "to go", never sent);
/// a control that means nothing in the campaign's state is refused with the reason.
#[tokio::test]
async fn a_cancel_cancels_the_unsent_and_wrong_state_controls_are_refused() {
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    let dir = newsletter();
    let id = create(&db.pool, &dir, "cancelled", recipients(4, "example.com"), 2).await;
    assert!(campaign::pause(&db.pool, id).await.unwrap());
    assert!(
        !campaign::pause(&db.pool, id).await.unwrap(),
        "paused already"
    );
    assert!(campaign::cancel(&db.pool, id).await.unwrap());
    let status = campaign::show(&db.pool, id).await.unwrap();
    assert_eq!(
        (status.state.as_str(), status.cancelled, status.pending),
        ("cancelled", 4, 0)
    );
    let listed = delivery::list(
        &db.pool,
        &DeliveryFilter {
            campaign_id: Some(id),
            limit: 10,
            ..DeliveryFilter::default()
        },
    )
    .await
    .unwrap();
    assert!(
        listed.iter().all(|d| d.status == Status::Cancelled),
        "{listed:?}"
    );
    for refused in [
        campaign::resume(&db.pool, id).await,
        campaign::pause(&db.pool, id).await,
    ] {
        let err = refused.unwrap_err().to_string();
        assert!(err.contains("is cancelled: it cannot be"), "{err}");
    }
    assert!(
        !campaign::cancel(&db.pool, id).await.unwrap(),
        "cancelled already"
    );
    // Its batch jobs end without sending anything.
    let running = start(&db.pool, config_for(&sink, dir.clone()));
    eventually(Duration::from_secs(30), "the batch jobs end", || async {
        let open: i64 = sqlx::query_scalar(
            "select count(*) from docket.jobs where kind = 'mail.campaign_batch' \
             and state not in ('completed', 'cancelled', 'dead_letter')",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        open == 0
    })
    .await;
    assert_eq!(
        sink.messages().len(),
        0,
        "nothing of a cancelled campaign leaves"
    );

    // A finished campaign: nothing to pause, resume or cancel.
    let done = create(&db.pool, &dir, "done", recipients(2, "example.com"), 2).await;
    wait_finished(&db.pool, done, Duration::from_secs(30)).await;
    running.shutdown().await;
    for refused in [
        campaign::pause(&db.pool, done).await,
        campaign::resume(&db.pool, done).await,
        campaign::cancel(&db.pool, done).await,
    ] {
        let err = refused.unwrap_err().to_string();
        assert!(err.contains("is finished"), "{err}");
    }
    assert!(matches!(
        campaign::pause(&db.pool, Uuid::now_v7()).await,
        Err(docket_mail::MailError::CampaignNotFound(_))
    ));
}

#[tokio::test]
async fn the_relay_rate_holds_over_two_processes_together() {
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    let dir = newsletter();
    let id = create(&db.pool, &dir, "limited", recipients(30, "example.com"), 5).await;
    let mut config = config_for(&sink, dir);
    config.rate = Some("5/s".parse().unwrap());
    // Two runtimes with pools of their own: two processes sharing one bucket.
    let other_pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let started = std::time::Instant::now();
    let first = start(&db.pool, config.clone());
    let second = start(&other_pool, config);
    let status = wait_finished(&db.pool, id, Duration::from_secs(60)).await;
    first.shutdown().await;
    second.shutdown().await;
    assert_eq!(status.sent, 30);
    // A full bucket (one second's worth, 5) goes at once; the other 25 at 5 a second.
    let last = sink.messages().iter().map(|m| m.at).max().unwrap();
    let took = last.duration_since(started);
    assert!(
        took >= Duration::from_millis(4800),
        "30 messages at 5/s took only {took:?}"
    );
}

#[tokio::test]
async fn throttling_replies_hold_the_sender_without_spending_attempts() {
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    sink.reply_to_all(Some("421 4.7.0 Try again later, closing connection"));
    let dir = newsletter();
    let id = create(
        &db.pool,
        &dir,
        "throttled",
        recipients(3, "example.com"),
        10,
    )
    .await;
    let mut config = config_for(&sink, dir);
    config.rate = Some("50/s".parse().unwrap());
    config.retry_ladder = vec![Duration::from_millis(300)];
    let running = start(&db.pool, config);
    eventually(
        Duration::from_secs(30),
        "the relay refused three times",
        || async { sink.attempts_for("user0@example.com") >= 3 },
    )
    .await;
    sink.reply_to_all(None);
    let status = wait_finished(&db.pool, id, Duration::from_secs(30)).await;
    running.shutdown().await;
    assert_eq!(
        (status.sent, status.dead_letter),
        (3, 0),
        "a one-step ladder would have run out: {status:?}"
    );
    let deliveries = deliveries(&db.pool, Some(id)).await;
    assert!(
        deliveries.iter().all(|d| d.attempts == 1),
        "only the accepted attempt counts: {deliveries:?}"
    );
}

#[tokio::test]
async fn a_recovery_email_does_not_wait_for_a_connection_behind_the_campaign() {
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    for i in 0..3 {
        sink.slow_recipient(&format!("user{i}@slow.example"), Duration::from_secs(4));
    }
    let dir = templates(&[
        ("news/subject.txt", "News for {{ name }}"),
        (
            "news/body.txt",
            "Hello {{ name }}, your code is {{ code }}.",
        ),
        ("reset/subject.txt", "Reset"),
        ("reset/body.txt", "Reset."),
    ]);
    let id = create(&db.pool, &dir, "slow", recipients(3, "slow.example"), 1).await;
    let mut config = config_for(&sink, dir);
    config.pool_size = 1;
    let running = start(&db.pool, config);
    eventually(
        Duration::from_secs(10),
        "the campaign holds the only pooled connection",
        || async { (0..3).any(|i| sink.attempts_for(&format!("user{i}@slow.example")) > 0) },
    )
    .await;
    let job = docket_mail::jobs::Recovery {
        to: "ann@example.com".into(),
        template: "reset".into(),
        vars: serde_json::json!({}),
        locale: None,
        idempotency_key: None,
    };
    let new = docket_queue::NewJob::typed(&job).unwrap().queue("recovery");
    docket_queue::enqueue(&db.pool, &new).await.unwrap();
    eventually(
        Duration::from_secs(10),
        "the recovery email arrives",
        || async { sink.count_for("ann@example.com") == 1 },
    )
    .await;
    let first = sink.messages().into_iter().next().unwrap();
    assert_eq!(
        first.to,
        ["ann@example.com"],
        "it went ahead of the campaign's stalled message"
    );
    wait_finished(&db.pool, id, Duration::from_secs(30)).await;
    running.shutdown().await;
}

/// Each of a batch's job rows with its row version (`xmin`): any write to a row changes it.
async fn row_versions(pool: &PgPool, batch: Uuid) -> Vec<(Uuid, String)> {
    sqlx::query_as("select id, xmin::text from docket.jobs where batch_id = $1 order by id")
        .bind(batch)
        .fetch_all(pool)
        .await
        .unwrap()
}

/// Issue 21, case 5: a paused campaign's batch jobs used to be claimed and snoozed every
/// 5 s each (1,000 of them made 6,306 row updates in 20 s). Now they are parked: a worker
/// running beside them writes none of their rows, and a resume sends them at once.
#[tokio::test]
async fn a_paused_campaigns_jobs_are_not_written_while_a_worker_runs_and_resume_sends_them() {
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    let dir = newsletter();
    let id = create(&db.pool, &dir, "parked", recipients(6, "example.com"), 1).await;
    campaign::pause(&db.pool, id).await.unwrap();
    let batch = campaign::show(&db.pool, id)
        .await
        .unwrap()
        .batch_id
        .unwrap();
    let before = row_versions(&db.pool, batch).await;
    assert_eq!(before.len(), 6);
    let running = start(&db.pool, config_for(&sink, dir));
    // What is asserted is that nothing happens, so the worker gets a while to do it: with
    // a 200 ms poll it would have claimed every job many times over.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        row_versions(&db.pool, batch).await,
        before,
        "no job row of a paused campaign is claimed, snoozed or otherwise written"
    );
    assert_eq!(sink.messages().len(), 0, "nothing leaves while paused");
    campaign::resume(&db.pool, id).await.unwrap();
    let status = wait_finished(&db.pool, id, Duration::from_secs(20)).await;
    running.shutdown().await;
    assert_eq!(status.sent, 6);
}

/// Claims up to `limit` jobs of the `mail` queue for `worker`, as a producer would.
async fn claim_mail(pool: &PgPool, worker: Uuid, limit: u32) -> Vec<docket_queue::Job> {
    let request = docket_queue::claim::ClaimRequest {
        queue: "mail",
        kinds: None,
        worker_id: worker,
        token: docket_queue::claim::ClaimRequest::new_token(),
        limit,
        now: None,
    };
    docket_queue::claim(pool, &request).await.unwrap().jobs
}

/// Writes the snooze a batch job returns when it finds its campaign paused.
async fn snooze(pool: &PgPool, worker: Uuid, job: &docket_queue::Job) {
    let applied = docket_queue::apply_outcomes(
        pool,
        worker,
        &[docket_queue::AttemptOutcome {
            id: job.id,
            attempt: job.attempt,
            token: job.lease_token.unwrap(),
            outcome: docket_queue::Outcome::Snooze {
                delay: Duration::ZERO,
            },
        }],
        None,
    )
    .await
    .unwrap();
    assert!(applied.fenced.is_empty());
}

/// Whether the job waits far in the future (parked) rather than being due.
async fn parked(pool: &PgPool, job: docket_queue::JobId) -> bool {
    let job = docket_queue::admin::show(pool, job).await.unwrap();
    assert!(matches!(
        job.state,
        docket_queue::JobState::Pending | docket_queue::JobState::Retrying
    ));
    job.run_at > chrono::Utc::now() + chrono::Duration::days(365)
}

/// Issue 21, case 5, the jobs that were running when the campaign was paused: they come
/// back parked (by the database, under the campaign's row lock), not due; a resume brings
/// them back. And a resume that lands between a job's read of "paused" and its snooze's
/// write leaves the job due: the parking is decided when the snooze is written.
#[tokio::test]
async fn a_batch_job_that_finds_its_campaign_paused_is_parked_until_resume() {
    let db = TestDb::new().await;
    let dir = newsletter();
    let id = create(&db.pool, &dir, "running", recipients(2, "example.com"), 1).await;
    let worker = Uuid::now_v7();
    let claimed = claim_mail(&db.pool, worker, 2).await;
    assert_eq!(claimed.len(), 2);
    campaign::pause(&db.pool, id).await.unwrap();
    snooze(&db.pool, worker, &claimed[0]).await;
    assert!(
        parked(&db.pool, claimed[0].id).await,
        "a snooze written while the campaign is paused parks the job"
    );
    campaign::resume(&db.pool, id).await.unwrap();
    assert!(
        !parked(&db.pool, claimed[0].id).await,
        "resume brings it back"
    );
    // The other job read "paused", then the operator resumed, then its snooze landed.
    campaign::pause(&db.pool, id).await.unwrap();
    campaign::resume(&db.pool, id).await.unwrap();
    snooze(&db.pool, worker, &claimed[1]).await;
    assert!(
        !parked(&db.pool, claimed[1].id).await,
        "a snooze written after the resume leaves the job due"
    );
    // A cancel brings parked jobs back too, so that they end and the batch finishes.
    campaign::pause(&db.pool, id).await.unwrap();
    assert!(
        parked(&db.pool, claimed[1].id).await,
        "pause parks the jobs that wait"
    );
    campaign::cancel(&db.pool, id).await.unwrap();
    assert!(!parked(&db.pool, claimed[1].id).await);
}

#[tokio::test]
async fn one_recipient_answering_450_spends_its_ladder_while_the_rest_of_the_batch_is_sent() {
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    sink.reply_to(
        "user1@example.com",
        Some("450 4.2.0 Mailbox busy, try later"),
    );
    let dir = templates(&[
        ("news/subject.txt", "News for {{ name }}"),
        (
            "news/body.txt",
            "Hello {{ name }}, your code is {{ code }}.",
        ),
        ("reset/subject.txt", "Reset"),
        ("reset/body.txt", "Reset."),
    ]);
    let id = create(&db.pool, &dir, "busy", recipients(5, "example.com"), 10).await;
    let mut config = config_for(&sink, dir);
    config.rate = Some("5/s".parse().unwrap());
    config.retry_ladder = vec![Duration::from_secs(2); 2];
    let running = start(&db.pool, config);
    eventually(
        Duration::from_secs(10),
        "the busy mailbox refused once",
        || async { sink.attempts_for("user1@example.com") >= 1 },
    )
    .await;
    let job = docket_mail::jobs::Recovery {
        to: "ann@example.com".into(),
        template: "reset".into(),
        vars: serde_json::json!({}),
        locale: None,
        idempotency_key: None,
    };
    let new = docket_queue::NewJob::typed(&job).unwrap().queue("recovery");
    let enqueued = std::time::Instant::now();
    docket_queue::enqueue(&db.pool, &new).await.unwrap();
    let status = wait_finished(&db.pool, id, Duration::from_secs(30)).await;
    running.shutdown().await;
    assert_eq!((status.sent, status.dead_letter), (4, 1), "{status:?}");
    assert_eq!(
        sink.attempts_for("user1@example.com"),
        3,
        "one attempt and one per ladder step"
    );
    for i in [0, 2, 3, 4] {
        assert_eq!(
            sink.count_for(&format!("user{i}@example.com")),
            1,
            "user{i}"
        );
    }
    let busy = deliveries(&db.pool, Some(id))
        .await
        .into_iter()
        .find(|d| d.recipient == "user1@example.com")
        .unwrap();
    assert_eq!((busy.status, busy.attempts), (Status::DeadLetter, 3));
    let recovery = sink
        .messages()
        .into_iter()
        .find(|m| m.to == ["ann@example.com"])
        .expect("the recovery email arrived");
    let waited = recovery.at.duration_since(enqueued);
    assert!(
        waited < Duration::from_secs(5),
        "a busy mailbox held the recovery email back {waited:?}"
    );
}

#[tokio::test]
async fn a_relay_answering_421_holds_everyone_a_few_seconds_and_a_recovery_email_still_goes() {
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    for i in 0..3 {
        sink.reply_to(
            &format!("user{i}@example.com"),
            Some("421 4.7.0 Too many concurrent SMTP connections"),
        );
    }
    let dir = templates(&[
        ("news/subject.txt", "News for {{ name }}"),
        (
            "news/body.txt",
            "Hello {{ name }}, your code is {{ code }}.",
        ),
        ("reset/subject.txt", "Reset"),
        ("reset/body.txt", "Reset."),
    ]);
    let id = create(&db.pool, &dir, "held", recipients(3, "example.com"), 10).await;
    let mut config = config_for(&sink, dir);
    config.rate = Some("5/s".parse().unwrap());
    // A first step of a minute: the hold is still a few seconds.
    config.retry_ladder = vec![Duration::from_secs(60)];
    let running = start(&db.pool, config);
    eventually(Duration::from_secs(10), "the relay said 421", || async {
        sink.attempts_for("user0@example.com") >= 1
    })
    .await;
    let job = docket_mail::jobs::Recovery {
        to: "ann@example.com".into(),
        template: "reset".into(),
        vars: serde_json::json!({}),
        locale: None,
        idempotency_key: None,
    };
    let new = docket_queue::NewJob::typed(&job).unwrap().queue("recovery");
    let enqueued = std::time::Instant::now();
    docket_queue::enqueue(&db.pool, &new).await.unwrap();
    eventually(
        Duration::from_secs(90),
        "the recovery email arrives",
        || async { sink.count_for("ann@example.com") == 1 },
    )
    .await;
    let recovery = sink
        .messages()
        .into_iter()
        .find(|m| m.to == ["ann@example.com"])
        .unwrap();
    let waited = recovery.at.duration_since(enqueued);
    for i in 0..3 {
        sink.reply_to(&format!("user{i}@example.com"), None);
    }
    let status = wait_finished(&db.pool, id, Duration::from_secs(90)).await;
    running.shutdown().await;
    assert!(
        waited < Duration::from_secs(6),
        "the relay's 421 held the recovery email back {waited:?}"
    );
    assert_eq!((status.sent, status.dead_letter), (3, 0), "{status:?}");
}

/// A campaign email carries `List-Unsubscribe` with its own signed link (no mailto unless
/// one is configured) and `List-Unsubscribe-Post`; the template shows the same link.
#[tokio::test]
async fn a_campaign_email_carries_its_own_signed_one_click_link() {
    use docket_mail::token::{Purpose, Signer, TokenSecret};
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    let dir = templates(&[
        ("news/subject.txt", "News"),
        ("news/body.txt", "Leave: {{ unsubscribe_url }}"),
    ]);
    let running = start(&db.pool, config_for(&sink, dir.clone()));
    let id = create(&db.pool, &dir, "links", recipients(1, "example.com"), 10).await;
    wait_finished(&db.pool, id, Duration::from_secs(30)).await;
    running.shutdown().await;
    let delivery = deliveries(&db.pool, Some(id)).await.remove(0);
    let messages = sink.messages();
    let message = parse(&messages[0].data);
    let list = message.header_raw("List-Unsubscribe").unwrap().trim();
    let prefix = format!("<{}/unsubscribe/", crate::PUBLIC_URL);
    assert!(list.starts_with(&prefix) && list.ends_with('>'), "{list}");
    let token = &list[prefix.len()..list.len() - 1];
    let signer = Signer::new(TokenSecret::new(crate::TOKEN_SECRET).unwrap(), None);
    assert_eq!(signer.verify(Purpose::Unsubscribe, token), Ok(delivery.id));
    assert_eq!(
        message.header_raw("List-Unsubscribe-Post").map(str::trim),
        Some("List-Unsubscribe=One-Click")
    );
    let body = message.body_text(0).unwrap();
    assert!(body.contains(&list[1..list.len() - 1]), "{body}");
}
