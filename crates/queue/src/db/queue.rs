//! Statements on `docket.queue_wakeups` (who waits for a wake-up) and
//! `docket.queue_controls` (paused queues).

use sqlx::PgExecutor;

/// Marks the queues as having a waiting worker, registering them on first use.
pub(crate) async fn queue_wakeup_want(
    exec: impl PgExecutor<'_>,
    queues: &[String],
) -> sqlx::Result<()> {
    sqlx::query(
        r#"
        insert into docket.queue_wakeups (queue, wanted)
        select q, true from unnest($1::text[]) q
        on conflict (queue) do update set wanted = true
        "#,
    )
    .bind(queues)
    .execute(exec)
    .await?;
    Ok(())
}

/// The queues whose controls are stored, sorted: (queue, paused, paused_at).
pub(crate) async fn queue_control_list(
    exec: impl PgExecutor<'_>,
) -> sqlx::Result<Vec<crate::queues::QueueControl>> {
    sqlx::query_as("select queue, paused, paused_at from docket.queue_controls order by queue")
        .fetch_all(exec)
        .await
}

/// The paused queues.
pub(crate) async fn queue_control_list_paused(
    exec: impl PgExecutor<'_>,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar("select queue from docket.queue_controls where paused order by queue")
        .fetch_all(exec)
        .await
}

/// Those of `queues` with grouped ready-able jobs: one probe of `jobs_claim_grouped` each
/// (through `docket.ready_groups`, whose plan does not depend on statistics).
pub(crate) async fn queue_list_grouped(
    exec: impl PgExecutor<'_>,
    queues: &[String],
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "select q from unnest($1::text[]) q
         where exists (select 1 from docket.ready_groups(q, null, 1, 1, null))",
    )
    .bind(queues)
    .fetch_all(exec)
    .await
}

/// Pauses or resumes a queue (registering it on first use); returns its control.
pub(crate) async fn queue_control_set_paused(
    exec: impl PgExecutor<'_>,
    queue: &str,
    paused: bool,
) -> sqlx::Result<crate::queues::QueueControl> {
    sqlx::query_as(
        r#"
        insert into docket.queue_controls as c (queue, paused, paused_at)
        values ($1, $2, case when $2 then now() end)
        on conflict (queue) do update
            set paused = excluded.paused,
                -- Pausing a paused queue keeps when it was first paused.
                paused_at = case when excluded.paused then coalesce(c.paused_at, now()) end,
                updated_at = now()
        returning queue, paused, paused_at
        "#,
    )
    .bind(queue)
    .bind(paused)
    .fetch_one(exec)
    .await
}

/// The queues something names: a live or dead-lettered job is in it (found by a skip
/// scan of `jobs_snapshot`, one probe per queue), a worker serves it (or once waited on
/// it), or it has stored controls. Sorted.
pub(crate) async fn queue_list_named(exec: impl PgExecutor<'_>) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        r#"
        with recursive with_jobs (queue) as (
            (select queue from docket.jobs
             where state in ('pending', 'retrying', 'processing', 'dead_letter')
             order by queue limit 1)
            union all
            select (select j.queue from docket.jobs j
                    where j.state in ('pending', 'retrying', 'processing', 'dead_letter')
                      and j.queue > w.queue
                    order by j.queue limit 1)
            from with_jobs w
            where w.queue is not null
        )
        select queue from with_jobs where queue is not null
        union select queue from docket.queue_wakeups
        union select queue from docket.queue_controls
        union select unnest(queues) from docket.workers
        order by 1
        "#,
    )
    .fetch_all(exec)
    .await
}
