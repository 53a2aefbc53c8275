//! `docket cron list|run|pause|resume`: the schedules every scheduler registered.

use docket_queue::cron;
use docket_queue::telemetry::event;
use sqlx::PgPool;

use crate::cli::CronCommand;
use crate::cmd::print_json;
use crate::table;

pub(crate) async fn run(pool: &PgPool, command: CronCommand) -> anyhow::Result<()> {
    match command {
        CronCommand::List(output) => {
            let rows = cron::list(pool).await?;
            if output.json {
                return print_json(&rows);
            }
            let at = |t: Option<chrono::DateTime<chrono::Utc>>| {
                t.map_or_else(|| "-".to_owned(), |t| t.to_rfc3339())
            };
            let table_rows: Vec<Vec<String>> = rows
                .iter()
                .map(|row| {
                    vec![
                        row.def.name.clone(),
                        row.def.cron.clone(),
                        row.def.kind.clone(),
                        row.def.queue.clone(),
                        row.def.timezone.clone(),
                        row.def.catch_up.as_str().to_owned(),
                        if row.paused { "paused" } else { "active" }.to_owned(),
                        at(row.last_tick_at),
                        at(row.next_tick_at),
                        match (row.last_batch_total, row.last_batch_remaining) {
                            (Some(total), Some(0)) => format!("{total}/{total} done"),
                            (Some(total), Some(left)) => {
                                format!("{}/{total} running", total - left)
                            }
                            _ => "-".to_owned(),
                        },
                    ]
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
            Ok(())
        }
        CronCommand::Run { name } => {
            let rows = cron::list(pool).await?;
            let Some(row) = rows.iter().find(|row| row.def.name == name) else {
                anyhow::bail!("no schedule is named {name:?} (docket cron list shows them)");
            };
            let job = docket_queue::NewJob::new(row.def.kind.clone(), row.def.payload.clone())
                .queue(row.def.queue.clone())
                .priority(row.def.priority)
                .max_attempts(row.def.max_attempts);
            println!("{}", docket_queue::enqueue(pool, &job).await?);
            Ok(())
        }
        CronCommand::Pause { name } => {
            cron::set_paused(pool, &name, true).await?;
            tracing::info!(event = event::CRON_PAUSED, schedule = %name, "schedule paused");
            println!("{name} paused");
            Ok(())
        }
        CronCommand::Resume { name } => {
            cron::set_paused(pool, &name, false).await?;
            tracing::info!(event = event::CRON_RESUMED, schedule = %name, "schedule resumed");
            println!("{name} resumed");
            Ok(())
        }
    }
}
