//! Statements on `docket.mail_deliveries`: one row per email, reserved before its SMTP
//! exchange and recorded right after, every write fenced on the delivery not being final.

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use crate::model::{Delivery, DeliveryFilter, Status, Tally};

/// A delivery to insert.
pub(crate) struct DeliveryParams<'a> {
    pub(crate) id: Uuid,
    pub(crate) source: &'a str,
    pub(crate) key: &'a str,
    pub(crate) recipient: &'a str,
    pub(crate) recipient_name: Option<&'a str>,
    pub(crate) template: &'a str,
    pub(crate) locale: Option<&'a str>,
    pub(crate) vars: &'a serde_json::Value,
    pub(crate) message_id: &'a str,
    pub(crate) job_id: Option<Uuid>,
    /// The replays its job had when the run that records it was claimed.
    pub(crate) job_replays: i32,
}

pub(crate) async fn delivery_get_many(
    exec: impl PgExecutor<'_>,
    ids: &[Uuid],
) -> sqlx::Result<Vec<(Delivery, serde_json::Value)>> {
    let rows: Vec<DeliveryWithVars> = sqlx::query_as(
        "select *, vars as vars_json from docket.mail_deliveries where id = any($1) order by id",
    )
    .bind(ids)
    .fetch_all(exec)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.delivery, r.vars_json))
        .collect())
}

#[derive(sqlx::FromRow)]
struct DeliveryWithVars {
    #[sqlx(flatten)]
    delivery: Delivery,
    vars_json: serde_json::Value,
}

/// Inserts the delivery, or returns the one that already holds its key.
pub(crate) async fn delivery_insert_or_get(
    exec: impl PgExecutor<'_>,
    params: &DeliveryParams<'_>,
) -> sqlx::Result<Delivery> {
    sqlx::query_as(
        r#"
        with inserted as (
            insert into docket.mail_deliveries
                (id, source, idempotency_key, recipient, recipient_name, template, locale, vars,
                 message_id, job_id, job_replays)
            values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
            on conflict (idempotency_key) do nothing
            returning *
        )
        select * from inserted
        union all
        select * from docket.mail_deliveries
        where idempotency_key = $3 and not exists (select 1 from inserted)
        "#,
    )
    .bind(params.id)
    .bind(params.source)
    .bind(params.key)
    .bind(params.recipient)
    .bind(params.recipient_name)
    .bind(params.template)
    .bind(params.locale)
    .bind(params.vars)
    .bind(params.message_id)
    .bind(params.job_id)
    .bind(params.job_replays)
    .fetch_one(exec)
    .await
}

/// A campaign's recipients, in one statement; a repeated address is inserted once.
/// Returns the ids inserted, in input order.
pub(crate) async fn delivery_insert_campaign(
    exec: impl PgExecutor<'_>,
    campaign_id: Uuid,
    template: &str,
    rows: &CampaignRows,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        r#"
        insert into docket.mail_deliveries
            (id, source, campaign_id, idempotency_key, recipient, recipient_name, template, locale,
             vars, message_id, job_id)
        select r.id, 'campaign', $1, $1::text || ':' || lower(r.recipient), r.recipient, r.name, $2,
               r.locale, r.vars, r.message_id, r.job_id
        from unnest($3::uuid[], $4::text[], $5::text[], $6::text[], $7::jsonb[], $8::text[], $9::uuid[])
             with ordinality as r(id, recipient, name, locale, vars, message_id, job_id, ord)
        order by r.ord
        on conflict (idempotency_key) do nothing
        returning id
        "#,
    )
    .bind(campaign_id)
    .bind(template)
    .bind(&rows.ids)
    .bind(&rows.recipients)
    .bind(&rows.names)
    .bind(&rows.locales)
    .bind(&rows.vars)
    .bind(&rows.message_ids)
    .bind(&rows.job_ids)
    .fetch_all(exec)
    .await
}

/// A campaign's recipients as columns.
#[derive(Default)]
pub(crate) struct CampaignRows {
    pub(crate) ids: Vec<Uuid>,
    pub(crate) recipients: Vec<String>,
    pub(crate) names: Vec<Option<String>>,
    pub(crate) locales: Vec<Option<String>>,
    pub(crate) vars: Vec<serde_json::Value>,
    pub(crate) message_ids: Vec<String>,
    /// The batch job that sends each one.
    pub(crate) job_ids: Vec<Uuid>,
}

pub(crate) async fn delivery_list(
    exec: impl PgExecutor<'_>,
    filter: &DeliveryFilter,
) -> sqlx::Result<Vec<Delivery>> {
    sqlx::query_as(
        r#"
        select * from docket.mail_deliveries
        where ($1::text is null or status = $1)
          and ($2::uuid is null or campaign_id = $2)
          and ($3::text is null or lower(recipient) = lower($3))
        order by created_at desc, id desc
        limit $4
        "#,
    )
    .bind(filter.status.map(Status::as_str))
    .bind(filter.campaign_id)
    .bind(filter.to.as_deref())
    .bind(i64::from(filter.limit))
    .fetch_all(exec)
    .await
}

/// Deliveries by source and status, with how many of them took more than one attempt.
pub(crate) async fn delivery_summarise(exec: impl PgExecutor<'_>) -> sqlx::Result<Vec<Tally>> {
    sqlx::query_as(
        r#"
        select source, status, count(*) as count, count(*) filter (where attempts > 1) as retried
        from docket.mail_deliveries
        group by source, status
        order by source, status
        "#,
    )
    .fetch_all(exec)
    .await
}

/// The outcome of one attempt, or of a decision before it.
pub(crate) struct Record<'a> {
    pub(crate) status: Status,
    pub(crate) smtp_code: Option<i32>,
    pub(crate) smtp_reply: Option<&'a str>,
    pub(crate) last_error: Option<&'a str>,
    pub(crate) suppressed_reason: Option<&'a str>,
    pub(crate) retry_at: Option<DateTime<Utc>>,
    /// The attempt did not count (a throttle, a configuration fault): give it back.
    pub(crate) give_back_attempt: bool,
    /// The relay answered 421/454: count it.
    pub(crate) throttled: bool,
}

/// Records an outcome, fenced: only a delivery that is not final yet changes. Returns
/// whether it did.
pub(crate) async fn delivery_record(
    exec: impl PgExecutor<'_>,
    id: Uuid,
    record: &Record<'_>,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        r#"
        update docket.mail_deliveries
        set status = $2,
            smtp_code = coalesce($3, smtp_code),
            smtp_reply = coalesce($4, smtp_reply),
            last_error = coalesce($5, last_error),
            suppressed_reason = $6,
            retry_at = $7,
            attempts = greatest(0, attempts - $8::int),
            throttles = throttles + $9::int,
            sent_at = case when $2 = 'sent' then now() end,
            updated_at = now()
        where id = $1 and status in ('queued', 'sending')
        "#,
    )
    .bind(id)
    .bind(record.status.as_str())
    .bind(record.smtp_code)
    .bind(record.smtp_reply)
    .bind(record.last_error)
    .bind(record.suppressed_reason)
    .bind(record.retry_at)
    .bind(i32::from(record.give_back_attempt))
    .bind(i32::from(record.throttled))
    .execute(exec)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A delivery cut off mid-exchange whose bound has passed becomes `unknown`: the relay may
/// have taken it, so it is final and never sent again unasked. Returns whether it did (not
/// when its exchange settled it meanwhile, or is still within its bound).
pub(crate) async fn delivery_mark_unknown(
    exec: impl PgExecutor<'_>,
    id: Uuid,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        r#"
        update docket.mail_deliveries
        set status = 'unknown', retry_at = null,
            last_error = 'the SMTP exchange was cut off with no outcome recorded; it may have been sent',
            updated_at = now()
        where id = $1 and status = 'sending' and (retry_at is null or retry_at <= now())
        "#,
    )
    .bind(id)
    .execute(exec)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Takes replay number `replays` of job `job_id` as the operator's word for its delivery,
/// once: a `dead_letter` or `unknown` delivery goes back to `queued` with a fresh ladder,
/// one in any other status is left as it is, and either way the replay is recorded
/// (`job_replays`) in the same statement. Fenced on the delivery having answered an older
/// replay of this job: a later run of the same replay (rescued, handed back, retried)
/// changes nothing, however the earlier one ended. Returns the delivery as changed, or
/// `None` when nothing was new.
pub(crate) async fn delivery_take_replay(
    exec: impl PgExecutor<'_>,
    id: Uuid,
    job_id: Uuid,
    replays: i32,
) -> sqlx::Result<Option<Delivery>> {
    sqlx::query_as(
        r#"
        update docket.mail_deliveries set
            job_replays = $3,
            status = case when status in ('dead_letter', 'unknown') then 'queued' else status end,
            attempts = case when status in ('dead_letter', 'unknown') then 0 else attempts end,
            retry_at = case when status in ('dead_letter', 'unknown') then null else retry_at end,
            updated_at = now()
        where id = $1 and job_id = $2 and job_replays < $3
        returning *
        "#,
    )
    .bind(id)
    .bind(job_id)
    .bind(replays)
    .fetch_optional(exec)
    .await
}

/// Reserves the delivery for one SMTP exchange: `sending`, attempts + 1, and `retry_at`
/// the moment the exchange is over at the latest (`bound` from now), committed before the
/// exchange starts. Returns the attempt's number, or `None` when the delivery is final
/// already (another job got there first) or another exchange of it may still be under way.
///
/// The commit waits for its WAL to be written even on a server that runs
/// `synchronous_commit = off`: a reservation acknowledged and then lost in a crash would
/// leave the delivery `queued`, and its message, already with the relay, sent again.
pub(crate) async fn delivery_reserve(
    pool: &PgPool,
    id: Uuid,
    job_id: Uuid,
    bound: std::time::Duration,
) -> sqlx::Result<Option<i32>> {
    let mut tx = pool.begin().await?;
    // Only `off` is raised: a stronger setting (a synchronous standby's) stays.
    sqlx::query(
        "select set_config('synchronous_commit', 'on', true)
         where current_setting('synchronous_commit') = 'off'",
    )
    .execute(docket_queue::pooled_conn(&mut tx))
    .await?;
    let attempt = sqlx::query_scalar(
        r#"
        update docket.mail_deliveries
        set status = 'sending', attempts = attempts + 1, job_id = $2,
            retry_at = now() + make_interval(secs => $3), updated_at = now()
        where id = $1 and status = 'queued'
        returning attempts
        "#,
    )
    .bind(id)
    .bind(job_id)
    .bind(bound.as_secs_f64())
    .fetch_optional(docket_queue::pooled_conn(&mut tx))
    .await?;
    tx.commit().await?;
    Ok(attempt)
}

/// Messages the relay took per minute of `sent_at`, in `[since, until)`: an index range.
pub(crate) async fn delivery_sent_per_minute(
    exec: impl PgExecutor<'_>,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> sqlx::Result<Vec<(DateTime<Utc>, i64)>> {
    sqlx::query_as(
        r#"
        select date_trunc('minute', sent_at) as minute, count(*) as sent
        from docket.mail_deliveries
        where sent_at is not null and sent_at >= $1 and sent_at < $2
        group by 1
        order by 1
        "#,
    )
    .bind(since)
    .bind(until)
    .fetch_all(exec)
    .await
}

/// Marks a campaign delivery unsubscribed (its link was used), once; its status stays.
/// Returns its address, its campaign and whether this was the first time, or `None` when
/// no campaign delivery has that id.
pub(crate) async fn delivery_mark_unsubscribed(
    exec: impl PgExecutor<'_>,
    id: Uuid,
) -> sqlx::Result<Option<(String, Option<Uuid>, bool)>> {
    sqlx::query_as(
        r#"
        with target as (
            select id, recipient, campaign_id, unsubscribed_at from docket.mail_deliveries
            where id = $1 and source = 'campaign'
            for update
        ), marked as (
            update docket.mail_deliveries d set unsubscribed_at = now(), updated_at = now()
            from target t where d.id = t.id and t.unsubscribed_at is null
            returning d.id
        )
        select t.recipient, t.campaign_id, exists (select 1 from marked) from target t
        "#,
    )
    .bind(id)
    .fetch_optional(exec)
    .await
}

/// A delivery the relay took (`sent`, or `unknown`: the report proves it was taken) becomes
/// `bounced`, final. Returns whether it did (not for one already bounced, or never sent).
pub(crate) async fn delivery_mark_bounced(
    exec: impl PgExecutor<'_>,
    id: Uuid,
    diagnostic: Option<&str>,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        r#"
        update docket.mail_deliveries
        set status = 'bounced', last_error = coalesce($2, 'bounced after the relay took it'),
            updated_at = now()
        where id = $1 and status in ('sent', 'unknown')
        "#,
    )
    .bind(id)
    .bind(diagnostic)
    .execute(exec)
    .await?;
    Ok(done.rows_affected() == 1)
}
