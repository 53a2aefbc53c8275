//! What the health check and the operator report need to know about the system beyond the
//! snapshot: the registered workers, kinds no live worker runs, and migration status.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgExecutor;

use crate::db;
use crate::error::Result;
pub use crate::worker::Worker;

/// Every registered worker, freshest first (at most 1,000).
///
/// # Errors
///
/// [`crate::Error::Database`] when the database fails.
pub async fn list(exec: impl PgExecutor<'_>, now: Option<DateTime<Utc>>) -> Result<Vec<Worker>> {
    Ok(db::worker_list(exec, now).await?)
}

/// A queue and kind with ready jobs that no live worker runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UnhandledKind {
    /// The queue.
    pub queue: String,
    /// The kind.
    pub kind: String,
}

/// Queues and kinds with parked jobs: ready for a while with no live worker that serves
/// the queue and runs the kind (at most 20). Nobody claims them until a worker that knows
/// the kind starts. Cheap however many jobs are parked: one index probe per pair.
///
/// # Errors
///
/// [`crate::Error::Database`] when the database fails.
pub async fn unhandled_kinds(exec: impl PgExecutor<'_>) -> Result<Vec<UnhandledKind>> {
    let rows = db::job_parked_kinds(exec, 20).await?;
    Ok(rows
        .into_iter()
        .map(|(queue, kind)| UnhandledKind { queue, kind })
        .collect())
}

/// Whether the database answers (`select 1`): what "the database is up" means to the
/// health check, apart from every more expensive read.
///
/// # Errors
///
/// [`crate::Error::Database`] when it does not.
pub async fn ping(exec: impl PgExecutor<'_>) -> Result<()> {
    Ok(db::ping(exec).await?)
}

/// Where the database stands against the migrations this build embeds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationStatus {
    /// Migrations this build embeds.
    pub known: usize,
    /// Of those, applied to the database.
    pub applied: usize,
    /// Versions this build has that the database has not applied.
    pub pending: Vec<i64>,
}

impl MigrationStatus {
    /// Whether every embedded migration is applied.
    pub fn is_current(&self) -> bool {
        self.pending.is_empty()
    }
}

/// Compares the database's applied migrations with the embedded ones. A database never
/// migrated has every migration pending.
///
/// # Errors
///
/// [`crate::Error::Database`] when the database fails.
pub async fn migration_status(exec: impl PgExecutor<'_>) -> Result<MigrationStatus> {
    let applied = match db::migration_versions(exec).await {
        Ok(versions) => versions,
        // No bookkeeping table yet: nothing applied.
        Err(sqlx::Error::Database(err)) if err.code().as_deref() == Some("42P01") => Vec::new(),
        Err(err) => return Err(err.into()),
    };
    let known: Vec<i64> = crate::MIGRATOR.iter().map(|m| m.version).collect();
    let pending: Vec<i64> = known
        .iter()
        .copied()
        .filter(|v| !applied.contains(v))
        .collect();
    Ok(MigrationStatus {
        known: known.len(),
        applied: known.len() - pending.len(),
        pending,
    })
}
