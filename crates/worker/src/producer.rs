//! One producer per queue: when woken (a notification, a job finishing, or the poll
//! timer), it claims `min(free slots, claim batch)` jobs in one statement and hands each
//! to an executor task. It never decides outcomes.

use std::sync::Arc;
use std::time::Duration;

use docket_queue::{ClaimRequest, ErrorChain};
use sqlx::PgPool;
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, warn};
use uuid::Uuid;

use crate::events;
use crate::executor::{Executor, Finished};
use crate::heartbeat::Lease;

/// How long a producer with few free slots waits for more before it claims.
const CLAIM_COOLDOWN: Duration = Duration::from_millis(1);

/// A queue's producer.
pub(crate) struct Producer {
    pub(crate) pool: PgPool,
    pub(crate) queue: Arc<str>,
    pub(crate) kinds: Arc<[String]>,
    pub(crate) worker_id: Uuid,
    pub(crate) claim_batch: u32,
    pub(crate) poll_interval: Duration,
    /// This queue's concurrency, as a number.
    pub(crate) concurrency: usize,
    /// This queue's concurrency, as permits.
    pub(crate) slots: Arc<Semaphore>,
    /// The cap over all queues.
    pub(crate) global: Arc<Semaphore>,
    /// Notified by the listener and by finishing jobs.
    pub(crate) wake: Arc<Notify>,
    pub(crate) executor: Arc<Executor>,
    pub(crate) completer: mpsc::Sender<Finished>,
    /// Where job tasks are tracked, so shutdown can wait for them.
    pub(crate) jobs: TaskTracker,
    /// The worker's lease: no claims while it is not held.
    pub(crate) lease: Arc<Lease>,
}

impl Producer {
    /// Claims and dispatches until `stop` is cancelled.
    pub(crate) async fn run(self, stop: CancellationToken) {
        let mut failures = 0u32;
        while !stop.is_cancelled() {
            self.gather_free_slots().await;
            let free = self
                .slots
                .available_permits()
                .min(self.global.available_permits())
                .min(self.claim_batch as usize);
            let mut full_batch = false;
            if free > 0 && self.lease.is_held() {
                // A claim stuck on the database (a lock, a hung server) must not hold up
                // shutdown. One cut short after it committed leaves its jobs `processing`
                // under this worker, which deregisters at shutdown: the rescuer frees them.
                let claimed = tokio::select! {
                    claimed = self.claim_and_dispatch(free) => claimed,
                    () = stop.cancelled() => break,
                };
                match claimed {
                    Ok(claimed) => {
                        failures = 0;
                        full_batch = claimed == free;
                    }
                    Err(err) => {
                        failures += 1;
                        error!(
                            event = events::WORKER_ERROR, job.queue = %self.queue,
                            error.message = %err, error.cause_chain = %ErrorChain(&err),
                            "claim failed; retrying"
                        );
                        let backoff = Duration::from_millis(100 * 2u64.pow(failures.min(6)));
                        tokio::select! {
                            () = stop.cancelled() => break,
                            () = tokio::time::sleep(backoff) => continue,
                        }
                    }
                }
            }
            if full_batch {
                // A full batch suggests more is ready: claim again at once.
                continue;
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.poll_interval) => {}
            }
        }
    }

    /// When only a few slots are free (a job or two just finished), waits a moment for
    /// more to free up, so that one claim takes a batch instead of one round trip per
    /// finished job. An idle producer (most slots free) claims at once.
    async fn gather_free_slots(&self) {
        let enough = (self.concurrency / 2).clamp(1, self.claim_batch as usize);
        let deadline = tokio::time::Instant::now() + CLAIM_COOLDOWN;
        // Each finishing job notifies `wake`; stop waiting once enough slots are free.
        while self.slots.available_permits() < enough {
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep_until(deadline) => return,
            }
        }
    }

    async fn claim_and_dispatch(&self, free: usize) -> docket_queue::Result<usize> {
        let request = ClaimRequest {
            queue: &self.queue,
            kinds: Some(&self.kinds),
            worker_id: self.worker_id,
            limit: u32::try_from(free).unwrap_or(u32::MAX),
            now: None,
        };
        let claimed = docket_queue::claim(&self.pool, &request).await?;
        for job in &claimed.expired {
            warn!(
                event = events::JOB_DEAD_LETTER, job.id = %job.id, job.kind = %job.kind,
                job.queue = %job.queue, job.attempt = job.attempt, reason = "expired",
                "job expired before it could start"
            );
        }
        let count = claimed.jobs.len();
        for job in claimed.jobs {
            // Our queue's permits are ours alone, so these are free; the global ones may
            // have gone to another queue's producer meanwhile, and then we wait for one.
            let (Ok(slot), Ok(global)) = (
                self.slots.clone().acquire_owned().await,
                self.global.clone().acquire_owned().await,
            ) else {
                // The semaphores are never closed.
                break;
            };
            let executor = self.executor.clone();
            let queue = self.queue.clone();
            let completer = self.completer.clone();
            let wake = self.wake.clone();
            self.jobs.spawn(async move {
                executor
                    .execute(job, queue, (slot, global), completer, wake)
                    .await;
            });
        }
        Ok(count)
    }
}
