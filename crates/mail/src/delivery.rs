//! Deliveries (one email to one recipient, as recorded) and the suppression list.

use lettre::message::Mailbox;
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::db;
use crate::error::{MailError, Result};

pub use crate::model::{Delivery, DeliveryFilter, Source, Status, Suppression, Tally};

/// Emails the relay took per minute (the minute, how many) in `[since, until)`, oldest
/// first: what the operations page charts beside jobs. Reads only that range.
///
/// # Errors
///
/// [`MailError::Database`].
pub async fn sent_per_minute(
    exec: impl PgExecutor<'_>,
    since: chrono::DateTime<chrono::Utc>,
    until: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<(chrono::DateTime<chrono::Utc>, i64)>> {
    Ok(db::delivery_sent_per_minute(exec, since, until).await?)
}

/// Deliveries, newest first.
///
/// # Errors
///
/// [`MailError::Invalid`] for a page size out of range; [`MailError::Database`].
pub async fn list(exec: impl PgExecutor<'_>, filter: &DeliveryFilter) -> Result<Vec<Delivery>> {
    if !(1..=1000).contains(&filter.limit) {
        return Err(MailError::Invalid(format!(
            "limit must be between 1 and 1000, not {}",
            filter.limit
        )));
    }
    Ok(db::delivery_list(exec, filter).await?)
}

/// Deliveries counted by source and status (a full scan: for reports, not for probes).
///
/// # Errors
///
/// [`MailError::Database`] when the database fails.
pub async fn tally(exec: impl PgExecutor<'_>) -> Result<Vec<Tally>> {
    Ok(db::delivery_summarise(exec).await?)
}

/// Adds an address to the suppression list; it is never sent to again. Returns whether it
/// was new.
///
/// # Errors
///
/// [`MailError::Invalid`] for something that is not an address; [`MailError::Database`].
pub async fn suppress(exec: impl PgExecutor<'_>, address: &str, reason: &str) -> Result<bool> {
    let address = crate::message::parse_address(address)?;
    Ok(db::suppression_insert(
        exec,
        &address.to_string().to_ascii_lowercase(),
        reason,
        None,
    )
    .await?)
}

/// Takes an address off the suppression list. Returns whether it was there.
///
/// # Errors
///
/// [`MailError::Database`] when the database fails.
pub async fn unsuppress(exec: impl PgExecutor<'_>, address: &str) -> Result<bool> {
    Ok(db::suppression_delete(exec, &address.trim().to_ascii_lowercase()).await?)
}

/// The suppression list, newest first: the newest `limit` entries, or all of them.
///
/// # Errors
///
/// [`MailError::Database`] when the database fails.
pub async fn suppressions(
    exec: impl PgExecutor<'_>,
    limit: Option<u32>,
) -> Result<Vec<Suppression>> {
    let mut list = db::suppression_list(exec, limit).await?;
    for entry in &mut list {
        entry.source = Suppression::source_of(&entry.reason).to_owned();
    }
    Ok(list)
}

/// One email of a recovery or admin job, to record.
pub(crate) struct NewDelivery<'a> {
    /// Its id, made by the caller: a delivery returned with another id was there before.
    pub(crate) id: Uuid,
    pub(crate) source: Source,
    /// At most one delivery per key.
    pub(crate) key: &'a str,
    pub(crate) to: &'a Mailbox,
    pub(crate) template: &'a str,
    pub(crate) locale: Option<&'a str>,
    pub(crate) vars: &'a serde_json::Value,
    pub(crate) message_id: &'a str,
    /// The job that sends it.
    pub(crate) job_id: Uuid,
    /// The replays that job had when this run of it was claimed.
    pub(crate) job_replays: i32,
}

/// Records the delivery, or returns the one that already holds its key.
pub(crate) async fn insert_or_get(
    exec: impl PgExecutor<'_>,
    new: &NewDelivery<'_>,
) -> Result<Delivery> {
    let params = db::DeliveryParams {
        id: new.id,
        source: new.source.as_str(),
        key: new.key,
        recipient: new.to.email.as_ref(),
        recipient_name: new.to.name.as_deref(),
        template: new.template,
        locale: new.locale,
        vars: new.vars,
        message_id: new.message_id,
        job_id: Some(new.job_id),
        job_replays: new.job_replays,
    };
    Ok(db::delivery_insert_or_get(exec, &params).await?)
}

/// Deliveries by id, each with its template variables, in id order.
pub(crate) async fn get_many(
    exec: impl PgExecutor<'_>,
    ids: &[Uuid],
) -> Result<Vec<(Delivery, serde_json::Value)>> {
    Ok(db::delivery_get_many(exec, ids).await?)
}

/// The operator's word, recorded: replay number `replays` of job `job_id` sends its
/// `dead_letter` or `unknown` delivery again, with a fresh ladder, once. Returns the
/// delivery as it is now when this replay was new to it; `None` when it had answered this
/// replay already (or is not that job's), so that nothing is sent again on the strength of
/// a status alone.
pub(crate) async fn take_replay(
    exec: impl PgExecutor<'_>,
    id: Uuid,
    job_id: Uuid,
    replays: i32,
) -> Result<Option<Delivery>> {
    Ok(db::delivery_take_replay(exec, id, job_id, replays).await?)
}
