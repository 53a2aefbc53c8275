//! Shutdown signals: the first SIGTERM or SIGINT starts a graceful shutdown; a second one
//! exits at once (running jobs are then rescued when the worker's lease lapses).

use tokio::signal::unix::{signal, SignalKind};
use tracing::warn;

/// Completes on the first SIGTERM or SIGINT, and arms the second-signal fast exit.
pub(crate) async fn shutdown_signal() {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
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
