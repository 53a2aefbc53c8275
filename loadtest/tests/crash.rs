//! Crash drill: two worker processes share 1,000 ledger jobs; one is killed with SIGKILL
//! mid-run. Every job must end `completed`, none missing, and no two executions of a job
//! may overlap in time.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::{DateTime, Utc};
use docket_queue::{enqueue_many, JobState, NewJob};
use docket_testkit::{eventually, TestDb};
use serde_json::json;

fn drill_worker(url: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_docket-loadtest"))
        .args([
            "drill-worker",
            "--concurrency",
            "4",
            "--heartbeat-ms",
            "500",
            "--lease-ms",
            "2000",
        ])
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the drill worker")
}

async fn completed(db: &TestDb) -> i64 {
    sqlx::query_scalar("select count(*) from docket.jobs where state = 'completed'")
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_run_loses_no_job_and_never_overlaps_two_runs_of_one() {
    let db = TestDb::new().await;
    sqlx::query(
        "create table drill_ledger (id bigserial primary key, job_id uuid not null, attempt integer not null,
         worker_id uuid not null, started_at timestamptz not null default clock_timestamp(), finished_at timestamptz)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let jobs: Vec<_> = (0..1000)
        .map(|_| NewJob::new("drill.ledger", json!({ "ms": 10 })))
        .collect();
    enqueue_many(&db.pool, &jobs).await.unwrap();

    let mut victim = drill_worker(&db.url);
    let mut survivor = drill_worker(&db.url);
    eventually(Duration::from_secs(60), "300 jobs completed", || async {
        completed(&db).await >= 300
    })
    .await;
    let victim_id: uuid::Uuid = sqlx::query_scalar("select id from docket.workers where pid = $1")
        .bind(i32::try_from(victim.id()).unwrap())
        .fetch_one(&db.pool)
        .await
        .unwrap();
    victim.kill().unwrap();
    victim.wait().unwrap();
    let killed_at: DateTime<Utc> = sqlx::query_scalar("select clock_timestamp()")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let held: i64 = sqlx::query_scalar("select count(*) from docket.jobs where locked_by = $1")
        .bind(victim_id)
        .fetch_one(&db.pool)
        .await
        .unwrap();

    assert!(held > 0, "the kill caught the worker holding jobs");
    eventually(
        Duration::from_secs(60),
        "all 1,000 jobs completed",
        || async { completed(&db).await == 1000 },
    )
    .await;
    let _ = Command::new("kill")
        .args(["-TERM", &survivor.id().to_string()])
        .status();
    survivor.wait().unwrap();

    let not_completed: i64 =
        sqlx::query_scalar("select count(*) from docket.jobs where state <> 'completed'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(not_completed, 0);
    let unrun: i64 = sqlx::query_scalar(
        "select count(*) from docket.jobs j
         where not exists (select 1 from drill_ledger l where l.job_id = j.id and l.finished_at is not null)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(unrun, 0, "every job ran to the end at least once");
    // A run cut short by the kill lasted until the kill.
    let overlaps: i64 = sqlx::query_scalar(
        "select count(*) from drill_ledger a join drill_ledger b on a.job_id = b.job_id and a.id < b.id
         where tstzrange(a.started_at, coalesce(a.finished_at, $1)) && tstzrange(b.started_at, coalesce(b.finished_at, $1))",
    )
    .bind(killed_at)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(overlaps, 0, "two runs of one job overlapped");
    let rescued: i64 = sqlx::query_scalar(
        "select count(*) from docket.jobs where errors @> '[{\"error\": \"worker lease lapsed\"}]'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        rescued, held,
        "the killed worker's jobs were rescued, each once"
    );
    let states: Vec<JobState> = sqlx::query_scalar("select distinct state from docket.jobs")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(states, [JobState::Completed]);
}
