//! `docket worker` and the worker half of `docket serve`: run the runtime with the
//! built-in kinds until a signal.

use std::time::Duration;

use anyhow::Context;
use docket_worker::{builtin, Registry, Runtime, RuntimeConfig};
use sqlx::postgres::PgPoolOptions;

use crate::config::DatabaseUrl;

/// Runs the runtime until SIGTERM or SIGINT.
pub(crate) async fn run(
    url: &DatabaseUrl,
    runtime: RuntimeConfig,
    pool_size: Option<u32>,
) -> anyhow::Result<()> {
    let total: usize = runtime.queues.iter().map(|q| q.concurrency).sum();
    let size = pool_size.unwrap_or_else(|| u32::try_from(total + 4).unwrap_or(u32::MAX).min(50));
    let pool = PgPoolOptions::new()
        .max_connections(size)
        .acquire_timeout(Duration::from_secs(10))
        .test_before_acquire(false)
        .connect_with(url.options())
        .await
        .with_context(|| format!("cannot connect to PostgreSQL at {url}"))?;
    let mut registry = Registry::new();
    builtin::register(&mut registry);
    let runtime = Runtime::new(pool.clone(), registry, runtime)?;
    runtime
        .run(crate::signal::shutdown_signal())
        .await
        .context("the worker could not start (is the database migrated? run `docket migrate`)")?;
    pool.close().await;
    Ok(())
}
