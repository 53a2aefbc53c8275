use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::Utc;
use docket_http::HealthConfig;
use docket_queue::JobState;
use docket_testkit::{insert_job, JobOpts, TestDb};
use serde_json::json;
use sqlx::postgres::PgPoolOptions;

use crate::{app, app_with, authed, call, get, SECRET};

#[tokio::test]
async fn public_get_and_head_answer_ok_with_a_healthy_database() {
    let db = TestDb::new().await;
    let app = app(&db.pool);
    let (status, body) = call(&app, get("/api/health")).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));
    let (status, body) = call(
        &app,
        Request::head("/api/health").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!((status, body), (StatusCode::OK, json!("")));
}

#[tokio::test]
async fn a_database_that_is_down_gives_503_down_within_the_check_timeout() {
    // Nothing listens on port 9 of loopback.
    let pool = PgPoolOptions::new()
        .connect_lazy("postgres://nobody@127.0.0.1:9/none")
        .unwrap();
    let config = HealthConfig {
        check_timeout: Duration::from_millis(500),
        cache_ttl: Duration::ZERO,
        ..HealthConfig::default()
    };
    let app = app_with(&pool, docket_http::Secret::new(SECRET), config);
    let started = Instant::now();
    let (status, body) = call(&app, get("/api/health")).await;
    assert_eq!(
        (status, body),
        (StatusCode::SERVICE_UNAVAILABLE, json!({"status": "down"}))
    );
    let (status, _) = call(
        &app,
        Request::head("/api/health").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (status, body) = call(&app, authed("GET", "/api/health", None)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        (&body["status"], &body["checks"]["database"], &body["queue"]),
        (&json!("down"), &json!("down"), &json!(null))
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "probes answer within the check timeout"
    );
}

#[tokio::test]
async fn the_bearer_gets_the_snapshot_exactly_as_prepared() {
    let db = TestDb::new().await;
    let now = Utc::now();
    let at = |secs: i64| Some(now - chrono::Duration::seconds(secs));
    let job = |state, queue: &str, run_at| JobOpts {
        state: Some(state),
        queue: Some(queue.into()),
        run_at,
        ..Default::default()
    };
    insert_job(&db.pool, job(JobState::Pending, "default", at(30))).await;
    insert_job(&db.pool, job(JobState::Pending, "default", at(-3600))).await; // scheduled: not ready
    insert_job(&db.pool, job(JobState::Retrying, "mail", at(10))).await;
    insert_job(&db.pool, job(JobState::DeadLetter, "mail", at(99))).await;
    let (status, body) = call(&app(&db.pool), authed("GET", "/api/health", None)).await;
    assert_eq!(status, StatusCode::OK);
    let queue = &body["queue"];
    assert_eq!(
        (
            &queue["pending"],
            &queue["retrying"],
            &queue["processing"],
            &queue["dead_letter"]
        ),
        (&json!(2), &json!(1), &json!(0), &json!(1))
    );
    let age = queue["oldest_ready_age_seconds"].as_f64().unwrap();
    assert!((30.0..32.0).contains(&age), "oldest ready age {age}");
    assert_eq!(queue["queues"]["mail"]["retrying"], 1);
    assert_eq!(queue["queues"]["default"]["pending"], 2);
    // Jobs are ready and no worker is alive: degraded; a dead letter warns.
    assert_eq!(body["status"], "degraded");
    assert_eq!(
        body["checks"],
        json!({"database": "ok", "workers": "degraded", "backlog": "ok", "dead_letter": "warn", "unhandled_kinds": "ok", "cron": "ok", "mail": "ok"})
    );
}

#[tokio::test]
async fn wrong_tokens_get_401_and_the_body_leaks_nothing() {
    let db = TestDb::new().await;
    let app = app(&db.pool);
    let wrong = [
        "Bearer wrong-token-of-the-same-len!!".to_owned(),
        "Bearer ".to_owned(),
        "Bearer x".to_owned(),
        format!("bearer {SECRET}"),
        format!("Basic {SECRET}"),
        format!("Bearer {SECRET} "),
        SECRET.to_owned(),
    ];
    for header in wrong {
        for uri in ["/api/health", "/metrics", "/api/jobs"] {
            let request = Request::get(uri)
                .header("authorization", header.as_str())
                .body(Body::empty())
                .unwrap();
            let (status, body) = call(&app, request).await;
            assert_eq!(
                (status, body),
                (StatusCode::UNAUTHORIZED, json!({"error": "unauthorized"})),
                "{header:?} on {uri}"
            );
        }
    }
}

#[tokio::test]
async fn the_public_body_holds_the_status_alone_whatever_the_state() {
    let db = TestDb::new().await;
    for state in [
        JobState::Pending,
        JobState::DeadLetter,
        JobState::Processing,
    ] {
        insert_job(
            &db.pool,
            JobOpts {
                state: Some(state),
                run_at: Some(Utc::now() - chrono::Duration::hours(1)),
                ..Default::default()
            },
        )
        .await;
    }
    let (status, body) = call(&app(&db.pool), get("/api/health")).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"status": "degraded"}))
    );
}

#[tokio::test]
async fn without_a_configured_secret_guarded_routes_refuse_everyone() {
    let db = TestDb::new().await;
    let app = app_with(&db.pool, None, HealthConfig::default());
    for request in [
        get("/api/jobs"),
        authed("GET", "/api/jobs", None),
        authed("GET", "/metrics", None),
        authed("GET", "/api/health", None),
    ] {
        let (status, body) = call(&app, request).await;
        assert_eq!(
            (status, body),
            (StatusCode::UNAUTHORIZED, json!({"error": "unauthorized"}))
        );
    }
    let (status, body) = call(&app, get("/api/health")).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));
}

/// Issue #8: a snapshot that could not be taken in time (a huge backlog, here a lock that
/// blocks it) made the health check answer `down` and HEAD 503 while the database was
/// fine. The database check means "the database answers"; the rest degrades.
#[tokio::test]
async fn a_snapshot_that_cannot_be_taken_in_time_degrades_the_status_but_is_not_down() {
    let db = TestDb::new().await;
    insert_job(&db.pool, JobOpts::default()).await;
    let config = HealthConfig {
        check_timeout: Duration::from_secs(1),
        cache_ttl: Duration::ZERO,
        ..HealthConfig::default()
    };
    let app = app_with(&db.pool, docket_http::Secret::new(SECRET), config);
    // A good report first, so there is an earlier snapshot to show.
    let (status, _) = call(&app, authed("GET", "/api/health", None)).await;
    assert_eq!(status, StatusCode::OK);
    let mut blocker = db.pool.begin().await.unwrap();
    sqlx::query("lock table docket.jobs in access exclusive mode")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let (status, body) = call(
        &app,
        Request::head("/api/health").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = call(&app, authed("GET", "/api/health", None)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(body["checks"]["database"], "ok", "{body}");
    assert_eq!(body["checks"]["backlog"], "unknown", "{body}");
    assert_eq!(
        body["queue"]["pending"], 1,
        "the earlier snapshot is shown: {body}"
    );
    assert!(body["snapshot_stale_seconds"].as_f64().is_some(), "{body}");
    blocker.rollback().await.unwrap();
}

/// Wrong bearer tokens wait in the same bounded slow lane as wrong sign-ins: each wrong
/// guess is answered after a second at the earliest, the line holds a few at most, and the
/// rest are answered 429 at once without being compared.
#[tokio::test]
async fn wrong_bearers_wait_in_a_bounded_slow_lane() {
    let db = TestDb::new().await;
    let app = app(&db.pool);
    let places = docket_http::auth::WRONG_SECRET_PLACES;
    let started = Instant::now();
    let guesses = (0..places + 6).map(|n| {
        let app = app.clone();
        async move {
            let request = Request::get("/ops")
                .header("authorization", format!("Bearer guess-{n}"))
                .body(Body::empty())
                .unwrap();
            let response = tower::ServiceExt::oneshot(app, request).await.unwrap();
            (
                response.status(),
                response.headers().get("retry-after").cloned(),
                started.elapsed(),
            )
        }
    });
    let answers = futures_join_all(guesses).await;
    let refused: Vec<_> = answers
        .iter()
        .filter(|a| a.0 == StatusCode::UNAUTHORIZED)
        .collect();
    let busy: Vec<_> = answers
        .iter()
        .filter(|a| a.0 == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert_eq!(refused.len() + busy.len(), answers.len(), "{answers:?}");
    assert!(refused.len() <= places, "{answers:?}");
    for (_, _, elapsed) in &refused {
        assert!(
            *elapsed >= Duration::from_millis(900),
            "a wrong guess waits: {answers:?}"
        );
        assert!(
            *elapsed <= Duration::from_millis(places as u64 * 1000 + 900),
            "the line is bounded: {answers:?}"
        );
    }
    assert!(!busy.is_empty(), "{answers:?}");
    for (_, retry_after, elapsed) in &busy {
        assert!(
            *elapsed < Duration::from_millis(500),
            "answered at once: {answers:?}"
        );
        assert_eq!(retry_after.as_ref().unwrap(), "1");
    }
}

/// A guesser that hangs up as soon as no answer came (a wrong guess) still pays the wrong
/// guess's penalty: the next comparison in this process, even of the right secret, waits
/// for it. Before, dropping the request dropped the wait, so a client with a 50 ms
/// timeout guessed at 20 a second and the right secret answered at once.
#[tokio::test]
async fn hanging_up_does_not_cut_a_wrong_guess_short() {
    let db = TestDb::new().await;
    let app = app(&db.pool);
    let bearer = |token: &str| {
        Request::get("/api/health")
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap()
    };
    let started = Instant::now();
    let guess = tower::ServiceExt::oneshot(app.clone(), bearer("a-wrong-guess-of-some-length"));
    assert!(
        tokio::time::timeout(Duration::from_millis(50), guess)
            .await
            .is_err(),
        "a wrong guess is not answered at once"
    );
    let response = tower::ServiceExt::oneshot(app, bearer(SECRET))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "the right secret was compared {:?} after a wrong guess whose client hung up",
        started.elapsed()
    );
}

async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}
