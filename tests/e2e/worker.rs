use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use docket_queue::{enqueue, enqueue_many, JobState, NewJob};
use docket_testkit::{eventually, TestDb};
use docket_worker::builtin::{Sleep, NOOP};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

/// Starts `docket worker` on the test database; `application_name` tags its connections.
fn spawn_worker(db: &TestDb, env: &[(&str, &str)]) -> Child {
    let url = format!(
        "{}{}application_name=docket-e2e-worker",
        db.url,
        if db.url.contains('?') { "&" } else { "?" }
    );
    Command::new(env!("CARGO_BIN_EXE_docket"))
        .arg("worker")
        .env("DATABASE_URL", url)
        .env("DOCKET_LOG_FORMAT", "json")
        .env("DOCKET_POLL_INTERVAL", "0.2")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start docket worker")
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

async fn count(db: &TestDb, state: JobState) -> i64 {
    sqlx::query_scalar("select count(*) from docket.jobs where state = $1")
        .bind(state)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_long_jobs_exits_in_time_and_hands_them_back_unspent() {
    let db = TestDb::new().await;
    let long: Vec<_> = (0..3)
        .map(|_| NewJob::typed(&Sleep { ms: 120_000 }).unwrap())
        .collect();
    let long_ids = enqueue_many(&db.pool, &long).await.unwrap();
    let mut worker = spawn_worker(&db, &[("DOCKET_SHUTDOWN_TIMEOUT", "1")]);
    eventually(WAIT, "the long jobs are running", || async {
        count(&db, JobState::Processing).await == 3
    })
    .await;
    let quick = enqueue(&db.pool, &NewJob::new(NOOP, json!({})))
        .await
        .unwrap();
    eventually(WAIT, "a quick job completes meanwhile", || async {
        docket_queue::admin::show(&db.pool, quick)
            .await
            .unwrap()
            .state
            == JobState::Completed
    })
    .await;

    let sent = Instant::now();
    signal(&worker, "TERM");
    let status = tokio::task::spawn_blocking(move || {
        let status = worker.wait().unwrap();
        let mut log = String::new();
        std::io::Read::read_to_string(worker.stderr.as_mut().unwrap(), &mut log).unwrap();
        (status, log)
    });
    let (status, log) = tokio::time::timeout(Duration::from_secs(10), status)
        .await
        .expect("worker exits")
        .unwrap();
    let took = sent.elapsed();
    assert!(status.success(), "exit status {status}; log:\n{log}");
    assert!(
        took < Duration::from_secs(4),
        "took {took:?} with a 1 s shutdown timeout"
    );
    for step in [
        "worker.shutdown.started",
        "worker.shutdown.released",
        "worker.shutdown.flushed",
        "worker.shutdown.completed",
    ] {
        assert!(log.contains(step), "log lacks {step}:\n{log}");
    }
    for id in long_ids {
        let job = docket_queue::admin::show(&db.pool, id).await.unwrap();
        assert_eq!(
            (job.state, job.attempt, job.locked_by),
            (JobState::Pending, 0, None),
            "job {id}"
        );
    }
    let workers: i64 = sqlx::query_scalar("select count(*) from docket.workers")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(workers, 0, "the worker deregistered; log:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_survives_pg_terminate_backend_on_every_connection_and_finishes_all_jobs() {
    let db = TestDb::new().await;
    let jobs: Vec<_> = (0..1000)
        .map(|_| NewJob::typed(&Sleep { ms: 5 }).unwrap())
        .collect();
    enqueue_many(&db.pool, &jobs).await.unwrap();
    let mut worker = spawn_worker(&db, &[("DOCKET_CONCURRENCY", "10")]);
    eventually(WAIT, "some jobs completed", || async {
        count(&db, JobState::Completed).await >= 100
    })
    .await;
    let killed: i64 = sqlx::query_scalar(
        "select count(*) from (select pg_terminate_backend(pid) from pg_stat_activity
         where application_name = 'docket-e2e-worker' and datname = current_database()) t",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(
        killed >= 2,
        "the worker's connections were terminated ({killed})"
    );
    eventually(
        WAIT,
        "every job completed after the connections died",
        || async { count(&db, JobState::Completed).await == 1000 },
    )
    .await;
    signal(&worker, "TERM");
    let status = tokio::task::spawn_blocking(move || worker.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_with_listen_disabled_still_runs_jobs() {
    let db = TestDb::new().await;
    let mut worker = spawn_worker(&db, &[("DOCKET_LISTEN", "false")]);
    let id = enqueue(&db.pool, &NewJob::new(NOOP, json!({})))
        .await
        .unwrap();
    eventually(WAIT, "the job completed by polling", || async {
        docket_queue::admin::show(&db.pool, id).await.unwrap().state == JobState::Completed
    })
    .await;
    signal(&worker, "INT");
    let status = tokio::task::spawn_blocking(move || worker.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success());
}

#[test]
fn bad_worker_configuration_is_refused_before_start() {
    let out = Command::new(env!("CARGO_BIN_EXE_docket"))
        .args(["worker", "--queues", "mail:lots"])
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:9/x")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--queues") && err.contains("concurrency must be a whole number"),
        "{err}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_docket"))
        .arg("worker")
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:9/x")
        .env("DOCKET_SHUTDOWN_TIMEOUT", "soon")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("DOCKET_SHUTDOWN_TIMEOUT"), "{err}");
}

/// Issue #14: with `docket.jobs` locked while jobs were finishing, the worker logged that
/// it stopped but did not exit until the lock was released: closing its pool waited for
/// connections abandoned mid-statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_the_jobs_table_is_locked_still_exits_in_bounded_time() {
    let db = TestDb::new().await;
    let jobs: Vec<_> = (0..20_000)
        .map(|_| NewJob::typed(&Sleep { ms: 20 }).unwrap())
        .collect();
    enqueue_many(&db.pool, &jobs).await.unwrap();
    let mut worker = spawn_worker(&db, &[("DOCKET_SHUTDOWN_TIMEOUT", "1")]);
    eventually(WAIT, "jobs are flowing", || async {
        count(&db, JobState::Completed).await >= 50
    })
    .await;
    let mut blocker = db.pool.begin().await.unwrap();
    sqlx::query("lock table docket.jobs in access exclusive mode")
        .execute(&mut *blocker)
        .await
        .unwrap();
    // Let outcomes pile up behind the lock.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = Instant::now();
    signal(&worker, "TERM");
    let exited = tokio::task::spawn_blocking(move || {
        let status = worker.wait().unwrap();
        let mut log = String::new();
        std::io::Read::read_to_string(worker.stderr.as_mut().unwrap(), &mut log).unwrap();
        (status, log)
    });
    let exited = tokio::time::timeout(Duration::from_secs(20), exited).await;
    let took = sent.elapsed();
    blocker.rollback().await.unwrap();
    let (status, log) = exited
        .expect("the worker exits while the lock is held")
        .unwrap();
    assert!(status.success(), "exit status {status}; log:\n{log}");
    assert!(took < Duration::from_secs(12), "took {took:?}; log:\n{log}");
    // Nothing is lost: what the worker could not hand back behind the lock (and what its
    // abandoned statements still do once the lock goes) is freed by the rescuer, here run
    // by hand.
    eventually(WAIT, "nothing is left processing", || async {
        docket_queue::maintenance::rescue_lapsed(&db.pool, 1000, None)
            .await
            .unwrap();
        count(&db, JobState::Processing).await == 0
    })
    .await;
}

/// A second signal during a graceful shutdown exits at once (130), without waiting for
/// the running job's shutdown timeout; its job is left to the rescuer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let db = TestDb::new().await;
    enqueue(&db.pool, &NewJob::typed(&Sleep { ms: 120_000 }).unwrap())
        .await
        .unwrap();
    let mut worker = spawn_worker(
        &db,
        &[
            ("DOCKET_SHUTDOWN_TIMEOUT", "60"),
            ("RUST_LOG", "info,docket_worker::executor=debug"),
        ],
    );
    // The worker's own word that the job started: `processing` in the table comes first,
    // and a signal between the claim's commit and the start hands the claim back at once.
    let log = collect_lines(worker.stderr.take().unwrap());
    eventually(WAIT, "the long job is running", || async {
        log.lock().unwrap().contains("background_job.started")
    })
    .await;
    signal(&worker, "INT");
    // The first signal's shutdown waits for the job (up to 60 s); the second ends it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(worker.try_wait().unwrap().is_none(), "still shutting down");
    let second = Instant::now();
    signal(&worker, "TERM");
    let status = loop {
        if let Some(status) = worker.try_wait().unwrap() {
            break status;
        }
        assert!(
            second.elapsed() < Duration::from_secs(5),
            "no exit 5 s after the second signal"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(130));
    let log = log.lock().unwrap().clone();
    assert!(
        log.contains("worker.shutdown.forced") || log.contains("second signal"),
        "{log}"
    );
}

/// What `stream` prints, as it prints it, read on a thread of its own.
fn collect_lines(
    stream: impl std::io::Read + Send + 'static,
) -> std::sync::Arc<std::sync::Mutex<String>> {
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let writer = log.clone();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stream)).map_while(Result::ok) {
            let mut log = writer.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    log
}

/// A SIGTERM that comes while the worker is still starting (registered, not yet waiting
/// for signals) is a graceful shutdown: it deregisters. Before, the handlers were installed
/// only after start-up, so such a signal killed the process and its registration (and the
/// schedules it declared) looked live until its lease lapsed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_during_start_up_is_a_graceful_shutdown() {
    use std::os::unix::process::ExitStatusExt as _;
    let db = TestDb::new().await;
    let mut worker = spawn_worker(&db, &[]);
    let started = Instant::now();
    loop {
        let registered: i64 = sqlx::query_scalar("select count(*) from docket.workers")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        if registered > 0 {
            break;
        }
        assert!(started.elapsed() < WAIT, "the worker never registered");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    signal(&worker, "TERM");
    let status = worker.wait().unwrap();
    assert_eq!(status.signal(), None, "killed by the signal: {status:?}");
    assert!(status.success(), "{status:?}");
    let registered: i64 = sqlx::query_scalar("select count(*) from docket.workers")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(registered, 0, "it deregistered");
}
