//! `docket queues list|pause|resume`.

use anyhow::bail;
use docket_queue::queues::{self, QueueControl};
use sqlx::PgPool;

use crate::cli::QueuesCommand;
use crate::cmd::print_json;
use crate::config::Config;
use crate::table;

pub(crate) async fn run(
    pool: &PgPool,
    config: &Config,
    command: QueuesCommand,
) -> anyhow::Result<()> {
    let (controls, json) = match command {
        QueuesCommand::List(output) => {
            (queues::list(docket_queue::pooled(pool)).await?, output.json)
        }
        QueuesCommand::Pause {
            name,
            force,
            output,
        } => {
            if !force {
                refuse_unknown(pool, config, &name).await?;
            }
            (
                vec![queues::pause(docket_queue::pooled(pool), &name).await?],
                output.json,
            )
        }
        QueuesCommand::Resume { name, output } => (
            vec![queues::resume(docket_queue::pooled(pool), &name).await?],
            output.json,
        ),
    };
    if json {
        return print_json(&controls);
    }
    let rows: Vec<Vec<String>> = controls.iter().map(row).collect();
    table::print(&["QUEUE", "PAUSED", "SINCE"], &rows);
    Ok(())
}

/// A queue no job, worker or configuration names is most likely a misspelling (`mial`):
/// pausing it would stop nothing while the queue meant goes on.
async fn refuse_unknown(pool: &PgPool, config: &Config, name: &str) -> anyhow::Result<()> {
    let configured: Vec<String> = config
        .runtime_with(None, None)
        .map(|runtime| runtime.queues.into_iter().map(|q| q.name).collect())
        .unwrap_or_default();
    if queues::is_known(docket_queue::pooled(pool), name).await?
        || configured.iter().any(|q| q == name)
    {
        return Ok(());
    }
    let mut names = queues::named(docket_queue::pooled(pool)).await?;
    names.extend(configured);
    let nearest = names
        .iter()
        .min_by_key(|known| strsim::levenshtein(known, name))
        .filter(|known| strsim::levenshtein(known, name) <= 3);
    match nearest {
        Some(known) => bail!(
            "no job, worker or configuration names queue {name:?}; did you mean {known:?}? \
             (--force pauses {name:?} anyway)"
        ),
        None => {
            bail!("no job, worker or configuration names queue {name:?}; --force pauses it anyway")
        }
    }
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
