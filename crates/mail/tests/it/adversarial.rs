//! Attacks on the email guarantees: at most once per recipient (an exchange cut off or
//! broken after the message was handed over is `unknown`, never retried), per-recipient 4xx
//! against relay-wide 421/454, paused campaigns, expiry. A test `#[ignore]`d as "known"
//! reproduces a guarantee that does not hold yet.

use std::time::{Duration, Instant};

use docket_mail::campaign::{self, NewCampaign, Recipient};
use docket_mail::delivery::Status;
use docket_mail::jobs::{Recovery, RECOVERY_QUEUE};
use docket_mail::template::Catalog;
use docket_queue::{JobId, JobState, NewJob};
use docket_testkit::{eventually, SmtpSink, TestDb};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{config_for, deliveries, start, templates};

fn catalog_dir() -> std::path::PathBuf {
    templates(&[
        ("news/subject.txt", "News"),
        ("news/body.txt", "News for {{ name }}."),
        ("reset/subject.txt", "Reset"),
        ("reset/body.txt", "Reset."),
    ])
}

fn recipients(n: usize) -> Vec<Recipient> {
    (0..n)
        .map(|i| Recipient {
            to: format!("user{i}@example.com"),
            name: Some(format!("User {i}")),
            locale: None,
            vars: serde_json::json!({}),
        })
        .collect()
}

async fn create(pool: &PgPool, dir: &std::path::Path, n: usize, batch_size: usize) -> Uuid {
    let catalog = Catalog::load(dir).unwrap();
    let from = "Docket <docket@example.com>".parse().unwrap();
    let new = NewCampaign {
        batch_size,
        ..NewCampaign::new("adv", "news", recipients(n))
    };
    campaign::create(pool, &catalog, &from, &new).await.unwrap()
}

async fn delivery_of(pool: &PgPool, campaign: Uuid, to: &str) -> docket_mail::delivery::Delivery {
    deliveries(pool, Some(campaign))
        .await
        .into_iter()
        .find(|d| d.recipient == to)
        .unwrap()
}

async fn wait_state(pool: &PgPool, id: JobId, state: JobState) -> docket_queue::Job {
    eventually(
        Duration::from_secs(40),
        &format!("job {id} is {state:?}"),
        || async { docket_queue::admin::show(pool, id).await.unwrap().state == state },
    )
    .await;
    docket_queue::admin::show(pool, id).await.unwrap()
}

/// Rule 1. The relay takes the message (its DATA) but answers the final dot only after
/// DOCKET_SMTP_TIMEOUT: the client is cut off mid-exchange, "has sent the message without
/// hearing it" (the sink's own words). The timeout was classified `Temporary` and the
/// recipient sent again on the ladder (3 copies); it is an email whose fate is unknown.
#[tokio::test]
async fn adv_a_campaign_recipient_cut_off_after_data_is_unknown_and_sent_once() {
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    sink.slow_data(Some(Duration::from_secs(3)));
    let dir = catalog_dir();
    let id = create(&db.pool, &dir, 1, 10).await;
    let mut config = config_for(&sink, dir);
    config.timeout = Duration::from_secs(1);
    config.retry_ladder = vec![Duration::from_secs(1); 2];
    let running = start(&db.pool, config);
    eventually(Duration::from_secs(30), "the campaign is done", || async {
        campaign::show(&db.pool, id).await.unwrap().state == "finished"
    })
    .await;
    running.shutdown().await;
    let d = delivery_of(&db.pool, id, "user0@example.com").await;
    let ids: Vec<String> = sink
        .messages()
        .iter()
        .map(|m| {
            crate::parse(&m.data)
                .message_id()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(
        sink.count_for("user0@example.com"),
        1,
        "one campaign recipient received {} copies (Message-IDs {ids:?}); its delivery is {:?} after {} attempts",
        sink.count_for("user0@example.com"),
        d.status,
        d.attempts
    );
}

/// Rule 1, the recovery flavour: the same cut-off after DATA on a recovery email.
#[tokio::test]
async fn adv_a_recovery_email_cut_off_after_data_is_unknown_and_sent_once() {
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    sink.slow_data(Some(Duration::from_secs(3)));
    let mut config = config_for(&sink, catalog_dir());
    config.timeout = Duration::from_secs(1);
    config.retry_ladder = vec![Duration::from_secs(1); 2];
    let running = start(&db.pool, config);
    let job = Recovery {
        to: "ann@example.com".into(),
        template: "reset".into(),
        vars: serde_json::json!({}),
        locale: None,
        idempotency_key: Some("reset-ann-1".into()),
    };
    let new = NewJob::typed(&job).unwrap().queue(RECOVERY_QUEUE);
    let jid = docket_queue::enqueue(&db.pool, &new).await.unwrap();
    wait_state(&db.pool, jid, JobState::DeadLetter).await;
    running.shutdown().await;
    let d = &deliveries(&db.pool, None).await[0];
    assert_eq!(
        sink.count_for("ann@example.com"),
        1,
        "a password reset was received {} times; delivery {:?}, {} attempts",
        sink.count_for("ann@example.com"),
        d.status,
        d.attempts
    );
}

/// Rules 1 and 4. A recovery email whose job expires while the relay holds back its answer
/// to the final dot (the message is already taken). It was cut off at the expiry and
/// recorded `expired` ("never sent") while the relay had the message. The expiry now bounds
/// only the commands before the message: once handed over, the exchange runs to its end
/// and the record says what the relay did.
#[tokio::test]
async fn adv_expiry_after_data_records_what_the_relay_did() {
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    sink.slow_data(Some(Duration::from_secs(6)));
    let mut config = config_for(&sink, catalog_dir());
    config.timeout = Duration::from_secs(20);
    let running = start(&db.pool, config);
    let job = Recovery {
        to: "ann@example.com".into(),
        template: "reset".into(),
        vars: serde_json::json!({}),
        locale: None,
        idempotency_key: None,
    };
    let new = NewJob::typed(&job)
        .unwrap()
        .queue(RECOVERY_QUEUE)
        .expires_at(chrono::Utc::now() + chrono::Duration::seconds(3));
    let jid = docket_queue::enqueue(&db.pool, &new).await.unwrap();
    wait_state(&db.pool, jid, JobState::Completed).await;
    running.shutdown().await;
    let d = &deliveries(&db.pool, None).await[0];
    assert_eq!(sink.count_for("ann@example.com"), 1, "the relay took it");
    assert_eq!(d.status, Status::Sent, "{:?}", d.last_error);
}

/// Rule 2. One recipient whose RCPT the relay answers 421 (a deferral some relays give per
/// destination) was classified relay-wide every time: the whole batch held, the attempt was
/// given back, and the batch started again from the same recipient, for ever. A delivery
/// past a few 421/454s spends attempts on its ladder, so it ends `dead_letter` and the rest
/// of its batch goes.
#[tokio::test]
async fn adv_a_recipient_answered_421_every_time_ends_on_its_ladder_and_the_rest_goes() {
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    sink.reply_to(
        "user0@example.com",
        Some("421 4.7.0 Try again later, closing connection"),
    );
    let dir = catalog_dir();
    let id = create(&db.pool, &dir, 3, 10).await;
    let mut config = config_for(&sink, dir);
    config.retry_ladder = vec![Duration::from_secs(1); 2];
    let running = start(&db.pool, config);
    eventually(Duration::from_secs(40), "the campaign finishes", || async {
        campaign::show(&db.pool, id).await.unwrap().state == "finished"
    })
    .await;
    let d0 = delivery_of(&db.pool, id, "user0@example.com").await;
    running.shutdown().await;
    assert_eq!(
        (
            sink.count_for("user1@example.com"),
            sink.count_for("user2@example.com")
        ),
        (1, 1)
    );
    assert_eq!(sink.count_for("user0@example.com"), 0);
    assert_eq!(d0.status, Status::DeadLetter, "{:?}", d0.last_error);
    assert_eq!(d0.attempts, 3, "the ladder's two steps and the last try");
}

/// Rule 2 guard: several recipients answered 450 while the relay answers 421 to everyone
/// now and then. The 421s spend no attempt; each 450 recipient spends exactly its own
/// ladder and is dead-lettered; the others are sent once; a recovery email goes within
/// seconds of the relay coming back.
#[tokio::test]
async fn adv_450_to_several_and_intermittent_421_spend_only_the_own_ladders() {
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    for i in [1, 3] {
        sink.reply_to(
            &format!("user{i}@example.com"),
            Some("450 4.2.0 Mailbox busy, try later"),
        );
    }
    let dir = catalog_dir();
    let id = create(&db.pool, &dir, 6, 3).await;
    let mut config = config_for(&sink, dir);
    config.rate = Some("20/s".parse().unwrap());
    config.retry_ladder = vec![Duration::from_secs(2); 2];
    // The relay answers 421 to everybody (the busy mailboxes too) for a second, four
    // times; in between, the busy mailboxes answer 450 again.
    let relay_421 = |on: bool| {
        if on {
            sink.reply_to_all(Some("421 4.7.0 Too many concurrent SMTP connections"));
        } else {
            sink.reply_to_all(None);
        }
        for i in [1, 3] {
            let reply = if on {
                "421 4.7.0 Too many concurrent SMTP connections"
            } else {
                "450 4.2.0 Mailbox busy, try later"
            };
            sink.reply_to(&format!("user{i}@example.com"), Some(reply));
        }
    };
    relay_421(true);
    let running = start(&db.pool, config);
    for round in 0..4 {
        if round > 0 {
            relay_421(true);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        relay_421(false);
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let job = Recovery {
        to: "ann@example.com".into(),
        template: "reset".into(),
        vars: serde_json::json!({}),
        locale: None,
        idempotency_key: None,
    };
    let new = NewJob::typed(&job).unwrap().queue(RECOVERY_QUEUE);
    let enqueued = Instant::now();
    docket_queue::enqueue(&db.pool, &new).await.unwrap();
    eventually(
        Duration::from_secs(10),
        "the recovery email arrives",
        || async { sink.count_for("ann@example.com") == 1 },
    )
    .await;
    eventually(Duration::from_secs(40), "the campaign is done", || async {
        campaign::show(&db.pool, id).await.unwrap().state == "finished"
    })
    .await;
    running.shutdown().await;
    let status = campaign::show(&db.pool, id).await.unwrap();
    assert_eq!((status.sent, status.dead_letter), (4, 2), "{status:?}");
    for i in [0, 2, 4, 5] {
        assert_eq!(
            sink.count_for(&format!("user{i}@example.com")),
            1,
            "user{i}"
        );
    }
    for i in [1, 3] {
        let d = delivery_of(&db.pool, id, &format!("user{i}@example.com")).await;
        assert_eq!(
            (d.status, d.attempts),
            (Status::DeadLetter, 3),
            "user{i}: one attempt and one per ladder step, 421s not counted"
        );
    }
    let throttles: i64 = sqlx::query_scalar(
        "select coalesce(sum(throttles), 0) from docket.mail_deliveries where campaign_id = $1",
    )
    .bind(id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(throttles >= 1, "the relay's 421s were met");
    let recovery = sink
        .messages()
        .into_iter()
        .find(|m| m.to == ["ann@example.com"])
        .expect("the recovery email arrived");
    let waited = recovery.at.duration_since(enqueued);
    assert!(
        waited < Duration::from_secs(5),
        "recovery waited {waited:?}"
    );
}

async fn row_versions(pool: &PgPool, campaign: Uuid) -> Vec<(Uuid, String, String)> {
    sqlx::query_as(
        "select j.id, j.xmin::text, j.state::text from docket.jobs j
         join docket.mail_campaigns c on c.batch_id = j.batch_id
         where c.id = $1 order by j.id",
    )
    .bind(campaign)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Rule 3 guard: a campaign paused while one batch job is snoozing on a recipient's ladder
/// and others are mid-exchange (slow DATA): within a moment no row of its jobs is written
/// any more, nothing more leaves, and a resume sends the rest within a second.
#[tokio::test]
async fn adv_pause_while_batches_retry_and_send_costs_nothing_and_resume_is_prompt() {
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    sink.reply_to("user0@example.com", Some("451 4.3.0 try again later"));
    sink.slow_data(Some(Duration::from_millis(1500)));
    let dir = catalog_dir();
    let id = create(&db.pool, &dir, 12, 2).await;
    let mut config = config_for(&sink, dir);
    config.retry_ladder = vec![Duration::from_secs(2); 3];
    let running = start(&db.pool, config);
    eventually(
        Duration::from_secs(10),
        "user0 refused once and a message taken",
        || async { sink.attempts_for("user0@example.com") >= 1 && !sink.messages().is_empty() },
    )
    .await;
    campaign::pause(&db.pool, id).await.unwrap();
    // The exchanges under way finish (1.5 s slow DATA) and their jobs stop.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = row_versions(&db.pool, id).await;
    let sent_before = sink.messages().len();
    let tried_before = sink.attempts_for("user0@example.com");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        row_versions(&db.pool, id).await,
        before,
        "a paused campaign's job rows were written"
    );
    assert_eq!(sink.messages().len(), sent_before, "mail left while paused");
    assert_eq!(
        sink.attempts_for("user0@example.com"),
        tried_before,
        "a ladder step ran while paused"
    );
    sink.slow_data(None);
    sink.reply_to("user0@example.com", None);
    let resumed = Instant::now();
    campaign::resume(&db.pool, id).await.unwrap();
    eventually(
        Duration::from_secs(5),
        "a message leaves after resume",
        || async { sink.messages().len() > sent_before },
    )
    .await;
    let first = resumed.elapsed();
    eventually(Duration::from_secs(30), "the campaign is done", || async {
        campaign::show(&db.pool, id).await.unwrap().state == "finished"
    })
    .await;
    running.shutdown().await;
    assert!(first < Duration::from_millis(1500), "resume took {first:?}");
    for i in 0..12 {
        assert_eq!(
            sink.count_for(&format!("user{i}@example.com")),
            1,
            "user{i}"
        );
    }
}

/// Rule 1 guard: an operator cancels a batch job mid-exchange (slow DATA, timeout longer
/// than it). The exchange finishes and records `sent`; the job stops; a replay sends the
/// rest and never that recipient again.
#[tokio::test]
async fn adv_cancel_a_batch_job_mid_exchange_then_replay_sends_each_once() {
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    sink.slow_data(Some(Duration::from_secs(3)));
    let dir = catalog_dir();
    let id = create(&db.pool, &dir, 3, 10).await;
    let mut config = config_for(&sink, dir);
    config.timeout = Duration::from_secs(20);
    let running = start(&db.pool, config);
    eventually(Duration::from_secs(10), "the relay took user0", || async {
        sink.count_for("user0@example.com") == 1
    })
    .await;
    let job = JobId(
        delivery_of(&db.pool, id, "user0@example.com")
            .await
            .job_id
            .unwrap(),
    );
    docket_queue::admin::cancel(&db.pool, job).await.unwrap();
    wait_state(&db.pool, job, JobState::Cancelled).await;
    eventually(
        Duration::from_secs(10),
        "user0's exchange records it",
        || async { delivery_of(&db.pool, id, "user0@example.com").await.status == Status::Sent },
    )
    .await;
    sink.slow_data(None);
    docket_queue::admin::replay(&db.pool, job).await.unwrap();
    eventually(Duration::from_secs(20), "the campaign is done", || async {
        campaign::show(&db.pool, id).await.unwrap().state == "finished"
    })
    .await;
    running.shutdown().await;
    for i in 0..3 {
        assert_eq!(
            sink.count_for(&format!("user{i}@example.com")),
            1,
            "user{i}"
        );
    }
}

/// Rule 1 guard: two runtimes (two "processes" on one database) on the same campaign with
/// a slow relay: nobody gets two copies.
#[tokio::test]
async fn adv_two_runtimes_on_one_campaign_with_slow_data_send_each_once() {
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    sink.slow_data(Some(Duration::from_millis(300)));
    sink.reply_to("user3@example.com", Some("452 4.2.2 over quota"));
    let dir = catalog_dir();
    let id = create(&db.pool, &dir, 20, 3).await;
    let mut config = config_for(&sink, dir.clone());
    config.retry_ladder = vec![Duration::from_millis(500); 2];
    let a = start(&db.pool, config.clone());
    let b = start(&db.pool, config);
    eventually(Duration::from_secs(60), "the campaign is done", || async {
        campaign::show(&db.pool, id).await.unwrap().state == "finished"
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
    for i in 0..20 {
        let expected = usize::from(i != 3);
        assert_eq!(
            sink.count_for(&format!("user{i}@example.com")),
            expected,
            "user{i}"
        );
    }
}

/// Rule 3 guard: a campaign paused (its jobs parked, one of them on a recipient's ladder),
/// then cancelled: its jobs run to their end at once and nothing more leaves.
#[tokio::test]
async fn adv_cancel_a_paused_campaign_ends_its_parked_jobs_and_sends_nothing() {
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    sink.reply_to("user0@example.com", Some("450 4.2.0 Mailbox busy"));
    sink.slow_data(Some(Duration::from_millis(800)));
    let dir = catalog_dir();
    let id = create(&db.pool, &dir, 10, 2).await;
    let mut config = config_for(&sink, dir);
    config.retry_ladder = vec![Duration::from_secs(2); 3];
    let running = start(&db.pool, config);
    eventually(Duration::from_secs(10), "user0 refused once", || async {
        sink.attempts_for("user0@example.com") >= 1
    })
    .await;
    campaign::pause(&db.pool, id).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sent_at_pause = sink.messages().len();
    campaign::cancel(&db.pool, id).await.unwrap();
    eventually(
        Duration::from_secs(5),
        "every batch job is final",
        || async {
            row_versions(&db.pool, id)
                .await
                .iter()
                .all(|(_, _, state)| state == "completed" || state == "cancelled")
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    running.shutdown().await;
    assert_eq!(
        sink.messages().len(),
        sent_at_pause,
        "mail left after cancel"
    );
    assert_eq!(
        campaign::show(&db.pool, id).await.unwrap().state,
        "cancelled"
    );
    for i in 0..10 {
        assert!(
            sink.count_for(&format!("user{i}@example.com")) <= 1,
            "user{i}"
        );
    }
}

/// Rule 4 guard: a recovery email held by the relay's 421s past its job's expiry is
/// expired and never sent once the relay comes back.
#[tokio::test]
async fn adv_a_recovery_email_held_by_421_past_its_expiry_is_expired_never_sent_late() {
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    sink.reply_to_all(Some("421 4.7.0 Try again later, closing connection"));
    let mut config = config_for(&sink, catalog_dir());
    config.rate = Some("10/s".parse().unwrap());
    let running = start(&db.pool, config);
    let job = Recovery {
        to: "ann@example.com".into(),
        template: "reset".into(),
        vars: serde_json::json!({}),
        locale: None,
        idempotency_key: None,
    };
    let new = NewJob::typed(&job)
        .unwrap()
        .queue(RECOVERY_QUEUE)
        .expires_at(chrono::Utc::now() + chrono::Duration::seconds(3));
    let jid = docket_queue::enqueue(&db.pool, &new).await.unwrap();
    eventually(Duration::from_secs(5), "refused at least once", || async {
        sink.attempts_for("ann@example.com") >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    sink.reply_to_all(None);
    let job = wait_state(&db.pool, jid, JobState::DeadLetter).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    running.shutdown().await;
    assert_eq!(sink.count_for("ann@example.com"), 0, "sent late");
    assert_eq!(job.dead_letter_reason.as_deref(), Some("expired"));
    assert_eq!(deliveries(&db.pool, None).await[0].status, Status::Expired);
}

/// A relay that takes each message and then drops the connection without answering its
/// end (a crash or a network cut after the final dot): counts the messages it took.
async fn relay_that_drops_after_data() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("smtp://{}", listener.local_addr().unwrap());
    let taken = std::sync::Arc::new(AtomicUsize::new(0));
    let count = taken.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let count = count.clone();
            tokio::spawn(async move {
                let mut io = BufReader::new(stream);
                let _: Option<()> = async {
                    io.get_mut().write_all(b"220 localhost\r\n").await.ok()?;
                    let mut in_data = false;
                    loop {
                        let mut line = String::new();
                        if io.read_line(&mut line).await.ok()? == 0 {
                            return None;
                        }
                        if in_data {
                            if line == ".\r\n" {
                                count.fetch_add(1, Ordering::SeqCst);
                                // Taken, never answered: the connection drops.
                                return None;
                            }
                            continue;
                        }
                        let verb = line
                            .split_whitespace()
                            .next()
                            .unwrap_or("")
                            .to_ascii_uppercase();
                        let reply: &[u8] = match verb.as_str() {
                            "EHLO" => b"250-localhost\r\n250 8BITMIME\r\n",
                            "DATA" => {
                                in_data = true;
                                b"354 go ahead\r\n"
                            }
                            "QUIT" => b"221 bye\r\n",
                            _ => b"250 ok\r\n",
                        };
                        io.get_mut().write_all(reply).await.ok()?;
                    }
                }
                .await;
            });
        }
    });
    (url, taken)
}

/// Rule 1, the lost-connection flavour: the relay takes the message and the connection
/// drops before its answer. `Failure::Connection` was `Temporary` too, and the recipient
/// was sent again; after the message was handed over it is unknown.
#[tokio::test]
async fn adv_a_connection_lost_after_data_leaves_the_recipient_unknown_and_sent_once() {
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await; // only for config_for's shape
    let (url, taken) = relay_that_drops_after_data().await;
    let dir = catalog_dir();
    let id = create(&db.pool, &dir, 1, 10).await;
    let mut config = config_for(&sink, dir);
    config.mode =
        docket_mail::config::Mode::Smtp(docket_mail::config::SmtpUrl::parse(&url).unwrap());
    config.retry_ladder = vec![Duration::from_secs(1); 2];
    let running = start(&db.pool, config);
    eventually(Duration::from_secs(30), "the campaign is done", || async {
        campaign::show(&db.pool, id).await.unwrap().state == "finished"
    })
    .await;
    running.shutdown().await;
    let d = delivery_of(&db.pool, id, "user0@example.com").await;
    assert_eq!(
        taken.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the relay took the one recipient's message this many times; delivery {:?}, {} attempts, {:?}",
        d.status,
        d.attempts,
        d.last_error
    );
}
