//! Queue controls as this worker knows them: the paused queues, read once at start and then
//! once per poll interval by the control watcher. A producer whose queue is paused claims
//! nothing, so a pause takes effect within one interval and the claim statement itself pays
//! nothing for it. Resuming wakes the queue's producer at once.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, PoisonError, RwLock};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::Notify;
use tracing::info;

use crate::events;
use crate::service::{RunReport, Service};

/// The paused queues, shared by the watcher (writer) and the producers (readers).
#[derive(Debug, Default)]
pub(crate) struct PausedQueues(RwLock<HashSet<String>>);

impl PausedQueues {
    pub(crate) fn contains(&self, queue: &str) -> bool {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(queue)
    }

    /// Replaces the set; returns the queues newly paused and newly resumed.
    pub(crate) fn replace(&self, now: HashSet<String>) -> (Vec<String>, Vec<String>) {
        let mut set = self.0.write().unwrap_or_else(PoisonError::into_inner);
        let paused = now.difference(&set).cloned().collect();
        let resumed = set.difference(&now).cloned().collect();
        *set = now;
        (paused, resumed)
    }
}

/// Reads the paused queues; wakes the producers of resumed ones.
pub(crate) struct ControlWatcher {
    pub(crate) pool: PgPool,
    pub(crate) paused: Arc<PausedQueues>,
    pub(crate) wakes: HashMap<String, Arc<Notify>>,
}

impl ControlWatcher {
    /// Reads the controls and applies them.
    pub(crate) async fn refresh(&self) -> docket_queue::Result<(usize, usize)> {
        let now: HashSet<String> = docket_queue::queues::paused(&self.pool)
            .await?
            .into_iter()
            .collect();
        let (paused, resumed) = self.paused.replace(now);
        for queue in &paused {
            if self.wakes.contains_key(queue) {
                info!(event = events::QUEUE_PAUSED, job.queue = %queue, "queue paused: no new claims");
            }
        }
        for queue in &resumed {
            if let Some(wake) = self.wakes.get(queue) {
                info!(event = events::QUEUE_RESUMED, job.queue = %queue, "queue resumed");
                wake.notify_one();
            }
        }
        Ok((paused.len(), resumed.len()))
    }
}

impl Service for ControlWatcher {
    const NAME: &'static str = "control_watcher";

    async fn run_once(&self, _now: Option<DateTime<Utc>>) -> docket_queue::Result<RunReport> {
        let (paused, resumed) = self.refresh().await?;
        Ok(RunReport::default()
            .count("paused", paused as u64)
            .count("resumed", resumed as u64))
    }
}
