//! Email through the real binary: start-up refuses a broken template, the `docket mail`
//! commands, and a worker killed with SIGKILL in the middle of a campaign.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use docket_testkit::{eventually, SmtpSink, TestDb};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(90);

fn folder(files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("docket-e2e-mail-{}", uuid::Uuid::now_v7()));
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

fn newsletter() -> PathBuf {
    folder(&[
        ("news/subject.txt", "News for {{ name }}"),
        ("news/body.txt", "Hello {{ name }}, plan {{ plan }}."),
    ])
}

fn docket(db: &TestDb, templates: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_docket"))
        .args(args)
        .env("DATABASE_URL", &db.url)
        .env("DOCKET_LOG_FORMAT", "json")
        .env("DOCKET_TEMPLATE_DIR", templates)
        .env("DOCKET_MAIL_FROM", "Docket <docket@example.com>")
        .output()
        .expect("run docket")
}

fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "docket failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn recipients_csv(n: usize) -> PathBuf {
    let mut csv = String::from("email,name,plan\n");
    for i in 0..n {
        csv.push_str(&format!("user{i}@example.com,User {i},pro\n"));
    }
    let path = std::env::temp_dir().join(format!("docket-recipients-{}.csv", uuid::Uuid::now_v7()));
    std::fs::write(&path, csv).unwrap();
    path
}

#[tokio::test]
async fn a_broken_template_stops_serve_before_it_listens_naming_the_file_and_line() {
    let db = TestDb::new().await;
    let templates = folder(&[
        ("welcome/subject.txt", "Welcome"),
        ("welcome/body.txt", "Hello,\n{% if name %}{{ name }\n"),
    ]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let output = tokio::task::spawn_blocking({
        let url = db.url.clone();
        let templates = templates.clone();
        move || {
            Command::new(env!("CARGO_BIN_EXE_docket"))
                .arg("serve")
                .env("DATABASE_URL", url)
                .env("DOCKET_LOG_FORMAT", "json")
                .env("DOCKET_TEMPLATE_DIR", templates)
                .env("DOCKET_HTTP_ADDR", format!("127.0.0.1:{port}"))
                .env("CRON_SECRET", "s3cret-0123456789")
                .stdin(Stdio::null())
                .output()
                .unwrap()
        }
    });
    let output = tokio::time::timeout(Duration::from_secs(30), output)
        .await
        .expect("serve exits")
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    let file = templates.join("welcome/body.txt");
    assert!(
        stderr.contains(&format!("{}:2", file.display())),
        "{stderr}"
    );
    assert!(
        !stderr.contains("http.listening"),
        "it never listened: {stderr}"
    );
}

#[tokio::test]
async fn the_mail_commands_render_list_suppress_and_run_a_campaign_s_controls() {
    let db = TestDb::new().await;
    let templates = newsletter();
    let listed: Value = serde_json::from_str(&ok(&docket(
        &db,
        &templates,
        &["mail", "templates", "--json"],
    )))
    .unwrap();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"news") && names.contains(&"docket/campaign_finished"),
        "{names:?}"
    );

    let rendered = ok(&docket(
        &db,
        &templates,
        &[
            "mail",
            "render",
            "news",
            "--vars",
            r#"{"name": "Ann", "plan": "pro"}"#,
        ],
    ));
    assert!(
        rendered.contains("Subject: News for Ann") && rendered.contains("Hello Ann, plan pro."),
        "{rendered}"
    );
    let missing = docket(
        &db,
        &templates,
        &["mail", "render", "news", "--vars", r#"{"name": "Ann"}"#],
    );
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("plan"),
        "the missing variable is named"
    );

    ok(&docket(
        &db,
        &templates,
        &[
            "mail",
            "suppress",
            "Bounce <BOUNCE@example.com>",
            "--reason",
            "complaint",
        ],
    ));
    let list: Value = serde_json::from_str(&ok(&docket(
        &db,
        &templates,
        &["mail", "suppressions", "--json"],
    )))
    .unwrap();
    assert_eq!(list[0]["address"], "bounce@example.com");
    assert_eq!(list[0]["reason"], "complaint");
    assert_eq!(list[0]["source"], "operator");
    ok(&docket(
        &db,
        &templates,
        &["mail", "unsuppress", "bounce@example.com"],
    ));
    let list: Value = serde_json::from_str(&ok(&docket(
        &db,
        &templates,
        &["mail", "suppressions", "--json"],
    )))
    .unwrap();
    assert_eq!(list, serde_json::json!([]));

    // A file with a bad row: with --skip-bad-rows, the row is named with its line and
    // skipped.
    let file = std::env::temp_dir().join(format!("docket-recipients-{}.csv", uuid::Uuid::now_v7()));
    std::fs::write(
        &file,
        "email,name,plan\nann@example.com,Ann,pro\nnot an address,Bob,free\n",
    )
    .unwrap();
    let created = docket(
        &db,
        &templates,
        &[
            "mail",
            "campaign",
            "create",
            "--name",
            "n",
            "--template",
            "news",
            "--recipients",
            file.to_str().unwrap(),
            "--skip-bad-rows",
        ],
    );
    let id = ok(&created).trim().to_owned();
    assert!(
        String::from_utf8_lossy(&created.stderr).contains(":3: skipped"),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    // `--json` answers with the campaign as it is after the action.
    let shown: Value = serde_json::from_str(&ok(&docket(
        &db,
        &templates,
        &["mail", "campaign", "pause", &id, "--json"],
    )))
    .unwrap();
    assert_eq!(
        (
            shown["state"].as_str(),
            shown["total"].as_i64(),
            shown["pending"].as_i64()
        ),
        (Some("paused"), Some(1), Some(1))
    );
    ok(&docket(
        &db,
        &templates,
        &["mail", "campaign", "cancel", &id],
    ));
    let listed: Value = serde_json::from_str(&ok(&docket(
        &db,
        &templates,
        &["mail", "campaign", "list", "--json"],
    )))
    .unwrap();
    assert_eq!(listed[0]["state"], "cancelled");
    let deliveries: Value = serde_json::from_str(&ok(&docket(
        &db,
        &templates,
        &["mail", "deliveries", "--campaign", &id, "--json"],
    )))
    .unwrap();
    assert_eq!(deliveries[0]["recipient"], "ann@example.com");
    assert_eq!(deliveries[0]["status"], "cancelled");
    assert_eq!(
        (
            listed[0]["cancelled"].as_i64(),
            listed[0]["pending"].as_i64()
        ),
        (Some(1), Some(0)),
        "{listed}"
    );
    // A control that means nothing now is refused with the reason, not "done".
    for action in ["resume", "pause"] {
        let refused = docket(&db, &templates, &["mail", "campaign", action, &id]);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success(), "{action}: {stderr}");
        assert!(
            stderr.contains(&format!("campaign {id} is cancelled: it cannot be")),
            "{action}: {stderr}"
        );
        assert!(
            refused.stdout.is_empty(),
            "{action}: nothing claims it was done"
        );
    }

    let unknown = docket(
        &db,
        &templates,
        &[
            "mail",
            "campaign",
            "create",
            "--name",
            "n",
            "--template",
            "nope",
            "--recipients",
            file.to_str().unwrap(),
            "--skip-bad-rows",
        ],
    );
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no template named \"nope\""));
    // A near miss is named.
    let typo = docket(
        &db,
        &templates,
        &["mail", "render", "nwes", "--vars", r#"{"name": "Ann"}"#],
    );
    assert!(!typo.status.success());
    let stderr = String::from_utf8_lossy(&typo.stderr);
    assert!(
        stderr.contains("no template named \"nwes\"; did you mean \"news\"?"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_campaign_its_file_cannot_fill_or_with_bad_rows_is_refused_and_a_dry_run_sends_nothing() {
    let db = TestDb::new().await;
    let templates = folder(&[
        ("monthly/subject.txt", "{{ month }} news"),
        ("monthly/body.txt", "Hi {{ name }}: {{ headline }}"),
        ("monthly/de/subject.txt", "Neues im {{ month }}"),
        ("monthly/de/body.txt", "Hallo {{ name }}: {{ teaser }}"),
    ]);
    let file = |text: &str| {
        let path =
            std::env::temp_dir().join(format!("docket-recipients-{}.csv", uuid::Uuid::now_v7()));
        std::fs::write(&path, text).unwrap();
        path
    };
    let create = |path: &Path, extra: &[&str]| {
        let mut args = vec![
            "mail",
            "campaign",
            "create",
            "--name",
            "monthly",
            "--template",
            "monthly",
            "--recipients",
            path.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        docket(&db, &templates, &args)
    };
    let campaigns = || async {
        sqlx::query_scalar::<_, i64>("select count(*) from docket.mail_campaigns")
            .fetch_one(&db.pool)
            .await
            .unwrap()
    };

    // The columns cannot fill the template: every missing variable, of every locale.
    let thin = file("email,name\nann@example.com,Ann\nbob@example.com,Bob\n");
    let refused = create(&thin, &[]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains("the variables headline, month, teaser that the recipients do not give"),
        "{stderr}"
    );
    assert_eq!(campaigns().await, 0);

    // A bad address, a short row, and a quote left open that swallows the next row.
    let rows = file(
        "email,name,month,headline,teaser\n\
         ann@example.com,Ann,May,Big news,Read\n\
         not an address,Bob,May,Big news,Read\n\
         cid@example.com,Cid,May\n\
         dan@example.com,Dan,May,\"Big news,Read\n\
         eve@example.com,Eve,May,Big news,Read\"\n\
         fay@example.com,Fay,May,Big news,Read\n",
    );
    let refused = create(&rows, &[]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    for line in [3, 4, 5, 6] {
        assert!(
            stderr.contains(&format!("{}:{line}: bad row", rows.display())),
            "line {line}: {stderr}"
        );
    }
    assert!(stderr.contains("4 bad rows"), "{stderr}");
    assert!(stderr.contains("--skip-bad-rows"), "{stderr}");
    assert_eq!(campaigns().await, 0);

    // A dry run renders the first messages and records nothing.
    let dry = create(&rows, &["--skip-bad-rows", "--dry-run"]);
    let stdout = ok(&dry);
    assert!(
        stdout.contains("--- To: ann@example.com") && stdout.contains("Subject: May news"),
        "{stdout}"
    );
    assert!(stdout.contains("Hi Ann: Big news"), "{stdout}");
    assert!(stdout.contains("nothing was recorded or sent"), "{stdout}");
    assert_eq!(campaigns().await, 0);

    let created = create(&rows, &["--skip-bad-rows", "--json"]);
    let created: Value = serde_json::from_str(&ok(&created)).unwrap();
    assert_eq!(created["total"], 2, "{created}");
    assert_eq!(created["skipped"].as_array().unwrap().len(), 4, "{created}");
    assert_eq!(campaigns().await, 1);
}

fn spawn_worker(db: &TestDb, sink: &SmtpSink, templates: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_docket"))
        .arg("worker")
        .env("DATABASE_URL", &db.url)
        .env("DOCKET_LOG_FORMAT", "json")
        .env("DOCKET_QUEUES", "mail:4")
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
        // A delivery a kill left `sending` becomes `unknown` once this bound (plus 10 s)
        // has passed.
        .env("DOCKET_SMTP_TIMEOUT", "5")
        .env("DOCKET_MAIL_FROM", "Docket <docket@example.com>")
        .env("DOCKET_TEMPLATE_DIR", templates)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start docket worker")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_campaign_and_restarted_sends_each_recipient_once() {
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    let templates = newsletter();
    let total = 400;
    let file = recipients_csv(total);
    let id = ok(&docket(
        &db,
        &templates,
        &[
            "mail",
            "campaign",
            "create",
            "--name",
            "kill",
            "--template",
            "news",
            "--recipients",
            file.to_str().unwrap(),
            "--batch-size",
            "50",
        ],
    ))
    .trim()
    .to_owned();
    let mut worker = spawn_worker(&db, &sink, &templates);
    eventually(WAIT, "a quarter of the campaign is sent", || async {
        sink.messages().len() >= total / 4
    })
    .await;
    worker.kill().unwrap();
    worker.wait().unwrap();
    assert!(sink.messages().len() < total, "killed mid-campaign");

    let mut worker = spawn_worker(&db, &sink, &templates);
    eventually(WAIT, "the campaign finishes", || async {
        let shown = docket(
            &db,
            &templates,
            &["mail", "campaign", "show", &id, "--json"],
        );
        let shown: Value = serde_json::from_slice(&shown.stdout).unwrap_or_default();
        shown["state"] == "finished"
    })
    .await;
    worker.kill().unwrap();
    worker.wait().unwrap();

    // What was in flight at the kill ends `unknown`: the only deliveries that may have
    // reached nobody. They are read at the end, not right after the kill: a statement the
    // killed worker had sent (a reservation, a record) may still commit after it died.
    let in_flight: HashSet<String> = sqlx::query_scalar::<_, String>(
        "select recipient from docket.mail_deliveries where status = 'unknown'",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    assert!(
        in_flight.len() <= 4,
        "at most one message per sender in flight: {in_flight:?}"
    );
    for i in 0..total {
        let address = format!("user{i}@example.com");
        let received = sink.count_for(&address);
        assert!(received <= 1, "{address} got {received} messages");
        assert!(
            received == 1 || in_flight.contains(&address),
            "{address} was skipped"
        );
    }
    let shown: Value = serde_json::from_slice(
        &docket(
            &db,
            &templates,
            &["mail", "campaign", "show", &id, "--json"],
        )
        .stdout,
    )
    .unwrap();
    // In flight at the kill: the relay may have taken it, so it is `unknown`, not resent.
    let unknown = in_flight.len() as i64;
    assert_eq!(
        (
            shown["sent"].as_i64(),
            shown["unknown"].as_i64(),
            shown["pending"].as_i64()
        ),
        (Some(total as i64 - unknown), Some(unknown), Some(0)),
        "{shown}"
    );
}

/// `docket check` as an operator runs it beside workers that send through `relay`.
fn check_with_relay(db: &TestDb, relay: &str, json: bool) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_docket"));
    command.arg("check");
    if json {
        command.arg("--json");
    }
    command
        .env("DATABASE_URL", &db.url)
        .env("DOCKET_LOG_FORMAT", "json")
        .env("DOCKET_CHECK_DISK_MIN_FREE_PERCENT", "0")
        .env("DOCKET_SMTP_URL", relay)
        .env("DOCKET_PUBLIC_URL", "https://docket.example.com")
        .env(
            "DOCKET_MAIL_TOKEN_SECRET",
            "e2e-token-secret-0123456789abcdefgh",
        )
        .env("DOCKET_MAIL_FROM", "Docket <docket@example.com>")
        .output()
        .expect("run docket check")
}

fn mail_finding(output: &Output) -> Value {
    let report: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    report["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["name"] == "mail"))
        .cloned()
        .unwrap_or(Value::Null)
}

/// A relay that refuses connections: `docket check` has a mail row that says nothing was
/// sent yet (not that the relay takes our mail), then, once a password reset has failed
/// to reach it, that the relay cannot be reached, where and since when.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docket_check_says_the_relay_cannot_be_reached_when_it_refuses_connections() {
    let db = TestDb::new().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let relay = format!("smtp://127.0.0.1:{port}");
    let templates = folder(&[
        ("reset/subject.txt", "Reset"),
        ("reset/body.txt", "Follow {{ link }}"),
    ]);

    let before = check_with_relay(&db, &relay, false);
    let table = String::from_utf8_lossy(&before.stdout).into_owned();
    let row = table
        .lines()
        .find(|line| line.starts_with("mail "))
        .unwrap_or_else(|| panic!("a mail row: {table}"));
    assert!(
        row.contains("ok") && row.contains("nothing sent yet"),
        "{row}"
    );

    let mut worker = Command::new(env!("CARGO_BIN_EXE_docket"))
        .arg("worker")
        .env("DATABASE_URL", &db.url)
        .env("DOCKET_LOG_FORMAT", "json")
        .env("DOCKET_POLL_INTERVAL", "0.2")
        .env("DOCKET_SMTP_URL", &relay)
        .env("DOCKET_PUBLIC_URL", "https://docket.example.com")
        .env(
            "DOCKET_MAIL_TOKEN_SECRET",
            "e2e-token-secret-0123456789abcdefgh",
        )
        .env("DOCKET_SMTP_TIMEOUT", "2")
        .env("DOCKET_MAIL_RETRY_LADDER", "1s,1s,1s,1s,1s,1s,1s,1s")
        .env("DOCKET_MAIL_FROM", "Docket <docket@example.com>")
        .env("DOCKET_TEMPLATE_DIR", &templates)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start docket worker");
    sqlx::query(
        r#"select docket.enqueue('mail.recovery',
               '{"to": "ann@example.com", "template": "reset", "vars": {"link": "https://x"}}',
               queue => 'recovery', priority => -10)"#,
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let degraded = || async {
        let finding = mail_finding(&check_with_relay(&db, &relay, true));
        finding["verdict"] == "degraded"
    };
    eventually(WAIT, "the mail check is degraded", degraded).await;
    worker.kill().unwrap();
    worker.wait().unwrap();

    let output = check_with_relay(&db, &relay, true);
    let finding = mail_finding(&output);
    let detail = finding["detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with(&format!(
            "cannot reach the relay at 127.0.0.1:{port} since "
        )),
        "{finding}"
    );
    assert!(detail.contains("attempt"), "{finding}");
    assert_eq!(output.status.code(), Some(1), "{finding}");
}
