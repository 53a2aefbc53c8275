//! The reconciler: compares the runs (job and claim token) the database says this worker
//! holds with the runs it knows it holds ([`crate::lease::Holdings`]). It stops the ones
//! an operator asked to cancel; stops and hands back the runs held here that the database
//! no longer gives this worker under their token (rescued while this worker stalled, and
//! perhaps running elsewhere); and hands back, without spending the attempt, the ones held
//! in the database but unknown here: a claim whose reply was lost (the connection dropped
//! after the commit), an executor that died, an outcome the completer gave up on. It runs every heartbeat
//! interval and once more at shutdown, after the last outcome is written.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use docket_queue::maintenance;
use docket_queue::{AttemptOutcome, Outcome};
use sqlx::PgPool;
use tracing::{error, info, warn};
use uuid::Uuid;

use crate::events;
use crate::lease::{Holdings, RunId};
use crate::service::{RunReport, Service};

pub(crate) struct Reconciler {
    pub(crate) pool: PgPool,
    pub(crate) worker_id: Uuid,
    pub(crate) holdings: Arc<Holdings>,
}

impl Reconciler {
    /// One pass at `now` (`None`: the database's clock); returns how many jobs were
    /// handed back.
    pub(crate) async fn reconcile(
        &self,
        now: Option<DateTime<Utc>>,
    ) -> docket_queue::Result<usize> {
        // Taken before the database is asked: a run adopted meanwhile is newer than the
        // answer, and must not look given away.
        let running = self.holdings.runs();
        let held = maintenance::held_by(docket_queue::pooled(&self.pool), self.worker_id).await?;
        let given: HashSet<RunId> = held.iter().map(|job| (job.id, job.token)).collect();
        let taken: Vec<RunId> = running
            .into_iter()
            .filter(|run| !given.contains(run))
            .collect();
        let stopped = self.holdings.release(&taken);
        if stopped > 0 {
            error!(
                event = events::LEASE_LOST,
                jobs = stopped,
                "stopping runs whose claim the database no longer gives this worker"
            );
        }
        let cancelled: Vec<RunId> = held
            .iter()
            .filter(|job| job.cancel_requested)
            .map(|job| (job.id, job.token))
            .collect();
        if !cancelled.is_empty() {
            let stopped = self.holdings.cancel(&cancelled);
            if stopped > 0 {
                info!(
                    event = events::JOB_CANCELLED,
                    count = stopped,
                    "stopping jobs an operator cancelled"
                );
            }
        }
        let lost: Vec<AttemptOutcome> = held
            .iter()
            .filter(|job| !self.holdings.knows(job.id, job.token))
            .map(|job| AttemptOutcome {
                id: job.id,
                attempt: job.attempt,
                token: job.token,
                outcome: Outcome::Snooze {
                    delay: Duration::ZERO,
                },
            })
            .collect();
        if lost.is_empty() {
            return Ok(0);
        }
        // Fenced by the token like any outcome: a job whose outcome landed meanwhile is
        // left alone.
        let applied = docket_queue::apply_outcomes(&self.pool, self.worker_id, &lost, now).await?;
        for (id, state) in &applied.changed {
            warn!(
                event = events::JOB_HANDED_BACK, job.id = %id, state = %state,
                "job held in the database but not running here; handed back"
            );
        }
        Ok(applied.changed.len())
    }
}

impl Service for Reconciler {
    const NAME: &'static str = "reconciler";

    async fn run_once(&self, now: Option<DateTime<Utc>>) -> docket_queue::Result<RunReport> {
        let handed_back = self.reconcile(now).await?;
        Ok(RunReport::default().count("handed back (held, not running)", handed_back as u64))
    }
}
