//! The mail crate's domain types, at the bottom of its module graph: what a delivery and a
//! campaign are, as stored and as shown. Statements (`db`) read and write them; the
//! modules above (`delivery`, `campaign`, `sender`, `jobs`) act on them. They are
//! re-exported where other crates have always found them (`delivery::Status`,
//! `campaign::CampaignStatus`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{MailError, Result};

/// Where a delivery came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// `mail.recovery`: a password reset, a sign-in link.
    Recovery,
    /// `mail.admin`: an operator notification.
    Admin,
    /// A campaign's recipient.
    Campaign,
}

impl Source {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Recovery => "recovery",
            Source::Admin => "admin",
            Source::Campaign => "campaign",
        }
    }
}

/// Where a delivery is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = DeliveryStatus))]
pub enum Status {
    /// Waiting for its (next) attempt.
    Queued,
    /// Reserved: an SMTP exchange is under way (until its `retry_at` at the latest).
    Sending,
    /// The relay accepted it.
    Sent,
    /// Not sent on purpose: on the suppression list, or stub mode.
    Suppressed,
    /// Refused permanently (5xx).
    Failed,
    /// Temporary failures used up the retry ladder, or the template failed.
    DeadLetter,
    /// Its job's `expires_at` passed before it could be sent.
    Expired,
    /// Its SMTP exchange was cut off with no outcome recorded (a crash after the
    /// reservation): the relay may have taken it. Never sent again unless an operator asks.
    Unknown,
    /// Its campaign was cancelled before it was sent.
    Cancelled,
    /// The relay took it, then reported that it could not be delivered (a delivery status
    /// notification with `Action: failed`, matched by its envelope sender).
    Bounced,
}

impl Status {
    /// Every status, in life order.
    pub const ALL: [Status; 10] = [
        Status::Queued,
        Status::Sending,
        Status::Sent,
        Status::Suppressed,
        Status::Failed,
        Status::DeadLetter,
        Status::Expired,
        Status::Unknown,
        Status::Cancelled,
        Status::Bounced,
    ];

    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Sending => "sending",
            Status::Sent => "sent",
            Status::Suppressed => "suppressed",
            Status::Failed => "failed",
            Status::DeadLetter => "dead_letter",
            Status::Expired => "expired",
            Status::Unknown => "unknown",
            Status::Cancelled => "cancelled",
            Status::Bounced => "bounced",
        }
    }

    /// Whether nothing more will happen to it.
    pub fn is_final(self) -> bool {
        !matches!(self, Status::Queued | Status::Sending)
    }
}

impl std::str::FromStr for Status {
    type Err = MailError;

    fn from_str(text: &str) -> Result<Status> {
        Status::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| {
                MailError::Invalid(format!(
                    "unknown delivery status {text:?} (known: queued, sending, sent, suppressed, failed, dead_letter, expired, unknown, cancelled, bounced)"
                ))
            })
    }
}

/// One recorded email.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Delivery {
    /// Its id (UUID v7).
    pub id: Uuid,
    /// `recovery`, `admin` or `campaign`.
    pub source: String,
    /// The campaign, for a campaign's recipient.
    pub campaign_id: Option<Uuid>,
    /// The key that makes it unique.
    pub idempotency_key: String,
    /// The address.
    pub recipient: String,
    /// The display name, if any.
    pub recipient_name: Option<String>,
    /// The template.
    pub template: String,
    /// The locale asked for.
    pub locale: Option<String>,
    /// Where it is.
    pub status: Status,
    /// For `suppressed`: `list` or `stub`.
    pub suppressed_reason: Option<String>,
    /// The relay's last reply code.
    pub smtp_code: Option<i32>,
    /// The relay's last reply text.
    pub smtp_reply: Option<String>,
    /// Its Message-ID, the same on every attempt.
    pub message_id: String,
    /// SMTP exchanges started.
    pub attempts: i32,
    /// 421/454 replies it met, which spend no attempt while they are few.
    pub throttles: i32,
    /// After a temporary failure, not before this; while `sending`, when the exchange is
    /// over at the latest.
    pub retry_at: Option<DateTime<Utc>>,
    /// The job that sends (or sent) it.
    pub job_id: Option<Uuid>,
    /// The last failure.
    pub last_error: Option<String>,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
    /// When the relay accepted it.
    pub sent_at: Option<DateTime<Utc>>,
}

/// Which deliveries to list.
#[derive(Clone, Debug, Default)]
pub struct DeliveryFilter {
    /// Only this status.
    pub status: Option<Status>,
    /// Only this campaign's.
    pub campaign_id: Option<Uuid>,
    /// Only to this address (any case).
    pub to: Option<String>,
    /// At most this many (1 to 1000), newest first.
    pub limit: u32,
}

/// How many deliveries of one source are in one status.
#[derive(Clone, Debug, PartialEq, Serialize, sqlx::FromRow)]
pub struct Tally {
    /// `recovery`, `admin` or `campaign`.
    pub source: String,
    /// The status.
    pub status: Status,
    /// Deliveries.
    pub count: i64,
    /// Of them, those that took more than one SMTP exchange (retried after a failure).
    pub retried: i64,
}

/// One entry of the suppression list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Suppression {
    /// The address, lower case.
    pub address: String,
    /// Why (`manual`, `unsubscribed`, or the relay's reply).
    pub reason: String,
    /// For `unsubscribed`: the campaign whose link was used.
    pub campaign_id: Option<Uuid>,
    /// Since when.
    pub created_at: DateTime<Utc>,
    /// Where it came from: `smtp` (the relay refused the address for good), `dsn` (a
    /// delivery report after the relay took it), `unsubscribe` (the recipient's link) or
    /// `operator` (`docket mail suppress`).
    #[sqlx(skip)]
    #[serde(default)]
    pub source: String,
}

impl Suppression {
    /// [`Suppression::source`] as its reason says it.
    pub fn source_of(reason: &str) -> &'static str {
        if reason.starts_with("smtp:") {
            "smtp"
        } else if reason.starts_with("dsn:") {
            "dsn"
        } else if reason == "unsubscribed" {
            "unsubscribe"
        } else {
            "operator"
        }
    }
}

/// A campaign and its progress.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CampaignStatus {
    /// Its id.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// Its template.
    pub template: String,
    /// `sending`, `paused`, `cancelled` or `finished`.
    pub state: String,
    /// Its recipients.
    pub total: i32,
    /// Accepted by the relay.
    pub sent: i32,
    /// Skipped: on the suppression list, or stub mode.
    pub suppressed: i32,
    /// Refused permanently.
    pub failed: i32,
    /// Given up after the retry ladder, or the template failed.
    pub dead_letter: i32,
    /// Not sent in time.
    pub expired: i32,
    /// Cut off mid-exchange with no outcome recorded: may have been sent.
    pub unknown: i32,
    /// Not sent: the campaign was cancelled first.
    pub cancelled: i32,
    /// Taken by the relay, then reported undeliverable (a DSN).
    pub bounced: i32,
    /// Not final yet.
    pub pending: i32,
    /// Recipients who used the campaign's one-click unsubscribe link (counted besides
    /// their delivery's status, which stays `sent`).
    pub unsubscribed: i32,
    /// The batch of its jobs.
    pub batch_id: Option<Uuid>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_suppressions_source_is_read_off_its_reason() {
        for (reason, source) in [
            (
                "smtp: 550 5.1.1 <ann@example.com>: Recipient address rejected",
                "smtp",
            ),
            ("dsn: 5.1.1 smtp; 550 5.1.1 user unknown", "dsn"),
            ("unsubscribed", "unsubscribe"),
            ("complaint", "operator"),
            ("manual", "operator"),
        ] {
            assert_eq!(Suppression::source_of(reason), source, "{reason}");
        }
    }
}
