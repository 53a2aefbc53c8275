//! What Docket tells the admin address by itself: a campaign finished, jobs dead-lettered.

use std::time::Duration;

use chrono::Utc;
use docket_mail::config::Notifications;
use docket_mail::jobs::{DeadLetterDigest, MAIL_QUEUE};
use docket_queue::{JobState, NewJob};
use docket_testkit::{eventually, insert_job, JobOpts, SmtpSink, TestDb};

use crate::{config_for, parse, start, templates};

const ADMIN: &str = "ops@example.com";

fn notifying(sink: &SmtpSink) -> docket_mail::MailConfig {
    let dir = templates(&[("news/subject.txt", "News"), ("news/body.txt", "Hello")]);
    let mut config = config_for(sink, dir);
    config.admin_email = Some(format!("Ops <{ADMIN}>"));
    config.notify = Notifications::parse("campaign_finished,dead_letters").unwrap();
    config
}

#[tokio::test]
async fn a_finished_campaign_is_reported_to_the_admin_address() {
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    let config = notifying(&sink);
    let catalog = docket_mail::template::Catalog::load(&config.template_dir).unwrap();
    let recipients = ["a@example.com", "b@example.com"]
        .map(|to| docket_mail::campaign::Recipient {
            to: to.into(),
            name: None,
            locale: None,
            vars: serde_json::json!({}),
        })
        .to_vec();
    let new = docket_mail::campaign::NewCampaign::new("autumn", "news", recipients);
    let from = "Docket <docket@example.com>".parse().unwrap();
    docket_mail::campaign::create(&db.pool, &catalog, &from, &new)
        .await
        .unwrap();
    let running = start(&db.pool, config);
    eventually(Duration::from_secs(30), "the admin is told", || async {
        sink.count_for(ADMIN) == 1
    })
    .await;
    running.shutdown().await;
    let message = sink
        .messages()
        .into_iter()
        .find(|m| m.to[0] == ADMIN)
        .unwrap();
    let parsed = parse(&message.data);
    assert_eq!(
        parsed.subject(),
        Some("Campaign \"autumn\" finished: 2 of 2 sent")
    );
}

#[tokio::test]
async fn dead_letters_of_the_last_minute_are_reported_once_with_their_ids() {
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    let dead = insert_job(
        &db.pool,
        JobOpts {
            state: Some(JobState::DeadLetter),
            kind: Some("crm.sync".into()),
            finished_at: Some(Utc::now() - chrono::Duration::seconds(10)),
            ..JobOpts::default()
        },
    )
    .await;
    // What the built-in schedule's tick enqueues (its run_at is the tick).
    let digest = NewJob::typed(&DeadLetterDigest { window_seconds: 60 })
        .unwrap()
        .queue(MAIL_QUEUE);
    let id = docket_queue::enqueue(&db.pool, &digest).await.unwrap();
    let running = start(&db.pool, notifying(&sink));
    eventually(Duration::from_secs(30), "the admin is told", || async {
        sink.count_for(ADMIN) == 1
    })
    .await;
    running.shutdown().await;
    assert_eq!(
        docket_queue::admin::show(&db.pool, id).await.unwrap().state,
        JobState::Completed
    );
    let message = sink
        .messages()
        .into_iter()
        .find(|m| m.to[0] == ADMIN)
        .unwrap();
    let parsed = parse(&message.data);
    assert_eq!(parsed.subject(), Some("1 job dead-lettered"));
    assert!(parsed.body_text(0).unwrap().contains(&dead.id.to_string()));
    assert_eq!(
        docket_mail::jobs::dead_letter_schedule().cron,
        "0 * * * * *"
    );
}
