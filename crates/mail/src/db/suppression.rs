//! Statements on `docket.mail_suppressions`: addresses never sent to again, stored lower
//! case.

use sqlx::PgExecutor;

use crate::model::Suppression;

/// Whether `address` is suppressed for an email of this kind: every entry suppresses a
/// campaign's email, but an unsubscribe is from campaigns only, so it never stops a
/// password reset, a sign-in link or an operator's notification to the same address.
pub(crate) async fn suppression_contains(
    exec: impl PgExecutor<'_>,
    address: &str,
    campaign: bool,
) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "select exists (select 1 from docket.mail_suppressions
                        where address = lower($1) and ($2 or reason <> 'unsubscribed'))",
    )
    .bind(address)
    .bind(campaign)
    .fetch_one(exec)
    .await
}

pub(crate) async fn suppression_delete(
    exec: impl PgExecutor<'_>,
    address: &str,
) -> sqlx::Result<bool> {
    let done = sqlx::query("delete from docket.mail_suppressions where address = lower($1)")
        .bind(address)
        .execute(exec)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Adds an address with why and, for an unsubscribe, the campaign it came from; an address
/// already listed keeps its first reason, except that an unsubscribe gives way to any other
/// reason (a refused address stops every email, an unsubscribe only campaigns). Returns
/// whether it was added or widened.
pub(crate) async fn suppression_insert(
    exec: impl PgExecutor<'_>,
    address: &str,
    reason: &str,
    campaign_id: Option<uuid::Uuid>,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        r#"
        insert into docket.mail_suppressions (address, reason, campaign_id)
        values (lower($1), $2, $3)
        on conflict (address) do update
            set reason = excluded.reason, created_at = now(), campaign_id = null
            where mail_suppressions.reason = 'unsubscribed' and excluded.reason <> 'unsubscribed'
        "#,
    )
    .bind(address)
    .bind(reason)
    .bind(campaign_id)
    .execute(exec)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub(crate) async fn suppression_list(
    exec: impl PgExecutor<'_>,
    limit: Option<u32>,
) -> sqlx::Result<Vec<Suppression>> {
    sqlx::query_as(
        "select address, reason, campaign_id, created_at from docket.mail_suppressions
         order by created_at desc, address limit $1",
    )
    .bind(limit.map(i64::from))
    .fetch_all(exec)
    .await
}
