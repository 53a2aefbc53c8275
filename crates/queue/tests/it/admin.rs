use chrono::{Duration, Utc};
use docket_queue::admin::{self, DeadLetterFilter, ListFilter};
use docket_queue::{enqueue, Error, JobId, JobState, NewJob};
use docket_testkit::{insert_job, JobOpts, TestDb};
use serde_json::json;
use uuid::Uuid;

#[tokio::test]
async fn cancel_stops_waiting_jobs_at_once_and_marks_processing_ones() {
    let db = TestDb::new().await;
    let waiting = enqueue(&db.pool, &NewJob::new("k", json!({})))
        .await
        .unwrap();
    let cancelled = admin::cancel(&db.pool, waiting).await.unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert!(cancelled.finished_at.is_some());

    let running = insert_job(
        &db.pool,
        JobOpts {
            state: Some(JobState::Processing),
            ..Default::default()
        },
    )
    .await;
    let marked = admin::cancel(&db.pool, running.id).await.unwrap();
    assert_eq!(marked.state, JobState::Processing);
    assert!(marked.cancel_requested_at.is_some());

    let again = admin::cancel(&db.pool, waiting).await.unwrap_err();
    assert!(
        matches!(
            again,
            Error::InvalidState {
                actual: JobState::Cancelled,
                ..
            }
        ),
        "{again}"
    );
}

#[tokio::test]
async fn replay_and_cancel_of_an_unknown_id_say_not_found_and_write_nothing() {
    let db = TestDb::new().await;
    let unknown = JobId(Uuid::now_v7());
    let err = admin::replay(&db.pool, unknown).await.unwrap_err();
    assert_eq!(err.to_string(), format!("job {unknown} not found"));
    assert!(matches!(
        admin::cancel(&db.pool, unknown).await.unwrap_err(),
        Error::JobNotFound(_)
    ));
    let count: i64 = sqlx::query_scalar("select count(*) from docket.jobs")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(count, 0);
}

#[tokio::test]
async fn replay_refuses_a_live_job_and_a_taken_unique_key() {
    let db = TestDb::new().await;
    let live = enqueue(&db.pool, &NewJob::new("k", json!({})))
        .await
        .unwrap();
    assert!(matches!(
        admin::replay(&db.pool, live).await.unwrap_err(),
        Error::InvalidState {
            actual: JobState::Pending,
            action: "replay",
            ..
        }
    ));
    let dead = insert_job(
        &db.pool,
        JobOpts {
            state: Some(JobState::DeadLetter),
            unique_key: Some("u".into()),
            ..Default::default()
        },
    )
    .await;
    enqueue(&db.pool, &NewJob::new("k", json!({})).unique_key("u"))
        .await
        .unwrap();
    let err = admin::replay(&db.pool, dead.id).await.unwrap_err();
    assert!(
        matches!(&err, Error::UniqueKeyTaken { key, .. } if key == "u"),
        "{err}"
    );
    assert_eq!(
        admin::show(&db.pool, dead.id).await.unwrap().state,
        JobState::DeadLetter
    );
}

#[tokio::test]
async fn bulk_replay_moves_exactly_the_matching_dead_letters() {
    let db = TestDb::new().await;
    let now = Utc::now();
    let dead = |queue: &str, kind: &str, finished_ago: i64| JobOpts {
        state: Some(JobState::DeadLetter),
        queue: Some(queue.into()),
        kind: Some(kind.into()),
        finished_at: Some(now - Duration::minutes(finished_ago)),
        ..Default::default()
    };
    let hit = insert_job(&db.pool, dead("mail", "send", 5)).await;
    let other_kind = insert_job(&db.pool, dead("mail", "bounce", 5)).await;
    let other_queue = insert_job(&db.pool, dead("default", "send", 5)).await;
    let too_old = insert_job(&db.pool, dead("mail", "send", 120)).await;
    let completed = insert_job(
        &db.pool,
        JobOpts {
            state: Some(JobState::Completed),
            queue: Some("mail".into()),
            kind: Some("send".into()),
            ..Default::default()
        },
    )
    .await;
    let filter = DeadLetterFilter {
        queue: Some("mail".into()),
        kind: Some("send".into()),
        finished_after: Some(now - Duration::hours(1)),
        finished_before: None,
    };
    assert_eq!(
        admin::replay_dead_letters(&db.pool, &filter).await.unwrap(),
        1
    );
    let state = |id| {
        let pool = db.pool.clone();
        async move { admin::show(&pool, id).await.unwrap().state }
    };
    assert_eq!(state(hit.id).await, JobState::Pending);
    for untouched in [other_kind.id, other_queue.id, too_old.id] {
        assert_eq!(state(untouched).await, JobState::DeadLetter);
    }
    assert_eq!(state(completed.id).await, JobState::Completed);
    // Everything else, in batches.
    assert_eq!(
        admin::replay_dead_letters(&db.pool, &DeadLetterFilter::default())
            .await
            .unwrap(),
        3
    );
}

#[tokio::test]
async fn bulk_replay_of_more_than_one_batch_replays_all() {
    let db = TestDb::new().await;
    sqlx::query(
        "insert into docket.jobs (kind, state, attempt, finished_at, dead_letter_reason)
         select 'k', 'dead_letter', 25, now(), 'attempts_exhausted' from generate_series(1, 2500)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        admin::replay_dead_letters(&db.pool, &DeadLetterFilter::default())
            .await
            .unwrap(),
        2500
    );
    let pending: i64 = sqlx::query_scalar(
        "select count(*) from docket.jobs where state = 'pending' and attempt = 0",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(pending, 2500);
}

#[tokio::test]
async fn list_pages_newest_first_by_keyset_with_filters() {
    let db = TestDb::new().await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(
            enqueue(&db.pool, &NewJob::new("k", json!({"n": n})))
                .await
                .unwrap(),
        );
    }
    enqueue(&db.pool, &NewJob::new("other", json!({})))
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut filter = ListFilter {
        kind: Some("k".into()),
        state: Some(JobState::Pending),
        limit: 2,
        ..Default::default()
    };
    loop {
        let page = admin::list(&db.pool, &filter).await.unwrap();
        seen.extend(page.jobs.iter().map(|j| j.id));
        match page.next {
            Some(next) => filter.before = Some(next),
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids);
    let bad = admin::list(
        &db.pool,
        &ListFilter {
            limit: 0,
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert!(bad.to_string().contains("limit"), "{bad}");
}

/// Issue #7: replaying an expired dead letter kept its expiry, so the first claim
/// dead-lettered it again, and bulk replay counted it as replayed.
#[tokio::test]
async fn an_expired_dead_letter_is_refused_by_replay_and_left_by_bulk_replay() {
    let db = TestDb::new().await;
    let expired = insert_job(
        &db.pool,
        JobOpts {
            state: Some(JobState::DeadLetter),
            expires_at: Some(Utc::now() - Duration::minutes(1)),
            ..Default::default()
        },
    )
    .await;
    let err = admin::replay(&db.pool, expired.id).await.unwrap_err();
    assert!(
        matches!(err, Error::Expired { id, .. } if id == expired.id),
        "{err}"
    );
    assert!(err.to_string().contains("enqueue a new job"), "{err}");
    let still_valid = insert_job(
        &db.pool,
        JobOpts {
            state: Some(JobState::DeadLetter),
            expires_at: Some(Utc::now() + Duration::minutes(10)),
            ..Default::default()
        },
    )
    .await;
    let replayed = admin::replay_dead_letters(&db.pool, &DeadLetterFilter::default())
        .await
        .unwrap();
    assert_eq!(replayed, 1);
    assert_eq!(
        admin::show(&db.pool, still_valid.id).await.unwrap().state,
        JobState::Pending
    );
    assert_eq!(
        admin::show(&db.pool, expired.id).await.unwrap().state,
        JobState::DeadLetter
    );
}

/// Smaller, same issue: a bulk replay racing an enqueue with the same unique key failed on
/// the unique index (a 500 over HTTP). It now passes that key over.
#[tokio::test]
async fn bulk_replay_racing_an_enqueue_of_the_same_key_passes_the_key_over() {
    let db = TestDb::new().await;
    let dead = insert_job(
        &db.pool,
        JobOpts {
            state: Some(JobState::DeadLetter),
            unique_key: Some("report:11".into()),
            ..Default::default()
        },
    )
    .await;
    // The live job's transaction is open while the replay runs: the replay cannot see
    // it, and waits on the unique index until it commits.
    let mut tx = db.pool.begin().await.unwrap();
    let live = enqueue(
        &mut *tx,
        &NewJob::new("k", json!({})).unique_key("report:11"),
    )
    .await
    .unwrap();
    let pool = db.pool.clone();
    let replay = tokio::spawn(async move {
        admin::replay_dead_letters(&pool, &DeadLetterFilter::default()).await
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    tx.commit().await.unwrap();
    let replayed = replay.await.unwrap().unwrap();
    assert_eq!(replayed, 0);
    assert_eq!(
        admin::show(&db.pool, dead.id).await.unwrap().state,
        JobState::DeadLetter
    );
    assert_eq!(
        admin::show(&db.pool, live).await.unwrap().state,
        JobState::Pending
    );
}

/// Listing dead letters newest first must not walk the primary key backwards past every
/// completed job the table keeps (a day's worth by default) to find the few dead letters
/// among them: the list's plan reads only dead letters, here on a table never analyzed and
/// after the statement has run often enough for a generic plan to be considered.
#[tokio::test]
async fn listing_dead_letters_reads_only_dead_letters_however_many_completed_jobs_are_kept() {
    // One connection, so that a raw `begin` holds the listing in one transaction.
    let db = TestDb::with_pool_size(1).await;
    sqlx::raw_sql(
        "insert into docket.jobs (kind, state, dead_letter_reason, finished_at)
         select 'k', 'dead_letter', 'permanent', now() from generate_series(1, 3);
         insert into docket.jobs (kind, state, finished_at)
         select 'k', 'completed', now() from generate_series(1, 20000);",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let fetched = |pool| async move {
        sqlx::query_scalar::<_, i64>(
            "select coalesce(idx_tup_fetch, 0) + coalesce(seq_tup_read, 0)
             from pg_stat_xact_user_tables where relid = 'docket.jobs'::regclass",
        )
        .fetch_one(pool)
        .await
        .unwrap()
    };

    // A server lists many times over one connection: after five runs of a statement
    // PostgreSQL may plan it once for any parameters (a generic plan).
    let filter = ListFilter {
        state: Some(JobState::DeadLetter),
        limit: 2,
        ..Default::default()
    };
    for _ in 0..8 {
        admin::list(&db.pool, &filter).await.unwrap();
    }

    sqlx::query("begin").execute(&db.pool).await.unwrap();
    let before = fetched(&db.pool).await;
    let mut filter = filter;
    let mut seen = Vec::new();
    loop {
        let page = admin::list(&db.pool, &filter).await.unwrap();
        seen.extend(page.jobs.iter().map(|j| (j.id, j.state)));
        match page.next {
            Some(next) => filter.before = Some(next),
            None => break,
        }
    }
    let read = fetched(&db.pool).await - before;
    sqlx::query("rollback").execute(&db.pool).await.unwrap();

    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|(_, state)| *state == JobState::DeadLetter));
    assert!(
        seen.windows(2).all(|pair| pair[0].0 > pair[1].0),
        "newest first"
    );
    assert!(
        read <= 20,
        "two pages of dead letters read {read} rows of the table"
    );
}

/// Under a generic plan (PostgreSQL's choice after five runs of a prepared statement, or
/// `plan_cache_mode = force_generic_plan`), the listing's `($1 is null or state = $1)` could
/// not use any index of a state: listing dead letters (the ops page's question) walked the
/// primary key backwards past every completed job the table keeps, 223 ms at 900,000.
/// Every state's listing must read only what it returns, whatever the plan.
#[tokio::test]
async fn listing_any_state_reads_only_what_it_returns_under_a_generic_plan() {
    // One connection, so that the session setting and a raw `begin` hold for every listing.
    let db = TestDb::with_pool_size(1).await;
    sqlx::raw_sql(
        "insert into docket.jobs (kind, state, dead_letter_reason, finished_at)
         select 'k', 'dead_letter', 'permanent', now() from generate_series(1, 3);
         insert into docket.jobs (kind, state, finished_at)
         select 'k', 'cancelled', now() from generate_series(1, 3);
         insert into docket.jobs (kind) select 'k' from generate_series(1, 3);
         insert into docket.jobs (kind, state, attempt, run_at)
         select 'k', 'retrying', 1, now() + interval '1 hour' from generate_series(1, 3);
         insert into docket.jobs (kind, state, attempt, locked_by, lease_token)
         select 'k', 'processing', 1, gen_random_uuid(), gen_random_uuid()
         from generate_series(1, 3);
         insert into docket.jobs (kind, state, finished_at)
         select 'k', 'completed', now() from generate_series(1, 20000);
         analyze docket.jobs;
         set plan_cache_mode = force_generic_plan;",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let rows_read = |pool| async move {
        sqlx::query_scalar::<_, i64>(
            "select coalesce(idx_tup_fetch, 0) + coalesce(seq_tup_read, 0)
             from pg_stat_xact_user_tables where relid = 'docket.jobs'::regclass",
        )
        .fetch_one(pool)
        .await
        .unwrap()
    };

    for state in [
        JobState::DeadLetter,
        JobState::Cancelled,
        JobState::Pending,
        JobState::Retrying,
        JobState::Processing,
    ] {
        sqlx::query("begin").execute(&db.pool).await.unwrap();
        let before = rows_read(&db.pool).await;
        let mut filter = ListFilter {
            state: Some(state),
            limit: 2,
            ..Default::default()
        };
        let mut seen = Vec::new();
        loop {
            let page = admin::list(&db.pool, &filter).await.unwrap();
            seen.extend(page.jobs.iter().map(|j| j.state));
            match page.next {
                Some(next) => filter.before = Some(next),
                None => break,
            }
        }
        let read = rows_read(&db.pool).await - before;
        sqlx::query("rollback").execute(&db.pool).await.unwrap();
        assert_eq!(seen, [state; 3], "{state:?}");
        assert!(
            read <= 10,
            "two pages of {state:?} jobs read {read} rows of the table"
        );
    }
    // Completed jobs and the listing of every state: the newest first, off the primary key.
    for state in [Some(JobState::Completed), None] {
        sqlx::query("begin").execute(&db.pool).await.unwrap();
        let before = rows_read(&db.pool).await;
        let filter = ListFilter {
            state,
            limit: 2,
            ..Default::default()
        };
        let page = admin::list(&db.pool, &filter).await.unwrap();
        let read = rows_read(&db.pool).await - before;
        sqlx::query("rollback").execute(&db.pool).await.unwrap();
        assert_eq!(page.jobs.len(), 2);
        assert!(read <= 10, "a page of {state:?} read {read} rows");
    }
}

/// A replay is recorded on the job, one or in bulk, and nothing else counts as one: a
/// handler tells an operator's word from a run that came back by itself by this count.
#[tokio::test]
async fn every_replay_is_counted_on_the_job_and_nothing_else_is() {
    let db = TestDb::new().await;
    let dead = |state| JobOpts {
        state: Some(state),
        ..Default::default()
    };
    let job = insert_job(&db.pool, dead(JobState::DeadLetter)).await;
    assert_eq!(job.replays, 0);
    assert_eq!(admin::replay(&db.pool, job.id).await.unwrap().replays, 1);
    sqlx::query(
        "update docket.jobs set state = 'dead_letter', finished_at = now(),
                dead_letter_reason = 'permanent'
         where id = $1",
    )
    .bind(job.id.0)
    .execute(&db.pool)
    .await
    .unwrap();
    let replayed = admin::replay_dead_letters(&db.pool, &DeadLetterFilter::default())
        .await
        .unwrap();
    assert_eq!(replayed, 1);
    assert_eq!(admin::show(&db.pool, job.id).await.unwrap().replays, 2);
    // Cancelled, then a refused replay: no count.
    let other = enqueue(&db.pool, &NewJob::new("k", json!({})))
        .await
        .unwrap();
    admin::cancel(&db.pool, other).await.unwrap();
    assert_eq!(admin::show(&db.pool, other).await.unwrap().replays, 0);
    admin::replay(&db.pool, job.id).await.unwrap_err();
    assert_eq!(admin::show(&db.pool, job.id).await.unwrap().replays, 2);
}
