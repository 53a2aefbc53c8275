//! `docket serve`: one process with everything. Start-up order: connect, migrate, validate,
//! then open the HTTP listener and start the workers; any failure exits non-zero before a
//! port is opened. Shutdown order: the listener first, then the workers.

use std::time::Duration;

use anyhow::Context;
use docket_http::AppState;
use docket_worker::Runtime;
use metrics_exporter_prometheus::PrometheusBuilder;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::cmd::{connect, worker::work_pool};
use crate::config::Config;

/// How long requests in flight get once the listener stops.
const HTTP_DRAIN: Duration = Duration::from_secs(5);

pub(crate) async fn run(
    config: &Config,
    queues: Option<&str>,
    concurrency: Option<usize>,
) -> anyhow::Result<()> {
    config.check_secrets()?;
    // Installed before anything registers: a signal during start-up shuts down gracefully.
    let shutdown = crate::signal::shutdown_signal();
    let runtime_config = config.runtime_with(queues, concurrency)?;
    let url = config.require_database()?;
    if docket_queue::pooler::mode() == docket_queue::Pooler::Transaction {
        // Behind a transaction-mode pooler migrations cannot run (they hold a session): the
        // database must already be current.
        let status =
            docket_queue::workers::migration_status(docket_queue::pooled(&connect(url).await?))
                .await?;
        if !status.is_current() {
            crate::cmd::refuse_through_pooler("migrate")?;
        }
    } else {
        docket_queue::migrate(&connect(url).await?)
            .await
            .context("applying migrations")?;
    }
    crate::cmd::log_pooler(&runtime_config);
    let pool = work_pool(url, &runtime_config, config.pool_size).await?;
    let mailer = crate::cmd::worker::mailer(&pool, &config.mail)?;
    let registry = crate::cmd::worker::registry(mailer.clone());
    let runtime = Runtime::new(pool.clone(), registry, runtime_config)?;
    let metrics = PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;
    let state = AppState::new(
        pool.clone(),
        config.cron_secret.clone(),
        Some(metrics),
        config.health.clone(),
    )
    .with_mailer(mailer)
    .with_ops(config.ops_secret.clone(), config.check.clone());
    let listener = TcpListener::bind(config.http_addr).await.with_context(|| {
        format!(
            "cannot listen on {} ({})",
            config.http_addr,
            docket_settings::HTTP_ADDR
        )
    })?;
    info!(event = docket_queue::telemetry::event::HTTP_LISTENING, addr = %listener.local_addr()?, "HTTP listening");

    let stop_http = CancellationToken::new();
    let stop_workers = CancellationToken::new();
    let http = tokio::spawn(docket_http::serve(
        listener,
        state,
        config.http_limits,
        stop_http.clone().cancelled_owned(),
    ));
    let workers = tokio::spawn(runtime.run(stop_workers.clone().cancelled_owned()));

    shutdown.await;
    stop_http.cancel();
    match tokio::time::timeout(HTTP_DRAIN, http).await {
        Ok(result) => result?.context("HTTP server")?,
        Err(_) => tracing::warn!(
            event = docket_queue::telemetry::event::HTTP_DRAIN_TIMEOUT,
            "requests still in flight were dropped"
        ),
    }
    info!(
        event = docket_queue::telemetry::event::HTTP_STOPPED,
        "HTTP stopped; stopping workers"
    );
    stop_workers.cancel();
    workers.await??;
    crate::cmd::close_pool(pool).await;
    Ok(())
}
