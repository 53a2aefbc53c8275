//! The mail routes: deliveries and campaigns, behind the bearer.

use std::sync::Arc;

use axum::http::StatusCode;
use docket_http::{AppState, HealthConfig, Secret};
use docket_mail::{MailConfig, Mailer};
use docket_testkit::TestDb;
use serde_json::json;

use crate::{authed, call, get, recorder, SECRET};

fn app_with_mailer(pool: &sqlx::PgPool) -> axum::Router {
    let dir = std::env::temp_dir().join(format!("docket-http-mail-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(dir.join("news")).unwrap();
    std::fs::write(dir.join("news/subject.txt"), "News").unwrap();
    std::fs::write(dir.join("news/body.txt"), "Hello {{ name }}").unwrap();
    let config = MailConfig {
        template_dir: dir,
        ..MailConfig::default()
    };
    let mailer = Mailer::new(pool.clone(), config).unwrap();
    docket_http::router(
        AppState::new(
            pool.clone(),
            Secret::new(SECRET),
            Some(recorder()),
            HealthConfig::default(),
        )
        .with_mailer(Arc::new(mailer)),
    )
}

#[tokio::test]
async fn a_campaign_posted_is_recorded_with_its_deliveries_and_shown() {
    let db = TestDb::new().await;
    let app = app_with_mailer(&db.pool);
    let body = json!({"name": "launch", "template": "news", "batch_size": 2, "recipients": [
        {"to": "ann@example.com", "name": "Ann"}, {"to": "bob@example.com", "vars": {"name": "Bob"}, "locale": "pt-BR"},
        {"to": "cid@example.com", "name": "Cid"}, {"to": "CID@example.com", "name": "Cid"}]});
    let (status, created) = call(
        &app,
        authed("POST", "/api/campaigns", Some(&body.to_string())),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(
        (&created["total"], &created["duplicates"]),
        (&json!(3), &json!(1))
    );
    let id = created["id"].as_str().unwrap();
    let (status, shown) = call(&app, authed("GET", &format!("/api/campaigns/{id}"), None)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (&shown["state"], &shown["total"], &shown["pending"]),
        (&json!("sending"), &json!(3), &json!(3))
    );
    let batch_jobs: i64 =
        sqlx::query_scalar("select count(*) from docket.jobs where kind = 'mail.campaign_batch'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(batch_jobs, 2);

    let (status, page) = call(
        &app,
        authed(
            "GET",
            &format!("/api/mail/deliveries?campaign={id}&status=queued"),
            None,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let deliveries = page["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 3);
    let ann = deliveries
        .iter()
        .find(|d| d["recipient"] == "ann@example.com")
        .unwrap();
    assert_eq!(ann["recipient_name"], "Ann");
    assert_eq!(ann["source"], "campaign");
    let (_, one) = call(
        &app,
        authed("GET", "/api/mail/deliveries?to=BOB@example.com", None),
    )
    .await;
    assert_eq!(one["deliveries"][0]["locale"], "pt-BR");
}

#[tokio::test]
async fn bad_campaigns_and_filters_are_refused_with_a_reason_and_write_nothing() {
    let db = TestDb::new().await;
    let app = app_with_mailer(&db.pool);
    let cases = [
        (
            json!({"name": "x", "template": "news", "recipients": [{"to": "not an address"}]}),
            "not an email address",
        ),
        (
            json!({"name": "x", "template": "news", "recipients": []}),
            "needs recipients",
        ),
        (
            json!({"name": "x", "template": "news", "recipients": [{"to": "a@example.com", "vars": {"v": "\u{0}"}}]}),
            "NUL",
        ),
        (
            json!({"name": "", "template": "news", "recipients": [{"to": "a@example.com"}]}),
            "1 to 200",
        ),
    ];
    for (body, reason) in cases {
        let (status, answer) = call(
            &app,
            authed("POST", "/api/campaigns", Some(&body.to_string())),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
        assert!(
            answer["message"].as_str().unwrap().contains(reason),
            "{body}: {answer}"
        );
    }
    // The template greets `name`: a recipient without one could never be sent (409: the
    // template as the catalog has it now reads what the request does not give).
    let unfilled = json!({"name": "x", "template": "news", "recipients": [
        {"to": "a@example.com", "name": "Ann"}, {"to": "b@example.com", "vars": {"plan": "pro"}}]});
    let (status, answer) = call(
        &app,
        authed("POST", "/api/campaigns", Some(&unfilled.to_string())),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert!(
        answer["message"].as_str().unwrap().contains(
            "uses the variable name that the recipients do not give (1 of 2 recipients lack \
             them, the first b@example.com)"
        ),
        "{answer}"
    );
    let unknown = json!({"name": "x", "template": "nope", "recipients": [{"to": "a@example.com"}]});
    let (status, answer) = call(
        &app,
        authed("POST", "/api/campaigns", Some(&unknown.to_string())),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("no template named"),
        "{answer}"
    );
    let campaigns: i64 = sqlx::query_scalar("select count(*) from docket.mail_campaigns")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(campaigns, 0);
    for uri in [
        "/api/mail/deliveries?status=lost",
        "/api/mail/deliveries?campaign=nope",
        "/api/mail/deliveries?limit=0",
    ] {
        let (status, answer) = call(&app, authed("GET", uri, None)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {answer}");
    }
    let (status, _) = call(&app, get("/api/mail/deliveries")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = call(
        &app,
        authed(
            "GET",
            "/api/campaigns/01a20cbd-d4ef-7a16-b67a-f82bfa49f79d",
            None,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// The campaign controls over HTTP: each answers the campaign as it is now; one that means
/// nothing in its state is 409 with the reason.
#[tokio::test]
async fn campaign_pause_resume_and_cancel_answer_its_state_and_a_wrong_state_is_409() {
    let db = TestDb::new().await;
    let app = app_with_mailer(&db.pool);
    let body = json!({"name": "launch", "template": "news", "recipients": [
        {"to": "ann@example.com", "name": "Ann"}, {"to": "bob@example.com", "name": "Bob"}]});
    let (status, created) = call(
        &app,
        authed("POST", "/api/campaigns", Some(&body.to_string())),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap();
    let post = |action: &str| authed("POST", &format!("/api/campaigns/{id}/{action}"), None);

    let (status, paused) = call(&app, post("pause")).await;
    assert_eq!(
        (status, &paused["state"]),
        (StatusCode::OK, &json!("paused"))
    );
    let (status, resumed) = call(&app, post("resume")).await;
    assert_eq!(
        (status, &resumed["state"]),
        (StatusCode::OK, &json!("sending"))
    );
    let (status, cancelled) = call(&app, post("cancel")).await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(
        (
            &cancelled["state"],
            &cancelled["cancelled"],
            &cancelled["pending"]
        ),
        (&json!("cancelled"), &json!(2), &json!(0))
    );
    let (_, page) = call(
        &app,
        authed(
            "GET",
            &format!("/api/mail/deliveries?campaign={id}&status=cancelled"),
            None,
        ),
    )
    .await;
    assert_eq!(page["deliveries"].as_array().unwrap().len(), 2, "{page}");
    let (status, refused) = call(&app, post("resume")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("is cancelled"),
        "{refused}"
    );

    // A finished campaign (every recipient final) has nothing to pause.
    let (_, other) = call(
        &app,
        authed("POST", "/api/campaigns", Some(&body.to_string())),
    )
    .await;
    let other = other["id"].as_str().unwrap();
    sqlx::query(
        "update docket.mail_deliveries set status = 'suppressed', suppressed_reason = 'stub' \
         where campaign_id = $1",
    )
    .bind(uuid::Uuid::parse_str(other).unwrap())
    .execute(&db.pool)
    .await
    .unwrap();
    let (status, refused) = call(
        &app,
        authed("POST", &format!("/api/campaigns/{other}/pause"), None),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert!(
        refused["message"].as_str().unwrap().contains("is finished"),
        "{refused}"
    );

    let (status, _) = call(
        &app,
        authed(
            "POST",
            "/api/campaigns/01a20cbd-d4ef-7a16-b67a-f82bfa49f79d/pause",
            None,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(&app, authed("POST", "/api/campaigns/nope/pause", None)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = call(
        &app,
        axum::http::Request::post(format!("/api/campaigns/{id}/pause"))
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
