//! Bounces after acceptance through the real binary: campaign email leaves with its own
//! envelope sender, and the notifications a relay sends back (checked-in Postfix and Exim
//! fixtures) reach `docket serve` over `POST /api/mail/bounces` and `docket mail bounce` on
//! standard input, with the exit codes a mail server's pipe reads.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use docket_testkit::{eventually, SmtpSink, TestDb};
use serde_json::Value;

use crate::unsubscribe::{campaign, env, free_port, show, templates, Process, WAIT};

const SECRET: &str = "e2e-secret-0123456789";

/// A checked-in notification for the delivery whose envelope sender was `from`.
fn fixture(name: &str, from: &str, recipient: &str) -> String {
    let path = format!(
        "{}/crates/mail/tests/fixtures/dsn/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let token = from
        .strip_prefix("bounce+")
        .and_then(|rest| rest.split('@').next())
        .unwrap();
    std::fs::read_to_string(path)
        .unwrap()
        .replace("{TOKEN}", token)
        .replace("{RECIPIENT}", recipient)
}

/// `POST /api/mail/bounces` with the bearer and a raw message.
fn post_bounce(port: u16, message: &str) -> (u16, Value) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let head = format!(
        "POST /api/mail/bounces HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Authorization: Bearer {SECRET}\r\nContent-Type: message/rfc822\r\n\
         Content-Length: {}\r\n\r\n",
        message.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(message.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = response.split_once("\r\n\r\n").unwrap().1;
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// `docket mail bounce` with `message` on standard input: the exit code and stdout.
fn pipe(
    db: &TestDb,
    sink: &SmtpSink,
    port: u16,
    dir: &Path,
    database_url: Option<&str>,
    message: &str,
) -> (i32, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_docket"));
    env(&mut command, db, sink, port, dir);
    if let Some(url) = database_url {
        command.env("DATABASE_URL", url);
    }
    let mut child = command
        .args(["mail", "bounce"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(message.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_over_http_and_the_pipe_bounce_their_deliveries_with_mail_server_exit_codes()
{
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    let dir = templates();
    let port = free_port();
    let mut serve = Command::new(env!("CARGO_BIN_EXE_docket"));
    env(&mut serve, &db, &sink, port, &dir)
        .arg("serve")
        .env("CRON_SECRET", SECRET)
        .env("DOCKET_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("DOCKET_POLL_INTERVAL", "0.2")
        .env("DOCKET_QUEUES", "mail,recovery")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _serve = Process(serve.spawn().expect("start docket serve"));
    let id = campaign(&db, &sink, port, &dir, "bounces");
    eventually(WAIT, "the campaign finishes", || async {
        show(&db, &sink, port, &dir, &id)["state"] == "finished"
    })
    .await;
    let from = |address: &str| {
        let received = sink
            .messages()
            .into_iter()
            .find(|m| m.to == [address])
            .unwrap();
        assert!(
            received.from.starts_with("bounce+") && received.from.ends_with("@bounces.example.com"),
            "{}",
            received.from
        );
        received.from
    };
    let (ann, bob) = (from("ann@example.com"), from("bob@example.com"));

    // Postfix's report over HTTP: Ann's delivery bounced, her address suppressed.
    let (status, answer) = post_bounce(
        port,
        &fixture("postfix-failed-5.1.1.eml", &ann, "ann@example.com"),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outcome"], "bounced", "{answer}");
    assert_eq!(answer["suppressed"], true, "{answer}");

    // Through the pipe: a delay changes nothing (0), Exim's failure bounces Bob (0), a
    // tampered bounce address is an unknown recipient (67), a database that does not
    // answer is "try again later" (75).
    let delayed = fixture("postfix-delayed-4.4.1.eml", &bob, "bob@example.com");
    assert_eq!(pipe(&db, &sink, port, &dir, None, &delayed).0, 0);
    assert_eq!(show(&db, &sink, port, &dir, &id)["bounced"], 1);
    let exim = fixture("exim-failed-5.0.0.eml", &bob, "bob@example.com");
    let (code, out) = pipe(&db, &sink, port, &dir, None, &exim);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("bounced delivery "), "{out}");
    let tampered = exim.replace(&bob[7..17], "0000000000");
    assert_eq!(pipe(&db, &sink, port, &dir, None, &tampered).0, 67);
    let down = "postgres://postgres@127.0.0.1:1/postgres";
    assert_eq!(pipe(&db, &sink, port, &dir, Some(down), &exim).0, 75);

    let shown = show(&db, &sink, port, &dir, &id);
    assert_eq!(
        (shown["bounced"].as_i64(), shown["sent"].as_i64()),
        (Some(2), Some(0)),
        "{shown}"
    );
    let suppressed: Vec<String> =
        sqlx::query_scalar("select address from docket.mail_suppressions order by address")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(suppressed, ["ann@example.com", "bob@example.com"]);
    let deliveries = crate::unsubscribe::docket(
        &db,
        &sink,
        port,
        &dir,
        &["mail", "deliveries", "--status", "bounced", "--json"],
    );
    let deliveries: Value = serde_json::from_str(&crate::unsubscribe::ok(&deliveries)).unwrap();
    assert_eq!(deliveries.as_array().map(Vec::len), Some(2), "{deliveries}");
}
