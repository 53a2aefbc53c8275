//! `docket snapshot [--json]`.

use docket_queue::{QueueFigures, Snapshot};
use sqlx::PgPool;

use crate::cli::OutputArgs;
use crate::table;

pub(crate) async fn run(pool: &PgPool, args: OutputArgs) -> anyhow::Result<()> {
    let snapshot = docket_queue::snapshot(docket_queue::pooled(pool), None).await?;
    if args.json {
        crate::cmd::print_json(&snapshot)
    } else {
        print_table(&snapshot);
        Ok(())
    }
}

pub(crate) fn print_table(snapshot: &Snapshot) {
    let row = |name: &str, f: &QueueFigures| {
        vec![
            name.to_owned(),
            f.pending.to_string(),
            f.retrying.to_string(),
            f.processing.to_string(),
            f.dead_letter.to_string(),
            f.oldest_ready_age_seconds
                .map_or("-".to_owned(), |age| format!("{age:.1}")),
        ]
    };
    let mut rows: Vec<Vec<String>> = snapshot
        .queues
        .iter()
        .map(|(name, figures)| row(name, figures))
        .collect();
    rows.push(row("(all)", &snapshot.total));
    table::print(
        &[
            "QUEUE",
            "PENDING",
            "RETRYING",
            "PROCESSING",
            "DEAD_LETTER",
            "OLDEST READY AGE (s)",
        ],
        &rows,
    );
}
