use std::collections::HashSet;

use docket_queue::{admin, enqueue, enqueue_many, Error, JobArgs, JobState, NewJob};
use docket_testkit::TestDb;
use serde::Serialize;
use serde_json::json;

use crate::claim_default;

async fn job_count(db: &TestDb) -> i64 {
    sqlx::query_scalar("select count(*) from docket.jobs")
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn enqueue_in_rolled_back_transaction_leaves_nothing() {
    let db = TestDb::new().await;
    let mut tx = db.pool.begin().await.unwrap();
    enqueue(
        &mut *tx,
        &NewJob::new("email.send", json!({"to": "a@example.com"})),
    )
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(job_count(&db).await, 0);
    assert!(claim_default(&db.pool, uuid::Uuid::now_v7(), 10, None)
        .await
        .is_empty());
}

#[tokio::test]
async fn enqueue_in_committed_transaction_is_claimable() {
    let db = TestDb::new().await;
    let mut tx = db.pool.begin().await.unwrap();
    let id = enqueue(&mut *tx, &NewJob::new("email.send", json!({"n": 1})))
        .await
        .unwrap();
    // Not visible to others before the commit.
    assert!(claim_default(&db.pool, uuid::Uuid::now_v7(), 10, None)
        .await
        .is_empty());
    tx.commit().await.unwrap();
    let claimed = claim_default(&db.pool, uuid::Uuid::now_v7(), 10, None).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, id);
    assert_eq!(claimed[0].payload, json!({"n": 1}));
    assert_eq!(claimed[0].attempt, 1);
}

#[tokio::test]
async fn concurrent_enqueues_with_one_unique_key_make_one_job() {
    let db = TestDb::with_pool_size(25).await;
    let mut tasks = Vec::new();
    for n in 0..20 {
        let pool = db.pool.clone();
        tasks.push(tokio::spawn(async move {
            let job =
                NewJob::new("report.build", json!({"caller": n})).unique_key("report:2026-11");
            enqueue(&pool, &job).await.unwrap()
        }));
    }
    let mut ids = HashSet::new();
    for task in tasks {
        ids.insert(task.await.unwrap());
    }
    assert_eq!(ids.len(), 1, "every caller gets the one job's id");
    assert_eq!(job_count(&db).await, 1);
    let id = *ids.iter().next().unwrap();
    assert_eq!(
        admin::show(&db.pool, id)
            .await
            .unwrap()
            .unique_key
            .as_deref(),
        Some("report:2026-11")
    );
}

#[tokio::test]
async fn unique_key_is_free_again_once_the_job_finished() {
    let db = TestDb::new().await;
    let job = NewJob::new("sync", json!({})).unique_key("sync:1");
    let first = enqueue(&db.pool, &job).await.unwrap();
    let worker = uuid::Uuid::now_v7();
    let claimed = claim_default(&db.pool, worker, 1, None).await;
    // Still live while processing: same id.
    assert_eq!(enqueue(&db.pool, &job).await.unwrap(), first);
    docket_queue::apply_outcomes(
        &db.pool,
        worker,
        &[docket_queue::AttemptOutcome {
            id: first,
            attempt: claimed[0].attempt,
            token: claimed[0].lease_token.unwrap(),
            outcome: docket_queue::Outcome::Complete,
        }],
        None,
    )
    .await
    .unwrap();
    let second = enqueue(&db.pool, &job).await.unwrap();
    assert_ne!(second, first);
}

#[derive(Serialize)]
struct Welcome {
    user_id: i64,
}

impl JobArgs for Welcome {
    const KIND: &'static str = "welcome";
}

#[tokio::test]
async fn typed_job_stores_its_kind_and_serialized_payload_with_options() {
    let db = TestDb::new().await;
    let run_at = chrono::Utc::now() + chrono::Duration::hours(1);
    let job = NewJob::typed(&Welcome { user_id: 42 })
        .unwrap()
        .queue("mail")
        .priority(-5)
        .run_at(run_at)
        .max_attempts(3);
    let id = enqueue(&db.pool, &job).await.unwrap();
    let stored = admin::show(&db.pool, id).await.unwrap();
    assert_eq!(stored.kind, "welcome");
    assert_eq!(stored.payload, json!({"user_id": 42}));
    assert_eq!(stored.queue, "mail");
    assert_eq!(stored.priority, -5);
    assert_eq!(stored.max_attempts, 3);
    assert_eq!(stored.state, JobState::Pending);
    assert_eq!(stored.run_at.timestamp_micros(), run_at.timestamp_micros());
    // UUID v7: the version nibble says 7.
    assert_eq!(stored.id.0.get_version_num(), 7);
}

#[tokio::test]
async fn bulk_enqueue_returns_ids_in_input_order_and_dedupes_unique_keys() {
    let db = TestDb::new().await;
    let existing = enqueue(&db.pool, &NewJob::new("k", json!({})).unique_key("taken"))
        .await
        .unwrap();
    let jobs = vec![
        NewJob::new("k", json!({"n": 0})),
        NewJob::new("k", json!({"n": 1})).unique_key("taken"),
        NewJob::new("k", json!({"n": 2})).unique_key("fresh"),
        NewJob::new("k", json!({"n": 3})).unique_key("fresh"),
        NewJob::new("k", json!({"n": 4})).queue("other"),
    ];
    let ids = enqueue_many(&db.pool, &jobs).await.unwrap();
    assert_eq!(ids.len(), 5);
    assert_eq!(ids[1], existing);
    assert_eq!(
        ids[2], ids[3],
        "the first job with a key wins within one call"
    );
    assert_eq!(job_count(&db).await, 4);
    for (index, n) in [(0usize, 0), (2, 2), (4, 4)] {
        assert_eq!(
            admin::show(&db.pool, ids[index]).await.unwrap().payload,
            json!({"n": n})
        );
    }
    assert_eq!(admin::show(&db.pool, ids[4]).await.unwrap().queue, "other");
}

#[tokio::test]
async fn bulk_enqueue_of_ten_thousand_jobs_in_one_call() {
    let db = TestDb::new().await;
    let jobs: Vec<_> = (0..10_000)
        .map(|n| NewJob::new("bulk", json!({"n": n})))
        .collect();
    let ids = enqueue_many(&db.pool, &jobs).await.unwrap();
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 10_000);
    assert_eq!(job_count(&db).await, 10_000);
    let last = admin::show(&db.pool, ids[9_999]).await.unwrap();
    assert_eq!(last.payload, json!({"n": 9_999}));
}

#[tokio::test]
async fn sql_enqueue_function_works_from_plain_sql() {
    let db = TestDb::new().await;
    let id: uuid::Uuid = sqlx::query_scalar(
        "select docket.enqueue('report.build', '{\"month\": 11}'::jsonb, queue => 'reports', priority => 2, unique_key => 'r-11')",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let again: uuid::Uuid = sqlx::query_scalar(
        "select docket.enqueue('report.build', '{}'::jsonb, unique_key => 'r-11')",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(id, again);
    let job = admin::show(&db.pool, docket_queue::JobId(id))
        .await
        .unwrap();
    assert_eq!(
        (job.queue.as_str(), job.priority, job.max_attempts),
        ("reports", 2, 25)
    );
    assert_eq!(job.payload, json!({"month": 11}));
}

async fn notified(listener: &mut sqlx::postgres::PgListener) -> Vec<String> {
    let mut queues = Vec::new();
    while let Ok(Ok(Some(n))) =
        tokio::time::timeout(std::time::Duration::from_millis(300), listener.try_recv()).await
    {
        queues.push(n.payload().to_owned());
    }
    queues.sort();
    queues
}

#[tokio::test]
async fn enqueue_notifies_each_queue_with_a_waiting_worker_once_per_transaction() {
    let db = TestDb::new().await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&db.pool)
        .await
        .unwrap();
    listener.listen("docket_jobs").await.unwrap();
    let queues = ["default", "mail", "later"].map(String::from);
    docket_queue::claim::want_wakeups(&db.pool, &queues)
        .await
        .unwrap();
    let mut tx = db.pool.begin().await.unwrap();
    let many: Vec<_> = (0..50).map(|n| NewJob::new("k", json!({"n": n}))).collect();
    enqueue_many(&mut *tx, &many).await.unwrap();
    enqueue(&mut *tx, &NewJob::new("k", json!({})))
        .await
        .unwrap();
    enqueue(&mut *tx, &NewJob::new("k", json!({})).queue("mail"))
        .await
        .unwrap();
    // Scheduled for later: no wake-up for it.
    enqueue(
        &mut *tx,
        &NewJob::new("k", json!({}))
            .queue("later")
            .run_at(chrono::Utc::now() + chrono::Duration::hours(1)),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(notified(&mut listener).await, ["default", "mail"]);
}

/// Issue #16: every notifying transaction takes a database-wide lock through its commit,
/// so notifying on every enqueue serialised concurrent enqueues. Only the first enqueue
/// after a worker starts waiting notifies; a claim that comes back short re-arms it.
#[tokio::test]
async fn only_the_first_enqueue_after_a_worker_starts_waiting_notifies() {
    let db = TestDb::new().await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&db.pool)
        .await
        .unwrap();
    listener.listen("docket_jobs").await.unwrap();
    let job = || NewJob::new("k", json!({}));
    enqueue(&db.pool, &job()).await.unwrap();
    assert!(notified(&mut listener).await.is_empty(), "nobody waits yet");
    docket_queue::claim::want_wakeups(&db.pool, &["default".to_owned()])
        .await
        .unwrap();
    enqueue(&db.pool, &job()).await.unwrap();
    enqueue(&db.pool, &job()).await.unwrap();
    enqueue_many(&db.pool, &[job(), job()]).await.unwrap();
    assert_eq!(
        notified(&mut listener).await,
        ["default"],
        "the first one only"
    );
    // A worker takes everything (fewer than it asked for) and waits again.
    let claimed = claim_default(&db.pool, uuid::Uuid::now_v7(), 10, None).await;
    assert_eq!(claimed.len(), 5);
    enqueue(&db.pool, &job()).await.unwrap();
    assert_eq!(notified(&mut listener).await, ["default"]);
    // A claim that comes back full means the worker is busy: no wake-up wanted.
    enqueue(&db.pool, &job()).await.unwrap();
    claim_default(&db.pool, uuid::Uuid::now_v7(), 2, None).await;
    enqueue(&db.pool, &job()).await.unwrap();
    assert!(notified(&mut listener).await.is_empty());
}

#[tokio::test]
async fn bad_input_is_a_clear_error_and_writes_nothing() {
    let db = TestDb::new().await;
    let empty_kind = enqueue(&db.pool, &NewJob::new("", json!({})))
        .await
        .unwrap_err();
    assert!(
        matches!(&empty_kind, Error::InvalidJob(m) if m.contains("kind")),
        "{empty_kind}"
    );
    let negative = enqueue(&db.pool, &NewJob::new("k", json!({})).max_attempts(-1))
        .await
        .unwrap_err();
    assert!(
        matches!(&negative, Error::InvalidJob(m) if m.contains("max_attempts")),
        "{negative}"
    );
    let in_bulk = enqueue_many(
        &db.pool,
        &[NewJob::new("k", json!({})), NewJob::new(" ", json!({}))],
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&in_bulk, Error::InvalidJob(m) if m.starts_with("job 1:")),
        "{in_bulk}"
    );
    // From SQL, the schema's checks hold the same line.
    let sql = sqlx::query("select docket.enqueue('', '{}'::jsonb)")
        .execute(&db.pool)
        .await
        .unwrap_err();
    assert!(sql.to_string().contains("jobs_kind_length"), "{sql}");
    let not_json = sqlx::query("select docket.enqueue('k', 'not json'::jsonb)")
        .execute(&db.pool)
        .await
        .unwrap_err();
    assert!(
        not_json
            .to_string()
            .contains("invalid input syntax for type json"),
        "{not_json}"
    );
    assert_eq!(job_count(&db).await, 0);
}

#[tokio::test]
async fn sql_made_ids_are_version_7_and_sort_in_the_order_they_were_made() {
    let db = TestDb::new().await;
    let mut ids = Vec::new();
    for _ in 0..200 {
        let id: uuid::Uuid = sqlx::query_scalar("select docket.uuid_v7()")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        ids.push(id);
    }
    assert!(ids
        .iter()
        .all(|id| id.get_version_num() == 7 && id.get_variant() == uuid::Variant::RFC4122));
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(sorted, ids);
    let millis = ids[0].get_timestamp().unwrap().to_unix();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        now.abs_diff(millis.0) < 60,
        "the id carries the time it was made"
    );
}

/// Issue #10: NUL characters and oversized unique keys reached the database and came back
/// as raw errors (a 500 over HTTP). Each is refused first, naming the field, and nothing
/// is written; the database refuses the same from SQL.
#[tokio::test]
async fn nul_characters_and_oversized_unique_keys_are_refused_naming_the_field() {
    let db = TestDb::new().await;
    let base = || NewJob::new("k", json!({}));
    let cases = [
        ("payload", NewJob::new("k", json!({ "note": "a\u{0}b" }))),
        ("payload", NewJob::new("k", json!([{ "a\u{0}": 1 }]))),
        ("kind", NewJob::new("k\u{0}", json!({}))),
        ("queue", base().queue("mail\u{0}")),
        ("unique_key", base().unique_key("key\u{0}")),
        ("unique_key", base().unique_key("x".repeat(3000))),
    ];
    for (field, job) in cases {
        let err = enqueue(&db.pool, &job).await.unwrap_err();
        assert!(matches!(err, Error::InvalidJob(_)), "{err}");
        assert!(err.to_string().contains(field), "{field}: {err}");
        let err = enqueue_many(&db.pool, &[job]).await.unwrap_err();
        assert!(err.to_string().contains(field), "{field}: {err}");
    }
    assert_eq!(job_count(&db).await, 0);
    let err = sqlx::query("select docket.enqueue('k', '{}', unique_key => repeat('x', 3000))")
        .execute(&db.pool)
        .await
        .unwrap_err();
    let constraint = err.as_database_error().and_then(|e| e.constraint());
    assert_eq!(constraint, Some("jobs_unique_key_length"), "{err}");
}

/// Issue #15: keyed `enqueue_many` created a temporary table per call (slow, and a catalog
/// entry each time). Inside the caller's transaction, none is left to see.
#[tokio::test]
async fn keyed_bulk_enqueue_creates_no_temporary_table() {
    let db = TestDb::new().await;
    let mut tx = db.pool.begin().await.unwrap();
    let jobs = [
        NewJob::new("k", json!({})).unique_key("a"),
        NewJob::new("k", json!({})).unique_key("a"),
        NewJob::new("k", json!({})),
    ];
    let ids = enqueue_many(&mut *tx, &jobs).await.unwrap();
    assert_eq!(ids[0], ids[1]);
    let temporary: i64 =
        sqlx::query_scalar("select count(*) from pg_class where relpersistence = 't'")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(temporary, 0);
}

/// A payload with the largest double is stored by jsonb as 309 exact digits; it must read
/// back (it once failed to decode, and every listing that held the job answered 500).
#[tokio::test]
async fn a_payload_with_extreme_doubles_reads_back() {
    let db = TestDb::new().await;
    let payload = json!([f64::MAX, f64::MIN_POSITIVE, -5.247835516641743e16]);
    let id = enqueue(&db.pool, &NewJob::new("k", payload.clone()))
        .await
        .unwrap();
    let stored = admin::show(&db.pool, id).await.unwrap().payload;
    // jsonb keeps the numbers exact; whole ones come back as integers.
    let numbers = |v: &serde_json::Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_f64().unwrap())
            .collect()
    };
    assert_eq!(numbers(&stored), numbers(&payload));
}

/// Issue #21 case 11: a time outside PostgreSQL's range reached the database and failed
/// there ("timestamp out of range"). Docket's range (years 1 to 9999 UTC) holds the same in
/// Rust, before any SQL, and in SQL, for callers of `docket.enqueue`.
#[tokio::test]
async fn times_outside_years_1_to_9999_are_refused_by_rust_and_by_sql_alike() {
    use chrono::{TimeZone, Utc};
    let db = TestDb::new().await;
    let far_past = Utc.with_ymd_and_hms(-5000, 1, 1, 0, 0, 0).unwrap();
    let before_year_1 = Utc.with_ymd_and_hms(0, 12, 31, 23, 59, 59).unwrap();
    let after_9999 = Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap();
    let first = Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).unwrap();
    let last = Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap();
    for at in [far_past, before_year_1, after_9999] {
        for (field, job) in [
            ("run_at", NewJob::new("k", json!({})).run_at(at)),
            ("expires_at", NewJob::new("k", json!({})).expires_at(at)),
        ] {
            let err = enqueue(&db.pool, &job).await.unwrap_err();
            assert!(
                matches!(&err, Error::InvalidJob(m) if m.contains(field)),
                "{field} {at}: {err:?}"
            );
            let err = enqueue_many(&db.pool, &[job]).await.unwrap_err();
            assert!(
                matches!(&err, Error::InvalidJob(m) if m.contains(field)),
                "{field} {at}: {err:?}"
            );
        }
        let filter = admin::DeadLetterFilter {
            finished_after: Some(at),
            ..Default::default()
        };
        let err = admin::replay_dead_letters(&db.pool, &filter)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::InvalidArgument(m) if m.contains("since")),
            "{err:?}"
        );
    }
    // SQL holds the same line for what PostgreSQL itself could store.
    for at in ["0001-12-31 23:59:59+00 BC", "10000-01-01 00:00:00+00"] {
        for sql in [
            "select docket.enqueue('k', '{}', run_at => $1::timestamptz)",
            "select docket.enqueue('k', '{}', expires_at => $1::timestamptz)",
        ] {
            let err = sqlx::query(sql)
                .bind(at)
                .execute(&db.pool)
                .await
                .unwrap_err();
            let code = err.as_database_error().and_then(|e| e.code());
            assert_eq!(code.as_deref(), Some("23514"), "{sql} {at}: {err}");
        }
    }
    assert_eq!(job_count(&db).await, 0);
    // The first and last instants of the range are jobs, in Rust and in SQL.
    for at in [first, last] {
        enqueue(
            &db.pool,
            &NewJob::new("k", json!({})).run_at(at).expires_at(at),
        )
        .await
        .unwrap();
    }
    sqlx::query("select docket.enqueue('k', '{}', run_at => $1, expires_at => $1)")
        .bind(last)
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(job_count(&db).await, 3);
}

/// Issue #21 case 11: a NUL in a listing's or a replay's queue or kind reached SQL as text
/// ("invalid byte sequence"); it is refused first, naming the field.
#[tokio::test]
async fn a_nul_in_a_filter_name_is_refused_naming_the_field() {
    let db = TestDb::new().await;
    for (field, filter) in [
        (
            "queue",
            admin::ListFilter {
                queue: Some("a\0b".into()),
                limit: 10,
                ..Default::default()
            },
        ),
        (
            "kind",
            admin::ListFilter {
                kind: Some("\0".into()),
                limit: 10,
                ..Default::default()
            },
        ),
    ] {
        let err = admin::list(&db.pool, &filter).await.unwrap_err();
        assert!(
            matches!(&err, Error::InvalidArgument(m) if m.contains(field)),
            "{field}: {err:?}"
        );
        let replay = admin::DeadLetterFilter {
            queue: filter.queue.clone(),
            kind: filter.kind.clone(),
            ..Default::default()
        };
        let err = admin::replay_dead_letters(&db.pool, &replay)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::InvalidArgument(m) if m.contains(field)),
            "{field}: {err:?}"
        );
    }
    let err = docket_queue::cron::set_paused(&db.pool, "a\0b", true)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument(m) if m.contains("schedule")),
        "{err:?}"
    );
}

/// A kind whose jobs carry their own queue, priority, attempts and unique key.
#[derive(Serialize)]
struct Digest {
    account: i64,
}

impl JobArgs for Digest {
    const KIND: &'static str = "digest.send";
    const QUEUE: &'static str = "mail";
    const PRIORITY: i16 = 3;
    const MAX_ATTEMPTS: i32 = 4;

    fn unique_key(&self) -> Option<String> {
        Some(format!("digest:{}", self.account))
    }
}

#[tokio::test]
async fn a_kinds_own_options_are_stored_and_a_second_enqueue_says_it_found_the_first() {
    let db = TestDb::new().await;
    let job = NewJob::typed(&Digest { account: 7 }).unwrap();
    let first = docket_queue::enqueue_or_find(&db.pool, &job).await.unwrap();
    assert!(!first.existing);
    let stored = admin::show(&db.pool, first.id).await.unwrap();
    assert_eq!(
        (
            stored.queue.as_str(),
            stored.priority,
            stored.max_attempts,
            stored.unique_key.as_deref()
        ),
        ("mail", 3, 4, Some("digest:7"))
    );
    let again = docket_queue::enqueue_or_find(&db.pool, &job).await.unwrap();
    assert_eq!((again.id, again.existing), (first.id, true));
    let other =
        docket_queue::enqueue_or_find(&db.pool, &NewJob::typed(&Digest { account: 8 }).unwrap())
            .await
            .unwrap();
    assert!(!other.existing);
    assert_eq!(job_count(&db).await, 2);
}
