//! Statements about the server itself: is it up, and which migrations it has.

use sqlx::PgExecutor;

/// Versions of the migrations this database has applied successfully.
pub(crate) async fn migration_versions(exec: impl PgExecutor<'_>) -> sqlx::Result<Vec<i64>> {
    sqlx::query_scalar("select version from _sqlx_migrations where success order by version")
        .fetch_all(exec)
        .await
}

/// The cheapest statement there is: whether the database answers at all.
pub(crate) async fn ping(exec: impl PgExecutor<'_>) -> sqlx::Result<()> {
    sqlx::query("select 1").execute(exec).await?;
    Ok(())
}
