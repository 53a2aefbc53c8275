//! `docket_http::router` nested under `/docket` in an application's own axum router, with
//! a route of the application's and its own authentication in front (as
//! `docs/embedding.md` shows), served on a real port: sign-in, a crawl of every link and
//! form of the operations pages, actions that come back under the prefix, the JSON API and
//! the OpenAPI document's server.

use std::collections::{BTreeSet, HashMap, VecDeque};

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{Duration, Utc};
use docket_http::{AppState, HealthConfig, Secret};
use docket_queue::JobState;
use docket_testkit::{insert_job, JobOpts, TestDb};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use serde_json::Value;

use crate::{recorder, SECRET};

const PREFIX: &str = "/docket";

/// The application's own sign-in, checked before any of Docket's routes: a header here
/// (a real application reads its session).
const APP_USER: &str = "x-app-user";

/// The application's middleware from `docs/embedding.md`: staff only, except the public
/// health probe and the unsubscribe links (mail recipients are nobody's staff).
async fn staff_only(request: Request, next: Next) -> Response {
    // The nested router sees its own paths: `/ops/...`, not `/docket/ops/...`.
    let path = request.uri().path();
    let public = path == "/api/health" || path.starts_with("/unsubscribe/");
    let staff = request
        .headers()
        .get(APP_USER)
        .is_some_and(|user| user == "staff");
    if public || staff {
        next.run(request).await
    } else {
        StatusCode::UNAUTHORIZED.into_response()
    }
}

/// The application's router: its own page at `/`, Docket under [`PREFIX`] behind
/// [`staff_only`].
fn application(pool: &sqlx::PgPool) -> Router {
    let docket = docket_http::router(AppState::new(
        pool.clone(),
        Secret::new(SECRET),
        Some(recorder()),
        HealthConfig {
            cache_ttl: std::time::Duration::ZERO,
            ..HealthConfig::default()
        },
    ))
    .route_layer(axum::middleware::from_fn(staff_only));
    Router::new()
        .route("/", get(|| async { "the application's own page" }))
        .nest(PREFIX, docket)
}

/// A browser, as far as the test needs one: sends the application's sign-in header, keeps
/// cookies by their `Path` (RFC 6265's path match) and follows nothing by itself.
struct Browser {
    origin: String,
    client: Client<HttpConnector, Full<Bytes>>,
    /// name → (value, path).
    cookies: HashMap<String, (String, String)>,
    staff: bool,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn location(&self) -> &str {
        self.headers[header::LOCATION].to_str().unwrap()
    }
}

/// Whether a cookie of `cookie_path` goes with a request for `path` (RFC 6265 5.1.4).
fn path_matches(cookie_path: &str, path: &str) -> bool {
    path == cookie_path
        || (path.starts_with(cookie_path)
            && (cookie_path.ends_with('/') || path[cookie_path.len()..].starts_with('/')))
}

impl Browser {
    async fn send(&mut self, method: Method, path: &str, form: Option<&str>) -> Answer {
        let bare = path.split('?').next().unwrap();
        let cookie: Vec<String> = self
            .cookies
            .iter()
            .filter(|(_, (_, cookie_path))| path_matches(cookie_path, bare))
            .map(|(name, (value, _))| format!("{name}={value}"))
            .collect();
        let mut request = axum::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.origin));
        if !cookie.is_empty() {
            request = request.header(header::COOKIE, cookie.join("; "));
        }
        if self.staff {
            request = request.header(APP_USER, "staff");
        }
        if form.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        }
        let body = Full::new(Bytes::from(form.unwrap_or("").to_owned()));
        let response = self
            .client
            .request(request.body(body).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        for set in headers.get_all(header::SET_COOKIE) {
            let set = set.to_str().unwrap();
            let (pair, attributes) = set.split_once(';').unwrap_or((set, ""));
            let (name, value) = pair.split_once('=').unwrap();
            let path = attributes
                .split(';')
                .find_map(|a| a.trim().strip_prefix("Path="))
                .expect("every cookie names its path")
                .to_owned();
            if attributes.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies
                    .insert(name.to_owned(), (value.to_owned(), path));
            }
        }
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    async fn get(&mut self, path: &str) -> Answer {
        self.send(Method::GET, path, None).await
    }

    async fn post(&mut self, path: &str, form: &str) -> Answer {
        self.send(Method::POST, path, Some(form)).await
    }

    /// A GET with the bearer, as an API client sends it.
    async fn send_bearer(&mut self, path: &str) -> Answer {
        let request = axum::http::Request::get(format!("{}{path}", self.origin))
            .header(header::AUTHORIZATION, format!("Bearer {SECRET}"))
            .header(APP_USER, "staff")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = self.client.request(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }
}

/// Serves `app` on a free loopback port for the rest of the test.
async fn serve(app: Router) -> Browser {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Browser {
        origin,
        client: Client::builder(hyper_util::rt::TokioExecutor::new()).build_http(),
        cookies: HashMap::new(),
        staff: true,
    }
}

/// Every `href="…"` and `action="…"` of a page (HTML-escaped as the page has them).
fn targets(html: &str) -> Vec<(&'static str, String)> {
    let mut found = Vec::new();
    for attribute in ["href", "action"] {
        let marker = format!(" {attribute}=\"");
        let mut rest = html;
        while let Some(at) = rest.find(&marker) {
            rest = &rest[at + marker.len()..];
            let end = rest.find('"').unwrap();
            found.push((attribute, rest[..end].replace("&amp;", "&")));
            rest = &rest[end..];
        }
    }
    found
}

/// The value of the first hidden `csrf` field in a page.
fn csrf_field(html: &str) -> String {
    let at = html.find(r#"name="csrf" value=""#).expect("a csrf field") + 19;
    html[at..].split('"').next().unwrap().to_owned()
}

/// What the pages show: a dead letter, a job waiting in a queue of its own, a job finished
/// a minute ago (the chart's bar), a live worker, a campaign and its batch, a schedule.
struct Fixtures {
    dead: uuid::Uuid,
    worker: uuid::Uuid,
    campaign: uuid::Uuid,
    batch: uuid::Uuid,
}

async fn fixtures(pool: &sqlx::PgPool) -> Fixtures {
    let dead = insert_job(
        pool,
        JobOpts {
            state: Some(JobState::DeadLetter),
            kind: Some("app.invoice".into()),
            ..Default::default()
        },
    )
    .await
    .id
    .0;
    insert_job(
        pool,
        JobOpts {
            queue: Some("billing".into()),
            ..Default::default()
        },
    )
    .await;
    insert_job(
        pool,
        JobOpts {
            state: Some(JobState::Completed),
            finished_at: Some(Utc::now() - Duration::seconds(70)),
            ..Default::default()
        },
    )
    .await;
    let worker = uuid::Uuid::now_v7();
    sqlx::query(
        "insert into docket.workers (id, host, pid, queues, kinds, version, lease_expires_at)
         values ($1, 'app-1', 1, '{default}', '{app.invoice}', 'test', now() + interval '1 hour')",
    )
    .bind(worker)
    .execute(pool)
    .await
    .unwrap();
    let catalog = docket_mail::template::Catalog::built_in();
    let from = "Docket <docket@example.com>".parse().unwrap();
    let recipients = vec![docket_mail::campaign::Recipient {
        to: "ann@example.com".to_owned(),
        name: None,
        locale: None,
        vars: serde_json::json!({"campaign": {}}),
    }];
    let new =
        docket_mail::campaign::NewCampaign::new("launch", "docket/campaign_finished", recipients);
    let campaign = docket_mail::campaign::create(pool, &catalog, &from, &new)
        .await
        .unwrap();
    let batch = docket_mail::campaign::show(pool, campaign)
        .await
        .unwrap()
        .batch_id
        .expect("a campaign's batch");
    let schedule = docket_queue::cron::Schedule::new("nightly export", "0 0 3 * * *", "app.x");
    docket_queue::cron::register(pool, &schedule, None)
        .await
        .unwrap();
    Fixtures {
        dead,
        worker,
        campaign,
        batch,
    }
}

/// Signs in as a browser does, through the prefix; the session cookie's path covers the
/// pages and the sign-in cookie's only the form.
async fn sign_in(browser: &mut Browser) {
    let first = browser.get("/docket/ops").await;
    assert_eq!(first.status, StatusCode::SEE_OTHER);
    assert_eq!(first.location(), "/docket/ops/login");
    let form = browser.get(first.location()).await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.body);
    assert_eq!(browser.cookies["docket_ops_sign_in"].1, "/docket/ops/login");
    assert!(
        form.body.contains(r#"action="/docket/ops/login""#),
        "{}",
        form.body
    );
    let token = csrf_field(&form.body);
    let signed_in = browser
        .post(
            "/docket/ops/login",
            &format!("secret={SECRET}&csrf={token}"),
        )
        .await;
    assert_eq!(
        signed_in.status,
        StatusCode::SEE_OTHER,
        "{}",
        signed_in.body
    );
    assert_eq!(signed_in.location(), "/docket/ops");
    assert_eq!(browser.cookies["docket_ops"].1, "/docket/ops");
    assert!(
        !browser.cookies.contains_key("docket_ops_sign_in"),
        "the form's cookie is cleared on its own path"
    );
}

/// Every page reachable from the overview by its links (GET), each checked: all its links
/// and form actions under the prefix, and every link answers 200. Returns the pages seen.
async fn crawl(browser: &mut Browser) -> BTreeSet<String> {
    let mut seen = BTreeSet::from(["/docket/ops".to_owned()]);
    let mut queue = VecDeque::from(["/docket/ops".to_owned()]);
    while let Some(path) = queue.pop_front() {
        let page = browser.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.body);
        if !page.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
        {
            continue;
        }
        for (attribute, target) in targets(&page.body) {
            assert!(
                target.starts_with("/docket/"),
                "{path}: {attribute}=\"{target}\" is not under {PREFIX}"
            );
            if attribute == "href" && seen.insert(target.clone()) {
                queue.push_back(target);
            }
        }
    }
    seen
}

#[tokio::test]
async fn nested_under_a_prefix_every_link_form_redirect_and_cookie_stays_under_it() {
    let db = TestDb::new().await;
    let f = fixtures(&db.pool).await;
    let mut browser = serve(application(&db.pool)).await;

    // The application's own route, and its authentication in front of Docket's pages
    // (but not of the public probe).
    let own = browser.get("/").await;
    assert_eq!(
        (own.status, own.body.as_str()),
        (StatusCode::OK, "the application's own page")
    );
    browser.staff = false;
    assert_eq!(
        browser.get("/docket/ops").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        browser.get("/docket/api/health").await.status,
        StatusCode::OK
    );
    assert_eq!(
        browser.get("/docket/no-such-page").await.status,
        StatusCode::NOT_FOUND
    );
    browser.staff = true;

    sign_in(&mut browser).await;
    let seen = crawl(&mut browser).await;
    for page in [
        "/docket/ops/ops.css".to_owned(),
        format!("/docket/ops/jobs/{}", f.dead),
        format!("/docket/ops/workers/{}", f.worker),
        format!("/docket/ops/batches/{}", f.batch),
        format!("/docket/ops/campaigns/{}", f.campaign),
    ] {
        assert!(seen.contains(&page), "{page} is linked: {seen:?}");
    }
    let css = browser.get("/docket/ops/ops.css").await;
    assert!(css.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/css"));

    // The chart, from the jobs finished in the last hour.
    let overview = browser.get("/docket/ops").await;
    assert!(
        overview.body.contains("1 jobs completed"),
        "the chart read the finished job"
    );
    assert!(overview.body.contains(r#"<svg class="chart completed""#));
    assert!(overview.body.contains("<rect "), "a bar for that minute");

    // Pause a queue with the form the page has: back to the overview, under the prefix.
    let csrf = csrf_field(&overview.body);
    let pause = "/docket/ops/queues/billing/pause";
    assert!(overview.body.contains(&format!(r#"action="{pause}""#)));
    let paused = browser.post(pause, &format!("csrf={csrf}")).await;
    assert_eq!(paused.status, StatusCode::SEE_OTHER, "{}", paused.body);
    assert_eq!(paused.location(), "/docket/ops?done=pause");
    let after = browser.get(paused.location()).await;
    assert!(after.body.contains("Queue paused"), "{}", after.body);

    // Replay the dead letter from its own page: back to that page.
    let replay = format!("/docket/ops/jobs/{}/replay", f.dead);
    let job_page = browser.get(&format!("/docket/ops/jobs/{}", f.dead)).await;
    assert!(job_page.body.contains(&format!(r#"action="{replay}""#)));
    let replayed = browser
        .post(&replay, &format!("csrf={csrf}&back=job"))
        .await;
    assert_eq!(replayed.status, StatusCode::SEE_OTHER, "{}", replayed.body);
    assert_eq!(
        replayed.location(),
        format!("/docket/ops/jobs/{}?done=replay", f.dead)
    );
    assert_eq!(
        browser.get(replayed.location()).await.status,
        StatusCode::OK
    );
    let state: JobState = sqlx::query_scalar("select state from docket.jobs where id = $1")
        .bind(f.dead)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(state, JobState::Pending);

    // A failed action's page links back under the prefix.
    let refused = browser.post(pause, "csrf=wrong").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(
        refused.body.contains(r#"href="/docket/ops""#),
        "{}",
        refused.body
    );

    // The JSON API under the prefix, and the OpenAPI document naming it as the server.
    let jobs = browser.send_bearer("/docket/api/jobs?state=pending").await;
    assert_eq!(jobs.status, StatusCode::OK, "{}", jobs.body);
    let metrics = recorder().render();
    assert!(
        metrics.contains(r#"route="/docket/api/jobs""#),
        "the route label is the whole pattern: {metrics}"
    );
    let doc: Value =
        serde_json::from_str(&browser.get("/docket/api/openapi.json").await.body).unwrap();
    assert_eq!(doc["servers"][0]["url"], PREFIX, "{}", doc["servers"]);
    assert!(doc["paths"]["/api/jobs"].is_object());

    // Signing out clears the session on its own path and sends the browser to sign in.
    let out = browser
        .post("/docket/ops/logout", &format!("csrf={csrf}"))
        .await;
    assert_eq!(out.location(), "/docket/ops/login");
    assert!(!browser.cookies.contains_key("docket_ops"));
}

/// At the root (as `docket serve` mounts it), the page's URLs and cookies are exactly what
/// they always were, and the OpenAPI document names no server.
#[tokio::test]
async fn at_the_root_urls_and_cookies_have_no_prefix() {
    let db = TestDb::new().await;
    fixtures(&db.pool).await;
    let mut browser = serve(crate::app(&db.pool)).await;
    let first = browser.get("/ops").await;
    assert_eq!(first.location(), "/ops/login");
    let form = browser.get("/ops/login").await;
    assert_eq!(browser.cookies["docket_ops_sign_in"].1, "/ops/login");
    let token = csrf_field(&form.body);
    let signed_in = browser
        .post("/ops/login", &format!("secret={SECRET}&csrf={token}"))
        .await;
    assert_eq!(signed_in.location(), "/ops");
    assert_eq!(browser.cookies["docket_ops"].1, "/ops");
    let overview = browser.get("/ops").await;
    let targets = targets(&overview.body);
    assert!(targets.len() > 10, "{targets:?}");
    for (attribute, target) in targets {
        assert!(
            target.starts_with("/ops") && !target.starts_with("/ops/ops/"),
            "{attribute}=\"{target}\""
        );
    }
    let doc: Value = serde_json::from_str(&browser.get("/api/openapi.json").await.body).unwrap();
    assert!(doc.get("servers").is_none(), "{}", doc["servers"]);
}
