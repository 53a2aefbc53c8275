//! Statements on `docket.batches`.

use sqlx::PgExecutor;
use uuid::Uuid;

use crate::batch::BatchStatus;

/// What `batch_insert` needs.
pub(crate) struct BatchParams<'a> {
    pub(crate) id: Uuid,
    pub(crate) total: i32,
    pub(crate) callback_kind: Option<&'a str>,
    pub(crate) callback_payload: &'a serde_json::Value,
    pub(crate) callback_queue: &'a str,
    /// The job making it: its schedule tick, if any, is the batch's.
    pub(crate) parent: Option<Uuid>,
    /// The trace context it is made in: its callback's attempts link to it.
    pub(crate) trace: Option<&'a crate::trace::TraceContext>,
}

/// Finishes up to `limit` open batches that have no live job left: stores their final
/// counts and enqueues each one's callback (its payload gains `batch_id`), in one
/// statement. `finished_at is null` is re-checked under the row lock, so a batch is
/// finished, and its callback enqueued, once. Returns the finished batches.
pub(crate) async fn batch_finish_done(
    exec: impl PgExecutor<'_>,
    limit: i64,
) -> sqlx::Result<Vec<BatchStatus>> {
    sqlx::query_as(
        r#"
        with done as (
            select b.id from docket.batches b
            where b.finished_at is null
              and not exists (select 1 from docket.jobs j
                              where j.batch_id = b.id
                                and j.state in ('pending', 'retrying', 'processing'))
            order by b.created_at
            limit $1
            for update of b skip locked
        ), counts as (
            select d.id,
                   count(*) filter (where j.state = 'completed')::int as completed,
                   count(*) filter (where j.state = 'dead_letter')::int as dead_letter,
                   count(*) filter (where j.state = 'cancelled')::int as cancelled
            from done d left join docket.jobs j on j.batch_id = d.id
            group by d.id
        )
        update docket.batches b set
            finished_at = now(),
            completed = c.completed,
            dead_letter = c.dead_letter,
            cancelled = c.cancelled,
            callback_job_id = case when b.callback_kind is not null then
                docket.enqueue_batch_callback(b.callback_kind,
                               b.callback_payload || jsonb_build_object('batch_id', b.id),
                               b.callback_queue, b.trace_context) end
        from counts c
        where b.id = c.id and b.finished_at is null
        returning b.id, b.total, b.completed, b.dead_letter, b.cancelled, 0 as remaining,
                  b.finished_at, b.callback_job_id, b.schedule, b.tick_at, b.created_at
        "#,
    )
    .bind(limit)
    .fetch_all(exec)
    .await
}

/// Those of `ids` that are jobs of another batch or of none.
pub(crate) async fn batch_foreign_jobs(
    exec: impl PgExecutor<'_>,
    batch: Uuid,
    ids: &[Uuid],
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "select id from docket.jobs where id = any($1) and batch_id is distinct from $2",
    )
    .bind(ids)
    .bind(batch)
    .fetch_all(exec)
    .await
}

/// How many batches are open (not finished yet).
pub(crate) async fn batch_count_open(exec: impl PgExecutor<'_>) -> sqlx::Result<i64> {
    sqlx::query_scalar("select count(*) from docket.batches where finished_at is null")
        .fetch_one(exec)
        .await
}

/// Records a batch (its jobs are enqueued with its id in the same transaction), linked to
/// the schedule tick whose job `parent` is, when it is one.
pub(crate) async fn batch_insert(
    exec: impl PgExecutor<'_>,
    params: &BatchParams<'_>,
) -> sqlx::Result<()> {
    sqlx::query(
        r#"
        insert into docket.batches (id, total, callback_kind, callback_payload, callback_queue,
                                    schedule, tick_at, trace_context)
        select $1, $2, $3, $4, $5, t.schedule, t.tick_at, docket.trace_context($7, $8)
        from (select 1) one
        left join docket.schedule_ticks t on $6::uuid is not null and t.job_id = $6
        "#,
    )
    .bind(params.id)
    .bind(params.total)
    .bind(params.callback_kind)
    .bind(params.callback_payload)
    .bind(params.callback_queue)
    .bind(params.parent)
    .bind(params.trace.map(|t| t.traceparent.as_str()))
    .bind(params.trace.and_then(|t| t.tracestate.as_deref()))
    .execute(exec)
    .await?;
    Ok(())
}

/// Batches newest first, with their progress: counted from their jobs while open, the
/// stored final counts once finished. `id`: just that one.
pub(crate) async fn batch_list(
    exec: impl PgExecutor<'_>,
    id: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<BatchStatus>> {
    sqlx::query_as(
        r#"
        select b.id, b.total,
               coalesce(b.completed, live.completed) as completed,
               coalesce(b.dead_letter, live.dead_letter) as dead_letter,
               coalesce(b.cancelled, live.cancelled) as cancelled,
               case when b.finished_at is null then live.remaining else 0 end as remaining,
               b.finished_at, b.callback_job_id, b.schedule, b.tick_at, b.created_at
        from docket.batches b
        cross join lateral (
            select count(*) filter (where j.state = 'completed')::int as completed,
                   count(*) filter (where j.state = 'dead_letter')::int as dead_letter,
                   count(*) filter (where j.state = 'cancelled')::int as cancelled,
                   count(*) filter (where j.state in ('pending', 'retrying', 'processing'))::int
                       as remaining
            from docket.jobs j
            where j.batch_id = b.id and b.finished_at is null
        ) live
        where ($1::uuid is null or b.id = $1)
        order by b.id desc
        limit $2
        "#,
    )
    .bind(id)
    .bind(limit)
    .fetch_all(exec)
    .await
}
