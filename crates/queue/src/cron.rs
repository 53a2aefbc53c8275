//! Cron schedules in the database, and the one schedule type ([`Schedule`]) every crate
//! uses: every process that runs a scheduler registers its schedules here, and each tick's
//! job is enqueued here, exactly once however many schedulers see it due. Pause state and
//! the last tick live here too, so they hold for every process and across restarts.
//!
//! # The rule, and where each half lives
//!
//! - **Which instants are ticks, and which are due** (the expression in its zone, daylight
//!   saving, the catch-up policy, the on-time window): Rust, `docket_worker::cron` (pure),
//!   applied by its scheduler under the schedule's row lock ([`lock_state`]).
//! - **Exactly once, overlap and pause at the moment of enqueueing**: PL/pgSQL,
//!   `docket.enqueue_tick` ([`enqueue_tick`]): a tick is enqueued only when the schedule is
//!   not paused and is not yet past it, and only by the one call whose insert into
//!   `docket.schedule_ticks` wins; with `overlap = skip` it is skipped while an earlier
//!   tick's job or batch still runs.
//! - **How far a schedule has got** (`last_tick_at`): written only by
//!   `docket.advance_schedule`, forward only and never while paused, which both
//!   `enqueue_tick` and [`advance`] (ticks the catch-up policy let go) call.
//!
//! Pause is checked in both halves on purpose: the scheduler skips a paused schedule
//! without enqueueing (cheap, and its missed ticks are the catch-up policy's on resume);
//! `enqueue_tick` checks again under the row lock, so a pause that lands between the
//! scheduler's read and its enqueue still wins.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgExecutor;

use crate::db;
use crate::error::{Error, Result};
use crate::job::JobId;

/// What happens to the ticks missed while no scheduler ran (downtime, a pause).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// Missed ticks are dropped: only future ticks run.
    Skip,
    /// One job for the most recent missed tick (default).
    #[default]
    Latest,
    /// A job for every missed tick, the most recent `catch_up_max` of them.
    All,
}

impl FromStr for CatchUp {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "skip" => Ok(CatchUp::Skip),
            "latest" => Ok(CatchUp::Latest),
            "all" => Ok(CatchUp::All),
            other => Err(format!(
                "unknown catch_up {other:?}; expected skip, latest or all"
            )),
        }
    }
}

impl CatchUp {
    /// The name as `docket.toml` and the database spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            CatchUp::Skip => "skip",
            CatchUp::Latest => "latest",
            CatchUp::All => "all",
        }
    }
}

/// Whether a tick may start while the batch of an earlier tick still runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Ticks run whatever runs (default).
    #[default]
    Allow,
    /// A tick due while a batch of an earlier tick still runs is skipped (counted, logged).
    Skip,
}

impl FromStr for Overlap {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "allow" => Ok(Overlap::Allow),
            "skip" => Ok(Overlap::Skip),
            other => Err(format!("unknown overlap {other:?}; expected allow or skip")),
        }
    }
}

impl Overlap {
    /// The name as `docket.toml` and the database spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Allow => "allow",
            Overlap::Skip => "skip",
        }
    }
}

// The database stores both policies as their names.
impl TryFrom<String> for CatchUp {
    type Error = String;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        name.parse()
    }
}

impl TryFrom<String> for Overlap {
    type Error = String;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        name.parse()
    }
}

/// How many missed ticks `catch_up = "all"` enqueues at most, by default.
pub const CATCH_UP_MAX_DEFAULT: u32 = 100;

/// A cron schedule, the one field list: as declared (in `docket.toml`'s `[[schedule]]`,
/// or in Rust on the runtime), as registered, and as listed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Schedule {
    /// Unique; shown in logs, the CLI and the health document.
    pub name: String,
    /// 5-field crontab, or 6/7 fields with seconds (and a year).
    pub cron: String,
    /// The kind of the job each tick enqueues.
    pub kind: String,
    /// Its payload. Default `{}`.
    pub payload: serde_json::Value,
    /// Its queue. Default `default`.
    pub queue: String,
    /// Its priority. Default 0.
    pub priority: i16,
    /// Its attempts. Default 25.
    pub max_attempts: i32,
    /// The IANA zone the expression is read in. Default `UTC`.
    pub timezone: String,
    /// What happens to missed ticks. Default [`CatchUp::Latest`].
    #[sqlx(try_from = "String")]
    pub catch_up: CatchUp,
    /// With [`CatchUp::All`], at most this many missed ticks. Default
    /// [`CATCH_UP_MAX_DEFAULT`].
    #[sqlx(try_from = "i32")]
    pub catch_up_max: u32,
    /// Whether a tick may start while an earlier tick's batch runs. Default
    /// [`Overlap::Allow`].
    #[sqlx(try_from = "String")]
    pub overlap: Overlap,
}

impl Schedule {
    /// The definition in one line, for a person: `cron "0 3 * * *" (UTC), kind
    /// report.nightly on queue default`, and whatever else differs from the defaults.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "cron {:?} ({}), kind {} on queue {}",
            self.cron, self.timezone, self.kind, self.queue
        );
        let defaults = Schedule::new(&self.name, &self.cron, &self.kind);
        if self.payload != defaults.payload {
            out.push_str(&format!(", payload {}", self.payload));
        }
        if self.priority != defaults.priority {
            out.push_str(&format!(", priority {}", self.priority));
        }
        if self.max_attempts != defaults.max_attempts {
            out.push_str(&format!(", max_attempts {}", self.max_attempts));
        }
        if self.catch_up != defaults.catch_up || self.catch_up_max != defaults.catch_up_max {
            out.push_str(&format!(
                ", catch_up {} (at most {})",
                self.catch_up.as_str(),
                self.catch_up_max
            ));
        }
        if self.overlap != defaults.overlap {
            out.push_str(&format!(", overlap {}", self.overlap.as_str()));
        }
        out
    }

    /// A schedule with the defaults: queue `default`, UTC, catch-up `latest`.
    pub fn new(name: impl Into<String>, cron: impl Into<String>, kind: impl Into<String>) -> Self {
        Schedule {
            name: name.into(),
            cron: cron.into(),
            kind: kind.into(),
            payload: serde_json::json!({}),
            queue: crate::enqueue::DEFAULT_QUEUE.to_owned(),
            priority: 0,
            max_attempts: crate::enqueue::DEFAULT_MAX_ATTEMPTS,
            timezone: "UTC".to_owned(),
            catch_up: CatchUp::Latest,
            catch_up_max: CATCH_UP_MAX_DEFAULT,
            overlap: Overlap::Allow,
        }
    }
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
    pub def: Schedule,
    /// Paused: no tick is enqueued, by any process, until it is resumed.
    pub paused: bool,
    /// The newest tick dealt with (enqueued, or missed by the catch-up policy).
    pub last_tick_at: Option<DateTime<Utc>>,
    /// The next tick, as the last scheduler run computed it.
    pub next_tick_at: Option<DateTime<Utc>>,
    /// When it was first registered; ticks count from here until the first.
    pub registered_at: DateTime<Utc>,
    /// Retired: no live process declares it any more (a renamed `[[schedule]]`, a built-in
    /// schedule whose feature was turned off), while some process is live. Nobody ticks
    /// it; it is not late. `docket cron remove` deletes it.
    #[serde(default)]
    pub retired: bool,
    /// Live processes declare it with different definitions: the one registered is the
    /// last to start's.
    #[serde(default)]
    pub conflicting: bool,
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
    def: &Schedule,
    next_tick_at: Option<DateTime<Utc>>,
) -> Result<()> {
    Ok(db::schedule_register(exec, def, next_tick_at).await?)
}

/// Another live process's declaration of a schedule, different from this one's.
#[derive(Clone, Debug, PartialEq)]
pub struct Declaration {
    /// The process's worker id.
    pub worker_id: uuid::Uuid,
    /// Its host.
    pub host: String,
    /// Its process id.
    pub pid: i32,
    /// Its definition.
    pub def: Schedule,
}

/// Records that the worker `worker_id` declares `def`, and returns the other live
/// processes' declarations of the same name that differ from it (two processes that
/// disagree; the caller says so).
///
/// # Errors
///
/// [`Error::Database`] when the database fails.
pub async fn declare(
    exec: impl PgExecutor<'_> + Copy,
    worker_id: uuid::Uuid,
    def: &Schedule,
) -> Result<Vec<Declaration>> {
    db::schedule_declare(exec, worker_id, def).await?;
    Ok(db::schedule_declarations_differing(exec, worker_id, def)
        .await?
        .into_iter()
        .map(|(def, worker_id, host, pid)| Declaration {
            worker_id,
            host,
            pid,
            def: def.0,
        })
        .collect())
}

/// Deletes a schedule no live process declares (a retired one), with its ticks.
///
/// # Errors
///
/// [`Error::InvalidArgument`] for an unknown schedule; [`Error::ScheduleDeclared`] when a
/// live process declares it (it would go on ticking); [`Error::Database`].
pub async fn remove(exec: impl PgExecutor<'_> + Copy, name: &str) -> Result<()> {
    if let Err(rule) = crate::job::Name::check("a schedule name", name) {
        return Err(Error::InvalidArgument(format!(
            "no schedule is named {name:?}: {rule}"
        )));
    }
    if db::schedule_delete_undeclared(exec, name).await? {
        return Ok(());
    }
    let by = db::schedule_declarers(exec, name).await?;
    if by.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "no schedule is named {name:?}"
        )));
    }
    let by: Vec<String> = by
        .iter()
        .map(|(id, host, pid)| format!("worker {id} on {host} (pid {pid})"))
        .collect();
    Err(Error::ScheduleDeclared {
        name: name.to_owned(),
        by: by.join(", "),
    })
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
        match db::schedule_tick_enqueue(
            exec,
            name,
            tick_at,
            crate::trace::TraceContext::current().as_ref(),
        )
        .await?
        {
            (Some(job), _) => Tick::Enqueued(job),
            (None, true) => Tick::Skipped,
            (None, false) => Tick::Elsewhere,
        },
    )
}

/// Moves `name` past ticks it will not enqueue (never back, and not while it is paused:
/// `docket.advance_schedule`, the one writer of `last_tick_at`), and records its next tick.
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
