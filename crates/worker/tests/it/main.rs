//! Integration tests of the worker runtime, in process, against a real PostgreSQL.

mod adversary;
mod batches;
mod complete_tx;
mod faults;
mod groups;
mod prefetch;
mod process;
mod runtime;
mod stall;
mod testing;

use std::time::Duration;

use docket_queue::{JobId, JobState};
use docket_worker::{Registry, Runtime, RuntimeConfig};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A runtime running in the background, stopped by `stop`.
pub(crate) struct Running {
    pub(crate) stop: CancellationToken,
    pub(crate) handle: JoinHandle<docket_queue::Result<()>>,
}

impl Running {
    pub(crate) async fn shutdown(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("runtime stops")
            .expect("runtime task")
            .expect("runtime result");
    }
}

pub(crate) fn start(pool: &PgPool, registry: Registry, config: RuntimeConfig) -> Running {
    let runtime = Runtime::new(pool.clone(), registry, config).expect("valid runtime");
    let stop = CancellationToken::new();
    let handle = tokio::spawn(runtime.run(stop.clone().cancelled_owned()));
    Running { stop, handle }
}

/// A config for tests: quick polling, short timeouts.
pub(crate) fn quick_config() -> RuntimeConfig {
    RuntimeConfig {
        poll_interval: Duration::from_millis(200),
        shutdown_timeout: Duration::from_secs(5),
        ..RuntimeConfig::default()
    }
}

pub(crate) async fn state_of(pool: &PgPool, id: JobId) -> JobState {
    docket_queue::admin::show(pool, id).await.unwrap().state
}

pub(crate) async fn count_in(pool: &PgPool, state: JobState) -> i64 {
    sqlx::query_scalar("select count(*) from docket.jobs where state = $1")
        .bind(state)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Whether a worker's LISTEN connection is up (its last statement was the LISTEN).
pub(crate) async fn listening(pool: &PgPool) -> bool {
    sqlx::query_scalar(
        "select exists (select 1 from pg_stat_activity
                        where datname = current_database() and query ilike 'listen%')",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Enqueues `job` and waits until a worker runs it.
pub(crate) async fn enqueue_running(pool: &PgPool, job: &docket_queue::NewJob) -> JobId {
    let id = docket_queue::enqueue(pool, job).await.unwrap();
    docket_testkit::eventually(Duration::from_secs(20), "the job is running", || async {
        state_of(pool, id).await == JobState::Processing
    })
    .await;
    id
}
