//! What this worker holds: its lease (may it claim?), the claims in flight, and every job
//! it holds from the claim until its outcome is written, with the switch that stops it.
//!
//! The database says which jobs a worker holds (`locked_by` plus the claim's token); this
//! module says which of those the process knows about. The reconciler compares the two:
//! a job the database gives this worker but that is neither held here nor part of a claim
//! still in flight was lost on the way (a claim whose reply never came, an executor that
//! died) and is handed back. Because a claim's token is registered before the claim is
//! sent, and swapped for its jobs under one lock when the reply arrives, there is no moment
//! at which a job of a live claim looks lost.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use docket_queue::JobId;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::executor::STOP_GRACE;

/// Whether this worker's lease is held: producers claim only while it is.
#[derive(Debug)]
pub(crate) struct Lease {
    held: AtomicBool,
}

impl Default for Lease {
    fn default() -> Self {
        // Registration at start is the first heartbeat.
        Lease {
            held: AtomicBool::new(true),
        }
    }
}

impl Lease {
    pub(crate) fn is_held(&self) -> bool {
        self.held.load(Ordering::Relaxed)
    }

    /// Marks the lease held again; `true` when it had been lost.
    pub(crate) fn renew(&self) -> bool {
        !self.held.swap(true, Ordering::Relaxed)
    }

    pub(crate) fn lose(&self) {
        self.held.store(false, Ordering::Relaxed);
    }
}

/// Whether a worker whose heartbeats fail must stop its jobs now. `since_sent` is the time
/// since the last heartbeat that succeeded was *sent* (the database stamped its lease no
/// earlier than that). The jobs must be stopped, grace included, before the lease lapses
/// and a rescuer may hand them to another worker; the next check comes one `interval`
/// later (plus the ticker's jitter at most), so that is the margin, with the grace.
pub(crate) fn must_release(since_sent: Duration, interval: Duration, lease: Duration) -> bool {
    since_sent + interval.mul_f64(1.0 + crate::service::JITTER) + STOP_GRACE >= lease
}

/// Why a running job is being stopped from outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StopReason {
    /// An operator cancelled it: the outcome is `cancel`.
    Cancel,
    /// This worker lost its lease: hand the job back without spending the attempt.
    Release,
}

/// A held job's stop switch: the reason is set first, then the token fires.
#[derive(Clone, Default)]
pub(crate) struct StopSwitch {
    pub(crate) token: CancellationToken,
    reason: Arc<Mutex<Option<StopReason>>>,
}

impl StopSwitch {
    fn stop(&self, reason: StopReason) {
        self.reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(reason);
        self.token.cancel();
    }

    pub(crate) fn reason(&self) -> StopReason {
        self.reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .unwrap_or(StopReason::Cancel)
    }
}

#[derive(Default)]
struct Inner {
    /// Tokens of claims sent whose reply has not been read yet.
    claims: HashSet<Uuid>,
    /// Jobs held: claimed, and their outcome not yet written.
    jobs: HashMap<JobId, StopSwitch>,
}

/// The claims in flight and the jobs this process holds.
#[derive(Default)]
pub(crate) struct Holdings {
    inner: Mutex<Inner>,
}

impl Holdings {
    /// Registers a claim about to be sent. Dropping the guard without
    /// [`ClaimGuard::adopt`] (the claim failed or was cut off) leaves whatever that claim
    /// may have taken to the reconciler.
    pub(crate) fn begin_claim(self: &Arc<Self>, token: Uuid) -> ClaimGuard {
        self.lock().claims.insert(token);
        ClaimGuard {
            holdings: self.clone(),
            token,
        }
    }

    /// Stops each listed job held here as cancelled; returns how many there were.
    pub(crate) fn cancel(&self, ids: &[JobId]) -> usize {
        let inner = self.lock();
        ids.iter()
            .filter_map(|id| inner.jobs.get(id))
            .inspect(|switch| switch.stop(StopReason::Cancel))
            .count()
    }

    /// Stops every held job and hands it back: this worker's lease is lapsing, so another
    /// worker may take its jobs over. Returns how many there were.
    pub(crate) fn release_all(&self) -> usize {
        let inner = self.lock();
        for switch in inner.jobs.values() {
            switch.stop(StopReason::Release);
        }
        inner.jobs.len()
    }

    /// Whether a job the database says this worker holds under `token` is known here.
    pub(crate) fn knows(&self, id: JobId, token: Uuid) -> bool {
        let inner = self.lock();
        inner.jobs.contains_key(&id) || inner.claims.contains(&token)
    }

    /// How many jobs are held.
    pub(crate) fn len(&self) -> usize {
        self.lock().jobs.len()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A claim in flight.
pub(crate) struct ClaimGuard {
    holdings: Arc<Holdings>,
    token: Uuid,
}

impl ClaimGuard {
    /// The claim's reply arrived: its jobs are held from now on, in the same step that
    /// ends the claim, so the reconciler never sees them as nobody's.
    pub(crate) fn adopt(self, ids: impl IntoIterator<Item = JobId>) -> Vec<HeldJob> {
        let mut inner = self.holdings.lock();
        let held = ids
            .into_iter()
            .map(|id| {
                let stop = StopSwitch::default();
                inner.jobs.insert(id, stop.clone());
                HeldJob {
                    holdings: self.holdings.clone(),
                    id,
                    stop,
                }
            })
            .collect();
        inner.claims.remove(&self.token);
        held
        // Dropping `self` removes the token again: a no-op.
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        self.holdings.lock().claims.remove(&self.token);
    }
}

/// One held job. Dropping it (after the outcome is written, or when anything on the way
/// fails, a panic included) ends the holding: if the job is still `processing` in the
/// database, the reconciler hands it back.
pub(crate) struct HeldJob {
    holdings: Arc<Holdings>,
    id: JobId,
    pub(crate) stop: StopSwitch,
}

impl Drop for HeldJob {
    fn drop(&mut self) {
        self.holdings.lock().jobs.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_the_defaults_jobs_stop_an_interval_and_the_grace_before_the_lease_lapses() {
        let (interval, lease) = (Duration::from_secs(5), Duration::from_secs(30));
        // Heartbeats run every 5 s; the last good one was sent at 0. The check after 20 s
        // must not release yet, the one after 25 s must: 25 + 5 + 1 > 30.
        assert!(!must_release(Duration::from_secs(20), interval, lease));
        assert!(must_release(Duration::from_secs(25), interval, lease));
        // The release at 25 s plus the grace ends by 26 s, four seconds before the lapse.
        // Even a check that comes a whole interval late (a heartbeat that hung until its
        // timeout) still stops the jobs, grace included, before 30 s.
        assert!(must_release(Duration::from_secs(24), interval, lease));
    }

    #[test]
    fn a_job_is_known_while_its_claim_is_in_flight_and_until_its_holding_ends() {
        let holdings = Arc::new(Holdings::default());
        let (token, id) = (Uuid::now_v7(), JobId(Uuid::now_v7()));
        let claim = holdings.begin_claim(token);
        assert!(holdings.knows(id, token));
        let held = claim.adopt([id]);
        assert!(holdings.knows(id, Uuid::now_v7()), "held by id now");
        drop(held);
        assert!(!holdings.knows(id, token), "neither held nor in flight");
        let lost = holdings.begin_claim(token);
        drop(lost);
        assert!(
            !holdings.knows(id, token),
            "a dropped claim leaves its jobs unknown"
        );
    }
}
