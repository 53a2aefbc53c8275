//! LISTEN on `docket_jobs` over a dedicated connection and wake the producer of the queue
//! each notification names. When the connection drops it reconnects with backoff and
//! wakes every producer, so polling covers whatever was missed in between.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use docket_queue::ErrorChain;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use crate::events;
use crate::retry::RetryDelay;

/// The channel `docket.enqueue` notifies, with the queue's name as payload.
pub const CHANNEL: &str = "docket_jobs";

/// Wakes producers on notifications.
pub(crate) struct Listener {
    /// A pool of one connection, for this listener alone.
    pub(crate) pool: PgPool,
    /// Each queue's producer wake-up.
    pub(crate) queues: HashMap<String, Arc<Notify>>,
}

impl Listener {
    pub(crate) async fn run(self, stop: CancellationToken) {
        let mut retry = RetryDelay::new(Duration::from_millis(200), Duration::from_millis(6400));
        while !stop.is_cancelled() {
            let backoff = match self.listen(&stop).await {
                Ok(()) => return,
                Err(err) => {
                    error!(
                        event = events::WORKER_ERROR, error.message = %err,
                        error.cause_chain = %ErrorChain(&err), "LISTEN connection failed; reconnecting"
                    );
                    retry.after(&docket_queue::Error::Database(err))
                }
            };
            self.wake_all();
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
        }
    }

    /// Listens until stopped (`Ok`) or the connection cannot be (re)made (`Err`).
    async fn listen(&self, stop: &CancellationToken) -> sqlx::Result<()> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(CHANNEL).await?;
        // Anything enqueued while we were not listening is found by this round of claims.
        self.wake_all();
        loop {
            let notification = tokio::select! {
                () = stop.cancelled() => return Ok(()),
                received = listener.try_recv() => received?,
            };
            match notification {
                Some(notification) => {
                    if let Some(wake) = self.queues.get(notification.payload()) {
                        wake.notify_one();
                    }
                }
                None => {
                    warn!(
                        event = events::WORKER_ERROR,
                        "LISTEN connection lost; reconnecting"
                    );
                    self.wake_all();
                }
            }
        }
    }

    fn wake_all(&self) {
        for wake in self.queues.values() {
            wake.notify_one();
        }
    }
}
