//! Statements on `docket.mail_campaigns`: a campaign, its counts read from its deliveries,
//! and the operator's controls.

use sqlx::PgExecutor;
use uuid::Uuid;

use crate::model::CampaignStatus;

/// A campaign's row with its counts by delivery status. `state` is derived: `cancelled`,
/// else `finished` once nothing is pending, else `paused` or `sending`. A macro, so that
/// `concat!` can finish the statement at compile time.
macro_rules! campaign_select {
    () => {
        r#"
    select c.id, c.name, c.template, c.total, c.batch_id, c.created_at,
           case when c.cancelled then 'cancelled'
                when coalesce(n.pending, 0) = 0 then 'finished'
                when c.paused then 'paused'
                else 'sending' end as state,
           coalesce(n.sent, 0) as sent, coalesce(n.suppressed, 0) as suppressed,
           coalesce(n.failed, 0) as failed, coalesce(n.dead_letter, 0) as dead_letter,
           coalesce(n.expired, 0) as expired, coalesce(n.unknown, 0) as unknown,
           coalesce(n.cancelled, 0) as cancelled, coalesce(n.pending, 0) as pending,
           coalesce(n.unsubscribed, 0) as unsubscribed, coalesce(n.bounced, 0) as bounced
    from docket.mail_campaigns c
    left join lateral (
        select count(*) filter (where status = 'sent')::int as sent,
               count(*) filter (where status = 'suppressed')::int as suppressed,
               count(*) filter (where status = 'failed')::int as failed,
               count(*) filter (where status = 'dead_letter')::int as dead_letter,
               count(*) filter (where status = 'expired')::int as expired,
               count(*) filter (where status = 'unknown')::int as unknown,
               count(*) filter (where status = 'cancelled')::int as cancelled,
               count(*) filter (where status in ('queued', 'sending'))::int as pending,
               count(*) filter (where unsubscribed_at is not null)::int as unsubscribed,
               count(*) filter (where status = 'bounced')::int as bounced
        from docket.mail_deliveries d where d.campaign_id = c.id
    ) n on true
"#
    };
}

pub(crate) async fn campaign_get(
    exec: impl PgExecutor<'_>,
    id: Uuid,
) -> sqlx::Result<Option<CampaignStatus>> {
    sqlx::query_as(concat!(campaign_select!(), " where c.id = $1"))
        .bind(id)
        .fetch_optional(exec)
        .await
}

/// The controls a running batch job reads: (paused, cancelled).
pub(crate) async fn campaign_get_controls(
    exec: impl PgExecutor<'_>,
    id: Uuid,
) -> sqlx::Result<Option<(bool, bool)>> {
    sqlx::query_as("select paused, cancelled from docket.mail_campaigns where id = $1")
        .bind(id)
        .fetch_optional(exec)
        .await
}

/// Locks a campaign's row (until the transaction ends) and reads its controls and how many
/// of its recipients are pending: (paused, cancelled, pending).
pub(crate) async fn campaign_lock(
    exec: impl PgExecutor<'_>,
    id: Uuid,
) -> sqlx::Result<Option<(bool, bool, i64)>> {
    sqlx::query_as(
        r#"
        select c.paused, c.cancelled,
               (select count(*) from docket.mail_deliveries d
                where d.campaign_id = c.id and d.status in ('queued', 'sending'))
        from docket.mail_campaigns c where c.id = $1
        for update of c
        "#,
    )
    .bind(id)
    .fetch_optional(exec)
    .await
}

pub(crate) struct CampaignParams<'a> {
    pub(crate) id: Uuid,
    pub(crate) name: &'a str,
    pub(crate) template: &'a str,
    pub(crate) total: i32,
}

pub(crate) async fn campaign_insert(
    exec: impl PgExecutor<'_>,
    params: &CampaignParams<'_>,
) -> sqlx::Result<()> {
    sqlx::query(
        r#"insert into docket.mail_campaigns (id, name, template, total) values ($1, $2, $3, $4)"#,
    )
    .bind(params.id)
    .bind(params.name)
    .bind(params.template)
    .bind(params.total)
    .execute(exec)
    .await?;
    Ok(())
}

pub(crate) async fn campaign_list(
    exec: impl PgExecutor<'_>,
    limit: i64,
) -> sqlx::Result<Vec<CampaignStatus>> {
    sqlx::query_as(concat!(
        campaign_select!(),
        " order by c.created_at desc, c.id desc limit $1"
    ))
    .bind(limit)
    .fetch_all(exec)
    .await
}

pub(crate) async fn campaign_set_batch(
    exec: impl PgExecutor<'_>,
    id: Uuid,
    batch_id: Uuid,
) -> sqlx::Result<()> {
    sqlx::query("update docket.mail_campaigns set batch_id = $2 where id = $1")
        .bind(id)
        .bind(batch_id)
        .execute(exec)
        .await?;
    Ok(())
}

/// Sets the operator's controls; `None` leaves one as it is. The campaign's waiting batch
/// jobs follow (`docket.mail_campaign_set_controls`): parked while it is paused, due at once
/// (and the workers woken) when it is resumed or cancelled; cancelling makes its queued
/// recipients `cancelled`. Returns whether the campaign exists.
pub(crate) async fn campaign_set_controls(
    exec: impl PgExecutor<'_>,
    id: Uuid,
    paused: Option<bool>,
    cancelled: Option<bool>,
) -> sqlx::Result<bool> {
    sqlx::query_scalar("select docket.mail_campaign_set_controls($1, $2, $3)")
        .bind(id)
        .bind(paused)
        .bind(cancelled)
        .fetch_one(exec)
        .await
}
