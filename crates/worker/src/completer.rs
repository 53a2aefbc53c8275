//! The completer: the only writer of outcomes. It gathers outcomes for a few milliseconds
//! (or until a batch is full) and writes them in one fenced statement. A failed write is
//! retried with backoff, so no outcome is lost to a database error (and the database's
//! refusal of one row never holds up the others: `apply_outcomes` isolates it). At
//! shutdown it drains every outcome before it returns; once the runtime says the jobs are
//! done (or stopped), writing is bounded by the flush limit.

use std::collections::HashMap;
use std::time::Duration;

use docket_queue::{AttemptOutcome, ErrorChain, JobId, JobState};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};
use uuid::Uuid;

use crate::events;
use crate::executor::Finished;
use crate::metrics;
use crate::retry::RetryDelay;

/// Writes outcomes in batches.
pub(crate) struct Completer {
    pub(crate) pool: PgPool,
    pub(crate) worker_id: Uuid,
    pub(crate) batch: usize,
    pub(crate) flush_interval: Duration,
    /// Cancelled at shutdown once running jobs have finished or been stopped: from then on,
    /// writing is bounded by `flush_limit`. Not earlier: the hand-backs of stopped jobs
    /// arrive after the drain, and must still land.
    pub(crate) bounded: CancellationToken,
    /// How long, from `bounded`, writes keep being tried. Past it, the jobs stay
    /// `processing` under this worker; the reconciler's last pass or, failing that, the
    /// rescuer frees them.
    pub(crate) flush_limit: Duration,
}

impl Completer {
    /// Runs until every sender is dropped and every outcome is written (or, at shutdown,
    /// given up on after `flush_limit`).
    pub(crate) async fn run(self, mut outcomes: mpsc::Receiver<Finished>) {
        let mut buffer: Vec<Finished> = Vec::with_capacity(self.batch);
        let mut give_up_at = None;
        loop {
            if outcomes.recv_many(&mut buffer, self.batch).await == 0 {
                return; // closed and drained
            }
            // Gather a little longer, so that a burst becomes one statement.
            let until = Instant::now() + self.flush_interval;
            while buffer.len() < self.batch {
                let room = self.batch - buffer.len();
                match tokio::time::timeout_at(until, outcomes.recv_many(&mut buffer, room)).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            self.flush(&mut buffer, &mut give_up_at).await;
        }
    }

    async fn flush(&self, buffer: &mut Vec<Finished>, give_up_at: &mut Option<Instant>) {
        let batch: Vec<AttemptOutcome> = buffer
            .iter()
            .map(|f| AttemptOutcome {
                id: f.id,
                attempt: f.attempt,
                token: f.token,
                outcome: f.outcome.clone(),
            })
            .collect();
        let mut retry = RetryDelay::new(Duration::from_millis(50), Duration::from_secs(5));
        let mut delay = Duration::ZERO;
        loop {
            if give_up_at.is_none() && self.bounded.is_cancelled() {
                *give_up_at = Some(Instant::now() + self.flush_limit);
            }
            let write = docket_queue::apply_outcomes(&self.pool, self.worker_id, &batch, None);
            // Unbounded while running (a database that is down comes back); bounded once
            // shutdown begins, also for a write already waiting (a lock, a hung server).
            let result = match *give_up_at {
                Some(at) => tokio::time::timeout_at(at, write).await.ok(),
                None => tokio::select! {
                    result = write => Some(result),
                    () = self.bounded.cancelled() => continue,
                },
            };
            match result {
                Some(Ok(applied)) => {
                    for (id, reason) in &applied.refused {
                        error!(
                            event = events::JOB_OUTCOME_REFUSED, job.id = %id, error.message = %reason,
                            "the database refused this outcome; recorded a failed attempt instead"
                        );
                    }
                    let states: HashMap<JobId, JobState> = applied.changed.into_iter().collect();
                    // Jobs their handlers completed in their own transactions are found
                    // finished: not fenced off.
                    let completed_in_tx = buffer
                        .iter()
                        .filter(|f| f.completed_in_tx && !states.contains_key(&f.id))
                        .count();
                    for finished in buffer.drain(..) {
                        report(&finished, states.get(&finished.id).copied());
                    }
                    let fenced = applied.fenced.len().saturating_sub(completed_in_tx);
                    if fenced > 0 {
                        metrics::jobs_fenced(fenced);
                    }
                    return;
                }
                Some(Err(err)) => {
                    error!(
                        event = events::WORKER_ERROR, outcomes = batch.len(),
                        error.message = %err, error.cause_chain = %ErrorChain(&err),
                        "writing outcomes failed; retrying"
                    );
                    delay = retry.after(&err);
                }
                None => {}
            }
            if give_up_at.is_some_and(|at| Instant::now() >= at) {
                let ids: Vec<String> = buffer.drain(..).map(|f| f.id.to_string()).collect();
                error!(
                    event = events::WORKER_ERROR, jobs = %ids.join(","),
                    "gave up writing outcomes at shutdown; these jobs are handed back or rescued"
                );
                return;
            }
            tokio::time::sleep(delay).await;
        }
    }
}

/// Logs and counts one written outcome; `None` means it was fenced off.
fn report(finished: &Finished, state: Option<JobState>) {
    let Finished {
        id,
        attempt,
        queue,
        kind,
        duration,
        outcome,
        completed_in_tx,
        ..
    } = finished;
    let duration_ms = duration.as_secs_f64() * 1000.0;
    // Completed in the handler's committed transaction: the outcome here was a no-op.
    let state = state.or(completed_in_tx.then_some(JobState::Completed));
    let Some(state) = state else {
        warn!(
            event = events::JOB_FENCED, job.id = %id, job.kind = %kind, job.queue = %queue,
            job.attempt = attempt, "outcome dropped: this worker no longer holds the job"
        );
        return;
    };
    metrics::job_finished(queue, kind, state.as_str(), *duration);
    let error = match outcome {
        docket_queue::Outcome::Retry { error, .. }
        | docket_queue::Outcome::DeadLetter { error, .. } => error.as_str(),
        _ => "",
    };
    match state {
        JobState::Completed => debug!(
            event = events::JOB_COMPLETED, job.id = %id, job.kind = %kind, job.queue = %queue,
            job.attempt = attempt, duration_ms, "job completed"
        ),
        JobState::Retrying if matches!(outcome, docket_queue::Outcome::Retry { .. }) => info!(
            event = events::JOB_RETRYING, job.id = %id, job.kind = %kind, job.queue = %queue,
            job.attempt = attempt, duration_ms, error.message = error, "job failed; will retry"
        ),
        JobState::DeadLetter => warn!(
            event = events::JOB_DEAD_LETTER, job.id = %id, job.kind = %kind, job.queue = %queue,
            job.attempt = attempt, duration_ms, error.message = error, "job dead-lettered"
        ),
        JobState::Cancelled => info!(
            event = events::JOB_CANCELLED, job.id = %id, job.kind = %kind, job.queue = %queue,
            job.attempt = attempt, duration_ms, "job cancelled"
        ),
        _ => debug!(
            event = events::JOB_SNOOZED, job.id = %id, job.kind = %kind, job.queue = %queue,
            job.attempt = attempt, state = %state, "job handed back without spending the attempt"
        ),
    }
}
