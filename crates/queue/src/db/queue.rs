//! Statements on `docket.queue_wakeups`: who waits for a wake-up.

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
