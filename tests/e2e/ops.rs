//! The operations page in a real headless Chromium (Debian's `chromium` driven through
//! `chromedriver`) against a real `docket serve`: sign-in, a wrong secret, Replay of a
//! dead letter until it completes, pause and resume, a form without its CSRF token, the
//! basics of accessibility, and the screenshots in `docs/` at desktop and phone width
//! (written there when `DOCKET_SCREENSHOTS_DIR` names the folder); and the router nested
//! under a prefix in an application's own, served in the test's process.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use docket_queue::{JobState, NewJob};
use docket_testkit::{eventually, insert_job, JobOpts, SmtpSink, TestDb};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

const SECRET: &str = "ops-e2e-secret-0123456789";
const WAIT: Duration = Duration::from_secs(60);

/// A child process killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn folder(files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("docket-e2e-ops-{}", uuid::Uuid::now_v7()));
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

const SCHEDULES: &str = r#"
[[schedule]]
name = "nightly-invoices"
cron = "0 0 3 * * *"
kind = "docket.noop"

[[schedule]]
name = "hourly-digest"
cron = "0 0 * * * *"
kind = "docket.noop"
"#;

async fn serve(db: &TestDb, sink: &SmtpSink, port: u16, dir: &Path) -> Process {
    let child = Command::new(env!("CARGO_BIN_EXE_docket"))
        .arg("serve")
        .env("DATABASE_URL", &db.url)
        .env("CRON_SECRET", SECRET)
        .env("DOCKET_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("DOCKET_LOG_FORMAT", "json")
        .env("DOCKET_POLL_INTERVAL", "0.2")
        .env("DOCKET_QUEUES", "default,mail,recovery,billing")
        .env("DOCKET_CONFIG", dir.join("docket.toml"))
        .env("DOCKET_TEMPLATE_DIR", dir.join("templates"))
        .env("DOCKET_SMTP_URL", sink.url())
        .env("DOCKET_PUBLIC_URL", "https://docket.example.com")
        .env(
            "DOCKET_MAIL_TOKEN_SECRET",
            "e2e-token-secret-0123456789abcdefgh",
        )
        .env("DOCKET_MAIL_FROM", "Docket <docket@example.com>")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start docket serve");
    let process = Process(child);
    eventually(WAIT, "serve answers", || async move {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .await;
    process
}

/// chromedriver on a free port, and a headless Chromium session through it; `phone`
/// emulates a phone's viewport.
async fn browser(phone: bool) -> (Process, Client) {
    let port = free_port();
    let driver = Process(
        Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver"),
    );
    let mut options = json!({
        "binary": "/usr/bin/chromium",
        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,2200", "--hide-scrollbars"],
    });
    if phone {
        options["mobileEmulation"] =
            json!({"deviceMetrics": {"width": 390, "height": 1800, "pixelRatio": 2}});
    }
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("goog:chromeOptions".into(), options);
    let url = format!("http://127.0.0.1:{port}");
    let mut last_error = None;
    for _ in 0..50 {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(capabilities.clone())
            .connect(&url)
            .await
        {
            Ok(client) => return (driver, client),
            Err(err) => last_error = Some(err),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("no browser session: {last_error:?}");
}

/// Seeds what an operator would see on a working day: finished jobs for the chart, dead
/// letters (one failed for real), a paused queue, a campaign with bounces, schedules.
async fn seed(db: &TestDb, port: u16) -> (docket_queue::JobId, docket_queue::JobId) {
    let jobs: Vec<NewJob> = (0..400)
        .map(|i| NewJob::new("docket.noop", json!({"n": i})))
        .collect();
    docket_queue::enqueue_many(&db.pool, &jobs).await.unwrap();
    docket_queue::enqueue(
        &db.pool,
        &NewJob::new("docket.fail", json!({"permanent": true})).queue("billing"),
    )
    .await
    .unwrap();
    // A dead letter that succeeds when replayed: the ledger was down, now it is back.
    let replayable = insert_job(
        &db.pool,
        JobOpts {
            state: Some(JobState::DeadLetter),
            kind: Some("docket.noop".into()),
            queue: Some("billing".into()),
            payload: Some(json!({"invoice": "INV-2026-0412"})),
            attempt: Some(25),
            ..Default::default()
        },
    )
    .await;
    sqlx::query(
        "update docket.jobs set last_error = $2,
             errors = docket.append_error('[]', 25, now(), $2)
         where id = $1",
    )
    .bind(replayable.id)
    .bind("ledger: connection refused (ledger.internal:5432)")
    .execute(&db.pool)
    .await
    .unwrap();
    // A password reset that expired unsent: replay refuses it, so no Replay is offered.
    let expired = insert_job(
        &db.pool,
        JobOpts {
            state: Some(JobState::DeadLetter),
            kind: Some("mail.recovery".into()),
            queue: Some("recovery".into()),
            expires_at: Some(chrono::Utc::now() - chrono::Duration::minutes(5)),
            ..Default::default()
        },
    )
    .await;
    docket_queue::queues::pause(&db.pool, "reports")
        .await
        .unwrap();
    docket_queue::enqueue(
        &db.pool,
        &NewJob::new("docket.noop", json!({})).queue("reports"),
    )
    .await
    .unwrap();
    let recipients: Vec<Value> = (0..60)
        .map(|i| json!({"to": format!("reader{i}@example.com"), "name": format!("Reader {i}"), "vars": {"plan": "pro"}}))
        .collect();
    let body = json!({"name": "December newsletter", "template": "news", "recipients": recipients, "batch_size": 20});
    let (status, answer) = post(port, "/api/campaigns", &body.to_string());
    assert_eq!(status, 201, "{answer}");
    (replayable.id, expired.id)
}

/// A bearer POST with a JSON body.
fn post(port: u16, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAuthorization: Bearer {SECRET}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split_whitespace().nth(1).unwrap().parse().unwrap();
    (
        status,
        response.split_once("\r\n\r\n").unwrap().1.to_owned(),
    )
}

async fn sign_in(client: &Client, base: &str, secret: &str) {
    client.goto(&format!("{base}/ops/login")).await.unwrap();
    let field = client.find(Locator::Id("secret")).await.unwrap();
    field.send_keys(secret).await.unwrap();
    client
        .find(Locator::Css("form[action='/ops/login'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // The click returns before the answer's page has loaded.
    eventually(WAIT, "the sign-in is answered", || async {
        client.current_url().await.unwrap().path() == "/ops"
            || text(client).await.contains("not right")
    })
    .await;
}

/// The page's text; empty while a navigation replaces the page.
async fn text(client: &Client) -> String {
    match client.find(Locator::Css("body")).await {
        Ok(body) => body.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Clicks the button `locator` finds, then waits for the page that answers to say `says`.
async fn press(client: &Client, locator: Locator<'_>, says: &str) {
    client.find(locator).await.unwrap().click().await.unwrap();
    eventually(WAIT, says, || async { text(client).await.contains(says) }).await;
}

/// The page's accessibility basics, read from the DOM: problems found, none expected.
const ACCESSIBILITY: &str = r#"
const problems = [];
if (!document.documentElement.lang) problems.push('no lang on <html>');
for (const el of document.querySelectorAll('input:not([type=hidden]), select, textarea')) {
  if (el.labels.length === 0 && !el.getAttribute('aria-label')) problems.push('unlabelled ' + el.outerHTML);
}
for (const el of document.querySelectorAll('button')) {
  if (!el.textContent.trim() && !el.getAttribute('aria-label')) problems.push('button without text');
}
for (const el of document.querySelectorAll('img')) {
  if (!el.hasAttribute('alt')) problems.push('img without alt ' + el.outerHTML);
}
for (const el of document.querySelectorAll('svg')) {
  if (!el.querySelector('title') && !el.getAttribute('aria-label')) problems.push('svg without a title');
}
let last = 0;
for (const h of document.querySelectorAll('h1, h2, h3, h4, h5, h6')) {
  const level = Number(h.tagName[1]);
  if (last === 0 && level !== 1) problems.push('first heading is ' + h.tagName);
  if (last !== 0 && level > last + 1) problems.push(h.tagName + ' after H' + last + ': ' + h.textContent);
  last = level;
}
if (document.querySelectorAll('h1').length !== 1) problems.push('not exactly one h1');
return problems;
"#;

/// Every date and time on the page not in the one format (`2026-12-08 03:00:00 UTC`).
async fn times_in_another_format(client: &Client) -> Vec<Value> {
    client
        .execute(
            r"const found = document.body.innerText.match(/\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2})?(\.\d+)?(Z|[+-]\d{2}:?\d{2}| UTC)?/g) || [];
              return found.filter(t => !/^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC$/.test(t));",
            vec![],
        )
        .await
        .unwrap()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn accessibility_problems(client: &Client) -> Vec<Value> {
    client
        .execute(ACCESSIBILITY, vec![])
        .await
        .unwrap()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operations_page_in_a_real_browser() {
    let browser_installed = docket_testkit::tools::require_program("chromedriver")
        & docket_testkit::tools::require_program("chromium");
    if !browser_installed {
        return;
    }
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    for i in [3, 17, 42] {
        sink.reply_to(
            &format!("reader{i}@example.com"),
            Some("550 5.1.1 <mailbox unavailable>"),
        );
    }
    let dir = folder(&[
        ("docket.toml", SCHEDULES),
        ("templates/news/subject.txt", "December news for {{ name }}"),
        (
            "templates/news/body.txt",
            "Hello {{ name }}, your {{ plan }} plan grew.",
        ),
    ]);
    let port = free_port();
    let _serve = serve(&db, &sink, port, &dir).await;
    let base = format!("http://127.0.0.1:{port}");
    let (replayable, expired) = seed(&db, port).await;
    eventually(
        WAIT,
        "the campaign is sent and the no-op jobs are done",
        || async {
            let snapshot = docket_queue::snapshot(&db.pool, None).await.unwrap();
            let mail_done = docket_queue::admin::list(
                &db.pool,
                &docket_queue::admin::ListFilter {
                    state: Some(JobState::Pending),
                    queue: Some("mail".into()),
                    kind: None,
                    before: None,
                    limit: 1,
                },
            )
            .await
            .unwrap()
            .jobs
            .is_empty();
            mail_done
                && snapshot
                    .queues
                    .get("default")
                    .is_none_or(|q| q.pending == 0)
                && snapshot.total.dead_letter == 3
        },
    )
    .await;

    let (_driver, client) = browser(false).await;
    // No session: the page sends the browser to sign in.
    client.goto(&format!("{base}/ops")).await.unwrap();
    assert!(client
        .current_url()
        .await
        .unwrap()
        .path()
        .ends_with("/ops/login"));
    assert!(accessibility_problems(&client).await.is_empty());

    sign_in(&client, &base, "not-the-secret").await;
    let refused = text(&client).await;
    assert!(refused.contains("That secret is not right."), "{refused}");
    assert!(client
        .current_url()
        .await
        .unwrap()
        .path()
        .ends_with("/ops/login"));

    sign_in(&client, &base, SECRET).await;
    assert_eq!(client.current_url().await.unwrap().path(), "/ops");
    let page = text(&client).await;
    for expected in [
        "Status:",
        "billing",
        "ledger: connection refused",
        "nightly-invoices",
        "December newsletter",
        "reader3@example.com",
        "5.1.1",
        "completed and",
    ] {
        assert!(
            page.contains(expected),
            "{expected:?} is on the page: {page}"
        );
    }
    let problems = accessibility_problems(&client).await;
    assert!(problems.is_empty(), "{problems:?}");
    let stray = times_in_another_format(&client).await;
    assert!(stray.is_empty(), "one timestamp format: {stray:?}");

    // The chart counts emails beside jobs (57 of the 60 went out, 3 bounced), and the one
    // real dead letter is a visible bar of its own strip.
    let chart = client
        .find(Locator::Css("section[aria-labelledby=throughput]"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(chart.contains("57 emails sent"), "{chart}");
    assert!(
        chart.contains("emails sent per minute: 57 in the hour"),
        "{chart}"
    );
    let dead_bar = client
        .execute(
            "return Math.max(0, ...[...document.querySelectorAll('svg.chart.dead rect')]
               .map(r => r.getBoundingClientRect().height));",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        dead_bar.as_f64().unwrap() >= 2.0,
        "a visible dead-letter bar: {dead_bar}"
    );

    // An expired dead letter offers no Replay (the replay route refuses it), only Discard.
    let expired_row = format!("tr[data-job='{expired}']");
    assert!(
        client
            .find(Locator::Css(&format!(
                "{expired_row} form[action$='/replay']"
            )))
            .await
            .is_err(),
        "no Replay for an expired job"
    );
    let expired_text = client
        .find(Locator::Css(&expired_row))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(expired_text.contains("expired"), "{expired_text}");
    assert!(client
        .find(Locator::Css(&format!(
            "{expired_row} form[action$='/discard']"
        )))
        .await
        .is_ok());
    client
        .goto(&format!("{base}/ops/jobs/{expired}"))
        .await
        .unwrap();
    let job_page = text(&client).await;
    assert!(
        job_page.contains("Not replayable: its expiry"),
        "{job_page}"
    );
    assert!(client
        .find(Locator::Css("form[action$='/replay']"))
        .await
        .is_err());
    let stray = times_in_another_format(&client).await;
    assert!(stray.is_empty(), "one timestamp format: {stray:?}");
    // Worker, batch and campaign ids lead to their pages, shown whole where they name the
    // thing (a worker, a batch; a campaign by its name).
    let worker_id = docket_queue::workers::list(&db.pool, None).await.unwrap()[0]
        .info
        .id;
    let campaign = docket_mail::campaign::list(&db.pool, 1)
        .await
        .unwrap()
        .remove(0);
    let batch_id = campaign.batch_id.expect("a campaign's batch");
    for (href, shown_as) in [
        (format!("/ops/workers/{worker_id}"), worker_id.to_string()),
        (format!("/ops/batches/{batch_id}"), batch_id.to_string()),
        (
            format!("/ops/campaigns/{}", campaign.id),
            "December newsletter".to_owned(),
        ),
    ] {
        client.goto(&format!("{base}/ops")).await.unwrap();
        let link = client
            .find(Locator::Css(&format!("a[href='{href}']")))
            .await
            .unwrap_or_else(|_| panic!("a link to {href}"));
        let text_of_link = link.text().await.unwrap();
        assert_eq!(text_of_link, shown_as, "{href}");
        link.click().await.unwrap();
        eventually(WAIT, "the linked page", || async {
            client.current_url().await.unwrap().path() == href
        })
        .await;
        let heading = client
            .find(Locator::Css("h1"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let id = href.rsplit('/').next().unwrap();
        assert!(
            heading.ends_with(id),
            "the whole id heads its page: {heading}"
        );
        let problems = accessibility_problems(&client).await;
        assert!(problems.is_empty(), "{href}: {problems:?}");
        let stray = times_in_another_format(&client).await;
        assert!(stray.is_empty(), "{href}: {stray:?}");
    }
    client.goto(&format!("{base}/ops")).await.unwrap();

    // Screenshots with this data, desktop first (and phone below).
    let screenshots = std::env::var_os("DOCKET_SCREENSHOTS_DIR").map(PathBuf::from);
    let desktop = client.screenshot().await.unwrap();
    assert!(desktop.starts_with(b"\x89PNG"), "a PNG");
    if let Some(dir) = &screenshots {
        std::fs::write(dir.join("ops-page.png"), &desktop).unwrap();
    }

    // Replay the dead letter whose cause is fixed: it leaves the list and completes.
    let row = format!("tr[data-job='{replayable}']");
    press(
        &client,
        Locator::Css(&format!("{row} form[action$='/replay'] button")),
        "Replayed",
    )
    .await;
    eventually(WAIT, "the replayed job completes", || async {
        docket_queue::admin::show(&db.pool, replayable)
            .await
            .unwrap()
            .state
            == JobState::Completed
    })
    .await;
    client.goto(&format!("{base}/ops")).await.unwrap();
    assert!(
        client.find(Locator::Css(&row)).await.is_err(),
        "it left the list"
    );

    // Resume and pause a queue with its buttons.
    press(
        &client,
        Locator::XPath("//button[normalize-space()='Resume reports']"),
        "Queue resumed.",
    )
    .await;
    assert!(docket_queue::queues::paused(&db.pool)
        .await
        .unwrap()
        .is_empty());
    press(
        &client,
        Locator::XPath("//button[normalize-space()='Pause reports']"),
        "Queue paused",
    )
    .await;
    assert_eq!(
        docket_queue::queues::paused(&db.pool).await.unwrap(),
        ["reports"]
    );

    // A form posted without its CSRF token is refused and changes nothing.
    client
        .execute(
            "const form = [...document.querySelectorAll('form')].find(f => f.action.endsWith('/reports/resume'));
             form.querySelector('input[name=csrf]').remove();
             form.submit();",
            vec![],
        )
        .await
        .unwrap();
    eventually(WAIT, "the refusal page loads", || async {
        text(&client).await.contains("Refused")
    })
    .await;
    assert_eq!(
        docket_queue::queues::paused(&db.pool).await.unwrap(),
        ["reports"]
    );

    // Signing out ends the session.
    client.goto(&format!("{base}/ops")).await.unwrap();
    press(
        &client,
        Locator::XPath("//button[normalize-space()='Sign out']"),
        "Sign in",
    )
    .await;
    client.goto(&format!("{base}/ops")).await.unwrap();
    assert!(client
        .current_url()
        .await
        .unwrap()
        .path()
        .ends_with("/ops/login"));
    client.close().await.unwrap();

    // At phone width: the same page, nothing wider than the screen but the tables' own
    // scrolling boxes.
    let (_phone_driver, phone) = browser(true).await;
    sign_in(&phone, &base, SECRET).await;
    assert_eq!(phone.current_url().await.unwrap().path(), "/ops");
    let overflow = phone
        .execute(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        overflow.as_i64().unwrap() <= 0,
        "the page fits a phone: {overflow}"
    );
    // The chart's words are the page's text, as readable as the rest at phone width.
    let small = phone
        .execute(
            "const chart = document.querySelector('section[aria-labelledby=throughput]');
             const texts = [...chart.querySelectorAll('svg text')].map(t => t.textContent);
             const labels = [...chart.querySelectorAll('figcaption, .axis span')]
               .filter(l => parseFloat(getComputedStyle(l).fontSize) < 12)
               .map(l => l.textContent);
             return texts.concat(labels);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(small, json!([]), "chart labels too small to read");
    // Every Pause, Resume, Replay and Discard is on screen without scrolling sideways.
    let hidden = phone
        .execute(
            "const width = document.documentElement.clientWidth;
             return [...document.querySelectorAll('.scroll button')]
               .filter(b => { const r = b.getBoundingClientRect(); return r.left < 0 || r.right > width; })
               .map(b => b.textContent.trim());",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        hidden,
        json!([]),
        "action buttons off screen at phone width"
    );
    let shot = phone.screenshot().await.unwrap();
    if let Some(dir) = &screenshots {
        std::fs::write(dir.join("ops-page-phone.png"), &shot).unwrap();
    }
    phone.close().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The router nested under `/docket` in an application's own axum router (as
/// `docs/embedding.md` shows), served in this process: in a real browser, sign-in lands
/// under the prefix, the stylesheet loads, the chart draws, every link and form stays
/// under the prefix, and a Replay comes back to the job's page there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operations_page_nested_under_a_prefix_in_a_real_browser() {
    let browser_installed = docket_testkit::tools::require_program("chromedriver")
        & docket_testkit::tools::require_program("chromium");
    if !browser_installed {
        return;
    }
    let db = TestDb::new().await;
    insert_job(
        &db.pool,
        JobOpts {
            state: Some(JobState::Completed),
            finished_at: Some(chrono::Utc::now() - chrono::Duration::seconds(70)),
            ..Default::default()
        },
    )
    .await;
    let dead = insert_job(
        &db.pool,
        JobOpts {
            state: Some(JobState::DeadLetter),
            kind: Some("app.invoice".into()),
            ..Default::default()
        },
    )
    .await
    .id;
    let docket = docket_http::router(docket_http::AppState::new(
        db.pool.clone(),
        docket_http::Secret::new(SECRET),
        None,
        docket_http::HealthConfig::default(),
    ));
    let app = axum::Router::new()
        .route(
            "/",
            axum::routing::get(|| async { "the application's own page" }),
        )
        .nest("/docket", docket);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let (_driver, client) = browser(false).await;
    client.goto(&format!("{origin}/docket/ops")).await.unwrap();
    assert_eq!(
        client.current_url().await.unwrap().path(),
        "/docket/ops/login",
        "sent to sign in under the prefix"
    );
    client
        .find(Locator::Id("secret"))
        .await
        .unwrap()
        .send_keys(SECRET)
        .await
        .unwrap();
    client
        .find(Locator::Css("form[action='/docket/ops/login'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    eventually(WAIT, "signed in, on the page under the prefix", || async {
        client.current_url().await.unwrap().path() == "/docket/ops"
            && text(&client).await.contains("Dead letters")
    })
    .await;

    let sheets = client
        .execute(
            "return [...document.styleSheets].map(s => [new URL(s.href).pathname, s.cssRules.length]);",
            vec![],
        )
        .await
        .unwrap();
    let sheets = sheets.as_array().unwrap();
    assert_eq!(sheets.len(), 1, "{sheets:?}");
    assert_eq!(sheets[0][0], "/docket/ops/ops.css");
    assert!(
        sheets[0][1].as_u64().unwrap() > 10,
        "the stylesheet loaded: {sheets:?}"
    );
    let bar = client
        .execute(
            "return Math.max(0, ...[...document.querySelectorAll('svg.chart.completed rect')]
               .map(r => r.getBoundingClientRect().height));",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        bar.as_f64().unwrap() >= 2.0,
        "the chart draws the finished job: {bar}"
    );
    let outside = client
        .execute(
            "return [...document.querySelectorAll('a[href]')].map(a => a.href)
               .concat([...document.querySelectorAll('form')].map(f => f.action))
               .map(u => new URL(u).pathname)
               .filter(p => !p.startsWith('/docket/'));",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(outside, json!([]), "links and forms outside the prefix");

    client
        .find(Locator::Css(&format!("tr[data-job='{dead}'] a")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let job_page = format!("/docket/ops/jobs/{dead}");
    eventually(WAIT, "the job's page", || async {
        client.current_url().await.unwrap().path() == job_page
    })
    .await;
    press(
        &client,
        Locator::Css("form[action$='/replay'] button"),
        "Replayed",
    )
    .await;
    assert_eq!(client.current_url().await.unwrap().path(), job_page);
    assert_eq!(
        docket_queue::admin::show(&db.pool, dead)
            .await
            .unwrap()
            .state,
        JobState::Pending
    );
    client.close().await.unwrap();
}
