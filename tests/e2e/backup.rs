//! The restore drill of `docs/operations.md`, done once for real: dump the `docket` schema
//! and the migrations table, restore them into an empty database, and `docket check` is
//! ok there with every job intact.

use std::process::Command;

use docket_queue::{JobState, NewJob};
use docket_testkit::{insert_job, JobOpts, TestDb};
use sqlx::Executor;

fn ids(rows: Vec<(uuid::Uuid, String)>) -> Vec<(uuid::Uuid, String)> {
    let mut rows = rows;
    rows.sort();
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dump_of_the_docket_schema_restores_into_an_empty_database_that_checks_ok() {
    let db = TestDb::new().await;
    for n in 0..20 {
        let job = NewJob::new("report.build", serde_json::json!({ "n": n })).queue("reports");
        docket_queue::enqueue(&db.pool, &job).await.unwrap();
    }
    insert_job(
        &db.pool,
        JobOpts {
            state: Some(JobState::Completed),
            ..JobOpts::default()
        },
    )
    .await;
    let jobs = || async {
        sqlx::query_as::<_, (uuid::Uuid, String)>("select id, state::text from docket.jobs")
            .fetch_all(&db.pool)
            .await
            .unwrap()
    };
    let before = ids(jobs().await);

    // The backup: the schema, and the migrations table (`--table` would make pg_dump ignore
    // `--schema`, hence two files), in pg_dump's custom format.
    let stem = std::env::temp_dir().join(format!("docket-{}", uuid::Uuid::now_v7()));
    let dumps = [
        stem.with_extension("schema.dump"),
        stem.with_extension("migrations.dump"),
    ];
    for (dump, what) in dumps
        .iter()
        .zip(["--schema=docket", "--table=public._sqlx_migrations"])
    {
        let status = Command::new("pg_dump")
            .args(["--format=custom", what, "--file"])
            .arg(dump)
            .arg(&db.url)
            .status()
            .expect("pg_dump (PostgreSQL's client)");
        assert!(status.success());
    }

    // The restore, into an empty database.
    let restored = format!("{}_restored", db.name);
    db.pool
        .execute(format!(r#"create database "{restored}""#).as_str())
        .await
        .unwrap();
    let restored_url = db
        .url
        .replacen(&format!("/{}", db.name), &format!("/{restored}"), 1);
    for dump in &dumps {
        let status = Command::new("pg_restore")
            .args(["--no-owner", "--exit-on-error", "--dbname"])
            .arg(&restored_url)
            .arg(dump)
            .status()
            .expect("pg_restore (PostgreSQL's client)");
        assert!(status.success());
    }

    let check = Command::new(env!("CARGO_BIN_EXE_docket"))
        .args(["check", "--json"])
        .env("DATABASE_URL", &restored_url)
        .env("DOCKET_LOG_FORMAT", "json")
        // The restore is under test, not this machine's free space.
        .env("DOCKET_CHECK_DISK_MIN_FREE_PERCENT", "0")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&check.stdout);
    let parsed: serde_json::Value = serde_json::from_str(&report).unwrap_or_default();
    let migrations = parsed["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["name"] == "migrations"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        migrations["verdict"], "ok",
        "every migration is there after the restore: {report}"
    );
    // Every check is ok but `workers` (no worker runs on the restored copy yet, while its
    // jobs wait) and `mail` (this check runs in stub mode): warnings, exit 1.
    for check in parsed["checks"].as_array().unwrap() {
        if check["name"] != "workers" && check["name"] != "mail" {
            assert_eq!(check["verdict"], "ok", "after the restore: {report}");
        }
    }
    assert_eq!(check.status.code(), Some(1), "{report}");

    let restored_pool = sqlx::PgPool::connect(&restored_url).await.unwrap();
    let after = ids(sqlx::query_as::<_, (uuid::Uuid, String)>(
        "select id, state::text from docket.jobs",
    )
    .fetch_all(&restored_pool)
    .await
    .unwrap());
    restored_pool.close().await;
    assert_eq!(after, before, "every job is back, in its state");
    db.pool
        .execute(format!(r#"drop database "{restored}" with (force)"#).as_str())
        .await
        .unwrap();
    for dump in &dumps {
        std::fs::remove_file(dump).ok();
    }
}
