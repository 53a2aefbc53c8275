//! The mail job kinds: each payload with its `KIND`, the queues and priority they are
//! enqueued with, and the built-in dead-letter schedule. Data only, and it imports nothing
//! of the crate: the handlers (`jobs.rs`) and `campaign.rs` both build on it. `jobs`
//! re-exports everything here under the paths other crates use
//! (`docket_mail::jobs::Recovery`).

use docket_queue::JobArgs;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use docket_queue::enqueue::{MAIL_QUEUE, RECOVERY_QUEUE};

/// The priority recovery emails are enqueued with.
pub const RECOVERY_PRIORITY: i16 = -10;

/// `mail.recovery`: one time-critical email (a password reset, a sign-in link). Its jobs
/// go to [`RECOVERY_QUEUE`] with priority [`RECOVERY_PRIORITY`] by themselves; give each an
/// `expires_at`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recovery {
    /// An address or `Name <address>`.
    pub to: String,
    /// The template.
    pub template: String,
    /// The template's variables.
    #[serde(default = "empty_object")]
    pub vars: serde_json::Value,
    /// The recipient's locale.
    #[serde(default)]
    pub locale: Option<String>,
    /// At most one delivery per key: a second job with the same key sends nothing.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

impl JobArgs for Recovery {
    const KIND: &'static str = "mail.recovery";
    const QUEUE: &'static str = RECOVERY_QUEUE;
    const PRIORITY: i16 = RECOVERY_PRIORITY;
}

/// `mail.admin`: an operator notification.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Default [`docket_settings::ADMIN_EMAIL`].
    #[serde(default)]
    pub to: Option<String>,
    /// The template.
    pub template: String,
    /// The template's variables.
    #[serde(default = "empty_object")]
    pub vars: serde_json::Value,
}

impl JobArgs for Admin {
    const KIND: &'static str = "mail.admin";
    const QUEUE: &'static str = MAIL_QUEUE;
}

/// `mail.campaign_batch`: some of a campaign's recipients (made by a campaign).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignBatch {
    /// The campaign.
    pub campaign_id: Uuid,
    /// Its deliveries this job sends.
    pub deliveries: Vec<Uuid>,
}

impl JobArgs for CampaignBatch {
    const KIND: &'static str = "mail.campaign_batch";
    const QUEUE: &'static str = MAIL_QUEUE;
}

/// `mail.campaign_finished`: a campaign's batch callback, once every batch job is final.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CampaignFinished {
    /// The campaign.
    pub campaign_id: Uuid,
    /// The batch (added by the batch tracker).
    #[serde(default)]
    pub batch_id: Option<Uuid>,
}

impl JobArgs for CampaignFinished {
    const KIND: &'static str = "mail.campaign_finished";
    const QUEUE: &'static str = MAIL_QUEUE;
}

/// `mail.dead_letter_digest`: tells the admin address about jobs dead-lettered in the minute
/// before its tick (nothing when there were none). Enqueued by the built-in schedule
/// [`DEAD_LETTER_SCHEDULE`] when [`docket_settings::MAIL_NOTIFY`] has `dead_letters`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterDigest {
    /// The window before the tick, in seconds. Default 60.
    #[serde(default = "minute")]
    pub window_seconds: u32,
}

impl JobArgs for DeadLetterDigest {
    const KIND: &'static str = "mail.dead_letter_digest";
    const QUEUE: &'static str = MAIL_QUEUE;
}

fn minute() -> u32 {
    60
}

/// The built-in schedule's name.
pub const DEAD_LETTER_SCHEDULE: &str = "docket.dead_letter_digest";

/// The built-in schedule of [`DeadLetterDigest`]: every minute, on the minute; missed
/// ticks are skipped (a digest after downtime would only repeat the current state).
pub fn dead_letter_schedule() -> docket_worker::cron::Schedule {
    docket_worker::cron::Schedule {
        queue: MAIL_QUEUE.to_owned(),
        catch_up: docket_worker::cron::CatchUp::Skip,
        ..docket_worker::cron::Schedule::new(
            DEAD_LETTER_SCHEDULE,
            "0 * * * * *",
            <DeadLetterDigest as JobArgs>::KIND,
        )
    }
}

fn empty_object() -> serde_json::Value {
    serde_json::json!({})
}
