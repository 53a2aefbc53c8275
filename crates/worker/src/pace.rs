//! Auto prefetch: how many jobs a queue claims ahead of its free slots, sized from what
//! its producer observes.
//!
//! A claim costs a round trip (`r`); while it is in flight, slots keep freeing. With `c`
//! slots whose jobs each hold a slot for `d` on average, `c / d` slots free up per second,
//! so `c × r / d` of them free up during one claim. Claiming that many ahead means a slot
//! that frees finds a job waiting instead of waiting for the next claim, and a job claimed
//! ahead waits about one round trip for its slot. The window is also capped at
//! [`WAIT_BOUND`]: on a slow link (a round trip of 20 ms) a job claimed ahead still waits
//! at most about 5 ms:
//!
//! ```text
//! ahead = ⌊ c × min(r, 5 ms) / d ⌋, at most the claim batch (and the drain bound below)
//! ```
//!
//! `d` is the time a job holds its slot, which for very short jobs is less than the time
//! between two starts in one slot (the producer's turn, the task's spawn): `c / d` then
//! overstates how fast slots free up. So while jobs wait here the producer also measures
//! how many of them start per second (the drain rate, over windows of [`WAIT_BOUND`]), and
//! the look-ahead is at most that rate × 5 ms: a job claimed ahead then waits at most about
//! 5 ms by measurement, not only by the estimate. A drain rate older than a second is not
//! used (nothing waits here while the look-ahead is 0, so it could not be renewed).
//!
//! No-op jobs (`d` of tens of microseconds) get the claim batch or what 5 ms of draining
//! starts, whichever is less; jobs of 50 ms on 10 slots with a 1 ms round trip get
//! `⌊10 × 1 / 50⌋ = 0`: nothing is held that another worker could run. Nothing is claimed ahead before the first job finished and the first
//! claim came back (nothing is known yet).
//!
//! `d` and `r` are smoothed (each new value moves them by an eighth of the difference), so
//! one slow claim or job changes little, while a long job among short ones moves `d` a lot
//! (one 8 ms job among 0.1 ms ones makes `d` about 1.1 ms). An estimate can still be
//! stale: a queue of short jobs whose next jobs run long has claimed ahead for short ones.
//! So a job that has waited here [`STALE_AFTER`] without a slot freeing for it tells the
//! producer that the slots are busy for longer than estimated: it hands back every job it
//! holds ahead (for other workers to run), and `d` becomes at least `c ×` that wait (`c`
//! busy slots of which none freed for `t` suggest jobs of about `c × t`), which brings
//! `ahead` to 0 until the jobs that finish say otherwise.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The longest a job claimed ahead should wait for a slot (by the estimate).
pub(crate) const WAIT_BOUND: Duration = Duration::from_millis(5);

/// How long a measured drain rate is used.
const DRAIN_RATE_KEPT: Duration = Duration::from_secs(1);

/// A job claimed ahead that has waited this long for a slot shows the estimate wrong: it is
/// handed back with every other job held ahead (see the module's doc).
pub(crate) const STALE_AFTER: Duration = Duration::from_millis(20);

/// What one queue's producer and its jobs have observed.
#[derive(Debug, Default)]
pub(crate) struct Pace {
    observed: Mutex<Observed>,
}

#[derive(Debug, Default)]
struct Observed {
    /// Smoothed time a job holds its slot, in seconds.
    job_time: Option<f64>,
    /// Smoothed round trip of a claim, in seconds.
    round_trip: Option<f64>,
    /// Smoothed jobs started per second from those waiting here, and when last measured.
    drain_rate: Option<(f64, Instant)>,
}

/// `estimate` moved by an eighth of the way to `value` (the first value as it is).
fn smooth(estimate: Option<f64>, value: f64) -> Option<f64> {
    Some(match estimate {
        None => value,
        Some(old) => old + (value - old) / 8.0,
    })
}

impl Pace {
    /// What was observed (a panic while it was held left plain numbers: still usable).
    fn observed(&self) -> std::sync::MutexGuard<'_, Observed> {
        self.observed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A job held its slot for `slot_time`.
    pub(crate) fn job_finished(&self, slot_time: Duration) {
        let mut observed = self.observed();
        observed.job_time = smooth(observed.job_time, slot_time.as_secs_f64());
    }

    /// `started` jobs that waited here started within `elapsed`, none of them waiting for
    /// a claim.
    pub(crate) fn drained(&self, started: usize, elapsed: Duration, now: Instant) {
        if started == 0 || elapsed.is_zero() {
            return;
        }
        let mut observed = self.observed();
        let rate = started as f64 / elapsed.as_secs_f64();
        let fresh = observed
            .drain_rate
            .filter(|(_, at)| now - *at < DRAIN_RATE_KEPT);
        observed.drain_rate = smooth(fresh.map(|(rate, _)| rate), rate).map(|rate| (rate, now));
    }

    /// None of `slots` busy slots freed for `waited`: their jobs take about `slots ×
    /// waited`, if not longer.
    pub(crate) fn stalled(&self, slots: usize, waited: Duration) {
        let mut observed = self.observed();
        let at_least = slots as f64 * waited.as_secs_f64();
        observed.job_time = Some(observed.job_time.map_or(at_least, |d| d.max(at_least)));
    }

    /// A claim came back after `round_trip`.
    pub(crate) fn claimed(&self, round_trip: Duration) {
        let mut observed = self.observed();
        observed.round_trip = smooth(observed.round_trip, round_trip.as_secs_f64());
    }

    /// How many jobs to hold ahead with `slots` slots (see the module's doc), at most
    /// `cap`.
    pub(crate) fn ahead(&self, slots: usize, cap: usize, now: Instant) -> usize {
        let observed = self.observed();
        let (Some(job_time), Some(round_trip)) = (observed.job_time, observed.round_trip) else {
            return 0;
        };
        let slots = slots as f64;
        let window = round_trip.min(WAIT_BOUND.as_secs_f64());
        // A job that took no measurable time: as if it took a microsecond.
        let mut ahead = (slots * window / job_time.max(1e-6)).floor();
        if let Some((rate, at)) = observed.drain_rate {
            if now - at < DRAIN_RATE_KEPT {
                ahead = ahead.min((rate * WAIT_BOUND.as_secs_f64()).floor());
            }
        }
        if ahead >= cap as f64 {
            cap
        } else {
            ahead as usize
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pace(job: Duration, round_trip: Duration) -> Pace {
        let pace = Pace::default();
        pace.job_finished(job);
        pace.claimed(round_trip);
        pace
    }

    #[test]
    fn short_jobs_are_claimed_ahead_by_the_slots_freeing_during_a_round_trip() {
        let ms = Duration::from_millis;
        // 10 slots, 2 ms jobs, 1 ms claims: 5 slots free during a claim.
        assert_eq!(pace(ms(2), ms(1)).ahead(10, 100, Instant::now()), 5);
        // No-op jobs: the claim batch.
        assert_eq!(
            pace(Duration::from_micros(20), ms(1)).ahead(10, 100, Instant::now()),
            100
        );
        // A slow link: the window is 5 ms, not the 20 ms round trip.
        assert_eq!(pace(ms(2), ms(20)).ahead(10, 100, Instant::now()), 25);
    }

    #[test]
    fn long_jobs_and_the_unknown_get_nothing_ahead() {
        let ms = Duration::from_millis;
        assert_eq!(pace(ms(50), ms(1)).ahead(10, 100, Instant::now()), 0);
        assert_eq!(Pace::default().ahead(10, 100, Instant::now()), 0);
        let no_claim_yet = Pace::default();
        no_claim_yet.job_finished(ms(1));
        assert_eq!(no_claim_yet.ahead(10, 100, Instant::now()), 0);
    }

    #[test]
    fn a_stall_brings_the_look_ahead_to_nothing_until_short_jobs_finish_again() {
        let noop = pace(Duration::from_micros(20), Duration::from_millis(1));
        noop.stalled(10, STALE_AFTER);
        assert_eq!(noop.ahead(10, 100, Instant::now()), 0);
        for _ in 0..60 {
            noop.job_finished(Duration::from_micros(20));
        }
        assert_eq!(noop.ahead(10, 100, Instant::now()), 100);
    }

    #[test]
    fn what_drains_in_5_ms_bounds_the_look_ahead_for_a_second() {
        let now = Instant::now();
        let noop = pace(Duration::from_micros(20), Duration::from_millis(1));
        // 85 jobs started in 5 ms: 17,000 a second, 85 in 5 ms.
        noop.drained(85, WAIT_BOUND, now);
        assert_eq!(noop.ahead(10, 100, now), 85);
        assert_eq!(noop.ahead(10, 100, now + Duration::from_secs(2)), 100);
    }

    #[test]
    fn one_long_job_among_short_ones_moves_the_estimate_by_an_eighth() {
        let pace = pace(Duration::from_micros(100), Duration::from_millis(1));
        pace.job_finished(Duration::from_millis(8));
        // 100 µs + (8 ms − 100 µs) / 8 ≈ 1.09 ms: 10 slots × 1 ms / 1.09 ms = 9.
        assert_eq!(pace.ahead(10, 100, Instant::now()), 9);
    }
}
