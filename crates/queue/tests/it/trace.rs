//! Trace context stored with jobs: the SQL argument (old calls unchanged, a malformed value
//! ignored), a caller's explicit parent, and a batch callback's link to its batch's context.

use docket_queue::batch::{self, Callback, NewBatch};
use docket_queue::trace::{JobTrace, TraceContext};
use docket_queue::{admin, JobId, NewJob};
use docket_testkit::TestDb;
use serde_json::json;

const CALLER: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

async fn trace_of(db: &TestDb, id: JobId) -> Option<JobTrace> {
    admin::show(&db.pool, id).await.unwrap().trace_context
}

#[tokio::test]
async fn sql_callers_pass_a_traceparent_by_name_and_a_malformed_one_is_ignored() {
    let db = TestDb::new().await;
    let enqueue = |sql: &'static str| {
        let pool = db.pool.clone();
        async move { JobId(sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap()) }
    };
    // Calls written before the argument existed keep working, positional or named.
    let old =
        enqueue("select docket.enqueue('a', '{}', 'default', now(), 0, 25, null, null, null)")
            .await;
    assert_eq!(trace_of(&db, old).await, None);
    let named = enqueue(
        "select docket.enqueue('a', '{}', queue => 'q', traceparent => '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', tracestate => 'v=1')",
    )
    .await;
    let stored = trace_of(&db, named).await.unwrap().parent.unwrap();
    assert_eq!(stored.traceparent, CALLER);
    assert_eq!(stored.tracestate.as_deref(), Some("v=1"));
    for bad in [
        "select docket.enqueue('a', '{}', traceparent => 'garbage')",
        "select docket.enqueue('a', '{}', traceparent => '00-00000000000000000000000000000000-b7ad6b7169203331-01')",
        "select docket.enqueue('a', '{}', traceparent => 'ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01')",
    ] {
        assert_eq!(trace_of(&db, enqueue(bad).await).await, None, "{bad}");
    }
    let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
        "select id from docket.enqueue_many(array['a', 'b'], array['{}', '{}']::jsonb[], null, null, null, null, null, null,
                                            traceparents => array[null, $1]) order by ord",
    )
    .bind(CALLER)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(trace_of(&db, JobId(ids[0])).await, None);
    assert_eq!(
        trace_of(&db, JobId(ids[1]))
            .await
            .unwrap()
            .parent
            .unwrap()
            .traceparent,
        CALLER
    );
}

#[tokio::test]
async fn a_callers_parent_is_kept_and_a_batch_callback_links_to_the_batchs_context() {
    let db = TestDb::new().await;
    let parent = TraceContext::parse(CALLER, None).unwrap();
    // No OpenTelemetry layer here: the explicit parent is stored as it came.
    let id = docket_queue::enqueue(
        &db.pool,
        &NewJob::new("a", json!({})).trace_parent(parent.clone()),
    )
    .await
    .unwrap();
    assert_eq!(
        trace_of(&db, id).await.unwrap().parent,
        Some(parent.clone())
    );
    let plain = docket_queue::enqueue(&db.pool, &NewJob::new("a", json!({})))
        .await
        .unwrap();
    assert_eq!(trace_of(&db, plain).await, None, "no span, no context");

    let batch = NewBatch {
        jobs: vec![NewJob::new("member", json!({})).trace_parent(parent.clone())],
        callback: Some(Callback {
            kind: "done".to_owned(),
            payload: json!({}),
            queue: "default".to_owned(),
        }),
        parent: None,
    };
    let batch_id = batch::create(&db.pool, &batch).await.unwrap();
    sqlx::query(
        "update docket.jobs set state = 'completed', finished_at = now() where batch_id = $1",
    )
    .bind(batch_id)
    .execute(&db.pool)
    .await
    .unwrap();
    let finished = batch::finish_done(&db.pool, 10).await.unwrap();
    let callback = JobId(finished[0].callback_job_id.unwrap());
    let trace = trace_of(&db, callback).await.unwrap();
    assert_eq!(trace.parent, None, "a callback has no parent of its own");
    assert_eq!(trace.links, vec![parent]);
}

#[tokio::test]
async fn a_cron_ticks_job_carries_the_ticks_context() {
    use chrono::TimeZone as _;
    use docket_queue::cron::{self, Schedule};
    let db = TestDb::new().await;
    cron::register(
        &db.pool,
        &Schedule::new("every", "* * * * * *", "tick.kind"),
        None,
    )
    .await
    .unwrap();
    let at = chrono::Utc.with_ymd_and_hms(2026, 12, 8, 9, 0, 0).unwrap();
    // What the scheduler's span passes (the SQL call's trailing arguments).
    let job: uuid::Uuid = sqlx::query_scalar(
        "select job_id from docket.enqueue_tick('every', $1, traceparent => $2)",
    )
    .bind(at)
    .bind(CALLER)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let trace = trace_of(&db, JobId(job)).await.unwrap();
    assert_eq!(trace.parent.unwrap().traceparent, CALLER);
    // Without a span (no OpenTelemetry layer), a tick's job has none.
    let next = cron::enqueue_tick(&db.pool, "every", at + chrono::Duration::seconds(1))
        .await
        .unwrap();
    let cron::Tick::Enqueued(next) = next else {
        panic!("{next:?}")
    };
    assert_eq!(trace_of(&db, next).await, None);
}
