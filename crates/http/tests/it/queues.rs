//! Queue controls over HTTP: pause and resume, shown in the bearer snapshot.

use axum::http::StatusCode;
use docket_testkit::TestDb;

use crate::{app, authed, call};

#[tokio::test]
async fn a_queue_paused_over_http_shows_paused_in_the_snapshot_until_resumed() {
    let db = TestDb::new().await;
    let app = app(&db.pool);
    let (status, control) = call(&app, authed("POST", "/api/queues/reports/pause", None)).await;
    assert_eq!(status, StatusCode::OK, "{control}");
    assert_eq!(
        (&control["queue"], &control["paused"]),
        (&"reports".into(), &true.into())
    );
    let (_, health) = call(&app, authed("GET", "/api/health", None)).await;
    assert_eq!(
        health["queue"]["queues"]["reports"]["paused"], true,
        "{health}"
    );
    let (status, control) = call(&app, authed("POST", "/api/queues/reports/resume", None)).await;
    assert_eq!(
        (status, &control["paused"]),
        (StatusCode::OK, &false.into())
    );
    let (_, health) = call(&app, authed("GET", "/api/health", None)).await;
    assert_ne!(
        health["queue"]["queues"]["reports"]["paused"], true,
        "{health}"
    );
    let unauthorised = axum::http::Request::post("/api/queues/reports/pause")
        .body(axum::body::Body::empty())
        .unwrap();
    let (status, _) = call(&app, unauthorised).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = call(
        &app,
        authed(
            "POST",
            &format!("/api/queues/{}/pause", "q".repeat(128)),
            None,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
