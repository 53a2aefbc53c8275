//! The runtime's configuration: every field documented with its default, defaults as named
//! constants, and `validate` with a message that names what is wrong.

use std::time::Duration;

pub use docket_settings::Prefetch;

/// Jobs run at once per queue unless configured.
pub const CONCURRENCY_DEFAULT: usize = 10;
/// Most jobs one claim takes.
pub const CLAIM_BATCH_DEFAULT: u32 = 100;
/// How often a producer looks for work when no notification came.
pub const POLL_INTERVAL_DEFAULT: Duration = Duration::from_secs(1);
/// Most outcomes one completer statement writes.
pub const COMPLETER_BATCH_DEFAULT: usize = 1000;
/// How long the completer waits for more outcomes before it writes a batch.
pub const COMPLETER_FLUSH_INTERVAL_DEFAULT: Duration = Duration::from_millis(2);
/// How often the worker renews its heartbeat (its lease).
pub const HEARTBEAT_INTERVAL_DEFAULT: Duration = Duration::from_secs(5);
/// How old a worker's heartbeat may get before its jobs are rescued.
pub const LEASE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// How long running jobs get to finish at shutdown.
pub const SHUTDOWN_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// How often the rescuer runs.
pub const RESCUER_INTERVAL_DEFAULT: Duration = Duration::from_secs(15);
/// How long a ready job may wait with no live worker for its queue and kind before it is
/// parked out of the claim's way.
pub const PARK_AFTER_DEFAULT: Duration = Duration::from_secs(60);
/// How often the parker runs.
pub const PARKER_INTERVAL_DEFAULT: Duration = Duration::from_secs(10);
/// How often the pruner runs.
pub const PRUNER_INTERVAL_DEFAULT: Duration = Duration::from_secs(60);
/// How long completed jobs are kept.
pub const COMPLETED_RETENTION_DEFAULT: Duration = Duration::from_secs(24 * 3600);
/// How long cancelled jobs are kept.
pub const CANCELLED_RETENTION_DEFAULT: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long dead letters are kept.
pub const DEAD_LETTER_RETENTION_DEFAULT: Duration = Duration::from_secs(30 * 24 * 3600);
/// Rows one maintenance statement touches.
pub const MAINTENANCE_BATCH_DEFAULT: u32 = 1000;

/// One queue this worker serves.
#[derive(Clone, Debug, PartialEq)]
pub struct QueueConfig {
    /// The queue's name.
    pub name: String,
    /// Jobs of this queue run at once. Default [`CONCURRENCY_DEFAULT`].
    pub concurrency: usize,
    /// Jobs of this queue started per second over every process together (a token
    /// bucket in PostgreSQL, named after the queue); `None`: no limit. Each claim takes
    /// its tokens first, so the rate is never exceeded by more than the bucket's burst
    /// (one second's worth).
    pub rate: Option<docket_queue::rate_limit::Rate>,
    /// Jobs claimed ahead of free slots, to wait in this process for one. With short jobs
    /// a prefetch lets one claim serve many finishing jobs (see `docs/configuration.md`):
    /// prefetched jobs are `processing` under this worker while they wait, so no other
    /// worker can take them, and their `attempted_at` is the claim's time. Default
    /// [`Prefetch::Auto`]: as many as slots free up during one claim's round trip, none for
    /// jobs that run longer than a few round trips; `Fixed(0)`: a job is claimed only when
    /// a slot is free and starts at once.
    pub prefetch: Prefetch,
}

impl QueueConfig {
    /// A queue with the default concurrency and no rate limit.
    pub fn new(name: impl Into<String>) -> Self {
        QueueConfig {
            name: name.into(),
            concurrency: CONCURRENCY_DEFAULT,
            rate: None,
            prefetch: Prefetch::Auto,
        }
    }

    /// Sets the concurrency.
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// Claims up to `prefetch` jobs ahead of free slots, whatever the jobs take (0: none).
    pub fn prefetch(mut self, prefetch: usize) -> Self {
        self.prefetch = Prefetch::Fixed(prefetch);
        self
    }

    /// Sets the prefetch: [`Prefetch::Auto`] or a fixed number.
    pub fn prefetch_mode(mut self, prefetch: Prefetch) -> Self {
        self.prefetch = prefetch;
        self
    }

    /// Limits the rate over every process together.
    pub fn rate(mut self, rate: docket_queue::rate_limit::Rate) -> Self {
        self.rate = Some(rate);
        self
    }

    /// The bucket of this queue's rate, shared by every process that serves it.
    pub(crate) fn rate_limit(&self) -> Option<docket_queue::rate_limit::RateLimit> {
        self.rate.map(|rate| {
            docket_queue::rate_limit::RateLimit::new(format!("queue:{}", self.name), rate)
        })
    }
}

/// How the worker runtime behaves.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// The queues served. Default: [`docket_queue::enqueue::BUILT_IN_QUEUES`] (`default`,
    /// `mail`, `recovery`), each with [`CONCURRENCY_DEFAULT`], as the binary serves them.
    pub queues: Vec<QueueConfig>,
    /// A cap on jobs running at once over all queues; `None` for the sum of the queues'.
    pub global_concurrency: Option<usize>,
    /// Most jobs one claim takes (a claim takes `min(free slots + prefetch, this)`; an auto prefetch is at most this too). Default
    /// [`CLAIM_BATCH_DEFAULT`].
    pub claim_batch: u32,
    /// Whether producers are woken by `LISTEN/NOTIFY`. Turn it off behind PgBouncer in
    /// transaction mode, where LISTEN does not work; polling then does all the work.
    /// Default on.
    pub listen: bool,
    /// How often producers look for work without a notification. Default
    /// [`POLL_INTERVAL_DEFAULT`].
    pub poll_interval: Duration,
    /// Most outcomes per completer statement. Default [`COMPLETER_BATCH_DEFAULT`].
    pub completer_batch: usize,
    /// How long the completer gathers outcomes before writing. Default
    /// [`COMPLETER_FLUSH_INTERVAL_DEFAULT`].
    pub completer_flush_interval: Duration,
    /// How often the heartbeat is renewed. Default [`HEARTBEAT_INTERVAL_DEFAULT`].
    pub heartbeat_interval: Duration,
    /// How stale a worker's heartbeat may get before its jobs are rescued. Default
    /// [`LEASE_TIMEOUT_DEFAULT`].
    pub lease_timeout: Duration,
    /// How long running jobs get to finish at shutdown before they are stopped and handed
    /// back. Default [`SHUTDOWN_TIMEOUT_DEFAULT`].
    pub shutdown_timeout: Duration,
    /// How often the rescuer runs. Default [`RESCUER_INTERVAL_DEFAULT`].
    pub rescuer_interval: Duration,
    /// How often the pruner runs. Default [`PRUNER_INTERVAL_DEFAULT`].
    pub pruner_interval: Duration,
    /// Ready this long with no live worker for its queue and kind: the job is parked
    /// (claims pass it by; the health check lists it as unhandled). Default
    /// [`PARK_AFTER_DEFAULT`].
    pub park_after: Duration,
    /// How often the parker runs. Default [`PARKER_INTERVAL_DEFAULT`].
    pub parker_interval: Duration,
    /// The cron schedules this process declares (and registers). Default none.
    pub schedules: Vec<crate::cron::Schedule>,
    /// Whether this process runs the scheduler for its schedules ([`docket_settings::CRON`]). Default
    /// on; however many processes run it, each tick is enqueued once.
    pub cron: bool,
    /// Completed jobs older than this are deleted. Default [`COMPLETED_RETENTION_DEFAULT`].
    pub completed_retention: Duration,
    /// Cancelled jobs older than this are deleted. Default [`CANCELLED_RETENTION_DEFAULT`].
    pub cancelled_retention: Duration,
    /// Dead letters older than this are deleted. Default [`DEAD_LETTER_RETENTION_DEFAULT`].
    pub dead_letter_retention: Duration,
    /// Rows one rescue or prune statement touches. Default [`MAINTENANCE_BATCH_DEFAULT`].
    pub maintenance_batch: u32,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            queues: docket_queue::enqueue::BUILT_IN_QUEUES
                .into_iter()
                .map(QueueConfig::new)
                .collect(),
            global_concurrency: None,
            claim_batch: CLAIM_BATCH_DEFAULT,
            listen: true,
            poll_interval: POLL_INTERVAL_DEFAULT,
            completer_batch: COMPLETER_BATCH_DEFAULT,
            completer_flush_interval: COMPLETER_FLUSH_INTERVAL_DEFAULT,
            heartbeat_interval: HEARTBEAT_INTERVAL_DEFAULT,
            lease_timeout: LEASE_TIMEOUT_DEFAULT,
            shutdown_timeout: SHUTDOWN_TIMEOUT_DEFAULT,
            rescuer_interval: RESCUER_INTERVAL_DEFAULT,
            pruner_interval: PRUNER_INTERVAL_DEFAULT,
            park_after: PARK_AFTER_DEFAULT,
            parker_interval: PARKER_INTERVAL_DEFAULT,
            schedules: Vec::new(),
            cron: true,
            completed_retention: COMPLETED_RETENTION_DEFAULT,
            cancelled_retention: CANCELLED_RETENTION_DEFAULT,
            dead_letter_retention: DEAD_LETTER_RETENTION_DEFAULT,
            maintenance_batch: MAINTENANCE_BATCH_DEFAULT,
        }
    }
}

/// A configuration value that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("invalid worker configuration: {0}")]
pub struct ConfigError(pub String);

impl RuntimeConfig {
    /// Checks that the configuration can work.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the first field that cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |message: String| Err(ConfigError(message));
        if self.queues.is_empty() {
            return fail("at least one queue is needed".into());
        }
        let mut names: Vec<&str> = self.queues.iter().map(|q| q.name.as_str()).collect();
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|pair| pair[0] == pair[1]) {
            return fail(format!("queue {:?} is listed twice", pair[0]));
        }
        for queue in &self.queues {
            if queue.name.trim().is_empty() {
                return fail("a queue name is empty".into());
            }
            if queue.concurrency == 0 {
                return fail(format!("queue {:?} has concurrency 0", queue.name));
            }
        }
        if self.global_concurrency == Some(0) {
            return fail("global_concurrency must be at least 1".into());
        }
        if self.claim_batch == 0 || self.completer_batch == 0 || self.maintenance_batch == 0 {
            return fail("batch sizes must be at least 1".into());
        }
        if self.poll_interval.is_zero() || self.heartbeat_interval.is_zero() {
            return fail("poll_interval and heartbeat_interval must be above zero".into());
        }
        let mut names: Vec<&str> = self.schedules.iter().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|pair| pair[0] == pair[1]) {
            return fail(format!("schedule {:?} is declared twice", pair[0]));
        }
        for schedule in &self.schedules {
            crate::cron::Cron::of(schedule).map_err(ConfigError)?;
        }
        if self.parker_interval.is_zero() {
            return fail("parker_interval must be above zero".into());
        }
        if self.lease_timeout <= self.heartbeat_interval * 2 {
            return fail(format!(
                "lease_timeout ({:?}) must be more than twice heartbeat_interval ({:?}), or a live worker's jobs get rescued",
                self.lease_timeout, self.heartbeat_interval
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        RuntimeConfig::default().validate().unwrap();
    }

    #[test]
    fn a_lease_shorter_than_two_heartbeats_is_refused() {
        let config = RuntimeConfig {
            lease_timeout: Duration::from_secs(8),
            ..RuntimeConfig::default()
        };
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("lease_timeout"));
    }

    #[test]
    fn duplicate_and_idle_queues_are_refused() {
        let twice = RuntimeConfig {
            queues: vec![QueueConfig::new("a"), QueueConfig::new("a")],
            ..RuntimeConfig::default()
        };
        assert!(twice
            .validate()
            .unwrap_err()
            .to_string()
            .contains("listed twice"));
        let idle = RuntimeConfig {
            queues: vec![QueueConfig::new("a").concurrency(0)],
            ..RuntimeConfig::default()
        };
        assert!(idle
            .validate()
            .unwrap_err()
            .to_string()
            .contains("concurrency 0"));
    }
}
