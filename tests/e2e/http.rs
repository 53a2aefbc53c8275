use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use docket_queue::JobState;
use docket_testkit::{eventually, TestDb};
use serde_json::Value;

const SECRET: &str = "e2e-secret";

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

fn check(env: &[(&str, &str)]) -> (i32, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_docket"))
        .args(["check", "--json"])
        .env("DOCKET_CHECK_DISK_MIN_FREE_PERCENT", "0")
        .env("DOCKET_LOG_FORMAT", "json")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap(), report)
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
