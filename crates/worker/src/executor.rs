//! Runs one job: decode its payload, run the handler in a task of its own (so a panic is
//! caught), enforce its timeout, honour cancellation, and turn what happened into an
//! [`Outcome`] for the completer. The executor never writes SQL.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use docket_queue::{Job, JobId, Outcome};
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, Instrument as _};
use uuid::Uuid;

use crate::events;
use crate::handler::{JobContext, JobError};
use crate::lease::{HeldJob, Holdings, Lease, StopReason, StopSwitch, STOP_GRACE};
use crate::metrics;
use crate::pace::Pace;
use crate::registry::{HandlerFuture, Registry};

/// A job whose attempt is over, on its way to the completer.
pub(crate) struct Finished {
    pub(crate) id: JobId,
    pub(crate) attempt: i32,
    /// The claim's token: the outcome's fence.
    pub(crate) token: Uuid,
    pub(crate) queue: Arc<str>,
    pub(crate) kind: String,
    pub(crate) outcome: Outcome,
    pub(crate) duration: Duration,
    /// The handler completed the job in its own transaction ([`JobContext::complete_in`]):
    /// this outcome finds it no longer processing, which is expected, not a lost lease.
    pub(crate) completed_in_tx: bool,
    /// The holding, ended (dropped) once the outcome is written or given up on.
    pub(crate) _held: HeldJob,
}

/// Runs jobs and hands their outcomes to the completer.
pub(crate) struct Executor {
    pub(crate) registry: Arc<Registry>,
    /// Cancelled at the shutdown deadline: running jobs stop and are handed back.
    pub(crate) hard_stop: CancellationToken,
    /// Where outcomes go. The channel closes once every executor is gone.
    pub(crate) completer: mpsc::Sender<Finished>,
    /// The claims in flight and the jobs held.
    pub(crate) holdings: Arc<Holdings>,
    /// Where job tasks are tracked, so shutdown can wait for them.
    pub(crate) jobs: TaskTracker,
    /// This worker's lease: a handler is polled only while it provably holds.
    pub(crate) lease: Arc<Lease>,
    /// This worker, for outcomes a handler writes itself ([`JobContext::complete_in`]).
    pub(crate) worker_id: uuid::Uuid,
}

/// How a run ended, before it is turned into an outcome.
enum Ended {
    Returned(Result<(), JobError>),
    Malformed(String),
    Panicked(String),
    TimedOut(Duration),
    CancelledByOperator,
    Released,
}

impl Executor {
    /// Runs `job` in a task of its own (tracked for shutdown).
    pub(crate) fn spawn(
        self: &Arc<Self>,
        job: Job,
        held: HeldJob,
        queue: Arc<str>,
        permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
        producer: (Arc<Notify>, Arc<Pace>),
    ) {
        let executor = self.clone();
        self.jobs.spawn(async move {
            executor.execute(job, held, queue, permits, producer).await;
        });
    }

    /// Runs `job` and sends its outcome to the completer. The permits are held until the
    /// outcome is handed over; then the producer is told how long the slot was held (its
    /// [`Pace`]) and woken to claim more.
    pub(crate) async fn execute(
        &self,
        job: Job,
        held: HeldJob,
        queue: Arc<str>,
        permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
        (wake_producer, pace): (Arc<Notify>, Arc<Pace>),
    ) {
        let started = Instant::now();
        debug!(
            event = events::JOB_STARTED,
            job.id = %job.id, job.kind = %job.kind, job.queue = %queue, job.attempt = job.attempt,
            "job started"
        );
        metrics::job_started(&queue, &job.kind);
        let completed_in_tx = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let span = attempt_span(&job, &queue);
        let outcome = self
            .run(&job, &queue, &held.stop, completed_in_tx.clone())
            .instrument(span.clone())
            .await;
        record_outcome(&span, &outcome);
        drop(span);
        let completed_in_tx = completed_in_tx.load(std::sync::atomic::Ordering::Acquire);
        self.send(
            job,
            held,
            queue,
            outcome,
            started.elapsed(),
            completed_in_tx,
        )
        .await;
        drop(permits);
        pace.job_finished(started.elapsed());
        wake_producer.notify_one();
    }

    /// Hands a claimed job that never started (it was prefetched) to the completer with
    /// `outcome`.
    pub(crate) async fn finish_unstarted(
        &self,
        job: Job,
        held: HeldJob,
        queue: Arc<str>,
        outcome: Outcome,
    ) {
        self.send(job, held, queue, outcome, Duration::ZERO, false)
            .await;
    }

    async fn send(
        &self,
        job: Job,
        held: HeldJob,
        queue: Arc<str>,
        outcome: Outcome,
        duration: Duration,
        completed_in_tx: bool,
    ) {
        held.stop.end();
        let Some(token) = job.lease_token else {
            // A claimed job always carries its claim's token.
            return;
        };
        let id = job.id;
        let finished = Finished {
            id,
            attempt: job.attempt,
            token,
            queue,
            kind: job.kind,
            outcome,
            duration,
            completed_in_tx,
            _held: held,
        };
        if self.completer.send(finished).await.is_err() {
            // Only when the completer is gone, which the runtime prevents until every
            // executor is done. The holding ends with the message: the reconciler hands
            // the job back.
            tracing::error!(event = events::WORKER_ERROR, job.id = %id, "completer is gone; the job will be handed back");
        }
    }

    async fn run(
        &self,
        job: &Job,
        queue: &Arc<str>,
        stop: &StopSwitch,
        completed_in_tx: Arc<std::sync::atomic::AtomicBool>,
    ) -> Outcome {
        let Some(entry) = self.registry.get(&job.kind).cloned() else {
            // The claim asks only for registered kinds, so this is a bug, not bad input.
            return Outcome::Snooze {
                delay: Duration::from_secs(60),
            };
        };
        let options = entry.options.clone();
        let options = &options;
        if stop.token.is_cancelled() {
            // Stopped before it started (a claim that crossed a release of every run): the
            // handler never runs.
            let ended = match stop.reason() {
                StopReason::Cancel => Ended::CancelledByOperator,
                StopReason::Release => Ended::Released,
            };
            return outcome_of(ended, job, &options.backoff);
        }
        let deadline = Arc::new(Mutex::new(Instant::now() + options.timeout));
        let ctx = JobContext {
            id: job.id,
            queue: queue.clone(),
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            run_at: job.run_at,
            expires_at: job.expires_at,
            replays: job.replays,
            cancel: CancellationToken::new(),
            deadline: deadline.clone(),
            worker_id: self.worker_id,
            token: job.lease_token,
            completed_in_tx,
        };
        // Decoding and the handler's synchronous part run inside the task too, so that a
        // panic there (a custom `Deserialize`, a closure that panics before returning its
        // future) is caught like any other.
        let payload = job.payload.clone();
        let task_ctx = ctx.clone();
        let lease = self.lease.clone();
        let term = lease.term();
        // The handler's task runs in the attempt's span (and so do its log lines).
        let mut task = tokio::spawn(
            async move {
                match (entry.start)(payload, task_ctx) {
                    Ok(future) => Ok(WhileLeaseHeld {
                        lease,
                        term,
                        run: future,
                    }
                    .await),
                    Err(detail) => Err(detail),
                }
            }
            .in_current_span(),
        );
        let ended = loop {
            let wake_at = *deadline
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            tokio::select! {
                joined = &mut task => break match joined {
                    Ok(Ok(Some(result))) => Ended::Returned(result),
                    // The lease could not be proven: the handler was not polled again.
                    Ok(Ok(None)) => Ended::Released,
                    Ok(Err(detail)) => Ended::Malformed(detail),
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
                () = stop.token.cancelled() => break match stop.reason() {
                    StopReason::Cancel => Ended::CancelledByOperator,
                    StopReason::Release => Ended::Released,
                },
                () = self.hard_stop.cancelled() => break Ended::Released,
            }
        };
        if !matches!(
            ended,
            Ended::Returned(_) | Ended::Malformed(_) | Ended::Panicked(_)
        ) {
            // Stopped from outside: tell the handler, give it a moment to wind down, then
            // drop it. Work it finished in that moment counts; anything else is the stop.
            ctx.cancel.cancel();
            if let Ok(Ok(Ok(Some(Ok(()))))) = tokio::time::timeout(STOP_GRACE, &mut task).await {
                return Outcome::Complete;
            }
            task.abort();
        }
        outcome_of(ended, job, &options.backoff)
    }
}

/// The attempt's span (OpenTelemetry messaging conventions: a `process` of a message
/// from the queue): a child of the enqueue for the first attempt, a new trace linked to it
/// for a retry ([`docket_queue::trace::attach_attempt`]).
fn attempt_span(job: &Job, queue: &str) -> tracing::Span {
    let span = tracing::info_span!(
        target: docket_queue::trace::TARGET,
        "docket.attempt",
        otel.name = %format_args!("process {queue}"),
        otel.kind = "consumer",
        messaging.system = "docket",
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = %queue,
        messaging.message.id = %job.id,
        docket.job.kind = %job.kind,
        docket.job.attempt = job.attempt,
        docket.job.outcome = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
    );
    if !span.is_disabled() {
        let trace = job.trace_context.clone().unwrap_or_default();
        docket_queue::trace::attach_attempt(&span, &trace, job.attempt);
    }
    span
}

/// Writes the attempt's outcome on its span: an error status for a failed attempt.
fn record_outcome(span: &tracing::Span, outcome: &Outcome) {
    if span.is_disabled() {
        return;
    }
    let (name, error) = match outcome {
        Outcome::Complete => ("completed", None),
        Outcome::Retry { error, .. } => ("failed", Some(error)),
        Outcome::DeadLetter { error, .. } => ("dead_letter", Some(error)),
        Outcome::Snooze { .. } => ("snoozed", None),
        Outcome::Cancel => ("cancelled", None),
    };
    span.record("docket.job.outcome", name);
    if let Some(error) = error {
        span.record("otel.status_description", error.as_str());
    }
}

/// A handler polled only while this worker provably holds the lease its run started under
/// (that term's last confirmed heartbeat was sent less than a lease ago, on the monotonic
/// clock). A process that was stopped past its lease (SIGSTOP, a paused VM, starvation)
/// may wake with the handler's timers due before the heartbeat has run, and a heartbeat
/// after the stall renews the lease for new runs only: the handler does not take another
/// step, since another worker may already run the job. Ends with `None` then.
struct WhileLeaseHeld {
    lease: Arc<Lease>,
    /// The lease's term when the run started.
    term: u64,
    run: HandlerFuture,
}

impl Future for WhileLeaseHeld {
    type Output = Option<Result<(), JobError>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if !self.lease.holds_for(self.term) {
            return Poll::Ready(None);
        }
        self.run.as_mut().poll(cx).map(Some)
    }
}

/// What an ended run means for the job: the one mapping from "how it ended" to an outcome.
/// Pure, so that each case is a unit test.
fn outcome_of(ended: Ended, job: &Job, backoff: &docket_queue::Backoff) -> Outcome {
    let retry_delay = || backoff.delay(job.id, job.attempt);
    match ended {
        Ended::Malformed(detail) => Outcome::DeadLetter {
            reason: format!("malformed: {detail}"),
            error: format!("payload does not decode into {}: {detail}", job.kind),
        },
        Ended::Returned(Ok(())) => Outcome::Complete,
        Ended::Returned(Err(JobError::Retry { error, delay })) => Outcome::Retry {
            error: error_chain(&*error),
            delay: delay.unwrap_or_else(retry_delay),
        },
        Ended::Returned(Err(JobError::DeadLetter { reason, error })) => Outcome::DeadLetter {
            reason,
            error: error_chain(&*error),
        },
        Ended::Returned(Err(JobError::Snooze(delay))) => Outcome::Snooze { delay },
        Ended::Panicked(message) => Outcome::Retry {
            error: format!("panicked: {message}"),
            delay: retry_delay(),
        },
        Ended::TimedOut(timeout) => Outcome::Retry {
            error: format!("timed out after {timeout:?}"),
            delay: retry_delay(),
        },
        Ended::CancelledByOperator => Outcome::Cancel,
        // Handed back without spending the attempt.
        Ended::Released => Outcome::Snooze {
            delay: Duration::ZERO,
        },
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

#[cfg(test)]
mod tests {
    use super::*;
    use docket_queue::{Backoff, JobState};

    fn job() -> Job {
        let now = chrono::Utc::now();
        Job {
            id: JobId(uuid::Uuid::now_v7()),
            queue: "default".into(),
            kind: "test.kind".into(),
            payload: serde_json::json!({}),
            state: JobState::Processing,
            priority: 0,
            run_at: now,
            attempt: 2,
            max_attempts: 25,
            unique_key: None,
            expires_at: None,
            last_error: None,
            errors: vec![],
            dead_letter_reason: None,
            locked_by: None,
            lease_token: None,
            batch_id: None,
            group_key: None,
            parked_at: None,
            cancel_requested_at: None,
            replays: 0,
            created_at: now,
            attempted_at: Some(now),
            finished_at: None,
            trace_context: None,
        }
    }

    #[test]
    fn each_way_a_run_ends_maps_to_its_outcome() {
        let (job, backoff) = (job(), Backoff::default());
        let backoff_delay = backoff.delay(job.id, job.attempt);
        let outcome = |ended| outcome_of(ended, &job, &backoff);
        assert_eq!(outcome(Ended::Returned(Ok(()))), Outcome::Complete);
        assert_eq!(
            outcome(Ended::Returned(Err(JobError::from("boom")))),
            Outcome::Retry {
                error: "boom".into(),
                delay: backoff_delay
            }
        );
        assert_eq!(
            outcome(Ended::Returned(Err(JobError::retry_after(
                "later",
                Duration::from_secs(7)
            )))),
            Outcome::Retry {
                error: "later".into(),
                delay: Duration::from_secs(7)
            }
        );
        assert_eq!(
            outcome(Ended::Returned(Err(JobError::permanent("no")))),
            Outcome::DeadLetter {
                reason: "permanent".into(),
                error: "no".into()
            }
        );
        assert_eq!(
            outcome(Ended::Returned(Err(JobError::Snooze(Duration::from_secs(
                3
            ))))),
            Outcome::Snooze {
                delay: Duration::from_secs(3)
            }
        );
        assert_eq!(
            outcome(Ended::Malformed("missing field `to`".into())),
            Outcome::DeadLetter {
                reason: "malformed: missing field `to`".into(),
                error: "payload does not decode into test.kind: missing field `to`".into(),
            }
        );
        assert_eq!(
            outcome(Ended::Panicked("oops".into())),
            Outcome::Retry {
                error: "panicked: oops".into(),
                delay: backoff_delay
            }
        );
        assert_eq!(
            outcome(Ended::TimedOut(Duration::from_secs(30))),
            Outcome::Retry {
                error: "timed out after 30s".into(),
                delay: backoff_delay
            }
        );
        assert_eq!(outcome(Ended::CancelledByOperator), Outcome::Cancel);
        assert_eq!(
            outcome(Ended::Released),
            Outcome::Snooze {
                delay: Duration::ZERO
            }
        );
    }
}
