//! `docket worker`: run the runtime with the built-in and mail kinds until a signal.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use docket_mail::{MailConfig, Mailer};
use docket_worker::{builtin, Registry, Runtime, RuntimeConfig};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use crate::config::DatabaseUrl;

/// The pool claims, outcomes and handlers share: the total concurrency plus a few, at most
/// 50, unless configured.
pub(crate) async fn work_pool(
    url: &DatabaseUrl,
    runtime: &RuntimeConfig,
    pool_size: Option<u32>,
) -> anyhow::Result<PgPool> {
    let total: usize = runtime.queues.iter().map(|q| q.concurrency).sum();
    let size = pool_size.unwrap_or_else(|| u32::try_from(total + 4).unwrap_or(u32::MAX).min(50));
    crate::cmd::open_pool(
        url,
        PgPoolOptions::new()
            .max_connections(size)
            .acquire_timeout(Duration::from_secs(10))
            .test_before_acquire(false),
    )
    .await
}

/// The mailer: settings checked, the whole template catalog parsed, so a broken template or
/// mail setting stops start-up here, before anything listens or claims.
pub(crate) fn mailer(pool: &PgPool, mail: &MailConfig) -> anyhow::Result<Arc<Mailer>> {
    if mail.mode == docket_mail::config::Mode::Stub {
        tracing::warn!(
            event = docket_queue::telemetry::event::MAIL_STUB,
            "stub mode: no email is sent (set {} to send through a relay)",
            docket_settings::SMTP_URL
        );
    }
    Ok(Arc::new(
        Mailer::new(pool.clone(), mail.clone()).map_err(anyhow::Error::msg)?,
    ))
}

/// Every kind `docket worker` and `docket serve` run: the built-in ones and the mail kinds.
pub(crate) fn registry(mailer: Arc<Mailer>) -> Registry {
    let mut registry = Registry::new();
    builtin::register(&mut registry);
    docket_mail::jobs::register(&mut registry, mailer);
    registry
}

/// Runs the runtime until SIGTERM or SIGINT.
pub(crate) async fn run(
    url: &DatabaseUrl,
    runtime: RuntimeConfig,
    pool_size: Option<u32>,
    mail: &MailConfig,
) -> anyhow::Result<()> {
    crate::cmd::log_pooler(&runtime);
    let pool = work_pool(url, &runtime, pool_size).await?;
    let registry = registry(mailer(&pool, mail)?);
    let runtime = Runtime::new(pool.clone(), registry, runtime)?;
    runtime
        .run(crate::signal::shutdown_signal())
        .await
        .context("the worker could not start (is the database migrated? run `docket migrate`)")?;
    crate::cmd::close_pool(pool).await;
    Ok(())
}
