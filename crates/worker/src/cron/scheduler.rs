//! The scheduler: every second, for each schedule this process declares, works out the
//! due ticks from the state in the database (its last tick, its pause) and enqueues each
//! tick's job through `docket_queue::cron::enqueue_tick`, which makes it exactly once
//! however many processes run a scheduler. No leader: every `docket serve` and `docket
//! worker` runs one (unless [`CRON`](docket_settings::CRON) is `false`).

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use docket_queue::cron as stored;
use docket_queue::ErrorChain;
use sqlx::PgPool;
use tracing::{error, info, warn};

use crate::cron::{due, Cron, OnTime, Schedule};
use crate::events;
use crate::metrics;
use crate::service::{RunReport, Service};

/// How often the scheduler looks for due ticks.
pub(crate) const SCHEDULER_INTERVAL: Duration = Duration::from_secs(1);

/// A tick due longer ago than this is never on time. Within it, the newest due tick is (a
/// pass that came a little late), and older ones only when they came due since this
/// process's previous pass; never a tick that fell inside a pause (`cron::due`).
const ON_TIME: Duration = Duration::from_secs(3);

/// A pass that follows this process's previous one within this long watched the ticks
/// that came due in between: they are on time (a pass is a second apart, ±10%, plus its
/// own duration). After a longer gap (a stalled process, a database outage) they were
/// missed.
const WATCHED_GAP: Duration = Duration::from_secs(2);

pub(crate) struct Scheduler {
    pool: PgPool,
    schedules: Vec<(Schedule, Cron)>,
    /// When this process's previous pass looked (its `now`).
    last_pass: std::sync::Mutex<Option<DateTime<Utc>>>,
}

impl Scheduler {
    pub(crate) fn new(pool: PgPool, schedules: Vec<(Schedule, Cron)>) -> Self {
        Scheduler {
            pool,
            schedules,
            last_pass: std::sync::Mutex::new(None),
        }
    }
}

impl Service for Scheduler {
    const NAME: &'static str = "scheduler";

    async fn run_once(&self, now: Option<DateTime<Utc>>) -> docket_queue::Result<RunReport> {
        let now = now.unwrap_or_else(Utc::now);
        let previous = self
            .last_pass
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .replace(now);
        let gap = chrono::Duration::from_std(WATCHED_GAP).unwrap_or_default();
        let watched_since = previous.filter(|previous| *previous < now && now - *previous <= gap);
        let stored: HashMap<String, stored::ScheduleState> =
            stored::states(docket_queue::pooled(&self.pool))
                .await?
                .into_iter()
                .map(|state| (state.name.clone(), state))
                .collect();
        let mut report = Pass::default();
        for (config, cron) in &self.schedules {
            let Some(row) = stored.get(&config.name) else {
                continue; // registered at start; gone only if deleted by hand
            };
            let next = cron.next_after(now);
            let from = row.last_tick_at.unwrap_or(row.registered_at);
            let is_due = cron.next_after(from).is_some_and(|tick| tick <= now);
            if row.paused || !is_due {
                // Nothing to enqueue (a paused schedule's missed ticks are the catch-up
                // policy's on resume); only the next tick, when it moved.
                if row.next_tick_at != next {
                    stored::advance(docket_queue::pooled(&self.pool), &config.name, None, next)
                        .await?;
                }
                continue;
            }
            // One schedule's failure is logged once, here, and holds up no other schedule.
            if let Err(err) = self
                .pass(config, cron, now, next, watched_since, &mut report)
                .await
            {
                report.failed += 1;
                error!(
                    event = events::CRON_FAILED, schedule = %config.name,
                    error.message = %err, error.cause_chain = %ErrorChain(&err),
                    "could not enqueue a schedule's due tick; the next run tries again"
                );
            }
        }
        Ok(RunReport::default()
            .count("ticks enqueued", report.enqueued)
            .count("ticks missed", report.missed)
            .count("ticks skipped (overlap)", report.skipped)
            .count("schedules failed", report.failed))
    }
}

/// What one run did, over its schedules.
#[derive(Default)]
struct Pass {
    enqueued: u64,
    missed: u64,
    skipped: u64,
    failed: u64,
}

impl Scheduler {
    /// Enqueues a schedule's due ticks and moves it past them, as one step: under its
    /// row's lock, on the state read under that lock. A pause that lands meanwhile waits
    /// for the step, or the step sees it and moves nothing.
    async fn pass(
        &self,
        config: &Schedule,
        cron: &Cron,
        now: DateTime<Utc>,
        next: Option<DateTime<Utc>>,
        watched_since: Option<DateTime<Utc>>,
        report: &mut Pass,
    ) -> docket_queue::Result<()> {
        let name = &config.name;
        let mut tx = self.pool.begin().await?;
        let Some(state) = stored::lock_state(docket_queue::pooled_conn(&mut tx), name).await?
        else {
            return Ok(());
        };
        if state.paused {
            return Ok(()); // paused since the read: nothing moves
        }
        let from = state.last_tick_at.unwrap_or(state.registered_at);
        let window = OnTime {
            grace: ON_TIME,
            watched_since,
            resumed_at: state.resumed_at,
        };
        let due = due(
            cron,
            from,
            now,
            config.catch_up,
            config.catch_up_max,
            &window,
        );
        let mut outcomes = Vec::with_capacity(due.enqueue.len());
        for tick in &due.enqueue {
            // A span per tick: the tick's job carries its context, so the job's first
            // attempt is the tick's child in the trace.
            let span = tracing::info_span!(
                target: docket_queue::trace::TARGET,
                "docket.cron.tick",
                otel.name = %format_args!("cron {name}"),
                otel.kind = "producer",
                docket.cron.schedule = %name,
                docket.cron.tick_at = %tick.to_rfc3339(),
            );
            let enqueued = tracing::Instrument::instrument(
                stored::enqueue_tick(docket_queue::pooled_conn(&mut tx), name, *tick),
                span,
            )
            .await?;
            outcomes.push((*tick, enqueued));
        }
        stored::advance(docket_queue::pooled_conn(&mut tx), name, due.last, next).await?;
        tx.commit().await?;
        for (tick, outcome) in outcomes {
            match outcome {
                stored::Tick::Skipped => {
                    report.skipped += 1;
                    metrics::cron_tick(name, "skipped", 1);
                    warn!(
                        event = events::CRON_SKIPPED, schedule = %name, tick_at = %tick,
                        "schedule tick skipped: the batch of an earlier tick still runs"
                    );
                }
                stored::Tick::Enqueued(job) => {
                    report.enqueued += 1;
                    metrics::cron_tick(name, "enqueued", 1);
                    info!(
                        event = events::CRON_ENQUEUED, schedule = %name, job.id = %job,
                        tick_at = %tick, "schedule tick enqueued"
                    );
                }
                stored::Tick::Elsewhere => {} // another scheduler dealt with it
            }
        }
        if due.missed > 0 {
            report.missed += due.missed;
            metrics::cron_tick(name, "missed", due.missed);
            warn!(
                event = events::CRON_MISSED, schedule = %name, count = due.missed,
                count_is_lower_bound = due.missed_more, catch_up = config.catch_up.as_str(),
                "schedule ticks missed"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cron::CatchUp;
    use docket_testkit::{eventually, TestDb};

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
        let mut config = Schedule::new("every-second", cron, "test.tick");
        config.catch_up = catch_up;
        let schedules = crate::runtime::register_for_tests(&db.pool, &[config]).await;
        stored::advance(&db.pool, "every-second", Some(last), None)
            .await
            .unwrap();
        Scheduler::new(db.pool.clone(), schedules)
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
            let row = &stored::list(&db.pool).await.unwrap()[0];
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
                stored::enqueue_tick(&db.pool, "every-second", at)
                    .await
                    .unwrap(),
                stored::Tick::Elsewhere
            );
        }
        assert_eq!(run_ats(&db).await.len(), 3);
    }

    /// A paused schedule enqueues nothing in any process; on resume, its catch-up policy
    /// decides what the pause missed.
    /// A schedule whose tick cannot be enqueued is logged once (`cron.failed`, not again as
    /// a failed maintenance run) and holds up no other schedule.
    #[tokio::test]
    async fn a_schedule_whose_tick_fails_holds_up_no_other_schedule() {
        let db = TestDb::new().await;
        sqlx::raw_sql(
            r#"
            create function boom() returns trigger language plpgsql as $$
            begin
                if new.kind = 'test.boom' then raise exception 'no boom today'; end if;
                return new;
            end $$;
            create trigger boom before insert on docket.jobs for each row execute function boom();
            "#,
        )
        .execute(&db.pool)
        .await
        .unwrap();
        let configs = [
            Schedule::new("boom", "* * * * * *", "test.boom"),
            Schedule::new("fine", "* * * * * *", "test.tick"),
        ];
        let schedules = crate::runtime::register_for_tests(&db.pool, &configs).await;
        let last = Utc::now() - chrono::Duration::seconds(2);
        for name in ["boom", "fine"] {
            stored::advance(&db.pool, name, Some(last), None)
                .await
                .unwrap();
        }
        let scheduler = Scheduler::new(db.pool.clone(), schedules);
        let report = scheduler
            .run_once(None)
            .await
            .expect("the run itself succeeds");
        assert!(
            report.to_string().contains("schedules failed 1"),
            "{report}"
        );
        let kinds: Vec<String> = sqlx::query_scalar("select kind from docket.jobs")
            .fetch_all(&db.pool)
            .await
            .unwrap();
        assert!(kinds.iter().any(|kind| kind == "test.tick"), "{kinds:?}");
        assert!(!kinds.iter().any(|kind| kind == "test.boom"), "{kinds:?}");
    }

    #[tokio::test]
    async fn a_paused_schedule_enqueues_nothing_until_resumed() {
        let db = TestDb::new().await;
        let last = utc("2026-12-01T10:00:00Z");
        let one = scheduler_of(&db, "0 * * * * *", CatchUp::Latest, last).await;
        let other = Scheduler::new(db.pool.clone(), one.schedules.clone());
        stored::set_paused(&db.pool, "every-second", true)
            .await
            .unwrap();
        other
            .run_once(Some(utc("2026-12-01T10:04:00.5Z")))
            .await
            .unwrap();
        assert!(run_ats(&db).await.is_empty());
        stored::set_paused(&db.pool, "every-second", false)
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

    /// A daily schedule shows its next tick as soon as it is registered, and every pass
    /// keeps it current, whether or not a tick was due.
    #[tokio::test]
    async fn a_daily_schedule_shows_its_next_tick_from_registration_on() {
        let db = TestDb::new().await;
        let config = Schedule::new("nightly", "0 3 * * *", "test.tick");
        let schedules = crate::runtime::register_for_tests(&db.pool, &[config]).await;
        let next = stored::list(&db.pool).await.unwrap()[0].next_tick_at;
        let expected = schedules[0].1.next_after(Utc::now());
        assert!(
            next.is_some() && next == expected,
            "{next:?} at registration, expected {expected:?}"
        );
        let scheduler = Scheduler::new(db.pool.clone(), schedules);
        // A pass with nothing due still moves it on.
        let later = Utc::now() + chrono::Duration::days(3);
        scheduler.run_once(Some(later)).await.unwrap();
        let row = &stored::list(&db.pool).await.unwrap()[0];
        assert!(
            row.next_tick_at > next && row.next_tick_at <= Some(later + chrono::Duration::days(1)),
            "{row:?}"
        );
    }

    /// The on-time window is never wider than the schedule's interval: an every-second
    /// schedule whose scheduler was away for 5.6 s runs only the latest missed tick with
    /// `latest`, and with `skip` only the tick due within its last second.
    #[tokio::test]
    async fn an_every_second_schedule_back_after_seconds_runs_no_tick_it_missed() {
        let last = utc("2026-12-01T10:00:00Z");
        let at = |s: &str| utc(&format!("2026-12-01T10:00:{s}Z"));
        for (policy, now, expected) in [
            (CatchUp::Latest, at("05.600"), vec![at("05")]),
            (CatchUp::Skip, at("03.500"), vec![at("03")]),
            (CatchUp::Skip, at("03.000"), vec![at("03")]),
        ] {
            let db = TestDb::new().await;
            let scheduler = scheduler(&db, policy, last).await;
            scheduler.run_once(Some(now)).await.unwrap();
            assert_eq!(run_ats(&db).await, expected, "{policy:?} at {now}");
            let row = &stored::list(&db.pool).await.unwrap()[0];
            assert_eq!(row.last_tick_at, Some(expected[0]), "{policy:?}");
        }
    }

    /// Passes a second apart with their jitter (1.1 s) lose no tick of an every-second
    /// schedule; a pass after a stall of the process (4.45 s) runs only the latest tick.
    #[tokio::test]
    async fn a_pass_a_little_late_loses_no_tick_but_one_after_a_stall_runs_only_the_latest() {
        let db = TestDb::new().await;
        let last = utc("2026-12-01T10:00:00Z");
        let scheduler = scheduler(&db, CatchUp::Latest, last).await;
        let at = |s: &str| utc(&format!("2026-12-01T10:00:{s}Z"));
        scheduler.run_once(Some(at("00.950"))).await.unwrap();
        scheduler.run_once(Some(at("02.050"))).await.unwrap();
        assert_eq!(run_ats(&db).await, [at("01"), at("02")]);
        scheduler.run_once(Some(at("06.500"))).await.unwrap();
        assert_eq!(run_ats(&db).await, [at("01"), at("02"), at("06")]);
    }

    /// A `skip` schedule paused for three seconds runs none of the ticks that fell inside
    /// the pause, even the one due less than its interval before the pass after resume.
    #[tokio::test]
    async fn a_skip_schedule_runs_no_tick_that_fell_inside_its_pause() {
        let db = TestDb::new().await;
        let last = utc("2026-12-01T10:00:00Z");
        let scheduler = scheduler(&db, CatchUp::Skip, last).await;
        stored::set_paused(&db.pool, "every-second", true)
            .await
            .unwrap();
        scheduler
            .run_once(Some(utc("2026-12-01T10:00:02Z")))
            .await
            .unwrap();
        stored::set_paused(&db.pool, "every-second", false)
            .await
            .unwrap();
        // Resumed at 10:00:03.2 (the clock of this test), the next pass at 10:00:03.9.
        sqlx::query("update docket.schedules set resumed_at = $1")
            .bind(utc("2026-12-01T10:00:03.200Z"))
            .execute(&db.pool)
            .await
            .unwrap();
        scheduler
            .run_once(Some(utc("2026-12-01T10:00:03.900Z")))
            .await
            .unwrap();
        assert!(run_ats(&db).await.is_empty(), "{:?}", run_ats(&db).await);
        // The ticks after the resume run as usual.
        scheduler
            .run_once(Some(utc("2026-12-01T10:00:04.100Z")))
            .await
            .unwrap();
        assert_eq!(run_ats(&db).await, [utc("2026-12-01T10:00:04Z")]);
    }

    /// A pause that commits between a scheduler's read and its enqueue moves nothing: with
    /// `catch_up = "all"`, every tick still runs after the resume.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pause_landing_between_the_read_and_the_enqueue_loses_no_tick() {
        let db = TestDb::new().await;
        let last = utc("2026-12-01T10:00:00Z");
        let scheduler = scheduler(&db, CatchUp::All, last).await;
        // An operator's pause, not yet committed: it holds the schedule's row.
        let mut pause = db.pool.begin().await.unwrap();
        sqlx::query("update docket.schedules set paused = true")
            .execute(&mut *pause)
            .await
            .unwrap();
        let pass = tokio::spawn(async move {
            scheduler
                .run_once(Some(utc("2026-12-01T10:00:02.500Z")))
                .await
                .unwrap();
            scheduler
        });
        eventually(
            Duration::from_secs(20),
            "the pass waits on the row",
            || async {
                sqlx::query_scalar::<_, bool>(
                    "select exists (select 1 from pg_stat_activity
                 where datname = current_database() and wait_event_type = 'Lock')",
                )
                .fetch_one(&db.pool)
                .await
                .unwrap()
            },
        )
        .await;
        pause.commit().await.unwrap();
        let scheduler = pass.await.unwrap();
        let row = &stored::list(&db.pool).await.unwrap()[0];
        assert_eq!(
            row.last_tick_at,
            Some(last),
            "a paused schedule does not move"
        );
        assert!(run_ats(&db).await.is_empty());
        stored::set_paused(&db.pool, "every-second", false)
            .await
            .unwrap();
        scheduler
            .run_once(Some(utc("2026-12-01T10:00:03.500Z")))
            .await
            .unwrap();
        let expected: Vec<_> = (1..=3)
            .map(|s| last + chrono::Duration::seconds(s))
            .collect();
        assert_eq!(
            run_ats(&db).await,
            expected,
            "all: every tick since the last one"
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
            let scheduler = Scheduler::new(db.pool.clone(), first.schedules.clone());
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
