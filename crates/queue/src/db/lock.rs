//! Advisory locks: one maintenance task at a time over all workers. Session-level ones
//! directly; transaction-level ones behind a transaction-mode pooler, where a session's lock
//! would stay on a server connection other clients go on to use.

use sqlx::PgExecutor;

/// Takes a session-level advisory lock if it is free; `false` when another session holds it.
pub(crate) async fn advisory_try_lock(exec: impl PgExecutor<'_>, key: i64) -> sqlx::Result<bool> {
    sqlx::query_scalar("select pg_try_advisory_lock($1)")
        .bind(key)
        .fetch_one(exec)
        .await
}

pub(crate) async fn advisory_unlock(exec: impl PgExecutor<'_>, key: i64) -> sqlx::Result<()> {
    sqlx::query("select pg_advisory_unlock($1)")
        .bind(key)
        .execute(exec)
        .await?;
    Ok(())
}

/// Takes a transaction-level advisory lock if it is free: held until the transaction ends.
pub(crate) async fn advisory_try_xact_lock(
    exec: impl PgExecutor<'_>,
    key: i64,
) -> sqlx::Result<bool> {
    sqlx::query_scalar("select pg_try_advisory_xact_lock($1)")
        .bind(key)
        .fetch_one(exec)
        .await
}
