//! The operations page over the router: sign-in, the session cookie, CSRF refusals, the
//! security headers, and the JSON routes behind its buttons. The page in a real browser is
//! in the end-to-end tests.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use docket_queue::JobState;
use docket_testkit::{insert_job, JobOpts, TestDb};
use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::{app, authed, call, recorder, SECRET};

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

async fn send(app: &Router, request: Request<Body>) -> Answer {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

fn form(uri: &str, cookie: &str, body: &str) -> Request<Body> {
    Request::post(uri)
        .header(header::COOKIE, cookie)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body.to_owned()))
        .unwrap()
}

fn page(uri: &str, cookie: &str) -> Request<Body> {
    Request::get(uri)
        .header(header::COOKIE, cookie)
        .body(Body::empty())
        .unwrap()
}

/// `name=value` of a `Set-Cookie` header naming `name`.
fn set_cookie(answer: &Answer, name: &str) -> Option<(String, String)> {
    answer
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| (v.split(';').next().unwrap().to_owned(), v))
}

/// The value of the first hidden `csrf` field in a page.
fn csrf_field(html: &str) -> String {
    let at = html.find(r#"name="csrf" value=""#).expect("a csrf field") + 19;
    html[at..].split('"').next().unwrap().to_owned()
}

/// Signs in as a browser does; returns the session cookie (`docket_ops=...`).
async fn sign_in(app: &Router) -> String {
    let form_page = send(app, Request::get("/ops/login").body(Body::empty()).unwrap()).await;
    assert_eq!(form_page.status, StatusCode::OK);
    let (sign_in_cookie, _) = set_cookie(&form_page, "docket_ops_sign_in").unwrap();
    let token = csrf_field(&form_page.body);
    let answer = send(
        app,
        form(
            "/ops/login",
            &sign_in_cookie,
            &format!("secret={SECRET}&csrf={token}"),
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    let (cookie, attributes) = set_cookie(&answer, "docket_ops").unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/ops", "Max-Age=28800"] {
        assert!(attributes.contains(attribute), "{attributes}");
    }
    cookie
}

#[tokio::test]
async fn without_a_session_the_page_redirects_to_sign_in_and_every_answer_has_the_security_headers()
{
    let db = TestDb::new().await;
    let app = app(&db.pool);
    let answer = send(&app, page("/ops", "docket_ops=1.2.3")).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    assert_eq!(answer.headers[header::LOCATION], "/ops/login");
    for path in ["/ops", "/ops/login", "/ops/jobs/x"] {
        let answer = send(&app, page(path, "")).await;
        let csp = answer.headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
        assert_eq!(answer.headers[header::X_FRAME_OPTIONS], "DENY", "{path}");
        assert_eq!(answer.headers[header::CACHE_CONTROL], "no-store", "{path}");
    }
    let job_page = send(&app, page("/ops/jobs/x", "")).await;
    assert_eq!(
        job_page.status,
        StatusCode::SEE_OTHER,
        "no job data without a session"
    );
}

#[tokio::test]
async fn a_wrong_secret_is_refused_slowly_counted_and_a_right_one_opens_a_session() {
    let db = TestDb::new().await;
    let app = app(&db.pool);
    let form_page = send(
        &app,
        Request::get("/ops/login").body(Body::empty()).unwrap(),
    )
    .await;
    let (sign_in_cookie, _) = set_cookie(&form_page, "docket_ops_sign_in").unwrap();
    let token = csrf_field(&form_page.body);
    let failures_before = auth_failures();

    let started = Instant::now();
    let answer = send(
        &app,
        form(
            "/ops/login",
            &sign_in_cookie,
            &format!("secret=guess&csrf={token}"),
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert!(answer.body.contains("That secret is not right."));
    assert!(set_cookie(&answer, "docket_ops").is_none());
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "a wrong guess waits"
    );
    assert!(
        auth_failures() > failures_before,
        "counted like a bearer failure"
    );

    let without_token = send(
        &app,
        form("/ops/login", &sign_in_cookie, &format!("secret={SECRET}")),
    )
    .await;
    assert_eq!(without_token.status, StatusCode::FORBIDDEN);
    assert!(set_cookie(&without_token, "docket_ops").is_none());

    let cookie = sign_in(&app).await;
    let overview = send(&app, page("/ops", &cookie)).await;
    assert_eq!(overview.status, StatusCode::OK);
    assert!(overview.body.contains("Status:"), "{}", overview.body);
    assert!(!overview.body.contains(SECRET));
}

fn auth_failures() -> u64 {
    recorder()
        .render()
        .lines()
        .find(|l| l.starts_with("docket_http_auth_failures_total"))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn an_action_needs_the_session_and_its_csrf_token() {
    let db = TestDb::new().await;
    let app = app(&db.pool);
    let cookie = sign_in(&app).await;
    let csrf = csrf_field(&send(&app, page("/ops", &cookie)).await.body);

    let forged = send(&app, form("/ops/queues/reports/pause", &cookie, "")).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let wrong = send(
        &app,
        form("/ops/queues/reports/pause", &cookie, "csrf=00ff"),
    )
    .await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    let no_session = send(
        &app,
        form("/ops/queues/reports/pause", "", &format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(no_session.status, StatusCode::FORBIDDEN);
    assert!(docket_queue::queues::paused(&db.pool)
        .await
        .unwrap()
        .is_empty());

    let done = send(
        &app,
        form(
            "/ops/queues/reports/pause",
            &cookie,
            &format!("csrf={csrf}"),
        ),
    )
    .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    assert_eq!(
        docket_queue::queues::paused(&db.pool).await.unwrap(),
        ["reports"]
    );

    let signed_out = send(&app, form("/ops/logout", &cookie, &format!("csrf={csrf}"))).await;
    assert_eq!(signed_out.status, StatusCode::SEE_OTHER);
    assert!(set_cookie(&signed_out, "docket_ops")
        .unwrap()
        .1
        .contains("Max-Age=0"));
    let after = send(&app, page("/ops", &cookie)).await;
    assert_eq!(
        after.status,
        StatusCode::SEE_OTHER,
        "the old cookie is dead"
    );
}

#[tokio::test]
async fn the_page_shows_a_dead_letter_and_the_bearer_can_read_it_too() {
    let db = TestDb::new().await;
    let job = insert_job(
        &db.pool,
        JobOpts {
            state: Some(JobState::DeadLetter),
            kind: Some("invoice.send".into()),
            ..Default::default()
        },
    )
    .await;
    let app = app(&db.pool);
    let (status, html) = call(&app, authed("GET", "/ops", None)).await;
    assert_eq!(status, StatusCode::OK);
    let html = html.as_str().unwrap();
    assert!(html.contains(&format!("/ops/jobs/{}", job.id)), "{html}");
    assert!(html.contains("invoice.send"));
    let (status, html) = call(&app, authed("GET", &format!("/ops/jobs/{}", job.id), None)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.as_str().unwrap().contains("Discard"));
}

/// One verdict and one set of words per condition: the page's checks are the health
/// document's findings, and a warning shows in the header instead of a bare `ok`.
#[tokio::test]
async fn the_page_says_what_the_health_document_says_and_counts_warnings_in_its_header() {
    let db = TestDb::new().await;
    insert_job(
        &db.pool,
        JobOpts {
            state: Some(JobState::DeadLetter),
            ..Default::default()
        },
    )
    .await;
    let app = app(&db.pool);
    let (_, document) = call(&app, authed("GET", "/api/health", None)).await;
    assert_eq!(document["status"], "ok", "{document}");
    let dead_letter = document["findings"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["name"] == "dead_letter"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(dead_letter["verdict"], "warn", "{document}");
    let (_, html) = call(&app, authed("GET", "/ops", None)).await;
    let html = html.as_str().unwrap();
    let escaped = |s: &str| s.replace('\'', "&#x27;").replace('"', "&quot;");
    for words in [&dead_letter["detail"], &dead_letter["advice"]] {
        let words = escaped(words.as_str().unwrap());
        assert!(html.contains(&words), "the page lacks {words:?}");
    }
    assert!(html.contains("1 warning<"), "the header counts the warning");
}

#[tokio::test]
async fn discard_cancels_a_dead_letter_and_refuses_anything_else() {
    let db = TestDb::new().await;
    let app = app(&db.pool);
    let dead = insert_job(
        &db.pool,
        JobOpts {
            state: Some(JobState::DeadLetter),
            ..Default::default()
        },
    )
    .await;
    let (status, job) = call(
        &app,
        authed("POST", &format!("/api/jobs/{}/discard", dead.id), None),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{job}");
    assert_eq!(job["state"], "cancelled");
    let history = job["errors"].as_array().unwrap();
    assert!(
        history.last().unwrap()["error"]
            .as_str()
            .unwrap()
            .starts_with("discarded by an operator ("),
        "{job}"
    );
    let pending = insert_job(&db.pool, JobOpts::default()).await;
    let (status, body) = call(
        &app,
        authed("POST", &format!("/api/jobs/{}/discard", pending.id), None),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let again = docket_queue::admin::show(&db.pool, pending.id)
        .await
        .unwrap();
    assert_eq!(
        again.state,
        JobState::Pending,
        "a refused discard changes nothing"
    );
}

/// A sending campaign has Pause and Cancel buttons; they post with the page's CSRF token,
/// and a cancelled one has none (a pause posted anyway says why it was refused).
#[tokio::test]
async fn campaign_buttons_pause_and_cancel_with_the_csrf_token() {
    let db = TestDb::new().await;
    let app = app(&db.pool);
    let catalog = docket_mail::template::Catalog::built_in();
    let from = "Docket <docket@example.com>".parse().unwrap();
    let recipients = ["ann@example.com", "bob@example.com"]
        .into_iter()
        .map(|to| docket_mail::campaign::Recipient {
            to: to.to_owned(),
            name: None,
            locale: None,
            vars: serde_json::json!({"campaign": {}}),
        })
        .collect();
    let new =
        docket_mail::campaign::NewCampaign::new("launch", "docket/campaign_finished", recipients);
    let id = docket_mail::campaign::create(&db.pool, &catalog, &from, &new)
        .await
        .unwrap();
    let state = || async {
        docket_mail::campaign::show(&db.pool, id)
            .await
            .unwrap()
            .state
    };
    let cookie = sign_in(&app).await;
    let html = send(&app, page("/ops", &cookie)).await.body;
    assert!(
        html.contains(&format!("action=\"/ops/campaigns/{id}/pause\""))
            && html.contains(&format!("action=\"/ops/campaigns/{id}/cancel\"")),
        "{html}"
    );
    let csrf = csrf_field(&html);

    let forged = send(
        &app,
        form(&format!("/ops/campaigns/{id}/pause"), &cookie, ""),
    )
    .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert_eq!(state().await, "sending");
    let paused = send(
        &app,
        form(
            &format!("/ops/campaigns/{id}/pause"),
            &cookie,
            &format!("csrf={csrf}"),
        ),
    )
    .await;
    assert_eq!(paused.status, StatusCode::SEE_OTHER, "{}", paused.body);
    assert_eq!(state().await, "paused");
    let html = send(&app, page("/ops?done=campaign-pause", &cookie))
        .await
        .body;
    assert!(html.contains("Campaign paused"), "{html}");
    assert!(html.contains(&format!("action=\"/ops/campaigns/{id}/resume\"")));

    let cancelled = send(
        &app,
        form(
            &format!("/ops/campaigns/{id}/cancel"),
            &cookie,
            &format!("csrf={csrf}"),
        ),
    )
    .await;
    assert_eq!(cancelled.status, StatusCode::SEE_OTHER);
    assert_eq!(state().await, "cancelled");
    let html = send(&app, page("/ops", &cookie)).await.body;
    assert!(
        !html.contains(&format!("/ops/campaigns/{id}/")),
        "no buttons: {html}"
    );
    assert!(html.contains("2 cancelled, 0 to go of 2"), "{html}");
    let refused = send(
        &app,
        form(
            &format!("/ops/campaigns/{id}/resume"),
            &cookie,
            &format!("csrf={csrf}"),
        ),
    )
    .await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert!(refused.body.contains("is cancelled"), "{}", refused.body);
}

#[tokio::test]
async fn cron_schedules_are_listed_and_an_unknown_one_is_404() {
    let db = TestDb::new().await;
    let app = app(&db.pool);
    let (status, list) = call(&app, authed("GET", "/api/cron", None)).await;
    assert_eq!((status, list), (StatusCode::OK, serde_json::json!([])));
    let (status, body) = call(&app, authed("POST", "/api/cron/nightly/pause", None)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

/// Signing out holds for every `serve` and across restarts: a second router (another
/// process, or this one restarted) refuses the signed-out cookie and its CSRF token. "Sign
/// out everywhere" ends the sessions signed in before it, in every process.
#[tokio::test]
async fn sign_out_holds_across_processes_and_sign_out_everywhere_ends_every_session() {
    let db = TestDb::new().await;
    let first = app(&db.pool);
    let cookie = sign_in(&first).await;
    let csrf = csrf_field(&send(&first, page("/ops", &cookie)).await.body);
    let signed_out = send(
        &first,
        form("/ops/logout", &cookie, &format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(signed_out.status, StatusCode::SEE_OTHER);

    let restarted = app(&db.pool);
    let after = send(&restarted, page("/ops", &cookie)).await;
    assert_eq!(after.status, StatusCode::SEE_OTHER, "signed out stays out");
    let resume = send(
        &restarted,
        form(
            "/ops/queues/reports/pause",
            &cookie,
            &format!("csrf={csrf}"),
        ),
    )
    .await;
    assert_eq!(resume.status, StatusCode::FORBIDDEN);
    assert!(docket_queue::queues::paused(&db.pool)
        .await
        .unwrap()
        .is_empty());

    // Two browsers, each on its own process; one signs out everywhere.
    let (one, two) = (sign_in(&first).await, sign_in(&restarted).await);
    let page_one = send(&first, page("/ops", &one)).await;
    assert!(
        page_one.body.contains("Sign out everywhere"),
        "{}",
        page_one.body
    );
    let csrf_one = csrf_field(&page_one.body);
    let everywhere = send(
        &first,
        form(
            "/ops/logout",
            &one,
            &format!("csrf={csrf_one}&everywhere=1"),
        ),
    )
    .await;
    assert_eq!(everywhere.status, StatusCode::SEE_OTHER);
    for (app, cookie) in [(&first, &one), (&restarted, &two), (&first, &two)] {
        let answer = send(app, page("/ops", cookie)).await;
        assert_eq!(
            answer.status,
            StatusCode::SEE_OTHER,
            "every session is over"
        );
    }
}
