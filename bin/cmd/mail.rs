//! `docket mail templates|render|deliveries|suppress|unsuppress|suppressions|campaign ...`.

use anyhow::Context;
use docket_mail::campaign::{self, CampaignStatus, NewCampaign};
use docket_mail::delivery::{self, DeliveryFilter};
use docket_mail::template::Catalog;

use crate::cli::{CampaignCommand, MailCommand};
use crate::cmd::{connect, print_json};
use crate::config::Config;
use crate::table;

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
            let deliveries = delivery::list(&pool, &filter).await?;
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
            let new = delivery::suppress(&pool, &address, &reason).await?;
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
            let was = delivery::unsuppress(&pool, &address).await?;
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
            let list = delivery::suppressions(&pool, None).await?;
            if output.json {
                return print_json(&list);
            }
            let rows = list
                .iter()
                .map(|s| {
                    vec![
                        s.address.clone(),
                        s.reason.clone(),
                        s.created_at.to_rfc3339(),
                    ]
                })
                .collect::<Vec<_>>();
            table::print(&["ADDRESS", "REASON", "SINCE"], &rows);
        }
        MailCommand::Campaign(command) => return run_campaign(config, command, catalog).await,
    }
    Ok(())
}

async fn run_campaign(
    config: &Config,
    command: CampaignCommand,
    catalog: impl Fn() -> anyhow::Result<Catalog>,
) -> anyhow::Result<()> {
    let pool = connect(config.require_database()?).await?;
    let (campaigns, json) = match command {
        CampaignCommand::Create {
            name,
            template,
            recipients,
            batch_size,
            output,
        } => {
            let text = std::fs::read_to_string(&recipients)
                .with_context(|| format!("cannot read {}", recipients.display()))?;
            let parsed = campaign::parse_recipients(&text)?;
            for bad in &parsed.bad {
                eprintln!(
                    "{}:{}: skipped: {}",
                    recipients.display(),
                    bad.line,
                    bad.reason
                );
            }
            let from = config.mail.sender()?;
            let new = NewCampaign {
                batch_size,
                ..NewCampaign::new(&name, &template, parsed.rows)
            };
            let id = campaign::create(&pool, &catalog()?, &from, &new).await?;
            if output.json {
                return print_json(&serde_json::json!({
                    "id": id, "total": new.recipients.len(), "skipped": parsed.bad,
                }));
            }
            println!("{id}");
            return Ok(());
        }
        CampaignCommand::Show { id, output } => {
            let status = campaign::show(&pool, id).await?;
            if output.json {
                return print_json(&status);
            }
            (vec![status], false)
        }
        CampaignCommand::List(output) => (campaign::list(&pool, LIST_LIMIT).await?, output.json),
        CampaignCommand::Pause { id } => {
            return act(campaign::pause(&pool, id).await, id, "paused")
        }
        CampaignCommand::Resume { id } => {
            return act(campaign::resume(&pool, id).await, id, "resumed")
        }
        CampaignCommand::Cancel { id } => {
            return act(campaign::cancel(&pool, id).await, id, "cancelled")
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
            "PENDING",
        ],
        &rows,
    );
    Ok(())
}

fn act(result: docket_mail::Result<()>, id: uuid::Uuid, what: &str) -> anyhow::Result<()> {
    result?;
    println!("campaign {id} {what}");
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
        c.pending.to_string(),
    ]
}
