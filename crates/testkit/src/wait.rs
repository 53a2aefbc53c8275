//! Waiting on a real process or background task to react, with a bound.

use std::future::Future;
use std::time::Duration;

/// Polls `check` every 20 ms until it returns `true`.
///
/// # Panics
///
/// When `timeout` passes first, with `what` in the message.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
