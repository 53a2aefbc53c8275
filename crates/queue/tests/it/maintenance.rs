use std::time::Duration;

use chrono::Utc;
use docket_queue::{admin, maintenance, JobState};
use docket_testkit::{insert_job, JobOpts, TestDb};
use uuid::Uuid;

use crate::outcome::worker_info;

#[tokio::test]
async fn prune_deletes_exactly_the_old_jobs_of_the_state_in_batches() {
    let db = TestDb::new().await;
    let now = Utc::now();
    let finished = |state: JobState, hours_ago: i64| JobOpts {
        state: Some(state),
        finished_at: Some(now - chrono::Duration::hours(hours_ago)),
        ..Default::default()
    };
    let mut old = Vec::new();
    for _ in 0..5 {
        old.push(
            insert_job(&db.pool, finished(JobState::Completed, 48))
                .await
                .id,
        );
    }
    let recent = insert_job(&db.pool, finished(JobState::Completed, 1)).await;
    let old_dead = insert_job(&db.pool, finished(JobState::DeadLetter, 48)).await;
    let pending = insert_job(&db.pool, JobOpts::default()).await;

    let retention = Duration::from_secs(24 * 3600);
    assert_eq!(
        maintenance::prune(&db.pool, JobState::Completed, retention, 2, Some(now))
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        maintenance::prune(&db.pool, JobState::Completed, retention, 2, Some(now))
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        maintenance::prune(&db.pool, JobState::Completed, retention, 2, Some(now))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        maintenance::prune(&db.pool, JobState::Completed, retention, 2, Some(now))
            .await
            .unwrap(),
        0
    );
    for id in old {
        assert!(admin::show(&db.pool, id).await.is_err());
    }
    for kept in [recent.id, old_dead.id, pending.id] {
        assert!(admin::show(&db.pool, kept).await.is_ok());
    }
    assert!(
        maintenance::prune(&db.pool, JobState::Pending, retention, 10, Some(now))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn rescue_frees_exactly_the_jobs_of_lapsed_or_unknown_workers() {
    let db = TestDb::new().await;
    let now = Utc::now();
    let lease = Duration::from_secs(30);
    let alive = Uuid::now_v7();
    let stale = Uuid::now_v7();
    maintenance::heartbeat(
        &db.pool,
        &worker_info(alive),
        lease,
        Some(now - chrono::Duration::seconds(5)),
    )
    .await
    .unwrap();
    maintenance::heartbeat(
        &db.pool,
        &worker_info(stale),
        lease,
        Some(now - chrono::Duration::seconds(31)),
    )
    .await
    .unwrap();
    // Issue #12: a worker with a lease of its own (two minutes) that beat 55 s ago still
    // holds its jobs, whatever lease the rescuing worker runs with.
    let patient = Uuid::now_v7();
    maintenance::heartbeat(
        &db.pool,
        &worker_info(patient),
        Duration::from_secs(120),
        Some(now - chrono::Duration::seconds(55)),
    )
    .await
    .unwrap();
    let processing = |worker: Uuid, attempt: i32| JobOpts {
        state: Some(JobState::Processing),
        locked_by: Some(worker),
        attempt: Some(attempt),
        max_attempts: Some(3),
        ..Default::default()
    };
    let held = insert_job(&db.pool, processing(alive, 1)).await;
    let lapsed = insert_job(&db.pool, processing(stale, 1)).await;
    let last_try = insert_job(&db.pool, processing(stale, 3)).await;
    let orphan = insert_job(&db.pool, processing(Uuid::now_v7(), 2)).await;
    let long_job = insert_job(&db.pool, processing(patient, 1)).await;
    let waiting = insert_job(&db.pool, JobOpts::default()).await;
    // Issue #6: an operator's cancel of a job whose worker died is not lost to the rescue.
    let cancelled = insert_job(&db.pool, processing(stale, 1)).await;
    admin::cancel(&db.pool, cancelled.id).await.unwrap();

    let rescued = maintenance::rescue_lapsed(&db.pool, 100, Some(now))
        .await
        .unwrap();
    let mut moved: Vec<_> = rescued.iter().map(|j| (j.id, j.state)).collect();
    moved.sort();
    let mut expected = vec![
        (lapsed.id, JobState::Retrying),
        (last_try.id, JobState::DeadLetter),
        (orphan.id, JobState::Retrying),
        (cancelled.id, JobState::Cancelled),
    ];
    expected.sort();
    assert_eq!(moved, expected);
    let back = admin::show(&db.pool, lapsed.id).await.unwrap();
    assert_eq!(
        (back.locked_by, back.run_at.timestamp_micros()),
        (None, now.timestamp_micros())
    );
    assert_eq!(back.errors.last().unwrap().error, "worker lease lapsed");
    assert_eq!(
        admin::show(&db.pool, last_try.id)
            .await
            .unwrap()
            .dead_letter_reason
            .as_deref(),
        Some("attempts_exhausted")
    );
    assert_eq!(
        admin::show(&db.pool, held.id).await.unwrap().state,
        JobState::Processing
    );
    assert_eq!(
        admin::show(&db.pool, waiting.id).await.unwrap().state,
        JobState::Pending
    );
    assert_eq!(
        admin::show(&db.pool, long_job.id).await.unwrap().state,
        JobState::Processing
    );
    let cancelled = admin::show(&db.pool, cancelled.id).await.unwrap();
    assert!(cancelled.finished_at.is_some() && cancelled.locked_by.is_none());
    assert!(maintenance::rescue_lapsed(&db.pool, 100, Some(now))
        .await
        .unwrap()
        .is_empty());

    // After a deregistration, the worker's remaining jobs are rescued.
    maintenance::deregister(&db.pool, alive).await.unwrap();
    let rescued = maintenance::rescue_lapsed(&db.pool, 100, Some(now))
        .await
        .unwrap();
    assert_eq!(rescued.iter().map(|j| j.id).collect::<Vec<_>>(), [held.id]);
}

#[tokio::test]
async fn unhandled_kinds_names_ready_jobs_no_live_worker_runs() {
    let db = TestDb::new().await;
    let now = Utc::now();
    let live = worker_info(Uuid::now_v7()); // serves `default`, runs `test.job`
    maintenance::heartbeat(&db.pool, &live, Duration::from_secs(30), Some(now))
        .await
        .unwrap();
    let mut stale = worker_info(Uuid::now_v7());
    stale.kinds = vec!["report.build".into()];
    maintenance::heartbeat(
        &db.pool,
        &stale,
        Duration::from_secs(30),
        Some(now - chrono::Duration::minutes(5)),
    )
    .await
    .unwrap();
    let old = Some(now - chrono::Duration::minutes(2));
    let job = |kind: &str, queue: &str, run_at| JobOpts {
        kind: Some(kind.into()),
        queue: Some(queue.into()),
        run_at,
        ..Default::default()
    };
    insert_job(&db.pool, job("test.job", "default", old)).await; // handled
    insert_job(&db.pool, job("report.build", "default", old)).await; // only a stale worker knows it
    insert_job(&db.pool, job("test.job", "mail", old)).await; // nobody serves `mail`
    insert_job(&db.pool, job("fresh.kind", "default", Some(now))).await; // not ready long enough
    let after = Duration::from_secs(60);
    let mut parked = maintenance::park_unhandled(&db.pool, after, 1000, 1000, Some(now))
        .await
        .unwrap();
    parked.sort();
    let pair = |q: &str, k: &str| (q.to_owned(), k.to_owned());
    assert_eq!(
        parked,
        [pair("default", "report.build"), pair("mail", "test.job")]
    );
    let names = |kinds: Vec<docket_queue::workers::UnhandledKind>| -> Vec<(String, String)> {
        kinds.into_iter().map(|u| (u.queue, u.kind)).collect()
    };
    let unhandled = docket_queue::workers::unhandled_kinds(&db.pool)
        .await
        .unwrap();
    assert_eq!(names(unhandled), parked);
    // A worker that runs report.build starts: its jobs come back.
    maintenance::heartbeat(&db.pool, &stale, Duration::from_secs(30), Some(now))
        .await
        .unwrap();
    assert_eq!(
        maintenance::unpark_handled(&db.pool, 100, Some(now))
            .await
            .unwrap(),
        1
    );
    let unhandled = docket_queue::workers::unhandled_kinds(&db.pool)
        .await
        .unwrap();
    assert_eq!(names(unhandled), [pair("mail", "test.job")]);

    let workers = docket_queue::workers::list(&db.pool, Some(now))
        .await
        .unwrap();
    assert_eq!(workers.len(), 2);
    assert!(workers.iter().all(|w| w.live));
}

/// Smaller, same issue: stale worker rows were never removed.
#[tokio::test]
async fn registrations_of_long_dead_workers_that_hold_nothing_are_pruned() {
    let db = TestDb::new().await;
    let now = Utc::now();
    let lease = Duration::from_secs(30);
    let (dead, dead_holding, alive) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let two_hours_ago = Some(now - chrono::Duration::hours(2));
    for (id, at) in [
        (dead, two_hours_ago),
        (dead_holding, two_hours_ago),
        (alive, Some(now)),
    ] {
        maintenance::heartbeat(&db.pool, &worker_info(id), lease, at)
            .await
            .unwrap();
    }
    insert_job(
        &db.pool,
        JobOpts {
            state: Some(JobState::Processing),
            locked_by: Some(dead_holding),
            ..Default::default()
        },
    )
    .await;
    let pruned = maintenance::prune_workers(&db.pool, Duration::from_secs(3600), Some(now))
        .await
        .unwrap();
    assert_eq!(pruned, 1);
    let mut left: Vec<Uuid> = docket_queue::workers::list(&db.pool, Some(now))
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.info.id)
        .collect();
    left.sort();
    let mut expected = vec![dead_holding, alive];
    expected.sort();
    assert_eq!(
        left, expected,
        "a worker still holding jobs waits for the rescuer"
    );
}

#[tokio::test]
async fn migration_status_is_current_on_a_migrated_database_and_pending_on_a_blank_one() {
    let db = TestDb::new().await;
    let status = docket_queue::workers::migration_status(&db.pool)
        .await
        .unwrap();
    assert!(status.is_current(), "{status:?}");
    assert_eq!(status.applied, docket_queue::MIGRATOR.iter().count());
    sqlx::query("drop table _sqlx_migrations")
        .execute(&db.pool)
        .await
        .unwrap();
    let blank = docket_queue::workers::migration_status(&db.pool)
        .await
        .unwrap();
    assert_eq!(blank.applied, 0);
    assert!(!blank.is_current());
}

/// Issue #15: ready jobs of a kind no worker runs sat at the head of the claim's index and
/// were read from the heap by every claim. Parked, they cost a claim nothing.
#[tokio::test]
async fn a_claim_does_not_read_parked_jobs_however_many_wait_ahead_of_it() {
    let db = TestDb::new().await;
    let now = Utc::now();
    let worker = worker_info(Uuid::now_v7()); // runs test.job on default
    maintenance::heartbeat(&db.pool, &worker, Duration::from_secs(30), Some(now))
        .await
        .unwrap();
    sqlx::query(
        "insert into docket.jobs (kind, run_at) select 'nobody.runs', now() - interval '1 hour'
         from generate_series(1, 3000)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let fresh = insert_job(&db.pool, JobOpts::default()).await;
    let parked =
        maintenance::park_unhandled(&db.pool, Duration::from_secs(60), 10_000, 10_000, None)
            .await
            .unwrap();
    assert_eq!(parked.len(), 3000);
    let mut tx = db.pool.begin().await.unwrap();
    let kinds = worker.kinds.clone();
    let claimed = docket_queue::claim(
        &mut *tx,
        &docket_queue::ClaimRequest {
            queue: "default",
            kinds: Some(&kinds),
            worker_id: worker.id,
            token: docket_queue::ClaimRequest::new_token(),
            limit: 10,
            now: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        claimed.jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
        [fresh.id]
    );
    let (fetched, scanned): (i64, i64) = sqlx::query_as(
        "select coalesce(idx_tup_fetch, 0), coalesce(seq_tup_read, 0)
         from pg_stat_xact_user_tables where relid = 'docket.jobs'::regclass",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(scanned, 0, "no sequential scan");
    assert!(
        fetched <= 10,
        "the claim fetched {fetched} rows from the heap"
    );
}

/// Issue #15: the rescuer walked the whole of `jobs_snapshot` (every live and
/// dead-lettered row) on each run. It reads `jobs_processing`: the running jobs only.
#[tokio::test]
async fn the_rescuer_reads_only_running_jobs_however_many_others_the_table_holds() {
    let db = TestDb::new().await;
    sqlx::query(
        "insert into docket.jobs (kind, state, finished_at, dead_letter_reason)
         select 'k', 'dead_letter', now(), 'permanent' from generate_series(1, 3000)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("insert into docket.jobs (kind) select 'k' from generate_series(1, 3000)")
        .execute(&db.pool)
        .await
        .unwrap();
    for _ in 0..3 {
        insert_job(
            &db.pool,
            JobOpts {
                state: Some(JobState::Processing),
                ..Default::default()
            },
        )
        .await;
    }
    sqlx::query("analyze docket.jobs")
        .execute(&db.pool)
        .await
        .unwrap();
    let before = snapshot_index_reads(&db.pool).await;
    let rescued = maintenance::rescue_lapsed(&db.pool, 100, None)
        .await
        .unwrap();
    assert_eq!(rescued.len(), 3);
    let mut after = before;
    for _ in 0..150 {
        after = snapshot_index_reads(&db.pool).await;
        if after.1 > before.1 {
            break; // the statistics of the rescue have arrived
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(after.1 > before.1, "statistics never arrived");
    assert_eq!(
        after.0 - before.0,
        0,
        "the rescue read jobs_snapshot, which holds every live and dead-lettered row"
    );
}

/// Index tuples read from `jobs_snapshot` and from `jobs_processing`, as flushed.
async fn snapshot_index_reads(pool: &sqlx::PgPool) -> (i64, i64) {
    let mut conn = pool.acquire().await.unwrap();
    for statement in [
        "select pg_stat_force_next_flush()",
        "select pg_stat_clear_snapshot()",
    ] {
        sqlx::query(statement).execute(&mut *conn).await.unwrap();
    }
    sqlx::query_as(
        "select coalesce(sum(idx_tup_read) filter (where indexrelname = 'jobs_snapshot'), 0)::bigint,
                coalesce(sum(idx_tup_read) filter (where indexrelname = 'jobs_processing'), 0)::bigint
         from pg_stat_user_indexes where relid = 'docket.jobs'::regclass",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_heartbeat_says_whether_the_lease_it_renews_had_lapsed() {
    let db = TestDb::new().await;
    let (now, lease) = (Utc::now(), Duration::from_secs(4));
    let worker = worker_info(Uuid::now_v7());
    let beat = |secs: i64| {
        let worker = worker.clone();
        let pool = db.pool.clone();
        async move {
            maintenance::heartbeat(
                &pool,
                &worker,
                lease,
                Some(now + chrono::Duration::seconds(secs)),
            )
            .await
            .unwrap()
            .lapsed
        }
    };
    assert!(
        beat(0).await,
        "not registered before: nothing proves a lease"
    );
    assert!(!beat(3).await, "renewed within the lease (until 4 s)");
    assert!(beat(7).await, "the lease stored at 3 s lapsed at 7 s");
    assert!(!beat(8).await);
    maintenance::deregister(&db.pool, worker.id).await.unwrap();
    assert!(
        beat(9).await,
        "a registration deleted meanwhile (as stale) had lapsed"
    );
}
