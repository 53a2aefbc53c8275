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
