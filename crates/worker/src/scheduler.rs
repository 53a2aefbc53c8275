//! The scheduler: every second, for each schedule this process declares, works out the
//! due ticks from the state in the database (its last tick, its pause) and enqueues each
//! tick's job through `docket_queue::schedule::enqueue_tick`, which makes it exactly once
//! however many processes run a scheduler. No leader: every `docket serve` and `docket
//! worker` runs one (unless `DOCKET_CRON=false`).

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use docket_queue::schedule;
use docket_queue::ErrorChain;
use sqlx::PgPool;
use tracing::{error, info, warn};

use crate::events;
use crate::metrics;
use crate::schedule::{due, Cron, ScheduleConfig};
use crate::service::{RunReport, Service};

/// How often the scheduler looks for due ticks.
pub(crate) const SCHEDULER_INTERVAL: Duration = Duration::from_secs(1);

/// A tick due at most this long ago is on time, not missed (a run is a second apart, give
/// or take its jitter and a slow statement).
const ON_TIME: Duration = Duration::from_secs(3);

pub(crate) struct Scheduler {
    pub(crate) pool: PgPool,
    pub(crate) schedules: Vec<(ScheduleConfig, Cron)>,
}

impl Service for Scheduler {
    const NAME: &'static str = "scheduler";

    async fn run_once(&self, now: Option<DateTime<Utc>>) -> docket_queue::Result<RunReport> {
        let now = now.unwrap_or_else(Utc::now);
        let stored: HashMap<String, schedule::ScheduleState> = schedule::states(&self.pool)
            .await?
            .into_iter()
            .map(|state| (state.name.clone(), state))
            .collect();
        let (mut enqueued, mut missed, mut skipped) = (0u64, 0u64, 0u64);
        for (config, cron) in &self.schedules {
            let Some(row) = stored.get(&config.name) else {
                continue; // registered at start; gone only if deleted by hand
            };
            if row.paused {
                continue; // its missed ticks are the catch-up policy's on resume
            }
            let from = row.last_tick_at.unwrap_or(row.registered_at);
            let due = due(
                cron,
                from,
                now,
                config.catch_up,
                config.catch_up_max,
                ON_TIME,
            );
            let Some(last) = due.last else {
                continue;
            };
            for tick in &due.enqueue {
                match schedule::enqueue_tick(&self.pool, &config.name, *tick).await {
                    Ok(schedule::Tick::Skipped) => {
                        skipped += 1;
                        metrics::cron_tick(&config.name, "skipped", 1);
                        warn!(
                            event = events::CRON_SKIPPED, schedule = %config.name, tick_at = %tick,
                            "schedule tick skipped: the batch of an earlier tick still runs"
                        );
                    }
                    Ok(schedule::Tick::Enqueued(job)) => {
                        enqueued += 1;
                        metrics::cron_tick(&config.name, "enqueued", 1);
                        info!(
                            event = events::CRON_ENQUEUED, schedule = %config.name, job.id = %job,
                            tick_at = %tick, "schedule tick enqueued"
                        );
                    }
                    Ok(schedule::Tick::Elsewhere) => {} // another scheduler dealt with it
                    Err(err) => {
                        error!(
                            event = events::CRON_FAILED, schedule = %config.name, tick_at = %tick,
                            error.message = %err, error.cause_chain = %ErrorChain(&err),
                            "could not enqueue a schedule's tick; the next run tries again"
                        );
                        return Err(err);
                    }
                }
            }
            if due.missed > 0 {
                missed += due.missed;
                metrics::cron_tick(&config.name, "missed", due.missed);
                warn!(
                    event = events::CRON_MISSED, schedule = %config.name, count = due.missed,
                    catch_up = config.catch_up.as_str(), "schedule ticks missed"
                );
            }
            schedule::advance(&self.pool, &config.name, Some(last), cron.next_after(now)).await?;
        }
        Ok(RunReport::default()
            .count("ticks enqueued", enqueued)
            .count("ticks missed", missed)
            .count("ticks skipped (overlap)", skipped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::CatchUp;
    use docket_testkit::TestDb;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    async fn scheduler(db: &TestDb, catch_up: CatchUp, last: DateTime<Utc>) -> Scheduler {
        scheduler_of(db, "* * * * * *", catch_up, last).await
    }

    async fn scheduler_of(
        db: &TestDb,
        cron: &str,
        catch_up: CatchUp,
        last: DateTime<Utc>,
    ) -> Scheduler {
        let mut config = ScheduleConfig::new("every-second", cron, "test.tick");
        config.catch_up = catch_up;
        let schedules = crate::runtime::register_for_tests(&db.pool, &[config]).await;
        schedule::advance(&db.pool, "every-second", Some(last), None)
            .await
            .unwrap();
        Scheduler {
            pool: db.pool.clone(),
            schedules,
        }
    }

    async fn run_ats(db: &TestDb) -> Vec<DateTime<Utc>> {
        sqlx::query_scalar("select run_at from docket.jobs order by run_at")
            .fetch_all(&db.pool)
            .await
            .unwrap()
    }

    /// Downtime of five ticks of an every-minute schedule, then one run half a second
    /// after the fifth: each policy makes exactly the documented jobs.
    #[tokio::test]
    async fn after_five_missed_ticks_skip_latest_and_all_enqueue_what_they_say() {
        let last = utc("2026-12-01T10:00:00Z");
        let now = utc("2026-12-01T10:05:00.500Z");
        let tick = |m: u32| utc(&format!("2026-12-01T10:0{m}:00Z"));
        for (policy, expected) in [
            // 10:05 is on time (due half a second ago); 10:01 to 10:04 were missed.
            (CatchUp::Skip, vec![tick(5)]),
            (CatchUp::Latest, vec![tick(5)]),
            (CatchUp::All, (1..=5).map(tick).collect()),
        ] {
            let db = TestDb::new().await;
            let scheduler = scheduler_of(&db, "0 * * * * *", policy, last).await;
            scheduler.run_once(Some(now)).await.unwrap();
            assert_eq!(run_ats(&db).await, expected, "{policy:?}");
            // Run again at the same instant: nothing more, ever.
            scheduler.run_once(Some(now)).await.unwrap();
            assert_eq!(run_ats(&db).await.len(), expected.len(), "{policy:?}");
            let row = &schedule::list(&db.pool).await.unwrap()[0];
            assert_eq!(row.last_tick_at, Some(tick(5)));
            assert_eq!(row.next_tick_at, Some(tick(6)));
        }
    }

    /// A scheduler that stalled (a debugger, a GC pause) wakes up with a stale view: the
    /// ticks another scheduler enqueued meanwhile, whose jobs have completed since, are not
    /// enqueued again.
    #[tokio::test]
    async fn a_stalled_scheduler_never_enqueues_a_tick_again_after_its_job_completed() {
        let db = TestDb::new().await;
        let last = utc("2026-12-01T10:00:00Z");
        let fast = scheduler(&db, CatchUp::All, last).await;
        fast.run_once(Some(utc("2026-12-01T10:00:03Z")))
            .await
            .unwrap();
        sqlx::query("update docket.jobs set state = 'completed', finished_at = now()")
            .execute(&db.pool)
            .await
            .unwrap();
        // The slow one still believes the last tick was 10:00:00.
        for tick in 1..=3 {
            let at = utc(&format!("2026-12-01T10:00:0{tick}Z"));
            assert_eq!(
                schedule::enqueue_tick(&db.pool, "every-second", at)
                    .await
                    .unwrap(),
                schedule::Tick::Elsewhere
            );
        }
        assert_eq!(run_ats(&db).await.len(), 3);
    }

    /// A paused schedule enqueues nothing in any process; on resume, its catch-up policy
    /// decides what the pause missed.
    #[tokio::test]
    async fn a_paused_schedule_enqueues_nothing_until_resumed() {
        let db = TestDb::new().await;
        let last = utc("2026-12-01T10:00:00Z");
        let one = scheduler_of(&db, "0 * * * * *", CatchUp::Latest, last).await;
        let other = Scheduler {
            pool: db.pool.clone(),
            schedules: one.schedules.clone(),
        };
        schedule::set_paused(&db.pool, "every-second", true)
            .await
            .unwrap();
        other
            .run_once(Some(utc("2026-12-01T10:04:00.5Z")))
            .await
            .unwrap();
        assert!(run_ats(&db).await.is_empty());
        schedule::set_paused(&db.pool, "every-second", false)
            .await
            .unwrap();
        one.run_once(Some(utc("2026-12-01T10:09:30Z")))
            .await
            .unwrap();
        assert_eq!(
            run_ats(&db).await,
            [utc("2026-12-01T10:09:00Z")],
            "latest: one job for the most recent tick the pause missed"
        );
    }

    /// Many schedulers see the same tick due at once: one job.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_schedulers_make_one_job_per_tick() {
        let db = TestDb::with_pool_size(12).await;
        let last = utc("2026-12-01T10:00:00Z");
        let first = scheduler(&db, CatchUp::All, last).await;
        let now = utc("2026-12-01T10:00:10Z");
        let mut runs = Vec::new();
        for _ in 0..6 {
            let scheduler = Scheduler {
                pool: db.pool.clone(),
                schedules: first.schedules.clone(),
            };
            runs.push(tokio::spawn(
                async move { scheduler.run_once(Some(now)).await },
            ));
        }
        for run in runs {
            run.await.unwrap().unwrap();
        }
        let ticks = run_ats(&db).await;
        let expected: Vec<_> = (1..=10)
            .map(|s| last + chrono::Duration::seconds(s))
            .collect();
        assert_eq!(ticks, expected);
    }
}
