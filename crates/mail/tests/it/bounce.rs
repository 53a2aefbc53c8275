//! Bounces after acceptance: each delivery's own envelope sender (VERP), and the
//! notifications real relays write (Postfix, Exim) marking the right delivery `bounced`.

use std::time::Duration;

use docket_mail::bounce::{self, Outcome};
use docket_mail::campaign::{self, NewCampaign, Recipient};
use docket_mail::delivery::Status;
use docket_mail::template::Catalog;
use docket_mail::token::{Purpose, Signer, TokenSecret};
use docket_testkit::{eventually, SmtpSink, TestDb};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    config_for, deliveries, fixture, parse, start, templates, BOUNCE_DOMAIN, TOKEN_SECRET,
};

fn signer() -> Signer {
    Signer::new(TokenSecret::new(TOKEN_SECRET).unwrap(), None)
}

/// A campaign to `names`@example.net sent through `sink` with VERP on; returns its id.
async fn sent_campaign(pool: &PgPool, sink: &SmtpSink, names: &[&str]) -> Uuid {
    let dir = templates(&[("news/subject.txt", "News"), ("news/body.txt", "Hello.")]);
    let mut config = config_for(sink, dir.clone());
    config.bounce_domain = Some(BOUNCE_DOMAIN.to_owned());
    let running = start(pool, config);
    let rows = names
        .iter()
        .map(|name| Recipient {
            to: format!("{name}@example.net"),
            name: None,
            locale: None,
            vars: serde_json::json!({}),
        })
        .collect();
    let catalog = Catalog::load(&dir).unwrap();
    let from = "Docket <docket@example.com>".parse().unwrap();
    let id = campaign::create(
        pool,
        &catalog,
        &from,
        &NewCampaign::new("verp", "news", rows),
    )
    .await
    .unwrap();
    eventually(Duration::from_secs(30), "the campaign finishes", || async {
        campaign::show(pool, id).await.unwrap().state == "finished"
    })
    .await;
    running.shutdown().await;
    id
}

/// The envelope sender the relay saw for `address`.
fn envelope_from(sink: &SmtpSink, address: &str) -> String {
    sink.messages()
        .into_iter()
        .find(|m| m.to == [address])
        .unwrap()
        .from
}

async fn status_of(pool: &PgPool, campaign: Uuid, address: &str) -> Status {
    deliveries(pool, Some(campaign))
        .await
        .into_iter()
        .find(|d| d.recipient == address)
        .unwrap()
        .status
}

async fn suppression(pool: &PgPool, address: &str) -> Option<String> {
    sqlx::query_scalar("select reason from docket.mail_suppressions where address = $1")
        .bind(address)
        .fetch_optional(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn each_delivery_has_its_own_envelope_sender_and_the_visible_from_is_unchanged() {
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    let id = sent_campaign(&db.pool, &sink, &["ann", "bob"]).await;
    for delivery in deliveries(&db.pool, Some(id)).await {
        let from = envelope_from(&sink, &delivery.recipient);
        let (local, domain) = from.split_once('@').unwrap();
        assert_eq!(domain, BOUNCE_DOMAIN);
        assert!(local.len() <= 64, "{from}");
        let token = local.strip_prefix("bounce+").unwrap();
        assert_eq!(signer().verify(Purpose::Bounce, token), Ok(delivery.id));
        let received = sink
            .messages()
            .into_iter()
            .find(|m| m.from == from)
            .unwrap();
        let message = parse(&received.data);
        let visible = message.from().unwrap().first().unwrap();
        assert_eq!(visible.address(), Some("docket@example.com"));
    }
}

#[tokio::test]
async fn postfix_and_exim_failure_reports_bounce_the_right_delivery_and_suppress_it() {
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    let id = sent_campaign(&db.pool, &sink, &["gone", "nobody", "kept"]).await;
    let ingest = |raw: Vec<u8>| {
        let pool = db.pool.clone();
        async move {
            bounce::ingest(&pool, &signer(), Some(BOUNCE_DOMAIN), &raw)
                .await
                .unwrap()
        }
    };
    for (name, fixture_name) in [
        ("gone", "postfix-failed-5.1.1.eml"),
        ("nobody", "exim-failed-5.0.0.eml"),
    ] {
        let address = format!("{name}@example.net");
        let raw = fixture(fixture_name, &envelope_from(&sink, &address), &address);
        match ingest(raw).await {
            Outcome::Bounced {
                status, suppressed, ..
            } => {
                assert_eq!(status.as_deref(), Some("5.1.1"), "{fixture_name}");
                assert!(suppressed, "{fixture_name}");
            }
            other => panic!("{fixture_name}: {other:?}"),
        }
        assert_eq!(status_of(&db.pool, id, &address).await, Status::Bounced);
        let reason = suppression(&db.pool, &address).await.unwrap();
        assert!(reason.starts_with("dsn: 5.1.1"), "{reason}");
    }
    // The third delivery, named by neither, is untouched; the campaign counts both.
    assert_eq!(
        status_of(&db.pool, id, "kept@example.net").await,
        Status::Sent
    );
    assert_eq!(suppression(&db.pool, "kept@example.net").await, None);
    let shown = campaign::show(&db.pool, id).await.unwrap();
    assert_eq!((shown.bounced, shown.sent), (2, 1));

    // The same report again: recorded, nothing more changes.
    let address = "gone@example.net";
    let again = fixture(
        "postfix-failed-5.1.1.eml",
        &envelope_from(&sink, address),
        address,
    );
    assert!(matches!(
        ingest(again).await,
        Outcome::Ignored {
            unknown_recipient: false,
            ..
        }
    ));
    let recorded: Vec<(String, Option<String>)> = sqlx::query_as(
        "select outcome, status_code from docket.mail_bounces order by received_at, id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(recorded.len(), 3);
    assert_eq!(
        recorded[0],
        ("bounced".to_owned(), Some("5.1.1".to_owned()))
    );
}

#[tokio::test]
async fn delayed_reports_auto_replies_and_other_mail_change_nothing() {
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    let id = sent_campaign(&db.pool, &sink, &["slow"]).await;
    let address = "slow@example.net";
    let from = envelope_from(&sink, address);
    let ingest = |name: &str| {
        let raw = fixture(name, &from, address);
        let pool = db.pool.clone();
        async move {
            bounce::ingest(&pool, &signer(), Some(BOUNCE_DOMAIN), &raw)
                .await
                .unwrap()
        }
    };
    assert!(matches!(
        ingest("postfix-delayed-4.4.1.eml").await,
        Outcome::Delayed { .. }
    ));
    for (name, why) in [
        ("auto-reply.eml", "an automatic reply"),
        ("not-a-dsn.eml", "not a delivery status notification"),
    ] {
        assert_eq!(
            ingest(name).await,
            Outcome::Ignored {
                reason: why.to_owned(),
                unknown_recipient: false
            }
        );
    }
    assert_eq!(status_of(&db.pool, id, address).await, Status::Sent);
    assert_eq!(suppression(&db.pool, address).await, None);
    let outcomes: Vec<String> =
        sqlx::query_scalar("select outcome from docket.mail_bounces order by received_at, id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(outcomes, ["delayed", "ignored", "ignored"]);
}

#[tokio::test]
async fn a_tampered_or_foreign_bounce_address_names_no_delivery() {
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    let id = sent_campaign(&db.pool, &sink, &["ann"]).await;
    let address = "ann@example.net";
    let from = envelope_from(&sink, address);
    // One character of the signature changed.
    let mut tampered = from.clone().into_bytes();
    let at = from.find('@').unwrap() - 1;
    tampered[at] = if tampered[at] == b'a' { b'b' } else { b'a' };
    let tampered = String::from_utf8(tampered).unwrap();
    // A well-signed token of a delivery never recorded.
    let nobody = format!(
        "bounce+{}@{BOUNCE_DOMAIN}",
        signer().sign(Purpose::Bounce, Uuid::now_v7())
    );
    for from in [tampered.as_str(), nobody.as_str()] {
        let raw = fixture("postfix-failed-5.1.1.eml", from, address);
        let outcome = bounce::ingest(&db.pool, &signer(), Some(BOUNCE_DOMAIN), &raw)
            .await
            .unwrap();
        assert!(
            matches!(
                outcome,
                Outcome::Ignored {
                    unknown_recipient: true,
                    ..
                }
            ),
            "{from}: {outcome:?}"
        );
    }
    assert_eq!(status_of(&db.pool, id, address).await, Status::Sent);
    assert_eq!(suppression(&db.pool, address).await, None);
}
