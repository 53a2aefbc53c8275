//! One-click unsubscribe (RFC 8058) through the real binary: a campaign email as the relay
//! receives it carries both headers and a link that `docket serve` answers; GET changes
//! nothing, a tampered link is refused, the one-click POST suppresses the address and the
//! next campaign sends it nothing.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use docket_mail::token::{Purpose, Signer, TokenSecret};
use docket_testkit::{eventually, SmtpSink, TestDb};
use mail_parser::MessageParser;
use serde_json::Value;

pub(crate) const WAIT: Duration = Duration::from_secs(60);
pub(crate) const TOKEN_SECRET: &str = "e2e-unsubscribe-secret-0123456789abcdef";

pub(crate) struct Process(pub(crate) Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) fn templates() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("docket-e2e-unsub-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(dir.join("news")).unwrap();
    std::fs::write(dir.join("news/subject.txt"), "News for {{ name }}").unwrap();
    std::fs::write(
        dir.join("news/body.txt"),
        "Hello {{ name }}.\nLeave the list: {{ unsubscribe_url }}\n",
    )
    .unwrap();
    dir
}

pub(crate) fn env<'a>(
    command: &'a mut Command,
    db: &TestDb,
    sink: &SmtpSink,
    port: u16,
    dir: &Path,
) -> &'a mut Command {
    command
        .env("DATABASE_URL", &db.url)
        .env("DOCKET_LOG_FORMAT", "json")
        .env("DOCKET_TEMPLATE_DIR", dir)
        .env("DOCKET_SMTP_URL", sink.url())
        .env("DOCKET_MAIL_FROM", "Docket <docket@example.com>")
        .env("DOCKET_PUBLIC_URL", format!("http://127.0.0.1:{port}/"))
        .env("DOCKET_MAIL_TOKEN_SECRET", TOKEN_SECRET)
        .env("DOCKET_MAIL_UNSUBSCRIBE_MAILTO", "unsubscribe@example.com")
        .env("DOCKET_MAIL_BOUNCE_DOMAIN", "bounces.example.com")
}

pub(crate) fn docket(db: &TestDb, sink: &SmtpSink, port: u16, dir: &Path, args: &[&str]) -> Output {
    env(
        &mut Command::new(env!("CARGO_BIN_EXE_docket")),
        db,
        sink,
        port,
        dir,
    )
    .args(args)
    .output()
    .expect("run docket")
}

pub(crate) fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "docket failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// One HTTP/1.1 request over a fresh connection: the status and the body.
pub(crate) fn request(port: u16, method: &str, path: &str, form: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let body = form.unwrap_or("");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if form.is_some() {
        head.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = response.split_once("\r\n\r\n").unwrap().1.to_owned();
    (status, body)
}

pub(crate) fn campaign(db: &TestDb, sink: &SmtpSink, port: u16, dir: &Path, name: &str) -> String {
    let file = dir.join(format!("{name}.csv"));
    std::fs::write(
        &file,
        "email,name\nann@example.com,Ann\nbob@example.com,Bob\n",
    )
    .unwrap();
    let args = [
        "mail",
        "campaign",
        "create",
        "--name",
        name,
        "--template",
        "news",
        "--recipients",
    ];
    let mut args = args.to_vec();
    args.push(file.to_str().unwrap());
    ok(&docket(db, sink, port, dir, &args)).trim().to_owned()
}

pub(crate) fn show(db: &TestDb, sink: &SmtpSink, port: u16, dir: &Path, id: &str) -> Value {
    let shown = docket(
        db,
        sink,
        port,
        dir,
        &["mail", "campaign", "show", id, "--json"],
    );
    serde_json::from_str(&ok(&shown)).unwrap()
}

async fn suppressions(db: &TestDb) -> Vec<(String, String, Option<uuid::Uuid>)> {
    sqlx::query_as(
        "select address, reason, campaign_id from docket.mail_suppressions order by address",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_email_unsubscribes_in_one_click_and_the_next_campaign_skips_the_address() {
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    let dir = templates();
    let port = free_port();
    let mut serve = Command::new(env!("CARGO_BIN_EXE_docket"));
    env(&mut serve, &db, &sink, port, &dir)
        .arg("serve")
        .env("CRON_SECRET", "e2e-secret-0123456789")
        .env("DOCKET_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("DOCKET_POLL_INTERVAL", "0.2")
        .env("DOCKET_QUEUES", "mail,recovery")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _serve = Process(serve.spawn().expect("start docket serve"));

    let first = campaign(&db, &sink, port, &dir, "first");
    eventually(WAIT, "both emails arrive", || async {
        sink.messages().len() == 2
    })
    .await;

    // As received: both headers, the link in the body too.
    let received = sink
        .messages()
        .into_iter()
        .find(|m| m.to == ["ann@example.com"])
        .unwrap();
    let message = MessageParser::default().parse(&received.data).unwrap();
    let header = |name: &str| {
        message
            .header_raw(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(
        header("List-Unsubscribe-Post"),
        "List-Unsubscribe=One-Click"
    );
    let list = header("List-Unsubscribe");
    let prefix = format!("<http://127.0.0.1:{port}/unsubscribe/");
    assert!(list.starts_with(&prefix), "{list}");
    let url = list[1..].split('>').next().unwrap().to_owned();
    let token = url.rsplit('/').next().unwrap().to_owned();
    assert!(
        list.ends_with(&format!(
            ", <mailto:unsubscribe@example.com?subject=unsubscribe%20{token}>"
        )),
        "{list}"
    );
    let body = message.body_text(0).unwrap();
    assert!(body.contains(&url), "{body}");
    let path = url
        .split_once(&format!("127.0.0.1:{port}"))
        .unwrap()
        .1
        .to_owned();

    // GET: the confirmation page, nothing changed.
    let (status, page) = request(port, "GET", &path, None);
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("ann@example.com") && page.contains("method=\"post\""),
        "{page}"
    );
    assert!(suppressions(&db).await.is_empty());
    assert_eq!(show(&db, &sink, port, &dir, &first)["unsubscribed"], 0);

    // Tampered with (one character), another delivery's id under this signature, and a
    // well-signed token of no delivery: refused, nothing changed.
    let mut flipped = token.clone().into_bytes();
    flipped[40] = if flipped[40] == b'a' { b'b' } else { b'a' };
    let flipped = String::from_utf8(flipped).unwrap();
    let foreign = format!("{}{}", uuid::Uuid::now_v7().simple(), &token[32..]);
    for bad in [flipped.as_str(), foreign.as_str(), "not-a-token"] {
        for method in ["GET", "POST"] {
            let (status, page) = request(
                port,
                method,
                &format!("/unsubscribe/{bad}"),
                Some("List-Unsubscribe=One-Click"),
            );
            assert_eq!(status, 400, "{method} {bad}: {page}");
            assert!(page.contains("Nothing was changed"), "{page}");
        }
    }
    let signer = Signer::new(TokenSecret::new(TOKEN_SECRET).unwrap(), None);
    let nobody = signer.sign(Purpose::Unsubscribe, uuid::Uuid::now_v7());
    let (status, _) = request(
        port,
        "POST",
        &format!("/unsubscribe/{nobody}"),
        Some("List-Unsubscribe=One-Click"),
    );
    assert_eq!(status, 404);
    assert!(suppressions(&db).await.is_empty());

    // One click (RFC 8058's POST body): unsubscribed at once; a second is harmless.
    for _ in 0..2 {
        let (status, page) = request(port, "POST", &path, Some("List-Unsubscribe=One-Click"));
        assert_eq!(status, 200, "{page}");
    }
    let first_id: uuid::Uuid = first.parse().unwrap();
    assert_eq!(
        suppressions(&db).await,
        [(
            "ann@example.com".to_owned(),
            "unsubscribed".to_owned(),
            Some(first_id)
        )]
    );
    let shown = show(&db, &sink, port, &dir, &first);
    assert_eq!(
        (shown["unsubscribed"].as_i64(), shown["sent"].as_i64()),
        (Some(1), Some(2)),
        "{shown}"
    );

    // The next campaign sends Ann nothing.
    let second = campaign(&db, &sink, port, &dir, "second");
    eventually(WAIT, "the second campaign finishes", || async {
        show(&db, &sink, port, &dir, &second)["state"] == "finished"
    })
    .await;
    let shown = show(&db, &sink, port, &dir, &second);
    assert_eq!(
        (shown["sent"].as_i64(), shown["suppressed"].as_i64()),
        (Some(1), Some(1)),
        "{shown}"
    );
    assert_eq!(sink.count_for("ann@example.com"), 1);
    assert_eq!(sink.count_for("bob@example.com"), 2);
}

/// Campaigns in smtp mode need the links' base: start-up says which setting is missing.
#[test]
fn serve_in_smtp_mode_without_a_public_url_says_so_at_start_up() {
    let out = Command::new(env!("CARGO_BIN_EXE_docket"))
        .arg("serve")
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/none")
        .env("DOCKET_SMTP_URL", "smtp://127.0.0.1:2525")
        .env("DOCKET_MAIL_FROM", "Docket <docket@example.com>")
        .env("DOCKET_MAIL_TOKEN_SECRET", TOKEN_SECRET)
        .env_remove("DOCKET_PUBLIC_URL")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("DOCKET_PUBLIC_URL is required in smtp mode"),
        "{stderr}"
    );
}
