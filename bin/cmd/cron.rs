//! `docket cron list|run|pause|resume`: the schedules every scheduler registered.

use docket_queue::schedule::{self, ScheduleRow};
use docket_queue::telemetry::event;
use serde::Serialize;
use sqlx::PgPool;

use crate::cli::CronCommand;
use crate::cmd::print_json;
use crate::table;

/// A schedule as `cron list --json` prints it (DESIGN.md's fields).
#[derive(Serialize)]
struct Listed<'a> {
    name: &'a str,
    cron: &'a str,
    kind: &'a str,
    queue: &'a str,
    timezone: &'a str,
    catch_up: &'a str,
    paused: bool,
    last_tick_at: Option<chrono::DateTime<chrono::Utc>>,
    next_tick_at: Option<chrono::DateTime<chrono::Utc>>,
    overlap: &'a str,
    last_batch_id: Option<uuid::Uuid>,
    last_batch_total: Option<i32>,
    last_batch_remaining: Option<i32>,
}

impl<'a> From<&'a ScheduleRow> for Listed<'a> {
    fn from(row: &'a ScheduleRow) -> Self {
        Listed {
            name: &row.name,
            cron: &row.cron,
            kind: &row.kind,
            queue: &row.queue,
            timezone: &row.timezone,
            catch_up: &row.catch_up,
            paused: row.paused,
            last_tick_at: row.last_tick_at,
            next_tick_at: row.next_tick_at,
            overlap: &row.overlap,
            last_batch_id: row.last_batch_id,
            last_batch_total: row.last_batch_total,
            last_batch_remaining: row.last_batch_remaining,
        }
    }
}

pub(crate) async fn run(pool: &PgPool, command: CronCommand) -> anyhow::Result<()> {
    match command {
        CronCommand::List(output) => {
            let rows = schedule::list(pool).await?;
            if output.json {
                return print_json(&rows.iter().map(Listed::from).collect::<Vec<_>>());
            }
            let at = |t: Option<chrono::DateTime<chrono::Utc>>| {
                t.map_or_else(|| "-".to_owned(), |t| t.to_rfc3339())
            };
            let table_rows: Vec<Vec<String>> = rows
                .iter()
                .map(|row| {
                    vec![
                        row.name.clone(),
                        row.cron.clone(),
                        row.kind.clone(),
                        row.queue.clone(),
                        row.timezone.clone(),
                        row.catch_up.clone(),
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
            let rows = schedule::list(pool).await?;
            let Some(row) = rows.iter().find(|row| row.name == name) else {
                anyhow::bail!("no schedule is named {name:?} (docket cron list shows them)");
            };
            let job = docket_queue::NewJob::new(row.kind.clone(), row.payload.clone())
                .queue(row.queue.clone())
                .priority(row.priority)
                .max_attempts(row.max_attempts);
            println!("{}", docket_queue::enqueue(pool, &job).await?);
            Ok(())
        }
        CronCommand::Pause { name } => {
            schedule::set_paused(pool, &name, true).await?;
            tracing::info!(event = event::CRON_PAUSED, schedule = %name, "schedule paused");
            println!("{name} paused");
            Ok(())
        }
        CronCommand::Resume { name } => {
            schedule::set_paused(pool, &name, false).await?;
            tracing::info!(event = event::CRON_RESUMED, schedule = %name, "schedule resumed");
            println!("{name} resumed");
            Ok(())
        }
    }
}
