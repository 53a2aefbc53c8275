//! The email guarantees attacked through the real binary: two `docket worker`
//! processes, one of them frozen with SIGSTOP in the middle of an SMTP exchange (the relay
//! has taken the message and answers its end slowly), then thawed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use docket_testkit::{eventually, SmtpSink, TestDb};

fn folder() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("docket-e2e-adv-mail-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(dir.join("news")).unwrap();
    std::fs::write(dir.join("news/subject.txt"), "News").unwrap();
    std::fs::write(dir.join("news/body.txt"), "Hello {{ name }}.").unwrap();
    dir
}

fn recipients_csv(n: usize) -> PathBuf {
    let mut csv = String::from("email,name\n");
    for i in 0..n {
        csv.push_str(&format!("user{i}@example.com,User {i}\n"));
    }
    let path = std::env::temp_dir().join(format!("docket-adv-{}.csv", uuid::Uuid::now_v7()));
    std::fs::write(&path, csv).unwrap();
    path
}

fn spawn_worker(db: &TestDb, sink: &SmtpSink, templates: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_docket"))
        .arg("worker")
        .env("DATABASE_URL", &db.url)
        .env("DOCKET_LOG_FORMAT", "json")
        .env("DOCKET_QUEUES", "mail:2")
        .env("DOCKET_POLL_INTERVAL", "0.2")
        .env("DOCKET_HEARTBEAT_INTERVAL", "0.5")
        .env("DOCKET_LEASE_TIMEOUT", "2")
        .env("DOCKET_RESCUER_INTERVAL", "0.5")
        .env("DOCKET_SMTP_URL", sink.url())
        .env("DOCKET_PUBLIC_URL", "https://docket.example.com")
        .env(
            "DOCKET_MAIL_TOKEN_SECRET",
            "e2e-token-secret-0123456789abcdefgh",
        )
        // Longer than the relay's slow answer (no timeout mid-exchange), far longer than
        // the lease: bound = 5 + 10 s from the reservation.
        .env("DOCKET_SMTP_TIMEOUT", "5")
        .env("DOCKET_MAIL_RETRY_LADDER", "1s,1s")
        .env("DOCKET_MAIL_FROM", "Docket <docket@example.com>")
        .env("DOCKET_TEMPLATE_DIR", templates)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start docket worker")
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Worker A takes the first recipient, the relay takes its message and holds the answer;
/// A is frozen for `frozen`; worker B rescues A's batch job once A's lease lapses. Then A
/// is thawed. Nobody may get two copies; the frozen exchange's recipient is `sent` (A's
/// record lands within the bound) or `unknown` (past it), never sent again.
async fn freeze_a_worker_mid_exchange(frozen: Duration) -> (String, i64) {
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    sink.slow_data(Some(Duration::from_secs(3)));
    let templates = folder();
    let total = 6;
    let file = recipients_csv(total);
    let created = Command::new(env!("CARGO_BIN_EXE_docket"))
        .args([
            "mail",
            "campaign",
            "create",
            "--name",
            "freeze",
            "--template",
            "news",
        ])
        .args(["--recipients", file.to_str().unwrap(), "--batch-size", "3"])
        .env("DATABASE_URL", &db.url)
        .env("DOCKET_TEMPLATE_DIR", &templates)
        .env("DOCKET_MAIL_FROM", "Docket <docket@example.com>")
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    let mut a = spawn_worker(&db, &sink, &templates);
    eventually(
        Duration::from_secs(30),
        "the relay took a message",
        || async { !sink.messages().is_empty() },
    )
    .await;
    signal(&a, "-STOP");
    let stopped = Instant::now();
    let in_flight: Vec<String> = sqlx::query_scalar(
        "select recipient from docket.mail_deliveries where status = 'sending' order by 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(!in_flight.is_empty(), "A was frozen mid-exchange");
    sink.slow_data(None);
    let mut b = spawn_worker(&db, &sink, &templates);
    tokio::time::sleep(frozen.saturating_sub(stopped.elapsed())).await;
    signal(&a, "-CONT");
    eventually(
        Duration::from_secs(60),
        "every delivery is final",
        || async {
            sqlx::query_scalar::<_, i64>(
                "select count(*) from docket.mail_deliveries where status in ('queued', 'sending')",
            )
            .fetch_one(&db.pool)
            .await
            .unwrap()
                == 0
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for child in [&mut a, &mut b] {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    for i in 0..total {
        let address = format!("user{i}@example.com");
        let recorded: (String, i32, Option<String>) = sqlx::query_as(
            "select status, attempts, last_error from docket.mail_deliveries where recipient = $1",
        )
        .bind(&address)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert_eq!(
            sink.count_for(&address),
            1,
            "{address} received {} copies; delivery {recorded:?}; in flight at the freeze: {in_flight:?}",
            sink.count_for(&address)
        );
    }
    let statuses: Vec<(String, String)> = sqlx::query_as(
        "select recipient, status from docket.mail_deliveries where recipient = any($1)",
    )
    .bind(&in_flight)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let unknown: i64 =
        sqlx::query_scalar("select count(*) from docket.mail_deliveries where status = 'unknown'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    (format!("{statuses:?}"), unknown)
}

/// At most once with a frozen worker: thawed within the bound, A's exchange finds its
/// `DOCKET_SMTP_TIMEOUT` timer elapsed (the relay's 250 sits unread in the socket). It was
/// called a timeout, retried on the ladder, and the recipient was sent again; a cut-off
/// after the message was handed over is now `unknown`, and nobody sends it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adv_a_worker_frozen_past_its_lease_but_within_the_bound_records_sent_and_nobody_resends() {
    let (statuses, unknown) = freeze_a_worker_mid_exchange(Duration::from_secs(7)).await;
    assert_eq!(
        unknown, 0,
        "thawed within the bound, A records it: {statuses}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adv_a_worker_frozen_past_the_bound_leaves_unknown_and_nobody_resends() {
    let (statuses, unknown) = freeze_a_worker_mid_exchange(Duration::from_secs(20)).await;
    assert!(
        unknown >= 1,
        "past the bound B marks it unknown: {statuses}"
    );
}
