//! Helpers for an application's own tests, on a real database: what a request enqueued
//! (River's `rivertest.RequireInserted`), and running the due jobs now, through the real
//! runtime, until none is left (Oban's `drain_queue`).
//!
//! ```no_run
//! # use docket_queue::JobArgs;
//! # #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
//! # struct Welcome { user_id: i64 }
//! # impl JobArgs for Welcome { const KIND: &'static str = "app.welcome"; }
//! # async fn example(pool: sqlx::PgPool, registry: docket_worker::Registry) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use docket_worker::testing;
//!
//! // ... the request under test ...
//! assert_eq!(testing::enqueued::<Welcome>(&pool).await?, [Welcome { user_id: 7 }]);
//! let drained = testing::drain(&pool, registry).await?;
//! assert_eq!(drained.completed, 1);
//! # Ok(()) }
//! ```

use std::time::{Duration, Instant};

use docket_queue::{JobArgs, JobState};
use serde::de::DeserializeOwned;
use sqlx::PgPool;

use crate::{QueueConfig, Registry, Runtime, RuntimeConfig};

/// How long [`drain`] waits for the due jobs to finish before it gives up.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// The jobs of kind `A` waiting to run (pending or retrying), decoded, oldest first.
///
/// # Errors
///
/// When the database fails, or a payload does not decode as `A`.
pub async fn enqueued<A>(pool: &PgPool) -> Result<Vec<A>, Box<dyn std::error::Error + Send + Sync>>
where
    A: JobArgs + DeserializeOwned,
{
    let payloads: Vec<serde_json::Value> = sqlx::query_scalar(
        "select payload from docket.jobs
         where kind = $1 and state in ('pending', 'retrying')
         order by id",
    )
    .bind(A::KIND)
    .fetch_all(pool)
    .await?;
    Ok(payloads
        .into_iter()
        .map(serde_json::from_value)
        .collect::<Result<_, _>>()?)
}

/// What [`drain`] ran: the due jobs of the registry's kinds, by what became of them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Drained {
    /// Completed.
    pub completed: usize,
    /// Failed and waiting out their backoff (`retrying`), or snoozed.
    pub retrying: usize,
    /// Dead-lettered.
    pub dead_letter: usize,
    /// Cancelled.
    pub cancelled: usize,
}

/// Runs every job of `registry`'s kinds that is due now, through the real runtime (claims,
/// handlers, outcomes), and returns once each has finished its attempt. A job that fails is
/// left `retrying` with its backoff (not run again); jobs enqueued by the jobs themselves
/// and due at once are run too.
///
/// # Errors
///
/// When the database fails, the runtime refuses the registry, or the jobs are not done
/// within [`DRAIN_TIMEOUT`].
pub async fn drain(
    pool: &PgPool,
    registry: Registry,
) -> Result<Drained, Box<dyn std::error::Error + Send + Sync>> {
    let kinds = registry.kinds();
    let queues: Vec<String> = sqlx::query_scalar(
        "select distinct queue from docket.jobs
         where kind = any($1) and state in ('pending', 'retrying') and run_at <= now()",
    )
    .bind(&kinds)
    .fetch_all(pool)
    .await?;
    if queues.is_empty() {
        return Ok(Drained::default());
    }
    let config = RuntimeConfig {
        queues: queues.into_iter().map(QueueConfig::new).collect(),
        poll_interval: Duration::from_millis(50),
        cron: false,
        ..RuntimeConfig::default()
    };
    let runtime = Runtime::new(pool.clone(), registry, config)?;
    let since: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("select now()").fetch_one(pool).await?;
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(runtime.run(stop.clone().cancelled_owned()));
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    let waited = loop {
        let due: i64 = sqlx::query_scalar(
            "select count(*) from docket.jobs
             where kind = any($1)
               and (state = 'processing' or (state in ('pending', 'retrying') and run_at <= now()))",
        )
        .bind(&kinds)
        .fetch_one(pool)
        .await?;
        if due == 0 {
            break Ok(());
        }
        if Instant::now() >= deadline || running.is_finished() {
            break Err(format!(
                "{due} jobs of {kinds:?} still due after {DRAIN_TIMEOUT:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    stop.cancel();
    running.await??;
    waited?;
    // Every attempt that started during the drain.
    let states: Vec<JobState> = sqlx::query_scalar(
        "select state from docket.jobs where kind = any($1) and attempted_at >= $2",
    )
    .bind(&kinds)
    .bind(since)
    .fetch_all(pool)
    .await?;
    let mut drained = Drained::default();
    for state in states {
        match state {
            JobState::Completed => drained.completed += 1,
            JobState::Retrying | JobState::Pending => drained.retrying += 1,
            JobState::DeadLetter => drained.dead_letter += 1,
            JobState::Cancelled => drained.cancelled += 1,
            JobState::Processing => {}
        }
    }
    Ok(drained)
}
