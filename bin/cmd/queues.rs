//! `docket queues list|pause|resume`.

use docket_queue::queues::{self, QueueControl};
use sqlx::PgPool;

use crate::cli::QueuesCommand;
use crate::cmd::print_json;
use crate::table;

pub(crate) async fn run(pool: &PgPool, command: QueuesCommand) -> anyhow::Result<()> {
    let (controls, json) = match command {
        QueuesCommand::List(output) => (queues::list(pool).await?, output.json),
        QueuesCommand::Pause { name, output } => {
            (vec![queues::pause(pool, &name).await?], output.json)
        }
        QueuesCommand::Resume { name, output } => {
            (vec![queues::resume(pool, &name).await?], output.json)
        }
    };
    if json {
        return print_json(&controls);
    }
    let rows: Vec<Vec<String>> = controls.iter().map(row).collect();
    table::print(&["QUEUE", "PAUSED", "SINCE"], &rows);
    Ok(())
}

fn row(control: &QueueControl) -> Vec<String> {
    vec![
        control.queue.clone(),
        if control.paused { "yes" } else { "no" }.to_owned(),
        control
            .paused_at
            .map_or_else(|| "-".to_owned(), |t| t.to_rfc3339()),
    ]
}
