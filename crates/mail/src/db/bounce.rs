//! Statements on `docket.mail_bounces`: every message handed to the bounce ingestion, with
//! what it came to.

use sqlx::PgExecutor;
use uuid::Uuid;

pub(crate) async fn bounce_insert(
    exec: impl PgExecutor<'_>,
    delivery: Option<Uuid>,
    outcome: &str,
    status_code: Option<&str>,
    diagnostic: Option<&str>,
    reason: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query(
        r#"
        insert into docket.mail_bounces (delivery_id, outcome, status_code, diagnostic, reason)
        values ($1, $2, $3, $4, $5)
        "#,
    )
    .bind(delivery)
    .bind(outcome)
    .bind(status_code)
    .bind(diagnostic)
    .bind(reason)
    .execute(exec)
    .await?;
    Ok(())
}
