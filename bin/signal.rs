//! Shutdown signals: the first SIGTERM or SIGINT starts a graceful shutdown; a second one
//! exits at once (running jobs are then rescued when the worker's lease lapses).

use tokio::signal::unix::{signal, SignalKind};
use tracing::warn;

/// Completes on the first SIGTERM or SIGINT, and arms the second-signal fast exit. The
/// handlers are installed when this is called, not when the future is first polled: a
/// signal that comes while the worker is still starting (registered, not yet waiting) is
/// then a graceful shutdown, not the default action that kills the process before it
/// deregisters.
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move { wait_for_signals(handlers).await }
}

type Handlers = (
    std::io::Result<tokio::signal::unix::Signal>,
    std::io::Result<tokio::signal::unix::Signal>,
);

async fn wait_for_signals(handlers: Handlers) {
    let (Ok(mut term), Ok(mut int)) = handlers else {
        warn!(
            event = docket_queue::telemetry::event::WORKER_ERROR,
            "cannot install signal handlers; stop with SIGKILL"
        );
        return std::future::pending().await;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    warn!(
        event = docket_queue::telemetry::event::SHUTDOWN_SIGNAL,
        signal = name,
        "shutting down gracefully; signal again to exit at once"
    );
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        warn!(
            event = docket_queue::telemetry::event::SHUTDOWN_FORCED,
            "second signal: exiting now; running jobs will be rescued by lease"
        );
        std::process::exit(130);
    });
}
