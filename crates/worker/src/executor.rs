//! Runs one job: decode its payload, run the handler in a task of its own (so a panic is
//! caught), enforce its timeout, honour cancellation, and turn what happened into an
//! [`Outcome`] for the completer. The executor never writes SQL.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use docket_queue::{Job, JobId, Outcome};
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::events;
use crate::handler::{JobContext, JobError};
use crate::metrics;
use crate::registry::Registry;

/// A job whose attempt is over, on its way to the completer.
pub(crate) struct Finished {
    pub(crate) id: JobId,
    pub(crate) attempt: i32,
    pub(crate) queue: Arc<str>,
    pub(crate) kind: String,
    pub(crate) outcome: Outcome,
    pub(crate) duration: Duration,
}

/// The jobs running in this process, by id, with the token an operator's cancel fires.
#[derive(Default)]
pub(crate) struct Running {
    jobs: Mutex<std::collections::HashMap<JobId, CancellationToken>>,
}

impl Running {
    fn insert(&self, id: JobId) -> CancellationToken {
        let token = CancellationToken::new();
        self.lock().insert(id, token.clone());
        token
    }

    fn remove(&self, id: JobId) {
        self.lock().remove(&id);
    }

    /// Fires the cancel of each listed job running here; returns how many there were.
    pub(crate) fn cancel(&self, ids: &[JobId]) -> usize {
        let jobs = self.lock();
        ids.iter()
            .filter_map(|id| jobs.get(id))
            .inspect(|token| token.cancel())
            .count()
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<JobId, CancellationToken>> {
        self.jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What the executor needs besides the job.
pub(crate) struct Executor {
    pub(crate) registry: Arc<Registry>,
    pub(crate) running: Arc<Running>,
    /// Cancelled at the shutdown deadline: running jobs stop and are handed back.
    pub(crate) hard_stop: CancellationToken,
}

/// How a run ended, before it is turned into an outcome.
enum Ended {
    Returned(Result<(), JobError>),
    Panicked(String),
    TimedOut(Duration),
    CancelledByOperator,
    Released,
}

impl Executor {
    /// Runs `job` and sends its outcome to the completer. The permits are held until the
    /// outcome is handed over; then the producer is woken to claim more.
    pub(crate) async fn execute(
        &self,
        job: Job,
        queue: Arc<str>,
        permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
        completer: mpsc::Sender<Finished>,
        wake_producer: Arc<Notify>,
    ) {
        let started = Instant::now();
        debug!(
            event = events::JOB_STARTED,
            job.id = %job.id, job.kind = %job.kind, job.queue = %queue, job.attempt = job.attempt,
            "job started"
        );
        metrics::job_started(&queue, &job.kind);
        let outcome = self.run(&job, &queue).await;
        let finished = Finished {
            id: job.id,
            attempt: job.attempt,
            queue,
            kind: job.kind,
            outcome,
            duration: started.elapsed(),
        };
        if completer.send(finished).await.is_err() {
            // Only when the completer is gone, which the runtime prevents until every
            // executor is done; the lease covers it anyway: the job will be rescued.
            tracing::error!(event = events::WORKER_ERROR, job.id = %job.id, "completer is gone; job left for the rescuer");
        }
        drop(permits);
        wake_producer.notify_one();
    }

    async fn run(&self, job: &Job, queue: &Arc<str>) -> Outcome {
        let Some(entry) = self.registry.get(&job.kind) else {
            // The claim asks only for registered kinds, so this is a bug, not bad input.
            return Outcome::Snooze {
                delay: Duration::from_secs(60),
            };
        };
        let options = &entry.options;
        let deadline = Arc::new(Mutex::new(Instant::now() + options.timeout));
        let ctx = JobContext {
            id: job.id,
            queue: queue.clone(),
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            cancel: CancellationToken::new(),
            deadline: deadline.clone(),
        };
        let future = match (entry.start)(job.payload.clone(), ctx.clone()) {
            Ok(future) => future,
            Err(detail) => {
                return Outcome::DeadLetter {
                    reason: format!("malformed: {detail}"),
                    error: format!("payload does not decode into {}: {detail}", job.kind),
                }
            }
        };
        let operator = self.running.insert(job.id);
        let mut task = tokio::spawn(future);
        let ended = loop {
            let wake_at = *deadline
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            tokio::select! {
                joined = &mut task => break match joined {
                    Ok(result) => Ended::Returned(result),
                    Err(err) if err.is_panic() => Ended::Panicked(panic_message(err.into_panic())),
                    Err(_) => Ended::Released,
                },
                () = tokio::time::sleep_until(wake_at) => {
                    let current = *deadline.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    if current > Instant::now() {
                        continue; // the job extended its timeout
                    }
                    break Ended::TimedOut(options.timeout);
                }
                () = operator.cancelled() => break Ended::CancelledByOperator,
                () = self.hard_stop.cancelled() => break Ended::Released,
            }
        };
        self.running.remove(job.id);
        if !matches!(ended, Ended::Returned(_) | Ended::Panicked(_)) {
            ctx.cancel.cancel();
            task.abort();
        }
        match ended {
            Ended::Returned(Ok(())) => Outcome::Complete,
            Ended::Returned(Err(JobError::Retry { error, delay })) => Outcome::Retry {
                error: error_chain(&*error),
                delay: delay.unwrap_or_else(|| options.backoff.delay(job.id, job.attempt)),
            },
            Ended::Returned(Err(JobError::DeadLetter { reason, error })) => Outcome::DeadLetter {
                reason,
                error: error_chain(&*error),
            },
            Ended::Returned(Err(JobError::Snooze(delay))) => Outcome::Snooze { delay },
            Ended::Panicked(message) => Outcome::Retry {
                error: format!("panicked: {message}"),
                delay: options.backoff.delay(job.id, job.attempt),
            },
            Ended::TimedOut(timeout) => Outcome::Retry {
                error: format!("timed out after {timeout:?}"),
                delay: options.backoff.delay(job.id, job.attempt),
            },
            Ended::CancelledByOperator => Outcome::Cancel,
            // Handed back without spending the attempt.
            Ended::Released => Outcome::Snooze {
                delay: Duration::ZERO,
            },
        }
    }
}

fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    docket_queue::ErrorChain(error).to_string()
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with a non-text payload".to_owned())
}
