use std::process::{Command, Output};

use docket_testkit::TestDb;
use serde_json::Value;

fn docket(database_url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_docket"))
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("DOCKET_LOG_FORMAT", "json")
        .output()
        .expect("run docket")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "docket failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

async fn job_count(db: &TestDb) -> i64 {
    sqlx::query_scalar("select count(*) from docket.jobs")
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn enqueue_show_list_cancel_replay_and_snapshot_round_trip() {
    let db = TestDb::new().await;
    assert!(stdout(&docket(&db.url, &["migrate"])).contains("current"));
    let out = docket(
        &db.url,
        &[
            "enqueue",
            "email.send",
            "--payload",
            r#"{"to":"a@example.com"}"#,
            "--queue",
            "mail",
            "--priority",
            "-3",
            "--json",
        ],
    );
    let id = serde_json::from_str::<Value>(&stdout(&out)).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let shown: Value =
        serde_json::from_str(&stdout(&docket(&db.url, &["jobs", "show", &id, "--json"]))).unwrap();
    for field in docket_testkit::factory::JOB_JSON_FIELDS {
        assert!(shown.get(field).is_some(), "job JSON lacks {field}");
    }
    assert_eq!(shown["payload"]["to"], "a@example.com");
    assert_eq!(
        (
            shown["queue"].as_str(),
            shown["priority"].as_i64(),
            shown["state"].as_str()
        ),
        (Some("mail"), Some(-3), Some("pending"))
    );

    let listed = stdout(&docket(&db.url, &["jobs", "list", "--queue", "mail"]));
    assert!(listed.lines().next().unwrap().starts_with("ID"), "{listed}");
    assert!(
        listed.contains(&id) && listed.contains("email.send"),
        "{listed}"
    );

    let snapshot: Value =
        serde_json::from_str(&stdout(&docket(&db.url, &["snapshot", "--json"]))).unwrap();
    assert_eq!(snapshot["pending"], 1);
    assert_eq!(snapshot["queues"]["mail"]["pending"], 1);
    assert!(snapshot["oldest_ready_age_seconds"].as_f64().is_some());

    assert!(stdout(&docket(&db.url, &["jobs", "cancel", &id])).contains("cancelled"));
    let replay = docket(&db.url, &["jobs", "replay", &id, "--json"]);
    let replayed: Value = serde_json::from_str(&stdout(&replay)).unwrap();
    assert_eq!(replayed["state"], "pending");
    let table = stdout(&docket(&db.url, &["snapshot"]));
    assert!(table.contains("mail") && table.contains("(all)"), "{table}");
}

/// `jobs list --state dead_letter` says why each job died, as operations.md promises.
#[tokio::test]
async fn the_dead_letter_list_shows_each_reason() {
    let db = TestDb::new().await;
    for (kind, reason) in [("report.build", "permanent"), ("email.send", "expired")] {
        sqlx::query(
            "insert into docket.jobs (kind, state, dead_letter_reason, finished_at, last_error) \
             values ($1, 'dead_letter', $2, now(), 'it failed')",
        )
        .bind(kind)
        .bind(reason)
        .execute(&db.pool)
        .await
        .unwrap();
    }
    let listed = stdout(&docket(
        &db.url,
        &["jobs", "list", "--state", "dead_letter"],
    ));
    let header = listed.lines().next().unwrap();
    assert!(header.contains("REASON"), "{listed}");
    for (kind, reason) in [("report.build", "permanent"), ("email.send", "expired")] {
        assert!(
            listed
                .lines()
                .any(|line| line.contains(kind) && line.contains(reason)),
            "{kind} {reason}: {listed}"
        );
    }
}

#[tokio::test]
async fn bad_input_exits_non_zero_with_a_clear_message_and_writes_nothing() {
    let db = TestDb::new().await;
    let not_json = docket(&db.url, &["enqueue", "k", "--payload", "{not json"]);
    assert!(!not_json.status.success());
    assert!(
        stderr(&not_json).contains("--payload is not valid JSON"),
        "{}",
        stderr(&not_json)
    );

    let negative = docket(&db.url, &["enqueue", "k", "--max-attempts", "-1"]);
    assert!(!negative.status.success());
    assert!(
        stderr(&negative).contains("max_attempts must be at least 1"),
        "{}",
        stderr(&negative)
    );

    let empty_kind = docket(&db.url, &["enqueue", ""]);
    assert!(!empty_kind.status.success());
    assert!(
        stderr(&empty_kind).contains("kind must not be empty"),
        "{}",
        stderr(&empty_kind)
    );

    // Issue #10: a NUL character and an oversized unique key are refused naming the field.
    let nul = docket(
        &db.url,
        &["enqueue", "k", "--payload", r#"{"a": "x\u0000y"}"#],
    );
    assert!(!nul.status.success());
    assert!(
        stderr(&nul).contains("payload must not contain a NUL"),
        "{}",
        stderr(&nul)
    );
    let long_key = "k".repeat(2000);
    let long = docket(&db.url, &["enqueue", "k", "--unique-key", &long_key]);
    assert!(!long.status.success());
    assert!(
        stderr(&long).contains("unique_key must be at most 256 characters"),
        "{}",
        stderr(&long)
    );

    let unknown = "01a20cbd-d4ef-7a16-b67a-f82bfa49f79d";
    let replay = docket(&db.url, &["jobs", "replay", unknown]);
    assert!(!replay.status.success());
    assert!(
        stderr(&replay).contains(&format!("job {unknown} not found")),
        "{}",
        stderr(&replay)
    );

    let bad_id = docket(&db.url, &["jobs", "show", "not-a-uuid"]);
    assert!(!bad_id.status.success());
    assert!(
        stderr(&bad_id).contains("invalid value 'not-a-uuid'"),
        "{}",
        stderr(&bad_id)
    );

    assert_eq!(job_count(&db).await, 0);
}

#[test]
fn a_bad_url_or_a_database_that_is_down_is_a_clear_error() {
    let bad = docket("mysql://nope", &["snapshot"]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("DATABASE_URL is not a valid PostgreSQL URL"),
        "{}",
        stderr(&bad)
    );

    // Port 9 (discard) on loopback: nothing listens there.
    let down = docket("postgres://app:s3cret@127.0.0.1:9/app", &["snapshot"]);
    assert!(!down.status.success());
    let message = stderr(&down);
    assert!(
        message.contains("cannot connect to PostgreSQL at postgres://app:***@127.0.0.1:9/app"),
        "{message}"
    );
    assert!(
        !message.contains("s3cret"),
        "the password leaked: {message}"
    );
    // The real cause, not a pool that "timed out" after waiting for it.
    assert!(message.contains("Connection refused"), "{message}");
    assert!(!message.contains("timed out"), "{message}");
}

#[tokio::test]
async fn a_connection_error_from_the_server_is_said_once() {
    let db = TestDb::new().await;
    let missing = db.url.replace(&db.name, "docket_no_such_database");
    let out = docket(&missing, &["snapshot"]);
    assert!(!out.status.success());
    let message = stderr(&out);
    assert_eq!(
        message.matches("does not exist").count(),
        1,
        "the cause is said once: {message}"
    );
}

#[test]
fn commands_other_than_demo_ask_for_database_url() {
    let out = Command::new(env!("CARGO_BIN_EXE_docket"))
        .arg("snapshot")
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("DATABASE_URL is not set"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn a_second_migrate_is_quiet_and_pretty_logs_into_a_file_carry_no_colour_codes() {
    let db = TestDb::new().await;
    let again = docket(&db.url, &["migrate"]);
    assert!(
        !stderr(&again).contains("already exists"),
        "PostgreSQL's notice is noise: {}",
        stderr(&again)
    );

    let log = std::env::temp_dir().join(format!("docket-pretty-{}.log", std::process::id()));
    let mut worker = Command::new(env!("CARGO_BIN_EXE_docket"))
        .arg("worker")
        .env("DATABASE_URL", &db.url)
        .env("DOCKET_LOG_FORMAT", "pretty")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    docket_testkit::eventually(
        std::time::Duration::from_secs(30),
        "the worker logs its start",
        || async {
            std::fs::read_to_string(&log).is_ok_and(|text| text.contains("worker started"))
        },
    )
    .await;
    worker.kill().ok();
    worker.wait().ok();
    let text = std::fs::read_to_string(&log).unwrap();
    std::fs::remove_file(&log).ok();
    assert!(!text.contains('\u{1b}'), "escape codes in a file: {text}");
}

#[test]
fn a_misspelled_variable_stops_the_command_naming_the_setting_it_meant() {
    // Before, `DOCKET_SMTP_ULR` was ignored: the worker ran in stub mode and sent nothing.
    let out = Command::new(env!("CARGO_BIN_EXE_docket"))
        .args(["worker"])
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .env("DOCKET_SMTP_ULR", "smtp://127.0.0.1:2525")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out)
            .contains("DOCKET_SMTP_ULR is not a Docket setting; did you mean DOCKET_SMTP_URL?"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn docket_toml_configures_and_the_environment_overrides_it() {
    let db = TestDb::new().await;
    let dir = std::env::temp_dir().join(format!("docket-config-{}", db.name));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("docket.toml");
    std::fs::write(
        &file,
        format!("database_url = \"{}\"\nshutdown_timeout = 5\n", db.url),
    )
    .unwrap();
    let run = |env: &[(&str, &str)]| {
        Command::new(env!("CARGO_BIN_EXE_docket"))
            .args(["snapshot", "--json"])
            .env_remove("DATABASE_URL")
            .env("DOCKET_CONFIG", &file)
            .envs(env.iter().copied())
            .output()
            .unwrap()
    };
    let from_file = run(&[]);
    assert!(from_file.status.success(), "{}", stderr(&from_file));
    let overridden = run(&[("DATABASE_URL", "postgres://app:pw@127.0.0.1:9/app")]);
    assert!(
        stderr(&overridden)
            .contains("cannot connect to PostgreSQL at postgres://app:***@127.0.0.1:9/app"),
        "{}",
        stderr(&overridden)
    );

    std::fs::write(&file, "databse_url = \"postgres://x@y/z\"\n").unwrap();
    let typo = run(&[]);
    assert!(!typo.status.success());
    assert!(
        stderr(&typo).contains("unknown key `databse_url`; did you mean `database_url`?"),
        "{}",
        stderr(&typo)
    );
    std::fs::remove_file(&file).unwrap();
    let missing = run(&[]);
    assert!(
        stderr(&missing).contains("(DOCKET_CONFIG)"),
        "{}",
        stderr(&missing)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn queues_pause_list_and_resume_from_the_command_line() {
    let db = TestDb::new().await;
    stdout(&docket(
        &db.url,
        &["enqueue", "report.build", "--queue", "reports"],
    ));
    // A name nothing knows is most likely a misspelling: refused, with the nearest name.
    let typo = docket(&db.url, &["queues", "pause", "reprots"]);
    assert!(!typo.status.success());
    assert!(
        stderr(&typo).contains(r#"did you mean "reports"?"#),
        "{}",
        stderr(&typo)
    );
    let forced = docket(
        &db.url,
        &["queues", "pause", "reprots", "--force", "--json"],
    );
    assert_eq!(
        serde_json::from_str::<Value>(&stdout(&forced)).unwrap()[0]["paused"],
        true
    );
    let paused: Value = serde_json::from_str(&stdout(&docket(
        &db.url,
        &["queues", "pause", "reports", "--json"],
    )))
    .unwrap();
    assert_eq!(paused[0]["paused"], true);
    let listed = stdout(&docket(&db.url, &["queues", "list"]));
    assert!(
        listed.contains("reports") && listed.contains("yes"),
        "{listed}"
    );
    let resumed: Value = serde_json::from_str(&stdout(&docket(
        &db.url,
        &["queues", "resume", "reports", "--json"],
    )))
    .unwrap();
    assert_eq!(resumed[0]["paused"], false);
    let bad = docket(&db.url, &["queues", "pause", ""]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("1 to 127 characters"),
        "{}",
        stderr(&bad)
    );
}

/// Issue #21 case 11: a time outside the years 1 to 9999 reached the database ("timestamp
/// out of range") or overflowed in the binary (`--delay`); each is refused naming the
/// option's field, and nothing is written.
#[tokio::test]
async fn out_of_range_times_are_refused_naming_the_field() {
    let db = TestDb::new().await;
    for (args, field) in [
        (
            vec!["enqueue", "k", "--run-at=-5000-01-01T00:00:00Z"],
            "run_at",
        ),
        (
            vec!["enqueue", "k", "--expires-at=+10000-01-01T00:00:00Z"],
            "expires_at",
        ),
        (vec!["enqueue", "k", "--delay", "1000000000000"], "run_at"),
        (
            vec!["enqueue", "k", "--delay", "18446744073709551615"],
            "--delay",
        ),
        (
            vec![
                "jobs",
                "replay",
                "--dead-letters",
                "--since=-5000-01-01T00:00:00Z",
            ],
            "since",
        ),
    ] {
        let out = docket(&db.url, &args);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr(&out).contains(field), "{args:?}: {}", stderr(&out));
        assert!(
            !stderr(&out).contains("panicked"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    assert_eq!(job_count(&db).await, 0);
}

/// The pretty log format escapes control characters as the JSON format does: a job kind
/// with a newline and a terminal escape neither starts a line of its own nor colours one.
#[tokio::test]
async fn pretty_logs_escape_control_characters_in_fields() {
    let db = TestDb::new().await;
    let kind = "report\n2026-12-08T00:00:00.000000Z  INFO forged: all is well\u{1b}[31m";
    let output = Command::new(env!("CARGO_BIN_EXE_docket"))
        .args(["enqueue", kind, "--payload", "{}"])
        .env("DATABASE_URL", &db.url)
        .env("DOCKET_LOG_FORMAT", "pretty")
        .env("RUST_LOG", "docket_queue=debug")
        .output()
        .expect("run docket");
    stdout(&output);
    let log = stderr(&output);
    assert!(
        log.contains("report\\n2026-12-08"),
        "the kind is logged, escaped: {log}"
    );
    assert!(!log.contains('\u{1b}'), "{log:?}");
    assert!(
        !log.lines()
            .any(|line| line.starts_with("2026-12-08T00:00:00.000000Z")),
        "{log}"
    );
}

/// `--delay` takes what the retry ladder takes (`30s`, `5m`, `1h`), and a time without a
/// zone is refused saying which format is wanted, not "premature end of input".
#[tokio::test]
async fn enqueue_delays_take_units_and_a_zoneless_time_says_the_format() {
    let db = TestDb::new().await;
    for (delay, seconds) in [("1h", 3600), ("5m", 300), ("30s", 30), ("90", 90)] {
        let out = docket(&db.url, &["enqueue", "k", "--delay", delay, "--json"]);
        let id = serde_json::from_str::<Value>(&stdout(&out)).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let ahead: f64 = sqlx::query_scalar(
            "select extract(epoch from run_at - created_at)::float8 from docket.jobs where id = $1::uuid",
        )
        .bind(&id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert!(
            (ahead - f64::from(seconds)).abs() < 30.0,
            "--delay {delay}: {ahead} s ahead"
        );
    }
    let bad = docket(&db.url, &["enqueue", "k", "--delay", "1 hour"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("30s, 5m, 1h"), "{}", stderr(&bad));
    for zoneless in ["2026-12-08 03:00", "2026-12-08T03:00:00"] {
        let out = docket(&db.url, &["enqueue", "k", "--run-at", zoneless]);
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(
            err.contains("no time zone")
                && err.contains("RFC 3339")
                && err.contains("2026-12-08T03:00:00Z"),
            "{err}"
        );
    }
    let garbage = docket(&db.url, &["enqueue", "k", "--run-at", "tomorrow"]);
    assert!(
        stderr(&garbage).contains("RFC 3339"),
        "{}",
        stderr(&garbage)
    );
    let ok = docket(
        &db.url,
        &["enqueue", "k", "--run-at", "2999-12-08T03:00:00Z"],
    );
    stdout(&ok);
    assert_eq!(job_count(&db).await, 5);
}

/// A setting that cannot work is named by its variable, the one the user set, not by the
/// runtime's field.
#[test]
fn a_setting_that_cannot_work_is_named_by_its_variable() {
    let out = Command::new(env!("CARGO_BIN_EXE_docket"))
        .arg("worker")
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:9/x")
        .env("DOCKET_LEASE_TIMEOUT", "8")
        .env("DOCKET_HEARTBEAT_INTERVAL", "5")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("DOCKET_LEASE_TIMEOUT") && err.contains("DOCKET_HEARTBEAT_INTERVAL"),
        "{err}"
    );
    assert!(!err.contains("lease_timeout (8s)"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_docket"))
        .arg("worker")
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:9/x")
        .env("DOCKET_GLOBAL_CONCURRENCY", "0")
        .output()
        .unwrap();
    assert!(
        stderr(&out).contains("DOCKET_GLOBAL_CONCURRENCY"),
        "{}",
        stderr(&out)
    );
}

/// A one-shot command prints its answer and nothing else: no JSON log line on stderr
/// among a table, even with `DOCKET_LOG_FORMAT=json`.
#[tokio::test]
async fn a_one_shot_command_writes_no_log_lines_among_its_answer() {
    let db = TestDb::new().await;
    docket_queue::cron::register(
        &db.pool,
        &docket_queue::cron::Schedule::new("nightly", "0 3 * * *", "k"),
        None,
    )
    .await
    .unwrap();
    for args in [
        vec!["cron", "pause", "nightly"],
        vec!["cron", "list"],
        vec!["cron", "resume", "nightly"],
        vec!["enqueue", "k"],
        vec!["jobs", "list"],
    ] {
        let out = docket(&db.url, &args);
        stdout(&out);
        assert_eq!(stderr(&out), "", "{args:?}");
    }
}

/// One is one: `1 dead letter replayed`, not `1 dead letters`.
#[tokio::test]
async fn counts_of_one_are_singular() {
    let db = TestDb::new().await;
    docket_testkit::factory::insert_job(
        &db.pool,
        docket_testkit::factory::JobOpts {
            state: Some(docket_queue::JobState::DeadLetter),
            ..Default::default()
        },
    )
    .await;
    let out = stdout(&docket(&db.url, &["jobs", "replay", "--dead-letters"]));
    assert_eq!(out.trim(), "1 dead letter replayed");
    let out = stdout(&docket(&db.url, &["jobs", "replay", "--dead-letters"]));
    assert_eq!(out.trim(), "0 dead letters replayed");
}
