//! Queue controls: pause and resume, stored in `docket.queue_controls` so that they hold for
//! every process and across restarts. A paused queue's jobs stay ready (counted and aged by
//! the snapshot) but no worker claims them; enqueueing goes on. Workers read the paused
//! queues once per poll interval, so a pause takes effect within one interval and the claim
//! itself pays nothing for it; running jobs finish.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgExecutor;

use crate::db;
use crate::error::{Error, Result};

/// A queue's stored controls.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QueueControl {
    /// The queue.
    pub queue: String,
    /// Whether workers leave its jobs alone.
    pub paused: bool,
    /// Since when it is paused.
    pub paused_at: Option<DateTime<Utc>>,
}

fn check_name(queue: &str) -> Result<()> {
    crate::job::Name::check("a queue name", queue).map_err(Error::InvalidArgument)
}

/// Pauses a queue for every process (within one poll interval); pausing a paused queue
/// changes nothing.
///
/// # Errors
///
/// [`Error::InvalidArgument`] for a name no queue can have; [`Error::Database`].
pub async fn pause(exec: impl PgExecutor<'_>, queue: &str) -> Result<QueueControl> {
    check_name(queue)?;
    Ok(db::queue_control_set_paused(exec, queue, true).await?)
}

/// Resumes a queue: workers claim its jobs again within one poll interval.
///
/// # Errors
///
/// [`Error::InvalidArgument`] for a name no queue can have; [`Error::Database`].
pub async fn resume(exec: impl PgExecutor<'_>, queue: &str) -> Result<QueueControl> {
    check_name(queue)?;
    Ok(db::queue_control_set_paused(exec, queue, false).await?)
}

/// Every queue with stored controls, sorted by name.
///
/// # Errors
///
/// [`Error::Database`] when the database fails.
pub async fn list(exec: impl PgExecutor<'_>) -> Result<Vec<QueueControl>> {
    Ok(db::queue_control_list(exec).await?)
}

/// Those of `queues` that hold ready (or scheduled) jobs with a group: the queues whose
/// claims must share fairly ([`crate::claim_fair`]).
///
/// # Errors
///
/// [`Error::Database`] when the database fails.
pub async fn grouped(exec: impl PgExecutor<'_>, queues: &[String]) -> Result<Vec<String>> {
    Ok(db::queue_list_grouped(exec, queues).await?)
}

/// The paused queues, sorted.
///
/// # Errors
///
/// [`Error::Database`] when the database fails.
pub async fn paused(exec: impl PgExecutor<'_>) -> Result<Vec<String>> {
    Ok(db::queue_control_list_paused(exec).await?)
}

/// Whether anything knows the queue: a job in it (live or dead-lettered), a worker that
/// serves it or once waited on it, or stored controls. A pause of a queue nothing knows
/// is most likely a misspelling, and would pause nothing that runs.
///
/// # Errors
///
/// [`Error::InvalidArgument`] for a name no queue can have; [`Error::Database`].
pub async fn is_known(exec: impl PgExecutor<'_>, queue: &str) -> Result<bool> {
    check_name(queue)?;
    Ok(db::queue_list_named(exec).await?.iter().any(|q| q == queue))
}

/// The queues a job, a worker or stored controls name, sorted: the names to suggest for a
/// misspelt one.
///
/// # Errors
///
/// [`Error::Database`] when the database fails.
pub async fn named(exec: impl PgExecutor<'_>) -> Result<Vec<String>> {
    Ok(db::queue_list_named(exec).await?)
}
