//! Cron schedules in the database: every process that runs a scheduler registers its
//! schedules here, and each tick's job is enqueued here, exactly once however many
//! schedulers see it due. Pause state and the last tick live here too, so they hold for
//! every process and across restarts. Which instants are ticks is the worker's business
//! (`docket_worker::schedule`); this module stores and enqueues.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgExecutor;

use crate::db;
use crate::error::{Error, Result};
use crate::job::JobId;

/// A schedule's definition, as registered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScheduleDef {
    /// Unique.
    pub name: String,
    /// The expression as declared.
    pub cron: String,
    /// The kind of each tick's job.
    pub kind: String,
    /// Its payload.
    pub payload: serde_json::Value,
    /// Its queue.
    pub queue: String,
    /// Its priority.
    pub priority: i16,
    /// Its attempts.
    pub max_attempts: i32,
    /// The IANA zone the expression is read in.
    pub timezone: String,
    /// `skip`, `latest` or `all`.
    pub catch_up: String,
    /// `allow`, or `skip`: no tick while an earlier tick's job or its batch still runs.
    pub overlap: String,
}

/// What became of one tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tick {
    /// This call enqueued its job.
    Enqueued(JobId),
    /// Skipped (overlap `skip`): an earlier tick's job or its batch still runs.
    Skipped,
    /// Nothing to do here: another scheduler dealt with it, or the schedule is paused or
    /// already past it.
    Elsewhere,
}

/// A schedule as stored: its definition and its state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScheduleRow {
    /// Its definition, as last registered.
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub def: ScheduleDef,
    /// Paused: no tick is enqueued, by any process, until it is resumed.
    pub paused: bool,
    /// The newest tick dealt with (enqueued, or missed by the catch-up policy).
    pub last_tick_at: Option<DateTime<Utc>>,
    /// The next tick, as the last scheduler run computed it.
    pub next_tick_at: Option<DateTime<Utc>>,
    /// When it was first registered; ticks count from here until the first.
    pub registered_at: DateTime<Utc>,
    /// The batch of its last tick that made one (a cron batch).
    pub last_batch_id: Option<uuid::Uuid>,
    /// That batch's jobs.
    pub last_batch_total: Option<i32>,
    /// Of those, not final yet: still running when above zero.
    pub last_batch_remaining: Option<i32>,
    /// When that batch finished.
    pub last_batch_finished_at: Option<DateTime<Utc>>,
}

/// The state a scheduler reads each second: whether the schedule is paused and where its
/// ticks stand.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct ScheduleState {
    /// Unique.
    pub name: String,
    /// Paused: no tick is enqueued until it is resumed.
    pub paused: bool,
    /// The newest tick dealt with.
    pub last_tick_at: Option<DateTime<Utc>>,
    /// The next tick, as last recorded.
    pub next_tick_at: Option<DateTime<Utc>>,
    /// When it was first registered; ticks count from here until the first.
    pub registered_at: DateTime<Utc>,
    /// When it was last resumed: a tick due before that fell inside the pause.
    pub resumed_at: Option<DateTime<Utc>>,
}

/// Every schedule's state, for the scheduler: one cheap read, without the definitions and
/// the batch lookups of [`list`].
///
/// # Errors
///
/// [`Error::Database`] when the database fails.
pub async fn states(exec: impl PgExecutor<'_>) -> Result<Vec<ScheduleState>> {
    Ok(db::schedule_states(exec).await?)
}

/// Registers a schedule, or updates its definition, with its next tick (shown from then
/// on, before any scheduler ran); its pause and last tick stay.
///
/// # Errors
///
/// [`Error::Database`] when the database fails.
pub async fn register(
    exec: impl PgExecutor<'_>,
    def: &ScheduleDef,
    next_tick_at: Option<DateTime<Utc>>,
) -> Result<()> {
    Ok(db::schedule_register(exec, def, next_tick_at).await?)
}

/// One schedule's state, its row locked until the transaction `exec` belongs to ends: a
/// pause (and another scheduler) waits, so what a scheduler enqueues and how far it moves
/// the schedule are decided on a state that holds until they are done. `None` for an
/// unknown schedule.
///
/// # Errors
///
/// [`Error::Database`] when the database fails.
pub async fn lock_state(exec: impl PgExecutor<'_>, name: &str) -> Result<Option<ScheduleState>> {
    Ok(db::schedule_state_lock(exec, name).await?)
}

/// Every registered schedule, by name.
///
/// # Errors
///
/// [`Error::Database`] when the database fails.
pub async fn list(exec: impl PgExecutor<'_>) -> Result<Vec<ScheduleRow>> {
    Ok(db::schedule_list(exec).await?)
}

/// Enqueues the job of `name`'s tick at `tick_at` (its `run_at` is the tick), unless that
/// tick was dealt with already, by any process, ever, or the schedule is paused or past
/// it, or (overlap `skip`) an earlier tick's job or batch still runs.
///
/// # Errors
///
/// [`Error::Database`] when the database fails.
pub async fn enqueue_tick(
    exec: impl PgExecutor<'_>,
    name: &str,
    tick_at: DateTime<Utc>,
) -> Result<Tick> {
    Ok(
        match db::schedule_tick_enqueue(exec, name, tick_at).await? {
            (Some(job), _) => Tick::Enqueued(job),
            (None, true) => Tick::Skipped,
            (None, false) => Tick::Elsewhere,
        },
    )
}

/// Moves `name` past ticks it will not enqueue (never back, and not while it is paused),
/// and records its next tick.
///
/// # Errors
///
/// [`Error::Database`] when the database fails.
pub async fn advance(
    exec: impl PgExecutor<'_>,
    name: &str,
    last_tick_at: Option<DateTime<Utc>>,
    next_tick_at: Option<DateTime<Utc>>,
) -> Result<()> {
    Ok(db::schedule_advance(exec, name, last_tick_at, next_tick_at).await?)
}

/// Pauses (`true`) or resumes a schedule, for every process.
///
/// # Errors
///
/// [`Error::InvalidArgument`] for an unknown schedule; [`Error::Database`].
pub async fn set_paused(exec: impl PgExecutor<'_>, name: &str, paused: bool) -> Result<()> {
    // No stored name holds a NUL (PostgreSQL's text cannot), so no schedule has this one.
    if let Err(rule) = crate::job::Name::check("a schedule name", name) {
        return Err(Error::InvalidArgument(format!(
            "no schedule is named {name:?}: {rule}"
        )));
    }
    if db::schedule_set_paused(exec, name, paused).await? {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "no schedule is named {name:?}"
        )))
    }
}

/// Deletes the record of ticks older than `before`. Their schedules are past them, and
/// `last_tick_at` keeps any scheduler from enqueueing them again.
///
/// # Errors
///
/// [`Error::Database`] when the database fails.
pub async fn prune_ticks(exec: impl PgExecutor<'_>, before: DateTime<Utc>) -> Result<u64> {
    Ok(db::schedule_tick_delete_before(exec, before).await?)
}
