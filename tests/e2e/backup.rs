//! Backups that prove they restore: `docket backup` and `docket restore-check` against the
//! real PostgreSQL with the real `pg_dump` and `pg_restore`, and what `docket check` then
//! says about them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use docket_queue::JobState;
use docket_testkit::{eventually, insert_job, JobOpts, TestDb};
use serde_json::Value;
use sqlx::{Executor, PgPool};

/// A backup directory of the test's own.
fn backup_dir(db: &TestDb) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("docket-backups-{}", db.name));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn command(db: &TestDb, dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_docket"));
    command
        .args(args)
        .env("DATABASE_URL", &db.url)
        .env("DOCKET_BACKUP_DIR", dir)
        .env("DOCKET_LOG_FORMAT", "json")
        // The backups are under test, not this machine's free space.
        .env("DOCKET_CHECK_DISK_MIN_FREE_PERCENT", "0");
    command
}

fn docket(db: &TestDb, dir: &Path, args: &[&str]) -> Output {
    command(db, dir, args).output().expect("run docket")
}

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|_| panic!("{}", text(output)))
}

/// The finding `name` of `docket check --json`.
fn check_finding(db: &TestDb, dir: &Path, name: &str) -> Value {
    let output = docket(db, dir, &["check", "--json"]);
    json(&output)["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no {name} in {}", text(&output)))
}

/// The Docket backups in `dir`, oldest first.
fn dumps(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("docket-") && n.ends_with(".dump"))
        .collect();
    names.sort();
    names
}

async fn database_exists(pool: &PgPool, name: &str) -> bool {
    sqlx::query_scalar("select exists (select from pg_database where datname = $1)")
        .bind(name)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The scratch database a restore check printed it restored into.
fn scratch_of(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .split_whitespace()
        .find(|w| w.starts_with("docket_restore_check_"))
        .unwrap_or_else(|| panic!("no scratch database named: {}", text(output)))
        .to_owned()
}

/// Jobs in every state, a few of each, and an application table and function in `public`
/// that a backup of Docket's own leaves out.
async fn jobs_in_every_state(db: &TestDb) -> Vec<(uuid::Uuid, String)> {
    for (state, n) in [
        (JobState::Pending, 5),
        (JobState::Retrying, 3),
        (JobState::Processing, 2),
        (JobState::Completed, 7),
        (JobState::DeadLetter, 2),
        (JobState::Cancelled, 1),
    ] {
        for _ in 0..n {
            insert_job(
                &db.pool,
                JobOpts {
                    state: Some(state),
                    ..JobOpts::default()
                },
            )
            .await;
        }
    }
    db.pool
        .execute(
            "create table public.app_orders (id int primary key);
             insert into public.app_orders values (1), (2);
             create function public.app_open_orders() returns setof public.app_orders
                 language sql as 'select * from public.app_orders'",
        )
        .await
        .unwrap();
    jobs(&db.pool).await
}

async fn jobs(pool: &PgPool) -> Vec<(uuid::Uuid, String)> {
    sqlx::query_as("select id, state::text from docket.jobs order by id")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_with_jobs_in_every_state_restores_with_the_same_counts_and_records_ok() {
    let db = TestDb::new().await;
    let dir = backup_dir(&db);
    let before = jobs_in_every_state(&db).await;

    let output = docket(&db, &dir, &["backup", "--json"]);
    assert!(output.status.success(), "{}", text(&output));
    let manifest = json(&output);
    let file = manifest["file"].as_str().unwrap().to_owned();
    assert_eq!(dumps(&dir), std::slice::from_ref(&file));
    assert_eq!(
        manifest["jobs"],
        serde_json::json!({"pending": 5, "retrying": 3, "processing": 2, "completed": 7, "dead_letter": 2, "cancelled": 1})
    );
    assert_eq!(manifest["tables"]["docket.jobs"], 20);
    assert!(
        manifest["tables"]["public._sqlx_migrations"]
            .as_i64()
            .unwrap()
            > 20
    );
    assert!(
        manifest["tables"].get("public.app_orders").is_none(),
        "{manifest}"
    );
    let meta = std::fs::metadata(dir.join(&file)).unwrap();
    assert_eq!(manifest["size_bytes"], meta.len());
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o600,
        "a dump holds every payload: its owner's alone"
    );
    let on_disk: Value =
        serde_json::from_slice(&std::fs::read(dir.join(file.replace(".dump", ".json"))).unwrap())
            .unwrap();
    assert_eq!(on_disk, manifest, "the manifest beside the dump");

    // The newest backup (no FILE), kept for a look at what came back.
    let output = command(&db, &dir, &["restore-check", "--keep", "--json"])
        .env("DOCKET_RESTORE_OWNER", "drill-owner")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let result = json(&output);
    assert_eq!(result["failure"], Value::Null, "{result}");
    assert_eq!(result["jobs"], 20);
    assert_eq!(result["job_states"], manifest["jobs"]);
    assert_eq!(result["table_rows"], manifest["tables"]);
    assert_eq!(result["owner"], "drill-owner");
    assert!(result["backup_file"].as_str().unwrap().ends_with(&file));
    let scratch = result["scratch_database"].as_str().unwrap().to_owned();
    assert!(scratch.starts_with("docket_restore_check_"));
    let copy = PgPool::connect(&db.url.replacen(
        &format!("/{}", db.name),
        &format!("/{scratch}"),
        1,
    ))
    .await
    .unwrap();
    assert_eq!(jobs(&copy).await, before, "every job is back, in its state");
    let app_table: Option<String> =
        sqlx::query_scalar("select to_regclass('public.app_orders')::text")
            .fetch_one(&copy)
            .await
            .unwrap();
    assert_eq!(
        app_table, None,
        "the application's table is not Docket's to restore"
    );
    copy.close().await;
    db.pool
        .execute(format!(r#"drop database "{scratch}" with (force)"#).as_str())
        .await
        .unwrap();

    // Without --keep: the scratch database goes; the check is recorded in the live
    // database and beside the backup.
    let output = command(&db, &dir, &["restore-check"])
        .env("DOCKET_RESTORE_OWNER", "drill-owner")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("restore check ok:"),
        "{}",
        text(&output)
    );
    assert!(!database_exists(&db.pool, &scratch_of(&output)).await);
    let recorded: Vec<(bool, i32, i64, String)> = sqlx::query_as(
        "select ok, tables, jobs, owner from docket.restore_checks order by checked_at",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let tables = result["table_rows"].as_object().unwrap().len() as i32;
    assert_eq!(recorded.len(), 2);
    assert_eq!(recorded[1], (true, tables, 20, "drill-owner".to_owned()));
    let beside: Value = serde_json::from_slice(
        &std::fs::read(dir.join(file.replace(".dump", ".restore-check.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(beside["failure"], Value::Null);
    assert_eq!(beside["jobs"], 20);

    // `docket check` shows both.
    let backup = check_finding(&db, &dir, "backup");
    assert_eq!(backup["verdict"], "ok", "{backup}");
    assert!(
        backup["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("({file}, 20 jobs)")),
        "{backup}"
    );
    let restore = check_finding(&db, &dir, "restore_check");
    assert_eq!(restore["verdict"], "ok", "{restore}");
    assert!(
        restore["detail"].as_str().unwrap().contains(&format!(
            "by drill-owner: {tables} tables, 20 jobs restored from {file}"
        )),
        "{restore}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_or_truncated_backup_records_a_failed_check_and_leaves_no_scratch_database() {
    let db = TestDb::new().await;
    let dir = backup_dir(&db);
    jobs_in_every_state(&db).await;
    let output = docket(&db, &dir, &["backup"]);
    assert!(output.status.success(), "{}", text(&output));
    let good = dir.join(&dumps(&dir)[0]);
    let bytes = std::fs::read(&good).unwrap();

    let truncated = dir.join("truncated.dump");
    std::fs::write(&truncated, &bytes[..bytes.len() * 6 / 10]).unwrap();
    let mut garbage = bytes.clone();
    garbage[..64].fill(b'x');
    let corrupted = dir.join("corrupted.dump");
    std::fs::write(&corrupted, &garbage).unwrap();

    // A dump that restores but holds less than its manifest says it should.
    let manifest_path = good.with_extension("json");
    let mut manifest: Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    manifest["tables"]["docket.jobs"] = 21.into();
    manifest["jobs"]["completed"] = 8.into();
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();

    for (file, reason) in [
        (&truncated, "pg_restore cannot read the backup: pg_restore: error: could not read from input file: end of file"),
        (&corrupted, "pg_restore cannot read the backup: pg_restore: error: input file does not appear to be a valid archive"),
        (&good, "docket.jobs: 21 rows in the backup, 20 restored; completed jobs: 8 in the backup, 7 restored"),
    ] {
        let output = docket(&db, &dir, &["restore-check", file.to_str().unwrap()]);
        assert_eq!(output.status.code(), Some(1), "{}", text(&output));
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(stdout.contains("restore check FAILED"), "{}", text(&output));
        assert!(stdout.contains(reason), "{}", text(&output));
        assert!(
            !database_exists(&db.pool, &scratch_of(&output)).await,
            "the scratch database is dropped"
        );
        let (ok, failure, file_recorded): (bool, Option<String>, String) = sqlx::query_as(
            "select ok, failure, backup_file from docket.restore_checks order by checked_at desc limit 1",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert!(!ok);
        assert!(failure.unwrap().contains(reason));
        assert_eq!(file_recorded, file.display().to_string());
        let finding = check_finding(&db, &dir, "restore_check");
        assert_eq!(finding["verdict"], "warn", "{finding}");
        assert!(
            finding["detail"].as_str().unwrap().starts_with("failed "),
            "{finding}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Waits until `n` sessions of `pg_dump` on `db` wait for a lock (the session of a
/// pg_dump that was killed waits on until it gets the lock).
async fn pg_dumps_wait(db: &TestDb, n: i64) {
    eventually(
        Duration::from_secs(20),
        "pg_dump waits for the lock",
        || async {
            let waiting: i64 = sqlx::query_scalar(
                "select count(*) from pg_stat_activity
              where datname = $1 and application_name = 'pg_dump' and wait_event_type = 'Lock'",
            )
            .bind(&db.name)
            .fetch_one(&db.pool)
            .await
            .unwrap();
            waiting == n
        },
    )
    .await;
}

fn partials(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".partial"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_dump_never_becomes_the_newest_backup() {
    let db = TestDb::new().await;
    let dir = backup_dir(&db);
    jobs_in_every_state(&db).await;
    let output = docket(&db, &dir, &["backup"]);
    assert!(output.status.success(), "{}", text(&output));
    let first = dumps(&dir)[0].clone();

    // A lock holds pg_dump mid-dump, its file half-written.
    let mut lock = db.pool.begin().await.unwrap();
    lock.execute("lock table docket.jobs in access exclusive mode")
        .await
        .unwrap();

    // Ctrl-C: the command stops pg_dump and removes what it wrote.
    let child = command(&db, &dir, &["backup"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    pg_dumps_wait(&db, 1).await;
    assert_eq!(partials(&dir).len(), 1, "the dump is being written");
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", text(&output));
    assert!(partials(&dir).is_empty(), "{:?}", partials(&dir));
    assert_eq!(dumps(&dir), std::slice::from_ref(&first));

    // Killed outright (no chance to clean up): its pg_dump finishes the hidden file, which
    // is still no backup.
    let mut child = command(&db, &dir, &["backup"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    pg_dumps_wait(&db, 2).await;
    assert_eq!(partials(&dir).len(), 1, "the dump is being written");
    child.kill().unwrap();
    child.wait().unwrap();
    lock.rollback().await.unwrap();
    eventually(Duration::from_secs(20), "the orphaned pg_dump ends", || async {
        let running: bool = sqlx::query_scalar(
            "select exists (select from pg_stat_activity where datname = $1 and application_name = 'pg_dump')",
        )
        .bind(&db.name)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        !running
    })
    .await;
    assert_eq!(partials(&dir).len(), 1);
    assert_eq!(
        dumps(&dir),
        std::slice::from_ref(&first),
        "only complete dumps are backups"
    );

    let backup = check_finding(&db, &dir, "backup");
    assert!(
        backup["detail"].as_str().unwrap().contains(&first),
        "{backup}"
    );
    let output = docket(&db, &dir, &["restore-check", "--json"]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(json(&output)["backup_file"]
        .as_str()
        .unwrap()
        .ends_with(&first));
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_keep_prunes_only_dockets_own_files() {
    let db = TestDb::new().await;
    let dir = backup_dir(&db);
    let old = [
        "docket-20200101T000000.000Z",
        "docket-20200102T000000.000Z",
        "docket-20200103T000000.000Z",
    ];
    for stem in old {
        for extension in [".dump", ".json", ".restore-check.json"] {
            std::fs::write(dir.join(format!("{stem}{extension}")), "old").unwrap();
        }
    }
    let others = [
        "app-20200101.dump",
        "docket-notes.txt",
        "docket-20200101T000000.000Z.dump.bak",
        "docket.dump",
    ];
    for name in others {
        std::fs::write(dir.join(name), "not Docket's").unwrap();
    }
    // A directory that carries a stale partial dump's name is not a file to prune, and it
    // does not fail the backup either (it did: "Is a directory", exit 1, every night).
    let odd = dir.join(".docket-20200111T000000.000Z.dump.partial");
    std::fs::create_dir(&odd).unwrap();
    let aged = Command::new("touch")
        .args(["-d", "3 days ago"])
        .arg(&odd)
        .status()
        .unwrap();
    assert!(aged.success());
    let output = command(&db, &dir, &["backup"])
        .env("DOCKET_BACKUP_KEEP", "2")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert!(odd.is_dir(), "the directory is left alone");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("could not prune"),
        "{}",
        text(&output)
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("kept the newest 2, removed 2"),
        "{}",
        text(&output)
    );
    let dumps = dumps(&dir);
    assert_eq!(dumps.len(), 2);
    assert_eq!(dumps[0], "docket-20200103T000000.000Z.dump");
    for stem in &old[..2] {
        for extension in [".dump", ".json", ".restore-check.json"] {
            assert!(
                !dir.join(format!("{stem}{extension}")).exists(),
                "{stem}{extension}"
            );
        }
    }
    assert!(dir.join("docket-20200103T000000.000Z.json").exists());
    for name in others {
        assert!(dir.join(name).exists(), "{name} is not Docket's to remove");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_says_why_it_cannot_run() {
    let db = TestDb::new().await;
    let dir = backup_dir(&db);
    let missing_dir = dir.join("no-such-dir");
    let output = command(&db, &missing_dir, &["backup"]).output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("no-such-dir"),
        "{}",
        text(&output)
    );
    let output = command(&db, &dir, &["backup"])
        .env_remove("DOCKET_BACKUP_DIR")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("DOCKET_BACKUP_DIR is not set"),
        "{}",
        text(&output)
    );
    assert!(dumps(&dir).is_empty());
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_warns_without_a_restore_check_and_services_are_unknown_without_systemd() {
    let db = TestDb::new().await;
    let dir = backup_dir(&db);
    let backup = check_finding(&db, &dir, "backup");
    assert_eq!(
        (backup["verdict"].as_str(), backup["detail"].as_str()),
        (
            Some("warn"),
            Some(format!("no backup in {}", dir.display()).as_str())
        )
    );
    let restore = check_finding(&db, &dir, "restore_check");
    assert_eq!(restore["verdict"], "warn");
    assert_eq!(restore["detail"], "no restore check recorded");
    // An old passing check warns too.
    sqlx::query(
        "insert into docket.restore_checks (checked_at, backup_file, ok, tables, jobs, duration_ms, owner)
         values (now() - interval '93 days', 'docket-x.dump', true, 14, 0, 1000, 'ops')",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let restore = check_finding(&db, &dir, "restore_check");
    assert_eq!(restore["verdict"], "warn", "{restore}");
    let output = command(&db, &dir, &["check", "--json"])
        .env("DOCKET_RESTORE_CHECK_MAX_AGE", (100 * 86400).to_string())
        .output()
        .unwrap();
    let report = json(&output);
    assert_eq!(
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "restore_check")
            .unwrap()["verdict"],
        "ok",
        "{report}"
    );

    // Services, on a machine where systemd cannot be asked (no systemctl on PATH, or no
    // systemd running): unknown, never down.
    let empty = dir.join("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    let output = command(&db, &dir, &["check", "--json"])
        .env("DOCKET_CHECK_SERVICES", "docket-serve,postfix")
        .env("PATH", &empty)
        .output()
        .unwrap();
    let report = json(&output);
    let services = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "services")
        .cloned()
        .unwrap_or_else(|| panic!("{}", text(&output)));
    assert_eq!(services["verdict"], "unknown", "{services}");
    let detail = services["detail"].as_str().unwrap();
    assert!(
        detail.contains("docket-serve") && detail.contains("postfix") && detail.contains("system"),
        "{detail}"
    );
    assert_ne!(output.status.code(), Some(2), "unknown is never down");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_database_backup_restores_the_applications_tables_too() {
    let db = TestDb::new().await;
    let dir = backup_dir(&db);
    jobs_in_every_state(&db).await;
    let output = docket(&db, &dir, &["backup", "--all", "--json"]);
    assert!(output.status.success(), "{}", text(&output));
    let manifest = json(&output);
    assert_eq!(manifest["scope"], "all");
    assert_eq!(manifest["tables"]["public.app_orders"], 2);
    let output = docket(&db, &dir, &["restore-check", "--json"]);
    assert!(output.status.success(), "{}", text(&output));
    let result = json(&output);
    assert_eq!(result["table_rows"]["public.app_orders"], 2, "{result}");
    assert_eq!(result["jobs"], 20);
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_without_room_is_refused_before_the_dump_starts() {
    // A small filesystem of its own: mounting one takes root.
    let root = Command::new("id").arg("-u").output().unwrap();
    if String::from_utf8_lossy(&root.stdout).trim() != "0" {
        eprintln!(
            "SKIPPED: a_disk_without_room_is_refused_before_the_dump_starts needs root (tmpfs)"
        );
        return;
    }
    let db = TestDb::new().await;
    jobs_in_every_state(&db).await;
    let dir = backup_dir(&db);
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&dir)
        .status()
        .unwrap();
    assert!(mounted.success());
    // Leave about 16 KiB: less than the tables hold.
    let free = || {
        let out = Command::new("df").args(["-Pk"]).arg(&dir).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .nth(1)
            .unwrap()
            .split_whitespace()
            .nth(3)
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    std::fs::write(
        dir.join("ballast"),
        vec![0u8; ((free() - 16) * 1024) as usize],
    )
    .unwrap();
    let output = docket(&db, &dir, &["backup"]);
    let unmount = Command::new("umount").arg(&dir).status().unwrap();
    assert!(unmount.success());
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("not enough free space in"),
        "{}",
        text(&output)
    );
    assert!(stderr.contains("the dump needs about"), "{}", text(&output));
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_that_cannot_create_the_scratch_database_records_a_failed_check() {
    let db = TestDb::new().await;
    let dir = backup_dir(&db);
    let output = docket(&db, &dir, &["backup"]);
    assert!(output.status.success(), "{}", text(&output));
    let role = format!("docket_nocreatedb_{}", &db.name[db.name.len() - 12..]);
    db.pool
        .execute(
            format!(
                r#"create role "{role}" login nocreatedb;
                   grant usage on schema docket to "{role}";
                   grant select, insert on all tables in schema docket to "{role}";
                   grant usage on all sequences in schema docket to "{role}";
                   grant select on public._sqlx_migrations to "{role}";"#
            )
            .as_str(),
        )
        .await
        .unwrap();
    let url = db.url.replacen("postgres@", &format!("{role}@"), 1);
    assert_ne!(url, db.url, "the URL names its user");
    let output = command(&db, &dir, &["restore-check"])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let (ok, failure): (bool, Option<String>) = sqlx::query_as(
        "select ok, failure from docket.restore_checks order by checked_at desc limit 1",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(!ok);
    let failure = failure.unwrap();
    assert!(
        failure.starts_with("cannot create the scratch database docket_restore_check_")
            && failure.contains("permission denied"),
        "{failure}"
    );
    db.pool
        .execute(format!(r#"drop owned by "{role}"; drop role "{role}""#).as_str())
        .await
        .unwrap();
    std::fs::remove_dir_all(&dir).ok();
}

/// A restore check killed with SIGKILL (a systemd timeout, the OOM killer) cannot drop its
/// scratch database; the next one drops what is over a day old, and leaves a fresh one
/// (perhaps a run under way) and one kept on purpose with `--keep`.
#[tokio::test]
async fn a_scratch_database_left_by_a_killed_check_is_dropped_by_the_next() {
    let db = TestDb::new().await;
    let dir = backup_dir(&db);
    let output = docket(&db, &dir, &["backup"]);
    assert!(output.status.success(), "{}", text(&output));
    let named_at = |at: chrono::DateTime<chrono::Utc>| {
        let ts = uuid::Timestamp::from_unix(
            uuid::NoContext,
            at.timestamp() as u64,
            at.timestamp_subsec_nanos(),
        );
        format!("docket_restore_check_{}", uuid::Uuid::new_v7(ts).simple())
    };
    let leftover = named_at(chrono::Utc::now() - chrono::Duration::days(2));
    let fresh = named_at(chrono::Utc::now());
    for name in [&leftover, &fresh] {
        sqlx::query(&format!(r#"create database "{name}""#))
            .execute(&db.pool)
            .await
            .unwrap();
    }
    let output = command(&db, &dir, &["restore-check", "--keep"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let kept = scratch_of(&output);
    assert!(
        !database_exists(&db.pool, &leftover).await,
        "{}",
        text(&output)
    );
    assert!(database_exists(&db.pool, &fresh).await);
    assert!(
        text(&output).contains(&format!("dropped {leftover}")),
        "{}",
        text(&output)
    );
    // The kept one survives the next check even once it is old; here: it is marked.
    let comment: Option<String> = sqlx::query_scalar(
        "select shobj_description(oid, 'pg_database') from pg_database where datname = $1",
    )
    .bind(&kept)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(comment.is_some_and(|c| c.contains("--keep")));
    for name in [&fresh, &kept] {
        sqlx::query(&format!(r#"drop database "{name}" with (force)"#))
            .execute(&db.pool)
            .await
            .unwrap();
    }
}

/// A good dump whose manifest went missing restores (the restore is not what failed) and
/// the record says why it is not ok: nothing to compare the counts with.
#[tokio::test]
async fn a_backup_without_its_manifest_fails_for_that_reason_and_not_another() {
    let db = TestDb::new().await;
    let dir = backup_dir(&db);
    let output = docket(&db, &dir, &["backup", "--json"]);
    assert!(output.status.success(), "{}", text(&output));
    let file = json(&output)["file"].as_str().unwrap().to_owned();
    let copy = dir.join("copy-without-manifest.dump");
    std::fs::copy(dir.join(&file), &copy).unwrap();
    let output = command(&db, &dir, &["restore-check", "--json"])
        .arg(&copy)
        .output()
        .unwrap();
    let result = json(&output);
    let failure = result["failure"].as_str().unwrap_or_default().to_owned();
    assert!(failure.contains("no readable manifest"), "{result}");
    assert!(!failure.contains("pg_restore failed"), "{result}");
}
