//! Campaigns: one template to many recipients. Creating one records every recipient as a
//! `queued` delivery and fans them out as a batch of `mail.campaign_batch` jobs, all in one
//! transaction; sending starts at once. Each recipient is one delivery with the key
//! `campaign_id:address`, so however often a batch job is retried or rescued, a recipient
//! recorded as sent is never sent again.
//!
//! A campaign's counts are read from its deliveries, and its state is derived from them:
//! `finished` once no recipient is pending (nothing stored can disagree).

use std::collections::HashSet;

use docket_queue::batch::{Callback, NewBatch};
use docket_queue::{JobId, NewJob};
use serde::{Deserialize, Serialize};
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use crate::config::CAMPAIGN_BATCH_SIZE_DEFAULT;
use crate::db;
use crate::error::{MailError, Result};
use crate::kinds::{CampaignBatch, CampaignFinished, MAIL_QUEUE};

pub use crate::model::CampaignStatus;

/// Attempts a campaign batch job has: far more than any recipient's ladder needs, since a
/// recipient's own attempts (not the job's) decide when it is given up; a job's attempts
/// are spent only by retries and rescues.
const CAMPAIGN_JOB_ATTEMPTS: i32 = 1000;

/// The most recipients one campaign takes.
pub const RECIPIENTS_LIMIT: usize = 1_000_000;

/// One recipient.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recipient {
    /// The address (or `Name <address>`).
    pub to: String,
    /// A display name.
    #[serde(default)]
    pub name: Option<String>,
    /// The locale of the template to use.
    #[serde(default)]
    pub locale: Option<String>,
    /// Template variables of this recipient.
    #[serde(default = "empty_object")]
    pub vars: serde_json::Value,
}

fn empty_object() -> serde_json::Value {
    serde_json::json!({})
}

/// A line of a recipient file that was skipped, and why.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BadRow {
    /// Its line number (1-based).
    pub line: u64,
    /// What is wrong with it.
    pub reason: String,
}

/// A recipient file read: the good rows, and the bad ones with their line numbers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recipients {
    /// The rows to send to, in file order, each address once.
    pub rows: Vec<Recipient>,
    /// The rows skipped.
    pub bad: Vec<BadRow>,
}

/// Reads recipients from CSV (a header `email[,name][,locale][,any var…]`) or JSON lines
/// (`{"to", "vars", "locale", "name"}`), told apart by the first character. Bad rows (no
/// address, not an address, a repeated address, a line that does not parse) are skipped
/// and reported with their line numbers; the rest are kept.
///
/// # Errors
///
/// [`MailError::Invalid`] when the file as a whole cannot be read (no `email` column) or
/// holds no good row.
pub fn parse_recipients(text: &str) -> Result<Recipients> {
    let mut parsed = if text.trim_start().starts_with('{') {
        parse_json_lines(text)
    } else {
        parse_csv(text)?
    };
    let mut seen = HashSet::new();
    let mut rows = Vec::with_capacity(parsed.rows.len());
    for (line, row) in std::mem::take(&mut parsed.rows) {
        match crate::message::parse_mailbox(&row.to, row.name.as_deref()) {
            Err(err) => parsed.bad.push(BadRow {
                line,
                reason: err.to_string(),
            }),
            Ok(mailbox) if !seen.insert(mailbox.email.to_string().to_ascii_lowercase()) => {
                parsed.bad.push(BadRow {
                    line,
                    reason: format!("{} is listed more than once", mailbox.email),
                });
            }
            Ok(mailbox) => {
                let recipient = Recipient {
                    to: mailbox.email.to_string(),
                    name: mailbox.name,
                    ..row
                };
                match check_recipient(&recipient) {
                    Ok(()) => rows.push(recipient),
                    Err(err) => parsed.bad.push(BadRow {
                        line,
                        reason: err.to_string(),
                    }),
                }
            }
        }
    }
    parsed.bad.sort_by_key(|bad| bad.line);
    if rows.is_empty() {
        return Err(MailError::Invalid(match parsed.bad.first() {
            Some(bad) => format!(
                "no recipient can be sent to ({} bad rows; line {}: {})",
                parsed.bad.len(),
                bad.line,
                bad.reason
            ),
            None => "the recipient list is empty".to_owned(),
        }));
    }
    if rows.len() > RECIPIENTS_LIMIT {
        return Err(MailError::Invalid(format!(
            "{} recipients: one campaign takes at most {RECIPIENTS_LIMIT}",
            rows.len()
        )));
    }
    Ok(Recipients {
        rows,
        bad: parsed.bad,
    })
}

/// Rows with their line numbers, before the addresses are checked.
struct Parsed {
    rows: Vec<(u64, Recipient)>,
    bad: Vec<BadRow>,
}

fn parse_csv(text: &str) -> Result<Parsed> {
    // Flexible: a row of the wrong length is read whole, so that it is named with what
    // it holds (and a quote left open in it is found) rather than as a parser error.
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .map_err(|err| MailError::Invalid(format!("recipient CSV header: {err}")))?
        .iter()
        .map(str::to_ascii_lowercase)
        .collect();
    let column = |name: &str| headers.iter().position(|h| h == name);
    let email = column("email").ok_or_else(|| {
        MailError::Invalid(
            "the recipient CSV needs a header with an `email` column (email[,name][,locale][,vars…])"
                .to_owned(),
        )
    })?;
    let (name, locale) = (column("name"), column("locale"));
    let lines: Vec<&str> = text.lines().collect();
    let mut parsed = Parsed {
        rows: Vec::new(),
        bad: Vec::new(),
    };
    for record in reader.records() {
        let record = match record {
            Ok(record) => record,
            Err(err) => {
                let line = err.position().map_or(0, csv::Position::line);
                parsed.bad.push(BadRow {
                    line,
                    reason: err.to_string(),
                });
                continue;
            }
        };
        let line = record.position().map_or(0, csv::Position::line);
        // A quoted field with line breaks spans lines; one of them that reads as a row
        // of its own (an address in the email column) was swallowed by a quote left open.
        let spanned: usize = record.iter().map(|field| field.matches('\n').count()).sum();
        let swallowed: Vec<u64> = (1..=spanned as u64)
            .map(|offset| line + offset)
            .filter(|&inner| {
                lines
                    .get(usize::try_from(inner).unwrap_or(usize::MAX) - 1)
                    .is_some_and(|text| reads_as_a_row(text, email))
            })
            .collect();
        if !swallowed.is_empty() {
            let listed = swallowed
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            parsed.bad.push(BadRow {
                line,
                reason: format!(
                    "a quote opened on this line is not closed on it: the row runs to line {} \
                     and swallows the row{} on line {listed}",
                    line + spanned as u64,
                    if swallowed.len() == 1 { "" } else { "s" }
                ),
            });
            for inner in swallowed {
                parsed.bad.push(BadRow {
                    line: inner,
                    reason: format!("swallowed by the quote left open on line {line}"),
                });
            }
            continue;
        }
        if record.len() != headers.len() {
            parsed.bad.push(BadRow {
                line,
                reason: format!(
                    "{} field{} where the header has {} ({})",
                    record.len(),
                    if record.len() == 1 { "" } else { "s" },
                    headers.len(),
                    headers.join(",")
                ),
            });
            continue;
        }
        let field = |i: Option<usize>| {
            i.and_then(|i| record.get(i))
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let mut vars = serde_json::Map::new();
        for (i, header) in headers.iter().enumerate() {
            if i != email && Some(i) != locale {
                vars.insert(header.clone(), record.get(i).unwrap_or("").into());
            }
        }
        parsed.rows.push((
            line,
            Recipient {
                to: field(Some(email)).unwrap_or_default(),
                name: field(name),
                locale: field(locale),
                vars: vars.into(),
            },
        ));
    }
    Ok(parsed)
}

/// Whether one line of a CSV file, read alone, holds an address in the email column.
fn reads_as_a_row(line: &str, email: usize) -> bool {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(line.as_bytes());
    let Some(Ok(record)) = reader.records().next() else {
        return false;
    };
    record.get(email).is_some_and(|address| {
        address.contains('@') && crate::message::parse_mailbox(address, None).is_ok()
    })
}

fn parse_json_lines(text: &str) -> Parsed {
    let mut parsed = Parsed {
        rows: Vec::new(),
        bad: Vec::new(),
    };
    for (index, line) in text.lines().enumerate() {
        let number = index as u64 + 1;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Recipient>(line) {
            Ok(row) if !row.vars.is_object() => parsed.bad.push(BadRow {
                line: number,
                reason: "`vars` must be an object".to_owned(),
            }),
            Ok(mut row) => {
                if let (Some(name), Some(vars)) = (&row.name, row.vars.as_object_mut()) {
                    vars.entry("name").or_insert_with(|| name.clone().into());
                }
                parsed.rows.push((number, row));
            }
            Err(err) => parsed.bad.push(BadRow {
                line: number,
                reason: err.to_string(),
            }),
        }
    }
    parsed
}

/// A campaign to create.
#[derive(Clone, Debug)]
pub struct NewCampaign {
    /// Its name.
    pub name: String,
    /// The template every recipient gets.
    pub template: String,
    /// Its recipients (each address once).
    pub recipients: Vec<Recipient>,
    /// Recipients per `mail.campaign_batch` job. Default [`CAMPAIGN_BATCH_SIZE_DEFAULT`].
    pub batch_size: usize,
}

impl NewCampaign {
    /// A campaign with the default batch size.
    pub fn new(name: &str, template: &str, recipients: Vec<Recipient>) -> NewCampaign {
        NewCampaign {
            name: name.to_owned(),
            template: template.to_owned(),
            recipients,
            batch_size: CAMPAIGN_BATCH_SIZE_DEFAULT,
        }
    }

    /// Checks the campaign before anything is written: recipients (at least one, each
    /// fitting its columns), a batch size of 1 to 10000, a name of 1 to 200 characters
    /// without NUL, and a template the catalog has. [`create`] calls it first.
    ///
    /// # Errors
    ///
    /// [`MailError::Invalid`], naming the first rule broken.
    pub fn validate(&self, catalog: &crate::template::Catalog) -> Result<()> {
        if self.recipients.is_empty() {
            return Err(MailError::Invalid("a campaign needs recipients".to_owned()));
        }
        if !(1..=10_000).contains(&self.batch_size) {
            return Err(MailError::Invalid(format!(
                "batch size must be between 1 and 10000, not {}",
                self.batch_size
            )));
        }
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > 200 || name.contains('\0') {
            return Err(MailError::Invalid(
                "a campaign's name is 1 to 200 characters, without NUL".to_owned(),
            ));
        }
        if !catalog.contains(&self.template) {
            return Err(MailError::Invalid(
                catalog.unknown(&self.template).to_string(),
            ));
        }
        for recipient in &self.recipients {
            check_recipient(recipient)?;
        }
        self.check_variables(catalog)
    }

    /// Every variable the template uses (in any locale) is given by every recipient; else
    /// [`MailError::TemplateVariables`] lists every one missing, with how many recipients
    /// lack them and the first.
    fn check_variables(&self, catalog: &crate::template::Catalog) -> Result<()> {
        let needed = catalog.variables(&self.template).unwrap_or_default();
        let mut missing = std::collections::BTreeSet::new();
        let mut lacking = 0usize;
        let mut first = None;
        for recipient in &self.recipients {
            let absent: Vec<&String> = needed
                .iter()
                .filter(|variable| {
                    recipient.vars.get(variable.as_str()).is_none()
                        && !(variable.as_str() == "name" && recipient.name.is_some())
                        // Docket gives each recipient its own link.
                        && variable.as_str() != crate::unsubscribe::URL_VAR
                })
                .collect();
            if !absent.is_empty() {
                lacking += 1;
                first.get_or_insert(recipient.to.as_str());
                missing.extend(absent);
            }
        }
        let Some(first) = first else {
            return Ok(());
        };
        let missing: Vec<&str> = missing.into_iter().map(String::as_str).collect();
        let who = if lacking == self.recipients.len() {
            "no recipient gives them".to_owned()
        } else {
            format!(
                "{lacking} of {} recipients lack them, the first {first}",
                self.recipients.len()
            )
        };
        Err(MailError::TemplateVariables(format!(
            "template {:?} uses {} {} that the recipients do not give ({who}): a CSV \
             needs a column for each, a JSON line a key in `vars`",
            self.template,
            if missing.len() == 1 {
                "the variable"
            } else {
                "the variables"
            },
            missing.join(", "),
        )))
    }
}

/// A campaign checked ([`NewCampaign::validate`]) and every recipient's message rendered,
/// as it would be sent, with nothing recorded: the first `shown` recipients' addresses and
/// messages.
///
/// # Errors
///
/// [`MailError::Invalid`] for what `validate` refuses, or naming the first recipient whose
/// message does not render, with the reason.
pub fn preview(
    catalog: &crate::template::Catalog,
    campaign: &NewCampaign,
    shown: usize,
) -> Result<Vec<(String, crate::template::Rendered)>> {
    campaign.validate(catalog)?;
    let mut previews = Vec::new();
    for recipient in &campaign.recipients {
        let rendered = catalog
            .render(
                &campaign.template,
                recipient.locale.as_deref(),
                &preview_vars(recipient),
            )
            .map_err(|err| MailError::Invalid(format!("recipient {}: {err}", recipient.to)))?;
        if previews.len() < shown {
            previews.push((recipient.to.clone(), rendered));
        }
    }
    Ok(previews)
}

/// A recipient's variables for a preview: as sent, with a stand-in unsubscribe link (each
/// recipient's own is signed when it is sent).
fn preview_vars(recipient: &Recipient) -> serde_json::Value {
    let mut vars = vars_of(recipient);
    if let Some(map) = vars.as_object_mut() {
        map.entry(crate::unsubscribe::URL_VAR)
            .or_insert_with(|| crate::unsubscribe::URL_PLACEHOLDER.into());
    }
    vars
}

/// A recipient's template variables as it is sent: its own, and its display name as
/// `name` unless it gives one.
fn vars_of(recipient: &Recipient) -> serde_json::Value {
    let mut vars = recipient.vars.clone();
    if let (Some(name), Some(map)) = (&recipient.name, vars.as_object_mut()) {
        map.entry("name").or_insert_with(|| name.clone().into());
    }
    vars
}

/// Creates a campaign and starts sending: its deliveries, its batch of jobs, in one
/// transaction. `from` makes the Message-IDs. Returns its id.
///
/// # Errors
///
/// [`MailError::Invalid`] for an empty list, a bad batch size or name, a template the
/// catalog lacks; [`MailError::Database`]. Nothing is written then.
pub async fn create(
    pool: &PgPool,
    catalog: &crate::template::Catalog,
    from: &lettre::message::Mailbox,
    campaign: &NewCampaign,
) -> Result<Uuid> {
    campaign.validate(catalog)?;
    let name = campaign.name.trim();
    let id = Uuid::now_v7();
    // The batch jobs' ids are made here, so each delivery records the job that sends it.
    let job_ids: Vec<JobId> = (0..campaign.recipients.len().div_ceil(campaign.batch_size))
        .map(|_| JobId::new())
        .collect();
    let mut rows = db::CampaignRows::default();
    for (index, recipient) in campaign.recipients.iter().enumerate() {
        let delivery = Uuid::now_v7();
        rows.job_ids.push(job_ids[index / campaign.batch_size].0);
        let vars = vars_of(recipient);
        rows.ids.push(delivery);
        rows.recipients.push(recipient.to.clone());
        rows.names.push(recipient.name.clone());
        rows.locales.push(recipient.locale.clone());
        rows.vars.push(vars);
        rows.message_ids
            .push(crate::message::message_id(delivery, from));
    }
    let total = i32::try_from(rows.ids.len())
        .map_err(|_| MailError::Invalid("too many recipients".to_owned()))?;
    let mut tx = pool.begin().await?;
    db::campaign_insert(
        docket_queue::pooled_conn(&mut tx),
        &db::CampaignParams {
            id,
            name,
            template: &campaign.template,
            total,
        },
    )
    .await?;
    let inserted = db::delivery_insert_campaign(
        docket_queue::pooled_conn(&mut tx),
        id,
        &campaign.template,
        &rows,
    )
    .await?;
    if inserted.len() != rows.ids.len() {
        return Err(MailError::Invalid(
            "a recipient is listed more than once (addresses are compared without case)".to_owned(),
        ));
    }
    let jobs = inserted
        .chunks(campaign.batch_size)
        .zip(&job_ids)
        .map(|(chunk, job_id)| {
            NewJob::typed(&CampaignBatch {
                campaign_id: id,
                deliveries: chunk.to_vec(),
            })
            .map(|job| NewJob {
                id: Some(*job_id),
                ..job.queue(MAIL_QUEUE).max_attempts(CAMPAIGN_JOB_ATTEMPTS)
            })
        })
        .collect::<docket_queue::Result<Vec<_>>>()?;
    let callback = Callback {
        kind: <CampaignFinished as docket_queue::JobArgs>::KIND.to_owned(),
        payload: serde_json::json!({ "campaign_id": id }),
        queue: MAIL_QUEUE.to_owned(),
    };
    let batch = docket_queue::batch::create(
        &mut *tx,
        &NewBatch {
            jobs,
            callback: Some(callback),
            parent: None,
        },
    )
    .await?;
    db::campaign_set_batch(docket_queue::pooled_conn(&mut tx), id, batch).await?;
    tx.commit().await?;
    tracing::info!(
        event = docket_queue::telemetry::event::CAMPAIGN_CREATED,
        campaign.id = %id, total, batch.id = %batch,
        "campaign created; sending starts now"
    );
    Ok(id)
}

/// A recipient's display name, locale and variables must fit their columns: PostgreSQL's
/// text and jsonb hold no NUL, and a header holds no line break.
fn check_recipient(recipient: &Recipient) -> Result<()> {
    let bad = |what: &str| {
        Err(MailError::Invalid(format!(
            "recipient {}: {what}",
            recipient.to
        )))
    };
    if !recipient.vars.is_object() || recipient.vars.to_string().contains("\\u0000") {
        return bad("vars must be an object and no value may hold NUL");
    }
    if let Some(name) = &recipient.name {
        if name.chars().count() > 200 || name.contains(['\0', '\r', '\n']) {
            return bad("a name is at most 200 characters, on one line, without NUL");
        }
    }
    if let Some(locale) = &recipient.locale {
        let tag = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if locale.len() > 35 || !locale.chars().all(tag) {
            return bad(
                "a locale is a language tag such as pt-BR (at most 35 letters, digits, - or _)",
            );
        }
    }
    Ok(())
}

/// One campaign and its progress.
///
/// # Errors
///
/// [`MailError::CampaignNotFound`]; [`MailError::Database`].
pub async fn show(exec: impl PgExecutor<'_>, id: Uuid) -> Result<CampaignStatus> {
    db::campaign_get(exec, id)
        .await?
        .ok_or(MailError::CampaignNotFound(id))
}

/// The most recent campaigns, newest first.
///
/// # Errors
///
/// [`MailError::Database`] when the database fails.
pub async fn list(exec: impl PgExecutor<'_>, limit: u32) -> Result<Vec<CampaignStatus>> {
    Ok(db::campaign_list(exec, i64::from(limit)).await?)
}

/// Pauses a campaign: its waiting batch jobs are parked (no worker claims or writes them
/// while it stays paused), and a running one stops before its next recipient and is parked
/// as it goes back. A paused campaign costs nothing per second. Returns whether it was
/// sending (`false`: it was paused already).
///
/// # Errors
///
/// [`MailError::CampaignState`] for a finished or cancelled campaign;
/// [`MailError::CampaignNotFound`]; [`MailError::Database`].
pub async fn pause(pool: &PgPool, id: Uuid) -> Result<bool> {
    control(pool, id, Action::Pause).await
}

/// Resumes a paused campaign: its waiting batch jobs are due at once and the workers are
/// woken. Returns whether it was paused (`false`: it was sending already).
///
/// # Errors
///
/// [`MailError::CampaignState`] for a finished or cancelled campaign;
/// [`MailError::CampaignNotFound`]; [`MailError::Database`].
pub async fn resume(pool: &PgPool, id: Uuid) -> Result<bool> {
    control(pool, id, Action::Resume).await
}

/// Cancels a campaign: no further recipient is sent to, and those not sent become
/// `cancelled` (one whose exchange is under way keeps the relay's answer). Its parked batch
/// jobs are due again, so that they end and its batch finishes. Returns whether it was
/// sending or paused (`false`: it was cancelled already).
///
/// # Errors
///
/// [`MailError::CampaignState`] for a finished campaign; [`MailError::CampaignNotFound`];
/// [`MailError::Database`].
pub async fn cancel(pool: &PgPool, id: Uuid) -> Result<bool> {
    control(pool, id, Action::Cancel).await
}

/// An operator's action on a campaign.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Action {
    Pause,
    Resume,
    Cancel,
}

/// Applies an action under the campaign's row lock, so that its state cannot change
/// between the check and the change: an action that means nothing in the campaign's state
/// is refused with the reason, one whose end state holds already changes nothing.
async fn control(pool: &PgPool, id: Uuid, action: Action) -> Result<bool> {
    let mut tx = pool.begin().await?;
    let (paused, cancelled, pending) = db::campaign_lock(docket_queue::pooled_conn(&mut tx), id)
        .await?
        .ok_or(MailError::CampaignNotFound(id))?;
    let verb = match action {
        Action::Pause => "pause",
        Action::Resume => "resume",
        Action::Cancel => "cancel",
    };
    if cancelled && action != Action::Cancel {
        let done = if action == Action::Pause {
            "paused"
        } else {
            "resumed"
        };
        return Err(MailError::CampaignState(format!(
            "campaign {id} is cancelled: it cannot be {done}; create a new campaign to send \
             again"
        )));
    }
    if !cancelled && pending == 0 {
        return Err(MailError::CampaignState(format!(
            "campaign {id} is finished: every recipient is final, nothing is left to {verb}"
        )));
    }
    let (set_paused, set_cancelled) = match action {
        Action::Pause if paused => return Ok(false),
        Action::Resume if !paused => return Ok(false),
        Action::Cancel if cancelled => return Ok(false),
        Action::Pause => (Some(true), None),
        Action::Resume => (Some(false), None),
        Action::Cancel => (None, Some(true)),
    };
    db::campaign_set_controls(
        docket_queue::pooled_conn(&mut tx),
        id,
        set_paused,
        set_cancelled,
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// The operator's controls, as a running batch job reads them before each recipient.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Controls {
    pub(crate) paused: bool,
    pub(crate) cancelled: bool,
}

/// A campaign's controls; `None` when it does not exist.
pub(crate) async fn controls(exec: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Controls>> {
    let row = db::campaign_get_controls(exec, id).await?;
    Ok(row.map(|(paused, cancelled)| Controls { paused, cancelled }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_keep_their_columns_as_vars_and_bad_rows_are_named_by_line() {
        let text =
            "email,name,locale,plan\nann@example.com,Ann,pt-BR,pro\nnot-an-address,Bob,,free\n\
                    ANN@example.com,Ann again,,pro\n\"carl@example.com\",\"Carl, Jr.\",,team\n";
        let parsed = parse_recipients(text).unwrap();
        let to: Vec<&str> = parsed.rows.iter().map(|r| r.to.as_str()).collect();
        assert_eq!(to, ["ann@example.com", "carl@example.com"]);
        assert_eq!(parsed.rows[0].locale.as_deref(), Some("pt-BR"));
        assert_eq!(parsed.rows[0].vars["plan"], "pro");
        assert_eq!(parsed.rows[1].name.as_deref(), Some("Carl, Jr."));
        let lines: Vec<u64> = parsed.bad.iter().map(|b| b.line).collect();
        assert_eq!(lines, [3, 4], "{:?}", parsed.bad);
    }

    #[test]
    fn a_short_row_and_a_row_swallowed_by_an_open_quote_are_both_named() {
        let text = "email,name,plan\nann@example.com,Ann,pro\nbob@example.com,Bob\n\
                    carl@example.com,\"Carl,team\ndora@example.com,Dora,pro\"\n\
                    eve@example.com,Eve,free\n";
        let parsed = parse_recipients(text).unwrap();
        let to: Vec<&str> = parsed.rows.iter().map(|r| r.to.as_str()).collect();
        assert_eq!(to, ["ann@example.com", "eve@example.com"]);
        let bad: Vec<(u64, &str)> = parsed
            .bad
            .iter()
            .map(|b| (b.line, b.reason.as_str()))
            .collect();
        assert_eq!(bad.len(), 3, "{bad:?}");
        assert_eq!(bad[0].0, 3);
        assert!(
            bad[0].1.contains("2 fields where the header has 3"),
            "{bad:?}"
        );
        assert_eq!(bad[1].0, 4);
        assert!(bad[1].1.contains("swallows the row on line 5"), "{bad:?}");
        assert_eq!(bad[2].0, 5);
        assert!(bad[2].1.contains("quote left open on line 4"), "{bad:?}");
    }

    #[test]
    fn a_quoted_field_with_a_line_break_that_swallows_no_row_is_kept() {
        let text = "email,address\nann@example.com,\"1 Main St\nSpringfield\"\n";
        let parsed = parse_recipients(text).unwrap();
        assert_eq!(parsed.rows.len(), 1);
        assert!(parsed.bad.is_empty(), "{:?}", parsed.bad);
    }

    #[test]
    fn every_variable_of_every_locale_is_checked_and_all_missing_are_listed() {
        let dir = std::env::temp_dir().join(format!("docket-vars-{}", Uuid::now_v7()));
        for (path, text) in [
            ("news/subject.txt", "News for {{ month }}"),
            (
                "news/body.txt",
                "Hi {{ name }}, {{ headline }}{% for x in range(2) %}{{ x }}{% endfor %}\
                 {{ sign_off | default('Bye') }}{% if ps is defined %}{{ ps }}{% endif %}",
            ),
            ("news/de/subject.txt", "Neues"),
            ("news/de/body.txt", "Hallo {{ name }}, {{ teaser }}"),
        ] {
            let path = dir.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let catalog = crate::template::Catalog::load(&dir).unwrap();
        let parsed = parse_recipients("email,name\nann@example.com,Ann\n").unwrap();
        let err = NewCampaign::new("launch", "news", parsed.rows)
            .validate(&catalog)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("the variables headline, month, teaser that the recipients do not give"),
            "{err}"
        );
        let parsed =
            parse_recipients("email,name,month,headline,teaser\nann@example.com,Ann,May,Hi,Read\n")
                .unwrap();
        assert!(NewCampaign::new("launch", "news", parsed.rows)
            .validate(&catalog)
            .is_ok());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn json_lines_are_read_and_a_line_that_does_not_parse_is_reported() {
        let text =
            "{\"to\": \"Анна <anna@example.com>\", \"vars\": {\"code\": 1}}\n{\"to\": 5}\n\n\
                    {\"to\": \"ben@example.com\", \"locale\": \"ru\"}\n";
        let parsed = parse_recipients(text).unwrap();
        assert_eq!(parsed.rows.len(), 2);
        assert_eq!(parsed.rows[0].name.as_deref(), Some("Анна"));
        assert_eq!(parsed.bad.len(), 1);
        assert_eq!(parsed.bad[0].line, 2);
    }

    #[test]
    fn validate_names_the_first_rule_a_campaign_breaks() {
        let catalog = crate::template::Catalog::built_in();
        let ann = || Recipient {
            to: "ann@example.com".to_owned(),
            name: None,
            locale: None,
            vars: serde_json::json!({}),
        };
        let ann = || Recipient {
            vars: serde_json::json!({"campaign": {}}),
            ..ann()
        };
        let good = NewCampaign::new("launch", "docket/campaign_finished", vec![ann()]);
        assert!(good.validate(&catalog).is_ok());
        let refused = |campaign: NewCampaign| campaign.validate(&catalog).unwrap_err().to_string();
        let none = NewCampaign::new("launch", "docket/campaign_finished", vec![]);
        assert!(refused(none).contains("needs recipients"));
        let batch = NewCampaign {
            batch_size: 0,
            ..good.clone()
        };
        assert!(refused(batch).contains("batch size"));
        let name = NewCampaign::new("  ", "docket/campaign_finished", vec![ann()]);
        assert!(refused(name).contains("name"));
        let template = NewCampaign::new("launch", "nope", vec![ann()]);
        assert!(refused(template).contains("no template named"));
        let locale = NewCampaign::new(
            "launch",
            "docket/campaign_finished",
            vec![Recipient {
                locale: Some("pt BR".to_owned()),
                ..ann()
            }],
        );
        assert!(refused(locale).contains("language tag"));
    }

    #[test]
    fn a_file_without_an_email_column_or_without_good_rows_is_refused() {
        let err = parse_recipients("address\nann@example.com\n").unwrap_err();
        assert!(err.to_string().contains("`email` column"), "{err}");
        let err = parse_recipients("email\nnope\n").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        assert!(parse_recipients("").is_err());
    }
}
