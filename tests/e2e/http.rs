use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use docket_queue::JobState;
use docket_testkit::{eventually, TestDb};
use serde_json::Value;

const SECRET: &str = "e2e-secret-0123456789";

/// One HTTP/1.1 request over a fresh connection; returns the status and the body.
fn request(
    port: u16,
    method: &str,
    path: &str,
    auth: bool,
    body: Option<&str>,
) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if auth {
        head.push_str(&format!("Authorization: Bearer {SECRET}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).ok()?;
    stream.write_all(body.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_health_runs_jobs_from_the_api_and_stops_on_sigterm() {
    let db = TestDb::new().await;
    let port = free_port();
    let mut serve = Command::new(env!("CARGO_BIN_EXE_docket"))
        .arg("serve")
        .env("DATABASE_URL", &db.url)
        .env("CRON_SECRET", SECRET)
        .env("DOCKET_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("DOCKET_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    eventually(
        Duration::from_secs(30),
        "the HTTP listener answers",
        || async move {
            request(port, "GET", "/api/health", false, None)
                .is_some_and(|(status, _)| status == 200)
        },
    )
    .await;
    let (_, public) = request(port, "GET", "/api/health", false, None).unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&public).unwrap(),
        serde_json::json!({"status": "ok"})
    );

    let (status, created) = request(
        port,
        "POST",
        "/api/jobs",
        true,
        Some(r#"{"kind": "docket.noop", "payload": {}}"#),
    )
    .unwrap();
    assert_eq!(status, 201, "{created}");
    let id: Value = serde_json::from_str(&created).unwrap();
    let id: docket_queue::JobId = id["id"].as_str().unwrap().parse().unwrap();
    eventually(
        Duration::from_secs(30),
        "the job enqueued over HTTP completed",
        || async {
            docket_queue::admin::show(&db.pool, id).await.unwrap().state == JobState::Completed
        },
    )
    .await;

    let (status, full) = request(port, "GET", "/api/health", true, None).unwrap();
    assert_eq!(status, 200);
    let full: Value = serde_json::from_str(&full).unwrap();
    assert_eq!(full["workers"].as_array().unwrap().len(), 1, "{full}");
    let (status, metrics) = request(port, "GET", "/metrics", true, None).unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics.contains("docket_jobs_outcomes_total"),
        "worker metrics reach the endpoint"
    );
    let (status, _) = request(port, "GET", "/metrics", false, None).unwrap();
    assert_eq!(status, 401);

    Command::new("kill")
        .args(["-TERM", &serve.id().to_string()])
        .status()
        .unwrap();
    let status = tokio::task::spawn_blocking(move || {
        let status = serve.wait().unwrap();
        let mut log = String::new();
        serve
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut log)
            .unwrap();
        (status, log)
    });
    let (status, log) = tokio::time::timeout(Duration::from_secs(20), status)
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{log}");
    let http_stopped = log.find("http.stopped").expect("the listener stops");
    let workers_stopped = log
        .find("worker.shutdown.completed")
        .expect("the workers stop");
    assert!(
        http_stopped < workers_stopped,
        "the listener stops before the workers"
    );
    assert!(!log.contains(SECRET), "the secret never reaches the log");
    assert!(
        request(port, "GET", "/api/health", false, None).is_none(),
        "the port is closed"
    );
}

/// `docket check --json` as a process that sends mail through a relay (stub mode is a
/// warning of its own, tested below).
fn check(env: &[(&str, &str)]) -> (i32, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_docket"))
        .args(["check", "--json"])
        .env("DOCKET_CHECK_DISK_MIN_FREE_PERCENT", "0")
        .env("DOCKET_LOG_FORMAT", "json")
        .env("DOCKET_SMTP_URL", "smtp://127.0.0.1:2525")
        .env("DOCKET_PUBLIC_URL", "https://docket.example.com")
        .env(
            "DOCKET_MAIL_TOKEN_SECRET",
            "e2e-token-secret-0123456789abcdefgh",
        )
        .env("DOCKET_MAIL_FROM", "Docket <docket@example.com>")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap(), report)
}

/// With a relay queue command, `docket check` (and so the health document and `/ops`,
/// which print the same findings) shows the relay's own queue: two messages held by a
/// relay whose listing prints Postfix's `postqueue -j` lines, a warning above the threshold.
#[tokio::test]
async fn check_shows_the_relays_own_queue_from_its_listing() {
    let db = TestDb::new().await;
    let now = chrono::Utc::now().timestamp();
    let listing = format!(
        "printf '%s\\n' '{{\"queue_name\": \"deferred\", \"queue_id\": \"A1\", \"arrival_time\": {}, \"sender\": \"app@example.com\", \"recipients\": []}}' '{{\"queue_name\": \"active\", \"queue_id\": \"A2\", \"arrival_time\": {now}, \"sender\": \"app@example.com\", \"recipients\": []}}'",
        now - 7200
    );
    let (_, report) = check(&[
        ("DATABASE_URL", &db.url),
        ("DOCKET_RELAY_QUEUE_COMMAND", &listing),
        ("DOCKET_RELAY_QUEUE_WARN", "1"),
    ]);
    let finding = report["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["name"] == "relay_queue"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(finding["verdict"], "warn", "{report}");
    let detail = finding["detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with("2 messages held, the oldest for 2"),
        "{detail}"
    );
}

/// A process in stub mode sends nothing: `docket check` says so (a warning, exit 1) in the
/// words the health document and `/ops` use, instead of `ok`.
#[tokio::test]
async fn check_says_out_loud_that_stub_mode_sends_nothing() {
    let db = TestDb::new().await;
    let out = Command::new(env!("CARGO_BIN_EXE_docket"))
        .args(["check", "--json"])
        .env("DOCKET_CHECK_DISK_MIN_FREE_PERCENT", "0")
        .env("DOCKET_LOG_FORMAT", "json")
        .env("DATABASE_URL", &db.url)
        .env_remove("DOCKET_SMTP_URL")
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let mail = report["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["name"] == "mail"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (&mail["verdict"], &mail["detail"]),
        (
            &serde_json::json!("warn"),
            &serde_json::json!("stub, nothing is sent")
        ),
        "{report}"
    );
    assert_eq!(out.status.code(), Some(1), "{report}");
}

#[tokio::test]
async fn check_exits_0_when_ok_1_on_a_stale_backup_and_2_when_the_database_is_down() {
    let db = TestDb::new().await;
    let backups = std::env::temp_dir().join(format!("docket-backups-{}", db.name));
    std::fs::create_dir_all(&backups).unwrap();
    let backup = backups.join("nightly.dump");
    std::fs::write(&backup, b"dump").unwrap();
    let dir = backups.to_str().unwrap();
    // With a backup directory, a restore check is wanted too: a recent passing one.
    sqlx::query(
        "insert into docket.restore_checks (backup_file, ok, tables, jobs, duration_ms, owner)
         values ('nightly.dump', true, 14, 0, 1000, 'ops')",
    )
    .execute(&db.pool)
    .await
    .unwrap();

    let (code, report) = check(&[("DATABASE_URL", &db.url), ("DOCKET_BACKUP_DIR", dir)]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["status"], "ok");

    let touched = Command::new("touch")
        .args(["-d", "3 days ago"])
        .arg(&backup)
        .status()
        .unwrap();
    assert!(touched.success());
    let (code, report) = check(&[("DATABASE_URL", &db.url), ("DOCKET_BACKUP_DIR", dir)]);
    assert_eq!(code, 1, "{report}");
    let backup_check = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "backup")
        .unwrap()
        .clone();
    assert_eq!(backup_check["verdict"], "warn");

    let (code, report) = check(&[("DATABASE_URL", "postgres://nobody@127.0.0.1:9/none")]);
    assert_eq!(code, 2, "{report}");
    assert_eq!(report["checks"][0]["name"], "database");
    assert_eq!(report["checks"][0]["verdict"], "down");
    std::fs::remove_dir_all(&backups).unwrap();
}

/// A secret short enough to guess is refused at start-up, saying why, before a port opens.
#[test]
fn serve_refuses_a_short_secret() {
    for (var, value) in [
        ("CRON_SECRET", "s3cret"),
        ("DOCKET_OPS_SECRET", "0123456789abcde"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_docket"))
            .arg("serve")
            .env("DATABASE_URL", "postgres://nobody@127.0.0.1:9/none")
            .env("CRON_SECRET", SECRET)
            .env(var, value)
            .env("DOCKET_HTTP_ADDR", format!("127.0.0.1:{}", free_port()))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{var}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "{var} has {} characters; it needs at least 16",
                value.len()
            )),
            "{stderr}"
        );
        assert!(
            !stderr.contains(value),
            "the secret is not echoed: {stderr}"
        );
    }
}

/// A child process killed when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `docket serve` under `sh -c 'ulimit -n 64; exec docket serve'`, with `env`.
fn serve_with_few_files(db: &TestDb, port: u16, env: &[(&str, &str)]) -> KillOnDrop {
    let mut command = Command::new("sh");
    command
        .args(["-c", "ulimit -n 64 && exec \"$0\" serve"])
        .arg(env!("CARGO_BIN_EXE_docket"))
        .env("DATABASE_URL", &db.url)
        .env("CRON_SECRET", SECRET)
        .env("DOCKET_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("DOCKET_LOG_FORMAT", "json")
        .env("DOCKET_QUEUES", "default:1")
        .env("DOCKET_DB_POOL_SIZE", "3")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    KillOnDrop(command.spawn().unwrap())
}

async fn until_healthy(port: u16) {
    eventually(Duration::from_secs(30), "serve answers", || async move {
        request(port, "GET", "/api/health", false, None).is_some_and(|(status, _)| status == 200)
    })
    .await;
}

/// Whether the server closed `stream` (end of file or a reset) within `within`.
fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(err) => {
                return !matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                )
            }
        }
    }
}

/// Slow and idle clients are cut off after the header timeout: one that sends nothing, one
/// that stops halfway through its headers, one that sends a header a second, and an idle
/// keep-alive connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_are_cut_off() {
    let db = TestDb::new().await;
    let port = free_port();
    let serve = serve_with_few_files(
        &db,
        port,
        &[
            ("DOCKET_HTTP_HEADER_TIMEOUT", "1"),
            ("DOCKET_HTTP_IDLE_TIMEOUT", "2"),
        ],
    );
    until_healthy(port).await;
    let connect = || TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut silent = connect();
    let mut partial = connect();
    partial
        .write_all(b"GET /api/health HTTP/1.1\r\nHost: localhost\r\n")
        .unwrap();
    let mut idle = connect();
    idle.write_all(b"GET /api/health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut answer = [0; 1024];
    assert!(
        idle.read(&mut answer).unwrap() > 0,
        "the first request is answered"
    );
    let mut trickle = connect();
    let mut trickle_writer = trickle.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = trickle_writer.write_all(b"GET /api/health HTTP/1.1\r\n");
        for n in 0..10 {
            std::thread::sleep(Duration::from_millis(500));
            if trickle_writer
                .write_all(format!("X-Slow-{n}: 1\r\n").as_bytes())
                .is_err()
            {
                return;
            }
        }
    });
    let started = std::time::Instant::now();
    for (name, stream) in [
        ("silent", &mut silent),
        ("partial headers", &mut partial),
        ("idle keep-alive", &mut idle),
        ("a header every half second", &mut trickle),
    ] {
        assert!(
            closed_by_server(stream, Duration::from_secs(4)),
            "{name} is still open"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    writer.join().unwrap();
    drop(serve);
}

/// With the process's open-file limit at 64 and more idle connections than the cap, the
/// health probe still answers at once: a new connection closes the idlest one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_probe_answers_while_idle_clients_hold_every_connection() {
    let db = TestDb::new().await;
    let port = free_port();
    let serve = serve_with_few_files(
        &db,
        port,
        &[
            ("DOCKET_HTTP_HEADER_TIMEOUT", "60"),
            ("DOCKET_HTTP_IDLE_TIMEOUT", "60"),
            ("DOCKET_HTTP_MAX_CONNECTIONS", "24"),
        ],
    );
    until_healthy(port).await;
    let idle: Vec<TcpStream> = (0..45)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let answer = request(port, "HEAD", "/api/health", false, None);
        assert_eq!(answer.map(|(status, _)| status), Some(200));
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }
    drop(idle);
    drop(serve);
}

/// Requests whose body trickles in (one byte every few seconds, each under the idle
/// timeout) are in flight the whole time; when they hold every place, the quietest is
/// closed for a new connection, so the health probe still gets in.
#[tokio::test]
async fn the_health_probe_answers_while_trickled_bodies_hold_every_connection() {
    let db = TestDb::new().await;
    let port = free_port();
    let serve = serve_with_few_files(&db, port, &[("DOCKET_HTTP_MAX_CONNECTIONS", "8")]);
    until_healthy(port).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let trickles: Vec<_> = (0..8)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
                    return;
                };
                let head = "POST /ops/login HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: 1000\r\n\r\n";
                if stream.write_all(head.as_bytes()).is_err() {
                    return;
                }
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if stream.write_all(b"a").is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(2500));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    for _ in 0..3 {
        let answer = request(port, "HEAD", "/api/health", false, None);
        assert_eq!(answer.map(|(status, _)| status), Some(200));
        std::thread::sleep(Duration::from_millis(300));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for trickle in trickles {
        let _ = trickle.join();
    }
    drop(serve);
}
