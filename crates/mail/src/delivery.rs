//! Deliveries (one email to one recipient, as recorded) and the suppression list.

use sqlx::PgExecutor;

use crate::db;
use crate::error::{MailError, Result};

pub use crate::model::{Delivery, DeliveryFilter, Source, Status, Suppression, Tally};

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
    Ok(db::suppression_insert(exec, &address.to_string().to_ascii_lowercase(), reason).await?)
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
    Ok(db::suppression_list(exec, limit).await?)
}
