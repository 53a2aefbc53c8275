//! The one path every email takes, whatever its kind: suppression list, render, stub, rate
//! limit, reserve, SMTP, record. Each step that decides the delivery's fate records it
//! before anything else happens.
//!
//! `Mailer::send_one` reads as those steps: `prepare` (suppression list, expiry, render,
//! build), stub mode and the rate limit, then `exchange` in a task of its own: `send`
//! (connect, reserve, the SMTP exchange) and `settle` (the reply recorded by its class:
//! `settle_sent`, `settle_failure`, `settle_temporary` for the ladder).
//!
//! # An email in flight
//!
//! The delivery is reserved (`sending`, attempts + 1, and `retry_at` set to when the
//! exchange is over at the latest) in its own committed statement right before the SMTP
//! exchange (its commit written even where the server runs `synchronous_commit = off`), and
//! its outcome is recorded in the next statement after it. The connection
//! is made before the reservation, so that bound is one [`SMTP_TIMEOUT`](docket_settings::SMTP_TIMEOUT) (plus
//! [`RECORD_MARGIN`]). The exchange and its record run in a task of their own: a run
//! stopped from outside (an operator's cancel, the job's timeout, a lease handed back)
//! drops its handler, never the exchange, which finishes and settles the delivery.
//!
//! A delivery found `sending` by a later run is never sent again: within its bound the run
//! waits for the exchange to settle it; past it (the process died mid-exchange) the
//! delivery becomes `unknown`, final, and is sent again only on an operator's word
//! (replaying a recovery or admin job, or putting a campaign's delivery back to `queued`).
//! That word is a record, never a status read as one: a job runs again by itself too
//! (handed back, rescued) and may find its delivery `unknown`; only a replay counted on the
//! job ([`docket_worker::JobContext::replays`]) sends it again (`jobs::send_single`).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use docket_queue::rate_limit::{RateLimit, Take};
use docket_queue::telemetry::event::MailEvents;
use docket_queue::telemetry::{event, metric};
use docket_worker::JobContext;
use lettre::message::Mailbox;
use sqlx::PgPool;

use crate::config::MailConfig;
use crate::db::{self, Record};
use crate::error::{MailError, Result};
use crate::message::ListUnsubscribe;
use crate::model::{Delivery, Source, Status};
use crate::outcome::{classify, Class, Failure};
use crate::template::Catalog;
use crate::token::{Purpose, Signer};
use crate::transport::{Accepted, Transport};
use crate::unsubscribe;

/// The relay-wide bucket's name in `docket.rate_limits`.
pub const RELAY_BUCKET: &str = "mail.relay";

/// The longest a sender sleeps in place for the rate limit; a longer wait snoozes the job.
const RATE_WAIT_IN_PLACE: Duration = Duration::from_secs(5);

/// How long the relay is left alone after it asks to slow down (421, 454), at most: short
/// enough that a recovery email, which borrows on the bucket, still goes within seconds.
const THROTTLE_HOLD_MAX: Duration = Duration::from_secs(5);

/// 421/454 replies one delivery may meet without spending an attempt. Past them, each spends
/// one on the delivery's ladder: a relay-wide deferral passes long before that (each holds
/// the relay a few seconds), while a destination the relay always defers ends `dead_letter`.
const THROTTLES_FREE: i32 = 5;

/// How long a configuration fault (authentication, TLS) holds a batch, at most.
const CONFIG_FAULT_HOLD_MAX: Duration = Duration::from_secs(60);

/// What a `sending` delivery's bound allows beyond [`docket_settings::SMTP_TIMEOUT`] for the record.
pub const RECORD_MARGIN: Duration = Duration::from_secs(10);

/// How often a run looks again at a delivery whose exchange may still be under way.
const IN_FLIGHT_RECHECK: Duration = Duration::from_secs(1);
/// How often a process refreshes the record of when the relay last took a message (the
/// health check's "took a message at").
const SENT_RECORD_EVERY: Duration = Duration::from_secs(60);

/// What one delivery's turn came to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Step {
    /// The delivery is final with this status.
    Final(Status),
    /// A temporary failure: try again after this (the ladder's step).
    Retry(Duration),
    /// Not now, and not counted: a throttle, a configuration fault, the rate limit.
    Hold(Duration),
    /// Not now, for this delivery only: an exchange of it may still be under way; look
    /// again after this.
    Wait(Duration),
}

/// One message ready to go, owned by the task that sends it.
struct Outgoing {
    delivery: Delivery,
    source: Source,
    envelope: lettre::address::Envelope,
    message: Vec<u8>,
    expires_at: Option<DateTime<Utc>>,
    job_id: uuid::Uuid,
}

/// What preparing a delivery came to.
enum Prepared {
    /// The message, ready for the relay.
    Ready {
        envelope: lettre::address::Envelope,
        message: Vec<u8>,
    },
    /// The delivery's fate is decided (and recorded) before the relay is asked.
    Decided(Step),
}

/// What sending came to.
enum Sent {
    /// No reply to settle: the job expired first (recorded), or the delivery could not be
    /// reserved.
    Decided(Step),
    /// The relay's reply (or the failure to get one) to the attempt reserved.
    Replied {
        attempt: i32,
        reply: std::result::Result<Accepted, Failure>,
        elapsed: f64,
    },
}

/// Sends email: the settings, the parsed catalog, the transport and the database.
pub struct Mailer {
    pub(crate) pool: PgPool,
    pub(crate) config: MailConfig,
    pub(crate) catalog: Catalog,
    transport: Transport,
    from: Mailbox,
    limiter: Option<RateLimit>,
    /// Signs campaign emails' unsubscribe links; `None` in stub mode without a secret.
    signer: Option<Signer>,
    /// A recorded fault or failure to reach the relay may be outstanding: the next
    /// accepted message clears it at once (one write, then none until the next failure).
    fault_outstanding: AtomicBool,
    /// When this process last recorded that the relay took a message (Unix seconds): the
    /// record is refreshed at most once a [`SENT_RECORD_EVERY`].
    sent_recorded_at: AtomicI64,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("transport", &self.transport)
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// Validates the settings, parses the whole catalog and builds the transport. Call it
    /// at start-up: a broken template stops the process here, with its file and line.
    ///
    /// # Errors
    ///
    /// A message naming the setting or the template file (and line) at fault.
    pub fn new(pool: PgPool, config: MailConfig) -> std::result::Result<Mailer, String> {
        config.validate().map_err(|err| err.to_string())?;
        // A folder someone named and that is not there is a mistake to say at start-up;
        // without one (the default folder absent) only the built-in templates exist.
        if !config.template_dir.exists()
            && config.template_dir != Path::new(crate::config::TEMPLATE_DIR_DEFAULT)
        {
            return Err(format!(
                "{} {} does not exist: create it, or point {} at your templates",
                docket_settings::TEMPLATE_DIR,
                config.template_dir.display(),
                docket_settings::TEMPLATE_DIR
            ));
        }
        let catalog = Catalog::load(&config.template_dir)
            .map_err(|err| format!("template catalog: {err}"))?;
        let transport = Transport::from_config(&config).map_err(|err| err.to_string())?;
        let from = config.sender().map_err(|err| err.to_string())?;
        let limiter = config.rate.map(|rate| RateLimit::new(RELAY_BUCKET, rate));
        let signer = config.signer();
        Ok(Mailer {
            pool,
            config,
            catalog,
            transport,
            from,
            limiter,
            signer,
            // A fault another process (or an earlier run) recorded is cleared by this
            // process's first message that goes through.
            fault_outstanding: AtomicBool::new(true),
            sent_recorded_at: AtomicI64::new(0),
        })
    }

    /// The parsed catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The sender.
    pub fn from(&self) -> &Mailbox {
        &self.from
    }

    /// The settings.
    pub fn config(&self) -> &MailConfig {
        &self.config
    }

    /// The signer of unsubscribe links, when a secret is configured.
    pub fn signer(&self) -> Option<&Signer> {
        self.signer.as_ref()
    }

    /// The envelope with the delivery's own sender, `bounce+<token>@<MAIL_BOUNCE_DOMAIN>` ([`docket_settings::MAIL_BOUNCE_DOMAIN`])
    /// (VERP), when a bounce domain is configured: a bounce then names its delivery. The
    /// visible From is unchanged.
    fn verp(
        &self,
        delivery: &Delivery,
        envelope: lettre::address::Envelope,
    ) -> Result<lettre::address::Envelope> {
        let (Some(domain), Some(signer)) = (&self.config.bounce_domain, &self.signer) else {
            return Ok(envelope);
        };
        let sender = crate::bounce::envelope_sender(signer, domain, delivery.id)?;
        lettre::address::Envelope::new(Some(sender), envelope.to().to_vec())
            .map_err(|err| MailError::Invalid(format!("the envelope: {err}")))
    }

    /// A campaign email's `List-Unsubscribe`, when links are configured
    /// ([`docket_settings::PUBLIC_URL`] and the token secret; always in SMTP mode).
    fn list_unsubscribe(&self, delivery: &Delivery) -> Option<ListUnsubscribe> {
        let (signer, base) = (self.signer.as_ref()?, self.config.public_url.as_deref()?);
        let token = signer.sign(Purpose::Unsubscribe, delivery.id);
        Some(ListUnsubscribe {
            url: unsubscribe::url(base, &token),
            mailto: self
                .config
                .unsubscribe_mailto
                .as_ref()
                .map(|to| format!("mailto:{to}?subject=unsubscribe%20{token}")),
        })
    }

    /// One delivery's turn: [`prepare`](Self::prepare) it (suppression, expiry, render,
    /// build), then stub mode and the rate limit, then the exchange in a task of its own
    /// ([`exchange`](Self::exchange): connect, reserve, send, settle the reply). `borrow`
    /// lets it go ahead on the rate limit (recovery).
    pub(crate) async fn send_one(
        self: &Arc<Self>,
        delivery: &Delivery,
        vars: &serde_json::Value,
        ctx: &JobContext,
        source: Source,
        borrow: f64,
    ) -> Result<Step> {
        if delivery.status == Status::Sending {
            return self.in_flight(delivery, source).await;
        }
        let (envelope, message) = match self.prepare(delivery, vars, ctx, source).await? {
            Prepared::Ready { envelope, message } => (envelope, message),
            Prepared::Decided(step) => return Ok(step),
        };
        if self.transport.is_stub() {
            return self
                .finish(
                    delivery,
                    source,
                    Status::Suppressed,
                    Detail::suppressed("stub"),
                )
                .await;
        }
        if let Some(wait) = self.take_rate_token(source, borrow, ctx).await? {
            return Ok(Step::Hold(wait));
        }
        let outgoing = Outgoing {
            delivery: delivery.clone(),
            source,
            envelope,
            message,
            expires_at: ctx.expires_at(),
            job_id: ctx.id().0,
        };
        let span = self.smtp_span(&outgoing);
        // A task of its own: a stopped run drops its handler, never an exchange under way.
        let mailer = Arc::clone(self);
        let exchange = async move { mailer.exchange(outgoing).await };
        match tokio::spawn(tracing::Instrument::instrument(exchange, span)).await {
            Ok(step) => step,
            Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
            Err(err) => Err(MailError::Invalid(format!(
                "the SMTP exchange stopped: {err}"
            ))),
        }
    }

    /// Everything decided before the relay is asked: the suppression list, the job's
    /// expiry, the template, the message. Each check that decides the delivery's fate
    /// records it at once.
    async fn prepare(
        &self,
        delivery: &Delivery,
        vars: &serde_json::Value,
        ctx: &JobContext,
        source: Source,
    ) -> Result<Prepared> {
        let campaign = source == Source::Campaign;
        if db::suppression_contains(
            docket_queue::pooled(&self.pool),
            &delivery.recipient,
            campaign,
        )
        .await?
        {
            let step = self
                .finish(
                    delivery,
                    source,
                    Status::Suppressed,
                    Detail::suppressed("list"),
                )
                .await?;
            return Ok(Prepared::Decided(step));
        }
        if expired(ctx.expires_at(), Duration::ZERO) {
            let step = self
                .finish(
                    delivery,
                    source,
                    Status::Expired,
                    Detail::error("expired before it could be sent"),
                )
                .await?;
            return Ok(Prepared::Decided(step));
        }
        // Campaign emails carry the unsubscribe headers, and their templates may show the
        // link as `unsubscribe_url`; transactional ones (recovery, admin) carry neither.
        let list = (source == Source::Campaign)
            .then(|| self.list_unsubscribe(delivery))
            .flatten();
        let vars = match (source, vars) {
            (Source::Campaign, serde_json::Value::Object(map)) => {
                let mut map = map.clone();
                let link = list
                    .as_ref()
                    .map_or(unsubscribe::URL_PLACEHOLDER, |l| &l.url);
                map.insert(unsubscribe::URL_VAR.to_owned(), link.into());
                std::borrow::Cow::Owned(serde_json::Value::Object(map))
            }
            _ => std::borrow::Cow::Borrowed(vars),
        };
        let rendered =
            match self
                .catalog
                .render(&delivery.template, delivery.locale.as_deref(), &vars)
            {
                Ok(rendered) => rendered,
                Err(err) => {
                    let error = format!("template: {err}");
                    let step = self
                        .finish(delivery, source, Status::DeadLetter, Detail::error(&error))
                        .await?;
                    return Ok(Prepared::Decided(step));
                }
            };
        // An address that does not parse, or parts lettre refuses: never sendable.
        let built =
            crate::message::parse_mailbox(&delivery.recipient, delivery.recipient_name.as_deref())
                .and_then(|to| {
                    crate::message::build(&self.from, to, &rendered, &delivery.message_id, list)
                });
        match built {
            Ok((envelope, message)) => Ok(Prepared::Ready {
                envelope: self.verp(delivery, envelope)?,
                message,
            }),
            Err(err) => {
                let error = err.to_string();
                let step = self
                    .finish(delivery, source, Status::Failed, Detail::error(&error))
                    .await?;
                Ok(Prepared::Decided(step))
            }
        }
    }

    /// Send, then settle the reply: the exchange and its record, never cut short by the
    /// job's run (only by the job's expiry and the SMTP timeout).
    async fn exchange(&self, out: Outgoing) -> Result<Step> {
        match self.send(&out).await? {
            Sent::Decided(step) => Ok(step),
            Sent::Replied {
                attempt,
                reply,
                elapsed,
            } => self.settle(&out, attempt, reply, elapsed).await,
        }
    }

    /// The SMTP exchange's span (a child of the attempt's): the relay, and once it has
    /// answered, its reply code and the outcome; the recipients only when
    /// [`MailConfig::trace_recipients`] says so.
    fn smtp_span(&self, out: &Outgoing) -> tracing::Span {
        let (host, port) = self.transport.relay_address().unwrap_or(("", 0));
        let span = tracing::info_span!(
            target: docket_queue::trace::TARGET,
            "docket.smtp",
            otel.name = "smtp send",
            otel.kind = "client",
            server.address = %host,
            server.port = i64::from(port),
            network.protocol.name = "smtp",
            docket.mail.source = out.source.as_str(),
            docket.mail.delivery_id = %out.delivery.id,
            docket.smtp.reply_code = tracing::field::Empty,
            docket.smtp.outcome = tracing::field::Empty,
            docket.smtp.recipients = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
        );
        if self.config.trace_recipients && !span.is_disabled() {
            let recipients = out
                .envelope
                .to()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",");
            span.record("docket.smtp.recipients", recipients.as_str());
        }
        span
    }

    /// Connect, reserve, send: the relay's reply, or the delivery's fate when the job
    /// expired first or the delivery could not be reserved.
    async fn send(&self, out: &Outgoing) -> Result<Sent> {
        let delivery = &out.delivery;
        // Recovery emails never wait for a connection behind a campaign.
        let urgent = out.source == Source::Recovery;
        // Nothing of the message is sent while connecting: a job with an expiry that
        // passes meanwhile sends nothing.
        let connect = self.transport.connect(urgent);
        let connection = match deadline_of(out.expires_at) {
            Some(left) => match tokio::time::timeout(left, connect).await {
                Ok(connection) => connection,
                Err(_) => {
                    let step = self
                        .finish(
                            delivery,
                            out.source,
                            Status::Expired,
                            Detail::error("expired before it could be sent"),
                        )
                        .await?;
                    return Ok(Sent::Decided(step));
                }
            },
            None => connect.await,
        };
        let bound = self.config.timeout + RECORD_MARGIN;
        let Some(attempt) =
            db::delivery_reserve(&self.pool, delivery.id, out.job_id, bound).await?
        else {
            // Final already (another job with the same key got there first), or another
            // exchange of it is under way: look again.
            return Ok(Sent::Decided(Step::Wait(IN_FLIGHT_RECHECK)));
        };
        let started = Instant::now();
        // A job with an expiry never hands its message over past it: the commands before
        // the message are cut off at the deadline. Once the message is on its way, the
        // exchange runs to its end, so that the record says what the relay did.
        let reply = match connection {
            Err(failure) => Err(failure),
            Ok(connection) => {
                let sent = connection
                    .send(&out.envelope, &out.message, deadline_of(out.expires_at))
                    .await;
                if matches!(sent, Err(Failure::Timeout)) && expired(out.expires_at, Duration::ZERO)
                {
                    let step = self
                        .finish(
                            delivery,
                            out.source,
                            Status::Expired,
                            Detail::error("expired before the relay took the message"),
                        )
                        .await?;
                    return Ok(Sent::Decided(step));
                }
                sent
            }
        };
        let span = tracing::Span::current();
        if !span.is_disabled() {
            match &reply {
                Ok(accepted) => {
                    span.record("docket.smtp.reply_code", i64::from(accepted.code));
                    span.record("docket.smtp.outcome", "accepted");
                }
                Err(failure) => {
                    if let Failure::Reply { code, .. } = failure {
                        span.record("docket.smtp.reply_code", i64::from(*code));
                    }
                    span.record("docket.smtp.outcome", "refused");
                    span.record("otel.status_description", failure.to_string().as_str());
                }
            }
        }
        Ok(Sent::Replied {
            attempt,
            reply,
            elapsed: started.elapsed().as_secs_f64(),
        })
    }

    /// Settles the relay's reply to attempt `attempt`: sent, or a failure by its class.
    async fn settle(
        &self,
        out: &Outgoing,
        attempt: i32,
        reply: std::result::Result<Accepted, Failure>,
        elapsed: f64,
    ) -> Result<Step> {
        match reply {
            Ok(accepted) => self.settle_sent(out, &accepted, elapsed).await,
            Err(failure) => self.settle_failure(out, attempt, &failure, elapsed).await,
        }
    }

    /// The relay accepted the message: sent, and a recorded configuration fault is over.
    async fn settle_sent(&self, out: &Outgoing, accepted: &Accepted, elapsed: f64) -> Result<Step> {
        metrics::histogram!(metric::MAIL_SEND_DURATION, "class" => "sent").record(elapsed);
        let code = i32::from(accepted.code);
        let step = self
            .finish(
                &out.delivery,
                out.source,
                Status::Sent,
                Detail {
                    smtp_code: Some(code),
                    smtp_reply: Some(&accepted.reply),
                    ..Detail::default()
                },
            )
            .await?;
        self.record_sent().await;
        Ok(step)
    }

    /// A failure, by its class: refused for good (and maybe suppressed); the recipient's
    /// ladder; a throttle or a configuration fault, which holds everyone and spends no
    /// attempt.
    async fn settle_failure(
        &self,
        out: &Outgoing,
        attempt: i32,
        failure: &Failure,
        elapsed: f64,
    ) -> Result<Step> {
        let (delivery, source) = (&out.delivery, out.source);
        let events = events_of(source);
        let ids = Ids::of(delivery);
        let class = classify(failure);
        metrics::histogram!(metric::MAIL_SEND_DURATION, "class" => class_label(class))
            .record(elapsed);
        let error = failure.to_string();
        let reply = match failure {
            Failure::Reply { text, .. } => Some(text.as_str()),
            _ => None,
        };
        if matches!(failure, Failure::Timeout | Failure::Connection(_)) {
            self.record_unreachable(&error).await?;
        }
        let code = failure.code().map(i32::from);
        let detail = Detail {
            smtp_code: code,
            smtp_reply: reply,
            last_error: Some(&error),
            ..Detail::default()
        };
        match class {
            Class::Permanent { suppress } => {
                if suppress {
                    let reason = format!("smtp: {error}");
                    db::suppression_insert(
                        docket_queue::pooled(&self.pool),
                        &delivery.recipient,
                        &reason,
                        None,
                    )
                    .await?;
                }
                self.finish(delivery, source, Status::Failed, detail).await
            }
            Class::Temporary => self.settle_temporary(out, attempt, detail).await,
            // Some relays answer 421 per destination: one that always defers ends on its
            // ladder rather than holding its batch for ever.
            Class::Throttled if delivery.throttles >= THROTTLES_FREE => {
                self.settle_temporary(out, attempt, detail).await
            }
            Class::Throttled => {
                // About the relay, not the recipient: everyone waits a little, nobody's
                // attempt is spent.
                let hold = self.config.retry_ladder[0].min(THROTTLE_HOLD_MAX);
                let record = Record {
                    throttled: true,
                    ..detail.record(Status::Queued, true)
                };
                self.record(delivery, &record).await?;
                if let Some(limiter) = &self.limiter {
                    limiter.hold(docket_queue::pooled(&self.pool), hold).await?;
                }
                tracing::warn!(event = events.throttled, delivery.id = %ids.delivery, campaign.id = ids.campaign, hold_s = hold.as_secs(), error = %error, "the relay asks to slow down; holding without spending the attempt");
                Ok(Step::Hold(hold))
            }
            Class::Unknown => {
                tracing::error!(event = events.unknown, delivery.id = %ids.delivery, campaign.id = ids.campaign, attempt, error = %error, "the SMTP exchange broke after the message was handed over; it may have been sent; not sent again unless an operator asks");
                self.finish(delivery, source, Status::Unknown, detail).await
            }
            Class::ConfigFault => {
                let hold = self.config.retry_ladder[0].min(CONFIG_FAULT_HOLD_MAX);
                self.record(delivery, &detail.record(Status::Queued, true))
                    .await?;
                db::status_record_fault(docket_queue::pooled(&self.pool), &error).await?;
                self.fault_outstanding.store(true, Ordering::Relaxed);
                metrics::counter!(metric::MAIL_CONFIG_FAULTS).increment(1);
                tracing::error!(event = event::MAIL_CONFIG_FAULT, delivery.id = %ids.delivery, error = %error, "the relay refused our settings (authentication or TLS); fix the configuration; recipients' attempts are not spent");
                Ok(Step::Hold(hold))
            }
        }
    }

    /// A temporary failure of attempt `attempt`: the ladder's next step, or dead-lettered
    /// when the ladder is spent, or expired when the step would pass the job's expiry.
    async fn settle_temporary(
        &self,
        out: &Outgoing,
        attempt: i32,
        detail: Detail<'_>,
    ) -> Result<Step> {
        let (delivery, source) = (&out.delivery, out.source);
        let ladder = &self.config.retry_ladder;
        let step = usize::try_from(attempt - 1).unwrap_or(0);
        let Some(delay) = ladder.get(step).copied() else {
            return self
                .finish(delivery, source, Status::DeadLetter, detail)
                .await;
        };
        if expired(out.expires_at, delay) {
            return self.finish(delivery, source, Status::Expired, detail).await;
        }
        let retry_at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
        self.record(
            delivery,
            &Record {
                retry_at: Some(retry_at),
                ..detail.record(Status::Queued, false)
            },
        )
        .await?;
        let (events, ids) = (events_of(source), Ids::of(delivery));
        let error = detail.last_error.unwrap_or("");
        tracing::warn!(event = events.retrying, delivery.id = %ids.delivery, campaign.id = ids.campaign, attempt, retry_in_s = delay.as_secs(), error = %error, "temporary failure; retrying on the ladder");
        Ok(Step::Retry(delay))
    }

    /// A delivery found `sending`: within its bound an exchange may still settle it (wait
    /// for that); past it, the exchange was cut off with no outcome recorded, and the
    /// delivery is `unknown`, never sent again unasked.
    async fn in_flight(&self, delivery: &Delivery, source: Source) -> Result<Step> {
        if let Some(wait) = delivery
            .retry_at
            .and_then(|at| (at - Utc::now()).to_std().ok())
        {
            return Ok(Step::Wait(wait.min(IN_FLIGHT_RECHECK)));
        }
        if !db::delivery_mark_unknown(docket_queue::pooled(&self.pool), delivery.id).await? {
            // Its exchange settled it meanwhile (or is still within its bound).
            return Ok(Step::Wait(Duration::from_millis(100)));
        }
        let events = events_of(source);
        let ids = Ids::of(delivery);
        metrics::counter!(metric::MAIL_DELIVERIES, "source" => source.as_str(), "status" => Status::Unknown.as_str()).increment(1);
        tracing::error!(event = events.unknown, delivery.id = %ids.delivery, campaign.id = ids.campaign, attempts = delivery.attempts, "the SMTP exchange was cut off with no outcome recorded; the message may have been sent; not sent again unless an operator asks");
        Ok(Step::Final(Status::Unknown))
    }

    /// Takes a token from the relay-wide bucket; sleeps for a short wait, returns a long
    /// one (the job snoozes), `None` once a token is taken.
    async fn take_rate_token(
        &self,
        source: Source,
        borrow: f64,
        ctx: &JobContext,
    ) -> Result<Option<Duration>> {
        let Some(limiter) = &self.limiter else {
            return Ok(None);
        };
        loop {
            match limiter
                .take(docket_queue::pooled(&self.pool), borrow)
                .await?
            {
                Take::Taken(_) => return Ok(None),
                Take::Wait(wait) => {
                    metrics::counter!(metric::MAIL_RATE_LIMIT_WAITS, "source" => source.as_str())
                        .increment(1);
                    if wait > RATE_WAIT_IN_PLACE || ctx.is_cancelled() {
                        return Ok(Some(wait));
                    }
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = ctx.cancelled() => return Ok(Some(wait)),
                    }
                }
            }
        }
    }

    /// Records a final status, counts and logs it.
    async fn finish(
        &self,
        delivery: &Delivery,
        source: Source,
        status: Status,
        detail: Detail<'_>,
    ) -> Result<Step> {
        self.record(delivery, &detail.record(status, false)).await?;
        let events = events_of(source);
        let ids = Ids::of(delivery);
        metrics::counter!(metric::MAIL_DELIVERIES, "source" => source.as_str(), "status" => status.as_str()).increment(1);
        let error = detail.last_error.unwrap_or("");
        match status {
            Status::Sent => {
                tracing::info!(event = events.sent, delivery.id = %ids.delivery, campaign.id = ids.campaign, smtp_code = detail.smtp_code, "sent")
            }
            Status::Suppressed => {
                tracing::info!(event = events.suppressed, delivery.id = %ids.delivery, campaign.id = ids.campaign, reason = detail.suppressed_reason, "not sent: suppressed")
            }
            Status::Failed => {
                tracing::warn!(event = events.failed, delivery.id = %ids.delivery, campaign.id = ids.campaign, smtp_code = detail.smtp_code, error, "refused permanently")
            }
            Status::Expired => {
                tracing::warn!(event = events.expired, delivery.id = %ids.delivery, campaign.id = ids.campaign, error, "expired: never sent late")
            }
            Status::DeadLetter => {
                tracing::error!(event = events.dead_letter, delivery.id = %ids.delivery, campaign.id = ids.campaign, error, "dead-lettered")
            }
            Status::Queued
            | Status::Sending
            | Status::Unknown
            | Status::Cancelled
            | Status::Bounced => {}
        }
        Ok(Step::Final(status))
    }

    async fn record(&self, delivery: &Delivery, record: &Record<'_>) -> Result<()> {
        db::delivery_record(docket_queue::pooled(&self.pool), delivery.id, record).await?;
        Ok(())
    }

    /// The relay accepted a message: faults and failures to reach it are over. A process
    /// that saw one (or has just started) clears the record at once; every process
    /// refreshes it at most once a [`SENT_RECORD_EVERY`], which also clears what another
    /// process recorded and keeps "took a message at" fresh.
    async fn record_sent(&self) {
        let now = Utc::now().timestamp();
        let last = self.sent_recorded_at.load(Ordering::Relaxed);
        let stale = now - last >= i64::try_from(SENT_RECORD_EVERY.as_secs()).unwrap_or(60);
        if !(self.fault_outstanding.swap(false, Ordering::Relaxed) || stale) {
            return;
        }
        self.sent_recorded_at.store(now, Ordering::Relaxed);
        if let Err(err) = db::status_record_sent(docket_queue::pooled(&self.pool)).await {
            self.fault_outstanding.store(true, Ordering::Relaxed);
            tracing::warn!(event = event::MAIL_CONFIG_FAULT, error = %err, "could not record that the relay took a message");
        }
    }

    /// The relay could not be reached (refused, unresolved, no answer in time): counted
    /// for the health check until a message goes through.
    async fn record_unreachable(&self, error: &str) -> Result<()> {
        let relay = self.transport.relay().unwrap_or_default();
        db::status_record_unreachable(docket_queue::pooled(&self.pool), &relay, error).await?;
        self.fault_outstanding.store(true, Ordering::Relaxed);
        Ok(())
    }
}

/// Ids for log lines.
struct Ids {
    delivery: uuid::Uuid,
    campaign: Option<String>,
}

impl Ids {
    fn of(delivery: &Delivery) -> Ids {
        Ids {
            delivery: delivery.id,
            campaign: delivery.campaign_id.map(|id| id.to_string()),
        }
    }
}

/// What an outcome records besides the status.
#[derive(Default)]
struct Detail<'a> {
    smtp_code: Option<i32>,
    smtp_reply: Option<&'a str>,
    last_error: Option<&'a str>,
    suppressed_reason: Option<&'a str>,
}

impl<'a> Detail<'a> {
    fn suppressed(reason: &'a str) -> Self {
        Detail {
            suppressed_reason: Some(reason),
            ..Detail::default()
        }
    }

    fn error(error: &'a str) -> Self {
        Detail {
            last_error: Some(error),
            ..Detail::default()
        }
    }

    fn record(&self, status: Status, give_back_attempt: bool) -> Record<'a> {
        Record {
            status,
            smtp_code: self.smtp_code,
            smtp_reply: self.smtp_reply,
            last_error: self.last_error,
            suppressed_reason: self.suppressed_reason,
            retry_at: None,
            give_back_attempt,
            throttled: false,
        }
    }
}

pub(crate) fn events_of(source: Source) -> &'static MailEvents {
    match source {
        Source::Recovery => &event::RECOVERY_EMAIL,
        Source::Admin => &event::ADMIN_EMAIL,
        Source::Campaign => &event::CAMPAIGN_EMAIL,
    }
}

fn class_label(class: Class) -> &'static str {
    match class {
        Class::Temporary => "temporary",
        Class::Throttled => "throttled",
        Class::Permanent { .. } => "permanent",
        Class::ConfigFault => "config_fault",
        Class::Unknown => "unknown",
    }
}

/// Whether `expires_at` comes within `margin` from now.
fn expired(expires_at: Option<DateTime<Utc>>, margin: Duration) -> bool {
    expires_at
        .is_some_and(|at| Utc::now() + chrono::Duration::from_std(margin).unwrap_or_default() >= at)
}

/// Time left until `expires_at`.
fn deadline_of(expires_at: Option<DateTime<Utc>>) -> Option<Duration> {
    expires_at.map(|at| (at - Utc::now()).to_std().unwrap_or(Duration::ZERO))
}
