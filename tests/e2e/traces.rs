//! OpenTelemetry tracing through the real binaries: an email enqueued over HTTP with a
//! `traceparent`, refused once by the relay and then sent, arrives at a real OTLP receiver
//! as one trace (the caller's span → the enqueue → the first attempt → its SMTP exchange)
//! plus a second trace for the retry, linked to the enqueue; and with tracing off, nothing
//! is sent and nothing is stored.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use docket_queue::JobState;
use docket_testkit::{eventually, OtlpReceiver, SmtpSink, TestDb};
use serde_json::Value;

const SECRET: &str = "e2e-secret-0123456789";
const WAIT: Duration = Duration::from_secs(60);
/// The caller's span: its trace id and span id.
const CALLER: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const CALLER_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER_SPAN: &str = "b7ad6b7169203331";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `POST path` with a JSON body and extra headers; the status and the body.
fn post(port: u16, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, Value) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAuthorization: Bearer {SECRET}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = response.split_once("\r\n\r\n").unwrap().1;
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn healthy(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("docket-e2e-{name}-{}", uuid::Uuid::now_v7()))
}

/// `docket serve` (HTTP, and a worker for the `default` queue only) with `env`, its log in
/// `log`.
fn serve(db: &TestDb, port: u16, env: &[(&str, &str)], log: &PathBuf) -> KillOnDrop {
    let mut command = Command::new(env!("CARGO_BIN_EXE_docket"));
    command
        .arg("serve")
        .env("DATABASE_URL", &db.url)
        .env("CRON_SECRET", SECRET)
        .env("DOCKET_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("DOCKET_LOG_FORMAT", "json")
        .env("DOCKET_QUEUES", "default:2")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    for (name, value) in env {
        command.env(name, value);
    }
    KillOnDrop(command.spawn().expect("start docket serve"))
}

fn spans_named<'a>(spans: &'a [Value], name: &str) -> Vec<&'a Value> {
    spans.iter().filter(|s| s["name"] == name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_enqueued_over_http_that_fails_once_is_traced_from_the_caller_to_each_smtp_exchange(
) {
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    let receiver = OtlpReceiver::start();
    let templates = temp_path("templates");
    std::fs::create_dir_all(templates.join("hello")).unwrap();
    std::fs::write(templates.join("hello/subject.txt"), "Hello").unwrap();
    std::fs::write(templates.join("hello/body.txt"), "Hello {{ name }}.").unwrap();
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()),
        // Spans go out a tenth of a second after they end, not five seconds.
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_SERVICE_NAME", "docket-e2e"),
    ];
    let port = free_port();
    let serve_log = temp_path("serve.log");
    let _serve = serve(&db, port, &otel, &serve_log);
    // The email runs in another process: the context crosses through the table.
    let worker_log = temp_path("worker.log");
    let _worker = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_docket"))
            .arg("worker")
            .env("DATABASE_URL", &db.url)
            .env("DOCKET_LOG_FORMAT", "json")
            .env("DOCKET_QUEUES", "mail:2")
            .env("DOCKET_POLL_INTERVAL", "0.2")
            .env("DOCKET_SMTP_URL", sink.url())
            .env("DOCKET_PUBLIC_URL", "https://docket.example.com")
            .env(
                "DOCKET_MAIL_TOKEN_SECRET",
                "e2e-token-secret-0123456789abcdefgh",
            )
            .env("DOCKET_MAIL_FROM", "Docket <docket@example.com>")
            .env("DOCKET_TEMPLATE_DIR", &templates)
            .env("DOCKET_MAIL_RETRY_LADDER", "2s")
            .envs(otel)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&worker_log).unwrap())
            .spawn()
            .expect("start docket worker"),
    );
    eventually(WAIT, "serve listens", || async { healthy(port) }).await;

    sink.reply_to("ann@example.com", Some("451 4.3.0 try again later"));
    let (status, created) = post(
        port,
        "/api/jobs",
        &[("traceparent", CALLER), ("tracestate", "vendor=abc")],
        r#"{"kind": "mail.admin", "queue": "mail", "payload": {"to": "ann@example.com", "template": "hello", "vars": {"name": "Ann"}}}"#,
    );
    assert_eq!(status, 201, "{created}");
    let id: docket_queue::JobId = created["id"].as_str().unwrap().parse().unwrap();
    eventually(WAIT, "the relay refused the first attempt", || async {
        sink.attempts_for("ann@example.com") >= 1
    })
    .await;
    sink.reply_to("ann@example.com", None);
    eventually(WAIT, "the retry sent the email", || async {
        docket_queue::admin::show(&db.pool, id).await.unwrap().state == JobState::Completed
    })
    .await;
    let job = docket_queue::admin::show(&db.pool, id).await.unwrap();
    assert_eq!(job.attempt, 2);
    eventually(WAIT, "every span reached the receiver", || async {
        let spans = receiver.spans();
        spans_named(&spans, "send mail").len() == 1
            && spans_named(&spans, "process mail").len() == 2
            && spans_named(&spans, "smtp send").len() == 2
    })
    .await;
    let spans = receiver.spans();
    let enqueue = spans_named(&spans, "send mail")[0];
    let mut attempts = spans_named(&spans, "process mail");
    attempts.sort_by_key(|s| s["attributes"]["docket.job.attempt"].as_i64());
    let (first, retry) = (attempts[0], attempts[1]);
    let smtp = spans_named(&spans, "smtp send");

    // The enqueue continues the caller's trace, a child of the caller's span, and the job
    // stores the enqueue's context.
    assert_eq!(enqueue["trace_id"], CALLER_TRACE, "{enqueue}");
    assert_eq!(enqueue["parent_span_id"], CALLER_SPAN, "{enqueue}");
    assert_eq!(enqueue["service"], "docket-e2e");
    assert_eq!(enqueue["attributes"]["messaging.system"], "docket");
    assert_eq!(enqueue["attributes"]["messaging.operation.type"], "send");
    assert_eq!(enqueue["attributes"]["messaging.destination.name"], "mail");
    assert_eq!(
        enqueue["attributes"]["messaging.message.id"],
        id.to_string()
    );
    let stored = job.trace_context.clone().unwrap().parent.unwrap();
    assert_eq!(stored.trace_id(), CALLER_TRACE);
    assert_eq!(stored.span_id(), enqueue["span_id"].as_str().unwrap());
    assert_eq!(stored.tracestate.as_deref(), Some("vendor=abc"));

    // The first attempt is the enqueue's child.
    assert_eq!(first["trace_id"], CALLER_TRACE, "{first}");
    assert_eq!(first["parent_span_id"], enqueue["span_id"], "{first}");
    assert_eq!(first["links"].as_array().unwrap().len(), 0, "{first}");
    for (name, value) in [
        ("messaging.system", "docket"),
        ("messaging.operation.type", "process"),
        ("messaging.destination.name", "mail"),
        ("docket.job.kind", "mail.admin"),
    ] {
        assert_eq!(first["attributes"][name], value, "{name}: {first}");
    }
    assert_eq!(first["attributes"]["messaging.message.id"], id.to_string());
    assert_eq!(first["attributes"]["docket.job.attempt"], 1);
    assert_eq!(first["attributes"]["docket.job.outcome"], "failed");
    assert_eq!(first["status"]["code"], 2, "an error status: {first}");

    // The retry is a trace of its own (no parent), linked to the enqueue.
    assert_eq!(retry["parent_span_id"], "", "{retry}");
    assert_ne!(retry["trace_id"], CALLER_TRACE, "{retry}");
    let links = retry["links"].as_array().unwrap();
    assert_eq!(links.len(), 1, "{retry}");
    assert_eq!(links[0]["trace_id"], CALLER_TRACE);
    assert_eq!(links[0]["span_id"], enqueue["span_id"]);
    assert_eq!(retry["attributes"]["docket.job.attempt"], 2);
    assert_eq!(retry["attributes"]["docket.job.outcome"], "completed");
    assert_ne!(retry["status"]["code"], 2, "{retry}");

    // One SMTP exchange under each attempt, with the relay's reply code; no address.
    let under = |attempt: &Value| {
        let found: Vec<&Value> = smtp
            .iter()
            .copied()
            .filter(|s| s["parent_span_id"] == attempt["span_id"])
            .collect();
        assert_eq!(found.len(), 1, "one exchange under {attempt}");
        assert_eq!(found[0]["trace_id"], attempt["trace_id"]);
        found[0]
    };
    let (refused, accepted) = (under(first), under(retry));
    assert_eq!(refused["attributes"]["docket.smtp.reply_code"], 451);
    assert_eq!(refused["attributes"]["docket.smtp.outcome"], "refused");
    assert_eq!(refused["status"]["code"], 2);
    assert_eq!(accepted["attributes"]["docket.smtp.reply_code"], 250);
    assert_eq!(accepted["attributes"]["docket.smtp.outcome"], "accepted");
    let relay = sink.addr();
    assert_eq!(
        refused["attributes"]["server.address"],
        relay.ip().to_string()
    );
    assert_eq!(refused["attributes"]["server.port"], relay.port());
    for span in &spans {
        assert!(
            !span.to_string().contains("ann@example.com"),
            "no address in a span: {span}"
        );
    }

    // Log lines written inside a span carry its ids: the temporary failure was logged in
    // the first attempt's SMTP exchange.
    let log = std::fs::read_to_string(&worker_log).unwrap();
    let lines: Vec<Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let retrying = lines
        .iter()
        .find(|line| line["event"] == "admin_email.retrying")
        .unwrap_or_else(|| panic!("the temporary failure is logged: {log}"));
    assert_eq!(retrying["otel_trace_id"], first["trace_id"], "{retrying}");
    assert_eq!(retrying["otel_span_id"], refused["span_id"], "{retrying}");
    let known: std::collections::HashSet<(String, String)> = spans
        .iter()
        .map(|s| (s["trace_id"].to_string(), s["span_id"].to_string()))
        .collect();
    for line in lines.iter().filter(|l| l.get("otel_span_id").is_some()) {
        assert!(
            known.contains(&(
                line["otel_trace_id"].to_string(),
                line["otel_span_id"].to_string()
            )),
            "a log line's ids name a span that was exported: {line}"
        );
    }
    assert!(
        lines.iter().any(|l| l.get("otel_span_id").is_none()),
        "lines outside any span carry no ids"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tracing_off_nothing_is_exported_and_nothing_is_stored_unasked() {
    let db = TestDb::new().await;
    let receiver = OtlpReceiver::start();
    let port = free_port();
    let log = temp_path("serve-off.log");
    // An endpoint, but the SDK disabled: off, as with no endpoint at all.
    let mut serve = serve(
        &db,
        port,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()),
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
        &log,
    );
    eventually(WAIT, "serve listens", || async { healthy(port) }).await;
    let (status, plain) = post(port, "/api/jobs", &[], r#"{"kind": "docket.noop"}"#);
    assert_eq!(status, 201, "{plain}");
    let (status, traced) = post(
        port,
        "/api/jobs",
        &[("traceparent", CALLER)],
        r#"{"kind": "docket.noop"}"#,
    );
    assert_eq!(status, 201, "{traced}");
    let (status, malformed) = post(
        port,
        "/api/jobs",
        &[("traceparent", "00-not-a-trace-01")],
        r#"{"kind": "docket.noop"}"#,
    );
    assert_eq!(
        status, 201,
        "a malformed traceparent is ignored: {malformed}"
    );
    let show = |v: &Value| {
        let id: docket_queue::JobId = v["id"].as_str().unwrap().parse().unwrap();
        let pool = db.pool.clone();
        async move { docket_queue::admin::show(&pool, id).await.unwrap() }
    };
    for job in [&plain, &traced, &malformed] {
        eventually(WAIT, "the job ran", || async {
            show(job).await.state == JobState::Completed
        })
        .await;
    }
    assert_eq!(show(&plain).await.trace_context, None);
    assert_eq!(show(&malformed).await.trace_context, None);
    // A caller's context is kept as it came, for a worker that does trace.
    let kept = show(&traced).await.trace_context.unwrap().parent.unwrap();
    assert_eq!(kept.traceparent, CALLER);
    // Stopped, it would have flushed any span it held.
    Command::new("kill")
        .args(["-TERM", &serve.0.id().to_string()])
        .status()
        .unwrap();
    let status = tokio::task::spawn_blocking(move || serve.0.wait().unwrap());
    assert!(tokio::time::timeout(WAIT, status)
        .await
        .unwrap()
        .unwrap()
        .success());
    assert_eq!(receiver.spans(), Vec::<Value>::new());
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(!log.contains("otel_trace_id"), "{log}");
}
