//! Every log `event` value and metric name of every crate, spelled once. DESIGN.md's
//! families: `background_job.*`, `worker.*`, `health_check.*`, `http.*`. The test below
//! keeps `docs/operations.md` listing each of them.

/// The `event` field values of log lines.
pub mod event {
    /// A job was enqueued from Rust, HTTP or the command line.
    pub const JOB_ENQUEUED: &str = "background_job.enqueued";
    /// A job was claimed and its handler started.
    pub const JOB_STARTED: &str = "background_job.started";
    /// A job's handler succeeded and the outcome was written.
    pub const JOB_COMPLETED: &str = "background_job.completed";
    /// A job failed and will be retried.
    pub const JOB_RETRYING: &str = "background_job.retrying";
    /// A job went to the dead-letter state.
    pub const JOB_DEAD_LETTER: &str = "background_job.dead_letter";
    /// A job whose worker's lease lapsed was freed by the rescuer.
    pub const JOB_RESCUED: &str = "background_job.rescued";
    /// A job was snoozed or handed back without spending an attempt.
    pub const JOB_SNOOZED: &str = "background_job.snoozed";
    /// A job stopped because it was cancelled.
    pub const JOB_CANCELLED: &str = "background_job.cancelled";
    /// A job the database gave this worker but that was not running here (a claim whose
    /// reply was lost, an executor that died) was handed back without spending its attempt.
    pub const JOB_HANDED_BACK: &str = "background_job.handed_back";
    /// A ready job passed its `expires_at` and was dead-lettered by the expiry sweep.
    pub const JOB_EXPIRED: &str = "background_job.expired";
    /// Ready jobs of a queue and kind that no live worker runs were parked out of the claim's
    /// way (they stay ready; the health check lists them as unhandled).
    pub const JOBS_PARKED: &str = "background_job.parked";
    /// The database refused an outcome's data; a failed attempt was recorded instead.
    pub const JOB_OUTCOME_REFUSED: &str = "background_job.outcome_refused";
    /// An outcome was dropped because this worker no longer held the job.
    pub const JOB_FENCED: &str = "background_job.fenced";

    /// The worker registered and started.
    pub const WORKER_STARTED: &str = "worker.started";
    /// The worker could not prove its lease held (it could not renew in time, or the lease
    /// lapsed while it stalled, or the database gave one of its runs away) and stopped and
    /// handed back those runs.
    pub const LEASE_LOST: &str = "worker.lease_lost";
    /// The worker renewed a lease it had lost, and claims again.
    pub const LEASE_RENEWED: &str = "worker.lease_renewed";
    /// A background part of the worker failed and will try again.
    pub const WORKER_ERROR: &str = "worker.error";
    /// Shutdown began: claiming stopped.
    pub const SHUTDOWN_STARTED: &str = "worker.shutdown.started";
    /// Every running job finished within the shutdown timeout.
    pub const SHUTDOWN_DRAINED: &str = "worker.shutdown.drained";
    /// Jobs still running at the deadline were stopped and handed back.
    pub const SHUTDOWN_RELEASED: &str = "worker.shutdown.released";
    /// The completer wrote every buffered outcome.
    pub const SHUTDOWN_FLUSHED: &str = "worker.shutdown.flushed";
    /// The worker deregistered and stopped.
    pub const SHUTDOWN_COMPLETED: &str = "worker.shutdown.completed";

    /// A maintenance service's run did something worth reporting.
    pub const MAINTENANCE_RUN: &str = "worker.maintenance";

    /// A schedule's tick was enqueued (once, over all processes).
    pub const CRON_ENQUEUED: &str = "background_job_cron.enqueued";
    /// Due ticks were dropped by a schedule's catch-up policy.
    pub const CRON_MISSED: &str = "background_job_cron.missed";
    /// A tick was skipped: the batch of an earlier tick still runs (overlap `skip`).
    pub const CRON_SKIPPED: &str = "background_job_cron.skipped";
    /// A schedule was paused (for every process).
    pub const CRON_PAUSED: &str = "background_job_cron.paused";
    /// A schedule was resumed.
    pub const CRON_RESUMED: &str = "background_job_cron.resumed";
    /// A schedule's tick could not be enqueued; the next run tries again.
    pub const CRON_FAILED: &str = "background_job_cron.failed";
    /// Another live process declares a schedule of this name differently.
    pub const CRON_CONFLICT: &str = "background_job_cron.conflict";
    /// A retired schedule (no live process declares it) was removed.
    pub const CRON_REMOVED: &str = "background_job_cron.removed";
    /// A batch was created with its jobs.
    pub const BATCH_CREATED: &str = "background_job_batch.created";
    /// An open batch's progress, every `BATCH_PROGRESS_EVERY` while it runs.
    pub const BATCH_PROGRESS: &str = "background_job_batch.progress";
    /// Every job of a batch is final: the batch is finished, with its counts.
    pub const BATCH_COMPLETED: &str = "background_job_batch.completed";
    /// A finished batch's callback job was enqueued (once).
    pub const BATCH_CALLBACK_ENQUEUED: &str = "background_job_batch.callback_enqueued";
    /// A campaign was created; its batch jobs start sending at once.
    pub const CAMPAIGN_CREATED: &str = "campaign_batch.campaign_created";
    /// Every recipient of a campaign is final.
    pub const CAMPAIGN_FINISHED: &str = "campaign_batch.campaign_finished";
    /// A batch job stopped for a paused campaign, or found it cancelled.
    pub const CAMPAIGN_PAUSED: &str = "campaign_batch.paused";
    /// A recipient used a campaign email's one-click unsubscribe link: the address is on
    /// the suppression list (reason `unsubscribed`).
    pub const CAMPAIGN_UNSUBSCRIBED: &str = "campaign_batch.unsubscribed";
    /// An unsubscribe link was refused (malformed, tampered with, or naming no delivery);
    /// nothing changed.
    pub const CAMPAIGN_UNSUBSCRIBE_REFUSED: &str = "campaign_batch.unsubscribe_refused";
    /// The relay's setup is wrong (authentication, TLS): retried without spending the
    /// recipients' attempts; `checks.mail` is degraded until a message goes through.
    pub const MAIL_CONFIG_FAULT: &str = "mail.config_fault";
    /// A job was made to notify the admin address (campaign finished, dead letters).
    pub const MAIL_NOTIFIED: &str = "mail.notified";
    /// A message handed to bounce ingestion was read: `outcome` `bounced` (the delivery is
    /// `bounced`), `delayed` (nothing changed) or `ignored` (with its `reason`).
    pub const MAIL_BOUNCE: &str = "mail.bounce";
    /// A process that runs the mail kinds started in stub mode: nothing it handles is sent.
    pub const MAIL_STUB: &str = "mail.stub";

    /// A process started behind a transaction-mode pooler: no LISTEN, so a job enqueued into
    /// an idle queue waits up to the poll interval.
    pub const POOLER_TRANSACTION: &str = "worker.pooler_transaction";
    /// A queue was paused: this worker claims none of its jobs until it is resumed.
    pub const QUEUE_PAUSED: &str = "worker.queue_paused";
    /// A paused queue was resumed.
    pub const QUEUE_RESUMED: &str = "worker.queue_resumed";

    /// SIGTERM or SIGINT reached the binary.
    pub const SHUTDOWN_SIGNAL: &str = "worker.shutdown.signal";
    /// A second signal: the binary exits at once.
    pub const SHUTDOWN_FORCED: &str = "worker.shutdown.forced";
    /// Connections still stuck mid-statement at exit were abandoned, not waited for.
    pub const SHUTDOWN_POOL_ABANDONED: &str = "worker.shutdown.pool_abandoned";

    /// The health status became degraded or down (once per change).
    pub const HEALTH_DEGRADED: &str = "health_check.degraded";
    /// The health status is ok again.
    pub const HEALTH_RECOVERED: &str = "health_check.recovered";
    /// One part of the health evaluation failed or timed out.
    pub const HEALTH_DATABASE: &str = "health_check.database";
    /// A request with a wrong bearer token was refused.
    pub const HEALTH_AUTH_FAILED: &str = "health_check.auth_failed";
    /// `serve` started without `CRON_SECRET`.
    pub const HEALTH_NO_SECRET: &str = "health_check.no_secret";

    /// `docket backup` wrote a backup (and its manifest) and pruned the oldest beyond the
    /// number kept.
    pub const BACKUP_TAKEN: &str = "backup.taken";
    /// `docket backup` failed (`pg_dump` missing or failing, the directory, the disk).
    pub const BACKUP_FAILED: &str = "backup.failed";
    /// `docket restore-check` restored a backup into a scratch database and recorded the
    /// verdict (`ok`, or `failure`).
    pub const RESTORE_CHECKED: &str = "backup.restore_checked";

    /// One HTTP request was answered.
    pub const HTTP_REQUEST: &str = "http.request";
    /// A request failed on the server's side.
    pub const HTTP_ERROR: &str = "http.error";
    /// The HTTP listener opened.
    pub const HTTP_LISTENING: &str = "http.listening";
    /// The HTTP listener closed.
    pub const HTTP_STOPPED: &str = "http.stopped";
    /// Requests still in flight when the drain time ran out were dropped.
    pub const HTTP_DRAIN_TIMEOUT: &str = "http.drain_timeout";

    /// Every event, for the test that keeps `docs/operations.md` complete.
    pub const ALL: &[&str] = &[
        JOB_ENQUEUED,
        JOB_STARTED,
        JOB_COMPLETED,
        JOB_RETRYING,
        JOB_DEAD_LETTER,
        JOB_RESCUED,
        JOB_SNOOZED,
        JOB_CANCELLED,
        JOB_HANDED_BACK,
        JOB_EXPIRED,
        JOBS_PARKED,
        JOB_OUTCOME_REFUSED,
        JOB_FENCED,
        WORKER_STARTED,
        LEASE_LOST,
        LEASE_RENEWED,
        WORKER_ERROR,
        SHUTDOWN_STARTED,
        SHUTDOWN_DRAINED,
        SHUTDOWN_RELEASED,
        SHUTDOWN_FLUSHED,
        SHUTDOWN_COMPLETED,
        MAINTENANCE_RUN,
        CRON_ENQUEUED,
        CRON_MISSED,
        CRON_SKIPPED,
        CRON_PAUSED,
        CRON_RESUMED,
        CRON_FAILED,
        CRON_CONFLICT,
        CRON_REMOVED,
        BATCH_CREATED,
        BATCH_PROGRESS,
        BATCH_COMPLETED,
        BATCH_CALLBACK_ENQUEUED,
        SHUTDOWN_SIGNAL,
        SHUTDOWN_FORCED,
        SHUTDOWN_POOL_ABANDONED,
        HEALTH_DEGRADED,
        HEALTH_RECOVERED,
        HEALTH_DATABASE,
        HEALTH_AUTH_FAILED,
        HEALTH_NO_SECRET,
        BACKUP_TAKEN,
        BACKUP_FAILED,
        RESTORE_CHECKED,
        HTTP_REQUEST,
        HTTP_ERROR,
        HTTP_LISTENING,
        HTTP_STOPPED,
        HTTP_DRAIN_TIMEOUT,
        CAMPAIGN_CREATED,
        CAMPAIGN_FINISHED,
        CAMPAIGN_PAUSED,
        CAMPAIGN_UNSUBSCRIBED,
        CAMPAIGN_UNSUBSCRIBE_REFUSED,
        MAIL_CONFIG_FAULT,
        MAIL_NOTIFIED,
        MAIL_BOUNCE,
        MAIL_STUB,
        POOLER_TRANSACTION,
        QUEUE_PAUSED,
        QUEUE_RESUMED,
    ];

    /// The events of one kind of email, `<family>.<what>`: `recovery_email`, `admin_email`,
    /// `campaign_batch` (one recipient of a campaign). Each carries the delivery's id (and
    /// the campaign's), never a body or a credential.
    #[derive(Debug)]
    pub struct MailEvents {
        /// The delivery was recorded, waiting for its attempt.
        pub queued: &'static str,
        /// The relay accepted it.
        pub sent: &'static str,
        /// A temporary failure: retried on the ladder.
        pub retrying: &'static str,
        /// The relay asked to slow down: held without spending the attempt.
        pub throttled: &'static str,
        /// Refused permanently (5xx).
        pub failed: &'static str,
        /// Not sent: the suppression list or stub mode.
        pub suppressed: &'static str,
        /// Not sent before its job's `expires_at`.
        pub expired: &'static str,
        /// Given up: the ladder ran out, or the template failed.
        pub dead_letter: &'static str,
        /// Its exchange was cut off with no outcome recorded: may have been sent; never
        /// sent again unasked.
        pub unknown: &'static str,
    }

    macro_rules! mail_events {
        ($family:literal) => {
            MailEvents {
                queued: concat!($family, ".queued"),
                sent: concat!($family, ".sent"),
                retrying: concat!($family, ".retrying"),
                throttled: concat!($family, ".throttled"),
                failed: concat!($family, ".failed"),
                suppressed: concat!($family, ".suppressed"),
                expired: concat!($family, ".expired"),
                dead_letter: concat!($family, ".dead_letter"),
                unknown: concat!($family, ".unknown"),
            }
        };
    }

    /// `recovery_email.*`.
    pub const RECOVERY_EMAIL: MailEvents = mail_events!("recovery_email");
    /// `admin_email.*`.
    pub const ADMIN_EMAIL: MailEvents = mail_events!("admin_email");
    /// `campaign_batch.*`: one recipient of a campaign.
    pub const CAMPAIGN_EMAIL: MailEvents = mail_events!("campaign_batch");

    impl MailEvents {
        /// Every event of the family.
        pub fn all(&self) -> [&'static str; 9] {
            [
                self.queued,
                self.sent,
                self.retrying,
                self.throttled,
                self.failed,
                self.suppressed,
                self.expired,
                self.dead_letter,
                self.unknown,
            ]
        }
    }
}

/// Metric names (Prometheus).
pub mod metric {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock, PoisonError};

    /// Most values one [`BoundedLabel`] takes; later new values are counted as `other`.
    pub const LABEL_VALUES: usize = 100;

    /// A label whose values come from callers (queue and kind names of enqueued jobs): the
    /// first [`LABEL_VALUES`] distinct values are kept, every later one is `other`, so no
    /// caller can grow the series without bound.
    pub struct BoundedLabel(OnceLock<Mutex<HashSet<String>>>);

    impl BoundedLabel {
        /// A label with no value seen yet.
        pub const fn new() -> BoundedLabel {
            BoundedLabel(OnceLock::new())
        }

        /// `value` itself when it was seen before or there is room, else `other`.
        pub fn value(&self, value: &str) -> String {
            let mut seen = self
                .0
                .get_or_init(Mutex::default)
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if seen.contains(value) {
                return value.to_owned();
            }
            if seen.len() < LABEL_VALUES {
                seen.insert(value.to_owned());
                return value.to_owned();
            }
            "other".to_owned()
        }
    }

    impl Default for BoundedLabel {
        fn default() -> Self {
            BoundedLabel::new()
        }
    }

    /// Jobs enqueued, by queue and kind (duplicates of a live unique key included).
    pub const JOBS_ENQUEUED: &str = "docket_jobs_enqueued_total";
    /// Jobs that reached a state through an outcome, a rescue or the expiry sweep, by queue,
    /// kind and that state.
    pub const JOBS_FINISHED: &str = "docket_jobs_outcomes_total";
    /// Handler run time in seconds, by queue and kind.
    pub const JOB_DURATION: &str = "docket_job_duration_seconds";
    /// Jobs started, by queue and kind.
    pub const JOBS_STARTED: &str = "docket_jobs_started_total";
    /// Jobs a queue's producer claims ahead of its free slots at most (its look-ahead: the
    /// auto prefetch's current size, or the fixed prefetch), by queue.
    pub const PREFETCH_AHEAD: &str = "docket_worker_prefetch_ahead";
    /// Outcomes dropped because the worker no longer held the job.
    pub const JOBS_FENCED: &str = "docket_jobs_fenced_total";
    /// Jobs freed by the rescuer, by queue and kind.
    pub const JOBS_RESCUED: &str = "docket_jobs_rescued_total";
    /// Jobs deleted by the pruner, by state.
    pub const JOBS_PRUNED: &str = "docket_jobs_pruned_total";
    /// Schedule ticks, by schedule and outcome (`enqueued`, `missed`).
    pub const CRON_TICKS: &str = "docket_cron_ticks_total";
    /// Seconds since each schedule's last tick (enqueued or missed), by schedule.
    pub const CRON_LAST_TICK_AGE: &str = "docket_cron_last_tick_age_seconds";
    /// Batches not finished yet.
    pub const BATCHES_OPEN: &str = "docket_batches_open";
    /// HTTP requests, by method, route and status.
    pub const HTTP_REQUESTS: &str = "docket_http_requests_total";
    /// HTTP request duration in seconds, by method and route.
    pub const HTTP_DURATION: &str = "docket_http_request_duration_seconds";
    /// Requests refused for a wrong bearer token.
    pub const AUTH_FAILURES: &str = "docket_http_auth_failures_total";
    /// Jobs per queue and state (pending, retrying, processing, dead_letter).
    pub const QUEUE_JOBS: &str = "docket_queue_jobs";
    /// Seconds the oldest ready job of a queue has waited (0 when none is ready).
    pub const QUEUE_OLDEST_READY_AGE: &str = "docket_queue_oldest_ready_age_seconds";
    /// Workers with a fresh heartbeat.
    pub const WORKERS_LIVE: &str = "docket_workers_live";
    /// 1 when the health status is this one, else 0, by status.
    pub const HEALTH_STATUS: &str = "docket_health_status";

    /// Seconds since the newest backup was taken (`+Inf` when there is none).
    pub const BACKUP_AGE: &str = "docket_backup_age_seconds";
    /// Size of the newest backup in bytes.
    pub const BACKUP_SIZE: &str = "docket_backup_size_bytes";
    /// Seconds since the last restore check (`+Inf` when none was recorded).
    pub const RESTORE_CHECK_AGE: &str = "docket_restore_check_age_seconds";
    /// 1 when the last restore check passed, 0 when it failed.
    pub const RESTORE_CHECK_OK: &str = "docket_restore_check_ok";
    /// Messages the relay still holds (its own queue, as the configured command says).
    pub const RELAY_QUEUE_MESSAGES: &str = "docket_relay_queue_messages";
    /// Seconds the oldest message has waited in the relay's queue (0 when it is empty).
    pub const RELAY_QUEUE_OLDEST_AGE: &str = "docket_relay_queue_oldest_age_seconds";

    /// Deliveries that reached a status, by source and status.
    pub const MAIL_DELIVERIES: &str = "docket_mail_deliveries_total";
    /// SMTP exchange time in seconds, by outcome class.
    pub const MAIL_SEND_DURATION: &str = "docket_mail_send_duration_seconds";
    /// Times a sender waited for the relay-wide rate limit, by source.
    pub const MAIL_RATE_LIMIT_WAITS: &str = "docket_mail_rate_limit_waits_total";
    /// Configuration faults (authentication, TLS) seen by this process.
    pub const MAIL_CONFIG_FAULTS: &str = "docket_mail_config_faults_total";
    /// Messages handed to bounce ingestion, by outcome (`bounced`, `delayed`, `ignored`).
    pub const MAIL_BOUNCES: &str = "docket_mail_bounces_total";
    /// One-click unsubscribes taken (each delivery's link counts once).
    pub const MAIL_UNSUBSCRIBES: &str = "docket_mail_unsubscribes_total";

    /// Every metric, for the test that keeps `docs/operations.md` complete.
    pub const ALL: &[&str] = &[
        JOBS_ENQUEUED,
        JOBS_FINISHED,
        JOB_DURATION,
        JOBS_STARTED,
        JOBS_FENCED,
        PREFETCH_AHEAD,
        JOBS_RESCUED,
        JOBS_PRUNED,
        CRON_TICKS,
        CRON_LAST_TICK_AGE,
        BATCHES_OPEN,
        HTTP_REQUESTS,
        HTTP_DURATION,
        AUTH_FAILURES,
        QUEUE_JOBS,
        QUEUE_OLDEST_READY_AGE,
        WORKERS_LIVE,
        HEALTH_STATUS,
        BACKUP_AGE,
        BACKUP_SIZE,
        RESTORE_CHECK_AGE,
        RESTORE_CHECK_OK,
        RELAY_QUEUE_MESSAGES,
        RELAY_QUEUE_OLDEST_AGE,
        MAIL_DELIVERIES,
        MAIL_SEND_DURATION,
        MAIL_RATE_LIMIT_WAITS,
        MAIL_CONFIG_FAULTS,
        MAIL_UNSUBSCRIBES,
        MAIL_BOUNCES,
    ];
}

#[cfg(test)]
mod tests {
    /// The names in the first column of the table under `heading` in `doc`.
    fn first_column(doc: &str, heading: &str) -> Vec<String> {
        let section = doc
            .split("\n## ")
            .find(|s| s.starts_with(heading))
            .unwrap_or_else(|| panic!("docs/operations.md has no section {heading:?}"));
        section
            .lines()
            .filter(|line| line.starts_with("| `"))
            .flat_map(|line| {
                let cell = line.split('|').nth(1).unwrap_or("");
                cell.split('`')
                    .skip(1)
                    .step_by(2)
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// A name in the operations doc that the code does not emit sends operators looking for
    /// something that never comes.
    #[test]
    fn every_event_and_metric_documented_in_operations_md_exists() {
        let doc = include_str!("../../../docs/operations.md");
        let mail = [
            super::event::RECOVERY_EMAIL.all(),
            super::event::ADMIN_EMAIL.all(),
            super::event::CAMPAIGN_EMAIL.all(),
        ];
        let events: Vec<&str> = super::event::ALL
            .iter()
            .copied()
            .chain(mail.iter().flatten().copied())
            .collect();
        let documented = first_column(doc, "Log events");
        assert!(documented.len() > 50, "{documented:?}");
        for name in documented {
            assert!(
                events.contains(&name.as_str()),
                "docs/operations.md lists event `{name}`, which nothing emits"
            );
        }
        let documented = first_column(doc, "Metrics");
        assert!(documented.len() > 15, "{documented:?}");
        for name in documented {
            assert!(
                super::metric::ALL.contains(&name.as_str()),
                "docs/operations.md lists metric `{name}`, which nothing exports"
            );
        }
    }

    /// A name missing from the operations doc is a name operators cannot look up.
    #[test]
    fn every_event_and_metric_is_documented_in_operations_md() {
        let doc = include_str!("../../../docs/operations.md");
        let mail = [
            super::event::RECOVERY_EMAIL.all(),
            super::event::ADMIN_EMAIL.all(),
            super::event::CAMPAIGN_EMAIL.all(),
        ];
        for name in super::event::ALL
            .iter()
            .chain(super::metric::ALL)
            .chain(mail.iter().flatten())
        {
            assert!(
                doc.contains(&format!("`{name}`")),
                "docs/operations.md lacks `{name}`"
            );
        }
    }
}
