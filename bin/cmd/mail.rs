//! `docket mail templates|render|deliveries|suppress|unsuppress|suppressions|campaign ...`.

use anyhow::Context;
use docket_mail::bounce;
use docket_mail::campaign::{self, CampaignStatus, NewCampaign};
use docket_mail::delivery::{self, DeliveryFilter};
use docket_mail::template::Catalog;

use crate::cli::{CampaignCommand, MailCommand};
use crate::cmd::{connect, print_json};
use crate::config::Config;
use crate::table;

/// `docket mail bounce`'s exit codes, as a mail server's pipe reads them (sysexits.h).
pub(crate) mod exit {
    /// Recorded: bounced, delayed or ignored.
    pub(crate) const DONE: u8 = 0;
    /// EX_NOUSER: the bounce address names no delivery.
    pub(crate) const UNKNOWN_RECIPIENT: u8 = 67;
    /// EX_TEMPFAIL: the database or the settings failed; hand the message over again later.
    pub(crate) const TRY_LATER: u8 = 75;
}

/// `docket mail bounce`: one message on standard input, recorded; the exit code says what
/// came of it (see [`exit`]). Errors are printed, never returned: each maps to a code.
pub(crate) async fn bounce(
    config: &Config,
    output: crate::cli::OutputArgs,
) -> std::process::ExitCode {
    use std::io::Read;
    let code = |code: u8| std::process::ExitCode::from(code);
    let Some(signer) = config.mail.signer() else {
        eprintln!(
            "error: {} is not set: no bounce address can be checked",
            docket_settings::MAIL_TOKEN_SECRET
        );
        return code(exit::TRY_LATER);
    };
    let mut raw = Vec::new();
    if let Err(err) = std::io::stdin()
        .take(MAX_BOUNCE_BYTES)
        .read_to_end(&mut raw)
    {
        eprintln!("error: reading standard input: {err}");
        return code(exit::TRY_LATER);
    }
    let outcome = async {
        let pool = connect(config.require_database()?).await?;
        let domain = config.mail.bounce_domain.as_deref();
        Ok::<_, anyhow::Error>(docket_mail::bounce::ingest(&pool, &signer, domain, &raw).await?)
    }
    .await;
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(err) => {
            eprintln!("error: {err:#}");
            return code(exit::TRY_LATER);
        }
    };
    let exit = match &outcome {
        bounce::Outcome::Ignored {
            unknown_recipient: true,
            ..
        } => exit::UNKNOWN_RECIPIENT,
        _ => exit::DONE,
    };
    let (delivery, detail) = match &outcome {
        bounce::Outcome::Bounced {
            delivery,
            status,
            suppressed,
        } => (
            Some(*delivery),
            format!(
                "{}{}",
                status.as_deref().unwrap_or(""),
                if *suppressed {
                    ", address suppressed"
                } else {
                    ""
                }
            ),
        ),
        bounce::Outcome::Delayed { delivery } => (Some(*delivery), String::new()),
        bounce::Outcome::Ignored { reason, .. } => (None, reason.clone()),
    };
    if output.json {
        let _ = print_json(&serde_json::json!({
            "outcome": outcome.as_str(), "delivery_id": delivery, "detail": detail,
        }));
    } else {
        let who = delivery
            .map(|id| format!(" delivery {id}"))
            .unwrap_or_default();
        println!("{}{who}: {detail}", outcome.as_str());
    }
    code(exit)
}

/// The most of a message `docket mail bounce` reads: a report and the returned headers fit
/// many times over; a returned message with large attachments is cut, its report intact.
const MAX_BOUNCE_BYTES: u64 = 4 * 1024 * 1024;

/// How many campaigns `campaign list` shows.
const LIST_LIMIT: u32 = 50;

pub(crate) async fn run(config: &Config, command: MailCommand) -> anyhow::Result<()> {
    let catalog = || {
        Catalog::load(&config.mail.template_dir)
            .map_err(|err| anyhow::anyhow!("template catalog: {err}"))
    };
    match command {
        MailCommand::Templates(output) => {
            let templates = catalog()?.list();
            if output.json {
                return print_json(&templates);
            }
            let rows = templates
                .iter()
                .map(|t| {
                    vec![
                        t.name.clone(),
                        if t.locales.is_empty() {
                            "-".to_owned()
                        } else {
                            t.locales.join(",")
                        },
                        if t.html { "text+html" } else { "text" }.to_owned(),
                        if t.built_in { "built-in" } else { "catalog" }.to_owned(),
                    ]
                })
                .collect::<Vec<_>>();
            table::print(&["NAME", "LOCALES", "BODY", "FROM"], &rows);
        }
        MailCommand::Render {
            name,
            vars,
            locale,
            output,
        } => {
            let vars: serde_json::Value =
                serde_json::from_str(&vars).context("--vars is not valid JSON")?;
            anyhow::ensure!(vars.is_object(), "--vars must be a JSON object");
            let rendered = catalog()?.render(&name, locale.as_deref(), &vars)?;
            if output.json {
                return print_json(&serde_json::json!({
                    "subject": rendered.subject, "locale": rendered.locale,
                    "text": rendered.text, "html": rendered.html,
                }));
            }
            println!("Subject: {}", rendered.subject);
            if let Some(locale) = &rendered.locale {
                println!("Locale: {locale}");
            }
            println!("\n{}", rendered.text);
            if let Some(html) = &rendered.html {
                println!("\n--- text/html ---\n{html}");
            }
        }
        MailCommand::Deliveries {
            status,
            campaign,
            to,
            limit,
            output,
        } => {
            let pool = connect(config.require_database()?).await?;
            let filter = DeliveryFilter {
                status: status.map(|s| s.parse()).transpose()?,
                campaign_id: campaign,
                to,
                limit,
            };
            let deliveries = delivery::list(docket_queue::pooled(&pool), &filter).await?;
            if output.json {
                return print_json(&deliveries);
            }
            let rows = deliveries
                .iter()
                .map(|d| {
                    vec![
                        d.id.to_string(),
                        d.source.clone(),
                        d.recipient.clone(),
                        d.template.clone(),
                        d.status.as_str().to_owned(),
                        d.attempts.to_string(),
                        d.smtp_code
                            .map_or_else(|| "-".to_owned(), |c| c.to_string()),
                        d.last_error.clone().unwrap_or_default(),
                    ]
                })
                .collect::<Vec<_>>();
            table::print(
                &[
                    "ID",
                    "SOURCE",
                    "TO",
                    "TEMPLATE",
                    "STATUS",
                    "ATTEMPTS",
                    "CODE",
                    "LAST ERROR",
                ],
                &rows,
            );
        }
        MailCommand::Suppress {
            address,
            reason,
            output,
        } => {
            let pool = connect(config.require_database()?).await?;
            let new = delivery::suppress(docket_queue::pooled(&pool), &address, &reason).await?;
            if output.json {
                return print_json(&serde_json::json!({
                    "address": address, "suppressed": true, "already": !new,
                }));
            }
            println!(
                "{address}: {}",
                if new {
                    "suppressed"
                } else {
                    "already suppressed"
                }
            );
        }
        MailCommand::Unsuppress { address, output } => {
            let pool = connect(config.require_database()?).await?;
            let was = delivery::unsuppress(docket_queue::pooled(&pool), &address).await?;
            if output.json {
                return print_json(&serde_json::json!({
                    "address": address, "suppressed": false, "was_suppressed": was,
                }));
            }
            println!(
                "{address}: {}",
                if was {
                    "no longer suppressed"
                } else {
                    "was not suppressed"
                }
            );
        }
        MailCommand::Suppressions(output) => {
            let pool = connect(config.require_database()?).await?;
            let list = delivery::suppressions(docket_queue::pooled(&pool), None).await?;
            if output.json {
                return print_json(&list);
            }
            let rows = list
                .iter()
                .map(|s| {
                    vec![
                        s.address.clone(),
                        s.source.clone(),
                        s.reason.clone(),
                        s.created_at.to_rfc3339(),
                    ]
                })
                .collect::<Vec<_>>();
            table::print(&["ADDRESS", "SOURCE", "REASON", "SINCE"], &rows);
        }
        MailCommand::Campaign(command) => return run_campaign(config, command, catalog).await,
        MailCommand::Bounce(_) => unreachable!("docket mail bounce has its own exit codes"),
    }
    Ok(())
}

async fn run_campaign(
    config: &Config,
    command: CampaignCommand,
    catalog: impl Fn() -> anyhow::Result<Catalog>,
) -> anyhow::Result<()> {
    if let CampaignCommand::Create {
        name,
        template,
        recipients,
        batch_size,
        dry_run,
        skip_bad_rows,
        output,
    } = command
    {
        let new = CreateArgs {
            name,
            template,
            recipients,
            batch_size,
            dry_run,
            skip_bad_rows,
            json: output.json,
        };
        return create(config, new, &catalog()?).await;
    }
    let pool = connect(config.require_database()?).await?;
    let (campaigns, json) = match command {
        CampaignCommand::Create { .. } => unreachable!("handled above"),
        CampaignCommand::Show { id, output } => {
            let status = campaign::show(docket_queue::pooled(&pool), id).await?;
            if output.json {
                return print_json(&status);
            }
            (vec![status], false)
        }
        CampaignCommand::List(output) => (
            campaign::list(docket_queue::pooled(&pool), LIST_LIMIT).await?,
            output.json,
        ),
        CampaignCommand::Pause { id, output } => {
            let changed = campaign::pause(&pool, id).await;
            return act(&pool, changed, id, "paused", output.json).await;
        }
        CampaignCommand::Resume { id, output } => {
            let changed = campaign::resume(&pool, id).await;
            return act(&pool, changed, id, "sending", output.json).await;
        }
        CampaignCommand::Cancel { id, output } => {
            let changed = campaign::cancel(&pool, id).await;
            return act(&pool, changed, id, "cancelled", output.json).await;
        }
    };
    if json {
        return print_json(&campaigns);
    }
    let rows: Vec<Vec<String>> = campaigns.iter().map(row).collect();
    table::print(
        &[
            "ID",
            "NAME",
            "STATE",
            "TOTAL",
            "SENT",
            "SUPPRESSED",
            "FAILED",
            "DEAD_LETTER",
            "CANCELLED",
            "PENDING",
            "BOUNCED",
            "UNSUBSCRIBED",
        ],
        &rows,
    );
    Ok(())
}

/// How many recipients' messages `campaign create --dry-run` prints.
const DRY_RUN_SHOWN: usize = 3;

/// `campaign create`'s arguments.
struct CreateArgs {
    name: String,
    template: String,
    recipients: std::path::PathBuf,
    batch_size: usize,
    dry_run: bool,
    skip_bad_rows: bool,
    json: bool,
}

/// `campaign create`: every bad row named (and refused unless `--skip-bad-rows`), the
/// template's variables checked against the file's columns, then the campaign created,
/// or with `--dry-run` the first messages rendered and nothing recorded.
async fn create(config: &Config, args: CreateArgs, catalog: &Catalog) -> anyhow::Result<()> {
    let file = args.recipients.display();
    let text =
        std::fs::read_to_string(&args.recipients).with_context(|| format!("cannot read {file}"))?;
    let parsed = campaign::parse_recipients(&text)?;
    let verb = if args.skip_bad_rows {
        "skipped"
    } else {
        "bad row"
    };
    for bad in &parsed.bad {
        eprintln!("{file}:{}: {verb}: {}", bad.line, bad.reason);
    }
    if !parsed.bad.is_empty() && !args.skip_bad_rows {
        let lines: Vec<String> = parsed.bad.iter().map(|b| b.line.to_string()).collect();
        anyhow::bail!(
            "{} bad {} in {file} (line {}, each named above): nothing was created; fix \
             them, or pass --skip-bad-rows to send to the other {} recipient{}",
            parsed.bad.len(),
            if parsed.bad.len() == 1 { "row" } else { "rows" },
            lines.join(", "),
            parsed.rows.len(),
            if parsed.rows.len() == 1 { "" } else { "s" },
        );
    }
    let new = NewCampaign {
        batch_size: args.batch_size,
        ..NewCampaign::new(&args.name, &args.template, parsed.rows)
    };
    if args.dry_run {
        let shown = campaign::preview(catalog, &new, DRY_RUN_SHOWN)?;
        if args.json {
            let shown: Vec<serde_json::Value> = shown
                .iter()
                .map(|(to, rendered)| {
                    serde_json::json!({
                        "to": to, "locale": rendered.locale, "subject": rendered.subject,
                        "text": rendered.text, "html": rendered.html,
                    })
                })
                .collect();
            return print_json(&serde_json::json!({
                "dry_run": true, "total": new.recipients.len(), "skipped": parsed.bad,
                "shown": shown,
            }));
        }
        for (to, rendered) in &shown {
            println!("--- To: {to}");
            if let Some(locale) = &rendered.locale {
                println!("Locale: {locale}");
            }
            println!("Subject: {}\n\n{}", rendered.subject, rendered.text);
            if let Some(html) = &rendered.html {
                println!("\n--- text/html ---\n{html}");
            }
            println!();
        }
        println!(
            "dry run: {} recipient{} would be sent {:?} (every message renders); \
             nothing was recorded or sent",
            new.recipients.len(),
            if new.recipients.len() == 1 { "" } else { "s" },
            new.template
        );
        return Ok(());
    }
    let pool = connect(config.require_database()?).await?;
    let from = config.mail.sender()?;
    let id = campaign::create(&pool, catalog, &from, &new).await?;
    if args.json {
        return print_json(&serde_json::json!({
            "id": id, "total": new.recipients.len(), "skipped": parsed.bad,
        }));
    }
    println!("{id}");
    Ok(())
}

/// A control's answer: done, or the state it asks for held already; a wrong state is an
/// error with the reason (exit 1).
/// An action's answer: a word, or with `--json` the campaign as it is now (what `campaign
/// show --json` and the HTTP route print). A state that refuses the action is an error.
async fn act(
    pool: &sqlx::PgPool,
    result: docket_mail::Result<bool>,
    id: uuid::Uuid,
    what: &str,
    json: bool,
) -> anyhow::Result<()> {
    let changed = result?;
    if json {
        return print_json(&campaign::show(docket_queue::pooled(pool), id).await?);
    }
    if changed {
        println!("campaign {id} {what}");
    } else {
        println!("campaign {id} was {what} already; nothing changed");
    }
    Ok(())
}

fn row(c: &CampaignStatus) -> Vec<String> {
    vec![
        c.id.to_string(),
        c.name.clone(),
        c.state.clone(),
        c.total.to_string(),
        c.sent.to_string(),
        c.suppressed.to_string(),
        c.failed.to_string(),
        c.dead_letter.to_string(),
        c.cancelled.to_string(),
        c.pending.to_string(),
        c.bounced.to_string(),
        c.unsubscribed.to_string(),
    ]
}
