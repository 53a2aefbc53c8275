//! Statements on `docket.schedules` and `docket.schedule_ticks`.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use crate::cron::{Schedule, ScheduleRow, ScheduleState};
use crate::job::JobId;

/// Deletes ticks older than `before` (their schedules are past them:
/// `last_tick_at` alone keeps a slow scheduler from enqueueing them again).
pub(crate) async fn schedule_tick_delete_before(
    exec: impl PgExecutor<'_>,
    before: DateTime<Utc>,
) -> sqlx::Result<u64> {
    let done = sqlx::query("delete from docket.schedule_ticks where tick_at < $1")
        .bind(before)
        .execute(exec)
        .await?;
    Ok(done.rows_affected())
}

/// Enqueues the job of one tick, exactly once (`docket.enqueue_tick`): the job's id, or
/// `None` when another scheduler made it, the schedule is paused, or it is already past
/// the tick; and whether the tick was skipped (overlap) instead.
pub(crate) async fn schedule_tick_enqueue(
    exec: impl PgExecutor<'_>,
    name: &str,
    tick_at: DateTime<Utc>,
    trace: Option<&crate::trace::TraceContext>,
) -> sqlx::Result<(Option<JobId>, bool)> {
    sqlx::query_as("select job_id, skipped from docket.enqueue_tick($1, $2, $3, $4)")
        .bind(name)
        .bind(tick_at)
        .bind(trace.map(|t| t.traceparent.as_str()))
        .bind(trace.and_then(|t| t.tracestate.as_deref()))
        .fetch_one(exec)
        .await
}

/// Moves a schedule past ticks it will not enqueue (missed by the catch-up policy) and
/// records its next tick. Never moves it back, and never moves a paused one (its next
/// tick is still recorded).
pub(crate) async fn schedule_advance(
    exec: impl PgExecutor<'_>,
    name: &str,
    last_tick_at: Option<DateTime<Utc>>,
    next_tick_at: Option<DateTime<Utc>>,
) -> sqlx::Result<()> {
    // `docket.advance_schedule` is the one writer of `last_tick_at`.
    sqlx::query("select docket.advance_schedule($1, $2, $3, true)")
        .bind(name)
        .bind(last_tick_at)
        .bind(next_tick_at)
        .execute(exec)
        .await?;
    Ok(())
}

/// The columns of [`ScheduleState`].
const STATE_COLUMNS: &str = "name, paused, last_tick_at, next_tick_at, registered_at, resumed_at";

/// What a scheduler needs of every schedule each second: no definition, no batch.
pub(crate) async fn schedule_states(exec: impl PgExecutor<'_>) -> sqlx::Result<Vec<ScheduleState>> {
    sqlx::query_as(&format!("select {STATE_COLUMNS} from docket.schedules"))
        .fetch_all(exec)
        .await
}

/// One schedule's state, its row locked until the caller's transaction ends: a pause or
/// another scheduler waits for it.
pub(crate) async fn schedule_state_lock(
    exec: impl PgExecutor<'_>,
    name: &str,
) -> sqlx::Result<Option<ScheduleState>> {
    sqlx::query_as(&format!(
        "select {STATE_COLUMNS} from docket.schedules where name = $1 for update"
    ))
    .bind(name)
    .fetch_optional(exec)
    .await
}

/// Every schedule, by name, with its last tick's batch (a cron batch) and its progress.
pub(crate) async fn schedule_list(exec: impl PgExecutor<'_>) -> sqlx::Result<Vec<ScheduleRow>> {
    sqlx::query_as(
        r#"
        select s.*,
               not exists (select 1 from docket.schedule_declarations d
                           join docket.workers w on w.id = d.worker_id
                           where d.schedule = s.name and w.lease_expires_at > now())
               and exists (select 1 from docket.workers w where w.lease_expires_at > now())
                   as retired,
               (select count(distinct d.definition) from docket.schedule_declarations d
                join docket.workers w on w.id = d.worker_id
                where d.schedule = s.name and w.lease_expires_at > now()) > 1
                   as conflicting,
               b.id as last_batch_id, b.total as last_batch_total,
               case when b.id is null then null
                    when b.finished_at is not null then 0
                    else (select count(*)::int from docket.jobs j
                          where j.batch_id = b.id
                            and j.state in ('pending', 'retrying', 'processing')) end
                   as last_batch_remaining,
               b.finished_at as last_batch_finished_at
        from docket.schedules s
        left join lateral (
            select * from docket.batches b
            where b.schedule = s.name
            order by b.tick_at desc
            limit 1
        ) b on true
        order by s.name
        "#,
    )
    .fetch_all(exec)
    .await
}

/// Registers a schedule's definition and its next tick, or updates them; its pause and
/// last tick stay.
pub(crate) async fn schedule_register(
    exec: impl PgExecutor<'_>,
    def: &Schedule,
    next_tick_at: Option<DateTime<Utc>>,
) -> sqlx::Result<()> {
    sqlx::query(
        r#"
        insert into docket.schedules (name, cron, kind, payload, queue, priority, max_attempts,
                                      timezone, catch_up, overlap, next_tick_at, catch_up_max)
        values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
        on conflict (name) do update set
            cron = excluded.cron, kind = excluded.kind, payload = excluded.payload,
            queue = excluded.queue, priority = excluded.priority,
            max_attempts = excluded.max_attempts, timezone = excluded.timezone,
            catch_up = excluded.catch_up, overlap = excluded.overlap,
            next_tick_at = excluded.next_tick_at, catch_up_max = excluded.catch_up_max
        "#,
    )
    .bind(&def.name)
    .bind(&def.cron)
    .bind(&def.kind)
    .bind(&def.payload)
    .bind(&def.queue)
    .bind(def.priority)
    .bind(def.max_attempts)
    .bind(&def.timezone)
    .bind(def.catch_up.as_str())
    .bind(def.overlap.as_str())
    .bind(next_tick_at)
    .bind(i32::try_from(def.catch_up_max).unwrap_or(i32::MAX))
    .execute(exec)
    .await?;
    Ok(())
}

/// Pauses or resumes a schedule; `false` when there is no such schedule. A resume of a
/// paused schedule records when (`resumed_at`): the ticks before it fell inside the pause.
pub(crate) async fn schedule_set_paused(
    exec: impl PgExecutor<'_>,
    name: &str,
    paused: bool,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        r#"
        update docket.schedules set
            paused = $2,
            resumed_at = case when paused and not $2 then now() else resumed_at end
        where name = $1
        "#,
    )
    .bind(name)
    .bind(paused)
    .execute(exec)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records that the worker `worker_id` declares `def` (its definition as JSON).
pub(crate) async fn schedule_declare(
    exec: impl PgExecutor<'_>,
    worker_id: uuid::Uuid,
    def: &Schedule,
) -> sqlx::Result<()> {
    sqlx::query(
        r#"
        insert into docket.schedule_declarations (schedule, worker_id, definition)
        values ($1, $2, $3)
        on conflict (schedule, worker_id) do update set
            definition = excluded.definition, declared_at = now()
        "#,
    )
    .bind(&def.name)
    .bind(worker_id)
    .bind(sqlx::types::Json(def))
    .execute(exec)
    .await?;
    Ok(())
}

/// Other live workers' declarations of `def`'s name that differ from it: their
/// definition, worker id, host and pid.
pub(crate) async fn schedule_declarations_differing(
    exec: impl PgExecutor<'_>,
    worker_id: uuid::Uuid,
    def: &Schedule,
) -> sqlx::Result<Vec<(sqlx::types::Json<Schedule>, uuid::Uuid, String, i32)>> {
    sqlx::query_as(
        r#"
        select d.definition, w.id, w.host, w.pid
        from docket.schedule_declarations d
        join docket.workers w on w.id = d.worker_id
        where d.schedule = $1 and d.worker_id <> $2 and w.lease_expires_at > now()
          and d.definition <> $3
        order by w.heartbeat_at desc
        "#,
    )
    .bind(&def.name)
    .bind(worker_id)
    .bind(sqlx::types::Json(def))
    .fetch_all(exec)
    .await
}

/// Live workers that declare the schedule `name`: id, host, pid.
pub(crate) async fn schedule_declarers(
    exec: impl PgExecutor<'_>,
    name: &str,
) -> sqlx::Result<Vec<(uuid::Uuid, String, i32)>> {
    sqlx::query_as(
        r#"
        select w.id, w.host, w.pid
        from docket.schedule_declarations d
        join docket.workers w on w.id = d.worker_id
        where d.schedule = $1 and w.lease_expires_at > now()
        order by w.heartbeat_at desc
        "#,
    )
    .bind(name)
    .fetch_all(exec)
    .await
}

/// Deletes a schedule, its ticks and its declarations, unless a live worker declares it:
/// whether it was deleted (`false`: no such schedule, or declared).
pub(crate) async fn schedule_delete_undeclared(
    exec: impl PgExecutor<'_>,
    name: &str,
) -> sqlx::Result<bool> {
    let deleted: Option<String> = sqlx::query_scalar(
        r#"
        with gone as (
            delete from docket.schedules s
            where s.name = $1
              and not exists (select 1 from docket.schedule_declarations d
                              join docket.workers w on w.id = d.worker_id
                              where d.schedule = s.name and w.lease_expires_at > now())
            returning s.name
        ), ticks as (
            delete from docket.schedule_ticks t where t.schedule in (select name from gone)
        ), declarations as (
            delete from docket.schedule_declarations d
            where d.schedule in (select name from gone)
        )
        select name from gone
        "#,
    )
    .bind(name)
    .fetch_optional(exec)
    .await?;
    Ok(deleted.is_some())
}
