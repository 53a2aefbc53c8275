//! One-click unsubscribe (RFC 8058). Every campaign email carries a link
//! `<PUBLIC_URL>/unsubscribe/<token>` ([`docket_settings::PUBLIC_URL`]), the token naming its delivery, signed
//! ([`crate::token`]). A POST to it (a mailbox provider's one-click button, or the
//! confirmation page's) puts the address on the suppression list with reason `unsubscribed`
//! and the campaign, and marks the delivery, so the campaign counts it. A GET only looks:
//! link scanners fetch every URL in a message.
//!
//! A token that does not verify changes nothing and reads nothing from the database.

use docket_queue::telemetry::{event, metric};
use sqlx::PgPool;
use uuid::Uuid;

use crate::db;
use crate::error::Result;
use crate::token::{Purpose, Signer, TokenError};

/// The route `docket serve` answers, under [`docket_settings::PUBLIC_URL`].
pub const ROUTE: &str = "/unsubscribe/{token}";

/// The template variable that holds the recipient's link, for a visible one in the body.
pub const URL_VAR: &str = "unsubscribe_url";

/// What `unsubscribe_url` shows in a preview (`--dry-run`) and in stub mode without
/// [`docket_settings::PUBLIC_URL`]: each recipient's real link is made when it is sent.
pub const URL_PLACEHOLDER: &str = "https://docket.invalid/unsubscribe/each-recipient-s-own-link";

/// The link for `token` under `base` ([`docket_settings::PUBLIC_URL`], with or without a final `/`).
pub fn url(base: &str, token: &str) -> String {
    format!("{}/unsubscribe/{token}", base.trim_end_matches('/'))
}

/// Why a link is refused: the page says no more than that it does not work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not a token, or a signature that does not match (tampered with, or signed by a
    /// secret since removed): 400.
    Token(TokenError),
    /// Well signed, but no campaign delivery of that id is recorded (pruned): 404.
    Unknown,
}

impl Refusal {
    fn reason(self) -> &'static str {
        match self {
            Refusal::Token(TokenError::Malformed) => "malformed",
            Refusal::Token(TokenError::BadSignature) => "bad_signature",
            Refusal::Unknown => "unknown_delivery",
        }
    }
}

/// The delivery a link names, for its confirmation page.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// The delivery.
    pub delivery: Uuid,
    /// Its address.
    pub address: String,
}

/// What a POST came to.
#[derive(Clone, Debug, PartialEq)]
pub struct Unsubscribed {
    /// The address now on the suppression list.
    pub address: String,
    /// The campaign the link came from.
    pub campaign_id: Option<Uuid>,
    /// The first time this delivery's link was used (a second POST changes nothing).
    pub first: bool,
}

/// The delivery a link names, for the confirmation page (GET): nothing changes.
///
/// # Errors
///
/// The database's. A refused link is `Ok(Err(_))`, logged.
pub async fn look(
    pool: &PgPool,
    signer: &Signer,
    token: &str,
) -> Result<std::result::Result<Target, Refusal>> {
    let delivery = match signer.verify(Purpose::Unsubscribe, token) {
        Ok(delivery) => delivery,
        Err(err) => return Ok(Err(refused(Refusal::Token(err), None))),
    };
    let found = db::delivery_get_many(docket_queue::pooled(pool), &[delivery]).await?;
    match found.into_iter().next() {
        Some((d, _)) if d.campaign_id.is_some() => Ok(Ok(Target {
            delivery,
            address: d.recipient,
        })),
        _ => Ok(Err(refused(Refusal::Unknown, Some(delivery)))),
    }
}

/// Unsubscribes the address a link names (POST): on the suppression list with reason
/// `unsubscribed` and the campaign, the delivery marked; counted and logged the first
/// time. Using a link again is harmless.
///
/// # Errors
///
/// The database's. A refused link is `Ok(Err(_))`, logged, and nothing changes.
pub async fn unsubscribe(
    pool: &PgPool,
    signer: &Signer,
    token: &str,
) -> Result<std::result::Result<Unsubscribed, Refusal>> {
    let delivery = match signer.verify(Purpose::Unsubscribe, token) {
        Ok(delivery) => delivery,
        Err(err) => return Ok(Err(refused(Refusal::Token(err), None))),
    };
    let mut tx = pool.begin().await?;
    let Some((address, campaign_id, first)) =
        db::delivery_mark_unsubscribed(docket_queue::pooled_conn(&mut tx), delivery).await?
    else {
        return Ok(Err(refused(Refusal::Unknown, Some(delivery))));
    };
    db::suppression_insert(
        docket_queue::pooled_conn(&mut tx),
        &address,
        "unsubscribed",
        campaign_id,
    )
    .await?;
    tx.commit().await?;
    if first {
        metrics::counter!(metric::MAIL_UNSUBSCRIBES).increment(1);
        tracing::info!(event = event::CAMPAIGN_UNSUBSCRIBED, delivery.id = %delivery, campaign.id = campaign_id.map(|id| id.to_string()), "unsubscribed: the address is on the suppression list");
    }
    Ok(Ok(Unsubscribed {
        address,
        campaign_id,
        first,
    }))
}

fn refused(refusal: Refusal, delivery: Option<Uuid>) -> Refusal {
    tracing::warn!(
        event = event::CAMPAIGN_UNSUBSCRIBE_REFUSED,
        reason = refusal.reason(),
        delivery.id = delivery.map(|id| id.to_string()),
        "an unsubscribe link was refused; nothing changed"
    );
    refusal
}
