//! Statements about the server itself: is it up, which migrations it has, and the mail
//! relay's recorded fault (read by the health judgement).

use sqlx::PgExecutor;

/// Versions of the migrations this database has applied successfully.
pub(crate) async fn migration_versions(exec: impl PgExecutor<'_>) -> sqlx::Result<Vec<i64>> {
    sqlx::query_scalar("select version from _sqlx_migrations where success order by version")
        .fetch_all(exec)
        .await
}

/// The relay's outstanding configuration fault (`docket.mail_status`, written by the mail
/// jobs): when and what, until a message goes through.
pub(crate) async fn mail_status_fault(
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

/// The cheapest statement there is: whether the database answers at all.
pub(crate) async fn ping(exec: impl PgExecutor<'_>) -> sqlx::Result<()> {
    sqlx::query("select 1").execute(exec).await?;
    Ok(())
}
