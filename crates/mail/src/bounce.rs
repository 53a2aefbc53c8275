//! Bounces after acceptance: a relay answers 250, then reports days or minutes later that
//! it could not deliver, in a delivery status notification (RFC 3464) sent to the envelope
//! sender. Every delivery's envelope sender is its own, `bounce+<token>@<domain>` (VERP),
//! the token signed like the unsubscribe link's, so a notification names exactly one
//! delivery and nobody can make one for another.
//!
//! [`ingest`] takes one raw message (from `docket mail bounce` or
//! `POST /api/mail/bounces`) and records what it came to in `docket.mail_bounces`:
//! - `Action: failed`: the delivery (sent, or `unknown`) becomes `bounced`, final, and a
//!   5.1.x address (no such mailbox or domain) goes on the suppression list, as a 5.1.x
//!   reply during the SMTP exchange does;
//! - `Action: delayed`: recorded; the delivery is unchanged (the relay keeps trying);
//! - an auto-reply, a message that is not a notification, a token that names no delivery:
//!   recorded as `ignored` with the reason, never an error (a relay would send it again).

use docket_queue::telemetry::{event, metric};
use sqlx::PgPool;
use uuid::Uuid;

use crate::db;
use crate::dsn::{self, Kind};
use crate::error::Result;
use crate::model::Status;
use crate::token::{Purpose, Signer};

/// The envelope sender of a delivery: `bounce+<token>@<domain>`.
///
/// # Errors
///
/// [`crate::MailError::Invalid`] when the domain does not make an address (checked at
/// start-up, so not in practice).
pub fn envelope_sender(signer: &Signer, domain: &str, delivery: Uuid) -> Result<lettre::Address> {
    let token = signer.sign(Purpose::Bounce, delivery);
    format!("bounce+{token}@{domain}")
        .parse()
        .map_err(|err| crate::MailError::Invalid(format!("bounce address: {err}")))
}

/// What one message came to.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// A permanent failure: the delivery is `bounced`; `suppressed` when its address went
    /// on the suppression list (5.1.x).
    Bounced {
        /// The delivery.
        delivery: Uuid,
        /// The enhanced status code.
        status: Option<String>,
        /// Whether the address was suppressed.
        suppressed: bool,
    },
    /// The relay is still trying: recorded, nothing changed.
    Delayed {
        /// The delivery.
        delivery: Uuid,
    },
    /// Nothing to act on; `unknown_recipient` when the bounce address names no delivery
    /// (no token, a token that does not verify, or one of no recorded delivery).
    Ignored {
        /// Why.
        reason: String,
        /// The bounce address names no delivery.
        unknown_recipient: bool,
    },
}

impl Outcome {
    /// `bounced`, `delayed` or `ignored`: as stored, and the metric's label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Bounced { .. } => "bounced",
            Outcome::Delayed { .. } => "delayed",
            Outcome::Ignored { .. } => "ignored",
        }
    }
}

/// Reads one message sent to a bounce address and acts on it (see the module's doc);
/// records it whatever it is.
///
/// # Errors
///
/// The database's only: the caller should hand the message over again later.
pub async fn ingest(
    pool: &PgPool,
    signer: &Signer,
    domain: Option<&str>,
    raw: &[u8],
) -> Result<Outcome> {
    let read = dsn::read(raw, domain);
    let delivery = read
        .token
        .as_deref()
        .and_then(|token| signer.verify(Purpose::Bounce, token).ok());
    let found = match delivery {
        Some(id) => db::delivery_get_many(docket_queue::pooled(pool), &[id])
            .await?
            .into_iter()
            .next(),
        None => None,
    };
    let Some((delivery, _)) = found else {
        let reason = match (&read.token, delivery) {
            (None, _) => "no bounce address with a token",
            (Some(_), None) => "a bounce token that does not verify",
            (Some(_), Some(_)) => "a bounce token of no recorded delivery",
        };
        let outcome = Outcome::Ignored {
            reason: reason.to_owned(),
            unknown_recipient: true,
        };
        return record(pool, delivery, &outcome, None).await;
    };
    let report = match read.kind {
        Kind::Report(report) => report,
        Kind::AutoReply => {
            let outcome = ignored("an automatic reply");
            return record(pool, Some(delivery.id), &outcome, None).await;
        }
        Kind::Other(why) => return record(pool, Some(delivery.id), &ignored(why), None).await,
    };
    let outcome = if report.failed() {
        let mut tx = pool.begin().await?;
        if !db::delivery_mark_bounced(
            docket_queue::pooled_conn(&mut tx),
            delivery.id,
            report.diagnostic.as_deref(),
        )
        .await?
        {
            drop(tx);
            let why = format!(
                "a failure report for a delivery that is {}, not sent",
                delivery.status.as_str()
            );
            return record(pool, Some(delivery.id), &ignored(&why), Some(&report)).await;
        }
        let suppressed = report.no_such_address();
        if suppressed {
            let reason = format!(
                "dsn: {} {}",
                report.status.as_deref().unwrap_or(""),
                report.diagnostic.as_deref().unwrap_or("")
            );
            db::suppression_insert(
                docket_queue::pooled_conn(&mut tx),
                &delivery.recipient,
                reason.trim(),
                None,
            )
            .await?;
        }
        tx.commit().await?;
        metrics::counter!(metric::MAIL_DELIVERIES, "source" => source_label(&delivery.source), "status" => Status::Bounced.as_str()).increment(1);
        Outcome::Bounced {
            delivery: delivery.id,
            status: report.status.clone(),
            suppressed,
        }
    } else if report.action == "delayed" {
        Outcome::Delayed {
            delivery: delivery.id,
        }
    } else {
        ignored(&format!("a report with action {:?}", report.action))
    };
    record(pool, Some(delivery.id), &outcome, Some(&report)).await
}

fn ignored(reason: &str) -> Outcome {
    Outcome::Ignored {
        reason: reason.to_owned(),
        unknown_recipient: false,
    }
}

/// A fixed label for the delivery's source (the stored text is one of three).
fn source_label(source: &str) -> &'static str {
    match source {
        "recovery" => "recovery",
        "admin" => "admin",
        _ => "campaign",
    }
}

/// Records the message's outcome, counts and logs it.
async fn record(
    pool: &PgPool,
    delivery: Option<Uuid>,
    outcome: &Outcome,
    report: Option<&dsn::RecipientReport>,
) -> Result<Outcome> {
    let reason = match outcome {
        Outcome::Ignored { reason, .. } => Some(reason.as_str()),
        _ => None,
    };
    let status = report.and_then(|r| r.status.as_deref());
    let diagnostic = report.and_then(|r| r.diagnostic.as_deref());
    db::bounce_insert(
        docket_queue::pooled(pool),
        delivery,
        outcome.as_str(),
        status,
        diagnostic,
        reason,
    )
    .await?;
    metrics::counter!(metric::MAIL_BOUNCES, "outcome" => outcome.as_str()).increment(1);
    let delivery = delivery.map(|id| id.to_string());
    match outcome {
        Outcome::Bounced { suppressed, .. } => {
            tracing::warn!(
                event = event::MAIL_BOUNCE,
                outcome = outcome.as_str(),
                delivery.id = delivery,
                status,
                suppressed,
                diagnostic,
                "bounced after the relay took it"
            )
        }
        Outcome::Delayed { .. } => {
            tracing::info!(
                event = event::MAIL_BOUNCE,
                outcome = outcome.as_str(),
                delivery.id = delivery,
                status,
                "delayed: the relay is still trying"
            )
        }
        Outcome::Ignored { reason, .. } => {
            tracing::info!(event = event::MAIL_BOUNCE, outcome = outcome.as_str(), delivery.id = delivery, reason = %reason, "a message to a bounce address was ignored")
        }
    }
    Ok(outcome.clone())
}
