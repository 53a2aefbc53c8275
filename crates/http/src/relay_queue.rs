//! The relay's own queue, beside Docket's: how many messages the local MTA still holds and
//! how long the oldest has waited, from a command that lists them as Postfix's
//! `postqueue -j` does (one JSON object per message, with its `arrival_time` in Unix
//! seconds). Off unless [`RELAY_QUEUE_COMMAND`](docket_settings::RELAY_QUEUE_COMMAND) is
//! set; a command that fails, hangs or prints something else is `unknown`, never `down`:
//! the relay's queue is then simply not known.

use std::time::Duration;

use docket_queue::health::{Finding, Probe, ProbeFuture, Verdict};
use docket_queue::telemetry::metric::{RELAY_QUEUE_MESSAGES, RELAY_QUEUE_OLDEST_AGE};
use sqlx::PgPool;

/// How long the command may take.
pub const RELAY_QUEUE_TIMEOUT: Duration = Duration::from_secs(2);

const ADVICE: &str = "the relay holds mail it has not delivered: `postqueue -p` (or your MTA's queue listing) says why each waits; `postqueue -f` retries them once the cause is fixed.";

/// What the relay's queue holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayQueue {
    /// Messages held.
    pub messages: usize,
    /// How long the oldest has waited.
    pub oldest: Option<Duration>,
}

/// The `relay_queue` check.
pub struct RelayQueueProbe {
    /// The command, run by `sh -c`.
    pub command: String,
    /// Above this many messages, `warn`.
    pub warn_above: usize,
}

impl Probe for RelayQueueProbe {
    fn name(&self) -> &'static str {
        "relay_queue"
    }

    fn probe<'a>(&'a self, _db: Option<&'a PgPool>) -> ProbeFuture<'a> {
        Box::pin(async move {
            let read = read(&self.command, RELAY_QUEUE_TIMEOUT).await;
            describe(read, self.warn_above)
        })
    }
}

/// Runs `command` (by `sh -c`, at most `timeout`) and reads its `postqueue -j` lines.
///
/// # Errors
///
/// Why the queue is not known: the command could not run, failed, hung or printed a line
/// that is not a message.
pub async fn read(command: &str, timeout: Duration) -> Result<RelayQueue, String> {
    let output = tokio::process::Command::new("sh")
        .args(["-c", command])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = match tokio::time::timeout(timeout, output).await {
        Err(_) => return Err(format!("`{command}` did not finish within {timeout:?}")),
        Ok(Err(err)) => return Err(format!("cannot run `{command}`: {err}")),
        Ok(Ok(output)) => output,
    };
    if !output.status.success() {
        let said = String::from_utf8_lossy(&output.stderr);
        return Err(format!(
            "`{command}` failed ({}): {}",
            output.status,
            said.trim().lines().next().unwrap_or("no message")
        ));
    }
    let now = chrono::Utc::now().timestamp();
    let mut queue = RelayQueue {
        messages: 0,
        oldest: None,
    };
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        if line.trim().is_empty() {
            continue;
        }
        let message: serde_json::Value = serde_json::from_str(line)
            .map_err(|err| format!("`{command}` printed a line that is not JSON: {err}"))?;
        let arrival = message["arrival_time"]
            .as_i64()
            .ok_or_else(|| format!("`{command}` printed a message without `arrival_time`"))?;
        let age = Duration::from_secs(u64::try_from(now - arrival).unwrap_or(0));
        queue.messages += 1;
        queue.oldest = Some(queue.oldest.map_or(age, |oldest| oldest.max(age)));
    }
    Ok(queue)
}

/// The finding (and the gauges) for what was read.
pub fn describe(read: Result<RelayQueue, String>, warn_above: usize) -> Finding {
    let queue = match read {
        Ok(queue) => queue,
        Err(why) => return Finding::new("relay_queue", Verdict::Unknown, why, ADVICE),
    };
    let oldest = queue.oldest.unwrap_or_default();
    metrics::gauge!(RELAY_QUEUE_MESSAGES).set(queue.messages as f64);
    metrics::gauge!(RELAY_QUEUE_OLDEST_AGE).set(oldest.as_secs_f64());
    if queue.messages == 0 {
        return Finding::new("relay_queue", Verdict::Ok, "empty", ADVICE);
    }
    let detail = format!(
        "{} {} held, the oldest for {} (warn above {warn_above})",
        queue.messages,
        if queue.messages == 1 {
            "message"
        } else {
            "messages"
        },
        crate::ops::age(oldest.as_secs_f64())
    );
    let verdict = if queue.messages > warn_above {
        Verdict::Warn
    } else {
        Verdict::Ok
    };
    Finding::new("relay_queue", verdict, detail, ADVICE)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two messages as Postfix's `postqueue -j` prints them, one queued an hour ago.
    fn postqueue(now: i64) -> String {
        format!(
            "printf '%s\\n' '{{\"queue_name\": \"deferred\", \"queue_id\": \"4DxQ3L2Fbz\", \"arrival_time\": {}, \"message_size\": 1432, \"forced_expire\": false, \"sender\": \"bounce+x@bounces.example.com\", \"recipients\": [{{\"address\": \"ann@example.net\", \"delay_reason\": \"connect to mx.example.net[192.0.2.1]:25: Connection timed out\"}}]}}' '{{\"queue_name\": \"active\", \"queue_id\": \"4DxQ3L2Fc0\", \"arrival_time\": {}, \"message_size\": 980, \"forced_expire\": false, \"sender\": \"app@example.com\", \"recipients\": [{{\"address\": \"bob@example.org\"}}]}}'",
            now - 3600,
            now - 5
        )
    }

    #[tokio::test]
    async fn a_postqueue_listing_is_counted_and_its_oldest_aged() {
        let now = chrono::Utc::now().timestamp();
        let queue = read(&postqueue(now), RELAY_QUEUE_TIMEOUT).await.unwrap();
        assert_eq!(queue.messages, 2);
        let oldest = queue.oldest.unwrap().as_secs();
        assert!((3599..3700).contains(&oldest), "{oldest}");
        let finding = describe(Ok(queue), 100);
        assert_eq!(finding.verdict, Verdict::Ok);
        assert!(
            finding
                .detail
                .starts_with("2 messages held, the oldest for"),
            "{}",
            finding.detail
        );
        assert_eq!(describe(Ok(queue), 1).verdict, Verdict::Warn);
        let empty = read("true", RELAY_QUEUE_TIMEOUT).await.unwrap();
        assert_eq!(describe(Ok(empty), 0).detail, "empty");
    }

    #[tokio::test]
    async fn a_command_that_hangs_fails_or_prints_something_else_is_unknown_never_down() {
        let started = std::time::Instant::now();
        let hung = read("sleep 30", Duration::from_millis(300)).await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the command was not cut off"
        );
        let failed = read(
            "echo 'postqueue: fatal: Queue report unavailable' >&2; exit 69",
            RELAY_QUEUE_TIMEOUT,
        )
        .await;
        let garbage = read("echo 'Mail queue is empty'", RELAY_QUEUE_TIMEOUT).await;
        for (read, says) in [
            (hung, "did not finish"),
            (failed, "Queue report unavailable"),
            (garbage, "not JSON"),
        ] {
            let finding = describe(read, 100);
            assert_eq!(finding.verdict, Verdict::Unknown, "{}", finding.detail);
            assert!(finding.detail.contains(says), "{}", finding.detail);
        }
    }
}
