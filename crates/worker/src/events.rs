//! The `event` field values of the runtime's log lines: DESIGN.md's families, spelled once.

/// A job was enqueued (logged by `docket-queue`).
pub const JOB_ENQUEUED: &str = docket_queue::enqueue::EVENT_ENQUEUED;
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
/// The worker could not renew its lease in time and handed back its running jobs.
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
