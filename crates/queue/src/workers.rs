//! The workers: a worker process as it announces itself (`WorkerInfo`) and as it is
//! registered (`Worker`), and what the health check and the operator report need to know
//! beyond the snapshot: the registered workers, kinds no live worker runs, and migration
//! status.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::db;
use crate::error::Result;

/// A worker process as it announces itself with each heartbeat.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize, sqlx::FromRow)]
pub struct WorkerInfo {
    /// Fresh per process start: a restarted process never inherits a dead one's jobs.
    pub id: Uuid,
    /// The host it runs on.
    pub host: String,
    /// Its process id.
    pub pid: i32,
    /// The queues it serves.
    pub queues: Vec<String>,
    /// The kinds it runs.
    pub kinds: Vec<String>,
    /// Its version.
    pub version: String,
}

/// A registered worker process: how it announced itself, and how fresh its heartbeat is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Worker {
    /// Its announcement: id, host, pid, queues, kinds, version.
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub info: WorkerInfo,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Its latest heartbeat.
    pub heartbeat_at: DateTime<Utc>,
    /// Until when its lease holds (its heartbeat plus its own lease timeout).
    pub lease_expires_at: DateTime<Utc>,
    /// Seconds since that heartbeat.
    pub heartbeat_age_seconds: f64,
    /// Whether its lease holds now: the one rule for "is this worker alive".
    pub live: bool,
}

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
