//! The mail job handlers: `mail.recovery`, `mail.admin`, `mail.campaign_batch`, the
//! campaign's callback `mail.campaign_finished` and `mail.dead_letter_digest`, and
//! [`register`]. The kinds themselves (payloads, queues) are in [`kinds`](crate::kinds),
//! re-exported here.

use std::sync::Arc;
use std::time::Duration;

use docket_queue::{JobId, NewJob};
use docket_worker::{JobContext, JobError, Registry};
use uuid::Uuid;

use crate::campaign::{self, Controls};
use crate::delivery::{self, NewDelivery};
use crate::error::MailError;
use crate::model::{Delivery, Source, Status};
use crate::sender::{Mailer, Step};

pub use crate::kinds::{
    dead_letter_schedule, Admin, CampaignBatch, CampaignFinished, DeadLetterDigest, Recovery,
    DEAD_LETTER_SCHEDULE, MAIL_QUEUE, RECOVERY_PRIORITY, RECOVERY_QUEUE,
};

/// How far below empty a recovery email may drive the relay-wide bucket: it goes first,
/// and the campaign waits the debt off.
const RECOVERY_BORROW: f64 = 10.0;

/// The snooze of a batch job that finds its campaign paused. Not a wait: the database parks
/// the job as the snooze is written while the campaign is still paused (and resume brings
/// it back); if it was resumed meanwhile, the job is due again at once.
const PAUSED_SNOOZE: Duration = Duration::ZERO;

/// The most dead letters one notification lists (it counts them all).
const DIGEST_LIST_LIMIT: u32 = 20;

/// Registers the mail kinds on `registry`, all sending through `mailer`.
pub fn register(registry: &mut Registry, mailer: Arc<Mailer>) {
    let m = mailer.clone();
    registry.register(move |job: Recovery, ctx: JobContext| {
        let mailer = m.clone();
        async move {
            let key = job
                .idempotency_key
                .as_ref()
                .map(|k| format!("recovery:{k}"));
            let single = Single {
                to: &job.to,
                template: &job.template,
                vars: &job.vars,
                locale: job.locale.as_deref(),
                key,
            };
            send_single(&mailer, single, Source::Recovery, &ctx).await
        }
    });
    let m = mailer.clone();
    registry.register(move |job: Admin, ctx: JobContext| {
        let mailer = m.clone();
        async move {
            let Some(to) = job.to.clone().or_else(|| mailer.config.admin_email.clone()) else {
                return Err(JobError::DeadLetter {
                    reason: "no_recipient".to_owned(),
                    error: format!(
                        "mail.admin names nobody and {} is not set",
                        docket_settings::ADMIN_EMAIL
                    )
                    .into(),
                });
            };
            let single = Single {
                to: &to,
                template: &job.template,
                vars: &job.vars,
                locale: None,
                key: None,
            };
            send_single(&mailer, single, Source::Admin, &ctx).await
        }
    });
    let m = mailer.clone();
    registry.register(move |job: CampaignBatch, ctx: JobContext| {
        let mailer = m.clone();
        async move { send_campaign_batch(&mailer, &job, &ctx).await }
    });
    let m = mailer.clone();
    registry.register(move |job: CampaignFinished, _ctx: JobContext| {
        let mailer = m.clone();
        async move { campaign_finished(&mailer, &job).await }
    });
    registry.register(move |job: DeadLetterDigest, ctx: JobContext| {
        let mailer = mailer.clone();
        async move { dead_letter_digest(&mailer, &job, &ctx).await }
    });
}

/// One email of a recovery or admin job.
struct Single<'a> {
    to: &'a str,
    template: &'a str,
    vars: &'a serde_json::Value,
    locale: Option<&'a str>,
    /// The idempotency key; `None`: the job's own id.
    key: Option<String>,
}

async fn send_single(
    mailer: &Arc<Mailer>,
    single: Single<'_>,
    source: Source,
    ctx: &JobContext,
) -> Result<(), JobError> {
    let mailbox =
        crate::message::parse_mailbox(single.to, None).map_err(|err| JobError::DeadLetter {
            reason: "malformed".to_owned(),
            error: err.to_string().into(),
        })?;
    if !single.vars.is_object() {
        return Err(JobError::DeadLetter {
            reason: "malformed".to_owned(),
            error: "`vars` must be an object".into(),
        });
    }
    let id = Uuid::now_v7();
    let key = single.key.unwrap_or_else(|| format!("job:{}", ctx.id()));
    let delivery = delivery::insert_or_get(
        docket_queue::pooled(&mailer.pool),
        &NewDelivery {
            id,
            source,
            key: &key,
            to: &mailbox,
            template: single.template,
            locale: single.locale,
            vars: single.vars,
            message_id: &crate::message::message_id(id, mailer.from()),
            job_id: ctx.id().0,
            job_replays: ctx.replays(),
        },
    )
    .await
    .map_err(retry)?;
    let own = delivery.job_id == Some(ctx.id().0);
    if !own && delivery.id != id {
        // Another job holds this key: this job sends nothing, and ends as that delivery.
        return held_elsewhere(mailer, &delivery, source).await;
    }
    if delivery.id == id {
        tracing::info!(event = crate::sender::events_of(source).queued, delivery.id = %id, "delivery recorded");
    }
    let mut delivery = delivery;
    if own && delivery.id != id && ctx.replays() > 0 {
        // The job was replayed: the operator's word, taken once per replay. A `dead_letter`
        // or `unknown` delivery gets a fresh ladder (for an `unknown` one, the word to send
        // it again); the replay is recorded on the delivery either way.
        if let Some(taken) = delivery::take_replay(
            docket_queue::pooled(&mailer.pool),
            delivery.id,
            ctx.id().0,
            ctx.replays(),
        )
        .await
        .map_err(retry)?
        {
            delivery = taken;
        }
    }
    let step = if delivery.status.is_final() {
        // An earlier run of this job settled it, and nobody asked for it again since: the
        // job may be running again by itself (handed back at shutdown, rescued after a
        // stall, its outcome lost) after the exchange outlived that run. Nothing is sent;
        // the job ends as that run would have.
        Step::Final(delivery.status)
    } else {
        let borrow = if source == Source::Recovery {
            RECOVERY_BORROW
        } else {
            0.0
        };
        mailer
            .send_one(&delivery, single.vars, ctx, source, borrow)
            .await
            .map_err(retry)?
    };
    match step {
        Step::Final(Status::DeadLetter) => {
            let (reason, error) = dead_letter_cause(mailer, delivery.id).await;
            Err(JobError::DeadLetter {
                reason,
                error: error.into(),
            })
        }
        Step::Final(Status::Expired) => Err(JobError::DeadLetter {
            reason: "expired".to_owned(),
            error: "not sent before the job's expires_at; never sent late".into(),
        }),
        Step::Final(Status::Unknown) => Err(JobError::DeadLetter {
            reason: "unknown".to_owned(),
            error: "the SMTP exchange was cut off with no outcome recorded; the message may have been sent; replay the job to send it again".into(),
        }),
        // Refused for good (5xx): the email will never go, and a completed job would say
        // it did. No replay sends it (the delivery stays `failed`); a new address does.
        Step::Final(Status::Failed) => Err(JobError::DeadLetter {
            reason: "smtp_permanent".to_owned(),
            error: format!(
                "the relay refused the address for good ({}); no replay sends it: check the address, then enqueue a new email",
                refusal_of(mailer, delivery.id).await
            )
            .into(),
        }),
        Step::Final(_) => Ok(()),
        Step::Retry(delay) => Err(JobError::retry_after("a temporary SMTP failure", delay)),
        Step::Hold(delay) | Step::Wait(delay) => Err(JobError::Snooze(delay)),
    }
}

/// The outcome of a job whose idempotency key another job's delivery holds, as a repeated
/// request gets the original's: nothing is sent either way, and the job completes only when
/// that delivery was sent (or suppressed on purpose), or its own job is still to send it.
/// A delivery that never left (refused, dead-lettered, cut off, expired, or waiting for a
/// job that is over) dead-letters this job too, with reason `duplicate_of_failed` and an
/// error naming the delivery, its job, its status and what to do.
async fn held_elsewhere(mailer: &Mailer, held: &Delivery, source: Source) -> Result<(), JobError> {
    let holder = held.job_id;
    let holder_over = match (held.status, holder) {
        // Its job sends it, unless that job is over (cancelled, or out of attempts before
        // it got there) or gone: then nobody will until that job is replayed.
        (Status::Queued, Some(job)) => {
            match docket_queue::admin::show(docket_queue::pooled(&mailer.pool), JobId(job)).await {
                Ok(job) => job.state.is_final(),
                Err(docket_queue::Error::JobNotFound(_)) => true,
                Err(err) => return Err(JobError::from(err.to_string())),
            }
        }
        (Status::Queued, None) => true,
        _ => false,
    };
    let holder_text = holder.map_or_else(|| "no job".to_owned(), |job| format!("job {job}"));
    let todo = match held.status {
        Status::Sent | Status::Suppressed | Status::Sending => None,
        Status::Queued if !holder_over => None,
        Status::Queued => Some(format!(
            "its job is over without having sent it; replay {holder_text} to send it, then this one to close it"
        )),
        Status::DeadLetter | Status::Unknown => Some(format!(
            "replay {holder_text} to send it again, then this one to close it (replaying only this one sends nothing while that delivery holds the key)"
        )),
        Status::Failed | Status::Bounced => Some(
            "the relay refused it for good, and a replay sends nothing; check the address (and `docket mail suppressions`), then enqueue a new email with a new idempotency key".to_owned(),
        ),
        Status::Expired | Status::Cancelled => Some(
            "it will never be sent; enqueue a new email with a new idempotency key".to_owned(),
        ),
    };
    let Some(todo) = todo else {
        tracing::info!(
            event = crate::sender::events_of(source).suppressed, delivery.id = %held.id,
            holder.job.id = holder.map(tracing::field::display), status = held.status.as_str(),
            "another job holds this idempotency key, and its delivery is sent, suppressed, or still to be sent by that job; nothing sent"
        );
        return Ok(());
    };
    let cause = cause_of(held).map_or_else(String::new, |cause| format!(" ({cause})"));
    Err(JobError::DeadLetter {
        reason: "duplicate_of_failed".to_owned(),
        error: format!(
            "delivery {} of {holder_text} holds idempotency key {:?} and is {}{cause}; nothing was sent for this job: {todo}",
            held.id,
            held.idempotency_key,
            held.status.as_str(),
        )
        .into(),
    })
}

/// The relay's refusal of a delivery, as recorded (its reply), for a dead letter's error.
async fn refusal_of(mailer: &Mailer, delivery: Uuid) -> String {
    delivery::get_many(docket_queue::pooled(&mailer.pool), &[delivery])
        .await
        .ok()
        .and_then(|mut rows| rows.pop())
        .and_then(|(d, _)| cause_of(&d))
        .unwrap_or_else(|| "no reply recorded".to_owned())
}

/// A delivery's own cause, as recorded: its last error, else the relay's last reply.
fn cause_of(d: &Delivery) -> Option<String> {
    let reply = d
        .smtp_code
        .map(|code| format!("{code} {}", d.smtp_reply.as_deref().unwrap_or("")));
    match (&d.last_error, reply) {
        (Some(error), _) => Some(error.trim().to_owned()),
        (None, Some(reply)) => Some(reply.trim().to_owned()),
        (None, None) => None,
    }
}

/// The dead letter's reason (`template` when the template failed, else `smtp_temporary`:
/// the ladder ran out) and the delivery's own cause, for the job's `last_error`: the
/// missing variable, the relay's last reply.
async fn dead_letter_cause(mailer: &Mailer, delivery: Uuid) -> (String, String) {
    let recorded = delivery::get_many(docket_queue::pooled(&mailer.pool), &[delivery])
        .await
        .ok()
        .and_then(|mut rows| rows.pop())
        .map(|(d, _)| d);
    let cause = recorded.as_ref().and_then(cause_of);
    let template = cause.as_deref().is_some_and(|e| e.starts_with("template"));
    let reason = if template {
        "template"
    } else {
        "smtp_temporary"
    };
    let error = match cause {
        Some(cause) if template => cause,
        Some(cause) => format!(
            "temporary failures used up the retry ladder ({} attempts); the last: {cause}",
            recorded.as_ref().map_or(0, |d| d.attempts)
        ),
        None => format!("delivery {delivery} was dead-lettered"),
    };
    (reason.to_owned(), error)
}

async fn send_campaign_batch(
    mailer: &Arc<Mailer>,
    job: &CampaignBatch,
    ctx: &JobContext,
) -> Result<(), JobError> {
    let mut retry_in: Option<Duration> = None;
    let deliveries = delivery::get_many(docket_queue::pooled(&mailer.pool), &job.deliveries)
        .await
        .map_err(retry)?;
    for (delivery, vars) in deliveries {
        if delivery.status.is_final() {
            continue;
        }
        // The operator's controls, read before each recipient: a pause or cancel takes
        // effect within one message.
        match campaign::controls(docket_queue::pooled(&mailer.pool), job.campaign_id)
            .await
            .map_err(retry)?
        {
            None
            | Some(Controls {
                cancelled: true, ..
            }) => {
                tracing::info!(event = docket_queue::telemetry::event::CAMPAIGN_PAUSED, campaign.id = %job.campaign_id, "campaign cancelled; its batch stops");
                return Ok(());
            }
            Some(Controls {
                paused: true,
                cancelled: false,
            }) => {
                tracing::info!(event = docket_queue::telemetry::event::CAMPAIGN_PAUSED, campaign.id = %job.campaign_id, "campaign paused; its batch waits");
                return Err(JobError::Snooze(PAUSED_SNOOZE));
            }
            Some(Controls {
                paused: false,
                cancelled: false,
            }) => {}
        }
        if let (Status::Queued, Some(at)) = (delivery.status, delivery.retry_at) {
            if let Ok(wait) = (at - chrono::Utc::now()).to_std() {
                retry_in = Some(retry_in.map_or(wait, |r| r.min(wait)));
                continue;
            }
        }
        if ctx.is_cancelled() {
            return Err(JobError::from("stopped before every recipient was sent"));
        }
        match mailer
            .send_one(&delivery, &vars, ctx, Source::Campaign, 0.0)
            .await
            .map_err(retry)?
        {
            Step::Final(_) => {}
            // This recipient's ladder, or its exchange still under way: the others go on.
            Step::Retry(delay) | Step::Wait(delay) => {
                retry_in = Some(retry_in.map_or(delay, |r| r.min(delay)));
            }
            // The relay or our settings hold everyone back: stop here and come back.
            Step::Hold(delay) => return Err(JobError::Snooze(delay)),
        }
    }
    match retry_in {
        // Waiting for a recipient's ladder is not a failed attempt of the job.
        Some(delay) => Err(JobError::Snooze(delay.max(Duration::from_millis(100)))),
        None => Ok(()),
    }
}

async fn campaign_finished(mailer: &Mailer, job: &CampaignFinished) -> Result<(), JobError> {
    let campaign = campaign::show(docket_queue::pooled(&mailer.pool), job.campaign_id)
        .await
        .map_err(retry)?;
    tracing::info!(
        event = docket_queue::telemetry::event::CAMPAIGN_FINISHED, campaign.id = %campaign.id,
        state = %campaign.state, total = campaign.total, sent = campaign.sent,
        suppressed = campaign.suppressed, failed = campaign.failed, dead_letter = campaign.dead_letter,
        "campaign's batch jobs are all final"
    );
    if !mailer.config.notify.campaign_finished {
        return Ok(());
    }
    let admin = NewJob::typed(&Admin {
        to: None,
        template: "docket/campaign_finished".to_owned(),
        vars: serde_json::json!({ "campaign": campaign }),
    })
    .map_err(|err| JobError::permanent(err.to_string()))?
    .queue(MAIL_QUEUE)
    .unique_key(format!("campaign_finished:{}", campaign.id));
    let id = docket_queue::enqueue(docket_queue::pooled(&mailer.pool), &admin)
        .await
        .map_err(|err| JobError::from(err.to_string()))?;
    tracing::info!(event = docket_queue::telemetry::event::MAIL_NOTIFIED, job.id = %id, campaign.id = %campaign.id, "admin told: campaign finished");
    Ok(())
}

async fn dead_letter_digest(
    mailer: &Mailer,
    job: &DeadLetterDigest,
    ctx: &JobContext,
) -> Result<(), JobError> {
    let until = ctx.run_at();
    let since = until - chrono::Duration::seconds(i64::from(job.window_seconds));
    let (count, jobs) = docket_queue::admin::dead_lettered_between(
        docket_queue::pooled(&mailer.pool),
        since,
        until,
        DIGEST_LIST_LIMIT,
    )
    .await
    .map_err(|err| JobError::from(err.to_string()))?;
    if count == 0 {
        return Ok(());
    }
    let listed: Vec<serde_json::Value> = jobs
        .iter()
        .map(|j| {
            serde_json::json!({
                "id": j.id, "kind": j.kind, "queue": j.queue,
                "reason": j.dead_letter_reason, "last_error": j.last_error,
            })
        })
        .collect();
    let admin = NewJob::typed(&Admin {
        to: None,
        template: "docket/dead_letters".to_owned(),
        vars: serde_json::json!({
            "count": count, "since": since.to_rfc3339(), "until": until.to_rfc3339(), "jobs": listed,
        }),
    })
    .map_err(|err| JobError::permanent(err.to_string()))?
    .queue(MAIL_QUEUE)
    .unique_key(format!("dead_letters:{}", until.timestamp()));
    let id = docket_queue::enqueue(docket_queue::pooled(&mailer.pool), &admin)
        .await
        .map_err(|err| JobError::from(err.to_string()))?;
    tracing::info!(event = docket_queue::telemetry::event::MAIL_NOTIFIED, job.id = %id, count, "admin told: jobs dead-lettered");
    Ok(())
}

/// A database error: retried with the kind's backoff.
fn retry(err: MailError) -> JobError {
    JobError::from(err.to_string())
}
