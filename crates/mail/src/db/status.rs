//! Statements on `docket.mail_status`: the one row that records what the relay last did
//! across processes: a configuration fault (authentication, TLS) and the failures to reach
//! it (refused, unresolved, timed out), each until a message goes through, and when one
//! last went through.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

/// The relay took a message: faults and failures to reach it are over.
pub(crate) async fn status_record_sent(exec: impl PgExecutor<'_>) -> sqlx::Result<()> {
    sqlx::query(
        r#"
        update docket.mail_status
        set cleared_at = now(), last_sent_at = now(), unreachable_relay = null,
            unreachable_since = null, unreachable_at = null, unreachable_attempts = 0,
            unreachable_error = null
        where id = 1
        "#,
    )
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

/// One more failure to reach `relay` (`host:port`): counted from the first since the
/// last message that went through.
pub(crate) async fn status_record_unreachable(
    exec: impl PgExecutor<'_>,
    relay: &str,
    error: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        r#"
        update docket.mail_status
        set unreachable_relay = $1, unreachable_since = coalesce(unreachable_since, now()),
            unreachable_at = now(), unreachable_attempts = unreachable_attempts + 1,
            unreachable_error = $2
        where id = 1
        "#,
    )
    .bind(relay)
    .bind(error)
    .execute(exec)
    .await?;
    Ok(())
}

/// The row as the relay's check reads it.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct StatusRow {
    /// The outstanding configuration fault: when, what.
    pub(crate) fault_at: Option<DateTime<Utc>>,
    pub(crate) fault: Option<String>,
    pub(crate) last_sent_at: Option<DateTime<Utc>>,
    pub(crate) unreachable_relay: Option<String>,
    pub(crate) unreachable_since: Option<DateTime<Utc>>,
    pub(crate) unreachable_at: Option<DateTime<Utc>>,
    pub(crate) unreachable_attempts: i32,
    pub(crate) unreachable_error: Option<String>,
}

/// The relay's status: the outstanding fault (until a message goes through), the failures
/// to reach it since the last message that did, and when that was.
pub(crate) async fn status_read(exec: impl PgExecutor<'_>) -> sqlx::Result<StatusRow> {
    sqlx::query_as(
        r#"
        select
            case when cleared_at is null or cleared_at < last_fault_at then last_fault_at end
                as fault_at,
            case when cleared_at is null or cleared_at < last_fault_at then last_fault end
                as fault,
            last_sent_at, unreachable_relay, unreachable_since, unreachable_at,
            unreachable_attempts, unreachable_error
        from docket.mail_status where id = 1
        "#,
    )
    .fetch_one(exec)
    .await
}
