//! `docket batches list|show`.

use docket_queue::batch::{self, BatchStatus};
use sqlx::PgPool;

use crate::cli::BatchesCommand;
use crate::cmd::print_json;
use crate::table;

/// How many batches `list` shows.
const LIST_LIMIT: u32 = 50;

pub(crate) async fn run(pool: &PgPool, command: BatchesCommand) -> anyhow::Result<()> {
    let (batches, json) = match command {
        BatchesCommand::List(output) => (
            batch::list(docket_queue::pooled(pool), LIST_LIMIT).await?,
            output.json,
        ),
        BatchesCommand::Show { id, output } => {
            let status = batch::show(docket_queue::pooled(pool), id).await?;
            if output.json {
                return print_json(&status);
            }
            (vec![status], false)
        }
    };
    if json {
        return print_json(&batches);
    }
    let rows: Vec<Vec<String>> = batches.iter().map(row).collect();
    table::print(
        &[
            "ID",
            "TOTAL",
            "COMPLETED",
            "DEAD_LETTER",
            "CANCELLED",
            "REMAINING",
            "FINISHED",
            "CALLBACK",
        ],
        &rows,
    );
    Ok(())
}

fn row(batch: &BatchStatus) -> Vec<String> {
    vec![
        batch.id.to_string(),
        batch.total.to_string(),
        batch.completed.to_string(),
        batch.dead_letter.to_string(),
        batch.cancelled.to_string(),
        batch.remaining.to_string(),
        batch
            .finished_at
            .map_or_else(|| "-".to_owned(), |t| t.to_rfc3339()),
        batch
            .callback_job_id
            .map_or_else(|| "-".to_owned(), |id| id.to_string()),
    ]
}
