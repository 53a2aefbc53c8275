//! An email is sent again only on an operator's word. A run of a recovery or admin job that
//! finds its own delivery `unknown` or `dead_letter` has not been told to send it again:
//! the job may simply be running again (handed back at shutdown, rescued after a stall)
//! after the exchange that settled the delivery outlived the run that started it. Only a
//! replay of the job (one, or in bulk) sends it again, with a fresh ladder.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use docket_mail::delivery::Status;
use docket_mail::jobs::{Recovery, RECOVERY_QUEUE};
use docket_queue::admin::DeadLetterFilter;
use docket_queue::{JobId, JobState, NewJob};
use docket_testkit::{eventually, SmtpSink, TestDb};
use sqlx::PgPool;

use crate::{config_for, config_for_url, deliveries, start_tuned, templates, Running};

fn reset() -> std::path::PathBuf {
    templates(&[("reset/subject.txt", "Reset"), ("reset/body.txt", "Reset.")])
}

async fn enqueue_recovery(pool: &PgPool, to: &str) -> JobId {
    let job = Recovery {
        to: to.to_owned(),
        template: "reset".to_owned(),
        vars: serde_json::json!({}),
        locale: None,
        idempotency_key: None,
    };
    let new = NewJob::typed(&job).unwrap().queue(RECOVERY_QUEUE);
    docket_queue::enqueue(pool, &new).await.unwrap()
}

async fn wait_final(pool: &PgPool, id: JobId) -> docket_queue::Job {
    eventually(
        Duration::from_secs(60),
        &format!("job {id} is finished"),
        || async {
            docket_queue::admin::show(pool, id)
                .await
                .unwrap()
                .state
                .is_final()
        },
    )
    .await;
    docket_queue::admin::show(pool, id).await.unwrap()
}

/// A worker whose runs are handed back one second into its shutdown.
fn start_worker(pool: &PgPool, config: docket_mail::MailConfig) -> Running {
    start_tuned(pool, config, |runtime| {
        runtime.shutdown_timeout = Duration::from_secs(1);
    })
}

/// Runs `id` on a worker until the relay holds its message number `nth` without answering
/// (the exchange then ends `unknown`: no reply in time), and stops that worker (a deploy):
/// the run is handed back, its exchange goes on. Returns a new worker, which runs the job
/// again.
async fn hand_back_mid_exchange(
    db: &TestDb,
    sink: &SmtpSink,
    config: &docket_mail::MailConfig,
    running: Running,
    nth: usize,
) -> Running {
    eventually(
        Duration::from_secs(10),
        "the relay took the message and has not answered",
        || async { sink.count_for("ann@example.com") == nth },
    )
    .await;
    // The relay answers at once from here on: another copy would arrive.
    sink.slow_data(None);
    running.shutdown().await;
    start_worker(&db.pool, config.clone())
}

/// A worker is stopped while the relay holds the message without answering; the exchange
/// outlives the run and ends `unknown`. The next worker runs the job again; nobody
/// replayed it, so nothing is sent: the job is dead-lettered `unknown`. The operator's
/// replay sends it, and counts once: the same again after that replay sends nothing more,
/// and a second replay sends it once more.
#[tokio::test]
async fn an_exchange_that_ends_unknown_after_its_run_was_handed_back_is_not_sent_again_unasked() {
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    sink.slow_data(Some(Duration::from_secs(30)));
    let mut config = config_for(&sink, reset());
    config.timeout = Duration::from_secs(3);
    let first = start_worker(&db.pool, config.clone());
    let id = enqueue_recovery(&db.pool, "ann@example.com").await;
    let second = hand_back_mid_exchange(&db, &sink, &config, first, 1).await;
    let job = wait_final(&db.pool, id).await;
    assert_eq!(
        sink.count_for("ann@example.com"),
        1,
        "sent again with nobody's word"
    );
    assert_eq!(
        (job.state, job.dead_letter_reason.as_deref()),
        (JobState::DeadLetter, Some("unknown"))
    );
    assert_eq!(deliveries(&db.pool, None).await[0].status, Status::Unknown);
    // The operator's word, and the same fault after it: one more copy, not two.
    sink.slow_data(Some(Duration::from_secs(30)));
    docket_queue::admin::replay(&db.pool, id).await.unwrap();
    let third = hand_back_mid_exchange(&db, &sink, &config, second, 2).await;
    let job = wait_final(&db.pool, id).await;
    assert_eq!(
        sink.count_for("ann@example.com"),
        2,
        "one replay sent the message twice"
    );
    assert_eq!(
        (job.state, job.dead_letter_reason.as_deref(), job.replays),
        (JobState::DeadLetter, Some("unknown"), 1)
    );
    // The operator's word again: the replay sends it, once.
    docket_queue::admin::replay(&db.pool, id).await.unwrap();
    let job = wait_final(&db.pool, id).await;
    third.shutdown().await;
    assert_eq!(job.state, JobState::Completed);
    assert_eq!(sink.count_for("ann@example.com"), 3);
    let recorded = deliveries(&db.pool, None).await;
    assert_eq!(
        (recorded[0].status, recorded[0].attempts),
        (Status::Sent, 1),
        "{recorded:?}"
    );
}

/// The same for a ladder: the run of the last attempt is handed back while the relay is
/// slow to refuse the recipient (451), and the exchange then dead-letters the delivery.
/// The next worker does not start the ladder over; the bulk replay of dead letters does.
#[tokio::test]
async fn a_ladder_that_ends_after_its_run_was_handed_back_is_not_started_over_unasked() {
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    let to = "bob@example.com";
    sink.slow_recipient(to, Duration::from_secs(3));
    sink.reply_to(to, Some("451 4.2.0 try again later"));
    let mut config = config_for(&sink, reset());
    config.retry_ladder = vec![Duration::from_secs(1)];
    let first = start_worker(&db.pool, config.clone());
    let id = enqueue_recovery(&db.pool, to).await;
    eventually(
        Duration::from_secs(20),
        "the second attempt is under way",
        || async { sink.attempts_for(to) == 2 },
    )
    .await;
    first.shutdown().await;
    let second = start_worker(&db.pool, config);
    let job = wait_final(&db.pool, id).await;
    assert_eq!(
        sink.attempts_for(to),
        2,
        "the ladder was started over unasked"
    );
    assert_eq!(
        (job.state, job.dead_letter_reason.as_deref()),
        (JobState::DeadLetter, Some("smtp_temporary")),
        "{:?}",
        job.last_error
    );
    let recorded = deliveries(&db.pool, None).await;
    assert_eq!(
        (recorded[0].status, recorded[0].attempts),
        (Status::DeadLetter, 2),
        "{recorded:?}"
    );
    // The operator's word, in bulk: a fresh ladder, and the relay takes it.
    sink.reply_to(to, None);
    let replayed = docket_queue::admin::replay_dead_letters(&db.pool, &DeadLetterFilter::default())
        .await
        .unwrap();
    assert_eq!(replayed, 1);
    let job = wait_final(&db.pool, id).await;
    second.shutdown().await;
    assert_eq!(job.state, JobState::Completed);
    assert_eq!(sink.count_for(to), 1);
    let recorded = deliveries(&db.pool, None).await;
    assert_eq!(
        (recorded[0].status, recorded[0].attempts),
        (Status::Sent, 1),
        "a fresh ladder: {recorded:?}"
    );
}

/// The stalled worker's database, for [`mail_worker_process`].
const DB_VAR: &str = "MAIL_IT_WORKER_DB";
/// The stalled worker's relay (the test's sink).
const SMTP_VAR: &str = "MAIL_IT_WORKER_SMTP";

/// The SMTP timeout of the stall test's workers: the exchange of a worker stopped for
/// longer ends `unknown` as soon as it wakes, well within the delivery's bound (this plus
/// 10 s), so the run that finds it next finds it `unknown` rather than marking it so.
const STALL_SMTP_TIMEOUT: Duration = Duration::from_secs(3);

/// The stall test's leases: 4 s, renewed every second, lapsed ones rescued every second.
fn short_lease(runtime: &mut docket_worker::RuntimeConfig) {
    runtime.heartbeat_interval = Duration::from_secs(1);
    runtime.lease_timeout = Duration::from_secs(4);
    runtime.rescuer_interval = Duration::from_secs(1);
}

/// Not a test: the worker process of the stall test, which starts this binary again with
/// [`DB_VAR`] and [`SMTP_VAR`] set. Without them it returns at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the worker process of the stall test; it starts it"]
async fn mail_worker_process() {
    let (Ok(url), Ok(smtp)) = (std::env::var(DB_VAR), std::env::var(SMTP_VAR)) else {
        return;
    };
    let pool = PgPool::connect(&url).await.expect("connect");
    let mut config = config_for_url(&smtp, reset());
    config.timeout = STALL_SMTP_TIMEOUT;
    let _running = start_tuned(&pool, config, short_lease);
    // Runs until the test kills the process.
    std::future::pending::<()>().await;
}

/// A worker in a process of its own (this test binary started again), killed when dropped.
struct WorkerProcess(Child);

impl WorkerProcess {
    fn start(db: &TestDb, sink: &SmtpSink) -> WorkerProcess {
        let child = Command::new(std::env::current_exe().expect("this test binary"))
            .args([
                "operator_word::mail_worker_process",
                "--exact",
                "--ignored",
                "--nocapture",
            ])
            .env(DB_VAR, &db.url)
            .env(SMTP_VAR, sink.url())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start a worker process");
        WorkerProcess(child)
    }

    /// Sends `kill -NAME` (`STOP`, `CONT`).
    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.0.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{name}");
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The brief's fault for real: a worker process is stopped (SIGSTOP: a paused VM, a stall)
/// while the relay holds its message without answering, for longer than its lease. Another
/// worker's rescuer frees the job and runs it; the stalled worker wakes, its exchange ends
/// `unknown` at once (no reply in time), and its own run's outcome is fenced off. The job's
/// next run finds its delivery `unknown` with nobody's word: nothing is sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exchange_that_ends_unknown_in_a_worker_stalled_past_its_lease_is_not_sent_again_after_the_rescue(
) {
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    sink.slow_data(Some(Duration::from_secs(30)));
    let stalled = WorkerProcess::start(&db, &sink);
    let id = enqueue_recovery(&db.pool, "ann@example.com").await;
    eventually(
        Duration::from_secs(60),
        "the worker process handed the message over and waits for the reply",
        || async { sink.count_for("ann@example.com") == 1 },
    )
    .await;
    stalled.signal("STOP");
    // A second copy would be taken at once.
    sink.slow_data(None);
    let mut config = config_for(&sink, reset());
    config.timeout = STALL_SMTP_TIMEOUT;
    let rescuer = start_tuned(&db.pool, config, short_lease);
    eventually(
        Duration::from_secs(30),
        "the stalled worker's lease lapsed and its job was rescued",
        || async {
            docket_queue::admin::show(&db.pool, id)
                .await
                .unwrap()
                .errors
                .iter()
                .any(|e| e.error.contains("lease lapsed"))
        },
    )
    .await;
    stalled.signal("CONT");
    let job = wait_final(&db.pool, id).await;
    drop(stalled);
    rescuer.shutdown().await;
    assert_eq!(
        sink.count_for("ann@example.com"),
        1,
        "sent again after the rescue with nobody's word"
    );
    assert_eq!(
        (job.state, job.dead_letter_reason.as_deref()),
        (JobState::DeadLetter, Some("unknown")),
        "{:?}",
        job.errors
    );
    assert_eq!(deliveries(&db.pool, None).await[0].status, Status::Unknown);
}
