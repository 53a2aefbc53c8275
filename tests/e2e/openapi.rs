//! The OpenAPI document says what the API does: a schema-driven fuzzer (schemathesis),
//! run as a client generator would read the document, finds no check failing against a
//! real `docket serve`: no server error, no undocumented status, no valid request refused
//! and no invalid one accepted.

use std::process::{Command, Stdio};
use std::time::Duration;

use docket_testkit::{eventually, TestDb};

const SECRET: &str = "openapi-secret-0123456789";

/// A fixed seed: a failure reproduces; raise `--max-examples` locally to search wider.
const SEED: &str = "20261201";

/// A catalog with one template, so that campaigns can be created.
fn templates() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("docket-openapi-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(dir.join("news")).unwrap();
    std::fs::write(dir.join("news/subject.txt"), "News").unwrap();
    std::fs::write(
        dir.join("news/body.txt"),
        "Hello {{ name | default('you') }}",
    )
    .unwrap();
    // A schedule, so that the cron routes' document names one the server knows.
    std::fs::write(
        dir.join("docket.toml"),
        "[[schedule]]\nname = \"nightly\"\ncron = \"0 0 3 * * *\"\nkind = \"docket.noop\"\n",
    )
    .unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_driven_fuzzer_finds_nothing_the_document_does_not_say() {
    if !docket_testkit::tools::require_python_module("schemathesis") {
        return;
    }
    let db = TestDb::new().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let templates = templates();
    // A campaign the control routes can act on: with only random ids they would answer
    // nothing but 404, and the fuzzer would never reach their 200 and 409.
    let recipients = templates.join("recipients.csv");
    std::fs::write(&recipients, "email\nann@example.com\nbob@example.com\n").unwrap();
    let created = Command::new(env!("CARGO_BIN_EXE_docket"))
        .args([
            "mail",
            "campaign",
            "create",
            "--name",
            "fuzzed",
            "--template",
            "news",
        ])
        .arg("--recipients")
        .arg(&recipients)
        .env("DATABASE_URL", &db.url)
        .env("DOCKET_TEMPLATE_DIR", &templates)
        .env("DOCKET_MAIL_FROM", "Docket <docket@example.com>")
        .env("DOCKET_LOG_FORMAT", "json")
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let campaign = String::from_utf8(created.stdout).unwrap().trim().to_owned();
    let config = templates.join("schemathesis.toml");
    // The bounce route takes a raw message (message/rfc822), which the fuzzer cannot
    // write; real delivery reports exercise it (`bounce::`).
    std::fs::write(
        &config,
        format!(
            "[[operations]]\ninclude-path-regex = \"^/api/campaigns/\\\\{{id\\\\}}\"\n\
             parameters = {{ id = \"{campaign}\" }}\n\n\
             [[operations]]\ninclude-path = \"/api/mail/bounces\"\nenabled = false\n"
        ),
    )
    .unwrap();
    let mut serve = Command::new(env!("CARGO_BIN_EXE_docket"))
        .arg("serve")
        .env("DOCKET_CONFIG", templates.join("docket.toml"))
        .env("DATABASE_URL", &db.url)
        .env("CRON_SECRET", SECRET)
        .env("DOCKET_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("DOCKET_LOG_FORMAT", "json")
        .env("DOCKET_TEMPLATE_DIR", &templates)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(30), "serve listens", || async move {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .await;
    let run = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            // schemathesis keeps a cache in its working directory: not in the checkout.
            .current_dir(std::env::temp_dir())
            .args(["-m", "schemathesis.cli", "--config-file"])
            .arg(&config)
            .arg("run")
            .arg(format!("http://127.0.0.1:{port}/api/openapi.json"))
            .args(["-H", &format!("Authorization: Bearer {SECRET}")])
            .args(["--checks", "all", "--max-examples", "30", "--seed", SEED])
            // The document says NUL characters are refused (422); the fuzzer's strings
            // would otherwise carry them into `payload`, whose schema is any JSON.
            .args(["--generation-allow-x00", "false"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let _ = serve.kill();
    let _ = serve.wait();
    let report = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "schemathesis found problems:\n{report}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(report.contains("No issues found"), "{report}");
}
