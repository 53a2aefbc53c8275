//! Statements on `docket.mail_status`: the one row that records a configuration fault of
//! the relay (authentication, TLS) until a message goes through.

use sqlx::PgExecutor;

/// Clears a recorded configuration fault (the relay accepted a message since).
pub(crate) async fn status_clear_fault(exec: impl PgExecutor<'_>) -> sqlx::Result<()> {
    sqlx::query("update docket.mail_status set cleared_at = now() where id = 1")
        .execute(exec)
        .await?;
    Ok(())
}

pub(crate) async fn status_record_fault(
    exec: impl PgExecutor<'_>,
    fault: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "update docket.mail_status set last_fault_at = now(), last_fault = $1 where id = 1",
    )
    .bind(fault)
    .execute(exec)
    .await?;
    Ok(())
}

/// The relay's outstanding configuration fault: when and what, until a message goes through.
pub(crate) async fn status_fault(
    exec: impl PgExecutor<'_>,
) -> sqlx::Result<Option<(chrono::DateTime<chrono::Utc>, String)>> {
    sqlx::query_as(
        r#"
        select last_fault_at, last_fault from docket.mail_status
        where id = 1 and last_fault_at is not null
          and (cleared_at is null or cleared_at < last_fault_at)
        "#,
    )
    .fetch_optional(exec)
    .await
}
