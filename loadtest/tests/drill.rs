//! The stress drill in the suite, so that it cannot rot: the quick profile with `kill` and
//! `terminate` passes and its report agrees with the database; and the drill's checker
//! catches a lost job and an overlapping run, naming them (the checker is code too).

use std::path::PathBuf;
use std::process::{Command, Output};

use docket_queue::NewJob;
use docket_testkit::TestDb;
use serde_json::{json, Value};

/// The `docket` binary beside this test's own build, built first if it is missing or old.
fn docket_binary() -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--bin", "docket"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .status()
        .expect("run cargo build");
    assert!(status.success(), "the docket binary builds");
    let deps = std::env::current_exe().unwrap();
    deps.parent().unwrap().parent().unwrap().join("docket")
}

fn loadtest(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_docket-loadtest"))
        .args(args)
        .env("DATABASE_URL", url)
        .output()
        .expect("run docket-loadtest")
}

async fn count(db: &TestDb, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&db.pool).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_drill_with_kill_and_terminate_passes_and_its_report_agrees_with_the_database() {
    let db = TestDb::new().await;
    let docket = docket_binary();
    let out = std::env::temp_dir().join(format!("docket-drill-{}", uuid::Uuid::now_v7()));
    let url = db.url.clone();
    let (out_arg, docket_arg) = (
        out.to_str().unwrap().to_owned(),
        docket.to_str().unwrap().to_owned(),
    );
    let output = tokio::task::spawn_blocking(move || {
        let args = [
            "drill",
            "--profile",
            "quick",
            "--jobs",
            "1500",
            "--chaos",
            "kill,terminate",
            "--out",
            &out_arg,
            "--docket",
            &docket_arg,
        ];
        loadtest(&url, &args)
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["passed"], true, "{report}");
    assert_eq!(report["jobs"], 1500);
    assert_eq!(report["lost"], 0);
    assert_eq!(report["overlapping_runs"], 0);
    let faults = report["faults"].as_array().unwrap();
    for fault in ["kill", "terminate"] {
        assert!(
            faults.iter().any(|f| f["fault"] == fault),
            "{fault} was injected: {faults:?}"
        );
    }
    let drill_jobs = "from drill_expectations e join docket.jobs j on j.id = e.job_id";
    assert_eq!(
        report["completed"],
        count(
            &db,
            &format!("select count(*) {drill_jobs} where j.state = 'completed'")
        )
        .await
    );
    assert_eq!(
        report["dead_letter"],
        count(
            &db,
            &format!("select count(*) {drill_jobs} where j.state = 'dead_letter'")
        )
        .await
    );
    assert_eq!(
        count(
            &db,
            "select count(*) from docket.jobs where state in ('pending', 'retrying', 'processing')"
        )
        .await,
        0,
        "nothing left behind"
    );
    for file in ["report.md", "chart.svg"] {
        assert!(out.join(file).exists(), "{file} is written");
    }
    let _ = std::fs::remove_dir_all(&out);
}

#[tokio::test]
async fn the_checker_names_a_deleted_job_a_forged_overlapping_run_and_a_run_past_its_lease() {
    let db = TestDb::new().await;
    sqlx::raw_sql(
        "create table drill_expectations (job_id uuid primary key, expect text not null);
         create table drill_ledger (id bigserial primary key, job_id uuid not null,
             attempt integer not null, worker_id uuid not null,
             started_at timestamptz not null default clock_timestamp(), finished_at timestamptz,
             lease_held boolean);",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let jobs: Vec<NewJob> = (0..4)
        .map(|i| NewJob::new("drill.work", json!({"ms": i})))
        .collect();
    let ids = docket_queue::enqueue_many(&db.pool, &jobs).await.unwrap();
    let ids: Vec<uuid::Uuid> = ids.into_iter().map(|id| id.0).collect();
    sqlx::raw_sql(
        "update docket.jobs set state = 'completed', attempt = 1, finished_at = now();
         insert into drill_expectations select id, 'completed' from docket.jobs;
         insert into drill_ledger (job_id, attempt, worker_id, started_at, finished_at)
             select id, 1, gen_random_uuid(), now() - interval '2 s', now() - interval '1 s'
             from docket.jobs;",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let clean = loadtest(&db.url, &["drill-check"]);
    assert!(
        clean.status.success(),
        "{}",
        String::from_utf8_lossy(&clean.stderr)
    );

    sqlx::query("delete from docket.jobs where id = $1")
        .bind(ids[0])
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query(
        "insert into drill_ledger (job_id, attempt, worker_id, started_at, finished_at)
         values ($1, 2, gen_random_uuid(), now() - interval '1.5 s', now())",
    )
    .bind(ids[1])
    .execute(&db.pool)
    .await
    .unwrap();
    // Issue #21: a stalled worker's run that went on after its lease lapsed, and ended
    // after the rescue's run had ended (no overlap in time): still a violation.
    sqlx::query(
        "insert into drill_ledger (job_id, attempt, worker_id, started_at, finished_at, lease_held)
         values ($1, 1, gen_random_uuid(), now() - interval '0.5 s', now(), false)",
    )
    .bind(ids[3])
    .execute(&db.pool)
    .await
    .unwrap();
    let caught = loadtest(&db.url, &["drill-check"]);
    let said = String::from_utf8_lossy(&caught.stderr);
    assert!(!caught.status.success(), "a violation exits non-zero");
    assert!(
        said.contains(&format!("lost: 1 jobs: {}", ids[0])),
        "{said}"
    );
    assert!(
        said.contains(&format!("overlapping runs: 1: {}", ids[1])),
        "{said}"
    );
    assert!(
        said.contains(&format!("runs past their lease: 1: {}", ids[3])),
        "{said}"
    );
    assert!(
        !said.contains(&ids[2].to_string()),
        "the sound job is not named: {said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_restart_mid_drill_is_survived_and_not_taken_for_a_drained_backlog() {
    let docket = docket_binary();
    let out = std::env::temp_dir().join(format!("docket-drill-{}", uuid::Uuid::now_v7()));
    let (out_arg, docket_arg) = (
        out.to_str().unwrap().to_owned(),
        docket.to_str().unwrap().to_owned(),
    );
    // On the drill's own cluster (no DATABASE_URL): the one it may restart.
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_docket-loadtest"))
            .args([
                "drill",
                "--profile",
                "quick",
                "--jobs",
                "1500",
                "--chaos",
                "pg-restart",
                "--out",
                &out_arg,
                "--docket",
                &docket_arg,
            ])
            .env_remove("DATABASE_URL")
            .output()
            .expect("run docket-loadtest")
    })
    .await
    .unwrap();
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert!(
        output.status.success(),
        "{}\n{report}",
        String::from_utf8_lossy(&output.stdout)
    );
    let restarts = report["faults"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["detail"] == "PostgreSQL restarted (immediate)")
        .count();
    assert!(restarts >= 1, "{report}");
    assert_eq!(report["lost"], 0);
    assert_eq!(
        report["completed"].as_i64().unwrap() + report["dead_letter"].as_i64().unwrap(),
        1500,
        "every job finished before the drill ended"
    );
    let _ = std::fs::remove_dir_all(&out);
}

/// The drill refuses a database that holds Docket data, or an application's tables, and
/// leaves it untouched: no drill table, no job, no worker. With
/// `--i-know-this-is-not-production` it goes past the refusal.
#[tokio::test]
async fn the_drill_refuses_a_database_with_docket_data_or_tables_it_did_not_create() {
    let with_jobs = TestDb::new().await;
    docket_queue::enqueue(&with_jobs.pool, &NewJob::new("app.welcome", json!({})))
        .await
        .unwrap();
    let with_app_table = TestDb::new().await;
    sqlx::query("create table users (id bigint primary key, email text)")
        .execute(&with_app_table.pool)
        .await
        .unwrap();
    for (db, says) in [
        (&with_jobs, "docket.jobs"),
        (&with_app_table, "public.users"),
    ] {
        let url = db.url.clone();
        let output = tokio::task::spawn_blocking(move || {
            loadtest(
                &url,
                &[
                    "drill",
                    "--profile",
                    "quick",
                    "--docket",
                    "/nonexistent/docket",
                ],
            )
        })
        .await
        .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "refused: {stderr}");
        assert!(
            stderr.contains("refusing to run the drill") && stderr.contains(says),
            "{stderr}"
        );
        assert!(
            stderr.contains("--i-know-this-is-not-production"),
            "{stderr}"
        );
        assert_eq!(
            count(
                db,
                "select count(*) from pg_class where relname in ('drill_ledger', 'drill_expectations')"
            )
            .await,
            0,
            "no drill table was created"
        );
        assert_eq!(count(db, "select count(*) from docket.workers").await, 0);
        assert!(count(db, "select count(*) from docket.jobs").await <= 1);
    }
    // Told it is not production, it goes on (and fails later, on the missing binary).
    let url = with_app_table.url.clone();
    let output = tokio::task::spawn_blocking(move || {
        let out = std::env::temp_dir().join(format!("docket-drill-{}", uuid::Uuid::now_v7()));
        let out = out.to_str().unwrap().to_owned();
        loadtest(
            &url,
            &[
                "drill",
                "--profile",
                "quick",
                "--docket",
                "/nonexistent/docket",
                "--out",
                &out,
                "--i-know-this-is-not-production",
            ],
        )
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("refusing to run the drill"), "{stderr}");
}
