//! `docket cron list|run|pause|resume|remove`: the schedules every scheduler registered
//! (and, with `list --declared`, what this configuration declares).

use chrono::{DateTime, Utc};
use docket_queue::cron::{self, Schedule, ScheduleRow};
use docket_queue::telemetry::event;
use serde::Serialize;
use sqlx::PgPool;

use crate::cli::CronCommand;
use crate::cmd::{connect, print_json};
use crate::config::Config;
use crate::table;

pub(crate) async fn run(config: &Config, command: CronCommand) -> anyhow::Result<()> {
    if let CronCommand::List {
        declared: true,
        output,
    } = &command
    {
        return declared(config, output.json).await;
    }
    let pool = connect(config.require_database()?).await?;
    match command {
        CronCommand::List { output, .. } => {
            let rows = cron::list(docket_queue::pooled(&pool)).await?;
            if output.json {
                return print_json(&rows);
            }
            list(&rows);
            Ok(())
        }
        CronCommand::Run { name, output } => {
            let rows = cron::list(docket_queue::pooled(&pool)).await?;
            let Some(row) = rows.iter().find(|row| row.def.name == name) else {
                anyhow::bail!("no schedule is named {name:?} (docket cron list shows them)");
            };
            let job = docket_queue::NewJob::new(row.def.kind.clone(), row.def.payload.clone())
                .queue(row.def.queue.clone())
                .priority(row.def.priority)
                .max_attempts(row.def.max_attempts);
            let id = docket_queue::enqueue(docket_queue::pooled(&pool), &job).await?;
            if output.json {
                return print_json(&serde_json::json!({ "schedule": name, "job_id": id }));
            }
            println!("{id}");
            Ok(())
        }
        CronCommand::Pause { name, output } => set_paused(&pool, name, true, output.json).await,
        CronCommand::Resume { name, output } => set_paused(&pool, name, false, output.json).await,
        CronCommand::Remove { name, output } => {
            cron::remove(docket_queue::pooled(&pool), &name).await?;
            tracing::info!(event = event::CRON_REMOVED, schedule = %name, "schedule removed");
            if output.json {
                return print_json(&serde_json::json!({ "name": name, "removed": true }));
            }
            println!("{name} removed");
            Ok(())
        }
    }
}

async fn set_paused(pool: &PgPool, name: String, paused: bool, json: bool) -> anyhow::Result<()> {
    cron::set_paused(docket_queue::pooled(pool), &name, paused).await?;
    if paused {
        tracing::info!(event = event::CRON_PAUSED, schedule = %name, "schedule paused");
    } else {
        tracing::info!(event = event::CRON_RESUMED, schedule = %name, "schedule resumed");
    }
    if json {
        return print_json(&serde_json::json!({ "name": name, "paused": paused }));
    }
    println!("{name} {}", if paused { "paused" } else { "resumed" });
    Ok(())
}

fn at(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(|| "-".to_owned(), |t| t.to_rfc3339())
}

/// A registered schedule's state, in one word.
fn state(row: &ScheduleRow) -> &'static str {
    if row.retired {
        "retired"
    } else if row.paused {
        "paused"
    } else if row.conflicting {
        "conflict"
    } else {
        "active"
    }
}

/// A schedule's definition as the tables' first columns show it (NAME to CATCH_UP).
fn definition(def: &Schedule) -> Vec<String> {
    vec![
        def.name.clone(),
        def.cron.clone(),
        def.kind.clone(),
        def.queue.clone(),
        def.timezone.clone(),
        def.catch_up.as_str().to_owned(),
    ]
}

fn list(rows: &[ScheduleRow]) {
    let table_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let mut cells = definition(&row.def);
            cells.extend([
                state(row).to_owned(),
                at(row.last_tick_at),
                if row.retired {
                    "-".to_owned()
                } else {
                    at(row.next_tick_at)
                },
                match (row.last_batch_total, row.last_batch_remaining) {
                    (Some(total), Some(0)) => format!("{total}/{total} done"),
                    (Some(total), Some(left)) => {
                        format!("{}/{total} running", total - left)
                    }
                    _ => "-".to_owned(),
                },
            ]);
            cells
        })
        .collect();
    table::print(
        &[
            "NAME",
            "CRON",
            "KIND",
            "QUEUE",
            "ZONE",
            "CATCH_UP",
            "STATE",
            "LAST TICK",
            "NEXT TICK",
            "LAST BATCH",
        ],
        &table_rows,
    );
    let retired: Vec<&str> = rows
        .iter()
        .filter(|row| row.retired)
        .map(|row| row.def.name.as_str())
        .collect();
    if !retired.is_empty() {
        println!(
            "\nretired: no live process declares {} ({}); `docket cron remove NAME` deletes a schedule gone for good",
            if retired.len() == 1 { "it" } else { "them" },
            retired.join(", ")
        );
    }
}

/// A schedule this configuration declares, and where the database stands on it.
#[derive(Serialize)]
struct Declared {
    #[serde(flatten)]
    def: Schedule,
    /// Its next tick from now.
    next_tick_at: Option<DateTime<Utc>>,
    /// `registered` (as declared here), `differs` (registered with another definition),
    /// `not registered`, or `unknown` (no DATABASE_URL).
    registered: &'static str,
}

/// `docket cron list --declared`: what docket.toml (and the settings' built-in schedules)
/// declare, from the configuration alone; the database, when one is configured, only says
/// whether each is registered as declared.
async fn declared(config: &Config, json: bool) -> anyhow::Result<()> {
    let stored: Option<Vec<ScheduleRow>> = match &config.database_url {
        Some(url) => Some(cron::list(&connect(url).await?).await?),
        None => None,
    };
    let now = Utc::now();
    let rows: Vec<Declared> = config
        .runtime
        .schedules
        .iter()
        .map(|def| {
            let next_tick_at = docket_worker::cron::Cron::of(def)
                .ok()
                .and_then(|cron| cron.next_after(now));
            let registered = match &stored {
                None => "unknown",
                Some(rows) => match rows.iter().find(|row| row.def.name == def.name) {
                    Some(row) if row.def == *def => "registered",
                    Some(_) => "differs",
                    None => "not registered",
                },
            };
            Declared {
                def: def.clone(),
                next_tick_at,
                registered,
            }
        })
        .collect();
    if json {
        return print_json(&rows);
    }
    if rows.is_empty() {
        println!("this configuration declares no schedule (docket.toml's [[schedule]] tables)");
        return Ok(());
    }
    let table_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let mut cells = definition(&row.def);
            cells.extend([at(row.next_tick_at), row.registered.to_owned()]);
            cells
        })
        .collect();
    table::print(
        &[
            "NAME",
            "CRON",
            "KIND",
            "QUEUE",
            "ZONE",
            "CATCH_UP",
            "NEXT TICK",
            "REGISTERED",
        ],
        &table_rows,
    );
    if !config.runtime.cron {
        println!(
            "\n{}=false: a process with this configuration runs no scheduler and declares none of these",
            docket_settings::CRON
        );
    }
    Ok(())
}
