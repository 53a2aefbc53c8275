//! How long a part of the worker waits before it tries the database again.

use std::time::Duration;

/// The wait after a failure on a connection the server dropped: the pool's next connection
/// may be alive. Backing off here, once per dead pooled connection, once stalled a worker
/// for 12 s after its connections were terminated.
pub(crate) const LOST_CONNECTION_RETRY: Duration = Duration::from_millis(10);

/// Waits that double after each failure up to a cap, except after a lost connection.
pub(crate) struct RetryDelay {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl RetryDelay {
    pub(crate) fn new(first: Duration, max: Duration) -> Self {
        RetryDelay {
            first,
            max,
            next: first,
        }
    }

    /// The wait before the next try after `err`.
    pub(crate) fn after(&mut self, err: &docket_queue::Error) -> Duration {
        if err.is_lost_connection() {
            return LOST_CONNECTION_RETRY;
        }
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// After a success: the next failure waits the first delay again.
    pub(crate) fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_and_a_lost_connection_is_retried_at_once() {
        let mut delay = RetryDelay::new(Duration::from_millis(100), Duration::from_millis(300));
        let down = docket_queue::Error::Database(sqlx::Error::PoolTimedOut);
        let lost = docket_queue::Error::Database(sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::BrokenPipe,
        )));
        assert_eq!(delay.after(&down), Duration::from_millis(100));
        assert_eq!(delay.after(&lost), LOST_CONNECTION_RETRY);
        assert_eq!(delay.after(&down), Duration::from_millis(200));
        assert_eq!(delay.after(&down), Duration::from_millis(300));
        assert_eq!(delay.after(&down), Duration::from_millis(300));
        delay.reset();
        assert_eq!(delay.after(&down), Duration::from_millis(100));
    }
}
