//! The queue snapshot that monitors poll: counts per state and the age of the oldest
//! ready job, overall and per queue, with DESIGN.md's field names.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgExecutor;

use crate::db;
use crate::error::Result;
use crate::job::JobState;

/// Counts and the oldest ready job, for the whole queue system or one queue.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QueueFigures {
    /// Jobs waiting for their first attempt (scheduled ones included).
    pub pending: i64,
    /// Jobs waiting for another attempt (scheduled ones included).
    pub retrying: i64,
    /// Jobs held by workers.
    pub processing: i64,
    /// Jobs in the dead-letter state.
    pub dead_letter: i64,
    /// The earliest `run_at` among ready jobs; `None` when nothing is ready.
    pub oldest_ready_at: Option<DateTime<Utc>>,
    /// How long that job has been ready, in seconds; `None` when nothing is ready.
    pub oldest_ready_age_seconds: Option<f64>,
    /// Per queue: whether it is paused (its jobs stay ready, nobody claims them). Always
    /// `false` in the totals.
    #[serde(default)]
    pub paused: bool,
}

/// The snapshot: overall figures plus a breakdown under `queues`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Snapshot {
    /// Figures over every queue.
    #[serde(flatten)]
    pub total: QueueFigures,
    /// Figures per queue, by name. A queue with no live or dead-lettered job is absent.
    pub queues: BTreeMap<String, QueueFigures>,
    /// The time the figures are for.
    #[serde(skip)]
    pub taken_at: DateTime<Utc>,
}

impl QueueFigures {
    fn add(&mut self, state: JobState, count: i64, oldest_ready_at: Option<DateTime<Utc>>) {
        match state {
            JobState::Pending => self.pending += count,
            JobState::Retrying => self.retrying += count,
            JobState::Processing => self.processing += count,
            JobState::DeadLetter => self.dead_letter += count,
            JobState::Completed | JobState::Cancelled => {}
        }
        self.oldest_ready_at = match (self.oldest_ready_at, oldest_ready_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    fn finish(&mut self, now: DateTime<Utc>) {
        self.oldest_ready_age_seconds = self
            .oldest_ready_at
            .map(|at| ((now - at).num_milliseconds().max(0) as f64) / 1000.0);
    }
}

/// Takes the snapshot at `now` (`None`: the database's clock, which also measures the
/// ages, so that a client whose clock is off reports true ages). Counts the live and
/// dead-lettered jobs through `jobs_snapshot`, index-only when the planner finds that
/// cheapest; with millions of such rows it may prefer a parallel sequential scan, which
/// also reads finished rows, so callers that must stay fast bound it with a timeout.
///
/// # Errors
///
/// [`crate::Error::Database`] when the database fails.
pub async fn snapshot<'c, E>(exec: E, now: Option<DateTime<Utc>>) -> Result<Snapshot>
where
    E: PgExecutor<'c> + Copy,
{
    let rows = db::job_count_by_queue_and_state(exec, now).await?;
    let paused = db::queue_control_list_paused(exec).await?;
    // With no rows there is no age to measure; the local clock only stamps the snapshot.
    let taken_at = rows
        .first()
        .map(|row| row.taken_at)
        .or(now)
        .unwrap_or_else(Utc::now);
    let mut snapshot = Snapshot {
        taken_at,
        ..Snapshot::default()
    };
    for row in rows {
        snapshot
            .total
            .add(row.state, row.count, row.oldest_ready_at);
        snapshot.queues.entry(row.queue).or_default().add(
            row.state,
            row.count,
            row.oldest_ready_at,
        );
    }
    // A paused queue is listed even when it holds no job: an operator looks for it.
    for queue in paused {
        snapshot.queues.entry(queue).or_default().paused = true;
    }
    snapshot.total.finish(taken_at);
    for figures in snapshot.queues.values_mut() {
        figures.finish(taken_at);
    }
    Ok(snapshot)
}
