use axum::body::Body;
use axum::http::{Request, StatusCode};
use docket_queue::JobState;
use docket_testkit::{insert_job, JobOpts, TestDb};
use serde_json::{json, Value};

use crate::{app, authed, call, SECRET};

#[tokio::test]
async fn enqueue_list_show_cancel_replay_round_trip() {
    let db = TestDb::new().await;
    let app = app(&db.pool);
    let body = r#"{"kind": "email.send", "payload": {"to": "a@example.com"}, "queue": "mail", "priority": -2, "unique_key": "mail:a"}"#;
    let (status, created) = call(&app, authed("POST", "/api/jobs", Some(body))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["existing"], json!(false));
    // The same unique key gives the same job, and says so: 200, not 201.
    let (status, again) = call(&app, authed("POST", "/api/jobs", Some(body))).await;
    assert_eq!(again["id"], created["id"]);
    assert_eq!(
        (status, &again["existing"]),
        (StatusCode::OK, &json!(true)),
        "{again}"
    );

    let (status, job) = call(&app, authed("GET", &format!("/api/jobs/{id}"), None)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (&job["kind"], &job["queue"], &job["priority"], &job["state"]),
        (
            &json!("email.send"),
            &json!("mail"),
            &json!(-2),
            &json!("pending")
        )
    );

    let (status, page) = call(
        &app,
        authed("GET", "/api/jobs?state=pending&queue=mail&limit=10", None),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(page["next"], Value::Null);

    let (status, cancelled) = call(
        &app,
        authed("POST", &format!("/api/jobs/{id}/cancel"), None),
    )
    .await;
    assert_eq!(
        (status, &cancelled["state"]),
        (StatusCode::OK, &json!("cancelled"))
    );
    let (status, conflict) = call(
        &app,
        authed("POST", &format!("/api/jobs/{id}/cancel"), None),
    )
    .await;
    assert_eq!(
        (status, &conflict["error"]),
        (StatusCode::CONFLICT, &json!("conflict"))
    );
    let (status, replayed) = call(
        &app,
        authed("POST", &format!("/api/jobs/{id}/replay"), None),
    )
    .await;
    assert_eq!(
        (status, &replayed["state"], &replayed["attempt"]),
        (StatusCode::OK, &json!("pending"), &json!(0))
    );
}

#[tokio::test]
async fn list_pages_with_a_cursor() {
    let db = TestDb::new().await;
    for _ in 0..5 {
        insert_job(&db.pool, JobOpts::default()).await;
    }
    let app = app(&db.pool);
    let (_, first) = call(&app, authed("GET", "/api/jobs?limit=3", None)).await;
    assert_eq!(first["jobs"].as_array().unwrap().len(), 3);
    let next = first["next"].as_str().unwrap();
    let (_, second) = call(
        &app,
        authed("GET", &format!("/api/jobs?limit=3&before={next}"), None),
    )
    .await;
    assert_eq!(second["jobs"].as_array().unwrap().len(), 2);
    assert_eq!(second["next"], Value::Null);
}

#[tokio::test]
async fn bulk_replay_of_dead_letters_by_filter() {
    let db = TestDb::new().await;
    for queue in ["mail", "mail", "default"] {
        insert_job(
            &db.pool,
            JobOpts {
                state: Some(JobState::DeadLetter),
                queue: Some(queue.into()),
                ..Default::default()
            },
        )
        .await;
    }
    let (status, body) = call(
        &app(&db.pool),
        authed(
            "POST",
            "/api/jobs/replay-dead-letters",
            Some(r#"{"queue": "mail"}"#),
        ),
    )
    .await;
    assert_eq!((status, body), (StatusCode::OK, json!({"replayed": 2})));
}

#[tokio::test]
async fn bad_requests_get_a_4xx_with_a_clear_message_and_write_nothing() {
    let db = TestDb::new().await;
    let app = app(&db.pool);
    let cases: Vec<(Request<Body>, StatusCode, &str)> = vec![
        (
            authed("POST", "/api/jobs", Some("{not json")),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            authed(
                "POST",
                "/api/jobs",
                Some(r#"{"kind": "k", "colour": "red"}"#),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown field `colour`",
        ),
        (
            authed("POST", "/api/jobs", Some(r#"{"kind": ""}"#)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "kind must not be empty",
        ),
        (
            authed(
                "POST",
                "/api/jobs",
                Some(r#"{"kind": "k", "max_attempts": -1}"#),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "max_attempts must be at least 1",
        ),
        (
            authed(
                "POST",
                "/api/jobs",
                Some(r#"{"kind": "k", "priority": "high"}"#),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "priority",
        ),
        (
            Request::post("/api/jobs")
                .header("authorization", format!("Bearer {SECRET}"))
                .body(Body::from(r#"{"kind":"k"}"#))
                .unwrap(),
            StatusCode::BAD_REQUEST,
            "Content-Type",
        ),
        (
            authed(
                "POST",
                "/api/jobs",
                Some(&format!(
                    r#"{{"kind": "k", "payload": "{}"}}"#,
                    "x".repeat(70_000)
                )),
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            "larger than 65536 bytes",
        ),
        (
            authed("GET", "/api/jobs/not-a-uuid", None),
            StatusCode::BAD_REQUEST,
            "is not a job id",
        ),
        (
            authed(
                "GET",
                "/api/jobs/01a20cbd-d4ef-7a16-b67a-f82bfa49f79d",
                None,
            ),
            StatusCode::NOT_FOUND,
            "not found",
        ),
        (
            authed(
                "POST",
                "/api/jobs/01a20cbd-d4ef-7a16-b67a-f82bfa49f79d/replay",
                None,
            ),
            StatusCode::NOT_FOUND,
            "not found",
        ),
        (
            authed("GET", "/api/jobs?before=zzz", None),
            StatusCode::BAD_REQUEST,
            "not a valid cursor",
        ),
        (
            authed("GET", "/api/jobs?limit=0", None),
            StatusCode::BAD_REQUEST,
            "limit",
        ),
        (
            authed("GET", "/api/jobs?limit=many", None),
            StatusCode::BAD_REQUEST,
            "limit",
        ),
        (
            authed("GET", "/api/jobs?state=finished", None),
            StatusCode::BAD_REQUEST,
            "unknown job state",
        ),
        (
            authed("GET", "/api/jobs?colour=red", None),
            StatusCode::BAD_REQUEST,
            "colour",
        ),
        (
            authed("GET", "/api/nothing-here", None),
            StatusCode::NOT_FOUND,
            "no such route",
        ),
    ];
    for (request, expected, needle) in cases {
        let uri = request.uri().to_string();
        let (status, body) = call(&app, request).await;
        assert_eq!(status, expected, "{uri}: {body}");
        assert!(body["error"].is_string(), "{uri}: {body}");
        assert!(
            body.to_string().contains(needle),
            "{uri}: {body} lacks {needle:?}"
        );
    }
    let count: i64 = sqlx::query_scalar("select count(*) from docket.jobs")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(count, 0);
}

#[tokio::test]
async fn the_openapi_document_describes_every_route_and_the_job_fields() {
    let db = TestDb::new().await;
    let app = app(&db.pool);
    let (status, doc) = call(
        &app,
        axum::http::Request::get("/api/openapi.json")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let mut paths: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "/api/batches",
            "/api/batches/{id}",
            "/api/campaigns",
            "/api/campaigns/{id}",
            "/api/campaigns/{id}/cancel",
            "/api/campaigns/{id}/pause",
            "/api/campaigns/{id}/resume",
            "/api/cron",
            "/api/cron/{name}",
            "/api/cron/{name}/pause",
            "/api/cron/{name}/resume",
            "/api/health",
            "/api/jobs",
            "/api/jobs/replay-dead-letters",
            "/api/jobs/{id}",
            "/api/jobs/{id}/cancel",
            "/api/jobs/{id}/discard",
            "/api/jobs/{id}/replay",
            "/api/mail/bounces",
            "/api/mail/deliveries",
            "/api/queues/{name}/pause",
            "/api/queues/{name}/resume",
            "/metrics"
        ]
    );
    // Every documented path is served (an id where the path takes one).
    for path in &paths {
        let uri = path
            .replace("{id}", "01a20cbd-d4ef-7a16-b67a-f82bfa49f79d")
            .replace("{name}", "reports");
        let methods = doc["paths"][*path].as_object().unwrap();
        for method in methods.keys() {
            let (status, body) = call(
                &app,
                authed(
                    &method.to_uppercase(),
                    &uri,
                    (method == "post").then_some("{}"),
                ),
            )
            .await;
            assert_ne!(body["message"], "no such route", "{method} {uri}: {status}");
        }
    }
    let job = &doc["components"]["schemas"]["Job"]["properties"];
    for field in docket_testkit::factory::JOB_JSON_FIELDS {
        assert!(job.get(field).is_some(), "the Job schema lacks {field}");
    }
}

/// Issue #10: NUL characters and oversized unique keys came back as 500. Each is a 422
/// that names the field, and nothing is written.
#[tokio::test]
async fn nul_characters_and_oversized_unique_keys_are_422_naming_the_field() {
    let db = TestDb::new().await;
    let app = app(&db.pool);
    let long_key = "k".repeat(3000);
    let cases = [
        (
            "payload",
            r#"{"kind": "k", "payload": {"note": "a\u0000b"}}"#.to_owned(),
        ),
        ("kind", r#"{"kind": "k\u0000", "payload": {}}"#.to_owned()),
        (
            "queue",
            r#"{"kind": "k", "payload": {}, "queue": "q\u0000"}"#.to_owned(),
        ),
        (
            "unique_key",
            r#"{"kind": "k", "payload": {}, "unique_key": "a\u0000"}"#.to_owned(),
        ),
        (
            "unique_key",
            format!(r#"{{"kind": "k", "payload": {{}}, "unique_key": "{long_key}"}}"#),
        ),
    ];
    for (field, body) in cases {
        let (status, answer) = call(&app, authed("POST", "/api/jobs", Some(&body))).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{field}: {answer}"
        );
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(message.contains(field), "{field}: {answer}");
    }
    let count: i64 = sqlx::query_scalar("select count(*) from docket.jobs")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(count, 0);
}

/// Issue #15: job-admin statements had no statement timeout; a filter no index serves
/// could hold a connection for as long as it scanned.
#[tokio::test]
async fn job_admin_statements_run_under_a_statement_timeout() {
    let db = TestDb::new().await;
    let state = docket_http::AppState::new(
        db.pool.clone(),
        docket_http::Secret::new(SECRET),
        None,
        docket_http::HealthConfig::default(),
    );
    let timeout: String = sqlx::query_scalar("select current_setting('statement_timeout')")
        .fetch_one(&state.pool)
        .await
        .unwrap();
    assert_eq!(timeout, "5s");
}

#[tokio::test]
async fn a_batch_is_created_shown_with_its_progress_and_refused_when_empty() {
    let db = TestDb::new().await;
    let app = app(&db.pool);
    let body = r#"{"jobs": [{"kind": "k", "payload": {"n": 1}}, {"kind": "k"}],
                   "callback": {"kind": "report.done", "payload": {"to": "ops"}}}"#;
    let (status, created) = call(&app, authed("POST", "/api/batches", Some(body))).await;
    assert_eq!(
        (status, &created["total"]),
        (StatusCode::CREATED, &json!(2)),
        "{created}"
    );
    let id = created["id"].as_str().unwrap().to_owned();
    let (status, shown) = call(&app, authed("GET", &format!("/api/batches/{id}"), None)).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    for field in [
        "id",
        "total",
        "completed",
        "dead_letter",
        "cancelled",
        "remaining",
        "finished_at",
        "callback_job_id",
    ] {
        assert!(shown.get(field).is_some(), "{field}: {shown}");
    }
    assert_eq!(
        (&shown["remaining"], &shown["finished_at"]),
        (&json!(2), &Value::Null)
    );
    let (status, job_page) = call(&app, authed("GET", "/api/jobs?kind=k", None)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(job_page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|j| j["batch_id"] == json!(id)));
    let unknown = "01a20cbd-d4ef-7a16-b67a-f82bfa49f79d";
    let (status, _) = call(
        &app,
        authed("GET", &format!("/api/batches/{unknown}"), None),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, empty) = call(
        &app,
        authed("POST", "/api/batches", Some(r#"{"jobs": []}"#)),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{empty}");
}

/// Issue 21, case 7: a batch whose job's unique key matched a running job read back
/// `remaining: 0`, finished, and its callback ran while the work still ran. The batch is
/// refused with a 409 naming the job and the key; nothing of it is written.
#[tokio::test]
async fn a_batch_whose_job_would_be_deduplicated_into_a_running_job_is_a_conflict() {
    let db = TestDb::new().await;
    let app = app(&db.pool);
    let running = insert_job(
        &db.pool,
        JobOpts {
            state: Some(JobState::Processing),
            kind: Some("report".into()),
            unique_key: Some("nightly".into()),
            ..JobOpts::default()
        },
    )
    .await;
    let body = r#"{"jobs": [{"kind": "report", "unique_key": "nightly"}],
                   "callback": {"kind": "report.done"}}"#;
    let (status, answer) = call(&app, authed("POST", "/api/batches", Some(body))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    let message = answer["message"].as_str().unwrap();
    assert!(
        message.contains("\"nightly\"") && message.contains(&running.id.to_string()),
        "{message}"
    );
    assert!(docket_queue::batch::list(&db.pool, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(docket_queue::batch::finish_done(&db.pool, 10)
        .await
        .unwrap()
        .is_empty());
}

/// Issue #21 case 11: a NUL in a name that reaches SQL as text, and a timestamp outside
/// PostgreSQL's range, were 500s. Each is a 4xx whose message names the field.
#[tokio::test]
async fn nul_names_and_out_of_range_timestamps_are_4xx_naming_the_field() {
    let db = TestDb::new().await;
    let app = app(&db.pool);
    let far = "-5000-01-01T00:00:00Z";
    let cases: Vec<(&str, &str, String, &str)> = vec![
        ("GET", "/api/jobs?queue=a%00b", String::new(), "queue"),
        ("GET", "/api/jobs?kind=%00", String::new(), "kind"),
        ("GET", "/api/mail/deliveries?to=a%00b", String::new(), "to"),
        ("POST", "/api/cron/a%00b/pause", String::new(), "schedule"),
        ("POST", "/api/cron/a%00b/resume", String::new(), "schedule"),
        (
            "POST",
            "/api/jobs",
            format!(r#"{{"kind": "k", "run_at": "{far}"}}"#),
            "run_at",
        ),
        (
            "POST",
            "/api/jobs",
            format!(r#"{{"kind": "k", "expires_at": "{far}"}}"#),
            "expires_at",
        ),
        (
            "POST",
            "/api/jobs",
            r#"{"kind": "k", "run_at": "+10000-01-01T00:00:00Z"}"#.to_owned(),
            "run_at",
        ),
        (
            "POST",
            "/api/batches",
            format!(r#"{{"jobs": [{{"kind": "k", "run_at": "{far}"}}]}}"#),
            "run_at",
        ),
        (
            "POST",
            "/api/batches",
            format!(r#"{{"jobs": [{{"kind": "k", "expires_at": "{far}"}}]}}"#),
            "expires_at",
        ),
        (
            "POST",
            "/api/jobs/replay-dead-letters",
            r#"{"queue": "a\u0000b"}"#.to_owned(),
            "queue",
        ),
        (
            "POST",
            "/api/jobs/replay-dead-letters",
            r#"{"kind": "\u0000"}"#.to_owned(),
            "kind",
        ),
        (
            "POST",
            "/api/jobs/replay-dead-letters",
            format!(r#"{{"since": "{far}"}}"#),
            "since",
        ),
        (
            "POST",
            "/api/jobs/replay-dead-letters",
            format!(r#"{{"until": "{far}"}}"#),
            "until",
        ),
    ];
    let mut wrong = Vec::new();
    for (method, uri, body, field) in cases {
        let body = (!body.is_empty()).then_some(body.as_str());
        let (status, answer) = call(&app, authed(method, uri, body)).await;
        let message = answer["message"].as_str().unwrap_or_default();
        if !status.is_client_error() || !message.contains(field) {
            wrong.push(format!("{method} {uri} {body:?}: {status} {answer}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "not a 4xx naming the field:\n{}",
        wrong.join("\n")
    );
    let count: i64 = sqlx::query_scalar("select count(*) from docket.jobs")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(count, 0);
}

/// The OpenAPI document: anyone gets the generated one, without this server's schedule
/// names and without a database query; the bearer gets the names, read at most every few
/// seconds. Both answer while the schedules table is locked.
#[tokio::test]
async fn the_openapi_document_is_cached_and_names_schedules_only_to_the_bearer() {
    let db = TestDb::new().await;
    let def = docket_queue::cron::Schedule {
        max_attempts: 3,
        ..docket_queue::cron::Schedule::new("nightly-ledger-export", "0 0 3 * * *", "ledger.export")
    };
    docket_queue::cron::register(&db.pool, &def, None)
        .await
        .unwrap();
    let app = app(&db.pool);
    let anonymous = || {
        axum::http::Request::get("/api/openapi.json")
            .body(Body::empty())
            .unwrap()
    };
    let (status, doc) = call(&app, authed("GET", "/api/openapi.json", None)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc.to_string().contains("nightly-ledger-export"), "{doc}");

    // Anything that reads the schedules now waits (up to the statement timeout, 5 s).
    let mut lock = db.pool.begin().await.unwrap();
    sqlx::query("lock table docket.schedules in access exclusive mode")
        .execute(&mut *lock)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    for _ in 0..20 {
        let (status, doc) = call(&app, anonymous()).await;
        assert_eq!(status, StatusCode::OK);
        assert!(doc["paths"]["/api/cron"].is_object());
        assert!(!doc.to_string().contains("nightly-ledger-export"), "{doc}");
        let (status, doc) = call(&app, authed("GET", "/api/openapi.json", None)).await;
        assert_eq!(status, StatusCode::OK);
        assert!(doc.to_string().contains("nightly-ledger-export"));
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "no request read the locked table: {:?}",
        started.elapsed()
    );
    lock.rollback().await.unwrap();
}
