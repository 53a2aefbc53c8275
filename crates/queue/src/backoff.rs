//! Retry delays: how long a failed job waits before its next attempt. Pure, no SQL.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use crate::job::JobId;

/// How long to wait after a failed attempt.
///
/// `Exponential`: `min(max, base × 2^(attempt − 1))`, then spread by up to ±`jitter` (a
/// fraction) so that jobs that failed together do not come back together. The spread is
/// derived from the job id and attempt, so it is repeatable. With the defaults (1 s base,
/// 1 h cap, 10% jitter):
///
/// | attempt | delay (before jitter) |
/// |---|---|
/// | 1 | 1 s |
/// | 2 | 2 s |
/// | 5 | 16 s |
/// | 10 | 8 min 32 s |
/// | 13 and later | 1 h |
///
/// ```
/// use std::time::Duration;
/// use docket_queue::Backoff;
///
/// let backoff = Backoff::Exponential { base: Duration::from_secs(1), max: Duration::from_secs(3600), jitter: 0.0 };
/// let id = docket_queue::JobId(uuid::Uuid::nil());
/// assert_eq!(backoff.delay(id, 1), Duration::from_secs(1));
/// assert_eq!(backoff.delay(id, 5), Duration::from_secs(16));
/// assert_eq!(backoff.delay(id, 13), Duration::from_secs(3600));
///
/// let ladder = Backoff::Ladder(vec![Duration::from_secs(60), Duration::from_secs(300)]);
/// assert_eq!(ladder.delay(id, 1), Duration::from_secs(60));
/// assert_eq!(ladder.delay(id, 9), Duration::from_secs(300)); // the last step repeats
/// ```
#[derive(Clone, Debug, PartialEq)]
pub enum Backoff {
    /// Doubling delays from `base`, capped at `max`, spread by ±`jitter`.
    Exponential {
        /// The delay after the first failure.
        base: Duration,
        /// The longest delay.
        max: Duration,
        /// Spread as a fraction of the delay, 0.0 to 1.0.
        jitter: f64,
    },
    /// A fixed ladder: the nth failure waits the nth step; the last step repeats.
    Ladder(Vec<Duration>),
}

/// The default exponential base.
pub const BACKOFF_BASE_DEFAULT: Duration = Duration::from_secs(1);
/// The default exponential cap.
pub const BACKOFF_MAX_DEFAULT: Duration = Duration::from_secs(3600);
/// The default jitter.
pub const BACKOFF_JITTER_DEFAULT: f64 = 0.1;

impl Default for Backoff {
    fn default() -> Self {
        Backoff::Exponential {
            base: BACKOFF_BASE_DEFAULT,
            max: BACKOFF_MAX_DEFAULT,
            jitter: BACKOFF_JITTER_DEFAULT,
        }
    }
}

impl Backoff {
    /// The delay after `attempt` (1 for the first attempt) of job `id` failed.
    pub fn delay(&self, id: JobId, attempt: i32) -> Duration {
        let attempt = attempt.max(1);
        match self {
            Backoff::Exponential { base, max, jitter } => {
                let exponent = u32::try_from(attempt - 1).unwrap_or(0).min(62);
                let raw = base.saturating_mul(1u32 << exponent.min(31));
                let delay = raw.min(*max);
                let spread = jitter.clamp(0.0, 1.0) * (2.0 * unit_fraction(id, attempt) - 1.0);
                delay.mul_f64(1.0 + spread)
            }
            Backoff::Ladder(steps) => {
                let index = usize::try_from(attempt - 1).unwrap_or(0);
                steps
                    .get(index)
                    .or(steps.last())
                    .copied()
                    .unwrap_or(Duration::ZERO)
            }
        }
    }
}

/// A repeatable number in [0, 1) from the job id and attempt.
fn unit_fraction(id: JobId, attempt: i32) -> f64 {
    let mut hasher = DefaultHasher::new();
    (id, attempt).hash(&mut hasher);
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn jitter_stays_within_its_fraction_and_varies_between_jobs() {
        let backoff = Backoff::default();
        let mut seen = std::collections::HashSet::new();
        for n in 0..200u128 {
            let delay = backoff.delay(JobId(Uuid::from_u128(n)), 4);
            assert!(delay >= Duration::from_millis(7200) && delay <= Duration::from_millis(8800));
            seen.insert(delay);
        }
        assert!(seen.len() > 150, "jitter should spread jobs apart");
    }

    #[test]
    fn exponential_never_overflows_past_its_cap() {
        let backoff = Backoff::Exponential {
            base: Duration::from_secs(1),
            max: Duration::from_secs(3600),
            jitter: 0.0,
        };
        assert_eq!(
            backoff.delay(JobId(Uuid::nil()), i32::MAX),
            Duration::from_secs(3600)
        );
    }

    #[test]
    fn empty_ladder_means_no_delay() {
        assert_eq!(
            Backoff::Ladder(vec![]).delay(JobId(Uuid::nil()), 3),
            Duration::ZERO
        );
    }
}
