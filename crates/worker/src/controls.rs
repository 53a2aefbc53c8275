//! Queue controls as this worker knows them: the paused queues, and the queues that hold
//! jobs with a group, read once at start and then once per poll interval by the control
//! watcher. A producer whose queue is paused claims nothing, so a pause takes effect within
//! one interval and the claim statement itself pays nothing for it. Resuming wakes the
//! queue's producer at once. A queue with grouped jobs is claimed fairly
//! ([`docket_queue::claim_fair`]); the others keep the plain claim and pay nothing for
//! groups.

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

/// The served queues that hold jobs with a group.
#[derive(Debug, Default)]
pub(crate) struct GroupedQueues(RwLock<HashSet<String>>);

impl GroupedQueues {
    pub(crate) fn contains(&self, queue: &str) -> bool {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(queue)
    }

    /// Replaces the set; returns the queues newly grouped.
    fn replace(&self, now: HashSet<String>) -> Vec<String> {
        let mut set = self.0.write().unwrap_or_else(PoisonError::into_inner);
        let new = now.difference(&set).cloned().collect();
        *set = now;
        new
    }
}

/// Reads the paused and the grouped queues; wakes the producers of resumed ones and of
/// newly grouped ones.
pub(crate) struct ControlWatcher {
    pub(crate) pool: PgPool,
    pub(crate) paused: Arc<PausedQueues>,
    pub(crate) grouped: Arc<GroupedQueues>,
    pub(crate) wakes: HashMap<String, Arc<Notify>>,
}

impl ControlWatcher {
    /// Reads the controls and applies them.
    pub(crate) async fn refresh(&self) -> docket_queue::Result<(usize, usize)> {
        let now: HashSet<String> = docket_queue::queues::paused(docket_queue::pooled(&self.pool))
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
        let served: Vec<String> = self.wakes.keys().cloned().collect();
        let grouped =
            docket_queue::queues::grouped(docket_queue::pooled(&self.pool), &served).await?;
        for queue in self.grouped.replace(grouped.into_iter().collect()) {
            // Its grouped jobs are invisible to the plain claim: claim them now.
            if let Some(wake) = self.wakes.get(&queue) {
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
