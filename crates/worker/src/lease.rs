//! What this worker holds: its lease (may it claim?), the claims in flight, and every run
//! it holds from the claim until its outcome is written, with the switch that stops it.
//!
//! The database says which jobs a worker holds (`locked_by` plus the claim's token); this
//! module says which of those the process knows about. A run is identified by its job and
//! its claim's token, never by the job alone: after a lapse, one job may be claimed again
//! while an older run of it winds down, and each has its own entry. The reconciler
//! compares the two sides: a job the database gives this worker but that is neither held
//! here nor part of a claim still in flight was lost on the way (a claim whose reply never
//! came, an executor that died) and is handed back; a run held here that the database no
//! longer gives this worker under its token (rescued while this worker stalled) is
//! stopped. Because a claim's token is registered before the claim is sent, and swapped for
//! its jobs under one lock when the reply arrives, there is no moment at which a job of a
//! live claim looks lost.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use docket_queue::JobId;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How long a handler that is stopped from outside (timeout, cancel, lease loss, the
/// shutdown deadline) gets to return after its context says so, before it is dropped. The
/// lease counts it in: a run must be stoppable within the lease it started under.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(1);

/// This worker's lease, as far as the process can prove it: producers claim only while it
/// is held.
///
/// Held means two things. The heartbeat has not given it up (it releases every run when
/// it cannot renew in time, or finds the lease had lapsed, and renews the lease only once
/// nothing from before is held any more). And the lease the last continuous heartbeat
/// stored cannot have run out yet: measured on this process's monotonic clock from when
/// that heartbeat was *sent* (the database stamped the lease no earlier). The second part
/// needs no heartbeat to notice: a process that was stopped (SIGSTOP, a paused VM, a
/// starved CPU) for longer than the lease claims nothing when it wakes up.
#[derive(Debug)]
pub(crate) struct Lease {
    /// How long each heartbeat's lease lasts.
    timeout: Duration,
    state: Mutex<LeaseState>,
}

#[derive(Debug)]
struct LeaseState {
    held: bool,
    /// When the last heartbeat that renewed the lease without a gap was sent.
    confirmed_sent_at: Instant,
    /// Counts the times the lease was given up. A run belongs to the term it started in:
    /// a heartbeat after a release renews the lease for new runs, never for the old ones.
    term: u64,
    /// The term before this one and its last confirmed send: its runs, winding down after a
    /// release, may go on until that lease ends, never past it.
    previous: Option<(u64, Instant)>,
}

impl Lease {
    /// A lease just stored by the registration sent at `registered_at`.
    pub(crate) fn new(registered_at: Instant, timeout: Duration) -> Self {
        Lease {
            timeout,
            state: Mutex::new(LeaseState {
                held: true,
                confirmed_sent_at: registered_at,
                term: 0,
                previous: None,
            }),
        }
    }

    /// Whether the lease is held: not given up, and not possibly lapsed by now.
    pub(crate) fn is_held(&self) -> bool {
        let state = self.lock();
        state.held && state.confirmed_sent_at.elapsed() < self.timeout
    }

    /// The current term: what a run starting now belongs to.
    pub(crate) fn term(&self) -> u64 {
        self.lock().term
    }

    /// Whether a run of `term` may take another step: the lease of its term surely still
    /// holds in the database (less than a lease since that term's last confirmed beat was
    /// sent). A run winding down after a release may go on until then; a heartbeat sent
    /// after a release (or a stall) renews the lease for new runs only.
    pub(crate) fn holds_for(&self, term: u64) -> bool {
        let state = self.lock();
        let confirmed = if term == state.term {
            state.confirmed_sent_at
        } else {
            match state.previous {
                Some((previous, confirmed)) if previous == term => confirmed,
                _ => return false,
            }
        };
        confirmed.elapsed() < self.timeout
    }

    /// When the last heartbeat that renewed the lease without a gap was sent.
    pub(crate) fn confirmed_sent_at(&self) -> Instant {
        self.lock().confirmed_sent_at
    }

    /// Records a heartbeat sent at `sent_at` that stored a lease (from then on the lease
    /// lasts at least until `sent_at` plus the timeout), and marks the lease held again
    /// when `renew`; returns `true` when it had been given up.
    pub(crate) fn confirm(&self, sent_at: Instant, renew: bool) -> bool {
        let mut state = self.lock();
        state.confirmed_sent_at = state.confirmed_sent_at.max(sent_at);
        let renewed = renew && !state.held;
        state.held |= renew;
        renewed
    }

    /// Gives the lease up: nothing is claimed until [`Lease::confirm`] renews it, and the
    /// runs held so far belong to a term that no later heartbeat extends.
    pub(crate) fn lose(&self) {
        let mut state = self.lock();
        if state.held {
            state.previous = Some((state.term, state.confirmed_sent_at));
            state.term += 1;
        }
        state.held = false;
    }

    fn lock(&self) -> MutexGuard<'_, LeaseState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether the lease renewed by a heartbeat sent `since_confirmed` after the last one that
/// renewed it (both measured at their send), and answered `replied_after` that one, may
/// have lapsed in between: the database stamped the new lease no later than the reply, and
/// the old one lasted at least `lease` from its send. Only a gap shorter than the lease
/// proves that the lease was held throughout.
pub(crate) fn lease_had_gap(replied_after: Duration, lease: Duration) -> bool {
    replied_after >= lease
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
    /// This worker lost its lease, or no longer holds this run's claim: hand the job back
    /// without spending the attempt (fenced by the token, so a run whose job went to
    /// another worker changes nothing).
    Release,
}

/// A held run's stop switch: the reason is set first, then the token fires.
#[derive(Clone, Default)]
pub(crate) struct StopSwitch {
    pub(crate) token: CancellationToken,
    reason: Arc<Mutex<Option<StopReason>>>,
    /// Set once the run's outcome is decided: from then on there is nothing to stop.
    ended: Arc<AtomicBool>,
}

impl StopSwitch {
    fn stop(&self, reason: StopReason) {
        self.reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(reason);
        self.token.cancel();
    }

    /// Marks the run ended: its outcome is on its way to the completer.
    pub(crate) fn end(&self) {
        self.ended.store(true, Ordering::Relaxed);
    }

    fn is_live(&self) -> bool {
        !self.token.is_cancelled() && !self.ended.load(Ordering::Relaxed)
    }

    pub(crate) fn reason(&self) -> StopReason {
        self.reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .unwrap_or(StopReason::Cancel)
    }
}

/// A run: a job and the token of the claim that handed it to this worker.
pub(crate) type RunId = (JobId, Uuid);

#[derive(Default)]
struct Inner {
    /// Tokens of claims sent whose reply has not been read yet, with the release count
    /// when each was sent.
    claims: HashMap<Uuid, u64>,
    /// Runs held: claimed, and their outcome not yet written. Ordered, so that the runs of
    /// one job are neighbours.
    runs: BTreeMap<RunId, StopSwitch>,
    /// How many times every run was released: a claim sent before a release hands back
    /// what it took, since it may have been taken from a lease that lapsed.
    releases: u64,
}

/// The claims in flight and the runs this process holds.
#[derive(Default)]
pub(crate) struct Holdings {
    inner: Mutex<Inner>,
}

impl Holdings {
    /// Registers a claim about to be sent. Dropping the guard without
    /// [`ClaimGuard::adopt`] (the claim failed or was cut off) leaves whatever that claim
    /// may have taken to the reconciler.
    pub(crate) fn begin_claim(self: &Arc<Self>, token: Uuid) -> ClaimGuard {
        let mut inner = self.lock();
        let releases = inner.releases;
        inner.claims.insert(token, releases);
        ClaimGuard {
            holdings: self.clone(),
            token,
        }
    }

    /// Stops each listed run held here as cancelled; returns how many there were.
    pub(crate) fn cancel(&self, runs: &[RunId]) -> usize {
        let inner = self.lock();
        runs.iter()
            .filter_map(|run| inner.runs.get(run))
            .inspect(|switch| switch.stop(StopReason::Cancel))
            .count()
    }

    /// Stops every held run and hands it back, and every claim in flight will hand back
    /// what it took: this worker's lease is lapsing or lapsed, so another worker may take
    /// its jobs over. Returns how many runs were stopped now (not before).
    pub(crate) fn release_all(&self) -> usize {
        let mut inner = self.lock();
        inner.releases += 1;
        inner
            .runs
            .values()
            .filter(|switch| switch.is_live())
            .inspect(|switch| switch.stop(StopReason::Release))
            .count()
    }

    /// The runs held now (to compare with the database afterwards: a run adopted later
    /// may be newer than what the database was asked).
    pub(crate) fn runs(&self) -> Vec<RunId> {
        self.lock().runs.keys().copied().collect()
    }

    /// Stops and hands back each listed run that is still held, still running and not
    /// stopped yet; returns how many were.
    pub(crate) fn release(&self, runs: &[RunId]) -> usize {
        let inner = self.lock();
        runs.iter()
            .filter_map(|run| inner.runs.get(run))
            .filter(|switch| switch.is_live())
            .inspect(|switch| switch.stop(StopReason::Release))
            .count()
    }

    /// Whether a job the database says this worker holds under `token` is known here:
    /// held as that run, or part of that claim still in flight.
    pub(crate) fn knows(&self, id: JobId, token: Uuid) -> bool {
        let inner = self.lock();
        inner.runs.contains_key(&(id, token)) || inner.claims.contains_key(&token)
    }

    /// How many runs are held.
    pub(crate) fn len(&self) -> usize {
        self.lock().runs.len()
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
    /// ends the claim, so the reconciler never sees them as nobody's. When every run was
    /// released since the claim was sent, its runs come already stopped: the claim may
    /// have been made on a lease that lapsed, so none of them may start. An older run of
    /// one of its jobs still held here is stopped: the database gave the job to this claim,
    /// so the older claim is over.
    pub(crate) fn adopt(self, ids: impl IntoIterator<Item = JobId>) -> Vec<HeldJob> {
        let mut inner = self.holdings.lock();
        let sent_at = inner.claims.remove(&self.token);
        let released_since = sent_at.is_some_and(|releases| releases != inner.releases);
        ids.into_iter()
            .map(|id| {
                let older = (id, Uuid::nil())..=(id, Uuid::max());
                for (_, switch) in inner.runs.range(older) {
                    if switch.is_live() {
                        switch.stop(StopReason::Release);
                    }
                }
                let stop = StopSwitch::default();
                if released_since {
                    stop.stop(StopReason::Release);
                }
                inner.runs.insert((id, self.token), stop.clone());
                HeldJob {
                    holdings: self.holdings.clone(),
                    run: (id, self.token),
                    stop,
                }
            })
            .collect()
        // Dropping `self` removes the token again: a no-op.
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        self.holdings.lock().claims.remove(&self.token);
    }
}

/// One held run. Dropping it (after the outcome is written, or when anything on the way
/// fails, a panic included) ends the holding of this run only: if the job is still
/// `processing` under this run's token in the database, the reconciler hands it back.
pub(crate) struct HeldJob {
    holdings: Arc<Holdings>,
    run: RunId,
    pub(crate) stop: StopSwitch,
}

impl Drop for HeldJob {
    fn drop(&mut self) {
        self.holdings.lock().runs.remove(&self.run);
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
        assert!(holdings.knows(id, token), "held as this run now");
        assert!(
            !holdings.knows(id, Uuid::now_v7()),
            "the same job under another claim's token is another run"
        );
        drop(held);
        assert!(!holdings.knows(id, token), "neither held nor in flight");
        let lost = holdings.begin_claim(token);
        drop(lost);
        assert!(
            !holdings.knows(id, token),
            "a dropped claim leaves its jobs unknown"
        );
    }

    #[test]
    fn an_older_runs_end_leaves_a_newer_run_of_the_same_job_held() {
        let holdings = Arc::new(Holdings::default());
        let id = JobId(Uuid::now_v7());
        let (old_token, new_token) = (Uuid::now_v7(), Uuid::now_v7());
        let older = holdings.begin_claim(old_token).adopt([id]).remove(0);
        // The job lapsed and this worker claimed it again while the older run winds down.
        let newer = holdings.begin_claim(new_token).adopt([id]).remove(0);
        assert_eq!(holdings.len(), 2, "two runs of one job, two entries");
        assert!(
            older.stop.token.is_cancelled(),
            "the newer claim ends the older run"
        );
        assert_eq!(older.stop.reason(), StopReason::Release);
        drop(older);
        assert!(holdings.knows(id, new_token), "the newer run is still held");
        assert!(!holdings.knows(id, old_token));
        assert_eq!(holdings.len(), 1);
        // Stopping the older run (the database gave its claim away) leaves the newer one.
        assert_eq!(holdings.release(&[(id, old_token)]), 0, "it is gone");
        assert_eq!(holdings.cancel(&[(id, old_token)]), 0);
        assert!(!newer.stop.token.is_cancelled());
        drop(newer);
        assert_eq!(holdings.len(), 0);
    }

    #[test]
    fn a_claim_sent_before_a_release_hands_back_what_it_took() {
        let holdings = Arc::new(Holdings::default());
        let (before, after) = (Uuid::now_v7(), Uuid::now_v7());
        let sent_before = holdings.begin_claim(before);
        assert_eq!(holdings.release_all(), 0);
        let sent_after = holdings.begin_claim(after);
        let stale = sent_before.adopt([JobId(Uuid::now_v7())]);
        let fresh = sent_after.adopt([JobId(Uuid::now_v7())]);
        assert!(stale[0].stop.token.is_cancelled());
        assert_eq!(stale[0].stop.reason(), StopReason::Release);
        assert!(!fresh[0].stop.token.is_cancelled());
    }

    #[test]
    fn only_a_heartbeat_answered_within_the_lease_proves_it_held_throughout() {
        let lease = Duration::from_secs(4);
        assert!(!lease_had_gap(Duration::from_millis(3999), lease));
        assert!(lease_had_gap(lease, lease));
        assert!(lease_had_gap(Duration::from_secs(8), lease));
    }

    /// The drill's `stall` found runs ending past their lease: the first heartbeat after
    /// the stall released them, then renewed the lease, and the renewal let the released
    /// runs, still winding down, take steps again.
    #[test]
    fn a_heartbeat_after_a_release_renews_the_lease_for_new_runs_only() {
        let timeout = Duration::from_secs(1);
        // A stall: the last confirmed beat was sent two leases ago.
        let stalled = Lease::new(Instant::now() - 2 * timeout, timeout);
        let old_run = stalled.term();
        assert!(!stalled.holds_for(old_run));
        stalled.lose();
        assert!(stalled.confirm(Instant::now(), true));
        assert!(
            !stalled.holds_for(old_run),
            "the renewal is not the old run's"
        );
        assert!(stalled.holds_for(stalled.term()), "new runs hold");

        // A release before the lapse (a heartbeat that cannot renew): the runs wind down
        // until their lease ends, whatever later beats do.
        let released = Lease::new(Instant::now(), timeout);
        let winding_down = released.term();
        released.lose();
        released.confirm(Instant::now(), true);
        assert!(released.holds_for(winding_down));
        released.lose();
        assert!(!released.holds_for(winding_down), "two releases ago");
    }
}
