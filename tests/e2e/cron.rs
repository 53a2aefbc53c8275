//! Cron schedules across real processes: exactly one job per tick however many schedulers
//! run, start-up refusal of a bad schedule, and the `docket cron` commands.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::{DateTime, Utc};
use docket_testkit::{eventually, TestDb};

const EVERY_SECOND: &str = r#"
[[schedule]]
name = "heartbeat-report"
cron = "* * * * * *"
kind = "docket.noop"
payload = { source = "cron" }
"#;

/// A config file of the test's own, removed when dropped.
struct ConfigFile(std::path::PathBuf);

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn config_file(text: &str) -> ConfigFile {
    let path = std::env::temp_dir().join(format!("docket-{}.toml", uuid::Uuid::new_v4()));
    std::fs::File::create(&path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .expect("write the config file");
    ConfigFile(path)
}

fn docket(db: &TestDb, config: &std::path::Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_docket"));
    command
        .args(args)
        .env("DATABASE_URL", &db.url)
        .env("DOCKET_CONFIG", config)
        .env("DOCKET_LOG_FORMAT", "json")
        .env("DOCKET_POLL_INTERVAL", "0.2");
    command
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_worker_processes_make_exactly_one_job_per_tick_with_none_missing() {
    let db = TestDb::new().await;
    let config = config_file(EVERY_SECOND);
    let workers: Vec<Child> = (0..3)
        .map(|_| {
            docket(&db, &config.0, &["worker"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start docket worker")
        })
        .collect();
    eventually(Duration::from_secs(40), "ten ticks enqueued", || async {
        tick_times(&db).await.len() >= 10
    })
    .await;
    for worker in workers {
        stop(worker);
    }
    let ticks = tick_times(&db).await;
    for pair in ticks.windows(2) {
        assert_eq!(
            pair[1] - pair[0],
            chrono::Duration::seconds(1),
            "ticks are distinct and consecutive: {ticks:?}"
        );
    }
    assert!(
        ticks.iter().all(|t| t.timestamp_subsec_nanos() == 0),
        "run_at is the tick"
    );
}

async fn tick_times(db: &TestDb) -> Vec<DateTime<Utc>> {
    sqlx::query_scalar("select run_at from docket.jobs where kind = 'docket.noop' order by run_at")
        .fetch_all(&db.pool)
        .await
        .unwrap()
}

#[test]
fn a_bad_schedule_stops_start_up_naming_the_schedule() {
    for (toml, says) in [
        ("[[schedule]]\nname = \"nightly\"\ncron = \"0 0 30 2 *\"\nkind = \"k\"\n", "never fires"),
        ("[[schedule]]\nname = \"nightly\"\ncron = \"0 3 * * *\"\nkind = \"k\"\ntimezone = \"Mars/Base\"\n", "unknown time zone"),
        ("[[schedule]]\nname = \"nightly\"\ncron = \"0 3 * * *\"\nkind = \"k\"\ncatchup = \"all\"\n", "did you mean `catch_up`"),
    ] {
        let config = config_file(toml);
        let out = Command::new(env!("CARGO_BIN_EXE_docket"))
            .arg("worker")
            .env("DATABASE_URL", "postgres://nobody@127.0.0.1:9/x")
            .env("DOCKET_CONFIG", &config.0)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("nightly") && err.contains(says), "{err}");
    }
}

/// A daily schedule shows its next tick from the moment a worker registered it, not only
/// once its first tick came due (up to a day later).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_list_shows_a_daily_schedules_next_tick_as_soon_as_it_is_registered() {
    let db = TestDb::new().await;
    let config = config_file(
        "[[schedule]]\nname = \"nightly\"\ncron = \"0 3 * * *\"\nkind = \"docket.noop\"\n",
    );
    let worker = docket(&db, &config.0, &["worker"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let list = || async {
        let out = docket(&db, &config.0, &["cron", "list", "--json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    eventually(
        Duration::from_secs(30),
        "the schedule registered",
        || async { list().await.as_array().is_some_and(|rows| !rows.is_empty()) },
    )
    .await;
    let row = list().await[0].clone();
    stop(worker);
    let next: DateTime<Utc> = serde_json::from_value(row["next_tick_at"].clone())
        .unwrap_or_else(|err| panic!("next_tick_at is not a time ({err}): {row}"));
    let now = Utc::now();
    assert!(
        next > now - chrono::Duration::minutes(1) && next <= now + chrono::Duration::days(1),
        "{row}"
    );
    assert_eq!(next.format("%H:%M:%S").to_string(), "03:00:00", "{row}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_list_pause_resume_and_run() {
    let db = TestDb::new().await;
    let config = config_file(EVERY_SECOND);
    let worker = docket(&db, &config.0, &["worker"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(30), "a tick enqueued", || async {
        !tick_times(&db).await.is_empty()
    })
    .await;
    let out = docket(&db, &config.0, &["cron", "list", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = &listed[0];
    for field in [
        "name",
        "cron",
        "kind",
        "queue",
        "timezone",
        "catch_up",
        "paused",
        "last_tick_at",
        "next_tick_at",
    ] {
        assert!(
            row.get(field).is_some(),
            "cron list --json lacks {field}: {row}"
        );
    }
    assert_eq!(
        (&row["name"], &row["paused"]),
        (
            &serde_json::json!("heartbeat-report"),
            &serde_json::json!(false)
        )
    );

    let pause = docket(&db, &config.0, &["cron", "pause", "heartbeat-report"])
        .output()
        .unwrap();
    assert!(pause.status.success());
    // Within a second or so every scheduler sees the pause; after that, no more ticks.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let paused_at = tick_times(&db).await.len();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        tick_times(&db).await.len(),
        paused_at,
        "no ticks while paused"
    );

    let resume = docket(&db, &config.0, &["cron", "resume", "heartbeat-report"])
        .output()
        .unwrap();
    assert!(resume.status.success());
    eventually(
        Duration::from_secs(10),
        "ticks again after resume",
        || async { tick_times(&db).await.len() > paused_at },
    )
    .await;

    let run = docket(&db, &config.0, &["cron", "run", "heartbeat-report"])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let id = String::from_utf8_lossy(&run.stdout).trim().to_owned();
    assert!(id.parse::<uuid::Uuid>().is_ok(), "{id}");
    let unknown = docket(&db, &config.0, &["cron", "pause", "nope"])
        .output()
        .unwrap();
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no schedule is named \"nope\""));
    stop(worker);
}

fn json_of(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|err| panic!("{err}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn row<'a>(rows: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    rows.as_array()?.iter().find(|row| row["name"] == name)
}

/// A `[[schedule]]` renamed across a restart leaves its old name behind: no live process
/// declares it, so it is shown as retired, the cron check stays ok however overdue it is
/// (and says how to remove it), and `docket cron remove` deletes it; a schedule a live
/// process declares is refused, naming the process. `cron list --declared` shows what the
/// configuration declares before any process registered it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_schedule_is_retired_not_late_and_cron_remove_deletes_it() {
    let db = TestDb::new().await;
    let before = config_file(
        "[[schedule]]\nname = \"nightly-report\"\ncron = \"0 3 * * *\"\nkind = \"docket.noop\"\n",
    );
    let after = config_file(
        "[[schedule]]\nname = \"report-nightly\"\ncron = \"0 3 * * *\"\nkind = \"docket.noop\"\n",
    );
    let declared = json_of(
        &docket(&db, &after.0, &["cron", "list", "--declared", "--json"])
            .output()
            .unwrap(),
    );
    assert_eq!(
        row(&declared, "report-nightly").map(|r| r["registered"].clone()),
        Some(serde_json::json!("not registered")),
        "{declared}"
    );
    let list = |config: &std::path::Path| {
        json_of(
            &docket(&db, config, &["cron", "list", "--json"])
                .output()
                .unwrap(),
        )
    };
    let first = docket(&db, &before.0, &["worker"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually(
        Duration::from_secs(30),
        "the first name registered",
        || async { row(&list(&before.0), "nightly-report").is_some() },
    )
    .await;
    stop(first);
    let second = docket(&db, &after.0, &["worker"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually(
        Duration::from_secs(30),
        "the new name registered",
        || async { row(&list(&after.0), "report-nightly").is_some() },
    )
    .await;
    // The old name's tick is long overdue: nobody ticks it any more.
    sqlx::query("update docket.schedules set next_tick_at = now() - interval '2 hours' where name = 'nightly-report'")
        .execute(&db.pool)
        .await
        .unwrap();
    let rows = list(&after.0);
    assert_eq!(
        row(&rows, "nightly-report").unwrap()["retired"],
        true,
        "{rows}"
    );
    assert_eq!(
        row(&rows, "report-nightly").unwrap()["retired"],
        false,
        "{rows}"
    );
    let table = docket(&db, &after.0, &["cron", "list"]).output().unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table
            .lines()
            .any(|line| line.starts_with("nightly-report") && line.contains("retired")),
        "{table}"
    );
    let check = docket(&db, &after.0, &["check", "--json"])
        .output()
        .unwrap();
    let check: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    let cron = check["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "cron")
        .unwrap();
    assert_eq!(cron["verdict"], "ok", "{cron}");
    let detail = cron["detail"].as_str().unwrap();
    assert!(
        detail.contains("retired")
            && detail.contains("nightly-report")
            && detail.contains("docket cron remove"),
        "{cron}"
    );

    let refused = docket(&db, &after.0, &["cron", "remove", "report-nightly"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{err}");
    assert!(
        err.contains("declared by worker") && err.contains("restart"),
        "{err}"
    );
    let removed = docket(&db, &after.0, &["cron", "remove", "nightly-report"])
        .output()
        .unwrap();
    assert!(
        removed.status.success(),
        "{}",
        String::from_utf8_lossy(&removed.stderr)
    );
    let rows = list(&after.0);
    assert!(row(&rows, "nightly-report").is_none(), "{rows}");
    assert!(row(&rows, "report-nightly").is_some(), "{rows}");
    let unknown = docket(&db, &after.0, &["cron", "remove", "nightly-report"])
        .output()
        .unwrap();
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no schedule is named"));
    stop(second);
}

/// Two live processes that declare one name with different expressions: the second says
/// so at start, naming both definitions, and the schedule is listed as a conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_declaring_one_schedule_differently_are_told_so() {
    let db = TestDb::new().await;
    let three = config_file(
        "[[schedule]]\nname = \"nightly\"\ncron = \"0 3 * * *\"\nkind = \"docket.noop\"\n",
    );
    let four = config_file(
        "[[schedule]]\nname = \"nightly\"\ncron = \"0 4 * * *\"\nkind = \"docket.noop\"\n",
    );
    let first = docket(&db, &three.0, &["worker"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(30), "the first declared", || async {
        sqlx::query_scalar::<_, i64>("select count(*) from docket.schedule_declarations")
            .fetch_one(&db.pool)
            .await
            .unwrap()
            == 1
    })
    .await;
    let log = std::env::temp_dir().join(format!("docket-conflict-{}.log", uuid::Uuid::new_v4()));
    let second = docket(&db, &four.0, &["worker"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(30), "the conflict logged", || async {
        std::fs::read_to_string(&log).is_ok_and(|text| text.contains("cron.conflict"))
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    let line = text
        .lines()
        .find(|line| line.contains("cron.conflict"))
        .unwrap();
    assert!(
        line.contains("0 3 * * *") && line.contains("0 4 * * *") && line.contains("nightly"),
        "{line}"
    );
    let rows = json_of(
        &docket(&db, &four.0, &["cron", "list", "--json"])
            .output()
            .unwrap(),
    );
    assert_eq!(
        row(&rows, "nightly").unwrap()["conflicting"],
        true,
        "{rows}"
    );
    stop(second);
    stop(first);
    let _ = std::fs::remove_file(&log);
}
