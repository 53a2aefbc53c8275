use std::time::Duration;

use chrono::{DateTime, Utc};
use docket_queue::{
    admin, apply_outcomes, enqueue, maintenance, AttemptOutcome, Backoff, Job, JobState, NewJob,
    Outcome,
};
use docket_testkit::TestDb;
use serde_json::json;
use uuid::Uuid;

use crate::claim_default;

async fn fail(
    db: &TestDb,
    worker: Uuid,
    job: &Job,
    delay: Duration,
    now: DateTime<Utc>,
) -> JobState {
    let outcome = Outcome::Retry {
        error: format!("boom on attempt {}", job.attempt),
        delay,
    };
    let applied = apply_outcomes(
        &db.pool,
        worker,
        &[AttemptOutcome {
            id: job.id,
            attempt: job.attempt,
            token: job.lease_token.unwrap(),
            outcome,
        }],
        Some(now),
    )
    .await
    .unwrap();
    assert!(applied.fenced.is_empty());
    applied.changed[0].1
}

#[tokio::test]
async fn retries_follow_the_backoff_then_dead_letter_with_full_history_and_replay_completes() {
    let db = TestDb::new().await;
    let id = enqueue(&db.pool, &NewJob::new("flaky", json!({})).max_attempts(3))
        .await
        .unwrap();
    let backoff = Backoff::Ladder(vec![Duration::from_secs(60), Duration::from_secs(300)]);
    let worker = Uuid::now_v7();
    let mut now = Utc::now();
    for attempt in 1..=3 {
        let claimed = claim_default(&db.pool, worker, 1, Some(now)).await;
        assert_eq!(
            claimed.len(),
            1,
            "attempt {attempt} is claimable at its run_at"
        );
        let job = &claimed[0];
        assert_eq!(job.attempt, attempt);
        let delay = backoff.delay(job.id, job.attempt);
        let state = fail(&db, worker, job, delay, now).await;
        let stored = admin::show(&db.pool, id).await.unwrap();
        if attempt < 3 {
            assert_eq!(state, JobState::Retrying);
            let expected = now + chrono::Duration::from_std(delay).unwrap();
            assert_eq!(
                stored.run_at.timestamp_micros(),
                expected.timestamp_micros()
            );
            // Not ready a second before its time.
            let early = claim_default(
                &db.pool,
                worker,
                1,
                Some(expected - chrono::Duration::seconds(1)),
            )
            .await;
            assert!(early.is_empty());
            now = expected;
        } else {
            assert_eq!(state, JobState::DeadLetter);
            assert_eq!(
                stored.dead_letter_reason.as_deref(),
                Some("attempts_exhausted")
            );
            assert!(stored.finished_at.is_some());
        }
    }
    let dead = admin::show(&db.pool, id).await.unwrap();
    let history: Vec<_> = dead
        .errors
        .iter()
        .map(|e| (e.attempt, e.error.as_str()))
        .collect();
    assert_eq!(
        history,
        [
            (1, "boom on attempt 1"),
            (2, "boom on attempt 2"),
            (3, "boom on attempt 3")
        ]
    );
    assert_eq!(dead.last_error.as_deref(), Some("boom on attempt 3"));

    let replayed = admin::replay(&db.pool, id).await.unwrap();
    assert_eq!((replayed.state, replayed.attempt), (JobState::Pending, 0));
    assert_eq!(replayed.errors.len(), 3, "replay keeps the history");
    let claimed = claim_default(&db.pool, worker, 1, None).await;
    let applied = apply_outcomes(
        &db.pool,
        worker,
        &[AttemptOutcome {
            id,
            attempt: claimed[0].attempt,
            token: claimed[0].lease_token.unwrap(),
            outcome: Outcome::Complete,
        }],
        None,
    )
    .await
    .unwrap();
    assert_eq!(applied.changed, [(id, JobState::Completed)]);
}

#[tokio::test]
async fn permanent_failure_dead_letters_at_once_with_its_reason() {
    let db = TestDb::new().await;
    let id = enqueue(&db.pool, &NewJob::new("k", json!({})))
        .await
        .unwrap();
    let worker = Uuid::now_v7();
    let job = claim_default(&db.pool, worker, 1, None).await.remove(0);
    let outcome = Outcome::DeadLetter {
        reason: "malformed: missing field `to`".into(),
        error: "missing field `to`".into(),
    };
    apply_outcomes(
        &db.pool,
        worker,
        &[AttemptOutcome {
            id,
            attempt: job.attempt,
            token: job.lease_token.unwrap(),
            outcome,
        }],
        None,
    )
    .await
    .unwrap();
    let stored = admin::show(&db.pool, id).await.unwrap();
    assert_eq!(stored.state, JobState::DeadLetter);
    assert_eq!(
        stored.dead_letter_reason.as_deref(),
        Some("malformed: missing field `to`")
    );
    assert_eq!(stored.attempt, 1, "24 attempts were left, none used");
}

#[tokio::test]
async fn snooze_gives_the_attempt_back() {
    let db = TestDb::new().await;
    let id = enqueue(&db.pool, &NewJob::new("k", json!({})))
        .await
        .unwrap();
    let worker = Uuid::now_v7();
    let now = Utc::now();
    let job = claim_default(&db.pool, worker, 1, Some(now))
        .await
        .remove(0);
    let outcome = Outcome::Snooze {
        delay: Duration::from_secs(30),
    };
    apply_outcomes(
        &db.pool,
        worker,
        &[AttemptOutcome {
            id,
            attempt: job.attempt,
            token: job.lease_token.unwrap(),
            outcome,
        }],
        Some(now),
    )
    .await
    .unwrap();
    let stored = admin::show(&db.pool, id).await.unwrap();
    assert_eq!(
        (stored.state, stored.attempt, stored.locked_by),
        (JobState::Pending, 0, None)
    );
    assert_eq!(
        stored.run_at.timestamp_micros(),
        (now + chrono::Duration::seconds(30)).timestamp_micros()
    );
}

#[tokio::test]
async fn outcomes_apply_in_one_batch() {
    let db = TestDb::new().await;
    let jobs: Vec<_> = (0..3).map(|n| NewJob::new("k", json!({"n": n}))).collect();
    docket_queue::enqueue_many(&db.pool, &jobs).await.unwrap();
    let worker = Uuid::now_v7();
    let claimed = claim_default(&db.pool, worker, 3, None).await;
    let outcomes = [
        Outcome::Complete,
        Outcome::Retry {
            error: "later".into(),
            delay: Duration::from_secs(5),
        },
        Outcome::Cancel,
    ];
    let batch: Vec<_> = claimed
        .iter()
        .zip(outcomes)
        .map(|(job, outcome)| AttemptOutcome {
            id: job.id,
            attempt: job.attempt,
            token: job.lease_token.unwrap(),
            outcome,
        })
        .collect();
    let applied = apply_outcomes(&db.pool, worker, &batch, None)
        .await
        .unwrap();
    let mut states: Vec<_> = applied
        .changed
        .iter()
        .map(|(id, state)| (*id, *state))
        .collect();
    states.sort();
    let mut expected = vec![
        (claimed[0].id, JobState::Completed),
        (claimed[1].id, JobState::Retrying),
        (claimed[2].id, JobState::Cancelled),
    ];
    expected.sort();
    assert_eq!(states, expected);
}

#[tokio::test]
async fn late_outcome_of_a_rescued_worker_changes_nothing_and_the_new_holder_counts() {
    let db = TestDb::new().await;
    let id = enqueue(&db.pool, &NewJob::new("k", json!({})))
        .await
        .unwrap();
    let a = Uuid::now_v7();
    let b = Uuid::now_v7();
    let now = Utc::now();
    let job_a = claim_default(&db.pool, a, 1, Some(now)).await.remove(0);
    // A never heartbeats: its lease lapses and the job is rescued, then B claims it.
    let rescued = maintenance::rescue_lapsed(&db.pool, 100, Some(now))
        .await
        .unwrap();
    assert_eq!(
        rescued.iter().map(|j| (j.id, j.state)).collect::<Vec<_>>(),
        [(id, JobState::Retrying)]
    );
    maintenance::heartbeat(
        &db.pool,
        &worker_info(b),
        Duration::from_secs(30),
        Some(now),
    )
    .await
    .unwrap();
    let job_b = claim_default(&db.pool, b, 1, Some(now)).await.remove(0);
    assert_eq!(job_b.attempt, 2);

    let late = apply_outcomes(
        &db.pool,
        a,
        &[AttemptOutcome {
            id,
            attempt: job_a.attempt,
            token: job_a.lease_token.unwrap(),
            outcome: Outcome::Complete,
        }],
        None,
    )
    .await
    .unwrap();
    assert_eq!(late.fenced, [id]);
    assert!(late.changed.is_empty());
    // Even with the current attempt number, A is not the holder.
    let forged = apply_outcomes(
        &db.pool,
        a,
        &[AttemptOutcome {
            id,
            attempt: job_b.attempt,
            token: job_b.lease_token.unwrap(),
            outcome: Outcome::Complete,
        }],
        None,
    )
    .await
    .unwrap();
    assert_eq!(forged.fenced, [id]);
    assert_eq!(
        admin::show(&db.pool, id).await.unwrap().state,
        JobState::Processing
    );

    let real = apply_outcomes(
        &db.pool,
        b,
        &[AttemptOutcome {
            id,
            attempt: job_b.attempt,
            token: job_b.lease_token.unwrap(),
            outcome: Outcome::Complete,
        }],
        None,
    )
    .await
    .unwrap();
    assert_eq!(real.changed, [(id, JobState::Completed)]);
}

#[tokio::test]
async fn rescue_racing_a_completion_never_turns_a_completed_job_back() {
    let db = TestDb::with_pool_size(4).await;
    let jobs: Vec<_> = (0..300)
        .map(|n| NewJob::new("k", json!({"n": n})))
        .collect();
    docket_queue::enqueue_many(&db.pool, &jobs).await.unwrap();
    // The worker never registered, so every job it holds looks lapsed to the rescuer.
    let worker = Uuid::now_v7();
    let claimed = claim_default(&db.pool, worker, 300, None).await;
    let batch: Vec<_> = claimed
        .iter()
        .map(|job| AttemptOutcome {
            id: job.id,
            attempt: job.attempt,
            token: job.lease_token.unwrap(),
            outcome: Outcome::Complete,
        })
        .collect();
    let completer = {
        let pool = db.pool.clone();
        tokio::spawn(async move {
            let mut completed = 0;
            for chunk in batch.chunks(10) {
                completed += apply_outcomes(&pool, worker, chunk, None)
                    .await
                    .unwrap()
                    .changed
                    .len();
            }
            completed
        })
    };
    let rescuer = {
        let pool = db.pool.clone();
        tokio::spawn(async move {
            let mut rescued = 0;
            loop {
                let batch = maintenance::rescue_lapsed(&pool, 7, None).await.unwrap();
                if batch.is_empty() {
                    return rescued;
                }
                rescued += batch.len();
            }
        })
    };
    let completed = completer.await.unwrap();
    let rescued = rescuer.await.unwrap();
    assert_eq!(completed + rescued, 300, "each job went exactly one way");
    let counts: Vec<(JobState, i64)> =
        sqlx::query_as("select state, count(*) from docket.jobs group by state order by state")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let completed_rows = counts
        .iter()
        .find(|(s, _)| *s == JobState::Completed)
        .map_or(0, |(_, n)| *n);
    let retrying_rows = counts
        .iter()
        .find(|(s, _)| *s == JobState::Retrying)
        .map_or(0, |(_, n)| *n);
    assert_eq!(
        (completed_rows as usize, retrying_rows as usize),
        (completed, rescued)
    );
}

pub(crate) fn worker_info(id: Uuid) -> maintenance::WorkerInfo {
    maintenance::WorkerInfo {
        id,
        host: "test-host".into(),
        pid: 1,
        queues: vec!["default".into()],
        kinds: vec!["test.job".into()],
        version: "test".into(),
    }
}

#[tokio::test]
async fn error_history_keeps_the_most_recent_twenty() {
    let db = TestDb::new().await;
    let id = enqueue(&db.pool, &NewJob::new("k", json!({})).max_attempts(30))
        .await
        .unwrap();
    let worker = Uuid::now_v7();
    let mut now = Utc::now();
    for _ in 0..25 {
        let job = claim_default(&db.pool, worker, 1, Some(now))
            .await
            .remove(0);
        fail(&db, worker, &job, Duration::ZERO, now).await;
        now += chrono::Duration::seconds(1);
    }
    let job = admin::show(&db.pool, id).await.unwrap();
    assert_eq!(job.errors.len(), 20);
    assert_eq!(job.errors.first().unwrap().attempt, 6);
    assert_eq!(job.errors.last().unwrap().attempt, 25);
}

/// Index and sequential tuple reads on `docket.jobs` so far, as the statistics see them.
async fn tuple_reads(pool: &sqlx::PgPool) -> (i64, i64) {
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query("select pg_stat_clear_snapshot()")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query_as(
        "select coalesce(idx_tup_fetch, 0) + coalesce((select sum(idx_tup_read) from pg_stat_user_indexes
                 where relid = 'docket.jobs'::regclass), 0)::bigint,
                coalesce(seq_tup_read, 0)
         from pg_stat_user_tables where relid = 'docket.jobs'::regclass",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_batch_of_outcomes_reads_only_its_own_jobs_however_many_the_worker_holds() {
    let db = TestDb::new().await;
    let worker = Uuid::now_v7();
    // Statistics taken while the jobs were pending, then claimed: as in a worker that
    // started on a backlog, the planner believes the worker holds next to nothing.
    let mut conn = db.pool.acquire().await.unwrap();
    for statement in [
        "insert into docket.jobs (kind) select 'k' from generate_series(1, 5000)",
        "analyze docket.jobs",
        // Claimed 100 at a time: one token per 100 jobs, as the worker's claims make them.
        "with numbered as (select id, (row_number() over (order by id) - 1) / 100 as claim from docket.jobs),
              tokens as (select claim, docket.uuid_v7() as token from (select distinct claim from numbered) c)
         update docket.jobs j set state = 'processing', attempt = 1, locked_by = $1,
                attempted_at = now(), lease_token = t.token
         from numbered n join tokens t using (claim) where j.id = n.id",
        // The plan a long-running worker ends up with: the generic one.
        "set plan_cache_mode = force_generic_plan",
        "select pg_stat_force_next_flush()",
    ] {
        let query = sqlx::query(statement);
        let query = if statement.contains("$1") { query.bind(worker) } else { query };
        query.execute(&mut *conn).await.unwrap();
    }
    let ids: Vec<(docket_queue::JobId, Uuid)> =
        sqlx::query_as("select id, lease_token from docket.jobs order by id limit 10")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
    sqlx::query("select pg_stat_force_next_flush()")
        .execute(&mut *conn)
        .await
        .unwrap();
    let batch: Vec<_> = ids
        .iter()
        .map(|(id, token)| AttemptOutcome {
            id: *id,
            attempt: 1,
            token: *token,
            outcome: Outcome::Complete,
        })
        .collect();
    let (index_before, seq_before) = tuple_reads(&db.pool).await;
    let applied = apply_outcomes(&mut *conn, worker, &batch, None)
        .await
        .unwrap();
    assert_eq!(applied.changed.len(), 10);
    sqlx::query("select pg_stat_force_next_flush()")
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    let mut reads = (0, 0);
    for _ in 0..50 {
        let (index_after, seq_after) = tuple_reads(&db.pool).await;
        reads = (index_after - index_before, seq_after - seq_before);
        if reads.0 > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(reads.0 > 0, "statistics never arrived");
    assert_eq!(reads.1, 0, "no sequential scan of the jobs table");
    assert!(
        reads.0 <= 100,
        "10 outcomes read {} index tuples: the statement walks the worker's other jobs",
        reads.0
    );
}

/// Issue #1: one row PostgreSQL refuses (a NUL byte in an error, a delay past the
/// timestamp range) failed the whole batch, forever.
#[tokio::test]
async fn an_error_with_a_nul_byte_and_an_endless_snooze_land_with_the_rest_of_their_batch() {
    let db = TestDb::new().await;
    let jobs: Vec<_> = (0..3)
        .map(|n| NewJob::new("k", json!({ "n": n })))
        .collect();
    docket_queue::enqueue_many(&db.pool, &jobs).await.unwrap();
    let worker = Uuid::now_v7();
    let now = Utc::now();
    let claimed = claim_default(&db.pool, worker, 3, Some(now)).await;
    let outcomes = [
        Outcome::Retry {
            error: "bad\0byte".into(),
            delay: Duration::from_secs(1),
        },
        Outcome::Snooze {
            delay: Duration::MAX,
        },
        Outcome::Complete,
    ];
    let batch: Vec<_> = claimed
        .iter()
        .zip(outcomes)
        .map(|(job, outcome)| AttemptOutcome::of(job, outcome))
        .collect();
    let applied = apply_outcomes(&db.pool, worker, &batch, Some(now))
        .await
        .unwrap();
    assert_eq!(applied.changed.len(), 3, "{applied:?}");
    let failed = admin::show(&db.pool, claimed[0].id).await.unwrap();
    assert_eq!(failed.state, JobState::Retrying);
    assert_eq!(failed.last_error.as_deref(), Some("bad\u{FFFD}byte"));
    let parked = admin::show(&db.pool, claimed[1].id).await.unwrap();
    assert_eq!(parked.state, JobState::Pending);
    assert!(parked.run_at > now + chrono::Duration::days(365 * 99));
    let done = admin::show(&db.pool, claimed[2].id).await.unwrap();
    assert_eq!(done.state, JobState::Completed);
}

/// Issue #1: whatever the database still refuses is isolated to its own row, which is
/// recorded as a failed attempt with the reason; the others land.
#[tokio::test]
async fn a_row_the_database_refuses_is_isolated_and_recorded_as_a_failed_attempt() {
    let db = TestDb::new().await;
    sqlx::raw_sql(
        r#"
        create function refuse_poison() returns trigger language plpgsql as $$
        begin
            if new.kind = 'poison' and new.state = 'completed' then
                raise exception 'poison cannot complete';
            end if;
            return new;
        end $$;
        create trigger refuse_poison before update on docket.jobs
            for each row execute function refuse_poison();
        "#,
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let jobs = [
        NewJob::new("fine", json!({})),
        NewJob::new("poison", json!({})),
        NewJob::new("fine", json!({})),
        NewJob::new("fine", json!({})),
    ];
    docket_queue::enqueue_many(&db.pool, &jobs).await.unwrap();
    let worker = Uuid::now_v7();
    let claimed = claim_default(&db.pool, worker, 4, None).await;
    let batch: Vec<_> = claimed
        .iter()
        .map(|job| AttemptOutcome::of(job, Outcome::Complete))
        .collect();
    let applied = apply_outcomes(&db.pool, worker, &batch, None)
        .await
        .unwrap();
    let poison = claimed.iter().find(|j| j.kind == "poison").unwrap();
    assert_eq!(
        applied
            .refused
            .iter()
            .map(|(id, _)| *id)
            .collect::<Vec<_>>(),
        [poison.id]
    );
    for job in &claimed {
        let stored = admin::show(&db.pool, job.id).await.unwrap();
        if job.kind == "poison" {
            assert_eq!(stored.state, JobState::Retrying);
            let error = stored.last_error.unwrap();
            assert!(error.contains("poison cannot complete"), "{error}");
        } else {
            assert_eq!(stored.state, JobState::Completed);
        }
    }
}

/// Issue #11: `(worker, attempt)` repeats (replay resets the attempt), so a stale outcome
/// of an earlier claim by the same worker passed the fence. The claim token never repeats.
#[tokio::test]
async fn a_stale_outcome_of_an_earlier_claim_by_the_same_worker_is_fenced() {
    let db = TestDb::new().await;
    let id = enqueue(&db.pool, &NewJob::new("k", json!({})))
        .await
        .unwrap();
    let (w, x) = (Uuid::now_v7(), Uuid::now_v7());
    let now = Utc::now();
    // W claims (attempt 1), is cut off and its lease lapses: the job is rescued.
    let first = claim_default(&db.pool, w, 1, Some(now)).await.remove(0);
    maintenance::rescue_lapsed(&db.pool, 100, Some(now))
        .await
        .unwrap();
    // X claims and dead-letters it; an operator replays it (attempt back to 0).
    let lease = Duration::from_secs(30);
    maintenance::heartbeat(&db.pool, &worker_info(x), lease, Some(now))
        .await
        .unwrap();
    let second = claim_default(&db.pool, x, 1, Some(now)).await.remove(0);
    let dead = Outcome::DeadLetter {
        reason: "permanent".into(),
        error: "no".into(),
    };
    apply_outcomes(&db.pool, x, &[AttemptOutcome::of(&second, dead)], Some(now))
        .await
        .unwrap();
    admin::replay(&db.pool, id).await.unwrap();
    // W is back and claims it again: the same worker, the same attempt number.
    maintenance::heartbeat(&db.pool, &worker_info(w), lease, None)
        .await
        .unwrap();
    let third = claim_default(&db.pool, w, 1, None).await.remove(0);
    assert_eq!(
        (third.attempt, third.locked_by),
        (first.attempt, first.locked_by)
    );
    // The first claim's late snooze arrives: it must change nothing.
    let stale = AttemptOutcome::of(
        &first,
        Outcome::Snooze {
            delay: Duration::ZERO,
        },
    );
    let applied = apply_outcomes(&db.pool, w, &[stale], None).await.unwrap();
    assert_eq!(applied.fenced, [id]);
    let stored = admin::show(&db.pool, id).await.unwrap();
    assert_eq!((stored.state, stored.attempt), (JobState::Processing, 1));
}

/// Issue #6: handing a job back (a snooze at shutdown or on lease loss) cleared an
/// operator's cancel and made the job ready again.
#[tokio::test]
async fn a_job_cancelled_while_running_ends_cancelled_when_it_is_handed_back() {
    let db = TestDb::new().await;
    let id = enqueue(&db.pool, &NewJob::new("k", json!({})))
        .await
        .unwrap();
    let worker = Uuid::now_v7();
    let job = claim_default(&db.pool, worker, 1, None).await.remove(0);
    admin::cancel(&db.pool, id).await.unwrap();
    let hand_back = Outcome::Snooze {
        delay: Duration::ZERO,
    };
    let applied = apply_outcomes(
        &db.pool,
        worker,
        &[AttemptOutcome::of(&job, hand_back)],
        None,
    )
    .await
    .unwrap();
    assert_eq!(applied.changed, [(id, JobState::Cancelled)]);
    let stored = admin::show(&db.pool, id).await.unwrap();
    assert!(stored.finished_at.is_some());
}
