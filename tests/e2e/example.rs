//! The library example (`examples/signup.rs`): a request's own transaction enqueues the
//! jobs, a failed request enqueues none, and the embedded worker runs them.

#[allow(dead_code, unreachable_pub)]
#[path = "../../examples/signup.rs"]
mod signup;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use docket_mail::config::{Mode, SmtpUrl};
use docket_testkit::{eventually, SmtpSink, TestDb};
use tower::ServiceExt;

async fn post(app: &axum::Router, email: &str) -> StatusCode {
    let request = Request::post("/signup")
        .header("content-type", "application/json")
        .body(Body::from(format!(r#"{{"email": "{email}"}}"#)))
        .unwrap();
    app.clone().oneshot(request).await.unwrap().status()
}

#[tokio::test]
async fn a_signup_enqueues_its_jobs_in_its_own_transaction_and_the_embedded_worker_runs_them() {
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    signup::create_tables(&db.pool).await.unwrap();
    let app = signup::app(db.pool.clone());

    assert_eq!(post(&app, "ann@example.com").await, StatusCode::CREATED);
    assert_eq!(post(&app, "ANN@example.com").await, StatusCode::CONFLICT);
    let jobs: i64 = sqlx::query_scalar("select count(*) from docket.jobs")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        jobs, 2,
        "the refused signup rolled back its jobs with its row"
    );

    // The templates the example ships with: it runs as shipped.
    let templates = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/templates");
    let mail = docket_mail::MailConfig {
        mode: Mode::Smtp(SmtpUrl::parse(&sink.url()).unwrap()),
        from: Some("App <app@example.com>".to_owned()),
        public_url: Some("https://app.example.com".to_owned()),
        token_secret: Some(
            docket_mail::token::TokenSecret::new("example-token-secret-0123456789abcdef").unwrap(),
        ),
        template_dir: templates,
        ..docket_mail::MailConfig::default()
    };
    let mailer = Arc::new(docket_mail::Mailer::new(db.pool.clone(), mail).unwrap());
    let config = docket_worker::RuntimeConfig {
        poll_interval: Duration::from_millis(200),
        ..docket_worker::RuntimeConfig::default()
    };
    let runtime = signup::worker(db.pool.clone(), mailer, config).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let worker = tokio::spawn(runtime.run(stop.clone().cancelled_owned()));
    eventually(
        Duration::from_secs(30),
        "the sign-in email and the welcome",
        || async {
            let welcomed: bool =
                sqlx::query_scalar("select welcomed_at is not null from app_users")
                    .fetch_one(&db.pool)
                    .await
                    .unwrap();
            welcomed && sink.count_for("ann@example.com") == 1
        },
    )
    .await;
    stop.cancel();
    worker.await.unwrap().unwrap();
    let message = String::from_utf8_lossy(&sink.messages()[0].data).into_owned();
    assert!(
        message.contains("https://app.example/sign-in/1"),
        "{message}"
    );
}
