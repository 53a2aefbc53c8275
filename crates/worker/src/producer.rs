//! One producer per queue: when woken (a notification, a job finishing, or the poll
//! timer), it takes the free slots first (this queue's and the global cap's), claims at
//! most that many jobs in one statement and hands each to an executor task with its slots.
//! It also claims jobs ahead of its free slots (its look-ahead), which wait here for slots,
//! so that one claim serves many finishing jobs: by default as many as slots free up
//! during one claim's round trip (`pace`: none for long jobs, so that a job never waits
//! `processing` here for longer than a few milliseconds), or a fixed number (0: none, and
//! every claimed job starts at once). A prefetched job that is cancelled, released or past
//! its expiry before a slot frees is finished unstarted. It never decides outcomes.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use docket_queue::{ClaimCursor, ClaimRequest, ErrorChain, GroupCursor, Job, Outcome};
use sqlx::PgPool;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::error;
use uuid::Uuid;

use crate::controls::{GroupedQueues, PausedQueues};
use crate::events;
use crate::executor::Executor;
use crate::lease::{HeldJob, Lease, StopReason};
use crate::metrics;
use crate::pace::{Pace, STALE_AFTER, WAIT_BOUND};
use crate::retry::RetryDelay;
use crate::Prefetch;
use docket_queue::rate_limit::{RateLimit, Take};

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
    /// This queue's slots and the global ones.
    pub(crate) slots: QueueSlots,
    /// Notified by the listener and by finishing jobs.
    pub(crate) wake: Arc<Notify>,
    /// Runs the claimed jobs (and knows what this worker holds).
    pub(crate) executor: Arc<Executor>,
    /// The worker's lease: no claims while it is not held.
    pub(crate) lease: Arc<Lease>,
    /// The paused queues: while this one is paused, nothing is claimed.
    pub(crate) paused: Arc<PausedQueues>,
    /// The queues with grouped jobs: this one, when among them, is claimed fairly.
    pub(crate) grouped: Arc<GroupedQueues>,
    /// Where this queue's fair claims stand among its groups.
    pub(crate) group_cursor: GroupCursor,
    /// Where this producer's plain claims have reached in the queue's order.
    pub(crate) claim_cursor: ClaimCursor,
    /// The queue's rate limit over every process: tokens are taken before the claims.
    /// Shared, so that a claim holds it while it borrows the producer mutably.
    pub(crate) rate: Option<Arc<RateLimit>>,
    /// Tokens taken from the rate limit and not yet spent on a claimed job.
    pub(crate) tokens: u32,
    /// Jobs claimed ahead of free slots: sized by `pace`, or at most a fixed number.
    pub(crate) prefetch: Prefetch,
    /// What this queue's jobs and claims have taken (for an auto prefetch).
    pub(crate) pace: Arc<Pace>,
    /// Since when prefetched jobs have been counted starting, and how many (the drain
    /// rate's window), while some wait.
    pub(crate) draining: Option<(Instant, usize)>,
    /// The look-ahead last recorded in its gauge.
    pub(crate) shown_ahead: Option<usize>,
    /// Jobs claimed ahead, in claim order, each waiting for a slot since its claim.
    pub(crate) prefetched: VecDeque<(Job, HeldJob, Instant)>,
}

/// A queue's concurrency: its own permits, and the cap over all queues.
pub(crate) struct QueueSlots {
    /// This queue's concurrency, as a number.
    pub(crate) concurrency: usize,
    /// This queue's concurrency, as permits.
    pub(crate) queue: Arc<Semaphore>,
    /// The cap over all queues.
    pub(crate) global: Arc<Semaphore>,
}

/// One job's slots: this queue's and the global cap's.
type Slots = (OwnedSemaphorePermit, OwnedSemaphorePermit);

impl Producer {
    /// Claims and dispatches until `stop` is cancelled; then hands back what was prefetched.
    pub(crate) async fn run(mut self, stop: CancellationToken) {
        let mut retry = RetryDelay::new(Duration::from_millis(200), Duration::from_millis(6400));
        while !stop.is_cancelled() {
            let claiming = self.lease.is_held() && !self.paused.contains(&self.queue);
            if claiming {
                self.finish_stopped_prefetched().await;
            } else {
                // Paused, or the lease is lapsing: prefetched jobs are not this worker's to
                // start any more.
                self.hand_back_prefetched().await;
            }
            if self.prefetched.is_empty() {
                self.gather_free_slots().await;
            }
            let mut slots = if claiming {
                self.take_slots()
            } else {
                Vec::new()
            };
            let started = self.start_prefetched(&mut slots);
            self.measure_drain(started);
            if self.prefetch == Prefetch::Auto {
                self.hand_back_stale_prefetched().await;
            }
            let ahead = self.ahead();
            if self.shown_ahead != Some(ahead) {
                metrics::prefetch_ahead(&self.queue, ahead);
                self.shown_ahead = Some(ahead);
            }
            let wanted = if claiming {
                self.wanted(slots.len(), ahead)
            } else {
                0
            };
            let mut full_batch = false;
            if wanted > 0 {
                // A claim stuck on the database (a lock, a hung server) must not hold up
                // shutdown. One cut short after it committed leaves its jobs `processing`
                // under this worker and this claim's token, known to nobody here: the
                // reconciler hands them back (at the latest in its pass at shutdown).
                let claimed = tokio::select! {
                    claimed = self.claim_and_dispatch(slots, wanted) => claimed,
                    () = stop.cancelled() => break,
                };
                match claimed {
                    Ok(claimed) => {
                        retry.reset();
                        full_batch = claimed == wanted;
                    }
                    Err(err) => {
                        error!(
                            event = events::WORKER_ERROR, job.queue = %self.queue,
                            error.message = %err, error.cause_chain = %ErrorChain(&err),
                            "claim failed; retrying"
                        );
                        let backoff = retry.after(&err);
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
            // While jobs wait here under an auto prefetch, look again when the oldest has
            // waited too long even if no slot frees: it is then handed back (see above).
            let nap = match (self.prefetch, self.prefetched.front()) {
                (Prefetch::Auto, Some((_, _, since))) => {
                    (STALE_AFTER.saturating_sub(since.elapsed()) + Duration::from_millis(1))
                        .min(self.poll_interval)
                }
                _ => self.poll_interval,
            };
            tokio::select! {
                () = stop.cancelled() => break,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(nap) => {}
            }
        }
        self.hand_back_prefetched().await;
    }

    /// How many jobs to hold ahead of free slots now.
    fn ahead(&self) -> usize {
        match self.prefetch {
            Prefetch::Fixed(n) => n,
            Prefetch::Auto => self.pace.ahead(
                self.slots.concurrency,
                self.claim_batch as usize,
                Instant::now(),
            ),
        }
    }

    /// Under an auto prefetch, hands back every job held ahead once the oldest has waited
    /// [`STALE_AFTER`] for a slot: the slots are busy for longer than the estimate said
    /// (the jobs run long now), and other workers may have free slots. The wait tells the
    /// estimate (`Pace::stalled`), so that the same jobs are not claimed ahead again.
    async fn hand_back_stale_prefetched(&mut self) {
        let Some((_, _, since)) = self.prefetched.front() else {
            return;
        };
        let waited = since.elapsed();
        if waited < STALE_AFTER {
            return;
        }
        self.pace.stalled(self.slots.concurrency, waited);
        self.hand_back_prefetched().await;
    }

    /// How many jobs to claim with `free` slots in hand: one per slot, and, once the
    /// prefetched jobs are down to half the look-ahead, enough to fill it again (so that
    /// one claim serves many finishing jobs rather than one each). At most a claim batch.
    fn wanted(&self, free: usize, ahead: usize) -> usize {
        let waiting = self.prefetched.len();
        let more = if waiting <= ahead / 2 {
            ahead - waiting
        } else {
            0
        };
        (free + more).min(self.claim_batch as usize)
    }

    /// What a job's task tells this producer: that a slot freed, and how long it was held.
    fn producer(&self) -> (Arc<Notify>, Arc<Pace>) {
        (self.wake.clone(), self.pace.clone())
    }

    /// Starts prefetched jobs, oldest first, in the free slots; returns how many.
    fn start_prefetched(&mut self, slots: &mut Vec<Slots>) -> usize {
        let mut started = 0;
        while !slots.is_empty() {
            let Some((job, held, _)) = self.prefetched.pop_front() else {
                break;
            };
            let Some(slot) = slots.pop() else { break };
            self.executor
                .spawn(job, held, self.queue.clone(), slot, self.producer());
            started += 1;
        }
        started
    }

    /// Counts the prefetched jobs started while jobs wait here, over windows of
    /// [`WAIT_BOUND`] (or until none waits), and tells the pace how fast they drain.
    fn measure_drain(&mut self, started: usize) {
        let now = Instant::now();
        match &mut self.draining {
            None => {}
            Some((since, count)) => {
                *count += started;
                let elapsed = now - *since;
                if self.prefetched.is_empty() || elapsed >= WAIT_BOUND {
                    self.pace.drained(*count, elapsed, now);
                    self.draining = None;
                }
            }
        }
        if self.draining.is_none() && !self.prefetched.is_empty() {
            self.draining = Some((now, 0));
        }
    }

    /// Finishes, unstarted, the prefetched jobs an operator cancelled or this worker
    /// released, and hands back those whose expiry passed while they waited (the expirer
    /// dead-letters them as `expired`, as any ready job past its expiry).
    async fn finish_stopped_prefetched(&mut self) {
        if self.prefetched.is_empty() {
            return;
        }
        let now = chrono::Utc::now();
        let (stopped, waiting): (VecDeque<_>, VecDeque<_>) =
            self.prefetched.drain(..).partition(|(job, held, _)| {
                held.stop.token.is_cancelled() || job.expires_at.is_some_and(|at| at <= now)
            });
        self.prefetched = waiting;
        for (job, held, _) in stopped {
            self.finish_unstarted(job, held).await;
        }
    }

    /// Hands every prefetched job back.
    async fn hand_back_prefetched(&mut self) {
        while let Some((job, held, _)) = self.prefetched.pop_front() {
            self.finish_unstarted(job, held).await;
        }
    }

    /// Finishes a prefetched job that never started: cancelled if an operator cancelled
    /// it, otherwise handed back without spending its attempt.
    async fn finish_unstarted(&self, job: Job, held: HeldJob) {
        let cancelled = held.stop.token.is_cancelled() && held.stop.reason() == StopReason::Cancel;
        let outcome = if cancelled {
            Outcome::Cancel
        } else {
            Outcome::Snooze {
                delay: Duration::ZERO,
            }
        };
        self.executor
            .finish_unstarted(job, held, self.queue.clone(), outcome)
            .await;
    }

    /// When only a few slots are free (a job or two just finished), waits a moment for
    /// more to free up, so that one claim takes a batch instead of one round trip per
    /// finished job. An idle producer (most slots free) claims at once.
    async fn gather_free_slots(&self) {
        let enough = (self.slots.concurrency / 2).clamp(1, self.claim_batch as usize);
        let deadline = tokio::time::Instant::now() + CLAIM_COOLDOWN;
        // Each finishing job notifies `wake`; stop waiting once enough slots are free.
        while self.slots.queue.available_permits() < enough {
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep_until(deadline) => return,
            }
        }
    }

    /// Takes as many slots as are free in both this queue and the global cap, up to the
    /// claim batch.
    fn take_slots(&self) -> Vec<Slots> {
        let mut slots = Vec::new();
        while slots.len() < self.claim_batch as usize {
            let Ok(slot) = self.slots.queue.clone().try_acquire_owned() else {
                break;
            };
            let Ok(global) = self.slots.global.clone().try_acquire_owned() else {
                break;
            };
            slots.push((slot, global));
        }
        slots
    }

    /// Claims up to `wanted` jobs: one per slot, started at once, and the rest
    /// prefetched. Unused slots are given back.
    async fn claim_and_dispatch(
        &mut self,
        slots: Vec<Slots>,
        wanted: usize,
    ) -> docket_queue::Result<usize> {
        let Some(rate) = self.rate.clone() else {
            return self.claim_into(slots, wanted).await;
        };
        // A rate-limited queue claims no more jobs than it holds tokens; the rest of the
        // slots go back. Tokens are taken ahead, up to a tenth of a second's worth (at most
        // a claim batch), and kept between claims: at high rates the bucket's row is then
        // written once per few claims rather than before every one, and at low rates
        // nothing is held ahead. What is held goes back when the queue runs dry.
        // Unlimited queues never get here.
        let wanted = u32::try_from(wanted).unwrap_or(u32::MAX);
        if self.tokens < wanted {
            let ahead = (rate.rate.per_second / 10.0).min(f64::from(self.claim_batch)) as u32;
            match rate
                .take_up_to(
                    docket_queue::pooled(&self.pool),
                    wanted.max(ahead) - self.tokens,
                    0.0,
                )
                .await?
            {
                Take::Taken(granted) => self.tokens += granted,
                Take::Wait(wait) if self.tokens == 0 => {
                    drop(slots);
                    tokio::time::sleep(wait.min(self.poll_interval)).await;
                    return Ok(0);
                }
                Take::Wait(_) => {}
            }
        }
        let offered = wanted.min(self.tokens) as usize;
        let claimed = self.claim_into(slots, offered).await?;
        self.tokens -= u32::try_from(claimed).unwrap_or(self.tokens);
        if claimed < offered {
            // The queue ran dry: the tokens are other processes' to use.
            rate.give_back(docket_queue::pooled(&self.pool), self.tokens)
                .await?;
            self.tokens = 0;
        }
        Ok(claimed)
    }

    async fn claim_into(
        &mut self,
        mut slots: Vec<Slots>,
        limit: usize,
    ) -> docket_queue::Result<usize> {
        let request = ClaimRequest {
            queue: &self.queue,
            kinds: Some(&self.kinds),
            worker_id: self.worker_id,
            token: ClaimRequest::new_token(),
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
            now: None,
        };
        let in_flight = self.executor.holdings.begin_claim(request.token);
        let sent = Instant::now();
        let claimed = if self.grouped.contains(&self.queue) {
            docket_queue::claim_fair(
                docket_queue::pooled(&self.pool),
                &request,
                &mut self.group_cursor,
            )
            .await?
        } else {
            docket_queue::claim_resuming(
                docket_queue::pooled(&self.pool),
                &request,
                &mut self.claim_cursor,
            )
            .await?
        };
        let now = Instant::now();
        self.pace.claimed(now - sent);
        let held = in_flight.adopt(claimed.jobs.iter().map(|job| job.id));
        let count = claimed.jobs.len();
        // In the claim's order: the first start in the free slots, the rest wait for theirs.
        for (job, held) in claimed.jobs.into_iter().zip(held) {
            if held.stop.token.is_cancelled() {
                // Every run was released while this claim was in flight: hand it back.
                self.finish_unstarted(job, held).await;
                continue;
            }
            match slots.pop() {
                Some(slots) => {
                    self.executor
                        .spawn(job, held, self.queue.clone(), slots, self.producer());
                }
                None => self.prefetched.push_back((job, held, now)),
            }
        }
        Ok(count)
    }
}
