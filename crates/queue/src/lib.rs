//! # docket-queue
//!
//! The job table and everything done to it: enqueue, claim, outcomes, operator actions,
//! the snapshot, and the maintenance primitives. Every function takes a sqlx Postgres
//! executor, so callers choose the connection or transaction.
//!
//! # Layout
//!
//! - [`job`]: the job model (`Job`, `JobId`, `JobState`).
//! - [`enqueue`]: `NewJob`, typed `JobArgs`, single and bulk enqueue.
//! - [`claim`]: the ready → processing step (`FOR UPDATE SKIP LOCKED`).
//! - [`outcome`]: complete, retry, dead-letter, snooze, cancel; batched and fenced.
//! - [`pooler`]: statements safe behind a transaction-mode pooler (unnamed, each in a
//!   transaction).
//! - [`backoff`]: retry delays, exponential or a ladder. Pure.
//! - [`queues`]: queue controls: pause and resume for every process.
//! - [`rate_limit`]: token buckets that hold over every process together.
//! - [`batch`]: batches: jobs enqueued together, progress, an exactly-once callback.
//! - [`admin`]: show, list (keyset), cancel, replay, bulk replay of dead letters.
//! - [`cron`]: cron schedules in the database: registration, exactly-once ticks, pause,
//!   and the one schedule type (`Schedule`) every crate uses.
//! - [`snapshot`]: the monitors' queue snapshot.
//! - [`maintenance`]: heartbeats, rescue of lapsed leases, pruning.
//! - [`backup`]: what a backup holds (rows per table, jobs per state) and the restore
//!   checks' record.
//! - [`telemetry`]: every log event and metric name, of every crate.
//! - [`trace`]: W3C trace context stored with jobs, and the spans' ties to it.
//! - [`health`]: the health judgement over the snapshot and the workers.
//! - [`workers`]: the worker model (`WorkerInfo`, `Worker`), registered workers, kinds no
//!   live worker runs, migration status.
//! - `db`: every SQL statement (private), one module per table.
//! - [`error`]: `Error`, `Result`, `ErrorChain`.
//!
//! It starts no tasks, and its only timers are the health evaluation's bounds: the worker
//! runtime decides when to call what.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod admin;
pub mod backoff;
pub mod backup;
pub mod batch;
pub mod claim;
pub mod cron;
mod db;
pub mod enqueue;
pub mod error;
pub mod health;
pub mod job;
pub mod maintenance;
pub mod outcome;
pub mod pooler;
pub mod queues;
pub mod rate_limit;
pub mod snapshot;
pub mod telemetry;
pub mod trace;
pub mod workers;

pub use admin::{DeadLetterFilter, ListFilter, Page};
pub use backoff::Backoff;
pub use claim::{
    claim, claim_fair, claim_resuming, ClaimCursor, ClaimRequest, Claimed, GroupCursor,
    HEAD_SCAN_BUDGET, HEAD_SCAN_EVERY,
};
pub use enqueue::{enqueue, enqueue_many, enqueue_or_find, Enqueued, JobArgs, NewJob};
pub use error::{Error, ErrorChain, Result};
pub use job::{AttemptError, Job, JobId, JobState};
pub use maintenance::WorkerInfo;
pub use outcome::{apply_outcomes, Applied, AttemptOutcome, Outcome};
pub use pooler::{pooled, pooled_conn, Pooler};
pub use snapshot::{snapshot, QueueFigures, Snapshot};

/// `n` with the word that fits it, for a person: `1 dead letter`, `2 dead letters`.
pub fn counted(n: impl std::fmt::Display, one: &str, many: &str) -> String {
    let n = n.to_string();
    let word = if n == "1" { one } else { many };
    format!("{n} {word}")
}

/// The embedded migrations (`migrations/` at the workspace root). Apply them with
/// [`migrate`] before any worker or listener starts.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// Applies every pending migration.
///
/// # Errors
///
/// [`Error::Migrate`] when a migration fails or the applied history does not match.
pub async fn migrate(pool: &sqlx::PgPool) -> Result<()> {
    Ok(MIGRATOR.run(pool).await?)
}
