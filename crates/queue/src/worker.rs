//! The worker model: a worker process as it announces itself, and as it is registered.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

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
